import numpy as np
import pandas as pd
import pytest

from kit import KitError
from kit.ensemble import blend, fit_blend_weights, honest_blend_score, load_oof, oof_frame


def synthetic(n=600, k=5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    onehot = np.eye(k)[y]

    def model(noise):
        logits = 3 * onehot * (1 - noise) + rng.normal(size=(n, k)) * (1 + 2 * noise)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    return y, [model(0.2), model(0.3), rng.dirichlet(np.ones(k), n)]  # the last one is pure noise


# Caruana hill-climbing on in-sample *accuracy* does let noise in (it flips borderline rows by luck);
# selection on a proper scoring rule does not. SLSQP always fits log loss.
@pytest.mark.parametrize("method,metric", [("slsqp", "accuracy"), ("caruana", "log_loss")])
def test_pure_noise_model_gets_near_zero_weight(method, metric):
    y, preds = synthetic()
    w = fit_blend_weights(preds, y, method, metric)
    assert w.min() >= 0 and abs(w.sum() - 1) < 1e-9
    assert w[2] < 0.05, w


def test_blend_is_at_least_as_good_as_the_best_single_model_in_sample():
    y, preds = synthetic()
    w = fit_blend_weights(preds, y, "slsqp")
    nll = lambda p: -np.log(p[np.arange(len(y)), y]).mean()  # noqa: E731
    assert nll(blend(preds, w)) <= min(nll(p) for p in preds) + 1e-9


def test_honest_score_is_not_above_in_sample_on_average():
    gaps = []
    for seed in range(5):
        y, preds = synthetic(n=300, seed=seed)
        fold = np.arange(len(y)) % 5
        w = fit_blend_weights(preds, y, "caruana")
        in_sample = (blend(preds, w).argmax(1) == y).mean()
        honest, _ = honest_blend_score(preds, y, fold, "caruana")
        gaps.append(in_sample - honest)
    assert np.mean(gaps) >= 0


def write_oof(root, exp, folds, fhash="h", drop=None, dup=None):
    for k in sorted(folds["fold"].unique()):
        part = folds[folds["fold"] == k]
        if drop is not None:
            part = part[part["id"] != drop]
        if dup is not None and k == 0:
            part = pd.concat([part, folds[folds["id"] == dup]])
        probs = np.full((len(part), 2), 0.5)
        d = root / exp / f"fold{k}"
        d.mkdir(parents=True)
        oof_frame(part["id"], k, part["label"], probs, ["a", "b"], "none", fhash).to_csv(d / "oof.csv", index=False)


@pytest.fixture
def folds():
    return pd.DataFrame({"id": [f"i{i}" for i in range(12)], "label": [i % 2 for i in range(12)],
                         "fold": [i % 3 for i in range(12)]})


def test_oof_contract_holds(tmp_path, folds):
    from kit.folds import folds_hash

    write_oof(tmp_path, "ok", folds, folds_hash(folds))
    e = load_oof(tmp_path, "ok", folds)
    assert e.oof["id"].tolist() == folds["id"].tolist() and e.probs.shape == (12, 2) and e.tta == "none"


def test_folds_hash_mismatch_is_refused(tmp_path, folds):
    write_oof(tmp_path, "old", folds, "0123456789abcdef")
    with pytest.raises(KitError, match="trained on other folds"):
        load_oof(tmp_path, "old", folds)


def test_missing_and_duplicated_ids_are_named(tmp_path, folds):
    from kit.folds import folds_hash

    write_oof(tmp_path, "miss", folds, folds_hash(folds), drop="i4")
    with pytest.raises(KitError, match=r"1 id\(s\) of folds.csv have no OOF prediction, e.g. \['i4'\]"):
        load_oof(tmp_path, "miss", folds)
    write_oof(tmp_path, "dup", folds, folds_hash(folds), dup="i5")
    with pytest.raises(KitError, match=r"1 id\(s\) predicted twice.*'i5'"):
        load_oof(tmp_path, "dup", folds)


def test_missing_fold_is_named(tmp_path, folds):
    from kit.folds import folds_hash

    write_oof(tmp_path, "part", folds[folds["fold"] < 2], folds_hash(folds))
    with pytest.raises(KitError, match=r"run the missing folds \[2\]"):
        load_oof(tmp_path, "part", folds)


@pytest.mark.parametrize("space", ["prob", "logit", "power", "rank"])
def test_blend_spaces_give_distributions_and_ignore_noise(space):
    from kit.ensemble import blend

    y, preds = synthetic()
    w = fit_blend_weights(preds, y, "caruana", "log_loss", space=space)
    p = blend(preds, w, space)
    assert np.allclose(p.sum(1), 1) and (p >= 0).all()
    assert w[2] < 0.1, (space, w)


def test_tta_chosen_on_oof_and_ties_go_to_fewer_views(tmp_path, folds):
    from kit.ensemble import load_best_tta
    from kit.folds import folds_hash

    h = folds_hash(folds)
    for k in range(3):
        part = folds[folds["fold"] == k]
        d = tmp_path / "e" / f"fold{k}"
        d.mkdir(parents=True)
        right = np.eye(2)[part["label"]] * 0.8 + 0.1
        wrong = np.eye(2)[1 - part["label"]] * 0.8 + 0.1
        for tta, probs in (("none", right), ("hflip", wrong), ("flips", right), ("d4", right)):
            oof_frame(part["id"], k, part["label"], probs, ["a", "b"], tta, h).to_csv(d / f"oof-{tta}.csv", index=False)
        oof_frame(part["id"], k, part["label"], right, ["a", "b"], "none", h).to_csv(d / "oof.csv", index=False)
    e, table = load_best_tta(tmp_path, "e", folds)
    assert e.tta == "none"  # ties with flips and d4: the cheapest wins
    assert table.set_index("tta")["oof_accuracy"].to_dict() == {"none": 1.0, "flips": 1.0, "d4": 1.0, "hflip": 0.0}


def test_any_sklearn_scorer_is_a_metric():
    from kit.metrics import metric_value, score

    y, preds = synthetic()
    auc = metric_value("roc_auc_ovr", y, preds[0])
    assert 0.5 < auc <= 1 and score("roc_auc_ovr", y, preds[0]) == auc
    assert score("neg_log_loss", y, preds[0]) == pytest.approx(-metric_value("log_loss", y, preds[0]), rel=1e-6)
    assert metric_value("f1_macro", y, preds[0]) == pytest.approx(metric_value("macro_f1", y, preds[0]))
    with pytest.raises(KitError, match="unknown metric 'acc'"):
        metric_value("acc", y, preds[0])


def test_caruana_in_sample_is_never_below_the_best_single_model():
    from kit.metrics import metric_value

    for seed in range(5):
        y, preds = synthetic(n=200, seed=seed)
        w = fit_blend_weights(preds, y, "caruana", "accuracy")
        best = max(metric_value("accuracy", y, p) for p in preds)
        assert metric_value("accuracy", y, blend(preds, w)) >= best


def test_numpy_accuracy_and_log_loss_equal_sklearn():
    from sklearn import metrics as skm

    from kit.metrics import metric_value, normalized

    for seed in range(3):
        y, preds = synthetic(n=500, seed=seed)
        p = preds[0].astype(np.float32)
        p[:5] = 0.0  # rows of zeros and exact zeros for the true class: the clipping must match too
        p[5:10, :] = 1.0
        ref = skm.log_loss(y, normalized(p), labels=np.arange(p.shape[1]))
        assert metric_value("log_loss", y, p) == pytest.approx(ref, rel=1e-9)  # 1e-15 floor in float32
        assert metric_value("accuracy", y, p) == skm.accuracy_score(y, p.argmax(1))

