from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import Loss
from .functional import mean_squared_error


class ContentLoss(Loss):
    """Mean squared distance between the generated and the content image's features."""

    name = "content"
    role = "content"

    def call(self, features: Mapping[str, Any], image: Any, target: Any, mask: Any = None) -> Any:
        return self.weighted_mean({layer: mean_squared_error(features[layer], target[layer]) for layer in self.layers})
