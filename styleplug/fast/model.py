"""Fast style models: a feed-forward network that paints a photo in one pass.

The network follows Johnson et al. (2016): downsampling convolutions, residual blocks, upsampling,
with instance normalisation (Ulyanov et al. 2016). Its normalisation is *conditional* (Dumoulin et
al. 2017): each style has its own scale and shift in every normalisation layer, so one model holds
several styles, and a photo can be painted in a blend of them. ``styleplug.fast.training`` trains it with
the engine's loss plugins.

A model file is a plain ``.npz`` archive: every weight as an array, plus a JSON header (format,
architecture, style names, training record). It is read with ``allow_pickle=False``, so loading a
file never runs code.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core.device import RUNTIME_BYTES, memory_budget, pass_pixels, resolve_precision
from ..core.tiling import Geometry, Tile, plan_tiles
from ..errors import UsageError
from ..run.image import ImageInput, load_image, resize_long_side, to_uint8
from ..core import backends
from ..lazy import keras, ops
from .modelfile import FORMAT, VERSION, blend_vector, read_model_file

# Two stride-2 convolutions: sides are padded to a multiple of this, and must be at least MIN_SIDE.
STRIDE = 4
MIN_SIDE = 32
#: Peak bytes per pixel of painting in one pass, measured on TensorFlow (CPU, bfloat16, the shipped
#: architecture): 1.1 KB at 1024 and 2048 px, a 4096 px photo would take about 14 GiB.
APPLY_BYTES_PER_PIXEL = 1200
#: The core side of a tile when a photo is painted in tiles and no side is given (about 1.5 GiB a window).
DEFAULT_TILE_SIZE = 1024

log = logging.getLogger("styleplug")

# Statistics the instance normalisations use instead of their input's own, by layer name, while a
# photo is painted in tiles: the whole photo's, so every tile is normalised as the photo is. A
# context variable, so that threads sharing a model never see each other's.
_fixed_statistics: contextvars.ContextVar[Mapping[str, tuple[Any, Any]] | None] = contextvars.ContextVar(
    "styleplug_fixed_statistics", default=None)


@dataclass(frozen=True)
class Architecture:
    """The size of a transformer network: channels at full, half and quarter resolution, and the
    number of residual blocks at quarter resolution."""

    widths: tuple[int, int, int] = (16, 32, 64)
    residual_blocks: int = 4

    def __post_init__(self) -> None:
        widths, blocks = self.widths, self.residual_blocks
        if (len(widths) != 3 or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths)
                or isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0):
            raise UsageError(f"a transformer takes three channel widths >= 1 (e.g. 32, 64, 128) and residual blocks >= 0; "
                             f"got {tuple(widths)} and {blocks!r}.")


class ReflectionPadding(keras.layers.Layer):
    """Pads height and width by mirroring, so convolutions see no dark border."""

    def __init__(self, pad: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pad = pad

    def call(self, inputs: Any) -> Any:
        p = self.pad
        return ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape: Any) -> Any:
        # Given, so that Keras need not trace a mirror padding of unknown sizes (JAX cannot).
        batch, height, width, channels = input_shape
        grow = [None if side is None else side + 2 * self.pad for side in (height, width)]
        return (batch, *grow, channels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pad": self.pad}


class ConditionalInstanceNorm(keras.layers.Layer):
    """Instance normalisation whose scale and shift are a blend of per-style vectors.

    Inputs are ``[features, style_weights]`` with style weights ``(N, styles)``. Each style's scale
    and shift are separate variables, so a new style can be trained alone.
    """

    def __init__(self, styles: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.styles = styles

    def build(self, input_shape: Any) -> None:
        channels = input_shape[0][-1]
        self.scales = [self.add_weight(name=f"scale_{i}", shape=(channels,), initializer="ones") for i in range(self.styles)]
        self.shifts = [self.add_weight(name=f"shift_{i}", shape=(channels,), initializer="zeros") for i in range(self.styles)]

    def call(self, inputs: Any) -> Any:
        features, weights = inputs
        x = ops.cast(features, "float32")
        fixed = _fixed_statistics.get()
        mean, variance = fixed[self.name] if fixed and self.name in fixed else ops.moments(x, axes=[1, 2], keepdims=True)
        normal = (x - mean) * ops.rsqrt(variance + 1e-5)
        weights = ops.cast(weights, "float32")
        scale = ops.matmul(weights, ops.stack([ops.cast(s, "float32") for s in self.scales]))[:, None, None, :]
        shift = ops.matmul(weights, ops.stack([ops.cast(s, "float32") for s in self.shifts]))[:, None, None, :]
        return ops.cast(normal * scale + shift, features.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "styles": self.styles}


def build_transformer(architecture: Architecture, styles: int, policy: str = "float32") -> Any:
    """The transformer: ``[images (N, H, W, 3) in 0..255, style weights (N, styles)]`` -> images in
    0..255, with ``H`` and ``W`` multiples of ``STRIDE``. Layers compute under ``policy``."""
    images = keras.Input((None, None, 3), name="images")
    weights = keras.Input((styles,), name="style_weights")
    small, medium, large = architecture.widths

    seeds = iter(range(10**6))  # seeded initial weights: the same training run gives the same model

    def conv(x: Any, width: int, kernel: int, stride: int, name: str, relu: bool = True) -> Any:
        x = ReflectionPadding(kernel // 2, dtype=policy, name=f"{name}_pad")(x)
        x = keras.layers.Conv2D(width, kernel, stride, dtype=policy, name=name,
                                kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)))(x)
        x = ConditionalInstanceNorm(styles, dtype=policy, name=f"{name}_norm")([x, weights])
        return keras.layers.ReLU(dtype=policy, name=f"{name}_relu")(x) if relu else x

    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, dtype=policy, name="to_unit")(images)
    x = conv(x, small, 9, 1, "in")
    x = conv(x, medium, 3, 2, "down1")
    x = conv(x, large, 3, 2, "down2")
    for index in range(architecture.residual_blocks):
        y = conv(x, large, 3, 1, f"res{index}_a")
        y = conv(y, large, 3, 1, f"res{index}_b", relu=False)
        x = keras.layers.Add(dtype=policy, name=f"res{index}")([x, y])
    for index, width in enumerate((medium, small), start=1):
        # Nearest-neighbour upsampling then a convolution: no checkerboard pattern (Odena et al. 2016).
        x = keras.layers.UpSampling2D(2, dtype=policy, name=f"up{index}_resize")(x)
        x = conv(x, width, 3, 1, f"up{index}")
    x = ReflectionPadding(4, dtype=policy, name="out_pad")(x)
    x = keras.layers.Conv2D(3, 9, dtype=policy, name="out", kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)))(x)
    x = keras.layers.Activation("tanh", dtype="float32", name="tanh")(x)
    outputs = keras.layers.Rescaling(127.5, offset=127.5, dtype="float32", name="to_pixels")(x)
    return keras.Model([images, weights], outputs, name="transformer")


class StyleModel:
    """A trained fast style model: one transformer network holding one or more styles.

    ``StyleModel.load(path).stylize(photo, style="starry_night", strength=0.8)`` returns a PIL image.
    """

    def __init__(self, transformer: Any, architecture: Architecture, styles: Sequence[str],
                 record: Mapping[str, Any] | None = None) -> None:
        self.transformer, self.architecture = transformer, architecture
        self.styles = list(styles)
        self.record: dict[str, Any] = dict(record or {})

    @classmethod
    def new(cls, styles: Sequence[str], architecture: Architecture = Architecture(), precision: str = "float32") -> StyleModel:
        policy = "mixed_bfloat16" if resolve_precision(precision) == "bfloat16" else "float32"
        return cls(build_transformer(architecture, len(styles), policy), architecture, styles)

    # -- files ---------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model as a ``.npz`` archive (atomically: a temporary file, then renamed)."""
        header = {"format": FORMAT, "version": VERSION, "architecture": asdict(self.architecture), "styles": self.styles,
                  "record": self.record}
        arrays = {f"weight_{index}": np.asarray(variable, np.float32)
                  for index, variable in enumerate(self.transformer.weights)}
        target = Path(path)
        temporary = target.with_name(f".{target.name}.partial")
        with open(temporary, "wb") as file:
            np.savez(file, header=np.array(json.dumps(header)), **arrays)
        os.replace(temporary, target)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | bytes, precision: str = "auto") -> StyleModel:
        """Read a model file (or its contents, as bytes: how batch workers on other machines get it);
        any file that is not a styleplug style model gets one ``UsageError`` line."""
        header, arrays = read_model_file(path)
        architecture = Architecture(tuple(header["architecture"]["widths"]), header["architecture"]["residual_blocks"])
        model = cls.new(header["styles"], architecture, precision)
        if [tuple(np.shape(w)) for w in model.transformer.weights] != [array.shape for array in arrays]:
            source = "the style model" if isinstance(path, bytes) else path
            raise UsageError(f"the weights in '{source}' do not fit its architecture; the file is damaged.")
        for variable, array in zip(model.transformer.weights, arrays):
            variable.assign(array)
        model.record = header.get("record", {})
        return model

    # -- applying ------------------------------------------------------------------------------

    def style_weights(self, style: str | Mapping[str, float] | None) -> np.ndarray:
        """The blend vector for ``style``: a name, ``{name: weight}`` (normalised), or None for the first style."""
        return blend_vector(self.styles, style)

    def stylize(self, photo: ImageInput, style: str | Mapping[str, float] | None = None, strength: float = 1.0,
                size: int | None = None, max_pixels: int | None = None, tile_size: int | None = None,
                progress: Callable[[int, int], Any] | None = None) -> Image.Image:
        """Paint ``photo`` in one pass: in ``style`` (a name, or ``{name: weight}`` to blend), mixed
        with the photo by ``strength`` (0: the photo, 1: fully painted), optionally resized so its
        long side is ``size``.

        A photo too large to paint at once here (``APPLY_BYTES_PER_PIXEL`` against the free memory)
        is painted in tiles of ``DEFAULT_TILE_SIZE`` px, or of ``tile_size`` px when given (any
        size: 0 paints in one pass). The tiles give the one-pass picture up to rounding: see
        ``paint_tiled``, which calls ``progress(tile passes done, of)`` after each tile."""
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
            raise UsageError(f"strength must be between 0 and 1; got {strength!r}.")
        if tile_size is not None and (isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 0):
            raise UsageError(f"tile_size must be a whole number of pixels >= {STRIDE} (or 0 for one pass); got {tile_size!r}.")
        weights = self.style_weights(style)
        image = load_image(photo, "photo", max_pixels)
        if size is not None:
            image = resize_long_side(image, size)
        if min(image.size) < MIN_SIDE:
            raise UsageError(f"the photo is {image.width}x{image.height}; a style model needs at least {MIN_SIDE} px "
                             "on each side; use a larger photo or size.")
        pixels = np.asarray(image, np.float32)[None]
        padded = np.pad(pixels, [(0, 0), (0, -image.height % STRIDE), (0, -image.width % STRIDE), (0, 0)], mode="reflect")
        side = self._tile_side(padded, tile_size)
        try:
            painted = self.paint_tiled(padded, weights, side, progress) if side else self._paint_once(padded, weights)
        except Exception as error:
            if not backends.current().out_of_memory(error):
                raise
            how = f"in tiles of {side} px" if side else "in one pass"
            raise UsageError(f"a {image.width}x{image.height} photo does not fit in memory here {how}; "
                             "use a smaller size or {tile_size}.") from None
        mixed = strength * painted[0, :image.height, :image.width] + (1 - strength) * pixels[0]
        return Image.fromarray(to_uint8(mixed), "RGB")

    def _tile_side(self, padded: np.ndarray, tile_size: int | None) -> int:
        """The tile side to paint ``padded`` with (0: in one pass)."""
        if tile_size is not None:
            return tile_size
        pixels, limit = padded.shape[1] * padded.shape[2], pass_pixels()
        if limit is not None and pixels > limit:
            log.warning("a %dx%d photo is too large for one pass on a GPU (compiling it would take many minutes): "
                        "painting it in tiles of %d px", padded.shape[2], padded.shape[1], DEFAULT_TILE_SIZE)
            return DEFAULT_TILE_SIZE
        budget = memory_budget()
        if budget is None or APPLY_BYTES_PER_PIXEL * pixels + RUNTIME_BYTES <= budget:
            return 0
        log.warning("a %dx%d photo would need about %.1f GiB in one pass (%.1f GiB free): painting it in tiles of %d px",
                    padded.shape[2], padded.shape[1], APPLY_BYTES_PER_PIXEL * pixels / 2**30, budget / 2**30, DEFAULT_TILE_SIZE)
        return DEFAULT_TILE_SIZE

    def _paint_once(self, padded: np.ndarray, weights: np.ndarray) -> np.ndarray:
        variables = ([v.value for v in self.transformer.trainable_variables], [v.value for v in self.transformer.non_trainable_variables])
        return ops.convert_to_numpy(self._forward(variables, [ops.convert_to_tensor(padded), ops.convert_to_tensor(weights)]))

    @functools.cached_property
    def _forward(self) -> Callable[[Any, Any], Any]:
        """The transformer's pass as a function of its variables' values (which are arguments, not
        constants baked into a compiled program: training and loading change them)."""
        transformer = self.transformer

        def forward(variables: tuple[Any, Any], inputs: list[Any]) -> Any:
            return ops.cast(transformer.stateless_call(*variables, inputs, training=False)[0], "float32")
        return backends.current().forward(forward)

    @functools.cached_property
    def geometry(self) -> Geometry:
        """Tile edges on multiples of ``STRIDE`` (so every tile's downsampled grids are the photo's);
        the halo: how far the convolutions reach, in pixels, rounded up to ``STRIDE``."""
        scale, reach = 1.0, 0.0
        for layer in self.transformer.layers:
            if isinstance(layer, keras.layers.Conv2D):
                reach += (layer.kernel_size[0] - 1) // 2 * scale
                scale *= layer.strides[0]
            elif isinstance(layer, keras.layers.UpSampling2D):
                scale /= layer.size[0]
        return Geometry({}, STRIDE, math.ceil(reach / STRIDE) * STRIDE)

    @functools.cached_property
    def _normalised(self) -> list[tuple[str, Any]]:
        """Each instance normalisation, in order, with a network from the inputs to its input features."""
        return [(layer.name, keras.Model(self.transformer.inputs, layer.input[0]))
                for layer in self.transformer.layers if isinstance(layer, ConditionalInstanceNorm)]

    def paint_tiled(self, padded: np.ndarray, weights: np.ndarray, side: int,
                    progress: Callable[[int, int], Any] | None = None) -> np.ndarray:
        """The transformer's output for ``padded`` (``(1, H, W, 3)``, sides multiples of ``STRIDE``),
        computed in tiles of about ``side`` px with a halo: the one-pass output up to rounding.

        Convolutions are exact in tiles given the halo; instance normalisation is not, since it
        normalises by the whole photo's mean and variance. So the tiles first go through the network
        once per normalisation, up to it, to gather its statistics over the photo (with the earlier
        normalisations fixed at theirs); a last pass paints them. For the shipped architecture that
        is about 6.5 times the work of one pass, on a fraction of its memory."""
        tiles = plan_tiles(padded.shape[1], padded.shape[2], side, self.geometry)
        if len(tiles) == 1:  # a tile as large as the photo: its own statistics are the photo's
            return self._paint_once(padded, weights)
        weights = ops.convert_to_tensor(weights)
        statistics: dict[str, tuple[Any, Any]] = {}
        passes = itertools.count(1)

        def through(network: Any, tile: Tile) -> Any:
            token = _fixed_statistics.set(statistics)
            try:
                output = ops.cast(network([ops.convert_to_tensor(tile.window_of(padded)), weights], training=False), "float32")
            finally:
                _fixed_statistics.reset(token)
            if progress is not None:
                progress(next(passes), (len(self._normalised) + 1) * len(tiles))
            return output

        for name, before in self._normalised:
            parts = []
            for tile in tiles:
                features = through(before, tile)
                core = features[(slice(None), *tile.grid(tile.window_size[0] // features.shape[1]))]
                mean, variance = ops.moments(core, axes=[0, 1, 2])
                parts.append((math.prod(core.shape[:3]), ops.convert_to_numpy(mean), ops.convert_to_numpy(variance)))
            statistics[name] = _pooled_moments(parts)
        painted = np.empty(padded.shape, np.float32)
        for tile in tiles:
            top, bottom, left, right = tile.core
            painted[:, top:bottom, left:right] = ops.convert_to_numpy(through(self.transformer, tile)[(slice(None), *tile.grid(1))])
        return painted


def _pooled_moments(parts: list[tuple[int, np.ndarray, np.ndarray]]) -> tuple[Any, Any]:
    """The mean and variance over the union of parts given as ``(count, mean, variance)``, pooled in
    float64 (Chan et al.), as ``(1, 1, 1, C)`` float32 tensors like ``ops.moments(..., keepdims=True)``."""
    counts = np.array([count for count, _, _ in parts], np.float64)[:, None]
    means = np.array([mean for _, mean, _ in parts], np.float64)
    variances = np.array([variance for _, _, variance in parts], np.float64)
    mean = (counts * means).sum(0) / counts.sum()
    variance = (counts * (variances + (means - mean) ** 2)).sum(0) / counts.sum()
    return tuple(ops.convert_to_tensor(value.astype(np.float32)[None, None, None]) for value in (mean, variance))
