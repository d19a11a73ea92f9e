from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import Loss
from .functional import gram_matrix, mean_squared_error


class GramStyleLoss(Loss):
    """Mean squared distance between Gram matrices of the generated and the style image (Gatys et al.)."""

    name = "gram"
    role = "style"

    def set_target(self, features: Mapping[str, Any] | None) -> None:
        assert features is not None
        self.target = {layer: gram_matrix(value) for layer, value in features.items()}

    def call(self, features: Mapping[str, Any], image: Any) -> Any:
        return self.weighted_mean(
            {layer: mean_squared_error(gram_matrix(features[layer]), self.target[layer]) for layer in self.layers}
        )
