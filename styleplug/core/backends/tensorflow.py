"""TensorFlow: gradients from a tape, chunks compiled by ``tf.function`` (oneDNN kernels on CPU,
XLA when asked)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ...lazy import tf


def version() -> str:
    import tensorflow

    return str(tensorflow.__version__)


def value_and_grad(fn: Callable[..., tuple[Any, Any]]) -> Callable[..., tuple[Any, Any, Any]]:
    def wrapped(x: Any, *rest: Any) -> tuple[Any, Any, Any]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            value, aux = fn(x, *rest)
        return value, aux, tape.gradient(value, x)
    return wrapped


#: A tf.function cannot be given its arguments' buffers: its results are new ones, even with XLA
#: and even when they are assigned to the variables they replace (an L-BFGS history of 1.4 GiB
#: replaced by a compiled update: 1.5 GiB more at the peak, either way).
REUSES_DONATED = False


def compile(fn: Callable[..., Any], jit_compile: bool, donate: Sequence[int] = ()) -> Callable[..., Any]:
    _quiet_own_retracing()
    # Without AutoGraph: traced code is plain tensor operations (as on JAX, which has none), and
    # converting Keras's own layer code made a process's first compile 1.1-1.4 s slower on a CPU.
    return tf.function(fn, jit_compile=jit_compile, autograph=False)


def loops_run_fast(jit_compile: bool) -> bool:
    # A graph's while loop runs each operation with the same kernels (oneDNN on a CPU) as outside it.
    # With jit_compile XLA runs the loop, and on a CPU as slowly as JAX's: a VGG19 L-BFGS step at
    # 256 px took 1405 ms in an XLA loop against 468 ms as one XLA program per step (414 ms plain).
    return not jit_compile or bool(gpus())


def forward(fn: Callable[..., Any]) -> Callable[..., Any]:
    # TensorFlow's eager kernels (oneDNN on a CPU) run a forward pass at full speed, while a graph
    # per new photo shape would cost a second or more of tracing: stay eager.
    return fn


class _OwnTracesFilter(logging.Filter):
    """Drops TensorFlow's "frequent retracing" warning about the chunks compiled here.

    Each compiled chunk is traced once (tests assert it), but every new image shape or loss setup
    builds a new one from the same code, which TensorFlow's heuristic counts as retracing "in a
    loop" after five of them: a false alarm for a long-lived engine.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("retracing" in message and ("CompiledStep" in message or "TiledStep" in message))


_filter_installed = False


def _quiet_own_retracing() -> None:
    global _filter_installed
    if not _filter_installed:
        tf.get_logger().addFilter(_OwnTracesFilter())
        _filter_installed = True


def transposed_matmul(a: Any, b: Any) -> Any:
    # One fused product: with its gradient, 1.3x faster on oneDNN than a transpose then a product,
    # and 2.1x faster than the same einsum.
    return tf.matmul(a, b, transpose_a=True)


def gpus() -> list[str]:
    return [device.name for device in tf.config.list_physical_devices("GPU")]


def compute_capability() -> tuple[int, int]:
    found = tf.config.list_physical_devices("GPU")
    return tuple(tf.config.experimental.get_device_details(found[0]).get("compute_capability", (0, 0))) if found else (0, 0)


def gpu_free_memory() -> int | None:
    # TensorFlow reports what it has allocated, not what the device has free.
    return None


def gpu_peak_memory() -> int | None:
    return int(tf.config.experimental.get_memory_info("GPU:0")["peak"]) if gpus() else None


def select_positions(values: Any, keep: Any) -> Any:
    # Works inside tf.function too, with a length known only when it runs.
    return tf.boolean_mask(values, keep)


def set_threads(threads: int) -> int | None:
    """Set the CPU threads; return the number already fixed when it is too late to change it."""
    current = tf.config.threading.get_intra_op_parallelism_threads()
    if current == threads:
        return None
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        return current
    return None


@contextmanager
def device_scope(index: int) -> Iterator[None]:
    with tf.device(f"/GPU:{index}"):
        yield


def out_of_memory(error: BaseException) -> bool:
    return isinstance(error, tf.errors.ResourceExhaustedError)


def failure(error: BaseException) -> bool:
    return isinstance(error, tf.errors.OpError)
