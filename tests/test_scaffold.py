"""`styleplug new-plugin` writes packages that install, register and pass their own tests as generated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def styleplug(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "styleplug", *arguments], capture_output=True, text=True, env=env)


@pytest.mark.parametrize(("kind", "name"), [("loss", "swd"), ("network", "tiny-net")])
def test_a_new_plugin_installs_and_passes_its_tests(tmp_path: Path, kind: str, name: str):
    made = styleplug("new-plugin", kind, name, "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    package = tmp_path / f"styleplug-{name}"
    assert sorted(str(path.relative_to(package)) for path in package.rglob("*") if path.is_file()) == sorted([
        "README.md", "pyproject.toml", f"styleplug_{name.replace('-', '_')}/__init__.py", "tests/conftest.py",
        f"tests/test_styleplug_{name.replace('-', '_')}.py"])
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site),
                    str(package)], check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests")],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert tests.returncode == 0 and "3 passed" in tests.stdout, tests.stdout[-3000:]
    listed = styleplug("plugins", "--check", env={**env, "STYLEPLUG_LOAD_PLUGINS": name})
    assert listed.returncode == 0 and '"status": "ok"' in listed.stdout, listed.stdout + listed.stderr
    assert '"notes": []' in listed.stdout  # nothing limits where it runs: the scaffold's loss is tileable


def test_new_plugin_refuses_bad_names_and_existing_folders(tmp_path: Path):
    assert styleplug("new-plugin", "loss", "My Loss", "--dir", str(tmp_path)).stderr.strip() == (
        "styleplug: error: plugin name 'My Loss' must be lowercase letters, digits, '-' or '_', starting with a letter.")
    (tmp_path / "styleplug-taken").mkdir()
    refused = styleplug("new-plugin", "loss", "taken", "--dir", str(tmp_path))
    assert refused.returncode == 2 and "already exists" in refused.stderr and not any((tmp_path / "styleplug-taken").iterdir())
