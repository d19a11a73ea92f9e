"""The engine on a small random-weight VGG19: losses fall, L-BFGS beats Adam, cancellation, determinism."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

import styleplug
from styleplug.errors import PluginError, UnknownNameError, UsageError
from styleplug.host.plugins import PluginHost

from support import gradient_image, stripes_image

CONTENT = gradient_image(48, 40)
STYLE = stripes_image(48, 48)
SMALL = {"size": 48, "chunk_size": 5}


@pytest.fixture(scope="module")
def engine() -> styleplug.Engine:
    # float32 pinned: these tests are about the engine's logic, the same on every machine.
    return styleplug.Engine("vgg19", "none", precision="float32", host=PluginHost(entrypoints=False))


def _run(engine, **options):
    reports = []
    image = engine.stylize(CONTENT, STYLE, callback=reports.append, **{**SMALL, **options})
    return image, reports


def test_loss_decreases_and_progress_is_reported(engine):
    image, reports = _run(engine, steps=30)
    assert [r.step for r in reports] == [5, 10, 15, 20, 25, 30]
    assert all(r.total == 30 for r in reports)
    assert set(reports[0].losses) == {"content", "gram", "tv", "total"}
    assert reports[-1].losses["total"] < 0.5 * reports[0].losses["total"]
    assert reports[-1].elapsed > 0
    assert image.size == (48, 40) and image.mode == "RGB"
    assert reports[-1].image().size == (48, 40)


def test_lbfgs_ends_lower_than_adam_in_the_same_steps(engine):
    _, lbfgs = _run(engine, steps=40, optimizer="lbfgs")
    _, adam = _run(engine, steps=40, optimizer="adam")
    assert lbfgs[-1].losses["total"] < adam[-1].losses["total"]


def test_same_seed_same_output_and_seed_matters(engine):
    first, _ = _run(engine, steps=10, init="noise", seed=3)
    again, _ = _run(engine, steps=10, init="noise", seed=3)
    other, _ = _run(engine, steps=10, init="noise", seed=4)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_callback_returning_false_stops_within_one_chunk(engine):
    seen = []

    def stop_after_first(progress):
        seen.append(progress.step)
        return False

    image = engine.stylize(CONTENT, STYLE, steps=100, callback=stop_after_first, **SMALL)
    assert seen == [5]
    assert not np.array_equal(np.asarray(image), np.asarray(CONTENT))  # the image so far, not the input


def test_cancel_event_stops_the_run(engine):
    cancel = threading.Event()
    steps = []

    def cancel_at_ten(progress):
        steps.append(progress.step)
        if progress.step >= 10:
            cancel.set()

    engine.stylize(CONTENT, STYLE, steps=100, cancel=cancel, callback=cancel_at_ten, **SMALL)
    assert steps == [5, 10]


def test_two_engines_do_not_interfere(engine):
    other = styleplug.Engine("vgg16", "none", precision="float32", host=PluginHost(entrypoints=False))
    before, _ = _run(engine, steps=10)
    other_image = other.stylize(STYLE, CONTENT, steps=10, **SMALL)
    after, _ = _run(engine, steps=10)
    assert np.array_equal(np.asarray(before), np.asarray(after))
    assert other_image.size == (48, 48)


def test_inputs_as_arrays_paths_and_images_agree(engine, tmp_path):
    path = tmp_path / "content.png"
    CONTENT.save(path)
    from_path, _ = _run(engine, steps=5)
    from_array = engine.stylize(np.asarray(CONTENT), STYLE, steps=5, **SMALL)
    from_file = engine.stylize(str(path), STYLE, steps=5, **SMALL)
    assert np.array_equal(np.asarray(from_path), np.asarray(from_array))
    assert np.array_equal(np.asarray(from_path), np.asarray(from_file))


def test_style_weight_zero_keeps_the_content(engine):
    image, _ = _run(engine, steps=10, style_weight=0, tv_weight=0)
    assert np.abs(np.asarray(image, float) - np.asarray(CONTENT, float)).mean() < 1.0


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"size": 0}, UsageError, "size must be > 0"),
        ({"steps": -5}, UsageError, "steps must be > 0"),
        ({"style_weight": float("nan")}, UsageError, "style_weight must be a finite number"),
        ({"content_weight": -1.0}, UsageError, "content_weight must be >= 0"),
        ({"optimizer": "sgd"}, UnknownNameError, "unknown optimizer 'sgd'"),
        ({"tolerance": -0.1}, UsageError, "tolerance must be >= 0"),
        ({"style_layers": ["blok1_conv1"]}, UnknownNameError, "unknown layer 'blok1_conv1' in network 'vgg19'. Did you mean 'block1_conv1'"),
        ({"losses": {"grm": {}}}, UnknownNameError, "Did you mean 'gram'"),
        ({"losses": {"tv": {"exponent": 9}}}, UsageError, "out of range"),
        ({"losses": {"tv": {"layers": ["block1_conv1"]}}}, UsageError, "takes no layers"),
        ({"content_weight": 0, "style_weight": 0, "tv_weight": 0}, UsageError, "nothing to optimise"),
        ({"init": "nothing.png"}, UsageError, "init image 'nothing.png' does not exist"),
    ],
)
def test_bad_options_give_one_clear_error(engine, options, error, message):
    with pytest.raises(error, match=message):
        engine.stylize(CONTENT, STYLE, **{**SMALL, "steps": 5, **options})


def test_a_failing_plugin_loss_is_named():
    class Exploding(styleplug.Loss):
        """Raises when called."""

        name = "exploding"
        role = "regularizer"
        uses_features = False

        def call(self, features, image, target=None, mask=None):
            raise ValueError("kaboom")

    plugin = type("Plugin", (), {"register_losses": staticmethod(styleplug.hookimpl(lambda register: register(Exploding)))})
    engine = styleplug.Engine("vgg19", "none", host=PluginHost([plugin()], entrypoints=False))
    with pytest.raises(PluginError, match="plugin 'Plugin' failed at call of loss 'exploding': ValueError: kaboom"):
        engine.stylize(CONTENT, STYLE, steps=5, losses={"exploding": {}}, **SMALL)


@pytest.mark.tensorflow_only  # the test plugin's loss keeps the old contract
def test_a_plugin_loss_changes_the_output(with_test_plugins):
    engine = styleplug.Engine("vgg19", "none", host=PluginHost())
    plain = engine.stylize(CONTENT, STYLE, steps=20, **SMALL)
    dark = engine.stylize(CONTENT, STYLE, steps=20, losses={"brightness": {"weight": 1e10, "level": 0.1}}, **SMALL)
    assert np.asarray(dark).mean() < np.asarray(plain).mean() - 10


def test_bfloat16_network_with_float32_losses(engine):
    """In bfloat16 only the network changes: features are bfloat16, losses and the image float32,
    and the result stays close to the float32 run."""
    from styleplug.lazy import tf

    fast = styleplug.Engine("vgg19", "none", precision="bfloat16", host=PluginHost(entrypoints=False))
    assert fast.precision == "bfloat16"
    model = fast.feature_model(("block1_conv1",))
    features = model(fast.network.preprocess(tf.zeros((1, 8, 8, 3))))
    assert features["block1_conv1"].dtype == tf.bfloat16
    _, reports = _run(fast, steps=40)
    _, reference = _run(engine, steps=40)
    assert reports[-1].losses["total"] < 0.5 * reports[0].losses["total"]
    assert reports[-1].losses["total"] == pytest.approx(reference[-1].losses["total"], rel=0.05)


def test_xla_compiled_run_matches_the_plain_one(engine):
    """jit_compile=True (the XLA path, meant for GPUs) runs the same optimisation: same losses reported."""
    compiled = styleplug.Engine("vgg19", "none", precision="float32", jit_compile=True, host=PluginHost(entrypoints=False))
    _, reports = _run(compiled, steps=10)
    _, reference = _run(engine, steps=10)
    assert [r.step for r in reports] == [r.step for r in reference]
    assert reports[0].losses["total"] == pytest.approx(reference[0].losses["total"], rel=0.02)
    # Later steps drift apart (XLA fuses and rounds differently, and a step accepted by one run may
    # be retaken by the other), but both optimise the same loss to the same level.
    assert reports[-1].losses["total"] == pytest.approx(reference[-1].losses["total"], rel=0.1)


def test_a_second_job_of_the_same_shape_reuses_the_compiled_step(caplog):
    """Targets, weights and masks live in variables, so only a new shape or loss setup traces again."""
    engine = styleplug.Engine("vgg19", "none", precision="float32", host=PluginHost(entrypoints=False))
    reports: list[styleplug.Progress] = []
    first = engine.stylize(CONTENT, STYLE, steps=10, callback=reports.append, **SMALL)
    assert engine.traces == 1
    assert reports[0].compiled and not any(report.compiled for report in reports[1:])  # the first chunk compiled
    with caplog.at_level("WARNING"):
        for seed in range(1, 7):  # other pictures and weights, the same shape: no new trace, no warning
            other = engine.stylize(gradient_image(48, 40, seed=seed), stripes_image(40 + seed, 48), steps=10,
                                   style_weight=10.0**-seed, **SMALL)
    assert engine.traces == 1
    assert not [record for record in caplog.records if "retracing" in record.getMessage()]
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    reports.clear()
    again = engine.stylize(CONTENT, STYLE, steps=10, callback=reports.append, **SMALL)  # a reused step starts afresh
    assert np.array_equal(np.asarray(first), np.asarray(again)) and not any(report.compiled for report in reports)
    engine.stylize(CONTENT, STYLE, steps=10, size=40, chunk_size=5)  # another shape: a new compiled step
    assert engine.traces == 2


def test_many_shapes_trace_once_each_and_raise_no_retracing_warning(caplog, capfd):
    """A long-lived engine (the demo) sees many shapes; each compiles once, and TensorFlow's
    "frequent retracing" heuristic, which counts new chunks built from the same code, stays quiet."""
    engine = styleplug.Engine("vgg19", "none", precision="float32", host=PluginHost(entrypoints=False))
    with caplog.at_level("WARNING"):
        for size in range(32, 48, 2):
            engine.stylize(CONTENT, STYLE, steps=2, size=size, chunk_size=2)
    assert engine.traces == 4  # the engine keeps the last MAX_COMPILED chunks, each traced once
    assert not [record for record in caplog.records if "retracing" in record.getMessage()]
    assert "retracing" not in capfd.readouterr().err


@pytest.mark.tensorflow_only  # a tf.Variable in the loss / the old contract
def test_a_loss_that_turns_nan_mid_run_is_named(engine):
    from styleplug.lazy import tf

    class Fragile(styleplug.Loss):
        """Finite for its first calls, NaN after."""

        name = "fragile"
        role = "regularizer"
        uses_features = False

        def __init__(self, **options):
            super().__init__(**options)
            self.calls = tf.Variable(0)

        def call(self, features, image):
            self.calls.assign_add(1)
            return tf.where(self.calls > 12, float("nan"), 0.0) + 0.0 * tf.reduce_mean(image)

    plugin = type("Plugin", (), {"register_losses": staticmethod(styleplug.hookimpl(lambda register: register(Fragile)))})
    fragile = styleplug.Engine("vgg19", "none", precision="float32", host=PluginHost([plugin()], entrypoints=False))
    with pytest.raises(UsageError, match="loss 'fragile' became NaN or infinite by step .* or report it to plugin 'Plugin'"):
        fragile.stylize(CONTENT, STYLE, steps=40, losses={"fragile": {}}, **SMALL)


def test_auto_precision_follows_the_hardware():
    from styleplug.core.device import fast_bfloat16, resolve_precision

    assert resolve_precision("auto") == ("bfloat16" if fast_bfloat16() else "float32")
    with pytest.raises(UnknownNameError, match="unknown precision 'fp16'"):
        resolve_precision("fp16")


def test_early_stop_when_the_loss_stops_improving(engine):
    image, reports = _run(engine, steps=200, tolerance=0.5, window=10)
    assert reports[-1].converged and reports[-1].step < 200
    assert not any(report.converged for report in reports[:-1])
    _, full = _run(engine, steps=30, tolerance=0.0, window=10)
    assert [r.step for r in full][-1] == 30 and not any(r.converged for r in full)


def test_two_styles_blended_one_and_zero_equal_the_single_style_run(engine):
    other = gradient_image(48, 48, seed=5)
    single, _ = _run(engine, steps=10)
    blended = engine.stylize(CONTENT, [STYLE, other], style_blend=[1, 0], steps=10, **SMALL)
    assert np.array_equal(np.asarray(single), np.asarray(blended))
    reports = []
    mixed = engine.stylize(CONTENT, [STYLE, other], style_blend=[0.5, 0.5], steps=10, callback=reports.append, **SMALL)
    assert not np.array_equal(np.asarray(single), np.asarray(mixed))
    assert set(reports[-1].losses) == {"content", "gram", "tv", "total"}  # one total per loss, not per image


def test_style_scale_and_style_init_change_the_result(engine):
    single, _ = _run(engine, steps=10)
    scaled = engine.stylize(CONTENT, STYLE, style_scale=0.5, steps=10, **SMALL)
    assert not np.array_equal(np.asarray(single), np.asarray(scaled))
    from_style = engine.stylize(CONTENT, STYLE, init="style", steps=1, **{**SMALL, "chunk_size": 1})
    # One step from the style image stays far closer to the stripes than to the content photo.
    stripes = np.asarray(STYLE.resize(CONTENT.size), float)
    assert np.abs(np.asarray(from_style, float) - stripes).mean() < np.abs(np.asarray(from_style, float) - np.asarray(CONTENT, float)).mean()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"style_blend": [1.0]}, "got 1 style blend weights for 2 style images"),
        ({"style_blend": [0, 0]}, "the style blend weights are all zero"),
        ({"style_blend": [1, -1]}, "a style blend weight must be >= 0"),
        ({"style_scale": 0}, "style_scale must be > 0"),
    ],
)
def test_bad_style_options(engine, options, message):
    with pytest.raises(UsageError, match=message):
        engine.stylize(CONTENT, [STYLE, STYLE], steps=1, **SMALL, **options)


def test_luminance_transfer_keeps_the_content_chroma(engine):
    image = engine.stylize(CONTENT, STYLE, colors="luminance", steps=10, **SMALL)
    _, cb, cr = image.convert("YCbCr").split()
    _, content_cb, content_cr = CONTENT.convert("YCbCr").split()
    # Equal up to 8-bit rounding wherever the new luminance with the old chroma is a valid RGB colour,
    # that is wherever no channel had to be clipped to 0 or 255.
    pixels = np.asarray(image)
    in_gamut = ((pixels > 0) & (pixels < 255)).all(axis=-1)
    assert in_gamut.mean() > 0.5
    for ours, theirs in ((cb, content_cb), (cr, content_cr)):
        difference = np.abs(np.asarray(ours, int) - np.asarray(theirs, int))[in_gamut]
        assert difference.mean() < 1.0 and np.mean(difference <= 2) > 0.99
    plain, _ = _run(engine, steps=10)
    assert not np.array_equal(np.asarray(image), np.asarray(plain))


def test_colour_matching_gives_the_style_the_content_palette():
    from styleplug.run.colors import match_colors

    # A dull, greyish-green 'painting' with independent channel noise (a full-rank colour covariance).
    painting = np.random.default_rng(3).normal([90, 120, 80], [10, 15, 8], (48, 48, 3)).clip(0, 255).astype(np.uint8)
    matched = np.asarray(match_colors(Image.fromarray(painting), CONTENT), float).reshape(-1, 3)
    content = np.asarray(CONTENT, float).reshape(-1, 3)
    np.testing.assert_allclose(matched.mean(0), content.mean(0), atol=3.0)
    np.testing.assert_allclose(np.cov(matched, rowvar=False), np.cov(content, rowvar=False), rtol=0.15, atol=30)


def test_colour_match_runs_and_bad_mode_is_refused(engine):
    image = engine.stylize(CONTENT, STYLE, colors="match", steps=5, **SMALL)
    assert image.size == CONTENT.size
    with pytest.raises(UnknownNameError, match="unknown colour mode 'lum'. Did you mean 'luminance'"):
        engine.stylize(CONTENT, STYLE, colors="lum", steps=5, **SMALL)


@pytest.mark.parametrize(
    ("scales", "size", "expected"),
    [("auto", 512, [256, 512]), ("auto", 1024, [256, 512, 1024]), ("auto", 700, [350, 700]), ("auto", 511, [511]),
     ("none", 1024, [1024]), ([128, 256], 512, [128, 256, 512]), ([128, 512], 512, [128, 512])],
)
def test_scale_plans(scales, size, expected):
    from styleplug.run.job import plan_scales

    assert plan_scales(scales, size) == expected


@pytest.mark.parametrize("scales", [[512], [300, 200], [8], "fine", 256])
def test_bad_scales_are_refused(engine, scales):
    with pytest.raises(UsageError, match="scales must be|a scale must be"):
        engine.stylize(CONTENT, STYLE, scales=scales, steps=1, **SMALL)


def test_multiscale_runs_coarse_to_fine_and_reports_each_scale(engine):
    reports = []
    image = engine.stylize(CONTENT, STYLE, scales=[24], steps=10, tolerance=0, callback=reports.append, **SMALL)
    assert image.size == CONTENT.size
    assert [r.size for r in reports] == [24] * 2 + [48] * 2
    assert [r.step for r in reports] == [5, 10, 15, 20] and {r.total for r in reports} == {20}
    assert json.loads(image.info["styleplug"])["scales"] == [24, 48]
    single, _ = _run(engine, steps=10, tolerance=0)
    assert not np.array_equal(np.asarray(image), np.asarray(single))


def test_an_early_stopped_coarse_scale_hands_back_its_steps(engine):
    reports = []
    engine.stylize(CONTENT, STYLE, scales=[24], steps=200, tolerance=0.5, window=10, callback=reports.append, **SMALL)
    coarse = [r for r in reports if r.size == 24]
    assert coarse[-1].step < 200 and not any(r.converged for r in coarse)  # only the final scale reports converged
    assert reports[0].total == 400 and coarse[-1].total == coarse[-1].step + 200
    assert reports[-1].converged and reports[-1].total == reports[-1].step


def test_stopping_at_a_coarse_scale_still_gives_a_full_size_image(engine):
    image = engine.stylize(CONTENT, STYLE, scales=[24], steps=50, callback=lambda p: False, **SMALL)
    assert image.size == CONTENT.size


@pytest.mark.tensorflow_only  # a tf.Variable in the loss / the old contract
def test_an_old_contract_loss_under_a_mask_gets_the_gram_matrix_of_the_region():
    from styleplug.core.compiled import region_positions
    from styleplug.losses.functional import gram_matrix

    features = np.random.default_rng(0).normal(size=(1, 8, 8, 4)).astype(np.float32)
    mask = np.zeros((16, 16), np.float32)
    mask[:, :8] = 1  # the left half, at twice the feature grid's resolution
    region = gram_matrix(features[:, :, :4])
    np.testing.assert_allclose(gram_matrix(region_positions(features, mask)).numpy(), region.numpy(), rtol=1e-5)


def test_a_masked_out_region_stays_close_to_the_content(engine):
    content = gradient_image(64, 48, seed=2)
    mask = np.zeros((48, 64), np.uint8)
    mask[:, 32:] = 255  # style the right half only
    options = {"size": 64, "steps": 30, "style_weight": 1e9, "style_layers": ["block1_conv1", "block2_conv1"]}
    masked = np.asarray(engine.stylize(content, STYLE, masks=[mask], **options), float)
    unmasked = np.asarray(engine.stylize(content, STYLE, **options), float)
    original = np.asarray(content, float)
    left, right = slice(0, 20), slice(44, 64)  # away from the mask's edge
    kept = np.abs(masked[:, left] - original[:, left]).mean()
    assert kept < 0.25 * np.abs(unmasked[:, left] - original[:, left]).mean()
    assert np.abs(masked[:, right] - original[:, right]).mean() > 4 * kept  # the masked-in half is styled


@pytest.mark.parametrize(
    ("masks", "message"),
    [
        ([np.full((40, 48), 255, np.uint8)] * 2, "got 2 masks for 1 style images"),
        ([np.zeros((40, 48), np.uint8)], "mask 1 is all black"),
        ([np.full((48, 48), 255, np.uint8)], "mask 1 is 48x48 but the content image is 48x40"),
    ],
)
def test_bad_masks(engine, masks, message):
    with pytest.raises(UsageError, match=message):
        engine.stylize(CONTENT, STYLE, masks=masks, steps=1, **SMALL)


def test_memory_plan_shrinks_the_history_then_switches_to_adam(engine, caplog):
    from styleplug.core.device import estimate_memory
    from styleplug.frontends.cli import cli_name
    from styleplug.errors import ResourceError

    network = engine.network
    model = engine.feature_model([*network.default_content_layers, *network.default_style_layers])
    width, height = CONTENT.size

    def gib(optimizer, history):
        return estimate_memory(model, height, width, optimizer, history) / 2**30

    def planned(max_memory):
        record = json.loads(engine.stylize(CONTENT, STYLE, steps=2, max_memory=max_memory, fit_memory=True, **SMALL).info["styleplug"])
        return record["job"]["optimizer"], record["job"]["history"], record["job"]["learning_rate"]

    assert planned(gib("lbfgs", 20)) == ("lbfgs", 20, 1.0)
    assert planned(gib("lbfgs", 10)) == ("lbfgs", 10, 1.0)
    assert "would not fit" in caplog.text and "running with history 10" in caplog.text
    assert planned(gib("adam", 20)) == ("adam", 20, 5.0)
    with pytest.raises(ResourceError, match=r"GiB is allowed \(max_memory\); use size=\d+ or less, or fit_memory") as refused:
        engine.stylize(CONTENT, STYLE, steps=2, max_memory=gib("lbfgs", 10), **SMALL)
    # The error carries its figures, and each front end names its own options.
    largest = refused.value.data["largest_size"]
    assert 16 <= largest < 48 and refused.value.data["needed"] > refused.value.data["available"]
    assert f"use --size {largest} or less, or --fit-memory" in refused.value.phrase(cli_name)
    with pytest.raises(ResourceError, match=r"use size=\d+ or less\.$"):
        engine.stylize(CONTENT, STYLE, steps=2, max_memory=gib("adam", 20) * 0.999, fit_memory=True, **SMALL)
    with pytest.raises(ResourceError, match="0.5 GiB is allowed .* too little for any job with this network"):
        engine.stylize(CONTENT, STYLE, steps=2, max_memory=0.5, **SMALL)
    # The style images count too: style_scale 16 asks for a 768 px style image beside a 48 px output.
    with pytest.raises(ResourceError, match=r"a style image at 768x768 \(style_scale 16 of 48 px\) needs about .* use a smaller style_scale"):
        engine.stylize(CONTENT, STYLE, steps=2, max_memory=gib("lbfgs", 20), style_scale=16, **SMALL)


def test_the_result_is_the_lowest_loss_image_seen_and_in_range(engine):
    # A far too large fixed step makes the loss jump up and down; the run still returns its best image.
    image, reports = _run(engine, steps=20, learning_rate=20.0, tolerance=0)
    judged = []  # the loss of the returned image: the first report of a run that starts from it
    engine.stylize(CONTENT, STYLE, init=image, steps=1, chunk_size=1, size=48, callback=judged.append)
    assert judged[0].losses["total"] <= 1.01 * min(report.losses["total"] for report in reports)
    # With a sensible step, the loss of the delivered 8-bit image is the loss the run reported.
    image, reports = _run(engine, steps=20, tolerance=0)
    judged.clear()
    engine.stylize(CONTENT, STYLE, init=image, steps=1, chunk_size=1, size=48, callback=judged.append)
    assert judged[0].losses["total"] == pytest.approx(reports[-1].losses["total"], rel=0.02)


def test_one_engine_shared_by_two_threads_paints_each_jobs_own_picture(engine):
    """Two jobs of the same shape, different styles, at the same time on one engine: each gets the
    pixels it gets alone (each job takes its own compiled chunk and the variables it holds)."""
    styles = {"stripes": STYLE, "gradient": gradient_image(48, 48, seed=3)}
    jobs = {name: styleplug.Job(content=CONTENT, style=style, steps=20, chunk_size=2, size=48, tolerance=0) for name, style in styles.items()}
    alone = {name: np.asarray(engine.run(job)) for name, job in jobs.items()}
    both_running = threading.Barrier(2, timeout=60)
    shared: dict[str, np.ndarray] = {}

    def paint(name: str) -> None:
        met = []

        def meet(progress):  # after each thread's first chunk, wait until the other is mid-run too
            if not met:
                met.append(both_running.wait())

        shared[name] = np.asarray(engine.run(jobs[name], callback=meet))

    threads = [threading.Thread(target=paint, args=(name,)) for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(shared) == set(jobs)
    for name in jobs:
        assert np.array_equal(shared[name], alone[name]), (name, np.abs(shared[name].astype(int) - alone[name]).mean())
    assert not np.array_equal(alone["stripes"], alone["gradient"])
