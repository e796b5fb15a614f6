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


@dataclass
class TrainConfig:
    # what and where
    comp: str = "demo"  # folder under data_dir, an absolute path, or a /kaggle/input/<comp> name
    exp: str = "exp0"  # experiment name: runs/<exp>/fold<k>/
    fold: int = 0
    data_dir: str = "data"
    runs_dir: str = "runs"
    id_col: str = ""  # "" = auto-detect
    label_col: str = ""  # "" = auto-detect
    # model
    model: str = "test_efficientnet"  # any timm name, or a preset such as efficientnet_b3
    pretrained: bool = False  # from the timm/Hugging Face cache
    weights: str = ""  # local checkpoint file, for internet-off notebooks
    img_size: int = 0  # 0 = the preset's native resolution (224 for unknown models)
    # training
    epochs: int = 5
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    augment: str = "light"
    metric: str = "accuracy"
    # inference
    tta: str = "none"
    # runtime
    seed: int = 42
    device: str = "auto"  # auto, cpu, cuda, cuda:1
    num_workers: int = 0
    threads: int = 0  # torch intra-op threads; 0 = torch's default

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
