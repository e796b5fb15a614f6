"""Kaggle offline: the bundle's notebook runs in a fresh venv that installs kit with --no-index."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import pytest

import kit.package
from kit import KitError
from kit.blendconfig import BlendConfig
from kit.cli import main
from kit.competition import load_competition
from kit.config import TrainConfig
from kit.folds import folds_path, read_folds
from kit.infer import infer_and_blend, save_blend
from kit.package import package_for_kaggle
from kit.submission import validate_submission
from kit.train import fit_fold


@pytest.mark.slow
def test_bundle_notebook_runs_offline_in_a_fresh_venv(tiny_comp, project, tmp_path):
    for k in range(3):
        fit_fold(TrainConfig(exp="m", fold=k, model="test_resnet", img_size=16, epochs=1, tta="hflip"))
    report = infer_and_blend(tiny_comp, read_folds(folds_path(tiny_comp)), ["m"])
    save_blend(report, project / "blend.json")
    wheels = Path(sys.prefix) / "kit-test-wheels"  # the extra wheels, downloaded once per venv
    if not list(wheels.glob("ttach-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels),
                        "ttach==0.0.3"], check=True)
    bundle = package_for_kaggle(project / "blend.json", tmp_path / "bundle", wheels_from=wheels)
    assert {p.name for p in (bundle / "wheels").iterdir()} >= {"ttach-0.0.3-py3-none-any.whl"}
    assert any(p.name.startswith("kit-") for p in (bundle / "wheels").iterdir())
    assert sorted(p.parent.name for p in (bundle / "runs" / "m").glob("fold*/best.pt")) == ["fold0", "fold1", "fold2"]

    # a fresh venv: no kit, no ttach; the rest of a Kaggle image (torch, timm, papermill...) seen through a .pth
    venv = tmp_path / "fresh"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    image = Path(tmp_path / "kaggle-image")
    image.mkdir()
    for p in Path(sysconfig.get_paths()["purelib"]).iterdir():  # everything but kit and ttach
        if not p.name.startswith(("kit", "ttach", "__editable__", "_kit")) and not p.name.endswith(".pth"):
            (image / p.name).symlink_to(p)
    Path(site, "kaggle_image.pth").write_text(str(image) + "\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KIT_ROOT": str(tmp_path / "working"), "PIP_NO_INDEX": "1"}
    env.pop("PYTHONPATH", None)
    assert subprocess.run([py, "-c", "import kit"], env=env, capture_output=True).returncode != 0  # not there yet

    (tmp_path / "working").mkdir()
    test_only = tmp_path / "input" / "comp"  # a code competition's input: test images and sample only
    (test_only / "test").mkdir(parents=True)
    for p in tiny_comp.test["path"]:
        (test_only / "test" / Path(p).name).symlink_to(p)
    (test_only / "sample_submission.csv").write_bytes(tiny_comp.sample_submission.read_bytes())
    run = subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(bundle / "wheels"),
                          "kit", "ttach"], env=env, capture_output=True, text=True, cwd=tmp_path / "working")
    assert run.returncode == 0, run.stderr
    code = (f"from kit.notebook import run_notebook; run_notebook({str(bundle / 'kaggle_infer.ipynb')!r}, "
            f"{str(tmp_path / 'working' / 'executed.ipynb')!r}, {{'bundle': {str(bundle)!r}, "
            f"'comp': {str(test_only)!r}}}, log=False)")
    run = subprocess.run([py, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path / "working")
    assert run.returncode == 0, run.stdout + run.stderr
    sub = tmp_path / "working" / "submission.csv"
    validate_submission(pd.read_csv(sub, dtype=str), tiny_comp.sample_submission)
    expected = infer_and_blend(tiny_comp, read_folds(folds_path(tiny_comp)), ["m"]).submission
    assert pd.read_csv(sub, dtype=str)["label"].tolist() == expected["label"].tolist()
    # `kit blend --blend-json` on the same bundle writes the same file
    assert main(["blend", "--blend-json", str(bundle / "blend.json"), "--runs-dir", str(bundle / "runs"),
                 "--comp", str(test_only), "--name", "cli"]) == 0
    assert (project / "submissions" / "cli.csv").read_bytes() == sub.read_bytes()
    assert json.loads((bundle / "blend.json").read_text())["config"] == BlendConfig().to_dict()
    kit_file = subprocess.run([py, "-c", "import kit; print(kit.__file__)"], env=env, capture_output=True,
                              text=True).stdout
    assert kit_file.startswith(site), kit_file  # the bundle's kit, installed in the fresh venv
    assert json.loads((bundle / "blend.json").read_text())["experiments"][0]["tta"] == "hflip"
    # packaged again into its own bundle: replaced, not refused
    assert package_for_kaggle(project / "blend.json", bundle, wheels_from=wheels) == bundle
    assert sorted(p.parent.name for p in (bundle / "runs" / "m").glob("fold*/best.pt")) == ["fold0", "fold1", "fold2"]


# --- a command deletes only what it created (issue 12 item 1) -----------------------------------------------

def fake_runs(project, exp="m", n_folds=2, name=None):
    """A blend.json over `exp` and its folds' files (the bundle copies them as they are)."""
    for k in range(n_folds):
        d = project / "runs" / exp / f"fold{k}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "best.pt").write_bytes(b"weights %d" % k)
        (d / "config.json").write_text("{}")
    spec = {"experiments": [{"name": name or exp, "tta": "none", "weight": 1.0, "n_folds": n_folds}],
            "classes": ["0", "1"], "space": "prob", "power": 2.0}
    (project / "blend.json").write_text(json.dumps(spec))
    return project / "blend.json"


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.fixture
def no_wheel_build(monkeypatch):
    """pip wheel takes a minute: these tests are about which files are written and deleted, so the wheels
    step only drops a file (test_bundle_notebook_runs_offline_in_a_fresh_venv builds real ones)."""
    def build(dest, extra, wheels_from):
        dest.mkdir(parents=True)
        (dest / "kit-0.1.0-py3-none-any.whl").write_text("wheel")

    monkeypatch.setattr(kit.package, "build_wheels", build)


@pytest.mark.parametrize("out", ["data", ".", "runs", "runs/m"])
def test_package_into_a_folder_holding_other_files_deletes_nothing(project, no_wheel_build, capsys, out):
    blend = fake_runs(project)
    (project / "data" / "demo").mkdir()
    (project / "data" / "demo" / "train.csv").write_text("image_id,label\n")
    (project / "README.md").write_text("mine")
    (project / ".git").mkdir()
    (project / ".git" / "HEAD").write_text("ref")
    before = snapshot(project)
    assert main(["package", "--blend-json", str(blend), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "already holds files and is not a kit bundle" in err and "nothing was written or deleted" in err
    assert snapshot(project) == before


def test_package_checks_every_input_before_writing(project, no_wheel_build):
    blend = fake_runs(project)
    (project / "runs" / "m" / "fold1" / "best.pt").unlink()
    with pytest.raises(KitError, match=r"fold1/best.pt is missing: the blend needs every fold of 'm'"):
        package_for_kaggle(blend, project / "bundle")
    assert not (project / "bundle").exists()
    with pytest.raises(KitError, match=r"nope.json does not exist"):
        package_for_kaggle(project / "nope.json", project / "bundle")
    (project / "bad.json").write_text('{"experiments": [{"weight": 1}]}')
    with pytest.raises(KitError, match=r"bad.json is not a blend made by `kit blend`"):
        package_for_kaggle(project / "bad.json", project / "bundle")
    assert not (project / "bundle").exists()


def test_package_refuses_an_experiment_name_that_is_a_path(project, no_wheel_build):
    fake_runs(project, "escaped")
    (project / "runs" / "escaped").rename(project / "escaped")  # beside runs/, where '../escaped' points
    blend = fake_runs(project, "m", name="../escaped")
    with pytest.raises(KitError, match=r"experiment name '../escaped' is not a plain name"):
        package_for_kaggle(blend, project / "bundle")
    assert not (project / "bundle").exists()


def test_package_replaces_its_own_bundle_and_keeps_the_rest(project, no_wheel_build):
    blend = fake_runs(project, "m", n_folds=3)
    bundle = package_for_kaggle(blend, project / "bundle")
    assert (bundle / ".kit-bundle").is_file() and (bundle / "runs" / "m" / "fold2" / "best.pt").is_file()
    (bundle / "notes.txt").write_text("mine")  # something the user added to the bundle folder
    blend = fake_runs(project, "m2", n_folds=2)
    assert package_for_kaggle(blend, project / "bundle") == bundle
    assert sorted(p.name for p in (bundle / "runs").iterdir()) == ["m2"]  # the old bundle's runs are replaced
    assert (bundle / "notes.txt").read_text() == "mine"
    assert json.loads((bundle / "blend.json").read_text())["experiments"][0]["name"] == "m2"


def test_package_into_an_empty_folder_works(project, no_wheel_build):
    (project / "empty").mkdir()
    bundle = package_for_kaggle(fake_runs(project), project / "empty")
    assert (bundle / ".kit-bundle").is_file() and (bundle / "kaggle_infer.ipynb").is_file()


def test_the_bundle_notebook_is_the_kaggle_template(project, no_wheel_build):
    """Written from notebooks/kaggle_infer.py as it is: one blend_and_submit call on the bundle's blend.json,
    not the infer notebook with its parameters patched."""
    bundle = package_for_kaggle(fake_runs(project), project / "bundle")
    written = nbformat.read(bundle / "kaggle_infer.ipynb", as_version=4)
    template = jupytext.read(kit.package.TEMPLATE)
    assert [(c.cell_type, c.source) for c in written.cells] == [(c.cell_type, c.source) for c in template.cells]
    code = "\n".join(c.source for c in written.cells if c.cell_type == "code")
    assert code.count("blend_and_submit(") == 1 and 'blend_json=f"{bundle}/blend.json"' in code
    assert "infer_and_blend" not in code and "write_submission" not in code


def test_package_refuses_a_blend_json_whose_config_is_bad_before_writing(project, no_wheel_build):
    blend = fake_runs(project)
    spec = json.loads(blend.read_text())
    blend.write_text(json.dumps({**spec, "config": {"space": "rank", "metric": "accuracy"}}))
    with pytest.raises(KitError, match="space='rank' .* metric='accuracy' reads probabilities"):
        package_for_kaggle(blend, project / "bundle")
    assert not (project / "bundle").exists()
