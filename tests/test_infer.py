"""Test predictions and blends are tied to the checkpoints that made them (kit.infer)."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import kit
from kit import KitError
from kit.blendconfig import BlendConfig
from kit.cli import main
from kit.folds import folds_hash, folds_path, read_folds
from kit.infer import blend_and_submit, infer_and_blend, predict_blend, predict_fold
from kit.io import read_json, save_torch, write_json
from kit.models import create_model
from kit.rundir import checkpoint_hash, oof_frame, oof_name

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def save_model(fold_path, classes, seed, size=16):
    """A best.pt as fit_fold writes it, of an untrained test_resnet: seed picks the weights."""
    torch.manual_seed(seed)
    model = create_model("test_resnet", len(classes))
    save_torch({"model": model.state_dict(), "classes": classes, "timm_name": "test_resnet", "img_size": size,
                "epoch": 1, "score": 0.0}, fold_path / "best.pt")
    return checkpoint_hash(fold_path / "best.pt")


def fake_fold(fold_path, classes, seed=0, kit_version=kit.__version__, size=16, mean=0.5, amp="off"):
    """A trained fold's folder as infer reads it (best.pt + config.json), without the training."""
    fold_path.mkdir(parents=True, exist_ok=True)
    write_json({"exp": fold_path.parent.name, "fold": int(fold_path.name.removeprefix("fold")), "mean": [mean] * 3,
                "std": [0.25] * 3, "channels_last": False, "amp_resolved": amp, "kit_version": kit_version},
               fold_path / "config.json")
    return save_model(fold_path, classes, seed, size)


def fake_experiment(runs, exp, folds, classes, oofs, seed=0):
    """Every fold of `exp` with OOF files: oofs(k, part) -> {tta: (rows, K) probabilities}, first one also oof.csv;
    fold k's best.pt is an untrained model of seed `seed + k`."""
    for k in range(int(folds["fold"].max()) + 1):
        d = runs / exp / f"fold{k}"
        made_by = fake_fold(d, classes, seed=seed + k)
        part = folds[folds["fold"] == k]
        y = part["label"].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()
        frames = {t: oof_frame(part["id"], k, y, p, classes, t, folds_hash(folds), made_by)
                  for t, p in oofs(k, y).items()}
        for t, frame in frames.items():
            frame.to_csv(d / oof_name(t), index=False)
        next(iter(frames.values())).to_csv(d / oof_name(None), index=False)


def classes_of(comp):
    return [str(c) for c in comp.classes]


def test_retrained_fold_does_not_reuse_cached_test_predictions(tiny_comp, project):
    fold = project / "runs" / "demo" / "m" / "fold0"
    fake_fold(fold, classes_of(tiny_comp), seed=0)
    old = predict_fold(fold, tiny_comp, "none", "cpu")
    save_model(fold, classes_of(tiny_comp), seed=1)  # retrained: another best.pt, the old cache survives
    new = predict_fold(fold, tiny_comp, "none", "cpu")
    assert not np.allclose(new, old)
    cache = pd.read_csv(fold / "test_none.csv", dtype=str)
    assert set(cache["checkpoint"]) == {checkpoint_hash(fold / "best.pt")}  # the cache now names the new one
    (fold / "test_none.csv").unlink()
    assert np.allclose(new, predict_fold(fold, tiny_comp, "none", "cpu"), atol=1e-6)  # what best.pt predicts


def test_cache_that_names_no_checkpoint_is_not_used(tiny_comp, project):
    fold = project / "runs" / "demo" / "m" / "fold0"
    fake_fold(fold, classes_of(tiny_comp))
    classes = classes_of(tiny_comp)
    uniform = pd.DataFrame(1 / len(classes), index=range(len(tiny_comp.test)), columns=classes)
    uniform.insert(0, "id", tiny_comp.test["id"].to_numpy())
    uniform.to_csv(fold / "test_none.csv", index=False)  # as an older kit wrote it: ids and classes only
    p = predict_fold(fold, tiny_comp, "none", "cpu")
    assert not np.allclose(p, 1 / len(classes))


def test_fold_without_its_checkpoint_is_refused_even_with_cached_predictions(tiny_comp, project):
    fold = project / "runs" / "demo" / "m" / "fold1"
    fake_fold(fold, classes_of(tiny_comp))
    predict_fold(fold, tiny_comp, "none", "cpu")
    (fold / "best.pt").unlink()
    assert (fold / "test_none.csv").is_file()
    with pytest.raises(KitError, match=r"experiment 'm' fold1: .*fold1/best.pt is missing.*--exp m --folds 1 --force"):
        predict_fold(fold, tiny_comp, "none", "cpu")


def test_fold_trained_by_another_kit_version_is_refused(tiny_comp, project):
    folds = read_folds(folds_path(tiny_comp))
    classes = classes_of(tiny_comp)
    fake_experiment(project / "runs" / "demo", "m", folds, classes, lambda k, y: {"none": np.eye(len(classes))[y]})
    predict_fold(project / "runs" / "demo" / "m" / "fold2", tiny_comp, "none", "cpu")  # a cache to leave unused
    cfg = project / "runs" / "demo" / "m" / "fold2" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "kit_version": "0.0.1"}))
    version = rf"experiment 'm' fold2 was trained by kit 0.0.1 .* this is kit {kit.__version__}"
    with pytest.raises(KitError, match=version):
        predict_fold(project / "runs" / "demo" / "m" / "fold2", tiny_comp, "none", "cpu")
    with pytest.raises(KitError, match=version):  # the OOF side too: nothing of that fold is blended
        infer_and_blend(tiny_comp, folds, ["m"], device="cpu")


def none_right_on_0_1_hflip_on_0_2(tiny_comp, project):
    """Experiment 'm' whose OOF with 'none' is right on folds 0 and 1 and wrong on 2, with 'hflip' right on folds
    0 and 2 and wrong on 1: the folds."""
    folds = read_folds(folds_path(tiny_comp))
    classes = classes_of(tiny_comp)

    def oofs(k, y):
        right, wrong = np.eye(len(classes))[y], np.eye(len(classes))[(y + 1) % len(classes)]
        return {"none": right if k in (0, 1) else wrong, "hflip": right if k in (0, 2) else wrong}

    fake_experiment(project / "runs" / "demo", "m", folds, classes, oofs)
    return folds


def test_honest_score_chooses_the_tta_inside_the_cross_fit(tiny_comp, project):
    """Two presets, equally good on all OOF rows: 'none' right on folds 0 and 1, 'hflip' on folds 0 and 2.
    On all rows the tie goes to 'none' (2/3 in-sample). Nested, each held-out fold picks on the other two:
    fold 0 -> none (tie) right, fold 1 -> hflip (1 vs 1/2) wrong, fold 2 -> none (1 vs 1/2) wrong: 1/3.
    Choosing the TTA on all rows and then cross-fitting only the weights would say 2/3."""
    folds = none_right_on_0_1_hflip_on_0_2(tiny_comp, project)
    r = infer_and_blend(tiny_comp, folds, ["m"], device="cpu")
    assert r.scores["tta"].tolist() == ["none"] and r.oof_score == pytest.approx(2 / 3, abs=0.02)
    assert r.honest_score == pytest.approx(1 / 3)  # per fold: 1, 0, 0
    assert "best epoch" in r.honest_leak and r.blend["honest_leak"] == r.honest_leak


def test_a_tta_named_for_the_blend_is_used_and_not_chosen(tiny_comp, project, capsys):
    """The folds of test_honest_score_chooses_the_tta_inside_the_cross_fit, blended with --tta hflip: hflip's own
    OOF (right on folds 0 and 2) in-sample and honest alike, for nothing is chosen; its test predictions are
    hflip's. A preset the experiment has no OOF for is refused before anything is written."""
    folds = none_right_on_0_1_hflip_on_0_2(tiny_comp, project)
    assert main(["blend", "--exps", "m", "--name", "h", "--tta", "hflip", "--device", "cpu"]) == 0
    spec = read_json(project / "submissions" / "h.blend.json")
    share = np.mean(folds["fold"].isin([0, 2]))
    assert spec["config"]["tta"] == "hflip" and [e["tta"] for e in spec["experiments"]] == ["hflip"]
    assert spec["oof_score"] == pytest.approx(share) and spec["honest_score"] == pytest.approx(share)
    assert sorted(p.name for p in (project / "runs" / "demo" / "m" / "fold0").glob("test*")) == ["test_hflip.csv"]
    assert spec["scores"][0]["oof_accuracy_no_tta"] == pytest.approx(np.mean(folds["fold"].isin([0, 1])))
    capsys.readouterr()
    assert main(["blend", "--exps", "m", "--name", "d", "--tta", "d4", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "experiment 'm' has no current OOF predictions with tta='d4', only ['none', 'hflip']" in err
    assert not (project / "submissions" / "d.csv").exists()


def test_oof_left_by_an_earlier_run_with_another_tta_is_not_ranked(tiny_comp, project):
    """Fold 1 was rerun with tta='hflip' after a tta='auto' run: its oof-none.csv (perfect) is the old
    checkpoint's and must not be chosen next to the new hflip OOF."""
    folds = read_folds(folds_path(tiny_comp))
    classes = classes_of(tiny_comp)

    def oofs(k, y):
        return {"hflip": np.eye(len(classes))[y] * 0.5 + 0.05, "none": np.eye(len(classes))[y]}

    fake_experiment(project / "runs" / "demo", "m", folds, classes, oofs)
    save_model(project / "runs" / "demo" / "m" / "fold1", classes, seed=7)  # the rerun's best.pt
    stale = project / "runs" / "demo" / "m" / "fold1"
    for name in ("oof-hflip.csv", "oof.csv"):  # what the rerun wrote again, for its own checkpoint
        frame = pd.read_csv(stale / name, dtype={"id": str})
        frame.assign(checkpoint=checkpoint_hash(stale / "best.pt"), tta="hflip").to_csv(stale / name, index=False)
    r = infer_and_blend(tiny_comp, folds, ["m"], device="cpu")
    assert r.tta_scores["tta"].tolist() == ["hflip"] and r.scores["tta"].tolist() == ["hflip"]


def blend_spec(tiny_comp, project):
    folds = read_folds(folds_path(tiny_comp))
    classes = classes_of(tiny_comp)
    fake_experiment(project / "runs" / "demo", "m", folds, classes, lambda k, y: {"none": np.eye(len(classes))[y]})
    return infer_and_blend(tiny_comp, folds, ["m"], device="cpu").blend


def test_blend_refuses_a_fold_retrained_after_it_was_fitted(tiny_comp, project):
    spec = blend_spec(tiny_comp, project)
    assert [len(e["checkpoints"]) for e in spec["experiments"]] == [3]
    save_model(project / "runs" / "demo" / "m" / "fold2", classes_of(tiny_comp), seed=9)
    with pytest.raises(KitError, match=r"fold2/best.pt is checkpoint \w+, not \w+, the one the blend was fitted"):
        predict_blend(tiny_comp, spec, "runs", "cpu")


def test_blend_json_experiment_names_are_names_not_paths(tiny_comp, project):
    spec = blend_spec(tiny_comp, project)
    outside = project / "runs" / "outside"  # a folder beside runs/demo/ that a '../' name would reach
    (project / "runs" / "demo" / "m").rename(outside)
    for cache in outside.glob("fold*/test_*.csv"):  # the ones blend_spec made
        cache.unlink()
    spec["experiments"][0]["name"] = "../outside"
    with pytest.raises(KitError, match=r"blend experiment name '\.\./outside' is not a plain name"):
        predict_blend(tiny_comp, spec, "runs", "cpu")
    assert not list(outside.glob("fold*/test_*.csv"))  # nothing was read or written there


@pytest.mark.parametrize("metric", ["accuracy", "log_loss"])
def test_rank_space_is_refused_for_a_metric_that_reads_probabilities(tiny_comp, project, metric, capsys):
    spec = blend_spec(tiny_comp, project)
    assert main(["blend", "--exps", "m", "--metric", metric, "--space", "rank", "--device", "cpu"]) == 2
    assert "space='rank' blends per-class ranks" in capsys.readouterr().err
    with pytest.raises(KitError, match="space='rank'"):
        predict_blend(tiny_comp, {**spec, "config": {**spec["config"], "space": "rank", "metric": metric}}, "runs",
                      "cpu")


def test_every_oof_file_of_a_trained_fold_names_its_checkpoint(tiny_fold):
    r = tiny_fold
    files = sorted(r.dir.glob("oof*.csv"))
    assert len(files) == 8  # oof.csv, one per preset and the plain image at the two other resize modes
    for f in files:
        assert set(pd.read_csv(f, dtype=str)["checkpoint"]) == {checkpoint_hash(r.dir / "best.pt")}, f


def test_a_fold_config_with_an_unknown_precision_is_refused_naming_the_file(tiny_comp, project):
    fold = project / "runs" / "demo" / "m" / "fold0"
    fake_fold(fold, classes_of(tiny_comp))
    config = fold / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "amp_resolved": "bf16"}))
    with pytest.raises(KitError, match=rf"{config}: amp_resolved='bf16' is not one of"):
        predict_fold(fold, tiny_comp, "none", "cpu")


def two_experiments(tiny_comp, project):
    """'m' right on even rows, 'n' on odd ones (a blend of both beats either), with other test models."""
    folds = read_folds(folds_path(tiny_comp))
    classes = classes_of(tiny_comp)

    def half_right(parity):
        def oofs(k, y):
            p = np.full((len(y), len(classes)), 0.5 / (len(classes) - 1))
            rows = np.arange(len(y)) % 2 == parity
            p[np.arange(len(y)), np.where(rows, y, (y + 1) % len(classes))] = 0.5
            return {"none": 0.6 * p + 0.4 * np.eye(len(classes))[y] * 0.5 + 0.2 / len(classes)}
        return oofs

    fake_experiment(project / "runs" / "demo", "m", folds, classes, half_right(0), seed=0)
    fake_experiment(project / "runs" / "demo", "n", folds, classes, half_right(1), seed=10)


def probability_sample(comp):
    """The sample rewritten with one probability column per class: the submission then shows the blend's
    probabilities, not only their argmax."""
    sample = pd.read_csv(comp.sample_submission, dtype=str)[["image_id"]]
    for c in classes_of(comp):
        sample[c] = "0.1"
    sample.to_csv(comp.sample_submission, index=False)


def test_a_saved_blend_is_applied_with_the_config_it_was_fitted_with(tiny_comp, project):
    two_experiments(tiny_comp, project)
    probability_sample(tiny_comp)
    config = BlendConfig("mean", "log_loss", "logit", rounds=7)
    fitted = blend_and_submit("demo", ["m", "n"], config, name="fit", device="cpu")
    saved = read_json(project / "submissions" / "fit.blend.json")
    assert fitted.blend_path == project / "submissions" / "fit.blend.json" and saved == fitted.blend
    assert saved["config"] == config.to_dict() and BlendConfig.from_blend(saved) == config
    assert saved["fit_objective"] == "log_loss" and fitted.report.config == config
    assert list(fitted.report.weights) == [0.5, 0.5]
    # applied with another config at hand (the default: prob space): the saved one is what counts
    applied = blend_and_submit("demo", blend_json="submissions/fit.blend.json", name="again", device="cpu")
    assert applied.report is None and BlendConfig.from_blend(applied.blend) == config
    assert (project / "submissions" / "again.csv").read_bytes() == fitted.path.read_bytes()
    prob_space = blend_and_submit("demo", ["m", "n"], BlendConfig("mean", "log_loss"), name="prob", device="cpu")
    assert not np.allclose(prob_space.submission.iloc[:, 1:].to_numpy(float),
                           fitted.submission.iloc[:, 1:].to_numpy(float))  # the space shows in the submission


def test_submission_kind_reaches_the_submission_from_the_flag_and_from_blend_json(tiny_comp, project, capsys):
    two_experiments(tiny_comp, project)
    probability_sample(tiny_comp)  # one column per class: labels cannot be written there
    refused = "submission_kind='label', but .*sample_submission.csv has one column per class"
    assert main(["blend", "--exps", "m,n", "--name", "s", "--device", "cpu"]) == 0
    assert read_json(project / "submissions" / "s.blend.json")["config"]["submission_kind"] == "auto"
    capsys.readouterr()
    assert main(["blend", "--exps", "m,n", "--submission-kind", "label", "--device", "cpu"]) == 2
    assert re.search(refused, capsys.readouterr().err)
    assert main(["blend", "--blend-json", "submissions/s.blend.json", "--submission-kind", "label"]) == 2
    assert re.search(refused, capsys.readouterr().err)
    spec = read_json(project / "submissions" / "s.blend.json")
    write_json({**spec, "config": {**spec["config"], "submission_kind": "label"}}, project / "label.blend.json")
    assert main(["blend", "--blend-json", "label.blend.json"]) == 2  # the saved kind, with no flag
    assert re.search(refused, capsys.readouterr().err)
    assert main(["blend", "--blend-json", "label.blend.json", "--submission-kind", "auto", "--name", "t"]) == 0
    assert read_json(project / "submissions" / "t.blend.json")["config"]["submission_kind"] == "auto"


@pytest.mark.slow
def test_the_cli_and_the_infer_notebook_write_the_same_submission_and_blend(tiny_comp, project):
    from kit.notebook import run_notebook

    two_experiments(tiny_comp, project)
    probability_sample(tiny_comp)
    settings = {"metric": "log_loss", "space": "power", "power": 3.0, "rounds": 7}
    assert main(["blend", "--exps", "m,n", "--name", "cli", "--metric", "log_loss", "--space", "power",
                 "--power", "3", "--rounds", "7"]) == 0
    run_notebook(NOTEBOOKS / "infer_ensemble.py", project / "runs" / "infer.ipynb",
                 {"exps": ["m", "n"], "name": "nb", **settings}, log=False)
    assert main(["blend", "--blend-json", "submissions/cli.blend.json", "--name", "again"]) == 0
    cli, nb = read_json(project / "submissions" / "cli.blend.json"), read_json(project / "submissions" / "nb.blend.json")
    assert cli == nb and cli["config"] == BlendConfig(**settings).to_dict()
    assert 0 < cli["experiments"][0]["weight"] < 1  # both experiments in it: the weights and the space matter
    files = [(project / "submissions" / f"{n}.csv").read_bytes() for n in ("cli", "nb", "again")]
    assert files[0] == files[1] == files[2]


def two_experiments_of_three_folds(project, classes):
    """(fold folder, tta, '') for 'a' (16 px, d4) and 'b' (24 px, another normalization, bf16, flips)."""
    folds = []
    for exp, size, mean, amp, tta in (("a", 16, 0.5, "off", "d4"), ("b", 24, 0.4, "bfloat16", "flips")):
        for k in range(3):
            fake_fold(project / "runs" / "demo" / exp / f"fold{k}", classes, seed=k + 10 * len(folds), size=size,
                      mean=mean, amp=amp)
            folds.append((project / "runs" / "demo" / exp / f"fold{k}", tta, ""))
    return folds


def predicted_the_old_way(fold_path, comp, tta):
    """One fold alone, its own decode of the test set: what infer did before the shared pass."""
    from kit.augment import eval_transform
    from kit.data import ImageDataset, make_loader
    from kit.device import inference_dtype
    from kit.rundir import load_best, read_config
    from kit.tta import predict_batch

    cfg, ckpt = read_config(fold_path), load_best(fold_path)
    model = create_model(ckpt["timm_name"], len(ckpt["classes"])).eval()
    model.load_state_dict(ckpt["model"])
    ds = ImageDataset(comp.test["path"], None, eval_transform(ckpt["img_size"], cfg["mean"], cfg["std"]),
                      ckpt["img_size"])
    dtype = inference_dtype(cfg["amp_resolved"], "cpu")
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        return torch.cat([predict_batch(model, x, tta) for x, _ in make_loader(ds, 6, False)]).numpy()


def counting_decodes(monkeypatch):
    """{path: times read_image decoded it}, for every decode a dataset makes from now on."""
    import kit.data

    counts, real = {}, kit.data.read_image

    def read_image(path, min_side=0):
        counts[path] = counts.get(path, 0) + 1
        return real(path, min_side)

    monkeypatch.setattr(kit.data, "read_image", read_image)
    return counts


def test_every_fold_of_every_experiment_runs_on_one_decode_of_each_test_image(tiny_comp, project, monkeypatch):
    """2 experiments x 3 folds, each experiment with its own size, normalization, precision and TTA: one pass
    decodes each test image once, and each fold predicts what it predicted alone."""
    import dataclasses

    import kit.infer
    from kit.infer import predict_folds

    comp = dataclasses.replace(tiny_comp, test=tiny_comp.test.head(10))  # 10 images: 2 batches of 6
    folds = two_experiments_of_three_folds(project, classes_of(comp))
    decodes = counting_decodes(monkeypatch)
    probs = predict_folds(comp, folds, "cpu", batch_size=6)
    assert sorted(decodes) == sorted(comp.test["path"]) and set(decodes.values()) == {1}
    for (path, tta, _), p in zip(folds, probs):
        assert np.allclose(p, predicted_the_old_way(path, comp, tta), atol=1e-6), path
    assert len({p.round(4).tobytes() for p in probs}) == 6  # six different models, each with its own answer
    # cached folds are read, not predicted: only the retrained one is loaded and run, on one more decode
    save_model(folds[4][0], classes_of(comp), seed=99, size=24)
    loaded, real = [], kit.infer.load_fold
    monkeypatch.setattr(kit.infer, "load_fold", lambda path, *a: loaded.append(path) or real(path, *a))
    decodes.clear()
    again = predict_folds(comp, folds, "cpu", batch_size=6)
    assert loaded == [folds[4][0]] and set(decodes.values()) == {1}
    assert all(np.array_equal(a, b) for k, (a, b) in enumerate(zip(again, probs)) if k != 4)
    assert np.allclose(again[4], predicted_the_old_way(folds[4][0], comp, "flips"), atol=1e-6)


def test_a_large_jpeg_is_decoded_once_per_scale_its_sizes_need(tmp_path, monkeypatch):
    """Models at 16 and 100 px: a 256 px JPEG decodes at 1/8 for the first (min side 32) and in full for the
    second, as each read it in training; a small one once for both."""
    from PIL import Image

    from kit.data import decode_once, read_image

    for side in (256, 40):
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), np.uint8)).save(
            tmp_path / f"{side}.jpg")
    decodes = counting_decodes(monkeypatch)
    big, small = decode_once(str(tmp_path / "256.jpg"), [200, 32]), decode_once(str(tmp_path / "40.jpg"), [200, 32])
    assert decodes == {str(tmp_path / "256.jpg"): 2, str(tmp_path / "40.jpg"): 1}
    assert big[32].shape == (32, 32, 3) and big[200].shape == (256, 256, 3)
    for side in (200, 32):
        assert np.array_equal(big[side], read_image(str(tmp_path / "256.jpg"), side))
        assert np.array_equal(small[side], read_image(str(tmp_path / "40.jpg"), side))



def test_the_run_time_estimate_is_loading_plus_the_timed_time_per_image_times_the_test_size(tiny_comp, project,
                                                                                             monkeypatch):
    """A clock that advances 1 s per fold model loaded and 0.01 s per image and model predicted: the estimate for
    10,000 images is the 5 used folds' loading plus 10,000 x 5 x 0.01 s; the warm-up pass is not timed, the
    zero-weight experiment not loaded, and no test cache is read or written."""
    import argparse

    import kit.infer
    from kit.cli import run_time_line
    from kit.infer import estimate_seconds

    folds = two_experiments_of_three_folds(project, classes_of(tiny_comp))
    spec = {"classes": classes_of(tiny_comp), "competition": "demo", "experiments": [
        {"name": "a", "tta": "d4", "weight": 0.7, "n_folds": 3}, {"name": "b", "tta": "flips", "weight": 0.3,
                                                                   "n_folds": 2},
        {"name": "c", "tta": "none", "weight": 0.0, "n_folds": 3}]}  # not trained: never loaded
    now = [0.0]
    real_load = kit.infer.load_fold

    def load_fold(*args):
        now[0] += 1
        return real_load(*args)

    def predict_images(models, paths, *args):  # the pass's time, not its work: the clock is what is tested
        now[0] += 0.01 * len(models) * len(paths)
        return []

    paths = tiny_comp.test["path"].tolist()[:8]
    with monkeypatch.context() as m:
        m.setattr(kit.infer.time, "perf_counter", lambda: now[0])
        m.setattr(kit.infer, "load_fold", load_fold)
        m.setattr(kit.infer, "predict_images", predict_images)
        seconds = estimate_seconds(spec, paths, 10_000, device="cpu", batch_size=4)
    assert seconds == pytest.approx(5 + 10_000 * 5 * 0.01)
    assert len(folds) == 6 and not list((project / "runs").glob("*/*/fold*/test_*.csv"))
    # what `kit package --comp demo` prints, from the local test set of the competition
    one_fold = {**spec, "experiments": [{"name": "a", "tta": "none", "weight": 1.0, "n_folds": 1}]}
    blend_json = write_json({**one_fold, "config": BlendConfig().to_dict()}, project / "b.blend.json")
    a = argparse.Namespace(blend_json=str(blend_json), kaggle_comp="demo", data_dir="data", runs_dir="runs")
    assert re.fullmatch(rf"estimated inference time: \d+\.\d min for {len(tiny_comp.test)} test images, timed here "
                        r"on cpu \(.*\)", run_time_line(a))
    assert run_time_line(argparse.Namespace(**{**vars(a), "kaggle_comp": "nowhere"})).startswith(
        "no run-time estimate: competition 'nowhere' not found")


def test_batch_size_and_workers_reach_the_test_loader_from_kit_blend(tiny_comp, project, monkeypatch, capsys):
    import kit.infer

    two_experiments(tiny_comp, project)
    loaders, real = [], kit.infer.make_loader
    monkeypatch.setattr(kit.infer, "make_loader", lambda ds, *a: loaders.append(a) or real(ds, *a))
    assert main(["blend", "--exps", "m,n", "--device", "cpu", "--batch-size", "7", "--num-workers", "1"]) == 0
    assert loaders == [(7, False, 1)]  # one pass for the 6 folds of both experiments
    capsys.readouterr()
    assert main(["blend", "--exps", "m,n", "--device", "cpu", "--batch-size", "0"]) == 2
    assert "batch_size=0: test images per batch, a positive integer" in capsys.readouterr().err


def test_kit_blend_reports_in_the_metric_the_experiments_were_trained_on_unless_told(tiny_comp, project, capsys):
    two_experiments(tiny_comp, project)
    cfg = project / "runs" / "demo" / "m" / "fold0" / "config.json"
    write_json({**read_json(cfg), "metric": "log_loss"}, cfg)  # fold 0 of the first experiment decides
    assert main(["blend", "--exps", "m,n", "--name", "own", "--device", "cpu"]) == 0
    assert read_json(project / "submissions" / "own.blend.json")["config"]["metric"] == "log_loss"
    assert "blend OOF log_loss:" in capsys.readouterr().out
    assert main(["blend", "--exps", "m,n", "--name", "told", "--metric", "macro_f1", "--device", "cpu"]) == 0
    assert read_json(project / "submissions" / "told.blend.json")["config"]["metric"] == "macro_f1"


def test_an_ordinal_fold_from_before_ordinal_head_loads_as_the_softmax_it_trained(ordinal_comp, project):
    """Its config.json has task_resolved='ordinal' and no ordinal_head: its best.pt has an output per grade and
    its test predictions are the softmax of them, not a cumulative head rebuilt (9 outputs would not load)."""
    classes = classes_of(ordinal_comp)
    d = project / "runs" / "ord" / "old" / "fold0"
    fake_fold(d, classes)
    write_json({**read_json(d / "config.json"), "task_resolved": "ordinal"}, d / "config.json")
    p = predict_fold(d, ordinal_comp, "none", device="cpu", num_workers=0)
    fold = kit.infer.load_fold(d, classes, torch.device("cpu"))
    assert fold.activation == "softmax" and fold.model.get_classifier().out_features == 10
    assert p.shape == (len(ordinal_comp.test), 10) and abs(p.sum(1) - 1).max() < 1e-6


def test_experiments_trained_for_different_tasks_are_not_blended(tiny_comp, project):
    two_experiments(tiny_comp, project)
    for exp, task in (("m", "multiclass"), ("n", "ordinal")):
        cfg = project / "runs" / "demo" / exp / "fold0" / "config.json"
        write_json({**read_json(cfg), "task_resolved": task}, cfg)
    with pytest.raises(KitError, match="trained for different tasks"):
        blend_and_submit("demo", ["m", "n"], BlendConfig(), device="cpu")
    assert not (project / "submissions" / "submission.csv").exists()


def widen_images(comp):
    """Every train and test image of the tiny competition made 16x32: its digit on the left, noise on the right,
    so that squash, crop and letterbox each give another square."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for path in [*comp.train["path"], *comp.test["path"]]:
        digit = np.asarray(Image.open(path).convert("RGB"))
        noise = rng.integers(0, 256, digit.shape, dtype=np.uint8)
        Image.fromarray(np.concatenate([digit, noise], axis=1)).save(path)


def test_oof_and_test_predictions_use_the_folds_resize_mode(tiny_comp, project, fit_tiny):
    """A fold trained with resize=letterbox: its test predictions of its own validation images equal its OOF rows,
    for its own mode and for a TTA at another mode (none@crop); predicted squashed they would not."""
    import dataclasses

    from kit.infer import FoldModel, load_fold, predict_images

    widen_images(tiny_comp)
    result = fit_tiny(resize="letterbox", crop_pct=0.75, tta="auto")
    assert read_json(result.dir / "config.json")["resize_resolved"] == "letterbox"
    val = tiny_comp.train.merge(read_folds(folds_path(tiny_comp)), on="id")
    val = val[val["fold"] == 0]
    as_test = dataclasses.replace(tiny_comp, test=val[["id", "path"]].reset_index(drop=True))
    classes = classes_of(tiny_comp)
    for tta in ("none", "none@crop", "none@squash", "hflip"):
        oof = pd.read_csv(result.dir / oof_name(tta))
        assert oof["id"].tolist() == as_test.test["id"].tolist()
        test = predict_fold(result.dir, as_test, tta, "cpu", batch_size=16)
        assert np.allclose(test, oof[classes].to_numpy(), atol=1e-5), tta
    model = load_fold(result.dir, classes, torch.device("cpu"))
    squashed = dataclasses.replace(model, resize="squash")
    wrong = predict_images([(squashed, "none")], as_test.test["path"], torch.device("cpu"), 16)[0]
    assert not np.allclose(wrong, pd.read_csv(result.dir / oof_name("none"))[classes].to_numpy(), atol=1e-3)
    assert isinstance(model, FoldModel) and (model.resize, model.crop_pct) == ("letterbox", 0.75)


def test_a_stacked_blend_is_saved_with_its_meta_model_and_applied_alone(tiny_comp, project):
    two_experiments(tiny_comp, project)
    probability_sample(tiny_comp)
    fitted = blend_and_submit("demo", ["m", "n"], BlendConfig("stack", "log_loss"), name="st", device="cpu")
    spec = read_json(project / "submissions" / "st.blend.json")
    k = len(classes_of(tiny_comp))
    assert np.asarray(spec["stack"]["coef"]).shape == (k, 2 * k) and spec["stack"]["n_classes"] == k
    applied = blend_and_submit("demo", blend_json="submissions/st.blend.json", name="st-again", device="cpu")
    assert (project / "submissions" / "st-again.csv").read_bytes() == fitted.path.read_bytes()
    mean = blend_and_submit("demo", ["m", "n"], BlendConfig("mean", "log_loss"), name="mean", device="cpu")
    assert not np.allclose(mean.submission.iloc[:, 1:].to_numpy(float), fitted.submission.iloc[:, 1:].to_numpy(float))
    assert applied.report is None and np.isfinite(fitted.report.honest_score)
    # its teacher rows (<name>.oof.csv) are cross-fitted: the meta-model of each fold fitted on the other folds
    from kit.teacher import oof_probs_path

    teacher = pd.read_csv(oof_probs_path(fitted.blend_path), dtype={"id": str})[classes_of(tiny_comp)].to_numpy()
    assert np.allclose(teacher, fitted.report.teacher_oof) and not np.allclose(teacher, fitted.report.oof_probs)
    assert np.allclose(teacher.sum(1), 1)
    # its per-fold test rows (what a pseudo-label student of fold k learns) too: fold k's test predictions through a
    # meta-model fitted on the other folds, which never saw fold k's labels
    from kit.ensemble import apply_stack, fit_stack, load_oof
    from kit.infer import predict_folds
    from kit.teacher import blend_test_path

    folds = fitted.report.oof_rows["fold"].to_numpy()
    oof = [load_oof(project / "runs" / "demo", e, read_folds(folds_path(tiny_comp)), x["tta"]).probs
           for e, x in zip(["m", "n"], spec["experiments"])]
    for f in range(int(folds.max()) + 1):
        test = predict_folds(tiny_comp, [(project / "runs" / "demo" / e / f"fold{f}", x["tta"], "")
                                         for e, x in zip(["m", "n"], spec["experiments"])], "cpu")
        meta = fit_stack([p[folds != f] for p in oof], fitted.report.y[folds != f])
        taught = pd.read_csv(blend_test_path(fitted.blend_path, f), dtype={"id": str})[classes_of(tiny_comp)]
        assert np.allclose(taught.to_numpy(), apply_stack(test, meta), atol=1e-6), f
        assert not np.allclose(taught.to_numpy(), apply_stack(test, spec["stack"]), atol=1e-6), f


def test_a_symlinked_competition_folder_keeps_its_runs_under_the_name_it_is_called_by(project, fit_tiny):
    """data/digits -> store/digits-2024: training, the blend and blend.json all use runs/digits/."""
    from kit.demo import build_demo
    from kit.folds import make_folds, write_folds
    from kit.competition import load_competition

    build_demo("store", name="digits-2024", n=60, size=16)
    (project / "data" / "digits").symlink_to(project / "store" / "digits-2024", target_is_directory=True)
    comp = load_competition("digits")
    assert comp.root == project / "data" / "digits"
    write_folds(make_folds(comp, 2), folds_path(comp))
    for k in (0, 1):
        assert fit_tiny("m", k, comp="digits", tta="none").dir == project / "runs" / "digits" / "m" / f"fold{k}"
    done = blend_and_submit("digits", ["m"], BlendConfig(), name="d", device="cpu")
    assert done.blend["competition"] == "digits" and not (project / "runs" / "digits-2024").exists()
