"""The ``Loss`` contract that built-in and plugin losses implement."""

from __future__ import annotations

import inspect

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..errors import UsageError
from ..params import Param, coerce_options
from .functional import region_weights

ROLES = ("content", "style", "regularizer")
#: How a tiled run (``styleplug.core.tiling``) computes a feature loss over an image too large for one
#: pass; see ``Loss.tiling``.
TILINGS = ("statistics", "positions")

LayerWeights = Mapping[str, float] | Sequence[str]


def uses_old_contract(cls: type[Loss]) -> bool:
    """Whether a loss class is written to the contract before ``compute_target``: its ``call`` takes
    ``(features, image)`` and reads ``self.target`` set by ``set_target``."""
    return "target" not in inspect.signature(cls.call).parameters


def normalize_layers(layers: LayerWeights, owner: str) -> dict[str, float]:
    """Turn a sequence of layer names (weight 1 each) or a ``{layer: weight}`` mapping into a dict."""
    weights = dict(layers) if isinstance(layers, Mapping) else {name: 1.0 for name in layers}
    for name, weight in weights.items():
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0 or weight == float("inf"):
            raise UsageError(f"layer weight {weight!r} for '{name}' of {owner} is invalid; use a finite number >= 0.")
    if weights and not sum(weights.values()) > 0:
        raise UsageError(f"the layer weights of {owner} are all zero; give at least one layer a positive weight.")
    return {name: float(weight) for name, weight in weights.items()}


class Loss:
    """Base class of every loss. Subclasses set the class attributes and implement ``call``.

    A *comparison* loss (role ``content`` or ``style``) compares the generated image's features with
    a target that ``compute_target`` derives from the reference image's features; a *regularizer*
    has no target. ``call`` returns an unweighted float32 scalar; the engine applies the user's
    weight. The first line of the class docstring is the summary shown in listings.

    Every tensor has a batch axis: ``call`` computes its value per sample and returns the mean over
    the batch. A target has a batch of 1 (one reference for every sample) or of N (one each).

    Example::

        class MeanFeatureLoss(styleplug.Loss):
            \"\"\"Match the mean activation of each style layer.\"\"\"
            name = "meanfeature"
            role = "style"

            def compute_target(self, features):
                return {layer: moments(value)[0] for layer, value in features.items()}

            def call(self, features, image, target, mask=None):
                return self.weighted_mean({
                    layer: mean_squared_error(moments(features[layer], mask)[0], target[layer])
                    for layer in self.layers})

    (``moments`` and ``mean_squared_error`` are in ``styleplug.losses.functional``.)
    """

    name: ClassVar[str]
    role: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    #: The weight used when the user gives none (a network may set its own: ``Network.loss_weights``).
    default_weight: ClassVar[float] = 1.0
    #: False for pixel-space losses (like total variation): they get no layers and no features, and
    #: ``compute_target`` gets the reference image's pixels as ``{"image": ...}``.
    uses_features: ClassVar[bool] = True
    #: Whether and how a tiled run can compute this loss exactly, tile by tile (pixel-space losses
    #: run on the whole image and need none). A tileable loss implements ``sums`` and ``from_sums``
    #: instead of ``call``:
    #:
    #: - ``"statistics"``: ``sums`` gathers statistics of the features (a Gram matrix, a mean) as
    #:   sums over positions, ``from_sums`` compares them with the target, which is the reference's
    #:   own sums (the default ``compute_target``).
    #: - ``"positions"``: the loss compares features with a target of the same grids position by
    #:   position (the default target: the reference's features); ``sums`` gets the target cropped
    #:   to the same positions as the features.
    #:
    #: ``None`` (a loss with its own ``call``): a tiled run refuses it, naming it.
    tiling: ClassVar[str | None] = None

    def __init__(self, layers: LayerWeights = (), **options: Any) -> None:
        owner = f"loss '{self.name}'"
        self.layers = normalize_layers(layers, owner) if self.uses_features else {}
        self.options = coerce_options(self.params, options, owner)
        self.target: Any = None  # used by losses written to the old contract only

    def compute_target(self, features: Mapping[str, Any]) -> Any:
        """Return what ``call`` compares against, from the reference image's ``features`` (``{layer:
        (N, H, W, C)}`` at ``self.layers``): any nest of tensors. The default is the features (for a
        ``"statistics"`` loss: their ``sums``, which a tiled run gathers tile by tile).
        A pixel-space loss (``uses_features = False``) gets ``{"image": (N, H, W, 3)}`` instead: the
        reference image itself, RGB float32 in 0..255.

        Keep it pure (no state on ``self``): the engine caches its result per reference image and
        may call it inside a compiled step.
        """
        if self.tiling == "statistics":
            return self.sums(features, None)
        return dict(features)

    def call(self, features: Mapping[str, Any], image: Any, target: Any = None, mask: Any = None) -> Any:
        """Return the unweighted scalar loss of the generated image: the mean over the batch.

        ``features`` maps each of ``self.layers`` to an ``(N, H, W, C)`` tensor; ``image`` is the
        generated image as ``(N, H, W, 3)`` float32 RGB in 0..255; ``target`` is what
        ``compute_target`` returned (None for regularizers). ``mask`` is None, or for a style loss
        limited to a region, ``(1, H, W, 1)`` weights in 0..1 at the image's size: compute the
        statistics of that region only (``styleplug.losses.functional`` has masked ``gram_matrix``
        and ``moments``), as if it had been cut out.
        """
        if self.tiling is None:
            raise NotImplementedError(f"loss '{self.name}' must implement call(features, image, target, mask=None), "
                                      "or set tiling and implement sums and from_sums")
        masks = None if mask is None else {layer: region_weights(mask, features[layer]) for layer in self.layers}
        return self.from_sums(self.sums(features, target, masks), target)

    def sums(self, features: Mapping[str, Any], target: Any, masks: Mapping[str, Any] | None = None) -> Any:
        """A tileable loss's statistics of ``features`` (``{layer: (N, h, w, C)}``): any nest of
        float32 tensors, each a *sum over positions* per sample, so that the sums of the tiles of an
        image add up to the image's. Counts belong in it too (``positions_count``), since means are
        taken in ``from_sums``. ``masks`` is None, or ``{layer: (1 or N, h, w, 1)}`` region weights
        at each layer's grid: weigh each position's contribution by them. ``target`` is None while
        the engine computes a ``"statistics"`` target, the whole target at other times; a
        ``"positions"`` loss gets it cropped to the positions of ``features``.

        Example (a Gram loss)::

            def sums(self, features, target, masks=None):
                return {layer: gram_sums(features[layer], None if masks is None else masks[layer])
                        for layer in self.layers}
        """
        raise NotImplementedError(f"loss '{self.name}' sets tiling={self.tiling!r} but does not implement sums")

    def from_sums(self, sums: Any, target: Any) -> Any:
        """A tileable loss's unweighted scalar from its ``sums`` over the whole image and its whole
        ``target``: the mean over the batch."""
        raise NotImplementedError(f"loss '{self.name}' sets tiling={self.tiling!r} but does not implement from_sums")

    def set_target(self, features: Mapping[str, Any] | None) -> None:
        """The old contract (before ``compute_target``), kept for losses whose ``call`` takes no
        ``target``: store what ``call(features, image)`` compares against in ``self.target``."""
        self.target = features

    def weighted_mean(self, per_layer: Mapping[str, Any]) -> Any:
        """Average per-layer values with this loss's layer weights."""
        total = sum(self.layers.values())
        return sum(value * (self.layers[layer] / total) for layer, value in per_layer.items())

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that recreate this loss."""
        config: dict[str, Any] = dict(self.options)
        if self.uses_features:
            config["layers"] = dict(self.layers)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Loss:
        return cls(**config)
