"""The engine on a GPU: skipped where the backend sees none (scripts/device_check.sh runs these)."""

from __future__ import annotations

import pytest

import styleplug
from styleplug.core import backends
from styleplug.core.device import resolve_precision
from styleplug.errors import ResourceError

from support import gradient_image, stripes_image

pytestmark = pytest.mark.skipif(not backends.current().gpus(), reason="no GPU on this backend")

CONTENT, STYLE = gradient_image(96, 72), stripes_image(96, 96)


def test_a_job_keeps_its_state_on_the_gpu_and_a_second_job_compiles_nothing():
    engine = styleplug.Engine("vgg19", "none")
    engine.stylize(CONTENT, STYLE, size=96, steps=20, scales="none", seed=0, init="noise")
    (compiled,) = engine._compiled_steps.values()
    placed = []

    def where_the_state_is(progress):  # the second job's state, in the stepper the first job left
        placed.extend((name, {device.platform for device in value.devices()})
                      for name, value in [("image", compiled.carry["image"]), *compiled.carry["optimizer"].items()])

    engine.stylize(CONTENT, STYLE, size=96, steps=20, scales="none", seed=1, init="noise", callback=where_the_state_is)
    assert engine.traces == 1
    assert placed and all(platforms == {"gpu"} for _, platforms in placed), placed


def test_auto_precision_is_bfloat16_on_a_recent_gpu():
    assert resolve_precision("auto") == "bfloat16"


def test_a_job_larger_than_the_memory_allowed_is_refused_before_it_starts_with_a_size_that_fits():
    engine = styleplug.Engine("vgg19", "none", precision="float32")
    with pytest.raises(ResourceError) as refused:
        engine.stylize(CONTENT, STYLE, size=4096, steps=1, scales="none", tiling="off", max_memory=8)
    largest = refused.value.data["largest_size"]
    assert largest is not None and 512 <= largest < 4096
    engine.stylize(CONTENT, STYLE, size=largest // 2, steps=2, scales="none", max_memory=8)  # a quarter of it runs


def test_a_job_too_large_to_compile_in_one_pass_is_refused_without_tiles_and_runs_in_tiles_of_one_shape():
    engine = styleplug.Engine("vgg19", "none")
    with pytest.raises(ResourceError, match="too large for one pass on a GPU") as refused:
        engine.stylize(CONTENT, STYLE, size=8192, steps=1, scales="none", tiling="off")
    assert refused.value.data["largest_size"] == 4729  # 4729x3547: 4096x4096 pixels
    # Tiles forced at 512x384: 12 windows of 320 px with one shape, so besides the combination, the
    # pixel losses and the optimiser's update only one gather and one scatter program are compiled.
    engine.stylize(CONTENT, STYLE, size=512, steps=2, scales="none", tiling="on", tile_size=128)
    assert engine.traces == 5
