"""OOF contract checks, fold averaging, and blend weights fitted on OOF probability matrices."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from . import KitError
from .folds import folds_hash
from .metrics import metric_value, score
from .paths import exp_dir


OOF = "oof.csv"  # every fold writes it last: its presence marks the fold complete
RESERVED = ("id", "fold", "target", "tta", "folds_hash")  # OOF columns that are not classes


def oof_name(tta: str | None) -> str:
    """oof.csv, or the OOF made with one TTA preset (tta='auto' runs write one per preset)."""
    return OOF if tta is None else f"oof-{tta}.csv"


def oof_frame(ids, fold: int, targets, probs: np.ndarray, classes: list[str], tta: str, fhash: str) -> pd.DataFrame:
    df = pd.DataFrame(probs, columns=classes)
    df.insert(0, "id", np.asarray(ids))
    df.insert(1, "fold", fold)
    df.insert(2, "target", np.asarray(targets))
    df["tta"] = tta
    df["folds_hash"] = fhash
    return df


@dataclass
class Experiment:
    name: str
    oof: pd.DataFrame  # rows in folds.csv order
    probs: np.ndarray  # (N, K) OOF probabilities
    classes: list[str]
    tta: str
    folds_hash: str


def load_oof(runs_dir: str | Path, exp: str, folds: pd.DataFrame, tta: str | None = None) -> Experiment:
    """All folds' OOF of one experiment, checked against folds.csv: each id once, same folds hash, one TTA.

    tta=None reads each fold's oof.csv; a preset name reads the OOF made with that TTA (tta='auto' runs).
    """
    d = exp_dir(runs_dir, exp)
    name = oof_name(tta)
    files = sorted(d.glob(f"fold*/{name}"))
    n_folds = int(folds["fold"].max()) + 1
    done = {int(f.parent.name.removeprefix("fold")) for f in files}
    if done != set(range(n_folds)):
        raise KitError(f"experiment {exp!r} ({d}) has {name} for folds {sorted(done)} but folds.csv has "
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
    classes = [c for c in oof.columns if c not in RESERVED]
    return Experiment(exp, oof, oof[classes].to_numpy(float), classes, ttas.pop(), expected)


def check_compatible(exps: list[Experiment]) -> None:
    first = exps[0]
    for e in exps[1:]:
        if e.folds_hash != first.folds_hash:
            raise KitError(f"experiments {first.name!r} and {e.name!r} use different folds "
                           f"({first.folds_hash} vs {e.folds_hash}); OOF blends need the same folds")
        if e.classes != first.classes:
            raise KitError(f"experiments {first.name!r} and {e.name!r} have different classes")


def load_best_tta(runs_dir: str | Path, exp: str, folds: pd.DataFrame, metric: str = "accuracy"
                  ) -> tuple[Experiment, pd.DataFrame]:
    """The experiment's OOF with the TTA that scores best on OOF (ties: fewer views), and the OOF score of
    every TTA it has predictions for, best first. Its test predictions must use the same TTA."""
    from .tta import CANDIDATES, n_views

    d = exp_dir(runs_dir, exp)
    tried = [load_oof(runs_dir, exp, folds, t) for t in CANDIDATES if list(d.glob(f"fold*/{oof_name(t)}"))]
    tried = tried or [load_oof(runs_dir, exp, folds)]  # a fixed-TTA run: only oof.csv
    y = tried[0].oof["target"].to_numpy()
    ranked = sorted(tried, key=lambda e: (-score(metric, y, e.probs), n_views(e.tta)))
    table = pd.DataFrame([{"experiment": exp, "tta": e.tta, "views": n_views(e.tta),
                           f"oof_{metric}": metric_value(metric, y, e.probs)} for e in ranked])
    return ranked[0], table


SPACES = ("prob", "logit", "power", "rank")


def to_space(p: np.ndarray, space: str, power: float = 2.0) -> np.ndarray:
    """Where predictions are averaged: probabilities, log-probabilities, p**power, or per-class ranks."""
    if space == "prob":
        return p
    if space == "logit":
        return np.log(np.clip(p, 1e-15, None))
    if space == "power":
        return np.power(p, power)
    if space == "rank":  # each class column ranked over rows, scaled to [0, 1]
        return (np.argsort(np.argsort(p, axis=0), axis=0) + 0.5) / len(p)
    raise KitError(f"unknown blend space {space!r}; choose one of {SPACES}")


def from_space(z: np.ndarray, space: str) -> np.ndarray:
    """Back to rows that sum to one."""
    if space == "logit":
        z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def blend(preds: list[np.ndarray], weights: np.ndarray, space: str = "prob", power: float = 2.0) -> np.ndarray:
    return from_space(sum(w * to_space(p, space, power) for w, p in zip(weights, preds)), space)


def fit_blend_weights(preds: list[np.ndarray], y: np.ndarray, method: str = "caruana", metric: str = "accuracy",
                      caruana_rounds: int = 50, space: str = "prob", power: float = 2.0) -> np.ndarray:
    """Non-negative weights summing to one, for blending in `space`."""
    m = len(preds)
    if m == 1:
        return np.ones(1)
    if method == "slsqp":
        # accuracy-like metrics are flat almost everywhere: fit the smooth log loss, a proper scoring rule
        zs = [to_space(p, space, power) for p in preds]
        rows = np.arange(len(y))

        def nll(w):
            p = from_space(sum(wi * z for wi, z in zip(w, zs)), space)
            return -np.log(np.clip(p[rows, y], 1e-15, None)).mean()

        res = minimize(nll, np.full(m, 1 / m), method="SLSQP", bounds=[(0, 1)] * m,
                       constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
        w = np.clip(res.x, 0, None)
        return w / w.sum()
    if method == "caruana":
        return caruana(preds, y, metric, caruana_rounds, space, power)
    if method == "mean":
        return np.full(m, 1 / m)
    raise KitError(f"unknown blend method {method!r}; choose 'slsqp', 'caruana' or 'mean'")


def caruana(preds: list[np.ndarray], y: np.ndarray, metric: str, rounds: int, space: str = "prob",
            power: float = 2.0) -> np.ndarray:
    """Caruana et al. 2004: greedy forward selection with replacement from the best single model,
    returning the best ensemble seen (so in-sample it is never below the best single model).

    Ties on the metric (frequent for accuracy) go to the lower log loss.
    """
    # float32 and as few passes over the (rows, classes) matrices as possible: each round tries every
    # model, so this loop is the cost of a blend (bench/blend_fit.py)
    zs = [to_space(np.asarray(p, np.float32), space, power).astype(np.float32) for p in preds]
    if space == "prob":  # mixtures of rows that sum to one sum to one: no renormalizing per trial
        zs = [z / z.sum(1, keepdims=True) for z in zs]

    def key(z):
        p = z if space == "prob" else from_space(z, space)
        return score(metric, y, p), score("log_loss", y, p)

    first = max(range(len(preds)), key=lambda i: key(zs[i]))
    counts = np.zeros(len(preds))
    counts[first] = 1
    current = zs[first].copy()
    best_key, best_counts = key(current), counts.copy()
    trial = np.empty_like(current)
    for _ in range(rounds - 1):
        n = counts.sum()
        kept = current * np.float32(n / (n + 1))
        trials = []
        for z in zs:
            np.multiply(z, np.float32(1 / (n + 1)), out=trial)
            trials.append(key(np.add(kept, trial, out=trial)))
        j = max(range(len(zs)), key=lambda i: trials[i])
        counts[j] += 1
        current = kept + zs[j] * np.float32(1 / (n + 1))
        if trials[j] > best_key:
            best_key, best_counts = trials[j], counts.copy()
    return best_counts / best_counts.sum()


def honest_blend_score(preds: list[np.ndarray], y: np.ndarray, fold: np.ndarray, method: str = "caruana",
                       metric: str = "accuracy", space: str = "prob", power: float = 2.0) -> tuple[float, float]:
    """Mean and std over folds, in the metric's own units, of the score on each fold of weights fitted
    on the other folds: what the blend is worth on rows its weights never saw."""
    values = []
    for k in np.unique(fold):
        tr, te = fold != k, fold == k
        w = fit_blend_weights([p[tr] for p in preds], y[tr], method, metric, space=space, power=power)
        values.append(metric_value(metric, y[te], blend([p[te] for p in preds], w, space, power)))
    return float(np.mean(values)), float(np.std(values))
