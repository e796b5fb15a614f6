"""Submissions in sample_submission.csv's shape, validated before they are written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import KitError
from .competition import SAMPLE_NEEDS, Competition, list_separator, read_table
from .io import atomic_path

SUBMISSION_KINDS = ("auto", "label", "probability")


def make_submission(comp: Competition, probs: np.ndarray, submission_kind: str = "auto") -> pd.DataFrame:
    """The submission in the sample's shape, ids exactly as the sample spells them:
    - one column per class: each class's probability;
    - one target column of class labels: the argmax class, spelled as in train.csv ('03' stays '03');
    - one target column of probabilities (binary, ISIC style `image_name,target`): p[:, 1], the probability of
      comp.classes[1], the later class in kit's order: '1' for 0/1 labels (integers sort numerically),
      'True' over 'False', 'yes' over 'no', otherwise the later name alphabetically.
    submission_kind='auto' tells labels from probabilities by the sample's values (see target_kind); 'label'
    or 'probability' overrides it, e.g. for an AUC competition whose sample holds integer 0s."""
    if submission_kind not in SUBMISSION_KINDS:
        raise KitError(f"submission_kind={submission_kind!r}; use one of {list(SUBMISSION_KINDS)}")
    if comp.sample_submission is None:
        raise KitError(f"{comp.root} has no sample_submission.csv; the submission's shape is unknown")
    sample = read_table(comp.sample_submission, SAMPLE_NEEDS)
    id_col, targets = sample.columns[0], list(sample.columns[1:])
    if len(probs) != len(comp.test) or len(probs) != len(sample):
        raise KitError(f"{len(probs)} predictions for {len(comp.test)} test images ({len(sample)} rows in "
                       f"{comp.sample_submission})")
    sub = sample[[id_col]].copy()  # the sample's own spelling: the grader matches ids as text
    names = [str(c) for c in comp.classes]
    if len(targets) > 1:
        if sorted(targets) != sorted(names):
            unseen, absent = sorted(set(targets) - set(names)), sorted(set(names) - set(targets))
            raise KitError(f"{comp.sample_submission} has one column per class, but {len(unseen)} of them never "
                           f"occur in train.csv ({unseen[:10]}) and {len(absent)} train class(es) have no column "
                           f"({absent[:10]}); the model cannot predict classes it never saw: check the label column")
        if submission_kind == "label":
            raise KitError(f"submission_kind='label', but {comp.sample_submission} has one column per class, which "
                           "holds probabilities; use submission_kind='auto'")
        for j, c in enumerate(names):
            sub[c] = probs[:, j]
        return sub[[id_col, *targets]]
    target = targets[0]
    if comp.task == "multilabel":
        sub[target] = label_lists(probs, names, list_separator(comp.train["label"]) if len(comp.train) else " ")
        return sub
    kind = target_kind(sample[target], names) if submission_kind == "auto" else submission_kind
    if kind == "label":
        sub[target] = np.asarray(names, dtype=object)[probs.argmax(1)]
        return sub
    if len(names) != 2:
        raise KitError(f"{comp.sample_submission}: column {target!r} takes one probability per row (its values look "
                       f"like {sample[target].head(3).tolist()}), which fits two classes, but train has "
                       f"{len(names)}; pass submission_kind='label' to write class labels")
    sub[target] = probs[:, 1]
    return sub


def label_lists(probs: np.ndarray, names: list[str], sep: str = " ") -> np.ndarray:
    """Multi-label: each row's classes scored above 0.5 (thresholds are applied before, see kit.thresholds),
    joined by `sep` in class order; a row with none gets its single most likely class (an empty cell is not
    a prediction Kaggle accepts for most label-list competitions)."""
    on = probs > 0.5
    on[np.arange(len(probs)), probs.argmax(1)] |= ~on.any(1)
    return np.array([sep.join(n for n, o in zip(names, row) if o) for row in on], dtype=object)


def target_kind(values: pd.Series, classes: list[str]) -> str:
    """'probability' when the sample's cells are numbers and at least one is not spelled as an integer
    ('0.0', '0.5', '1e-3') and they are not all class names; else 'label'. A sample of '0's is ambiguous and
    reads as labels (the class '0'): override with submission_kind='probability'."""
    v = values.astype(str).str.strip()
    numbers = pd.to_numeric(v, errors="coerce").notna().all()
    integers = all(re.fullmatch(r"[+-]?[0-9]+", s) for s in v)
    return "probability" if numbers and not integers and not v.isin(classes).all() else "label"


def validate_submission(sub: pd.DataFrame, sample_path: str | Path, classes: list[str] | None = None,
                        task: str = "") -> None:
    """Same columns, count, ids and order as sample_submission.csv, and no empty cell; given the classes,
    every label cell a class (every part of it for a multi-label task) and every number finite."""
    sample = read_table(Path(sample_path), SAMPLE_NEEDS)  # as text: an id 'NA' or '007' is itself
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
    if classes is not None:
        for col in sample.columns[1:]:
            _check_cells(sub[col], col, [str(c) for c in classes], task)


def _check_cells(values: pd.Series, col: str, classes: list[str], task: str) -> None:
    """Numbers finite; labels known classes (a multi-label cell: each of its parts). Cells that are all
    numbers and not all class names are numbers (as read back from a CSV, they are text)."""
    cells = values.astype(str).str.strip()
    numbers = pd.to_numeric(cells, errors="coerce")
    if numbers.notna().all() and not cells.isin(classes).all():
        bad = values[~np.isfinite(numbers.to_numpy(float))]
        if len(bad):
            raise KitError(f"submission column {col!r} has {len(bad)} non-finite value(s), e.g. {bad.tolist()[:3]}")
        return
    if task == "multilabel":
        sep = list_separator(cells)
        parts = cells.map(lambda v: [p for p in v.split(sep) if p])
        unknown = sorted({p for ps in parts for p in ps} - set(classes))
    else:
        unknown = sorted(set(cells) - set(classes))
    if unknown:
        raise KitError(f"submission column {col!r} holds {len(unknown)} label(s) that are not classes, e.g. "
                       f"{unknown[:5]}; classes are {classes[:10]}{'...' if len(classes) > 10 else ''}")


def write_submission(sub: pd.DataFrame, comp: Competition, path: str | Path) -> Path:
    validate_submission(sub, comp.sample_submission, comp.classes, comp.task)
    with atomic_path(path) as tmp:
        sub.to_csv(tmp, index=False)
    return Path(path)
