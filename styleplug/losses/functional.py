"""Stateless loss functions. Every reduction is a mean, so values do not grow with image size."""

from __future__ import annotations

from typing import Any

from ..lazy import tf


def gram_matrix(features: Any) -> Any:
    """Channel correlations of ``(1, H, W, C)`` features as a ``(C, C)`` float32 matrix, divided by H·W."""
    features = tf.cast(features, tf.float32)
    channels = tf.shape(features)[-1]
    flat = tf.reshape(features, (-1, channels))
    return tf.matmul(flat, flat, transpose_a=True) / tf.cast(tf.shape(flat)[0], tf.float32)


def mean_squared_error(a: Any, b: Any) -> Any:
    """Mean over all elements of the squared difference, in float32."""
    return tf.reduce_mean(tf.square(tf.cast(a, tf.float32) - tf.cast(b, tf.float32)))


def total_variation(image: Any, exponent: float = 2.0) -> Any:
    """Mean over pixels of ``(dx² + dy²) ** (exponent / 2)`` on an image scaled to 0..1.

    ``image`` is ``(1, H, W, C)`` with values in 0..255.
    """
    image = tf.cast(image, tf.float32) / 255.0
    dx = image[:, :-1, 1:, :] - image[:, :-1, :-1, :]
    dy = image[:, 1:, :-1, :] - image[:, :-1, :-1, :]
    squared = tf.square(dx) + tf.square(dy)
    if exponent == 2.0:
        return tf.reduce_mean(squared)
    # The small offset keeps the gradient finite where the image is flat.
    return tf.reduce_mean(tf.pow(squared + 1e-8, exponent / 2.0))
