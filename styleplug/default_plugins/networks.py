from ..hookspecs import NetworkRegistrar, hookimpl
from ..networks.vgg import VGG16, VGG19


@hookimpl
def register_networks(register: NetworkRegistrar) -> None:
    register(VGG19)
    register(VGG16)
