"""A fitted blend as a teacher: its out-of-fold probabilities as soft targets (knowledge distillation) and its
confident test predictions as extra training images (pseudo-labels).

`kit blend` (and the infer notebook) write them beside `<name>.blend.json`: `<name>.oof.csv` (id, fold, one
blended probability per class, folds_hash) and `<name>.test.csv` (id, one blended probability per class). A
training row's teacher probability is its OOF row: blended from the fold models that held it out, so no model
that trained on the row speaks for it. Both only ever reach a fold's training side; validation and OOF rows keep
their own labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import KitError
from .paths import resolve

BLEND_SUFFIX = ".blend.json"


def oof_probs_path(blend_json: str | Path) -> Path:
    return sibling(blend_json, ".oof.csv")


def blend_test_path(blend_json: str | Path, fold: int | None = None) -> Path:  # not test_*: pytest collects those
    """<name>.test.csv, the blend of every model; <name>.test-fold<k>.csv, of each experiment's fold-k model."""
    return sibling(blend_json, ".test.csv" if fold is None else f".test-fold{fold}.csv")


def sibling(blend_json: str | Path, suffix: str) -> Path:
    path = resolve(blend_json)
    if not path.name.endswith(BLEND_SUFFIX):
        raise KitError(f"{path} is not a <name>{BLEND_SUFFIX} written by kit blend; pass one, e.g. "
                       "submissions/blend1.blend.json")
    return path.with_name(path.name[: -len(BLEND_SUFFIX)] + suffix)


def read_probs(path: Path, classes: list[str], param: str) -> pd.DataFrame:
    if not path.is_file():
        raise KitError(f"{param}: {path} does not exist; `kit blend` writes it beside the blend.json it fits (a "
                       "blend fitted by an older kit, or a saved blend applied alone, has none: fit it again)")
    table = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
    missing = [c for c in classes if c not in table.columns]
    if missing:
        raise KitError(f"{param}: {path} has no probability column for class(es) {missing[:5]}; it was fitted on "
                       "another competition's classes")
    return table


def teacher_probs(blend_json: str, ids: pd.Series, folds: pd.Series, classes: list[str], fhash: str) -> np.ndarray:
    """(len(ids), K) the blend's OOF probabilities of these training rows. Refused unless every row is there, the
    file was made on these folds (hash) and each row's fold is its fold in folds.csv: the probability of an OOF
    row comes from the models of its own fold, which did not train on it."""
    path = oof_probs_path(blend_json)
    table = read_probs(path, classes, "distill")
    if set(table.get("folds_hash", pd.Series(dtype=str)).astype(str)) != {fhash}:
        raise KitError(f"distill: {path} was made on other folds than folds.csv (hash {fhash}): its probabilities "
                       "would not be out-of-fold for these rows; fit the blend again on the current folds")
    table = table.set_index("id")
    absent = ids[~ids.isin(table.index)]
    if len(absent):
        raise KitError(f"distill: {path} has no OOF row for {len(absent)} training id(s), e.g. {absent.tolist()[:5]}")
    rows = table.loc[ids.to_numpy()]
    moved = np.flatnonzero(rows["fold"].to_numpy() != np.asarray(folds))
    if len(moved):
        i = moved[0]
        raise KitError(f"distill: {path} gives id {ids.iloc[i]!r} as fold {rows['fold'].iloc[i]}, folds.csv as fold "
                       f"{np.asarray(folds)[i]}: not out-of-fold probabilities of these folds")
    return rows[classes].to_numpy(dtype=np.float32)


def pseudo_labels(blend_json: str, test: pd.DataFrame, classes: list[str], threshold: float, soft: bool,
                  smoothing: float = 0.0, fold: int | None = None) -> tuple[list[str], np.ndarray]:
    """(paths, (M, K) targets) of the test images whose blended top probability is at least `threshold`: the
    blend's probabilities (soft), or its top class smoothed like a label. fold k: the blend of the experiments'
    fold-k models only, which never trained on fold k's rows, with weights or meta-model fitted on the other folds'
    OOF rows, so a student validated on fold k learns nothing of them through the test images (its OOF stays
    honest, but for the choice of TTA and of the experiments the blend uses); None (a full-data student): the
    blend of every model."""
    path = blend_test_path(blend_json, fold)
    table = read_probs(path, classes, "pseudo").set_index("id")
    absent = test["id"][~test["id"].isin(table.index)]
    if len(absent):
        raise KitError(f"pseudo: {path} has no row for {len(absent)} test id(s), e.g. {absent.tolist()[:5]}: it "
                       "predicted another test set")
    probs = table.loc[test["id"].to_numpy(), classes].to_numpy(dtype=np.float32)
    sure = probs.max(1) >= threshold
    targets = probs[sure] if soft else smoothed(probs[sure].argmax(1), len(classes), smoothing)
    return test["path"][sure].tolist(), targets


def smoothed(y: np.ndarray, k: int, smoothing: float) -> np.ndarray:
    """Class indices -> (N, K) one-hot rows with label smoothing, as cross-entropy's label_smoothing makes them."""
    return (np.eye(k, dtype=np.float32)[y] * (1 - smoothing) + smoothing / k).astype(np.float32)
