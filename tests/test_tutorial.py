"""Play the stranger: build a new loss plugin exactly as styleplug/docs/tutorial.md says, pip-install it, and use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from support import REPO, gradient_image, stripes_image
from test_docs import code_blocks

NAME = "stranger"  # the tutorial says: replace 'meanstd' with your own name everywhere


def test_a_stranger_can_follow_the_tutorial(tmp_path):
    package = tmp_path / f"styleplug-{NAME}"
    blocks = [(title, body) for language in ("python", "toml") for title, body in code_blocks(REPO / "styleplug" / "docs" / "tutorial.md", language) if title]
    for title, body in blocks:
        path = package / title.replace("meanstd", NAME)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body.replace("meanstd", NAME))
    (package / "README.md").write_text(f"# styleplug-{NAME}\n")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", site, package], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "TF_CPP_MIN_LOG_LEVEL": "3"}

    def styleplug(*args: object) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "styleplug", *map(str, args)], capture_output=True, text=True, env=env)

    listed = styleplug("plugins", "--check")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    record = {p["name"]: p for p in json.loads(listed.stdout)}[NAME]
    assert record["package"] == f"styleplug-{NAME}" and record["status"] == "ok"
    assert record["provides"]["losses"] == [NAME] and record["check"]["status"] == "ok"
    assert record["check"]["notes"] == []  # tileable: nothing limits where it runs

    options = styleplug("losses", "--options")
    assert f"-o {NAME}.statistics STR  which statistics to match" in options.stdout

    content, style = tmp_path / "content.png", tmp_path / "style.png"
    gradient_image(40, 32).save(content)
    stripes_image(40, 40).save(style)
    common = [content, style, "--size", "40", "--steps", "10", "--weights", "none", "--quiet"]
    plain = styleplug("run", *common, "-O", tmp_path / "plain.png")
    added = styleplug("run", *common, "-O", tmp_path / "added.png", "--loss", NAME, "-o", f"{NAME}.weight", "1e4", "-o", f"{NAME}.statistics", "std")
    assert plain.returncode == 0 and added.returncode == 0, plain.stderr + added.stderr
    a, b = (np.asarray(Image.open(tmp_path / name), float) for name in ("plain.png", "added.png"))
    assert np.abs(a - b).mean() > 1.0

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", package / "tests"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert tests.returncode == 0, tests.stdout[-2000:]
