"""Metrics on probability matrices, by name: higher is better for every score returned by `score`.

y is a 1-D array of class indices (single-label) or an (N, K) 0/1 matrix (multi-label, the probs then
being per-column scores); each metric says which it takes, and refuses the other by name.
"""

from __future__ import annotations

import importlib
import math
import re
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn import metrics as skm

from . import KitError
from .paths import project_root

SINGLE, MULTI, BOTH = "single-label", "multi-label", "both"


def normalized(p: np.ndarray) -> np.ndarray:
    """float32 softmax rows, or rows read back from CSV, sum to 1 only within rounding."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-15, None)
    return p / p.sum(1, keepdims=True)


# Accuracy and log loss in plain numpy, equal to sklearn's (tests/test_ensemble.py checks): sklearn
# validates and copies its input on every call, which made a Caruana blend of 100k rows take 40 s.
def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.asarray(p).argmax(1) == y))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """normalized(p) at the true class, without materializing normalized(p). Multi-label (y an N x K 0/1
    matrix): the binary cross-entropy of every (row, class) cell, averaged, as BCE trains the sigmoids."""
    p = np.asarray(p)
    if np.ndim(y) == 2:
        q = np.clip(p.astype(np.float64), 1e-15, 1 - 1e-15)
        return float(-np.mean(np.where(np.asarray(y) > 0, np.log(q), np.log1p(-q))))
    rows = np.arange(len(y))
    p_true = np.clip(p[rows, y].astype(np.float64), 1e-15, None) / np.maximum(p, 1e-15).sum(1, dtype=np.float64)
    eps = np.finfo(np.float64).eps
    return float(-np.log(np.clip(p_true, eps, 1 - eps)).mean())


def qwk(y: np.ndarray, p: np.ndarray) -> float:
    """Quadratic weighted kappa of the argmax grade. labels=0..K-1: sklearn otherwise weighs by the index
    among the grades present, so a grade nobody got would shrink the distance between its neighbours."""
    return float(skm.cohen_kappa_score(y, p.argmax(1), labels=np.arange(p.shape[1]), weights="quadratic"))


def mean_col_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mean column-wise ROC AUC of a 0/1 target matrix: a column holding a single class has no AUC and is
    skipped (not counted as 0 or 0.5), as Kaggle's multi-label scorers do. Each column is scored on its
    raw scores, so the value depends only on the order of the rows per column (rank blending keeps it)."""
    cols = [j for j in range(y.shape[1]) if len(np.unique(y[:, j])) == 2]
    if not cols:
        raise KitError(f"AUC needs both classes in some column, but every one of the {y.shape[1]} target "
                       "columns holds a single class: score on more rows (all folds' OOF)")
    return float(np.mean([skm.roc_auc_score(y[:, j], p[:, j]) for j in cols]))


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Binary: AUC of p[:, 1]. Multiclass: macro one-vs-rest, each class's AUC on its own column (equal to
    sklearn's roc_auc_score(multi_class='ovr') on rows that sum to 1, without needing them to), classes
    absent from y skipped as in mean_col_auc."""
    if p.shape[1] == 2:
        return mean_col_auc((y == 1)[:, None].astype(int), p[:, 1:])
    return mean_col_auc(np.eye(p.shape[1], dtype=int)[y], p)


def f_beta(beta: float) -> Callable[[np.ndarray, np.ndarray], float]:
    """Multiclass: macro F-beta of the argmax. Multi-label: F-beta per row of the columns scored above 0.5,
    averaged over rows (Kaggle's 'mean F2'); a row with no true and no predicted label scores 0."""
    def value(y, p):
        if y.ndim == 2:
            return skm.fbeta_score(y, (p > 0.5).astype(int), beta=beta, average="samples", zero_division=0)
        return skm.fbeta_score(y, p.argmax(1), beta=beta, average="macro", zero_division=0)
    return value


def map_at_k(k: int) -> Callable[[np.ndarray, np.ndarray], float]:
    """Mean over rows of AP@k on each row's k highest-scored classes (ties: lower class first): precision at
    each hit, summed, over min(true labels, k). One true class per row makes it 1/rank, or 0 outside the
    top k; a row with no true label scores 0 (Kaggle's ml_metrics.mapk)."""
    def value(y, p):
        truth = y.astype(bool) if y.ndim == 2 else np.eye(p.shape[1], dtype=bool)[y]
        top = np.argsort(-p, axis=1, kind="stable")[:, :k]
        hits = np.take_along_axis(truth, top, axis=1)
        precision = np.cumsum(hits, axis=1) / np.arange(1, top.shape[1] + 1)
        n_true = np.minimum(truth.sum(1), k)
        return float(np.mean(np.where(n_true > 0, (precision * hits).sum(1) / np.maximum(n_true, 1), 0.0)))
    return value


@dataclass(frozen=True)
class Metric:
    fn: Callable[[np.ndarray, np.ndarray], float]  # fn(y, probs) -> float
    greater_is_better: bool
    ranking: bool = False  # depends only on how rows are ordered per class (AUC): rank blending keeps it
    targets: str = SINGLE  # the y it scores: SINGLE (1-D class indices), MULTI (N x K 0/1 matrix) or BOTH


METRICS: dict[str, Metric] = {
    "accuracy": Metric(accuracy, True),
    "log_loss": Metric(log_loss, False, targets=BOTH),
    "macro_f1": Metric(lambda y, p: skm.f1_score(y, p.argmax(1), average="macro"), True),
    "balanced_accuracy": Metric(lambda y, p: skm.balanced_accuracy_score(y, p.argmax(1)), True),
    "qwk": Metric(qwk, True),
    "roc_auc": Metric(roc_auc, True, ranking=True),
    "mean_col_auc": Metric(mean_col_auc, True, ranking=True, targets=MULTI),
}
# sklearn scorers whose value depends only on the order of the scores (per class): AUC, average precision
RANKING_SCORERS = ("roc_auc", "average_precision")
# `f_beta:2`, not `f2`: sklearn's scorer 'f1' (binary F1) is a name lookup accepts already
NAMED_FORMS = "f_beta:<beta> (e.g. f_beta:2), map@<k> (e.g. map@5), module:function[:max|:min] (your own)"


def lookup(name: str) -> Metric:
    """Ours by name, f_beta:<beta>, map@<k>, a user's module:function, else any sklearn scorer name
    (e.g. 'roc_auc_ovr')."""
    if name in METRICS:
        return METRICS[name]
    if name.startswith("f_beta:"):
        return Metric(f_beta(parse_number(name, name.removeprefix("f_beta:"), float)), True, targets=BOTH)
    if name.startswith("map@"):
        return Metric(map_at_k(parse_number(name, name.removeprefix("map@"), int)), True, targets=BOTH)
    if ":" in name:
        return user_metric(name)
    return sklearn_metric(name)


def parse_number(name: str, text: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        raise KitError(f"metric {name!r}: {text!r} is not a positive {kind.__name__}; e.g. f_beta:2 or map@5")
    return value


USER_NAME = re.compile(r"(?P<module>[A-Za-z_][\w.]*):(?P<function>[A-Za-z_]\w*)(:(?P<direction>max|min))?")


def user_metric(name: str) -> Metric:
    """`module:function[:max|:min]`: the user's own fn(y, probs) -> float, imported from sys.path or the
    project root. Running the user's code is the point (their competition's metric); :min marks a loss."""
    m = USER_NAME.fullmatch(name)
    if not m:
        raise KitError(f"metric {name!r} is not module:function[:max|:min] (e.g. mymetrics:kappa, or "
                       f"mymetrics:rmse:min for a loss), nor one of {NAMED_FORMS}")
    module, function = import_user_module(name, m["module"]), m["function"]
    fn = getattr(module, function, None)
    if not callable(fn):
        raise KitError(f"metric {name!r}: module {m['module']!r} ({getattr(module, '__file__', None)}) has no "
                       f"function {function!r}; define {function}(y, probs) -> float there, or fix the name")
    return Metric(fn, m["direction"] != "min", targets=BOTH)


def import_user_module(name: str, module: str):
    """Notebooks run in notebooks/, so the project root is searched too (after sys.path, and only while
    importing: it is not left on sys.path)."""
    root = str(project_root())
    added = root not in sys.path
    if added:
        sys.path.append(root)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
            raise  # the user's module imports something missing: their traceback says what
        raise KitError(f"metric {name!r}: no module {module!r} importable from the project root {root} or "
                       f"sys.path; put {module.replace('.', '/')}.py there, or fix the name") from None
    finally:
        if added:
            sys.path.remove(root)


def sklearn_metric(name: str) -> Metric:
    """An sklearn scorer on our probability matrix: the argmax for a label scorer, else the normalized
    probabilities (column 1 when binary). A multi-label matrix gets the columns above 0.5, or the raw scores."""
    try:
        scorer = skm.get_scorer(name)
    except ValueError:
        raise KitError(f"unknown metric {name!r}; use one of {sorted(METRICS)}, {NAMED_FORMS} or an sklearn "
                       "scorer name (sklearn.metrics.get_scorer_names())") from None
    fn, sign, kwargs = scorer._score_func, scorer._sign, scorer._kwargs
    # scikit-learn < 1.4 (Kaggle's image pins 1.2.2) has one scorer class per response method instead
    wants_labels = getattr(scorer, "_response_method", None) == "predict" or type(scorer).__name__ == "_PredictScorer"

    def value(y, p):
        if y.ndim == 2:
            try:
                return fn(y, (p > 0.5).astype(int) if wants_labels else p, **kwargs)
            except ValueError as e:
                raise KitError(f"metric {name!r} (sklearn) on a multi-label target matrix: {e}") from None
        if wants_labels:
            return fn(y, p.argmax(1), **kwargs)
        p = normalized(p)
        return fn(y, p[:, 1] if p.shape[1] == 2 else p, **kwargs)

    return Metric(value, sign > 0, name.startswith(RANKING_SCORERS), targets=BOTH)


def check_targets(name: str, metric: Metric, y: np.ndarray, probs: np.ndarray) -> None:
    """A 1-D y (class indices) or a matrix of probs' shape (multi-label), and one the metric scores."""
    kind = MULTI if y.ndim == 2 else SINGLE
    fits = probs.ndim == 2 and (y.shape == probs.shape if kind == MULTI else y.ndim == 1 and len(y) == len(probs))
    if not fits:
        raise KitError(f"metric {name!r}: targets of shape {y.shape} do not match probabilities of shape "
                       f"{probs.shape}; expected class indices (N,) or a 0/1 matrix (N, K) for (N, K) probabilities")
    if metric.targets not in (kind, BOTH):
        other = "mean_col_auc, log_loss, " if kind == MULTI else "roc_auc, qwk, "
        raise KitError(f"metric {name!r} scores {metric.targets} targets but y is {kind} (shape {y.shape}); "
                       f"for {kind} use {other}f_beta:<beta>, map@<k> or a module:function of your own")


def metric_value(name: str, y: np.ndarray, probs: np.ndarray) -> float:
    """The metric in its own units (log loss stays a loss)."""
    metric, y, probs = lookup(name), np.asarray(y), np.asarray(probs)
    check_targets(name, metric, y, probs)
    return float(metric.fn(y, probs))


def score(name: str, y: np.ndarray, probs: np.ndarray) -> float:
    """The metric signed so that higher is better (negated for losses): what optimizers maximize."""
    v = metric_value(name, y, probs)
    return v if lookup(name).greater_is_better else -v
