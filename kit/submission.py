"""Submissions in sample_submission.csv's shape, validated before they are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import KitError
from .competition import Competition
from .io import atomic_path


def make_submission(comp: Competition, probs: np.ndarray) -> pd.DataFrame:
    """Class labels when the sample has one target column; probabilities when its columns are the classes."""
    if comp.sample_submission is None:
        raise KitError(f"{comp.root} has no sample_submission.csv; the submission's shape is unknown")
    sample = pd.read_csv(comp.sample_submission, dtype=str)
    id_col, targets = sample.columns[0], list(sample.columns[1:])
    if len(probs) != len(comp.test):
        raise KitError(f"{len(probs)} predictions for {len(comp.test)} test images")
    sub = pd.DataFrame({id_col: comp.test["id"].to_numpy()})
    names = [str(c) for c in comp.classes]
    if len(targets) > 1 and sorted(targets) != sorted(names):
        unseen, absent = sorted(set(targets) - set(names)), sorted(set(names) - set(targets))
        raise KitError(f"{comp.sample_submission} has one column per class, but {len(unseen)} of them never occur "
                       f"in train.csv ({unseen[:10]}) and {len(absent)} train class(es) have no column "
                       f"({absent[:10]}); the model cannot predict classes it never saw: check the label column")
    if sorted(targets) == sorted(names):
        for j, c in enumerate(names):
            sub[c] = probs[:, j]
        return sub[[id_col, *targets]]
    if len(targets) == 1:
        sub[targets[0]] = np.asarray(comp.classes, dtype=object)[probs.argmax(1)]
        return sub
    raise KitError(f"{comp.sample_submission} has target columns {targets}: neither one label column nor "
                   f"one column per class ({names})")


def validate_submission(sub: pd.DataFrame, sample_path: str | Path) -> None:
    """Same columns, count, ids and order as sample_submission.csv, and no empty cell."""
    sample = pd.read_csv(sample_path, dtype=str)
    if list(sub.columns) != list(sample.columns):
        raise KitError(f"submission columns {list(sub.columns)} differ from {sample_path}: {list(sample.columns)}")
    id_col = sample.columns[0]
    ids, expected = sub[id_col].astype(str), sample[id_col]
    if len(ids) != len(expected):
        raise KitError(f"submission has {len(ids)} rows, {sample_path} has {len(expected)}")
    extra, missing = sorted(set(ids) - set(expected)), sorted(set(expected) - set(ids))
    if extra or missing:
        raise KitError(f"submission ids differ from {sample_path}: {len(missing)} missing (e.g. {missing[:5]}), "
                       f"{len(extra)} unknown (e.g. {extra[:5]})")
    if ids.duplicated().any():
        raise KitError(f"submission repeats ids, e.g. {ids[ids.duplicated()].tolist()[:5]}")
    if (ids.to_numpy() != expected.to_numpy()).any():
        i = int(np.argmax(ids.to_numpy() != expected.to_numpy()))
        raise KitError(f"submission ids are out of order: row {i} is {ids.iloc[i]!r}, {sample_path} has "
                       f"{expected.iloc[i]!r}; keep the sample's order")
    if sub.isna().any().any():
        raise KitError(f"submission has empty cells in column(s) {sub.columns[sub.isna().any()].tolist()}")


def write_submission(sub: pd.DataFrame, comp: Competition, path: str | Path) -> Path:
    validate_submission(sub, comp.sample_submission)
    with atomic_path(path) as tmp:
        sub.to_csv(tmp, index=False)
    return Path(path)
