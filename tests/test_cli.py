from pathlib import Path

from kit.cli import main, parse_params

NOTEBOOK = str(Path(__file__).resolve().parents[1] / "notebooks" / "train_fold.py")


def test_unknown_parameter_fails_before_any_fold(project, capsys):
    code = main(["run-folds", "--exp", "x", "--notebook", NOTEBOOK, "-p", "epoch=3"])
    assert code == 2
    assert "unknown parameter(s) ['epoch']" in capsys.readouterr().err
    assert not (project / "runs" / "x").exists()


def test_ill_typed_flag_fails_before_any_fold(project, capsys):
    assert main(["run-folds", "--exp", "x", "--notebook", NOTEBOOK, "--epochs", "ten"]) == 2
    assert "epochs='ten' should be int" in capsys.readouterr().err


def test_notebook_without_parameters_cell_is_refused(project, tmp_path, capsys):
    nb = tmp_path / "bare.py"
    nb.write_text("# %%\nx = 1\n")
    assert main(["run-folds", "--exp", "x", "--notebook", str(nb)]) == 2
    assert "has no cell tagged 'parameters'" in capsys.readouterr().err


def test_params_from_yaml_and_flags(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("epochs: 3\nmodel: test_resnet\n")
    assert parse_params(["epochs=5", "tta=hflip"], str(f)) == {"epochs": 5, "model": "test_resnet", "tta": "hflip"}


def test_score_without_demo_says_how_to_build_it(project, capsys):
    (project / "s.csv").write_text("image_id,label\n")
    assert main(["score", str(project / "s.csv")]) == 2
    assert "kit demo-data" in capsys.readouterr().err
