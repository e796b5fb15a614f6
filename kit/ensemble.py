"""OOF contract checks, fold averaging, and blend weights fitted on OOF probability matrices."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.stats import rankdata

from . import KitError
from .blendconfig import SPACES, BlendConfig
from .folds import folds_hash
from .metrics import log_loss, metric_value, score
from .paths import exp_dir
from .config import other_trainings
from .rundir import (OOF, RESERVED, check_folds_done, fold_checkpoint, made_by, oof_name, oof_targets, read_config,
                     read_oof)
from .thresholds import apply_decision, fit_decision
from .tta import NAMES, n_views

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
    check_one_training(d, n_folds)
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


def check_one_training(exp_path: Path, n_folds: int) -> None:
    """Every fold of the experiment trained with the same parameters (kit.config.training_changes, from each
    fold's config.json): folds retrained with other ones (run-folds --folds 0,2 --force -p lr=...) are
    another model, and one experiment's OOF and test predictions must be one model's."""
    configs = [read_config(exp_path / f"fold{k}") for k in range(n_folds)]
    names = sorted({n for changes in other_trainings(dict(enumerate(configs))).values() for n in changes})
    if not names:
        return
    groups: dict[str, list[int]] = {}
    for k, c in enumerate(configs):
        groups.setdefault(", ".join(f"{n}={c.get(n)!r}" for n in names), []).append(k)
    listing = "; ".join(f"fold(s) {','.join(map(str, ks))}: {values}" for values, ks in groups.items())
    raise KitError(f"experiment {exp_path.name!r} ({exp_path}) mixes trainings: its folds were trained with other "
                   f"parameters ({listing}). Retrain the odd folds with the others' parameters (kit run-folds --exp "
                   f"{exp_path.name} --folds <them> --force -p ...), or train the new parameters as another --exp")


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
    current = [t for t in NAMES
               if all(made_by(d / f"fold{k}" / oof_name(t)) == h for k, h in enumerate(checkpoints))]
    tried = [load_oof(runs_dir, exp, folds, t, checkpoints) for t in current]
    tried = tried or [load_oof(runs_dir, exp, folds, None, checkpoints)]
    return sorted(tried, key=lambda e: n_views(e.tta))


def fixed_tta(candidates: list[Experiment], tta: str) -> list[Experiment]:
    """All of an experiment's TTA candidates for tta='auto' (the blend picks on OOF); else the one named, which
    the experiment must have current OOF predictions for."""
    if tta == "auto":
        return candidates
    named = [c for c in candidates if c.tta == tta]
    if not named:
        raise KitError(f"experiment {candidates[0].name!r} has no current OOF predictions with tta={tta!r}, only "
                       f"{[c.tta for c in candidates]}; train it with tta='auto' (every preset) or tta={tta!r}, "
                       "or blend with tta='auto'")
    return named


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
    y = oof_targets(candidates[0].oof, len(candidates[0].classes))
    return pick_tta(candidates, y, metric), tta_scores(candidates, y, metric)


def to_space(p: np.ndarray, space: str, power: float = 2.0, multilabel: bool = False) -> np.ndarray:
    """Where predictions are averaged: probabilities, log-probabilities (multi-label: each sigmoid's logit),
    p**power, or per-class ranks."""
    if space == "prob":
        return p
    if space == "logit":
        if multilabel:
            q = np.clip(p, 1e-7, 1 - 1e-7)
            return np.log(q) - np.log1p(-q)
        return np.log(np.clip(p, 1e-15, None))
    if space == "power":
        return np.power(p, power)
    if space == "rank":  # each class column ranked over rows, scaled to [0, 1]; tied rows share their mean rank
        return (rankdata(p, method="average", axis=0) - 0.5) / len(p)  # (an arbitrary order would move the AUC)
    raise KitError(f"unknown blend space {space!r}; choose one of {SPACES}")


def from_space(z: np.ndarray, space: str, power: float = 2.0, multilabel: bool = False) -> np.ndarray:
    """Back to rows that sum to one: the inverse of to_space (up to normalization), so one model blended
    alone is itself; rank space has no inverse (rows of normalized ranks). Probabilities stay as they are:
    a mixture of rows that sum to one sums to one. Multi-label columns are independent sigmoids: each is
    mapped back on its own (logit -> sigmoid, power -> root, ranks stay ranks) and no row is renormalized."""
    if multilabel:
        if space == "logit":
            return 1 / (1 + np.exp(-z))
        return np.power(np.clip(z, 0, None), 1 / power) if space == "power" else z
    if space == "prob":
        return z
    if space == "logit":
        z = np.exp(z - z.max(1, keepdims=True))
    elif space == "power":
        z = np.power(np.clip(z, 0, None), 1 / power)
    return z / z.sum(1, keepdims=True)


def blend(preds: list[np.ndarray], weights: np.ndarray, config: BlendConfig = BlendConfig(),
          multilabel: bool = False) -> np.ndarray:
    """The weighted average of the predictions in config.space, back to probabilities (rows that sum to one,
    or per-class sigmoids for a multi-label task)."""
    space, power = config.space, config.power
    return from_space(sum(w * to_space(p, space, power, multilabel) for w, p in zip(weights, preds)), space, power,
                      multilabel)


def fit_blend_weights(preds: list[np.ndarray], y: np.ndarray, config: BlendConfig = BlendConfig()) -> np.ndarray:
    """Non-negative weights summing to one, for blending in config.space, fitted on config.objective;
    config.metric is the competition's, what the blend is reported in."""
    m = len(preds)
    if m == 1:
        return np.ones(1)
    if config.method == "slsqp":  # BlendConfig refuses slsqp with any objective but log loss
        space, power, multilabel = config.space, config.power, np.ndim(y) == 2
        zs = [to_space(p, space, power, multilabel) for p in preds]

        def nll(w):  # multi-label: the mean binary cross-entropy of the cells (metrics.log_loss)
            return log_loss(y, from_space(sum(wi * z for wi, z in zip(w, zs)), space, power, multilabel))

        res = minimize(nll, np.full(m, 1 / m), method="SLSQP", bounds=[(0, 1)] * m,
                       constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
        w = np.clip(res.x, 0, None)
        return w / w.sum()
    if config.method == "caruana":
        return caruana(preds, y, config)
    return np.full(m, 1 / m)  # "mean", the only other method BlendConfig lets through


@dataclass
class Blender:
    """A fitted blend: its weights (stack: 1/E each, every experiment used) and, for method='stack', the
    meta-model (fit_stack)."""
    weights: np.ndarray
    stack: dict | None = None

    def __call__(self, preds: list[np.ndarray], config: BlendConfig, multilabel: bool = False) -> np.ndarray:
        if self.stack is not None:
            return apply_stack(preds, self.stack)
        return blend(preds, self.weights, config, multilabel)


def fit_blender(preds: list[np.ndarray], y: np.ndarray, config: BlendConfig = BlendConfig()) -> Blender:
    """The blend of config.method fitted on these rows: weights, or (stack) a meta-model."""
    if config.method == "stack":
        return Blender(np.full(len(preds), 1 / len(preds)), fit_stack(preds, y))
    return Blender(fit_blend_weights(preds, y, config))


STACK_C = 1.0  # the meta-model's inverse L2 strength (scikit-learn's default): E*K features, thousands of rows
STACK_EPS = 1e-7  # probabilities are clipped here before their log


def stack_features(preds: list[np.ndarray]) -> np.ndarray:
    """(N, E*K): each experiment's log-probabilities side by side."""
    return np.concatenate([np.log(np.clip(p, STACK_EPS, 1.0)) for p in preds], axis=1)


def fit_stack(preds: list[np.ndarray], y: np.ndarray) -> dict:
    """A multinomial logistic regression (scikit-learn, L2, C=STACK_C) from the experiments' OOF
    log-probabilities to the class: it can learn per-class trust in each experiment and recalibrate, which
    weights cannot. Its rows must be OOF (models that did not train on them); its honest score is cross-fitted
    like the weights' (honest_blend_score fits it on the other folds). JSON-friendly: coef, intercept, the class
    indices it saw, and K."""
    from sklearn.linear_model import LogisticRegression

    if np.ndim(y) == 2:
        raise KitError("method='stack' blends single-label tasks (one class per row); for multi-label use caruana, "
                       "slsqp or mean")
    model = LogisticRegression(C=STACK_C, max_iter=2000).fit(stack_features(preds), y)
    return {"coef": model.coef_.tolist(), "intercept": model.intercept_.tolist(),
            "classes": [int(c) for c in model.classes_], "n_classes": int(preds[0].shape[1])}


def apply_stack(preds: list[np.ndarray], meta: dict) -> np.ndarray:
    """(N, K) probabilities of the meta-model on the experiments' probabilities; a class the meta-model never saw
    (absent from the rows it was fitted on) gets STACK_EPS, the rows renormalized."""
    z = stack_features(preds) @ np.asarray(meta["coef"]).T + np.asarray(meta["intercept"])
    seen = meta["classes"]
    if len(seen) == 2:  # scikit-learn's binary form: one logit, of the second class (softmax of [0, z])
        z = np.c_[np.zeros(len(z)), z[:, 0]]
    p_seen = from_space(z, "logit")  # the softmax of the logits
    out = np.full((len(z), meta["n_classes"]), STACK_EPS)
    out[:, seen] = p_seen
    return out / out.sum(1, keepdims=True)


def caruana(preds: list[np.ndarray], y: np.ndarray, config: BlendConfig = BlendConfig()) -> np.ndarray:
    """Caruana et al. 2004: greedy forward selection with replacement, config.rounds rounds, from the best
    single model on config.objective (the fitting objective), returning the best ensemble seen (so in-sample
    it is never below the best single model on it).

    Ties on the objective (frequent for accuracy) go to the lower log loss, then to the earlier model.
    Each round tries every model, so scoring a trial is the cost of a blend (bench/blend_fit.py): in
    probability space on log loss or accuracy it is incremental (ProbTrials), elsewhere each trial blends
    the whole matrix (SpaceTrials).
    """
    fast = config.space == "prob" and config.objective in ("log_loss", "accuracy") and np.ndim(y) == 1
    trials = ProbTrials(preds, y, config.objective) if fast else SpaceTrials(preds, y, config)
    counts = np.zeros(len(preds))
    best_key, best_counts = None, counts
    for _ in range(config.rounds):
        keys = trials.keys()
        j = max(range(len(keys)), key=keys.__getitem__)
        trials.add(j)
        counts[j] += 1
        if best_key is None or keys[j] > best_key:
            best_key, best_counts = keys[j], counts.copy()
    return best_counts / best_counts.sum()


class SpaceTrials:
    """Any space and objective: a trial is the mean of the selection and one more model, blended over the
    whole (rows, classes) matrix and scored, (objective, log loss) signed to be maximized."""

    def __init__(self, preds: list[np.ndarray], y: np.ndarray, config: BlendConfig):
        self.y, self.objective, self.space, self.power = y, config.objective, config.space, config.power
        self.multilabel = np.ndim(y) == 2
        self.zs = [to_space(np.asarray(p, np.float32), self.space, self.power, self.multilabel).astype(np.float32)
                   for p in preds]
        if self.space == "prob" and not self.multilabel:  # mixtures of rows that sum to one sum to one
            self.zs = [z / z.sum(1, keepdims=True) for z in self.zs]
        self.total, self.n = np.zeros_like(self.zs[0]), 0  # the sum of the selected models
        self.trial = np.empty_like(self.total)

    def keys(self) -> list[tuple[float, float]]:
        out = []
        for z in self.zs:
            np.add(self.total, z, out=self.trial)
            self.trial *= np.float32(1 / (self.n + 1))
            p = self.trial if self.space == "prob" else from_space(self.trial, self.space, self.power, self.multilabel)
            ll = score("log_loss", self.y, p)
            out.append((ll if self.objective == "log_loss" else score(self.objective, self.y, p), ll))
        return out

    def add(self, j: int) -> None:
        self.total += self.zs[j]
        self.n += 1


class ProbTrials:
    """Probability space, fitted on log loss or accuracy, from running sums: log loss reads only each row's
    true class, so a round costs one log per row and model, not a blend of the whole matrix; accuracy
    recomputes the argmax only of rows where adding the model can change it (settled rows: the lead of the
    selection's top class over the next exceeds what the model gives any class beyond the top one)."""

    BLOCK = 8192  # rows per step of the log loss: (models, BLOCK) float32 stays in cache

    def __init__(self, preds: list[np.ndarray], y: np.ndarray, objective: str):
        rows = np.arange(len(y))
        zs = [np.asarray(p, np.float32) for p in preds]
        sums = [z.sum(1) for z in zs]
        # (models, rows): the probability of the true class, rows normalized to sum to one (in float32), at
        # least 1e-15: a mean of them is too, as metrics.log_loss clips the blend
        self.true = np.maximum(np.stack([z[rows, y] / s for z, s in zip(zs, sums)]), np.float32(1e-15))
        self.total_true, self.n, self.y = np.zeros(len(y), np.float32), 0, y
        self.block = np.empty((len(zs), min(len(y), self.BLOCK)), np.float32)
        self.argmax = objective == "accuracy"
        if self.argmax:
            self.zs = [z / s[:, None] for z, s in zip(zs, sums)]
            self.total = np.zeros_like(self.zs[0])  # the sum of the selected models
            self.zmax = [z.max(1) for z in self.zs]

    def keys(self) -> list[tuple[float, float]]:
        lls = list(self.log_losses())
        return list(zip(self.accuracies() if self.argmax else lls, lls))

    def log_losses(self) -> np.ndarray:
        """Per model, -log loss of the selection plus that model, in blocks of rows that stay in cache."""
        logs = np.zeros(len(self.true))
        for start in range(0, len(self.y), self.BLOCK):
            x = self.block[:, :min(self.BLOCK, len(self.y) - start)]
            np.add(self.total_true[None, start:start + x.shape[1]], self.true[:, start:start + x.shape[1]], out=x)
            logs += np.log(x, out=x).sum(1, dtype=np.float64)
        return logs / len(self.y) - np.log(self.n + 1)

    def accuracies(self) -> list[float]:
        """Per model, the accuracy of the selection plus that model: settled rows keep the selection's argmax."""
        rows = len(self.y)
        lead, top = top_two(self.total)
        at_top = np.arange(rows) * self.total.shape[1] + top
        right = top == self.y
        out = []
        for z, zmax in zip(self.zs, self.zmax):
            # what z gives another class beyond the top one; the sums are float32: a lead within 1e-5 per
            # model is not trusted to settle a row
            settled = lead > zmax - z.ravel()[at_top] + np.float32(1e-5 * (self.n + 1))
            if np.count_nonzero(settled) < rows // 2:  # gathering the open rows would cost more than it saves
                out.append(np.count_nonzero((self.total + z).argmax(1) == self.y) / rows)
                continue
            open_ = np.flatnonzero(~settled)
            changed = (self.total[open_] + z[open_]).argmax(1) == self.y[open_]
            out.append((np.count_nonzero(settled & right) + np.count_nonzero(changed)) / rows)
        return out

    def add(self, j: int) -> None:
        self.total_true += self.true[j]
        if self.argmax:
            self.total += self.zs[j]
        self.n += 1


def top_two(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (rows, classes): the lead of the largest value over the second (0 on a tie) and its
    class, class by class over a class-major copy (several times faster than reducing short rows)."""
    columns = np.ascontiguousarray(x.T)
    first, second, top = columns[0].copy(), np.full(len(x), -np.inf, x.dtype), np.zeros(len(x), np.intp)
    for k, c in enumerate(columns[1:], 1):
        np.maximum(second, np.minimum(first, c), out=second)
        top[c > first] = k
        np.maximum(first, c, out=first)
    return first - second, top


def honest_blend_score(preds: list, y: np.ndarray, fold: np.ndarray, config: BlendConfig = BlendConfig(),
                       decision: str = "", classes: list = (), held_out: np.ndarray | None = None
                       ) -> tuple[float, float]:
    """Mean and std over folds, in config.metric's own units, of the score on each held-out fold of a blend
    chosen on the other folds: what the blend is worth on rows its choices never saw.

    preds: per experiment its (N, K) OOF matrix, or the list of its candidate matrices (one per TTA preset,
    fewest views first): the TTA is then chosen on the other folds' rows too (ties: the earlier one), as
    infer_and_blend chooses it on all rows, so choosing the best of several equal presets does not make
    the score optimistic. decision: 'thresholds' or 'cut_points' (kit.thresholds.decision_kind) are fitted
    on the other folds' blended rows too and applied to the held-out fold; classes: the grades cut points
    cut into.

    Not nested (no OOF file can undo it): each fold's best epoch was chosen on that fold's validation rows,
    the rows this score holds out (HONEST_LEAK).

    held_out: an (N, K) array filled with each fold's rows blended by what the other folds fitted (before any
    decision): cross-fitted blend probabilities, out-of-fold for the blend itself (a stack's teacher rows).
    """
    metric, multilabel = config.metric, np.ndim(y) == 2
    candidates = [list(c) if isinstance(c, (list, tuple)) else [c] for c in preds]
    values = []
    for k in np.unique(fold):
        tr, te = fold != k, fold == k
        chosen = [c[0] if len(c) == 1 else max(c, key=lambda p: score(metric, y[tr], p[tr])) for c in candidates]
        blender = fit_blender([p[tr] for p in chosen], y[tr], config)
        blended = blender([p[te] for p in chosen], config, multilabel)
        if held_out is not None:
            held_out[te] = blended
        if decision:
            fitted = fit_decision(decision, y[tr], blender([p[tr] for p in chosen], config, multilabel), metric,
                                  classes)
            blended = apply_decision(decision, blended, fitted, classes)
        values.append(metric_value(metric, y[te], blended))
    undefined = [int(k) for k, v in zip(np.unique(fold), values) if not np.isfinite(v)]
    if len(undefined) == len(values):
        raise KitError(f"the honest {metric} is undefined on every held-out fold (e.g. QWK or AUC of a fold holding "
                       "a single class): too few rows per fold for this metric")
    if undefined:  # e.g. QWK of a fold whose rows all hold one grade: the mean of the others, said
        logging.warning(f"honest {metric}: undefined on held-out fold(s) {undefined} (a single class there?); the "
                        "score is the mean of the other folds")
    return float(np.nanmean(values)), float(np.nanstd(values))
