import pytest

from kit import KitError
from kit.config import TrainConfig, resolved


def test_unknown_parameter_names_the_known_ones():
    with pytest.raises(KitError, match=r"unknown parameter\(s\) \['epoch'\].*epochs"):
        TrainConfig.from_params(epoch=3)


@pytest.mark.parametrize("name,value,expected", [
    ("epochs", "7", 7), ("lr", "1e-3", 1e-3), ("pretrained", "true", True), ("pretrained", 0, False),
    ("lr", 1, 1.0), ("model", "resnet18", "resnet18"),
])
def test_values_from_the_command_line_are_coerced(name, value, expected):
    assert getattr(TrainConfig.from_params({name: value}), name) == expected


@pytest.mark.parametrize("name,value", [("epochs", "many"), ("epochs", 2.5), ("pretrained", "maybe"),
                                        ("model", 3), ("epochs", True)])
def test_ill_typed_values_fail_with_the_name(name, value):
    with pytest.raises(KitError, match=f"{name}="):
        TrainConfig.from_params({name: value})


def test_from_namespace_picks_only_config_fields():
    cfg = TrainConfig.from_namespace({"epochs": 2, "model": "test_resnet", "np": object(), "__name__": "x"})
    assert (cfg.epochs, cfg.model) == (2, "test_resnet")


def test_resolved_config_records_version_and_extra():
    d = resolved(TrainConfig(seed=7), folds_hash="abc")
    assert d["seed"] == 7 and d["folds_hash"] == "abc" and d["kit_version"]


@pytest.mark.parametrize("params,message", [
    ({"sam": "yes"}, r"sam='yes' should be one of \['off', 'sam', 'asam'\]"),
    ({"amp": "fp8"}, "amp='fp8' should be one of"),
    ({"accum_steps": 0}, "accum_steps=0 should be at least 1"),
])
def test_bad_choices_fail_before_training(params, message):
    with pytest.raises(KitError, match=message):
        TrainConfig.from_params(params)
