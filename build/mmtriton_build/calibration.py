"""Calibration: expected calibration error, a temperature fitted on validation data, and the
confidence threshold below which the served answer is "not sure"."""

from __future__ import annotations

import numpy as np

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


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / temperature)."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] that minimises validation NLL (log grid, then refined)."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
    best = min(grid, key=lambda t: nll(logits, labels, t))
    fine = best * np.exp(np.linspace(-0.06, 0.06, 41))
    return float(min(fine, key=lambda t: nll(logits, labels, t)))


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
