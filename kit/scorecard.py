"""The blend's OOF scored per class and per decision, for the infer notebook: a multi-label task's per-class
thresholds with each class's F-beta at 0.5 and at its threshold, an ordinal task's cut points with QWK by argmax,
by the rounded expected grade and by the fitted cuts. Read from a BlendReport (y, oof_probs, classes) and its
blend.json dict; keys a blend may lack (`thresholds`, `cut_points`) are read with .get()."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from . import KitError
from .metrics import metric_value, parse_number
from .thresholds import apply_cut_points, grade_values, midpoints

DECISIONS = {"thresholds": "per-class thresholds", "cut_points": "cut points"}  # blend.json key -> what it is


def f_beta_of(metric: str) -> float:
    """The beta of an f_beta:<beta> metric; 1 (F1) for any other metric."""
    return parse_number(metric, metric.removeprefix("f_beta:"), float) if metric.startswith("f_beta:") else 1.0


def class_thresholds(y: np.ndarray, probs: np.ndarray, classes: list, thresholds: list | None = None,
                     metric: str = "f_beta:1") -> pd.DataFrame:
    """One row per class: its threshold (0.5 where the blend fitted none), its F-beta (beta from `metric`) at 0.5
    and at the threshold (a class is predicted when its probability is above it, as kit.thresholds applies them),
    its ROC AUC (NaN when the OOF rows hold one value of it) and its support (images carrying it). Fitted and
    scored on the same OOF rows: the gain is optimistic, the blend's honest threshold score is not."""
    y, probs = np.asarray(y), np.asarray(probs, dtype=np.float64)
    if y.ndim != 2 or y.shape != probs.shape or probs.shape[1] != len(classes):
        raise KitError(f"class_thresholds needs a multi-label (N, K) 0/1 target matrix and (N, K) probabilities "
                       f"for {len(classes)} classes; got {y.shape} and {probs.shape}: pass report.y, "
                       "report.oof_probs and report.classes of a multi-label blend")
    t = np.full(len(classes), 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    if t.shape != (len(classes),):
        raise KitError(f"{t.size} thresholds for {len(classes)} classes; pass the blend's 'thresholds' list")
    beta = f_beta_of(metric)

    def f(j, cut):
        return skm.fbeta_score(y[:, j], (probs[:, j] > cut).astype(int), beta=beta, zero_division=0)

    def auc(j):
        return skm.roc_auc_score(y[:, j], probs[:, j]) if len(np.unique(y[:, j])) == 2 else np.nan

    name = f"f{beta:g}"
    return pd.DataFrame({"class": [str(c) for c in classes], "threshold": t,
                         f"{name} at 0.5": [f(j, 0.5) for j in range(len(classes))],
                         f"{name} at threshold": [f(j, t[j]) for j in range(len(classes))],
                         "auc": [auc(j) for j in range(len(classes))], "support": y.sum(0).astype(int)})


def grade_predictions(probs: np.ndarray, classes: list, cut_points: list | None = None) -> np.ndarray:
    """The predicted grade index per row: the argmax without cut points, else the grade the expected grade
    (sum_k p_k * grade_k) falls in between the cut points (kit.thresholds.apply_cut_points)."""
    probs = np.asarray(probs, dtype=np.float64)
    if cut_points is None or not len(cut_points):  # none fitted, or none beat the argmax
        return probs.argmax(1)
    cuts = np.asarray(cut_points, dtype=np.float64)
    if cuts.shape != (len(classes) - 1,) or np.any(np.diff(cuts) < 0):
        raise KitError(f"cut points {cuts.tolist()} for {len(classes)} grades; expected {len(classes) - 1} "
                       "increasing values: pass the blend's 'cut_points' list")
    return apply_cut_points(probs, cuts, grade_values(classes)).argmax(1)


def cut_points_table(cut_points: list, classes: list) -> pd.DataFrame:
    """Each cut point beside plain rounding's (the midpoint): between which grades, where, and how far it moved."""
    mid = midpoints(grade_values(classes))
    cuts = np.asarray(cut_points, dtype=np.float64)
    if cuts.shape != mid.shape:
        raise KitError(f"{cuts.size} cut points for {len(classes)} grades; expected {mid.size}")
    return pd.DataFrame({"between": [f"{a} | {b}" for a, b in zip(classes[:-1], classes[1:])],
                         "cut point": cuts, "midpoint": mid, "moved": cuts - mid})


def ordinal_scores(y: np.ndarray, probs: np.ndarray, classes: list, cut_points: list | None = None,
                   metric: str = "qwk") -> pd.DataFrame:
    """QWK (and `metric`, when another) of the blend's OOF grades decided three ways: the argmax, the expected
    grade rounded (cuts at the midpoints), the cut points fitted on OOF (when the blend has them). Fitted and
    scored on the same rows: the last is optimistic, as any fitted decision scored in-sample."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(probs):
        raise KitError(f"ordinal_scores needs one grade index per row (shape ({len(probs)},)); got {y.shape}")
    ways = {"argmax": None, "expected grade, rounded": midpoints(grade_values(classes)).tolist()}
    if cut_points is not None and len(cut_points):
        ways["cut points fitted on OOF"] = cut_points
    names = ["qwk"] + ([metric] if metric and metric != "qwk" else [])
    eye = np.eye(len(classes))
    rows = [{"decision": way, **{m: metric_value(m, y, eye[grade_predictions(probs, classes, cuts)]) for m in names}}
            for way, cuts in ways.items()]
    return pd.DataFrame(rows)


def decision_summary(blend: dict, metric: str) -> str:
    """One line on the blend's fitted decision (per-class thresholds or cut points): its in-sample OOF score
    beside the blend's raw one, and the honest score, which fits the decision on the other folds too
    (kit.ensemble.honest_blend_score); '' when it has none."""
    for key, what in DECISIONS.items():
        if blend.get(key) is None:
            continue
        if not len(blend[key]):  # fit_decision keeps the argmax where no cut points beat it
            return (f"no {what} beat the argmax on the blended OOF ({metric} {blend.get('oof_score', np.nan):.4f}): "
                    f"the argmax decides; honest {blend.get('honest_score', np.nan):.4f} ± "
                    f"{blend.get('honest_std', np.nan):.4f}")
        return (f"{what} fitted on the blended OOF ({metric}): in-sample {blend.get(f'{key}_oof_score', np.nan):.4f} "
                f"(without them {blend.get('oof_score', np.nan):.4f}); honest, with {what} fitted on the other "
                f"folds: {blend.get('honest_score', np.nan):.4f} ± {blend.get('honest_std', np.nan):.4f}")
    return ""
