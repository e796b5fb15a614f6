"""Where the models go wrong: the OOF predictions the blend was surest of and got wrong, and class activation maps
(Grad-CAM, from the grad-cam package) of a fold's checkpoint for them. The infer notebook calls these and draws
them with kit.plots.error_grid and kit.plots.cam_grid."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import KitError
from .competition import Competition
from .folds import folds_path, read_folds
from .metrics import lookup


def oof_rows(comp: Competition, runs_dir: str | Path = "runs") -> pd.DataFrame:
    """id, fold and image path of every OOF row, in the order of a BlendReport's y and oof_probs (folds.csv's)."""
    folds = read_folds(folds_path(comp, runs_dir))
    return folds[["id", "fold"]].merge(comp.train[["id", "path"]], on="id", how="left", validate="one_to_one")


def confident_errors(rows: pd.DataFrame, y: np.ndarray, probs: np.ndarray, classes: list[str],
                     n: int = 16) -> pd.DataFrame:
    """The n wrong predictions with the highest probability on the wrong class, surest first: rows (oof_rows) with
    the true class, the predicted one, its probability and the probability the true class got. Sure and wrong is
    where a mislabelled image or a class the model confuses shows first."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise KitError(f"confident_errors needs one label per image (y of shape {y.shape}); a multi-label task has "
                       "no single wrong class per image")
    if len(rows) != len(y) or probs.shape != (len(y), len(classes)):
        raise KitError(f"{len(rows)} rows, {len(y)} labels and probabilities of shape {probs.shape} for "
                       f"{len(classes)} classes do not line up: pass oof_rows(comp) with the report's y and oof_probs")
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:n]
    out = rows.iloc[wrong].reset_index(drop=True)
    out["true"] = [classes[k] for k in y[wrong]]
    out["predicted"] = [classes[k] for k in pred[wrong]]
    out["probability"] = probs[wrong, pred[wrong]]
    out["p_true"] = probs[wrong, y[wrong]]
    return out


def best_experiment(scores: pd.DataFrame, metric: str) -> str:
    """The experiment of a BlendReport's scores with the best OOF `metric` (with its chosen TTA)."""
    column = scores[f"oof_{metric}"]
    return str(scores["experiment"][column.idxmax() if lookup(metric).greater_is_better else column.idxmin()])


def load_fold_model(folder: Path, device: torch.device):
    """A fold's best.pt in eval mode, with the transform it was validated with, its classes and its head's
    activation (the head its config.json says it trained, kit.models.fold_head)."""
    from .augment import eval_transform
    from .models import create_model, fold_geometry, fold_head
    from .rundir import load_best, read_config

    ckpt, cfg = load_best(folder), read_config(folder)
    n_outputs, activation = fold_head(cfg, len(ckpt["classes"]))
    model = create_model(ckpt["timm_name"], n_outputs)
    model.load_state_dict(ckpt["model"])
    return (model.to(device).eval(), eval_transform(ckpt["img_size"], cfg["mean"], cfg["std"], *fold_geometry(cfg)),
            ckpt["classes"], activation)


def cam_target(category: int, activation: str):
    """What Grad-CAM differentiates for a class: its logit (grad-cam's ClassifierOutputTarget) where the model has
    an output per class; the grade's probability (kit.tta.ACTIVATIONS) for an ordinal cumulative head, whose K-1
    outputs are P(grade > k), none of them a grade's own."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from .tta import ACTIVATIONS

    if activation != "cumulative":
        return ClassifierOutputTarget(category)
    return lambda output: ACTIVATIONS[activation](output)[..., category]


def target_layer(model: nn.Module, img_size: int, min_side: int = 4):
    """The layer Grad-CAM looks at, and how to read its output as an (N, C, H, W) map: the deepest of timm's
    feature stages (feature_info) whose map at img_size is at least min_side cells across; the last stage of a
    32 px model is 1x1, a map without a where (the CAM of a 224 px model is its last stage's, 7x7). A ViT's tokens
    are laid back on their grid, from its block's input norm: with class-token pooling the patch outputs of the
    last block get no gradient. Swin's and MambaOut's (N, H, W, C) is transposed."""
    info = list(getattr(model, "feature_info", None) or [])
    if not info:
        raise KitError(f"{type(model).__name__} has no timm feature_info: kit does not know which layer to map")
    stage = max(reversed(info), key=lambda s: min(img_size // s["reduction"], min_side))  # ties: the deepest
    layer = model.get_submodule(stage["module"])
    channels, prefix = stage["num_chs"], getattr(model, "num_prefix_tokens", 0)
    if hasattr(model, "num_prefix_tokens") and hasattr(layer, "norm1"):
        layer = layer.norm1

    def as_map(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:  # (N, prefix + H*W, C) tokens
            x = x[:, prefix:]
            side = math.isqrt(x.shape[1])
            if side * side != x.shape[1]:
                raise KitError(f"{x.shape[1]} patch tokens are not a square grid: no class activation map")
            x = x.reshape(len(x), side, side, x.shape[2])
        return x if x.shape[1] == channels else x.permute(0, 3, 1, 2)

    return layer, as_map


def class_activation_maps(errors: pd.DataFrame, runs_dir: str | Path, comp, exp: str, device: str = "auto"
                          ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per row of `errors` (confident_errors): the image as the model saw it (made square by the fold's resize
    mode: cropped, squashed or letterboxed), and Grad-CAM heat maps over
    it for the predicted class and for the true class, from the checkpoint of the competition's experiment `exp`'s
    fold that held the image out (the model that made its OOF prediction)."""
    import albumentations as A
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from .data import read_image
    from .device import pick_device
    from .paths import comp_runs, exp_dir

    dev, models, out = pick_device(device), {}, []
    for row in errors.itertuples():
        if row.fold not in models:
            models[row.fold] = load_fold_model(exp_dir(comp_runs(runs_dir, comp), exp) / f"fold{row.fold}", dev)
        model, transform, classes, activation = models[row.fold]
        image = read_image(row.path)
        x = torch.from_numpy(transform(image=image)["image"].transpose(2, 0, 1)).unsqueeze(0).to(dev)
        resized = A.Compose(list(transform.transforms)[:-1])(image=image)["image"]  # its geometry, not normalized
        layer, as_map = target_layer(model, x.shape[-1])
        maps = []
        with GradCAM(model=model, target_layers=[layer], reshape_transform=as_map) as cam:
            for name in (row.predicted, row.true):
                heat = cam(input_tensor=x, targets=[cam_target(classes.index(str(name)), activation)])[0]
                maps.append(show_cam_on_image(resized.astype(np.float32) / 255, heat, use_rgb=True))
        out.append((resized, *maps))
    return out
