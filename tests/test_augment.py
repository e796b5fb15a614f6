"""kit/augment.py: presets by name, what each does to an image, eval transforms that change nothing but size."""

import numpy as np
import pytest

from kit import KitError
from kit.augment import PRESETS, eval_transform, preview, train_transform


def image(h=40, w=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_gives_a_normalized_square_of_the_size(preset):
    out = train_transform(preset, 32, seed=0)(image=image())["image"]
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    assert -5 < out.mean() < 5  # normalized, not 0..255


def test_presets_other_than_none_change_the_image_and_a_seed_repeats_them():
    img = image()
    plain = train_transform("none", 32, seed=0)(image=img)["image"]
    outs = [train_transform("medium", 32, seed=s)(image=img)["image"] for s in (1, 1, 2)]
    assert np.array_equal(outs[0], outs[1])  # same seed, same draw
    assert not np.array_equal(outs[0], outs[2])  # another seed, another draw
    assert not np.array_equal(outs[0], plain)  # and the preset did something


def test_eval_transform_is_deterministic_and_only_resizes_and_normalizes():
    img = image()
    t = eval_transform(32)
    a, b = t(image=img)["image"], t(image=img)["image"]
    assert np.array_equal(a, b) and a.shape == (32, 32, 3)
    flat = np.full((40, 56, 3), 128, np.uint8)
    out = eval_transform(32, mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0))(image=flat)["image"]
    assert np.allclose(out, 128 / 255 - 0.5, atol=1e-3)  # a flat image stays flat: no crop, flip or jitter


@pytest.mark.parametrize("call", [lambda: train_transform("lihgt", 32), lambda: preview(image(), "lihgt", 32)])
def test_an_unknown_preset_names_the_choices(call):
    with pytest.raises(KitError, match=r"unknown augment preset 'lihgt'; choose one of \['light', 'medium'"):
        call()


def test_preview_gives_n_augmented_views_of_the_size():
    views = preview(image(), "light", 32, n=4)
    assert len(views) == 4 and all(v.shape[:2] == (32, 32) for v in views)
