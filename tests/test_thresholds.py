"""Decisions fitted on OOF (kit.thresholds): multi-label per-class thresholds and ordinal cut points, and the
honest score that fits them on the other folds only."""

import numpy as np
import pytest

from kit import KitError
from kit.blendconfig import BlendConfig
from kit.ensemble import honest_blend_score
from kit.thresholds import apply_thresholds, fit_thresholds


# ---- thresholds

def test_thresholds_fitted_on_oof_beat_half_and_the_honest_score_holds_out():
    rng = np.random.default_rng(0)
    n = 400
    y = (rng.random((n, 3)) < [0.5, 0.2, 0.1]).astype(int)
    # an under-confident model: positives score ~0.35, negatives ~0.1, so 0.5 misses most positives
    p = np.clip(np.where(y == 1, 0.35, 0.1) + rng.normal(0, 0.06, y.shape), 0.001, 0.999)
    from kit.metrics import metric_value

    t = fit_thresholds(y, p, "f_beta:1")
    at_half = metric_value("f_beta:1", y, p)
    fitted = metric_value("f_beta:1", y, apply_thresholds(p, t))
    assert fitted > at_half + 0.2 and (t < 0.5).all()
    # monotone per column: a ranking metric is unchanged
    assert metric_value("mean_col_auc", y, apply_thresholds(p, t)) == pytest.approx(metric_value("mean_col_auc", y, p))
    fold = np.arange(n) % 4
    honest, _ = honest_blend_score([p], y, fold, BlendConfig(metric="f_beta:1"), "thresholds")
    assert at_half < honest <= fitted + 1e-9
    # the held-out rows are not seen by their thresholds: each fit sees only the other folds' rows
    seen = []
    import kit.thresholds as th

    real = th.fit_thresholds
    try:
        th.fit_thresholds = lambda yy, pp, m: seen.append(len(yy)) or real(yy, pp, m)
        honest_blend_score([p], y, fold, BlendConfig(metric="f_beta:1"), "thresholds")
    finally:
        th.fit_thresholds = real
    assert seen == [300] * 4
    # without the nested decision the held-out folds are cut at 0.5: the honest score drops to 0.5's
    plain, _ = honest_blend_score([p], y, fold, BlendConfig(metric="f_beta:1"))
    assert plain < at_half + 0.05 < honest


# ---- ordinal cut points

def ordinal_synthetic(n=600, k=5, seed=0):
    """A softmax that knows the grade's neighbourhood but is biased one grade low at the top: the argmax and
    plain rounding of the expected grade lose QWK that moved cut points win back."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centre = y - 0.8 * (y >= 3) + rng.normal(0, 0.5, n)
    logits = -((np.arange(k)[None, :] - centre[:, None]) ** 2)
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True)


def test_cut_points_fitted_on_oof_beat_the_argmax_and_the_honest_score_holds_them_out():
    from kit.metrics import metric_value
    from kit.thresholds import apply_cut_points, decision_kind, fit_cut_points

    y, p = ordinal_synthetic()
    grades = np.arange(5.0)
    cuts = fit_cut_points(y, p, grades, "qwk")
    assert (np.diff(cuts) > 0).all() and cuts[0] > grades[0] and cuts[-1] < grades[-1]
    decided = apply_cut_points(p, cuts, grades)
    assert decided.shape == p.shape and (decided.sum(1) == 1).all()  # one grade per row
    argmax, fitted = metric_value("qwk", y, p), metric_value("qwk", y, decided)
    rounded = metric_value("qwk", y, apply_cut_points(p, (grades[:-1] + grades[1:]) / 2, grades))
    assert fitted > max(argmax, rounded) + 0.01
    assert cuts[-1] < 3.5  # the top grade is predicted low: its cut moved down
    # nested: each held-out fold is cut by points fitted on the other folds only
    fold = np.arange(len(y)) % 4
    honest, _ = honest_blend_score([p], y, fold, BlendConfig(metric="qwk"), "cut_points", [str(g) for g in range(5)])
    assert argmax < honest <= fitted + 1e-9
    assert decision_kind("ordinal", "qwk") == "cut_points" and decision_kind("multiclass", "qwk") == ""
    assert decision_kind("ordinal", "log_loss") == "" and decision_kind("multilabel", "f_beta:2") == "thresholds"


def test_cut_points_use_the_grades_numeric_values():
    from kit.thresholds import apply_cut_points, grade_values

    grades = grade_values(["1", "2", "4"])  # grade 3 never occurs: 4 is two steps from 2
    p = np.array([[0.5, 0.0, 0.5]])  # expected grade 2.5: between 2 and 4, not the index 1.0
    assert apply_cut_points(p, [1.5, 3.0], grades).argmax(1).tolist() == [1]
    assert apply_cut_points(p, [1.5, 2.4], grades).argmax(1).tolist() == [2]
    with pytest.raises(KitError, match="numeric grades"):
        grade_values(["a", "b"])


def test_cut_points_give_way_to_the_argmax_where_it_scores_higher():
    """A confident model torn between distant grades: its expected grade lands between them, on a grade it
    never meant, so no cuts beat the argmax; the decision is then no cut points, and applying it is the argmax."""
    from kit.metrics import metric_value
    from kit.thresholds import apply_decision, fit_decision

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    p = np.full((400, 5), 0.001)
    p[np.arange(400), y] = 0.7
    p[np.arange(400), (y + 3) % 5] = 0.3  # a distant second guess drags the expected grade off
    p /= p.sum(1, keepdims=True)
    classes = [str(g) for g in range(5)]
    assert fit_decision("cut_points", y, p, "qwk", classes) == []
    np.testing.assert_array_equal(apply_decision("cut_points", p, [], classes), p)
    honest, _ = honest_blend_score([p], y, np.arange(400) % 4, BlendConfig(metric="qwk"), "cut_points", classes)
    assert honest == pytest.approx(metric_value("qwk", y, p))  # every fold kept the argmax: qwk is 1 here
    # where cuts do win (the biased model of the test above), they are kept
    yb, pb = ordinal_synthetic()
    assert len(fit_decision("cut_points", yb, pb, "qwk", [str(g) for g in range(5)])) == 4
