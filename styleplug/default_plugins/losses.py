from ..hookspecs import LossRegistrar, hookimpl
from ..losses.content import ContentLoss
from ..losses.style import GramStyleLoss
from ..losses.variation import TotalVariationLoss


@hookimpl
def register_losses(register: LossRegistrar) -> None:
    register(ContentLoss)
    register(GramStyleLoss, aliases=("style",))
    register(TotalVariationLoss, aliases=("total_variation",))
