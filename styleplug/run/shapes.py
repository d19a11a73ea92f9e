"""Which image sizes a feature network accepts, from Keras shape inference alone (no kernel runs:
oneDNN fails on images pooled away to nothing with raw errors)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from PIL import Image

from ..errors import UsageError
from .image import long_side_size
from .job import MAX_SIZE
from ..networks import Network


def fits(model: Any, width: int, height: int) -> bool | None:
    """Whether an image of this size keeps every output of ``model`` at least one pixel wide;
    None when the model cannot infer shapes."""
    try:
        shapes = model.compute_output_shape((1, height, width, 3))
    except ValueError:  # Keras: "Computed output size would be zero or negative"
        return False
    except Exception:
        return None
    shapes = shapes.values() if isinstance(shapes, Mapping) else shapes
    return all(0 not in tuple(shape)[1:3] for shape in shapes)


def smallest_side(model: Any) -> int | None:
    """The smallest square image side that ``model`` accepts (binary search on shape inference)."""
    if not fits(model, MAX_SIZE, MAX_SIZE):
        return None
    low, high = 0, MAX_SIZE  # low fails (or is 0), high fits
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(model, middle, middle) else (middle, high)
    return high


def smallest_long_side(model: Any, size: tuple[int, int], smallest: int) -> int | None:
    """The smallest long side at which an image of ``size`` keeps every layer of ``model`` (None above MAX_SIZE)."""
    ratio = max(size) / min(size)
    side = max(smallest, math.floor((smallest - 0.5) * ratio))
    while side <= MAX_SIZE:
        if fits(model, *long_side_size(size, side)):
            return side
        side += 1
    return None


def style_side(size: int, style_scale: float) -> int:
    """The long side style images get at an output size: ``style_scale`` sets the brush strokes' size."""
    return max(16, round(size * style_scale))


def check_sizes(network: Network, model: Any, layers: tuple[str, ...], content: Image.Image,
                styles: list[tuple[str, Image.Image]], sizes: list[int], style_scale: float) -> None:
    """Refuse, before the network sees them, images that the network would pool away at any
    scale: the content at every scale, and each style image at its own scale. The error's data
    holds the smallest size (``size``, ``scale`` or ``style_scale``) that would work."""
    smallest = smallest_side(model)
    if smallest is None:
        return
    needs = f"too small for layer '{network.deepest(layers)}' of network '{network.name}', which needs at least {smallest} px on each side"
    for size in sizes:
        width, height = long_side_size(content.size, size)
        if not fits(model, width, height):
            fix = smallest_long_side(model, content.size, smallest)
            option = "size" if size == sizes[-1] else "scale"
            advice = "crop it to a less extreme aspect ratio" if fix is None else (
                f"use {{size={fix}}} or more" if option == "size" else f"use {{scales}} of at least {fix} px")
            raise UsageError(f"the content image at {size} px is {width}x{height}, {needs}; {advice}.", **{option: fix})
        for label, style in styles:
            width, height = long_side_size(style.size, style_side(size, style_scale))
            if not fits(model, width, height):
                fix = smallest_long_side(model, style.size, smallest)
                least = None if fix is None else math.ceil(fix / size * 100) / 100
                advice = "use a style image of a less extreme aspect ratio" if least is None else (
                    f"use {{style_scale={least:g}}} or more, or a style image of a less extreme aspect ratio")
                raise UsageError(f"{label} at {size} px × style_scale {style_scale:g} is {width}x{height}, {needs}; {advice}.",
                                 style_scale=least)
