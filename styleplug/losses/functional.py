"""Stateless loss functions. Every reduction is a mean, so values do not grow with image size.

Features are ``(N, H, W, C)``: a batch of N images. The statistics below are per sample; a
``mask`` is ``(1, H, W, 1)`` or ``(N, H, W, 1)`` region weights in 0..1 at the image's size (or any
size: it is resized to each feature grid), and limits a statistic to its region, as if the region
had been cut out.
"""

from __future__ import annotations

from typing import Any

from ..lazy import tf


def region_weights(mask: Any, features: Any) -> Any:
    """``mask`` resized (by area) to the grid of ``features``: ``(N or 1, h, w, 1)`` float32 weights."""
    return tf.image.resize(tf.cast(mask, tf.float32), tf.shape(features)[1:3], method="area")


def gram_matrix(features: Any, mask: Any = None) -> Any:
    """Channel correlations of ``(N, H, W, C)`` features as ``(N, C, C)`` float32 matrices, divided by
    the number of positions (or, with ``mask``, by the region's weight: the Gram matrix of the region)."""
    features = tf.cast(features, tf.float32)
    shape = tf.shape(features)
    flat = tf.reshape(features, (shape[0], -1, shape[3]))
    if mask is None:
        return tf.matmul(flat, flat, transpose_a=True) / tf.cast(tf.shape(flat)[1], tf.float32)
    weights = region_weights(mask, features)
    weights = tf.reshape(weights, (tf.shape(weights)[0], -1, 1))
    area = tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1e-6)
    return tf.matmul(flat * weights, flat, transpose_a=True) / area


def moments(features: Any, mask: Any = None) -> tuple[Any, Any]:
    """Per-sample, per-channel mean and variance over positions (weighted by ``mask``): two ``(N, C)`` float32 tensors."""
    features = tf.cast(features, tf.float32)
    if mask is None:
        return tf.nn.moments(features, axes=[1, 2])
    weights = region_weights(mask, features)
    area = tf.maximum(tf.reduce_sum(weights, axis=[1, 2]), 1e-6)
    mean = tf.reduce_sum(features * weights, axis=[1, 2]) / area
    variance = tf.reduce_sum(tf.square(features - mean[:, None, None, :]) * weights, axis=[1, 2]) / area
    return mean, variance


def mean_squared_error(a: Any, b: Any) -> Any:
    """Mean over all elements of the squared difference, in float32 (with equal-sized samples, the
    mean over the batch of each sample's mean)."""
    return tf.reduce_mean(tf.square(tf.cast(a, tf.float32) - tf.cast(b, tf.float32)))


def total_variation(image: Any, exponent: float = 2.0) -> Any:
    """Mean over pixels of ``(dx² + dy²) ** (exponent / 2)`` on an image scaled to 0..1.

    ``image`` is ``(N, H, W, C)`` with values in 0..255.
    """
    image = tf.cast(image, tf.float32) / 255.0
    dx = image[:, :-1, 1:, :] - image[:, :-1, :-1, :]
    dy = image[:, 1:, :-1, :] - image[:, :-1, :-1, :]
    squared = tf.square(dx) + tf.square(dy)
    if exponent == 2.0:
        return tf.reduce_mean(squared)
    # The small offset keeps the gradient finite where the image is flat.
    return tf.reduce_mean(tf.pow(squared + 1e-8, exponent / 2.0))
