"""What a plugin author's common mistakes produce: one line that names the plugin and says what to fix."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import styleplug
from styleplug.errors import PluginError, UnknownNameError, UsageError
from styleplug.params import Param
from styleplug.host.plugins import PluginHost
from styleplug.testing import TinyNetwork, check_loss, check_network

from support import gradient_image, stripes_image

CONTENT, STYLE = gradient_image(48, 40), stripes_image(48, 48)


def plugin(name: str, **hooks: object) -> types.SimpleNamespace:
    return types.SimpleNamespace(__name__=name, **hooks)


def losses(*classes: type) -> object:
    return styleplug.hookimpl(lambda register: [register(cls) for cls in classes] and None)


class Mean(styleplug.Loss):
    """A small style loss to break in different ways."""

    name = "mean"
    role = "style"

    def compute_target(self, features):
        return {layer: tf.reduce_mean(tf.cast(value, tf.float32), [1, 2]) for layer, value in features.items()}

    def call(self, features, image, target, mask=None):
        return self.weighted_mean({layer: tf.reduce_mean(tf.square(tf.reduce_mean(tf.cast(features[layer], tf.float32), [1, 2])
                                                                   - target[layer])) for layer in self.layers})


def test_a_hook_without_hookimpl_is_reported_not_silent(caplog):
    forgot = plugin("forgot", register_losses=lambda register: register(Mean))
    with caplog.at_level(logging.WARNING, logger="styleplug.host.plugins"):
        host = PluginHost([forgot], entrypoints=False)
    record = host.plugins()[0]
    assert record["status"] == "ok" and record["provides"] == {"losses": [], "networks": []}
    assert record["warning"] == "registers nothing: register_losses lacks the @styleplug.hookimpl decorator, so it is never called; add it"
    assert "plugin 'forgot' registers nothing" in caplog.text
    with pytest.raises(PluginError, match="plugin 'forgot' failed at registration: registers nothing"):
        PluginHost([forgot], entrypoints=False, strict=True)


def test_declarations_are_checked_at_registration():
    class BadAlias(Mean):
        """Alias with a space."""

        name = "badalias"

    class Negative(Mean):
        """A negative default weight."""

        name = "negative"
        default_weight = -1.0

    alias = plugin("alias", register_losses=styleplug.hookimpl(lambda register: register(BadAlias, aliases=("bad alias",))))
    with pytest.raises(PluginError, match="has alias 'bad alias'; expected lowercase letters, digits, '-' or '_'"):
        PluginHost([alias], entrypoints=False, strict=True)
    with pytest.raises(PluginError, match=r"Negative.default_weight is -1.0; expected a finite number >= 0"):
        PluginHost([plugin("negative", register_losses=losses(Negative))], entrypoints=False, strict=True)
    with pytest.raises(TypeError, match="Param 'level' has type 'float'; use one of the types float, int, bool or str"):
        Param("level", "float", 0.5)
    assert Param("count", int, 1).coerce(np.int64(8), "loss 'x'") == 8  # numpy numbers are numbers

    class Dotted(Mean):
        """An option name that is no keyword, CLI option or web API name."""

        name = "dotted"
        params = (Param("level.max", float, 1.0),)

    with pytest.raises(PluginError, match=r"Dotted has parameter 'level.max'; expected lowercase letters and digits in words"):
        PluginHost([plugin("dotted", register_losses=losses(Dotted))], entrypoints=False, strict=True)
    with pytest.raises(UnknownNameError, match="unknown loss 'GRAM'. Did you mean 'gram'"):
        PluginHost(entrypoints=False).loss("GRAM")


def test_plugin_options_never_take_a_built_in_controls_name_in_the_demo():
    """A loss 'coarse' with an option 'to_fine' keeps its own /run parameter: the built-in
    'coarse_to_fine' checkbox is untouched."""
    from styleplug.frontends.webapp import build_app

    class Coarse(Mean):
        """A loss whose option would once have collided with the coarse-to-fine checkbox."""

        name = "coarse"
        params = (Param("to_fine", float, 0.5, min=0.0, max=1.0),)

    host = PluginHost([plugin("coarse", register_losses=losses(Coarse))], entrypoints=False, strict=True)
    app = build_app(host, calibrate_step_time=False)
    run = next(fn for fn in app.fns.values() if fn.api_name == "run")
    names = [type(block).__name__ for block in run.inputs]
    parameters = list(__import__("inspect").signature(run.fn).parameters)
    assert len(parameters) == len(set(parameters))
    assert names[parameters.index("coarse_to_fine")] == "Checkbox" and "coarse__to_fine" in parameters


def test_failures_in_plugin_code_name_the_plugin_eager_or_traced():
    class Raises(Mean):
        """Raises in call."""

        name = "raises"

        def call(self, features, image, target, mask=None):
            raise ValueError("shapes do not match")

    class Eager(Mean):
        """Works eagerly, fails when traced: .numpy() inside tf.function."""

        name = "eager"

        def call(self, features, image, target, mask=None):
            return tf.constant(float(np.mean(features[self.layers and next(iter(self.layers))].numpy())) * 0.0)

    class Branches(Mean):
        """Python control flow on a tensor: traced without AutoGraph, as on JAX, it is a mistake."""

        name = "branches"

        def call(self, features, image, target, mask=None):
            if ops.mean(image) > 0:
                return ops.mean(image) * 0.0
            return ops.mean(image)

    host = PluginHost([plugin("mistakes", register_losses=losses(Raises, Eager, Branches))], entrypoints=False)
    engine = styleplug.Engine("vgg19", "none", precision="float32", host=host)
    here = "at .*test_plugin_mistakes.py:"
    for name, message in (("raises", f"ValueError: shapes do not match {here}"), ("eager", f"AttributeError: .* {here}"),
                          ("branches", f"OperatorNotAllowedInGraphError: .* {here}.*`if` on a tensor")):
        with pytest.raises(PluginError, match=f"plugin 'mistakes' failed at call of loss '{name}': {message}") as error:
            engine.stylize(CONTENT, STYLE, size=48, steps=2, losses={name: {}})
        assert "\n" not in str(error.value)


class CustomScale(tf.keras.layers.Layer):
    """A custom layer without get_config: fine in float32, but the engine cannot copy it to bfloat16."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def call(self, x):
        return x * self.factor


class Unclonable(TinyNetwork):
    """TinyNetwork with a custom layer that lacks get_config."""

    name = "unclonable"
    factor = 0.5  # what CustomScale multiplies by

    def build(self, layers):
        model = super().build(layers)
        inputs = tf.keras.Input((None, None, 3))
        outputs = model(CustomScale(self.factor)(inputs))
        wrapped = tf.keras.Model(inputs, outputs)
        wrapped.trainable = False
        return wrapped


def test_a_layer_that_cannot_be_copied_to_bfloat16_is_named():
    with pytest.raises(AssertionError, match=r"network 'unclonable' \(.*Unclonable\): the engine's bfloat16 copy of the model "
                                             r"fails .*give every custom layer get_config\(\) and from_config\(\)"):
        check_network(Unclonable)
    host = PluginHost([plugin("unclonable", register_networks=styleplug.hookimpl(lambda register: register(Unclonable)))],
                      entrypoints=False)
    engine = styleplug.Engine("unclonable", "none", precision="bfloat16", host=host)
    with pytest.raises(PluginError, match=r"plugin 'unclonable' failed at the bfloat16 copy of network 'unclonable' .*"
                                          r"or use precision=float32\): TypeError"):
        engine.stylize(CONTENT, STYLE, size=48, steps=2)


def test_the_kit_names_the_loss_it_failed_on():
    class NotScalar(Mean):
        """Returns one value per channel."""

        name = "notscalar"

        def call(self, features, image, target, mask=None):
            return tf.reduce_mean(tf.cast(features[next(iter(self.layers))], tf.float32), [0, 1, 2])

    with pytest.raises(AssertionError, match=r"loss 'notscalar' \(test_plugin_mistakes.*NotScalar\): with bfloat16 features "
                                             r"at 48x40, call\(\) gave"):
        check_loss(NotScalar)


def test_the_memory_estimate_counts_any_downsampling():
    """A network that downsamples with strided convolutions (no layer named "pool") is estimated
    like one that pools."""
    from styleplug.core.device import estimate_memory

    def network(strided: bool):
        inputs = tf.keras.Input((None, None, 3))
        x = inputs
        for index in range(4):
            x = tf.keras.layers.Conv2D(64, 3, strides=2 if strided else 1, padding="same", name=f"conv{index}")(x)
            if not strided:
                x = tf.keras.layers.MaxPooling2D(name=f"down{index}")(x)
        return tf.keras.Model(inputs, x)

    strided, pooled = (estimate_memory(network(flag), 512, 512, "lbfgs", 20) for flag in (True, False))
    assert strided < pooled < 1.5 * strided


def test_strict_mode_and_debug_show_the_traceback(with_test_plugins):
    env = {**os.environ, "PYTHONPATH": str(with_test_plugins), "STYLEPLUG_LOAD_PLUGINS": "broken_import"}
    quiet = subprocess.run([sys.executable, "-m", "styleplug", "losses"], env=env, capture_output=True, text=True)
    assert quiet.returncode == 0 and "broken_import" in quiet.stderr and "Traceback" not in quiet.stderr
    for extra in ({"STYLEPLUG_STRICT_PLUGINS": "1"}, {"STYLEPLUG_DEBUG": "1", "STYLEPLUG_STRICT_PLUGINS": "1"}):
        strict = subprocess.run([sys.executable, "-m", "styleplug", "losses"], env={**env, **extra}, capture_output=True, text=True)
        assert strict.returncode != 0 and "Traceback" in strict.stderr and "ImportError" in strict.stderr, strict.stderr


def test_styleplug_lists_its_api():
    assert {"Engine", "Job", "PluginHost", "Progress", "Result", "set_threads"} <= set(dir(styleplug))


def test_usage_errors_stay_one_line_for_users():
    with pytest.raises(UsageError, match="unknown option 'size' of network 'vgg19'"):
        styleplug.Engine("vgg19", "none", size=3)
