"""Each numba kernel of ``devices._kernels``, ``devices._devstate``, ``devices._pulses`` and
``devices._program`` against its numpy reference in ``tests/reference.py``.

Tolerances follow the dtype: the read path (DAC, periphery) and the normal generator are
float32 computations done in the same order as the reference, so they agree exactly (at
most 1 ulp is allowed); float64 sums of float32 terms get ``n * eps32``.  The device
kernels are float64 with float32 / uint16 results; where they use short series for speed
(``drift_factor`` for young devices, ``ln_fast`` / ``ln_rows``, ``exp_bounded`` /
``exp_neg``) the references use the exact functions and the tests allow the error bounds
derived in ``reference.py``.  Device states are stored in float32 / uint16, so a float64
difference far below a float32 ulp may still round to the neighbouring value: those
comparisons allow one float32 ulp of a conductance and one quantization step of a drift
exponent.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numba
import numpy as np
import pytest

import devices
import reference as ref
from devices import _devstate as S
from devices import _kernels as K
from devices import _program as PG
from devices import _pulses as P
from devices import _threads as T
from devices import _wires as W
from devices.parameters import drift_parameters, nu_step, programming_parameters, read_noise_parameters
from reference import f32_tol

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
DEVICES_DIR = Path(devices.__file__).resolve().parent
BASES = [0, 1, 12345, 2**63 - 1, 2**64 - 1, 0x9E3779B97F4A7C15]
KEYS = [0, 1, 987654321, 2**63 - 1]
PCM = devices.PRESETS["pcm"]
RRAM = devices.PRESETS["rram"]


# -- random numbers --------------------------------------------------------------------------
@pytest.mark.parametrize("base", BASES)
def test_seeding_matches_reference(base):
    for row in (0, 1, 7, 1000, 2**31):
        assert K.row_seed(np.uint64(base), row) == ref.row_seed(base, row)[0]
        state = np.empty(K.LANES, np.uint64)
        K.seed_lanes(state, np.uint64(base), row)
        np.testing.assert_array_equal(state, ref.seed_lanes(base, row))
        assert (state & np.uint64(1)).all()  # xorshift states are never zero


def test_splitmix_and_xorshift_match_reference():
    rng = np.random.default_rng(3)
    xs = rng.integers(0, 2**64, size=200, dtype=np.uint64)
    np.testing.assert_array_equal([K.splitmix64(x) for x in xs], ref.splitmix64(xs))
    new, out = ref.xorshift_star(xs)
    for x, n_ref, o_ref in zip(xs, new, out):
        n, o = K.xorshift_next(x)
        assert (n, o) == (n_ref, o_ref)


def test_normal_from_bits_matches_reference():
    rng = np.random.default_rng(4)
    rs = np.concatenate([rng.integers(0, 2**64, size=500, dtype=np.uint64),
                         np.array([0, 2**64 - 1], dtype=np.uint64)])
    got = np.array([K.normal_from_bits(r) for r in rs])
    # Both are float64 sums of the same four terms in the same order.
    np.testing.assert_allclose(got, ref.irwin_hall(rs), rtol=0, atol=4 * np.finfo(np.float64).eps)
    assert got.min() == pytest.approx(-2 * math.sqrt(3) * (1 - 1 / 65536))
    assert got.max() == pytest.approx(2 * math.sqrt(3) * (1 - 1 / 65536))


@pytest.mark.parametrize("row", [0, 3, 99])
def test_fill_normals_matches_reference(row):
    base = 987654321987
    state = np.empty(K.LANES, np.uint64)
    K.seed_lanes(state, np.uint64(base), row)
    buf = np.empty(K.LANES * 64, np.float32)
    K.fill_normals(state, buf)
    np.testing.assert_array_equal(buf, ref.lane_normals(base, row, buf.size), strict=True)
    # fill_normals continues each lane where it stopped.
    more = np.empty(K.LANES * 2, np.float32)
    K.fill_normals(state, more)
    np.testing.assert_array_equal(more, ref.lane_normals(base, row, buf.size + more.size)[buf.size:])
    # Its float32 form is the Irwin-Hall formula up to float32 rounding of values
    # of magnitude <= 2 sqrt(3) (three roundings).
    exact = ref.irwin_hall(ref.lane_draws(base, row, buf.size))
    np.testing.assert_allclose(buf, exact, rtol=0, atol=3 * EPS32 * 2 * math.sqrt(3))


def test_normal_generator_statistics():
    # 64 rows x 16384 = 2**20 normals, as the periphery draws them (one stream set per row).
    n_rows, per_row = 64, 16384
    z = np.empty((n_rows, per_row), np.float32)
    state = np.empty(K.LANES, np.uint64)
    for row in range(n_rows):
        K.seed_lanes(state, np.uint64(0xC0FFEE), row)
        K.fill_normals(state, z[row])
    x = z.astype(np.float64).ravel()
    n = x.size
    mean, var = x.mean(), x.var()
    kurt = ((x - mean) ** 4).mean() / var**2 - 3.0
    # Mean: SE 1/sqrt(n) ~ 1e-3, allow 5 SE.  Variance: SE sqrt((mu4 - 1)/n) = sqrt(1.7/n)
    # ~ 1.3e-3, allow 5 SE.  Excess kurtosis of Irwin-Hall n=4 is -6/(5*4) = -0.3;
    # SE of the sample kurtosis < sqrt(24/n) ~ 5e-3, allow 6 SE.
    assert abs(mean) < 5 / math.sqrt(n)
    assert abs(var - 1.0) < 5 * math.sqrt(1.7 / n)
    assert abs(kurt - (-0.3)) < 6 * math.sqrt(24 / n)
    assert np.abs(z).max() <= np.float32(2 * math.sqrt(3))
    assert np.abs(z).max() > 3.0  # the tails reach close to the cut
    # Independence: lag-1 within rows (lanes interleave) and between neighbouring rows;
    # a correlation's SE is 1/sqrt(n), allow 5 SE.
    lag1 = np.corrcoef(z[:, :-1].ravel(), z[:, 1:].ravel())[0, 1]
    lag16 = np.corrcoef(z[:, :-16].ravel(), z[:, 16:].ravel())[0, 1]
    rows = np.corrcoef(z[:-1].ravel(), z[1:].ravel())[0, 1]
    for r in (lag1, lag16, rows):
        assert abs(r) < 5 / math.sqrt(n)


# -- DAC -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_in", [1, 15, 16, 37, 300])
@pytest.mark.parametrize("in_range,bits", [(1.0, 8), (0.5, 4), (2.0, None), (math.inf, None)])
def test_dac_kernel_matches_reference(n_in, in_range, bits):
    rng = np.random.default_rng(n_in)
    x = (rng.normal(0.0, 0.8, (9, n_in)) * (1 if math.isfinite(in_range) else 100)).astype(np.float32)
    x[0, 0] = 5.0  # clipped (or passed, for an infinite range)
    x[-1] = 0.0
    step = in_range / (2 ** (bits - 1) - 1) if bits is not None else 0.0
    out = np.empty_like(x)
    sq = np.full(9, np.nan)
    ab = np.full(9, np.nan)
    K.dac_kernel(x, out, float(in_range), float(step), sq, ab)
    want, sq_ref, ab_ref = ref.dac(x, in_range, step)
    np.testing.assert_array_max_ulp(out, want, maxulp=1)
    np.testing.assert_array_equal(out, want)  # same float32 operations: exact
    # Row sums: float32 partial sums of n_in / LANES terms each, then float64.
    tol = (n_in // K.LANES + 2) * EPS32
    np.testing.assert_allclose(sq, sq_ref, rtol=tol, atol=0)
    np.testing.assert_allclose(ab, ab_ref, rtol=tol, atol=0)
    if bits is not None:
        levels = np.round(out / step)
        np.testing.assert_allclose(out, levels * step, rtol=f32_tol(2), atol=0)
        assert np.abs(levels).max() <= 2 ** (bits - 1) - 1


# -- periphery -----------------------------------------------------------------------------------
NO_ROWS = np.zeros(0, np.float64)
NO_COLS = np.zeros(0, np.float32)


def _periphery_case(rng, batch, n, soft):
    u = rng.normal(0.6, 1.0, (batch, n)).astype(np.float32)
    bias = rng.normal(0.0, 0.3, n).astype(np.float32)
    if soft:
        gain = np.exp(rng.normal(0.0, 0.5, n)).astype(np.float32)
        offset = rng.normal(0.0, 0.06, n).astype(np.float32)
        curv = np.clip(rng.normal(0.3, 0.5, n), -0.45, 2.0).astype(np.float32)
        sat = (rng.uniform(0.3, 1.5, n) * 2.0).astype(np.float32)
    else:
        gain, offset, curv = np.ones(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32)
        sat = np.full(n, np.inf, np.float32)
    return u, bias, gain, offset, curv, sat


def _noise_case(rng, noise, batch, n):
    """(out_var, noise_var_rows, dev_rows, dev_cols) for a named noise setting."""
    out_var = 0.05**2 if noise in ("output", "all") else 0.0
    rows = rng.uniform(0.0, 0.02, batch) if noise in ("per_row", "all") else NO_ROWS
    if rows.size:
        rows[3] = 0.0
    if noise in ("device", "all"):
        # Product form: per-output variance dev_rows[b] * dev_cols[j]; a row without drive
        # (0: no per-device noise there) and columns without noise (0).
        dev_rows = rng.uniform(0.0, 0.05, batch)
        dev_rows[2] = 0.0
        dev_cols = rng.uniform(0.0, 2.0, n).astype(np.float32)
        dev_cols[::4] = 0.0
    else:
        dev_rows, dev_cols = NO_ROWS, NO_COLS
    return out_var, rows, dev_rows, dev_cols


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("adc_bits", [None, 4, 8])
@pytest.mark.parametrize("noise", ["none", "output", "per_row", "device", "all"])
@pytest.mark.parametrize("n", [5, 16, 41])
def test_periphery_kernel_matches_reference(soft, adc_bits, noise, n):
    rng = np.random.default_rng(n + 7 * (adc_bits or 0) + soft)
    batch = 11
    u, bias, gain, offset, curv, sat = _periphery_case(rng, batch, n, soft)
    R = 2.0
    step = R / (2**adc_bits - 1) if adc_bits is not None else 0.0
    out_var, rows, dev_rows, dev_cols = _noise_case(rng, noise, batch, n)
    seed = int(rng.integers(0, 2**63))
    got = u.copy()
    K.periphery_kernel(got, bias, 1.0, rows, dev_rows, dev_cols, out_var, np.uint64(seed), soft, gain, offset,
                       curv, sat, R, step)
    want = ref.periphery(u, bias, 1.0, rows, dev_rows, dev_cols, out_var, seed, soft, gain, offset, curv, sat,
                         R, step)
    np.testing.assert_array_max_ulp(got, want, maxulp=1)
    assert got.dtype == np.float32
    assert (got >= 0).all() and (got <= np.float32(R)).all()


def test_periphery_device_noise_is_the_product_form():
    # Noise of output (b, j) without neuron or converter: the normals of row b times
    # sqrt(out_var + rows[b] + dev_rows[b] * dev_cols[j]).  Float32 error: the sum with
    # u = 8 rounds to half an ulp of 8..16 (8 eps32), and the float32 std (a sum, a product,
    # a square root: a few eps32 relative) multiplies normals below 3.5: 16 eps32 in all.
    rng = np.random.default_rng(31)
    batch, n = 6, 37
    u = np.full((batch, n), 8.0, np.float32)  # noise < 2: far from the ReLU corner
    out_var, rows, dev_rows, dev_cols = _noise_case(rng, "all", batch, n)
    got = u.copy()
    ones, zeros = np.ones(n, np.float32), np.zeros(n, np.float32)
    K.periphery_kernel(got, zeros, 1.0, rows, dev_rows, dev_cols, out_var, np.uint64(9), False, ones, zeros,
                       zeros, np.full(n, np.inf, np.float32), math.inf, 0.0)
    var = out_var + rows[:, None] + dev_rows[:, None] * dev_cols[None, :].astype(np.float64)
    z = np.stack([ref.lane_normals(9, b, n)[:n] for b in range(batch)]).astype(np.float64)
    noise = got.astype(np.float64) - 8.0
    np.testing.assert_allclose(noise, np.sqrt(var) * z, rtol=0, atol=16 * EPS32)
    # Row 2 has no device noise: its std is sqrt(out_var + rows[2]) in every column.
    np.testing.assert_allclose(noise[2], math.sqrt(out_var + rows[2]) * z[2], rtol=0, atol=16 * EPS32)


def test_periphery_relu_without_adc_range():
    rng = np.random.default_rng(1)
    u, bias, gain, offset, curv, sat = _periphery_case(rng, 6, 20, False)
    u[0, :5] = 1e30
    got = u.copy()
    K.periphery_kernel(got, bias, 0.5, NO_ROWS, NO_ROWS, NO_COLS, 0.0, np.uint64(5), False, gain, offset, curv,
                       sat, math.inf, 0.0)
    want = ref.periphery(u, bias, 0.5, NO_ROWS, NO_ROWS, NO_COLS, 0.0, 5, False, gain, offset, curv, sat,
                         math.inf, 0.0)
    np.testing.assert_array_equal(got, want)
    # Without noise and converters the ReLU path is exactly max(u + level * bias, 0).
    np.testing.assert_array_equal(got, np.maximum(u + np.float32(0.5) * bias, np.float32(0)))


@pytest.mark.parametrize("noise", ["output", "device"])
def test_periphery_noise_of_a_row_depends_only_on_seed_and_row(noise):
    rng = np.random.default_rng(2)
    u, bias, gain, offset, curv, sat = _periphery_case(rng, 8, 33, True)
    out_var, rows, dev_rows, dev_cols = _noise_case(rng, noise, 8, 33)
    full = u.copy()
    K.periphery_kernel(full, bias, 1.0, rows, dev_rows, dev_cols, out_var, np.uint64(77), True, gain, offset,
                       curv, sat, 2.0, 0.0)
    head = u[:3].copy()
    K.periphery_kernel(head, bias, 1.0, rows[:3], dev_rows[:3], dev_cols, out_var, np.uint64(77), True, gain,
                       offset, curv, sat, 2.0, 0.0)
    np.testing.assert_array_equal(full[:3], head)


def test_soft_neuron_kernel_form_is_the_spec_form():
    # NeuronSpec writes the neuron with offset and saturation in units of R and a
    # curvature per output unit; the kernel takes them in output units and a
    # dimensionless curvature: offset_out = offset R, sat_out = saturation R,
    # curv = curvature R.  Both forms must agree (float32 vs float64).
    rng = np.random.default_rng(8)
    n, R = 50, 2.0
    u, bias, gain, offset, curv, sat = _periphery_case(rng, 40, n, True)
    u = rng.uniform(-0.5, 3.0, (40, n)).astype(np.float32)
    got = u.copy()
    K.periphery_kernel(got, np.zeros(n, np.float32), 1.0, NO_ROWS, NO_ROWS, NO_COLS, 0.0, np.uint64(0), True,
                       gain, offset, curv, sat, R, 0.0)
    want = ref.soft_neuron(u.astype(np.float64), gain.astype(np.float64), offset / R, curv / R, sat / R, R)
    np.testing.assert_allclose(got, np.minimum(want, R), rtol=f32_tol(16), atol=f32_tol(16) * R)


# -- exact programming -------------------------------------------------------------------------
@pytest.mark.parametrize("track_rows", [False, True])
def test_add_exact_matches_reference(track_rows):
    rng = np.random.default_rng(21)
    w = rng.normal(0, 0.3, (9, 7)).astype(np.float32)
    delta = rng.normal(0, 0.05, (9, 7)).astype(np.float32)
    delta[rng.random((9, 7)) < 0.5] = 0.0
    delta[4] = 0.0  # a row left alone
    gsum = np.full(9, -1.0)
    want_w, want_n, want_rows, want_gsum = ref.add_exact(w, delta, track_rows, gsum, 0.8)
    got_w = w.copy()
    n, rows = K.add_exact(got_w, delta, track_rows, gsum, 0.8)
    np.testing.assert_array_equal(got_w, want_w, strict=True)  # one float32 add each
    assert (n, rows) == (want_n, want_rows)
    # Row sums: float64 sums of 7 float32 magnitudes.
    np.testing.assert_allclose(gsum, want_gsum, rtol=1e-14)


# -- drift ---------------------------------------------------------------------------------------
def test_ln_fast_and_exp_bounded_match_the_exact_functions():
    # ln_fast: the atanh series to f^11, off by at most LN_FAST_ERR (absolute).
    x = np.concatenate([np.logspace(-300, 300, 2001), np.linspace(0.5, 2.0, 1001), [1.0, 5e-324, 1.7e308]])
    got = np.array([K.ln_fast(v) for v in x])
    assert (np.abs(got - ref.ln_fast(x)) <= ref.LN_FAST_ERR).all()
    assert K.ln_fast(1.0) == 0.0
    # ln_rows, the row-wise form (x read through its int64 view), to the same bound on normal
    # numbers (it reads the exponent field: subnormals, which no caller passes, are not covered).
    x = x[x >= np.finfo(np.float64).smallest_normal]
    out, scratch = np.full(x.size, np.nan), np.empty(x.size)
    S.ln_rows(x, out, x.view(np.int64), scratch.view(np.int64))
    assert (np.abs(out - ref.ln_fast(x)) <= ref.LN_FAST_ERR).all()
    # exp_neg(x) = exp_bounded(-x / 8) ** 8 for x >= 0, x capped at 64.
    x = np.concatenate([np.linspace(0.0, 64.0, 2001), [1e-12]])
    got = np.array([S.exp_neg(v) for v in x])
    assert (np.abs(got / ref.exp_bounded(-x) - 1.0) <= ref.exp_neg_error(x)).all()
    assert S.exp_neg(1e3) == pytest.approx(math.exp(-64.0), rel=1e-4)  # the cap: below 2e-28
    # Its docstring promises 1e-7; the bound says so up to x = 34 (it reaches 2e-5 at 64),
    # beyond what the drift (x = nu ln(1 + age / t0) < 5) and read-noise laws ask of it.
    assert (np.abs(got / ref.exp_bounded(-x) - 1.0)[x <= 34.0] < 1e-7).all()
    # exp_bounded: within its truncation bound on the documented range |x| <= 8.
    x = np.concatenate([np.linspace(-8.0, 8.0, 1601), [0.0, 1e-12, -1e-12]])
    got = np.array([K.exp_bounded(v) for v in x])
    rel = np.abs(got / ref.exp_bounded(x) - 1.0)
    assert (rel <= ref.exp_bounded_error(x)).all()
    # The docstring promises 1e-8 on |x| <= 8; that holds for |x| <= 4 (the bound reaches
    # 1e-8 at |x| = 4.2 and 2.6e-6 at 8).  device_step calls it with s N - s^2 / 2, |.| <=
    # 2 sqrt(3) + 1/2 < 4 for step_dtod <= 1.
    assert rel[np.abs(x) <= 4.0].max() < 1e-8


def test_float32_ln_and_exp_rows_match_the_exact_functions():
    # ln_rows32 (the refresh kernel's): within ln32_error of ln at the float32 value, on normal
    # float32 numbers over their whole range and densely around 1 and sqrt(2) (the fold).
    x = np.concatenate([np.logspace(-37.9, 38.4, 4001), np.linspace(0.5, 2.0, 3001),
                        [1.0, 1.4142135, 1.4142137, np.finfo(np.float32).smallest_normal]]).astype(np.float32)
    out, scratch = np.full(x.size, np.nan, np.float32), np.empty(x.size, np.float32)
    S.ln_rows32(x, out, x.view(np.int32), scratch.view(np.int32))
    err = np.abs(out - ref.ln_fast(x))
    assert (err <= ref.ln32_error(x)).all()
    assert err.max() > 0.0 and out[x == 1.0][0] == 0.0
    # exp_rows32: within EXP32_ERR (relative) on [-80, 80]; beyond, the argument is clipped.
    x = np.concatenate([np.linspace(-80.0, 80.0, 16001), [0.0, 1e-12, -0.3465736, 0.3465736]]).astype(np.float32)
    out = np.full(x.size, np.nan, np.float32)
    S.exp_rows32(x, out, np.empty(x.size, np.float32).view(np.int32))
    assert (np.abs(out / ref.exp_bounded(x) - 1.0) <= ref.EXP32_ERR).all()
    clip = np.array([-1e3, 1e3], np.float32)
    S.exp_rows32(clip, out[:2], np.empty(2, np.float32).view(np.int32))
    np.testing.assert_allclose(out[:2], np.exp([-80.0, 80.0]), rtol=ref.EXP32_ERR)


def test_drift_factor_matches_reference():
    t0 = 20.0
    ages = np.concatenate([[-5.0, 0.0, 1e-9, 1e-6, 0.0199, 0.02, 0.0201, 0.999, 1.0, 1.001],
                           np.logspace(-3, 12, 60)])
    for nu in (0.0, 0.001, 0.05, 0.1, 0.26, 0.5, 1.0, 4.5):
        got = np.array([K.drift_factor(a, nu, t0) for a in ages])
        want = ref.drift_factor(ages, nu, t0)
        assert (np.abs(got - want) <= ref.drift_factor_error(ages, nu, t0) * want).all(), nu
        assert (got[ages <= 0] == 1.0).all()


def test_drift_exponent_matches_reference():
    dp = drift_parameters(devices.PRESETS["pcm"])
    rng = np.random.default_rng(9)
    g = np.concatenate([[0.0, 1e-7, 1e-6, 0.2, 0.33, 1.0, 1.4], rng.uniform(0, 1.5, 200)])
    xi = rng.standard_normal(g.size)
    got = np.array([K.drift_exponent(a, b, dp) for a, b in zip(g, xi)])
    # ln g is ln_fast's: mu and sigma move by their log coefficients times LN_FAST_ERR.
    atol = (abs(dp[1]) + abs(dp[5]) * np.abs(xi)) * ref.LN_FAST_ERR + 4 * EPS64
    np.testing.assert_array_less(np.abs(got - ref.drift_exponent(g, xi, dp)), atol)


# -- parameter vectors -------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [PCM, RRAM], ids=["pcm", "rram"])
def test_parameter_vectors_have_the_reference_layout(spec):
    # The kernels index the vectors with S.PP_* / S.RP_*; the references read them by name.
    pp_index = [S.PP_STEP, S.PP_STEP_DTOD, S.PP_UD, S.PP_UD_DTOD, S.PP_GMAX_DTOD, S.PP_PULSE_STD,
                S.PP_REFRESH_AT, S.PP_RESET_LEVEL, S.PP_RESET_STD, S.PP_NU_STEP, S.PP_NU_REDRAW,
                S.PP_VERIFY_READS, S.PP_VE_N, S.PP_VE0]
    assert pp_index == list(range(len(ref.PP_FIELDS)))
    rp_index = [S.RP_LAW, S.RP_QS, S.RP_QEXP, S.RP_QFLOOR, S.RP_QMAX, S.RP_TREAD, S.RP_GMIN, S.RP_SPAN]
    assert rp_index == list(range(len(ref.RP_FIELDS)))
    assert [S.F_GSAT, S.F_STEP, S.F_UPDOWN, S.F_XI, S.F_FAIL, S.F_FAIL_ON] == list(range(len(ref.FAB_FIELDS)))
    assert int(S.UNLIMITED) == ref.UNLIMITED
    pp, rp = programming_parameters(spec), read_noise_parameters(spec)
    p, c, r = spec.programming, spec.conductance, spec.read_noise
    want = {"step": p.step, "step_dtod": p.step_dtod, "up_down": p.up_down, "up_down_dtod": p.up_down_dtod,
            "g_max_dtod": c.g_max_dtod, "pulse_std": p.pulse_std, "refresh_at": p.refresh_at,
            "reset_level": p.reset_level, "reset_std": p.reset_std, "nu_step": nu_step(spec),
            "nu_redraw": float(spec.drift.nu_redraw), "verify_reads": p.verify_reads,
            "ve_n": len(p.verify_error_us)}
    assert {k: ref.pp_get(pp, k) for k in want} == want
    assert pp.size == S.PP_LEN == ref.PP_FIELDS.index("ve0") + 5
    want = {"law": float(r.device_law == "pcm_1f"), "q_s": r.q_s, "q_exponent": r.q_exponent,
            "q_floor": r.q_floor, "q_max": r.q_max, "t_read": r.t_read_s,
            "gmin_rel": c.g_min_us / c.g_max_us, "span_rel": (c.g_max_us - c.g_min_us) / c.g_max_us}
    assert {k: ref.rp_get(rp, k) for k in want} == want


# -- fabrication constants ---------------------------------------------------------------------------
@pytest.mark.parametrize("key", KEYS)
def test_fabrication_hashes_match_reference(key):
    rng = np.random.default_rng(key % 1000)
    idx = np.concatenate([[0, 1, 2, 2**31, 2**40], rng.integers(0, 2**40, 200)]).astype(np.uint64)
    for f, field in enumerate(ref.FAB_FIELDS):
        bits = np.array([S.fab_bits(np.uint64(key), f, i) for i in idx], dtype=np.uint64)
        np.testing.assert_array_equal(bits, ref.fab_bits(key, field, idx))
        # fab_normal: float64 sums of the same four terms (atol as for normal_from_bits).
        normal = np.array([S.fab_normal(np.uint64(key), f, i) for i in idx])
        np.testing.assert_allclose(normal, ref.fab_normal(key, field, idx), rtol=0, atol=4 * EPS64)
        # fab_uniform: the top 53 bits times 2**-53, exact in float64.
        uniform = np.array([S.fab_uniform(np.uint64(key), f, i) for i in idx])
        np.testing.assert_array_equal(uniform, ref.fab_uniform(key, field, idx))
        assert ((uniform >= 0) & (uniform < 1)).all()
    # Different fields and different keys give different constants.
    assert len({int(ref.fab_bits(key, field, 5)) for field in ref.FAB_FIELDS}) == len(ref.FAB_FIELDS)
    assert ref.fab_bits(key, "xi", 5) != ref.fab_bits(key + 1, "xi", 5)


@pytest.mark.parametrize("spec", [PCM, RRAM, devices.variant("rram", programming={"step_dtod": 1.0,
                                                                                   "up_down_dtod": 0.5},
                                                              conductance={"g_max_dtod": 0.5})],
                         ids=["pcm", "rram", "wide"])
def test_device_constants_match_reference(spec):
    pp = programming_parameters(spec)
    key, shape = 2**62 + 12345, (2, 9, 31)
    idx = np.arange(math.prod(shape)).reshape(shape)
    gsat = np.array([S.device_gsat(np.uint64(key), i, pp) for i in idx.ravel()]).reshape(shape)
    want = ref.device_gsat(key, idx, pp)
    np.testing.assert_allclose(gsat, want, rtol=4 * EPS64, atol=0)
    assert (gsat >= 0.5).all() and (gsat <= 1.5).all()
    for up in (True, False):
        step = np.array([S.device_step(np.uint64(key), i, pp, up) for i in idx.ravel()]).reshape(shape)
        # exp_bounded's error at the argument s N - s^2 / 2, plus float64 rounding.
        s = ref.pp_get(pp, "step_dtod")
        arg = s * ref.fab_normal(key, "step", idx) - 0.5 * s * s
        want_step = ref.device_step(key, idx, pp, up)
        assert (np.abs(step / want_step - 1.0) <= ref.exp_bounded_error(arg) + 8 * EPS64).all()
    # The vectorized kernel stores them as float32: one rounding of nearly the same value.
    out = tuple(np.empty(shape, np.float32) for _ in range(3))
    S.device_constants(np.uint64(key), pp, *out)
    np.testing.assert_array_max_ulp(out[0], want.astype(np.float32), maxulp=1)
    np.testing.assert_array_max_ulp(out[1], ref.device_step(key, idx, pp, True).astype(np.float32), maxulp=1)
    np.testing.assert_array_max_ulp(out[2], ref.device_step(key, idx, pp, False).astype(np.float32), maxulp=1)
    xi = np.empty(shape, np.float64)
    S.fixed_xi(np.uint64(key), xi)
    np.testing.assert_allclose(xi, ref.fixed_xi(key, shape), rtol=0, atol=4 * EPS64)


@pytest.mark.parametrize("median,dtod,share", [(-1.0, 1.0, 0.5), (3.0e9, 1.0, 0.3), (1.0e3, 0.0, 1.0),
                                               (5.0e5, 2.5, 0.0)])
def test_failure_times_match_reference(median, dtod, share):
    rng = np.random.default_rng(int(median) % 97)
    shape = (2, 7, 13)
    life = rng.integers(0, 50, shape).astype(np.uint32)
    life[rng.random(shape) < 0.3] = 0
    life[0, 0] = S.UNLIMITED
    key = 55555
    fail_at = np.full(shape, np.nan)
    fail_on = np.full(shape, -1, np.int8)
    first = S.failure_times(np.uint64(key), life, median, dtod, share, fail_at, fail_on)
    t, on, first_ref = ref.failure_times(key, life, median, dtod, share)
    # The same Box-Muller normal from the same uniforms, |z| <= sqrt(2 ln 2^53) = 8.6, with
    # log, sqrt, cos and exp from libm against numpy (a few ulps each): |dz| < 16 |z| eps64,
    # and exp(dtod z) turns that into a relative error of dtod |dz|.
    rtol = (dtod * 16 * 8.6 + 4) * EPS64
    np.testing.assert_allclose(fail_at, t, rtol=rtol)
    np.testing.assert_array_equal(fail_on, on)
    assert first == pytest.approx(first_ref, rel=rtol)
    assert first_ref == (t[life != 0].min() if median > 0 else math.inf)
    # Every device stuck: no failure to come.
    assert S.failure_times(np.uint64(key), np.zeros(shape, np.uint32), median, dtod, share, fail_at,
                           fail_on) == math.inf


# -- state-dependent laws ----------------------------------------------------------------------------
def test_quantize_nu_matches_reference():
    step = 0.1575 / 65535
    values = [0.0, 1e-12, 0.49 * step, 0.51 * step, 2.5 * step, 3.5 * step, 0.05, 0.1575, 0.2, 1e9]
    for nu in values:
        for s in (step, 1e-3, 0.0, -1.0):
            assert int(S.quantize_nu(nu, s)) == ref.quantize_nu(nu, s), (nu, s)
    assert int(S.quantize_nu(1e9, step)) == 65535


@pytest.mark.parametrize("spec", [PCM, RRAM], ids=["pcm", "rram"])
def test_verify_sigma_matches_reference_and_the_spec(spec):
    pp, rp = programming_parameters(spec), read_noise_parameters(spec)
    c, coeffs = spec.conductance, np.asarray(spec.programming.verify_error_us)
    span_us = c.g_max_us - c.g_min_us
    g = np.concatenate([np.linspace(0.0, 1.5, 301), [1e-9]])
    gmin, span = ref.rp_get(rp, "gmin_rel"), ref.rp_get(rp, "span_rel")
    got = np.array([S.verify_sigma(v, pp, gmin, span) for v in g])
    want = ref.verify_sigma(g, pp, gmin, span)
    # Both are Horner sums of the same coefficients; near a zero of the polynomial the
    # absolute error is set by the size of its terms.
    scale = np.abs(coeffs / span_us) @ np.maximum(gmin + g * span, 1.0) ** np.arange(coeffs.size)[:, None]
    np.testing.assert_array_less(np.abs(got - want), 8 * EPS64 * scale + 1e-300)
    # The spec: sigma_us = max(sum_m c_m (G / g_max)^m, 0) with G = g_min + g span.
    x = (c.g_min_us + g * span_us) / c.g_max_us
    sigma_us = np.maximum(sum(cm * x**m for m, cm in enumerate(coeffs)), 0.0)
    np.testing.assert_allclose(want * span_us, sigma_us, rtol=1e-12, atol=1e-12 * np.abs(coeffs).sum())
    assert (got >= 0).all() and got.max() > 0


@pytest.mark.parametrize("spec", [PCM, devices.variant("rram", read_noise={"device_law": "pcm_1f"}),
                                  RRAM], ids=["pcm", "rram-law", "no-law"])
def test_device_sigma_matches_reference_and_the_spec(spec):
    rp, t0 = read_noise_parameters(spec), spec.drift.t0_s
    rng = np.random.default_rng(17)
    g_prog = np.concatenate([[0.0, 0.0, 1e-4, 1.0, 1.4], rng.uniform(0, 1.2, 150)])
    g_now = g_prog * rng.uniform(0.6, 1.0, g_prog.size)
    age = np.concatenate([[0.0, 1e-9, 5.0, 1e3, 1e8], rng.uniform(0, 1e6, 150)])
    got = np.array([S.device_sigma(a, b, c, rp, t0) for a, b, c in zip(g_prog, g_now, age)])
    want = ref.device_sigma(g_prog, g_now, age, rp, t0)
    # The kernel's power and logarithm are exp_bounded and ln_fast.
    assert (np.abs(got - want) <= ref.device_sigma_error(g_prog, age, rp, t0) * want).all()
    if spec.read_noise.device_law == "none":
        assert (got == 0).all()
        return
    # The spec in microsiemens: sigma_G = G(t) Q_s sqrt(ln((t + t_read) / (2 t_read))), t = age + t0.
    r, c = spec.read_noise, spec.conductance
    span_us = c.g_max_us - c.g_min_us
    G_now = c.g_min_us + g_now * span_us
    q = np.minimum(r.q_s / np.maximum(((c.g_min_us + g_prog * span_us) / c.g_max_us) ** r.q_exponent, r.q_floor),
                   r.q_max)
    sigma_us = np.where(g_now > 0, G_now * q * np.sqrt(np.log((age + t0 + r.t_read_s) / (2 * r.t_read_s))), 0.0)
    np.testing.assert_allclose(want * span_us, sigma_us, rtol=1e-12)
    assert want.max() > 0


def test_pulses_to_matches_reference():
    rng = np.random.default_rng(23)
    cases = [(0.0, 0.5, 1.0, 0.01, 1000), (0.5, 0.5, 1.0, 0.01, 1000), (0.7, 0.2, 1.0, 0.01, 1000),
             (0.0, 1.2, 1.0, 0.01, 1000), (0.0, 0.9, 1.0, 1e-5, 1000), (0.1, 0.2, 0.8, 2.0, 1000),
             (0.0, 0.999, 1.0, 0.05, 7)]
    for _ in range(300):
        gsat = rng.uniform(0.5, 1.5)
        cases.append((rng.uniform(0, gsat), rng.uniform(0, gsat), gsat, rng.uniform(0.001, 0.1), 1000))
    for c in cases:
        assert S.pulses_to(*c) == ref.pulses_to(*c), c
    assert ref.pulses_to(0.0, 0.9, 1.0, 1e-5, 1000) == 1000  # the cap
    assert ref.pulses_to(0.7, 0.2, 1.0, 0.01, 1000) == 1  # at least one


def test_soft_pulses_matches_reference():
    # Reference: n pulses one by one on the mean path, the per-pulse variances summed along
    # it; the kernel: the closed form.  Both are float64; n roundings of values <= g_sat.
    for gsat in (0.5, 1.0, 1.5):
        for g in (0.0, 0.3 * gsat, 0.9 * gsat, gsat):
            for step in (0.005, 0.05, 0.5, 2.0):  # 2.0: the relative step is capped at 0.999
                for n in (1, 2, 7, 32, 257):
                    for up in (True, False):
                        for ps, xi in ((0.0, 0.0), (0.6, -3.4), (0.6, 1.3), (3.0, 2.0)):
                            got = S.soft_pulses(g, gsat, step, n, up, ps, xi)
                            want = ref.soft_pulses(g, gsat, step, n, up, ps, xi)
                            assert abs(got - want) <= 64 * (n + 2) * EPS64 * gsat, (g, gsat, step, n, up, ps, xi)
                            assert 0.0 <= got <= gsat


# -- drift refresh -----------------------------------------------------------------------------------
T_BASE, NOW = 1.0e3, 6.0e3


def _device_state(rng, shape, gsat, n_step, t0, future=True):
    """g (float32, within [0, g_sat]), t_rel (float32), nu (uint16) with the corner cases: g = 0,
    devices just programmed, young devices (age < 1e-3 t0: the series branch of
    ``drift_factor``), devices programmed 'in the future' if ``future`` (age < 0: no drift),
    nu = 0."""
    g = (rng.uniform(0.0, 0.7, shape) * gsat).astype(np.float32)
    near = rng.random(shape) < 0.2  # at or past the refresh level of set-only devices
    g[near] = (rng.uniform(0.76, 0.99, near.sum()) * gsat[near]).astype(np.float32)
    g.flat[0] = 0.0
    t_rel = rng.uniform(-T_BASE, NOW - T_BASE, shape)
    rows = shape[1]
    t_rel[0, min(1, rows - 1)] = NOW - T_BASE
    t_rel[1, rows - 1] = NOW - T_BASE - rng.uniform(0.0, 1e-3 * t0, shape[2])
    if future:  # (ages below -t0 are outside the read-noise law)
        t_rel[1, 0, :2] = NOW - T_BASE + 0.5 * t0
    nu = rng.integers(0, int(0.12 / n_step) if n_step > 0 else 1000, shape).astype(np.uint16)
    nu[1, 0] = 0
    return g, t_rel.astype(np.float32), nu


@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 5), (40, 33)])
@pytest.mark.parametrize("spec", [PCM, devices.variant("rram", read_noise={"device_law": "pcm_1f"}), RRAM,
                                  devices.variant("pcm", read_noise={"t_read_s": 5.0})],
                         ids=["pcm", "rram-law", "no-law", "pcm-slow-read"])
@pytest.mark.parametrize("keep_g_now", [True, False])
def test_refresh_kernel_matches_reference(rows, cols, spec, keep_g_now):
    rng = np.random.default_rng(rows * cols + 3 * keep_g_now)
    dp, rp, n_step, w_max = drift_parameters(spec), read_noise_parameters(spec), nu_step(spec), 0.37
    shape = (2, rows, cols)
    gsat = ref.device_gsat(7, np.arange(2 * rows * cols).reshape(shape), programming_parameters(spec))
    g, t_rel, nu = _device_state(rng, shape, gsat, n_step, spec.drift.t0_s)
    w = np.full((rows, cols), np.nan, np.float32)
    gsum, rvar, cvar = np.full(rows, np.nan), np.full(rows, np.nan), np.full(cols, np.nan)
    g_now = np.full(shape if keep_g_now else (0, 0, 0), np.nan, np.float32)
    P.refresh_kernel(g, t_rel, nu, n_step, T_BASE, NOW, dp, rp, w_max, w, gsum, rvar, cvar, g_now)
    w_ref, gsum_ref, rvar_ref, cvar_ref, gnow_ref = ref.refresh_kernel(g, t_rel, nu, n_step, T_BASE, NOW, dp, rp,
                                                                       w_max)
    # Per device: the kernel's drifted conductance is good to drift_factor_error32 (float32
    # arithmetic, fast ln / exp), its read-noise std to device_sigma_error32 beyond that; a
    # variance doubles the relative error.
    age = NOW - (T_BASE + t_rel.astype(np.float64))
    e_drift = ref.drift_factor_error32(age, nu.astype(np.float64) * n_step, spec.drift.t0_s)
    e_sigma = (ref.device_sigma_error32(g, age, rp, spec.drift.t0_s, P.TIME_LOG_SHORTCUT)
               if spec.read_noise.device_law != "none" else 0.0)
    dg = gnow_ref * e_drift  # bound on each drifted conductance's error
    var_dev = (ref.device_sigma(g, gnow_ref, age, rp, spec.drift.t0_s) * w_max) ** 2
    dvar = (var_dev * 2.0 * (e_drift + e_sigma)).sum(axis=0)
    # w_eff: that error on g+ f+ - g- f-, then one rounding to float32 (half an ulp).
    assert (np.abs(w - w_ref) <= 0.5 * np.spacing(np.abs(w_ref).astype(np.float32)) + dg.sum(axis=0) * w_max).all()
    # Sums of positive float64 terms (2 cols or 2 rows of them): each term's bound, plus one
    # rounding per addition.
    assert (np.abs(gsum - gsum_ref) <= dg.sum(axis=(0, 2)) + 2 * cols * EPS64 * gsum_ref).all()
    assert (np.abs(rvar - rvar_ref) <= dvar.sum(axis=1) + 2 * cols * EPS64 * rvar_ref).all()
    assert (np.abs(cvar - cvar_ref) <= dvar.sum(axis=0) + 2 * rows * EPS64 * cvar_ref).all()
    if keep_g_now:  # float32 of a value within dg of the reference's: one ulp, or dg
        diff = np.abs(g_now.astype(np.float64) - gnow_ref)
        assert (diff <= np.maximum(np.spacing(gnow_ref.astype(np.float32)), dg)).all()
    if spec.read_noise.device_law == "none":
        assert (rvar == 0).all() and (cvar == 0).all()
    else:
        assert rvar.max() > 0
    np.testing.assert_allclose(rvar.sum(), cvar.sum(), rtol=(2 * rows * cols) * EPS64)


# -- programming: pulses, refresh of set-only pairs, program-and-verify --------------------------------
def _spec(set_only, drift_on=True, nu_redraw=True, pulse_std=None):
    """pcm (set-only, read-noise law, RESET spread, verify error) or rram (bidirectional, g_min > 0,
    up/down asymmetry) with the given drift and pulse-noise settings."""
    base = PCM if set_only else RRAM
    prog = {} if pulse_std is None else {"pulse_std": pulse_std}
    return devices.variant(base, drift={"enabled": drift_on, "nu_redraw": nu_redraw}, programming=prog)


def _layer_case(rng, rows, cols, spec, w_max=0.3, limited=True):
    """A layer's device state with stuck devices (life 0, nu 0), a pair with both devices stuck,
    devices about to wear out (life 1..5) and devices at or past the refresh level.  Without
    drift every nu is 0 (as a chip without drift holds them)."""
    pp = programming_parameters(spec)
    key = int(rng.integers(0, 2**63))
    shape = (2, rows, cols)
    gsat = ref.device_gsat(key, np.arange(2 * rows * cols).reshape(shape), pp)
    # No devices 'in the future': their read noise (refresh of a pair) is left unspecified
    # (devices._devstate.device_sigma takes the negative age, refresh_kernel counts it as 0).
    g, t_rel, nu = _device_state(rng, shape, gsat, nu_step(spec), spec.drift.t0_s, future=False)
    if not spec.drift.enabled:
        nu[:] = 0
    life = np.full(shape, S.UNLIMITED, np.uint32)
    stuck = rng.random(shape) < 0.1
    stuck[:, rows // 2, 0] = True
    if limited:
        life[:, rows - 2] = rng.integers(1, 6, (2, cols))
        life[1, rows - 3, : cols // 2] = rng.integers(1, 3, cols // 2)
    life[stuck] = 0
    nu[stuck] = 0
    w_eff = ((g[0].astype(np.float64) - g[1]) * w_max).astype(np.float32)
    row_gsum = g.astype(np.float64).sum(axis=(0, 2))
    return {"g": g, "t_rel": t_rel, "nu": nu, "life": life, "w_eff": w_eff, "row_gsum": row_gsum}, key


def _requests(rng, rows, cols, pulse_step):
    """Requests of whole pulses +- 0.3 of one (never a half), some zero, some beyond max_pulses."""
    k = rng.integers(-12, 13, (rows, cols)).astype(np.float64)
    k[0, -1] = 100.0
    if rows > 1:
        k[1, -1] = -100.0
    frac = rng.uniform(-0.3, 0.3, (rows, cols))
    frac[k == 0] = rng.choice([0.0, 0.3, -0.3])
    return ((k + frac) * pulse_step).astype(np.float32)


def _kernel_args(state, key, spec, set_only, row_gsum=True):
    """The state and constants the programming (``row_gsum``) or verify kernel takes."""
    arrays = [state[k] for k in ("g", "t_rel", "nu", "life", "w_eff")] + ([state["row_gsum"]] if row_gsum else [])
    return (*arrays, np.uint64(key), T_BASE, NOW, drift_parameters(spec), programming_parameters(spec),
            read_noise_parameters(spec), set_only, bool(spec.drift.enabled))


def _ref_layer(state, key, spec):
    return ref.Layer.copy_of(state["g"], state["t_rel"], state["nu"], state["life"], state["w_eff"], key, T_BASE,
                             NOW, drift_parameters(spec), programming_parameters(spec),
                             read_noise_parameters(spec), spec.drift.enabled)


def _drift_bound(state, spec):
    """Bound on the error of each device's drifted g as the kernels compute it (2, rows, cols),
    from :func:`reference.drift_factor_error`; beyond x = 64 the row-staged kernels' factor
    is e^-64 instead of smaller (an absolute error below g e^-64)."""
    t0 = spec.drift.t0_s
    age = NOW - (T_BASE + state["t_rel"].astype(np.float64))
    nu = state["nu"].astype(np.float64) * nu_step(spec)
    g = state["g"].astype(np.float64)
    return g * ref.drift_factor(age, nu, t0) * ref.drift_factor_error(age, nu, t0) + g * math.exp(-64.0)


def _assert_state_matches(got, want: ref.Layer, before, spec, w_max, want_gsum=None):
    """Kernel state against the reference's.

    life and t_rel: integer and float32 copies of the same numbers: equal.  g: float64
    arithmetic stored as float32, from drifted values good to ``_drift_bound``, device steps
    good to exp_bounded's error (< 1e-15 at the arguments used here), read noise to
    ``device_sigma_error`` (< 1e-6 relative): all far below a float32 ulp, so g may at most
    round to the neighbouring float32.  nu: the quantized exponent of a conductance the two
    compute with different roundings (and the kernel before its float32 rounding): below
    1e-9 apart, against a step of 4e-6, so at most one step, and rarely (expected ~3e-4 of the
    programmed devices).  w_eff and row_gsum: sums of moves, each off by the difference in g
    plus the error of the drifted value it started from; w_eff then rounds to float32.
    ``row_gsum`` is compared on every row, refreshed pairs included (see also
    test_program_kernel_row_sums_after_a_refresh_are_float64).
    """
    np.testing.assert_array_equal(got["life"], want.life)
    np.testing.assert_array_equal(got["t_rel"], want.t_rel)
    np.testing.assert_array_max_ulp(got["g"], want.g, maxulp=1)
    dnu = np.abs(got["nu"].astype(np.int64) - want.nu)
    assert (dnu <= 1).all() and np.count_nonzero(dnu) <= max(1, dnu.size // 100)
    dg = np.abs(got["g"].astype(np.float64) - want.g) + _drift_bound(before, spec)
    w_tol = w_max * dg.sum(axis=0) + np.spacing(np.abs(want.w_eff))
    assert (np.abs(got["w_eff"].astype(np.float64) - want.w_eff) <= w_tol).all()
    if want_gsum is not None:
        gsum_tol = dg.sum(axis=(0, 2)) + 4 * dg.shape[2] * EPS64 * np.abs(want_gsum)
        assert (np.abs(got["row_gsum"] - want_gsum) <= gsum_tol).all()
    assert got["nu"].dtype == np.uint16 and got["life"].dtype == np.uint32
    assert ((got["life"] == 0) <= (got["nu"] == 0)).all()  # stuck devices have nu = 0
    changed = (got["g"] != before["g"]) | (got["t_rel"] != before["t_rel"])
    assert not (changed & (before["life"] == 0)).any()  # stuck devices never change


def test_refresh_salt_is_the_documented_constant():
    assert int(PG.REFRESH_SALT) == ref.REFRESH_SALT


PROGRAM_SETTINGS = [(so, drift, redraw, ps) for so in (True, False) for drift in (True, False)
                    for redraw in (True, False) for ps in (0.0, 0.6) if drift or redraw]


@pytest.mark.parametrize("set_only,drift_on,nu_redraw,pulse_std", PROGRAM_SETTINGS)
def test_program_kernel_matches_reference(set_only, drift_on, nu_redraw, pulse_std):
    rng = np.random.default_rng(100 + 8 * set_only + 4 * drift_on + 2 * nu_redraw + int(pulse_std > 0))
    spec = _spec(set_only, drift_on, nu_redraw, pulse_std)
    rows, cols, w_max, max_pulses, seed = 9, 7, 0.3, 20, 4242
    pulse_step = spec.programming.step * w_max / 2
    state, key = _layer_case(rng, rows, cols, spec, w_max)
    delta = _requests(rng, rows, cols, pulse_step)
    got = {name: v.copy() for name, v in state.items()}
    counts = [np.full(rows, -1, np.int64) for _ in range(3)]
    PG.program_kernel(delta, *_kernel_args(got, key, spec, set_only), pulse_step, w_max, max_pulses,
                      np.uint64(seed), *counts)
    want, want_gsum = _ref_layer(state, key, spec), state["row_gsum"].copy()
    want_counts = ref.program_kernel(delta, want, want_gsum, set_only, pulse_step, w_max, max_pulses, seed)
    for c, wc, name in zip(counts, want_counts, ("row_pulses", "row_max", "row_verify")):
        np.testing.assert_array_equal(c, wc, err_msg=name)
    _assert_state_matches(got, want, state, spec, w_max, want_gsum)
    # The case exercises what it is meant to: pulses, devices wearing out now, refreshes.
    assert counts[0].sum() > 0
    assert ((state["life"] != 0) & (got["life"] == 0)).any()
    assert (counts[2].sum() > 0) == set_only
    if not drift_on:
        assert (got["nu"] == 0).all()


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 17), (40, 33)])
@pytest.mark.parametrize("set_only", [True, False])
def test_program_kernel_matches_reference_on_other_shapes(rows, cols, set_only):
    # Widths below, at and past one block of LANES normals; a single pair.
    rng = np.random.default_rng(rows + cols + set_only)
    spec = _spec(set_only)
    w_max, seed = 0.11, 2**64 - 5
    pulse_step = spec.programming.step * w_max / 2
    state, key = _layer_case(rng, rows, cols, spec, w_max, limited=rows > 2)
    if rows == 1:  # one pair: positive device past the refresh level, request up
        state["life"][:] = S.UNLIMITED
        state["nu"][:] = 7
        state["g"][0] = 0.9
    delta = _requests(rng, rows, cols, pulse_step)
    if rows == 1:
        delta[:] = 5.2 * pulse_step
    got = {name: v.copy() for name, v in state.items()}
    counts = [np.zeros(rows, np.int64) for _ in range(3)]
    PG.program_kernel(delta, *_kernel_args(got, key, spec, set_only), pulse_step, w_max, 32, np.uint64(seed),
                      *counts)
    want, want_gsum = _ref_layer(state, key, spec), state["row_gsum"].copy()
    want_counts = ref.program_kernel(delta, want, want_gsum, set_only, pulse_step, w_max, 32, seed)
    for c, wc in zip(counts, want_counts):
        np.testing.assert_array_equal(c, wc)
    _assert_state_matches(got, want, state, spec, w_max, want_gsum)
    assert counts[0].sum() > 0
    assert (counts[2].sum() > 0) == set_only


def test_program_kernel_row_sums_after_a_refresh_are_float64():
    # Without drift the row sum must change by exactly the float64 sum of the conductance
    # changes (float32 values, exact in float64), up to float64 rounding.
    spec = _spec(True, drift_on=False)
    rng = np.random.default_rng(61)
    rows, cols, w_max = 1, 16, 0.3
    pulse_step = spec.programming.step * w_max / 2
    state, key = _layer_case(rng, rows, cols, spec, w_max, limited=False)
    state["life"][:] = S.UNLIMITED
    gsat = ref.device_gsat(key, np.arange(2 * cols).reshape(2, 1, cols), programming_parameters(spec))
    state["g"][0] = (0.8 * gsat[0]).astype(np.float32)  # every positive device past the refresh level
    got = {name: v.copy() for name, v in state.items()}
    counts = [np.zeros(rows, np.int64) for _ in range(3)]
    PG.program_kernel(np.full((rows, cols), 2 * pulse_step, np.float32), *_kernel_args(got, key, spec, True),
                      pulse_step, w_max, 32, np.uint64(5), *counts)
    assert counts[2][0] == cols * (1 + spec.programming.verify_reads)  # every pair was refreshed
    change = got["g"].astype(np.float64).sum() - state["g"].astype(np.float64).sum()
    assert abs(got["row_gsum"][0] - (state["row_gsum"][0] + change)) <= 8 * cols * EPS64 * state["row_gsum"][0]


VERIFY_SETTINGS = [(so, ops, drift, redraw) for so in (True, False) for ops in (True, False)
                   for drift, redraw in ((True, True), (True, False), (False, True))]


@pytest.mark.parametrize("set_only,one_per_sign,drift_on,nu_redraw", VERIFY_SETTINGS)
def test_verify_kernel_matches_reference(set_only, one_per_sign, drift_on, nu_redraw):
    rng = np.random.default_rng(200 + 8 * set_only + 4 * one_per_sign + 2 * drift_on + nu_redraw)
    spec = _spec(set_only, drift_on, nu_redraw)
    rows, cols, w_max, seed = 8, 9, 0.25, 777
    state, key = _layer_case(rng, rows, cols, spec, w_max)
    target = rng.uniform(-1.2, 1.2, (rows, cols)) * w_max  # beyond w_max: clipped at g_sat
    target[rng.random((rows, cols)) < 0.15] = 0.0
    target = target.astype(np.float32)
    got = {name: v.copy() for name, v in state.items()}
    counts = [np.full(rows, -1, np.int64) for _ in range(3)]
    P.verify_kernel(target, *_kernel_args(got, key, spec, set_only, row_gsum=False), one_per_sign, 0.5, w_max,
                    np.uint64(seed), *counts)
    want = _ref_layer(state, key, spec)
    want_counts = ref.verify_kernel(target, want, set_only, one_per_sign, 0.5, w_max, seed)
    for c, wc, name in zip(counts, want_counts, ("row_pulses", "row_max", "row_verify")):
        np.testing.assert_array_equal(c, wc, err_msg=name)
    _assert_state_matches(got, want, state, spec, w_max)
    assert counts[0].sum() > 0 and counts[2].sum() > 0
    # Every device alive before was written now (RESET or verify): its programming time is now.
    alive = state["life"] != 0
    assert (got["t_rel"][alive] == np.float32(NOW - T_BASE)).all()


@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("set_only", [True, False])
def test_program_and_verify_rows_depend_only_on_seed_and_row(set_only, verify):
    # Each row draws from its own generators (seed, row) and writes only its own devices, so a
    # row's result does not depend on the other rows' requests: what keeps the kernels free of
    # any dependence on thread count or row order (see
    # test_program_kernel_does_not_depend_on_the_thread_count).
    rng = np.random.default_rng(41 + set_only + 2 * verify)
    spec = _spec(set_only, pulse_std=0.6)
    rows, cols, w_max = 12, 6, 0.3
    pulse_step = spec.programming.step * w_max / 2
    state, key = _layer_case(rng, rows, cols, spec, w_max)
    keep = np.zeros(rows, bool)
    keep[[1, 4, 5, 10]] = True
    if verify:
        kernel, extra = P.verify_kernel, (True, 0.5, w_max)
        a = (rng.uniform(-1, 1, (rows, cols)) * w_max).astype(np.float32)
        b = np.where(keep[:, None], a, (rng.uniform(-1, 1, (rows, cols)) * w_max).astype(np.float32))
    else:  # the other rows ask for other changes, or for none
        kernel, extra = PG.program_kernel, (pulse_step, w_max, 32)
        a = _requests(rng, rows, cols, pulse_step)
        b = np.where(keep[:, None], a, np.float32(0))
    out = []
    for values in (a, b):
        s = {name: v.copy() for name, v in state.items()}
        counts = [np.zeros(rows, np.int64) for _ in range(3)]
        kernel(values, *_kernel_args(s, key, spec, set_only, row_gsum=not verify), *extra, np.uint64(99), *counts)
        out.append((s, counts))
    (sa, ca), (sb, cb) = out
    for name in state:
        if name == "row_gsum":
            np.testing.assert_array_equal(sb[name][keep], sa[name][keep])
            continue
        np.testing.assert_array_equal(sb[name][..., keep, :], sa[name][..., keep, :], err_msg=name)
        if not verify:  # rows asked for nothing are left alone
            np.testing.assert_array_equal(sb[name][..., ~keep, :], state[name][..., ~keep, :], err_msg=name)
    for x, y in zip(cb, ca):
        np.testing.assert_array_equal(x[keep], y[keep])
    assert ca[0][keep].sum() > 0
    assert (cb[0][~keep] == 0).all() if not verify else (cb[0][~keep] > 0).any()


# -- closed-form pulses against pulses one by one ----------------------------------------------------
@numba.njit
def _closed_form_draws(g, gsat, step, n, up, ps, xi, out):
    for t in range(xi.size):
        out[t] = S.soft_pulses(g, gsat, step, n, up, ps, xi[t])


def _pulse_by_pulse(g, gsat, step, n, up, ps, rng, size):
    """``size`` devices at ``g`` after ``n`` single pulses, each with its own noise factor
    ``(1 + ps xi)``, clipped to [0, g_sat]; returns (final g, how many steps were clipped)."""
    x = np.full(size, float(g))
    clipped = 0
    for _ in range(n):
        c = 1.0 + ps * rng.standard_normal(size)
        x = x + step * (1.0 - x / gsat) * c if up else x - step * (x / gsat) * c
        out = (x < 0.0) | (x > gsat)
        clipped += int(out.sum())
        x = np.clip(x, 0.0, gsat)
    return x, clipped


def _moments(x):
    """Mean, variance and the relative standard errors of both estimates (from the sample's
    own fourth moment: SE(var) / var = sqrt((m4 / var^2 - 1) / N))."""
    m, v = x.mean(), x.var()
    m4 = ((x - m) ** 4).mean()
    return m, v, math.sqrt(v / x.size), math.sqrt((m4 / v**2 - 1.0) / x.size)


@pytest.mark.parametrize("g,gsat,step,n,up,ps", [
    (0.30, 1.00, 0.005, 1, True, 0.6),    # pcm: one pulse
    (0.30, 1.00, 0.005, 32, True, 0.6),   # pcm: a full request (max_pulses)
    (0.55, 0.90, 0.020, 1, False, 1.0),
    (0.80, 1.10, 0.011, 32, False, 0.22),  # rram-like, down
    (0.10, 1.20, 0.010, 32, True, 1.0),
])
def test_soft_pulses_closed_form_against_pulses_one_by_one(g, gsat, step, n, up, ps):
    """Mean and variance of the closed form (one call, one normal) against n single pulses.

    With a = step / g_sat and d0 the distance to the bound the pulses move away from (g_sat - g
    up, g down), each pulse multiplies it by (1 - a - a ps xi_m), independent factors of mean
    (1 - a) and variance (a ps)^2.  So the pulse-by-pulse result has (as long as nothing clips)

        mean  = d0 (1 - a)^n                                  (distance to the bound)
        V_ex  = d0^2 [((1 - a)^2 + a^2 ps^2)^n - (1 - a)^(2n)]

    and the closed form draws exactly that mean and variance (one normal).  The test asserts
    both samples against these formulas and against each other, to 5 standard errors of the
    estimates (N = 200000 draws each: a relative SE of the variance near sqrt(2 / N) = 0.3 %).
    Summing the per-pulse variances along the mean path instead (the kernels' earlier form)
    overstates the variance by up to (1 - a)^-2(n-1): 17 % for these pcm settings at n = 32,
    which the test would catch.
    """
    N = 200_000
    rng = np.random.default_rng(int(1e4 * (g + step)) + n + up)
    a = step / gsat
    d0 = gsat - g if up else g
    mean = gsat - d0 * (1 - a) ** n if up else d0 * (1 - a) ** n
    v_ex = d0**2 * (((1 - a) ** 2 + (a * ps) ** 2) ** n - (1 - a) ** (2 * n))

    sim, clipped = _pulse_by_pulse(g, gsat, step, n, up, ps, rng, N)
    assert clipped == 0  # the formulas above hold without clipping
    xi = ref.irwin_hall(rng.integers(0, 2**64, N, dtype=np.uint64))  # the kernels' normals
    cf = np.empty(N)
    _closed_form_draws(g, gsat, step, n, up, ps, xi, cf)
    assert ((cf > 0) & (cf < gsat)).all()  # no clipping in the closed form either

    m_s, v_s, se_ms, rse_vs = _moments(sim)
    m_c, v_c, se_mc, rse_vc = _moments(cf)
    # Each sample against its own formula.
    assert abs(m_s - mean) <= 5 * se_ms
    assert abs(v_s / v_ex - 1) <= 5 * rse_vs
    assert abs(m_c - mean) <= 5 * se_mc
    assert abs(v_c / v_ex - 1) <= 5 * rse_vc
    # The closed form against the pulses: same mean and variance.
    assert abs(m_c - m_s) <= 5 * math.hypot(se_mc, se_ms)
    assert abs(v_c / v_s - 1) <= 5 * math.hypot(rse_vs, rse_vc)
    # Without noise the closed form is the pulse-by-pulse path itself.
    quiet, _ = _pulse_by_pulse(g, gsat, step, n, up, 0.0, rng, 1)
    assert S.soft_pulses(g, gsat, step, n, up, 0.0, 0.0) == pytest.approx(quiet[0], rel=16 * n * EPS64)


# -- flags ---------------------------------------------------------------------------------------
def test_no_fastmath_and_no_cache_anywhere_in_devices():
    assert K.FASTMATH is False
    assert K.CACHE is False
    flag = re.compile(r"\b(fastmath|cache)\s*=\s*([^,)\s]+)")
    for path in sorted(DEVICES_DIR.rglob("*.py")):
        text = path.read_text()
        assert not re.search(r"fastmath\s*=\s*True", text), path
        assert not re.search(r"cache\s*=\s*True", text), path
        # Flags are set only from the module-level constants.
        for name, value in flag.findall(text):
            assert value == name.upper(), f"{path.name}: {name}={value}; use {name.upper()}"


def _dispatchers():
    found = {}
    for module in (K, S, P, PG, W):
        for v in vars(module).values():
            if isinstance(v, numba.core.registry.CPUDispatcher):
                found[v.py_func.__qualname__ + "@" + v.py_func.__module__] = v
    return list(found.values())


def test_every_kernel_is_compiled_without_fastmath():
    dispatchers = _dispatchers()
    assert len(dispatchers) >= 30
    assert {P._refresh_chunks, PG._program_chunks, P.verify_kernel, S.soft_pulses, K.periphery_kernel} <= set(dispatchers)
    for d in dispatchers:
        assert not d.targetoptions.get("fastmath"), d.py_func.__name__


def test_no_device_kernel_is_parallel():
    # No kernel uses numba's threading layer (devices/_threads.py runs row blocks on Python
    # threads instead); the thread count cannot change a result (the tests below).
    for d in _dispatchers():
        assert not d.targetoptions.get("parallel"), d.py_func.__name__


@pytest.fixture
def threads(monkeypatch):
    """Set the device kernels' thread count."""
    def use(n):
        monkeypatch.setattr(T, "kernel_threads", lambda: n)
    return use


@pytest.mark.parametrize("set_only", [True, False])
def test_program_kernel_does_not_depend_on_the_thread_count(set_only, threads):
    rng = np.random.default_rng(77 + set_only)
    spec = _spec(set_only, pulse_std=0.6)
    rows, cols, w_max = 3 * K.ROW_CHUNK + 5, 40, 0.3  # several chunks, the last one short
    pulse_step = spec.programming.step * w_max / 2
    state, key = _layer_case(rng, rows, cols, spec, w_max)
    delta = _requests(rng, rows, cols, pulse_step)
    results = []
    for n in (1, 2, 3):
        threads(n)
        got = {name: v.copy() for name, v in state.items()}
        counts = [np.zeros(rows, np.int64) for _ in range(3)]
        PG.program_kernel(delta, *_kernel_args(got, key, spec, set_only), pulse_step, w_max, 32, np.uint64(99),
                          *counts)
        results.append((got, counts))
    a, ca = results[0]
    for b, cb in results[1:]:
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        for x, y in zip(ca, cb):
            np.testing.assert_array_equal(x, y)
    assert ca[0].sum() > 0 and (ca[2].sum() > 0) == set_only
    assert any((a[name] != state[name]).any() for name in a)

def test_refresh_kernel_does_not_depend_on_the_thread_count(threads):
    rng = np.random.default_rng(5)
    spec = _spec(True, pulse_std=0.6)
    rows, cols, w_max = 3 * K.ROW_CHUNK + 5, 40, 0.3
    state, key = _layer_case(rng, rows, cols, spec, w_max)
    dp, rp = drift_parameters(spec), read_noise_parameters(spec)
    outs = []
    for n in (1, 2, 3):
        threads(n)
        out = [np.zeros((rows, cols), np.float32), np.zeros(rows), np.zeros(rows), np.zeros(cols),
               np.zeros((2, rows, cols), np.float32)]
        P.refresh_kernel(state["g"], state["t_rel"], state["nu"], nu_step(spec), T_BASE, NOW + 50.0, dp, rp, w_max,
                         *out)
        outs.append(out)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)
    assert outs[0][3].sum() > 0 and np.abs(outs[0][0]).sum() > 0


def _program_in_child(args):
    delta, state, key, spec, pulse_step, w_max, rows = args
    counts = [np.zeros(rows, np.int64) for _ in range(3)]
    PG.program_kernel(delta, *_kernel_args(state, key, spec, True), pulse_step, w_max, 32, np.uint64(99), *counts)
    return state, counts


def test_threads_work_in_a_forked_child_after_the_parent_used_them(threads):
    # A forked worker (the fleet's process pool) starts from a parent that ran kernel threads:
    # its kernels must run there (no thread of the parent's may be waited for).
    import multiprocessing

    threads(2)
    rng = np.random.default_rng(8)
    spec = _spec(True, pulse_std=0.6)
    rows, cols, w_max = 3 * K.ROW_CHUNK + 5, 40, 0.3
    pulse_step = spec.programming.step * w_max / 2
    state, key = _layer_case(rng, rows, cols, spec, w_max)
    delta = _requests(rng, rows, cols, pulse_step)
    mine = _program_in_child((delta, {n: v.copy() for n, v in state.items()}, key, spec, pulse_step, w_max, rows))
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        theirs = pool.apply_async(_program_in_child, ((delta, state, key, spec, pulse_step, w_max, rows),))
        got = theirs.get(timeout=120)
    for name in mine[0]:
        np.testing.assert_array_equal(mine[0][name], got[0][name], err_msg=name)
    for x, y in zip(mine[1], got[1]):
        np.testing.assert_array_equal(x, y)


def test_run_chunks_finishes_every_block_before_raising_the_first_error(threads):
    threads(3)
    done = []

    def fn(c0, c1, out):
        if c0 == 0:
            raise RuntimeError("block 0 failed")
        import time
        time.sleep(0.05)  # the other blocks finish after the failure
        out.extend(range(c0, c1))

    with pytest.raises(RuntimeError, match="block 0 failed"):
        T.run_chunks(fn, 9, done)
    assert sorted(done) == list(range(3, 9))


def test_limit_threads_caps_this_thread_only_and_refuses_bad_limits(monkeypatch):
    assert T.kernel_threads() == 1  # the default
    monkeypatch.setenv(T.ENV, "3")
    n = T.kernel_threads()
    assert n == 3
    with devices.limit_threads(1):
        assert T.kernel_threads() == 1
        seen = []
        import threading
        other = threading.Thread(target=lambda: seen.append(T.kernel_threads()))
        other.start()
        other.join()
        assert seen == [n]
    assert T.kernel_threads() == n
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            with devices.limit_threads(bad):
                pass


@pytest.mark.parametrize("value", ["0", "-2", "two", ""])
def test_a_bad_thread_count_in_the_environment_is_refused(monkeypatch, value):
    monkeypatch.setenv(T.ENV, value)
    with pytest.raises(ValueError, match=T.ENV):
        T.kernel_threads()
