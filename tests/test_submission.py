import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit import KitError
from kit.competition import load_competition
from kit.submission import make_submission, validate_submission, write_submission


def distinct_probs(n, k, seed=0):
    """Probabilities with a known argmax per row (every class occurs) and no two entries equal: a reversed or
    shuffled class-to-column mapping, or argmin for argmax, gives other answers."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.5, (n, k))
    top = (3 * np.arange(n) + 1) % k
    p[np.arange(n), top] += 1
    return p / p.sum(1, keepdims=True), top


def test_label_submission_is_the_argmax_class_in_sample_order(tiny_comp, project):
    probs, top = distinct_probs(len(tiny_comp.test), 10)
    sub = make_submission(tiny_comp, probs)
    assert list(sub.columns) == ["image_id", "label"]
    assert sub["image_id"].tolist() == tiny_comp.test["id"].tolist()
    assert [str(v) for v in sub["label"]] == [str(tiny_comp.classes[t]) for t in top] == [str(t) for t in top]
    path = write_submission(sub, tiny_comp, project / "submissions" / "s.csv")
    assert pd.read_csv(path, dtype=str).equals(sub)


def test_probability_columns_follow_the_sample_column_order(tiny_comp):
    order = ["3", "7", "0", "9", "1", "5", "2", "8", "6", "4"]  # not the class order
    sample = pd.read_csv(tiny_comp.sample_submission, dtype=str)[["image_id"]]
    for c in order:
        sample[c] = "0.1"
    sample.to_csv(tiny_comp.sample_submission, index=False)
    probs, _ = distinct_probs(len(tiny_comp.test), 10)
    sub = make_submission(tiny_comp, probs)
    assert list(sub.columns) == ["image_id", *order]
    for j, c in enumerate(tiny_comp.classes):
        np.testing.assert_array_equal(sub[str(c)].to_numpy(), probs[:, j])
    validate_submission(sub, tiny_comp.sample_submission)


@pytest.fixture
def binary(project):
    """An ISIC-2020-like competition (image_name,target) whose sample's target cells are `value`."""
    def make(value, labels=("0", "1")):
        root = project / "data" / "isic"
        for folder, names in (("train", [f"ISIC_{i}" for i in range(4)]), ("test", [f"T_{i}" for i in range(6)])):
            (root / folder).mkdir(parents=True, exist_ok=True)
            for n in names:
                Image.new("RGB", (8, 8)).save(root / folder / f"{n}.jpg")
        pd.DataFrame({"image_name": [f"ISIC_{i}" for i in range(4)], "target": list(labels) * 2}).to_csv(
            root / "train.csv", index=False)
        (root / "sample_submission.csv").write_text(
            "image_name,target\n" + "".join(f"T_{i},{value}\n" for i in range(6)))
        return load_competition("isic")
    return make


P_POSITIVE = np.array([0.9, 0.05, 0.6, 0.3, 0.45, 0.75])  # distinct, and p[:, 0] = 1 - p[:, 1] is too


@pytest.mark.parametrize("value,kind,labels,expected", [
    ("0.0", "auto", ("0", "1"), "probability"),  # ISIC 2020: floats in the sample
    ("0.5", "auto", ("0", "1"), "probability"),
    ("1e-3", "auto", ("1", "0"), "probability"),
    ("0.5", "auto", ("False", "True"), "probability"),  # positive class 'True'
    ("0", "auto", ("0", "1"), "label"),  # '0' is a class name: labels unless overridden
    ("0", "probability", ("0", "1"), "probability"),
    ("0.0", "label", ("0", "1"), "label"),
    ("0.0", "auto", ("0.0", "1.0"), "label"),  # the sample's values are the class names
    ("benign", "auto", ("benign", "malignant"), "label"),
])
def test_binary_target_column_gets_p1_or_labels(binary, value, kind, labels, expected, project):
    comp = binary(value, labels)
    probs = np.column_stack([1 - P_POSITIVE, P_POSITIVE])
    sub = make_submission(comp, probs, **({} if kind == "auto" else {"submission_kind": kind}))
    if expected == "probability":
        np.testing.assert_array_equal(sub["target"].to_numpy(float), P_POSITIVE)  # p[:, 1], the later class
    else:
        assert sub["target"].tolist() == [comp.classes[int(p > 0.5)] for p in P_POSITIVE]
    write_submission(sub, comp, project / "submissions" / "s.csv")


def test_probability_target_needs_two_classes_and_known_kinds(tiny_comp):
    probs, _ = distinct_probs(len(tiny_comp.test), 10)
    with pytest.raises(KitError, match=r"takes one probability per row .* train has 10; pass submission_kind='label'"):
        make_submission(tiny_comp, probs, submission_kind="probability")
    with pytest.raises(KitError, match=r"submission_kind='labels'; use one of \['auto', 'label', 'probability'\]"):
        make_submission(tiny_comp, probs, submission_kind="labels")


def test_sample_ids_keep_their_spelling(binary, project):
    comp = binary("0.5")
    text = (comp.root / "sample_submission.csv").read_text().replace("T_0,", " T_0,").replace("T_1,", "NA,")
    (comp.root / "sample_submission.csv").write_text(text)
    (comp.root / "test" / "T_1.jpg").rename(comp.root / "test" / "NA.jpg")
    comp = load_competition("isic")
    assert comp.test["id"].tolist()[:2] == ["T_0", "NA"]  # the image of ' T_0' is T_0.jpg
    path = write_submission(make_submission(comp, np.column_stack([1 - P_POSITIVE, P_POSITIVE])), comp,
                            project / "submissions" / "s.csv")
    assert path.read_text().splitlines()[1:3] == [" T_0,0.9", "NA,0.05"]


@pytest.mark.parametrize("break_it,message", [
    (lambda s: s.assign(image_id=s["image_id"].where(s.index != 0, "zzzzz")), r"1 missing .* 1 unknown .*zzzzz"),
    (lambda s: s.iloc[::-1], "out of order: row 0"),
    (lambda s: s.iloc[1:], "rows"),
    (lambda s: s.rename(columns={"label": "class"}), "columns"),
    (lambda s: s.assign(label=np.nan), "empty cells"),
])
def test_bad_submissions_are_explained(tiny_comp, break_it, message):
    sub = make_submission(tiny_comp, distinct_probs(len(tiny_comp.test), 10)[0])
    with pytest.raises(KitError, match=message):
        validate_submission(break_it(sub), tiny_comp.sample_submission)


def test_labels_round_trip_through_blend_json_as_spelled(binary, project, monkeypatch):
    import json

    import kit.infer

    binary("03", labels=("03", "3"))  # two classes a reader of numbers would merge into 3
    (project / "blend.json").write_text(json.dumps({"classes": ["03", "3"]}))
    monkeypatch.setattr(kit.infer, "predict_blend", lambda *a, **k: np.column_stack([1 - P_POSITIVE, P_POSITIVE]))
    comp, sub = kit.infer.submission_from_blend("isic", project / "blend.json")
    assert comp.classes == ["03", "3"]
    assert sub["target"].tolist() == ["3" if p > 0.5 else "03" for p in P_POSITIVE]
