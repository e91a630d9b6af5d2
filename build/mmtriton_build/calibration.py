"""Calibration: expected calibration error, temperatures fitted on validation data, and the
confidence threshold below which the served answer is "not sure"."""

from __future__ import annotations

import numpy as np

# Bump when how the fusion is calibrated changes (the build's fusion step is keyed on it).
# 2: one temperature per modality subset, no-digit rows scored against a uniform target.
CALIBRATION_VERSION = 2

ECE_BINS = 15
# Threshold search: the smallest value on this grid that keeps no-digit inputs out and the
# confident answers right (see choose_threshold).
THRESHOLD_GRID = np.round(np.arange(0.30, 0.91, 0.01), 2)
MAX_NO_DIGIT_CONFIDENT = 0.01  # share of validation no-digit inputs allowed at/above it
MIN_CONFIDENT_ACCURACY = 0.95  # accuracy of the validation answers at/above it


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits [N, C]."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS):
    """ECE: the bin-weighted mean |accuracy - confidence| over equal-width confidence bins.

    ``probs`` [N, C] are probabilities, ``labels`` [N] the true classes. 0 for an empty set.
    """
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels)
    if len(labels) == 0:
        return 0.0
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    # Bin b holds confidences in (b/bins, (b+1)/bins]; confidence 0 goes to the first bin.
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - conf[members].mean())
    return float(ece)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(
    logits: np.ndarray,
    labels: np.ndarray,
    temperature: float,
    uniform_logits: np.ndarray | None = None,
) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / temperature), over
    those rows and the ``uniform_logits`` rows, whose target is uniform (inputs without a digit,
    as the fusion is trained)."""
    total = -_log_softmax(logits / temperature)[np.arange(len(labels)), labels].sum()
    count = len(labels)
    if uniform_logits is not None and len(uniform_logits):
        total += -_log_softmax(uniform_logits / temperature).mean(axis=1).sum()
        count += len(uniform_logits)
    return float(total / max(count, 1))


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, uniform_logits: np.ndarray | None = None
) -> float:
    """The temperature in [0.05, 20] that minimises validation NLL (log grid, then refined);
    ``uniform_logits``: rows without a digit, scored against a uniform target."""

    def loss(t: float) -> float:
        return nll(logits, labels, t, uniform_logits)

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
    best = min(grid, key=loss)
    fine = best * np.exp(np.linspace(-0.06, 0.06, 41))
    return float(min(fine, key=loss))


def choose_threshold(
    digit_probs: np.ndarray, digit_labels: np.ndarray, no_digit_probs: np.ndarray
) -> float:
    """The smallest threshold on THRESHOLD_GRID at which at most 1 % of the validation
    no-digit inputs and answers that are wrong more than 5 % of the time stay confident.

    Falls back to the grid's top when none qualifies.
    """
    conf = digit_probs.max(axis=1)
    correct = digit_probs.argmax(axis=1) == digit_labels
    nd_conf = no_digit_probs.max(axis=1) if len(no_digit_probs) else np.zeros(0)
    for t in THRESHOLD_GRID:
        confident = conf >= t
        accurate = not confident.any() or correct[confident].mean() >= MIN_CONFIDENT_ACCURACY
        leaky = (nd_conf >= t).mean() if len(nd_conf) else 0.0
        if accurate and leaky <= MAX_NO_DIGIT_CONFIDENT:
            return float(t)
    return float(THRESHOLD_GRID[-1])
