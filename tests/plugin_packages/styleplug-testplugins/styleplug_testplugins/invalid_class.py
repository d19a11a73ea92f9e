import styleplug


class NotALoss:
    """Looks like a loss, is not a styleplug.Loss."""

    name = "notaloss"


@styleplug.hookimpl
def register_losses(register):
    register(NotALoss)
