"""Figures the notebooks show: they take data and return a matplotlib Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import auc, confusion_matrix, roc_curve

from .data import read_image


def curves(history: pd.DataFrame, metric: str = "accuracy"):
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(history["epoch"], history["train_loss"], label="train loss")
    a.plot(history["epoch"], history["val_loss"], label="val loss")
    a.set_xlabel("epoch"), a.legend(), a.set_title("loss")
    b.plot(history["epoch"], history[f"val_{metric}"], marker="o")
    best = history[f"val_{metric}"].idxmax() if metric != "log_loss" else history[f"val_{metric}"].idxmin()
    b.axvline(history["epoch"][best], ls="--", c="gray", label=f"best epoch {history['epoch'][best]}")
    b.set_xlabel("epoch"), b.set_title(f"val {metric}"), b.legend()
    fig.tight_layout()
    return fig


def image_grid(images: list[np.ndarray], titles: list[str] | None = None, cols: int = 8, size: float = 1.4):
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size * 1.15), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, im) in enumerate(zip(axes.flat, images)):
        ax.imshow(im)
        if titles:
            ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def samples_per_class(train: pd.DataFrame, per_class: int = 6, seed: int = 0):
    """A grid with one row per class."""
    picks = train.sample(frac=1, random_state=seed).groupby("label").head(per_class).sort_values("label", kind="stable")
    return image_grid([read_image(p) for p in picks["path"]], [str(v) for v in picks["label"]], cols=per_class)


def confusion(y: np.ndarray, probs: np.ndarray, classes: list[str]):
    return predicted_confusion(y, probs.argmax(1), classes, "blend OOF confusion matrix")


def predicted_confusion(y: np.ndarray, pred: np.ndarray, classes: list[str], title: str):
    """Counts of (true, predicted) class indices: an ordinal task's grades cut by its cut points, or any argmax."""
    cm = confusion_matrix(y, pred, labels=np.arange(len(classes)))
    return heatmap(cm, [str(c) for c in classes], [str(c) for c in classes], title, "predicted", "true")


LABEL_CHARS = 24  # a longer class name is shortened on an axis (short)


def short(label, n: int = LABEL_CHARS) -> str:
    """At most n characters: the start and the end kept around an ellipsis ('Amanita muscaria var. flavivolvata'
    -> 'Amanita musc…flavivolvata'), so names that differ only in their end stay apart."""
    label = str(label)
    head = (n - 1) // 2
    return label if len(label) <= n else label[:head] + "…" + label[len(label) - (n - 1 - head):]


def tick_size(n: int) -> float:
    """A tick label's font size for n labels on an axis: 9 up to 16 classes, smaller beyond, never below 5."""
    return max(5.0, min(9.0, 9.0 * 16 / max(n, 1)))


def heatmap(values: np.ndarray, rows: list[str], cols: list[str], title: str, xlabel: str, ylabel: str):
    """A count matrix in blues, each cell written in it while they stay legible (up to 30 columns); the figure
    grows with the class count and long names are shortened, rotated and set smaller."""
    n = max(len(cols), len(rows))
    cell = 0.5 if n <= 16 else 0.38
    fig, ax = plt.subplots(figsize=(1.5 + cell * len(cols), 1.5 + cell * len(rows)))
    ax.imshow(values, cmap="Blues")
    if len(cols) <= 30:
        top = values.max() if values.size else 0
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7 if n <= 16 else 5.5,
                    color="white" if v > top / 2 else "black")
    ax.set_xticks(range(len(cols)), [short(c) for c in cols], fontsize=tick_size(len(cols)),
                  rotation=90 if max(map(len, map(str, cols)), default=0) > 3 else 0)
    ax.set_yticks(range(len(rows)), [short(r) for r in rows], fontsize=tick_size(len(rows)))
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title)
    fig.tight_layout()
    return fig


def weights_bar(weights: pd.Series):
    fig, ax = plt.subplots(figsize=(max(4, len(weights) * 0.8), 3))
    ax.bar(weights.index.astype(str), weights.to_numpy())
    ax.set_ylim(0, 1), ax.set_title("blend weights")
    fig.tight_layout()
    return fig


def error_grid(errors: pd.DataFrame, cols: int = 8):
    """kit.explain.confident_errors as images: true class, predicted class and its probability over each."""
    titles = [f"true {r.true}\npred {r.predicted} {r.probability:.2f}" for r in errors.itertuples()]
    fig = image_grid([read_image(p) for p in errors["path"]], titles, cols=cols, size=1.8)
    fig.suptitle("most confident wrong OOF predictions", y=1.02)
    return fig


def cam_grid(errors: pd.DataFrame, maps: list):
    """One row per image of kit.explain.class_activation_maps: the image, then where the model found the class
    it predicted, then where it found the true one."""
    images, titles = [], []
    for r, (image, predicted, true) in zip(errors.itertuples(), maps):
        images += [image, predicted, true]
        titles += [f"{r.id}: true {r.true}", f"Grad-CAM: pred {r.predicted} {r.probability:.2f}",
                   f"Grad-CAM: true {r.true} {r.p_true:.2f}"]
    return image_grid(images, titles, cols=3, size=2.4)


HORIZONTAL_FROM = 17  # classes from which bars lie down: one name per row, read without turning the head


def bars(x: list, heights, title: str, xlabel: str, ylabel: str = "images"):
    """Bars in the given order: upright for a few short labels; lying down (the first on top, the figure as tall
    as the labels need) for 17+ or long labels, names shortened past LABEL_CHARS."""
    labels = [str(v) for v in x]
    if len(labels) >= HORIZONTAL_FROM or max(map(len, labels), default=0) > 8:
        fig, ax = plt.subplots(figsize=(6, max(2.5, 0.6 + 0.24 * len(labels))))
        ax.barh(range(len(labels)), np.asarray(heights))
        ax.set_yticks(range(len(labels)), [short(v) for v in labels], fontsize=tick_size(len(labels) / 2))
        ax.invert_yaxis()
        ax.set_title(title), ax.set_ylabel(xlabel), ax.set_xlabel(ylabel)
    else:
        fig, ax = plt.subplots(figsize=(max(4, len(labels) * 0.4), 3))
        ax.bar(labels, np.asarray(heights))
        ax.set_title(title), ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
        if max(map(len, labels), default=0) > 3:
            ax.tick_params(axis="x", labelrotation=90)
    fig.tight_layout()
    return fig


def image_sizes(stats: pd.DataFrame):
    """kit.eda.image_stats: histograms of the short side and of the aspect ratio (w/h, log scale) of the readable
    images: what resize scales from, and what squash distorts or crop cuts."""
    ok = stats[stats["error"] == ""]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3))
    a.hist(ok[["width", "height"]].min(axis=1), bins=30)
    a.set_title("short side"), a.set_xlabel("pixels"), a.set_ylabel("images")
    b.hist(np.clip(ok["width"] / ok["height"], 0.25, 4), bins=np.geomspace(0.25, 4, 31))  # beyond 4:1 at the ends
    b.set_xscale("log"), b.axvline(1, ls="--", c="gray")
    b.set_title("aspect ratio (width / height)"), b.set_xlabel("w/h, 1 = square"), b.set_ylabel("images")
    fig.tight_layout()
    return fig


def label_counts(counts: pd.DataFrame):
    """kit.eda.label_counts as bars in its row order (kit's class order, grades from lowest to highest)."""
    what = counts.columns[0]  # label, or grade
    return bars(counts[what].tolist(), counts["images"], f"images per {what}", what)


def labels_per_image(table: pd.DataFrame):
    """kit.eda.labels_per_image: how many images carry 0, 1, 2... labels."""
    return bars(table["labels"].tolist(), table["images"], "labels per image", "labels on the image")


def cooccurrence(table: pd.DataFrame):
    """kit.eda.label_cooccurrence as a heatmap: images carrying both labels, the diagonal each label's images."""
    return heatmap(table.to_numpy(), list(map(str, table.index)), list(map(str, table.columns)),
                   "images carrying both labels", "label", "label")


def group_sizes(table: pd.DataFrame):
    """kit.eda.group_sizes: how many groups have 1, 2, 3... images (and, binary, how many hold a positive)."""
    fig = bars(table["images"].tolist(), table["groups"], "images per group", "images in the group", "groups")
    if "with_positive" in table:
        ax = fig.axes[0]
        ax.containers[0].set_label("all groups")
        ax.bar([str(v) for v in table["images"]], table["with_positive"], label="with a positive")
        ax.legend()
    return fig


def roc(y: np.ndarray, probs: np.ndarray, classes: list[str]):
    """A binary task's ROC curve of the blended OOF: the last class's probability against the truth."""
    score = np.asarray(probs)[:, -1]
    fpr, tpr, _ = roc_curve(np.asarray(y) == len(classes) - 1, score)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, label=f"AUC {auc(fpr, tpr):.4f}")
    ax.plot([0, 1], [0, 1], ls="--", c="gray", label="chance")
    ax.set_xlabel("false positive rate"), ax.set_ylabel(f"true positive rate ({classes[-1]})")
    ax.set_title("blend OOF ROC curve"), ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def lr_curve(curve):
    """kit.lrfind.LRCurve: the loss (raw and smoothed) against the learning rate, log scale, with the suggested and
    the steepest lr marked."""
    t = curve.table
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(t["lr"], t["loss"], alpha=0.3, label="loss")
    ax.plot(t["lr"], t["smoothed"], label="smoothed")
    ax.axvline(curve.suggested, ls="--", c="green", label=f"suggested lr {curve.suggested:.1e} (lowest / 10)")
    ax.axvline(curve.steepest, ls=":", c="gray", label=f"steepest fall {curve.steepest:.1e}")
    finite = t["smoothed"][np.isfinite(t["smoothed"])]
    if len(finite):
        ax.set_ylim(top=min(float(t["loss"].max()), float(finite.min()) * 4))
    ax.set_xscale("log"), ax.set_xlabel("learning rate (head)"), ax.set_ylabel("training loss")
    ax.set_title("LR range test"), ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
