"""``vgg19-avg``: VGG19 with average pooling by default, as Gatys et al. (2016) used for smoother results.

The built-in networks implement both poolings (``pooling="max"|"avg"``); this plugin shows how a
package ships a named variant of an existing network with its own defaults.
"""

import styleplug
from styleplug.networks.vgg import POOLINGS, VGG19
from styleplug.params import Param


class VGG19AveragePooling(VGG19):
    """VGG19 with average pooling (Gatys et al. 2016): smoother results; the same weights as vgg19."""

    name = "vgg19-avg"
    params = (Param("pooling", str, "avg", help="avg (this network's default) or max", choices=POOLINGS),)


@styleplug.hookimpl
def register_networks(register):
    register(VGG19AveragePooling, aliases=("vgg19avg",))
