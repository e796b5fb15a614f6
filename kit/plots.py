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


def heatmap(values: np.ndarray, rows: list[str], cols: list[str], title: str, xlabel: str, ylabel: str):
    """A count matrix in blues, each cell written in it while they stay legible (up to 30 columns)."""
    fig, ax = plt.subplots(figsize=(1 + 0.5 * len(cols), 1 + 0.5 * len(rows)))
    ax.imshow(values, cmap="Blues")
    if len(cols) <= 30:
        top = values.max() if values.size else 0
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > top / 2 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=90 if max(map(len, cols), default=0) > 3 else 0)
    ax.set_yticks(range(len(rows)), rows)
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


def bars(x: list, heights, title: str, xlabel: str, ylabel: str = "images"):
    fig, ax = plt.subplots(figsize=(max(4, len(x) * 0.4), 3))
    ax.bar([str(v) for v in x], np.asarray(heights))
    ax.set_title(title), ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
    if max((len(str(v)) for v in x), default=0) > 3:
        ax.tick_params(axis="x", labelrotation=90)
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
