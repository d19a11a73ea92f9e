"""The compiled optimisation chunk, and the engine's cache of them.

A chunk runs ``count`` optimiser steps inside one function compiled by the backend
(``styleplug.core.backends``). It is a pure function of tensors: everything that changes from job to job
(the image, the loss targets, the loss weights, the masks, the optimiser state) is an argument, so
a later job of the same shape and loss configuration reuses the compiled chunk instead of tracing it
again (about 4 s on a CPU, 10-50 s on a GPU), and between chunks nothing leaves the device but the
losses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import backends
from ..lazy import keras, ops
from ..losses import uses_old_contract
from ..losses.functional import region_weights
from ..host.plugins import guarded
from .optim import GRADIENT_NOISE, LBFGS, Adam

if TYPE_CHECKING:
    from .engine import Term

#: Compiled chunks an engine keeps: one per scale of a coarse-to-fine run, and a few more. Each
#: holds its optimiser state (for L-BFGS, 2 image-sized vectors per history entry).
MAX_COMPILED = 4


def region_positions(features: Any, mask: Any) -> Any:
    """The feature vectors of one image's ``(1, H, W, C)`` ``features`` at the positions that ``mask``
    (``(H, W)`` in 0..1 at the image's size, resized to their grid) covers at least half, as a
    one-row grid ``(1, 1, K, C)``: what a loss written to the old contract receives under a mask,
    since it cannot take the mask itself. Any statistic of positions (a Gram matrix, a mean, a
    distribution) is then the region's alone, as if it had been cut out. Old-contract losses run
    on TensorFlow only (their number of positions is known only when the step runs)."""
    grid = region_weights(ops.convert_to_tensor(mask, "float32")[None, :, :, None], features)
    return backends.current().select_positions(features[0], grid[0, :, :, 0] >= 0.5)[None, None]


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
    region = None if mask is None else ops.cast(mask, "float32")[None, :, :, None]
    own = {layer: features[layer] for layer in term.loss.layers}
    return guarded(term.provider, stage, lambda: term.loss.call(own, image, target, region))


def signature(terms: list[Term], shape: tuple[int, ...], optimizer: str, rate: float, history: int, capacity: int) -> str:
    """What a compiled chunk depends on, beyond the values held in its variables."""
    def target_shapes(target: Any) -> Any:
        return keras.tree.map_structure(lambda value: [list(np.shape(value)), str(getattr(value, "dtype", type(value)))], target)

    # An old-contract loss may keep state of its own beside its target, which a chunk traced for an
    # earlier job would have baked in: its chunks are never reused (its object's id is in the key).
    return json.dumps([list(shape), optimizer, rate, history, capacity, [
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


class Stepper:
    """What the engine's steppers share: the terms, the optimiser and the state carried from chunk
    to chunk, loaded with each job of their signature. ``run(count)`` is theirs."""

    def __init__(self, model: Any, terms: list[Term], start: np.ndarray, optimizer: str, rate: float, history: int,
                 precision: str) -> None:
        self.key = ""  # the engine's signature for it
        self.terms = terms  # the loss objects traced into the chunk; later jobs only change values
        self.traced = 0
        self.model = model
        size = int(np.prod(start.shape))
        self.optimizer = LBFGS(size, history, rate, GRADIENT_NOISE[precision]) if optimizer == "lbfgs" else Adam(size, rate)
        self.load(terms, start)

    def load(self, terms: list[Term], start: np.ndarray) -> None:
        """Take a job with this signature: its targets, weights, masks and starting image."""
        self.constants = {
            "weights": ops.convert_to_tensor([term.weight for term in terms], "float32"),
            "targets": [None if term.target is None else keras.tree.map_structure(ops.convert_to_tensor, term.target)
                        for term in terms],
            "masks": [None if term.mask is None else ops.convert_to_tensor(term.mask, "float32") for term in terms]}
        image = ops.convert_to_tensor(start, "float32")
        self.carry = {"optimizer": self.optimizer.initial(image), "image": image,
                      "lowest": ops.convert_to_tensor(np.inf, "float32"),
                      "accepted_values": ops.zeros((len(terms),), "float32")}
        # The fixed-step optimisers can overshoot within the safeguard's tolerance, so the run keeps
        # the lowest-loss image it has seen.
        self.best = ops.copy(image)  # its own buffer: the image's is given to the first chunk

    def advance(self, carry: dict[str, Any], best: Any, total: Any, values: Any, gradient: Any) -> tuple[Any, Any, Any]:
        """One optimiser step from the loss and gradient at ``carry``'s image: the new carry, the
        best image and whether the image was accepted."""
        image = carry["image"]
        better = total < carry["lowest"]
        best = ops.where(better, image, best)
        optimizer, point, took = self.optimizer.step(carry["optimizer"], ops.reshape(image, (-1,)), total,
                                                     ops.reshape(gradient, (-1,)))
        carry = {"optimizer": optimizer, "image": ops.reshape(point, ops.shape(image)),
                 "lowest": ops.where(better, total, carry["lowest"]),
                 "accepted_values": ops.where(took, values, carry["accepted_values"])}
        return carry, best, took

    def release(self) -> None:
        """Drop the finished job's state while the stepper waits for its next job (``load`` gives
        that one its own): for L-BFGS, 2 image-sized vectors per history entry. The best image
        stays, for ``Progress.image()``."""
        self.carry = {}

    def state(self) -> tuple[np.ndarray, Iterator[np.ndarray]]:
        """The best image and every tensor of the carried state, one at a time, for a checkpoint. On a
        CPU the arrays are views of the tensors (no copy); elsewhere one tensor is copied at a time."""
        return np.asarray(self.best), (np.asarray(value) for value in keras.tree.flatten(self.carry))

    def restore(self, best: np.ndarray, state: Iterable[np.ndarray]) -> None:
        """Continue from a checkpoint's ``state()``, one tensor at a time: each of the new run's own
        is dropped before its stored value is read, so the state is never held twice."""
        structure = keras.tree.map_structure(lambda _: 0, self.carry)  # holds none of the tensors
        tensors = keras.tree.flatten(self.carry)
        self.carry = self.best = None
        stored = iter(state)
        for index in range(len(tensors)):
            tensors[index] = None
            tensors[index] = ops.convert_to_tensor(next(stored))
        self.carry = keras.tree.pack_sequence_as(structure, tensors)
        self.best = ops.convert_to_tensor(best)

    def run(self, count: int) -> StepResult:
        raise NotImplementedError

    def tracing_count(self) -> int:
        """How many times the stepper's programs were traced (once each, whatever the number of jobs)."""
        return self.traced


class CompiledStep(Stepper):
    """One compiled chunk and the state it carries from chunk to chunk: built for the first job
    with a given signature, then loaded with each later job's values."""

    def __init__(self, model: Any, features: Callable[[Any, Any], tuple[Mapping[str, Any], Any]], terms: list[Term],
                 start: np.ndarray, optimizer: str, rate: float, history: int, precision: str, jit_compile: bool,
                 capacity: int) -> None:
        """``features(images, network_state)`` gives the network's ``{layer: features}`` of RGB images
        in 0..255 and its new state; ``capacity`` is the most steps one chunk runs."""
        super().__init__(model, terms, start, optimizer, rate, history, precision)
        self.capacity = capacity
        # A frozen network in inference changes no weight, but a random layer's seed (an integer
        # variable) moves on with every call: that part of its state goes from step to step.
        self.random_state = [index for index, variable in enumerate(model.non_trainable_variables)
                             if not str(variable.dtype).startswith(("float", "bfloat"))]
        backend = backends.current()
        self.value_and_grad = backend.value_and_grad(self._objective)
        self.features = features
        # A chunk is one program looping over its steps where the backend runs such loops at full
        # speed; elsewhere (XLA on a CPU) one program per step, called ``count`` times from here.
        self.fused = backend.loops_run_fast(jit_compile)
        if self.fused:
            self.run_chunk = backend.compile(self._chunk, jit_compile, donate=(0,))
        else:
            self.run_step = backend.compile(self._one_step, jit_compile, donate=(0,))

    def _objective(self, image: Any, constants: Mapping[str, Any], network: tuple[Any, Any]) -> tuple[Any, Any]:
        """The total loss at ``image``, with each weighted term and the network's new state beside it."""
        features, network_state = self.features(image, network)
        values = []
        for term, target, mask in zip(self.terms, constants["targets"], constants["masks"]):
            if uses_old_contract(type(term.loss)):
                term.loss.target = target
            values.append(ops.cast(evaluate(term, features, image, target, mask), "float32"))
        weighted = constants["weights"] * ops.stack(values)
        return ops.sum(weighted), (weighted, network_state)

    def _start(self, carry: dict[str, Any], best: Any, weights: list[Any]) -> tuple[Any, ...]:
        """The state a chunk's steps go through: the carry, the best image, the random layers' seeds,
        each term at the last point evaluated, and each step's total loss and acceptance."""
        return (carry, best, [weights[index] for index in self.random_state], ops.zeros((len(self.terms),), "float32"),
                ops.zeros((self.capacity,), "float32"), ops.zeros((self.capacity,), "bool"))

    def _step(self, constants: Mapping[str, Any], network: tuple[Any, Any], index: Any,
              state: tuple[Any, ...]) -> tuple[Any, ...]:
        """Step ``index`` of a chunk, from ``state`` (``_start``'s) to the next."""
        trainable, weights = network
        carry, best, random, _, totals, accepted = state
        # Only the random seeds go from step to step: the weights stay loop-invariant inputs, which
        # oneDNN can treat as constant (carried through the loop, bfloat16 steps were 7-18% slower).
        values = list(weights)
        for position, value in zip(self.random_state, random):
            values[position] = value
        total, (terms, new_network), gradient = self.value_and_grad(carry["image"], constants, (trainable, values))
        carry, best, took = self.advance(carry, best, total, terms, gradient)
        return (carry, best, [new_network[position] for position in self.random_state], terms,
                ops.slice_update(totals, [index], ops.reshape(total, (1,))),
                ops.slice_update(accepted, [index], ops.reshape(took, (1,))))

    def _chunk(self, carry: dict[str, Any], best: Any, constants: Mapping[str, Any], network: tuple[Any, Any],
               count: Any) -> tuple[Any, ...]:
        """``count`` steps from ``carry``, in one program: the final ``_step`` state."""
        self.traced += 1  # runs only while the backend traces
        return ops.fori_loop(0, count, lambda index, state: self._step(constants, network, index, state),
                             self._start(carry, best, network[1]))

    def _one_step(self, carry: dict[str, Any], others: list[Any], constants: Mapping[str, Any], network: tuple[Any, Any],
                  index: Any) -> tuple[Any, list[Any]]:
        """``_step`` as a program of its own, the carry apart: its buffers alone are donated (the
        others start as the best image and the network's own seeds, which stay in use)."""
        self.traced += 1  # runs only while the backend traces
        carry, *others = self._step(constants, network, index, (carry, *others))
        return carry, others

    def run(self, count: int) -> StepResult:
        """Run ``count`` (at most ``capacity``) steps; only the losses come back to the host."""
        non_trainable = self.model.non_trainable_variables
        network = ([variable.value for variable in self.model.trainable_variables],
                   [variable.value for variable in non_trainable])
        if self.fused:
            state = self.run_chunk(self.carry, self.best, self.constants, network, ops.convert_to_tensor(count, "int32"))
        else:
            carry, *others = self._start(self.carry, self.best, network[1])
            for index in range(count):  # the index a tensor, so that one program serves every step
                carry, others = self.run_step(carry, others, self.constants, network, ops.convert_to_tensor(index, "int32"))
            state = (carry, *others)
        self.carry, self.best, random_state, last, totals, accepted = state
        for index, value in zip(self.random_state, random_state):
            non_trainable[index].assign(value)
        values = ops.convert_to_numpy(self.carry["accepted_values"])
        return StepResult(values, ops.convert_to_numpy(last), ops.convert_to_numpy(totals)[:count],
                          ops.convert_to_numpy(accepted)[:count])
