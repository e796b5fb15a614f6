"""One fold's training: best checkpoint by validation metric, history.csv, OOF predictions and the
resolved config, written atomically under runs/<exp>/fold<k>/."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from timm.scheduler import CosineLRScheduler
from tqdm import tqdm

from . import KitError
from .augment import eval_transform, train_transform
from .competition import load_competition
from .config import TrainConfig, resolved
from .data import ImageDataset, make_loader
from .folds import attach_folds, folds_hash, folds_path, read_folds
from .io import save_torch, write_csv, write_json
from .metrics import metric_value, score
from .models import create_model, resolve_model
from .paths import fold_dir
from .tta import predict

CHECKPOINT = "best.pt"
OOF = "oof.csv"
HISTORY = "history.csv"
CONFIG = "config.json"
RESERVED = {"id", "fold", "target", "tta", "folds_hash"}


@dataclass
class FoldResult:
    dir: Path
    best_score: float
    best_epoch: int
    history: pd.DataFrame
    oof: pd.DataFrame


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KitError(f"device={name!r} but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    return torch.device(name)


def is_complete(d: Path) -> bool:
    """A fold is done when its OOF file exists: it is written last."""
    return all((d / f).is_file() for f in (CHECKPOINT, HISTORY, CONFIG, OOF))


def fit_fold(cfg: TrainConfig) -> FoldResult:
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    comp = load_competition(cfg.comp, cfg.data_dir, cfg.id_col, cfg.label_col)
    folds = read_folds(folds_path(comp, cfg.runs_dir))
    table = attach_folds(comp, folds)
    n_folds = int(table["fold"].max()) + 1
    if not 0 <= cfg.fold < n_folds:
        raise KitError(f"fold={cfg.fold} but folds.csv has folds 0..{n_folds - 1}")
    for c in comp.classes:
        if str(c) in RESERVED:
            raise KitError(f"class name {c!r} collides with an OOF column name {sorted(RESERVED)}; rename the class")
    timm_name, size = resolve_model(cfg.model, cfg.img_size)
    device = pick_device(cfg.device)
    out = fold_dir(cfg.runs_dir, cfg.exp, cfg.fold)
    meta = dict(folds_hash=folds_hash(folds), n_folds=n_folds, classes=[str(c) for c in comp.classes],
                timm_name=timm_name, img_size_resolved=size, competition=str(comp.root), device_resolved=str(device))
    write_json(resolved(cfg, **meta), out / CONFIG)

    y = comp.targets
    is_val = (table["fold"] == cfg.fold).to_numpy()
    train_ds = ImageDataset(table["path"][~is_val], y[~is_val], train_transform(cfg.augment, size, seed=cfg.seed))
    val_ds = ImageDataset(table["path"][is_val], y[is_val], eval_transform(size))
    train_dl = make_loader(train_ds, cfg.batch_size, True, cfg.num_workers, cfg.seed)
    val_dl = make_loader(val_ds, cfg.batch_size * 2, False, cfg.num_workers)

    model = create_model(cfg.model, len(comp.classes), cfg.pretrained, cfg.weights).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = len(train_dl)
    sched = CosineLRScheduler(opt, t_initial=cfg.epochs * steps, warmup_t=cfg.warmup_epochs * steps,
                              warmup_lr_init=cfg.lr / 100, lr_min=cfg.lr / 100, t_in_epochs=False)

    rows, best, best_epoch = [], -np.inf, -1
    bar = tqdm(range(cfg.epochs), desc=f"{cfg.exp} fold {cfg.fold}", mininterval=2)
    for epoch in bar:
        t0 = time.time()
        train_loss = train_one_epoch(model, train_dl, opt, sched, epoch * steps, cfg.label_smoothing, device)
        probs = predict(model, val_dl, "none", device=device, desc="validate", autocast=cuda)
        val_y = y[is_val]
        row = dict(epoch=epoch, train_loss=train_loss, val_loss=metric_value("log_loss", val_y, probs),
                   **{f"val_{cfg.metric}": metric_value(cfg.metric, val_y, probs)},
                   lr=opt.param_groups[0]["lr"], seconds=time.time() - t0)
        rows.append(row)
        s = score(cfg.metric, val_y, probs)
        if s > best:
            best, best_epoch = s, epoch
            save_torch({"model": model.state_dict(), "classes": meta["classes"], "timm_name": timm_name,
                        "img_size": size, "epoch": epoch, "score": row[f"val_{cfg.metric}"]}, out / CHECKPOINT)
        write_csv(pd.DataFrame(rows), out / HISTORY)
        bar.set_postfix(loss=f"{train_loss:.3f}", **{cfg.metric: f"{row[f'val_{cfg.metric}']:.4f}"})

    model.load_state_dict(torch.load(out / CHECKPOINT, map_location=device, weights_only=True)["model"])
    probs = predict(model, val_dl, cfg.tta, device=device, desc="oof", autocast=cuda)
    oof = oof_frame(table["id"][is_val], cfg.fold, y[is_val], probs, meta["classes"], cfg.tta, meta["folds_hash"])
    write_csv(oof, out / OOF)  # last: its presence marks the fold complete
    history = pd.DataFrame(rows)
    return FoldResult(out, float(history[f"val_{cfg.metric}"].iloc[best_epoch]), best_epoch, history, oof)


def train_one_epoch(model, loader, opt, sched, step: int, label_smoothing: float, device) -> float:
    model.train()
    cuda = device.type == "cuda"
    total, n = 0.0, 0
    for x, t in tqdm(loader, desc="train", leave=False, mininterval=2):
        x, t = x.to(device, non_blocking=True), t.to(device, non_blocking=True)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(model(x), t, label_smoothing=label_smoothing)
        if not torch.isfinite(loss):
            raise KitError(f"loss is {loss.item()} at step {step}; lower lr (now {opt.param_groups[0]['lr']:.2e}) "
                           "or check the inputs")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        sched.step_update(step)
        total += loss.item() * len(x)
        n += len(x)
    return total / max(n, 1)


def oof_frame(ids, fold: int, targets, probs: np.ndarray, classes: list[str], tta: str, fhash: str) -> pd.DataFrame:
    df = pd.DataFrame(probs, columns=classes)
    df.insert(0, "id", np.asarray(ids))
    df.insert(1, "fold", fold)
    df.insert(2, "target", np.asarray(targets))
    df["tta"] = tta
    df["folds_hash"] = fhash
    return df
