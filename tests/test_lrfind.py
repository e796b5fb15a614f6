"""The LR range test (kit.lrfind, kit lr-find, the train notebook's find_lr cell)."""

import numpy as np
import pytest

import kit.sam
from kit import KitError
from kit.cli import main
from kit.config import TrainConfig
from kit.lrfind import lr_find, suggestions

TINY = {"model": "test_resnet", "img_size": 16, "batch_size": 16}


def test_the_lr_rises_exponentially_on_every_group_and_the_curve_says_where_to_train(tiny_comp, project,
                                                                                     monkeypatch):
    seen, real = [], kit.sam.sam_update

    def spy(model, opt, *a, **k):  # the lr each update ran with, per group: head and backbone
        seen.append({g["part"]: g["lr"] for g in opt.param_groups})
        return real(model, opt, *a, **k)

    monkeypatch.setattr(kit.sam, "sam_update", spy)
    curve = lr_find(TrainConfig(exp="lr", backbone_lr_mult=0.1, **TINY), start=1e-5, end=1.0, steps=30)
    t = curve.table
    assert 5 <= len(t) <= 30 and t["step"].tolist() == list(range(1, len(t) + 1))
    assert np.allclose(t["lr"], 1e-5 * (1e5 ** (1 / 29)) ** np.arange(len(t)))  # exponential, start to end
    assert [s["head"] for s in seen] == pytest.approx(t["lr"].tolist())
    assert [s["backbone"] for s in seen] == pytest.approx((t["lr"] * 0.1).tolist())  # the ratio kept
    assert t["smoothed"].min() < t["smoothed"].iloc[0]  # it trained: the loss fell somewhere
    assert 1e-6 <= curve.suggested <= 0.1 and 1e-5 <= curve.steepest <= 1.0
    assert curve.suggested == pytest.approx(t["lr"][t["smoothed"].idxmin()] / 10)
    assert not (project / "runs" / "demo" / "lr").exists()  # nothing written for the experiment


def test_it_stops_when_the_loss_diverges(tiny_comp, project):
    curve = lr_find(TrainConfig(exp="lr", **TINY), start=1e-4, end=1e6, steps=60)
    t = curve.table
    last = t["smoothed"].iloc[-1]
    assert len(t) < 60 and (not np.isfinite(last) or last > 4 * t["smoothed"].iloc[:-1].min())


def test_suggestions_of_a_known_curve():
    import pandas as pd

    lr = np.geomspace(1e-6, 1, 61)
    smoothed = 2 - np.tanh(np.log10(lr) + 3) + np.where(lr > 0.1, 50 * (lr - 0.1), 0)  # falls fastest at 1e-3
    suggested, steepest = suggestions(pd.DataFrame({"lr": lr, "smoothed": smoothed}))
    assert steepest == pytest.approx(1e-3, rel=0.3)
    assert suggested == pytest.approx(lr[smoothed.argmin()] / 10)
    with pytest.raises(KitError, match="diverged after 2 update"):
        suggestions(pd.DataFrame({"lr": [1e-3, 1e-2, 1e-1], "smoothed": [1.0, 2.0, np.inf]}))


def test_kit_lr_find_prints_the_curve_and_the_suggestion_and_saves_the_plot(tiny_comp, project, capsys):
    assert main(["lr-find", "--model", "test_resnet", "--img-size", "16", "--batch-size", "16", "--steps", "12",
                 "--start", "1e-5", "--end", "1", "--plot", "lr.png"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["step", "lr", "loss", "smoothed"]
    assert "suggested lr " in out and "pass it as --lr" in out and (project / "lr.png").stat().st_size > 1000
    assert main(["lr-find", "--model", "test_resnet", "--start", "1", "--end", "0.1"]) == 2
    assert "0 < start < end" in capsys.readouterr().err
