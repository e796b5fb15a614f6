import pandas as pd
import pytest

from kit import KitError
from kit.competition import Competition
from kit.folds import attach_folds, folds_hash, make_folds, read_folds, write_folds


def comp(n=60, classes=3, groups=False):
    train = pd.DataFrame({"id": [f"i{i}" for i in range(n)], "label": [i % classes for i in range(n)],
                          "path": ""})
    if groups:
        train["group"] = [i // 4 for i in range(n)]
    return Competition(None, train, pd.DataFrame(), list(range(classes)), None, "id", "label")


def test_stratified_folds_are_balanced_and_seed_stable():
    f = make_folds(comp(), n_folds=5, seed=1)
    counts = f.groupby(["fold", "label"]).size().unstack()
    assert (counts == 4).all().all()
    assert f.equals(make_folds(comp(), n_folds=5, seed=1))
    assert folds_hash(f) != folds_hash(make_folds(comp(), n_folds=5, seed=2))


def test_group_folds_keep_each_group_in_one_fold():
    f = make_folds(comp(groups=True), n_folds=3).merge(comp(groups=True).train[["id", "group"]])
    assert (f.groupby("group")["fold"].nunique() == 1).all()


def test_hash_ignores_row_order():
    f = make_folds(comp(), n_folds=3)
    assert folds_hash(f) == folds_hash(f.sample(frac=1, random_state=0))


def test_folds_are_written_once(tmp_path):
    p = tmp_path / "folds.csv"
    f = make_folds(comp(), n_folds=3, seed=0)
    h = write_folds(f, p)
    assert write_folds(f, p) == h  # same folds: fine
    with pytest.raises(KitError, match="already exists with other folds"):
        write_folds(make_folds(comp(), n_folds=3, seed=9), p)
    assert folds_hash(read_folds(p)) == h


def test_edited_folds_file_is_detected(tmp_path):
    p = tmp_path / "folds.csv"
    f = make_folds(comp(), n_folds=3)
    write_folds(f, p)
    f.loc[0, "fold"] = (f.loc[0, "fold"] + 1) % 3
    f.to_csv(p, index=False)
    with pytest.raises(KitError, match="edited after it was written"):
        read_folds(p)


def test_too_small_class_is_explained():
    c = comp(n=12, classes=3)
    c.train.loc[c.train["label"] == 2, "label"] = [2, 2, 1, 1]
    with pytest.raises(KitError, match=r"class\(es\) \[2\] have fewer images \(\[2\]\) than n_folds=3; use fewer"):
        make_folds(c, n_folds=3)


@pytest.mark.parametrize("n", [0, 1, 2.5, "5", True])
def test_fewer_than_two_folds_is_refused_by_name(n):
    with pytest.raises(KitError, match=r"n_folds=.*at least 2 folds"):
        make_folds(comp(), n_folds=n)


def test_train_ids_missing_from_folds_are_reported():
    c = comp()
    f = make_folds(c, n_folds=3).iloc[1:]
    with pytest.raises(KitError, match=r"1 train id\(s\) are not in folds.csv"):
        attach_folds(c, f)


def test_relabelling_one_row_changes_the_hash():
    f = make_folds(comp(), n_folds=3)
    relabelled = f.copy()
    relabelled.loc[5, "label"] = (relabelled.loc[5, "label"] + 1) % 3
    assert folds_hash(relabelled) != folds_hash(f)


def test_labels_are_read_back_as_written(tmp_path):
    p = tmp_path / "folds.csv"
    f = pd.DataFrame({"id": ["a", "b", "c", "NA"], "label": ["03", "None", "03", "x"], "fold": [0, 1, 0, 1]})
    h = write_folds(f, p)
    back = read_folds(p)  # no "edited after it was written": the labels hash as written
    assert back["label"].tolist() == ["03", "None", "03", "x"] and back["id"].tolist()[-1] == "NA"
    assert folds_hash(back) == h


def test_folds_json_of_an_older_kit_is_explained(tmp_path):
    import hashlib
    import json

    p = tmp_path / "folds.csv"
    f = make_folds(comp(), n_folds=3)
    write_folds(f, p)
    pairs = f[["id", "fold"]].astype(str).sort_values("id")  # the old hash: ids and folds only
    old = hashlib.sha256("\n".join(pairs["id"] + "," + pairs["fold"]).encode()).hexdigest()[:16]
    p.with_suffix(".json").write_text(json.dumps({"hash": old}))
    with pytest.raises(KitError, match="folds.json holds a hash of ids and folds only, written by an older kit"):
        read_folds(p)
