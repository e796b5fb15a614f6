"""The whole day on a tiny slice: all three notebooks through the runner (papermill, real kernels)."""

import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch

import kit.runner
from kit.cli import main
from kit.competition import load_competition
from kit.notebook import run_notebook
from kit.runner import run_folds
from kit.submission import validate_submission

NOTEBOOKS = Path(kit.runner.__file__).resolve().parents[1] / "notebooks"  # the kit under test's
# enough to learn: 320 digits, 10 epochs at 16 px reach ~0.9 OOF in about 2 s a fold on CPU
TINY = {"img_size": 16, "epochs": 10, "batch_size": 32}
# what a user did not cause and should not see: in a terminal, a run.log or a notebook
NOISE = ("without encryption", "IProgress not found", "TqdmWarning")


def outputs(path: Path) -> list:
    return [o for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code" for o in c.outputs]


def count(path: Path, mime: str) -> int:
    """How many outputs of an executed notebook hold `mime`: image/png for a figure, text/html for a table."""
    return sum(mime in o.get("data", {}) for o in outputs(path))


def shown(path: Path) -> list:
    """Per code cell, the figures and tables it shows (papermill's injected parameters cell left out)."""
    cells = [c for c in nbformat.read(path, as_version=4).cells
             if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
    return [sorted(m for o in c.outputs for m in o.get("data", {}) if m in ("image/png", "text/html")) for c in cells]


def noise(path: Path) -> list[str]:
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs(path))
    return [n for n in NOISE if n in text]


@pytest.mark.slow
def test_the_day_on_a_tiny_slice(project, monkeypatch, capfd):
    """With MPLBACKEND=Agg in the environment, as `make test` and `make demo` set it: every figure is kept."""
    import papermill

    from kit.demo import build_demo, leaderboard_score

    monkeypatch.setenv("MPLBACKEND", "Agg")
    build_demo("data", n=400, size=16)
    eda = run_notebook(NOTEBOOKS / "eda.py", project / "runs" / "eda.ipynb", {"n_folds": 2, "img_size": 16})
    assert eda.is_file() and (project / "data" / "demo" / "folds.csv").is_file()
    # class balance, image sizes, samples per class, augmentation preview; class counts, modes, sizes, folds
    assert count(eda, "image/png") == 4 and count(eda, "text/html") >= 3 and noise(eda) == []

    for exp, model in (("a", "test_efficientnet"), ("b", "test_resnet")):
        summary = run_folds(exp, [0, 1], {**TINY, "model": model}, NOTEBOOKS / "train_fold.py")
        assert summary["status"].tolist() == ["done", "done"], summary.to_dict("records")
        for k in (0, 1):
            d = project / "runs" / "demo" / exp / f"fold{k}"
            assert {"best.pt", "history.csv", "oof.csv", "config.json", "train_fold.ipynb"} <= {
                p.name for p in d.iterdir()}
            torch.load(d / "best.pt", weights_only=True)
            assert count(d / "train_fold.ipynb", "image/png") == 1 and noise(d / "train_fold.ipynb") == []  # curves
            log = (d / "run.log").read_text()
            assert [n for n in NOISE if n in log] == [] and len(re.findall(r"^epoch \d+/10 ", log, re.M)) == 10
    # finished folds are skipped on rerun
    assert run_folds("a", [0, 1], {**TINY, "model": "test_efficientnet"},
                     NOTEBOOKS / "train_fold.py")["status"].tolist() == ["skipped", "skipped"]

    infer = run_notebook(NOTEBOOKS / "infer_ensemble.py", project / "runs" / "infer.ipynb",
                         {"exps": ["a", "b"], "name": "tiny"})
    # blend weights, confusion matrix, the surest wrong OOF predictions, their Grad-CAM maps
    assert count(infer, "image/png") == 4 and noise(infer) == []
    # TTA per experiment, scores, per-class accuracy, the wrong predictions, the board, differing parameters
    assert count(infer, "text/html") >= 6
    assert [n for n in NOISE if n in capfd.readouterr().err] == []  # the kernels' own terminal
    sub = project / "submissions" / "tiny.csv"
    comp = load_competition("demo")
    validate_submission(pd.read_csv(sub, dtype=str), comp.sample_submission)
    assert (project / "submissions" / "tiny.blend.json").is_file()
    # 10 classes: chance is 0.1; a submission with shuffled rows or columns scores about that
    assert leaderboard_score(sub) > 0.7
    assert main(["score", str(sub)]) == 0
    # the paired .ipynb by plain papermill (no kit runner, no kernel or language given; its kernel is not kit's):
    # the same figures and tables, for the notebook names its kernel and draws inline itself
    plain = project / "runs" / "plain.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / "train_fold.ipynb"), str(plain), progress_bar=False,
                               parameters={**TINY, "epochs": 1, "model": "test_resnet", "exp": "plain"})
    assert shown(plain) == shown(project / "runs" / "demo" / "b" / "fold0" / "train_fold.ipynb") and noise(plain) == []
    assert count(plain, "image/png") == 1


@pytest.mark.slow
def test_failed_fold_gives_nonzero_exit_and_a_summary(project, capsys):
    from kit.demo import build_demo

    build_demo("data", n=60, size=16)
    assert main(["folds", "--n-folds", "2"]) == 0
    # a broken image is found only inside the fold (a bad parameter is refused before any fold starts)
    Path(load_competition("demo").train["path"].iloc[0]).write_bytes(b"not an image")
    code = main(["run-folds", "--exp", "bad", "--folds", "0", "--notebook", str(NOTEBOOKS / "train_fold.py"),
                 "--model", "test_resnet", "--img-size", "16", "--epochs", "1"])
    out, err = capsys.readouterr()
    assert code == 1
    assert re.search(r"bad/fold0 +failed", out)
    assert "1 image(s) cannot be read" in err and "train_fold.ipynb" in err
