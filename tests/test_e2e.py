"""The whole day on a tiny slice: all three notebooks through the runner (papermill, real kernels)."""

import re
from pathlib import Path

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


@pytest.mark.slow
def test_the_day_on_a_tiny_slice(project):
    from kit.demo import build_demo, leaderboard_score

    build_demo("data", n=400, size=16)
    eda = run_notebook(NOTEBOOKS / "eda.py", project / "runs" / "eda.ipynb", {"n_folds": 2, "img_size": 16})
    assert eda.is_file() and (project / "data" / "demo" / "folds.csv").is_file()

    for exp, model in (("a", "test_efficientnet"), ("b", "test_resnet")):
        summary = run_folds(exp, [0, 1], {**TINY, "model": model}, NOTEBOOKS / "train_fold.py")
        assert summary["status"].tolist() == ["done", "done"], summary.to_dict("records")
        for k in (0, 1):
            d = project / "runs" / exp / f"fold{k}"
            assert {"best.pt", "history.csv", "oof.csv", "config.json", "train_fold.ipynb"} <= {
                p.name for p in d.iterdir()}
            torch.load(d / "best.pt", weights_only=True)
    # finished folds are skipped on rerun
    assert run_folds("a", [0, 1], {**TINY, "model": "test_efficientnet"},
                     NOTEBOOKS / "train_fold.py")["status"].tolist() == ["skipped", "skipped"]

    run_notebook(NOTEBOOKS / "infer_ensemble.py", project / "runs" / "infer.ipynb",
                 {"exps": ["a", "b"], "name": "tiny"})
    sub = project / "submissions" / "tiny.csv"
    comp = load_competition("demo")
    validate_submission(pd.read_csv(sub, dtype=str), comp.sample_submission)
    assert (project / "submissions" / "tiny.blend.json").is_file()
    # 10 classes: chance is 0.1; a submission with shuffled rows or columns scores about that
    assert leaderboard_score(sub) > 0.7
    assert main(["score", str(sub)]) == 0


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
