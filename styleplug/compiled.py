"""The compiled optimisation chunk, and the engine's cache of them.

A chunk runs ``count`` optimiser steps inside one ``tf.function``. Everything that changes from
job to job (the image, the loss targets, the loss weights, the masks, the optimiser state) lives in
``tf.Variable``s, so a later job of the same shape and loss configuration reuses the compiled chunk
instead of tracing it again (about 4 s on a CPU, more under XLA).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .lazy import tf
from .losses import uses_old_contract
from .plugins import guarded
from .optim import GRADIENT_NOISE, LBFGS, Adam

if TYPE_CHECKING:
    from .engine import Term

#: Compiled chunks an engine keeps: one per scale of a coarse-to-fine run, and a few more. Each
#: holds its optimiser state (for L-BFGS, 2 image-sized vectors per history entry).
MAX_COMPILED = 4


class _OwnTracesFilter(logging.Filter):
    """Drops TensorFlow's "frequent retracing" warning about the chunks compiled here.

    Each compiled chunk is traced once (``CompiledStep.tracing_count``; tests assert it), but every
    new image shape or loss setup builds a new one from the same code, which TensorFlow's heuristic
    counts as retracing "in a loop" after five of them: a false alarm for a long-lived engine.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("retracing" in message and "CompiledStep" in message)


_filter_installed = False


def _quiet_own_retracing() -> None:
    global _filter_installed
    if not _filter_installed:
        tf.get_logger().addFilter(_OwnTracesFilter())
        _filter_installed = True


def region_positions(features: Any, mask: Any) -> Any:
    """The feature vectors of one image's ``(1, H, W, C)`` ``features`` at the positions that ``mask``
    (``(H, W)`` in 0..1 at the image's size, resized to their grid) covers at least half, as a
    one-row grid ``(1, 1, K, C)``: what a loss written to the old contract receives under a mask,
    since it cannot take the mask itself. Any statistic of positions (a Gram matrix, a mean, a
    distribution) is then the region's alone, as if it had been cut out."""
    grid = tf.image.resize(tf.cast(mask, tf.float32)[None, :, :, None], tf.shape(features)[1:3], method="area")
    return tf.boolean_mask(features[0], grid[0, :, :, 0] >= 0.5)[None, None]


def old_contract_inputs(loss: Any, features: Mapping[str, Any], mask: Any) -> dict[str, Any]:
    """The features an old-contract loss's ``call(features, image)`` receives: its layers', limited
    to the region when there is a ``mask`` (``(H, W)``)."""
    return {layer: features[layer] if mask is None else region_positions(features[layer], mask) for layer in loss.layers}


def evaluate(term: Term, features: Mapping[str, Any], image: Any, target: Any, mask: Any) -> Any:
    """One term's unweighted value: ``call`` with its layers' features, its target and its region
    (``mask`` is ``(H, W)``). A loss written to the old contract gets the feature vectors of the
    region instead (``region_positions``), and reads its target from ``loss.target``."""
    stage = f"call of loss '{term.loss.name}'"
    if uses_old_contract(type(term.loss)):
        inputs = old_contract_inputs(term.loss, features, mask)
        return guarded(term.provider, stage, lambda: term.loss.call(inputs, image))
    region = None if mask is None else tf.cast(mask, tf.float32)[None, :, :, None]
    own = {layer: features[layer] for layer in term.loss.layers}
    return guarded(term.provider, stage, lambda: term.loss.call(own, image, target, region))


def signature(terms: list[Term], shape: tuple[int, ...], optimizer: str, rate: float, history: int) -> str:
    """What a compiled chunk depends on, beyond the values held in its variables."""
    def target_shapes(target: Any) -> Any:
        return tf.nest.map_structure(lambda value: [list(np.shape(value)), str(getattr(value, "dtype", type(value)))], target)

    # An old-contract loss may keep state of its own beside its target, which a chunk traced for an
    # earlier job would have baked in: its chunks are never reused (its object's id is in the key).
    return json.dumps([list(shape), optimizer, rate, history, [
        [type(term.loss).__module__, type(term.loss).__qualname__, term.loss.get_config(), term.mask is not None,
         target_shapes(term.target), id(term.loss) if uses_old_contract(type(term.loss)) else None] for term in terms]],
        sort_keys=True, default=str)


@dataclass
class StepResult:
    """What one chunk of steps reports back to the host."""

    values: np.ndarray  # each weighted term at the last accepted point
    last_values: np.ndarray  # each weighted term at the last point evaluated (accepted or not)
    totals: np.ndarray  # the total loss at each step of the chunk
    accepted: np.ndarray  # whether each step's point was accepted by the optimiser


class CompiledStep:
    """One compiled chunk with the variables it reads: built for the first job with a given
    signature, then loaded with each later job's values."""

    def __init__(self, features: Callable[[Any], Mapping[str, Any]], terms: list[Term], start: np.ndarray, optimizer: str,
                 rate: float, history: int, precision: str, jit_compile: bool) -> None:
        """``features(images)`` gives the network's ``{layer: features}`` of RGB images in 0..255."""
        self.key = ""  # the engine's signature for it
        self.terms = terms  # the loss objects traced into the chunk; later jobs only change values
        self.variable = tf.Variable(start, dtype=tf.float32)
        size = int(np.prod(start.shape))
        noise = GRADIENT_NOISE[precision]
        self.state = LBFGS(size, history, rate, noise) if optimizer == "lbfgs" else Adam(size, rate)
        self.weights = tf.Variable([term.weight for term in terms], dtype=tf.float32, trainable=False)
        self.masks = [None if term.mask is None else tf.Variable(term.mask, dtype=tf.float32, trainable=False) for term in terms]
        # The targets live in variables, so later jobs load theirs without tracing again.
        self.targets = [None if term.target is None else
                        tf.nest.map_structure(lambda value: tf.Variable(value, trainable=False), term.target)
                        for term in terms]
        for term, target in zip(terms, self.targets):
            if uses_old_contract(type(term.loss)):
                term.loss.target = target
        # The fixed-step optimisers can overshoot within the safeguard's tolerance, so the run keeps
        # the lowest-loss image it has seen.
        self.best = tf.Variable(self.variable)
        self.lowest = tf.Variable(np.inf, dtype=tf.float32)
        self.accepted_values = tf.Variable(tf.zeros((len(terms),)), trainable=False)
        self.state.reset(self.variable)

        compute_features = features

        def weighted_terms(image: Any) -> Any:
            features = compute_features(image)
            return self.weights * tf.stack([tf.cast(evaluate(term, features, image, target, mask), tf.float32)
                                            for term, target, mask in zip(terms, self.targets, self.masks)])

        @tf.function(jit_compile=jit_compile)
        def run_chunk(count: Any) -> tuple[Any, Any, Any, Any]:
            values = tf.zeros((len(terms),))
            totals = tf.TensorArray(tf.float32, size=count)
            accepted = tf.TensorArray(tf.bool, size=count)
            for index in tf.range(count):
                with tf.GradientTape() as tape:
                    values = weighted_terms(self.variable)
                    total = tf.reduce_sum(values)
                if total < self.lowest:
                    self.lowest.assign(total)
                    self.best.assign(self.variable)
                took = self.state.step(self.variable, total, tape.gradient(total, self.variable))
                if took:
                    self.accepted_values.assign(values)
                totals = totals.write(index, total)
                accepted = accepted.write(index, took)
            return self.accepted_values.value(), values, totals.stack(), accepted.stack()

        self.run_chunk = run_chunk
        _quiet_own_retracing()

    def load(self, terms: list[Term], start: np.ndarray) -> None:
        """Take a new job with the same signature: its targets, weights, masks and starting image."""
        for target, theirs, mask in zip(self.targets, terms, self.masks):
            if target is not None:
                tf.nest.map_structure(lambda variable, value: variable.assign(value), target, theirs.target)
            if mask is not None:
                mask.assign(theirs.mask)
        self.weights.assign([term.weight for term in terms])
        self.variable.assign(start)
        self.best.assign(start)
        self.lowest.assign(np.inf)
        self.accepted_values.assign(tf.zeros_like(self.accepted_values))
        self.state.reset(self.variable)

    def run(self, count: int) -> StepResult:
        values, last, totals, accepted = self.run_chunk(tf.constant(count))
        return StepResult(values.numpy(), last.numpy(), totals.numpy(), accepted.numpy())

    def tracing_count(self) -> int:
        """How many times the chunk was traced (1 once it has run, whatever the number of jobs)."""
        return self.run_chunk.experimental_get_tracing_count()
