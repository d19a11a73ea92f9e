"""Optimisers over the image, with all state in ``tf.Variable``s so a whole chunk of steps runs
inside one compiled function with no host round trip.

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

from .lazy import tf

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


def _gradient_step(gradient: Any, length: Any) -> Any:
    """A step along ``-gradient`` that moves pixels by ``length`` (root mean square)."""
    rms = tf.sqrt(tf.reduce_mean(tf.square(gradient)))
    return -gradient * (length / (rms + 1e-30))


class _Safeguarded:
    """The accept/reject bookkeeping shared by both optimisers.

    ``step(x, loss, gradient)`` receives the loss and gradient at ``x``. If the loss is acceptable,
    ``x`` becomes the new accepted point and the subclass's ``_advance`` proposes the next move;
    otherwise the last move is halved. Either way ``x`` is then set to the accepted point plus
    ``scale`` times the proposed move, clipped to valid pixels (0..255), so that the loss being
    minimised is the loss of the image delivered.
    """

    def __init__(self, size: int) -> None:
        self.accepted_x = tf.Variable(tf.zeros((size,)), trainable=False)
        self.move = tf.Variable(tf.zeros((size,)), trainable=False)  # the proposed move from accepted_x, at scale 1
        self.accepted_loss = tf.Variable(float("inf"), trainable=False)
        self.scale = tf.Variable(1.0, trainable=False)
        self.halvings = tf.Variable(0, trainable=False)  # rejections since the last accepted step

    def reset(self, x: Any) -> None:
        """Start a new run from ``x`` (a compiled step is reused for later jobs)."""
        self.accepted_x.assign(tf.reshape(x, [-1]))
        self.move.assign(tf.zeros_like(self.move))
        self.accepted_loss.assign(float("inf"))
        self.scale.assign(1.0)
        self.halvings.assign(0)

    def step(self, x: Any, loss: Any, gradient: Any) -> Any:
        """Take one step from the loss and gradient at ``x``; return whether ``x`` was accepted."""
        flat_x, g = tf.reshape(x, [-1]), tf.reshape(gradient, [-1])
        # Written so that a NaN loss is rejected (every comparison with NaN is false).
        accepted = tf.logical_or(tf.math.is_inf(self.accepted_loss), loss <= (1.0 + ACCEPT_RISE) * self.accepted_loss)
        accepted = tf.logical_and(accepted, tf.math.is_finite(loss))
        if accepted:
            self._advance(flat_x, g, tf.math.is_inf(self.accepted_loss))
            self.accepted_x.assign(flat_x)
            self.accepted_loss.assign(loss)
            self.halvings.assign(0)
        else:
            self.halvings.assign_add(1)
            self.scale.assign(self.scale * 0.5)
            self._rejected()
        x.assign(tf.clip_by_value(tf.reshape(self.accepted_x + self.scale * self.move, tf.shape(x)), 0.0, 255.0))
        return accepted

    def _advance(self, x: Any, g: Any, first: Any) -> None:
        raise NotImplementedError

    def _rejected(self) -> None:
        """Called after the scale was halved; may change the move instead."""


class LBFGS(_Safeguarded):
    """Limited-memory BFGS over a variable of ``size`` elements, keeping ``history`` pairs for the whole
    run, safeguarded (see the module docstring). ``gradient_noise`` is the relative noise of the
    gradients (``GRADIENT_NOISE`` of the network's precision): a curvature pair whose gradient
    change is not well above it is noise, and is not kept."""

    def __init__(self, size: int, history: int = 20, learning_rate: float = 1.0, gradient_noise: float = 0.0) -> None:
        super().__init__(size)
        zeros = tf.zeros((history, size))
        self.history, self.learning_rate, self.gradient_noise = history, learning_rate, gradient_noise
        self.s, self.y = tf.Variable(zeros, trainable=False), tf.Variable(zeros, trainable=False)
        self.rho = tf.Variable(tf.zeros((history,)), trainable=False)
        self.alpha = tf.Variable(tf.zeros((history,)), trainable=False)
        self.count = tf.Variable(0, trainable=False)  # stored pairs, at most `history`
        self.head = tf.Variable(0, trainable=False)  # slot of the next pair
        self.accepted_g = tf.Variable(tf.zeros((size,)), trainable=False)
        self.gradient_step_rms = tf.Variable(FIRST_STEP_RMS, trainable=False)

    def reset(self, x: Any) -> None:
        super().reset(x)
        self.count.assign(0)
        self.head.assign(0)
        self.gradient_step_rms.assign(FIRST_STEP_RMS)

    def _advance(self, x: Any, g: Any, first: Any) -> None:
        if not first:
            s, y = x - self.accepted_x, g - self.accepted_g
            ys = tf.tensordot(y, s, 1)
            # Keep only pairs with positive curvature (so the inverse Hessian stays positive definite)
            # whose gradient change stands well above the gradient's rounding noise.
            if ys > 0.0 and tf.norm(y) > 16.0 * self.gradient_noise * tf.norm(g):
                slot = [[self.head]]
                self.s.scatter_nd_update(slot, [s])
                self.y.scatter_nd_update(slot, [y])
                self.rho.scatter_nd_update(slot, [1.0 / ys])
                self.head.assign((self.head + 1) % self.history)
                self.count.assign(tf.minimum(self.count + 1, self.history))
        if self.count > 0:
            direction = self._direction(g)
        else:
            if not first:  # the last step was along the gradient, at this length, and it was accepted
                self.gradient_step_rms.assign(tf.minimum(MAX_GRADIENT_STEP_RMS, 2.0 * self.scale * self.gradient_step_rms))
            direction = _gradient_step(g, self.gradient_step_rms)
        if tf.tensordot(direction, g, 1) >= 0.0:  # not a descent direction: forget the history
            self.count.assign(0)
            direction = _gradient_step(g, self.gradient_step_rms)
        self.accepted_g.assign(g)
        self.move.assign(self.learning_rate * direction)
        self.scale.assign(1.0)

    def _rejected(self) -> None:
        # Halving a curvature step repeatedly means the curvature is wrong: restart along the gradient.
        if self.halvings >= RESET_AFTER_HALVINGS and self.count > 0:
            self.count.assign(0)
            self.move.assign(self.learning_rate * _gradient_step(self.accepted_g, self.gradient_step_rms))
            self.scale.assign(1.0)

    def _direction(self, g: Any) -> Any:
        """The two-loop recursion: ``-H g`` with the stored pairs, newest first then oldest first.

        The loops run over the whole history and skip the slots holding no pair (tf.where, so that
        stale values there cannot turn into NaN): XLA needs loop bounds known at compile time, and
        the extra work is a few vector operations per slot."""
        q = g
        for i in tf.range(self.history):
            j = (self.head - 1 - i) % self.history
            a = tf.where(i < self.count, tf.gather(self.rho, j) * tf.tensordot(tf.gather(self.s, j), q, 1), 0.0)
            self.alpha.scatter_nd_update([[j]], [a])
            q -= a * tf.gather(self.y, j)
        newest = (self.head - 1) % self.history
        y_newest = tf.gather(self.y, newest)
        r = q / (tf.gather(self.rho, newest) * tf.tensordot(y_newest, y_newest, 1))  # q · (s·y)/(y·y)
        for i in tf.range(self.history):
            j = (self.head - self.count + i) % self.history
            b = tf.gather(self.rho, j) * tf.tensordot(tf.gather(self.y, j), r, 1)
            r += tf.where(i < self.count, tf.gather(self.s, j) * (tf.gather(self.alpha, j) - b), 0.0)
        return -r


class Adam(_Safeguarded):
    """Adam (Kingma & Ba 2014) over a variable of ``size`` elements, safeguarded (see the module docstring); after a
    rejection the step length recovers by doubling with each accepted step."""

    def __init__(self, size: int, learning_rate: float = 5.0, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8) -> None:
        super().__init__(size)
        self.learning_rate, self.beta1, self.beta2, self.epsilon = learning_rate, beta1, beta2, epsilon
        self.m = tf.Variable(tf.zeros((size,)), trainable=False)
        self.v = tf.Variable(tf.zeros((size,)), trainable=False)
        self.t = tf.Variable(0.0, trainable=False)

    def reset(self, x: Any) -> None:
        super().reset(x)
        self.m.assign(tf.zeros_like(self.m))
        self.v.assign(tf.zeros_like(self.v))
        self.t.assign(0.0)

    def _advance(self, x: Any, g: Any, first: Any) -> None:
        self.t.assign_add(1.0)
        self.m.assign(self.beta1 * self.m + (1 - self.beta1) * g)
        self.v.assign(self.beta2 * self.v + (1 - self.beta2) * tf.square(g))
        m_hat = self.m / (1 - self.beta1**self.t)
        v_hat = self.v / (1 - self.beta2**self.t)
        self.move.assign(-self.learning_rate * m_hat / (tf.sqrt(v_hat) + self.epsilon))
        self.scale.assign(tf.minimum(1.0, 2.0 * self.scale))
