"""Stateless loss functions. Every reduction is a mean, so values do not grow with image size.

Features are ``(N, H, W, C)``: a batch of N images. The statistics below are per sample; a
``mask`` is ``(1, H, W, 1)`` or ``(N, H, W, 1)`` region weights in 0..1 at the image's size (or any
size: it is resized to each feature grid), and limits a statistic to its region, as if the region
had been cut out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core import backends
from ..lazy import ops


def _area_matrix(source: int, size: int) -> np.ndarray:
    """The ``(size, source)`` matrix that resizes one axis by area: each output cell is the mean of
    the input cells it covers, partly covered ones in proportion."""
    edges = np.arange(size + 1) * (source / size)
    starts, ends = edges[:-1, None], edges[1:, None]
    cells = np.arange(source)[None, :]
    overlap = np.clip(np.minimum(ends, cells + 1) - np.maximum(starts, cells), 0.0, None)
    return (overlap / (source / size)).astype(np.float32)


def resize_to_grid(mask: Any, rows: int, columns: int) -> Any:
    """``(N or 1, H, W, 1)`` region weights resized (by area) to a ``rows`` x ``columns`` grid, as float32."""
    height, width = ops.shape(mask)[1:3]
    if (height, width) == (rows, columns):
        return ops.cast(mask, "float32")
    return ops.einsum("hH,nHWc,wW->nhwc", _area_matrix(height, rows), ops.cast(mask, "float32"), _area_matrix(width, columns))


def region_weights(mask: Any, features: Any) -> Any:
    """``mask`` resized (by area) to the grid of ``features``: ``(N or 1, h, w, 1)`` float32 weights.
    The sizes must be known when the step is traced (they are: each compiled step has one shape)."""
    return resize_to_grid(mask, *ops.shape(features)[1:3])


def gram_sums(features: Any, weights: Any = None) -> list[Any]:
    """The sums a Gram matrix is made of, over the positions of ``(N, H, W, C)`` features: the
    ``(N, C, C)`` channel products and the ``(N, 1, 1)`` number of positions, each weighted by
    ``weights`` (``(1 or N, H, W, 1)`` at the features' grid) if given. Sums over tiles add up."""
    features = ops.cast(features, "float32")
    count, channels = ops.shape(features)[0], ops.shape(features)[3]
    flat = ops.reshape(features, (count, -1, channels))
    if weights is None:
        area = ops.ones((count, 1, 1), "float32") * ops.cast(ops.shape(flat)[1], "float32")
        return [backends.current().transposed_matmul(flat, flat), area]
    weights = ops.reshape(ops.cast(weights, "float32"), (ops.shape(weights)[0], -1, 1))
    return [backends.current().transposed_matmul(flat * weights, flat),
            ops.broadcast_to(ops.sum(weights, axis=1, keepdims=True), (count, 1, 1))]


def gram_from_sums(sums: list[Any]) -> Any:
    """The ``(N, C, C)`` Gram matrices from ``gram_sums``."""
    products, area = sums
    return products / ops.maximum(area, 1e-6)


def gram_matrix(features: Any, mask: Any = None) -> Any:
    """Channel correlations of ``(N, H, W, C)`` features as ``(N, C, C)`` float32 matrices, divided by
    the number of positions (or, with ``mask``, by the region's weight: the Gram matrix of the region)."""
    return gram_from_sums(gram_sums(features, None if mask is None else region_weights(mask, features)))


def moment_sums(features: Any, weights: Any = None) -> list[Any]:
    """The sums per-channel moments are made of: ``(N, C)`` sums of the features and of their
    squares, and the ``(N, 1)`` number of positions, weighted by ``weights`` like ``gram_sums``."""
    features = ops.cast(features, "float32")
    count = ops.shape(features)[0]
    if weights is None:
        area = ops.ones((count, 1), "float32") * ops.cast(ops.shape(features)[1] * ops.shape(features)[2], "float32")
        return [ops.sum(features, axis=[1, 2]), ops.sum(ops.square(features), axis=[1, 2]), area]
    weights = ops.cast(weights, "float32")
    return [ops.sum(features * weights, axis=[1, 2]), ops.sum(ops.square(features) * weights, axis=[1, 2]),
            ops.broadcast_to(ops.sum(weights, axis=[1, 2]), (count, 1))]


def moments_from_sums(sums: list[Any]) -> tuple[Any, Any]:
    """Per-channel mean and variance (two ``(N, C)`` tensors) from ``moment_sums``."""
    total, squares, area = sums
    area = ops.maximum(area, 1e-6)
    mean = total / area
    return mean, ops.maximum(squares / area - ops.square(mean), 0.0)


def moments(features: Any, mask: Any = None) -> tuple[Any, Any]:
    """Per-sample, per-channel mean and variance over positions (weighted by ``mask``): two ``(N, C)`` float32 tensors."""
    features = ops.cast(features, "float32")
    if mask is None:
        return ops.moments(features, axes=[1, 2])
    weights = region_weights(mask, features)
    area = ops.maximum(ops.sum(weights, axis=[1, 2]), 1e-6)
    mean = ops.sum(features * weights, axis=[1, 2]) / area
    variance = ops.sum(ops.square(features - mean[:, None, None, :]) * weights, axis=[1, 2]) / area
    return mean, variance


def squared_error_sums(features: Any, target: Any) -> list[Any]:
    """The sums a mean squared error is made of: the ``(N,)`` sums of squared differences per sample,
    and the number of elements each sum covers (as ``(N,)``)."""
    difference = ops.square(ops.cast(features, "float32") - ops.cast(target, "float32"))
    total = ops.sum(ops.reshape(difference, (ops.shape(difference)[0], -1)), axis=1)
    return [total, ops.ones_like(total) * ops.cast(ops.size(difference) // ops.shape(difference)[0], "float32")]


def mean_squared_error(a: Any, b: Any) -> Any:
    """Mean over all elements of the squared difference, in float32 (with equal-sized samples, the
    mean over the batch of each sample's mean)."""
    return ops.mean(ops.square(ops.cast(a, "float32") - ops.cast(b, "float32")))


def total_variation(image: Any, exponent: float = 2.0) -> Any:
    """Mean over pixels of ``(dx² + dy²) ** (exponent / 2)`` on an image scaled to 0..1.

    ``image`` is ``(N, H, W, C)`` with values in 0..255.
    """
    image = ops.cast(image, "float32") / 255.0
    dx = image[:, :-1, 1:, :] - image[:, :-1, :-1, :]
    dy = image[:, 1:, :-1, :] - image[:, :-1, :-1, :]
    squared = ops.square(dx) + ops.square(dy)
    if exponent == 2.0:
        return ops.mean(squared)
    # The small offset keeps the gradient finite where the image is flat.
    return ops.mean(ops.power(squared + 1e-8, exponent / 2.0))
