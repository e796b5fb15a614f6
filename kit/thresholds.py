"""Decisions fitted on OOF probabilities: per-class thresholds for multi-label F1/F-beta, cut points on the
expected grade for ordinal tasks (QWK).

A sigmoid's 0.5 is rarely the best cut: rare classes want a lower one. The thresholds are applied as a
monotone rescaling of each column (`apply_thresholds`) that puts the fitted threshold at 0.5, so every
consumer that cuts at 0.5 (kit.metrics.f_beta, the label-list submission) uses them unchanged, and ranking
metrics (AUC) are untouched.

An ordinal grade is predicted as per-grade probabilities (the cumulative head's differences, or a softmax over
the grades: kit.models.head_of), so TTA and the blend work on probabilities as for any class; decoded as the
expected grade sum_k p_k * grade_k and cut into grades by cut points fitted on OOF (the APTOS/PANDA
"optimized rounder"): the argmax ignores how far apart grades are, and QWK punishes a distant grade
quadratically. `apply_cut_points` returns the one-hot matrix of the cut grade, so the metrics and the label
submission (both read the argmax) use the cut unchanged.
"""

from __future__ import annotations

import numpy as np

from . import KitError
from .competition import ORDINAL_TASKS
from .metrics import lookup, score

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


CUT_STEPS = 41  # candidate positions per cut point, evenly between its neighbours
LABEL_FREE = ("log_loss",)  # metrics that read the probabilities, not a decision: no thresholds, no cuts


def grade_values(classes: list) -> np.ndarray:
    """The numeric grade of each class ('0', '1', '3'...), in class order (kit sorts integers numerically)."""
    try:
        return np.array([float(c) for c in classes])
    except ValueError:
        raise KitError(f"an ordinal task needs numeric grades as classes, got {list(classes)[:10]}; use "
                       "task='multiclass'") from None


def midpoints(grades: np.ndarray) -> np.ndarray:
    """The cut points of plain rounding of the expected grade: halfway between neighbouring grades."""
    return (grades[:-1] + grades[1:]) / 2


def expected_grade(p: np.ndarray, grades: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return (p / p.sum(1, keepdims=True)) @ grades


def apply_cut_points(p: np.ndarray, cuts: np.ndarray, grades: np.ndarray) -> np.ndarray:
    """(N, K) one-hot of the grade each row's expected grade falls in: grade k between cuts[k-1] and cuts[k]."""
    k = np.searchsorted(np.asarray(cuts, dtype=np.float64), expected_grade(p, grades), side="right")
    return np.eye(len(grades))[k]


def fit_cut_points(y: np.ndarray, p: np.ndarray, grades: np.ndarray, metric: str) -> np.ndarray:
    """K-1 increasing cut points on the expected grade maximizing `metric`, by coordinate ascent from the
    midpoints between grades (plain rounding of the expected grade): each cut tries CUT_STEPS positions
    between its neighbours and moves only where the score is strictly higher. Coordinate search rather
    than scipy's Nelder-Mead (the usual optimized rounder): the score is a step function of the cuts, where
    a simplex stalls on a plateau; a grid over each cut's own interval cannot reorder the cuts."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise KitError(f"cut points are for ordinal grades (class indices, shape (N,)); got shape {y.shape}")
    e = expected_grade(p, grades)
    eye = np.eye(len(grades))
    cuts = midpoints(grades)

    def value(c):
        return score(metric, y, eye[np.searchsorted(c, e, side="right")])

    best = value(cuts)
    for _ in range(PASSES):
        for j in range(len(cuts)):
            lo = cuts[j - 1] if j else grades[0]
            hi = cuts[j + 1] if j + 1 < len(cuts) else grades[-1]
            for cand in np.linspace(lo, hi, CUT_STEPS)[1:-1]:
                trial = cuts.copy()
                trial[j] = cand
                v = value(trial)
                if v > best:
                    best, cuts = v, trial
    return cuts


def decision_kind(task: str, metric: str) -> str:
    """'thresholds' (multi-label, a metric that cuts at 0.5: F1/F-beta), 'cut_points' (ordinal, a metric on
    labels: QWK, accuracy...), or '' (the probabilities are the prediction: AUC, log loss, single-label)."""
    m = lookup(metric)
    if task == "multilabel" and metric.startswith("f_beta:"):
        return "thresholds"
    if task in ORDINAL_TASKS and not m.ranking and metric not in LABEL_FREE:
        return "cut_points"
    return ""


def fit_decision(kind: str, y: np.ndarray, p: np.ndarray, metric: str, classes: list) -> list[float]:
    """The fitted thresholds or cut points of `kind` (decision_kind), as a list for blend.json. Cut points
    must beat the argmax on the rows they are fitted on, else [] (the argmax decides): a confident softmax
    torn between two distant grades has an expected grade between them that neither is, which no cut
    point mends (on the demo's digits the argmax scores 0.997 QWK, the best cuts 0.992)."""
    if kind == "thresholds":
        return fit_thresholds(y, p, metric).tolist()
    grades = grade_values(classes)
    cuts = fit_cut_points(y, p, grades, metric)
    return cuts.tolist() if score(metric, y, apply_cut_points(p, cuts, grades)) > score(metric, y, p) else []


def apply_decision(kind: str, p: np.ndarray, values: list[float], classes: list) -> np.ndarray:
    """p with the decision applied: thresholds moved to 0.5, or the one-hot of the cut grade; '' and no cut
    points (the argmax won) leave p."""
    if kind == "thresholds":
        return apply_thresholds(p, np.array(values))
    if kind == "cut_points" and len(values):
        return apply_cut_points(p, np.array(values), grade_values(classes))
    return p
