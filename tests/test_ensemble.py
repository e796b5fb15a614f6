import json

import numpy as np
import pandas as pd
import pytest

import kit
from kit import KitError
from kit.blendconfig import BlendConfig
from kit.ensemble import (Experiment, blend, check_compatible, fit_blend_weights, honest_blend_score, load_best_tta,
                          load_oof)
from kit.folds import folds_hash
from kit.rundir import checkpoint_hash, oof_frame


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
# selection on a proper scoring rule does not: both methods fit log loss by default, whatever the metric.
@pytest.mark.parametrize("method,metric", [("slsqp", "accuracy"), ("caruana", "log_loss"), ("caruana", "accuracy")])
def test_pure_noise_model_gets_near_zero_weight(method, metric):
    y, preds = synthetic()
    w = fit_blend_weights(preds, y, BlendConfig(method, metric))
    assert w.min() >= 0 and abs(w.sum() - 1) < 1e-9
    assert w[2] < 0.05, w


def test_blend_is_at_least_as_good_as_the_best_single_model_in_sample():
    y, preds = synthetic()
    w = fit_blend_weights(preds, y, BlendConfig("slsqp"))
    nll = lambda p: -np.log(p[np.arange(len(y)), y]).mean()  # noqa: E731
    assert nll(blend(preds, w)) <= min(nll(p) for p in preds) + 1e-9


def test_honest_score_is_not_above_in_sample_on_average():
    gaps = []
    for seed in range(5):
        y, preds = synthetic(n=300, seed=seed)
        fold = np.arange(len(y)) % 5
        w = fit_blend_weights(preds, y, BlendConfig("caruana"))
        in_sample = (blend(preds, w).argmax(1) == y).mean()
        honest, _ = honest_blend_score(preds, y, fold, BlendConfig("caruana"))
        gaps.append(in_sample - honest)
    assert np.mean(gaps) >= 0


def fake_fold(d, content="weights"):
    """A fold folder as the blender sees it: a best.pt (only its bytes matter here) and config.json."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "best.pt").write_text(f"{content} {d}")
    (d / "config.json").write_text(json.dumps({"kit_version": kit.__version__}))
    return checkpoint_hash(d / "best.pt")


def write_oof(root, exp, folds, fhash="h", drop=None, dup=None, targets=None):
    for k in sorted(folds["fold"].unique()):
        part = folds[folds["fold"] == k]
        if drop is not None:
            part = part[part["id"] != drop]
        if dup is not None and k == 0:
            part = pd.concat([part, folds[folds["id"] == dup]])
        probs = np.full((len(part), 2), 0.5)
        d = root / exp / f"fold{k}"
        made_by = fake_fold(d)
        y = part["label"] if targets is None else targets[part.index]
        oof_frame(part["id"], k, y, probs, ["a", "b"], "none", fhash, made_by).to_csv(d / "oof.csv", index=False)


@pytest.fixture
def folds():
    return pd.DataFrame({"id": [f"i{i}" for i in range(12)], "label": [i % 2 for i in range(12)],
                         "fold": [i % 3 for i in range(12)]})


def test_oof_contract_holds(tmp_path, folds):
    write_oof(tmp_path, "ok", folds, folds_hash(folds))
    e = load_oof(tmp_path, "ok", folds)
    assert e.oof["id"].tolist() == folds["id"].tolist() and e.probs.shape == (12, 2) and e.tta == "none"


def test_folds_hash_mismatch_is_refused(tmp_path, folds):
    write_oof(tmp_path, "old", folds, "0123456789abcdef")
    with pytest.raises(KitError, match="trained on other folds"):
        load_oof(tmp_path, "old", folds)


def test_missing_and_duplicated_ids_are_named(tmp_path, folds):
    write_oof(tmp_path, "miss", folds, folds_hash(folds), drop="i4")
    with pytest.raises(KitError, match=r"1 id\(s\) of folds.csv have no OOF prediction, e.g. \['i4'\]"):
        load_oof(tmp_path, "miss", folds)
    write_oof(tmp_path, "dup", folds, folds_hash(folds), dup="i5")
    with pytest.raises(KitError, match=r"1 id\(s\) predicted twice.*'i5'"):
        load_oof(tmp_path, "dup", folds)


def test_missing_fold_is_named(tmp_path, folds):
    write_oof(tmp_path, "part", folds[folds["fold"] < 2], folds_hash(folds))
    with pytest.raises(KitError, match=r"run the missing folds \[2\]"):
        load_oof(tmp_path, "part", folds)


def test_an_experiment_whose_folds_were_trained_differently_is_refused_naming_the_parameters(tmp_path, folds):
    """run-folds --folds 1 --force -p lr=0.001 in an experiment trained at lr 0.003: two models under one name."""
    write_oof(tmp_path, "b0", folds, folds_hash(folds))

    def trained(k, **changed):  # a fold's config.json: runtime-only fields differ per fold and do not count
        cfg = {"kit_version": kit.__version__, "exp": "b0", "fold": k, "model": "test_resnet", "lr": 0.003,
               "epochs": 5, "threads": k, "device": ["cpu", "cuda"][k % 2], "resume": k != 1, **changed}
        (tmp_path / "b0" / f"fold{k}" / "config.json").write_text(json.dumps(cfg))

    for k in range(3):
        trained(k)
    assert load_oof(tmp_path, "b0", folds).probs.shape == (12, 2)  # one training, run in several ways
    trained(1, lr=0.001)
    with pytest.raises(KitError, match=r"'b0' .*mixes trainings.*fold\(s\) 0,2: lr=0.003; fold\(s\) 1: lr=0.001\)"):
        load_oof(tmp_path, "b0", folds)
    trained(1)
    trained(0, epochs=8, model="test_efficientnet")
    with pytest.raises(KitError, match=r"fold\(s\) 0: epochs=8, model='test_efficientnet'; fold\(s\) 1,2: epochs=5"):
        load_best_tta(tmp_path, "b0", folds)  # the blender's loader too


@pytest.mark.parametrize("space,metric", [("prob", "log_loss"), ("logit", "log_loss"), ("power", "log_loss"),
                                          ("rank", "roc_auc_ovr")])
def test_blend_spaces_give_distributions_and_ignore_noise(space, metric):
    y, preds = synthetic()
    config = BlendConfig("caruana", metric, space)
    w = fit_blend_weights(preds, y, config)
    p = blend(preds, w, config)
    assert np.allclose(p.sum(1), 1) and (p >= 0).all()
    assert w[2] < 0.1, (space, w)


def test_tta_chosen_on_oof_and_ties_go_to_fewer_views(tmp_path, folds):
    h = folds_hash(folds)
    for k in range(3):
        part = folds[folds["fold"] == k]
        d = tmp_path / "e" / f"fold{k}"
        made_by = fake_fold(d)
        right = np.eye(2)[part["label"]] * 0.8 + 0.1
        wrong = np.eye(2)[1 - part["label"]] * 0.8 + 0.1
        for tta, probs in (("none", right), ("hflip", wrong), ("flips", right), ("d4", right)):
            oof_frame(part["id"], k, part["label"], probs, ["a", "b"], tta, h, made_by).to_csv(d / f"oof-{tta}.csv",
                                                                                             index=False)
        oof_frame(part["id"], k, part["label"], right, ["a", "b"], "none", h, made_by).to_csv(d / "oof.csv",
                                                                                            index=False)
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


@pytest.mark.parametrize("fit_metric", ["accuracy", "log_loss"])
def test_caruana_in_sample_is_never_below_the_best_single_model_on_what_it_fits(fit_metric):
    from kit.metrics import score

    for seed in range(5):
        y, preds = synthetic(n=200, seed=seed)
        w = fit_blend_weights(preds, y, BlendConfig("caruana", "accuracy", fit_metric=fit_metric))
        best = max(score(fit_metric, y, p) for p in preds)
        assert score(fit_metric, y, blend(preds, w)) >= best - 1e-6


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



def test_oof_made_by_an_earlier_checkpoint_is_refused(tmp_path, folds):
    write_oof(tmp_path, "e", folds, folds_hash(folds))
    (tmp_path / "e" / "fold1" / "best.pt").write_text("retrained")  # a rerun whose OOF was not written (yet)
    with pytest.raises(KitError, match=r"fold1/oof.csv was made by checkpoint \['\w{16}'\], but .*fold1/best.pt is "
                                       r"now \w{16}: it is left from an earlier run of fold 1"):
        load_oof(tmp_path, "e", folds)


def test_oof_of_a_fold_without_its_checkpoint_is_refused(tmp_path, folds):
    write_oof(tmp_path, "e", folds, folds_hash(folds))
    (tmp_path / "e" / "fold2" / "best.pt").unlink()
    with pytest.raises(KitError, match=r"experiment 'e' fold2: .*fold2/best.pt is missing"):
        load_oof(tmp_path, "e", folds)


def test_experiments_trained_on_different_labels_are_refused_naming_both(folds):
    def exp(name, targets):
        oof = folds.assign(target=targets)
        return Experiment(name, oof, np.full((len(folds), 2), 0.5), ["a", "b"], "none", folds_hash(folds))

    y = folds["label"].to_numpy()
    relabelled = y.copy()
    relabelled[4] = 1 - relabelled[4]
    check_compatible([exp("old", y), exp("same", y.copy())])
    with pytest.raises(KitError, match=r"experiments 'old' and 'new' were trained on different labels: 1 row\(s\) "
                                       r"differ, e.g. id 'i4' is 'a' in 'old' and 'b' in 'new'"):
        check_compatible([exp("old", y), exp("new", relabelled)])


def test_nested_honest_score_is_not_optimistic_about_equal_tta_presets():
    """5 "TTA presets" per experiment, all pure noise (equally worthless in truth): picking the best on all
    OOF rows before cross-fitting the weights overstates the blend (the old honest score); choosing the
    preset inside the cross-fit gives chance."""
    nested, picked_on_all_rows = [], []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        y, fold = rng.integers(0, 2, 300), np.arange(300) % 5
        presets = [[rng.dirichlet(np.ones(2), 300) for _ in range(5)] for _ in range(2)]
        chosen = [max(c, key=lambda p: (p.argmax(1) == y).mean()) for c in presets]
        picked_on_all_rows.append(honest_blend_score(chosen, y, fold)[0])
        nested.append(honest_blend_score(presets, y, fold)[0])
    assert np.mean(picked_on_all_rows) > 0.51  # the leak this test is sensitive to: about +0.02
    assert abs(np.mean(nested) - 0.5) < 0.01  # chance, within ~2 standard errors


def test_noise_models_get_no_weight_by_default_and_the_blend_keeps_the_good_model():
    """1 good model + 10 noise models, reported in accuracy: weights fitted on accuracy let the noise in
    (it flips borderline rows by luck); the default (log loss) leaves it out."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        y, fold = rng.integers(0, 5, 600), np.arange(600) % 5
        logits = 2 * np.eye(5)[y] + rng.normal(size=(600, 5))
        good = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        preds = [good] + [rng.dirichlet(np.ones(5), 600) for _ in range(10)]
        w = fit_blend_weights(preds, y, BlendConfig("caruana", "accuracy"))
        assert w[1:].sum() < 0.02, w
        honest, _ = honest_blend_score(preds, y, fold, BlendConfig("caruana", "accuracy"))
        assert honest >= (good.argmax(1) == y).mean() - 1e-9
    assert fit_blend_weights(preds, y, BlendConfig("caruana", "accuracy", fit_metric="accuracy"))[1:].sum() > 0.1  # mutant


@pytest.mark.parametrize("space", ["prob", "logit", "power"])
def test_one_model_blended_alone_is_itself(space):
    from kit.metrics import metric_value

    y, preds = synthetic()
    p = blend([preds[0]], np.ones(1), BlendConfig(space=space, power=3.0))
    assert np.allclose(p, preds[0], atol=1e-9)
    assert metric_value("log_loss", y, p) == pytest.approx(metric_value("log_loss", y, preds[0]))


@pytest.mark.parametrize("metric", ["accuracy", "log_loss", "macro_f1"])
def test_rank_space_is_only_for_ranking_metrics(metric):
    y, preds = synthetic()
    with pytest.raises(KitError, match=f"space='rank' .* metric={metric!r} reads probabilities"):
        BlendConfig("caruana", metric, space="rank")
    with pytest.raises(KitError, match="space='rank'"):
        BlendConfig("mean", metric, space="rank")
    w = fit_blend_weights(preds, y, BlendConfig("caruana", "roc_auc_ovr", "rank"))  # AUC reads only the order
    assert w[2] < 0.1


def test_slsqp_fits_log_loss_only():
    y, preds = synthetic()
    with pytest.raises(KitError, match="method='slsqp' minimizes log loss.*fit_metric='accuracy'"):
        BlendConfig("slsqp", "accuracy", fit_metric="accuracy")
    assert fit_blend_weights(preds, y, BlendConfig("slsqp", "accuracy")).sum() == pytest.approx(1)


def caruana_by_the_book(preds, y, config):
    """Caruana's selection as the paper states it: every trial blended from scratch (float64) and scored."""
    from kit.ensemble import from_space, to_space
    from kit.metrics import score

    zs = [to_space(p / (p.sum(1, keepdims=True) if config.space == "prob" else 1), config.space, config.power)
          for p in preds]

    def key(chosen):
        z = np.mean([zs[i] for i in chosen], axis=0)
        p = z if config.space == "prob" else from_space(z, config.space, config.power)
        ll = score("log_loss", y, p)
        return ll if config.objective == "log_loss" else score(config.objective, y, p), ll

    chosen, best = [], None
    for _ in range(config.rounds):
        keys = [key(chosen + [j]) for j in range(len(zs))]
        chosen.append(max(range(len(zs)), key=keys.__getitem__))
        if best is None or keys[chosen[-1]] > best[0]:
            best = keys[chosen[-1]], np.bincount(chosen, minlength=len(zs))
    return best[1] / best[1].sum()


@pytest.mark.parametrize("config", [BlendConfig("caruana", "accuracy"), BlendConfig("caruana", "accuracy", rounds=30,
                                                                                        fit_metric="accuracy"),
                                    BlendConfig("caruana", "log_loss", "logit"),
                                    BlendConfig("caruana", "macro_f1", rounds=8, fit_metric="macro_f1"),
                                    BlendConfig("caruana", "accuracy", "power", 3.0, rounds=20)])
def test_caruana_chooses_the_weights_of_the_textbook_selection(config):
    """The fast selection (running sums; in probability space log loss from the true class only and the
    argmax recomputed only where one more model can change it) picks what blending every trial from
    scratch picks; seeded cases with a duplicate model (ties) and a noise model."""
    blended = 0
    for seed in range(4):
        rng = np.random.default_rng(seed)
        y, k = rng.integers(0, 4, 400), 4
        preds = []
        for strength in rng.uniform(1, 2, 4):
            z = rng.normal(size=(400, k)) + strength * np.eye(k)[y]
            preds.append(np.exp(z) / np.exp(z).sum(1, keepdims=True))
        preds += [preds[0].copy(), rng.dirichlet(np.ones(k), 400)]
        expected = caruana_by_the_book(preds, y, config)
        assert np.array_equal(fit_blend_weights(preds, y, config), expected), (seed, expected)
        blended += len(np.flatnonzero(expected)) > 1
    assert blended >= 2  # blends, not one model: the rounds after the first count


# ---- multi-label blends: independent sigmoid columns, scored by the mean binary cross-entropy

def multilabel_synthetic(n=500, k=4, seed=1):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < 0.3).astype(int)

    def model(noise):
        logits = 4 * (y - 0.5) * (1 - noise) + rng.normal(size=(n, k)) * (0.5 + 2 * noise)
        return 1 / (1 + np.exp(-logits))

    return y, [model(0.1), model(0.4), rng.random((n, k))]  # the last one is pure noise


def test_multilabel_log_loss_is_the_binary_cross_entropy_of_every_cell():
    from sklearn.metrics import log_loss as sk_log_loss

    from kit.metrics import metric_value

    y, (p, *_) = multilabel_synthetic()
    assert metric_value("log_loss", y, p) == pytest.approx(sk_log_loss(y.ravel(), p.ravel()), rel=1e-9)


@pytest.mark.parametrize("space", ["prob", "logit", "power"])
def test_a_multilabel_model_blended_alone_is_itself_not_renormalized(space):
    _, (p, *_) = multilabel_synthetic()
    out = blend([p], np.ones(1), BlendConfig(space=space), multilabel=True)
    np.testing.assert_allclose(out, p, rtol=1e-6, atol=1e-6)  # a softmax-style row normalization would not be


@pytest.mark.parametrize("method", ["caruana", "slsqp"])
@pytest.mark.parametrize("space", ["prob", "logit"])
def test_multilabel_blend_weights_favour_the_good_model_and_drop_noise(method, space):
    from kit.metrics import metric_value

    y, preds = multilabel_synthetic()
    config = BlendConfig(method=method, metric="mean_col_auc", space=space)
    w = fit_blend_weights(preds, y, config)
    assert w.sum() == pytest.approx(1) and w[0] > w[1] and w[2] < 0.05
    blended = blend(preds, w, config, multilabel=True)
    assert blended.shape == y.shape and ((blended > 0) & (blended < 1)).all()
    assert metric_value("log_loss", y, blended) <= metric_value("log_loss", y, preds[0]) + 1e-9
    honest, _ = honest_blend_score(preds, y, np.arange(len(y)) % 5, config)
    assert honest > metric_value("mean_col_auc", y, preds[1])


def test_rank_space_keeps_the_auc_of_a_model_with_tied_scores():
    """Tied rows share their mean rank: an arbitrary order among them (argsort of argsort) moved the AUC."""
    from kit.metrics import metric_value

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p1 = np.round(np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1), 1)  # coarse: many ties
    p = np.stack([1 - p1, p1], 1)
    ranked = blend([p], np.ones(1), BlendConfig(metric="roc_auc", space="rank"))
    assert metric_value("roc_auc", y, ranked) == pytest.approx(metric_value("roc_auc", y, p), abs=1e-12)
    ym = (rng.random((300, 3)) < 0.4).astype(int)
    pm = np.round(rng.random((300, 3)) * 0.6 + 0.4 * ym, 1)
    ranked = blend([pm], np.ones(1), BlendConfig(metric="mean_col_auc", space="rank"), multilabel=True)
    assert metric_value("mean_col_auc", ym, ranked) == pytest.approx(metric_value("mean_col_auc", ym, pm), abs=1e-12)


def test_honest_score_skips_a_fold_where_the_metric_is_undefined_and_says_so(caplog):
    y = np.array([0, 1, 2, 0, 1, 2, 1, 1, 1])
    p = np.eye(3)[y] * 0.8 + 0.2 / 3
    fold = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])  # fold 2 holds one grade: its QWK is undefined
    with caplog.at_level("WARNING"):
        honest, _ = honest_blend_score([p], y, fold, BlendConfig(metric="qwk"))
    assert honest == pytest.approx(1.0) and "undefined on held-out fold(s) [2]" in caplog.text
    with pytest.raises(KitError, match="undefined on every held-out fold"):
        honest_blend_score([p], y, y, BlendConfig(metric="qwk"))  # every fold one grade


def test_stacking_learns_per_class_trust_and_its_honest_score_never_sees_the_rows_it_scores(monkeypatch):
    """Model a is right on classes 0-1 and noise on 2, model b the reverse: a weighted mean cannot take each
    model where it is right, a logistic regression on their log-probabilities can. The honest score fits the
    meta-model on the other folds only (counted)."""
    import kit.ensemble
    from kit.blendconfig import BlendConfig
    from kit.ensemble import apply_stack, fit_blender, fit_stack, honest_blend_score

    rng = np.random.default_rng(0)
    n, k = 600, 3
    y = rng.integers(0, k, n)
    fold = np.arange(n) % 4

    def expert(good):
        p = rng.dirichlet(np.ones(k), n)  # noise
        sure = np.isin(y, good)
        p[sure] = 0.1 / (k - 1)
        p[sure, y[sure]] = 0.9
        return p

    a, b = expert([0, 1]), expert([2])
    stack, caruana = BlendConfig("stack", "accuracy"), BlendConfig("caruana", "accuracy")
    fitted = fit_blender([a, b], y, stack)
    assert fitted.stack is not None and np.allclose(fitted.weights, [0.5, 0.5])
    stacked = fitted([a, b], stack)
    assert np.allclose(stacked.sum(1), 1) and (stacked.argmax(1) == y).mean() > 0.9
    weighted = fit_blender([a, b], y, caruana)([a, b], caruana)
    assert (stacked.argmax(1) == y).mean() > (weighted.argmax(1) == y).mean() + 0.05
    seen, real = [], kit.ensemble.fit_stack
    monkeypatch.setattr(kit.ensemble, "fit_stack", lambda preds, t: seen.append(len(t)) or real(preds, t))
    honest, _ = honest_blend_score([a, b], y, fold, stack)
    assert seen == [450] * 4  # each meta-model saw the three other folds' rows only
    assert 0.85 < honest <= (stacked.argmax(1) == y).mean() + 0.02
    two = y < 2  # a meta-model fitted where class 2 never occurs: it gets ~0, the rows still sum to one
    meta = fit_stack([a[two], b[two]], y[two])
    p = apply_stack([a, b], meta)
    assert meta["classes"] == [0, 1] and p.shape == (n, 3) and np.allclose(p.sum(1), 1) and p[:, 2].max() < 1e-6


def test_stacking_refuses_multilabel_and_settings_that_do_not_apply():
    from kit.blendconfig import BlendConfig
    from kit.ensemble import fit_stack

    with pytest.raises(KitError, match="method='stack' blends single-label tasks"):
        fit_stack([np.full((4, 2), 0.5)], np.array([[0, 1], [1, 0], [1, 1], [0, 0]]))
    with pytest.raises(KitError, match="method='stack' fits a logistic regression .* space='logit' do not apply"):
        BlendConfig("stack", "accuracy", space="logit")
