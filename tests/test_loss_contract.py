"""The Loss contract: targets, masks and batches owned by the loss; losses written to the old contract keep working."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tensorflow as tf

import styleplug
from styleplug.errors import PluginError
from styleplug.losses.content import ContentLoss
from styleplug.losses.functional import gram_matrix, mean_squared_error, moments
from styleplug.losses.style import GramStyleLoss
from styleplug.losses.variation import TotalVariationLoss
from styleplug.host.plugins import PluginHost
from styleplug.testing import check_loss

from support import gradient_image, stripes_image

CONTENT, STYLE, OTHER_STYLE = gradient_image(48, 40), stripes_image(48, 48), gradient_image(48, 48, seed=5)
HALF = np.zeros((40, 48), np.uint8)
HALF[:, 24:] = 255


def host_with(*classes: type) -> PluginHost:
    plugin = type("Plugin", (), {"register_losses": staticmethod(styleplug.hookimpl(
        lambda register: [register(cls) for cls in classes] and None))})
    return PluginHost([plugin()], entrypoints=False, strict=True)


def engine_with(*classes: type) -> styleplug.Engine:
    return styleplug.Engine("vgg19", "none", precision="float32", host=host_with(*classes))


class OldGram(styleplug.Loss):
    """The Gram loss as plugins wrote it before compute_target: set_target and call(features, image)."""

    name = "oldgram"
    role = "style"

    def set_target(self, features):
        self.target = {layer: gram_matrix(value) for layer, value in features.items()}

    def call(self, features, image):
        return self.weighted_mean({layer: mean_squared_error(gram_matrix(features[layer]), self.target[layer])
                                   / tf.reduce_mean(tf.square(self.target[layer])) for layer in self.layers})


class OldScaled(OldGram):
    """An old-contract loss that keeps state of its own beside its target."""

    name = "oldscaled"

    def set_target(self, features):
        super().set_target(features)
        self.scale = 1.0 / float(np.mean([np.mean(np.square(value)) for value in self.target.values()]))

    def call(self, features, image):
        return self.scale * self.weighted_mean({layer: mean_squared_error(gram_matrix(features[layer]), self.target[layer])
                                                for layer in self.layers})


class Scaled(styleplug.Loss):
    """The same as OldScaled, written to the contract: the derived state is part of the target."""

    name = "scaled"
    role = "style"

    def compute_target(self, features):
        grams = {layer: gram_matrix(value) for layer, value in features.items()}
        return {"grams": grams, "scale": 1.0 / tf.reduce_mean([tf.reduce_mean(tf.square(g)) for g in grams.values()])}

    def call(self, features, image, target, mask=None):
        return target["scale"] * self.weighted_mean({layer: tf.reduce_mean(tf.square(gram_matrix(features[layer], mask)
                                                                                      - target["grams"][layer]))
                                                     for layer in self.layers})


# Scaled and OldGram are written with tf.* (and OldGram to the old contract): TensorFlow's plugins keep working there.
@pytest.mark.parametrize("cls", [ContentLoss, GramStyleLoss, TotalVariationLoss, pytest.param(Scaled, marks=pytest.mark.tensorflow_only),
                                 pytest.param(OldGram, marks=pytest.mark.tensorflow_only)])
def test_the_kit_passes_the_built_ins_and_both_contracts(cls):
    check_loss(cls)


@pytest.mark.tensorflow_only
def test_the_kit_catches_a_loss_that_ignores_its_mask_or_mixes_the_batch():
    class Unmasked(Scaled):
        """Ignores the mask."""

        name = "unmasked"

        def call(self, features, image, target, mask=None):
            return super().call(features, image, target)

    class Mixed(Scaled):
        """Takes one Gram matrix over the whole batch."""

        name = "mixed"

        def call(self, features, image, target, mask=None):
            return tf.reduce_mean([tf.reduce_mean(tf.square(
                gram_matrix(tf.reshape(features[layer], (1, -1, 1, features[layer].shape[-1]))) - target["grams"][layer]))
                for layer in self.layers])

    with pytest.raises(AssertionError, match="the left half cut out gives"):
        check_loss(Unmasked)
    with pytest.raises(AssertionError, match="a batch of two gave"):
        check_loss(Mixed)


def test_masked_statistics_are_those_of_the_region_cut_out():
    features = tf.constant(np.random.default_rng(3).uniform(0, 1, (2, 6, 8, 5)), tf.float32)
    right = np.zeros((1, 6, 8, 1), np.float32)
    right[:, :, 5:] = 1
    cut = features[:, :, 5:]
    np.testing.assert_allclose(gram_matrix(features, right), gram_matrix(cut), rtol=1e-5)
    for masked, plain in zip(moments(features, right), moments(cut)):
        np.testing.assert_allclose(masked, plain, rtol=1e-5, atol=1e-6)
    # A mask at the image's size is averaged down to each feature grid.
    np.testing.assert_allclose(gram_matrix(features, np.repeat(np.repeat(right, 4, 1), 4, 2)), gram_matrix(cut), rtol=1e-5)


@pytest.mark.tensorflow_only
def test_a_loss_keeping_state_in_its_target_is_right_in_a_long_lived_engine():
    engine = engine_with(Scaled)
    options = {"size": 48, "steps": 5, "style_weight": 0, "losses": {"scaled": {"weight": 1e7}}}
    engine.stylize(CONTENT, STYLE, **options)
    second = engine.stylize(CONTENT, OTHER_STYLE, **options)
    fresh = engine_with(Scaled).stylize(CONTENT, OTHER_STYLE, **options)
    assert np.array_equal(np.asarray(second), np.asarray(fresh))


@pytest.mark.tensorflow_only
def test_an_old_contract_loss_runs_unchanged_keeps_its_masks_and_warns_once(caplog):
    class Legacy(OldGram):
        """Noted once when its plugin loads."""

        name = "legacy"

    with caplog.at_level(logging.WARNING, logger="styleplug.host.plugins"):
        host_with(Legacy)
    warnings = [record.getMessage() for record in caplog.records if "old loss contract" in record.getMessage()]
    assert len(warnings) == 1 and "loss 'legacy'" in warnings[0] and "compute_target(features)" in warnings[0]
    engine = engine_with(OldGram, OldScaled)

    # Given a mask, it receives the region's feature vectors, so a Gram loss written the old way
    # computes what the built-in one does.
    from styleplug.core.compiled import evaluate
    from styleplug.core.engine import Term

    rng = np.random.default_rng(2)
    layers = ["block1_conv1", "block2_conv1"]
    features, reference = ({layer: tf.constant(rng.uniform(0, 1, (1, 8, 8, 4)), tf.float32) for layer in layers}
                           for _ in range(2))
    left = np.zeros((8, 8), np.float32)
    left[:, :4] = 1
    provider = engine.host.loss("oldgram").provider
    old, new = Term(OldGram(layers=layers), 1.0, provider, left), Term(GramStyleLoss(layers=layers), 1.0, provider, left)
    old.loss.set_target(reference)
    image = tf.zeros((1, 8, 8, 3))
    assert float(evaluate(old, features, image, old.loss.target, left)) == pytest.approx(
        float(evaluate(new, features, image, new.loss.compute_target(reference), left)), rel=1e-5)
    assert np.asarray(engine.stylize(CONTENT, STYLE, size=48, steps=3, masks=[HALF], style_weight=0,
                                     losses={"oldgram": {"weight": 1e7}})).shape == (40, 48, 3)

    # set_target runs for every job, so state it keeps beside its target is never stale.
    options = {"size": 48, "steps": 5, "style_weight": 0, "losses": {"oldscaled": {"weight": 1e7}}}
    engine.stylize(CONTENT, STYLE, **options)
    second = engine.stylize(CONTENT, OTHER_STYLE, **options)
    fresh = engine_with(OldScaled).stylize(CONTENT, OTHER_STYLE, **options)
    assert np.array_equal(np.asarray(second), np.asarray(fresh))


def test_the_name_total_is_reserved():
    class Total(Scaled):
        """Named like the sum of the terms."""

        name = "total"

    with pytest.raises(PluginError, match="named 'total', which progress reports use for the sum of all terms"):
        host_with(Total)


@pytest.mark.tensorflow_only
def test_a_plugin_loss_that_turns_non_finite_is_named_with_its_plugin():
    class Exploding(Scaled):
        """Infinite from the start."""

        name = "exploding"

        def call(self, features, image, target, mask=None):
            return super().call(features, image, target, mask) / 0.0

    with pytest.raises(PluginError, match="plugin 'Plugin' failed at call of loss 'exploding'"):
        engine_with(Exploding).stylize(CONTENT, STYLE, size=48, steps=2, losses={"exploding": {}})
