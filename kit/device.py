"""Where and how this process computes: the torch device, autocast precision, seeds, threads, and whether
it runs headless (progress as log lines, not bars)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from . import KitError

# set by the runner for its workers: their output goes to a log file, where a progress bar becomes thousands
# of lines, so each loop logs one line per epoch instead
HEADLESS_ENV = "KIT_HEADLESS"


def headless() -> bool:
    """Read at every call, not at import: a test or a notebook may set it after kit is imported."""
    return os.environ.get(HEADLESS_ENV) == "1"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KitError(f"device={name!r} but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    return torch.device(name)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Training's autocast dtype: None (full precision), torch.bfloat16 or torch.float16."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def dtype_name(dtype: torch.dtype | None) -> str:
    """How a fold records its training precision (amp_resolved): 'off', 'bfloat16' or 'float16'."""
    return str(dtype).replace("torch.", "") if dtype else "off"


def inference_dtype(amp_resolved: str, device: str | torch.device, source: str = "the fold's config"
                    ) -> torch.dtype | None:
    """Autocast dtype for a fold's OOF and test predictions (None: float32): one rule for both, so the OOF
    score describes the test predictions. The fold's training precision (amp_resolved, see dtype_name) where
    the device runs it, else the nearest it does: bf16 on a GPU without it (T4) becomes fp16; fp16 on CPU,
    where autocast fp16 is slow, becomes float32. source: the file amp_resolved was read from, for the error."""
    if amp_resolved not in ("off", "bfloat16", "float16"):
        raise KitError(f"{source}: amp_resolved={amp_resolved!r} is not one of 'off', 'bfloat16', 'float16'; "
                       "the fold was written by another kit version: retrain it (--force)")
    device = torch.device(device)
    if amp_resolved == "off" or device.type not in ("cuda", "cpu"):
        return None
    if device.type == "cuda":
        return torch.bfloat16 if amp_resolved == "bfloat16" and torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp_resolved == "bfloat16" else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def set_threads(threads: int) -> None:
    """torch's intra-op threads; 0 keeps torch's default (one per core)."""
    if threads:
        torch.set_num_threads(threads)
