"""Plain-numpy references of the device kernels (``devices._kernels``, ``devices._devstate``,
``devices._pulses``, ``devices._program``).

Each function is written from the kernel's docstring (and the spec's), as slow, obvious
numpy or Python code, without numba; ``tests/test_kernels.py`` compares the kernels with
them.  Integer arithmetic on uint64 is done on *arrays* (numpy wraps array arithmetic
modulo 2**64 silently, while scalar overflow warns).  Where the kernels use short series
for speed (``drift_factor`` for young devices, ``ln_fast`` / ``ln_rows``, ``exp_bounded`` /
``exp_neg``), the references use the exact functions, and ``*_error`` functions here give
the bounds the tests allow, derived from the series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LANES = 16
SQRT3 = math.sqrt(3.0)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
XS_MUL = np.uint64(0x2545F4914F6CDD1D)
MASK16 = np.uint64(0xFFFF)

# Order of the drift-parameter vector (devices.crossbar.drift_parameters).
DRIFT_FIELDS = ("t0_s", "mu_log_coeff", "mu_offset", "mu_min", "mu_max",
                "sigma_log_coeff", "sigma_offset", "sigma_min", "sigma_max")


def f32_tol(k: float = 4.0) -> float:
    """``k`` float32 machine epsilons: a relative tolerance for float32 results."""
    return float(k * np.finfo(np.float32).eps)


def _u64(x) -> np.ndarray:
    return np.array(x, dtype=np.uint64, ndmin=1)


# -- random numbers ---------------------------------------------------------------------------
def splitmix64(x) -> np.ndarray:
    """splitmix64 finalizer of each entry of ``x`` (uint64 array)."""
    z = _u64(x) + GOLDEN
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


def row_seed(base: int, row: int) -> np.ndarray:
    """Seed of row ``row``: ``splitmix64(base + row * GOLDEN)``, never 0. Shape (1,)."""
    s = splitmix64(_u64(base) + _u64(row) * GOLDEN)
    s[s == 0] = GOLDEN
    return s


def seed_lanes(base: int, row: int) -> np.ndarray:
    """The LANES xorshift64* states of one row: ``splitmix64(row_seed + k) | 1``."""
    s = row_seed(base, row)
    return splitmix64(s + np.arange(LANES, dtype=np.uint64)) | np.uint64(1)


def xorshift_star(state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One xorshift64* step of every state in ``state``; returns (new_state, output)."""
    x = _u64(state).copy()
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    return x, x * XS_MUL


def quarters(r: np.ndarray) -> np.ndarray:
    """The four 16-bit quarters of each uint64, shape r.shape + (4,)."""
    r = np.asarray(r, dtype=np.uint64)
    return np.stack([(r >> np.uint64(16 * k)) & MASK16 for k in range(4)], axis=-1)


def irwin_hall(r: np.ndarray) -> np.ndarray:
    """Unit normals (float64) from 64-bit draws: ``(sum_k (q_k + 0.5) / 65536 - 2) * sqrt(3)``."""
    q = quarters(r).astype(np.float64)
    return (((q + 0.5) / 65536.0).sum(axis=-1) - 2.0) * SQRT3


def irwin_hall_f32(r: np.ndarray) -> np.ndarray:
    """The same normals evaluated in float32 as ``fill_normals`` does: s * scale + shift.

    ``s`` is the integer sum of the quarters (exact in float32, < 2**24);
    ``scale = sqrt(3) / 65536`` and ``shift = 2 sqrt(3) / 65536 - 2 sqrt(3)``,
    both rounded to float32.  Agrees with :func:`irwin_hall` to float32 rounding.
    """
    s = quarters(r).sum(axis=-1).astype(np.float32)
    scale = np.float32(SQRT3 / 65536.0)
    shift = np.float32(2.0 * SQRT3 / 65536.0 - 2.0 * SQRT3)
    return s * scale + shift


def lane_draws(base: int, row: int, n: int) -> np.ndarray:
    """Raw 64-bit outputs of row ``row``: entry ``blk * LANES + k`` from lane ``k``.

    Returns ``ceil(n / LANES) * LANES`` uint64 values.
    """
    state = seed_lanes(base, row)
    nb = -(-n // LANES)
    out = np.empty((nb, LANES), dtype=np.uint64)
    for blk in range(nb):
        state, out[blk] = xorshift_star(state)
    return out.reshape(-1)


def lane_normals(base: int, row: int, n: int) -> np.ndarray:
    """Float32 normals of row ``row`` as ``seed_lanes`` + ``fill_normals`` give them."""
    return irwin_hall_f32(lane_draws(base, row, n))


# -- read path ----------------------------------------------------------------------------------
def dac(x: np.ndarray, in_range: float, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip to [-in_range, in_range] and quantize to multiples of ``step`` in float32.

    Returns (out float32 (batch, n), sum(out**2) float64 (batch,), sum(|out|) float64 (batch,)).
    """
    x = np.asarray(x, dtype=np.float32)
    r = np.float32(in_range)
    v = np.minimum(np.maximum(x, -r), r)
    if step > 0:
        v = np.floor(v * np.float32(1.0 / step) + np.float32(0.5)) * np.float32(step)
    v64 = v.astype(np.float64)
    return v, (v64 * v64).sum(axis=1), np.abs(v64).sum(axis=1)


def periphery(u, bias, bias_level, noise_var_rows, dev_rows, dev_cols, out_var, seed, soft, gain, offset,
              curv, sat, adc_range, adc_step) -> np.ndarray:
    """Bias, read noise, neuron and ADC after the product ``u = x @ W``, in float32.

    Output ``(b, j)`` gets noise std ``sqrt(out_var + noise_var_rows[b])`` (``noise_var_rows``
    may be empty) times the normals of :func:`lane_normals` (``seed``, ``b``); if
    ``dev_rows`` is not empty and ``float32(dev_rows[b]) > 0``, the per-device noise in
    product form is added in variance: std ``sqrt(float32(var) + float32(dev_rows[b]) *
    dev_cols[j])`` evaluated in float32.  Neuron: ReLU, or if ``soft``: ``r = max(gain (v -
    offset), 0); h = r + curv r^2 / (R + r); v = h sat / (sat + h)``.  ADC: ``min(v, R)``
    and, if ``adc_step > 0``, ``floor(v / adc_step + 0.5) * adc_step``.  Returns a new
    float32 array.
    """
    f32 = np.float32
    u = np.asarray(u, dtype=np.float32)
    batch, n = u.shape
    R = f32(adc_range)
    out = np.empty_like(u)
    for b in range(batch):
        var = out_var + (float(noise_var_rows[b]) if len(noise_var_rows) else 0.0)
        pdev = f32(dev_rows[b]) if len(dev_rows) else f32(0.0)
        v = u[b] + f32(bias_level) * bias
        if pdev > 0:
            std = np.sqrt(f32(var) + pdev * np.asarray(dev_cols, np.float32))
            v = v + std * lane_normals(seed, b, n)[:n]
        elif var > 0:
            v = v + f32(math.sqrt(var)) * lane_normals(seed, b, n)[:n]
        if soft:
            r = np.maximum(gain * (v - offset), f32(0))
            h = r + curv * r * r / (R + r)
            v = h * sat / (sat + h)
        else:
            v = np.maximum(v, f32(0))
        v = np.minimum(v, R)
        if adc_step > 0:
            v = np.floor(v * f32(1.0 / adc_step) + f32(0.5)) * f32(adc_step)
        out[b] = v
    return out


def soft_neuron(u, gain, offset, curvature, saturation, R):
    """The ``soft`` neuron of ``NeuronSpec`` in float64 as the spec writes it.

    ``offset`` here is the spec's per-neuron offset in units of R, ``curvature``
    the spec's per-neuron curvature (1 / output units) and ``saturation`` in
    units of R.
    """
    z = gain * (u - offset * R)
    r = np.maximum(z, 0.0)
    h = r + curvature * r**2 / (1.0 + r / R)
    return h / (1.0 + h / (saturation * R))


# -- exact programming ----------------------------------------------------------------------------
def add_exact(w, delta, track_rows: bool, row_gsum, w_max: float):
    """Digital-twin programming: ``w + delta`` in float32, the number of non-zero
    requests, the rows they touch, and (if ``track_rows``) each row's
    ``sum_j |w_ij| / w_max`` (float64), else ``row_gsum`` unchanged."""
    w_new = np.asarray(w, np.float32) + np.asarray(delta, np.float32)
    nz = np.asarray(delta) != 0
    gsum = np.abs(w_new.astype(np.float64)).sum(axis=1) / w_max if track_rows else np.array(row_gsum)
    return w_new, int(nz.sum()), int(nz.any(axis=1).sum()), gsum


# -- fast elementary functions of the kernels -------------------------------------------------------
_F_MAX = 3.0 - 2.0 * math.sqrt(2.0)
#: Absolute error bound of the kernels' ``ln_fast`` / ``ln_rows``: their series of
#: ``2 atanh(f) = 2 (f + f^3 / 3 + ...)``, |f| <= 3 - 2 sqrt(2) = 0.1716, stops at f^11; the
#: terms left out sum to at most ``2 f^13 / (13 (1 - f^2))`` = 1.8e-11.  Plus the rounding of
#: ``e ln 2`` (|e| <= 1075): 1100 eps64.
LN_FAST_ERR = 2.0 * _F_MAX**13 / (13.0 * (1.0 - _F_MAX**2)) + 1100 * np.finfo(np.float64).eps


def ln_fast(x):
    """The exact logarithm that ``ln_fast`` and ``ln_rows`` approximate (to :data:`LN_FAST_ERR`)."""
    return np.log(np.asarray(x, dtype=np.float64))


def exp_bounded(x):
    """The exact exponential that ``_kernels.exp_bounded`` approximates."""
    return np.exp(np.asarray(x, dtype=np.float64))


def exp_bounded_error(x):
    """Bound on ``exp_bounded``'s relative error: its Taylor polynomial of y = x / 16 to y^7
    misses at most ``|y|^8 / 8! e^|y|`` (relative), and four squarings multiply a relative
    error by 16; plus 32 float64 roundings."""
    y = np.abs(np.asarray(x, dtype=np.float64)) / 16.0
    return 16.0 * y**8 / math.factorial(8) * np.exp(y) + 32 * np.finfo(np.float64).eps


# -- drift ---------------------------------------------------------------------------------------
def drift_factor(age, nu, t0):
    """``((age + t0) / t0) ** -nu`` (1 for age <= 0), float64, exact power."""
    age = np.asarray(age, dtype=np.float64)
    nu = np.asarray(nu, dtype=np.float64)
    f = ((np.maximum(age, 0.0) + t0) / t0) ** (-nu)
    return np.where(age <= 0.0, 1.0, f)


def exp_neg_error(x):
    """Bound on the relative error of ``exp_neg(x)`` = ``exp_bounded(-x / 8) ** 8`` (x >= 0):
    8 times exp_bounded's at -x / 8; x beyond 64 counts as 64 (not bounded relatively)."""
    return 8.0 * exp_bounded_error(np.minimum(np.asarray(x, dtype=np.float64), 64.0) / 8.0)


def drift_factor_error(age, nu, t0):
    """Bound on the relative error of the kernels' drift factors ``((age + t0) / t0) ** -nu``.

    ``_kernels.drift_factor``: for a = age / t0 < 0.05 it sums ``log1p(a)`` to a^5 and
    ``exp(-x)`` to x^4 (x = nu log1p(a) <= nu a); both series alternate, so each truncation
    error is below its first omitted term: ``nu a^6 / 6`` in x, and ``x^5 / 120`` in exp(-x),
    ``x^5 e^x / 120`` relative.  Older devices: x = nu ln_fast(1 + a), off by ``nu
    LN_FAST_ERR``, then ``exp_bounded(-x)`` (x <= 8) or ``exp``.  The row-staged kernels
    (refresh, programming): ``exp_neg(nu ln_rows(1 + a))`` at every age.  The larger of the
    bounds, plus 16 roundings.
    """
    age = np.asarray(age, dtype=np.float64)
    nu = np.asarray(nu, dtype=np.float64)
    a = np.maximum(age, 0.0) / t0
    an = nu * np.minimum(a, 0.05)
    young = nu * a**6 / 6 + an**5 / 120 * np.exp(an)
    x = nu * np.log1p(a)
    old = nu * LN_FAST_ERR + np.where(x <= 8.0, exp_bounded_error(np.minimum(x, 8.0)), 0.0)
    staged = nu * LN_FAST_ERR + exp_neg_error(x)
    return np.maximum(np.where(a < 0.05, young, old), staged) + 16 * np.finfo(np.float64).eps


#: float32 machine epsilon (the refresh kernel's arithmetic).
EPS32 = float(np.finfo(np.float32).eps)


def ln32_error(x):
    """Bound on the absolute error of ``_devstate.ln_rows32`` at ``x`` given in float64 (its
    rounding to float32 included): the series' truncation (below 8e-10) and float32 roundings of
    terms up to ``max(|ln x|, 1)``: 2 eps32 of that, twice the worst case measured over 40
    million random normal float32 numbers (0.99 eps32)."""
    return 2.0 * EPS32 * np.maximum(np.abs(np.log(np.asarray(x, dtype=np.float64))), 1.0)


#: Bound on the relative error of ``_devstate.exp_rows32`` (Taylor to r^7 for |r| <= ln 2 / 2,
#: 6e-9, and float32 roundings): 1.5 eps32 (the worst case measured over 40 million random
#: arguments in [-80, 80]: 0.85 eps32; without the r^7 term it reaches 2.1 eps32).
EXP32_ERR = 1.5 * EPS32


def drift_factor_error32(age, nu, t0):
    """Bound on the relative error of the refresh kernel's drifted conductance ``g f`` (float32):
    ``exp_rows32(-nu ln_rows32(1 + a))`` with ``nu`` rounded to float32 (1.5 eps32 on the
    argument ``nu ln(1 + a)``), the logarithm's error times ``nu``, the exponential's, and the
    product with ``g``."""
    a = np.maximum(np.asarray(age, dtype=np.float64), 0.0) / t0
    nu = np.asarray(nu, dtype=np.float64)
    return (1.5 * EPS32 * nu * np.log1p(a) + nu * ln32_error(1.0 + a) + EXP32_ERR + 1.5 * EPS32
            + 16 * np.finfo(np.float64).eps)


def device_sigma_error32(g_prog, age, rp, t0: float, shortcut: float):
    """Bound on the relative error of the refresh kernel's read-noise std (float32), beyond the
    error of the drifted conductance it multiplies: the power ``exp_rows32(q ln_rows32(rel))``
    (the argument off by ``|q|`` times the logarithm's error and 1.5 eps32 of itself), ``Q_s``'s
    division (1.5 eps32), the time factor ``sqrt(L)`` with ``L = ln((t + t_read) / t0) +
    ln(t0 / (2 t_read))`` (t = age + t0) summed in float32, and three products.  The first
    logarithm: if ``t_read / t0 <= shortcut`` (``_pulses.TIME_LOG_SHORTCUT``) the drift's
    ``ln(t / t0)`` plus ``e = t_read / t``, which stands for ``log1p(e)`` (off by at most ``e^2 /
    2``), else ``ln_rows32`` of its own argument."""
    g_prog = np.asarray(g_prog, dtype=np.float64)
    q_exp = rp_get(rp, "q_exponent")
    rel = np.maximum(rp_get(rp, "gmin_rel") + g_prog * rp_get(rp, "span_rel"), 1e-30)
    p = q_exp * np.log(rel)
    e_pow = EXP32_ERR + 1.5 * EPS32 * np.abs(p) + abs(q_exp) * ln32_error(rel)
    tr = rp_get(rp, "t_read")
    age = np.maximum(np.asarray(age, dtype=np.float64), 0.0)
    e = tr / (age + t0)
    shift = math.log(t0 / (2.0 * tr))
    ln_l = np.log((age + t0 + tr) / t0) + shift
    if tr <= shortcut * t0:
        first = ln32_error(1.0 + age / t0) + EPS32 * e + e * e / 2.0
    else:
        first = ln32_error((age + t0 + tr) / t0) + 0.5 * EPS32 * (1.0 + age / t0 + tr / t0) / ((age + t0 + tr) / t0)
    d_l = first + 0.5 * EPS32 * abs(shift) + EPS32 * np.abs(ln_l)
    return e_pow + 1.5 * EPS32 + d_l / (2.0 * np.maximum(ln_l, 1e-3)) + 0.5 * EPS32 + 3.0 * EPS32


def drift_exponent(g, xi, dp):
    """``|mu(g) + sigma(g) xi|`` with the clipped log-linear mu and sigma of ``DriftSpec``
    (``ln g`` with g floored at 1e-6)."""
    p = dict(zip(DRIFT_FIELDS, dp))
    lg = np.log(np.maximum(np.asarray(g, dtype=np.float64), 1e-6))
    mu = np.clip(p["mu_log_coeff"] * lg + p["mu_offset"], p["mu_min"], p["mu_max"])
    sg = np.clip(p["sigma_log_coeff"] * lg + p["sigma_offset"], p["sigma_min"], p["sigma_max"])
    return np.abs(mu + sg * np.asarray(xi, dtype=np.float64))


def folded_normal_mean(mu, sigma):
    """E|X| for X ~ N(mu, sigma^2)."""
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    erf = np.vectorize(math.erf)
    with np.errstate(divide="ignore", invalid="ignore"):
        folded = (sigma * math.sqrt(2.0 / math.pi) * np.exp(-mu**2 / (2.0 * sigma**2))
                  + mu * erf(mu / (sigma * math.sqrt(2.0))))
    return np.where(sigma > 0, folded, np.abs(mu))


def refresh(g, t_prog, nu, now, t0, w_max):
    """Effective weights ``(g+ f+ - g- f-) * w_max`` (float64) and each row's summed drifted g,
    from inspected state (``devices.inspect``: ``t_prog`` absolute seconds, ``nu`` the
    exponent as a float)."""
    f = drift_factor(now - np.asarray(t_prog), nu, t0)
    gd = np.asarray(g, dtype=np.float64) * f
    return (gd[0] - gd[1]) * w_max, gd.sum(axis=(0, 2))


# -- parameter vectors ---------------------------------------------------------------------------
#: Order of the programming-parameter vector (``devices.parameters.programming_parameters``);
#: the verify-error coefficients (microsiemens / span) follow from ``PP_FIELDS.index("ve0")``.
PP_FIELDS = ("step", "step_dtod", "up_down", "up_down_dtod", "g_max_dtod", "pulse_std", "refresh_at",
             "reset_level", "reset_std", "nu_step", "nu_redraw", "verify_reads", "ve_n", "ve0")
#: Order of the read-noise parameter vector (``devices.parameters.read_noise_parameters``).
RP_FIELDS = ("law", "q_s", "q_exponent", "q_floor", "q_max", "t_read", "gmin_rel", "span_rel")
#: Fields of the hash-derived fabrication constants (``fab_bits``' ``field``).
FAB_FIELDS = ("g_sat", "step", "up_down", "xi", "fail", "fail_on")
KEY_MIX = np.uint64(0xD6E8FEB86659FD93)
#: ``life`` of a device that never wears out.
UNLIMITED = 0xFFFFFFFF


def pp_get(pp, name: str) -> float:
    """Field ``name`` of a programming-parameter vector."""
    return float(pp[PP_FIELDS.index(name)])


def rp_get(rp, name: str) -> float:
    """Field ``name`` of a read-noise parameter vector."""
    return float(rp[RP_FIELDS.index(name)])


# -- fabrication constants -----------------------------------------------------------------------
def fab_bits(key: int, field, idx) -> np.ndarray:
    """64 bits for constant ``field`` of devices ``idx``:
    ``splitmix64(splitmix64(key ^ (field_number + 1) * KEY_MIX) ^ idx)`` (uint64, idx's shape).
    ``field`` is a name of :data:`FAB_FIELDS` or a field number."""
    f = FAB_FIELDS.index(field) if isinstance(field, str) else int(field)
    k = splitmix64(_u64(key) ^ (_u64(f + 1) * KEY_MIX))
    idx = np.asarray(idx, dtype=np.uint64)
    return splitmix64(k ^ idx.reshape(-1)).reshape(idx.shape)


def fab_normal(key: int, field, idx) -> np.ndarray:
    """Unit normals (Irwin-Hall, :func:`irwin_hall`) of a device constant, float64."""
    return irwin_hall(fab_bits(key, field, idx))


def fab_uniform(key: int, field, idx) -> np.ndarray:
    """Uniforms in [0, 1): the top 53 bits over 2**53, float64."""
    return (fab_bits(key, field, idx) >> np.uint64(11)).astype(np.float64) / 2.0**53


def device_index(k, i, j, rows: int, cols: int):
    """Flat index of device (k, i, j) in a (2, rows, cols) layer."""
    return (np.asarray(k) * rows + np.asarray(i)) * cols + np.asarray(j)


def device_gsat(key: int, idx, pp) -> np.ndarray:
    """Saturation level ``clip(1 + g_max_dtod * N, 0.5, 1.5)`` of devices ``idx``."""
    return np.clip(1.0 + pp_get(pp, "g_max_dtod") * fab_normal(key, "g_sat", idx), 0.5, 1.5)


def device_step(key: int, idx, pp, up: bool) -> np.ndarray:
    """Step at g = 0: ``step * exp(s N1 - s^2 / 2) * (1 +- clip(up_down + up_down_dtod N2, -0.9, 0.9))``
    (log-normal with mean ``step``; ``s = step_dtod``)."""
    s = pp_get(pp, "step_dtod")
    base = pp_get(pp, "step") * exp_bounded(s * fab_normal(key, "step", idx) - 0.5 * s * s)
    ud = np.clip(pp_get(pp, "up_down") + pp_get(pp, "up_down_dtod") * fab_normal(key, "up_down", idx), -0.9, 0.9)
    return base * (1.0 + ud) if up else base * (1.0 - ud)


def fixed_xi(key: int, shape) -> np.ndarray:
    """Each device's lifelong drift draw, float64 ``shape`` = (2, rows, cols)."""
    return fab_normal(key, "xi", np.arange(math.prod(shape)).reshape(shape))


def failure_times(key: int, life, median: float, dtod: float, share: float):
    """Each device's failure time ``median * exp(dtod z)`` (inf if ``median <= 0``) with an exact
    normal z (Box-Muller: ``sqrt(-2 ln(1 - u1)) cos(2 pi u2)`` from the uniforms of field
    ``fail`` and of field number ``fail + 16``), whether it sticks high (``uniform < share``,
    int8), and the earliest failure time of a device whose ``life`` is not 0 (inf if none)."""
    life = np.asarray(life)
    idx = np.arange(life.size).reshape(life.shape)
    if median <= 0.0:
        t = np.full(life.shape, np.inf)
    else:
        u1 = 1.0 - fab_uniform(key, "fail", idx)
        u2 = fab_uniform(key, FAB_FIELDS.index("fail") + 16, idx)
        t = median * np.exp(dtod * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2))
    on = (fab_uniform(key, "fail_on", idx) < share).astype(np.int8)
    alive = t[life != 0]
    return t, on, float(alive.min()) if alive.size else math.inf


def quantize_nu(nu: float, step: float) -> int:
    """A drift exponent in uint16 steps of ``step``: round half up, saturating at 65535; 0 if step <= 0."""
    if step <= 0.0:
        return 0
    return int(min(math.floor(nu / step + 0.5), 65535))


# -- state-dependent laws ------------------------------------------------------------------------
def verify_sigma(g, pp, gmin_rel: float, span_rel: float):
    """Residual std left by program-and-verify at normalized conductance ``g``: the polynomial
    of ``verify_error_us`` (stored / span) in ``G / g_max = gmin_rel + g span_rel``, floored at 0."""
    start = PP_FIELDS.index("ve0")
    coeffs = np.asarray(pp[start:start + int(pp_get(pp, "ve_n"))], dtype=np.float64)
    x = gmin_rel + np.asarray(g, dtype=np.float64) * span_rel
    return np.maximum(np.polynomial.polynomial.polyval(x, coeffs), 0.0)


def device_sigma(g_prog, g_now, age, rp, t0: float):
    """1/f read-noise std of a device (``ReadNoiseSpec``, normalized units of the span)::

        sigma = G(t) Q_s sqrt(max(ln((age + t0 + t_read) / (2 t_read)), 0))
        Q_s   = min(q_s / max((G_prog / g_max) ** q_exponent, q_floor), q_max)

    with G(t) = g_min / span + g_now; 0 without the law or where ``g_now <= 0``.  A negative
    age (programming time after ``now``, from float32 rounding) counts as 0, as in the
    refresh kernel.
    """
    g_prog = np.asarray(g_prog, dtype=np.float64)
    g_now = np.asarray(g_now, dtype=np.float64)
    age = np.maximum(np.asarray(age, dtype=np.float64), 0.0)
    if rp_get(rp, "law") == 0.0:
        return np.zeros(np.broadcast(g_prog, g_now, age).shape)
    gmin, span = rp_get(rp, "gmin_rel"), rp_get(rp, "span_rel")
    rel = np.maximum(gmin + g_prog * span, 0.0)  # G_prog / g_max
    q = np.minimum(rp_get(rp, "q_s") / np.maximum(rel ** rp_get(rp, "q_exponent"), rp_get(rp, "q_floor")),
                   rp_get(rp, "q_max"))
    tr = rp_get(rp, "t_read")
    tf = np.sqrt(np.maximum(np.log((age + t0 + tr) / (2.0 * tr)), 0.0))
    return np.where(g_now > 0.0, (gmin / span + g_now) * q * tf, 0.0)


def device_sigma_error(g_prog, age, rp, t0: float):
    """Bound on the relative error of the kernels' read-noise std (``_devstate.device_sigma``
    and the row-staged ``refresh_kernel``): ``(G_prog / g_max) ** q_exponent`` is
    ``exp(q_exponent ln_fast(.))`` with the exponential from ``exp_bounded`` (|p| <= 8) or
    ``exp_neg`` (p < 0); the time factor ``sqrt(ln_fast(L))`` is off by ``LN_FAST_ERR / (2 ln
    L)``; plus 32 roundings."""
    g_prog = np.asarray(g_prog, dtype=np.float64)
    q_exp = rp_get(rp, "q_exponent")
    rel = np.maximum(rp_get(rp, "gmin_rel") + g_prog * rp_get(rp, "span_rel"), 1e-300)
    p = q_exp * np.log(rel)
    e_pow = np.maximum(np.where(np.abs(p) <= 8.0, exp_bounded_error(np.clip(p, -8.0, 8.0)), 0.0),
                       np.where(p < 0.0, exp_neg_error(-p), 0.0))
    tr = rp_get(rp, "t_read")
    ln_l = np.log((np.asarray(age, dtype=np.float64) + t0 + tr) / (2.0 * tr))
    return (e_pow + q_exp * LN_FAST_ERR + LN_FAST_ERR / (2.0 * np.maximum(ln_l, 1e-3))
            + 32 * np.finfo(np.float64).eps)


def soft_pulses(g: float, gsat: float, step: float, n: int, up: bool, ps: float, xi: float) -> float:
    """A device at ``g`` after ``n`` soft-bounded pulses (relative step ``a = step / gsat``,
    capped at 0.999), each multiplying the distance ``d`` to the bound it moves from
    (``gsat - g`` up, ``g`` down) by ``1 - a (1 + ps xi_m)``: the mean of ``d`` and its second
    moment over the mean squared are carried pulse by pulse, and the result is the mean plus ``xi`` times the
    standard deviation, clipped to [0, gsat]."""
    a = min(step / gsat, 0.999)
    d = (gsat - float(g)) if up else float(g)
    mean, ratio, second = d, 1.0, d * d  # ratio: second moment over mean squared
    for _ in range(n):
        mean *= 1.0 - a
        ratio *= 1.0 + (a * ps / (1.0 - a)) ** 2
        second *= (1.0 - a) ** 2 + (a * ps) ** 2
    if math.isfinite(ratio) and ratio < 1e300 and mean > 1e-150 * d:
        sd = mean * math.sqrt(ratio - 1.0)
    else:  # the mean underflowed: the second moment alone
        sd = math.sqrt(max(second - mean * mean, 0.0))
    x = (gsat - mean) if up else mean
    return min(max(x + sd * xi, 0.0), gsat)


def pulses_to(g_from: float, g_to: float, gsat: float, step: float, max_n: int) -> int:
    """Up pulses (relative step ``a = min(step / gsat, 0.999)``) that take a soft-bounded device
    from ``g_from`` to at least ``min(g_to, 0.999 gsat)``, applied one by one; at least 1,
    at most ``max_n``."""
    a = min(step / gsat, 0.999)
    top = min(g_to, 0.999 * gsat)
    x, n = float(g_from), 0
    while x < top and n < max_n:
        x += a * (gsat - x)
        n += 1
    return max(n, 1)


# -- drift refresh -------------------------------------------------------------------------------
def refresh_kernel(g, t_rel, nu, nu_step: float, t_base: float, now: float, dp, rp, w_max: float):
    """What ``_pulses.refresh_kernel`` computes, in float64 with the exact drift power.

    Returns (w_eff float64 (rows, cols), row_gsum (rows,), row_var (rows,), col_var (cols,),
    g_now float64 (2, rows, cols)): ``age = now - (t_base + t_rel)``, ``g_now = g f(age,
    nu * nu_step)``, ``w_eff = (g_now+ - g_now-) w_max``, ``row_gsum`` the sum of ``g_now``
    over both devices of a row, and per weight ``v = w_max^2 (sigma+^2 + sigma-^2)``
    (:func:`device_sigma`) summed over each row and each column.
    """
    t0 = float(dp[0])
    age = now - (t_base + np.asarray(t_rel, dtype=np.float64))
    gp = np.asarray(g, dtype=np.float64)
    g_now = gp * drift_factor(age, np.asarray(nu, dtype=np.float64) * nu_step, t0)
    sig = device_sigma(gp, g_now, age, rp, t0) * w_max
    v = (sig * sig).sum(axis=0)
    return (g_now[0] - g_now[1]) * w_max, g_now.sum(axis=(0, 2)), v.sum(axis=1), v.sum(axis=0), g_now


# -- pulses, refresh of pairs, program-and-verify ---------------------------------------------------
class RowStream:
    """The random stream of one row of ``program_kernel`` / ``verify_kernel``: a xorshift64*
    state started at :func:`row_seed`; each draw is the next output through :func:`irwin_hall`."""

    def __init__(self, seed: int, row: int) -> None:
        self.state = row_seed(seed, row)

    def normal(self) -> float:
        self.state, r = xorshift_star(self.state)
        return float(irwin_hall(r)[0])


@dataclass
class Layer:
    """A layer's compact device state (copies, float64 / int arrays) and its constants."""

    g: np.ndarray
    t_rel: np.ndarray
    nu: np.ndarray
    life: np.ndarray
    w_eff: np.ndarray
    key: int
    t_base: float
    now: float
    dp: np.ndarray
    pp: np.ndarray
    rp: np.ndarray
    drift_on: bool

    @classmethod
    def copy_of(cls, g, t_rel, nu, life, w_eff, key, t_base, now, dp, pp, rp, drift_on) -> "Layer":
        return cls(np.array(g, np.float32), np.array(t_rel, np.float32), np.array(nu, np.int64),
                   np.array(life, np.int64), np.array(w_eff, np.float32), int(key), float(t_base), float(now),
                   np.asarray(dp, np.float64), np.asarray(pp, np.float64), np.asarray(rp, np.float64),
                   bool(drift_on))

    @property
    def rows(self) -> int:
        return self.g.shape[1]

    @property
    def cols(self) -> int:
        return self.g.shape[2]

    def idx(self, k: int, i: int, j: int) -> int:
        return int(device_index(k, i, j, self.rows, self.cols))

    def gsat(self, k: int, i: int, j: int) -> float:
        return float(device_gsat(self.key, self.idx(k, i, j), self.pp))

    def step(self, k: int, i: int, j: int, up: bool) -> float:
        return float(device_step(self.key, self.idx(k, i, j), self.pp, up))

    def drifted(self, k: int, i: int, j: int) -> tuple[float, float]:
        """Device (k, i, j)'s conductance now and its age: ``g ((age + t0) / t0) ** -nu``."""
        age = self.now - (self.t_base + float(self.t_rel[k, i, j]))
        nu = float(self.nu[k, i, j]) * pp_get(self.pp, "nu_step")
        return float(self.g[k, i, j]) * float(drift_factor(age, nu, float(self.dp[0]))), age

    def wear(self, k: int, i: int, j: int, n: int) -> int:
        """Take up to ``n`` pulses off the device's life; returns the pulses it could take."""
        left = int(self.life[k, i, j])
        if left == UNLIMITED:
            return n
        take = min(n, left)
        self.life[k, i, j] = left - take
        return take

    def write(self, k: int, i: int, j: int, value: float, rs: RowStream | None, xi: float | None = None) -> None:
        """The device as just programmed to ``value``: float32 g, programming time now, a new
        drift exponent from its float32 g (0 if stuck; kept if drift is off).  The drift draw
        is ``xi`` if given, else the next normal of the row's stream ``rs`` (``nu_redraw``);
        without ``nu_redraw`` it is the device's lifelong fabrication draw."""
        self.g[k, i, j] = np.float32(value)
        self.t_rel[k, i, j] = np.float32(self.now - self.t_base)
        if self.life[k, i, j] == 0:
            self.nu[k, i, j] = 0
        elif self.drift_on:
            if pp_get(self.pp, "nu_redraw") == 0.0:
                xi = float(fab_normal(self.key, "xi", self.idx(k, i, j)))
            elif xi is None:
                xi = rs.normal()
            nu = float(drift_exponent(float(self.g[k, i, j]), xi, self.dp))
            self.nu[k, i, j] = quantize_nu(nu, pp_get(self.pp, "nu_step"))

    def set_verified(self, k: int, i: int, j: int, g_from: float, target: float, rs: RowStream) -> int:
        """Program-and-verify from ``g_from`` to ``target`` (clipped to [0, g_sat]): the up
        pulses between the two levels (:func:`pulses_to`, at most 1000) are worn, the device
        gets ``target + verify_sigma(target) N`` clipped to [0, g_sat]; returns the pulses."""
        gsat = self.gsat(k, i, j)
        tgt = min(max(target, 0.0), gsat)
        m = pulses_to(min(g_from, tgt), max(g_from, tgt), gsat, self.step(k, i, j, True), 1000)
        spent = self.wear(k, i, j, m)
        val = tgt + float(verify_sigma(tgt, self.pp, rp_get(self.rp, "gmin_rel"),
                                       rp_get(self.rp, "span_rel"))) * rs.normal()
        self.write(k, i, j, min(max(val, 0.0), gsat), rs)
        return spent

    def reset(self, k: int, i: int, j: int, rs: RowStream) -> int:
        """RESET with one pulse to ``clip(reset_level + reset_std N, 0, g_sat)`` (stuck: nothing)."""
        if self.life[k, i, j] == 0:
            return 0
        spent = self.wear(k, i, j, 1)
        lvl = pp_get(self.pp, "reset_level") + pp_get(self.pp, "reset_std") * rs.normal()
        self.write(k, i, j, min(max(lvl, 0.0), self.gsat(k, i, j)), rs)
        return spent

    def refresh_pair(self, i: int, j: int, rs: RowStream) -> tuple[int, bool]:
        """Read the weight ``g0 - g1`` (drifted) with the devices' read noise, RESET both,
        program-and-verify ``|w|`` onto the device of its sign (unless it reads 0 or that
        device is stuck); returns the pulses and whether the program-and-verify ran."""
        t0 = float(self.dp[0])
        (g0, a0), (g1, a1) = self.drifted(0, i, j), self.drifted(1, i, j)
        s0 = float(device_sigma(float(self.g[0, i, j]), g0, a0, self.rp, t0))
        s1 = float(device_sigma(float(self.g[1, i, j]), g1, a1, self.rp, t0))
        w = g0 - g1 + math.sqrt(s0 * s0 + s1 * s1) * rs.normal()
        spent = self.reset(0, i, j, rs) + self.reset(1, i, j, rs)
        s = 0 if w > 0.0 else 1
        if w != 0.0 and self.life[s, i, j] != 0:
            spent += self.set_verified(s, i, j, float(self.g[s, i, j]), abs(w), rs)
            return spent, True
        return spent, False


#: Mixed into the call's seed for the per-row stream of pair refreshes (``_program.REFRESH_SALT``).
REFRESH_SALT = 0x5DEECE66DA3B1F27


def program_kernel(delta, layer: Layer, row_gsum, set_only: bool, pulse_step_w: float, w_max: float,
                   max_pulses: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_program.program_kernel`` on ``layer`` and ``row_gsum`` (changed in place).

    Entry (i, j) asks for ``n = min(round(|delta| / pulse_step_w), max_pulses)`` pulses, at
    most the pulses the device has left.  ``set_only``: on g+ (delta > 0) or g- (delta < 0),
    going up, never ending below where they started.  Otherwise on the device with more room
    in the needed direction (room up ``g_sat - g``, room down ``g``, drifted; ties go up), its
    partner if it is stuck.  The row's requested entries (at least one pulse) are numbered
    ``c = 0, 1, ...`` in column order; the device moves by :func:`soft_pulses` from its drifted
    g with the noise normal of entry c, is rewritten with the drift draw of entry c (both from
    the row's lanes: the first and the second ``ceil(m / LANES) * LANES`` normals of
    :func:`lane_normals`, m the row's requested entries), and ``w_eff`` and
    ``row_gsum`` change by its move.  ``set_only`` devices whose drifted g is at least
    ``refresh_at`` of their g_sat are set aside and handled after the row's other columns, in
    column order: the pair is refreshed (:meth:`Layer.refresh_pair`, drawing from the stream
    ``row_seed(seed ^ REFRESH_SALT, i)``; one read plus ``verify_reads`` if it wrote back), the
    pulses (at most the device's life) move it up from its new g with entry c's pulse normal
    and a fresh drift draw from that same refresh stream, ``w_eff``
    becomes the as-programmed weight and ``row_gsum`` changes by the pair's new g minus its
    drifted g before.  Returns (pulses per row, most on one pair per row, verify reads per row).
    """
    rows, cols = delta.shape
    ps = pp_get(layer.pp, "pulse_std")
    reads = int(pp_get(layer.pp, "verify_reads"))
    row_pulses = np.zeros(rows, np.int64)
    row_max = np.zeros(rows, np.int64)
    row_verify = np.zeros(rows, np.int64)

    def pulses(k, i, j, g_from, gsat, step, n, up, xi_pulse, xi_drift):
        new = soft_pulses(g_from, gsat, step, n, up, ps, xi_pulse)
        if set_only:  # SET pulses never lower a one-directional device, however the noise falls
            new = max(new, g_from)
        layer.wear(k, i, j, n)
        layer.write(k, i, j, new, None, xi=xi_drift)

    for i in range(rows):
        asked = [j for j in range(cols) if math.floor(abs(float(delta[i, j])) * (1.0 / pulse_step_w) + 0.5) >= 1]
        wm = -(-len(asked) // LANES) * LANES
        z = lane_normals(seed, i, 2 * wm).astype(np.float64)
        noise, draw = z[:wm], z[wm:]
        later = []
        for c, j in enumerate(asked):
            d = float(delta[i, j])
            n = min(int(math.floor(abs(d) * (1.0 / pulse_step_w) + 0.5)), max_pulses)
            gd = [layer.drifted(0, i, j)[0], layer.drifted(1, i, j)[0]]
            k_up, k_down = (0, 1) if d > 0 else (1, 0)
            if set_only:
                k, up = k_up, True
            else:
                up = layer.gsat(k_up, i, j) - gd[k_up] >= gd[k_down]
                if layer.life[k_up if up else k_down, i, j] == 0:
                    up = not up
                k = k_up if up else k_down
            left = int(layer.life[k, i, j])
            n = n if left == UNLIMITED else min(n, left)
            if n == 0:
                continue
            gsat, step = layer.gsat(k, i, j), layer.step(k, i, j, up)
            if set_only and gd[k] >= pp_get(layer.pp, "refresh_at") * gsat:
                later.append((c, j, k, n, gsat, step, gd))
                continue
            pulses(k, i, j, gd[k], gsat, step, n, up, noise[c], draw[c])
            moved = float(layer.g[k, i, j]) - gd[k]
            layer.w_eff[i, j] = np.float32(float(layer.w_eff[i, j]) + (moved if k == 0 else -moved) * w_max)
            row_gsum[i] += moved
            row_pulses[i] += n
            row_max[i] = max(row_max[i], n)
        rs = RowStream(seed ^ REFRESH_SALT, i)
        for c, j, k, n, gsat, step, gd in later:
            spent, verified = layer.refresh_pair(i, j, rs)
            row_verify[i] += 1 + (reads if verified else 0)
            left = int(layer.life[k, i, j])
            taken = n if left == UNLIMITED else min(n, left)
            if taken > 0:  # the fresh drift draw from the refresh stream
                g_from = float(layer.g[k, i, j])
                new = max(soft_pulses(g_from, gsat, step, taken, True, ps, noise[c]), g_from)
                layer.wear(k, i, j, taken)
                layer.write(k, i, j, new, rs)
                spent += taken
            g0, g1 = float(layer.g[0, i, j]), float(layer.g[1, i, j])
            layer.w_eff[i, j] = np.float32((g0 - g1) * w_max)
            row_gsum[i] += g0 + g1 - (gd[0] + gd[1])
            row_pulses[i] += spent
            row_max[i] = max(row_max[i], spent)
    return row_pulses, row_max, row_verify


def verify_kernel(target, layer: Layer, set_only: bool, one_per_sign: bool, common_mode: float, w_max: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_pulses.verify_kernel`` on ``layer`` (changed in place).

    Pair targets for ``u = target / w_max``: ``one_per_sign``: ``(max(u, 0), max(-u, 0))``;
    else ``low = max(common_mode - |u| / 2, 0)`` and the device of u's sign at ``low + |u|``,
    the other at ``low``.  Each device not stuck: ``set_only``: RESET, then (if its target is
    positive and it is still alive) program-and-verify from the RESET level; otherwise
    program-and-verify from its drifted g.  Each program-and-verify costs ``verify_reads``
    reads.  ``w_eff`` becomes the as-programmed weight.  Returns as :func:`program_kernel`
    (the most pulses on one pair per row).
    """
    rows, cols = target.shape
    reads = int(pp_get(layer.pp, "verify_reads"))
    row_pulses = np.zeros(rows, np.int64)
    row_max = np.zeros(rows, np.int64)
    row_verify = np.zeros(rows, np.int64)
    for i in range(rows):
        rs = RowStream(seed, i)
        for j in range(cols):
            u = float(target[i, j]) / w_max
            if one_per_sign:
                wants = (max(u, 0.0), max(-u, 0.0))
            else:
                low = max(common_mode - 0.5 * abs(u), 0.0)
                wants = (low + abs(u), low) if u > 0.0 else (low, low + abs(u))
            pair = 0
            for k in (0, 1):
                if layer.life[k, i, j] == 0:
                    continue
                if set_only:
                    pair += layer.reset(k, i, j, rs)
                    if wants[k] <= 0.0 or layer.life[k, i, j] == 0:
                        continue
                    g_from = float(layer.g[k, i, j])
                else:
                    g_from = layer.drifted(k, i, j)[0]
                pair += layer.set_verified(k, i, j, g_from, wants[k], rs)
                row_verify[i] += reads
            layer.w_eff[i, j] = np.float32((float(layer.g[0, i, j]) - float(layer.g[1, i, j])) * w_max)
            row_pulses[i] += pair
            row_max[i] = max(row_max[i], pair)
    return row_pulses, row_max, row_verify
