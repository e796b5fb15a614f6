"""Kaggle offline: the bundle's notebook runs in a fresh venv that installs kit with --no-index."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest

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
    code = (f"from kit.runner import run_notebook; run_notebook({str(bundle / 'kaggle_infer.ipynb')!r}, "
            f"{str(tmp_path / 'working' / 'executed.ipynb')!r}, {{'bundle': {str(bundle)!r}, "
            f"'comp': {str(test_only)!r}}}, log=False)")
    run = subprocess.run([py, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path / "working")
    assert run.returncode == 0, run.stdout + run.stderr
    sub = tmp_path / "working" / "submission.csv"
    validate_submission(pd.read_csv(sub, dtype=str), tiny_comp.sample_submission)
    expected = infer_and_blend(tiny_comp, read_folds(folds_path(tiny_comp)), ["m"]).submission
    assert pd.read_csv(sub)["label"].tolist() == expected["label"].tolist()
    kit_file = subprocess.run([py, "-c", "import kit; print(kit.__file__)"], env=env, capture_output=True,
                              text=True).stdout
    assert kit_file.startswith(site), kit_file  # the bundle's kit, installed in the fresh venv
    assert json.loads((bundle / "blend.json").read_text())["experiments"][0]["tta"] == "hflip"
