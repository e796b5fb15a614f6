"""What the EDA notebook shows: class balance, image sizes and modes, unreadable files, and what fits the task
(labels per image and label co-occurrence for multi-label, the grade histogram for ordinal, images per group)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm  # widget bars in Jupyter, text bars in a terminal

from . import KitError
from .competition import ORDINAL_TASKS, sort_classes


def image_stats(paths, desc: str = "image headers") -> pd.DataFrame:
    """Size, mode and format from each file's header, what kit will handle for it (note), and for
    files that cannot be decoded, the error."""
    from .data import MAX_PIXELS, read_image
    from .device import headless

    rows = []
    for p in tqdm(list(paths), desc=desc, mininterval=2, leave=False, disable=headless()):
        try:
            with Image.open(p) as im:
                w, h, mode, fmt = im.width, im.height, im.mode, im.format
                rotated = im.getexif().get(0x0112, 1) not in (1, None)
            read_image(p)  # the full decode: truncated files fail only here
            rows.append((p, w, h, mode, fmt, notes(p, w, h, mode, fmt, rotated, MAX_PIXELS), ""))
        except Exception as e:  # noqa: BLE001 - report every unreadable file, whatever the reason
            rows.append((p, np.nan, np.nan, "", "", "", str(e) or type(e).__name__))
    return pd.DataFrame(rows, columns=["path", "width", "height", "mode", "format", "note", "error"])


def notes(path: str, w: int, h: int, mode: str, fmt: str, rotated: bool, max_pixels: int) -> str:
    """What read_image does for this file that the user may want to know."""
    out = []
    ext = path.rsplit(".", 1)[-1].lower()
    if fmt and {"jpg": "jpeg", "tif": "tiff"}.get(ext, ext) != fmt.lower():
        out.append(f"{fmt} named .{ext}")
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        out.append("16-bit, scaled to 8")
    if mode in ("RGBA", "LA", "PA", "P"):
        out.append(f"{mode}, put on white" if mode != "P" else "palette")
    if mode in ("L", "1"):
        out.append("grayscale")
    if rotated:
        out.append("EXIF-rotated, turned upright")
    if w * h > max_pixels:
        out.append("very large, decoded reduced")
    return "; ".join(out)


# photos come in hundreds of distinct sizes: beyond this many, size_summary buckets them
EXACT_SIZES = 12
SIDE_EDGES = (0, 64, 128, 256, 384, 512, 768, 1024, 2048, 4096)
ASPECTS = ((0, 0.6, "tall (w/h < 0.6)"), (0.6, 0.9, "portrait (0.6-0.9)"), (0.9, 1.11, "square (0.9-1.11)"),
           (1.11, 1.67, "landscape (1.11-1.67)"), (1.67, float("inf"), "wide (w/h > 1.67)"))


def size_summary(stats: pd.DataFrame) -> pd.DataFrame:
    """How many readable images have each (width, height), when there are at most EXACT_SIZES of them; else per
    bucket of the short side (what a resize to img_size scales from) and of the aspect ratio (what squash
    distorts and crop cuts), most images first."""
    ok = stats[stats["error"] == ""]
    if ok.groupby(["width", "height"]).ngroups <= EXACT_SIZES:
        return ok.groupby(["width", "height"]).size().rename("images").sort_values(ascending=False).reset_index()
    short = pd.cut(ok[["width", "height"]].min(axis=1), [*SIDE_EDGES, float("inf")], right=False,
                   labels=side_labels())
    aspect = pd.cut(ok["width"] / ok["height"], [a for a, _, _ in ASPECTS] + [float("inf")], right=False,
                    labels=[label for _, _, label in ASPECTS])
    table = pd.DataFrame({"short side": short, "aspect": aspect}).value_counts().rename("images").reset_index()
    return table[table["images"] > 0].reset_index(drop=True)


def side_labels() -> list[str]:
    edges = [*SIDE_EDGES, None]
    return [f"{lo}-{hi - 1} px" if hi else f">= {lo} px" for lo, hi in zip(edges, edges[1:])]


def mode_summary(stats: pd.DataFrame) -> pd.DataFrame:
    """How many readable images have each (mode, format): RGB JPEG, L PNG..."""
    ok = stats[stats["error"] == ""]
    return ok.groupby(["mode", "format"]).size().rename("images").sort_values(ascending=False).reset_index()


def stripped_spaces(comp) -> pd.DataFrame:
    """How many ids and labels (per file and column) had surrounding spaces that kit stripped: 'cat ' and
    'cat' are one class, ' 007' is the image 007. No rows when nothing was stripped."""
    rows = [(file, column, n) for (file, column), n in comp.stripped.items()]
    return pd.DataFrame(rows, columns=["file", "column", "values stripped"])


def class_counts(train: pd.DataFrame) -> pd.DataFrame:
    counts = train["label"].value_counts()
    counts = counts.reindex(sort_classes(counts.index))  # kit's class order: '2' before '10'
    return pd.DataFrame({"label": counts.index, "images": counts.to_numpy(),
                         "share": (counts / counts.sum()).round(4).to_numpy()})


def per_class_accuracy(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    pred = probs.argmax(1)
    return pd.DataFrame({"class": classes, "images": [(y == k).sum() for k in range(len(classes))],
                         "accuracy": [(pred[y == k] == k).mean() if (y == k).any() else np.nan
                                      for k in range(len(classes))]})


# What fits the task: multi-label label counts and co-occurrence, ordinal grades, groups.

COOCCURRENCE_TOP = 30  # labels in the co-occurrence table: a 1,103-label matrix (iMet) is not read by anyone


def label_counts(comp) -> pd.DataFrame:
    """Images per class, in kit's class order. Multi-label: images carrying each label (an image counts once per
    label, so the shares do not sum to 1; train.csv's label column holds combinations, not classes). Ordinal or
    regression: grade_counts, every grade from the lowest to the highest."""
    if comp.task == "multilabel":
        images = np.asarray(comp.label_matrix).sum(0)
        return pd.DataFrame({"label": list(comp.classes), "images": images,
                             "share": (images / len(comp.label_matrix)).round(4)})
    if comp.task in ORDINAL_TASKS:
        return grade_counts(comp.train)
    return class_counts(comp.train)


def grade_counts(train: pd.DataFrame) -> pd.DataFrame:
    """Images per integer grade, from the lowest grade to the highest in numeric order, a grade no image has
    included with 0: a gap in the grades is a grade the model never sees. '03' and '3' are one grade here."""
    grades = pd.to_numeric(train["label"], errors="coerce")
    if grades.isna().any() or (grades % 1 != 0).any():
        bad = train["label"][grades.isna() | (grades % 1 != 0)].tolist()
        raise KitError(f"grade_counts needs integer grades in the label column; got {bad[:5]}; an ordinal or "
                       "regression task takes integer grades (task='multiclass' for names)")
    grades = grades.astype(int)
    counts = grades.value_counts().reindex(range(grades.min(), grades.max() + 1), fill_value=0)
    return pd.DataFrame({"grade": counts.index.to_numpy(), "images": counts.to_numpy(),
                         "share": (counts / counts.sum()).round(4).to_numpy()})


def labels_per_image(matrix: np.ndarray) -> pd.DataFrame:
    """How many images carry 0, 1, 2... labels (a multi-label task's 0/1 label matrix): images with no label, or
    with more labels than the test set's, are worth a look before training."""
    per_row = np.asarray(matrix).sum(1).astype(int)
    counts = np.bincount(per_row, minlength=1)
    return pd.DataFrame({"labels": np.arange(len(counts)), "images": counts,
                         "share": (counts / max(len(per_row), 1)).round(4)})


def label_cooccurrence(matrix: np.ndarray, classes: list, top: int = COOCCURRENCE_TOP) -> pd.DataFrame:
    """Images carrying both labels, for every pair of the `top` most frequent labels (ties: class order), kept in
    class order; the diagonal is the images carrying the label at all. Two labels always together, or never,
    show here."""
    m = np.asarray(matrix, dtype=np.int64)
    if m.ndim != 2 or m.shape[1] != len(classes):
        raise KitError(f"label_cooccurrence needs an (images, {len(classes)}) 0/1 matrix, one column per class; "
                       f"got shape {m.shape}: pass comp.label_matrix and comp.classes")
    keep = np.sort(np.argsort(-m.sum(0), kind="stable")[:top])
    names = [str(classes[k]) for k in keep]
    return pd.DataFrame(m[:, keep].T @ m[:, keep], index=pd.Index(names, name="label"), columns=names)


def one_row_per_label(comp) -> pd.DataFrame:
    """train with one row per (image, label) for a multi-label task, the label a single class: what a grid of
    samples per class draws from (an image of a cat and a dog shows in both rows). Other tasks: train as is."""
    if comp.task != "multilabel":
        return comp.train
    rows, cols = np.nonzero(np.asarray(comp.label_matrix))
    out = comp.train.iloc[rows].reset_index(drop=True)
    return out.assign(label=[str(comp.classes[k]) for k in cols])


def group_sizes(comp) -> pd.DataFrame:
    """How many groups (patients) have 1, 2, 3... images, and for a binary task how many of them hold a positive
    (the second class): group folds keep a group's images together, so a few big groups make uneven folds."""
    train = comp.train
    if "group" not in train:
        raise KitError("group_sizes needs a group column in train.csv (patient_id, group...); pass group_col= to "
                       "load_competition")
    per_group = train.groupby("group")["label"].agg(images="size",
                                                    positive=lambda s: (s == str(comp.classes[-1])).any())
    table = per_group.groupby("images").agg(groups=("positive", "size"), with_positive=("positive", "sum"))
    table = table.reset_index()
    return table if comp.task == "binary" else table.drop(columns="with_positive")


def fold_counts(comp, folds: pd.DataFrame) -> pd.DataFrame:
    """Images per class (rows, kit's class order) and fold (columns): multi-label counts an image once per label
    it carries, so each label's share per fold shows (what iterative stratification keeps alike)."""
    fold = comp.train[["id"]].merge(folds[["id", "fold"]], on="id", how="left", validate="one_to_one")["fold"]
    if fold.isna().any():
        raise KitError(f"{int(fold.isna().sum())} train image(s) have no fold in folds.csv, e.g. "
                       f"{comp.train['id'][fold.isna()].tolist()[:5]}; write the folds again (make_folds)")
    onehot = (np.asarray(comp.label_matrix) if comp.task == "multilabel"
              else np.eye(len(comp.classes), dtype=np.int64)[comp.targets])
    table = pd.DataFrame(onehot, columns=[str(c) for c in comp.classes]).groupby(fold.astype(int).to_numpy()).sum().T
    table.index.name, table.columns.name = "label", "fold"
    return table
