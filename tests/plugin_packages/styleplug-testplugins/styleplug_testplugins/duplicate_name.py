import styleplug

from .brightness import BrightnessLoss


class AnotherGram(BrightnessLoss):
    """Tries to take the built-in Gram loss's name."""

    name = "gram"


@styleplug.hookimpl
def register_losses(register):
    register(AnotherGram)
