"""What this machine has and what a job needs of it: memory, fast bfloat16, CPU threads.

Kept apart from the engine so that hosts can ask before they build one (the demo sizes its limits
from ``device_label`` and ``available_memory``), and so that planning works wherever ``psutil`` does.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import psutil

from ..errors import UnknownNameError, UsageError
from . import backends
from ..lazy import keras

PRECISIONS = ("auto", "float32", "bfloat16")
# What a job needs whatever its size: the backend's runtime and the network's weights.
RUNTIME_BYTES = 2**30


def available_memory() -> int:
    """Bytes of memory this process can still use without swapping."""
    return int(psutil.virtual_memory().available)


def memory_budget() -> int | None:
    """Bytes a job may still use where it runs: the GPU's free memory on a GPU (None where the
    backend does not tell it: TensorFlow), else this process's available memory."""
    return backends.current().gpu_free_memory() if gpus() else available_memory()


def gpus() -> list[str]:
    """The GPUs the backend sees, by name."""
    return backends.current().gpus()


def device_label() -> str:
    """Where jobs run, for people: ``"CPU, tensorflow"`` or ``"GPU (cuda:0), jax"``."""
    found = gpus()
    return f"{f'GPU ({found[0]})' if found else 'CPU'}, {backends.name()}"


#: On a GPU, the most pixels one compiled pass through the network may hold, whatever the memory:
#: XLA compiled a 4096x4096 bfloat16 chunk in 47 s on an H200, and an 8192x8192 one not within
#: five minutes. Larger images run in tiles there.
GPU_PASS_PIXELS = 4096 * 4096


def pass_pixels() -> int | None:
    """The most pixels one pass through the network may hold here (None: as many as fit in memory)."""
    return GPU_PASS_PIXELS if gpus() else None


def estimate_memory(model: Any, height: int, width: int, optimizer: str, history: int) -> int:
    """Rough peak bytes of one job: activations kept for the backward pass (in the model's compute
    precision), their gradients, the optimiser's float32 state and a fixed runtime overhead.
    Errs on the high side."""
    return int(activation_copies() * activation_bytes(model, height, width)) + \
        4 * _state_vectors(optimizer, history) * height * width * 3 + RUNTIME_BYTES


def _state_vectors(optimizer: str, history: int) -> int:
    """Image-sized float32 vectors a run keeps: the image, its gradient, the best image, the accepted
    point and the proposed move, plus the accepted gradient (L-BFGS, with its history) or the two
    moments (Adam). Saving a checkpoint adds nothing on a CPU (the arrays written are views of the
    state); resuming one holds one more state tensor while it is read (on JAX the L-BFGS history's
    array, ``history`` vectors; on TensorFlow one vector), between chunks, when a step's activations
    and gradient buffers, counted beside the state, are free (a 4096 px state, history 5: 1.13 GiB
    above the run's own on JAX, none measurable on TensorFlow; ``benchmarks/tiling.py --parts checkpoint``)."""
    return 2 * history + 6 if optimizer == "lbfgs" else 7


def activation_copies() -> float:
    """How many copies of the network's activations a step holds at its peak (forward, backward and
    the kernels' scratch), calibrated on VGG19. TensorFlow on a CPU: 4.9 GiB peak RSS at 1024²
    (history 20), about 1 GiB of it the runtime and the weights, the rest under 3.5 copies. JAX on a
    CPU keeps more: a 1024x768 float32 job peaked at 4.89 GiB (TensorFlow: 3.56), a 4096 px one in
    tiles of 960x880 at 8.27 GiB, about 4.05 copies of a window's activations beside its state."""
    return 4.25 if backends.name() == "jax" and not gpus() else 3.5


#: Image-sized float32 buffers a tiled step holds beyond the untiled one's: the gradient being
#: gathered tile by tile and its updated copy, the pixel losses' gradient and the sum of the two.
#: (Memory creeps up over a long run: a 4096 px job planned for 7.4 GiB with bfloat16 activations
#: counted at 2 bytes peaked at 7.82 after 150 steps; counted at 4 on a CPU, its plan estimates 8.2.)
TILED_EXTRA_VECTORS = 4


#: A pass that only goes forward (gathering a tiled step's statistics) keeps no activations for a
#: pass back: over a 2048x1536 window its peak was 0.35 (TensorFlow, bfloat16) and 0.38 (JAX, float32)
#: of a forward and backward pass's.
FORWARD_SHARE = 0.4


def estimate_tiled_memory(model: Any, height: int, width: int, window: tuple[int, int], optimizer: str, history: int,
                          positions_bytes: int, forward_only: bool = False) -> int:
    """Rough peak bytes of a job run in tiles whose largest window is ``window`` (height, width):
    one window's activations and their gradients (``forward_only``: the activations of a pass that
    keeps none for a pass back), the optimiser's state for the whole image, and ``positions_bytes``
    of position-by-position targets (a content target's features) for the whole image."""
    state = _state_vectors(optimizer, history)
    # JAX writes a step's state into the old one's buffers. TensorFlow cannot: its step passes the
    # L-BFGS pairs on (``optim.pair_layout``) but writes the other vectors anew, and its CPU memory
    # pool fragments and creeps over a long run. Counted once there (and the pairs rewritten at
    # every step), a 4096 px job planned for 8 GiB peaked at 10.7 GiB and an 8192 px one for 20 GiB
    # was killed at 24; counted twice, 8 steps of a 4096 px scale peaked at 5.85 GiB (7.23 before
    # the pairs were passed on), the margin left for the creep (1.8 GiB in one segment of 26 steps).
    vectors = state * (1 if backends.current().REUSES_DONATED else 2) + TILED_EXTRA_VECTORS
    copies = activation_copies() * (FORWARD_SHARE if forward_only else 1)
    return int(copies * activation_bytes(model, *window)) + 4 * vectors * height * width * 3 + positions_bytes + RUNTIME_BYTES


def activation_bytes(model: Any, height: int, width: int) -> int:
    """Bytes of every image-shaped output inside ``model`` for one ``height`` x ``width`` image, from
    Keras shape inference (no kernel runs), so any downsampling counts, whatever the layer is called."""
    itemsizes, probe = _shape_probe(model)
    shapes = probe.compute_output_shape((1, height, width, 3))
    return sum(int(np.prod(shape[1:])) * itemsize for itemsize, shape in zip(itemsizes, shapes))


# Per feature model, kept only as long as the model itself: engines come and go in long-lived hosts.
_probes: weakref.WeakKeyDictionary[Any, tuple[list[int], Any]] = weakref.WeakKeyDictionary()


def _shape_probe(model: Any) -> tuple[list[int], Any]:
    """The item size of every image-shaped tensor that ``model``'s layers produce (one per call of a
    layer, as the model's graph holds them), and a model that outputs all those tensors (built once
    per model)."""
    if model not in _probes:
        _probes[model] = _new_probe(model)
    return _probes[model]


def _new_probe(model: Any) -> tuple[list[int], Any]:
    nodes = [node for depth in getattr(model, "_nodes_by_depth", {}).values() for node in depth
             if not isinstance(node.operation, keras.layers.InputLayer)]
    produced = [(node.operation, tensor) for node in nodes for tensor in node.outputs if len(tensor.shape) == 4]
    if not produced:  # not a Keras functional graph: count its outputs only
        produced = [(model.layers[-1], tensor) for tensor in keras.tree.flatten(model.outputs)]
    # bfloat16 halves the activations on a GPU only: a CPU's kernels keep float32 copies beside them
    # (TensorFlow on an AVX512-BF16 CPU: a 1024x768 step peaked at 4.41 GiB in bfloat16, 3.99 in float32).
    half = bool(gpus())
    itemsizes = [2 if half and getattr(operation, "compute_dtype", "float32") == "bfloat16" else 4 for operation, _ in produced]
    return itemsizes, keras.Model(model.inputs, [tensor for _, tensor in produced])


def fast_bfloat16() -> bool:
    """Whether the network runs faster in bfloat16 here: an NVIDIA GPU of compute capability 8.0
    (Ampere) or newer, or, on TensorFlow (whose oneDNN kernels use them), a CPU with AVX512-BF16 or
    AMX instructions. XLA's CPU convolutions gain nothing from bfloat16 (JAX: 562 against 571 ms
    per step at 256²)."""
    if gpus():
        return backends.current().compute_capability() >= (8, 0)
    if backends.name() != "tensorflow":
        return False
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = set(next((line for line in cpuinfo if line.startswith("flags")), "").split())
    except OSError:  # not Linux: no way to tell from here, so float32
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str) -> str:
    """``"auto"`` becomes ``"bfloat16"`` where that is fast (``fast_bfloat16``), else ``"float32"``."""
    if precision not in PRECISIONS:
        raise UnknownNameError("precision", precision, PRECISIONS)
    if precision == "auto":
        return "bfloat16" if fast_bfloat16() else "float32"
    return precision


def set_threads(threads: int) -> None:
    """Let the backend use at most ``threads`` CPU threads, for the whole process.

    TensorFlow fixes its thread pools when it runs its first operation, so call this (or pass
    ``threads=`` to the first ``Engine``) before anything else in the process uses TensorFlow.
    On JAX it limits the process to that many CPUs.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(f"threads must be a whole number >= 1; got {threads!r}.")
    fixed = backends.current().set_threads(threads)
    if fixed is not None:
        raise UsageError(f"TensorFlow has already started in this process with {fixed or 'all'} CPU threads, which "
                         "cannot change now; set {threads} before the first engine runs.", threads=fixed)
