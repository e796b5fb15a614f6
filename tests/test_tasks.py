"""Every kind of task (issue 14): detection, multi-label folds, submissions, and each demo task
through the runner and the blend to a submission the leaderboard scorer grades."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import kit.runner
from kit import KitError
from kit.blendconfig import BlendConfig
from kit.competition import load_competition
from kit.config import TrainConfig
from kit.demo import build_demo, leaderboard_score
from kit.folds import folds_path, make_folds, write_folds
from kit.infer import blend_and_submit
from kit.submission import make_submission, validate_submission
from kit.rundir import read_config
from kit.runner import run_folds
from kit.train import fit_fold

NOTEBOOKS = Path(kit.runner.__file__).resolve().parents[1] / "notebooks"  # the kit under test's

TINY = {"model": "test_resnet", "img_size": 16, "epochs": 1, "batch_size": 16, "num_workers": 0, "tta": "auto"}


def write_comp(root, train: pd.DataFrame, sample: pd.DataFrame):
    """A competition folder: an image per train and test id, the two CSVs."""
    for part, ids in (("train", train.iloc[:, 0]), ("test", sample.iloc[:, 0])):
        (root / part).mkdir(parents=True, exist_ok=True)
        for i in ids:
            Image.new("RGB", (4, 4)).save(root / part / f"{i}.png")
    train.to_csv(root / "train.csv", index=False)
    sample.to_csv(root / "sample_submission.csv", index=False)


# ---- detection

def test_each_layout_is_detected_and_task_overrides(project):
    root = project / "data"
    ids = [str(i) for i in range(8)]
    sample = pd.DataFrame({"id": ["t0", "t1"], "label": ["0", "0"]})
    write_comp(root / "multi", pd.DataFrame({"id": ids, "label": list("abcabcab")}), sample)
    write_comp(root / "bin", pd.DataFrame({"id": ids, "label": list("01010101")}), sample)
    write_comp(root / "grade", pd.DataFrame({"id": ids, "label": list("01234012")}), sample)
    write_comp(root / "tags", pd.DataFrame({"id": ids, "tags": ["a b", "a", "b c", "c", "a c", "b", "a b c", "c"]}),
               pd.DataFrame({"id": ["t0", "t1"], "tags": ["a", "a"]}))
    cols = pd.DataFrame({"image_id": ids, "x": list("10101010"), "y": list("11001100"), "patient_id": list("pqpqpqpq")})
    write_comp(root / "cols", cols, pd.DataFrame({"image_id": ["t0", "t1"], "x": [0.5, 0.5], "y": [0.5, 0.5]}))

    assert load_competition("multi").task == "multiclass"
    assert load_competition("bin").task == "binary"
    assert load_competition("grade").task == "multiclass"  # integers without an ordinal metric are classes
    assert load_competition("grade", metric="qwk").task == "ordinal"
    tags = load_competition("tags")
    assert tags.task == "multilabel" and tags.classes == ["a", "b", "c"]
    assert tags.targets[[0, 6]].tolist() == [[1, 1, 0], [1, 1, 1]]
    c = load_competition("cols")
    assert c.task == "multilabel" and c.classes == ["x", "y"] and "group" in c.train
    assert c.targets.tolist()[:3] == [[1, 1], [0, 1], [1, 0]]
    assert load_competition("tags", task="multiclass").task == "multiclass"  # 'a b' is then a class of its own
    assert "a b" in load_competition("tags", task="multiclass").classes
    with pytest.raises(KitError, match="task='binary' but .* 3 classes"):
        load_competition("multi", task="binary")
    with pytest.raises(KitError, match="task='ordinal' needs integer grades"):
        load_competition("multi", task="ordinal")
    with pytest.raises(KitError, match="task='nope'"):
        load_competition("multi", task="nope")


# ---- multi-label folds

def test_iterative_folds_keep_each_labels_share(project):
    rng = np.random.default_rng(0)
    n, k = 300, 6
    rates = np.array([0.5, 0.3, 0.2, 0.1, 0.05, 0.03])
    y = (rng.random((n, k)) < rates).astype(int)
    ids = [f"i{i}" for i in range(n)]
    names = list("abcdef")
    tags = [" ".join(c for c, on in zip(names, row) if on) or "a" for row in y]
    write_comp(project / "data" / "ml", pd.DataFrame({"id": ids, "tags": tags}),
               pd.DataFrame({"id": ["t0"], "tags": ["a"]}))
    comp = load_competition("ml")
    folds = make_folds(comp, 5, seed=1)
    fold = folds["fold"].to_numpy()
    assert sorted(np.unique(fold)) == list(range(5))
    expected = comp.targets.sum(0) / 5
    for f in range(5):
        positives = comp.targets[fold == f].sum(0)
        # iterative stratification: each label's positives per fold within 2 of a fifth of them (random folds
        # are off by ~6 for the frequent labels)
        assert np.abs(positives - expected).max() <= 2, (f, positives, expected)


# ---- submissions

def ml_comp(project, sample: pd.DataFrame):
    ids = [str(i) for i in range(6)]
    write_comp(project / "data" / "ml", pd.DataFrame({"id": ids, "tags": ["a b", "a", "b c", "c", "a c", "b"]}),
               sample)
    return load_competition("ml")


def test_submission_writer_emits_a_label_list_and_validation_catches_a_wrong_one(project):
    comp = ml_comp(project, pd.DataFrame({"id": ["t0", "t1", "t2"], "tags": ["a", "a", "a"]}))
    probs = np.array([[0.9, 0.7, 0.1], [0.1, 0.2, 0.3], [0.2, 0.1, 0.6]])
    sub = make_submission(comp, probs)
    assert sub["tags"].tolist() == ["a b", "c", "c"]  # row 2 has no class above 0.5: its most likely one
    validate_submission(sub, comp.sample_submission, comp.classes, comp.task)
    bad = sub.assign(tags=["a b", "c", "a z"])
    with pytest.raises(KitError, match=r"column 'tags' holds 1 label\(s\) that are not classes, e.g. \['z'\]"):
        validate_submission(bad, comp.sample_submission, comp.classes, comp.task)


def test_submission_writer_emits_per_class_columns(project):
    comp = ml_comp(project, pd.DataFrame({"id": ["t0", "t1"], "c": [0.5, 0.5], "a": [0.5, 0.5], "b": [0.5, 0.5]}))
    probs = np.array([[0.9, 0.7, 0.1], [0.1, 0.2, 0.3]])
    sub = make_submission(comp, probs)
    assert list(sub.columns) == ["id", "c", "a", "b"]
    assert sub["c"].tolist() == [0.1, 0.3] and sub["a"].tolist() == [0.9, 0.1]  # not renormalized
    validate_submission(sub, comp.sample_submission, comp.classes, comp.task)
    with pytest.raises(KitError, match="non-finite"):
        validate_submission(sub.assign(a=[np.inf, 0.1]), comp.sample_submission, comp.classes, comp.task)


# ---- each demo task through the runner and the blend

@pytest.mark.slow
@pytest.mark.parametrize("task", ["multilabel", "binary", "ordinal"])
def test_demo_task_end_to_end_through_the_runner(project, task):
    """Each task as a competitor runs it: the train notebook per fold through the runner (papermill, a real
    kernel), then the blend to a submission in the sample's format that the leaderboard scorer grades."""
    build_demo("data", name=task, n=120, size=16, task=task)
    metric = {"multilabel": "f_beta:1", "binary": "roc_auc", "ordinal": "qwk"}[task]
    comp = load_competition(task, metric=metric)
    assert comp.task == task
    write_folds(make_folds(comp, 2), folds_path(comp))
    summary = run_folds("e", [0, 1], {"comp": task, "metric": metric, **TINY}, NOTEBOOKS / "train_fold.py")
    assert summary["status"].tolist() == ["done", "done"], summary.to_dict("records")
    assert read_config(project / "runs" / task / "e" / "fold1")["task_resolved"] == task
    done = blend_and_submit(task, ["e"], BlendConfig(metric=metric), name=task)
    sub = pd.read_csv(done.path, dtype=str, keep_default_na=False)
    validate_submission(sub, comp.sample_submission, comp.classes, comp.task)
    score = leaderboard_score(done.path, "data", task)
    assert np.isfinite(score)
    if task == "multilabel":
        t = np.array(done.blend["thresholds"])  # fitted on the blended OOF, applied to the test predictions
        assert t.shape == (10,) and "thresholds_oof_score" in done.blend
        oof = pd.read_csv(project / "runs" / task / "e" / "fold0" / "oof.csv", dtype={"target": str})
        assert oof["target"].str.startswith("[").all()
        assert not np.allclose(oof[[str(d) for d in range(10)]].sum(axis=1), 1)  # sigmoids: rows do not sum to one
        assert all(set(cell.split()) <= {str(d) for d in range(10)} for cell in sub["label"])
    assert done.blend["task"] == task  # the training's task, not a multiclass detected afresh
    if task == "ordinal":
        cuts = done.blend["cut_points"]
        assert len(cuts) in (0, 9) and cuts == sorted(cuts) and "cut_points_oof_score" in done.blend  # 0: argmax won
    # the saved blend applied alone (what the Kaggle notebook does) writes the same submission
    again = blend_and_submit(task, blend_json=done.blend_path, name=f"{task}-again")
    pd.testing.assert_frame_equal(pd.read_csv(again.path, dtype=str), pd.read_csv(done.path, dtype=str))
    if task == "binary":
        p = sub["label"].astype(float)
        assert p.between(0, 1).all() and p.nunique() > 2  # a probability per row, not labels


def test_a_metric_that_does_not_fit_the_task_stops_before_training(project):
    build_demo("data", name="ml", n=60, size=16, task="multilabel")
    comp = load_competition("ml")
    write_folds(make_folds(comp, 2), folds_path(comp))
    with pytest.raises(KitError, match="metric 'accuracy' scores single-label targets but y is multi-label"):
        fit_fold(TrainConfig(comp="ml", exp="e", metric="accuracy", **TINY))
    assert not (project / "runs" / "ml" / "e" / "fold0" / "history.csv").exists()
