import pytest
import torch

from kit import KitError
from kit.models import PRESETS, create_model, cumulative_targets, fold_head, head_of, resolve_model


def test_effnet_presets_carry_native_resolution():
    assert resolve_model("effnet_b6") == ("tf_efficientnet_b6.ns_jft_in1k", 528)
    assert resolve_model("effnet_b0", 64) == ("tf_efficientnet_b0.ns_jft_in1k", 64)
    assert [PRESETS[f"effnet_b{i}"].img_size for i in range(8)] == [224, 240, 260, 300, 380, 456, 528, 600]


def test_any_timm_model_by_name_and_unknown_names():
    assert resolve_model("resnet18") == ("resnet18", 224)
    with pytest.raises(KitError, match="unknown model 'resnet1888'"):
        resolve_model("resnet1888")


def test_local_weights_file_loads_offline(tmp_path):
    src = create_model("test_resnet", 5)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    torch.save({"model": src.state_dict(), "classes": ["a"]}, tmp_path / "kit.pt")
    for f in ("w.pth", "kit.pt"):
        dst = create_model("test_resnet", 5, weights=tmp_path / f)
        for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
            assert torch.equal(a, b), k


def test_weights_with_another_class_count_keep_backbone_and_fresh_head(tmp_path):
    src = create_model("test_resnet", 1000)
    torch.save(src.state_dict(), tmp_path / "imagenet.pth")
    dst = create_model("test_resnet", 3, weights=tmp_path / "imagenet.pth")
    assert dst.get_classifier().out_features == 3
    assert torch.equal(dst.conv1[0].weight if hasattr(dst.conv1, "__getitem__") else dst.conv1.weight,
                       src.conv1[0].weight if hasattr(src.conv1, "__getitem__") else src.conv1.weight)


def test_weights_of_another_model_name_both_shapes(tmp_path):
    torch.save(create_model("test_efficientnet", 3).state_dict(), tmp_path / "other.pth")
    with pytest.raises(KitError, match=r"does not fit this model"):
        create_model("test_resnet", 3, weights=tmp_path / "other.pth")


def test_missing_weights_file(tmp_path):
    with pytest.raises(KitError, match="does not exist"):
        create_model("test_resnet", 3, weights=tmp_path / "none.pth")


def test_unavailable_pretrained_weights_name_both_options(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(KitError, match=r"Hugging Face cache.*weights=/path/to/file.pth"):
        create_model("test_resnet", 3, pretrained=True)


def test_the_head_of_each_task_and_ordinal_head():
    """An ordinal (or integer regression) task trains K-1 cumulative outputs unless ordinal_head='softmax'; every
    other task ignores ordinal_head."""
    assert head_of("ordinal", "cumulative", 10) == (9, "cumulative")
    assert head_of("regression", "cumulative", 5) == (4, "cumulative")
    assert head_of("ordinal", "softmax", 10) == (10, "softmax")
    for task in ("multiclass", "binary"):
        assert head_of(task, "cumulative", 10) == (10, "softmax")
    assert head_of("multilabel", "cumulative", 10) == (10, "sigmoid")
    with pytest.raises(KitError, match="at least 2 grades"):
        head_of("ordinal", "cumulative", 1)


def test_a_fold_config_from_before_ordinal_head_rebuilds_a_softmax():
    """config.json records task_resolved and ordinal_head; one without ordinal_head (an older kit) trained a
    softmax over the grades, one without task_resolved a multiclass softmax."""
    assert fold_head({"task_resolved": "ordinal", "ordinal_head": "cumulative"}, 10) == (9, "cumulative")
    assert fold_head({"task_resolved": "ordinal"}, 10) == (10, "softmax")
    assert fold_head({"task_resolved": "multilabel"}, 4) == (4, "sigmoid")
    assert fold_head({}, 4) == (4, "softmax")


def test_cumulative_targets_are_grade_above_k():
    t = cumulative_targets(torch.tensor([0, 1, 3, 2]), 3)  # 4 grades, 3 outputs: t_k = [y > k]
    assert t.tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]]
    assert not t.is_floating_point()  # smoothed by train_one_epoch as multi-label 0/1 targets are


def test_resize_auto_follows_the_models_pretrained_config():
    from kit.models import eval_geometry

    assert eval_geometry("test_resnet") == ("crop", 0.95)  # timm: crop_mode center, crop_pct 0.95
    assert eval_geometry("efficientnet_b0") == ("crop", 0.875)
    assert eval_geometry("tf_efficientnet_b6.ns_jft_in1k") == ("crop", 0.942)  # the effnet_b6 preset
    assert eval_geometry("test_resnet", "squash") == ("squash", 0.95)  # kept for a none@crop TTA
    assert eval_geometry("test_resnet", "auto", 0.8) == ("crop", 0.8)
    assert eval_geometry("test_resnet", "letterbox", 0.5) == ("letterbox", 0.5)


def test_a_fold_config_from_before_resize_was_squashed():
    from kit.models import fold_geometry

    assert fold_geometry({"mean": [0.5] * 3}) == ("squash", 1.0)
    assert fold_geometry({"resize_resolved": "crop", "crop_pct_resolved": 0.9}) == ("crop", 0.9)
