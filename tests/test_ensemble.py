import numpy as np
import pandas as pd
import pytest

from kit import KitError
from kit.ensemble import blend, fit_blend_weights, honest_blend_score, load_oof
from kit.train import oof_frame


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
