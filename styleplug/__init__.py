"""styleplug: neural style transfer (Gatys, Ecker & Bethge 2015) as a plugin-based engine.

``import styleplug`` is cheap: TensorFlow and plugins load on first use of the engine.

    import styleplug
    image = styleplug.stylize("photo.jpg", "painting.jpg", size=512)
    styleplug.save(image, "out.png")   # keeps the run record, so that styleplug replay can repeat it
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import StyleplugError
from .hookspecs import hookimpl
from .losses import Loss
from .networks import Network
from .params import Param

if TYPE_CHECKING:
    from .engine import Engine, Progress, Result, stylize
    from .fast import StyleModel
    from .image import save_image as save
    from .job import Job
    from .training import train
    from .device import set_threads
    from .plugins import PluginHost, default_host

__all__ = ["Engine", "Job", "Loss", "Network", "Param", "PluginHost", "Progress", "Result", "StyleModel", "StyleplugError",
           "default_host", "hookimpl", "save", "set_threads", "stylize", "train"]

_LAZY = {"Engine": "engine", "Progress": "engine", "Result": "engine", "stylize": "engine", "Job": "job",
         "StyleModel": "fast", "train": "training",
         "PluginHost": "plugins", "default_host": "plugins", "set_threads": "device"}


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name == "save":
        return importlib.import_module(".image", __name__).save_image
    if name == "__version__":
        from .plugins import styleplug_version

        return styleplug_version()
    raise AttributeError(f"module 'styleplug' has no attribute '{name}'")
