import numpy as np

import styleplug
import styleplug_vgg19avg
from styleplug.testing import assert_plugin_installed, check_network, tiled_gradient_agreement
from styleplug_vgg19avg import VGG19AveragePooling


def test_keeps_the_network_contract():
    check_network(VGG19AveragePooling)


def test_is_installed_and_listed():
    assert_plugin_installed("styleplug-vgg19avg")


def test_pools_average_by_default_and_max_on_request():
    pools = {pooling: type(VGG19AveragePooling(weights="none", **options).build(["block2_conv1"]).get_layer("block1_pool")).__name__
             for pooling, options in (("default", {}), ("max", {"pooling": "max"}))}
    assert pools == {"default": "AveragePooling2D", "max": "MaxPooling2D"}


def test_stylises_through_the_engine(make_host):
    engine = styleplug.Engine("vgg19-avg", "none", host=make_host(styleplug_vgg19avg))
    rng = np.random.default_rng(0)
    reports = []
    engine.stylize(rng.uniform(0, 1, (32, 32, 3)), rng.uniform(0, 1, (32, 32, 3)) ** 3, size=32, steps=20, callback=reports.append)
    assert reports[-1].losses["total"] < reports[0].losses["total"]


def test_runs_in_exact_tiles(make_host):
    # Average pools line up with the tiles as max pools do: the tiled gradient is the one-pass one.
    engine = styleplug.Engine("vgg19-avg", "none", precision="float32", host=make_host(styleplug_vgg19avg))
    rng = np.random.default_rng(0)
    job = styleplug.Job(content=rng.uniform(0, 1, (96, 128, 3)), style=rng.uniform(0, 1, (96, 128, 3)) ** 3, size=128, init="noise")
    agreement = tiled_gradient_agreement(engine, job, tile_size=64)
    assert agreement["tiles"] == 4
    assert agreement["gradient_error_norm"] <= 1e-4
