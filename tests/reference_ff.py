"""Plain-numpy references of the kernels in ``mortal._kernels``.

Written from the kernels' docstrings as slow, obvious numpy, in float64
unless the docstring states float32 arithmetic (``smooth_step``).
``tests/test_ff_kernels.py`` compares the numba kernels with these.
"""

from __future__ import annotations

import numpy as np

#: Added to the RMS before dividing (Hinton's ``ffnormrows`` uses a tiny constant).
RMS_EPS = 1e-10


def rms_rows(a: np.ndarray) -> np.ndarray:
    """Root mean square of each row of ``a`` (float64), shape (batch, 1)."""
    a = np.asarray(a, np.float64)
    return np.sqrt(np.mean(a * a, axis=1, keepdims=True))


def measure_rows(y: np.ndarray, gain: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalized activities and goodness of measured outputs ``y``.

    Returns ``(out, goodness)``: float32 (batch, n) ``scale * a / (rms(a) + RMS_EPS)``
    and float64 (batch,) ``sum(a**2)``, with ``a = gain * y``.
    """
    a = gain * np.asarray(y, np.float64)
    goodness = np.sum(a * a, axis=1)
    out = scale * a / (rms_rows(a) + RMS_EPS)
    return out.astype(np.float32), goodness


def slope_lookup(y: np.ndarray, table: np.ndarray, bin_width: float) -> np.ndarray:
    """Relative slope of each unit at output ``y`` (batch, n) from ``table`` (n, k).

    Bin ``floor(y / bin_width)`` for ``y >= 0``, clipped to ``0..k-1``; outputs
    below zero use bin 0.  A table with ``k == 0`` means slope 1.
    """
    y = np.asarray(y, np.float64)
    n, k = table.shape
    if k == 0:
        return np.ones_like(y)
    idx = np.clip(np.floor(np.maximum(y, 0.0) / bin_width), 0, k - 1).astype(np.int64)
    return np.asarray(table, np.float64)[np.arange(n)[None, :], idx]


def ff_signal(y: np.ndarray, gain: float, coef: np.ndarray, table: np.ndarray, bin_width: float,
              peer: np.ndarray) -> np.ndarray:
    """``coef[b] * a * slope(y) + peer[j]`` with ``a = gain * y``; float32 (batch, n)."""
    y64 = np.asarray(y, np.float64)
    s = slope_lookup(y64, table, bin_width)
    out = np.asarray(coef, np.float64)[:, None] * gain * y64 * s + np.asarray(peer, np.float64)[None, :]
    return out.astype(np.float32)


def smooth_step(grad: np.ndarray, smooth: np.ndarray, shadow: np.ndarray, momentum: float, step: float,
                weight_cost: float, bias_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Momentum smoothing, weight cost and the wanted change, all float32.

    Returns new ``(smooth, shadow, delta)``; the inputs are not modified.
    Weights (all rows but the last): ``smooth' = m smooth + (1 - m) grad``,
    ``delta = step (smooth' - wc shadow)``, ``shadow' = shadow + delta``.
    Bias row: ``delta = float32(step * bias_scale) * smooth'``.
    """
    f = np.float32
    m, m1, st, wc = f(momentum), f(1.0 - momentum), f(step), f(weight_cost)
    g = np.asarray(grad, np.float32)
    new_smooth = m * np.asarray(smooth, np.float32) + m1 * g
    delta = np.empty_like(new_smooth)
    delta[:-1] = st * (new_smooth[:-1] - wc * np.asarray(shadow, np.float32))
    delta[-1] = f(step * bias_scale) * new_smooth[-1]
    new_shadow = np.asarray(shadow, np.float32) + delta[:-1]
    return new_smooth.astype(np.float32), new_shadow.astype(np.float32), delta.astype(np.float32)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, float64."""
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def ff_layer_gradient(h_pos: np.ndarray, y_pos: np.ndarray, h_neg: np.ndarray, y_neg: np.ndarray,
                      theta: float, peer: np.ndarray | None = None) -> np.ndarray:
    """Hinton's ffcode update direction for one ReLU layer (``ffnew.m``), float64.

    ``h`` are the layer's unit-RMS inputs (B, n_in), ``y`` its ReLU outputs
    (B, n_out).  Returns (n_in + 1, n_out): rows ``h+^T [(1 - p+) y+ + peer]
    - h-^T [p- y-]`` over the batch size, last row the same bracket summed
    (the bias), with ``p = sigmoid(sum(y**2) - theta)`` per sample.
    """
    y_pos = np.asarray(y_pos, np.float64)
    y_neg = np.asarray(y_neg, np.float64)
    p_pos = sigmoid((y_pos ** 2).sum(axis=1) - theta)
    p_neg = sigmoid((y_neg ** 2).sum(axis=1) - theta)
    sig_pos = (1.0 - p_pos)[:, None] * y_pos
    if peer is not None:
        sig_pos = sig_pos + np.asarray(peer, np.float64)[None, :]
    sig_neg = -p_neg[:, None] * y_neg
    batch = y_pos.shape[0]
    grad = np.empty((h_pos.shape[1] + 1, y_pos.shape[1]))
    grad[:-1] = (np.asarray(h_pos, np.float64).T @ sig_pos + np.asarray(h_neg, np.float64).T @ sig_neg) / batch
    grad[-1] = (sig_pos.sum(axis=0) + sig_neg.sum(axis=0)) / batch
    return grad


def accumulate_pulses(acc: np.ndarray, wanted: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Mixed-precision accumulation in float32: returns new ``(acc, send, count)``.

    ``a = acc + wanted``; ``send = trunc(a / step) * step``; ``acc = a - send``;
    ``count`` the number of non-zero entries of ``send``.
    """
    st = np.float32(step)
    a = np.asarray(acc, np.float32) + np.asarray(wanted, np.float32)
    send = (np.trunc(a / st) * st).astype(np.float32)
    return (a - send).astype(np.float32), send, int(np.count_nonzero(send))
