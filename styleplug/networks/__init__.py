"""The ``Network`` contract that built-in and plugin feature networks implement."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from ..errors import UnknownNameError
from ..params import Param, coerce_options


class Network:
    """Base class of every feature network. Subclasses set the class attributes and implement
    ``preprocess`` and ``build``.

    ``layers`` lists the selectable layer names, shallow to deep. ``weights`` says where trained
    weights come from (``"auto"``, ``"none"``, a file path, or a source the network knows); after
    ``build`` the network sets ``weights_source`` to a one-line description of what it used.
    """

    name: ClassVar[str]
    layers: ClassVar[tuple[str, ...]]
    default_content_layers: ClassVar[tuple[str, ...]]
    default_style_layers: ClassVar[tuple[str, ...]]
    params: ClassVar[tuple[Param, ...]] = ()
    #: The named weight sources ``weights`` accepts besides a file path; the demo offers only these.
    #: ``"auto"`` must pick the best source available offline and fall back to downloading, or raise
    #: ``WeightsError`` saying how to get weights; ``"none"`` must give seeded random weights.
    weight_sources: ClassVar[tuple[str, ...]] = ("auto", "none")
    #: Default weights of losses on this network, by loss name, where a loss's own ``default_weight``
    #: does not suit its feature scale. A job's explicit weights override them.
    loss_weights: ClassVar[Mapping[str, float]] = {}

    def __init__(self, weights: str = "auto", **options: Any) -> None:
        # A bare word that is no source and no file is a misspelt source, not a path.
        if (isinstance(weights, str) and weights not in self.weight_sources and not os.path.exists(weights)
                and os.sep not in weights and "." not in weights):
            raise UnknownNameError("weights", weights, self.weight_sources, where=f" for network '{self.name}'",
                                   hint=f"Choose one of: {', '.join(self.weight_sources)}, or a path to a weights file.")
        self.weights = weights
        self.options = coerce_options(self.params, options, f"network '{self.name}'")
        self.weights_source: str | None = None

    @classmethod
    def offline_weight_sources(cls) -> tuple[str, ...]:
        """The named sources among ``weight_sources`` that work on this machine without a download;
        the web demo offers only these unless its operator allows downloads. Override it when your
        network can tell (a cached or packaged file); the default claims only ``"none"``."""
        return tuple(source for source in cls.weight_sources if source == "none")

    def check_layers(self, layers: Iterable[str]) -> None:
        """Raise ``UnknownNameError`` (with the nearest name) for a layer this network does not have."""
        for layer in layers:
            if layer not in self.layers:
                raise UnknownNameError("layer", layer, self.layers, where=f" in network '{self.name}'")

    def deepest(self, layers: Iterable[str]) -> str:
        """The deepest of ``layers``: where a truncated network can stop."""
        return max(layers, key=self.layers.index)

    def preprocess(self, images: Any) -> Any:
        """Turn ``(N, H, W, 3)`` RGB values in 0..255 into this network's input."""
        raise NotImplementedError(f"network '{self.name}' must implement preprocess(images)")

    def build(self, layers: Sequence[str]) -> Any:
        """Return a frozen Keras model mapping preprocessed images to ``{layer: features}``.

        The model must stop at the deepest requested layer, so no convolution is wasted.
        """
        raise NotImplementedError(f"network '{self.name}' must implement build(layers)")

    def get_config(self) -> dict[str, Any]:
        return {"weights": self.weights, **self.options}
