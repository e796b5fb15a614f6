"""Stratified k-fold splits, written once per competition as folds.csv with a content hash.

Every run records the hash; the blender refuses OOF files made on different folds.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from . import KitError
from .competition import Competition
from .io import read_json, write_csv, write_json
from .paths import resolve


def make_folds(comp: Competition, n_folds: int = 5, seed: int = 42, method: str = "auto") -> pd.DataFrame:
    """id, label, fold; `auto` uses StratifiedGroupKFold when the competition has a group column, and
    iterative stratification (Sechidis et al. 2011) for a multi-label task: each label's share alike in
    every fold."""
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise KitError(f"n_folds={n_folds!r}: cross-validation needs an integer of at least 2 folds (5 is usual)")
    train = comp.train
    if comp.task == "multilabel":
        return _multilabel_folds(comp, n_folds, seed, method)
    counts = train["label"].value_counts()
    if counts.min() < n_folds:
        small = counts[counts < n_folds]
        raise KitError(f"class(es) {small.index.tolist()[:10]} have fewer images ({small.tolist()[:10]}) than "
                       f"n_folds={n_folds}; use fewer folds or merge those classes")
    if method == "auto":
        method = "group" if "group" in train else "stratified"
    y = comp.targets
    if method == "stratified":
        splits = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(train, y)
    elif method == "group":
        if "group" not in train:
            raise KitError("method='group' needs a group column in train.csv (pass group_col=)")
        splits = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(train, y, train["group"])
    else:
        raise KitError(f"unknown fold method {method!r}; use 'stratified', 'group' or 'auto'")
    fold = np.full(len(train), -1, dtype=int)
    for k, (_, val_idx) in enumerate(splits):
        fold[val_idx] = k
    return pd.DataFrame({"id": train["id"].to_numpy(), "label": train["label"].to_numpy(), "fold": fold})


def _multilabel_folds(comp: Competition, n_folds: int, seed: int, method: str) -> pd.DataFrame:
    if method not in ("auto", "stratified"):
        raise KitError(f"fold method {method!r} does not fit a multi-label task; use 'auto' (iterative "
                       "stratification of the label matrix)")
    if len(comp.train) < n_folds:
        raise KitError(f"{len(comp.train)} images cannot make n_folds={n_folds}; use fewer folds")
    splits = MultilabelStratifiedKFold(n_folds, shuffle=True, random_state=seed).split(comp.train, comp.targets)
    fold = np.full(len(comp.train), -1, dtype=int)
    for k, (_, val_idx) in enumerate(splits):
        fold[val_idx] = k
    return pd.DataFrame({"id": comp.train["id"].to_numpy(), "label": comp.train["label"].to_numpy(), "fold": fold})


def folds_hash(folds: pd.DataFrame) -> str:
    """A content hash of the (id, fold, label) rows, independent of row order: runs made on relabelled rows
    are not blended with runs made on the old labels. Labels hash as strings, as folds.csv spells them."""
    return _hash(folds, ["id", "fold", "label"])


def _hash(folds: pd.DataFrame, columns: list[str]) -> str:
    rows = folds[columns].astype(str).sort_values(columns)
    text = "\n".join(rows[columns[0]].str.cat([rows[c] for c in columns[1:]], sep=","))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_folds(folds: pd.DataFrame, path: str | Path, meta: dict | None = None) -> str:
    """Write folds.csv (and folds.json with its hash) once; an existing, different file is kept and reported."""
    path = Path(path)
    h = folds_hash(folds)
    if path.exists():
        old = read_folds(path)
        if folds_hash(old) != h:
            raise KitError(f"{path} already exists with other folds (hash {folds_hash(old)}, new {h}); runs made "
                           "on it would no longer blend. Keep it, or delete it and every run made on it")
        return h
    write_csv(folds, path)
    write_json({"hash": h, "n_folds": int(folds["fold"].max()) + 1, "rows": len(folds), **(meta or {})},
               path.with_suffix(".json"))
    return h


def read_folds(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path} does not exist; write it once with the EDA notebook or `kit folds`")
    # ids and labels as written: strings, no NA conversion (a label "None" or "03" stays itself)
    folds = pd.read_csv(path, dtype={"id": str, "label": str}, keep_default_na=False)
    missing = {"id", "fold", "label"} - set(folds.columns)
    if missing:
        raise KitError(f"{path} lacks column(s) {sorted(missing)}; columns are {list(folds.columns)}")
    side = path.with_suffix(".json")
    recorded = read_json(side)["hash"] if side.is_file() else None
    if recorded == _hash(folds, ["id", "fold"]) != folds_hash(folds):
        raise KitError(f"{side} holds a hash of ids and folds only, written by an older kit; this kit hashes the "
                       f"labels too. Delete {side} (folds.csv can stay) and retrain the runs made on it")
    if recorded is not None and recorded != folds_hash(folds):
        raise KitError(f"{path} was edited after it was written (hash no longer matches {side}); "
                       "restore it or delete both files and every run made on them")
    return folds


def folds_path(comp: Competition | str | Path, runs_dir: str | Path | None = None) -> Path:
    """folds.csv lives beside train.csv (comp: a Competition or its root folder); a read-only input
    (Kaggle) keeps it in the runs folder."""
    root = Path(comp.root if isinstance(comp, Competition) else comp)
    if os.access(root, os.W_OK):
        return root / "folds.csv"
    return resolve(runs_dir or "runs") / f"folds-{root.name}.csv"


def attach_folds(comp: Competition, folds: pd.DataFrame) -> pd.DataFrame:
    """The train table with a fold column; every train id must have a fold."""
    merged = comp.train.merge(folds[["id", "fold"]], on="id", how="left")
    if merged["fold"].isna().any():
        missing = merged.loc[merged["fold"].isna(), "id"].tolist()
        raise KitError(f"{len(missing)} train id(s) are not in folds.csv, e.g. {missing[:5]}; "
                       "train.csv changed after the folds were written: delete folds.csv and rerun the EDA")
    merged["fold"] = merged["fold"].astype(int)
    return merged
