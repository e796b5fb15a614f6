"""Training throughput, images/s: the kit's fold loop over JPEG files against (a) the same model's
forward/backward/AdamW step on a batch already in memory, the limit of this hardware, and (b) the
loop a competitor writes from the PyTorch tutorials (torchvision ImageFolder, DataLoader, contiguous
model), same model, batch and threads.

Run: .venv/bin/python bench/throughput.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import CLASSES, Row, at_least, image_files, interleaved, photo_dataset, timed

MODEL = "effnet_b0"


def kit_state(size: int, batch: int, device: torch.device, channels_last: bool = True, dtype=None, **params):
    """The training state (model, optimizer...) exactly as fit_fold builds it (params: more TrainConfig fields)."""
    from kit.config import TrainConfig
    from kit.models import create_model
    from kit.train import TrainState

    cfg = TrainConfig(model=MODEL, img_size=size, batch_size=batch, epochs=10, channels_last=channels_last, **params)
    return TrainState.build(create_model(MODEL, CLASSES).to(device), cfg, 100, CLASSES, device, dtype)


def amp(device) -> torch.dtype | None:
    """What fit_fold's amp='auto' picks: bf16 on CUDA, full precision on CPU."""
    from kit.device import amp_dtype

    return amp_dtype("auto", device)


def limit_run(model, size: int, batch: int, steps: int, device, channels_last: bool):
    """images/s of forward + backward + AdamW step over `steps` random batches that never leave memory
    (distinct batches: one batch repeated is learned within a few steps, and its vanishing gradients
    run slower on CPU, which would flatter the ratio)."""
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    batches = [(torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt),
                torch.randint(0, CLASSES, (batch,), device=device)) for _ in range(steps)]

    dtype = amp(device)

    def run() -> float:
        model.train()

        def steps_():
            for x, t in batches:
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    loss = F.cross_entropy(model(x), t)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return steps * batch / timed(steps_)
    return run


def kit_run(paths, y, size: int, batch: int, workers: int, device, channels_last: bool = True,
            reduced_decode: bool = True, cache_dir=None):
    """images/s of one epoch of kit.train.train_one_epoch over kit's loader (decode, 'light' augment).
    With cache_dir, the untimed warm-up epoch fills the decoded-image cache, as fit_fold's image check
    does before the first epoch."""
    from kit.augment import normalization, train_transform
    from kit.data import ImageDataset, make_loader
    from kit.train import train_one_epoch

    state = kit_state(size, batch, device, channels_last, amp(device))
    mean, std = normalization(state.model)
    ds = ImageDataset(paths, y, train_transform("light", size, mean, std, seed=0), size if reduced_decode else 0,
                      cache_dir)
    dl = make_loader(ds, batch, True, workers, seed=0)

    def run() -> float:
        def epoch():
            state.step = 0  # every timed epoch as the first one
            train_one_epoch(state, dl)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return len(dl) * batch / timed(epoch)
    return run


def plain_run(root, indices, size: int, batch: int, workers: int, device):
    """images/s of the tutorial loop: ImageFolder + RandomResizedCrop/flip/ToTensor/Normalize, a
    DataLoader with shuffle, a contiguous model, zero_grad/forward/loss/backward/step."""
    from torchvision import datasets, transforms

    from kit.models import create_model

    tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = torch.utils.data.Subset(datasets.ImageFolder(str(root / "train"), tf), indices)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                                     pin_memory=device.type == "cuda")
    model = create_model(MODEL, CLASSES).to(device)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    dtype = amp(device)

    def run() -> float:
        def epoch():
            model.train()
            for x, t in dl:
                x, t = x.to(device), t.to(device)
                opt.zero_grad()
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    loss = F.cross_entropy(model(x), t)
                loss.backward()
                opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return len(dl) * batch / timed(epoch)
    return run


def main(quick: bool = False, device: str = "cpu", sizes=(64, 128), batch: int = 32, rounds: int = 3) -> list[Row]:
    device = torch.device(device)
    torch.set_num_threads(os.cpu_count() or 1)
    per_size = {64: 256, 128: 128} if not quick else {64: 64, 128: 64}
    root = photo_dataset(max(per_size.values()))
    every_path, every_y = image_files(root, 10**9)
    rows = []
    for size in sizes:
        n = per_size.get(size, 128)
        idx = np.linspace(0, len(every_path) - 1, n).astype(int)
        paths, y = [every_path[i] for i in idx], every_y[idx]
        model = kit_state(size, batch, device).model
        contiguous = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
        cache = Path(tempfile.mkdtemp(prefix="kit-bench-cache-"))
        runs = {
            "limit": limit_run(model, size, batch, max(2, n // batch), device, True),
            "limit_contiguous": limit_run(contiguous, size, batch, max(2, n // batch), device, False),
            "kit": kit_run(paths, y, size, batch, 0, device, cache_dir=cache),
            "kit_nocache": kit_run(paths, y, size, batch, 0, device),
            "kit_workers": kit_run(paths, y, size, batch, 1, device, cache_dir=cache),
            "kit_before": kit_run(paths, y, size, batch, 0, device, channels_last=False, reduced_decode=False),
            "plain0": plain_run(root, idx, size, batch, 0, device),
            "plain2": plain_run(root, idx, size, batch, 2, device),
        }
        v = interleaved(runs, rounds if not quick else 1)
        cached = sum(1 for _ in cache.rglob("*.npy"))
        shutil.rmtree(cache)
        print(f"{size}px", {k: round(x, 1) for k, x in v.items()}, flush=True)
        kit, limit = max(v["kit"], v["kit_workers"]), v["limit"]
        plain = max(v["plain0"], v["plain2"])
        rows += [
            Row(f"B0 train {size}px: kit fold loop on JPEG files (best of 0, 1 workers) / same step on "
                "in-memory tensors",
                f"{kit:.1f} img/s", f"{limit:.1f} img/s", *at_least(kit / limit, 0.9)),
            Row(f"B0 train {size}px: kit / plain PyTorch+torchvision ImageFolder loop (best of 0, 2 workers)",
                f"{kit:.1f} img/s", f"{plain:.1f} img/s", *at_least(kit / plain, 1.0)),
            Row(f"B0 train {size}px: kit now / kit before (contiguous NCHW, full-size JPEG decode, no cache)",
                f"{v['kit']:.1f} img/s", f"{v['kit_before']:.1f} img/s", v["kit"] / v["kit_before"]),
            Row(f"B0 train {size}px, in memory: channels_last / contiguous",
                f"{limit:.1f} img/s", f"{v['limit_contiguous']:.1f} img/s", limit / v["limit_contiguous"]),
            Row(f"B0 train {size}px: kit with / without the decoded-image cache ({cached} of {n} images cached)",
                f"{v['kit']:.1f} img/s", f"{v['kit_nocache']:.1f} img/s", v["kit"] / v["kit_nocache"]),
            Row(f"B0 train {size}px: kit with 1 loader worker / in-process loading",
                f"{v['kit_workers']:.1f} img/s", f"{v['kit']:.1f} img/s", v["kit_workers"] / v["kit"]),
        ]
    return rows


if __name__ == "__main__":
    from common import markdown

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    print(markdown(main(ap.parse_args().quick)))
