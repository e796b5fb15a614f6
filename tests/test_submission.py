import numpy as np
import pandas as pd
import pytest

from kit import KitError
from kit.submission import make_submission, validate_submission, write_submission


def test_label_submission_is_valid_and_in_sample_order(tiny_comp, project):
    probs = np.eye(10)[np.arange(len(tiny_comp.test)) % 10]
    sub = make_submission(tiny_comp, probs)
    assert list(sub.columns) == ["image_id", "label"]
    assert sub["image_id"].tolist() == tiny_comp.test["id"].tolist()
    assert sub["label"].tolist() == [i % 10 for i in range(len(sub))]
    path = write_submission(sub, tiny_comp, project / "submissions" / "s.csv")
    assert pd.read_csv(path).shape == sub.shape


def test_probability_submission_when_sample_has_class_columns(tiny_comp):
    sample = pd.read_csv(tiny_comp.sample_submission, dtype=str)[["image_id"]]
    for c in range(10):
        sample[str(c)] = 0.1
    sample.to_csv(tiny_comp.sample_submission, index=False)
    sub = make_submission(tiny_comp, np.full((len(tiny_comp.test), 10), 0.1))
    assert list(sub.columns) == ["image_id", *map(str, range(10))]
    validate_submission(sub, tiny_comp.sample_submission)


@pytest.mark.parametrize("break_it,message", [
    (lambda s: s.assign(image_id=s["image_id"].where(s.index != 0, "zzzzz")), r"1 missing .* 1 unknown .*zzzzz"),
    (lambda s: s.iloc[::-1], "out of order: row 0"),
    (lambda s: s.iloc[1:], "rows"),
    (lambda s: s.rename(columns={"label": "class"}), "columns"),
    (lambda s: s.assign(label=np.nan), "empty cells"),
])
def test_bad_submissions_are_explained(tiny_comp, break_it, message):
    sub = make_submission(tiny_comp, np.eye(10)[np.zeros(len(tiny_comp.test), int)])
    with pytest.raises(KitError, match=message):
        validate_submission(break_it(sub), tiny_comp.sample_submission)
