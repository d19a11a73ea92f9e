from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import Loss
from .functional import mean_squared_error


class ContentLoss(Loss):
    """Mean squared distance between the generated and the content image's features."""

    name = "content"
    role = "content"

    def call(self, features: Mapping[str, Any], image: Any) -> Any:
        return self.weighted_mean({layer: mean_squared_error(features[layer], self.target[layer]) for layer in self.layers})
