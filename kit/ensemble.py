"""OOF contract checks, fold averaging, and blend weights fitted on OOF probability matrices."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from . import KitError
from .blendconfig import SPACES, BlendConfig
from .folds import folds_hash
from .metrics import metric_value, score
from .paths import exp_dir
from .rundir import OOF, RESERVED, check_folds_done, fold_checkpoint, made_by, oof_name, read_oof
from .tta import CANDIDATES, n_views

# What the honest score cannot hold out: said in every BlendReport and blend.json
HONEST_LEAK = ("each fold's best epoch (its best.pt) was picked on that fold's own validation rows, which are its "
               "OOF rows and the rows the honest score holds out: the OOF scores and the honest score are still "
               "optimistic by that choice of epoch (little when validation is flat near its best, more with few "
               "rows and many epochs); the TTA choice and the blend weights are nested, the epoch is not")


@dataclass
class Experiment:
    name: str
    oof: pd.DataFrame  # rows in folds.csv order
    probs: np.ndarray  # (N, K) OOF probabilities
    classes: list[str]
    tta: str
    folds_hash: str
    checkpoints: tuple[str, ...] = ()  # per fold, the hash of the best.pt that made its OOF


def n_folds_of(folds: pd.DataFrame) -> int:
    return int(folds["fold"].max()) + 1


def load_oof(runs_dir: str | Path, exp: str, folds: pd.DataFrame, tta: str | None = None,
             checkpoints: tuple[str, ...] | None = None) -> Experiment:
    """All folds' OOF of one experiment, checked against folds.csv: each id once, same folds hash, one TTA,
    each fold's rows made by its current best.pt (checkpoints: their hashes, computed if not given).

    tta=None reads each fold's oof.csv; a preset name reads the OOF made with that TTA (tta='auto' runs).
    """
    d = exp_dir(runs_dir, exp)
    n_folds = n_folds_of(folds)
    check_folds_done(d, oof_name(tta), n_folds)
    checkpoints = checkpoints or tuple(fold_checkpoint(d / f"fold{k}") for k in range(n_folds))
    parts = [read_oof(d / f"fold{k}", tta, checkpoints[k]) for k in range(n_folds)]
    oof = pd.concat(parts, ignore_index=True)
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
    return Experiment(exp, oof, oof[classes].to_numpy(float), classes, ttas.pop(), expected, tuple(checkpoints))


def check_compatible(exps: list[Experiment]) -> None:
    """Blendable together: same folds, same classes, and the same target on every row."""
    first = exps[0]
    for e in exps[1:]:
        if e.folds_hash != first.folds_hash:
            raise KitError(f"experiments {first.name!r} and {e.name!r} use different folds "
                           f"({first.folds_hash} vs {e.folds_hash}); OOF blends need the same folds")
        if e.classes != first.classes:
            raise KitError(f"experiments {first.name!r} and {e.name!r} have different classes")
        a, b = first.oof["target"].to_numpy(), e.oof["target"].to_numpy()
        differ = np.flatnonzero(a != b)
        if len(differ):
            i = differ[0]
            raise KitError(f"experiments {first.name!r} and {e.name!r} were trained on different labels: "
                           f"{len(differ)} row(s) differ, e.g. id {first.oof['id'].iloc[i]!r} is "
                           f"{first.classes[a[i]]!r} in {first.name!r} and {e.classes[b[i]]!r} in {e.name!r}; "
                           "retrain the one made before train.csv changed")


def load_tta_candidates(runs_dir: str | Path, exp: str, folds: pd.DataFrame) -> list[Experiment]:
    """The experiment's OOF with every TTA preset whose files are complete and made by each fold's current
    best.pt (an oof-<tta>.csv left by an earlier run is not a candidate), fewest views first; a fixed-TTA
    run's oof.csv if no preset file is."""
    d = exp_dir(runs_dir, exp)
    n_folds = n_folds_of(folds)
    check_folds_done(d, OOF, n_folds)
    checkpoints = tuple(fold_checkpoint(d / f"fold{k}") for k in range(n_folds))
    current = [t for t in CANDIDATES
               if all(made_by(d / f"fold{k}" / oof_name(t)) == h for k, h in enumerate(checkpoints))]
    tried = [load_oof(runs_dir, exp, folds, t, checkpoints) for t in current]
    tried = tried or [load_oof(runs_dir, exp, folds, None, checkpoints)]
    return sorted(tried, key=lambda e: n_views(e.tta))


def pick_tta(candidates: list[Experiment], y: np.ndarray, metric: str) -> Experiment:
    """The candidate that scores best on OOF; ties go to the earlier one (fewer views)."""
    return max(candidates, key=lambda e: score(metric, y, e.probs))


def tta_scores(candidates: list[Experiment], y: np.ndarray, metric: str) -> pd.DataFrame:
    """experiment, tta, views, OOF metric of every candidate, best first (ties keep the given order)."""
    ranked = sorted(candidates, key=lambda e: -score(metric, y, e.probs))  # stable
    return pd.DataFrame([{"experiment": e.name, "tta": e.tta, "views": n_views(e.tta),
                          f"oof_{metric}": metric_value(metric, y, e.probs)} for e in ranked])


def load_best_tta(runs_dir: str | Path, exp: str, folds: pd.DataFrame, metric: str = "accuracy"
                  ) -> tuple[Experiment, pd.DataFrame]:
    """The experiment's OOF with the TTA that scores best on OOF (ties: fewer views), and the OOF score of
    every TTA it has current predictions for, best first. Its test predictions must use the same TTA."""
    candidates = load_tta_candidates(runs_dir, exp, folds)
    y = candidates[0].oof["target"].to_numpy()
    return pick_tta(candidates, y, metric), tta_scores(candidates, y, metric)


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


def from_space(z: np.ndarray, space: str, power: float = 2.0) -> np.ndarray:
    """Back to rows that sum to one: the inverse of to_space (up to normalization), so one model blended
    alone is itself; rank space has no inverse (rows of normalized ranks)."""
    if space == "logit":
        z = np.exp(z - z.max(1, keepdims=True))
    elif space == "power":
        z = np.power(np.clip(z, 0, None), 1 / power)
    return z / z.sum(1, keepdims=True)


def blend(preds: list[np.ndarray], weights: np.ndarray, config: BlendConfig = BlendConfig()) -> np.ndarray:
    """The weighted average of the predictions in config.space, back to rows that sum to one."""
    space, power = config.space, config.power
    return from_space(sum(w * to_space(p, space, power) for w, p in zip(weights, preds)), space, power)


def fit_blend_weights(preds: list[np.ndarray], y: np.ndarray, config: BlendConfig = BlendConfig()) -> np.ndarray:
    """Non-negative weights summing to one, for blending in config.space, fitted on config.objective;
    config.metric is the competition's, what the blend is reported in."""
    m = len(preds)
    if m == 1:
        return np.ones(1)
    if config.method == "slsqp":  # BlendConfig refuses slsqp with any objective but log loss
        space, power = config.space, config.power
        zs = [to_space(p, space, power) for p in preds]
        rows = np.arange(len(y))

        def nll(w):
            p = from_space(sum(wi * z for wi, z in zip(w, zs)), space, power)
            return -np.log(np.clip(p[rows, y], 1e-15, None)).mean()

        res = minimize(nll, np.full(m, 1 / m), method="SLSQP", bounds=[(0, 1)] * m,
                       constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
        w = np.clip(res.x, 0, None)
        return w / w.sum()
    if config.method == "caruana":
        return caruana(preds, y, config)
    return np.full(m, 1 / m)  # "mean", the only other method BlendConfig lets through


def caruana(preds: list[np.ndarray], y: np.ndarray, config: BlendConfig = BlendConfig()) -> np.ndarray:
    """Caruana et al. 2004: greedy forward selection with replacement, config.rounds rounds, from the best
    single model on config.objective (the fitting objective), returning the best ensemble seen (so in-sample
    it is never below the best single model on it).

    Ties on the objective (frequent for accuracy) go to the lower log loss.
    """
    metric, space, power = config.objective, config.space, config.power
    # float32 and as few passes over the (rows, classes) matrices as possible: each round tries every
    # model, so this loop is the cost of a blend (bench/blend_fit.py)
    zs = [to_space(np.asarray(p, np.float32), space, power).astype(np.float32) for p in preds]
    if space == "prob":  # mixtures of rows that sum to one sum to one: no renormalizing per trial
        zs = [z / z.sum(1, keepdims=True) for z in zs]

    def key(z):
        p = z if space == "prob" else from_space(z, space, power)
        ll = score("log_loss", y, p)
        return ll if metric == "log_loss" else score(metric, y, p), ll

    first = max(range(len(preds)), key=lambda i: key(zs[i]))
    counts = np.zeros(len(preds))
    counts[first] = 1
    current = zs[first].copy()
    best_key, best_counts = key(current), counts.copy()
    trial = np.empty_like(current)
    for _ in range(config.rounds - 1):
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


def honest_blend_score(preds: list, y: np.ndarray, fold: np.ndarray, config: BlendConfig = BlendConfig()
                       ) -> tuple[float, float]:
    """Mean and std over folds, in config.metric's own units, of the score on each held-out fold of a blend
    chosen on the other folds: what the blend is worth on rows its choices never saw.

    preds: per experiment its (N, K) OOF matrix, or the list of its candidate matrices (one per TTA preset,
    fewest views first): the TTA is then chosen on the other folds' rows too (ties: the earlier one), as
    infer_and_blend chooses it on all rows, so choosing the best of several equal presets does not make
    the score optimistic.

    Not nested (no OOF file can undo it): each fold's best epoch was chosen on that fold's validation rows,
    the rows this score holds out (HONEST_LEAK).
    """
    metric = config.metric
    candidates = [list(c) if isinstance(c, (list, tuple)) else [c] for c in preds]
    values = []
    for k in np.unique(fold):
        tr, te = fold != k, fold == k
        chosen = [c[0] if len(c) == 1 else max(c, key=lambda p: score(metric, y[tr], p[tr])) for c in candidates]
        w = fit_blend_weights([p[tr] for p in chosen], y[tr], config)
        values.append(metric_value(metric, y[te], blend([p[te] for p in chosen], w, config)))
    return float(np.mean(values)), float(np.std(values))
