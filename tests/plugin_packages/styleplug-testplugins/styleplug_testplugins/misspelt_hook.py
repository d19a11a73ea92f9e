import styleplug


@styleplug.hookimpl
def register_loss(register):
    """Misspelt: the hook is register_losses."""
