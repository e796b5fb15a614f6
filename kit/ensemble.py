"""OOF contract checks, fold averaging, and blend weights fitted on OOF probability matrices."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from . import KitError
from .folds import folds_hash
from .metrics import score
from .paths import exp_dir


@dataclass
class Experiment:
    name: str
    oof: pd.DataFrame  # rows in folds.csv order
    probs: np.ndarray  # (N, K) OOF probabilities
    classes: list[str]
    tta: str
    folds_hash: str


def load_oof(runs_dir: str | Path, exp: str, folds: pd.DataFrame) -> Experiment:
    """All folds' OOF of one experiment, checked against folds.csv: each id once, same folds hash, one TTA."""
    d = exp_dir(runs_dir, exp)
    files = sorted(d.glob("fold*/oof.csv"))
    n_folds = int(folds["fold"].max()) + 1
    done = {int(f.parent.name.removeprefix("fold")) for f in files}
    if done != set(range(n_folds)):
        raise KitError(f"experiment {exp!r} ({d}) has OOF for folds {sorted(done)} but folds.csv has "
                       f"{n_folds}; run the missing folds {sorted(set(range(n_folds)) - done)} first")
    oof = pd.concat([pd.read_csv(f, dtype={"id": str}) for f in files], ignore_index=True)
    expected = folds_hash(folds)
    hashes = set(oof["folds_hash"].astype(str))
    if hashes != {expected}:
        raise KitError(f"experiment {exp!r} was trained on other folds (hash {sorted(hashes - {expected})}, "
                       f"folds.csv has {expected}); retrain it on the current folds.csv")
    ttas = set(oof["tta"])
    if len(ttas) != 1:
        raise KitError(f"experiment {exp!r} mixes TTA {sorted(ttas)} across folds; OOF and test must share one TTA")
    dup = oof["id"][oof["id"].duplicated()]
    if len(dup):
        raise KitError(f"experiment {exp!r}: {len(dup)} id(s) predicted twice in OOF, e.g. {dup.tolist()[:5]}")
    missing = sorted(set(folds["id"]) - set(oof["id"]))
    if missing:
        raise KitError(f"experiment {exp!r}: {len(missing)} id(s) of folds.csv have no OOF prediction, "
                       f"e.g. {missing[:5]}")
    oof = oof.set_index("id").loc[folds["id"]].reset_index()
    classes = [c for c in oof.columns if c not in ("id", "fold", "target", "tta", "folds_hash")]
    return Experiment(exp, oof, oof[classes].to_numpy(float), classes, ttas.pop(), expected)


def check_compatible(exps: list[Experiment]) -> None:
    first = exps[0]
    for e in exps[1:]:
        if e.folds_hash != first.folds_hash:
            raise KitError(f"experiments {first.name!r} and {e.name!r} use different folds "
                           f"({first.folds_hash} vs {e.folds_hash}); OOF blends need the same folds")
        if e.classes != first.classes:
            raise KitError(f"experiments {first.name!r} and {e.name!r} have different classes")


def blend(preds: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    return sum(w * p for w, p in zip(weights, preds))


def fit_blend_weights(preds: list[np.ndarray], y: np.ndarray, method: str = "slsqp", metric: str = "accuracy",
                      caruana_rounds: int = 50) -> np.ndarray:
    """Non-negative weights summing to one."""
    m = len(preds)
    if m == 1:
        return np.ones(1)
    if method == "slsqp":
        # accuracy-like metrics are flat almost everywhere: fit the smooth log loss, a proper scoring rule
        stack = np.stack(preds)  # (M, N, K)
        rows = np.arange(len(y))

        def nll(w):
            return -np.log(np.clip(np.tensordot(w, stack[:, rows, y], 1), 1e-15, None)).mean()

        res = minimize(nll, np.full(m, 1 / m), method="SLSQP", bounds=[(0, 1)] * m,
                       constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
        w = np.clip(res.x, 0, None)
        return w / w.sum()
    if method == "caruana":
        return caruana(preds, y, metric, caruana_rounds)
    if method == "mean":
        return np.full(m, 1 / m)
    raise KitError(f"unknown blend method {method!r}; choose 'slsqp', 'caruana' or 'mean'")


def caruana(preds: list[np.ndarray], y: np.ndarray, metric: str, rounds: int) -> np.ndarray:
    """Caruana et al. 2004: greedy forward selection with replacement, started from the best single model."""
    counts = np.zeros(len(preds))
    scores = [score(metric, y, p) for p in preds]
    counts[int(np.argmax(scores))] = 1
    current = preds[int(np.argmax(scores))].copy()
    for _ in range(rounds - 1):
        n = counts.sum()
        trial = [score(metric, y, (current * n + p) / (n + 1)) for p in preds]
        j = int(np.argmax(trial))
        counts[j] += 1
        current = (current * n + preds[j]) / (n + 1)
    return counts / counts.sum()


def honest_blend_score(preds: list[np.ndarray], y: np.ndarray, fold: np.ndarray, method: str = "slsqp",
                       metric: str = "accuracy") -> tuple[float, float]:
    """Mean and std over folds of the score on each fold of weights fitted on the other folds."""
    scores = []
    for k in np.unique(fold):
        tr, te = fold != k, fold == k
        w = fit_blend_weights([p[tr] for p in preds], y[tr], method, metric)
        scores.append(score(metric, y[te], blend([p[te] for p in preds], w)))
    return float(np.mean(scores)), float(np.std(scores))
