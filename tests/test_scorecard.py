"""The blend's OOF per class and per decision (kit.scorecard): a multi-label task's per-class thresholds and
F-beta, an ordinal task's cut points and QWK, the line on the blend's fitted decision."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score, fbeta_score, roc_auc_score

from kit import KitError
from kit.scorecard import (class_thresholds, cut_points_table, decision_summary, f_beta_of, grade_predictions,
                           ordinal_scores)

GRADES = ["0", "1", "2"]


def test_class_thresholds_score_each_class_at_half_and_at_its_threshold_as_sklearn_does():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 3)) < [0.5, 0.2, 0.0]).astype(int)  # the last class on no image
    p = np.clip(0.3 * y + rng.random((200, 3)) * 0.7, 0, 1)
    t = [0.3, 0.6, 0.5]
    table = class_thresholds(y, p, ["a", "b", "c"], t, "f_beta:1")
    assert table.columns.tolist() == ["class", "threshold", "f1 at 0.5", "f1 at threshold", "auc", "support"]
    assert table["class"].tolist() == ["a", "b", "c"] and table["threshold"].tolist() == t
    for j in range(3):
        row = table.iloc[j]
        assert row["f1 at 0.5"] == pytest.approx(f1_score(y[:, j], p[:, j] > 0.5, zero_division=0))
        assert row["f1 at threshold"] == pytest.approx(f1_score(y[:, j], p[:, j] > t[j], zero_division=0))
        assert row["support"] == y[:, j].sum()
    assert table["auc"].iloc[0] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0])) and np.isnan(table["auc"].iloc[2])
    assert table["f1 at threshold"].iloc[0] != table["f1 at 0.5"].iloc[0]  # the threshold matters here
    f2 = class_thresholds(y, p, ["a", "b", "c"], t, "f_beta:2")
    assert f2["f2 at threshold"].iloc[1] == pytest.approx(fbeta_score(y[:, 1], p[:, 1] > 0.6, beta=2))


def test_a_class_is_predicted_above_its_threshold_not_at_it():
    y, p = np.array([[1], [0], [1]]), np.array([[0.3], [0.3], [0.4]])
    table = class_thresholds(y, p, ["a"], [0.3])
    assert table["f1 at threshold"].iloc[0] == pytest.approx(2 / 3)  # only 0.4 predicted: precision 1, recall 1/2
    assert (class_thresholds(y, p, ["a"])["threshold"] == 0.5).all()  # no thresholds in the blend: 0.5
    with pytest.raises(KitError, match="multi-label"):
        class_thresholds(y[:, 0], p[:, 0], ["a"])
    with pytest.raises(KitError, match="2 thresholds for 1 classes"):
        class_thresholds(y, p, ["a"], [0.3, 0.4])


def test_f_beta_of_a_metric():
    assert (f_beta_of("f_beta:2"), f_beta_of("f_beta:0.5"), f_beta_of("mean_col_auc")) == (2.0, 0.5, 1.0)


def test_grade_predictions_cut_the_expected_grade_between_the_cut_points():
    p = np.array([[0.5, 0.0, 0.5],  # expected 1.0, argmax 0
                  [0.7, 0.2, 0.1],  # expected 0.4
                  [0.1, 0.4, 0.5]])  # expected 1.4, argmax 2
    assert grade_predictions(p, GRADES).tolist() == [0, 0, 2]
    assert grade_predictions(p, GRADES, [0.5, 1.2]).tolist() == [1, 0, 2]
    assert grade_predictions(p, GRADES, [0.3, 1.5]).tolist() == [1, 1, 1]
    with pytest.raises(KitError, match="expected 2 increasing"):
        grade_predictions(p, GRADES, [1.5, 0.5])
    with pytest.raises(KitError, match="expected 2 increasing"):
        grade_predictions(p, GRADES, [0.5])


def test_ordinal_scores_are_sklearns_qwk_of_each_decision():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 300)
    p = np.abs(np.eye(5)[np.clip(y + rng.integers(-1, 2, 300), 0, 4)] + rng.random((300, 5)) * 0.8)
    p /= p.sum(1, keepdims=True)
    cuts = [0.8, 1.7, 2.4, 3.1]
    table = ordinal_scores(y, p, [str(g) for g in range(5)], cuts, "accuracy").set_index("decision")
    expected = p @ np.arange(5)

    def qwk(pred):
        return cohen_kappa_score(y, pred, weights="quadratic", labels=np.arange(5))

    assert table.loc["argmax", "qwk"] == pytest.approx(qwk(p.argmax(1)))
    assert table.loc["expected grade, rounded", "qwk"] == pytest.approx(qwk(np.clip(np.round(expected), 0, 4)))
    assert table.loc["cut points fitted on OOF", "qwk"] == pytest.approx(qwk(np.searchsorted(cuts, expected)))
    assert table.loc["argmax", "accuracy"] == pytest.approx(np.mean(p.argmax(1) == y))
    assert len({*table["qwk"]}) == 3  # three decisions, three scores
    assert ordinal_scores(y, p, [str(g) for g in range(5)])["decision"].tolist() == ["argmax",
                                                                                    "expected grade, rounded"]


def test_cut_points_table_sets_each_cut_beside_plain_roundings():
    table = cut_points_table([0.4, 1.8], ["0", "1", "3"])
    assert table["between"].tolist() == ["0 | 1", "1 | 3"]
    assert table["midpoint"].tolist() == [0.5, 2.0] and table["moved"].tolist() == pytest.approx([-0.1, -0.2])
    with pytest.raises(KitError, match="1 cut points for 3 grades"):
        cut_points_table([0.4], ["0", "1", "3"])


def test_decision_summary_names_the_fitted_decision_and_its_scores():
    blend = {"thresholds": [0.3], "thresholds_oof_score": 0.81234, "oof_score": 0.6, "honest_score": 0.7,
             "honest_std": 0.05}
    line = decision_summary(blend, "f_beta:1")
    assert "per-class thresholds" in line and "0.8123" in line and "without them 0.6000" in line
    assert "0.7000 ± 0.0500" in line
    line = decision_summary({"cut_points": [0.5, 1.5], "cut_points_oof_score": 0.9, "honest_score": 0.85,
                             "honest_std": 0.01}, "qwk")
    assert line.startswith("cut points") and "0.9000" in line and "0.8500 ± 0.0100" in line
    line = decision_summary({"cut_points": [], "oof_score": 0.97, "honest_score": 0.96, "honest_std": 0.01}, "qwk")
    assert line.startswith("no cut points beat the argmax") and "0.9700" in line
    assert decision_summary({"oof_score": 0.9}, "accuracy") == ""
    assert decision_summary(pd.Series({"thresholds": None}).to_dict(), "f_beta:1") == ""


def test_a_blend_whose_argmax_won_is_shown_as_the_argmax():
    p = np.array([[0.7, 0.0, 0.3], [0.1, 0.8, 0.1], [0.0, 0.2, 0.8]])
    assert grade_predictions(p, GRADES, []).tolist() == [0, 1, 2]
    assert ordinal_scores(np.array([0, 1, 2]), p, GRADES, [])["decision"].tolist() == ["argmax",
                                                                                       "expected grade, rounded"]
