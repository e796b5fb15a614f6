"""Bad input and crashes: clear errors that name the file/row/value, and nothing half-written."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import kit.train
from kit import KitError
from kit.competition import load_competition
from kit.config import TrainConfig
from kit.folds import folds_path, make_folds, write_folds
from kit.rundir import is_complete
from kit.runner import run_folds
from kit.submission import make_submission
from kit.train import fit_fold

TINY = dict(model="test_resnet", img_size=16, batch_size=32, epochs=1, tta="none")
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "train_fold.py"


def break_images(comp, n_val=1):
    """Truncate one training image and one validation image of fold 0."""
    folds = pd.read_csv(folds_path(comp), dtype={"id": str})
    val = folds.loc[folds["fold"] == 0, "id"].iloc[:n_val].tolist()
    trn = folds.loc[folds["fold"] != 0, "id"].iloc[:1].tolist()
    paths = comp.train.set_index("id").loc[val + trn, "path"].tolist()
    for p in paths:
        Path(p).write_bytes(Path(p).read_bytes()[:40])
    return val, paths


def test_unreadable_images_stop_training_with_the_list(tiny_comp):
    _, paths = break_images(tiny_comp)
    with pytest.raises(KitError, match=r"2 image\(s\) cannot be read:\n.*on_bad_image='skip'") as e:
        fit_fold(TrainConfig(exp="bad", **TINY))
    assert all(p in str(e.value) for p in paths)


def test_skipping_unreadable_images_keeps_the_oof_contract(tiny_comp):
    val, paths = break_images(tiny_comp)
    r = fit_fold(TrainConfig(exp="skip", on_bad_image="skip", **TINY))
    config = json.loads((r.dir / "config.json").read_text())
    assert sorted(config["skipped_images"]) == sorted(paths)
    oof = pd.read_csv(r.dir / "oof.csv", dtype={"id": str}).set_index("id")
    assert np.allclose(oof.loc[val[0], [str(c) for c in range(10)]].to_numpy(float), 0.1)  # uniform: no information
    assert len(oof) == (pd.read_csv(folds_path(tiny_comp))["fold"] == 0).sum()


def test_multilabel_strings_are_detected(project):
    from PIL import Image

    root = project / "data" / "ml"
    (root / "train").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (4, 4)).save(root / "train" / f"{i}.png")
    pd.DataFrame({"id": ["0", "1", "2", "3"], "label": ["cat", "dog", "cat dog", "dog"]}).to_csv(root / "train.csv",
                                                                                                 index=False)
    comp = load_competition("ml")  # once refused; now a multi-label task (tests/test_tasks.py)
    assert comp.task == "multilabel" and comp.classes == ["cat", "dog"]
    assert comp.targets.tolist() == [[1, 0], [0, 1], [1, 1], [0, 1]]


def test_sample_submission_classes_never_seen_in_train(tiny_comp):
    sample = pd.read_csv(tiny_comp.sample_submission, dtype=str)[["image_id"]]
    for c in [*map(str, range(9)), "ten"]:
        sample[c] = 0.1
    sample.to_csv(tiny_comp.sample_submission, index=False)
    with pytest.raises(KitError, match=r"1 of them never occur in train.csv \(\['ten'\]\) and 1 train class"):
        make_submission(tiny_comp, np.full((len(tiny_comp.test), 10), 0.1))


def test_nan_loss_stops_the_fold_with_the_step_and_a_hint(tiny_comp):
    with pytest.raises(KitError, match=r"loss is nan at step \d+ .*no checkpoint was written from it. Lower lr"):
        fit_fold(TrainConfig(exp="nan", lr=1e12, warmup_epochs=0, weight_decay=0.0, label_smoothing=0.0,
                             **{**TINY, "epochs": 2}))
    assert not (tiny_comp.root.parent.parent / "runs" / "demo" / "nan" / "fold0" / "best.pt").exists()


def test_cuda_out_of_memory_gets_a_hint(tiny_comp, monkeypatch):
    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(kit.train, "train_one_epoch", oom)
    with pytest.raises(KitError, match=r"out of memory with batch_size=32.*raise accum_steps.*lower img_size"):
        fit_fold(TrainConfig(exp="oom", **TINY))


def test_resume_from_another_kit_version_is_refused(tiny_comp, monkeypatch, interrupted_fit):
    interrupted_fit(TrainConfig(exp="v", **{**TINY, "epochs": 3}), 1)
    monkeypatch.setattr(kit.train, "__version__", "9.9.9")
    with pytest.raises(KitError, match=rf"kit_version='{re.escape(kit.__version__)}', this run has '9.9.9'.*--force"):
        fit_fold(TrainConfig(exp="v", **{**TINY, "epochs": 3}))


def test_finished_fold_on_other_folds_is_reported_not_mixed_in(tiny_comp, project):
    fit_fold(TrainConfig(exp="old", **TINY))
    for f in ("folds.csv", "folds.json"):
        (tiny_comp.root / f).unlink()
    write_folds(make_folds(tiny_comp, n_folds=3, seed=7), folds_path(tiny_comp))
    summary = run_folds("old", [0], TINY, NOTEBOOK)
    assert summary["status"].tolist() == ["stale"] and "made on other folds" in summary["error"].iloc[0]


def assert_every_file_absent_or_complete(folder: Path):
    for p in folder.iterdir() if folder.is_dir() else []:
        if p.name.startswith("."):  # a temp file a kill left behind (never renamed into place), or the fold lock
            assert p.suffix == ".tmp" or p.name == ".lock", p
            continue
        if p.suffix == ".pt":
            torch.load(p, weights_only=True)
        elif p.suffix == ".csv":
            assert len(pd.read_csv(p)) > 0, p
        elif p.suffix == ".json":
            json.loads(p.read_text())


def rows(path: Path) -> int:
    try:
        return len(pd.read_csv(path))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


@pytest.mark.slow
def test_sigkill_at_random_points_leaves_only_complete_files_and_rerun_finishes(tiny_comp, project):
    """Killed by SIGKILL at 6 points (startup, after epochs 1/3/5/7 plus a random delay, during the
    final OOF writes); after each, every file is absent or complete; the rerun then finishes the fold."""
    epochs = 9
    cmd = [sys.executable, "-m", "kit.cli", "train", "--exp", "kill", "--fold", "0", "--model", "test_resnet",
           "--img-size", "32", "--epochs", str(epochs), "--batch-size", "16", "--save-top", "2", "--tta", "auto"]
    env = {**os.environ, "KIT_HEADLESS": "1"}
    folder = project / "runs" / "demo" / "kill" / "fold0"
    rng = random.Random(0)
    progress = []
    for target in (0, 1, 3, 5, 7, epochs):
        proc = subprocess.Popen(cmd, cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.time() + 120
        while target and rows(folder / "history.csv") < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.5, 2.0) if target == 0 else rng.uniform(0, 0.1))  # an epoch takes ~0.1 s
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        progress.append((rows(folder / "history.csv"), is_complete(folder)))
        assert_every_file_absent_or_complete(folder)
    assert len({p for p in progress}) >= 5, progress  # the kills hit different stages
    assert subprocess.run(cmd, cwd=project, capture_output=True, env=env).returncode == 0
    assert is_complete(folder)
    assert pd.read_csv(folder / "history.csv")["epoch"].tolist() == list(range(1, epochs + 1))  # 1-based
    assert not list(folder.glob(".*.tmp"))
    assert_every_file_absent_or_complete(folder)
