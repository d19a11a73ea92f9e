"""``Job``: one description of a style-transfer run, shared by every front end.

A ``Job`` says what to paint and how: the images, the output size, the losses and their options,
the optimiser, when to stop and what the run may use. Its fields carry their defaults, their checks
and their help text; the CLI builds its options from them and the demo its controls, and the run
record stores a job so that ``replay`` can rebuild it. Engine settings (network, weights, precision,
XLA) are not part of a job: one engine runs many jobs.

Checks that need the network or the images (layer names, loss names, image sizes) happen when
the engine runs the job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from .colors import COLOR_MODES
from ..errors import UnknownNameError, UsageError
from .image import ImageInput

OPTIMIZERS = ("lbfgs", "adam")
TILING_MODES = ("auto", "on", "off")
INIT_MODES = ("content", "noise", "style")
DEFAULT_LEARNING_RATES = {"lbfgs": 1.0, "adam": 5.0}
MAX_SIZE = 16384  # a print-size poster, in tiles on a GPU
# Automatic multi-scale halves the size down to this long side (so sizes below twice it run at one scale).
MIN_AUTO_SCALE = 256
# The built-in terms whose weight and layers are fields of their own: loss name -> (weight field, layers field).
BUILT_IN_TERMS: dict[str, tuple[str, str | None]] = {
    "content": ("content_weight", "content_layers"),
    "gram": ("style_weight", "style_layers"),
    "tv": ("tv_weight", None),
}


def parse_layers(text: str) -> dict[str, float]:
    """``"a,b:0.5"`` -> ``{"a": 1.0, "b": 0.5}``."""
    layers: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition(":")
        try:
            layers[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise UsageError(f"layer weight '{weight}' in '{item}' is not a number; write layer:weight, e.g. block1_conv1:0.5.") from None
    if not layers:
        raise UsageError(f"no layer names in {text!r}; write e.g. block1_conv1,block2_conv1:0.5.")
    return layers


def _parse_numbers(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{{style_blend}} takes comma-separated numbers, e.g. 0.7,0.3; got {text!r}.") from None


def _parse_scales(text: str) -> str | list[int]:
    if text in ("auto", "none"):
        return text
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{{scales}} takes auto, none or comma-separated sizes, e.g. 256,512; got {text!r}.") from None


def _option(default: Any, help: str, *, parse: Callable[[str], Any] | None = None, flag: str | None = None,
            default_text: str | None = None, multiple: bool = False) -> Any:
    """A job field with what front ends need to offer it: ``help``; ``parse`` reads it from text
    (default: the field's type); ``flag`` overrides the CLI flag; ``default_text`` describes a
    default that ``None`` stands for; ``multiple``: the CLI flag is repeated, once per value."""
    metadata = {"help": help, "parse": parse, "flag": flag, "default_text": default_text, "multiple": multiple}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class Job:
    """One style-transfer run. Every field but ``content`` and ``style`` has a default.

    Image fields take a file path, a ``PIL.Image`` or a numpy array; paths keep a job serialisable.
    Sequences become tuples and mappings read-only, so a job cannot change once made.
    """

    content: ImageInput = _option(None, "The photo to paint.")
    style: tuple[ImageInput, ...] = _option((), "One or more style images.")
    style_blend: tuple[float, ...] | None = _option(
        None, "Relative weights of several style images, e.g. 0.7,0.3.", parse=_parse_numbers, flag="--style-weights",
        default_text="equal")
    style_scale: float = _option(1.0, "Size of the style images relative to the output; smaller gives finer strokes.")
    masks: tuple[ImageInput, ...] | None = _option(
        None, "Greyscale images over the content photo, one per style image, in order: white where that style applies; "
        "black everywhere keeps the photo unstyled there.", flag="--mask", default_text="none", multiple=True)
    colors: str = _option("style", "Colours: style, luminance (keep the photo's colours) or match (recolour the style "
                          "images to the photo's first).")
    size: int = _option(512, f"Long side of the output in pixels (16 to {MAX_SIZE}).")
    scales: str | tuple[int, ...] = _option(
        "auto", f"Coarse-to-fine sizes before the output size: auto (halve down to {MIN_AUTO_SCALE} px), none, "
        "or sizes, e.g. 256,512.", parse=_parse_scales)
    steps: int = _option(300, "Most optimisation steps per scale.")
    optimizer: str = _option("lbfgs", f"Optimiser: {' or '.join(OPTIMIZERS)}.")
    learning_rate: float | None = _option(
        None, "Step size of the optimiser.",
        default_text=", ".join(f"{rate:g} for {name}" for name, rate in DEFAULT_LEARNING_RATES.items()))
    history: int = _option(20, "L-BFGS history length (memory: two images per entry).")
    content_weight: float | None = _option(None, "Weight of the content term (0 removes it).",
                                           default_text="the network's, else the loss's: 1")
    style_weight: float | None = _option(None, "Weight of the Gram style term (0 removes it).",
                                         default_text="the network's, else the loss's: 1e7")
    tv_weight: float | None = _option(None, "Weight of the total-variation term (0 removes it).",
                                      default_text="the network's, else the loss's: 1e5")
    content_layers: Mapping[str, float] | None = _option(
        None, "Content layers with optional weights, e.g. block4_conv2.", parse=parse_layers, default_text="the network's")
    style_layers: Mapping[str, float] | None = _option(
        None, "Style layers with optional weights, e.g. block1_conv1:2,block2_conv1.", parse=parse_layers,
        default_text="the network's")
    losses: Mapping[str, Mapping[str, Any]] = _option(
        {}, "More losses or options of any loss, by name, e.g. {'tv': {'weight': 10, 'exponent': 1.25}}; "
        "every loss takes weight and (if it reads features) layers, plus its declared parameters.")
    init: str | ImageInput = _option(
        "content", f"Starting image: {', '.join(INIT_MODES)}, an image, or a fast style model's result (MODEL.npz, in "
        "its first style, or MODEL.npz:STYLE): optimise from the one-pass painting.")
    seed: int = _option(0, "Random seed (noise start).")
    chunk_size: int = _option(10, "Most steps between two progress reports (and checks for cancellation).")
    chunk_seconds: float | None = _option(None, "Also bound a chunk by time, in seconds, so that reports come that often "
                                          "however large the image.", default_text="no bound")
    tolerance: float = _option(0.01, "Stop early when the loss improves by less than this fraction over the window; "
                               "0 runs every step.")
    window: int = _option(50, "Steps over which the early stop measures the improvement.")
    max_pixels: int | None = _option(None, "Refuse input images above this many pixels (checked from the header).",
                                     default_text="50000000, or STYLEPLUG_MAX_PIXELS")
    max_memory: float | None = _option(None, "GiB of memory a job may plan for on a CPU.", default_text="what is free")
    fit_memory: bool = _option(False, "If the job would not fit in memory, shrink the L-BFGS history, then switch to Adam.")
    tiling: str = _option("auto", "Exact tiled optimisation, for sizes whose network pass does not fit in memory: auto "
                          "(tile where a scale would not fit, shrinking the L-BFGS history as needed), on (tile every "
                          "scale larger than a tile), off (refuse what does not fit).")
    tile_size: int | None = _option(None, "Side of a tile of the pass back in pixels, before its halo of context, at the "
                                    "output's size (the gathering pass, forward only, takes the largest tiles that fit; "
                                    "a smaller scale that does not fit in one pass gets the planner's tiles).",
                                    default_text="the planner's: the fewest pixels through the network that fit")
    checkpoint: str | None = _option(None, "A file to keep the run's state in every few minutes; running the same job "
                                     "with the same file continues from it.", default_text="none")

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if self.content is None:
            raise UsageError("a job needs a content image; give {content}.")
        put("content", _image(self.content))
        styles = self.style if isinstance(self.style, (list, tuple)) else [self.style]
        if not styles:
            raise UsageError("a job needs at least one style image; give {style}.")
        put("style", tuple(_image(image) for image in styles))
        if self.style_blend is not None:
            blend = tuple(check_number("a style blend weight", value) for value in self.style_blend)
            if len(blend) != len(self.style):
                raise UsageError(f"got {len(blend)} style blend weights for {len(self.style)} style images; "
                                 "give one weight per style image.")
            if not sum(blend) > 0:
                raise UsageError("the style blend weights are all zero; give at least one style image a positive weight.")
            put("style_blend", blend)
        check_number("{style_scale}", self.style_scale, positive=True)
        if self.masks is not None:
            masks = tuple(_image(mask) for mask in _sequence("masks", self.masks))
            if len(masks) != len(self.style):
                raise UsageError(f"got {len(masks)} masks for {len(self.style)} style images; "
                                 "give one mask per style image, in the same order.")
            put("masks", masks)
        _choice("colour mode", self.colors, COLOR_MODES)
        check_number("{size}", self.size, positive=True, integer=True)
        if not 16 <= self.size <= MAX_SIZE:
            raise UsageError(f"{{size}} must be between 16 and {MAX_SIZE} pixels; got {self.size}.")
        put("scales", self.scales if isinstance(self.scales, str) else tuple(_sequence("scales", self.scales)))
        plan_scales(self.scales, self.size)  # checks them
        for name in ("steps", "history", "chunk_size", "window"):
            check_number(f"{{{name}}}", getattr(self, name), positive=True, integer=True)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in ("learning_rate", "chunk_seconds", "max_memory"):
            if getattr(self, name) is not None:
                check_number(f"{{{name}}}", getattr(self, name), positive=True)
        for weight_field, layers_field in BUILT_IN_TERMS.values():
            if getattr(self, weight_field) is not None:
                check_number(f"{{{weight_field}}}", getattr(self, weight_field))
            if layers_field and getattr(self, layers_field) is not None:
                put(layers_field, _layers(layers_field, getattr(self, layers_field)))
        put("losses", _losses(self.losses))
        put("init", self.init if isinstance(self.init, str) and self.init in INIT_MODES else _image(self.init))
        check_number("{seed}", self.seed, integer=True)
        check_number("{tolerance}", self.tolerance)
        if self.max_pixels is not None:
            check_number("{max_pixels}", self.max_pixels, positive=True, integer=True)
        if not isinstance(self.fit_memory, bool):
            raise UsageError(f"{{fit_memory}} must be True or False; got {self.fit_memory!r}.")
        _choice("tiling mode", self.tiling, TILING_MODES)
        if self.tile_size is not None:
            check_number("{tile_size}", self.tile_size, positive=True, integer=True)
        if self.checkpoint is not None:
            put("checkpoint", _image(self.checkpoint))
            if any(os.path.abspath(self.checkpoint) == os.path.abspath(path) for path in self.image_files):
                raise UsageError(f"the checkpoint file '{self.checkpoint}' is one of the job's inputs, which it would "
                                 "overwrite; give another {checkpoint} file.")

    @property
    def init_model(self) -> tuple[str, str | None] | None:
        """The style model file and style that ``init`` names (``MODEL.npz`` or ``MODEL.npz:STYLE``), if it names one."""
        if not isinstance(self.init, str) or ".npz" not in self.init:
            return None
        path, _, style = self.init.partition(".npz")
        if style and not style.startswith(":"):
            return None
        return path + ".npz", style[1:] or None

    @property
    def image_files(self) -> list[str]:
        """The paths among the job's images and models (an output must overwrite none of them)."""
        init = [] if isinstance(self.init, str) and self.init in INIT_MODES else [self.init_model[0] if self.init_model else self.init]
        return [image for image in (self.content, *self.style, *(self.masks or ()), *init) if isinstance(image, str)]

    @property
    def style_shares(self) -> list[float]:
        """The weight of each style image: the blend normalised to sum to 1 or, when each style has
        its own region (masks), to a largest weight of 1, so that every region gets the full style."""
        weights = list(self.style_blend or [1.0] * len(self.style))
        scale = max(weights) if self.masks is not None else sum(weights)
        return [weight / scale for weight in weights]

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-ready data. Image inputs that are not files become ``None``, so only
        a job whose images are files comes back whole from ``from_dict``."""
        return {item.name: _plain(getattr(self, item.name)) for item in dataclasses.fields(self)}

    def __hash__(self) -> int:
        """Jobs are values: equal jobs hash alike (images in memory by their pixels), so a job can be
        a dictionary key or a set member, e.g. to find repeated requests."""
        described = {item.name: _plain(getattr(self, item.name), _pixels_digest) for item in dataclasses.fields(self)}
        return hash(json.dumps(described, sort_keys=True))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """The job that ``to_dict`` described; fields left out take their defaults."""
        known = [item.name for item in dataclasses.fields(cls)]
        for name in data:
            if name not in known:
                raise UnknownNameError("job field", name, known)
        return cls(**data)


def job_fields() -> tuple[dataclasses.Field, ...]:  # type: ignore[type-arg]
    """The fields of ``Job``, in order, with their front-end metadata (help, parse, flag, ...)."""
    return dataclasses.fields(Job)


def plan_scales(scales: str | Sequence[int], size: int) -> list[int]:
    """The long side of each coarse-to-fine stage, ending at ``size``.

    ``"auto"`` halves ``size`` while the result stays at least ``MIN_AUTO_SCALE`` (512 -> 256, 512;
    1024 -> 256, 512, 1024); ``"none"`` is a single stage; a list gives the coarse sizes.
    """
    if scales == "auto":
        sizes = [size]
        while sizes[0] // 2 >= MIN_AUTO_SCALE:
            sizes.insert(0, sizes[0] // 2)
        return sizes
    if scales == "none":
        return [size]
    if isinstance(scales, str) or not isinstance(scales, Sequence):
        raise UsageError(f"{{scales}} must be 'auto', 'none' or a list of sizes such as [256, 512]; got {scales!r}.")
    coarse = [check_number("a scale", value, positive=True, integer=True) for value in scales]
    coarse = coarse[:-1] if coarse and coarse[-1] == size else coarse  # the final size may be listed too
    if any(not 16 <= value < size for value in coarse) or coarse != sorted(set(coarse)):
        raise UsageError(f"{{scales}} must be increasing sizes from 16 up to below the output size {size}; got {list(scales)}.")
    return [*coarse, size]


def check_number(name: str, value: Any, positive: bool = False, integer: bool = False) -> Any:
    """``value`` if it is a finite number (whole with ``integer``), >= 0 (> 0 with ``positive``); else a one-line ``UsageError``."""
    kind = "whole number" if integer else "number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        raise UsageError(f"{name} must be a finite {kind}; got {value!r}.")
    if value < 0 or (value == 0 and positive):
        raise UsageError(f"{name} must be {'> 0' if positive else '>= 0'}; got {value!r}.")
    return value


def _choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UnknownNameError(name, str(value), choices)


def _sequence(name: str, value: Any) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise UsageError(f"{name} must be a list; got {value!r}.")
    return value


def _image(value: Any) -> Any:
    """Paths as plain strings, so that a job read back equals the job written."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _layers(name: str, value: Any) -> Mapping[str, float]:
    """Layer names (weight 1 each) or a ``{layer: weight}`` mapping, as a read-only mapping."""
    if isinstance(value, str):
        value = [value]
    layers = dict(value) if isinstance(value, Mapping) else {layer: 1.0 for layer in _sequence(name, value)}
    return MappingProxyType({layer: check_number(f"the weight of layer '{layer}' in {name}", weight) for layer, weight in layers.items()})


def _losses(value: Any) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(value, Mapping):
        raise UsageError(f"losses must map loss names to their options, e.g. {{'tv': {{'weight': 10}}}}; got {value!r}.")
    frozen = {}
    for name, options in value.items():
        if not isinstance(options, Mapping):
            raise UsageError(f"options of loss '{name}' must be a mapping such as {{'weight': 1.0}}; got {options!r}.")
        frozen[name] = MappingProxyType({key: _layers(f"loss '{name}'", item) if key == "layers" else item
                                         for key, item in options.items()})
    return MappingProxyType(frozen)


def _plain(value: Any, image: Callable[[Any], Any] = lambda image: None) -> Any:
    """JSON-ready: tuples as lists, mappings as dicts, images that are not paths as ``image(value)``
    (default None)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item, image) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, image) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return image(value)  # a PIL image or a numpy array


def _pixels_digest(image: Any) -> str:
    """What an image in memory is, for hashing: its pixels, shape and type."""
    pixels = np.asarray(image)
    return hashlib.sha256(pixels.tobytes() + repr((pixels.shape, pixels.dtype.str)).encode()).hexdigest()

