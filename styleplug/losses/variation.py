from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..params import Param
from . import Loss
from .functional import total_variation


class TotalVariationLoss(Loss):
    """Total variation of the generated image: penalises pixel noise."""

    name = "tv"
    role = "regularizer"
    uses_features = False
    default_weight = 1e5  # against a content term of about 1e5 to 1e6 (a mean of squared activations)
    params = (
        Param("exponent", float, 2.0, help="power of the neighbour differences (1 keeps edges sharper)", min=1.0, max=3.0),
    )

    def call(self, features: Mapping[str, Any], image: Any, target: Any = None, mask: Any = None) -> Any:
        return total_variation(image, self.options["exponent"])
