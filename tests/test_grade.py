"""kit score --solution (kit.grade): any labels file graded as a leaderboard would, its columns detected as for
train.csv."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

from kit import KitError
from kit.cli import main
from kit.grade import grade


def write(path, **columns):
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


def test_a_species_competition_is_graded_on_its_own_columns(tmp_path):
    """Not the demo: ids 'image_name', labels 'species' (strings, one class never predicted, one never true)."""
    rng = np.random.default_rng(0)
    species = np.array(["Amanita muscaria", "Boletus edulis", "Cantharellus", "Morchella"])
    truth = species[rng.integers(0, 3, 60)]  # Morchella is never the truth
    pred = np.where(rng.random(60) < 0.7, truth, species[rng.integers(0, 4, 60)])
    ids = [f"img_{i:03d}" for i in range(60)]
    solution = write(tmp_path / "labels.csv", image_name=ids, species=truth)
    order = rng.permutation(60)  # the submission's rows in another order
    sub = write(tmp_path / "sub.csv", image_name=np.array(ids)[order], species=pred[order])
    assert grade(sub, solution) == ("accuracy", pytest.approx(accuracy_score(truth, pred)))
    assert grade(sub, solution, "macro_f1")[1] == pytest.approx(f1_score(truth, pred, average="macro",
                                                                         labels=sorted(set(truth) | set(pred))))


def test_a_binary_probability_submission_is_graded_by_auc(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 80)
    p = np.clip(y * 0.3 + rng.random(80) * 0.7, 0, 1)
    solution = write(tmp_path / "truth.csv", image_id=range(80), target=y)
    sub = write(tmp_path / "sub.csv", image_id=range(80), target=p)
    assert grade(sub, solution) == ("roc_auc", pytest.approx(roc_auc_score(y, p)))
    bad = write(tmp_path / "bad.csv", image_id=range(80), target=["x"] + list(p[1:]))
    with pytest.raises(KitError, match=r"bad.csv: columns \['target'\] need one probability per row between 0 and 1"):
        grade(bad, solution)


def test_grades_and_label_lists_and_class_columns(tmp_path):
    rng = np.random.default_rng(2)
    grades = rng.integers(0, 5, 100)
    guess = np.clip(grades + rng.integers(-1, 2, 100), 0, 4)
    solution = write(tmp_path / "g.csv", id=range(100), diagnosis=grades)
    sub = write(tmp_path / "gs.csv", id=range(100), diagnosis=guess)
    assert grade(sub, solution, "qwk")[1] == pytest.approx(cohen_kappa_score(grades, guess, weights="quadratic"))
    truth = ["cat dog", "dog", "cat", "bird cat", "", "bird"]
    said = ["cat", "dog", "cat", "bird", "dog", "bird"]
    solution = write(tmp_path / "ml.csv", id=range(6), labels=truth)
    sub = write(tmp_path / "mls.csv", id=range(6), labels=said)
    metric, value = grade(sub, solution)
    matrix = lambda cells: np.array([[c in cell.split() for c in ("bird", "cat", "dog")] for cell in cells])  # noqa
    assert metric == "f_beta:1" and value == pytest.approx(
        f1_score(matrix(truth), matrix(said), average="samples", zero_division=0))  # Kaggle's mean F1 of rows
    probs = rng.dirichlet(np.ones(3), 30)
    classes = np.array(["a", "b", "c"])
    solution = write(tmp_path / "p.csv", id=range(30), label=classes[rng.integers(0, 3, 30)])
    sub = write(tmp_path / "ps.csv", id=range(30), a=probs[:, 0], b=probs[:, 1], c=probs[:, 2])
    y = pd.read_csv(solution)["label"].map({"a": 0, "b": 1, "c": 2})
    assert grade(sub, solution, "accuracy")[1] == pytest.approx(accuracy_score(y, probs.argmax(1)))


def test_a_missing_id_is_refused_naming_it(tmp_path):
    solution = write(tmp_path / "truth.csv", id=["a", "b", "c"], label=["x", "y", "x"])
    sub = write(tmp_path / "sub.csv", id=["a", "c"], label=["x", "x"])
    with pytest.raises(KitError, match=r"sub.csv lacks 1 test id\(s\) of .*truth.csv, e.g. \['b'\]"):
        grade(sub, solution)


def test_kit_score_solution_prints_the_metric_and_the_score(tmp_path, capsys):
    solution = write(tmp_path / "truth.csv", file_name=["a.jpg", "b.jpg", "c.jpg", "d.jpg"], class_id=[1, 2, 2, 3])
    sub = write(tmp_path / "sub.csv", file_name=["d.jpg", "c.jpg", "b.jpg", "a.jpg"], class_id=[3, 2, 1, 1])
    assert main(["score", str(sub), "--solution", str(solution)]) == 0
    assert capsys.readouterr().out.strip() == f"accuracy: 0.7500 (against {solution})"
    assert main(["score", str(sub), "--solution", str(tmp_path / "nope.csv")]) == 2
    assert f"kit score: error: {tmp_path / 'nope.csv'} does not exist" in capsys.readouterr().err


def test_a_class_column_no_held_out_row_holds_still_takes_probability(tmp_path):
    """Rows a, b, c hold x, y, w; the submission also has a column z: row a's argmax is z (wrong), not x."""
    solution = write(tmp_path / "t.csv", id=["a", "b", "c"], label=["x", "y", "w"])
    sub = write(tmp_path / "s.csv", id=["a", "b", "c"], w=[0.01, 0.1, 0.7], x=[0.09, 0.1, 0.1],
                y=[0.05, 0.7, 0.1], z=[0.85, 0.1, 0.1])
    assert grade(sub, solution, "accuracy")[1] == pytest.approx(2 / 3)


def test_duplicate_ids_are_refused_in_either_file(tmp_path):
    solution = write(tmp_path / "t.csv", id=["a", "b", "c"], label=["x", "x", "y"])
    sub = write(tmp_path / "s.csv", id=["a", "a", "a", "b", "c"], label=["x", "x", "x", "y", "y"])
    with pytest.raises(KitError, match=r"s.csv: 1 id\(s\) appear more than once, e.g. \['a'\]"):
        grade(sub, solution)
    twice = write(tmp_path / "t2.csv", id=["a", "a"], label=["x", "y"])
    with pytest.raises(KitError, match=r"t2.csv: 1 id\(s\) appear more than once"):
        grade(write(tmp_path / "s2.csv", id=["a"], label=["x"]), twice)


def test_qwk_counts_grade_distances_by_value_even_when_a_grade_is_missing(tmp_path):
    truth, pred = [0, 1, 3, 4, 4, 0], [1, 1, 4, 3, 0, 0]
    solution = write(tmp_path / "t.csv", id=range(6), grade=truth)
    sub = write(tmp_path / "s.csv", id=range(6), grade=[f"0{g}" for g in pred])  # spelled '03': the same grade
    expected = cohen_kappa_score(truth, pred, weights="quadratic", labels=[0, 1, 2, 3, 4])
    assert grade(sub, solution, "qwk")[1] == pytest.approx(expected)  # grade 2 held by no row still counts
    assert expected != pytest.approx(cohen_kappa_score(
        [{0: 0, 1: 1, 3: 2, 4: 3}[g] for g in truth], [{0: 0, 1: 1, 3: 2, 4: 3}[g] for g in pred], weights="quadratic"))


def test_a_held_out_slice_with_two_classes_still_takes_labels_of_a_third(tmp_path, capsys):
    solution = write(tmp_path / "t.csv", id=range(4), species=["oak", "elm", "oak", "elm"])
    sub = write(tmp_path / "s.csv", id=range(4), species=["oak", "elm", "ash", "oak"])
    assert grade(sub, solution, "accuracy")[1] == pytest.approx(0.5)
    assert main(["score", str(sub), "--solution", str(solution), "--metric", "accuracy", "--task", "multiclass"]) == 0
    assert capsys.readouterr().out.startswith("accuracy: 0.5000")
