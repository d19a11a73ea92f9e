import styleplug

from .brightness import BrightnessLoss


class HalfwayLoss(BrightnessLoss):
    """Registered before the hook fails, so it must be rolled back."""

    name = "halfway"


@styleplug.hookimpl
def register_losses(register):
    register(HalfwayLoss)
    raise RuntimeError("boom in register_losses")
