"""Names are names, not paths: an experiment or competition name cannot lead outside its folder."""

import json

import pytest

from kit import KitError
from kit.competition import find_root
from kit.infer import submission_from_blend
from kit.paths import exp_dir, fold_dir


@pytest.mark.parametrize("name", ["", ".", "..", "../escaped", "../../escaped", "a/b", "/abs", "a\\b", ".hidden",
                                  "tab\there", "new\nline", None, 3])
def test_a_name_that_is_a_path_or_not_a_name_is_refused(project, name):
    with pytest.raises(KitError, match=r"experiment name .* is not a plain name"):
        fold_dir("runs", name, 0)


def test_runs_belong_to_a_competition_by_its_folder_name(project):
    from types import SimpleNamespace

    from kit.paths import comp_name, comp_runs, notebooks_dir

    loaded = SimpleNamespace(root=project / "data" / "flowers")  # a Competition
    for comp in ("flowers", "data/flowers", "/kaggle/input/flowers", loaded):
        assert comp_name(comp) == "flowers" and comp_runs("runs", comp) == project / "runs" / "flowers"
    assert notebooks_dir("runs", "flowers") == project / "runs" / "flowers" / "_notebooks"
    with pytest.raises(KitError, match=r"competition name '\.\.' is not a plain name"):
        comp_runs("runs", "..")


@pytest.mark.parametrize("name", ["b0", "b0-384px", "effnet_b3.ns", "exp 1", "ünïcode"])
def test_plain_names_are_folders_under_runs(project, name):
    from kit.paths import check_name

    assert exp_dir("runs", name) == project / "runs" / name
    assert check_name("experiment", name) == name


def test_a_blend_naming_an_experiment_outside_runs_is_refused(tiny_comp, project):
    (project / "runs" / "escaped" / "fold0").mkdir(parents=True)  # what '../escaped' would reach from runs/demo/
    spec = {"experiments": [{"name": "../escaped", "tta": "none", "weight": 1.0, "n_folds": 1}], "competition": "demo",
            "classes": [str(c) for c in tiny_comp.classes], "space": "prob", "power": 2.0, "metric": "accuracy",
            "method": "caruana"}
    (project / "blend.json").write_text(json.dumps(spec))
    with pytest.raises(KitError, match=r"experiment name '../escaped' is not a plain name"):
        submission_from_blend("demo", project / "blend.json")
    assert list((project / "runs" / "escaped" / "fold0").iterdir()) == []  # no test-prediction cache written there


def test_a_competition_name_cannot_climb_out_of_data_dir_but_a_path_still_works(tiny_comp, project):
    (project / "outside").mkdir()
    with pytest.raises(KitError, match=r"competition '../outside' climbs out of data with '..'"):
        find_root("../outside")
    assert find_root(str(tiny_comp.root)) == tiny_comp.root  # an absolute path is a path
    assert find_root("demo") == tiny_comp.root


def test_a_blend_naming_a_competition_path_is_refused(project):
    from kit.blendconfig import blend_runs

    assert blend_runs({"competition": "flowers"}, "runs") == project / "runs" / "flowers"
    for bad in ("../../x", "a/b", ""):
        with pytest.raises(KitError, match="competition name .* is not a plain name|records no competition"):
            blend_runs({"competition": bad}, "runs")
