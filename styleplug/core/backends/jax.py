"""JAX: gradients by ``jax.value_and_grad``, chunks compiled by ``jax.jit`` with their state's
buffers donated (updated in place on the device), and JAX's persistent compilation cache."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ...lazy import LazyModule

jax = LazyModule("jax")


def _keep_tensorflow_out() -> None:
    """Keras imports TensorFlow whenever it is installed to look for its TensorShape while
    serialising a layer's config (the engine's bfloat16 copy does that). Under JAX there are no
    TensorShapes, and importing TensorFlow costs seconds and a gigabyte: tell Keras it is absent."""
    import sys

    from keras.src.utils import module_utils

    if "tensorflow" not in sys.modules and module_utils.tensorflow._available is None:
        module_utils.tensorflow._available = False


_keep_tensorflow_out()


def version() -> str:
    import jax as module

    return str(module.__version__)


def value_and_grad(fn: Callable[..., tuple[Any, Any]]) -> Callable[..., tuple[Any, Any, Any]]:
    gradient_of = jax.value_and_grad(fn, has_aux=True)

    def wrapped(x: Any, *rest: Any) -> tuple[Any, Any, Any]:
        (value, aux), gradient = gradient_of(x, *rest)
        return value, aux, gradient
    return wrapped


#: XLA writes the results into the donated buffers (an L-BFGS history of 1.4 GiB replaced by a
#: compiled update: 0.003 GiB more at the peak, 1.41 GiB without donating).
REUSES_DONATED = True


def compile(fn: Callable[..., Any], jit_compile: bool, donate: Sequence[int] = ()) -> Callable[..., Any]:
    # JAX always compiles with XLA; jit_compile is TensorFlow's choice alone.
    return jax.jit(fn, donate_argnums=tuple(donate))


def loops_run_fast(jit_compile: bool) -> bool:
    """Whether steps looped inside one program run as fast as the same steps called one by one.
    Not on XLA's CPU backend, where a convolution inside a loop runs slower than outside it (a
    VGG19 step at 128 px: 0.49 s in a loop against 0.16 s alone with jax 0.10, 3.3 s with jax 0.11).
    ``jit_compile`` is TensorFlow's choice: JAX always compiles with XLA."""
    return jax.default_backend() != "cpu"


def forward(fn: Callable[..., Any]) -> Callable[..., Any]:
    # Eager JAX runs op by op, each op a program of its own: one program per shape is faster.
    return jax.jit(fn)


def _use_compilation_cache() -> None:
    """Keep every compiled program in a user cache folder, so a restarted process compiles a known
    shape in seconds (on a GPU, where compiling takes 10-50 s). Every one, the small programs too:
    eager Keras on JAX runs op by op, each op a program of its own (146 in a 96 px default job),
    and with only those over JAX's one-second default cached, a new process still spent most of
    its start compiling them. JAX_COMPILATION_CACHE_DIR chooses the folder; an empty value turns
    the cache off. Set when this module is imported, before JAX compiles anything: JAX reads the
    cache's settings at its first compile."""
    folder = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if folder is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "styleplug", "jax")
    if folder:
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


_use_compilation_cache()


def transposed_matmul(a: Any, b: Any) -> Any:
    # XLA folds the transpose into the product.
    return jax.numpy.matmul(jax.numpy.swapaxes(a, -1, -2), b)


def _gpu_devices() -> list[Any]:
    return [device for device in jax.devices() if device.platform == "gpu"]


def gpus() -> list[str]:
    return [str(device) for device in _gpu_devices()]


def compute_capability() -> tuple[int, int]:
    found = _gpu_devices()
    if not found:
        return (0, 0)
    major, _, minor = str(getattr(found[0], "compute_capability", "0.0")).partition(".")
    return int(major), int(minor or 0)


def _gpu_memory() -> dict[str, int]:
    found = _gpu_devices()
    return (found[0].memory_stats() or {}) if found else {}


def gpu_free_memory() -> int | None:
    stats = _gpu_memory()
    if "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))


def gpu_peak_memory() -> int | None:
    return _gpu_memory().get("peak_bytes_in_use")


def select_positions(values: Any, keep: Any) -> Any:
    # Outside compiled code only: the count of kept positions is known only when it runs.
    return values[keep]


def set_threads(threads: int) -> int | None:
    """Limit the process to ``threads`` CPUs (XLA has no per-operation thread setting; the CPU
    affinity bounds its thread pools alike). Always possible, so never returns a fixed number."""
    if hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, allowed[:threads])
    return None


@contextmanager
def device_scope(index: int) -> Iterator[None]:
    with jax.default_device(jax.devices("gpu")[index]):
        yield


def out_of_memory(error: BaseException) -> bool:
    return "RESOURCE_EXHAUSTED" in str(error) or "Out of memory" in str(error)


def failure(error: BaseException) -> bool:
    return type(error).__name__ == "XlaRuntimeError"
