"""The optimiser safeguard, proven on noise rather than on this machine's CPU.

Under bfloat16 every activation and every gradient carries rounding noise of relative size about
2^-8. How that noise falls depends on the CPU (native kernels and emulation round differently), so
these tests inject it on purpose: a VGG19 whose every layer's output, and the gradient flowing back
through it, is multiplied by 1 + 2^-8·N(0, 1), drawn afresh at every step. The unguarded L-BFGS of
styleplug 0.1 fails the first test: on this network its loss rose 3.6-fold at step 5.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import styleplug
from styleplug.lazy import keras, ops
from styleplug.networks.vgg import VGG19
from styleplug.core.optim import ACCEPT_RISE
from styleplug.host.plugins import PluginHost

from support import gradient_image, stripes_image

CONTENT = gradient_image(64, 48)
STYLE = stripes_image(64, 64)
BFLOAT16_NOISE = 2.0**-8


class _Noise(keras.layers.Layer):
    """Multiplies its input, and separately the gradient flowing back, by 1 + relative·N(0, 1).
    Written with keras.ops, so it runs on every backend."""

    def __init__(self, relative: float, seed: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.relative = relative
        self.seed = seed
        self.seeds = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        relative = self.relative
        forward = 1.0 + relative * keras.random.normal(ops.shape(inputs), seed=self.seeds)
        backward = 1.0 + relative * keras.random.normal(ops.shape(inputs), seed=self.seeds)

        @ops.custom_gradient
        def noisy(x):
            def gradient(*args, upstream=None):
                upstream = args[0] if upstream is None else upstream
                return upstream * ops.cast(backward, upstream.dtype)
            return x * ops.cast(forward, x.dtype), gradient

        return noisy(inputs)


class NoisyVGG19(VGG19):
    """VGG19 (random weights) whose features and their gradients carry relative noise."""

    name = "noisy-vgg19"
    relative = BFLOAT16_NOISE

    def build(self, layers):
        model = super().build(layers)
        # Noise after every layer, as rounding happens in every layer under bfloat16.
        inputs = keras.Input((None, None, 3))
        x, outputs = inputs, {}
        for index, layer in enumerate(model.layers[1:]):
            x = _Noise(self.relative, seed=index, name=f"{layer.name}_noise")(layer(x))
            if layer.name in layers:
                outputs[layer.name] = x
        noisy = keras.Model(inputs, outputs)
        noisy.trainable = False
        return noisy


class QuietVGG19(NoisyVGG19):
    """The same network without the noise: what the optimiser reaches on exact gradients."""

    name = "quiet-vgg19"
    relative = 0.0


@styleplug.hookimpl
def register_networks(register) -> None:
    register(NoisyVGG19)
    register(QuietVGG19)


def _host() -> PluginHost:
    return PluginHost([types.SimpleNamespace(__name__="noise_networks", register_networks=register_networks)],
                      entrypoints=False, strict=True)


def _trace(network: str, optimizer: str, steps: int):
    engine = styleplug.Engine(network, "none", precision="float32", host=_host())
    reports: list[styleplug.Progress] = []
    engine.stylize(CONTENT, STYLE, size=64, steps=steps, optimizer=optimizer, tolerance=0, chunk_size=10,
                   callback=reports.append)
    losses = [loss for report in reports for loss in report.step_losses]
    accepted = [flag for report in reports for flag in report.accepted]
    return losses, accepted, reports[-1].losses["total"]


def _assert_never_rises(losses: list[float], accepted: list[bool]) -> None:
    previous = np.inf
    for step, (loss, took) in enumerate(zip(losses, accepted), start=1):
        if took:
            assert loss <= (1 + ACCEPT_RISE) * previous, f"step {step}: accepted {loss:.4g} after {previous:.4g}"
            previous = loss


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_noise_of_bfloat16_size_never_raises_an_accepted_loss_and_costs_little(optimizer):
    noisy, accepted, noisy_final = _trace("noisy-vgg19", optimizer, 60)
    _assert_never_rises(noisy, accepted)
    quiet, _, quiet_final = _trace("quiet-vgg19", optimizer, 60)
    # The noise must cost little of what the optimiser reaches without it: over three noise seeds
    # L-BFGS ended 1.01-1.08 times the quiet loss after 60 steps (the unguarded one rose 3.6-fold).
    assert noisy_final < 1.10 * quiet_final, (noisy_final, quiet_final)
    assert noisy_final < 0.2 * noisy[0], "the loss must still fall far"
    assert sum(accepted) >= 0.8 * len(accepted), "most steps are accepted"


def test_a_rejected_step_is_retaken_shorter_from_the_accepted_point():
    """A loss that jumps up once (as an overshoot would) is rejected and the image is not lost."""
    losses, accepted, final = _trace("noisy-vgg19", "lbfgs", 30)
    rejected = [step for step, took in enumerate(accepted) if not took]
    for step in rejected:  # the step after a rejection starts from the accepted point, so it is lower again
        if step + 1 < len(losses) and accepted[step + 1]:
            assert losses[step + 1] < losses[step]
    assert final == min(loss for loss, took in zip(losses, accepted) if took) or final <= min(losses) * (1 + ACCEPT_RISE)
