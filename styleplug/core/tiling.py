"""Exact tiled optimisation: each step's loss and gradient over an image too large for one pass of
the feature network, computed tile by tile so that they equal the untiled ones (up to rounding).

Every feature loss of a tiled run declares ``tiling`` (see ``styleplug.Loss.tiling``): its value is
a function of sums over positions. One step then makes two passes over the tiles:

1. *gather*: each tile's *window* (the pixels it owns, its *core*, plus a *halo* as wide as the
   network's reach, so that the features at the core's positions are the untiled ones) goes
   forward through the network, and each loss sums its statistics over the core's positions. The
   tiles' sums add up to the image's.
2. *combine*: the losses from the sums, and their gradient with respect to the sums (small: Gram
   matrices, counts).
3. *scatter*: each window goes forward and backward again, the backward pass carrying that gradient
   from the core's sums to the window's pixels. The windows' gradients add up to the image's.

That is about one extra forward pass per step, plus the halo. The gathering pass keeps no
activations for a pass back, so it takes larger tiles where memory allows (fewer halos; the whole
image in one if it fits): any cut of the image gives the same sums. Pixel-space losses (total variation)
take the whole image at once: they need a few image-sized buffers, not the network's activations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import backends
from ..errors import UsageError
from ..lazy import keras, ops
from ..losses import Loss, uses_old_contract
from ..losses.functional import resize_to_grid
from .compiled import Stepper, StepResult, evaluate

if TYPE_CHECKING:
    from .engine import Term


@dataclass(frozen=True)
class Geometry:
    """How a feature network's layers sit over the pixels, which tiles must respect."""

    strides: Mapping[str, int]  # each layer's distance between positions, in pixels
    align: int  # tile edges fall on multiples of this (the largest stride), so every pooling window lines up
    halo: int  # context around a tile's inner edges: the deepest layer's reach, rounded up to ``align``


def network_geometry(model: Any, layers: Sequence[str], network: str) -> Geometry:
    """The ``Geometry`` of ``model``'s ``layers``, from its convolutions and poolings in order.

    A convolution with "same" padding reaches ``(kernel - 1) * dilation / 2`` positions to each
    side; a pooling window ``pool - 1`` (to one side: counted on both, which is safe); each at the
    stride of its input. Other layers are taken to work position by position."""
    stride, reach, strides = 1, 0, {}
    for layer in model.layers:
        kernel = getattr(layer, "kernel_size", None)
        window = kernel if kernel is not None else getattr(layer, "pool_size", None)
        if window is not None:
            if kernel is not None and getattr(layer, "padding", "same") != "same":
                raise UsageError(f"network '{network}' has a convolution with {layer.padding!r} padding ({layer.name}), "
                                 "which shifts its grids, so it cannot run tiled; use {tiling=off} or a smaller size.")
            dilation = getattr(layer, "dilation_rate", None) or (1,) * len(window)
            spread = [(size - 1) * rate for size, rate in zip(window, dilation)]
            reach += max(math.ceil(extent / 2) if kernel is not None else extent for extent in spread) * stride
            stride *= max(getattr(layer, "strides", None) or window)
        if layer.name in layers:
            strides[layer.name] = stride
    missing = [layer for layer in layers if layer not in strides]
    if missing:
        raise UsageError(f"network '{network}' has no layer named {missing[0]!r} in its model, so its grid is unknown "
                         "and it cannot run tiled; use {tiling=off} or a smaller size.")
    align = max(strides.values())
    return Geometry(strides, align, math.ceil(reach / align) * align)


@dataclass(frozen=True)
class Tile:
    """One tile: the pixels it owns and the window (with its halo) that goes through the network,
    each as ``(top, bottom, left, right)``."""

    core: tuple[int, int, int, int]
    window: tuple[int, int, int, int]

    @property
    def window_size(self) -> tuple[int, int]:
        """The window's height and width."""
        top, bottom, left, right = self.window
        return bottom - top, right - left

    @property
    def shape_key(self) -> tuple[int, ...]:
        """What the tile's compiled programs depend on: the window's size and the core's (where the
        core sits in the window is an argument: ``offsets``)."""
        top, bottom, left, right = self.core
        return (*self.window_size, bottom - top, right - left)

    def offsets(self, stride: int) -> list[int]:
        """Where the core starts in the window's grid at ``stride``, as the start of a slice of ``(1, H, W, C)`` features."""
        rows, columns = self.grid(stride)
        return [0, rows.start, columns.start, 0]

    def grid(self, stride: int) -> tuple[slice, slice]:
        """The core's positions in the window's grid at ``stride``: window and core start on
        multiples of every stride, and the pooling grids floor where the image ends."""
        top, _, left, _ = self.window
        return (slice((self.core[0] - top) // stride, (self.core[1] - top) // stride),
                slice((self.core[2] - left) // stride, (self.core[3] - left) // stride))

    def full_grid(self, stride: int) -> tuple[slice, slice]:
        """The core's positions in the whole image's grid at ``stride``."""
        return (slice(self.core[0] // stride, self.core[1] // stride), slice(self.core[2] // stride, self.core[3] // stride))

    def window_of(self, image: Any) -> Any:
        """The window's pixels of an ``(N, H, W, 3)`` image."""
        top, bottom, left, right = self.window
        return image[:, top:bottom, left:right, :]

    def cores(self, features: Mapping[str, Any], layers: Iterable[str], geometry: Geometry,
              offsets: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The window's ``features`` at ``layers``, cropped to the core's positions; with ``offsets``
        (each layer's slice start, tensors in a program that serves every tile of this window and
        core size), to a core of this one's size starting there."""
        def core(layer: str) -> Any:
            stride = geometry.strides[layer]
            rows, columns = self.grid(stride)
            shape = (1, rows.stop - rows.start, columns.stop - columns.start, features[layer].shape[-1])
            return ops.slice(features[layer], self.offsets(stride) if offsets is None else offsets[layer], shape)
        return {layer: core(layer) for layer in layers}


def _spans(length: int, side: int, geometry: Geometry, uniform: bool) -> list[tuple[int, int, int, int]]:
    """``(core start, core end, window start, window end)`` along one axis: cores of about ``side``
    pixels (multiples of ``align``, the last one taking what is left), windows with the halo. With
    ``uniform``, the windows at the image's edges are as long as the others, reaching further inside
    (more context than the core needs, the same features), so that they share one shape."""
    count = math.ceil(length / side)
    size = math.ceil(length / count / geometry.align) * geometry.align
    spans = []
    for start in range(0, length, size):
        end, low, high = min(start + size, length), start - geometry.halo, start + size + geometry.halo
        if uniform:  # the last window starts on the grid too: a shorter one if the image's end is not on it
            low = min(low, (length - (size + 2 * geometry.halo)) // geometry.align * geometry.align)
            high = max(high, max(0, low) + size + 2 * geometry.halo)
        spans.append((start, end, max(0, low), min(length, high)))
    return spans


def plan_tiles(height: int, width: int, side: int, geometry: Geometry, uniform: bool = False) -> list[Tile]:
    """Tiles of about ``side`` x ``side`` core pixels covering a ``height`` x ``width`` image, row by
    row; with ``uniform``, windows of one shape wherever the image allows (see ``_spans``)."""
    if side < geometry.align:
        raise UsageError(f"a tile side of {side} px is below this network's {geometry.align} px grid; use a larger {{tile_size}}.")
    return [Tile((top, bottom, left, right), (window_top, window_bottom, window_left, window_right))
            for top, bottom, window_top, window_bottom in _spans(height, side, geometry, uniform)
            for left, right, window_left, window_right in _spans(width, side, geometry, uniform)]


def window_shapes(tiles: list[Tile]) -> int:
    """How many window and core sizes ``tiles`` have: a gather and a scatter program to compile for each."""
    return len({tile.shape_key for tile in tiles})


def runs_in_tiles(cls: type[Loss]) -> bool:
    """Whether a tiled run can compute this loss exactly: it works on pixels (computed on the whole image)
    or declares a ``tiling`` with ``sums`` and ``from_sums``."""
    return not cls.uses_features or (cls.tiling is not None and not uses_old_contract(cls))


def check_tileable(terms: list[Term]) -> None:
    """Refuse, in one line, a feature loss that a tiled run cannot compute exactly."""
    for term in terms:
        if not runs_in_tiles(type(term.loss)):
            raise UsageError(f"loss '{term.loss.name}' ({term.provider}) does not declare how to run tiled (its tiling is None), "
                             "and this job is too large for one pass; use a smaller {size} or {max_memory} above the "
                             "estimate, or ask its author for sums and from_sums (see `styleplug docs contracts`).")


def _crop(value: Any, rows: slice, columns: slice) -> Any:
    return value[:, rows, columns, :]


def _tile_cores(extract: Callable[[Any], Mapping[str, Any]], image: np.ndarray, layers: Iterable[str], tiles: list[Tile],
                geometry: Geometry) -> Iterator[tuple[Tile, dict[str, Any]]]:
    """Each tile with its core's features at ``layers`` of a ``(1, H, W, 3)`` image (its window through ``extract``)."""
    for tile in tiles:
        yield tile, tile.cores(extract(ops.convert_to_tensor(tile.window_of(image))), layers, geometry)


def tiled_features(extract: Callable[[Any], Mapping[str, Any]], image: np.ndarray, layers: Sequence[str],
                   tiles: list[Tile], geometry: Geometry) -> dict[str, np.ndarray]:
    """``{layer: features}`` of a ``(1, H, W, 3)`` image, assembled from its tiles' cores (each a
    window through ``extract``): the untiled features, without the untiled pass's memory."""
    assembled: dict[str, np.ndarray] = {}
    for tile, cores in _tile_cores(extract, image, layers, tiles, geometry):
        for layer, core in cores.items():
            stride, core = geometry.strides[layer], ops.convert_to_numpy(core)
            if layer not in assembled:
                grid = (image.shape[1] // stride, image.shape[2] // stride)
                assembled[layer] = np.zeros((1, *grid, core.shape[-1]), core.dtype)
            assembled[layer][(slice(None), *tile.full_grid(stride))] = core
    return assembled


def tiled_sums(loss: Any, extract: Callable[[Any], Mapping[str, Any]], image: np.ndarray, tiles: list[Tile],
               geometry: Geometry) -> Any:
    """A ``"statistics"`` loss's sums over a ``(1, H, W, 3)`` image (its target, when the image is
    the reference), gathered tile by tile."""
    total = None
    for _, cores in _tile_cores(extract, image, loss.layers, tiles, geometry):
        sums = loss.sums(cores, None)
        total = sums if total is None else keras.tree.map_structure(ops.add, total, sums)
    return total


def _weighted_total(values: list[Any]) -> tuple[Any, Any]:
    """The sum of weighted terms, and the terms as one vector (empty when there are none)."""
    stacked = ops.stack(values) if values else ops.zeros((0,), "float32")
    return ops.sum(stacked), stacked


class TiledStep(Stepper):
    """A job's steps over tiles (see the module docstring), with the same state and reports as
    ``CompiledStep``. Each program (a tile's gather and scatter, for each window shape; the
    combination; the pixel losses; the optimiser's step) is compiled once and reused by later jobs
    of the same signature."""

    def __init__(self, model: Any, features: Callable[[Any, Any], tuple[Mapping[str, Any], Any]], terms: list[Term],
                 start: np.ndarray, optimizer: str, rate: float, history: int, precision: str, jit_compile: bool,
                 geometry: Geometry, tiles: list[Tile], gather_tiles: list[Tile]) -> None:
        """``tiles`` cut the image for the pass back; ``gather_tiles`` for the gathering pass, which
        goes forward only and can take larger ones in the same memory."""
        self.geometry, self.tiles, self.gather_tiles = geometry, tiles, gather_tiles
        self.feature_terms = [index for index, term in enumerate(terms) if term.loss.uses_features]
        self.pixel_terms = [index for index, term in enumerate(terms) if not term.loss.uses_features]
        self.feature_layers = {layer for index in self.feature_terms for layer in terms[index].loss.layers}
        super().__init__(model, terms, start, optimizer, rate, history, precision)
        self.features, self.jit_compile = features, jit_compile
        backend = backends.current()
        self._programs: dict[tuple[Any, ...], Callable[..., Any]] = {}
        self._combine = backend.compile(self._counted(backend.value_and_grad(self._from_sums)), jit_compile)
        self._pixels = backend.compile(self._counted(backend.value_and_grad(self._pixel_losses)), jit_compile)
        # The optimiser's update as TensorFlow's graph, not XLA, which writes every result anew (a
        # 4096 px state of 2.25 GiB, history 5, copied at every step): the graph passes on the
        # L-BFGS rows it does not change. The update alone peaked 1.6 GiB above its state against 3.3.
        self._advance = backend.compile(self._counted(self.advance), jit_compile, donate=(0, 1))

    def _counted(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def traced(*args: Any) -> Any:
            self.traced += 1  # runs only while the backend traces
            return fn(*args)
        return traced

    def load(self, terms: list[Term], start: np.ndarray) -> None:
        super().load(terms, start)
        # The masks at each layer's grid, whole: each tile's part is cut when its pass runs.
        self.mask_grids = {index: {layer: ops.convert_to_numpy(resize_to_grid(terms[index].mask[None, :, :, None],
                                                                              *self._grid(start, layer)))
                                   for layer in terms[index].loss.layers}
                           for index in self.feature_terms if terms[index].mask is not None}

    def _tile_inputs(self, tile: Tile) -> tuple[list[Any], list[Any], dict[str, Any]]:
        """What ``tile``'s programs take of the job: a "positions" loss's target cut to the tile's
        core, the masks likewise; for the others, the whole target; and where the core starts in the
        window's grid at each layer. Cut when the pass runs, not kept: every tile's part of a content
        target would hold the whole target again (400 MB at 4096 px)."""
        targets, masks = [], []
        for index in self.feature_terms:
            term, target = self.terms[index], self.constants["targets"][index]
            if term.loss.tiling == "positions":
                target = {layer: _crop(target[layer], *tile.full_grid(self.geometry.strides[layer])) for layer in target}
            targets.append(target)
            masks.append(None if index not in self.mask_grids else {
                layer: ops.convert_to_tensor(_crop(grid, *tile.full_grid(self.geometry.strides[layer])))
                for layer, grid in self.mask_grids[index].items()})
        offsets = {layer: ops.convert_to_tensor(tile.offsets(self.geometry.strides[layer]), "int32")
                   for layer in self.feature_layers}
        return targets, masks, offsets

    def _grid(self, start: np.ndarray, layer: str) -> tuple[int, int]:
        stride = self.geometry.strides[layer]
        return start.shape[1] // stride, start.shape[2] // stride

    def _tile_sums(self, tile: Tile, window: Any, network: tuple[Any, Any], targets: list[Any], masks: list[Any],
                   offsets: Mapping[str, Any]) -> list[Any]:
        """Each feature loss's sums over a core of ``tile``'s size at ``offsets`` in the ``window`` of pixels
        (an argument, not a constant: one program serves every tile of that window and core size)."""
        features, _ = self.features(window, network)
        return [self.terms[index].loss.sums(tile.cores(features, self.terms[index].loss.layers, self.geometry, offsets),
                                            target, mask)
                for index, target, mask in zip(self.feature_terms, targets, masks)]

    def _program(self, kind: str, tile: Tile) -> Callable[..., Any]:
        """The compiled gather or scatter program for ``tile``'s window and core shape."""
        key = (kind, tile.shape_key)
        if key not in self._programs:
            backend = backends.current()
            if kind == "gather":
                program = lambda window, network, targets, masks, offsets: self._tile_sums(tile, window, network, targets, masks,
                                                                                           offsets)
            else:
                def surrogate(window: Any, network: Any, targets: Any, masks: Any, offsets: Any,
                              cotangents: Any) -> tuple[Any, Any]:
                    sums = keras.tree.flatten(self._tile_sums(tile, window, network, targets, masks, offsets))
                    return sum(ops.sum(value * cotangent) for value, cotangent in zip(sums, keras.tree.flatten(cotangents))), None

                gradient = backend.value_and_grad(surrogate)
                program = lambda *args: gradient(*args)[2]
            self._programs[key] = backend.compile(self._counted(program), self.jit_compile)
        return self._programs[key]

    def _from_sums(self, sums: list[Any], targets: list[Any], weights: Any) -> tuple[Any, Any]:
        return _weighted_total([ops.cast(self.terms[index].loss.from_sums(value, targets[index]), "float32") * weights[index]
                                for index, value in zip(self.feature_terms, sums)])

    def _pixel_losses(self, image: Any, targets: list[Any], weights: Any) -> tuple[Any, Any]:
        return _weighted_total([ops.cast(evaluate(self.terms[index], {}, image, targets[index], None), "float32") * weights[index]
                                for index in self.pixel_terms])

    def iter_run(self, count: int, cancel: Any = None,
                 report: Callable[[tuple[int, int], int], Any] = lambda tile, steps: tile) -> Iterator[Any]:
        """Run ``count`` steps, yielding ``report((tile passes done, of), steps done)`` within each
        step; return (as a generator does) the ``StepResult``. With ``cancel`` set, stop between
        tiles: the step in progress is dropped, the state stays at the last whole step."""
        totals, accepted, last = [], [], np.zeros(len(self.terms), np.float32)
        for _ in range(count):
            evaluated = yield from self.iter_evaluate(self.carry["image"], cancel, lambda tile: report(tile, len(totals)))
            if evaluated is None:
                break
            total, values, gradient = evaluated
            self.carry, self.best, took = self._advance(self.carry, self.best, total, ops.convert_to_tensor(values), gradient)
            totals.append(float(total))
            accepted.append(bool(ops.convert_to_numpy(took)))
            last = values
        return StepResult(ops.convert_to_numpy(self.carry["accepted_values"]), last, np.asarray(totals, np.float32),
                          np.asarray(accepted, bool))

    def iter_evaluate(self, image: Any, cancel: Any = None,
                      report: Callable[[tuple[int, int]], Any] = lambda tile: tile) -> Iterator[Any]:
        """The total loss at ``image``, each weighted term (numpy) and the gradient, tile by tile,
        yielding ``report((tile passes done, of))``; return (as a generator does) the three, or None
        when ``cancel`` was set between two tiles."""
        network = ([variable.value for variable in self.model.trainable_variables],
                   [variable.value for variable in self.model.non_trainable_variables])
        targets, weights = self.constants["targets"], self.constants["weights"]
        passes = len(self.gather_tiles) + len(self.tiles)
        sums = None
        for done, tile in enumerate(self.gather_tiles, start=1):
            if cancel is not None and cancel.is_set():
                return None
            part = self._program("gather", tile)(tile.window_of(image), network, *self._tile_inputs(tile))
            sums = part if sums is None else keras.tree.map_structure(ops.add, sums, part)
            yield report((done, passes))
        feature_total, feature_values, cotangents = self._combine(sums or [], targets, weights)
        gradient = ops.zeros_like(image)
        for done, tile in enumerate(self.tiles, start=len(self.gather_tiles) + 1):
            if cancel is not None and cancel.is_set():
                return None
            part = self._program("scatter", tile)(tile.window_of(image), network, *self._tile_inputs(tile), cotangents)
            start = (0, tile.window[0], tile.window[2], 0)
            gradient = ops.slice_update(gradient, start, ops.slice(gradient, start, ops.shape(part)) + part)
            yield report((done, passes))
        pixel_total, pixel_values, pixel_gradient = self._pixels(image, targets, weights)
        values = np.zeros(len(self.terms), np.float32)
        values[self.feature_terms] = ops.convert_to_numpy(feature_values)
        values[self.pixel_terms] = ops.convert_to_numpy(pixel_values)
        return feature_total + pixel_total, values, gradient + pixel_gradient

    def run(self, count: int) -> StepResult:
        return exhaust(self.iter_run(count))


def exhaust(generator: Iterator[Any]) -> Any:
    """Run ``generator`` to its end; return what it returned."""
    while True:
        try:
            next(generator)
        except StopIteration as finished:
            return finished.value
