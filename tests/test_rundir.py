"""The run-folder contract (kit.rundir): names, complete/stale, a fresh start, checkpoints, OOF and test files."""

import ast
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import kit
import kit.rundir
from kit import KitError
from kit.config import TrainConfig
from kit.folds import folds_hash, folds_path, make_folds, read_folds, write_folds
from kit.rundir import (CHECKPOINT, CONFIG, HISTORY, LAST, OOF, checkpoint_hash, is_complete, keep_top,
                        read_last, read_test_cache, remove_run_outputs, save_last, stale_reason, write_oofs,
                        write_test_cache)

KIT = Path(kit.__file__).parent


def touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_text("x")
    return folder


def test_a_fold_is_complete_only_with_all_four_files(tmp_path):
    names = (CHECKPOINT, HISTORY, CONFIG, OOF)
    for missing in names:  # the OOF file is written last, but a folder without any of the others is no fold
        assert not is_complete(touch(tmp_path / missing, *(n for n in names if n != missing)))
    assert is_complete(touch(tmp_path / "all", *names))


def test_stale_reason_names_another_kit_version_or_other_folds(tiny_comp):
    folds = read_folds(folds_path(tiny_comp))
    folder = touch(tiny_comp.root.parent.parent / "runs" / "demo" / "e" / "fold0")
    config = {"kit_version": kit.__version__, "competition": str(tiny_comp.root), "runs_dir": "runs",
              "folds_hash": folds_hash(folds)}
    (folder / CONFIG).write_text(json.dumps(config))
    assert stale_reason(folder) == ""
    (folder / CONFIG).write_text(json.dumps({**config, "kit_version": "0.0.1"}))
    assert stale_reason(folder) == f"made by kit 0.0.1, this is kit {kit.__version__}"
    (folder / CONFIG).write_text(json.dumps(config))
    for f in ("folds.csv", "folds.json"):  # the folds made again since, with another seed
        (tiny_comp.root / f).unlink()
    write_folds(make_folds(tiny_comp, n_folds=3, seed=7), folds_path(tiny_comp))
    assert re.fullmatch(rf"made on other folds \(hash {folds_hash(folds)}, .*folds.csv now has \w+\)",
                        stale_reason(folder))


def test_a_fresh_start_removes_the_run_outputs_by_their_exact_names(tmp_path):
    outputs = (CHECKPOINT, LAST, HISTORY, OOF, "oof-d4.csv", "oof-none.csv", "test_hflip.csv", "top-003.pt",
               "top-1234.pt")
    # the user's files, the runner's (its log is being written while the kernel starts this fold), the lock,
    # the config (rewritten by the start itself)
    kept = ("notes.txt", "test_ideas.csv", "oof-mine.csv", "top-picks.pt", "best.pt.bak", "run.log", "job.json",
            "train_fold.ipynb", ".lock", CONFIG)
    folder = touch(tmp_path / "fold0", *outputs, *kept)
    remove_run_outputs(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(kept)


def ckpt(epoch):
    return lambda: {"epoch": epoch}


def epoch_of(path: Path) -> int:
    return torch.load(path, weights_only=True)["epoch"]


def test_keep_top_rotates_best_and_the_next_best(tmp_path):
    made, top = [], []
    for epoch, value in enumerate([0.5, 0.7, 0.6, 0.4, 0.8], start=1):
        top = keep_top(tmp_path, top, value, epoch, 2, lambda e=epoch: made.append(e) or {"epoch": e})
        files = {p.name: epoch_of(p) for p in tmp_path.iterdir()}
        expected = {1: {"best.pt": 1}, 2: {"best.pt": 2, "top-001.pt": 1}, 3: {"best.pt": 2, "top-003.pt": 3},
                    4: {"best.pt": 2, "top-003.pt": 3}, 5: {"best.pt": 5, "top-002.pt": 2}}[epoch]
        assert files == expected, epoch
    assert made == [1, 2, 3, 5]  # epoch 4 ranks below the kept two: its checkpoint is never built
    assert top == [(0.8, 5), (0.7, 2)]


def test_keep_top_one_overwrites_the_best_and_a_tie_keeps_the_earlier_epoch(tmp_path):
    top = keep_top(tmp_path, [], 0.5, 1, 1, ckpt(1))
    top = keep_top(tmp_path, top, 0.5, 2, 1, ckpt(2))
    assert top == [(0.5, 1)] and [p.name for p in tmp_path.iterdir()] == ["best.pt"]
    top = keep_top(tmp_path, top, 0.6, 3, 1, ckpt(3))
    assert top == [(0.6, 3)] and [p.name for p in tmp_path.iterdir()] == ["best.pt"]
    assert epoch_of(tmp_path / "best.pt") == 3


META = {"folds_hash": "f1", "timm_name": "test_resnet", "kit_version": kit.__version__}


def test_read_last_continues_only_the_same_run(tmp_path):
    cfg = TrainConfig(model="test_resnet").to_dict()
    assert read_last(tmp_path, cfg, META) is None  # nothing to resume
    save_last(tmp_path, {"epoch": 2}, META, cfg)
    assert read_last(tmp_path, {**cfg, "threads": 3, "tta": "d4"}, META)["epoch"] == 2  # runtime-only changes
    with pytest.raises(KitError, match=r"last.pt was made with timm_name='test_resnet', this run has 'resnet18'; "
                                       r"rerun with resume=False \(kit run-folds --comp .* --force\)"):
        read_last(tmp_path, cfg, {**META, "timm_name": "resnet18"})
    with pytest.raises(KitError, match=r"last.pt was trained with other parameters \(lr: 0.003 -> 0.1\)"):
        read_last(tmp_path, {**cfg, "lr": 0.1}, META)


def test_oof_files_are_written_before_the_one_that_marks_the_fold_complete(tmp_path, monkeypatch):
    written = []
    real = kit.rundir.write_csv
    monkeypatch.setattr(kit.rundir, "write_csv", lambda df, path: written.append(Path(path).name) or real(df, path))
    frames = {t: pd.DataFrame({"id": ["a"], "tta": [t]}) for t in ("none", "hflip")}
    write_oofs(tmp_path, frames, "none")
    assert written == ["oof-none.csv", "oof-hflip.csv", "oof.csv"]
    assert pd.read_csv(tmp_path / "oof.csv")["tta"].tolist() == ["none"]


def test_cached_test_predictions_are_used_only_for_the_same_ids_and_checkpoint(tmp_path):
    (tmp_path / CHECKPOINT).write_text("weights")
    made_by = checkpoint_hash(tmp_path / CHECKPOINT)
    probs = np.array([[0.2, 0.8], [0.6, 0.4]])
    write_test_cache(tmp_path, "hflip", ["x", "y"], probs, ["a", "b"], made_by)
    assert pd.read_csv(tmp_path / "test_hflip.csv").columns.tolist() == ["id", "a", "b", "checkpoint"]
    assert np.allclose(read_test_cache(tmp_path, "hflip", ["x", "y"], made_by), probs)
    assert read_test_cache(tmp_path, "hflip", ["y", "x"], made_by) is None  # another test set (order)
    assert read_test_cache(tmp_path, "none", ["x", "y"], made_by) is None  # another TTA
    (tmp_path / CHECKPOINT).write_text("retrained")
    assert read_test_cache(tmp_path, "hflip", ["x", "y"], checkpoint_hash(tmp_path / CHECKPOINT)) is None


# What spells a run-folder file name in code: a string (not a docstring) that is one of these names, starts
# with one (a path built on it), or an f-string piece that builds one ("oof-{tta}.csv").
NAMES = ("best.pt", "last.pt", "history.csv", "config.json", "oof.csv", "run.log", "job.json", "train_fold.ipynb")
PREFIXES = ("oof-", "test_", "top-")


def spellings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value.lstrip("/")
            if any(text == n or text.startswith(n + " ") for n in NAMES) or text == ".lock":
                found.append(node.value)
        if isinstance(node, ast.JoinedStr):
            for piece, after in zip(node.values, node.values[1:]):
                if (isinstance(piece, ast.Constant) and isinstance(after, ast.FormattedValue)
                        and piece.value.lstrip("/") in PREFIXES):
                    found.append(piece.value)
    return found


def test_spellings_finds_what_it_looks_for(tmp_path):
    code = tmp_path / "m.py"
    code.write_text('"""Writes best.pt."""\nA = "best.pt"\nB = f"oof-{t}.csv"\nC = folder / "run.log"\n'
                    'D = f"{d}/last.pt is old"\nE = "test_resnet"\nF = "keep the best N (best.pt is the best)"\n')
    assert sorted(spellings(code)) == ["/last.pt is old", "best.pt", "oof-", "run.log"]


@pytest.mark.parametrize("module", sorted(p.name for p in KIT.glob("*.py") if p.name != "rundir.py"))
def test_no_module_but_rundir_spells_a_run_folder_file_name(module):
    assert spellings(KIT / module) == []


def kit_imports(module: str) -> dict[str, set[str]]:
    """{kit module: names} imported by kit/<module>.py, at the top or inside functions."""
    found = {}
    for node in ast.walk(ast.parse((KIT / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.setdefault(node.module, set()).update(a.name for a in node.names)
            else:  # from . import rundir
                for a in node.names:
                    if (KIT / f"{a.name}.py").is_file():
                        found.setdefault(a.name, set())
    return found


def test_training_and_prediction_take_the_run_folder_from_rundir_and_devices_from_device():
    assert "ensemble" not in kit_imports("train")  # OOF names and checkpoint hashes are rundir's
    assert "train" not in kit_imports("infer") and "train" not in kit_imports("ensemble")
    assert {"rundir", "device"} <= set(kit_imports("infer")) and {"rundir", "device"} <= set(kit_imports("train"))
    for module in ("runner", "package"):  # the run folder's names are rundir's, not train's
        assert "train" not in kit_imports(module) and "rundir" in kit_imports(module), module


def test_kit_modules_import_each_other_without_cycles():
    graph = {p.stem: set(kit_imports(p.stem)) for p in KIT.glob("*.py")}

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for m in graph.get(todo.pop(), ()):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen

    assert [m for m in sorted(graph) if m in reach(m)] == []
