"""Loss values on hand-computed inputs, normalisation across sizes, gradients, parameters."""

from __future__ import annotations

import numpy as np
import pytest
import keras
from keras import ops

from styleplug.core import backends

from styleplug.errors import UnknownNameError, UsageError
from styleplug.losses.content import ContentLoss
from styleplug.losses.functional import gram_matrix, total_variation
from styleplug.losses.style import GramStyleLoss
from styleplug.losses.variation import TotalVariationLoss


def test_gram_matrix_by_hand():
    # Two positions, two channels: [1, 2] and [3, 4].
    features = ops.convert_to_tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    expected = np.array([[1 + 9, 2 + 12], [2 + 12, 4 + 16]]) / 2  # sum over positions / (H*W)
    np.testing.assert_allclose(ops.convert_to_numpy(gram_matrix(features)), expected[None])  # one matrix per image of the batch


def test_gram_matrix_is_float32_for_bfloat16_features():
    features = ops.cast(np.random.default_rng(1).uniform(0, 1, (1, 4, 4, 3)), "bfloat16")
    assert keras.backend.standardize_dtype(gram_matrix(features).dtype) == "float32"


def test_content_loss_by_hand():
    loss = ContentLoss(layers={"a": 1.0, "b": 3.0})
    target = loss.compute_target({"a": ops.zeros((1, 2, 2, 1)), "b": ops.ones((1, 1, 1, 2))})
    features = {"a": ops.full((1, 2, 2, 1), 2.0), "b": ops.ones((1, 1, 1, 2))}
    # layer a: mean((2-0)^2) = 4; layer b: 0; weighted mean = (1*4 + 3*0) / 4 = 1
    assert float(loss.call(features, None, target)) == pytest.approx(1.0)


@pytest.mark.parametrize(("normalize", "expected"), [
    ("mean", 0.625),  # differences .5, 1, 1, .5 -> mean of squares = (.25 + 1 + 1 + .25) / 4
    ("channels", 0.625 / 2**2),  # also divided by C² (C = 2)
    ("target", 0.625 / 0.125),  # relative to the target's mean square: (.25 + 0 + 0 + .25) / 4
])
def test_gram_loss_by_hand_and_zero_at_target(normalize, expected):
    style = ops.convert_to_tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # gram = [[.5, 0], [0, .5]]
    loss = GramStyleLoss(layers=["l"], normalize=normalize)
    target = loss.compute_target({"l": style})
    assert float(loss.call({"l": style}, None, target)) == 0.0
    generated = ops.convert_to_tensor([[[[1.0, 1.0], [1.0, 1.0]]]])  # gram = [[1, 1], [1, 1]]
    assert float(loss.call({"l": generated}, None, target)) == pytest.approx(expected)


def test_total_variation_by_hand():
    image = ops.convert_to_tensor([[[0.0], [255.0]], [[0.0], [255.0]]])[None]  # a 2x2 vertical edge
    # Only the top-left pixel has both neighbours: dx = 1, dy = 0 on the 0..1 scale.
    assert float(total_variation(image)) == pytest.approx(1.0)
    assert float(total_variation(image, exponent=1.0)) == pytest.approx(1.0, rel=1e-4)
    assert float(total_variation(ops.full((1, 8, 8, 3), 100.0))) == 0.0


def _picture_and_target(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The same two smooth 'feature maps' sampled at ``size`` x ``size``."""
    y, x = np.mgrid[0:size, 0:size] / size
    picture = np.stack([np.sin(6 * x), np.cos(5 * y), x * y], -1)[None].astype(np.float32)
    target = np.stack([np.cos(3 * x), np.sin(4 * y), x], -1)[None].astype(np.float32)
    return picture, target


def _content_and_style(size: int) -> tuple[float, float]:
    picture, target = _picture_and_target(size)
    content, gram = ContentLoss(layers=["f"]), GramStyleLoss(layers=["f"])
    return (float(content.call({"f": picture}, None, content.compute_target({"f": target}))),
            float(gram.call({"f": picture}, None, gram.compute_target({"f": target}))))


@pytest.mark.parametrize("size", [32, 64, 256])
def test_losses_are_normalised_per_element(size):
    """The same picture at different sizes gives the same loss values, so weights carry across sizes."""
    content, style = _content_and_style(size)
    content_128, style_128 = _content_and_style(128)
    assert content > 0.1 and style > 0.01
    assert content == pytest.approx(content_128, rel=0.05)
    assert style == pytest.approx(style_128, rel=0.05)


def test_gradients_reach_the_image():
    image = ops.convert_to_tensor(np.random.default_rng(3).uniform(0, 255, (1, 8, 8, 3)), "float32")
    _, _, gradient = backends.current().value_and_grad(lambda image: (TotalVariationLoss().call({}, image, None), None))(image)
    assert float(ops.sum(ops.abs(gradient))) > 0


def test_declared_params_are_validated():
    assert TotalVariationLoss(exponent="1.25").options == {"exponent": 1.25}  # CLI text is parsed
    with pytest.raises(UsageError, match=r"value 5.0 for option 'exponent' of loss 'tv' is out of range; expected 1.0 <= x <= 3.0"):
        TotalVariationLoss(exponent=5)
    with pytest.raises(UsageError, match="expected a finite number"):
        TotalVariationLoss(exponent=float("nan"))
    with pytest.raises(UnknownNameError, match="unknown option 'exponnent' of loss 'tv'. Did you mean 'exponent'"):
        TotalVariationLoss(exponnent=2)


def test_config_round_trip():
    loss = GramStyleLoss(layers={"block1_conv1": 2.0, "block2_conv1": 1.0})
    assert GramStyleLoss.from_config(loss.get_config()).get_config() == loss.get_config()


def test_negative_layer_weight_is_refused():
    with pytest.raises(UsageError, match="layer weight -1 for 'x' of loss 'gram' is invalid"):
        GramStyleLoss(layers={"x": -1})
