"""Training fast style models (Johnson et al. 2016) with the engine's loss plugins.

The transformer of ``styleplug.fast.model`` learns to paint random crops of the user's photos so that the
same weighted losses as ``styleplug run`` (content, Gram, total variation and any plugin loss, on
the same feature networks) are low. A content loss compares each painted crop with its own photo:
its target is computed inside the traced step, one per sample, as the Loss contract allows. A style
loss compares the whole batch with one style image, whose target is computed once.

Each training step uses one style, in turn. The model file is written every ``checkpoint_every``
steps and when training stops, however it stops, so a later call with the same output resumes.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core.engine import Engine, Term
from ..errors import UsageError
from .model import MIN_SIDE, Architecture, StyleModel
from ..run.image import ImageInput, load_image, pixel_digest, resize_long_side
from ..run.job import Job
from ..core import backends
from ..lazy import keras, ops
from ..losses import uses_old_contract
from ..host.plugins import PluginHost, styleplug_version

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
CROP_THREADS = min(4, os.cpu_count() or 1)  # threads cutting training crops ahead of the device


@dataclass
class TrainProgress:
    """What a training callback receives after each step."""

    step: int  # steps done in all, over every session of this model
    total: int
    style: str  # the style this step trained
    losses: dict[str, float]  # each weighted term of this step's batch, and "total"
    elapsed: float  # seconds in this session
    held_out: dict[str, float] | None = None  # the same terms on the held-out photos, at checkpoints


def photo_files(folder: str | Path) -> list[Path]:
    """The images in ``folder`` (not its subfolders), sorted by name."""
    path = Path(folder)
    if not path.is_dir():
        raise UsageError(f"photo folder '{path}' does not exist or is not a folder.")
    files = sorted(item for item in path.iterdir() if item.suffix.lower() in PHOTO_SUFFIXES and item.is_file())
    if len(files) < 2:
        raise UsageError(f"photo folder '{path}' has {len(files)} image(s); training needs at least 2 "
                         f"({', '.join(PHOTO_SUFFIXES)}), one of them held out.")
    return files


class Crops:
    """Random training crops: a square of each photo's short side divided by a random factor in 1..2
    (scale jitter), at a random place, scaled to ``size`` x ``size`` and flipped half the time.
    Step ``n``'s crops depend on the seed and ``n`` alone, so a resumed run and a run cut by several
    threads train on the same crops."""

    def __init__(self, photos: Sequence[Image.Image], size: int, seed: int) -> None:
        self.photos, self.size, self.seed = list(photos), size, seed

    def batch(self, count: int, step: int) -> np.ndarray:
        """Step ``step``'s ``count`` crops, as uint8 (a quarter of float32's bytes to the device)."""
        random = np.random.default_rng([self.seed, step])
        return np.stack([self._crop(self.photos[random.integers(len(self.photos))], random) for _ in range(count)])

    def _crop(self, photo: Image.Image, random: np.random.Generator) -> np.ndarray:
        side = min(photo.size) / random.uniform(1.0, 2.0)
        crop = _square(photo, random.uniform(0, photo.width - side), random.uniform(0, photo.height - side), side, self.size)
        return crop[:, ::-1] if random.random() < 0.5 else crop


def _square(photo: Image.Image, left: float, top: float, side: float, size: int) -> np.ndarray:
    """The square of ``photo`` at (``left``, ``top``) with sides ``side``, scaled to ``size`` x ``size``.
    Only the square is scaled (PIL's box), not the whole photo: 3x less work for 256 px crops."""
    return np.asarray(photo.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side)))


@contextmanager
def _cut_ahead(crops: Crops, count: int, threads: int = CROP_THREADS) -> Iterator[Callable[[int], Any]]:
    """A function giving step ``n``'s batch as a float32 tensor, the next batches being cut
    meanwhile by ``threads`` threads (PIL lets go of the GIL while it scales), so that the host
    keeps up with a GPU: one thread cuts about 700 crops of 320 px a second."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="styleplug-crops")
    pending: dict[int, Future[np.ndarray]] = {}

    def take(step: int) -> Any:
        for ahead in range(step, step + 2 * threads):
            if ahead not in pending:
                pending[ahead] = pool.submit(crops.batch, count, ahead)
        return ops.cast(ops.convert_to_tensor(pending.pop(step).result()), "float32")

    try:
        yield take
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def centre_crops(photos: Sequence[Image.Image], size: int) -> np.ndarray:
    """The middle square of each photo scaled to ``size`` x ``size``: the held-out batch."""
    crops = []
    for photo in photos:
        side = min(photo.size)
        crops.append(_square(photo, (photo.width - side) / 2, (photo.height - side) / 2, side, size))
    return np.stack(crops)


def train(styles: Sequence[ImageInput], photos: str | Path | Sequence[ImageInput], output: str | Path, *,
          names: Sequence[str] | None = None, size: int = 160, steps: int = 1000, batch: int = 4, style_size: int = 256,
          learning_rate: float = 1e-3, architecture: Architecture = Architecture(), network: str = "vgg19",
          weights: str = "auto", precision: str = "auto", network_options: Mapping[str, Any] | None = None, held_out: int = 1, checkpoint_every: int = 100, seed: int = 0,
          host: PluginHost | None = None, callback: Callable[[TrainProgress], bool | None] | None = None,
          cancel: threading.Event | None = None, **loss_options: Any) -> StyleModel:
    """Train (or go on training) the style model at ``output`` until it has run ``steps`` steps.

    ``styles`` are the style images, named by ``names`` (default: their file names without
    extension). ``photos`` is a folder of photos, or a list of images; the last ``held_out`` of them
    are not trained on, and the losses on them are reported at every checkpoint. ``size`` is the
    side of the square training crops, ``style_size`` the long side of the style images (it sets the
    size of the brush strokes). ``loss_options`` are the loss fields of ``Job`` (``style_weight``,
    ``losses={"meanstd": {...}}``, ``style_layers``, ...), with the same defaults as ``styleplug run``;
    ``network``, ``weights``, ``precision`` and ``network_options`` choose the engine, as for ``Engine``.

    If ``output`` exists: with the same styles, training resumes where it stopped; with new styles,
    they are added to the model and only their own parameters train (the others stay as they are).
    ``callback`` gets a ``TrainProgress`` after every step and may return False to stop; setting
    ``cancel`` stops as well. The model is saved then (on Ctrl-C too), and at every checkpoint, each
    time atomically; a run that fails, or trains no step, leaves the file as it was.
    """
    style_images = [load_image(style, f"style image {index + 1}") for index, style in enumerate(styles)]
    names = list(names) if names is not None else [Path(style).stem if isinstance(style, (str, Path)) else f"style{index + 1}"
                                                   for index, style in enumerate(styles)]
    if len(names) != len(style_images) or len(set(names)) != len(names):
        raise UsageError(f"give one distinct name per style image; got {names} for {len(style_images)} image(s).")
    for name, value, least in (("size", size, MIN_SIDE), ("steps", steps, 1), ("batch", batch, 1), ("style_size", style_size, 16),
                               ("held_out", held_out, 0), ("checkpoint_every", checkpoint_every, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UsageError(f"{name} must be a whole number >= {least}; got {value!r}.")
    sources = photo_files(photos) if isinstance(photos, (str, Path)) else list(photos)
    pictures = [load_image(source, f"photo {index + 1}") for index, source in enumerate(sources)]
    if len(pictures) <= held_out:
        raise UsageError(f"{len(pictures)} photo(s) and {held_out} held out leaves none to train on.")
    training, holdout = pictures[: len(pictures) - held_out], pictures[len(pictures) - held_out:]

    engine = Engine(network, weights, precision=precision, host=host, **(network_options or {}))
    terms = engine.terms(Job(content=pictures[0], style=style_images[0], **loss_options))
    for term in terms:
        if uses_old_contract(type(term.loss)):
            raise UsageError(f"loss '{term.loss.name}' is written to the old loss contract (set_target), which training "
                             "cannot use: its target must come from compute_target; see `styleplug docs contracts`.")
    model, trained = _model_to_train(Path(output), names, architecture, engine.precision)
    network = engine.feature_model([layer for term in terms for layer in term.loss.layers])
    features = engine.extractor(network)
    targets = _style_targets(terms, features, [resize_long_side(image, style_size) for image in style_images])
    trainer = _Trainer(model, terms, engine.stateless_extractor(network), network, targets, trained, learning_rate)

    crops = Crops(training, size, seed)
    held = ops.cast(ops.convert_to_tensor(centre_crops(holdout, size)), "float32") if holdout else None
    record = {
        "styleplug": styleplug_version(), "engine": engine.settings, "size": size, "batch": batch, "style_size": style_size,
        "learning_rate": learning_rate,
        "losses": {term.loss.name: {"weight": term.weight, **term.loss.get_config()} for term in terms},
        "styles": {**model.record.get("styles", {}), **{name: {"source": str(style) if isinstance(style, (str, Path)) else None,
                                                               "sha256": pixel_digest(image)}
                                                        for name, style, image in zip(names, styles, style_images)}},
        "photos": [str(source) if isinstance(source, (str, Path)) else None for source in sources[: len(training)]],
        "held_out": [str(source) if isinstance(source, (str, Path)) else None for source in sources[len(training):]],
    }
    first = done = int(model.record.get("steps", 0))
    started = time.perf_counter()
    with _cut_ahead(crops, batch) as batch_of:
        try:
            while done < steps and not (cancel is not None and cancel.is_set()):
                style = trained[done % len(trained)]
                values = trainer.step(batch_of(done), *_style_indices(model, names, style))
                done += 1
                progress = TrainProgress(done, steps, style, _report(terms, values), time.perf_counter() - started)
                if done % checkpoint_every == 0 or done == steps:
                    trainer.write_back()
                    progress.held_out = _held_out(model, terms, features, targets, held, names, style) if held is not None else None
                    _save(model, output, record, done, progress)
                if callback is not None and callback(progress) is False:
                    break
        except KeyboardInterrupt:  # Ctrl-C keeps the steps trained so far; a failure keeps the file as it was
            if done > first:
                trainer.write_back()
                _save(model, output, record, done, None)
            raise
    if done > first:
        trainer.write_back()
        _save(model, output, record, done, None)
    return model


def _style_indices(model: StyleModel, names: list[str], style: str) -> tuple[Any, Any]:
    """Where ``style`` is among the model's styles (its normalisation parameters) and among this
    run's style images (its targets): they differ when a run names only some of the model's styles."""
    return ops.convert_to_tensor(model.styles.index(style), "int32"), ops.convert_to_tensor(names.index(style), "int32")


def _model_to_train(output: Path, names: list[str], architecture: Architecture, precision: str) -> tuple[StyleModel, list[str]]:
    """The model to train and the styles to train in it: a new one; the one at ``output`` to resume
    (same styles); or that one extended with the new styles, which alone are trained."""
    if not output.exists():
        return StyleModel.new(names, architecture, precision), names
    existing = StyleModel.load(output, precision)
    new = [name for name in names if name not in existing.styles]
    if not new:
        return existing, names
    grown = StyleModel.new([*existing.styles, *new], existing.architecture, precision)
    old = {variable.path: variable for variable in existing.transformer.weights}
    for variable in grown.transformer.weights:
        layer, _, leaf = variable.path.rpartition("/")
        kind, _, index = leaf.rpartition("_")
        if variable.path in old:
            variable.assign(old[variable.path])
        elif kind in ("scale", "shift") and int(index) >= len(existing.styles):
            # A new style starts from the mean of the trained ones.
            variable.assign(np.mean([old[f"{layer}/{kind}_{i}"] for i in range(len(existing.styles))], axis=0))
    grown.record = existing.record
    return grown, new


def _style_targets(terms: list[Term], features: Callable[[Any], Any], styles: list[Image.Image]) -> list[Any]:
    """For each term, its target per style stacked on a new first axis (None for content and regularizer terms)."""
    outputs = [features(ops.convert_to_tensor(np.asarray(image, np.float32)[None])) for image in styles]
    stacked = []
    for term in terms:
        if term.loss.role != "style":
            stacked.append(None)
            continue
        per_style = [term.loss.compute_target({layer: output[layer] for layer in term.loss.layers}) for output in outputs]
        stacked.append(keras.tree.map_structure(lambda *values: ops.stack(values), *per_style))
    return stacked


def _losses(terms: list[Term], features: Callable[[Any], Any], targets: list[Any], painter: Callable[[Any, Any], Any],
            photos: Any, style_index: Any, target_index: Any, styles: int) -> Any:
    """Each weighted term for a batch of photos painted in one style: the model's style
    ``style_index``, whose targets are at ``target_index`` among this run's styles.
    ``painter(photos, style_weights)`` runs the transformer, ``features(images)`` the network."""
    weights = ops.one_hot(ops.full(ops.shape(photos)[:1], style_index, "int32"), styles)
    painted = painter(photos, weights)
    both = features(ops.concatenate([painted, photos], 0))  # one pass of the feature network for both
    count = ops.shape(photos)[0]
    values = []
    for term, target in zip(terms, targets):
        own = {layer: both[layer][:count] for layer in term.loss.layers}
        if term.loss.role == "content":
            target = term.loss.compute_target({layer: ops.stop_gradient(both[layer][count:]) for layer in term.loss.layers})
        elif target is not None:
            target = keras.tree.map_structure(lambda stacked: ops.take(stacked, target_index, axis=0), target)
        values.append(term.weight * ops.cast(term.loss.call(own, painted, target), "float32"))
    return ops.stack(values)


class _Trainer:
    """The compiled training step: Adam on every weight, or only on the trained styles' own
    normalisation parameters when styles are added to a trained model. The weights and the
    optimiser's state stay in tensors between steps (on the device); ``write_back`` puts the
    weights into the model before it is saved or judged."""

    def __init__(self, model: StyleModel, terms: list[Term], features: Callable[[Any, Any], Any], network: Any,
                 targets: list[Any], trained: list[str], learning_rate: float) -> None:
        transformer, count = model.transformer, len(model.styles)
        own = {f"scale_{model.styles.index(name)}" for name in trained} | {f"shift_{model.styles.index(name)}" for name in trained}
        self.variables = transformer.trainable_variables
        self.trained = [index for index, variable in enumerate(self.variables)
                        if trained == model.styles or variable.path.rpartition("/")[2] in own]
        # What the step reads but never changes, as arguments (not constants baked into the compiled
        # step): the transformer's weights (those trained are replaced by the state's), its other
        # variables, and the feature network's.
        self.fixed = ([v.value for v in self.variables], [v.value for v in transformer.non_trainable_variables],
                      ([v.value for v in network.trainable_variables], [v.value for v in network.non_trainable_variables]))

        def objective(trained_values: list[Any], fixed: tuple[Any, Any, Any], photos: Any, style_index: Any,
                      target_index: Any) -> Any:
            values, others, network_values = list(fixed[0]), fixed[1], fixed[2]
            for index, value in zip(self.trained, trained_values):
                values[index] = value

            def painter(images: Any, weights: Any) -> Any:
                return transformer.stateless_call(values, others, [images, weights], training=True)[0]

            per_term = _losses(terms, lambda images: features(images, network_values)[0], targets, painter, photos,
                               style_index, target_index, count)
            return ops.sum(per_term), per_term

        gradient = backends.current().value_and_grad(objective)

        def step(state: dict[str, Any], fixed: tuple[Any, Any, Any], photos: Any, style_index: Any,
                 target_index: Any) -> tuple[Any, Any]:
            _, per_term, gradients = gradient(state["weights"], fixed, photos, style_index, target_index)
            return _adam(state, gradients, learning_rate), per_term

        self.compiled = backends.current().compile(step, jit_compile=False, donate=(0,))
        weights = [ops.copy(self.variables[index].value) for index in self.trained]
        self.state = {"weights": weights, "m": [ops.zeros_like(w) for w in weights], "v": [ops.zeros_like(w) for w in weights],
                      "t": ops.convert_to_tensor(0.0, "float32")}

    def step(self, photos: Any, style_index: Any, target_index: Any) -> Any:
        """One Adam step on a batch of ``photos``; each weighted term before the step."""
        self.state, values = self.compiled(self.state, self.fixed, photos, style_index, target_index)
        return values

    def write_back(self) -> None:
        for index, value in zip(self.trained, self.state["weights"]):
            self.variables[index].assign(value)


def _adam(state: dict[str, Any], gradients: list[Any], learning_rate: float, beta1: float = 0.9, beta2: float = 0.999,
          epsilon: float = 1e-7) -> dict[str, Any]:
    """One Adam step (Kingma & Ba 2014, with Keras's defaults) on a list of weights, as a pure
    function of tensors: the same on every backend (Keras's own optimisers keep state in variables
    on TensorFlow, which a compiled step cannot return)."""
    t = state["t"] + 1.0
    m = [beta1 * m + (1 - beta1) * g for m, g in zip(state["m"], gradients)]
    v = [beta2 * v + (1 - beta2) * ops.square(g) for v, g in zip(state["v"], gradients)]
    rate = learning_rate * ops.sqrt(1 - ops.power(beta2, t)) / (1 - ops.power(beta1, t))
    weights = [w - rate * m_ / (ops.sqrt(v_) + epsilon) for w, m_, v_ in zip(state["weights"], m, v)]
    return {"weights": weights, "m": m, "v": v, "t": t}


def _held_out(model: StyleModel, terms: list[Term], features: Callable[[Any], Any], targets: list[Any], photos: Any,
              names: list[str], style: str) -> dict[str, float]:
    def painter(images: Any, weights: Any) -> Any:
        return model.transformer([images, weights], training=False)

    values = _losses(terms, features, targets, painter, photos, *_style_indices(model, names, style), len(model.styles))
    return _report(terms, values)


def _report(terms: list[Term], values: Any) -> dict[str, float]:
    values = ops.convert_to_numpy(values)
    report = {term.loss.name: float(value) for term, value in zip(terms, values)}
    report["total"] = float(np.sum(values))
    if not math.isfinite(report["total"]):
        raise UsageError(f"the training loss became NaN or infinite ({report}); lower the learning rate or the weights.")
    return report


def _save(model: StyleModel, output: str | Path, record: dict[str, Any], steps: int, progress: TrainProgress | None) -> None:
    last = ({"training_losses": progress.losses, "held_out_losses": progress.held_out} if progress and progress.held_out
            else {key: model.record[key] for key in ("training_losses", "held_out_losses") if key in model.record})
    model.record = {**record, "steps": steps, **last}
    model.save(output)
