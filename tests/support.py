"""Helpers shared by the test modules (import them from here, not from conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "styleplug" / "examples"  # the bundled pairs; tests read nothing outside the repository
TEST_PLUGINS = Path(__file__).parent / "plugin_packages" / "styleplug-testplugins"


def gradient_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A small colourful test picture: smooth gradients plus a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    pixels = np.stack([x, y, 1 - x * y], axis=-1) * 200 + rng.uniform(0, 55, (height, width, 3))
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def stripes_image(width: int, height: int) -> Image.Image:
    """A high-contrast 'painting': diagonal stripes in two colours."""
    y, x = np.mgrid[0:height, 0:width]
    mask = ((x + y) // 4) % 2 == 0
    pixels = np.where(mask[..., None], [230, 40, 30], [20, 60, 200]).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")
