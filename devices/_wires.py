"""Numba kernel of the wires' IR drop, first order, folded into a layer's effective weights.

The model and its geometry are :mod:`devices.irdrop` (whose ``ir_drop_weights`` is the
plain-numpy form this kernel is tested against): per tile, ``W = G (1 - r (A + C))`` with
``A = rowdrop(G)`` (cumulative sum along the row of the reverse cumulative sum) and
``C = colrise(G)`` (reverse cumulative sum down the column of the cumulative sum).
"""

from __future__ import annotations

import numpy as np

from ._kernels import JIT


@JIT
def ir_first_order(g, lift, r, tile_rows, tile_cols, out, a, c):
    """First-order IR drop of one array of devices, in normalized conductance units.

    g : float32 (rows, cols), the devices' conductances as a fraction of the range; each
    device conducts ``lift + g`` (``lift`` = g_min over the range).  r : the segment
    resistance times the range's conductance (dimensionless).  out : float64 (rows, cols)
    receives ``G (1 - r (A + C))`` per tile; a, c : float64 (rows, cols) scratch.
    """
    rows, cols = g.shape
    for i in range(rows):  # A: along each row segment of a tile, from its driver
        for c0 in range(0, cols, tile_cols):
            c1 = min(c0 + tile_cols, cols)
            rev = 0.0
            for j in range(c1 - 1, c0 - 1, -1):
                rev += lift + float(g[i, j])
                a[i, j] = rev
            run = 0.0
            for j in range(c0, c1):
                run += a[i, j]
                a[i, j] = run
    for r0 in range(0, rows, tile_rows):  # C: down each column segment of a tile, to its sense amplifier
        r1 = min(r0 + tile_rows, rows)
        for j in range(cols):
            c[r0, j] = lift + float(g[r0, j])
        for i in range(r0 + 1, r1):
            for j in range(cols):
                c[i, j] = c[i - 1, j] + lift + float(g[i, j])
        for i in range(r1 - 2, r0 - 1, -1):
            for j in range(cols):
                c[i, j] += c[i + 1, j]
    for i in range(rows):
        for j in range(cols):
            gg = lift + float(g[i, j])
            out[i, j] = gg * (1.0 - r * (a[i, j] + c[i, j]))



@JIT
def ir_pair_weights(g_now, lift, r, tile_rows, tile_cols, w_max, w_eff, plus, minus, a, c):
    """Effective weights ``(W+ - W-) w_max`` (float32 ``w_eff``, (rows, cols)) of a pair of arrays
    ``g_now`` (float32 (2, rows, cols)), each with its own wires (:func:`ir_first_order`);
    ``plus``, ``minus``, ``a``, ``c`` : float64 (rows, cols) scratch."""
    rows, cols = w_eff.shape
    ir_first_order(g_now[0], lift, r, tile_rows, tile_cols, plus, a, c)
    ir_first_order(g_now[1], lift, r, tile_rows, tile_cols, minus, a, c)
    for i in range(rows):
        for j in range(cols):
            w_eff[i, j] = np.float32((plus[i, j] - minus[i, j]) * w_max)
