"""Metrics on probability matrices, by name: higher is better for every score returned by `score`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn import metrics as skm

from . import KitError


def normalized(p: np.ndarray) -> np.ndarray:
    """float32 softmax rows, or rows read back from CSV, sum to 1 only within rounding."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-15, None)
    return p / p.sum(1, keepdims=True)


# Accuracy and log loss in plain numpy, equal to sklearn's (tests/test_ensemble.py checks): sklearn
# validates and copies its input on every call, which made a Caruana blend of 100k rows take 40 s.
def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.asarray(p).argmax(1) == y))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """normalized(p) at the true class, without materializing normalized(p)."""
    p = np.asarray(p)
    rows = np.arange(len(y))
    p_true = np.clip(p[rows, y].astype(np.float64), 1e-15, None) / np.maximum(p, 1e-15).sum(1, dtype=np.float64)
    eps = np.finfo(np.float64).eps
    return float(-np.log(np.clip(p_true, eps, 1 - eps)).mean())


@dataclass(frozen=True)
class Metric:
    fn: Callable[[np.ndarray, np.ndarray], float]  # fn(y, probs) -> float
    greater_is_better: bool
    ranking: bool = False  # depends only on how rows are ordered per class (AUC): rank blending keeps it


METRICS: dict[str, Metric] = {
    "accuracy": Metric(accuracy, True),
    "log_loss": Metric(log_loss, False),
    "macro_f1": Metric(lambda y, p: skm.f1_score(y, p.argmax(1), average="macro"), True),
    "balanced_accuracy": Metric(lambda y, p: skm.balanced_accuracy_score(y, p.argmax(1)), True),
}
# sklearn scorers whose value depends only on the order of the scores (per class): AUC, average precision
RANKING_SCORERS = ("roc_auc", "average_precision")


def lookup(name: str) -> Metric:
    """Ours by name, else any sklearn scorer name (e.g. 'roc_auc_ovr')."""
    if name in METRICS:
        return METRICS[name]
    try:
        scorer = skm.get_scorer(name)
    except ValueError:
        raise KitError(f"unknown metric {name!r}; use one of {sorted(METRICS)} or an sklearn scorer name "
                       f"(sklearn.metrics.get_scorer_names())") from None
    fn, sign, kwargs = scorer._score_func, scorer._sign, scorer._kwargs
    wants_labels = scorer._response_method == "predict"

    def value(y, p):
        if wants_labels:
            return fn(y, p.argmax(1), **kwargs)
        p = normalized(p)
        return fn(y, p[:, 1] if p.shape[1] == 2 else p, **kwargs)

    return Metric(value, sign > 0, name.startswith(RANKING_SCORERS))


def metric_value(name: str, y: np.ndarray, probs: np.ndarray) -> float:
    """The metric in its own units (log loss stays a loss)."""
    return float(lookup(name).fn(np.asarray(y), np.asarray(probs)))


def score(name: str, y: np.ndarray, probs: np.ndarray) -> float:
    """The metric signed so that higher is better (negated for losses): what optimizers maximize."""
    v = metric_value(name, y, probs)
    return v if lookup(name).greater_is_better else -v
