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


def test_a_job_larger_than_the_gpu_is_refused_before_it_starts_with_a_size_that_fits():
    engine = styleplug.Engine("vgg19", "none", precision="float32")
    with pytest.raises(ResourceError) as refused:
        engine.stylize(CONTENT, STYLE, size=8192, steps=1, scales="none", tiling="off")
    largest = refused.value.data["largest_size"]
    assert largest is not None and 2048 <= largest < 8192
    engine.stylize(CONTENT, STYLE, size=largest // 4, steps=2, scales="none")  # a quarter of it runs
