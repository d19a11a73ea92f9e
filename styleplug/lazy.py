"""Deferred imports of TensorFlow and Keras.

``from styleplug.lazy import tf`` gives a module that imports TensorFlow on first use. styleplug
uses it everywhere so that ``import styleplug``, ``styleplug --help`` and ``styleplug plugins``
stay instant; plugins should use it too, since the host imports every plugin to list it.
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType
from typing import Any

#: Held while Keras, TensorFlow or a backend module is first imported. Keras's modules import each
#: other, so a second thread that reached it mid-import (two demo workers' first jobs) saw it half
#: made: "partially initialized module 'keras' has no attribute 'backend'".
IMPORTING = threading.RLock()


class LazyModule(ModuleType):
    """A module stand-in that imports the real module on first attribute access."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if attr == "_module":
            raise AttributeError(attr)
        if self._module is None:
            with IMPORTING:
                if self._module is None:
                    self._module = importlib.import_module(self.__name__)
        return getattr(self._module, attr)


tf = LazyModule("tensorflow")
keras = LazyModule("keras")
ops = LazyModule("keras.ops")
