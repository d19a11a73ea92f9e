"""Colour control: keep the content photo's colours, in one of two ways.

- ``"luminance"``: after optimising, keep the result's luminance (Y of YCbCr) and put the content
  photo's chroma (Cb, Cr) back, so only brightness patterns come from the painting.
- ``"match"``: before optimising, give each style image the mean and covariance of the content
  photo's colours (a linear colour transfer), so the painting's textures arrive in the photo's palette.

``"style"`` (the default) leaves colours to the optimisation.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .image import to_uint8

COLOR_MODES = ("style", "luminance", "match")


def keep_content_chroma(result: Image.Image, content: Image.Image) -> Image.Image:
    """``result``'s luminance with ``content``'s chroma (same size)."""
    y, _, _ = result.convert("YCbCr").split()
    _, cb, cr = content.resize(result.size, Image.Resampling.LANCZOS).convert("YCbCr").split()
    return Image.merge("YCbCr", (y, cb, cr)).convert("RGB")


def _sqrt_and_inverse_sqrt(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, vectors = np.linalg.eigh(covariance)
    values = np.maximum(values, 1e-6)  # a flat image has a singular covariance
    return (vectors * np.sqrt(values)) @ vectors.T, (vectors / np.sqrt(values)) @ vectors.T


def match_colors(image: Image.Image, reference: Image.Image) -> Image.Image:
    """``image`` with its pixel colours' mean and covariance replaced by ``reference``'s.

    The engine recolours style images to the photo's palette with it (``colors="match"``); the
    other way round, ``match_colors(photo, painting)`` transfers the painting's colours alone.
    """
    source = np.asarray(image, np.float64).reshape(-1, 3)
    target = np.asarray(reference, np.float64).reshape(-1, 3)
    _, source_inverse_sqrt = _sqrt_and_inverse_sqrt(np.cov(source, rowvar=False))
    target_sqrt, _ = _sqrt_and_inverse_sqrt(np.cov(target, rowvar=False))
    matched = (source - source.mean(0)) @ source_inverse_sqrt @ target_sqrt + target.mean(0)
    pixels = to_uint8(matched).reshape(image.height, image.width, 3)
    return Image.fromarray(pixels, "RGB")
