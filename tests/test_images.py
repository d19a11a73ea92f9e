"""Reading every kind of input image: modes, orientation, transparency, limits, broken files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from styleplug.errors import ImageError
from styleplug.run.image import load_image, resize_long_side

from support import gradient_image


def _save(image: Image.Image, path, **options):
    image.save(path, **options)
    return path


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("L", 100, (100, 100, 100)),
        ("LA", (100, 255), (100, 100, 100)),
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("I;16", 65535, (255, 255, 255)),
        ("I;16", 257 * 80, (80, 80, 80)),
        ("I", 257 * 200, (200, 200, 200)),
    ],
)
def test_modes_become_rgb(tmp_path, mode, value, expected):
    suffix = ".tif" if mode in ("CMYK", "I") else ".png"
    path = _save(Image.new(mode, (4, 3), value), tmp_path / f"in{suffix}")
    image = load_image(path, "content image")
    assert image.mode == "RGB" and image.size == (4, 3)
    assert image.getpixel((1, 1)) == expected


def _grey_ramp() -> Image.Image:
    return Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1)), "L")


@pytest.mark.parametrize(
    ("convert", "description"),
    [
        (lambda ramp: ramp.convert("I"), "8-bit image converted to mode I"),
        (lambda ramp: ramp.convert("F"), "float image in 0..255"),
        (lambda ramp: Image.fromarray(np.asarray(ramp, np.float32) / 255, "F"), "float image in 0..1"),
        (lambda ramp: Image.fromarray(np.asarray(ramp, np.int32) * 257, "I"), "16-bit values in mode I"),
    ],
)
def test_wide_modes_keep_their_brightness(convert, description):
    """Pillow's I and F modes hold 8-bit, 16-bit or 0..1 data alike: the range is read from the values."""
    loaded = load_image(convert(_grey_ramp()), "content image")
    expected = np.asarray(_grey_ramp().convert("RGB"), np.int16)
    assert np.abs(np.asarray(loaded, np.int16) - expected).max() <= 1, description


@pytest.mark.parametrize("values", [[-1.0, 0.5], [0.0, 70000.0], [0.0, float("nan")]])
def test_float_images_outside_any_known_range_are_refused(values):
    image = Image.fromarray(np.array([values], np.float32), "F")
    with pytest.raises(ImageError, match="content image .mode F."):
        load_image(image, "content image")


def test_transparency_is_painted_white(tmp_path):
    image = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    image.putpixel((1, 0), (255, 0, 0, 0))  # fully transparent red
    loaded = load_image(_save(image, tmp_path / "alpha.png"), "style image")
    assert loaded.getpixel((0, 0)) == (255, 0, 0)
    assert loaded.getpixel((1, 0)) == (255, 255, 255)


def test_palette_image_with_transparent_colour(tmp_path):
    image = Image.new("P", (2, 1), 0)
    image.putpalette([0, 0, 255] + [0, 255, 0] * 255)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 1
    loaded = load_image(_save(image, tmp_path / "p.png", transparency=1), "style image")
    assert loaded.getpixel((0, 0)) == (0, 0, 255)
    assert loaded.getpixel((1, 0)) == (255, 255, 255)


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    loaded = load_image(_save(image, tmp_path / "phone.jpg", exif=exif), "content image")
    assert loaded.size == (20, 40)


def test_arrays(tmp_path):
    assert load_image(np.zeros((5, 6), np.uint8), "content image").size == (6, 5)
    assert load_image(np.full((5, 6, 3), 0.5), "content image").getpixel((0, 0)) == (128, 128, 128)
    assert load_image(np.full((2, 2, 3), 65535, np.uint16), "content image").getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ImageError, match="contains NaN"):
        load_image(np.full((2, 2, 3), np.nan), "content image")
    with pytest.raises(ImageError, match=r"expected 0..1"):
        load_image(np.full((2, 2, 3), 200.0), "content image")
    with pytest.raises(ImageError, match=r"has shape \(2, 2, 5\)"):
        load_image(np.zeros((2, 2, 5), np.uint8), "content image")


def test_bad_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image at all")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "whole.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "whole.png").read_bytes()[:80])
    cases = {
        "missing.png": "does not exist",
        "empty.png": r"is empty \(0 bytes\)",
        "notes.png": "is not an image Pillow can read",
        "truncated.png": "is truncated or corrupt",
    }
    for name, message in cases.items():
        with pytest.raises(ImageError, match=message):
            load_image(tmp_path / name, "style image")
    with pytest.raises(ImageError, match="is not a file"):
        load_image(tmp_path, "style image")


def test_pixel_limit_is_checked_from_the_header(tmp_path, monkeypatch):
    # A small file that declares a huge canvas: refused before decoding.
    path = _save(Image.new("L", (12000, 12000)), tmp_path / "bomb.png", optimize=True)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ImageError, match=r"12000x12000 = 144 MP, above the limit of 50 MP"):
        load_image(path, "content image")
    with pytest.raises(ImageError, match="= 100 pixels, above the limit of 50 pixels"):
        load_image(np.zeros((10, 10), np.uint8), "content image", max_pixels=50)
    monkeypatch.setenv("STYLEPLUG_MAX_PIXELS", "99")
    with pytest.raises(ImageError, match="above the limit"):
        load_image(np.zeros((10, 10), np.uint8), "content image")


def test_resize_long_side_keeps_aspect():
    assert resize_long_side(Image.new("RGB", (400, 300)), 200).size == (200, 150)
    assert resize_long_side(Image.new("RGB", (300, 400)), 200).size == (150, 200)


def test_loading_images_from_many_threads_leaves_the_warning_filters_as_they_were(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from styleplug.run.image import load_image

    path = tmp_path / "photo.png"
    gradient_image(64, 48).save(path)
    before = list(warnings.filters)
    with ThreadPoolExecutor(8) as pool:
        sizes = set(pool.map(lambda _: load_image(path, "photo").size, range(400)))
    assert sizes == {(64, 48)} and warnings.filters == before
