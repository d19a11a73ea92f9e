import numpy as np
import pytest
from keras import ops

import styleplug
import styleplug_meanstd
from styleplug import StyleplugError
from styleplug.testing import assert_plugin_installed, check_loss, tiled_gradient_agreement
from styleplug_meanstd import MeanStdLoss


def test_keeps_the_loss_contract():
    check_loss(MeanStdLoss)


def test_is_installed_and_listed():
    assert_plugin_installed("styleplug-meanstd")


def test_value_by_hand():
    loss = MeanStdLoss(layers=["f"], epsilon=0.0)
    target = loss.compute_target({"f": ops.convert_to_tensor([[[[0.0, 2.0], [2.0, 2.0]]]])})  # means (1, 2), stds (1, 0)
    generated = ops.convert_to_tensor([[[[1.0, 0.0], [1.0, 4.0]]]])  # means (1, 2), stds (0, 2)
    # mean term: 0; std term: mean((0-1)^2, (2-0)^2) = 2.5
    assert float(loss.call({"f": generated}, None, target)) == pytest.approx(2.5)


def test_a_masked_region_is_matched_like_the_region_cut_out():
    rng = np.random.default_rng(1)
    features = ops.convert_to_tensor(rng.uniform(0, 1, (1, 6, 6, 3)), "float32")
    loss = MeanStdLoss(layers=["f"])
    target = loss.compute_target({"f": ops.convert_to_tensor(rng.uniform(0, 2, (1, 6, 6, 3)), "float32")})
    left = np.zeros((1, 6, 6, 1), np.float32)
    left[:, :, :2] = 1  # the left third
    masked = float(loss.call({"f": features}, None, target, ops.convert_to_tensor(left)))
    assert masked == pytest.approx(float(loss.call({"f": features[:, :, :2]}, None, target)), rel=1e-5)


def test_statistics_option_selects_the_terms():
    target = {"f": ops.convert_to_tensor([[[[0.0], [2.0]]]])}
    generated = {"f": ops.convert_to_tensor([[[[5.0], [5.0]]]])}
    values = {}
    for statistics in ("both", "mean", "std"):
        loss = MeanStdLoss(layers=["f"], epsilon=0.0, statistics=statistics)
        values[statistics] = float(loss.call(generated, None, loss.compute_target(target)))
    assert values["mean"] == pytest.approx(16.0)  # (5 - 1)^2
    assert values["std"] == pytest.approx(1.0)  # (0 - 1)^2
    assert values["both"] == pytest.approx(17.0)


def test_bad_option_is_refused():
    with pytest.raises(StyleplugError, match="expected one of 'both', 'mean', 'std'"):
        MeanStdLoss(layers=["f"], statistics="median")


def test_changes_a_run(make_host):
    host = make_host(styleplug_meanstd)
    engine = styleplug.Engine("tiny", "none", host=host)
    rng = np.random.default_rng(0)
    content, style = rng.uniform(0, 1, (24, 24, 3)), rng.uniform(0, 1, (24, 24, 3)) ** 4
    plain = engine.stylize(content, style, size=24, steps=10)
    with_meanstd = engine.stylize(content, style, size=24, steps=10, losses={"meanstd": {"weight": 1e10}})
    assert np.abs(np.asarray(plain, float) - np.asarray(with_meanstd, float)).mean() > 0.5


def test_runs_in_exact_tiles(make_host):
    # An image too large for one pass runs in tiles; their gradient must be the one-pass gradient.
    engine = styleplug.Engine("tiny", "none", precision="float32", host=make_host(styleplug_meanstd))
    rng = np.random.default_rng(0)
    content, style = rng.uniform(0, 1, (48, 64, 3)), rng.uniform(0, 1, (48, 64, 3)) ** 4
    job = styleplug.Job(content=content, style=style, size=64, init="noise", style_weight=0, losses={"meanstd": {"weight": 1e4}})
    agreement = tiled_gradient_agreement(engine, job, tile_size=24)
    assert agreement["tiles"] == 6
    assert agreement["gradient_error_norm"] <= 1e-4
