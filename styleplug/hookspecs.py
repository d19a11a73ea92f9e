"""The hooks a styleplug plugin can implement. Markers are named ``styleplug``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import pluggy

if TYPE_CHECKING:
    from .losses import Loss
    from .networks import Network

hookspec = pluggy.HookspecMarker("styleplug")
hookimpl = pluggy.HookimplMarker("styleplug")


class LossRegistrar(Protocol):
    def __call__(self, cls: type[Loss], /, *, aliases: Sequence[str] = ()) -> None: ...


class NetworkRegistrar(Protocol):
    def __call__(self, cls: type[Network], /, *, aliases: Sequence[str] = ()) -> None: ...


@hookspec
def register_losses(register: LossRegistrar) -> None:
    """Register loss classes: call ``register(cls, aliases=())`` once per ``styleplug.Loss`` subclass.

    The host checks each class at once and records which plugin provided it.

    Example::

        import styleplug
        from styleplug.losses.functional import mean_squared_error

        class PixelLoss(styleplug.Loss):
            \"\"\"Keep the generated image's pixels near mid-grey.\"\"\"
            name = "pixel"
            role = "regularizer"
            uses_features = False

            def call(self, features, image, target=None, mask=None):
                return mean_squared_error(image / 255.0, 0.5)

        @styleplug.hookimpl
        def register_losses(register):
            register(PixelLoss)
    """


@hookspec
def register_networks(register: NetworkRegistrar) -> None:
    """Register feature networks: call ``register(cls, aliases=())`` once per ``styleplug.Network`` subclass.

    Example::

        import styleplug
        from styleplug.networks.vgg import VGG19

        class PlainVGG19(VGG19):
            \"\"\"VGG19 under a second name.\"\"\"
            name = "plainvgg"

        @styleplug.hookimpl
        def register_networks(register):
            register(PlainVGG19)
    """
