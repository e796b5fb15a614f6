import pytest
import torch

from kit import KitError
from kit.models import PRESETS, create_model, resolve_model


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
