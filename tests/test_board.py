"""The board (kit.board): every experiment under runs/, what it scored, what is not done, what differs."""

import os

import numpy as np
import pandas as pd
import pytest

import kit
from kit.board import board, differing_params
from kit.cli import main
from kit.config import TrainConfig
from kit.folds import folds_hash, folds_path, read_folds
from kit.io import write_json
from kit.lock import fold_lock
from kit.paths import fold_dir
from kit.rundir import (CHECKPOINT, HISTORY, OOF, checkpoint_hash, oof_frame, write_config, write_history, write_oofs)


def fake_fold(comp, exp, k, params=None, val=(0.5, 0.7, 0.6), seconds=2.0, kit_version=kit.__version__, oof=True):
    """A fold folder as fit_fold leaves it, written through kit.rundir: best.pt (only its hash matters here),
    config.json, history.csv (val: val_accuracy per epoch) and OOF files for 'none' (all right) and 'hflip'
    (all right but on fold 0, all wrong there)."""
    folds = read_folds(folds_path(comp))
    d = fold_dir("runs/demo", exp, k)
    d.mkdir(parents=True)
    (d / CHECKPOINT).write_text(f"weights of {exp} fold {k}")
    cfg = TrainConfig(exp=exp, fold=k, **(params or {})).to_dict()
    write_config(d, {**cfg, "kit_version": kit_version, "competition": str(comp.root), "folds_hash": folds_hash(folds),
                     "img_size_resolved": 16})
    write_history(d, [{"epoch": e, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": v, "lr": 1e-3,
                       "seconds": seconds} for e, v in enumerate(val, start=1)])
    if oof:
        part = folds[folds["fold"] == k]
        classes = [str(c) for c in comp.classes]
        y = part["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
        right, wrong = np.eye(len(classes))[y], np.eye(len(classes))[(y + 1) % len(classes)]
        made_by = checkpoint_hash(d / CHECKPOINT)
        write_oofs(d, {t: oof_frame(part["id"], k, y, p, classes, t, folds_hash(folds), made_by)
                       for t, p in {"none": right, "hflip": right if k else wrong}.items()}, "none")
    return d


def fold0_share(comp):
    folds = read_folds(folds_path(comp))
    return float((folds["fold"] == 0).mean())


def row(table, exp):
    return table.set_index("experiment").loc[exp]


def test_board_shows_each_experiment_with_its_folds_scores_best_epochs_and_times(tiny_comp):
    for k, val in enumerate([(0.5, 0.7, 0.6), (0.8, 0.7, 0.6), (0.5, 0.6, 0.9)]):
        fake_fold(tiny_comp, "a", k, {"lr": 1e-3}, val=val, seconds=2.0 + k)
    for k in (0, 1):  # fold 2 of b never started
        fake_fold(tiny_comp, "b", k, {"lr": 3e-3, "model": "test_resnet"})
    t = board()
    assert t["experiment"].tolist() == ["a", "b"]
    a, b = row(t, "a"), row(t, "b")
    assert (a["folds_done"], a["n_folds"], b["folds_done"], b["n_folds"]) == (3, 3, 2, 3)
    assert a["oof_accuracy_none"] == 1.0 and a["oof_accuracy_hflip"] == pytest.approx(1 - fold0_share(tiny_comp))
    assert a["best_epochs"] == [2, 1, 3] and b["best_epochs"] == [2, 2, None]
    assert a["fold_seconds"] == pytest.approx(np.mean([6.0, 9.0, 12.0]))  # three epochs per fold
    assert (a["model"], b["model"], a["img_size"]) == ("test_efficientnet", "test_resnet", 16)
    assert a["notes"] == [] and np.isnan(b["oof_accuracy_none"])
    assert b["notes"] == ["no OOF score until folds [2] are done"]
    assert "blend_weight" not in t and t.attrs["blend"] == ""


def test_best_epoch_of_a_loss_is_the_lowest(tiny_comp):
    fake_fold(tiny_comp, "a", 0, {"metric": "log_loss"})
    folder = fold_dir("runs/demo", "a", 0)
    history = pd.read_csv(folder / HISTORY).assign(val_log_loss=[0.9, 0.4, 0.6])
    write_history(folder, history.to_dict("records"))
    assert board()["best_epochs"][0] == [2, None, None]


def test_oof_is_scored_in_the_metric_asked_for(tiny_comp):
    for k in range(3):
        fake_fold(tiny_comp, "a", k)
    t = board(metric="log_loss")
    assert [c for c in t if c.startswith("oof_")] == ["oof_log_loss_hflip", "oof_log_loss_none"]
    assert t["oof_log_loss_none"][0] < 1e-9 and t["oof_log_loss_hflip"][0] > 1  # a loss: right rows score 0


def test_differing_params_lists_only_training_parameters_that_differ(tiny_comp):
    fake_fold(tiny_comp, "a", 0, {"lr": 1e-3, "threads": 1, "device": "cpu", "tta": "auto"})
    fake_fold(tiny_comp, "b", 0, {"lr": 3e-3, "model": "test_resnet", "threads": 2, "tta": "hflip"})
    d = differing_params()
    assert d.index.tolist() == ["model", "lr"] and d.columns.tolist() == ["a", "b"]
    assert d.loc["lr"].tolist() == [1e-3, 3e-3] and d.loc["model"].tolist() == ["test_efficientnet", "test_resnet"]


def test_stale_incomplete_and_running_folds_are_reported_not_counted(tiny_comp):
    fake_fold(tiny_comp, "a", 0)
    fake_fold(tiny_comp, "a", 1, kit_version="0.0.1")
    interrupted = fake_fold(tiny_comp, "a", 2, oof=False)
    t = board()
    assert row(t, "a")["folds_done"] == 1
    assert row(t, "a")["notes"] == [
        "no OOF score until folds [1, 2] are done", f"fold1 stale: made by kit 0.0.1, this is kit {kit.__version__}",
        "fold2 incomplete (epoch 3/5; not running: interrupted or failed)"]
    if not os.path.exists("/proc/locks"):
        pytest.skip("running folds are seen through /proc/locks (Linux)")
    with fold_lock(interrupted):  # a live run holds the fold's lock
        assert "fold2 running (epoch 3/5)" in row(board(), "a")["notes"]
    assert "fold2 incomplete" in row(board(), "a")["notes"][2]  # released: no longer running


def test_a_fold_trained_with_other_parameters_is_noted_and_not_counted(tiny_comp):
    fake_fold(tiny_comp, "a", 0, {"lr": 1e-3})
    fake_fold(tiny_comp, "a", 1, {"lr": 1e-3, "threads": 3})  # runtime only: still the same training
    fake_fold(tiny_comp, "a", 2, {"lr": 5e-3, "model": "test_resnet"})
    t = board()
    a = row(t, "a")
    assert a["folds_done"] == 2 and not [c for c in t if c.startswith("oof_")]  # the blender refuses it: no score
    assert a["notes"] == ["mixes trainings: no OOF score until folds [2] are done with fold0's parameters",
                          "fold2 was trained with other parameters than fold0 (model: 'test_efficientnet' -> "
                          "'test_resnet', lr: 0.001 -> 0.005)"]
    assert a["fold_seconds"] == pytest.approx(6.0)  # of the two folds that count


def test_kit_board_lists_a_mixed_experiment_and_goes_on_with_the_others(tiny_comp, capsys):
    for k in range(3):
        fake_fold(tiny_comp, "a", k, {"lr": 1e-3 if k else 3e-3})
        fake_fold(tiny_comp, "b", k)
    assert main(["board"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[:5] for line in out.splitlines()[1:3]] == [["a", "test_efficientnet", "16", "1", "3"],
                                                                   ["b", "test_efficientnet", "16", "3", "3"]]
    assert "a: mixes trainings: no OOF score until folds [1, 2] are done with fold0's parameters" in out
    assert "a: fold1 was trained with other parameters than fold0 (lr: 0.003 -> 0.001)" in out
    assert not any(line.startswith("b: ") for line in out.splitlines())
    assert row(board(), "b")["oof_accuracy_none"] == 1.0


def test_oof_left_by_an_earlier_checkpoint_is_a_note_not_a_score(tiny_comp):
    for k in range(3):
        folder = fake_fold(tiny_comp, "a", k)
    (folder / CHECKPOINT).write_text("retrained, OOF not yet rewritten")
    notes = row(board(), "a")["notes"]
    assert len(notes) == 1 and notes[0].startswith(f"no OOF score: {folder / OOF} was made by checkpoint")


def blend_json(name, weights, checkpoints, mtime, competition="demo"):
    path = write_json({"experiments": [{"name": e, "weight": w, "checkpoints": checkpoints.get(e, [])}
                                       for e, w in weights.items()], "competition": competition},
                      f"submissions/{name}.blend.json")
    os.utime(path, (mtime, mtime))


def test_the_blend_weight_is_the_newest_blends_and_a_retrained_experiment_is_noted(tiny_comp):
    for exp in ("a", "b", "c"):
        for k in range(3):
            fake_fold(tiny_comp, exp, k)
    current = {e: [checkpoint_hash(fold_dir("runs/demo", e, k) / CHECKPOINT) for k in range(3)] for e in ("a", "b")}
    blend_json("new", {"a": 0.7, "b": 0.3}, {"a": current["a"], "b": ["older"] * 3}, mtime=2_000_000_000)
    blend_json("old", {"a": 0.1, "c": 0.9}, current, mtime=1_000_000_000)
    blend_json("other", {"a": 0.5, "b": 0.5}, current, mtime=3_000_000_000, competition="flowers")  # not ours
    t = board()
    assert t.attrs["blend"].endswith("new.blend.json")
    assert row(t, "a")["blend_weight"] == 0.7 and row(t, "b")["blend_weight"] == 0.3
    assert np.isnan(row(t, "c")["blend_weight"])
    assert row(t, "a")["notes"] == [] and row(t, "b")["notes"] == [
        "retrained since new.blend.json: its weight there is of the checkpoints before"]


def test_kit_board_prints_both_tables(tiny_comp, capsys):
    for k in range(3):
        fake_fold(tiny_comp, "a", k, {"lr": 1e-3})
    fake_fold(tiny_comp, "b", 0, {"lr": 3e-3}, kit_version="0.0.1")
    assert main(["board"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["experiment", "model", "img_size", "folds_done", "n_folds", "oof_accuracy_hflip"]
    assert lines[1].split()[:5] == ["a", "test_efficientnet", "16", "3", "3"]
    assert "b: fold0 stale: made by kit 0.0.1" in out
    assert "parameters that differ between experiments:" in out
    assert [line.split() for line in lines if line.startswith("lr")] == [["lr", "0.001", "0.003"]]


@pytest.mark.parametrize("make", [False, True])
def test_no_experiments_is_a_clear_message(project, capsys, make):
    runs = project / "elsewhere"
    if make:
        (runs / "demo" / "_notebooks").mkdir(parents=True)  # the runner's executed notebooks: no experiment
    assert main(["board", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kit board: error: ") and "kit run-folds --comp NAME --exp NAME" in err
    assert "no competition has runs under" in err
    assert main(["board", "--runs-dir", str(runs), "--comp", "demo"]) == 2
    assert ("no experiments under" if make else "does not exist") in capsys.readouterr().err


def test_the_board_of_a_competition_shows_its_own_experiments(tiny_comp, capsys):
    """Two competitions under one runs_dir, each with an experiment 'a': the board needs --comp and shows that one's."""
    from kit.demo import build_demo
    from kit.folds import make_folds, write_folds
    from kit.competition import load_competition

    build_demo("data", name="other", n=60, size=16)
    other = load_competition("other")
    write_folds(make_folds(other, 2), folds_path(other))
    fake_fold(tiny_comp, "a", 0, {"lr": 1e-3})
    d = fold_dir("runs/other", "a", 0)
    d.mkdir(parents=True)
    assert main(["board"]) == 2
    assert "competitions demo, other have runs under" in capsys.readouterr().err
    assert main(["board", "--comp", "demo"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:5] == ["a", "test_efficientnet", "16", "1", "3"]


def test_a_fold_fit_fold_trained_is_read_as_done(tiny_fold):
    """The fake folds above against the real thing: what fit_fold writes is what the board reads."""
    r = row(board(), "m")
    assert (r["folds_done"], r["n_folds"], r["best_epochs"], r["model"], r["img_size"]) == (
        1, 3, [1, None, None], "test_resnet", 16)
    assert r["fold_seconds"] > 0 and r["notes"] == ["no OOF score until folds [1, 2] are done"]


def test_a_multilabel_experiment_is_scored_on_its_label_matrix(project):
    """Multi-label OOF targets are '[0 3]' cells: the board decodes them (rundir.oof_targets) as the blender does."""
    from kit.competition import load_competition
    from kit.demo import build_demo
    from kit.folds import make_folds, write_folds
    from kit.metrics import metric_value
    from kit.ensemble import load_oof
    from kit.rundir import oof_targets
    from kit.train import fit_fold

    build_demo("data", name="ml", n=60, size=16, task="multilabel")
    comp = load_competition("ml")
    write_folds(make_folds(comp, 2), folds_path(comp))
    for k in (0, 1):
        fit_fold(TrainConfig(comp="ml", exp="ml", fold=k, metric="f_beta:1", model="test_resnet", img_size=16,
                             epochs=1, batch_size=32, tta="none"))
    row = board().set_index("experiment").loc["ml"]
    e = load_oof("runs/ml", "ml", read_folds(folds_path(comp)))
    y = oof_targets(e.oof, 10)
    assert y.shape == (48, 10) and row["oof_f_beta:1_none"] == pytest.approx(metric_value("f_beta:1", y, e.probs))
    assert row["folds_done"] == 2
