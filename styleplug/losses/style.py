from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..lazy import ops
from ..params import Param
from . import Loss
from .functional import gram_from_sums, gram_sums

#: How each layer's Gram error is scaled before the layers are averaged.
GRAM_NORMALIZATIONS = ("mean", "channels", "target")


class GramStyleLoss(Loss):
    """Mean squared distance between Gram matrices of the generated and the style image (Gatys et al.)."""

    name = "gram"
    role = "style"
    # The Gram term is relative per layer (about 1 for the unstyled photo), the content term is a
    # mean of squared activations (about 1e5 to 1e6), hence this weight's size.
    default_weight = 1e7
    params = (
        Param("normalize", str, "target", choices=GRAM_NORMALIZATIONS,
              help="per-layer scaling: target (relative to the style's Gram norm), mean (the paper's), "
                   "channels (also / C², as most peers)"),
    )

    tiling = "statistics"

    def sums(self, features: Mapping[str, Any], target: Any, masks: Mapping[str, Any] | None = None) -> Any:
        return {layer: gram_sums(features[layer], None if masks is None else masks[layer]) for layer in self.layers}

    def from_sums(self, sums: Any, target: Any) -> Any:
        return self.weighted_mean({layer: self._layer(gram_from_sums(sums[layer]), gram_from_sums(target[layer]))
                                   for layer in self.layers})

    def _layer(self, gram: Any, target: Any) -> Any:
        """The mean over the batch of each sample's scaled Gram error."""
        error = ops.mean(ops.square(gram - target), axis=[1, 2])
        if self.options["normalize"] == "channels":
            # The shallow layers (colour, strokes) get more say: C is 64 there and 512 at the deepest.
            error = error / float(ops.shape(target)[-1]) ** 2
        elif self.options["normalize"] == "target":
            # Every layer's error relative (about 1 for an unstyled photo), so no layer outweighs the
            # others by its scale: with the plain mean the deep layers' large Gram values dominated
            # and the painting's colours and strokes (shallow layers) were largely missing.
            error = error / ops.mean(ops.square(target), axis=[1, 2])
        return ops.mean(error)
