"""Figures the notebooks show: they take data and return a matplotlib Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

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


def class_balance(train: pd.DataFrame):
    counts = train["label"].value_counts().sort_index()
    fig, ax = plt.subplots(figsize=(max(4, len(counts) * 0.4), 3))
    ax.bar([str(c) for c in counts.index], counts.to_numpy())
    ax.set_title("images per class"), ax.set_xlabel("class")
    fig.tight_layout()
    return fig


def confusion(y: np.ndarray, probs: np.ndarray, classes: list[str]):
    cm = confusion_matrix(y, probs.argmax(1), labels=np.arange(len(classes)))
    fig, ax = plt.subplots(figsize=(1 + 0.5 * len(classes), 1 + 0.5 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes), ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title("blend OOF confusion matrix")
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
