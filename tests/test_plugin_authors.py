"""What a plugin author meets beyond the first contract: old losses under masks, pixel-space style
losses, errors from traced code, choosing weights, and the messages on the way."""

from __future__ import annotations

import json
import logging
import re
import types

import numpy as np
import pytest
import tensorflow as tf

import styleplug
from styleplug.core.compiled import evaluate
from styleplug.errors import PluginError, UnknownNameError
from styleplug.losses.functional import mean_squared_error, moments
from styleplug.host.plugins import PluginHost, Provider
from styleplug.testing import TinyNetwork, calibrate_loss, check_loss

from support import gradient_image, stripes_image
from test_plugin_mistakes import Unclonable


def plugin(name: str, *classes: type) -> types.SimpleNamespace:
    return types.SimpleNamespace(__name__=name, register_losses=styleplug.hookimpl(lambda register: [register(c) for c in classes] and None))


def quantiles(values: tf.Tensor, count: int = 32) -> tf.Tensor:
    """``count`` evenly spaced order statistics of all values: a distribution, whatever their number."""
    ordered = tf.sort(tf.reshape(tf.cast(values, tf.float32), [-1]))
    index = tf.cast(tf.round(tf.linspace(0.0, 1.0, count) * tf.cast(tf.size(ordered) - 1, tf.float32)), tf.int32)
    return tf.gather(ordered, index)


class OldQuantiles(styleplug.Loss):
    """Old contract: match the distribution of activations (zeros from a mask would join it)."""

    name = "oldquantiles"
    role = "style"

    def call(self, features, image):
        return self.weighted_mean({layer: mean_squared_error(quantiles(features[layer]), quantiles(self.target[layer]))
                                   for layer in self.layers})


class PixelColours(styleplug.Loss):
    """Match the mean and spread of each colour channel of the image (a pixel-space style loss)."""

    name = "pixelcolours"
    role = "style"
    uses_features = False

    def compute_target(self, features):
        mean, variance = moments(features["image"])
        return mean, tf.sqrt(variance)

    def call(self, features, image, target, mask=None):
        mean, variance = moments(image, mask)  # per image; with a mask, of its region
        return mean_squared_error(mean, target[0]) + mean_squared_error(tf.sqrt(variance + 1e-6), target[1])


class OnePassMeanStd(styleplug.Loss):
    """Channel means and variances with its own call and no tiling (as the meanstd example was before 0.3.0)."""

    name = "onepassmeanstd"
    role = "style"

    def compute_target(self, features):
        return {layer: moments(value) for layer, value in features.items()}

    def call(self, features, image, target, mask=None):
        return self.weighted_mean({layer: sum(mean_squared_error(mine, theirs) for mine, theirs in zip(moments(features[layer], mask), target[layer]))
                                   for layer in self.layers})


class Numpy(styleplug.Loss):
    """Leaves TensorFlow inside call: .numpy() works eagerly, not in a compiled step."""

    name = "numpyloss"
    role = "style"

    def compute_target(self, features):
        return features

    def call(self, features, image, target, mask=None):
        return tf.constant(float(np.mean(features[next(iter(self.layers))].numpy())))  # the plugin's own line


class Vector(styleplug.Loss):
    """Returns one value per layer instead of a scalar."""

    name = "vector"
    role = "style"

    def compute_target(self, features):
        return features

    def call(self, features, image, target, mask=None):
        return tf.stack([mean_squared_error(features[layer], target[layer]) for layer in self.layers])


def test_an_old_contract_loss_under_a_mask_sees_only_the_region_and_the_kit_checks_it():
    network = TinyNetwork(weights="none")
    loss = OldQuantiles(layers=["conv1", "conv2"])
    model = network.build(list(loss.layers))
    rng = np.random.default_rng(0)
    image = tf.constant(rng.uniform(0, 255, (1, 16, 16, 3)).astype(np.float32))
    features = model(network.preprocess(image))
    loss.set_target({layer: model(network.preprocess(image[:, :, ::-1]))[layer] for layer in loss.layers})
    left = np.zeros((16, 16), np.float32)
    left[:, :8] = 1
    term = types.SimpleNamespace(loss=loss, provider=Provider("test", None, None))
    masked = float(evaluate(term, features, image, None, tf.constant(left)))
    cut = float(loss.call({layer: features[layer][:, :, : features[layer].shape[2] // 2] for layer in loss.layers}, image))
    assert masked == pytest.approx(cut, rel=1e-5)  # the region alone, not the region plus zeros
    check_loss(OldQuantiles)  # its mask check runs too, and passes


def test_a_pixel_space_style_loss_gets_the_style_image_and_paints_its_colours():
    check_loss(PixelColours)  # the target comes from the style's pixels; the mask check runs as well
    host = PluginHost([plugin("colours", PixelColours)], entrypoints=False, strict=True)
    engine = styleplug.Engine("vgg19", "none", precision="float32", host=host)
    content, style = gradient_image(48, 40), stripes_image(48, 48)
    image = engine.stylize(content, style, size=48, steps=40, style_weight=0, losses={"pixelcolours": {"weight": 10.0}})
    levels = np.linspace(0, 1, 32)

    def colour_distance(picture):  # how far its colour distributions are from the painting's
        pixels, painting = np.asarray(picture, float).reshape(-1, 3), np.asarray(style, float).reshape(-1, 3)
        return np.mean([np.abs(np.quantile(pixels[:, c], levels) - np.quantile(painting[:, c], levels)).mean() for c in range(3)])

    print(f"colour distance to the painting: photo {colour_distance(content):.1f}, painted {colour_distance(image):.1f}")
    assert colour_distance(image) < 0.6 * colour_distance(content)


def test_leaving_tensorflow_in_call_is_named_with_the_plugins_line_and_the_fix():
    with pytest.raises(AssertionError) as checked:
        check_loss(Numpy)
    message = str(checked.value)
    assert "test_plugin_authors.py" in message and "use tensor operations" in message, message
    engine = styleplug.Engine("vgg19", "none", precision="float32",
                              host=PluginHost([plugin("numpy", Numpy)], entrypoints=False))
    with pytest.raises(PluginError) as running:
        engine.stylize(gradient_image(32, 32), stripes_image(32, 32), size=32, steps=2, losses={"numpyloss": {}})
    assert re.search(r"at .*test_plugin_authors\.py:\d+", str(running.value)) and "use tensor operations" in str(running.value)


def test_a_vector_valued_loss_is_told_to_reduce_it():
    with pytest.raises(AssertionError, match="return one number: reduce the values"):
        check_loss(Vector)


def test_calibration_measures_a_loss_against_the_gram_term_and_suggests_a_weight():
    from styleplug_meanstd import MeanStdLoss

    found = calibrate_loss(MeanStdLoss, size=64)
    assert found["value"] > 0 and found["gram_value"] > 0
    # The suggestion gives the new loss the Gram term's weighted size on the unstyled photo.
    assert found["suggested_weight"] * found["value"] == pytest.approx(found["gram_weight"] * found["gram_value"], rel=1e-6)
    assert 0.5 < MeanStdLoss.default_weight / found["suggested_weight"] < 2  # its default was set this way


def test_an_unknown_loss_names_the_plugin_that_failed_to_load(caplog):
    broken = types.SimpleNamespace(__name__="swd", register_losses=styleplug.hookimpl(lambda register: 1 / 0))
    with caplog.at_level(logging.WARNING, logger="styleplug.host.plugins"):
        host = PluginHost([broken], entrypoints=False)
    with pytest.raises(UnknownNameError, match="plugin 'swd' failed to load") as error:
        host.loss("swd")
    assert "ZeroDivisionError" in str(error.value)


def test_the_check_passes_a_loss_without_tiling_and_notes_where_it_cannot_run():
    from styleplug.frontends.cli import ONE_PASS_NOTE, _check_plugin
    from styleplug_meanstd import MeanStdLoss

    host = PluginHost([plugin("onepass", OnePassMeanStd), plugin("tileable", MeanStdLoss)], entrypoints=False)
    checks = {record["name"]: _check_plugin(host, record) for record in host.plugins()}
    assert checks["onepass"]["status"] == "ok" and checks["onepass"]["problems"] == []
    assert checks["onepass"]["notes"] == [f"onepassmeanstd: {ONE_PASS_NOTE}"]
    assert "step 3 of `styleplug docs tutorial`" in ONE_PASS_NOTE
    assert checks["tileable"]["status"] == "ok" and checks["tileable"]["notes"] == []


def test_the_old_contract_note_is_in_the_listing_once_and_can_be_silenced(caplog, monkeypatch):
    with caplog.at_level(logging.WARNING, logger="styleplug.host.plugins"):
        host = PluginHost([plugin("old", OldQuantiles)], entrypoints=False)
    record = host.plugins()[0]
    assert "old loss contract" in record["warning"] and "training refuses it" in record["warning"]
    assert caplog.text.count("old loss contract") == 1
    caplog.clear()
    monkeypatch.setenv("STYLEPLUG_QUIET_PLUGINS", "old")
    with caplog.at_level(logging.WARNING, logger="styleplug.host.plugins"):
        again = PluginHost([plugin("old", OldQuantiles)], entrypoints=False)
    assert "old loss contract" not in caplog.text and "old loss contract" in again.plugins()[0]["warning"]
    assert json.dumps(again.plugins())  # JSON-ready


def test_keras_errors_keep_their_whole_sentence():
    from styleplug.testing import check_network

    class Unserializable(Unclonable):
        """Its layer's argument is a NumPy number, which Keras cannot write into a config."""

        name = "unserializable"
        factor = np.float32(0.5)

    with pytest.raises(AssertionError, match=r"must override `get_config\(\)` in order to be serializable\. Please implement"):
        check_network(Unserializable)


def test_network_calibration_rescales_the_content_weight_to_the_networks_feature_scale():
    """A network whose features are ten times larger needs a content weight a hundred times smaller
    (a mean squared distance); the Gram term is relative to its target and keeps its weight."""
    import keras

    from styleplug.testing import calibrate_network

    class Louder(TinyNetwork):
        """TinyNetwork with every feature ten times larger."""

        name = "louder"

        def build(self, layers):
            model = super().build(layers)
            louder = keras.Model(model.input, {layer: keras.layers.Rescaling(10.0)(value) for layer, value in model.output.items()})
            louder.trainable = False
            return louder

    quiet, loud = calibrate_network(TinyNetwork, weights="none", size=48), calibrate_network(Louder, weights="none", size=48)
    assert loud["content"] == pytest.approx(quiet["content"] / 100, rel=1e-3)
    assert loud["gram"] == pytest.approx(quiet["gram"], rel=1e-3)


def test_the_cli_calibrates_and_ships_the_guides():
    from click.testing import CliRunner

    from styleplug.frontends.cli import cli

    calibrated = CliRunner().invoke(cli, ["losses", "--calibrate", "meanstd", "--size", "64"])
    assert calibrated.exit_code == 0 and re.search(r"suggested default_weight: \d", calibrated.output), calibrated.output
    listing = CliRunner().invoke(cli, ["docs"])
    assert "contracts, hooks, managing-plugins, testing-plugins, tutorial" in listing.output
    guide = CliRunner().invoke(cli, ["docs", "contracts"])
    assert guide.exit_code == 0 and guide.output.startswith("# The Loss, Network and Param contracts")
