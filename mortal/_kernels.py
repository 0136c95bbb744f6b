"""Numba kernels of the Forward-Forward learner (controller-side arithmetic).

Private: ``mortal.ff`` validates inputs once and calls these.  References in
plain numpy live in ``tests/reference_ff.py``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Flags in one place (checked by a source scan in the tests): no fastmath, no cache.
FASTMATH = False
CACHE = False
_jit = numba.njit(fastmath=FASTMATH, cache=CACHE, nogil=True, error_model="numpy")

#: Added to the RMS before dividing (as in Hinton's ``ffnormrows``).
RMS_EPS = 1e-10


@_jit
def measure_rows(y, gain, out, scale, goodness):
    """Activities, goodness and the next layer's normalized input, in one pass.

    With ``gain = 1`` and ``scale = 1`` it is the RMS normalization of the raw input.

    y : float32 (batch, n)   measured chip outputs
    gain : float             digital gain from chip units to activity units
    out : float32 (batch, n) receives ``scale * a / (rms(a) + RMS_EPS)`` with ``a = gain * y``
    goodness : float64 (batch,) receives ``sum(a**2)`` per row
    """
    batch, n = y.shape
    for b in range(batch):
        s = 0.0
        for j in range(n):
            a = gain * float(y[b, j])
            s += a * a
        goodness[b] = s
        f = scale * gain / (math.sqrt(s / n) + RMS_EPS)
        for j in range(n):
            out[b, j] = np.float32(f * float(y[b, j]))


@_jit
def ff_signal(y, gain, coef, slope_table, bin_width, peer, out):
    """Per-sample, per-unit error signal of one phase: the row factor of the update.

    ``out[b, j] = coef[b] * a[b, j] * s_j(a[b, j]) + peer[j]`` with ``a = gain * y``;
    ``s_j`` the slope estimate of unit ``j`` looked up in ``slope_table``
    (float32 (n, k): relative slope by output bin of width ``bin_width`` in
    chip units; a table of shape (n, 0) means the nominal slope 1).
    coef : float64 (batch,), e.g. ``1 - p`` on positive data and ``-p`` on negative.
    peer : float32 (n,) peer-normalization term (zeros on negative data).
    """
    batch, n = y.shape
    k = slope_table.shape[1]
    for b in range(batch):
        c = coef[b]
        for j in range(n):
            yv = float(y[b, j])
            s = 1.0
            if k > 0:
                idx = int(yv / bin_width)
                if idx >= k:
                    idx = k - 1
                if idx < 0:
                    idx = 0
                s = float(slope_table[j, idx])
            out[b, j] = np.float32(c * gain * yv * s + float(peer[j]))


@_jit
def smooth_step(grad, smooth, shadow, momentum, step, weight_cost, bias_scale, delta):
    """Gradient smoothing, weight cost and the wanted change, in one pass.

    grad, smooth, delta : float32 (n_in + 1, n_out), last row the bias.
    shadow : float32 (n_in, n_out), the controller's sum of requested weight changes.

    ``smooth = momentum * smooth + (1 - momentum) * grad``;
    weights: ``delta = step * (smooth - weight_cost * shadow)``, ``shadow += delta``;
    bias row: ``delta = step * smooth * bias_scale`` (no weight cost).
    """
    rows, cols = grad.shape
    m = np.float32(momentum)
    m1 = np.float32(1.0 - momentum)
    st = np.float32(step)
    wc = np.float32(weight_cost)
    for i in range(rows - 1):
        for j in range(cols):
            s = m * smooth[i, j] + m1 * grad[i, j]
            smooth[i, j] = s
            d = st * (s - wc * shadow[i, j])
            delta[i, j] = d
            shadow[i, j] += d
    bs = np.float32(step * bias_scale)
    for j in range(cols):
        s = m * smooth[rows - 1, j] + m1 * grad[rows - 1, j]
        smooth[rows - 1, j] = s
        delta[rows - 1, j] = bs * s


@_jit
def accumulate_pulses(acc, wanted, step, send):
    """Mixed-precision accumulation; returns the number of weights to program.

    ``acc += wanted``; ``send = trunc(acc / step) * step`` (zero where
    ``|acc| < step``) and ``acc -= send``.  All float32 (rows, cols).
    """
    rows, cols = acc.shape
    st = np.float32(step)
    count = 0
    for i in range(rows):
        for j in range(cols):
            a = acc[i, j] + wanted[i, j]
            s = np.trunc(a / st) * st
            send[i, j] = s
            acc[i, j] = a - s
            count += s != 0.0
    return count
