"""Numba functions of the compact device state, shared by the kernels of :mod:`devices._pulses`.

The compact device state (per device, shape ``(2, rows, cols)``, index 0 the positive
device) is four arrays: ``g`` (float32, conductance as programmed, normalized to the
range), ``t_rel`` (float32, programming time minus the layer's ``t_base``), ``nu``
(uint16, the drift exponent in steps of ``pp[PP_NU_STEP]``) and ``life`` (uint32, pulses
left before the device wears out and sticks; 0 = stuck, ``UNLIMITED`` = never wears).
Everything a device keeps from fabrication (saturation level, step sizes, a fixed drift
draw, failure time) is a function of the layer's fabrication key and the device's index,
recomputed where it is needed (:func:`fab_normal`): it costs no memory and no bandwidth.
Normal deviates are Irwin-Hall sums (see :mod:`devices._kernels`): exact mean and
variance, tails cut at 3.46 sigma.
"""

from __future__ import annotations

import math

import numpy as np

from ._kernels import JIT, JIT_INLINE, drift_exponent, drift_factor, exp_bounded, ln_fast, normal_from_bits, splitmix64, xorshift_next

#: ``life`` of a device that never wears out.
UNLIMITED = np.uint32(0xFFFFFFFF)
# Fields of the hash-derived fabrication constants.
F_GSAT, F_STEP, F_UPDOWN, F_XI, F_FAIL, F_FAIL_ON = range(6)
# Indices into the programming-parameter vector (see devices.crossbar.programming_parameters).
(PP_STEP, PP_STEP_DTOD, PP_UD, PP_UD_DTOD, PP_GMAX_DTOD, PP_PULSE_STD, PP_REFRESH_AT, PP_RESET_LEVEL,
 PP_RESET_STD, PP_NU_STEP, PP_NU_REDRAW, PP_VERIFY_READS, PP_VE_N, PP_VE0) = range(14)
#: Length of the programming-parameter vector (up to five verify-error coefficients).
PP_LEN = PP_VE0 + 5
# Indices into the read-noise parameter vector.
RP_LAW, RP_QS, RP_QEXP, RP_QFLOOR, RP_QMAX, RP_TREAD, RP_GMIN, RP_SPAN = range(8)

_KEY_MIX = np.uint64(0xD6E8FEB86659FD93)




@JIT_INLINE
def fab_bits(key, field, idx):
    """64 well-mixed bits for fabrication constant ``field`` of device ``idx`` of a layer."""
    return splitmix64(splitmix64(np.uint64(key) ^ (np.uint64(field + 1) * _KEY_MIX)) ^ np.uint64(idx))


@JIT_INLINE
def fab_normal(key, field, idx):
    """Unit normal (Irwin-Hall, tails cut at 3.46 sigma) for a device's fabrication constant."""
    return normal_from_bits(fab_bits(key, field, idx))


@JIT
def fab_uniform(key, field, idx):
    """Uniform in [0, 1) for a device's fabrication constant."""
    return float(fab_bits(key, field, idx) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@JIT
def ln_rows(x, out, xbits, mbits):
    """``out[j] = ln(x[j])`` for finite ``x[j] > 0`` (float64 arrays of one length), vectorized.

    ``xbits`` and ``mbits`` are int64 views of float64 scratch arrays of that length (``x``
    itself is read through ``xbits``, which must view it).  ``x = m 2^e`` with m in [1, 2),
    moved into [sqrt(1/2), sqrt(2)); ``ln m = 2 atanh(f)``, ``f = (m - 1) / (m + 1)``, summed
    to f^11 (error below 2e-11).
    """
    n = x.shape[0]
    mant = mbits.view(np.float64)
    for j in range(n):
        b = xbits[j]
        mbits[j] = (b & np.int64(0x000FFFFFFFFFFFFF)) | np.int64(0x3FF0000000000000)
        out[j] = float(((b >> np.int64(52)) & np.int64(0x7FF)) - np.int64(1023))
    for j in range(n):
        m = mant[j]
        big = m > 1.4142135623730951
        m = m * 0.5 if big else m
        e = out[j] + 1.0 if big else out[j]
        f = (m - 1.0) / (m + 1.0)
        f2 = f * f
        s = f * (2.0 + f2 * (2.0 / 3.0 + f2 * (0.4 + f2 * (2.0 / 7.0 + f2 * (2.0 / 9.0 + f2 * (2.0 / 11.0))))))
        out[j] = s + e * 0.6931471805599453


#: float32 constants of :func:`ln_rows32` and :func:`exp_rows32`.
_F32 = np.float32
_SQRT2_32 = _F32(1.4142135623730951)
_LN2_32 = _F32(0.6931471805599453)
_INV_LN2_32 = _F32(1.4426950408889634)
# ln 2 in two parts (Cody and Waite): k * _LN2_HI is exact in float32 for |k| < 2^15.
_LN2_HI = _F32(0.693359375)
_LN2_LO = _F32(-2.12194440e-4)
#: Arguments of :func:`exp_rows32` are clipped to [-EXP32_LIMIT, EXP32_LIMIT].
EXP32_LIMIT = 80.0


@JIT
def ln_rows32(x, out, xbits, mbits):
    """``out[j] = ln(x[j])`` in float32 arithmetic, for normal float32 ``x[j] > 0`` (float32 arrays
    of one length; ``xbits`` an int32 view of ``x``, ``mbits`` of a float32 scratch array).

    As :func:`ln_rows`: ``x = m 2^e``, m moved into [sqrt(1/2), sqrt(2)), ``ln m = 2 atanh(f)``
    summed to f^9 (the first term left out is below 8e-10); the rest is float32 rounding, an
    absolute error of a few ulp of ``max(|ln x|, 1)``.
    """
    n = x.shape[0]
    mant = mbits.view(np.float32)
    one = _F32(1.0)
    half = _F32(0.5)
    c1, c3, c5, c7, c9 = _F32(2.0), _F32(2.0 / 3.0), _F32(0.4), _F32(2.0 / 7.0), _F32(2.0 / 9.0)
    for j in range(n):
        b = xbits[j]
        mbits[j] = (b & np.int32(0x007FFFFF)) | np.int32(0x3F800000)
        out[j] = _F32(((b >> np.int32(23)) & np.int32(0xFF)) - np.int32(127))
    for j in range(n):
        m = mant[j]
        big = m > _SQRT2_32
        m = m * half if big else m
        e = out[j] + one if big else out[j]
        f = (m - one) / (m + one)
        f2 = f * f
        out[j] = f * (c1 + f2 * (c3 + f2 * (c5 + f2 * (c7 + f2 * c9)))) + e * _LN2_32


@JIT
def exp_rows32(x, out, kbits):
    """``out[j] = exp(x[j])`` in float32 arithmetic, ``x[j]`` clipped to [-80, 80] (float32 arrays;
    ``kbits`` an int32 view of a float32 scratch array of that length).

    ``x = k ln 2 + r`` with ``|r| <= ln 2 / 2`` (``ln 2`` in two parts, so ``r`` is exact to
    float32 rounding), ``exp r`` from its Taylor polynomial to r^7 (the first term left out is
    below 6e-9, relative), times ``2^k`` set in the exponent bits: a relative error of a few
    float32 ulp.  ``out`` must be another array than ``x``: over overlapping arrays the loop runs
    unvectorized.
    """
    n = x.shape[0]
    scale = kbits.view(np.float32)
    lim = _F32(EXP32_LIMIT)
    half = _F32(0.5)
    one = _F32(1.0)
    c2, c3, c4, c5, c6, c7 = _F32(0.5), _F32(1.0 / 6.0), _F32(1.0 / 24.0), _F32(1.0 / 120.0), _F32(1.0 / 720.0), \
        _F32(1.0 / 5040.0)
    for j in range(n):
        v = min(max(x[j], -lim), lim)
        k = np.floor(v * _INV_LN2_32 + half)
        r = (v - k * _LN2_HI) - k * _LN2_LO
        out[j] = one + r * (one + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * (c6 + r * c7))))))
        kbits[j] = (np.int32(k) + np.int32(127)) << np.int32(23)
    for j in range(n):
        out[j] *= scale[j]


@JIT_INLINE
def exp_neg(x):
    """exp(-x) for x >= 0 without a libm call, vectorizable: :func:`exp_bounded` of -x / 8,
    raised to the 8th power (relative error below 1e-7 for x <= 34, 2e-5 at 64); x beyond 64
    counts as 64 (a factor below 2e-28)."""
    e = exp_bounded(-min(x, 64.0) * 0.125)
    e *= e
    e *= e
    return e * e


@JIT_INLINE
def device_gsat(key, idx, pp):
    """A device's own saturation level (normalized), clipped to [0.5, 1.5]."""
    return min(max(1.0 + pp[PP_GMAX_DTOD] * fab_normal(key, F_GSAT, idx), 0.5), 1.5)


@JIT_INLINE
def device_step(key, idx, pp, up):
    """A device's own step at g = 0 for an up (``up``) or down pulse, fraction of the range."""
    s = pp[PP_STEP_DTOD]
    base = pp[PP_STEP] * exp_bounded(s * fab_normal(key, F_STEP, idx) - 0.5 * s * s)
    ud = min(max(pp[PP_UD] + pp[PP_UD_DTOD] * fab_normal(key, F_UPDOWN, idx), -0.9), 0.9)
    return base * (1.0 + ud) if up else base * (1.0 - ud)


@JIT_INLINE
def quantize_nu(nu, step):
    """A drift exponent as uint16 steps of ``step`` (saturating)."""
    if step <= 0.0:
        return np.uint16(0)
    return np.uint16(min(math.floor(nu / step + 0.5), 65535.0))


@JIT_INLINE
def verify_sigma(g, pp, gmin_rel, span_rel):
    """Residual std (normalized units) left by program-and-verify at normalized conductance ``g``.

    ``gmin_rel`` and ``span_rel`` are g_min / g_max and (g_max - g_min) / g_max; the
    coefficients in ``pp`` are already divided by the span in microsiemens.
    """
    x = gmin_rel + g * span_rel
    n = int(pp[PP_VE_N])
    s = 0.0
    for m in range(n - 1, -1, -1):
        s = s * x + pp[PP_VE0 + m]
    return max(s, 0.0)


@JIT_INLINE
def device_sigma(g_prog, g_now, age, rp, t0):
    """1/f read-noise std (normalized units) of a device programmed to ``g_prog``, now at
    ``g_now``, ``age`` seconds after its programming (IBM's PCM law, ``ReadNoiseSpec``)."""
    if rp[RP_LAW] == 0.0 or g_now <= 0.0:
        return 0.0
    rel = rp[RP_GMIN] + g_prog * rp[RP_SPAN]
    if rel > 0.0:
        p = rp[RP_QEXP] * ln_fast(rel)  # rel ** q_exponent
        power = exp_bounded(p) if abs(p) <= 8.0 else math.exp(p)
    else:
        power = 0.0
    q = min(rp[RP_QS] / max(power, rp[RP_QFLOOR]), rp[RP_QMAX])
    tr = rp[RP_TREAD]
    tf = math.sqrt(max(ln_fast((min(max(age, 0.0), 1e280) + t0 + tr) / (2.0 * tr)), 0.0))
    g_phys = rp[RP_GMIN] / rp[RP_SPAN] + g_now  # conductance in units of the span
    return g_phys * q * tf


@JIT_INLINE
def soft_pulses(gk, gsat, step, n, up, ps, xi):
    """A device at ``gk`` after ``n`` soft-bounded pulses of size ``step`` (closed form).

    Each pulse multiplies the distance ``d`` to the bound it moves away from (``g_sat - g``
    up, ``g`` down) by ``1 - a (1 + ps xi_m)``, ``a = step / g_sat``.  After ``n`` pulses
    the mean is ``d (1 - a)^n`` and the variance ``d^2 (1 - a)^(2n) ((1 + c)^n - 1)`` with
    ``c = (a ps / (1 - a))^2``, both exact (the form keeps the variance exactly 0 without
    noise; for steps so large that the mean underflows, ``d^2 (((1 - a)^2 + a^2 ps^2)^n -
    (1 - a)^(2n))``); the result is that mean plus one normal ``xi`` of that spread, clipped to
    [0, g_sat].
    """
    a = min(step / gsat, 0.999)
    base = 1.0 - a
    grow = 1.0 + (a * ps / base) ** 2
    second = base * base + (a * ps) ** 2
    pw = 1.0
    q = 1.0
    s2 = 1.0
    m = n
    while m > 0:  # powers by squaring, no libm call
        if m & 1:
            pw *= base
            q *= grow
            s2 *= second
        base *= base
        grow *= grow
        second *= second
        m >>= 1
    d = gsat - gk if up else gk
    mean_d = d * pw
    if q < 1e300 and pw > 1e-150:
        sd = mean_d * math.sqrt(q - 1.0)
    else:  # extreme steps: the mean underflows; the second moment alone sets the spread
        sd = d * math.sqrt(max(s2 - pw * pw, 0.0))
    mean = gsat - mean_d if up else mean_d
    return min(max(mean + sd * xi, 0.0), gsat)


@JIT_INLINE
def pulses_to(g_from, g_to, gsat, step, max_n):
    """Pulses a soft-bounded device needs to move from ``g_from`` up to ``g_to`` (at least 1)."""
    a = min(step / gsat, 0.999)
    top = min(g_to, 0.999 * gsat)
    if top <= g_from:
        return 1
    n = math.log((gsat - top) / (gsat - g_from)) / math.log(1.0 - a)
    return int(min(max(math.ceil(n), 1.0), max_n))


@JIT_INLINE
def program_device(g, t_rel, nu, life, key, idx, k, i, j, value, t_now_rel, drift_on, pp, dp, st):
    """Write ``value`` into device (k, i, j) as just programmed: time, fresh drift exponent."""
    g[k, i, j] = np.float32(value)
    t_rel[k, i, j] = np.float32(t_now_rel)
    if life[k, i, j] == 0:
        nu[k, i, j] = 0
    elif drift_on:
        if pp[PP_NU_REDRAW] != 0.0:
            st, r = xorshift_next(st)
            xi = normal_from_bits(r)
        else:
            xi = fab_normal(key, F_XI, idx)
        nu[k, i, j] = quantize_nu(drift_exponent(float(g[k, i, j]), xi, dp), pp[PP_NU_STEP])
    return st


@JIT_INLINE
def wear(life, k, i, j, n):
    """Wear device (k, i, j) by ``n`` pulses; returns the pulses it took (fewer if it wore out)."""
    left = life[k, i, j]
    if left == UNLIMITED:
        return n
    take = min(n, int(left))
    life[k, i, j] = np.uint32(int(left) - take)
    return take


@JIT_INLINE
def drifted(g, t_rel, nu, k, i, j, t_base, now, nstep, t0):
    """Device (k, i, j)'s conductance at ``now`` and its age."""
    age = now - (t_base + float(t_rel[k, i, j]))
    return float(g[k, i, j]) * drift_factor(age, float(nu[k, i, j]) * nstep, t0), age


@JIT
def failure_times(key, life, median, dtod, share, fail_at, fail_on):
    """Each device's failure time (log-normal around ``median`` s) and whether it sticks high.

    The normal deviate is exact (Box-Muller), not the Irwin-Hall sum of the other fabrication
    constants: the share of devices failed by a given age follows ``FaultSpec.failed_fraction``
    into the tails.

    fail_at : float64 (2, rows, cols) filled (inf if ``median`` <= 0); fail_on : int8 likewise.
    Returns the earliest failure time of a device that is not stuck yet.
    """
    two, rows, cols = life.shape
    first = math.inf
    for k in range(two):
        for i in range(rows):
            for j in range(cols):
                idx = (k * rows + i) * cols + j
                if median <= 0.0:
                    t = math.inf
                else:  # an exact normal (Box-Muller from two hashed uniforms): the tails matter here
                    u1 = 1.0 - fab_uniform(key, F_FAIL, idx)
                    u2 = fab_uniform(key, F_FAIL + 16, idx)
                    z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
                    t = median * math.exp(dtod * z)
                fail_at[k, i, j] = t
                fail_on[k, i, j] = 1 if fab_uniform(key, F_FAIL_ON, idx) < share else 0
                if life[k, i, j] != 0 and t < first:
                    first = t
    return first


@JIT
def device_constants(key, pp, out_gsat, out_up, out_down):
    """Every device's saturation level and up and down step (float32 (2, rows, cols) each)."""
    two, rows, cols = out_gsat.shape
    for k in range(two):
        for i in range(rows):
            for j in range(cols):
                idx = (k * rows + i) * cols + j
                out_gsat[k, i, j] = device_gsat(key, idx, pp)
                out_up[k, i, j] = device_step(key, idx, pp, True)
                out_down[k, i, j] = device_step(key, idx, pp, False)


@JIT
def fixed_xi(key, out):
    """Each device's lifelong drift draw (float64 (2, rows, cols)), when exponents are not redrawn."""
    two, rows, cols = out.shape
    for k in range(two):
        for i in range(rows):
            for j in range(cols):
                out[k, i, j] = fab_normal(key, F_XI, (k * rows + i) * cols + j)
