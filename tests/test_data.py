"""Every image a competition throws at us: decoded to HWC uint8 RGB, or refused with the file named."""

import io

import numpy as np
import pytest
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
