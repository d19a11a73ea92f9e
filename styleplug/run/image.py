"""Reading, normalising and writing images.

Every input becomes an 8-bit RGB ``PIL.Image``:

- EXIF orientation is applied, so a rotated phone photo is upright;
- transparency (RGBA, LA, PA, P with a transparent colour) is composited onto white;
- 16-bit and 32-bit grey images (``I;16``, ``I``, ``F``) are scaled to 8 bits from the range
  their values show (0..1 for float, 0..255, 0..65535); CMYK is converted to RGB;
- numpy arrays may be ``uint8`` (0..255), ``uint16`` (0..65535) or float (0..1), shaped
  ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``.

Images above ``max_pixels`` (default ``DEFAULT_MAX_PIXELS``, or the ``STYLEPLUG_MAX_PIXELS``
environment variable) are refused from their header, before any pixel is decoded.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from ..errors import ImageError, UsageError

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray, bytes]

DEFAULT_MAX_PIXELS = 50_000_000
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def max_pixels_default() -> int:
    value = os.environ.get("STYLEPLUG_MAX_PIXELS")
    if value is None:
        return DEFAULT_MAX_PIXELS
    if not value.isdigit() or int(value) <= 0:
        raise UsageError(f"STYLEPLUG_MAX_PIXELS={value!r} is not a positive whole number; fix or unset it.")
    return int(value)


def load_image(source: ImageInput, what: str, max_pixels: int | None = None) -> Image.Image:
    """Return ``source`` as an 8-bit RGB image; ``what`` names it in errors (e.g. ``"content image"``)."""
    limit = max_pixels or max_pixels_default()
    if isinstance(source, np.ndarray):
        return _from_array(source, what, limit)
    if isinstance(source, Image.Image):
        _check_pixels(source.size, what, limit)
        return _to_rgb(source, what)
    if isinstance(source, bytes):
        return _decode(io.BytesIO(source), what, limit)
    if not isinstance(source, (str, os.PathLike)):
        raise UsageError(f"{what} must be a file path, a PIL image, a numpy array or an encoded file's bytes; "
                         f"got {type(source).__name__}.")
    path = _existing_file(source, what)
    return _decode(path, f"{what} '{path}'", limit)


def check_image_file(source: str | os.PathLike[str], what: str, max_pixels: int | None = None) -> None:
    """``load_image``'s checks of an image file (it exists, Pillow reads it, it is within the pixel
    limit), from its header alone: nothing is decoded."""
    path = _existing_file(source, what)
    _decode(path, f"{what} '{path}'", max_pixels or max_pixels_default(), header_only=True)


def _existing_file(source: str | os.PathLike[str], what: str) -> Path:
    path = Path(source)
    if not path.exists():
        raise ImageError(f"{what} '{path}' does not exist; check the path.")
    if not path.is_file():
        raise ImageError(f"{what} '{path}' is not a file; pass an image file.")
    return path


_WARNINGS_LOCK = threading.Lock()


def image_size(path: Path, what: str, limit: int) -> tuple[int, int]:
    """(width, height) of an image file from its header, with the checks of ``load_image`` (readable,
    within ``limit`` pixels) and without decoding it; ``what`` names it in errors."""
    return _decode(path, what, limit, header_only=True)


def _decode(source: Path | io.BytesIO, what: str, limit: int, header_only: bool = False) -> Any:
    """Decode an image file or an encoded file's bytes (only its size with ``header_only``);
    ``what`` names it (with its path)."""
    if (source.stat().st_size if isinstance(source, Path) else source.getbuffer().nbytes) == 0:
        raise ImageError(f"{what} is empty (0 bytes); pass a real image file.")
    try:
        # Pillow's own decompression-bomb warning is silenced: the limit below is ours and configurable.
        # The warning filters are the process's; the lock keeps threads loading images at the same time
        # from restoring each other's filters out of order (which left the "ignore" behind for good).
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
        with image:
            _check_pixels(image.size, what, limit)  # from the header, before decoding
            if header_only:
                return image.size
            image.load()
            return _to_rgb(image, what)
    except Image.DecompressionBombError:
        raise ImageError(f"{what} has too many pixels to decode safely; resize it first.") from None
    except UnidentifiedImageError:
        raise ImageError(f"{what} is not an image Pillow can read; use PNG, JPEG, WebP, TIFF, BMP or GIF.") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{what} is truncated or corrupt ({error}); re-export or re-download it.") from None


def _check_pixels(size: tuple[int, int], what: str, limit: int) -> None:
    width, height = size
    if width * height > limit:
        raise ImageError(
            f"{what} is {width}x{height} = {_pixel_count(width * height)}, above the limit of {_pixel_count(limit)}; "
            "resize it, or raise the limit ({max_pixels} or STYLEPLUG_MAX_PIXELS)."
        )
    if width == 0 or height == 0:
        raise ImageError(f"{what} has no pixels ({width}x{height}); pass a real image.")


def _pixel_count(pixels: int) -> str:
    """A number of pixels for people: megapixels, or the count itself below a tenth of one."""
    return f"{pixels / 1e6:.3g} MP" if pixels >= 100_000 else f"{pixels:,} pixels"


def _to_8_bits(pixels: np.ndarray, mode: str, what: str) -> np.ndarray:
    """Integer or float grey levels as 8 bits, their range inferred from the values: Pillow gives
    the same mode ``I`` to 8-bit images converted to it and to 16-bit ones, and mode ``F`` to
    images in 0..1 and in 0..255."""
    if not np.isfinite(pixels).all():
        raise ImageError(f"{what} (mode {mode}) contains NaN or infinite values; clean it or save it as 8-bit.")
    low, high = pixels.min(), pixels.max()
    if mode == "F" and low >= 0 and high <= 1:
        scale = 1 / 255
    elif low >= 0 and high <= 255:
        scale = 1.0
    elif low >= 0 and high <= 65535:
        scale = 257.0
    else:
        raise ImageError(f"{what} (mode {mode}) has values from {low:g} to {high:g}, outside 0..65535; "
                         "save it as an 8- or 16-bit image.")
    return to_uint8(pixels / scale)


def to_uint8(floats: np.ndarray, band_values: int = 2**20) -> np.ndarray:
    """``floats`` clipped to 0..255 and rounded, as 8-bit, about ``band_values`` values at a time
    along the first axis: clipping and rounding a 4096x3072 image at once held two image-sized float
    temporaries (288 MiB), at the end of a poster job while its optimiser state was still resident."""
    pixels = np.empty(floats.shape, np.uint8)
    rows = max(1, band_values // max(1, floats[:1].size))
    for top in range(0, len(floats), rows):
        band = np.clip(floats[top:top + rows], 0, 255)
        pixels[top:top + rows] = np.rint(band, out=band)
    return pixels


def _to_rgb(image: Image.Image, what: str) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = Image.fromarray(_to_8_bits(np.asarray(image, dtype=np.float64), image.mode, what), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def _from_array(array: np.ndarray, what: str, limit: int) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or array.ndim == 3 and array.shape[2] in (3, 4)):
        raise ImageError(f"{what} array has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4).")
    _check_pixels((array.shape[1], array.shape[0]), what, limit)
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype == np.uint16:
        pixels = (array / 257.0).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError(f"{what} array contains NaN or infinite values; clean it first.")
        if array.min() < 0 or array.max() > 1:
            raise ImageError(f"{what} float array has values in [{array.min():g}, {array.max():g}]; expected 0..1 (or pass uint8).")
        pixels = (array * 255.0).round().astype(np.uint8)
    else:
        raise ImageError(f"{what} array has dtype {array.dtype}; expected uint8, uint16 or float in 0..1.")
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[pixels.ndim if pixels.ndim == 2 else pixels.shape[2]]
    return _to_rgb(Image.fromarray(np.ascontiguousarray(pixels), mode), what)


def pixel_digest(image: Image.Image) -> str:
    """SHA-256 of an image's mode, size and pixels: the identity of an input, whatever its file."""
    return hashlib.sha256(f"{image.mode} {image.width}x{image.height}\n".encode() + image.tobytes()).hexdigest()


def long_side_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """The ``(width, height)`` that ``resize_long_side`` gives an image of ``size``."""
    width, height = size
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_long_side(image: Image.Image, size: int) -> Image.Image:
    """Scale ``image`` so that its longer side is ``size`` pixels, keeping the aspect ratio."""
    new_size = long_side_size(image.size, size)
    return image if new_size == image.size else image.resize(new_size, Image.Resampling.LANCZOS)


def check_output(path: str | os.PathLike[str], inputs: Iterable[object]) -> str:
    """Check an output path before any work is done; return the image format for its extension."""
    output = Path(path)
    image_format = OUTPUT_FORMATS.get(output.suffix.lower())
    if image_format is None:
        raise UsageError(f"output '{output}' has no supported extension; use one of {', '.join(sorted(OUTPUT_FORMATS))}.")
    for source in inputs:
        if isinstance(source, (str, os.PathLike)) and Path(source).exists() and output.exists() and output.samefile(source):
            raise UsageError(f"output '{output}' is one of the input images; choose another output path.")
    if not output.parent.is_dir():
        raise UsageError(f"output folder '{output.parent}' does not exist; create it or choose another path.")
    return image_format


def save_image(image: Image.Image, path: str | os.PathLike[str], inputs: Iterable[object] = (), **save_options: Any) -> None:
    """Write ``image`` atomically (temporary file, then rename), never over one of ``inputs``.

    A run record in ``image.info["styleplug"]`` goes into a PNG text chunk, or for JPEG and WebP
    into a JSON sidecar file next to the image (``OUT.jpg.json``).
    """
    output = Path(path)
    image_format = check_output(output, inputs)
    record = image.info.get("styleplug")
    if record and image_format == "PNG":
        save_options["pnginfo"] = png_record(record)
    elif record:
        write_atomically(record_sidecar(output), lambda stream: stream.write(record.encode()))
    write_atomically(output, lambda stream: image.save(stream, format=image_format, **save_options))


def png_record(record: str) -> PngImagePlugin.PngInfo:
    """The PNG text chunk that holds a run record (JSON)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("styleplug", record)
    return info


def record_sidecar(path: str | os.PathLike[str]) -> Path:
    """Where the run record of an output whose format cannot hold one (JPEG, WebP, MP4) is kept."""
    output = Path(path)
    return output.with_name(output.name + ".json")


def write_atomically(output: Path, write: Any) -> None:
    # A fresh name opened with "x" (not mkstemp, whose 0600 mode would stick to the output).
    temporary = output.with_name(f".{output.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "xb") as stream:
            write(stream)
        os.replace(temporary, output)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
