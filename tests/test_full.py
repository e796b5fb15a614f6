"""The full-data fit (kit.full, kit fit-full) and the infer step's models=folds|full|both."""

import numpy as np
import pytest
import torch

import kit.train
from kit import KitError
from kit.blendconfig import BlendConfig
from kit.cli import main
from kit.full import cv_epochs, fit_full
from kit.infer import blend_and_submit, predict_fold
from kit.io import read_json


@pytest.fixture
def cv_done(tiny_comp, project, fit_tiny):
    """Experiment 'e' on the tiny competition's 3 folds, 3 epochs each (tta none)."""
    return [fit_tiny("e", k, epochs=3, tta="none", lr=1e-2) for k in range(3)]


def test_the_full_fit_trains_on_every_row_for_the_folds_median_best_epoch(cv_done, tiny_comp, project, monkeypatch):
    made, real = [], kit.train.ImageDataset

    def spy(paths, *a, **k):
        made.append(list(paths))
        return real(paths, *a, **k)

    monkeypatch.setattr(kit.train, "ImageDataset", spy)
    best = sorted(r.best_epoch for r in cv_done)
    result = fit_full("demo", "e")
    full = project / "runs" / "demo" / "e" / "full"
    assert result.dir == full and len(result.history) == best[1] == cv_epochs([r.dir for r in cv_done])  # median
    assert sorted(made[0]) == sorted(tiny_comp.train["path"]) and made[1] == []  # every row trains, none validates
    assert (full / "best.pt").is_file() and not list(full.glob("oof*.csv"))  # no OOF: nothing is out of fold
    ckpt = torch.load(full / "best.pt", weights_only=True)
    assert ckpt["epoch"] == best[1]  # the last epoch's weights
    config = read_json(full / "config.json")
    assert config["full"] is True and config["lr"] == 1e-2 and config["epochs"] == best[1]  # the folds' parameters
    with pytest.raises(KitError, match=r"epochs: 2 -> 1"):  # another epoch count is another training: not mixed
        fit_full("demo", "e", epochs=1)
    assert len(fit_full("demo", "e", epochs=1, resume=False).history) == 1  # afresh


def test_the_full_fit_needs_every_fold_done(tiny_comp, project, fit_tiny):
    fit_tiny("half", 0, tta="none")
    with pytest.raises(KitError, match=r"fold\(s\) \['fold1', 'fold2'\] are not complete"):
        fit_full("demo", "half")
    with pytest.raises(KitError, match="has no trained fold 0"):
        fit_full("demo", "nothing")


def test_the_infer_step_uses_fold_models_the_full_model_or_both(cv_done, tiny_comp, project, capsys, fit_tiny):
    assert main(["fit-full", "--exp", "e", "--epochs", "2"]) == 0
    full = project / "runs" / "demo" / "e" / "full"
    assert "full-data model of e: 2 epoch(s)" in capsys.readouterr().out
    mean = BlendConfig("mean", "accuracy")
    folds = blend_and_submit("demo", ["e"], mean, name="folds", device="cpu")
    only = blend_and_submit("demo", ["e"], BlendConfig("mean", "accuracy", models="full"), name="full", device="cpu")
    both = blend_and_submit("demo", ["e"], BlendConfig("mean", "accuracy", models="both"), name="both", device="cpu")
    alone = predict_fold(full, tiny_comp, "none", "cpu")
    assert np.allclose(only.report.test_probs, alone, atol=1e-6)
    assert np.allclose(both.report.test_probs, 0.5 * folds.report.test_probs + 0.5 * alone, atol=1e-6)
    assert only.blend["experiments"][0]["full_checkpoint"] and "full_checkpoint" not in folds.blend["experiments"][0]
    assert only.report.oof_score == folds.report.oof_score  # the OOF is the folds' whatever predicts the test set
    blend_and_submit("demo", blend_json="submissions/full.blend.json", name="again", device="cpu")
    assert (project / "submissions" / "again.csv").read_bytes() == only.path.read_bytes()
    assert main(["fit-full", "--exp", "e", "--epochs", "1", "--force"]) == 0  # retrained: the saved blend refuses it
    with pytest.raises(KitError, match="the fold was retrained since"):
        blend_and_submit("demo", blend_json="submissions/full.blend.json", name="stale", device="cpu")
    for k in range(3):
        fit_tiny("nofull", k, epochs=3, tta="none", lr=1e-2)
    with pytest.raises(KitError, match=r"models='full' needs 'nofull''s full-data model, .*nofull/full/best.pt does "
                                       r"not exist: train it with kit fit-full --exp nofull"):
        blend_and_submit("demo", ["e", "nofull"], BlendConfig("mean", "accuracy", models="full"), device="cpu")


def test_the_run_time_estimate_and_the_kaggle_bundle_follow_models(cv_done, tiny_comp, project, monkeypatch):
    """models='full': the estimate loads the full-data model alone, and the bundle carries it (not the folds)."""
    import kit.infer
    import kit.package
    from kit.infer import estimate_seconds
    from kit.package import bundle_inputs

    fit_full("demo", "e", epochs=1)
    done = blend_and_submit("demo", ["e"], BlendConfig("mean", "accuracy", models="full"), name="f", device="cpu")
    loaded, real = [], kit.infer.load_fold
    monkeypatch.setattr(kit.infer, "load_fold", lambda path, *a: loaded.append(path.name) or real(path, *a))
    estimate_seconds(done.blend, tiny_comp.test["path"].tolist()[:4], 100, device="cpu", batch_size=4)
    assert loaded == ["full"]
    _, files = bundle_inputs(done.blend_path, "runs")
    assert sorted(files) == ["runs/demo/e/full/best.pt", "runs/demo/e/full/config.json"]
    both = blend_and_submit("demo", ["e"], BlendConfig("mean", "accuracy", models="both"), name="b", device="cpu")
    assert len(bundle_inputs(both.blend_path, "runs")[1]) == 2 * 4  # three folds and the full model
