"""Models over timm: any timm name, EfficientNet presets as data, pretrained weights from the
hub cache or from a local file (internet-off notebooks); and the head a task trains (head_of): how many
outputs, and the activation (kit.tta.ACTIVATIONS) that turns them into the probabilities everything downstream
reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import timm
import torch
from torch import nn

from . import KitError
from .competition import ORDINAL_TASKS


@dataclass(frozen=True)
class Preset:
    timm_name: str
    img_size: int  # the resolution the weights were trained at
    batch_size: int  # fits a 16 GB GPU with AMP


# Noisy Student weights: what the image-competition write-ups used. B6 runs at 528 px.
PRESETS: dict[str, Preset] = {
    f"effnet_b{i}": Preset(f"tf_efficientnet_b{i}.ns_jft_in1k", size, bs)
    for i, (size, bs) in enumerate([(224, 64), (240, 48), (260, 40), (300, 32), (380, 16), (456, 12), (528, 8),
                                    (600, 6)])
}


def resolve_model(name: str, img_size: int = 0) -> tuple[str, int]:
    """(timm name, image size) for a preset or a timm name; img_size=0 takes the native resolution."""
    if name in PRESETS:
        p = PRESETS[name]
        return p.timm_name, img_size or p.img_size
    arch = name.split(".")[0]
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch[:6]}*")[:8]
        raise KitError(f"unknown model {name!r}: not a kit preset ({sorted(PRESETS)}) nor a timm model; "
                       f"similar timm names: {close}")
    if img_size:
        return name, img_size
    cfg = pretrained_cfg(name)
    return name, int(cfg.input_size[-1]) if cfg is not None else 224


def pretrained_cfg(timm_name: str):
    """timm's pretrained config of a timm name (its default tag's without one); None when timm has none."""
    return timm.get_pretrained_cfg(timm_name) if "." in timm_name else timm.models.get_pretrained_cfg(timm_name)


DEFAULT_CROP_PCT = 0.875  # timm's DEFAULT_CROP_PCT


def eval_geometry(timm_name: str, resize: str = "auto", crop_pct: float = 0.0) -> tuple[str, float]:
    """(resize mode of kit.augment.RESIZE_MODES, crop_pct) for a model: 'auto' and crop_pct=0 take the model's
    pretrained config (timm's crop_mode center/squash/border and crop_pct), as timm evaluates it. crop_pct is
    kept whatever the mode: a TTA at resize crop (none@crop) of a squashed fold crops as the model would."""
    from .augment import TIMM_CROP_MODES

    cfg = pretrained_cfg(timm_name) if resize == "auto" or not crop_pct else None
    if resize == "auto":
        resize = TIMM_CROP_MODES.get(getattr(cfg, "crop_mode", None) or "center", "crop")
    pct = crop_pct or float(getattr(cfg, "crop_pct", None) or DEFAULT_CROP_PCT)
    return resize, pct


def head_of(task: str, ordinal_head: str, n_classes: int) -> tuple[int, str]:
    """(outputs of the model, its activation in kit.tta.ACTIVATIONS) for a task with n_classes classes (grades).

    Multi-label: a sigmoid per class. Ordinal with ordinal_head='cumulative': K-1 sigmoids, output k
    P(grade > grade_k), the cumulative link of CORAL and of the APTOS/PANDA "binned BCE" solutions (the grades'
    order is in the targets, cumulative_targets); 'softmax' and every other task: a softmax over the classes.
    ordinal_head is TrainConfig's (validated there)."""
    if task == "multilabel":
        return n_classes, "sigmoid"
    if task in ORDINAL_TASKS and ordinal_head == "cumulative":
        if n_classes < 2:
            raise KitError(f"ordinal_head='cumulative' needs at least 2 grades, got {n_classes}; use "
                           "ordinal_head='softmax'")
        return n_classes - 1, "cumulative"
    return n_classes, "softmax"


def fold_head(config: Mapping, n_classes: int) -> tuple[int, str]:
    """head_of for a fold as its config.json records it (task_resolved, ordinal_head): what test inference and
    explain rebuild. A config written before ordinal_head existed trained a softmax."""
    return head_of(config.get("task_resolved") or "multiclass", config.get("ordinal_head", "softmax"), n_classes)


def fold_geometry(config: Mapping) -> tuple[str, float]:
    """(resize mode, crop_pct) a fold was validated with, as its config.json records them: what its test
    predictions and explain use. A config written before resize existed squashed."""
    return config.get("resize_resolved", "squash"), float(config.get("crop_pct_resolved", 1.0))


def cumulative_targets(y: torch.Tensor, n_outputs: int) -> torch.Tensor:
    """(N,) grade indices -> (N, n_outputs) 0/1 targets of the cumulative head: t_k = [y > k]. Integer, as
    multi-label targets are: label smoothing and mixup treat both alike (kit.train)."""
    return (y.unsqueeze(-1) > torch.arange(n_outputs, device=y.device)).long()


def create_model(name: str, num_classes: int, pretrained: bool = False, weights: str | Path = "") -> nn.Module:
    timm_name, _ = resolve_model(name)
    if weights:
        model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes)
        load_weights(model, weights)
        return model
    try:
        return timm.create_model(timm_name, pretrained=pretrained, num_classes=num_classes)
    except Exception as e:  # hub unreachable, cache empty, gated repo...
        if not pretrained:
            raise
        raise KitError(
            f"pretrained weights for {timm_name!r} cannot be had ({type(e).__name__}: {str(e)[:200]}). Either "
            f"(1) download them once where there is internet so they sit in the Hugging Face cache "
            f"(python -c \"import timm; timm.create_model('{timm_name}', pretrained=True)\"), or "
            f"(2) pass weights=/path/to/file.pth (a state_dict, a kit checkpoint or a timm/.safetensors file); "
            f"or set pretrained=False to train from scratch"
        ) from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise KitError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "model_state_dict"):  # kit, timm/lightning, common scripts
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}


def load_weights(model: nn.Module, path: str | Path, strict_head: bool = False) -> None:
    """Load a checkpoint into `model`. A classifier of another class count is left fresh (fine-tuning)
    unless strict_head; any other mismatch names both shapes.

    Hand-written rather than timm's pretrained_cfg_overlay(file=...): that path drops the head only by
    comparing with the pretrained config's class count and does not name mismatched shapes.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    head = {f"{model.default_cfg.get('classifier', 'fc')}.weight", f"{model.default_cfg.get('classifier', 'fc')}.bias"}
    bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape]
    head_bad = [b for b in bad if b[0] in head]
    if bad and (strict_head or len(head_bad) < len(bad)):
        k, theirs, ours = bad[0]
        raise KitError(f"{path} does not fit this model: {k} is {theirs} in the file but {ours} in the model "
                       f"({len(bad)} mismatched tensor(s)); was it saved for another model or class count?")
    for k, *_ in head_bad:
        state.pop(k)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in head]
    if missing or unexpected:
        raise KitError(f"{path} does not fit this model: {len(missing)} missing key(s) e.g. {missing[:3]}, "
                       f"{len(unexpected)} unexpected e.g. {unexpected[:3]}; was it saved for another model?")
