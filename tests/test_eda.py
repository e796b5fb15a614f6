"""What the EDA notebook shows (kit.eda): image sizes and modes, what kit converts, unreadable files, class balance,
stripped spaces; and per-class accuracy for the infer notebook."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.eda import (class_counts, image_stats, mode_summary, notes, per_class_accuracy, size_summary,
                     stripped_spaces)


def test_image_stats_and_size_summary_of_a_tiny_competition_with_an_odd_and_a_broken_file(tiny_comp):
    paths = list(tiny_comp.train["path"]) + list(tiny_comp.test["path"])
    odd, broken = tiny_comp.root / "odd.png", tiny_comp.root / "broken.jpg"
    Image.new("RGBA", (8, 4)).save(odd)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(broken)
    broken.write_bytes(broken.read_bytes()[:2000])  # its header reads: only the full decode fails
    stats = image_stats([str(odd), *paths, str(broken)])
    assert stats["path"].tolist() == [str(odd), *paths, str(broken)]  # one row per file, in the order given
    ok, bad = stats.iloc[:-1], stats.iloc[-1]
    assert (ok["error"] == "").all() and bad["error"] != "" and np.isnan(bad["width"])
    assert (ok.iloc[0]["width"], ok.iloc[0]["height"], ok.iloc[0]["mode"], ok.iloc[0]["note"]) == (8, 4, "RGBA",
                                                                                                 "RGBA, put on white")
    assert set(ok.iloc[1:][["width", "height", "mode", "format", "note"]].itertuples(index=False, name=None)) == {
        (16, 16, "RGB", "PNG", "")}
    summary = size_summary(stats)  # the most common size first; the broken file is in no group
    assert summary.to_dict("records") == [{"width": 16, "height": 16, "images": len(paths)},
                                          {"width": 8, "height": 4, "images": 1}]
    assert mode_summary(stats).to_dict("records") == [{"mode": "RGB", "format": "PNG", "images": len(paths)},
                                                      {"mode": "RGBA", "format": "PNG", "images": 1}]


def test_photos_of_hundreds_of_sizes_are_bucketed_by_short_side_and_aspect():
    """400+ distinct width x height (photos) -> a few rows: the short side's bucket and the aspect ratio's."""
    rng = np.random.default_rng(0)
    w = np.r_[rng.integers(500, 700, 300), rng.integers(100, 127, 100), [3000]]
    h = np.r_[rng.integers(384, 420, 300), rng.integers(100, 127, 100), [1000]]
    stats = pd.DataFrame({"width": w, "height": h, "error": "", "mode": "RGB", "format": "JPEG"})
    assert stats.groupby(["width", "height"]).ngroups > 300
    table = size_summary(stats)
    assert list(table.columns) == ["short side", "aspect", "images"] and table["images"].sum() == 401
    rows = {(r["short side"], r["aspect"]): r["images"] for r in table.to_dict("records")}
    assert rows[("384-511 px", "landscape (1.11-1.67)")] + rows.get(("384-511 px", "wide (w/h > 1.67)"), 0) == 300
    small = sum(n for (side, _), n in rows.items() if side == "64-127 px")
    assert small == 100 and rows[("768-1023 px", "wide (w/h > 1.67)")] == 1
    assert table["images"].tolist() == sorted(table["images"], reverse=True) and len(table) <= 8


@pytest.mark.parametrize("args, note", [
    (("a.png", 16, 16, "RGB", "PNG", False), ""),
    (("a.jpg", 16, 16, "RGB", "JPEG", False), ""),  # .jpg is JPEG, .tif is TIFF: nothing to say
    (("a.tif", 16, 16, "RGB", "TIFF", False), ""),
    (("a.png", 16, 16, "RGB", "JPEG", False), "JPEG named .png"),
    (("a.PNG", 16, 16, "L", "PNG", False), "grayscale"),
    (("a.png", 16, 16, "I;16", "PNG", False), "16-bit, scaled to 8"),
    (("a.png", 16, 16, "LA", "PNG", False), "LA, put on white"),
    (("a.png", 16, 16, "P", "PNG", False), "palette"),
    (("a.jpg", 16, 16, "RGB", "JPEG", True), "EXIF-rotated, turned upright"),
    (("a.jpg", 100, 11, "RGB", "JPEG", False), "very large, decoded reduced"),  # above max_pixels=1000
    (("a.jpg", 100, 10, "L", "PNG", True), "PNG named .jpg; grayscale; EXIF-rotated, turned upright"),
])
def test_notes_say_what_kit_does_to_each_file(args, note):
    assert notes(*args, max_pixels=1000) == note


def test_class_counts_are_in_kits_class_order_with_their_share():
    train = pd.DataFrame({"label": ["10", "2", "2", "10", "10", "3"]})
    assert class_counts(train).to_dict("list") == {"label": ["2", "3", "10"], "images": [2, 1, 3],
                                                   "share": [0.3333, 0.1667, 0.5]}  # '2' before '10'


def test_stripped_spaces_lists_each_file_and_column_and_nothing_when_none_were(tiny_comp):
    assert stripped_spaces(tiny_comp).empty and list(stripped_spaces(tiny_comp)) == ["file", "column",
                                                                                    "values stripped"]
    comp = SimpleNamespace(stripped={("train.csv", "label"): 3, ("sample_submission.csv", "id"): 1})
    assert stripped_spaces(comp).values.tolist() == [["train.csv", "label", 3], ["sample_submission.csv", "id", 1]]


def test_per_class_accuracy_reads_the_argmax_per_true_class_and_nan_for_an_absent_class():
    y = np.array([0, 0, 1, 2, 2, 2])
    probs = np.array([[.6, .3, .1], [.2, .7, .1], [.1, .8, .1], [.5, .1, .4], [.1, .1, .8], [.2, .2, .6]])
    table = per_class_accuracy(y, probs, ["a", "b", "c", "d"])
    assert table["class"].tolist() == ["a", "b", "c", "d"] and table["images"].tolist() == [2, 1, 3, 0]
    assert table["accuracy"].tolist()[:3] == pytest.approx([0.5, 1.0, 2 / 3]) and np.isnan(table["accuracy"][3])
