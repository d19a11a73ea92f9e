"""The ``Loss`` contract that built-in and plugin losses implement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..errors import UsageError
from ..params import Param, coerce_options

ROLES = ("content", "style", "regularizer")

LayerWeights = Mapping[str, float] | Sequence[str]


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

    A *comparison* loss (role ``content`` or ``style``) gets the features of its reference image once
    per job through ``set_target``; a *regularizer* has no target. ``call`` returns an unweighted
    float32 scalar; the engine applies the user's weight. The first line of the class docstring is
    the summary shown in listings.

    Example::

        class MeanFeatureLoss(styleplug.Loss):
            \"\"\"Match the mean activation of each style layer.\"\"\"
            name = "meanfeature"
            role = "style"

            def call(self, features, image):
                return self.weighted_mean({
                    layer: tf.reduce_mean(tf.square(tf.reduce_mean(features[layer], [0, 1, 2])
                                                    - tf.reduce_mean(self.target[layer], [0, 1, 2])))
                    for layer in self.layers})
    """

    name: ClassVar[str]
    role: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    #: The weight used when the user gives none (a network may set its own: ``Network.loss_weights``).
    default_weight: ClassVar[float] = 1.0
    #: False for pixel-space losses (like total variation): they get no layers and no features.
    uses_features: ClassVar[bool] = True

    def __init__(self, layers: LayerWeights = (), **options: Any) -> None:
        owner = f"loss '{self.name}'"
        self.layers = normalize_layers(layers, owner) if self.uses_features else {}
        self.options = coerce_options(self.params, options, owner)
        self.target: Any = None

    def set_target(self, features: Mapping[str, Any] | None) -> None:
        """Receive the reference image's features at ``self.layers`` (``None`` for regularizers).

        Override to precompute what ``call`` compares against (e.g. Gram matrices); store it in
        ``self.target``.
        """
        self.target = features

    def call(self, features: Mapping[str, Any], image: Any) -> Any:
        """Return the unweighted scalar loss of the generated image.

        ``features`` maps each of ``self.layers`` to a ``(1, H, W, C)`` tensor; ``image`` is the
        generated image as a ``(1, H, W, 3)`` float32 tensor of RGB values in 0..255.
        """
        raise NotImplementedError(f"loss '{self.name}' must implement call(features, image)")

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
