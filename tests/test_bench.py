"""The bench scripts stay runnable: each section on a tiny size gives well-formed rows. No timing is
asserted here (speed is measured by `make bench`, never in tests)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import blend_fit  # noqa: E402
import common  # noqa: E402
import infer_speed  # noqa: E402
import sam_cost  # noqa: E402
import tta_speed  # noqa: E402


@pytest.fixture(autouse=True)
def headless(monkeypatch):
    monkeypatch.setenv("KIT_HEADLESS", "1")


@pytest.mark.slow  # ~50 s on 2 cores: half of `make test-fast` alone; CI runs it
def test_sections_give_rows_with_ratios_and_targets():
    rows = (blend_fit.main(rows=500, growth=2) + tta_speed.main(size=32, batch=2, batches=1, rounds=1)
            + sam_cost.main(size=32, batch=2, updates=2, rounds=1))
    assert [r.ratio is None for r in rows[:3]] == [True, False, False]  # 'mean' has no growth ratio
    tta, sam = rows[3], rows[4]
    assert tta.ratio > 0 and tta.target == ">= 0.95" and tta.met == (tta.ratio >= 0.95)
    assert sam.ratio > 0 and sam.target == "<= 2.1" and sam.met == (sam.ratio <= 2.1)
    table = common.markdown(rows).splitlines()
    assert len(table) == 2 + len(rows) and all(line.count("|") == 7 for line in table)


def test_photo_dataset_is_imagefolder_layout_of_real_jpegs(tmp_path):
    from PIL import Image

    root = common.photo_dataset(12, side=64, root=tmp_path)
    paths, y = common.image_files(root, 100)
    assert len(paths) == 12 and sorted(set(y)) == list(range(10))
    with Image.open(paths[0]) as im:
        assert im.format == "JPEG" and im.size == (64, 64)
    assert common.photo_dataset(12, side=64, root=tmp_path) == root  # made once


def test_interleaved_takes_the_median_of_alternating_rounds():
    calls = []
    values = iter([0, 0, 5, 1, 3, 2, 4, 3])  # warmup a, warmup b, then a, b, a, b, a, b

    def fn(name):
        def run():
            calls.append(name)
            return next(values)
        return run

    out = common.interleaved({"a": fn("a"), "b": fn("b")}, rounds=3)
    assert calls == ["a", "b"] * 4 and out == {"a": 4, "b": 2}


def test_inference_section_compares_one_pass_with_a_pass_per_fold_on_the_same_predictions(tmp_path):
    (row,) = infer_speed.main(images=3, batch=2, rounds=1, root=tmp_path)
    assert row.ratio > 0 and row.target == ">= 2.0" and row.met == (row.ratio >= 2.0)
    paths, _ = common.image_files(tmp_path, 3)
    models = infer_speed.fold_models()
    one, per_fold = infer_speed.one_pass(models, paths, 2), infer_speed.pass_per_fold(models, paths, 2)
    assert len(one) == len(per_fold) == 10 and all(abs(a - b).max() < 1e-6 for a, b in zip(one, per_fold))

