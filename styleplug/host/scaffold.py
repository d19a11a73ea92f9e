"""``styleplug new-plugin``: write a plugin package that installs, registers and passes its tests as generated.

The package is ``styleplug-NAME`` with the module ``styleplug_NAME``: a pyproject with the entry
point, a working loss (a style loss matching channel means, masks, batches and tiles handled) or network (a
small convnet, with the ``auto``/``none``/file weights rule), a README, and tests that use
``styleplug.testing``.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from ..errors import UsageError

KINDS = ("loss", "network")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")

PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "styleplug-$name"
version = "0.1.0"
description = "A styleplug $kind plugin: $name."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["styleplug"]

[project.optional-dependencies]
test = ["pytest>=8"]

# This entry point is how styleplug finds the plugin once the package is installed.
[project.entry-points.styleplug]
$name = "$module"
'''

README = '''# styleplug-$name

A $kind for styleplug (neural style transfer), registered as `$name`.

```sh
pip install -e .                 # from this folder
styleplug plugins --check        # lists it and runs the contract checks on it
pytest tests                     # its own tests
```

The code is in `$module/__init__.py`; the contract it keeps is in `styleplug docs contracts`.
'''

LOSS = '''"""$name: a style loss for styleplug. It matches the mean of each feature channel; make it yours."""

import styleplug
from styleplug.lazy import ops  # keras.ops, imported on first use: listing plugins stays instant
from styleplug.losses.functional import moment_sums, moments_from_sums


class $cls(styleplug.Loss):
    """Match the mean of each feature channel of the style image."""

    name = "$name"
    role = "style"  # or "content" (compared with the photo) or "regularizer" (no target)
    # Statistics of the whole image made of sums over positions: an image too large for one pass
    # then runs in exact tiles. A loss that cannot say this implements call() instead (see
    # `styleplug docs contracts`) and is refused for such images.
    tiling = "statistics"
    # As generated, `styleplug losses --calibrate $name` suggests about 100 on VGG19 (the Gram term's
    # weighted size on the unstyled photo); run it again whenever from_sums() changes.
    default_weight = 100.0
    params = (
        styleplug.Param("power", float, 2.0, help="exponent of the channel-mean differences", min=1.0, max=4.0),
    )

    def sums(self, features, target, masks=None):
        # Per image: each channel's sums over positions and their count; with masks, each position
        # weighed by its region. The target is the style image's own sums.
        return {layer: moment_sums(features[layer], None if masks is None else masks[layer]) for layer in self.layers}

    def from_sums(self, sums, target):
        # Means from the whole image's sums: per image, then the mean over the batch.
        per_layer = {}
        for layer in self.layers:
            means, target_means = moments_from_sums(sums[layer])[0], moments_from_sums(target[layer])[0]
            per_layer[layer] = ops.mean(ops.abs(means - target_means) ** self.options["power"])
        return self.weighted_mean(per_layer)


@styleplug.hookimpl
def register_losses(register):
    register($cls)
'''

LOSS_TESTS = '''import numpy as np

import styleplug
import $module
from styleplug.testing import assert_plugin_installed, check_loss
from $module import $cls


def test_keeps_the_loss_contract():
    check_loss($cls)


def test_is_installed_and_listed():
    assert_plugin_installed("styleplug-$name")


def test_changes_a_run(make_host):
    engine = styleplug.Engine("tiny", "none", host=make_host($module))
    rng = np.random.default_rng(0)
    content, style = rng.uniform(0, 1, (24, 24, 3)), rng.uniform(0, 1, (24, 24, 3)) ** 4
    plain = engine.stylize(content, style, size=24, steps=10)
    changed = engine.stylize(content, style, size=24, steps=10, style_weight=0, losses={"$name": {"weight": 1e7}})
    assert np.abs(np.asarray(plain, float) - np.asarray(changed, float)).mean() > 0.5
'''

NETWORK = '''"""$name: a feature network for styleplug. A small convnet to start from; make it yours."""

import styleplug
from styleplug.errors import WeightsError
from styleplug.lazy import keras, ops  # imported on first use, so listing plugins stays instant


class $cls(styleplug.Network):
    """A small convnet with named layers (replace it with your trained network)."""

    name = "$name"
    layers = ("conv1", "pool1", "conv2", "pool2", "conv3")  # shallow to deep
    default_content_layers = ("conv3",)
    default_style_layers = ("conv1", "conv2", "conv3")
    weight_sources = ("auto", "none")  # besides a path to a weights file
    params = (styleplug.Param("width", int, 32, help="channels of each convolution", min=8, max=256),)

    def preprocess(self, images):
        # RGB 0..255 in, what the network was trained on out; it must be differentiable.
        return ops.cast(images, "float32") / 127.5 - 1.0

    def build(self, layers):
        self.check_layers(layers)
        inputs = keras.Input((None, None, 3))
        x, outputs = inputs, {}
        for name in self.layers[: self.layers.index(self.deepest(layers)) + 1]:  # stop at the deepest layer asked for
            if name.startswith("pool"):
                x = keras.layers.AveragePooling2D(2, name=name)(x)
            else:
                x = keras.layers.Conv2D(self.options["width"], 3, padding="same", activation="relu", name=name,
                                        kernel_initializer=keras.initializers.HeNormal(seed=0))(x)
            if name in layers:
                outputs[name] = x
        model = keras.Model(inputs, outputs)
        self._load_weights(model)
        model.trainable = False
        return model

    def _load_weights(self, model):
        if self.weights == "none":
            self.weights_source = "random (seeded He-normal, no training)"
        elif self.weights == "auto":
            # "auto" takes the best source available without a download, then a download, and
            # otherwise says how to get weights. This template has none yet.
            raise WeightsError(f"network '{self.name}' has no trained weights yet; pass a weights file, or none.")
        else:
            try:
                model.load_weights(self.weights)  # a file of another network fails here, not silently
            except Exception as error:
                raise WeightsError(f"cannot load weights '{self.weights}' for network '{self.name}': {error}") from None
            self.weights_source = f"file {self.weights}"


@styleplug.hookimpl
def register_networks(register):
    register($cls)
'''

NETWORK_TESTS = '''import numpy as np
import pytest

import styleplug
import $module
from styleplug.errors import WeightsError
from styleplug.testing import assert_plugin_installed, check_network
from $module import $cls


def test_keeps_the_network_contract():
    check_network($cls)


def test_is_installed_and_listed():
    assert_plugin_installed("styleplug-$name")


def test_stylizes_and_asks_for_weights(make_host):
    rng = np.random.default_rng(0)
    content, style = rng.uniform(0, 1, (32, 32, 3)), rng.uniform(0, 1, (32, 32, 3)) ** 4
    image = styleplug.Engine("$name", "none", host=make_host($module)).stylize(content, style, size=32, steps=5)
    assert image.size == (32, 32)
    with pytest.raises(WeightsError, match="has no trained weights yet"):
        styleplug.Engine("$name", host=make_host($module)).stylize(content, style, size=32, steps=5)
'''


def new_plugin(kind: str, name: str, folder: Path) -> Path:
    """Write the package ``styleplug-NAME`` for a ``kind`` (loss or network) plugin into ``folder``;
    return its path. Refuses a folder that exists: nothing is overwritten."""
    if kind not in KINDS:
        raise UsageError(f"a plugin provides a loss or a network; got '{kind}'.")
    if not _NAME.match(name):
        raise UsageError(f"plugin name '{name}' must be lowercase letters, digits, '-' or '_', starting with a letter.")
    package = folder / f"styleplug-{name}"
    if package.exists():
        raise UsageError(f"'{package}' already exists; choose another name or folder (nothing was written).")
    module = f"styleplug_{name.replace('-', '_')}"
    words = "".join(part.capitalize() for part in re.split(r"[-_]", name))
    values = {"name": name, "kind": kind, "module": module, "cls": words + ("Loss" if kind == "loss" else "Network")}
    code, tests = (LOSS, LOSS_TESTS) if kind == "loss" else (NETWORK, NETWORK_TESTS)
    files = {"pyproject.toml": PYPROJECT, "README.md": README, f"{module}/__init__.py": code,
             "tests/conftest.py": 'pytest_plugins = ["styleplug.testing"]\n', f"tests/test_{module}.py": tests}
    for relative, template in files.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template).substitute(values))
    return package
