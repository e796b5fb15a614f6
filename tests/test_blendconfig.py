"""A blend's settings: refused at construction with the choices, and read back from blend.json as saved."""

import numpy as np
import pytest

from kit import KitError
from kit.blendconfig import BlendConfig
from kit.ensemble import fit_blend_weights
from kit.io import read_json, write_json


@pytest.mark.parametrize("setting,message", [
    ({"method": "greedy"}, r"blend method='greedy' is not one of \['caruana', 'slsqp', 'mean', 'stack'\]"),
    ({"space": "log"}, r"blend space='log' is not one of \['prob', 'logit', 'power', 'rank'\]"),
    ({"submission_kind": "labels"}, r"blend submission_kind='labels' is not one of \['auto', 'label', 'probability'\]"),
    ({"metric": "acc"}, r"blend metric='acc': unknown metric 'acc'; use one of \[.*'accuracy'"),
    ({"fit_metric": "acc"}, r"fit_metric='acc': unknown metric 'acc'; use one of \[.*or 'auto'"),
    ({"power": 0}, r"blend power=0 is not a positive number"),
    ({"power": "2"}, r"blend power='2' is not a positive number"),
    ({"rounds": 0}, r"blend rounds=0 is not a positive integer"),
    ({"rounds": 2.5}, r"blend rounds=2.5 is not a positive integer"),
    ({"tta": "flip"}, r"blend tta='flip': unknown tta 'flip'; choose a preset"),
    ({"space": "rank"}, r"space='rank' .* metric='accuracy' reads probabilities"),
    ({"method": "slsqp", "fit_metric": "accuracy"}, r"method='slsqp' minimizes log loss.*fit_metric='accuracy'"),
])
def test_a_bad_setting_is_refused_naming_it_its_value_and_the_choices(setting, message):
    with pytest.raises(KitError, match=message):
        BlendConfig(**setting)


def test_the_config_round_trips_through_blend_json(tmp_path):
    config = BlendConfig("slsqp", "roc_auc_ovr", "power", 3, 7, "log_loss", "probability")
    write_json({"experiments": [], "config": config.to_dict()}, tmp_path / "blend.json")
    back = BlendConfig.from_blend(read_json(tmp_path / "blend.json"))
    assert back == config and isinstance(back.power, float)
    assert back.objective == "log_loss" and BlendConfig(space="rank", metric="roc_auc_ovr").objective == "roc_auc_ovr"


def test_a_blend_json_of_loose_settings_reads_back_and_an_unknown_setting_is_refused():
    legacy = {"method": "mean", "metric": "log_loss", "space": "logit", "power": 2.0, "fit_metric": "log_loss",
              "classes": ["a", "b"]}  # what blend.json held before the settings were one object
    assert BlendConfig.from_blend(legacy) == BlendConfig("mean", "log_loss", "logit", fit_metric="log_loss")
    with pytest.raises(KitError, match=r"x.json: the blend's config has unknown setting\(s\) \['temperature'\]"):
        BlendConfig.from_blend({"config": {"method": "mean", "temperature": 2}}, "x.json")
    with pytest.raises(KitError, match=r"blend space='rank'|space='rank' .* metric='accuracy'"):
        BlendConfig.from_blend({"config": {"space": "rank"}})  # a hand-edited blend.json is checked too


def test_rounds_bound_caruana():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    logits = [np.eye(3)[y] + rng.normal(size=(300, 3)) for _ in range(3)]
    preds = [np.exp(z) / np.exp(z).sum(1, keepdims=True) for z in logits]
    one = fit_blend_weights(preds, y, BlendConfig(rounds=1))
    assert sorted(one) == [0, 0, 1]  # one round: the best single model alone
    assert (fit_blend_weights(preds, y, BlendConfig(rounds=50)) > 0).sum() > 1  # more rounds: a mixture
