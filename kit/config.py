"""One plain config object: its fields are the train notebook's `parameters` cell and the CLI flags.

Resolved once (types checked, unknown names refused) and saved with every run.
"""

from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from . import KitError, __version__


CHOICES = {"sam": ("off", "sam", "asam"), "amp": ("auto", "bf16", "fp16", "off"), "on_bad_image": ("error", "skip")}


@dataclass
class TrainConfig:
    # what and where
    comp: str = "demo"  # folder under data_dir, an absolute path, or a /kaggle/input/<comp> name
    exp: str = "exp0"  # experiment name: runs/<exp>/fold<k>/
    fold: int = 0
    data_dir: str = "data"
    runs_dir: str = "runs"
    id_col: str = ""  # empty: auto-detect
    label_col: str = ""  # empty: auto-detect
    on_bad_image: str = "error"  # error: stop with the list of unreadable images; skip: leave them out
    # model
    model: str = "test_efficientnet"  # any timm name, or a preset effnet_b0..effnet_b7
    pretrained: bool = False  # from the timm/Hugging Face cache
    weights: str = ""  # local checkpoint file, for internet-off notebooks
    img_size: int = 0  # 0: the native resolution of the model (224 when unknown)
    # training
    epochs: int = 5
    batch_size: int = 64
    accum_steps: int = 1  # micro-batches per optimizer update; effective batch: batch_size * accum_steps
    lr: float = 3e-3
    backbone_lr_mult: float = 1.0  # differential LR: backbone at lr * this, head at lr
    freeze_epochs: int = 0  # head-first fine-tuning: backbone frozen for the first N epochs
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    clip_grad: float = 0.0  # max gradient norm, 0: off
    label_smoothing: float = 0.1
    augment: str = "light"  # none, light, medium, mushroom
    mixup: float = 0.0  # mixup alpha, 0: off
    cutmix: float = 0.0  # cutmix alpha, 0: off
    mixup_off_epochs: int = 0  # plain targets for the last N epochs
    sam: str = "off"  # off, sam, asam
    sam_rho: float = 0.05  # ASAM usually wants about 10x the SAM rho
    sam_every: int = 1  # the two-pass SAM update every N optimizer steps, plain steps between
    ema_decay: float = 0.0  # EMA of weights, validated and saved when > 0 (e.g. 0.999)
    patience: int = 0  # early stopping after N epochs without improvement, 0: off
    save_top: int = 1  # keep the best N checkpoints (best.pt is the best)
    metric: str = "accuracy"
    # inference
    tta: str = "auto"  # auto: OOF for every preset, the infer step picks the best per experiment
    # runtime
    seed: int = 42
    device: str = "auto"  # auto, cpu, cuda, cuda:1
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU), bf16, fp16 (with a GradScaler), off
    channels_last: bool = True  # NHWC memory layout: faster convolutions on CPU and CUDA
    torch_compile: bool = False  # torch.compile the model
    resume: bool = True  # continue from last.pt when the fold was interrupted
    num_workers: int = 0
    image_cache: bool = True  # decoded images kept under runs_dir/.image_cache when no bigger than their file
    threads: int = 0  # torch intra-op threads, 0: the torch default

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise KitError(f"parameter {name}={getattr(self, name)!r} should be one of {list(allowed)}")
        for name in ("epochs", "batch_size", "accum_steps", "sam_every", "save_top"):
            if getattr(self, name) < 1:
                raise KitError(f"parameter {name}={getattr(self, name)!r} should be at least 1")

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None = None, **kwargs) -> "TrainConfig":
        """Build from a mapping: unknown names and values of the wrong type raise KitError."""
        params = {**(params or {}), **kwargs}
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise KitError(f"unknown parameter(s) {unknown}; known parameters are {sorted(known)}")
        return cls(**{k: coerce(v, type(known[k].default), k) for k, v in params.items()})

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> "TrainConfig":
        """Pick the config fields out of a notebook's globals() (its parameters cell)."""
        return cls.from_params({f.name: namespace[f.name] for f in fields(cls) if f.name in namespace})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def coerce(value: Any, typ: type, name: str) -> Any:
    """Values arrive typed from notebooks and YAML, as strings from the command line."""
    if isinstance(value, typ) and not (typ is int and isinstance(value, bool)):
        return value
    try:
        if typ is bool:
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.lower() in ("1", "true", "yes", "on")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if typ is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if isinstance(value, (int, float, bool)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        pass
    raise KitError(f"parameter {name}={value!r} should be {typ.__name__}")


def git_commit(path: str | Path = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def resolved(cfg: TrainConfig, **extra) -> dict:
    """What a run saves: every parameter, plus kit version, git commit and anything resolved later."""
    from .paths import project_root

    return {**cfg.to_dict(), "kit_version": __version__, "git_commit": git_commit(project_root()), **extra}
