"""Numba kernel of the wires' IR drop, first order, folded into a layer's effective weights.

The model and its geometry are :mod:`devices.irdrop` (whose ``ir_drop_weights`` is the
plain-numpy form this kernel is tested against): per tile, ``W = G (1 - r (A + C))`` with
``A = rowdrop(G)`` (cumulative sum along the row of the reverse cumulative sum) and
``C = colrise(G)`` (reverse cumulative sum down the column of the cumulative sum).

Blocks of ``tile_rows`` rows share nothing (each has its own column wires), so they run on
several threads (:mod:`devices._threads`); every sum is taken in the same order on any number
of threads, so the weights do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np

from ._kernels import JIT
from ._threads import run_chunks


@JIT
def _ir_blocks(b0, b1, g_now, lift, r, tile_rows, tile_cols, w_max, w_eff):
    """Blocks ``b0`` to ``b1`` (of ``tile_rows`` rows) of :func:`ir_pair_weights`, serially."""
    rows, cols = w_eff.shape
    f64 = np.float64
    s = np.empty((2, cols), f64)
    u = np.empty((2, cols), f64)
    wt = np.empty((2, cols), f64)
    a = np.empty((2, cols), f64)
    out = np.empty((2, cols), f64)
    for blk in range(b0, b1):
        r0 = blk * tile_rows
        r1 = min(r0 + tile_rows, rows)
        for k in range(2):
            wk = wt[k]
            sk = s[k]
            uk = u[k]
            for j in range(cols):
                wk[j] = 0.0
                sk[j] = 0.0
                uk[j] = 0.0
            for i in range(r0, r1):
                gr = g_now[k, i]
                h = float(r1 - i)
                for j in range(cols):
                    wk[j] += (lift + float(gr[j])) * h
        for i in range(r0, r1):
            h = float(r1 - i)
            g0 = g_now[0, i]
            g1 = g_now[1, i]
            a0 = a[0]
            a1 = a[1]
            for c0 in range(0, cols, tile_cols):  # A: along each row segment, from its driver
                c1 = min(c0 + tile_cols, cols)
                # Both devices' scans in one loop: two independent chains of additions, each in
                # the order of a scan on its own.
                rev0 = 0.0
                rev1 = 0.0
                for j in range(c1 - 1, c0 - 1, -1):
                    rev0 += lift + float(g0[j])
                    rev1 += lift + float(g1[j])
                    a0[j] = rev0
                    a1[j] = rev1
                run0 = 0.0
                run1 = 0.0
                for j in range(c0, c1):
                    run0 += a0[j]
                    run1 += a1[j]
                    a0[j] = run0
                    a1[j] = run1
            for k in range(2):
                gr = g_now[k, i]
                sk = s[k]
                uk = u[k]
                wk = wt[k]
                ok = out[k]
                ak = a[k]
                for j in range(cols):
                    gg = lift + float(gr[j])
                    sk[j] += gg
                    uk[j] += gg * h
                for j in range(cols):
                    gg = lift + float(gr[j])
                    ok[j] = gg * (1.0 - r * (ak[j] + h * sk[j] + wk[j] - uk[j]))
            wr = w_eff[i]
            o0 = out[0]
            o1 = out[1]
            for j in range(cols):
                wr[j] = np.float32((o0[j] - o1[j]) * w_max)


def ir_pair_weights(g_now, lift, r, tile_rows, tile_cols, w_max, w_eff):
    """Effective weights ``(W+ - W-) w_max`` (float32 ``w_eff``, (rows, cols)) of a pair of arrays
    ``g_now`` (float32 (2, rows, cols), the devices' conductances as a fraction of the range;
    each conducts ``lift + g``), each with its own wires: the first-order model of the module
    docstring, streamed a row at a time with scratch of one row per device.  ``r`` is the
    segment resistance times the range's conductance (dimensionless).

    Per block of ``tile_rows`` rows and per device, with ``G = lift + g`` and block rows
    ``r0 <= i < r1``: ``C_i = (r1 - i) S_i + Wt - U_i``, where ``S_i`` sums G over the block's
    rows up to i, ``U_i`` sums ``G (r1 - i')`` over the same rows and ``Wt`` over the whole
    block (the reverse cumulative sum of the cumulative sum in closed form); ``A`` is summed
    along each row segment of ``tile_cols`` from its driver.  Blocks run on several threads.
    """
    blocks = (w_eff.shape[0] + tile_rows - 1) // tile_rows
    run_chunks(_ir_blocks, blocks, g_now, lift, r, tile_rows, tile_cols, w_max, w_eff)
