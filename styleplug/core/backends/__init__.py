"""The few things that differ between Keras backends, behind one interface.

Everything else in styleplug computes with ``keras.ops`` and Keras layers, so it runs on whichever
backend Keras uses. Each backend module here provides the same functions:

- ``value_and_grad(fn)``: for ``fn(x, *rest) -> (scalar, aux)``, a function giving
  ``(scalar, aux, gradient with respect to x)``;
- ``compile(fn, jit_compile, donate)``: ``fn`` compiled for the backend's device (its arguments and
  results are nests of tensors; ``donate`` names positional arguments whose buffers the call may
  reuse, since the caller never reads them again);
- ``REUSES_DONATED``: whether ``compile``'s results really take the donated arguments' buffers, so
  that a call replacing a large state needs no second copy of it beside the first;
- ``loops_run_fast(jit_compile)``: whether a loop of steps inside one program compiled with
  ``compile(..., jit_compile)`` runs as fast as the steps called one by one (then a chunk is one
  program, else one program per step);
- ``forward(fn)``: ``fn``, a forward pass called again and again (a fast model painting photos),
  made as fast as the backend can run it: compiled where eager mode is slow (JAX), as it is where
  eager mode is fast (TensorFlow);
- ``transposed_matmul(a, b)``: ``a``'s last two axes swapped, times ``b`` (the Gram product; each
  backend has its fastest form);
- ``gpus()``, ``compute_capability()``, ``gpu_free_memory()``, ``gpu_peak_memory()``: what the
  accelerator is and has;
- ``select_positions(values, keep)``: the rows of ``values`` where ``keep`` is true, a length known
  only at run time (what an old-contract loss sees under a mask; such losses run on TensorFlow only,
  and JAX does it outside compiled code alone);
- ``set_threads(threads)``: CPU threads per operation, for the whole process;
- ``device_scope(index)``: a context in which new tensors and computations go to GPU ``index``;
- ``out_of_memory(error)`` and ``failure(error)``: whether an exception is the device running out
  of memory, or the backend's own failure (as opposed to a bug in Python code).

The backend is Keras's: ``KERAS_BACKEND``, or ``choose`` before Keras is imported (the CLI's
``--backend`` does this). TensorFlow is the default.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

from ...errors import UsageError
from ...lazy import IMPORTING

#: Backends the engine runs on, the default first.
BACKENDS = ("tensorflow", "jax")


def choose(name: str) -> None:
    """Make ``name`` Keras's backend for this process. Only before Keras is imported, since Keras
    fixes its backend then."""
    if name not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}.")
    if "keras" in sys.modules:
        running = sys.modules["keras"].backend.backend()
        if running != name:
            raise UsageError(f"Keras already runs on {running} in this process, so the backend cannot become {name}; "
                             f"set KERAS_BACKEND={name} before anything imports Keras.")
        return
    os.environ["KERAS_BACKEND"] = name


def name() -> str:
    """The backend Keras uses (or will use once imported), without importing Keras."""
    if "keras" in sys.modules:
        return str(sys.modules["keras"].backend.backend())
    return os.environ.get("KERAS_BACKEND") or _configured() or "tensorflow"


def _configured() -> str | None:
    """The backend in Keras's own configuration file, which Keras reads when KERAS_BACKEND is unset."""
    import json

    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as file:
            return json.load(file).get("backend")
    except (OSError, ValueError, AttributeError):
        return None


def current() -> ModuleType:
    """The module of the backend Keras uses; one line naming the fix for a backend the engine does not run on."""
    with IMPORTING:  # another thread may be importing Keras (through the backend module) right now
        chosen = name()
        if chosen not in BACKENDS:
            raise UsageError(f"styleplug runs on the Keras backends {', '.join(BACKENDS)}, but Keras is set to {chosen}; "
                             "set KERAS_BACKEND=tensorflow (or jax), or pass --backend.")
        if chosen == "jax":
            from . import jax as module
        else:
            from . import tensorflow as module
        try:
            module.version()
        except ImportError as error:
            extra = "" if chosen == "tensorflow" else "[jax]"
            raise UsageError(f"the {chosen} backend is chosen but {chosen} is not installed ({error}); install it "
                             f"(pip install 'styleplug{extra}') or choose another with --backend.") from None
        return module
