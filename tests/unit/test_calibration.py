"""Calibration pieces of the evaluation: ECE, the temperature fit, the threshold choice, and
the soft targets that teach the fusion to say "not sure"."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmtriton_build.calibration import (
    MAX_NO_DIGIT_CONFIDENT,
    MIN_CONFIDENT_ACCURACY,
    THRESHOLD_GRID,
    choose_threshold,
    expected_calibration_error,
    fit_temperature,
    softmax,
)
from mmtriton_build.train import LABEL_SMOOTHING, soft_targets


def _two_class(conf: float, correct: bool) -> tuple[list[float], int]:
    return [conf, 1 - conf], 0 if correct else 1


def test_ece_is_the_weighted_gap_between_confidence_and_accuracy() -> None:
    # Bin (0.8, 0.867]: 4 answers at 0.85, 2 right -> gap 0.35, weight 4/6.
    # Bin (0.533, 0.6]: 2 answers at 0.6, both right -> gap 0.4, weight 2/6.
    rows = [_two_class(0.85, c) for c in (True, True, False, False)]
    rows += [_two_class(0.6, True), _two_class(0.6, True)]
    probs = np.array([p for p, _ in rows])
    labels = np.array([y for _, y in rows])
    assert expected_calibration_error(probs, labels) == pytest.approx(4 / 6 * 0.35 + 2 / 6 * 0.4)


def test_ece_is_near_zero_when_confidence_matches_accuracy() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.random(n) < conf
    probs = np.stack([conf, 1 - conf], axis=1)
    labels = np.where(correct, 0, 1)
    assert expected_calibration_error(probs, labels) < 0.02
    assert expected_calibration_error(np.zeros((0, 2)), np.zeros(0, int)) == 0.0


def test_fitted_temperature_recovers_the_one_that_generated_the_labels() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (6000, 10))
    true_t = 2.0
    p = softmax(logits / true_t)
    labels = np.array([rng.choice(10, p=row) for row in p])
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(true_t, rel=0.1)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits / t), labels)
    assert after < 0.03 < before


def test_rows_without_a_digit_keep_the_fitted_temperature_from_sharpening_them() -> None:
    """Digit rows alone favour a sharp temperature; rows scored against a uniform target (no
    digit given) pull it up, so their own top probability stays low."""
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 1, (3000, 10))
    labels = logits.argmax(axis=1)  # always right: NLL alone wants t -> small
    no_digit = rng.normal(0, 1, (600, 10))
    sharp = fit_temperature(logits, labels)
    tempered = fit_temperature(logits, labels, uniform_logits=no_digit)
    assert tempered > 1.5 * sharp
    assert (
        softmax(no_digit / tempered).max(axis=1).mean()
        < softmax(no_digit / sharp).max(axis=1).mean()
    )
    # With no uniform rows the fit is the labels-only one.
    assert fit_temperature(logits, labels, uniform_logits=np.zeros((0, 10))) == sharp


def test_threshold_is_the_smallest_that_keeps_no_digit_inputs_unsure() -> None:
    digits = np.array([[0.95, 0.05]] * 50 + [[0.55, 0.45]] * 50)
    labels = np.zeros(100, int)
    no_digit = np.array([[0.62, 0.38]] * 10 + [[0.5, 0.5]] * 90)
    t = choose_threshold(digits, labels, no_digit)
    assert t == pytest.approx(0.63)  # 0.62 is still reached by 10 % of the no-digit inputs
    assert (no_digit.max(axis=1) >= t).mean() <= MAX_NO_DIGIT_CONFIDENT


def test_threshold_also_keeps_confident_answers_accurate() -> None:
    # Answers at 0.7 are right only half the time: the threshold must rise above them.
    digits = np.array([[0.7, 0.3]] * 20 + [[0.3, 0.7]] * 20 + [[0.99, 0.01]] * 60)
    labels = np.array([0] * 20 + [0] * 20 + [0] * 60)
    t = choose_threshold(digits, labels, np.zeros((0, 2)))
    confident = digits.max(axis=1) >= t
    assert (digits.argmax(1) == labels)[confident].mean() >= MIN_CONFIDENT_ACCURACY
    assert 0.7 < t <= THRESHOLD_GRID[-1]


def test_rows_without_a_digit_get_a_uniform_target() -> None:
    labels = torch.tensor([3, 3, 3, -1])
    # row 0: image informative; 1: only uninformative text present; 2: informative audio
    # absent; 3: a no-digit input.
    informative = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 0]], dtype=torch.float32)
    present = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.float32)
    t = soft_targets(labels, informative, present, 10)
    assert t[0, 3] == pytest.approx(1 - LABEL_SMOOTHING + LABEL_SMOOTHING / 10)
    for row in (1, 2, 3):
        assert torch.allclose(t[row], torch.full((10,), 0.1))
    assert torch.allclose(t.sum(1), torch.ones(4))
