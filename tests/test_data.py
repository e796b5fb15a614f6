"""Every image a competition throws at us: decoded to HWC uint8 RGB, or refused with the file named."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

import kit.data
from kit import KitError
from kit.data import read_image, scan_images
from kit.eda import image_stats


def save(path, im, fmt=None, **kw):
    im.save(path, format=fmt, **kw)
    return str(path)


def test_png_named_jpg_and_webp(tmp_path):
    a = save(tmp_path / "a.jpg", Image.new("RGB", (5, 4), (10, 20, 30)), "PNG")
    b = save(tmp_path / "b.webp", Image.new("RGB", (5, 4), (10, 20, 30)), "WEBP", lossless=True)
    for p in (a, b):
        out = read_image(p)
        assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and tuple(out[0, 0]) == (10, 20, 30)
    jpg = save(tmp_path / "c.jpg", Image.new("RGB", (5, 4)), "JPEG")
    tif = save(tmp_path / "d.tif", Image.new("RGB", (5, 4)), "TIFF")
    assert image_stats([a, b, jpg, tif])["note"].tolist() == ["PNG named .jpg", "", "", ""]


def test_grayscale_rgba_palette_and_16_bit(tmp_path):
    gray = read_image(save(tmp_path / "g.png", Image.new("L", (3, 3), 200)))
    assert gray.shape == (3, 3, 3) and (gray == 200).all()
    rgba = Image.new("RGBA", (2, 2), (255, 0, 0, 0))  # fully transparent red
    assert (read_image(save(tmp_path / "t.png", rgba)) == 255).all()  # transparent -> white, not red/black
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([0, 0, 255] * 256)
    assert tuple(read_image(save(tmp_path / "p.png", pal))[0, 0]) == (0, 0, 255)
    deep = Image.fromarray(np.full((2, 2), 65535, np.uint16))
    assert (read_image(save(tmp_path / "d.png", deep)) == 255).all()  # scaled, not clipped to 255 by accident
    half = Image.fromarray(np.full((2, 2), 32896, np.uint16))
    assert (read_image(save(tmp_path / "h.png", half)) == 128).all()


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    im = Image.new("RGB", (8, 4), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to view
    p = save(tmp_path / "r.jpg", im, "JPEG", exif=exif.tobytes())
    assert read_image(p).shape == (8, 4, 3)
    assert "EXIF-rotated" in image_stats([p])["note"].iloc[0]


def test_very_large_images_are_decoded_reduced_or_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(kit.data, "MAX_PIXELS", 1000)
    jpg = save(tmp_path / "big.jpg", Image.new("RGB", (4096, 2048), (9, 9, 9)), "JPEG")
    assert read_image(jpg).shape[1] < 4096  # JPEG draft mode: never the full bitmap
    png = save(tmp_path / "big.png", Image.new("RGB", (64, 64)))
    with pytest.raises(KitError, match=r"big.png is 64x64 .* downscale it first"):
        read_image(png)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_and_empty_files_are_named(tmp_path, fmt):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(KitError, match=f"cannot read image .*cut.{fmt.lower()}.*on_bad_image='skip'"):
        read_image(str(cut))
    bad = scan_images([str(cut), str(empty)])
    assert bad["path"].tolist() == [str(cut), str(empty)] and "0 bytes" in bad["error"].iloc[1]
    stats = image_stats([str(cut), str(empty)])
    assert (stats["error"] != "").all()


def test_jpeg_decoded_reduced_but_never_below_min_side(tmp_path):
    rng = np.random.default_rng(0)
    big = save(tmp_path / "big.jpg", Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)), "JPEG")
    assert read_image(big).shape == (480, 640, 3)
    assert read_image(big, min_side=100).shape == (120, 160, 3)  # 1/4: 1/8 would give 60 rows < 100
    assert read_image(big, min_side=60).shape == (60, 80, 3)
    assert read_image(big, min_side=1000).shape == (480, 640, 3)  # never upscaled, never below the file
    png = save(tmp_path / "big.png", Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)))
    assert read_image(png, min_side=60).shape == (480, 640, 3)  # only JPEG scales in the decoder
    # a dataset at size 64 reads at >= DECODE_MARGIN * 64 = 128 px: here 1/2 scale (240 rows); 1/4 is 120 < 128
    ds = kit.data.ImageDataset([big], [0], kit.data.A.Compose([]), size=64)
    assert ds[0][0].shape == (3, 240, 320)


def test_truncated_jpeg_fails_at_reduced_scale_too(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(buf, "JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    ok = save(tmp_path / "ok.jpg", Image.new("RGB", (512, 512)), "JPEG")
    bad = scan_images([ok, str(cut)] * 3, min_side=64, threads=2)
    assert bad["path"].tolist() == [str(cut)] * 3 and "truncated" in bad["error"].iloc[0]


def test_decoded_image_cache_hits_misses_on_edit_and_heals(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    photo = save(tmp_path / "p.jpg", Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)), "JPEG",
                 quality=95)
    cache = tmp_path / "cache"
    first = kit.data.load_image(photo, 64, cache)
    entry = kit.data.cache_file(photo, 64, cache)
    assert entry.is_file() and (first == read_image(photo, 64)).all()  # the same pixels as a decode
    monkeypatch.setattr(kit.data, "read_image", lambda *a: pytest.fail("decoded although cached"))
    assert (kit.data.load_image(photo, 64, cache) == first).all()
    assert kit.data.check_image(photo, 64, cache) == ""  # a cached image is not decoded to check it
    monkeypatch.undo()
    entry.write_bytes(b"\x93NUMPY torn")  # a crash mid-write (no fsync) leaves garbage: decoded again
    assert (kit.data.load_image(photo, 64, cache) == first).all() and np.load(entry).shape == first.shape
    save(tmp_path / "p.jpg", Image.new("RGB", (256, 256), (1, 2, 3)), "JPEG")  # edited: another key
    assert kit.data.cache_file(photo, 64, cache) != entry
    assert tuple(kit.data.load_image(photo, 64, cache)[0, 0]) == tuple(read_image(photo, 64)[0, 0])


def test_cache_only_holds_images_no_bigger_than_their_file_and_survives_read_only(tmp_path):
    flat = save(tmp_path / "flat.png", Image.new("RGB", (64, 64), (5, 5, 5)))  # a few hundred bytes as PNG
    cache = tmp_path / "cache"
    assert kit.data.load_image(flat, 0, cache).shape == (64, 64, 3)
    assert not kit.data.cache_file(flat, 0, cache).exists()
    noisy = save(tmp_path / "n.png", Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3),
                                                                                        dtype=np.uint8)))
    unwritable = tmp_path / "a-file"  # a cache folder that cannot be made (even as root)
    unwritable.write_text("")
    assert kit.data.load_image(noisy, 0, unwritable).shape == (64, 64, 3)  # cannot write: still decodes
    with pytest.raises(KitError, match="does not exist"):
        kit.data.load_image(str(tmp_path / "gone.jpg"), 0, cache)


def augmented_batches(loader, seed):
    loader.generator.manual_seed(seed)  # what fit_fold does at the start of each epoch
    return [x for x, _ in loader]


def test_loader_workers_augment_independently_and_follow_the_epoch_seed(tmp_path):
    """Identical images: only the augmentation makes two samples differ."""
    from kit.augment import train_transform

    image = save(tmp_path / "a.png", Image.fromarray(np.random.default_rng(4).integers(0, 255, (32, 32, 3),
                                                                                        dtype=np.uint8)))
    ds = kit.data.ImageDataset([image] * 16, [0] * 16, train_transform("medium", 16, seed=0), size=16)
    loader = kit.data.make_loader(ds, 4, True, num_workers=2, seed=0)
    epoch1 = augmented_batches(loader, 1)
    assert len(epoch1) == 4 and not any(torch.equal(epoch1[0], b) for b in epoch1[1:])  # each worker its own draws
    assert not torch.equal(epoch1[0][0], epoch1[0][1])  # and each sample within a batch
    epoch2 = augmented_batches(loader, 2)
    assert not any(torch.equal(a, b) for a in epoch1 for b in epoch2)  # the epoch reaches the workers
    again = augmented_batches(loader, 1)
    assert all(torch.equal(a, b) for a, b in zip(epoch1, again))  # and the same epoch repeats exactly (resume)


def test_auto_workers_are_none_on_cpu_and_bounded_on_cuda(monkeypatch):
    assert kit.data.loader_workers(-1, torch.device("cpu")) == 0
    assert kit.data.loader_workers(3, torch.device("cpu")) == 3
    monkeypatch.setattr(kit.data.os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    monkeypatch.setattr(kit.data.torch.cuda, "device_count", lambda: 2)
    assert kit.data.loader_workers(-1, torch.device("cuda")) == 8
    monkeypatch.setattr(kit.data.os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    assert kit.data.loader_workers(-1, torch.device("cuda")) == 3
