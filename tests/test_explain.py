"""Error analysis (kit.explain, kit.plots.error_grid/cam_grid): the surest wrong OOF predictions, the best
experiment, and Grad-CAM maps from the fold that held each image out, on tiny timm models."""

import numpy as np
import pandas as pd
import pytest
import timm
import torch

import kit.explain
from kit import KitError, plots
from kit.augment import geometry
from kit.explain import (best_experiment, class_activation_maps, confident_errors, load_fold_model, oof_rows,
                         target_layer)

CLASSES = ["a", "b", "c"]


def test_confident_errors_are_the_wrong_ones_surest_first():
    rows = pd.DataFrame({"id": list("pqrst"), "fold": [0, 1, 0, 1, 0], "path": list("PQRST")})
    y = np.array([0, 1, 2, 0, 1])
    probs = np.array([[0.9, 0.1, 0.0],  # right, and surer than any wrong one
                      [0.6, 0.3, 0.1],  # wrong: a at 0.6
                      [0.1, 0.1, 0.8],  # right
                      [0.1, 0.2, 0.7],  # wrong: c at 0.7
                      [0.5, 0.45, 0.05]])  # wrong: a at 0.5
    errors = confident_errors(rows, y, probs, CLASSES, n=2)
    assert errors["id"].tolist() == ["s", "q"]  # n of them, by the wrong class's probability
    assert errors[["fold", "path", "true", "predicted"]].values.tolist() == [[1, "S", "a", "c"], [1, "Q", "b", "a"]]
    assert errors["probability"].tolist() == [0.7, 0.6] and errors["p_true"].tolist() == [0.1, 0.3]
    assert confident_errors(rows, y, probs, CLASSES)["id"].tolist() == ["s", "q", "t"]


def test_confident_errors_refuses_rows_that_do_not_line_up_and_multilabel_targets():
    rows = pd.DataFrame({"id": ["p"], "fold": [0], "path": ["P"]})
    with pytest.raises(KitError, match="do not line up"):
        confident_errors(rows, np.array([0, 1]), np.full((2, 3), 1 / 3), CLASSES)
    with pytest.raises(KitError, match="one label per image"):
        confident_errors(rows, np.array([[0, 1, 1]]), np.full((1, 3), 0.5), CLASSES)


def test_best_experiment_follows_the_metric_direction():
    scores = pd.DataFrame({"experiment": ["x", "y"], "oof_accuracy": [0.8, 0.9], "oof_log_loss": [0.3, 0.5]})
    assert best_experiment(scores, "accuracy") == "y"
    assert best_experiment(scores, "log_loss") == "x"  # lower is better


def test_oof_rows_are_in_folds_csv_order_with_each_image_path(tiny_comp):
    from kit.folds import folds_path, read_folds

    rows = oof_rows(tiny_comp)
    folds = read_folds(folds_path(tiny_comp))
    assert rows["id"].tolist() == folds["id"].tolist() and rows["fold"].tolist() == folds["fold"].tolist()
    paths = dict(zip(tiny_comp.train["id"], tiny_comp.train["path"]))
    assert rows["path"].tolist() == [paths[i] for i in rows["id"]]


@pytest.mark.parametrize("name", ["test_resnet", "test_vit", "test_mambaout"])
def test_grad_cam_maps_convolutional_and_token_models(name):
    """test_vit pools its class token: the last block's patch outputs get no gradient, an all-zero map unless the
    block's input norm is used; its tokens and test_mambaout's (N, H, W, C) must be laid out as (N, C, H, W)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3).eval()
    layer, as_map = target_layer(model, 64)
    seen = []
    layer.register_forward_hook(lambda module, args, out: seen.append(out))
    model(torch.randn(1, 3, 64, 64))
    channels = [s["num_chs"] for s in model.feature_info if s["reduction"] == 16][-1]
    assert as_map(seen[0]).shape == (1, channels, 4, 4)  # the deepest stage 4 cells across at 64 px: 1/16
    with GradCAM(model=model, target_layers=[layer], reshape_transform=as_map) as cam:
        heat = cam(input_tensor=torch.randn(1, 3, 64, 64), targets=[ClassifierOutputTarget(1)])
    assert heat.shape == (1, 64, 64) and heat.max() > 0.5 and heat.std() > 0.01


def test_the_mapped_stage_is_the_deepest_with_a_map_of_some_cells():
    model = timm.create_model("test_resnet", num_classes=3)
    assert target_layer(model, 224)[0] is model.layer4  # 7x7: the last stage, as usual
    assert target_layer(model, 32)[0] is model.layer2  # layer4 would be 1x1, layer3 2x2: no where in either
    assert target_layer(model, 4)[0] is model.act1  # none is 4 across: the largest map, 2x2 after the stem


@pytest.fixture
def trained_fold(tiny_comp, fit_tiny):
    """Fold 0 of the tiny competition, one epoch of test_resnet at 64 px: a map of some cells to look at."""
    fit_tiny("e", img_size=64, batch_size=50, tta="none")
    return tiny_comp


def test_cam_of_each_error_comes_from_the_fold_that_held_it_out(trained_fold, monkeypatch):
    import albumentations as A
    from pytorch_grad_cam.utils import model_targets

    from kit.data import read_image

    rows = oof_rows(trained_fold)
    rows = pd.concat([rows[rows["fold"] == 0].head(2), rows[rows["fold"] == 1].head(1)], ignore_index=True)
    errors = rows.assign(true=["0", "1", "2"], predicted=["1", "2", "0"], probability=0.9, p_true=0.05)
    loaded, targets = [], []

    def spy(folder, device):  # only fold 0 was trained: it stands in for fold 1
        loaded.append(folder.name)
        return load_fold_model(folder.with_name("fold0"), device)

    class Target(model_targets.ClassifierOutputTarget):
        def __init__(self, category):
            targets.append(category)
            super().__init__(category)

    monkeypatch.setattr(kit.explain, "load_fold_model", spy)
    monkeypatch.setattr(model_targets, "ClassifierOutputTarget", Target)
    maps = class_activation_maps(errors, "runs", "demo", "e", device="cpu")
    assert loaded == ["fold0", "fold1"]  # each row's own fold, loaded once
    classes = [str(c) for c in trained_fold.classes]
    assert targets == [classes.index(c) for pair in zip(errors["predicted"], errors["true"]) for c in pair]
    assert len(maps) == 3
    for path, (image, predicted, true) in zip(errors["path"], maps):
        # as the model saw it: the fold's resize (auto: test_resnet's crop at 0.95), not a squash of the file
        assert np.array_equal(image, A.Compose(geometry(64, "crop", 0.95))(image=read_image(path))["image"])
        assert not np.array_equal(image, A.Resize(64, 64)(image=read_image(path))["image"])
        assert predicted.shape == true.shape == (64, 64, 3) and predicted.dtype == np.uint8
        assert not np.array_equal(image, predicted)  # the heat is laid over the image

    fig = plots.cam_grid(errors, maps)
    assert len([a for a in fig.axes if a.images]) == 9
    assert [a.get_title() for a in fig.axes[:3]] == [f"{errors['id'][0]}: true 0", "Grad-CAM: pred 1 0.90",
                                                    "Grad-CAM: true 0 0.05"]
    fig = plots.error_grid(errors, cols=2)
    assert len([a for a in fig.axes if a.images]) == 3 and fig.axes[0].get_title() == "true 0\npred 1 0.90"


def test_cam_of_an_ordinal_cumulative_fold_follows_each_grades_probability(ordinal_comp, project):
    """A cumulative head has K-1 = 9 outputs and none per grade: the fold loads with them, and Grad-CAM
    differentiates the grade's probability (kit.tta.ACTIVATIONS['cumulative']), grade 9 included."""
    from kit.config import TrainConfig
    from kit.explain import cam_target
    from kit.train import fit_fold
    from kit.tta import cumulative_probs

    fit_fold(TrainConfig(comp="ord", exp="o", metric="qwk", model="test_resnet", img_size=64, epochs=1, batch_size=16,
                         num_workers=0, tta="none"))
    model, _, classes, activation = load_fold_model(project / "runs" / "ord" / "o" / "fold0", torch.device("cpu"))
    assert activation == "cumulative" and model.get_classifier().out_features == 9 and len(classes) == 10
    z = torch.randn(9)
    assert torch.allclose(cam_target(9, activation)(z), cumulative_probs(z[None])[0, 9])
    assert cam_target(2, "softmax").category == 2  # a logit per class: grad-cam's ClassifierOutputTarget

    rows = oof_rows(ordinal_comp)
    errors = rows[rows["fold"] == 0].head(2).assign(true=["9", "0"], predicted=["0", "9"], probability=0.9,
                                                    p_true=0.05).reset_index(drop=True)
    maps = class_activation_maps(errors, "runs", "ord", "o", device="cpu")
    assert len(maps) == 2 and all(m.shape == (64, 64, 3) for pair in maps for m in pair[1:])
