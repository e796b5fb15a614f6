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


def stripes(h=100, w=200):
    """A wide image: red left quarter, green middle half, blue right quarter."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 4, 0] = img[:, w // 4: 3 * w // 4, 1] = img[:, 3 * w // 4:, 2] = 255
    return img


def made_square(mode, crop_pct=1.0, size=64):
    import albumentations as A

    from kit.augment import geometry

    return A.Compose(geometry(size, mode, crop_pct, mean=(0.5, 0.5, 0.5)))(image=stripes())["image"]


def test_squash_stretches_the_whole_image_into_the_square():
    out = made_square("squash")
    assert out.shape == (64, 64, 3)
    assert out[:, :14, 0].min() == 255 and out[:, 18:46, 1].min() == 255 and out[:, 50:, 2].min() == 255


def test_crop_scales_the_short_side_and_keeps_the_centre():
    # 100x200, short side to 64 / 1.0: 64x128, its central 64 columns are the original's 50..150: all green
    whole_short_side = made_square("crop", 1.0)
    assert whole_short_side.shape == (64, 64, 3)
    assert whole_short_side[..., 1].min() == 255 and whole_short_side[..., [0, 2]].max() == 0
    # crop_pct 0.5: short side to 128 (128x256), the centre 64x64 is a quarter of the original's height
    assert np.array_equal(made_square("crop", 0.5), whole_short_side)  # still green: the aspect ratio is kept
    # a tall image: the crop cuts rows, not columns (the stripes run top to bottom)
    import albumentations as A

    from kit.augment import geometry

    tall = np.ascontiguousarray(stripes(200, 100))
    out = A.Compose(geometry(64, "crop", 1.0))(image=tall)["image"]
    assert out.shape == (64, 64, 3) and out[:, :14, 0].min() == 255 and out[:, 50:, 2].min() == 255


def test_letterbox_fits_the_long_side_and_pads_with_the_mean_colour():
    out = made_square("letterbox")
    assert out.shape == (64, 64, 3)
    pad = np.full(3, 128, np.uint8)  # mean 0.5: normalizes to zero
    assert (out[:16] == pad).all() and (out[48:] == pad).all()  # 200x100 -> 64x32, 16 rows above and below
    band = out[16:48]
    assert band[:, :14, 0].min() == 255 and band[:, 18:46, 1].min() == 255 and band[:, 50:, 2].min() == 255


@pytest.mark.parametrize("mode", ["squash", "crop", "letterbox"])
def test_the_none_preset_trains_on_the_image_evaluation_sees(mode):
    img = stripes()
    train = train_transform("none", 64, seed=0, resize=mode, crop_pct=0.8)(image=img)["image"]
    assert np.array_equal(train, eval_transform(64, resize=mode, crop_pct=0.8)(image=img)["image"])


def test_an_unknown_resize_mode_and_a_bad_crop_pct_are_refused():
    with pytest.raises(KitError, match="unknown resize mode 'centre'"):
        eval_transform(32, resize="centre")
    with pytest.raises(KitError, match=r"crop_pct=0 should be in \(0, 1\]"):
        eval_transform(32, resize="crop", crop_pct=0)
