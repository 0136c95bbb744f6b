"""Numba kernels of the in-array updates (policy ``analog``): coincidence sampling.

Private: :mod:`mortal.ff.analog` validates inputs once and calls these.  The reference of
:func:`coincidence_counts` is :func:`coincidence_exact` (every pulse slot simulated), compared
in ``tests/test_analog_update.py``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .. import _kernels as base

# The flags of the learner's kernels (no fastmath, no cache).  The kernels are serial: numba's
# threading layer does not survive a forked worker (the fleet's process pool), and the learning
# modules do not import the device layer's threads (tests/test_layering.py).
_jit = numba.njit(fastmath=base.FASTMATH, cache=base.CACHE, nogil=True, error_model="numpy")
# Small helpers inlined into their callers (an out-of-line numba call costs more than they do).
_jit_inline = numba.njit(fastmath=base.FASTMATH, cache=base.CACHE, nogil=True, error_model="numpy",
                         inline="always")


# Random numbers of these kernels are counter-based: uniform ``k`` of a call is a 64-bit mix of
# the call's ``key`` (drawn by the caller from its numpy Generator) and ``k``, so every cell's
# draws are fixed by (key, cell) whatever the order of the loops.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TWO53 = 1.0 / 9007199254740992.0
#: Above this mean a count is drawn from a normal with its exact mean and variance.
NORMAL_ABOVE = 30.0


@_jit_inline
def _uniform(key, k):
    """Uniform in [0, 1): the splitmix64 finalizer of ``key + k * golden``."""
    z = key + np.uint64(k) * _GOLDEN
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    z = z ^ (z >> _S31)
    return float(z >> _S11) * _TWO53


@_jit_inline
def _normal(key, k):
    """Standard normal from uniforms ``k`` and ``k + 1`` (Box-Muller)."""
    u1 = 1.0 - _uniform(key, k)  # (0, 1]
    u2 = _uniform(key, k + np.uint64(1))
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@_jit
def _count(mean, var, cap, key, k):
    """One draw of a sum of Bernoulli variables with ``mean`` and variance ``var`` (<= mean),
    at most ``cap``; uses uniforms ``k .. k + 1``.

    Large means: a normal with the exact moments, rounded.  Otherwise a binomial mixture with
    the exact mean and variance: ``Binomial(n, mean / n)`` with ``n`` one of the two integers
    around ``n* = mean^2 / (mean - var)`` (the binomial whose variance is ``var``), chosen at
    random so that the variance is matched; ``var == mean`` (all probabilities tiny) is the
    Poisson limit.  When ``n*`` is below ``ceil(mean)`` (cells where nearly every coincidence is
    certain) ``n = ceil(mean)`` and the variance is slightly over ``var``.
    """
    if mean <= 0.0:
        return 0
    if var < 0.0:
        var = 0.0
    if var > mean:
        var = mean
    if mean > NORMAL_ABOVE:
        c = math.floor(mean + math.sqrt(var) * _normal(key, k) + 0.5)
        return int(min(max(c, 0.0), cap))
    u = _uniform(key, k)
    if u <= 1.0 - mean:  # P(count = 0) >= 1 - mean: inversion would return 0 (saves the work below)
        return 0
    d = mean - var
    if d <= 1e-12 * mean:  # Poisson limit
        pk = math.exp(-mean)
        cdf = pk
        c = 0
        while u > cdf and c < cap and pk > 0.0:
            c += 1
            pk *= mean / c
            cdf += pk
        return c
    nstar = mean * mean / d
    lo = math.floor(nstar)
    if lo < math.ceil(mean):
        n = math.ceil(mean)
    else:
        w = (1.0 / nstar - 1.0 / (lo + 1.0)) / (1.0 / lo - 1.0 / (lo + 1.0))
        n = lo if _uniform(key, k + np.uint64(1)) < w else lo + 1.0
    p = mean / n
    if p >= 1.0:
        return int(min(n, cap))
    q = 1.0 - p
    pk = math.exp(n * math.log1p(-p))
    cdf = pk
    c = 0
    r = p / q
    while u > cdf and c < n and pk > 0.0:
        pk *= (n - c) / (c + 1.0) * r
        c += 1
        cdf += pk
    return int(min(c, cap))


@_jit
def coincidence_counts(sgn, ab, sq, sq_sgn, bl, cap, key, net):
    """Net coincidences per cell from the batch's moment matrices; returns the gross count.

    All float32 (rows, cols), over the batch ``b`` with row probabilities ``px`` and column
    probabilities ``pd`` carrying the sign of their value:
    ``sgn = sum_b px pd``, ``ab = sum_b |px||pd|``, ``sq = sum_b px^2 pd^2``,
    ``sq_sgn = sum_b sign(px pd) px^2 pd^2``.  Coincidences of one sign pair are a sum of
    Bernoulli variables, ``bl`` per sample, with mean ``bl (ab +- sgn) / 2`` and variance
    ``mean - bl (sq +- sq_sgn) / 2``; each sign is drawn with those moments (``_count``,
    at most ``cap``) and ``net`` (int32) receives positive minus negative.
    """
    rows, cols = net.shape
    row_gross = np.zeros(rows, np.int64)
    for i in range(rows):
        g = 0
        for j in range(cols):
            a = float(ab[i, j])
            s = float(sgn[i, j])
            q = float(sq[i, j])
            qs = float(sq_sgn[i, j])
            m_pos = 0.5 * bl * (a + s)
            m_neg = 0.5 * bl * (a - s)
            v_pos = m_pos - 0.5 * bl * (q + qs)
            v_neg = m_neg - 0.5 * bl * (q - qs)
            k = np.uint64(i * cols + j) * np.uint64(4)
            n_pos = _count(m_pos, v_pos, cap, key, k)
            n_neg = _count(m_neg, v_neg, cap, key, k + np.uint64(2))
            net[i, j] = n_pos - n_neg
            g += n_pos + n_neg
        row_gross[i] = g
    return row_gross.sum()


@_jit
def _train(p, key, k, bits, line_pulses, side):
    """One slot of the pulse trains of a line set: ``bits[i]`` the sign of line i's pulse (0 for
    none), pulse i with probability ``|p[i]|`` from uniform ``k + i``; ``line_pulses[side]``
    counts them.  Returns the next uniform's index."""
    for i in range(p.shape[0]):
        v = float(p[i])
        on = _uniform(key, k) < abs(v)
        k += np.uint64(1)
        bits[i] = 0 if not on else (1 if v > 0 else -1)
        line_pulses[side] += on
    return k


@_jit
def coincidence_exact(px, pd, bl, key, net, line_pulses):
    """Pulse trains simulated bit by bit, sample by sample (the reference of
    :func:`coincidence_counts`); returns the gross coincidence count.

    px : float32 (batch, rows), pd : float32 (batch, cols): signed pulse probabilities.
    net : int32 (rows, cols) receives, over every sample and each of its ``bl`` time slots,
    ``sign(px) sign(pd)`` where a row pulse and a column pulse coincide.
    line_pulses : int64 (2,) receives the row and column pulses sent.
    """
    batch, rows = px.shape
    cols = pd.shape[1]
    rbit = np.zeros(rows, np.int8)
    cbit = np.zeros(cols, np.int8)
    net[:] = 0
    line_pulses[:] = 0
    gross = 0
    k = np.uint64(0)
    for b in range(batch):
        for t in range(bl):
            k = _train(px[b], key, k, rbit, line_pulses, 0)
            k = _train(pd[b], key, k, cbit, line_pulses, 1)
            for i in range(rows):
                if rbit[i] != 0:
                    for j in range(cols):
                        if cbit[j] != 0:
                            net[i, j] += rbit[i] * cbit[j]
                            gross += 1
    return gross
