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

import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core.device import resolve_precision
from ..errors import UsageError
from ..run.image import ImageInput, load_image, resize_long_side
from ..core import backends
from ..lazy import keras, ops

FORMAT = "styleplug-style-model"
VERSION = 1
# Two stride-2 convolutions: sides are padded to a multiple of this, and must be at least MIN_SIDE.
STRIDE = 4
MIN_SIDE = 32


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
        mean, variance = ops.moments(x, axes=[1, 2], keepdims=True)
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


def pad_to_stride(images: Any) -> tuple[Any, tuple[int, int]]:
    """``images`` mirrored at the bottom and right up to multiples of ``STRIDE``; and the original size."""
    height, width = int(images.shape[1]), int(images.shape[2])
    pad_h, pad_w = -height % STRIDE, -width % STRIDE
    return ops.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="reflect"), (height, width)


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
        source = "the style model" if isinstance(path, bytes) else Path(path)
        if isinstance(source, Path) and not source.is_file():
            raise UsageError(f"style model '{source}' does not exist; check the path.")
        try:
            with np.load(io.BytesIO(path) if isinstance(path, bytes) else source, allow_pickle=False) as archive:
                header = json.loads(str(archive["header"]))
                arrays = [archive[f"weight_{index}"] for index in range(len(archive.files) - 1)]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, EOFError):
            raise UsageError(f"'{source}' is not a styleplug style model (or it is damaged); "
                             "train one with: styleplug train") from None
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise UsageError(f"'{source}' is not a styleplug style model of version {VERSION} "
                             f"(format {header.get('format')!r}, version {header.get('version')!r}).")
        architecture = Architecture(tuple(header["architecture"]["widths"]), header["architecture"]["residual_blocks"])
        model = cls.new(header["styles"], architecture, precision)
        if [tuple(np.shape(w)) for w in model.transformer.weights] != [array.shape for array in arrays]:
            raise UsageError(f"the weights in '{source}' do not fit its architecture; the file is damaged.")
        for variable, array in zip(model.transformer.weights, arrays):
            variable.assign(array)
        model.record = header.get("record", {})
        return model

    # -- applying ------------------------------------------------------------------------------

    def style_weights(self, style: str | Mapping[str, float] | None) -> np.ndarray:
        """The blend vector for ``style``: a name, ``{name: weight}`` (normalised), or None for the first style."""
        blend = {self.styles[0]: 1.0} if style is None else {style: 1.0} if isinstance(style, str) else dict(style)
        for name, weight in blend.items():
            if name not in self.styles:
                raise UsageError(f"this model has no style '{name}'; it has: {', '.join(self.styles)}.")
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not np.isfinite(weight) or weight < 0:
                raise UsageError(f"the blend weight of style '{name}' must be a number >= 0; got {weight!r}.")
        total = sum(blend.values())
        if not total > 0:
            raise UsageError("the blend weights are all zero; give at least one style a positive weight.")
        return np.array([[blend.get(name, 0.0) / total for name in self.styles]], np.float32)

    def stylize(self, photo: ImageInput, style: str | Mapping[str, float] | None = None, strength: float = 1.0,
                size: int | None = None, max_pixels: int | None = None) -> Image.Image:
        """Paint ``photo`` in one pass: in ``style`` (a name, or ``{name: weight}`` to blend), mixed
        with the photo by ``strength`` (0: the photo, 1: fully painted), optionally resized so its
        long side is ``size``."""
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
            raise UsageError(f"strength must be between 0 and 1; got {strength!r}.")
        weights = self.style_weights(style)
        image = load_image(photo, "photo", max_pixels)
        if size is not None:
            image = resize_long_side(image, size)
        if min(image.size) < MIN_SIDE:
            raise UsageError(f"the photo is {image.width}x{image.height}; a style model needs at least {MIN_SIDE} px "
                             "on each side; use a larger photo or size.")
        pixels = ops.convert_to_tensor(np.asarray(image, np.float32)[None])
        padded, (height, width) = pad_to_stride(pixels)
        try:
            painted = self.transformer([padded, ops.convert_to_tensor(weights)], training=False)[:, :height, :width]
        except Exception as error:
            if not backends.current().out_of_memory(error):
                raise
            raise UsageError(f"a {width}x{height} photo does not fit in memory here; use a smaller size.") from None
        mixed = strength * ops.cast(painted, "float32") + (1 - strength) * pixels
        return Image.fromarray(np.clip(ops.convert_to_numpy(mixed)[0], 0, 255).round().astype(np.uint8), "RGB")
