"""styleplug: neural style transfer (Gatys, Ecker & Bethge 2015) as a plugin-based engine.

``import styleplug`` is cheap: the Keras backend and plugins load on first use of the engine.

The package's folders: ``run`` (the Job, its record, images), ``core`` (the engine, its compiled
chunk and optimisers, the memory planner, the Keras backends), ``losses`` and ``networks`` (the
built-in plugins' classes and the contracts), ``fast`` (fast style models and their training),
``frontends`` (command line, web demo, batches, video) and ``host`` (the plugin host and the
scaffolds); ``testing`` is the kit for plugin authors.

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
    from .core.engine import Engine, Progress, Result, stylize
    from .fast.model import StyleModel
    from .run.image import save_image as save
    from .run.job import Job
    from .fast.training import train
    from .core.device import set_threads
    from .host.plugins import PluginHost, default_host

__all__ = ["Engine", "Job", "Loss", "Network", "Param", "PluginHost", "Progress", "Result", "StyleModel", "StyleplugError",
           "default_host", "hookimpl", "save", "set_threads", "stylize", "train"]

_LAZY = {"Engine": "core.engine", "Progress": "core.engine", "Result": "core.engine", "stylize": "core.engine",
         "Job": "run.job", "StyleModel": "fast.model", "train": "fast.training",
         "PluginHost": "host.plugins", "default_host": "host.plugins", "set_threads": "core.device"}


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name == "save":
        return importlib.import_module(".run.image", __name__).save_image
    if name == "__version__":
        from .host.plugins import styleplug_version

        return styleplug_version()
    raise AttributeError(f"module 'styleplug' has no attribute '{name}'")
