"""A kit for testing styleplug plugins, usable as a pytest plugin.

Enable it in your plugin's tests with ``pytest_plugins = ["styleplug.testing"]`` (in ``conftest.py``),
then::

    from styleplug.testing import check_loss, check_network, assert_plugin_installed

    def test_contract():
        check_loss(MyLoss)                # or check_network(MyNetwork)

    def test_installed():
        assert_plugin_installed("myloss")  # entry-point name or distribution name

    def test_in_a_host(make_host):
        host = make_host(my_plugin_module)  # isolated host: built-ins + TinyNetwork + your plugin

Everything here runs on the CPU in seconds and needs no weights: ``TinyNetwork`` is a small, seeded,
randomly initialised convnet with named layers.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .core import backends
from .core.compiled import old_contract_inputs
from .core.engine import Engine, Progress, with_dtype_policy
from .errors import one_line
from .hookspecs import hookimpl
from .run.job import Job
from .lazy import keras, ops
from .losses import Loss, uses_old_contract
from .networks import Network
from .host.plugins import PluginHost, Provider, check_backend, plugin_location, tensor_hint

__all__ = ["TinyNetwork", "assert_plugin_installed", "calibrate_loss", "calibrate_network", "check_loss", "check_network",
           "make_host", "tiled_gradient_agreement"]


class TinyNetwork(Network):
    """A tiny random convnet with named layers, for testing losses without weights."""

    name = "tiny"
    layers = ("conv1", "conv2", "pool1", "conv3", "pool2", "conv4")
    default_content_layers = ("conv3",)
    default_style_layers = ("conv1", "conv2", "conv3", "conv4")

    def preprocess(self, images: Any) -> Any:
        return ops.cast(images, "float32") / 127.5 - 1.0

    def build(self, layers: Sequence[str]) -> Any:
        self.check_layers(layers)
        deepest = self.layers.index(self.deepest(layers))
        initializer = keras.initializers.HeNormal(seed=0)
        inputs = keras.Input((None, None, 3))
        x, outputs = inputs, {}
        for name in self.layers[: deepest + 1]:
            if name.startswith("pool"):
                x = keras.layers.MaxPooling2D(name=name)(x)
            else:
                x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", kernel_initializer=initializer, name=name)(x)
            if name in layers:
                outputs[name] = x
        model = keras.Model(inputs, outputs)
        model.trainable = False
        self.weights_source = "random (tiny test network)"
        return model


def _tiny_plugin() -> object:
    return types.SimpleNamespace(__name__="styleplug.testing", register_networks=hookimpl(lambda register: register(TinyNetwork)))


def _image(seed: int, size: tuple[int, int] = (24, 32)) -> Any:
    return ops.convert_to_tensor(np.random.default_rng(seed).uniform(0, 255, (1, *size, 3)).astype(np.float32))


@contextmanager
def _named(kind: str, cls: type) -> Iterator[None]:
    """Every failure of a check as one ``AssertionError`` that names the class and its plugin's module."""
    where = f"{kind} '{getattr(cls, 'name', cls.__name__)}' ({cls.__module__}.{cls.__name__})"
    try:
        yield
    except AssertionError as error:
        raise AssertionError(f"{where}: {error}") from error
    except Exception as error:
        raise AssertionError(f"{where} raised {type(error).__name__}: {one_line(error)}{plugin_location(error)}"
                             f"{tensor_hint(error)}") from error


def check_loss(cls: type[Loss], network: Network | None = None) -> None:
    """Assert that a loss class keeps the ``Loss`` contract; raise ``AssertionError`` saying what broke
    (naming the loss and its module).

    Checks: it registers cleanly in a strict host; every declared parameter is accepted by the
    constructor; ``get_config``/``from_config`` round-trips; ``call`` gives a finite float32 scalar,
    also compiled by the backend; the gradient reaches the image; a comparison loss is about zero when
    the image is its own target; ``compute_target`` gives the same compiled; a batch of
    two images gives the mean of the two alone; a style loss given a mask gives the loss of the
    masked region cut out; and a loss that declares ``tiling`` has float32 ``sums`` that add up over
    the parts of a grid (with region weights too), whose ``from_sums`` is ``call``'s value, which is
    what makes a tiled run exact. A loss written to the old contract (``call(features, image)``) gets the
    checks of that contract only, and the mask check (it sees the region's feature vectors).
    A pixel-space style loss gets the style's pixels for its target and the mask check too. Everything runs at two image
    sizes, with features from the network in float32 and from its bfloat16 copy, as the engine runs
    it on hardware with fast bfloat16. The checks run on the process's Keras backend (``KERAS_BACKEND``):
    run your tests once per backend you support.
    """
    with _named("loss", cls):
        _check_loss(cls, network or TinyNetwork(weights="none"))


class _Calls:
    """A loss's target and value on images through one model, under whichever contract it keeps."""

    def __init__(self, loss: Loss, network: Network, model: Any) -> None:
        self.loss, self.network, self.model = loss, network, model
        self.old = uses_old_contract(type(loss))

    def features(self, image: Any) -> dict[str, Any]:
        outputs = self.model(self.network.preprocess(image))
        return {layer: outputs[layer] for layer in self.loss.layers}

    def reference(self, image: Any) -> dict[str, Any]:
        """What ``compute_target`` receives for a reference image: its features, or its pixels for a pixel-space loss."""
        return self.features(image) if self.loss.uses_features else {"image": ops.cast(image, "float32")}

    def target_of(self, reference: Any) -> Any:
        """The target from ``reference``, as the engine gets it (None for a regularizer)."""
        regularizer = self.loss.role == "regularizer"
        if self.old:
            self.loss.set_target(None if regularizer else self.reference(reference))
            return self.loss.target
        return None if regularizer else self.loss.compute_target(self.reference(reference))

    def value(self, image: Any, target: Any, mask: Any = None) -> Any:
        if self.old:
            return self.loss.call(self.features(image), image)
        return self.loss.call(self.features(image), image, target, mask)


def _check_loss(cls: type[Loss], network: Network) -> None:
    _host_with(cls, "register_losses")  # registers cleanly in a strict host
    check_backend(Provider(cls.__module__, None, None), "loss", cls, uses_old_contract(cls))
    layers = {"content": network.default_content_layers, "style": network.default_style_layers}.get(cls.role, ())
    defaults = {param.name: param.default for param in cls.params}
    loss = cls(layers=layers, **defaults) if cls.uses_features else cls(**defaults)
    assert cls.from_config(loss.get_config()).get_config() == loss.get_config(), "get_config/from_config do not round-trip"
    model = network.build(tuple(loss.layers) or network.default_content_layers)
    for size in ((40, 48), (24, 32)):
        for copy in (with_dtype_policy(model, "mixed_bfloat16"), model):
            _check_finite(_Calls(loss, network, copy), size)

    calls = _Calls(loss, network, model)
    target = calls.target_of(_image(1))
    image = _image(2)
    backend = backends.current()
    # Traced first, as the engine runs it: code that leaves the backend's tensors fails here, with its line.
    compiled = backend.compile(lambda image: calls.value(image, target), jit_compile=False)(image)
    _check_scalar(compiled, "compiled")
    result = calls.value(image, target)
    _check_scalar(result, "")
    assert np.isfinite(float(result)), f"call() returned {float(result)}"
    _, _, gradient = backend.value_and_grad(lambda image: (calls.value(image, target), None))(image)
    assert gradient is not None and float(ops.sum(ops.abs(gradient))) > 0, "the gradient does not reach the image"
    assert np.isclose(float(compiled), float(result), rtol=1e-4, atol=1e-6), \
        f"compiled: {float(compiled)} != eager {float(result)}"
    if cls.role != "regularizer":
        at_target = float(calls.value(_image(1), calls.target_of(_image(1))))
        assert abs(at_target) <= 1e-5 * max(1.0, abs(float(result))), f"a comparison loss must be ~0 at its target; got {at_target}"
    if calls.old:
        if cls.role == "style":
            _check_mask(loss)
        return
    if cls.role != "regularizer":
        traced = backend.compile(lambda image: loss.compute_target(calls.reference(image)), jit_compile=False)(_image(1))
        for eager_part, traced_part in zip(keras.tree.flatten(target), keras.tree.flatten(traced)):
            assert np.allclose(ops.convert_to_numpy(eager_part), ops.convert_to_numpy(traced_part), rtol=1e-4, atol=1e-6), \
                "compute_target differs when compiled"
    _check_batch(cls, calls.target_of, calls.value)
    if cls.role == "style":
        _check_mask(loss)
    if cls.tiling is not None and cls.uses_features:  # as in a tiled run, which computes pixel-space losses whole
        _check_tiles(loss)


def _check_finite(calls: _Calls, size: tuple[int, int]) -> None:
    """``call`` gives a finite float32 scalar at ``size``, with features from the calls' model,
    whose precision may be bfloat16."""
    value = calls.value(_image(9, size), calls.target_of(_image(10, size)))
    precision = "bfloat16" if calls.model.layers[-1].compute_dtype == "bfloat16" else "float32"
    at = f"with {precision} features at {size[1]}x{size[0]}"
    _check_scalar(value, at)
    assert np.isfinite(float(value)), f"{at}, call() gave {float(value)}; return a finite number"


def _check_scalar(value: Any, at: str) -> None:
    """``call`` returned one float32 number; else say which of the two went wrong, and the fix."""
    where = f"{at}, " if at else ""
    assert value.shape == (), (f"{where}call() gave shape {tuple(value.shape)}; return one number: reduce the values "
                               "(e.g. keras.ops.mean, or self.weighted_mean over layers)")
    dtype = keras.backend.standardize_dtype(value.dtype)
    assert dtype == "float32", f"{where}call() gave {dtype}; cast features to float32 before reducing"


def _check_batch(cls: type[Loss], target_of: Callable[[Any], Any], value: Callable[..., Any]) -> None:
    """A batch of two images gives the mean of their two values: with a target each for a content
    loss, with one shared target otherwise."""
    images, references = [_image(5), _image(6)], [_image(7), _image(8)]
    if cls.role == "content":
        singles = [float(value(image, target_of(reference))) for image, reference in zip(images, references)]
        batched = float(value(ops.concatenate(images, 0), target_of(ops.concatenate(references, 0))))
    else:
        shared = target_of(references[0])
        singles = [float(value(image, shared)) for image in images]
        batched = float(value(ops.concatenate(images, 0), shared))
    assert np.isclose(batched, np.mean(singles), rtol=1e-4, atol=1e-6), (
        f"a batch of two gave {batched}, but the two alone give {singles[0]} and {singles[1]} (mean {np.mean(singles)}); "
        "compute per sample and average over the batch")


def _check_mask(loss: Loss) -> None:
    """Masked by the left half, a style loss equals the loss of the left half cut out; masked
    everywhere, it equals the loss without a mask. Under either contract, on features or pixels."""
    rng = np.random.default_rng(11)

    def random(*shape: int) -> Any:
        return ops.convert_to_tensor(rng.uniform(0, 1, shape).astype(np.float32))

    features = {layer: random(1, 8, 8, 4) for layer in loss.layers}
    image = random(1, 8, 8, 3) * 255
    reference = {layer: random(1, 8, 8, 4) for layer in loss.layers} if loss.uses_features else {"image": random(1, 8, 8, 3) * 255}
    if uses_old_contract(type(loss)):
        loss.set_target(reference)

        def value(features: Any, image: Any, mask: Any = None) -> float:
            return float(loss.call(old_contract_inputs(loss, features, None if mask is None else mask[0, :, :, 0]), image))
    else:
        target = loss.compute_target(reference)

        def value(features: Any, image: Any, mask: Any = None) -> float:
            return float(loss.call(features, image, target, mask))

    left = np.zeros((1, 8, 8, 1), np.float32)
    left[:, :, :4] = 1
    masked = value(features, image, ops.convert_to_tensor(left))
    cut = value({layer: part[:, :, :4] for layer, part in features.items()}, image[:, :, :4])
    assert np.isclose(masked, cut, rtol=1e-4, atol=1e-6), (
        f"with a mask over the left half the loss is {masked}, but the left half cut out gives {cut}; compute the "
        "statistics of the masked region (styleplug.losses.functional.gram_matrix and moments take a mask)")
    everywhere, unmasked = value(features, image, ops.ones((1, 8, 8, 1))), value(features, image)
    assert np.isclose(everywhere, unmasked, rtol=1e-4, atol=1e-6), f"a mask of ones gives {everywhere}, no mask {unmasked}"


def _check_tiles(loss: Loss) -> None:
    """A tiled run adds each tile's ``sums`` and calls ``from_sums`` once: so the sums of a grid's
    left and right parts must add up to the whole grid's (with region weights too, a "positions"
    loss getting its target cut like its features), and ``from_sums`` of them must be ``call``'s value."""
    rng = np.random.default_rng(12)

    def grids(*shape: int) -> dict[str, Any]:
        return {layer: ops.convert_to_tensor(rng.uniform(0, 1, shape).astype(np.float32)) for layer in loss.layers}

    features, weights = grids(2, 8, 8, 4), grids(1, 8, 8, 1)
    target = loss.compute_target(grids(2 if loss.tiling == "positions" else 1, 8, 8, 4))

    def sums(columns: slice, masks: dict[str, Any] | None) -> Any:
        def cut(values: dict[str, Any]) -> dict[str, Any]:
            return {layer: grid[:, :, columns] for layer, grid in values.items()}
        return loss.sums(cut(features), cut(target) if loss.tiling == "positions" else target,
                         None if masks is None else cut(masks))

    for masks in (None, weights):
        whole = sums(slice(None), masks)
        added = keras.tree.map_structure(lambda left, right: left + right, sums(slice(0, 3), masks), sums(slice(3, None), masks))
        for whole_part, added_part in zip(keras.tree.flatten(whole), keras.tree.flatten(added)):
            dtype = keras.backend.standardize_dtype(whole_part.dtype)
            assert dtype == "float32", f"sums() gave {dtype}; cast features to float32 before summing (tiles add up float32 sums)"
            whole_part, added_part = ops.convert_to_numpy(whole_part), ops.convert_to_numpy(added_part)
            assert np.allclose(added_part, whole_part, rtol=1e-4, atol=1e-5), (
                f"sums() of a grid's left and right parts add up to {added_part.ravel()[:4]}..., "
                f"but the whole grid gives {whole_part.ravel()[:4]}...; a tiled run adds the tiles' sums, so "
                "return sums over positions and their count (styleplug.losses.functional: gram_sums, moment_sums, "
                "squared_error_sums) and take means in from_sums")
    one_pass, from_sums = float(loss.call(features, None, target)), float(loss.from_sums(sums(slice(None), None), target))
    assert np.isclose(one_pass, from_sums, rtol=1e-4, atol=1e-6), (
        f"call() gives {one_pass} but from_sums(sums()) {from_sums}: a tiled run would compute another loss than a "
        "one-pass run; leave call to the base class")


def calibrate_loss(cls: type[Loss], network: str = "vgg19", weights: str = "auto", size: int = 128,
                   host: PluginHost | None = None) -> dict[str, Any]:
    """Measure a loss against the built-in Gram term and suggest a ``default_weight``.

    Both are evaluated, unweighted, on the unstyled photo (the start of a default run: the bundled
    Tübingen photo at ``size`` px, with The Starry Night as the style) with ``network`` in float32.
    The suggestion gives the loss the same weighted size there as the Gram term has at its default
    weight, so that switching one for the other keeps the balance with the content term. Returns
    ``{"value", "gram_value", "gram_weight", "suggested_weight", "network", "weights_source", "size"}``.
    ``host`` must know the loss (default: the built-ins and ``cls``).
    """
    host = host or _host_with(cls, "register_losses")
    engine, gram_weight = Engine(network, weights, precision="float32", host=host), host.loss("gram").cls.default_weight
    values = _first_values(engine, size, "content", losses={cls.name: {"weight": 1.0}})
    value, gram_value = values[cls.name], values["gram"]
    return {"value": value, "gram_value": gram_value, "gram_weight": gram_weight,
            "suggested_weight": gram_weight * gram_value / value if value > 0 else float("inf"),
            "network": network, "weights_source": engine.weights_source, "size": size}


def calibrate_network(cls: type[Network], weights: str = "auto", size: int = 128,
                      host: PluginHost | None = None) -> dict[str, float]:
    """Suggest ``loss_weights`` for a network: the content and Gram weights that give its terms the
    weighted sizes the defaults give them on VGG19, whose feature scale they were tuned for.

    On the bundled pair at ``size`` px in float32: the content term measured at the painting (the
    photo is its own target), the Gram term at the photo, on this network (with ``weights``) and on
    VGG19 (with the offline weights). The total variation works on pixels and needs no change.
    ``host`` must know the network (default: the built-ins and ``cls``).
    """
    host = host or _host_with(cls, "register_networks")
    defaults = {name: host.loss(name).cls.default_weight for name in ("content", "gram")}
    measured = {}
    for name, source in ((cls.name, weights), ("vgg19", "auto")):
        engine = Engine(name, source, precision="float32", host=host)
        measured[name] = {"content": _first_values(engine, size, "style")["content"],
                          "gram": _first_values(engine, size, "content")["gram"]}
    return {term: defaults[term] * measured["vgg19"][term] / measured[cls.name][term] for term in defaults}


def _host_with(cls: type, hook: str) -> PluginHost:
    """A strict host with the built-ins, and ``cls`` registered through ``hook`` unless it is one of
    them; registering it raises a ``PluginError`` that says what is wrong with it."""
    builtins = PluginHost(entrypoints=False, load=())
    if cls in {entry.cls for entry in (builtins.losses | builtins.networks).values()}:
        return builtins  # one of styleplug's own, registered through the same hooks already
    name = f"check:{cls.__name__}"
    plugin = types.SimpleNamespace(__name__=name, **{hook: hookimpl(lambda register: register(cls))})
    return PluginHost([plugin], entrypoints=False, load=(name,), strict=True)


def _first_values(engine: Engine, size: int, init: str, losses: dict[str, Any] | None = None) -> dict[str, float]:
    """Each term, unweighted, at the first point of a run on the bundled pair starting from ``init``."""
    examples = Path(__file__).parent / "examples"
    job = Job(content=str(examples / "tubingen.jpg"), style=str(examples / "starry_night.jpg"), size=size, steps=1,
              chunk_size=1, scales="none", tolerance=0, init=init, content_weight=1.0, style_weight=1.0, tv_weight=0.0,
              losses=losses or {})
    # The first report gives each weighted term at the first accepted point: where the run started.
    return next(event for event in engine.iter_stylize(job) if isinstance(event, Progress)).losses


def check_network(cls: type[Network], weights: str = "none") -> None:
    """Assert that a network class keeps the ``Network`` contract (offline with ``weights="none"``);
    raise ``AssertionError`` saying what broke (naming the network and its module).

    Checks: it registers cleanly in a strict host; ``build`` returns a frozen model whose outputs are
    the requested layers, stopping at the deepest of them; features are finite; the gradient reaches
    the input through ``preprocess``; and the same holds for the bfloat16 copy the engine makes (every
    layer must survive ``get_config``/``from_config``), at two image sizes.
    """
    with _named("network", cls):
        _check_network(cls, weights)


def _check_network(cls: type[Network], weights: str) -> None:
    _host_with(cls, "register_networks")  # registers cleanly in a strict host
    check_backend(Provider(cls.__module__, None, None), "network", cls)
    network = cls(weights=weights)
    layers = tuple(dict.fromkeys(network.default_style_layers + network.default_content_layers))
    model = network.build(layers)
    assert not model.trainable_weights, "build() must return a frozen model"
    deepest = network.deepest(layers)
    later = set(network.layers[network.layers.index(deepest) + 1 :])
    assert not later & {layer.name for layer in model.layers}, f"the model goes past its deepest layer {deepest}"
    try:
        copy = with_dtype_policy(model, "mixed_bfloat16")
    except Exception as error:
        raise AssertionError(f"the engine's bfloat16 copy of the model fails ({type(error).__name__}: {one_line(error)}); "
                             "give every custom layer get_config() and from_config()") from error
    for precision, built in (("float32", model), ("bfloat16", copy)):
        for size in ((32, 32), (48, 40)):
            def features(image: Any) -> tuple[Any, Any]:
                outputs = built(network.preprocess(image))
                return sum(ops.mean(ops.cast(outputs[layer], "float32")) for layer in layers), outputs

            _, outputs, gradient = backends.current().value_and_grad(features)(_image(3, size))
            at = f"in {precision} at {size[1]}x{size[0]}"
            assert set(outputs) == set(layers), f"{at}, outputs {sorted(outputs)} != requested {sorted(layers)}"
            assert all(np.isfinite(ops.convert_to_numpy(ops.cast(outputs[layer], "float32"))).all() for layer in layers), \
                f"features are not finite {at}"
            assert gradient is not None and np.isfinite(ops.convert_to_numpy(gradient)).all(), \
                f"the gradient does not reach the input image {at}"


def assert_plugin_installed(name: str) -> None:
    """Assert that an installed plugin is found through its entry point and loads with status ok."""
    records = [p for p in PluginHost().plugins() if name in (p["name"], p["package"])]
    assert records, f"no installed plugin named {name!r}; is it pip-installed with a [project.entry-points.styleplug] entry?"
    for record in records:
        assert record["status"] == "ok", f"plugin {record['name']!r} failed: {record['error']}"


try:
    import pytest
except ImportError:  # the kit's functions work without pytest; only the fixture needs it
    pass
else:

    @pytest.fixture
    def make_host() -> Callable[..., PluginHost]:
        """Build an isolated, strict host with the built-ins, ``TinyNetwork`` and the given plugins."""

        def make(*plugins: object) -> PluginHost:
            return PluginHost([_tiny_plugin(), *plugins], entrypoints=False, strict=True)

        return make


def tiled_gradient_agreement(engine: Engine, job: Job, tile_size: int, halo: int | None = None,
                             uniform: bool = False, gather_size: int | None = None) -> dict[str, float]:
    """How closely a tiled run's loss and gradient match the untiled ones for ``job``'s losses, at
    its output size (one scale), from its starting image: ``{"total", "tiled_total",
    "gradient_error_max", "gradient_error_norm", "tiles", "gather_tiles", "window_shapes"}`` (the shapes are the
    compiled programs' count, two each), the errors relative to the untiled
    gradient's largest element and norm. A loss declaring ``tiling`` should give errors of float
    rounding (about 1e-6 in float32). ``halo`` overrides the network's (to see what too small a
    halo costs); ``uniform`` gives every window one shape, as on a GPU; ``gather_size`` cuts the
    gathering pass's tiles apart from the pass back's."""
    from .core.engine import _Tiling
    from .core.tiling import exhaust, network_geometry, window_shapes

    terms = engine.terms(job)
    layers = engine._layers(terms)
    model = engine.feature_model(layers)
    images = engine._load(job)
    geometry = network_geometry(model, layers, engine.network.name)
    if halo is not None:
        geometry = dataclasses.replace(geometry, halo=halo)
    tiling = _Tiling(geometry, tile_size, uniform, gather_size, uniform)
    untiled = engine._prepare(model, terms, images, job, job.size, None, None, None)
    tiled = engine._prepare(model, terms, images, job, job.size, None, tiling, tiling)
    image = ops.convert_to_tensor(untiled.carry["image"])
    network = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
    total, _, gradient = untiled.value_and_grad(image, untiled.constants, network)
    tiled_total, _, tiled_gradient = exhaust(tiled.iter_evaluate(image))
    gradient, tiled_gradient = ops.convert_to_numpy(gradient), ops.convert_to_numpy(tiled_gradient)
    return {"total": float(total), "tiled_total": float(tiled_total), "tiles": len(tiled.tiles),
            "gather_tiles": len(tiled.gather_tiles),
            "window_shapes": window_shapes(tiled.tiles),
            "gradient_error_max": float(np.abs(tiled_gradient - gradient).max() / np.abs(gradient).max()),
            "gradient_error_norm": float(np.linalg.norm(tiled_gradient - gradient) / np.linalg.norm(gradient))}

