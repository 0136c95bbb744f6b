"""IR drop (wire resistance) of a crossbar array: a fast effective-weight model and an exact solve.

Geometry and conventions
------------------------
One array holds ``rows x cols`` devices with conductances ``G[i, j]`` (siemens).

* Row ``i`` is driven at its **left** end (the ``j = 0`` side) by an ideal voltage source
  ``V[i]`` (volts).  Column ``j`` is sensed at its **bottom** end (after the last row, the
  ``i = rows - 1`` side) by a virtual-ground sense amplifier held at 0 V, which measures the
  column current ``I[j]`` (amperes).
* Every wire segment has resistance ``r`` (ohms, ``segment_ohm``): on a row, one segment
  between the driver and cell ``(i, 0)`` and one between each pair of neighbouring cells;
  on a column, one segment between each pair of neighbouring cells and one between cell
  ``(rows - 1, j)`` and the sense amplifier.  A row wire thus has ``cols`` segments and a
  column wire ``rows`` segments.
* Cell ``(i, j)`` joins row node ``(i, j)`` (voltage ``u[i, j]``) to column node ``(i, j)``
  (voltage ``w[i, j]``) through ``G[i, j]``.

Without wires ``I = V @ G``.  For fixed ``G`` the circuit is linear in ``V``, so with wires
``I = V @ W_eff(G, r)`` exactly for some matrix ``W_eff``; :func:`ir_drop_weights`
approximates ``W_eff`` and :func:`exact_column_currents` solves the circuit.

Differential pairs: a signed weight is ``G_plus - G_minus`` with each conductance on its
own array and wires; apply the model to each array separately and subtract.

Derivation of the fast model
----------------------------
Let ``c[i, j] = G[i, j] (u[i, j] - w[i, j])`` be the cell currents.  The row segment that
feeds node ``(i, m)`` carries ``sum_{k >= m} c[i, k]``, so

    u[i, j] = V[i] - r * sum_k c[i, k] * (min(k, j) + 1).

The column segment below node ``(m, j)`` carries ``sum_{l <= m} c[l, j]`` to the amplifier,
so

    w[i, j] = r * sum_l c[l, j] * (rows - max(i, l)).

Both sums are cumulative sums: ``rowdrop(x) = cumsum_j(revcumsum_j(x))`` and
``colrise(x) = revcumsum_i(cumsum_i(x))``.  The cell currents satisfy the fixed point
``c = c0 - r * G * (rowdrop(c) + colrise(c))`` with ``c0 = V[:, None] * G``, and
``I[j] = sum_i c[i, j]`` (Kirchhoff at the column wire).  One Jacobi step from ``c0``
(first order in ``r``) gives, with ``A = rowdrop(G)`` and ``C = colrise(G)``,

    I[j] = sum_i V[i] G[i, j] (1 - r A[i, j]) - r sum_l V[l] G[l, j] C[l, j],

where the second term uses the symmetry of ``rows - max(i, l)`` to fold the column rise
that row ``l`` causes at every cell back onto the weight of row ``l``.  Hence

    W_eff = G * (1 - r * (A + C)),       O(rows * cols).

The neglected terms are of relative size ``(r * (A + C))**2``; each further Jacobi step
gains one order in ``r`` (``order=2`` costs O(rows^2 * cols)).

Validity: ``r * (A + C) = 1 - W_eff / G`` (order 1) is each cell's first-order relative
loss and the expansion parameter.  For 0..25 uS at 0.35 ohm its maximum is 0.02 (64 x 64),
0.08 (128 x 128), 0.31 (256 x 256) and 1.2 (512 x 512); the measured errors against the
exact solve were 2e-4, 3e-3, 4e-2 and 0.6 at order 1 (order 2: 3e-6, 2e-4, 1e-2, 0.55;
``benchmarks/bench_irdrop.py``).  Near or above 1 the series diverges and ``W_eff`` is
meaningless (it can turn negative): use smaller tiles or :func:`exact_column_currents`.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["AIHWKIT_SEGMENT_OHM", "exact_column_currents", "ir_drop_weights"]

#: Wire resistance per cell segment (ohm) implied by aihwkit's default
#: ``IOParameters.ir_drop_g_ratio = 1 / (0.35 ohm * 5 uS)`` (aihwkit,
#: ``src/aihwkit/simulator/parameters/io.py``; see /work/shared/reference/device-parameters.md,
#: section 4, the ``ir_drop_g_ratio`` row).
AIHWKIT_SEGMENT_OHM = 0.35


def ir_drop_weights(g, segment_ohm, tile_rows=None, tile_cols=None, *, order: int = 1) -> np.ndarray:
    """Effective conductance matrix of a crossbar with wire resistance.

    ``v @ ir_drop_weights(g, r)`` approximates the column currents of the crossbar described
    in the module docstring, for any input ``v``.

    Parameters
    ----------
    g : array_like, shape (rows, cols)
        Device conductances in siemens; finite and >= 0.
    segment_ohm : float
        Resistance of one wire segment in ohms; finite and >= 0 (0 gives ``g`` back).
    tile_rows, tile_cols : int or None
        Largest physical array.  A bigger ``g`` is cut into tiles of at most
        ``tile_rows x tile_cols`` cells (the last tile of a row or column of tiles may be
        smaller), each with its own drivers, sense amplifiers and wires; the partial column
        currents of vertically stacked tiles are summed.  None: the whole extent is one array.
    order : {1, 2}
        Jacobi steps of the fixed point (order of the model in ``r``).  1: closed form,
        O(rows * cols).  2: error one order of ``r`` smaller, O(rows^2 * cols) per array
        (0.6 ms for 64 x 64, 22 ms for 256 x 256 against 0.08 and 1.8 ms at order 1).

    Returns
    -------
    numpy.ndarray, shape (rows, cols), float64
        ``W_eff`` in siemens.

    Raises
    ------
    ValueError
        On a conductance that is negative or not finite, a ``g`` that is not a non-empty 2-D
        array, a negative or non-finite resistance, a tile size that is not a positive
        integer, or an order other than 1 or 2.

    Notes
    -----
    A first-order expansion: trustworthy while ``max(1 - W_eff / G)`` (order 1) is well
    below 1; see the module docstring for measured errors.
    """
    g = _check_conductances(g)
    r = _check_resistance(segment_ohm)
    rows, cols = g.shape
    tr = _check_tile(tile_rows, "tile_rows", rows)
    tc = _check_tile(tile_cols, "tile_cols", cols)
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) or order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    if r == 0.0:
        return g.copy()
    w = np.empty_like(g)
    for r0 in range(0, rows, tr):
        for c0 in range(0, cols, tc):
            block = g[r0:r0 + tr, c0:c0 + tc]
            if order == 1:
                w[r0:r0 + tr, c0:c0 + tc] = _first_order(block, r)
            else:
                w[r0:r0 + tr, c0:c0 + tc] = _second_order(block, r)
    return w


def exact_column_currents(g, segment_ohm, v) -> np.ndarray:
    """Column currents of the crossbar by an exact nodal solve (slow; the reference).

    Kirchhoff's current law on all ``2 * rows * cols`` nodes, solved with
    ``scipy.sparse.linalg.spsolve`` (scipy is imported here, not by the module).  Time and
    memory grow faster than ``rows * cols`` (measured here for a batch of 32: 0.02 s for
    64 x 64, 0.13 s for 128 x 128, 0.8 s for 256 x 256, 6 s for 512 x 512): use it to check
    models, not to run them.  One array, no tiling.

    Parameters
    ----------
    g : array_like, shape (rows, cols)
        Device conductances in siemens; finite and >= 0.
    segment_ohm : float
        Resistance of one wire segment in ohms; finite and >= 0.  With 0 the result is
        ``v @ g``.
    v : array_like, shape (batch, rows) or (rows,)
        Row driver voltages in volts; finite.

    Returns
    -------
    numpy.ndarray, shape (batch, cols) or (cols,), float64
        Current into each sense amplifier in amperes, shaped like ``v @ g``.

    Raises
    ------
    ValueError
        On bad conductances or resistance (as :func:`ir_drop_weights`), or a ``v`` that is
        not finite or whose last axis is not ``rows`` long.
    """
    g = _check_conductances(g)
    r = _check_resistance(segment_ohm)
    rows, cols = g.shape
    if np.iscomplexobj(v):
        raise ValueError("v must be real")
    v = np.asarray(v, dtype=np.float64)
    if v.ndim not in (1, 2) or v.shape[-1] != rows:
        raise ValueError(f"v must have shape (batch, {rows}) or ({rows},), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("v must be finite")
    if r == 0.0:
        return v @ g
    vb = np.atleast_2d(v)

    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    # Every equation is multiplied by r: wire segments have conductance 1 and cells r * G,
    # which keeps the matrix entries near 1.  Row node (i, j) is i * cols + j, column node
    # (i, j) is n + i * cols + j.
    n = rows * cols
    ids = np.arange(n).reshape(rows, cols)
    a_idx, b_idx, cond = [], [], []

    def link(a, b, c):
        a_idx.append(a.ravel())
        b_idx.append(b.ravel())
        cond.append(np.broadcast_to(c, a.shape).ravel())

    link(ids, ids + n, r * g)                        # cells
    link(ids[:, :-1], ids[:, 1:], 1.0)                # row segments between cells
    link(ids[:-1, :] + n, ids[1:, :] + n, 1.0)        # column segments between cells
    a = np.concatenate(a_idx)
    b = np.concatenate(b_idx)
    c = np.concatenate(cond)
    diag = np.bincount(a, c, 2 * n) + np.bincount(b, c, 2 * n)
    diag[ids[:, 0]] += 1.0                            # driver segments (to V, on the right side)
    diag[ids[-1, :] + n] += 1.0                       # sense-amplifier segments (to 0 V)
    nodes = np.arange(2 * n)
    matrix = sp.coo_matrix(
        (np.concatenate([diag, -c, -c]), (np.concatenate([nodes, a, b]), np.concatenate([nodes, b, a]))),
        shape=(2 * n, 2 * n)).tocsc()
    rhs = np.zeros((2 * n, vb.shape[0]))
    rhs[ids[:, 0], :] = vb.T
    x = np.asarray(spsolve(matrix, rhs)).reshape(2 * n, vb.shape[0])
    currents = (x[ids[-1, :] + n, :] / r).T           # last column segment, w / r
    return currents if v.ndim == 2 else currents[0]


def _row_drop(x: np.ndarray) -> np.ndarray:
    """``sum_k x[..., i, k] * (min(k, j) + 1)``: row-wire drop per ohm at every cell."""
    return np.cumsum(np.cumsum(x[..., ::-1], axis=-1)[..., ::-1], axis=-1)


def _col_rise(x: np.ndarray) -> np.ndarray:
    """``sum_l x[..., l, j] * (rows - max(i, l))``: column-wire rise per ohm at every cell."""
    return np.cumsum(np.cumsum(x, axis=-2)[..., ::-1, :], axis=-2)[..., ::-1, :]


def _first_order(g: np.ndarray, r: float) -> np.ndarray:
    """``W_eff = G * (1 - r * (rowdrop(G) + colrise(G)))`` for one array."""
    return g * (1.0 - r * (_row_drop(g) + _col_rise(g)))


def _second_order(g: np.ndarray, r: float) -> np.ndarray:
    """``W_eff`` after two Jacobi steps: the first-order weights plus ``r**2`` terms.

    For source row ``s`` the second step adds ``r**2 * colsum(L(L(c0)))`` with
    ``L(x) = G * (rowdrop(x) + colrise(x))``; expanded, with ``A = rowdrop(G)``,
    ``C = colrise(G)`` and ``N[s, i] = rows - max(s, i)``, its four terms are

    * row drop of the row drop:       ``G * rowdrop(G * A)``
    * column rise of the row drop:    ``G * A * C``
    * column rise of the column rise: ``G * colrise(G * C)``
    * row drop of the column rise (row ``s`` raises column ``k`` at every row ``i``, which
      changes the drop along row ``i``):
      ``T[s, j] = sum_i N[s, i] G[i, j] Y_j[s, i]`` with
      ``Y_j[s, i] = sum_k G[s, k] G[i, k] (min(k, j) + 1)``.

    The last term couples three indices; ``Y_j`` is updated from ``Y_{j-1}`` by the Gram
    matrix of columns ``j..cols-1``, so it costs O(rows^2 * cols) in a loop over columns.
    """
    rows, cols = g.shape
    a = _row_drop(g)
    c = _col_rise(g)
    idx = np.arange(rows)
    n = (rows - np.maximum.outer(idx, idx)).astype(np.float64)
    nh = n * (g @ g.T)              # N * (Gram of columns j..cols-1), j = 0
    ny = nh.copy()                  # N * Y_0
    cross = np.empty_like(g)
    cross[:, 0] = ny @ g[:, 0]
    for j in range(1, cols):
        nh -= n * np.outer(g[:, j - 1], g[:, j - 1])
        ny += nh
        cross[:, j] = ny @ g[:, j]
    terms = g * (_row_drop(g * a) + a * c + _col_rise(g * c)) + cross
    return g * (1.0 - r * (a + c)) + r * r * terms


def _check_conductances(g) -> np.ndarray:
    if np.iscomplexobj(g):
        raise ValueError("conductances must be real")
    try:
        arr = np.array(g, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"conductances must be a numeric array: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"conductances must be a non-empty 2-D array (rows, cols), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("conductances must be finite")
    if np.any(arr < 0):
        raise ValueError(f"conductances must be >= 0 S, got minimum {arr.min():.3g}")
    return arr


def _check_resistance(segment_ohm) -> float:
    if isinstance(segment_ohm, bool) or not isinstance(segment_ohm, numbers.Real):
        raise ValueError(f"segment_ohm must be a real number, got {segment_ohm!r}")
    r = float(segment_ohm)
    if not np.isfinite(r) or r < 0:
        raise ValueError(f"segment_ohm must be finite and >= 0, got {segment_ohm!r}")
    return r


def _check_tile(size, name: str, extent: int) -> int:
    if size is None:
        return extent
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {size!r}")
    return int(size)
