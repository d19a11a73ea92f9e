"""Optimisers over the image, written as pure functions of their state (a dict of tensors, built
with ``keras.ops`` alone), so that a whole chunk of steps runs inside one compiled function on any
Keras backend with no host round trip, and the state never leaves the device.

Both optimisers are safeguarded: a step is *accepted* only when the loss at the point it reached
is at most ``1 + ACCEPT_RISE`` times the loss at the last accepted point. A rejected step is
taken again from the last accepted point at half the length (a backtracking line search spread
over steps: one loss evaluation per step, no host round trip). So the loss of accepted points can
never blow up, whatever the precision of the network: under bfloat16 the gradients carry relative
rounding noise of about 2^-8, which once sent the unguarded L-BFGS far off.

L-BFGS takes the full curvature-scaled step when it is accepted, like the reference
implementations of neural style transfer (jcjohnson/neural-style, pystiche); the safeguard only
acts when that step overshoots.
"""

from __future__ import annotations

from typing import Any

from . import backends
from ..lazy import ops

#: A step is accepted when its loss is at most (1 + ACCEPT_RISE) times the last accepted loss.
ACCEPT_RISE = 1e-3
#: Relative size of the gradient noise each network precision adds (the unit roundoff).
GRADIENT_NOISE = {"float32": 2.0**-24, "bfloat16": 2.0**-8}
#: The first step moves pixels by this much (RMS, in 0..255 units): large enough that the first
#: curvature pair measures curvature, not rounding noise. While L-BFGS has no curvature pair (the
#: loss is not convex everywhere), each accepted step along the gradient doubles the next one, up
#: to MAX_GRADIENT_STEP_RMS; rejections halve it.
FIRST_STEP_RMS = 1.0
MAX_GRADIENT_STEP_RMS = 64.0
#: After this many halvings in a row, L-BFGS forgets its history and restarts along the gradient.
RESET_AFTER_HALVINGS = 3

State = dict[str, Any]


def pair_layout() -> str:
    """How L-BFGS keeps its curvature pairs on the current backend, which decides the layout of its
    state (and of a checkpoint of it). Where the backend writes a compiled update into the donated
    buffers (JAX): ``"ring"``, rows of one (history, size) array, a new pair written over the oldest
    in place. Where it cannot (TensorFlow), writing one row would copy the whole array: ``"rows"``,
    each pair's vectors tensors of their own, newest first, so that storing a pair passes the
    others on unchanged (a 4096 px job in tiles, history 5: 1.4 GiB less at its peak)."""
    return "ring" if backends.current().REUSES_DONATED else "rows"


def _gradient_step(gradient: Any, length: Any) -> Any:
    """A step along ``-gradient`` that moves pixels by ``length`` (root mean square)."""
    rms = ops.sqrt(ops.mean(ops.square(gradient)))
    return -gradient * (length / (rms + 1e-30))


def _scalar(value: float | int, dtype: str = "float32") -> Any:
    return ops.convert_to_tensor(value, dtype=dtype)


class _Safeguarded:
    """The accept/reject bookkeeping shared by both optimisers, over a flat vector of ``size`` elements.

    ``step(state, x, loss, gradient)`` receives the loss and gradient at ``x``. If the loss is
    acceptable, ``x`` becomes the new accepted point and the subclass's ``_advance`` proposes the
    next move; otherwise the last move is halved. Either way the next point is the accepted point
    plus ``scale`` times the proposed move, clipped to valid pixels (0..255), so that the loss
    being minimised is the loss of the image delivered. Conditions become ``ops.cond`` (one branch
    runs) or ``ops.where``, so one step is one traced program on every backend.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def initial(self, x: Any) -> State:
        """The state of a new run starting at the flat ``x``."""
        # Every entry its own buffer: a compiled chunk may update them in place.
        return {"accepted_x": ops.reshape(ops.copy(ops.cast(x, "float32")), (-1,)),
                "move": ops.zeros((self.size,), "float32"),  # the proposed move from accepted_x, at scale 1
                "accepted_loss": _scalar(float("inf")), "scale": _scalar(1.0),
                "halvings": _scalar(0, "int32")}  # rejections since the last accepted step

    def step(self, state: State, x: Any, loss: Any, gradient: Any) -> tuple[State, Any, Any]:
        """One step from the loss and gradient at the flat ``x``: the new state, the next point,
        and whether ``x`` was accepted."""
        first = ops.isinf(state["accepted_loss"])
        # Written so that a NaN loss is rejected (every comparison with NaN is false).
        accepted = ops.logical_and(ops.logical_or(first, loss <= (1.0 + ACCEPT_RISE) * state["accepted_loss"]),
                                   ops.isfinite(loss))

        def accept() -> State:
            advanced = self._advance(state, x, gradient, first)
            return {**advanced, "accepted_x": x, "accepted_loss": ops.cast(loss, "float32"), "halvings": _scalar(0, "int32")}

        def reject() -> State:
            halved = {**state, "halvings": state["halvings"] + 1, "scale": state["scale"] * 0.5}
            return self._rejected(halved)

        state = ops.cond(accepted, accept, reject)
        return state, ops.clip(state["accepted_x"] + state["scale"] * state["move"], 0.0, 255.0), accepted

    def _advance(self, state: State, x: Any, g: Any, first: Any) -> State:
        raise NotImplementedError

    def _rejected(self, state: State) -> State:
        """Called after the scale was halved; may change the move instead."""
        return state


class LBFGS(_Safeguarded):
    """Limited-memory BFGS over ``size`` elements, keeping ``history`` pairs for the whole run,
    safeguarded (see the module docstring). ``gradient_noise`` is the relative noise of the
    gradients (``GRADIENT_NOISE`` of the network's precision): a curvature pair whose gradient
    change is not well above it is noise, and is not kept."""

    def __init__(self, size: int, history: int = 20, learning_rate: float = 1.0, gradient_noise: float = 0.0) -> None:
        super().__init__(size)
        self.history, self.learning_rate, self.gradient_noise = history, learning_rate, gradient_noise
        self.in_rows = pair_layout() == "rows"

    def initial(self, x: Any) -> State:
        if self.in_rows:  # each row a buffer of its own
            pairs = {name: tuple(ops.zeros((self.size,), "float32") for _ in range(self.history)) for name in ("s", "y")}
        else:
            pairs = {name: ops.zeros((self.history, self.size), "float32") for name in ("s", "y")}
            pairs["head"] = _scalar(0, "int32")  # the ring's slot for the next pair
        return {**super().initial(x), **pairs, "rho": ops.zeros((self.history,), "float32"),
                "count": _scalar(0, "int32"),  # stored pairs, at most `history`
                "accepted_g": ops.zeros((self.size,), "float32"), "gradient_step_rms": _scalar(FIRST_STEP_RMS)}

    def _pair(self, state: State, age: int) -> tuple[Any, Any, Any]:
        """The ``age``-th newest pair's s, y and 1/(y·s) (age 0: the newest)."""
        if self.in_rows:
            return state["s"][age], state["y"][age], state["rho"][age]
        slot = (state["head"] - 1 - age) % self.history
        return ops.take(state["s"], slot, axis=0), ops.take(state["y"], slot, axis=0), ops.take(state["rho"], slot)

    def _stored(self, state: State, s: Any, y: Any, ys: Any) -> State:
        """``state`` with ``(s, y)`` as its newest pair, over the oldest when the history is full."""
        rho = ops.reshape(1.0 / ys, (1,))
        count = ops.minimum(state["count"] + 1, self.history)
        if self.in_rows:
            return {**state, "s": (s, *state["s"][:-1]), "y": (y, *state["y"][:-1]),
                    "rho": ops.concatenate([rho, state["rho"][:-1]]), "count": count}
        head = state["head"]
        return {**state, "s": ops.slice_update(state["s"], [head, 0], s[None]),
                "y": ops.slice_update(state["y"], [head, 0], y[None]), "rho": ops.slice_update(state["rho"], [head], rho),
                "head": (head + 1) % self.history, "count": count}

    def _advance(self, state: State, x: Any, g: Any, first: Any) -> State:
        s, y = x - state["accepted_x"], g - state["accepted_g"]
        ys = ops.sum(y * s)
        # Keep only pairs with positive curvature (so the inverse Hessian stays positive definite)
        # whose gradient change stands well above the gradient's rounding noise.
        keep = ops.logical_and(ops.logical_not(first), ops.logical_and(
            ys > 0.0, ops.norm(y) > 16.0 * self.gradient_noise * ops.norm(g)))

        state = ops.cond(keep, lambda: self._stored(state, s, y, ys), lambda: state)
        # The last step was along the gradient, at this length, and it was accepted: try twice as far.
        grows = ops.logical_and(state["count"] == 0, ops.logical_not(first))
        step_rms = ops.where(grows, ops.minimum(MAX_GRADIENT_STEP_RMS, 2.0 * state["scale"] * state["gradient_step_rms"]),
                             state["gradient_step_rms"])
        along_gradient = _gradient_step(g, step_rms)
        direction = ops.cond(state["count"] > 0, lambda: self._direction(state, g), lambda: along_gradient)
        descends = ops.sum(direction * g) < 0.0  # if not, forget the history
        return {**state, "count": ops.where(descends, state["count"], 0), "gradient_step_rms": step_rms,
                "accepted_g": g, "move": self.learning_rate * ops.where(descends, direction, along_gradient),
                "scale": _scalar(1.0)}

    def _rejected(self, state: State) -> State:
        # Halving a curvature step repeatedly means the curvature is wrong: restart along the gradient.
        restart = ops.logical_and(state["halvings"] >= RESET_AFTER_HALVINGS, state["count"] > 0)
        along_gradient = self.learning_rate * _gradient_step(state["accepted_g"], state["gradient_step_rms"])
        return {**state, "count": ops.where(restart, 0, state["count"]),
                "move": ops.where(restart, along_gradient, state["move"]),
                "scale": ops.where(restart, 1.0, state["scale"])}

    def _over_history(self, body: Any, carry: Any) -> Any:
        """``carry = body(i, carry)`` for i in 0 .. history - 1: unrolled over rows (a tuple is indexed
        by numbers known when tracing), one compiled loop over the ring (which then holds one row in
        hand at a time: unrolled, XLA took all ten at once, 1.1 GiB more at 4096 px)."""
        if self.in_rows:
            for i in range(self.history):
                carry = body(i, carry)
            return carry
        return ops.fori_loop(0, self.history, body, carry)

    def _direction(self, state: State, g: Any) -> Any:
        """The two-loop recursion: ``-H g`` with the stored pairs, newest first then oldest first.

        The loops run over the whole history and skip the slots holding no pair (``where``, so that
        stale values there cannot turn into NaN): XLA needs loop bounds known at compile time, and
        the extra work is a few vector operations per slot."""
        count = state["count"]

        def newest_first(age: Any, carry: tuple[Any, Any]) -> tuple[Any, Any]:
            q, alpha = carry
            s, y, rho = self._pair(state, age)
            a = ops.where(age < count, rho * ops.sum(s * q), 0.0)
            return q - a * y, ops.slice_update(alpha, [age], ops.reshape(a, (1,)))

        q, alpha = self._over_history(newest_first, (g, ops.zeros((self.history,), "float32")))
        _, y_newest, rho_newest = self._pair(state, 0)
        r = q / (rho_newest * ops.sum(y_newest * y_newest))  # q · (s·y)/(y·y)

        def oldest_first(i: Any, r: Any) -> Any:
            age = self.history - 1 - i
            s, y, rho = self._pair(state, age)
            b = rho * ops.sum(y * r)
            return r + ops.where(age < count, s * (ops.take(alpha, age) - b), 0.0)

        return -self._over_history(oldest_first, r)


class Adam(_Safeguarded):
    """Adam (Kingma & Ba 2014) over ``size`` elements, safeguarded (see the module docstring); after a
    rejection the step length recovers by doubling with each accepted step."""

    def __init__(self, size: int, learning_rate: float = 5.0, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8) -> None:
        super().__init__(size)
        self.learning_rate, self.beta1, self.beta2, self.epsilon = learning_rate, beta1, beta2, epsilon

    def initial(self, x: Any) -> State:
        return {**super().initial(x), "m": ops.zeros((self.size,), "float32"), "v": ops.zeros((self.size,), "float32"),
                "t": _scalar(0.0)}

    def _advance(self, state: State, x: Any, g: Any, first: Any) -> State:
        t = state["t"] + 1.0
        m = self.beta1 * state["m"] + (1 - self.beta1) * g
        v = self.beta2 * state["v"] + (1 - self.beta2) * ops.square(g)
        m_hat = m / (1 - ops.power(self.beta1, t))
        v_hat = v / (1 - ops.power(self.beta2, t))
        return {**state, "t": t, "m": m, "v": v, "move": -self.learning_rate * m_hat / (ops.sqrt(v_hat) + self.epsilon),
                "scale": ops.minimum(1.0, 2.0 * state["scale"])}
