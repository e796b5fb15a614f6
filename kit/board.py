"""The board: every experiment of a competition (runs/<comp>/) side by side, and the parameters that set them
apart.

What `kit board` prints, as DataFrames: per experiment its folds done against folds.csv, the OOF score
of every TTA preset it has current predictions for, each fold's best epoch and time, and its weight in
the newest blend; folds that are running, interrupted, stale or trained with other parameters are said
so in its notes rather than counted. The run folder is read through kit.rundir only, its locks through kit.lock.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import KitError
from .config import RUNTIME_ONLY, TrainConfig, other_trainings
from .ensemble import load_tta_candidates
from .folds import folds_path, read_folds
from .io import read_json
from .lock import is_held
from .metrics import lookup, metric_value
from .paths import comp_runs, resolve
from .rundir import CONFIG, HISTORY, is_complete, oof_targets, read_config, stale_reason

FOLD = re.compile(r"fold(\d+)")


def competitions(runs_dir: str | Path = "runs") -> list[str]:
    """The competitions with runs under runs_dir: its folders that hold an experiment (a folder with fold<k>/)."""
    root = resolve(runs_dir)
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and any(
        FOLD.fullmatch(f.name) for e in d.iterdir() if e.is_dir() for f in e.iterdir())) if root.is_dir() else []


def board_runs(runs_dir: str | Path = "runs", comp: str | None = None) -> Path:
    """runs/<comp>/; comp None: the one competition with runs under runs_dir, or KitError naming them."""
    if comp:
        return comp_runs(runs_dir, comp)
    found = competitions(runs_dir)
    if len(found) != 1:
        raise KitError(f"{'no competition has' if not found else 'competitions ' + ', '.join(found) + ' have'} runs "
                       f"under {resolve(runs_dir)}; pass the competition (--comp NAME)"
                       + ("" if found else ", or train one first: kit run-folds --comp NAME --exp NAME"))
    return comp_runs(runs_dir, found[0])


def experiments(runs: str | Path) -> dict[str, list[Path]]:
    """{experiment: its fold folders, by fold number} for every folder of a competition's runs folder (runs/<comp>)
    holding a fold<k>/ (not _notebooks)."""
    root = resolve(runs)
    if not root.is_dir():
        raise KitError(f"{str(root)!r} does not exist; pass the competition and the folder the experiments were "
                       "trained into (--comp, --runs-dir), or train one first: kit run-folds --exp NAME")
    found = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        folds = sorted((f for f in d.iterdir() if f.is_dir() and FOLD.fullmatch(f.name)),
                       key=lambda f: int(FOLD.fullmatch(f.name)[1]))
        if folds:
            found[d.name] = folds
    if not found:
        raise KitError(f"no experiments under {root} (no folder there holds a fold<k>/); train one first: "
                       "kit run-folds --comp NAME --exp NAME, or pass the runs folder with --runs-dir")
    return found


def board(runs_dir: str | Path = "runs", metric: str | None = None, submissions: str | Path = "submissions",
          comp: str | None = None) -> pd.DataFrame:
    """One row per experiment of the competition `comp` (None: the only one with runs, see board_runs):
    experiment, model, img_size, folds_done (complete, current folds trained with the
    first fold's parameters) and n_folds (folds.csv), oof_<metric>_<tta> per TTA preset with current OOF of every
    fold, best_epochs (per fold of folds.csv, 1-based, from its history; None without one), fold_seconds (mean
    training time of the done folds), blend_weight (only when a submissions/*.blend.json of the competition
    exists: the newest one's weight; its path in .attrs['blend']) and notes (a list: what is not done or not
    current, and why).

    metric: None scores each experiment in the metric it was trained on (its own column when they differ).
    """
    runs = board_runs(runs_dir, comp)
    exps = experiments(runs)
    if metric is not None:
        lookup(metric)  # an unknown name is refused before anything is read
    rows = [experiment_row(runs, name, folders, metric) for name, folders in exps.items()]
    blend_path = newest_blend(submissions, runs.name)
    if blend_path is not None:
        add_blend_weights(rows, blend_path)
    table = pd.DataFrame(rows)
    scores = sorted(c for c in table.columns if c.startswith("oof_"))
    order = ["experiment", "model", "img_size", "folds_done", "n_folds", *scores, "best_epochs", "fold_seconds",
             *(["blend_weight"] if blend_path else []), "notes"]
    table = table[order]
    table.attrs["blend"] = str(blend_path or "")
    table.attrs["comp"] = runs.name
    return table


def experiment_row(runs: Path, name: str, folders: list[Path], metric: str | None) -> dict:
    by_fold = {int(FOLD.fullmatch(f.name)[1]): f for f in folders}
    configs = {k: read_config(f) for k, f in by_fold.items() if (f / CONFIG).is_file()}
    first = next(iter(configs.values()), {})
    train_metric = first.get("metric", "accuracy")
    try:
        n_folds, unknown = n_folds_of(first), ""
    except KitError as e:
        n_folds, unknown = None, f"folds.csv unknown: {e}"
    states = {k: fold_note(f) for k, f in by_fold.items()}
    notes = [note for note in states.values() if note]
    odd, ref = other_trainings(configs), next(iter(configs), None)
    notes += [f"fold{k} was trained with other parameters than fold{ref} ({listing(c)})" for k, c in odd.items()]
    expected = range(n_folds) if n_folds else sorted(by_fold)
    done = [k for k in expected if states.get(k) == "" and k not in odd]
    row = {"experiment": name, "model": first.get("model"),
           "img_size": first.get("img_size_resolved", first.get("img_size")), "folds_done": len(done),
           "n_folds": n_folds, "best_epochs": [best_epoch(by_fold[k], train_metric) if k in by_fold else None
                                               for k in expected],
           "fold_seconds": np.mean([history(by_fold[k])["seconds"].sum() for k in done]) if done else np.nan,
           "checkpoints": None}
    missing = sorted(set(expected) - set(done))
    if n_folds and not missing:
        try:
            row |= oof_scores(runs, name, first, metric or train_metric)
        except KitError as e:
            notes.append(f"no OOF score: {e}")
    elif not n_folds:
        notes.insert(0, unknown)
    elif odd:
        notes.insert(0, f"mixes trainings: no OOF score until folds {missing} are done with fold{ref}'s parameters")
    else:
        notes.insert(0, f"no OOF score until folds {missing} are done")
    return row | {"notes": notes}


def fold_note(folder: Path) -> str:
    """'' for a fold that is done and current; else what it is: running, incomplete, stale."""
    epochs = history(folder)
    progress = f"epoch {len(epochs)}/{read_config(folder).get('epochs', '?')}" if (folder / CONFIG).is_file() else ""
    if is_held(folder):  # not tried: a try would make a run that starts at that instant fail as busy
        return f"{folder.name} running ({progress or 'starting'})"
    if not is_complete(folder):
        return f"{folder.name} incomplete ({progress or 'nothing trained'}; not running: interrupted or failed)"
    try:
        reason = stale_reason(folder)
    except (KitError, KeyError) as e:  # folds.csv gone, a config.json of an older kit
        reason = f"cannot be checked ({e})"
    return f"{folder.name} stale: {reason}" if reason else ""


def history(folder: Path) -> pd.DataFrame:
    path = folder / HISTORY
    return pd.read_csv(path) if path.is_file() else pd.DataFrame({"epoch": [], "seconds": []})


def best_epoch(folder: Path, metric: str) -> int | None:
    """The epoch (1-based) with the best validation score: the one best.pt keeps (ties: the earlier)."""
    h, column = history(folder), f"val_{metric}"
    if h.empty or column not in h:
        return None
    values = h[column] if lookup(metric).greater_is_better else -h[column]
    return int(h["epoch"][values.idxmax()])


def n_folds_of(config: dict) -> int:
    """The folds in the experiment's folds.csv (where its config.json says the competition is)."""
    if "competition" not in config:
        raise KitError("no fold's config.json names the competition (no fold has started, or an older kit)")
    return int(read_folds(folds_path(config["competition"], config.get("runs_dir")))["fold"].max()) + 1


def oof_scores(runs: Path, name: str, config: dict, metric: str) -> dict:
    folds = read_folds(folds_path(config["competition"], config.get("runs_dir")))
    candidates = load_tta_candidates(runs, name, folds)
    y = oof_targets(candidates[0].oof, len(candidates[0].classes))  # a multi-label OOF holds '[0 3]' cells
    return {f"oof_{metric}_{e.tta}": metric_value(metric, y, e.probs) for e in candidates} | \
        {"checkpoints": list(candidates[0].checkpoints)}


def listing(changes: dict) -> str:
    return ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())


def newest_blend(submissions: str | Path, comp: str) -> Path | None:
    """The newest submissions/*.blend.json fitted on the competition named `comp`."""
    folder = resolve(submissions)
    blends = sorted(folder.glob("*.blend.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    ours = [p for p in blends if blend_competition(p) == comp]
    return ours[-1] if ours else None


def blend_competition(path: Path) -> str | None:
    try:
        return read_json(path).get("competition")
    except KitError:  # a torn or foreign file: not a blend of ours
        return None


def add_blend_weights(rows: list[dict], path: Path) -> None:
    """Each experiment's weight in the newest blend (NaN: not in it); a note where its folds were retrained
    since, so the weight is of checkpoints that are gone."""
    spec = {e["name"]: e for e in read_json(path).get("experiments", [])}
    for r in rows:
        r["blend_weight"] = spec[r["experiment"]]["weight"] if r["experiment"] in spec else np.nan
        used = spec.get(r["experiment"], {}).get("checkpoints")
        if used and r["checkpoints"] and used != r["checkpoints"]:  # none recorded: a blend of an older kit
            r["notes"].append(f"retrained since {path.name}: its weight there is of the checkpoints before")


def differing_params(runs_dir: str | Path = "runs", comp: str | None = None) -> pd.DataFrame:
    """The training parameters (TrainConfig fields, runtime-only ones left out) whose values differ between
    experiments: one row per parameter, one column per experiment (read from its first fold's config.json;
    folds that differ within an experiment are board()'s notes). Empty when nothing differs."""
    configs = {}
    for name, folders in experiments(board_runs(runs_dir, comp)).items():
        with_config = [f for f in folders if (f / CONFIG).is_file()]
        configs[name] = read_config(with_config[0]) if with_config else {}
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in RUNTIME_ONLY]
    table = pd.DataFrame({exp: [cfg.get(n) for n in names] for exp, cfg in configs.items()}, index=names, dtype=object)
    differs = [n for n in names if len({repr(cfg.get(n)) for cfg in configs.values()}) > 1]
    return table.loc[differs]
