"""Optimisers over the image, with all state in ``tf.Variable``s so a whole chunk of steps runs
inside one compiled function with no host round trip.

L-BFGS uses a fixed step and no line search, like the reference implementations of neural style
transfer (jcjohnson/neural-style, pystiche): for this smooth problem the curvature scaling of the
two-loop recursion already gives a well-sized step.
"""

from __future__ import annotations

from typing import Any

from .lazy import tf


def _first_step(gradient: Any) -> Any:
    # Without curvature information, take a step of at most one unit along the gradient
    # (the scaling torch.optim.LBFGS uses for its first iteration).
    return -gradient * tf.minimum(1.0, 1.0 / (tf.reduce_sum(tf.abs(gradient)) + 1e-12))


class LBFGS:
    """Limited-memory BFGS over a variable of ``size`` elements, keeping ``history`` pairs for the whole
    run; pixel values are clipped to 0..255 after each step."""

    def __init__(self, size: int, history: int = 20, learning_rate: float = 1.0) -> None:
        zeros = tf.zeros((history, size))
        self.history, self.learning_rate = history, learning_rate
        self.s, self.y = tf.Variable(zeros, trainable=False), tf.Variable(zeros, trainable=False)
        self.rho = tf.Variable(tf.zeros((history,)), trainable=False)
        self.alpha = tf.Variable(tf.zeros((history,)), trainable=False)
        self.count = tf.Variable(0, trainable=False)  # stored pairs, at most `history`
        self.head = tf.Variable(0, trainable=False)  # slot of the next pair
        self.previous_x = tf.Variable(tf.zeros((size,)), trainable=False)
        self.previous_g = tf.Variable(tf.zeros((size,)), trainable=False)
        self.started = tf.Variable(False, trainable=False)

    def step(self, x: Any, gradient: Any) -> None:
        """Move the variable ``x`` one step, given the gradient of the loss at ``x``."""
        flat_x, g = tf.reshape(x, [-1]), tf.reshape(gradient, [-1])
        if self.started:
            s, y = flat_x - self.previous_x, g - self.previous_g
            ys = tf.tensordot(y, s, 1)
            if ys > 1e-10:  # keep only pairs with positive curvature, so the inverse Hessian stays positive definite
                slot = [[self.head]]
                self.s.scatter_nd_update(slot, [s])
                self.y.scatter_nd_update(slot, [y])
                self.rho.scatter_nd_update(slot, [1.0 / ys])
                self.head.assign((self.head + 1) % self.history)
                self.count.assign(tf.minimum(self.count + 1, self.history))
        direction = self._direction(g) if self.count > 0 else _first_step(g)
        if tf.tensordot(direction, g, 1) >= 0.0:  # not a descent direction: forget the history
            self.count.assign(0)
            direction = _first_step(g)
        self.previous_x.assign(flat_x)
        self.previous_g.assign(g)
        self.started.assign(True)
        # Clipped to valid pixels, so that the loss being minimised is the loss of the image delivered;
        # the next pair's s is the move actually made, which keeps the curvature pairs consistent.
        x.assign(tf.clip_by_value(x + self.learning_rate * tf.reshape(direction, tf.shape(x)), 0.0, 255.0))

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


class Adam:
    """Adam (Kingma & Ba 2014) on pixel values, clipped to 0..255 after each step."""

    def __init__(self, shape: tuple[int, ...], learning_rate: float = 5.0, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8) -> None:
        self.learning_rate, self.beta1, self.beta2, self.epsilon = learning_rate, beta1, beta2, epsilon
        self.m = tf.Variable(tf.zeros(shape), trainable=False)
        self.v = tf.Variable(tf.zeros(shape), trainable=False)
        self.t = tf.Variable(0.0, trainable=False)

    def step(self, x: Any, gradient: Any) -> None:
        self.t.assign_add(1.0)
        self.m.assign(self.beta1 * self.m + (1 - self.beta1) * gradient)
        self.v.assign(self.beta2 * self.v + (1 - self.beta2) * tf.square(gradient))
        m_hat = self.m / (1 - self.beta1**self.t)
        v_hat = self.v / (1 - self.beta2**self.t)
        x.assign(tf.clip_by_value(x - self.learning_rate * m_hat / (tf.sqrt(v_hat) + self.epsilon), 0.0, 255.0))
