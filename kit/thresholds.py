"""Per-class decision thresholds for multi-label F1/F-beta, fitted on OOF probabilities.

A sigmoid's 0.5 is rarely the best cut: rare classes want a lower one. The thresholds are applied as a
monotone rescaling of each column (`apply_thresholds`) that puts the fitted threshold at 0.5, so every
consumer that cuts at 0.5 (kit.metrics.f_beta, the label-list submission) uses them unchanged, and ranking
metrics (AUC) are untouched.
"""

from __future__ import annotations

import numpy as np

from . import KitError
from .metrics import metric_value, score

GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # candidate thresholds per class
PASSES = 2  # coordinate-ascent sweeps over the classes: the second rarely moves a threshold much


def apply_thresholds(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Each column mapped piecewise-linearly so that t[j] lands on 0.5 (0 and 1 stay): p > t iff out > 0.5."""
    p, t = np.asarray(p, dtype=np.float64), np.asarray(t, dtype=np.float64)
    return np.where(p <= t, 0.5 * p / t, 0.5 + 0.5 * (p - t) / (1 - t))


def fit_thresholds(y: np.ndarray, p: np.ndarray, metric: str) -> np.ndarray:
    """One threshold per class maximizing `metric` on (y, p) by coordinate ascent over GRID, from 0.5;
    a class keeps its threshold unless another one scores strictly higher."""
    y = np.asarray(y)
    if y.ndim != 2:
        raise KitError(f"per-class thresholds are for multi-label targets (an N x K 0/1 matrix); got shape "
                       f"{y.shape}: a single-label task takes the argmax, no threshold")
    t = np.full(p.shape[1], 0.5)
    best = score(metric, y, apply_thresholds(p, t))
    for _ in range(PASSES):
        for j in range(p.shape[1]):
            for cand in GRID:
                trial = t.copy()
                trial[j] = cand
                value = score(metric, y, apply_thresholds(p, trial))
                if value > best:
                    best, t = value, trial
    return t


def honest_threshold_score(y: np.ndarray, p: np.ndarray, fold: np.ndarray, metric: str) -> tuple[float, float]:
    """Mean and std over folds of `metric` on each held-out fold with thresholds fitted on the other folds
    only: what the thresholds are worth on rows they never saw (fitting and scoring on the same OOF rows
    is optimistic)."""
    values = []
    for k in np.unique(fold):
        tr, te = fold != k, fold == k
        t = fit_thresholds(y[tr], p[tr], metric)
        values.append(metric_value(metric, y[te], apply_thresholds(p[te], t)))
    return float(np.mean(values)), float(np.std(values))
