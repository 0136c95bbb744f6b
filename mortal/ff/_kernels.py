"""Numba kernels of the in-array updates (policy ``analog``): coincidence sampling.

Private: :mod:`mortal.ff.analog` validates inputs once and calls these.  The reference of
:func:`coincidence_rows` is :func:`coincidence_exact` (every pulse slot simulated), compared
in ``tests/test_analog_update.py``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .. import _kernels as base

# The flags of the learner's kernels (no fastmath, no cache).  No kernel uses numba's threading
# layer: it does not survive a forked worker (the fleet's process pool).  ``coincidence_rows``
# runs its parts on Python threads instead (``mortal.ff.analog``; the kernels release the GIL);
# the learning modules do not import the device layer's threads (tests/test_layering.py).
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
#: Rows per block of :func:`coincidence_rows`'s parts.
ROW_BLOCK = 8
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
def row_entries(px):
    """The nonzero entries of ``px`` float32 (batch, rows), row by row: returns ``ptr`` int64
    (rows + 1), ``sample`` int64 and ``value`` float32 (nonzeros), row i's entries at
    ``ptr[i]:ptr[i + 1]`` in sample order."""
    batch, rows = px.shape
    ptr = np.zeros(rows + 1, np.int64)
    for b in range(batch):
        for i in range(rows):
            if px[b, i] != 0.0:
                ptr[i + 1] += 1
    for i in range(rows):
        ptr[i + 1] += ptr[i]
    sample = np.empty(ptr[rows], np.int64)
    value = np.empty(ptr[rows], np.float32)
    fill = ptr[:rows].copy()
    for b in range(batch):
        for i in range(rows):
            v = px[b, i]
            if v != 0.0:
                sample[fill[i]] = b
                value[fill[i]] = v
                fill[i] += 1
    return ptr, sample, value


@_jit
def coincidence_rows(part, parts, ptr, sample, value, pd, bl, cap, key, net, row_gross):
    """Net coincidences of part ``part`` of ``parts`` of the rows, drawn from each cell's exact
    moments: the blocks of ``ROW_BLOCK`` rows whose index is ``part`` modulo ``parts`` (rows
    driven by few samples cost little, so interleaved blocks share the work evenly).

    ``ptr``, ``sample``, ``value``: the row probabilities by row (:func:`row_entries` of
    ``px``); ``pd`` float32 (batch, cols) the column probabilities; both carry the sign of their
    value.  Per cell, over the samples ``b`` whose row pulses can fire, four sums:
    ``s = sum_b px pd``, ``a = sum_b |px||pd|``, ``q = sum_b px^2 pd^2`` and
    ``qs = sum_b sign(px pd) px^2 pd^2``.  Coincidences of one sign pair are a sum of Bernoulli
    variables, ``bl`` per sample, with mean ``bl (a +- s) / 2`` and variance
    ``mean - bl (q +- qs) / 2``; each sign is drawn with those moments (``_count``, at most
    ``cap``), ``net`` (int32) receives positive minus negative and ``row_gross[i]`` both.
    A row that no sample drives is all zero.  The draws of cell (i, j) are fixed by ``key``
    and the cell, whichever rows a call covers.
    """
    cols = pd.shape[1]
    s = np.empty(cols, np.float32)
    a = np.empty(cols, np.float32)
    q = np.empty(cols, np.float32)
    qs = np.empty(cols, np.float32)
    drawn = np.empty(cols, np.bool_)
    h = 0.5 * bl
    rows = ptr.size - 1
    for i in range(rows):
        if (i // ROW_BLOCK) % parts != part:
            continue
        if ptr[i] == ptr[i + 1]:
            net[i, :] = 0
            row_gross[i] = 0
            continue
        s[:] = 0.0
        a[:] = 0.0
        q[:] = 0.0
        qs[:] = 0.0
        for t in range(ptr[i], ptr[i + 1]):
            b = sample[t]
            v = value[t]
            av = abs(v)
            vv = v * av
            v2 = v * v
            for j in range(cols):
                d = pd[b, j]
                ad = abs(d)
                s[j] += v * d
                a[j] += av * ad
                qs[j] += vv * (d * ad)
                q[j] += v2 * (d * d)
        # Most cells draw no coincidence: a count is 0 when its first uniform is at most
        # 1 - mean (``_count``).  That test runs over the whole row in one vectorizable pass;
        # ``_count`` draws the cells it leaves, from the same uniforms.
        base = np.uint64(i * cols) * np.uint64(4)
        for j in range(cols):
            aj = float(a[j])
            sj = float(s[j])
            m_pos = h * (aj + sj)
            m_neg = h * (aj - sj)
            k = base + np.uint64(j) * np.uint64(4)
            u_pos = _uniform(key, k)
            u_neg = _uniform(key, k + np.uint64(2))
            drawn[j] = ((m_pos > 0.0) & (u_pos > 1.0 - m_pos)) | ((m_neg > 0.0) & (u_neg > 1.0 - m_neg))
            net[i, j] = 0
        g = 0
        for j in range(cols):
            if drawn[j]:
                aj, sj, qj, qsj = float(a[j]), float(s[j]), float(q[j]), float(qs[j])
                m_pos = h * (aj + sj)
                m_neg = h * (aj - sj)
                k = base + np.uint64(j) * np.uint64(4)
                n_pos = _count(m_pos, m_pos - h * (qj + qsj), cap, key, k)
                n_neg = _count(m_neg, m_neg - h * (qj - qsj), cap, key, k + np.uint64(2))
                net[i, j] = n_pos - n_neg
                g += n_pos + n_neg
        row_gross[i] = g


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
    :func:`coincidence_rows`); returns the gross coincidence count.

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
