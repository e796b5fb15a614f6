"""A blend as a teacher (kit.teacher): distillation from its OOF probabilities, pseudo-labels from its test
predictions. Both reach only a fold's training side."""

import numpy as np
import pandas as pd
import pytest

import kit.train
from kit import KitError
from kit.blendconfig import BlendConfig
from kit.config import TrainConfig
from kit.folds import folds_hash, folds_path, read_folds
from kit.infer import blend_and_submit
from kit.teacher import oof_probs_path, teacher_probs, blend_test_path
from kit.train import fit_fold

TINY = {"model": "test_resnet", "img_size": 16, "epochs": 1, "batch_size": 32, "tta": "none"}


@pytest.fixture
def teacher_blend(tiny_comp, project, fit_tiny):
    """The tiny competition's experiment 't' on all 3 folds, blended: submissions/t.blend.json with its
    t.oof.csv and t.test.csv."""
    for k in range(3):
        fit_tiny("t", k, tta="none")
    done = blend_and_submit("demo", ["t"], BlendConfig(), name="t", device="cpu")
    assert oof_probs_path(done.blend_path).is_file() and blend_test_path(done.blend_path).is_file()
    assert all(blend_test_path(done.blend_path, k).is_file() for k in range(3))
    return done.blend_path


@pytest.fixture
def datasets(monkeypatch):
    """Every ImageDataset fit_fold builds, in order: the training side's, then the validation side's."""
    made, real = [], kit.train.ImageDataset

    def spy(paths, targets, *a, **k):
        made.append((list(paths), None if targets is None else np.asarray(targets)))
        return real(paths, targets, *a, **k)

    monkeypatch.setattr(kit.train, "ImageDataset", spy)
    return made


def test_the_blend_writes_its_oof_and_test_probabilities_beside_it(teacher_blend, tiny_comp):
    oof = pd.read_csv(oof_probs_path(teacher_blend), dtype={"id": str})
    test = pd.read_csv(blend_test_path(teacher_blend), dtype={"id": str})
    classes = [str(c) for c in tiny_comp.classes]
    assert sorted(oof["id"]) == sorted(tiny_comp.train["id"]) and test["id"].tolist() == tiny_comp.test["id"].tolist()
    assert np.allclose(oof[classes].sum(axis=1), 1, atol=1e-5) and np.allclose(test[classes].sum(axis=1), 1, atol=1e-5)
    folds = read_folds(folds_path(tiny_comp)).set_index("id")
    assert (oof["fold"].to_numpy() == folds.loc[oof["id"], "fold"].to_numpy()).all()
    assert set(oof["folds_hash"]) == {folds_hash(read_folds(folds_path(tiny_comp)))}


def test_pseudo_labelled_test_images_join_the_training_side_only(teacher_blend, tiny_comp, project, datasets):
    result = fit_fold(TrainConfig(exp="p", pseudo=str(teacher_blend), pseudo_threshold=0.01, **TINY))
    (train_paths, targets), (val_paths, _) = datasets[0], datasets[1]
    test_paths = set(tiny_comp.test["path"])
    assert test_paths <= set(train_paths)  # threshold 0.01: every test image is confident enough
    assert not test_paths & set(val_paths)  # never validated on
    assert not set(result.oof["id"]) & set(tiny_comp.test["id"])  # nor in the OOF
    assert len(train_paths) == len(targets) and targets.dtype == np.float32
    pseudo = targets[-len(test_paths):]
    # fold 0's student learns from the blend of the fold-0 models only: they never trained on its validation rows
    probs = pd.read_csv(blend_test_path(teacher_blend, 0), dtype={"id": str})[[str(c) for c in tiny_comp.classes]]
    every = pd.read_csv(blend_test_path(teacher_blend), dtype={"id": str})[[str(c) for c in tiny_comp.classes]]
    assert not np.allclose(probs.to_numpy(), every.to_numpy())  # not the blend of every fold's model
    smoothing = 0.1  # TrainConfig's default label_smoothing: the top class, smoothed like a label
    assert np.allclose(pseudo.argmax(1), probs.to_numpy().argmax(1)) and np.isclose(pseudo.max(), 1 - smoothing +
                                                                                     smoothing / 10)
    assert result.dir.joinpath("config.json").read_text().count(str(teacher_blend)) == 1  # recorded
    datasets.clear()
    fit_fold(TrainConfig(exp="none", pseudo=str(teacher_blend), pseudo_threshold=1.0, **TINY))
    assert not test_paths & set(datasets[0][0])  # nothing that sure: no test image added


def test_the_distillation_teacher_speaks_for_a_row_only_from_models_that_held_it_out(teacher_blend, tiny_comp,
                                                                                      project, datasets):
    classes = [str(c) for c in tiny_comp.classes]
    fit_fold(TrainConfig(exp="d", distill=str(teacher_blend), distill_weight=1.0, label_smoothing=0.0, **TINY))
    train_paths, targets = datasets[0]
    oof = pd.read_csv(oof_probs_path(teacher_blend), dtype={"id": str}).set_index("id")
    ids = tiny_comp.train.set_index("path").loc[train_paths, "id"]
    folds = read_folds(folds_path(tiny_comp)).set_index("id").loc[ids, "fold"]
    assert (folds != 0).all()  # fold 0's training side
    assert np.allclose(targets, oof.loc[ids, classes].to_numpy(), atol=1e-6)  # weight 1: the teacher alone
    assert (oof.loc[ids, "fold"].to_numpy() == folds.to_numpy()).all()  # each row predicted by its own fold
    # a teacher file whose rows are not out-of-fold for these folds is refused
    tampered = oof.reset_index()
    tampered.loc[0, "fold"] = (tampered.loc[0, "fold"] + 1) % 3
    tampered.to_csv(oof_probs_path(teacher_blend), index=False)
    rows = tiny_comp.train.merge(read_folds(folds_path(tiny_comp))[["id", "fold"]], on="id")
    with pytest.raises(KitError, match=r"gives id .* as fold .*, folds.csv as fold .*: not out-of-fold"):
        teacher_probs(str(teacher_blend), rows["id"], rows["fold"], classes, folds_hash(read_folds(
            folds_path(tiny_comp))))
    with pytest.raises(KitError, match="was made on other folds than folds.csv"):
        teacher_probs(str(teacher_blend), rows["id"], rows["fold"], classes, "another-hash")


def test_half_teacher_half_label(teacher_blend, tiny_comp, project, datasets):
    fit_fold(TrainConfig(exp="h", distill=str(teacher_blend), distill_weight=0.5, label_smoothing=0.0, **TINY))
    train_paths, targets = datasets[0]
    classes = [str(c) for c in tiny_comp.classes]
    rows = tiny_comp.train.set_index("path").loc[train_paths]
    oof = pd.read_csv(oof_probs_path(teacher_blend), dtype={"id": str}).set_index("id").loc[rows["id"], classes]
    onehot = np.eye(len(classes))[rows["label"].map({c: i for i, c in enumerate(classes)})]
    assert np.allclose(targets, 0.5 * onehot + 0.5 * oof.to_numpy(), atol=1e-6)


def test_soft_targets_refuse_mixup_and_a_path_that_is_no_blend(tiny_comp, project):
    with pytest.raises(KitError, match="set mixup=0 and cutmix=0"):
        fit_fold(TrainConfig(exp="m", distill="submissions/x.blend.json", mixup=0.2, **TINY))
    with pytest.raises(KitError, match=r"is not a <name>.blend.json written by kit blend"):
        fit_fold(TrainConfig(exp="m", pseudo="submissions/x.csv", **TINY))
    with pytest.raises(KitError, match=r"x.oof.csv does not exist; `kit blend` writes it"):
        fit_fold(TrainConfig(exp="m", distill="submissions/x.blend.json", **TINY))
