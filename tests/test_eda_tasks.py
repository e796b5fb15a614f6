"""What the EDA notebook shows for each task (kit.eda): a multi-label task's labels per image and label
co-occurrence, an ordinal task's grade histogram, images per group, per-class counts per fold; and the notebook
itself run on a tiny multi-label and ordinal demo."""

import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from kit import KitError
from kit.competition import Competition
from kit.eda import (class_counts, fold_counts, grade_counts, group_sizes, label_cooccurrence, label_counts,
                     labels_per_image, one_row_per_label)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# 5 images, classes a, b, c: a on 3 images, b on 2, c on 1, one image with none
MATRIX = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 0], [0, 0, 0], [0, 0, 0]])


def comp(task: str, labels: list, classes: list, matrix=None, groups=None) -> Competition:
    train = pd.DataFrame({"id": [f"i{k}" for k in range(len(labels))], "label": labels,
                          "path": [f"/x/i{k}.png" for k in range(len(labels))]})
    if groups is not None:
        train["group"] = groups
    return Competition(Path("/x"), train, train[["id", "path"]], classes, None, "id", "label", {}, task,
                       None if matrix is None else np.asarray(matrix))


def multilabel() -> Competition:
    return comp("multilabel", ["a b", "a c", "a b", "", ""], ["a", "b", "c"], MATRIX)


def test_label_cooccurrence_counts_the_images_carrying_both_labels():
    table = label_cooccurrence(MATRIX, ["a", "b", "c"])
    # by hand: a with b on images 0 and 2, a with c on 1, b never with c; the diagonal is each label's images
    assert table.to_dict("index") == {"a": {"a": 3, "b": 2, "c": 1}, "b": {"a": 2, "b": 2, "c": 0},
                                      "c": {"a": 1, "b": 0, "c": 1}}


def test_label_cooccurrence_keeps_the_most_frequent_labels_in_class_order():
    m = np.array([[0, 1, 1], [0, 1, 1], [1, 0, 1]])  # x on 1 image, y on 2, z on 3
    table = label_cooccurrence(m, ["x", "y", "z"], top=2)
    assert list(table.index) == list(table.columns) == ["y", "z"]
    assert table.loc["y", "z"] == 2 and table.loc["z", "z"] == 3
    with pytest.raises(KitError, match=r"\(images, 2\)"):
        label_cooccurrence(m, ["x", "y"])


def test_labels_per_image_counts_images_with_none_one_and_two_labels():
    assert labels_per_image(MATRIX).to_dict("list") == {"labels": [0, 1, 2], "images": [2, 0, 3],
                                                        "share": [0.4, 0.0, 0.6]}


def test_grade_counts_run_from_the_lowest_grade_to_the_highest_in_numeric_order_with_empty_grades():
    table = grade_counts(pd.DataFrame({"label": ["10", "2", "2", "03", "3", "1"]}))
    assert table["grade"].tolist() == list(range(1, 11))  # '10' after '2', grades 4..9 present with 0
    assert table.set_index("grade")["images"].to_dict() == {1: 1, 2: 2, 3: 2, **{g: 0 for g in range(4, 10)}, 10: 1}
    assert table["share"].sum() == pytest.approx(1)
    with pytest.raises(KitError, match="integer grades"):
        grade_counts(pd.DataFrame({"label": ["1", "cat"]}))


def test_label_counts_fit_the_task():
    ml = label_counts(multilabel())
    assert ml.to_dict("list") == {"label": ["a", "b", "c"], "images": [3, 2, 1], "share": [0.6, 0.4, 0.2]}
    ordinal = label_counts(comp("ordinal", ["0", "2", "2"], ["0", "2"]))
    assert ordinal[["grade", "images"]].to_dict("list") == {"grade": [0, 1, 2], "images": [1, 0, 2]}
    labels = ["10", "2", "2", "cat"]
    single = label_counts(comp("multiclass", labels, ["10", "2", "cat"]))
    pd.testing.assert_frame_equal(single, class_counts(comp("multiclass", labels, []).train))


def test_one_row_per_label_repeats_an_image_once_per_label_it_carries():
    rows = one_row_per_label(multilabel())
    assert list(zip(rows["id"], rows["label"])) == [("i0", "a"), ("i0", "b"), ("i1", "a"), ("i1", "c"),
                                                    ("i2", "a"), ("i2", "b")]
    assert rows.set_index("id")["path"].to_dict() == {"i0": "/x/i0.png", "i1": "/x/i1.png", "i2": "/x/i2.png"}
    single = comp("multiclass", ["a", "b"], ["a", "b"])
    assert one_row_per_label(single) is single.train


def test_group_sizes_count_groups_per_size_and_those_holding_a_positive():
    labels, groups = ["1", "0", "0", "0", "1", "0"], ["p1", "p1", "p2", "p2", "p3", "p4"]
    table = group_sizes(comp("binary", labels, ["0", "1"], groups=groups))
    # p3 and p4 have one image (p3 positive), p1 and p2 two (p1 positive)
    assert table.to_dict("list") == {"images": [1, 2], "groups": [2, 2], "with_positive": [1, 1]}
    table = group_sizes(comp("multiclass", labels, ["0", "1"], groups=groups))
    assert table.to_dict("list") == {"images": [1, 2], "groups": [2, 2]}  # no positive class to count
    with pytest.raises(KitError, match="group column"):
        group_sizes(comp("binary", labels, ["0", "1"]))


def test_fold_counts_count_each_label_per_fold_in_class_order():
    folds = pd.DataFrame({"id": ["i4", "i3", "i2", "i1", "i0"], "fold": [1, 1, 0, 1, 0]})  # any row order
    table = fold_counts(multilabel(), folds)
    # fold 0: i0 (a b), i2 (a b); fold 1: i1 (a c), i3, i4 (none)
    assert table.to_dict("index") == {"a": {0: 2, 1: 1}, "b": {0: 2, 1: 0}, "c": {0: 0, 1: 1}}
    single = comp("multiclass", ["10", "2", "2"], ["2", "10"])
    table = fold_counts(single, pd.DataFrame({"id": ["i0", "i1", "i2"], "fold": [0, 0, 1]}))
    assert table.to_dict("index") == {"2": {0: 1, 1: 1}, "10": {0: 1, 1: 0}}
    with pytest.raises(KitError, match="no fold"):
        fold_counts(single, pd.DataFrame({"id": ["i0", "i1"], "fold": [0, 1]}))


def figures_per_cell(path: Path) -> list[tuple[str, int]]:
    """(first line of the code, figures it shows) per code cell that shows one."""
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    return [(c.source.splitlines()[0], n) for c in cells
            if (n := sum("image/png" in o.get("data", {}) for o in c.outputs))]


def tables(path: Path) -> str:
    return "\n".join(o["data"]["text/html"] for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"
                     for o in c.outputs if "text/html" in o.get("data", {}))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["multilabel", "ordinal"])
def test_the_eda_notebook_shows_what_fits_the_task(task, project, monkeypatch):
    from kit.demo import build_demo
    from kit.notebook import run_notebook

    monkeypatch.setenv("MPLBACKEND", "Agg")
    build_demo("data", n=60, size=16, task=task)
    params = {"n_folds": 2, "img_size": 16, **({"metric": "qwk"} if task == "ordinal" else {})}  # qwk: ordinal
    out = run_notebook(NOTEBOOKS / "eda.py", project / "runs" / "eda.ipynb", params, log=False)
    shown = figures_per_cell(out)
    html = tables(out)
    if task == "multilabel":
        # images per label, labels per image and the co-occurrence heatmap, image sizes, a grid per label, the
        # augmentation preview
        assert shown == [("counts = eda.label_counts(c)", 1), ('if c.task == "multilabel":', 2),
                         ('stats = eda.image_stats(list(c.train["path"]) + list(c.test["path"]))', 1),
                         ("plots.samples_per_class(eda.one_row_per_label(c), per_class=8);  # multi-label: a row "
                          "per label", 1), ("geometry = eval_geometry(resolve_model(model)[0], resize, crop_pct)  # "
                                            "(mode, crop_pct) as training will use", 1)]
        assert "<th>labels</th>" in html and not re.search(r"<th>\d \d</th>", html)  # per label, no '3 7' rows
    else:
        assert [n for _, n in shown] == [1, 1, 1, 1]  # grade histogram, image sizes, samples per grade, preview
        assert "<th>grade</th>" in html and "ordinal task" in str(nbformat.read(out, as_version=4).cells)
    assert (project / "data" / "demo" / "folds.csv").is_file()
