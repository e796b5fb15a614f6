"""Grade a submission against labels, as a leaderboard would: the demo's hidden split, or any labels file of your
own (a held-out part of train.csv, last year's solution) with `kit score --solution labels.csv`.

The labels file is read as train.csv is (its id and label columns detected by the same names, every cell a
string); the submission as kit writes it: the same id column and one column of labels, of probabilities (a
binary task) or of label lists (multi-label), or one probability column per class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import KitError
from .competition import (ID_CANDIDATES, LABEL_CANDIDATES, ORDINAL_TASKS, TASKS, _pick_column, detect_task,
                          label_matrix, list_separator, read_table, sort_classes)
from .metrics import metric_value

# what a task is graded on when no metric is given: the demo's tasks' own
DEFAULT_METRICS = {"multiclass": "accuracy", "binary": "roc_auc", "ordinal": "qwk", "regression": "qwk",
                   "multilabel": "f_beta:1"}


def grade(submission: str | Path, solution: str | Path, metric: str = "", task: str = "auto",
          classes: list[str] | None = None, what: str = "", id_col: str = "", label_col: str = "") -> tuple[str, float]:
    """(metric, score) of `submission` against the labels in `solution`.

    task: 'auto' detects it from the labels as for train.csv (a label list: multilabel; two classes: binary).
    classes: the labels a submission may use, in class order (the demo's digits); `what` names them in the
    error (e.g. 'a digit class 0..9'). None: any label the solution or the submission spells (a class missing
    from a small held-out set is still a prediction), in train.csv's order (kit.competition.sort_classes).
    A submission id missing, or a label outside `classes`, is a KitError naming the file, the column and
    examples."""
    if task != "auto" and task not in TASKS:
        raise KitError(f"task={task!r}; use one of {list(TASKS)}")
    for path, kind in ((solution, "the labels file"), (submission, "the submission")):
        if not Path(path).is_file():
            raise KitError(f"{path} does not exist; give {kind} as a CSV path")
    table = read_table(Path(solution))
    sid = _pick_column(table, id_col, ID_CANDIDATES, "id", solution, fallback=table.columns[0])
    others = [c for c in table.columns if c != sid]
    label = _pick_column(table, label_col, LABEL_CANDIDATES, "label", solution,
                         fallback=others[0] if len(others) == 1 else None)
    truth = table[label].str.strip()
    task = detect_task(truth, metric) if task == "auto" else task
    metric = metric or DEFAULT_METRICS[task]
    sep = list_separator(truth) if task == "multilabel" else None

    sub = read_table(Path(submission), needs=f"the id column {sid!r} and a prediction column")
    sub_id = sid if sid in sub.columns else _pick_column(sub, "", ID_CANDIDATES, "id", submission,
                                                          fallback=sub.columns[0])
    for path, ids in ((solution, table[sid]), (submission, sub[sub_id])):
        twice = ids.str.strip()[ids.str.strip().duplicated()]
        if len(twice):  # a leaderboard grades each id once
            raise KitError(f"{path}: {twice.nunique()} id(s) appear more than once, e.g. "
                           f"{twice.unique()[:5].tolist()}; keep one row per id")
    rows = pd.DataFrame({"id": table[sid].str.strip(), "truth": truth}).merge(
        sub.assign(**{sub_id: sub[sub_id].str.strip()}).rename(columns={sub_id: "id"}), on="id", how="left",
        indicator=True)
    missing = rows["_merge"] == "left_only"
    if missing.any():
        raise KitError(f"{submission} lacks {int(missing.sum())} test id(s) of {solution}, e.g. "
                       f"{rows['id'][missing].tolist()[:5]}; write one row per id")
    truth_classes = sort_classes(parts(rows["truth"], sep))
    columns = [c for c in sub.columns if c != sub_id]
    if all(c in columns for c in truth_classes) and len(columns) > 1:  # a probability column per class
        # every class the submission has a column for: a class no held-out row holds still takes probability
        classes = classes or sort_classes(columns)
        return metric, metric_value(metric, targets(rows["truth"], classes, sep, solution),
                                    numbers(rows[classes], submission, "one probability per class column"))
    col = label if label in columns else columns[0] if len(columns) == 1 else None
    if col is None:
        raise KitError(f"{submission}: cannot tell which column holds the predictions; columns are "
                       f"{list(sub.columns)}; name it {label!r} as {solution} does")
    cells = rows[col].str.strip()
    # binary: a number that is no class makes the column probabilities (P of the positive class); labels else
    numbers_not_classes = pd.to_numeric(cells, errors="coerce").notna() & ~cells.isin(classes or truth_classes)
    if task == "binary" and numbers_not_classes.any():
        classes = classes or truth_classes
        p = numbers(cells.to_frame(), submission, "one probability per row")[:, 0]
        return metric, metric_value(metric, targets(rows["truth"], classes, sep, solution), np.c_[1 - p, p])
    if task in ORDINAL_TASKS:  # grades by value: 3 is as far from 1 as it is, whichever grades the rows hold
        rows["truth"], cells = grades(rows["truth"], solution), grades(cells, submission)
        if classes is None:
            values = [int(v) for v in [*rows["truth"], *cells]]
            classes = [str(g) for g in range(min(values), max(values) + 1)]
    if classes is None:
        classes = sort_classes([*parts(rows["truth"], sep), *parts(cells, sep)])
    what = what or f"a class of {solution}"
    unknown = [c for c in dict.fromkeys(parts(cells, sep)) if c not in classes]
    if unknown:
        n = sum(any(p not in classes for p in cell_parts(c, sep)) for c in cells)
        raise KitError(f"{submission}: column {col!r} has {n} value(s) that are not {what}, e.g. {unknown[:5]}; "
                       f"write one {'list of classes' if sep else 'class'} per row")
    pred = targets(cells, classes, sep, submission)
    return metric, metric_value(metric, targets(rows["truth"], classes, sep, solution),
                                pred if sep else np.eye(len(classes))[pred])


def grades(cells: pd.Series, source) -> pd.Series:
    """Integer grades spelled canonically ('03' -> '3'); a cell that is no integer is refused."""
    values = pd.to_numeric(cells, errors="coerce")
    bad = values.isna() | (values % 1 != 0)
    if bad.any():
        raise KitError(f"{source}: {int(bad.sum())} value(s) are not integer grades, e.g. "
                       f"{cells[bad].unique()[:5].tolist()}")
    return values.astype(int).astype(str)


def cell_parts(cell: str, sep: str | None) -> list[str]:
    """The labels one cell spells: itself, or each part of a multi-label cell ('' is no label there)."""
    return [cell] if sep is None else [p.strip() for p in cell.split(sep) if p.strip()]


def parts(cells: pd.Series, sep: str | None) -> list[str]:
    """Every label the cells spell (cell_parts of each)."""
    return [p for cell in cells for p in cell_parts(cell, sep)]


def targets(cells: pd.Series, classes: list[str], sep: str | None, source) -> np.ndarray:
    """Class indices, or (multi-label: sep given) an (N, K) 0/1 matrix over `classes`."""
    index = {c: k for k, c in enumerate(classes)}
    unknown = [c for c in dict.fromkeys(parts(cells, sep)) if c not in index]
    if unknown:
        raise KitError(f"{source}: label(s) {unknown[:5]} are not among the classes {classes[:10]}")
    if sep is None:
        return cells.map(index).to_numpy()
    return label_matrix([cell_parts(cell, sep) for cell in cells], classes)


def numbers(frame: pd.DataFrame, source, needs: str) -> np.ndarray:
    values = frame.apply(pd.to_numeric, errors="coerce")
    bad = values.isna().to_numpy() | (values.to_numpy() < 0) | (values.to_numpy() > 1)
    if bad.any():
        raise KitError(f"{source}: columns {list(frame.columns)} need {needs} between 0 and 1; {int(bad.sum())} "
                       f"cell(s) are not, e.g. {frame.to_numpy()[bad][:5].tolist()}")
    return values.to_numpy(dtype=float)
