from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import Loss
from ..lazy import ops
from .functional import squared_error_sums


class ContentLoss(Loss):
    """Mean squared distance between the generated and the content image's features."""

    name = "content"
    role = "content"

    tiling = "positions"

    def sums(self, features: Mapping[str, Any], target: Any, masks: Mapping[str, Any] | None = None) -> Any:
        return {layer: squared_error_sums(features[layer], target[layer]) for layer in self.layers}

    def from_sums(self, sums: Any, target: Any) -> Any:
        return self.weighted_mean({layer: ops.mean(total / count) for layer, (total, count) in sums.items()})
