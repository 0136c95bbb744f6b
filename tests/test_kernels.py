"""Each numba kernel of ``devices._kernels`` against its numpy reference.

Tolerances follow the dtype: the read path (DAC, periphery) and the normal
generator are float32 computations done in the same order as the reference,
so they agree exactly (at most 1 ulp is allowed); float64 sums of float32
terms get ``n * eps32``; the drift kernels are float64 with a float32 result
and a documented series for young devices.
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
from devices import _kernels as K
from devices.crossbar import drift_parameters
from reference import f32_tol

EPS32 = float(np.finfo(np.float32).eps)
DEVICES_DIR = Path(devices.__file__).resolve().parent
BASES = [0, 1, 12345, 2**63 - 1, 2**64 - 1, 0x9E3779B97F4A7C15]


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


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("adc_bits", [None, 4, 8])
@pytest.mark.parametrize("noise", ["none", "output", "per_row"])
@pytest.mark.parametrize("n", [5, 16, 41])
def test_periphery_kernel_matches_reference(soft, adc_bits, noise, n):
    rng = np.random.default_rng(n + 7 * (adc_bits or 0) + soft)
    batch = 11
    u, bias, gain, offset, curv, sat = _periphery_case(rng, batch, n, soft)
    R = 2.0
    step = R / (2**adc_bits - 1) if adc_bits is not None else 0.0
    out_var = 0.0 if noise == "none" else 0.05**2
    rows = rng.uniform(0.0, 0.02, batch) if noise == "per_row" else np.zeros(0)
    if noise == "per_row":
        rows[3] = 0.0
    seed = int(rng.integers(0, 2**63))
    got = u.copy()
    K.periphery_kernel(got, bias, 1.0, rows, out_var, np.uint64(seed), soft, gain, offset, curv, sat,
                       R, step)
    want = ref.periphery(u, bias, 1.0, rows, out_var, seed, soft, gain, offset, curv, sat, R, step)
    np.testing.assert_array_max_ulp(got, want, maxulp=1)
    assert got.dtype == np.float32
    assert (got >= 0).all() and (got <= np.float32(R)).all()


def test_periphery_relu_without_adc_range():
    rng = np.random.default_rng(1)
    u, bias, gain, offset, curv, sat = _periphery_case(rng, 6, 20, False)
    u[0, :5] = 1e30
    got = u.copy()
    K.periphery_kernel(got, bias, 0.5, np.zeros(0), 0.0, np.uint64(5), False, gain, offset, curv, sat,
                       math.inf, 0.0)
    want = ref.periphery(u, bias, 0.5, np.zeros(0), 0.0, 5, False, gain, offset, curv, sat, math.inf, 0.0)
    np.testing.assert_array_equal(got, want)
    # Without noise and converters the ReLU path is exactly max(u + level * bias, 0).
    np.testing.assert_array_equal(got, np.maximum(u + np.float32(0.5) * bias, np.float32(0)))


def test_periphery_noise_of_a_row_depends_only_on_seed_and_row():
    rng = np.random.default_rng(2)
    u, bias, gain, offset, curv, sat = _periphery_case(rng, 8, 33, True)
    args = (np.zeros(0), 0.1**2, np.uint64(77), True, gain, offset, curv, sat, 2.0, 0.0)
    full = u.copy()
    K.periphery_kernel(full, bias, 1.0, *args)
    head = u[:3].copy()
    K.periphery_kernel(head, bias, 1.0, *args)
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
    K.periphery_kernel(got, np.zeros(n, np.float32), 1.0, np.zeros(0), 0.0, np.uint64(0), True,
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
def test_drift_factor_matches_reference():
    t0 = 20.0
    ages = np.concatenate([[-5.0, 0.0, 1e-9, 1e-6, 0.0199, 0.02, 0.0201], np.logspace(-3, 9, 40)])
    for nu in (0.0, 0.001, 0.05, 0.1, 0.5, 1.0):
        got = np.array([K.drift_factor(a, nu, t0) for a in ages])
        want = ref.drift_factor(ages, nu, t0)
        # For a = age / t0 < 0.05 the kernel sums log1p(a) to a^5 and exp(-x) to x^4
        # (x = nu log1p(a) <= nu a).  Both series alternate, so each truncation error
        # is below its first omitted term: nu a^6 / 6 in x, and x^5 / 120 (relative).
        a = np.maximum(ages, 0) / t0
        series_err = np.where(a < 0.05, (nu * a**6 / 6 + (nu * a) ** 5 / 120) * want, 0.0)
        assert (np.abs(got - want) <= series_err + 8 * np.finfo(np.float64).eps * want).all()


def test_drift_exponent_matches_reference():
    dp = drift_parameters(devices.PRESETS["pcm"])
    rng = np.random.default_rng(9)
    g = np.concatenate([[0.0, 1e-7, 1e-6, 0.2, 0.33, 1.0, 1.4], rng.uniform(0, 1.5, 200)])
    xi = rng.standard_normal(g.size)
    got = np.array([K.drift_exponent(a, b, dp) for a, b in zip(g, xi)])
    np.testing.assert_allclose(got, ref.drift_exponent(g, xi, dp), rtol=1e-13, atol=1e-16)


def _device_state(rng, rows, cols, now):
    shape = (2, rows, cols)
    g = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    g[0, 0, 0] = 0.0
    t_prog = rng.uniform(0.0, now, shape)
    t_prog[0, 1] = now          # just programmed
    t_prog[1, 1, :2] = now + 5  # programmed "in the future": age <= 0, no drift
    t_prog[0, 2, :3] = now - 1e-3  # young: the series branch
    nu = rng.uniform(0.0, 0.12, shape).astype(np.float32)
    nu[1, 0] = 0.0
    return g, t_prog, nu


@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 5), (40, 33)])
def test_refresh_kernel_matches_reference(rows, cols):
    rng = np.random.default_rng(rows * cols)
    now, t0, w_max = 3.0e4, 20.0, 0.37
    g, t_prog, nu = _device_state(rng, max(rows, 3), cols, now)
    g, t_prog, nu = g[:, :rows], np.ascontiguousarray(t_prog[:, :rows]), nu[:, :rows]
    g, nu = np.ascontiguousarray(g), np.ascontiguousarray(nu)
    w = np.full((rows, cols), np.nan, np.float32)
    gsum = np.full(rows, np.nan)
    K.refresh_kernel(g, t_prog, nu, now, t0, w_max, w, gsum)
    w_ref, gsum_ref = ref.refresh(g, t_prog, nu, now, t0, w_max)
    # float64 computation rounded once to float32; the scale of the cancellation
    # g+ f+ - g- f- is that of its terms.
    scale = (g.astype(np.float64).sum(axis=0)) * w_max
    assert (np.abs(w - w_ref) <= 0.5 * EPS32 * np.abs(w_ref) + 1e-12 * scale + 1e-30).all()
    np.testing.assert_allclose(gsum, gsum_ref, rtol=1e-12)


# -- programming ---------------------------------------------------------------------------------
def _program_case(rng, rows, cols, now, endurance_small=True):
    g, t_prog, nu = _device_state(rng, rows, cols, now)
    shape = g.shape
    params = np.empty((4,) + shape, np.float32)
    params[K.P_GSAT] = rng.uniform(0.7, 1.3, shape)
    params[K.P_STEP_UP] = rng.uniform(0.005, 0.05, shape)
    params[K.P_STEP_DOWN] = rng.uniform(0.005, 0.05, shape)
    params[K.P_XI] = rng.standard_normal(shape)
    g = np.minimum(g, params[K.P_GSAT])
    stuck = (rng.random(shape) < 0.12).astype(np.int8)
    stuck[:, 3, 0] = 1  # both devices of one pair stuck
    endurance = np.full(shape, np.inf, np.float32)
    wear = rng.integers(0, 50, shape).astype(np.uint32)
    if endurance_small:
        endurance[:, 4] = wear[:, 4] + rng.integers(0, 4, shape[2])  # some wear out now
        endurance[:, 5, :2] = wear[:, 5, :2]  # already at the limit
    w_eff = ((g[0] - g[1]) * 0.3).astype(np.float32)
    # Requests of whole pulses +- 0.3 (never a half), some zero, some beyond max_pulses.
    k = rng.integers(-12, 13, (rows, cols)).astype(np.float64)
    k[0, -1] = 100.0
    k[1, -1] = -100.0
    frac = rng.uniform(-0.3, 0.3, (rows, cols))
    frac[k == 0] = rng.choice([0.0, 0.3, -0.3])
    return {"g": g, "t_prog": t_prog, "nu": nu, "params": params, "endurance": endurance,
            "wear": wear, "stuck": stuck, "w_eff": w_eff}, k + frac


@pytest.mark.parametrize("pulse_std", [0.0, 0.5])
@pytest.mark.parametrize("drift_on", [True, False])
def test_program_kernel_matches_reference(pulse_std, drift_on):
    rng = np.random.default_rng(11 + drift_on + int(10 * pulse_std))
    rows, cols = 8, 6
    now, pulse_step, w_max, max_pulses, seed = 5.0e3, 0.004, 0.3, 20, 4242
    dp = drift_parameters(devices.PRESETS["pcm"])
    state, k = _program_case(rng, rows, cols, now)
    delta = (k * pulse_step).astype(np.float32)
    got = {name: np.array(v) for name, v in state.items()}
    row_pulses = np.full(rows, -1, np.int64)
    row_max = np.full(rows, -1, np.int64)
    K.program_kernel(delta, got["g"], got["t_prog"], got["nu"], got["params"], got["endurance"],
                     got["wear"], got["stuck"], got["w_eff"], now, pulse_step, w_max, max_pulses,
                     pulse_std, drift_on, dp, np.uint64(seed), row_pulses, row_max)
    want, rp_ref, rm_ref = ref.program_array(delta, state, now, pulse_step, w_max, max_pulses,
                                             drift_on, dp, pulse_std=pulse_std, seed=seed)
    np.testing.assert_array_equal(row_pulses, rp_ref)
    np.testing.assert_array_equal(row_max, rm_ref)
    for name in ("wear", "stuck", "t_prog"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # g and nu: float64 arithmetic from a drifted start (series vs exact power for
    # young devices), stored as float32: a few float32 ulps.
    np.testing.assert_allclose(got["g"], want["g"], rtol=f32_tol(2), atol=1e-12)
    np.testing.assert_allclose(got["nu"], want["nu"], rtol=f32_tol(4), atol=1e-12)
    np.testing.assert_allclose(got["w_eff"], want["w_eff"], rtol=f32_tol(4), atol=f32_tol(4) * w_max)
    for name in ("params", "endurance"):
        np.testing.assert_array_equal(got[name], state[name])
    assert row_pulses.sum() > 0 and (want["stuck"] != state["stuck"]).any()


def test_program_kernel_does_not_depend_on_thread_count():
    rng = np.random.default_rng(12)
    rows, cols = 64, 16
    dp = drift_parameters(devices.PRESETS["pcm"])
    state, k = _program_case(rng, rows, cols, 100.0)
    delta = (k * 0.004).astype(np.float32)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            s = {name: np.array(v) for name, v in state.items()}
            rp, rm = np.zeros(rows, np.int64), np.zeros(rows, np.int64)
            K.program_kernel(delta, s["g"], s["t_prog"], s["nu"], s["params"], s["endurance"], s["wear"],
                             s["stuck"], s["w_eff"], 100.0, 0.004, 0.3, 32, 0.6, True, dp,
                             np.uint64(99), rp, rm)
            w, gsum = np.empty((rows, cols), np.float32), np.empty(rows)
            K.refresh_kernel(s["g"], s["t_prog"], s["nu"], 1e4, 20.0, 0.3, w, gsum)
            results.append((s, rp, rm, w, gsum))
    finally:
        numba.set_num_threads(before)
    for s, rp, rm, w, gsum in results[1:]:
        for name in state:
            np.testing.assert_array_equal(s[name], results[0][0][name])
        np.testing.assert_array_equal(rp, results[0][1])
        np.testing.assert_array_equal(w, results[0][3])
        np.testing.assert_array_equal(gsum, results[0][4])


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


def test_every_kernel_is_compiled_without_fastmath():
    dispatchers = [v for v in vars(K).values() if isinstance(v, numba.core.registry.CPUDispatcher)]
    assert len(dispatchers) >= 10
    for d in dispatchers:
        assert not d.targetoptions.get("fastmath"), d.py_func.__name__
