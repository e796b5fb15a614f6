import pandas as pd
import pytest
from PIL import Image

from kit import KitError
from kit.competition import load_competition


def write_images(folder, names, size=8):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", (size, size), (len(n) * 20 % 255, 0, 0)).save(folder / n)


@pytest.fixture
def kaggle(project):
    root = project / "data" / "comp"
    write_images(root / "train", ["007.png", "b.jpg", "c.png", "d.png"])
    write_images(root / "test", ["t1.png", "t2.png"])
    pd.DataFrame({"image_id": ["007", "b.jpg", "c", "d"], "species": ["x", "y", "x", "y"]}).to_csv(
        root / "train.csv", index=False)
    pd.DataFrame({"image_id": ["t2", "t1"], "species": ["x", "x"]}).to_csv(root / "sample_submission.csv", index=False)
    return root


def test_kaggle_layout_autodetects_columns_and_resolves_extensions(kaggle):
    c = load_competition("comp")
    assert (c.id_col, c.label_col, c.classes) == ("image_id", "species", ["x", "y"])
    assert c.train["id"].tolist() == ["007", "b.jpg", "c", "d"]  # leading zeros kept
    assert c.train["path"].str.endswith(("007.png", "b.jpg", "c.png", "d.png")).all()
    assert c.test["id"].tolist() == ["t2", "t1"]  # sample_submission order
    assert c.targets.tolist() == [0, 1, 0, 1]


def test_missing_column_names_the_columns_and_the_fix(kaggle):
    with pytest.raises(KitError, match=r"no column 'label'; columns are \['image_id', 'species'\]; pass label_col="):
        load_competition("comp", label_col="label")


def test_unguessable_label_column_asks_for_label_col(kaggle):
    df = pd.read_csv(kaggle / "train.csv", dtype=str).rename(columns={"species": "kind"}).assign(extra=1)
    df.to_csv(kaggle / "train.csv", index=False)
    with pytest.raises(KitError, match=r"cannot tell which column is the label; columns are .*pass label_col="):
        load_competition("comp")
    assert load_competition("comp", label_col="kind").classes == ["x", "y"]


def test_id_without_image_is_named(kaggle):
    df = pd.read_csv(kaggle / "train.csv", dtype=str)
    df.loc[len(df)] = ["ghost", "x"]
    df.to_csv(kaggle / "train.csv", index=False)
    with pytest.raises(KitError, match=r"1 id\(s\) in .*train.csv \(column 'image_id'\) have no image.*'ghost'"):
        load_competition("comp")


def test_nan_labels_and_duplicate_ids_are_reported(kaggle):
    df = pd.read_csv(kaggle / "train.csv", dtype=str)
    df.loc[1, "species"] = None
    df.to_csv(kaggle / "train.csv", index=False)
    with pytest.raises(KitError, match=r"'species' is empty in 1 row\(s\), first at row\(s\) \[3\]"):
        load_competition("comp")
    df.loc[1, "species"] = "y"
    df.loc[1, "image_id"] = "c"
    df.to_csv(kaggle / "train.csv", index=False)
    with pytest.raises(KitError, match=r"duplicate id\(s\).*'c'"):
        load_competition("comp")


def test_imagefolder_layout(project):
    root = project / "data" / "folders"
    write_images(root / "train" / "cat", ["1.png", "2.png"])
    write_images(root / "train" / "dog", ["1.png", "3.png"])
    write_images(root / "test", ["a.png"])
    c = load_competition("folders")
    assert c.classes == ["cat", "dog"]
    assert sorted(c.train["id"]) == ["cat/1", "cat/2", "dog/1", "dog/3"]  # same file name in two classes
    assert c.test["id"].tolist() == ["a"]


def test_unknown_competition_says_where_it_looked(project):
    with pytest.raises(KitError, match="competition 'nope' not found; looked in"):
        load_competition("nope")
