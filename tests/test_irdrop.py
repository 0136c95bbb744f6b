"""IR drop model (``devices.irdrop``) against closed forms and the exact nodal solve.

The fast model is checked three ways: tiny arrays whose circuits reduce by hand (segment
counting), agreement with ``exact_column_currents`` on a realistic 64 x 64 array (with the
uncorrected ``V @ G`` as the yardstick), and the order of its error in ``r`` (an off-by-one
in the segment counts or a wire sensed from the wrong end leaves an error linear in ``r``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from devices.irdrop import AIHWKIT_SEGMENT_OHM, exact_column_currents, ir_drop_weights

G_MAX = 25e-6      # S, top of the realistic conductance range
V_MAX = 0.2        # V, read voltages
R = AIHWKIT_SEGMENT_OHM


def _array(seed: int, rows: int, cols: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, G_MAX, (rows, cols))


def _inputs(seed: int, batch: int, rows: int, density: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.uniform(0.0, V_MAX, (batch, rows))
    return v * (rng.random((batch, rows)) < density)


def _rel_err(i_model: np.ndarray, i_exact: np.ndarray) -> float:
    return float(np.linalg.norm(i_model - i_exact) / np.linalg.norm(i_exact))


# --- no wires ---------------------------------------------------------------------------

@pytest.mark.parametrize("order", [1, 2])
def test_zero_resistance_gives_g(order):
    g = _array(1, 7, 5)
    v = _inputs(2, 3, 7, 1.0)
    assert np.array_equal(ir_drop_weights(g, 0.0, order=order), g)
    assert np.array_equal(ir_drop_weights(g, 0, 3, 2, order=order), g)
    assert np.array_equal(exact_column_currents(g, 0.0, v), v @ g)


def test_tiny_resistance_exact_approaches_plain_product():
    g = _array(3, 6, 4)
    v = _inputs(4, 3, 6, 1.0)
    assert _rel_err(exact_column_currents(g, 1e-6, v), v @ g) < 1e-9


# --- hand-reduced circuits ----------------------------------------------------------------
# r = 10 kOhm against tens of uS makes the wires matter (r * G ~ 0.1..0.3).

def test_one_cell_is_a_series_circuit():
    g, r, v = 20e-6, 1e4, 0.15
    # driver -> r -> G -> r -> sense amp
    expected = v * g / (1 + 2 * r * g)
    assert exact_column_currents([[g]], r, [v]) == pytest.approx([expected], rel=1e-12)
    # first order: G (1 - 2 r G), one row and one column segment
    assert ir_drop_weights([[g]], r)[0, 0] == pytest.approx(g * (1 - 2 * r * g), rel=1e-14)


def test_one_row_two_columns():
    g0, g1, r, v = 20e-6, 30e-6, 1e4, 0.1
    b0 = g0 / (1 + r * g0)             # cell 0 and its column segment
    b1 = g1 / (1 + r * g1)
    d1 = 1 / (r + 1 / b1)              # row segment 0-1, then cell 1 branch
    u0 = v / (1 + r * (b0 + d1))       # driver segment into (b0 || d1)
    expected = [b0 * u0, d1 * u0]
    assert exact_column_currents([[g0, g1]], r, [v]) == pytest.approx(expected, rel=1e-12)
    # first order, by hand: the driver segment carries both cell currents, the next
    # segment only cell 1's; each column has one segment
    w = ir_drop_weights([[g0, g1]], r)
    assert w[0] == pytest.approx([g0 * (1 - r * (2 * g0 + g1)), g1 * (1 - r * (g0 + 3 * g1))], rel=1e-14)


def test_two_rows_one_column():
    g0, g1, r = 20e-6, 30e-6, 1e4
    v = np.array([[0.1, 0.05], [0.0, 0.2], [0.2, 0.0]])
    a0, a1 = g0 / (1 + r * g0), g1 / (1 + r * g1)   # driver segment + cell, per row
    # nodes w0 (top) and w1 (bottom): a0 (V0 - w0) = (w0 - w1) / r and
    # a1 (V1 - w1) + (w0 - w1) / r = w1 / r; the amplifier gets w1 / r
    m = np.array([[a0 + 1 / r, -1 / r], [-1 / r, a1 + 2 / r]])
    w_nodes = np.linalg.solve(m, (v * [a0, a1]).T)
    expected = (w_nodes[1] / r)[:, None]
    assert exact_column_currents([[g0], [g1]], r, v) == pytest.approx(expected, rel=1e-12)
    # first order, by hand: row 0's current crosses both column segments, row 1's only
    # the last one, which row 0's current shares
    w = ir_drop_weights([[g0], [g1]], r)
    assert w[:, 0] == pytest.approx([g0 * (1 - r * (3 * g0 + g1)), g1 * (1 - r * (g0 + 2 * g1))], rel=1e-14)


def test_exact_keeps_the_shape_of_v_at_g():
    g = _array(5, 4, 3)
    assert exact_column_currents(g, R, np.full(4, 0.1)).shape == (3,)
    assert exact_column_currents(g, R, np.full((2, 4), 0.1)).shape == (2, 3)


# --- the reference Jacobi iteration, written with explicit matrices ------------------------

def _jacobi_reference(g: np.ndarray, r: float, steps: int) -> np.ndarray:
    """Rows of W_eff from ``steps`` Jacobi steps on the cell currents of unit inputs."""
    rows, cols = g.shape
    m = np.minimum.outer(np.arange(cols), np.arange(cols)) + 1.0       # row segments shared
    n = rows - np.maximum.outer(np.arange(rows), np.arange(rows)).astype(float)  # column
    w = np.empty_like(g)
    for s in range(rows):
        c0 = np.zeros_like(g)
        c0[s] = g[s]
        c = c0
        for _ in range(steps):
            c = c0 - r * g * (c @ m + n @ c)
        w[s] = c.sum(axis=0)
    return w


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (6, 1), (9, 13), (20, 11)])
def test_fast_model_is_the_jacobi_iteration(order, shape):
    g = _array(6, *shape)
    r = 50.0   # large, so that the r**2 terms are far above rounding
    ref = _jacobi_reference(g, r, order)
    assert np.abs(ir_drop_weights(g, r, order=order) - ref).max() <= 1e-10 * np.abs(ref - g).max()


# --- a realistic array against the exact solve --------------------------------------------

@pytest.fixture(scope="module")
def array64():
    return _array(7, 64, 64)


@pytest.mark.parametrize("density", [1.0, 0.1])
def test_fast_model_matches_exact_solve(array64, density):
    v = _inputs(8, 16, 64, density)
    exact = exact_column_currents(array64, R, v)
    err_none = _rel_err(v @ array64, exact)
    err_1 = _rel_err(v @ ir_drop_weights(array64, R), exact)
    err_2 = _rel_err(v @ ir_drop_weights(array64, R, order=2), exact)
    # measured: no model 1.3e-2, order 1 1.8e-4, order 2 2.6e-6
    assert err_none > 8e-3
    assert err_1 < 3e-4
    assert err_2 < 5e-6
    assert err_1 < err_none / 40


@pytest.mark.parametrize("order, ratio", [(1, 4.0), (2, 8.0)])
def test_error_shrinks_with_the_order_of_r(array64, order, ratio):
    v = _inputs(9, 16, 64, 0.5)
    errs = []
    for r in (R, R / 2):
        errs.append(_rel_err(v @ ir_drop_weights(array64, r, order=order), exact_column_currents(array64, r, v)))
    # an error of order r or r**2 too many would give 2 or 4 (resp. 4 or 16)
    assert errs[0] / errs[1] == pytest.approx(ratio, rel=0.08)


# --- tiles -----------------------------------------------------------------------------------

@pytest.mark.parametrize("order", [1, 2])
def test_tiles_are_separate_arrays(order):
    g = _array(10, 128, 128)
    v = _inputs(11, 4, 128, 1.0)
    w = ir_drop_weights(g, R, 64, 64, order=order)
    summed = sum(v[:, i:i + 64] @ np.hstack([ir_drop_weights(g[i:i + 64, j:j + 64], R, order=order)
                                             for j in (0, 64)]) for i in (0, 64))
    assert np.allclose(v @ w, summed, rtol=1e-13, atol=0)
    exact = sum(np.hstack([exact_column_currents(g[i:i + 64, j:j + 64], R, v[:, i:i + 64]) for j in (0, 64)])
                for i in (0, 64))
    assert _rel_err(v @ w, exact) < 3e-4
    assert _rel_err(v @ w, exact) < _rel_err(v @ g, exact) / 40


def test_uneven_tiles_and_one_sided_tiling():
    g = _array(12, 50, 30)
    w = ir_drop_weights(g, R, 32, 16)
    expected = np.block([[ir_drop_weights(g[i:i + 32, j:j + 16], R) for j in (0, 16)] for i in (0, 32)])
    assert np.array_equal(w, expected)
    assert np.array_equal(ir_drop_weights(g, R, tile_rows=20),
                          np.vstack([ir_drop_weights(g[i:i + 20], R) for i in (0, 20, 40)]))
    assert np.array_equal(ir_drop_weights(g, R, 500, 500), ir_drop_weights(g, R))


# --- bad input --------------------------------------------------------------------------------

GOOD = np.full((3, 2), 10e-6)


@pytest.mark.parametrize("g, match", [
    ([[1e-6, -1e-9]], ">= 0"),
    ([[1e-6, np.nan]], "finite"),
    ([[1e-6, np.inf]], "finite"),
    ([1e-6, 2e-6], "2-D"),
    (np.zeros((2, 2, 2)), "2-D"),
    (np.zeros((0, 3)), "non-empty"),
    ([[1e-6 + 1j]], "real"),
    ([["a"]], "numeric"),
])
def test_bad_conductances_refused(g, match):
    with pytest.raises(ValueError, match=match):
        ir_drop_weights(g, R)
    with pytest.raises(ValueError, match=match):
        exact_column_currents(g, R, np.zeros(np.shape(g)[0] if np.ndim(g) else 1))


@pytest.mark.parametrize("r", [-0.1, np.nan, np.inf, "0.35", True, None, np.array([0.35])])
def test_bad_resistance_refused(r):
    with pytest.raises(ValueError, match="segment_ohm"):
        ir_drop_weights(GOOD, r)
    with pytest.raises(ValueError, match="segment_ohm"):
        exact_column_currents(GOOD, r, np.zeros(3))


@pytest.mark.parametrize("kw", [{"tile_rows": 0}, {"tile_cols": -4}, {"tile_rows": 2.0}, {"tile_cols": True},
                                {"tile_rows": "8"}])
def test_bad_tiles_refused(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        ir_drop_weights(GOOD, R, **kw)


@pytest.mark.parametrize("order", [0, 3, True, 1.0])
def test_bad_order_refused(order):
    with pytest.raises(ValueError, match="order"):
        ir_drop_weights(GOOD, R, order=order)


@pytest.mark.parametrize("v, match", [
    (np.zeros(2), "shape"),
    (np.zeros((4, 2)), "shape"),
    (np.zeros((1, 1, 3)), "shape"),
    (np.array([0.1, np.nan, 0.0]), "finite"),
    (np.array([0.1, 0.0, 0.0]) + 0j, "real"),
])
def test_bad_inputs_refused(v, match):
    with pytest.raises(ValueError, match=match):
        exact_column_currents(GOOD, R, v)


def test_module_imports_without_scipy():
    path = Path(__file__).resolve().parents[1] / "devices" / "irdrop.py"
    code = (
        "import sys, importlib.util\n"
        "sys.modules['scipy'] = None\n"
        f"spec = importlib.util.spec_from_file_location('irdrop', {str(path)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(m.ir_drop_weights([[1e-5]], 0.35)[0, 0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) == pytest.approx(1e-5 * (1 - 2 * 0.35 * 1e-5))


@pytest.mark.parametrize("rows,cols,tile_rows,tile_cols", [(70, 45, 32, 16), (1, 1, 256, 256), (300, 20, 256, 7)])
def test_the_chip_kernel_streams_the_same_model(rows, cols, tile_rows, tile_cols):
    # devices._wires.ir_pair_weights (closed-form column sums, one row of scratch) against the
    # numpy model on each device of a pair, in the kernel's normalized units.
    from devices._wires import ir_pair_weights

    rng = np.random.default_rng(rows + cols)
    g_now = rng.uniform(0.0, 1.2, (2, rows, cols)).astype(np.float32)
    lift, r, w_max = 0.04, 3e-4, 0.7
    w = np.empty((rows, cols), np.float32)
    ir_pair_weights(g_now, lift, r, tile_rows, tile_cols, w_max, w)
    want = (ir_drop_weights(g_now[0].astype(np.float64) + lift, r, tile_rows, tile_cols)
            - ir_drop_weights(g_now[1].astype(np.float64) + lift, r, tile_rows, tile_cols)) * w_max
    assert np.abs(w - want).max() <= 2 * np.spacing(np.float32(np.abs(want).max()))
    # the wires matter at this size: the check could fail
    assert np.abs(want - (g_now[0] - g_now[1]) * w_max).max() > 100 * np.spacing(np.float32(np.abs(want).max()))


@pytest.mark.parametrize("rows,tile_rows", [(70, 16), (33, 32)])
def test_the_chip_kernel_does_not_depend_on_the_thread_count(monkeypatch, rows, tile_rows):
    # Blocks of tile_rows rows run on several threads; each block sums in one fixed order.
    from devices._wires import ir_pair_weights

    rng = np.random.default_rng(rows)
    g_now = rng.uniform(0.0, 1.2, (2, rows, 45)).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        monkeypatch.setenv("MORTAL_KERNEL_THREADS", str(n))
        w = np.full((rows, 45), np.nan, np.float32)
        ir_pair_weights(g_now, 0.04, 3e-4, tile_rows, 16, 0.7, w)
        outs.append(w)
    assert np.isfinite(outs[0]).all()
    for other in outs[1:]:
        np.testing.assert_array_equal(outs[0], other)
