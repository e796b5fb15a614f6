import numpy as np
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


# --- ids and labels are text, as the files spell them -------------------------------------------------------

@pytest.fixture
def text_labels(project):
    """Labels a numeric or NA-converting reader would change: '03', 'None', spaces; ids 'NA' and ' 007'."""
    root = project / "data" / "text"
    write_images(root / "train", ["a.png", "b.png", "NA.png", "c.png", "d.png", "007.png"])
    write_images(root / "test", ["NA.png", "t2.png"])
    (root / "train.csv").write_text("image_id,label\na,03\nb,10\nNA,None\nc,digit 3 \nd,digit 3\n 007,2\n")
    (root / "sample_submission.csv").write_text("image_id,label\nNA,03\nt2,03\n")
    return root


def test_labels_and_ids_are_kept_as_text(text_labels):
    c = load_competition("text")
    assert c.train["id"].tolist() == ["a", "b", "NA", "c", "d", "007"]  # 'NA' is an id, ' 007' is image 007
    assert c.train["label"].tolist() == ["03", "10", "None", "digit 3", "digit 3", "2"]
    assert c.classes == ["03", "10", "2", "None", "digit 3"]  # one 'digit 3'; text order when not all integers
    assert c.targets.tolist() == [0, 1, 3, 4, 4, 2]
    assert c.test["id"].tolist() == ["NA", "t2"] and c.test["path"].str.endswith("NA.png").iloc[0]


def test_integer_labels_keep_their_spelling_and_numeric_order(project):
    root = project / "data" / "ints"
    write_images(root / "train", [f"{i}.png" for i in range(5)])
    (root / "train.csv").write_text("id,label\n0,10\n1,2\n2,03\n3,3\n4,-1\n")
    assert load_competition("ints").classes == ["-1", "2", "03", "3", "10"]  # '03' and '3' are two classes


def test_label_03_is_written_to_the_submission_as_03(text_labels, project):
    from kit.submission import make_submission, write_submission

    c = load_competition("text")
    probs = np.eye(len(c.classes))[[c.classes.index("03"), c.classes.index("None")]]
    path = write_submission(make_submission(c, probs), c, project / "submissions" / "s.csv")
    assert path.read_text().splitlines() == ["image_id,label", "NA,03", "t2,None"]


def test_stripped_spaces_are_counted_for_the_eda(text_labels):
    c = load_competition("text")  # before the import: old kits fail here on the label 'None'
    from kit.eda import class_counts, stripped_spaces

    assert stripped_spaces(c).values.tolist() == [["train.csv", "image_id", 1], ["train.csv", "label", 1]]
    assert class_counts(c.train).set_index("label")["images"].to_dict() == {
        "03": 1, "10": 1, "2": 1, "None": 1, "digit 3": 2}


@pytest.mark.parametrize("cell", ['""', "   "])
def test_a_label_of_only_spaces_is_empty(kaggle, cell):
    (kaggle / "train.csv").write_text(f"image_id,species\n007,x\nb.jpg,{cell}\nc,x\nd,y\n")
    with pytest.raises(KitError, match=r"'species' is empty in 1 row\(s\), first at row\(s\) \[3\]"):
        load_competition("comp")


# --- one file per id ----------------------------------------------------------------------------------------

def test_id_with_two_image_files_is_refused_naming_both(kaggle):
    write_images(kaggle / "train", ["c.jpg"])  # c.png exists: which one is image 'c'?
    with pytest.raises(KitError, match=r"1 id\(s\) in .*train.csv \(column 'image_id'\) match more than one image.*"
                                       r"c\.jpg.*c\.png"):
        load_competition("comp")


def test_imagefolder_file_names_sharing_a_stem_are_refused(project):
    root = project / "data" / "folders"
    write_images(root / "train" / "cat", ["0.png", "0.jpg", "1.png"])
    write_images(root / "train" / "dog", ["2.png"])
    with pytest.raises(KitError, match=r"cat/0\.jpg and .*cat/0\.png .* would both be image id 'cat/0'"):
        load_competition("folders")


def test_test_images_sharing_a_stem_are_refused_without_a_sample(kaggle):
    (kaggle / "sample_submission.csv").unlink()
    write_images(kaggle / "test", ["t1.jpg"])
    with pytest.raises(KitError, match=r"t1\.jpg and .*t1\.png in .*test .* would both be image id 't1'"):
        load_competition("comp")


# --- symlinked folders are followed ---------------------------------------------------------------------------

def test_symlinked_image_folders_are_followed(kaggle, project):
    outside = project / "elsewhere"
    write_images(outside, ["e.png"])
    (kaggle / "train" / "more").symlink_to(outside, target_is_directory=True)
    (kaggle / "train" / "loop").symlink_to(kaggle / "train", target_is_directory=True)  # a loop must end
    df = pd.read_csv(kaggle / "train.csv", dtype=str)
    df.loc[len(df)] = ["more/e", "x"]
    df.to_csv(kaggle / "train.csv", index=False)
    c = load_competition("comp")
    assert c.train["path"].iloc[-1] == str(kaggle / "train" / "more" / "e.png")

    folders = project / "data" / "folders"
    write_images(folders / "train" / "dog", ["d.png"])
    (folders / "train" / "cat").mkdir()
    (folders / "train" / "cat" / "linked").symlink_to(outside, target_is_directory=True)
    c = load_competition("folders")
    assert c.train[["id", "label"]].values.tolist() == [["linked/e", "cat"], ["d", "dog"]]


# --- files kit cannot read get the fix, not a traceback ------------------------------------------------------

@pytest.mark.parametrize("text,message", [
    ("", r"train.csv is empty; it needs a header row"),
    ("image_id,species\n", r"train.csv has a header \(\['image_id', 'species'\]\) but no rows"),
    ("image_id;species\n007;x\nc;y\n", r"train.csv is separated by ';' \(header 'image_id;species'\).*sep=';'"),
    ("image_id\tspecies\n007\tx\nc\ty\n", r"train.csv is separated by '\\t'"),
    ("image_id\n007\nc\n", r"train.csv has a single column 'image_id'; it needs an id column and a label column"),
])
def test_unreadable_train_csv_is_explained(kaggle, text, message):
    (kaggle / "train.csv").write_text(text)
    with pytest.raises(KitError, match=message):
        load_competition("comp")
