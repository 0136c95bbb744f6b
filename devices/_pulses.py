"""Numba kernels of the device state: fabrication constants, drift refresh, pulses, verify.

Private: :class:`devices.crossbar.Crossbar` validates every input first.  Plain-numpy
references live in ``tests/reference.py``.

The compact device state (per device, shape ``(2, rows, cols)``, index 0 the positive
device) is four arrays: ``g`` (float32, conductance as programmed, normalized to the
range), ``t_rel`` (float32, programming time minus the layer's ``t_base``), ``nu``
(uint16, the drift exponent in steps of ``dp[D_NU_STEP]``) and ``life`` (uint32, pulses
left before the device wears out and sticks; 0 = stuck, ``UNLIMITED`` = never wears).
Everything a device keeps from fabrication (saturation level, step sizes, a fixed drift
draw, failure time) is a function of the layer's fabrication key and the device's index,
recomputed where it is needed (:func:`fab_normal`): it costs no memory and no bandwidth.
"""

from __future__ import annotations

import math

import numpy as np

from ._kernels import D_T0, JIT, drift_exponent, drift_factor, normal_from_bits, row_seed, splitmix64, xorshift_next

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


@JIT
def fab_bits(key, field, idx):
    """64 well-mixed bits for fabrication constant ``field`` of device ``idx`` of a layer."""
    return splitmix64(splitmix64(np.uint64(key) ^ (np.uint64(field + 1) * _KEY_MIX)) ^ np.uint64(idx))


@JIT
def fab_normal(key, field, idx):
    """Unit normal (Irwin-Hall, tails cut at 3.46 sigma) for a device's fabrication constant."""
    return normal_from_bits(fab_bits(key, field, idx))


@JIT
def fab_uniform(key, field, idx):
    """Uniform in [0, 1) for a device's fabrication constant."""
    return float(fab_bits(key, field, idx) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@JIT
def exp_bounded(x):
    """exp(x) for |x| <= 8 without a libm call: Taylor to x^7 of x / 16, then squared four times
    (relative error below 1e-8 on that range)."""
    y = x * 0.0625
    e = 1.0 + y * (1.0 + y * (0.5 + y * (1.0 / 6.0 + y * (1.0 / 24.0 + y * (1.0 / 120.0 + y * (
        1.0 / 720.0 + y * (1.0 / 5040.0)))))))
    e *= e
    e *= e
    e *= e
    return e * e


@JIT
def device_gsat(key, idx, pp):
    """A device's own saturation level (normalized), clipped to [0.5, 1.5]."""
    return min(max(1.0 + pp[PP_GMAX_DTOD] * fab_normal(key, F_GSAT, idx), 0.5), 1.5)


@JIT
def device_step(key, idx, pp, up):
    """A device's own step at g = 0 for an up (``up``) or down pulse, fraction of the range."""
    s = pp[PP_STEP_DTOD]
    base = pp[PP_STEP] * exp_bounded(s * fab_normal(key, F_STEP, idx) - 0.5 * s * s)
    ud = min(max(pp[PP_UD] + pp[PP_UD_DTOD] * fab_normal(key, F_UPDOWN, idx), -0.9), 0.9)
    return base * (1.0 + ud) if up else base * (1.0 - ud)


@JIT
def quantize_nu(nu, step):
    """A drift exponent as uint16 steps of ``step`` (saturating)."""
    if step <= 0.0:
        return np.uint16(0)
    return np.uint16(min(math.floor(nu / step + 0.5), 65535.0))


@JIT
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


@JIT
def device_sigma(g_prog, g_now, age, rp, t0):
    """1/f read-noise std (normalized units) of a device programmed to ``g_prog``, now at
    ``g_now``, ``age`` seconds after its programming (IBM's PCM law, ``ReadNoiseSpec``)."""
    if rp[RP_LAW] == 0.0 or g_now <= 0.0:
        return 0.0
    rel = max(rp[RP_GMIN] + g_prog * rp[RP_SPAN], 0.0)
    q = rp[RP_QS] / max(rel ** rp[RP_QEXP], rp[RP_QFLOOR])
    q = min(q, rp[RP_QMAX])
    tr = rp[RP_TREAD]
    tf = math.sqrt(max(math.log((age + t0 + tr) / (2.0 * tr)), 0.0))
    g_phys = rp[RP_GMIN] / rp[RP_SPAN] + g_now  # conductance in units of the span
    return g_phys * q * tf


@JIT
def refresh_kernel(g, t_rel, nu, nu_step, t_base, now, dp, rp, w_max, w_eff, row_gsum, row_var, col_var):
    """Effective weights, row conductance sums and read-noise sums at time ``now``.

    w_eff : float32 (rows, cols) = (g+ f+ - g- f-) w_max, f the drift factor of each device.
    row_gsum : float64 (rows,), sum of the drifted conductances of both devices.
    row_var, col_var : float64 (rows,), (cols,): sums of the per-weight read-noise variance
    ``w_max^2 (sigma+^2 + sigma-^2)`` over each row and each column (zeros without a law).
    """
    rows, cols = w_eff.shape
    t0 = dp[D_T0]
    for j in range(cols):
        col_var[j] = 0.0
    for i in range(rows):
        acc = 0.0
        vacc = 0.0
        for j in range(cols):
            w = 0.0
            v = 0.0
            for k in range(2):
                age = now - (t_base + float(t_rel[k, i, j]))
                gp = float(g[k, i, j])
                gd = gp * drift_factor(age, float(nu[k, i, j]) * nu_step, t0)
                w += gd if k == 0 else -gd
                acc += gd
                if rp[RP_LAW] != 0.0:
                    s = device_sigma(gp, gd, age, rp, t0) * w_max
                    v += s * s
            w_eff[i, j] = np.float32(w * w_max)
            vacc += v
            col_var[j] += v
        row_gsum[i] = acc
        row_var[i] = vacc


@JIT
def _soft_pulses(gk, gsat, step, n, up, ps, xi):
    """A device at ``gk`` after ``n`` soft-bounded pulses of size ``step`` (closed form).

    The mean path is exact; the cycle-to-cycle noise (relative ``ps`` per pulse) is one
    normal ``xi`` scaled by the summed variance along that path.
    """
    a = min(step / gsat, 0.999)
    base = 1.0 - a
    pw = 1.0
    m = n
    while m > 0:  # base ** n by squaring, no libm call
        if m & 1:
            pw *= base
        base *= base
        m >>= 1
    spread = math.sqrt((1.0 - pw * pw) / (a * (2.0 - a)))
    if up:
        mean = gsat - (gsat - gk) * pw
        sd = ps * step * (1.0 - gk / gsat) * spread
    else:
        mean = gk * pw
        sd = ps * step * (gk / gsat) * spread
    return min(max(mean + sd * xi, 0.0), gsat)


@JIT
def _pulses_to(g_from, g_to, gsat, step, max_n):
    """Pulses a soft-bounded device needs to move from ``g_from`` up to ``g_to`` (at least 1)."""
    a = min(step / gsat, 0.999)
    top = min(g_to, 0.999 * gsat)
    if top <= g_from:
        return 1
    n = math.log((gsat - top) / (gsat - g_from)) / math.log(1.0 - a)
    return int(min(max(math.ceil(n), 1.0), max_n))


@JIT
def _program_device(g, t_rel, nu, life, key, idx, k, i, j, value, t_now_rel, drift_on, pp, dp, st):
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


@JIT
def _wear(life, k, i, j, n):
    """Wear device (k, i, j) by ``n`` pulses; returns the pulses it took (fewer if it wore out)."""
    left = life[k, i, j]
    if left == UNLIMITED:
        return n
    take = min(n, int(left))
    life[k, i, j] = np.uint32(int(left) - take)
    return take


@JIT
def _drifted(g, t_rel, nu, k, i, j, t_base, now, nstep, t0):
    """Device (k, i, j)'s conductance at ``now`` and its age."""
    age = now - (t_base + float(t_rel[k, i, j]))
    return float(g[k, i, j]) * drift_factor(age, float(nu[k, i, j]) * nstep, t0), age


@JIT
def _set_verified(g, t_rel, nu, life, key, s, i, j, g_from, target, t_now_rel, drift_on, pp, dp, rp, st):
    """Program-and-verify device (s, i, j) from ``g_from`` to ``target``: the pulses such a loop
    spends (counted as the soft-bounded steps between the two levels, worn), the residual
    error it leaves (``verify_sigma``).  Returns (state, pulses)."""
    rows, cols = g.shape[1], g.shape[2]
    idx = (s * rows + i) * cols + j
    ssat = device_gsat(key, idx, pp)
    tgt = min(max(target, 0.0), ssat)
    m = _pulses_to(min(g_from, tgt), max(g_from, tgt), ssat, device_step(key, idx, pp, True), 1000)
    spent = _wear(life, s, i, j, m)
    st, r = xorshift_next(st)
    val = tgt + verify_sigma(tgt, pp, rp[RP_GMIN], rp[RP_SPAN]) * normal_from_bits(r)
    val = min(max(val, 0.0), ssat)
    st = _program_device(g, t_rel, nu, life, key, idx, s, i, j, val, t_now_rel, drift_on, pp, dp, st)
    return st, spent


@JIT
def _reset(g, t_rel, nu, life, key, kk, i, j, t_now_rel, drift_on, pp, dp, st):
    """RESET device (kk, i, j) to near 0 with one pulse; returns (state, pulses)."""
    if life[kk, i, j] == 0:
        return st, 0
    rows, cols = g.shape[1], g.shape[2]
    idx = (kk * rows + i) * cols + j
    spent = _wear(life, kk, i, j, 1)
    st, r = xorshift_next(st)
    lvl = min(abs(pp[PP_RESET_LEVEL] + pp[PP_RESET_STD] * normal_from_bits(r)), device_gsat(key, idx, pp))
    st = _program_device(g, t_rel, nu, life, key, idx, kk, i, j, lvl, t_now_rel, drift_on, pp, dp, st)
    return st, spent


@JIT
def _refresh_pair(g, t_rel, nu, life, key, i, j, t_base, now, drift_on, pp, dp, rp, st):
    """Refresh a one-directional pair: read its weight (with read noise), RESET both devices,
    program-and-verify the weight back onto the device of its sign.  Returns (state, pulses)."""
    t0 = dp[D_T0]
    nstep = pp[PP_NU_STEP]
    g0, a0 = _drifted(g, t_rel, nu, 0, i, j, t_base, now, nstep, t0)
    g1, a1 = _drifted(g, t_rel, nu, 1, i, j, t_base, now, nstep, t0)
    s0 = device_sigma(float(g[0, i, j]), g0, a0, rp, t0)
    s1 = device_sigma(float(g[1, i, j]), g1, a1, rp, t0)
    st, r = xorshift_next(st)
    w = g0 - g1 + math.sqrt(s0 * s0 + s1 * s1) * normal_from_bits(r)
    t_now_rel = now - t_base
    spent = 0
    for kk in range(2):
        st, n = _reset(g, t_rel, nu, life, key, kk, i, j, t_now_rel, drift_on, pp, dp, st)
        spent += n
    s = 0 if w > 0.0 else 1
    if w != 0.0 and life[s, i, j] != 0:
        st, n = _set_verified(g, t_rel, nu, life, key, s, i, j, float(g[s, i, j]), abs(w), t_now_rel, drift_on,
                               pp, dp, rp, st)
        spent += n
    return st, spent


@JIT
def program_kernel(delta, g, t_rel, nu, life, w_eff, key, t_base, now, dp, pp, rp, set_only, drift_on,
                   pulse_step_w, w_max, max_pulses, seed, row_pulses, row_max, row_verify):
    """Turn a requested weight change into pulses and apply them, sparsely.

    delta : float32 (rows, cols) in nominal weight units; zero entries cost nothing.
    Each nonzero entry asks for ``n = min(round(|delta| / pulse_step_w), max_pulses)``
    pulses.  ``set_only``: they raise g+ (delta > 0) or g- (delta < 0), after a refresh of
    the pair if that device has reached ``refresh_at`` of its saturation level.  Otherwise
    they go to the device with more room in the needed direction (its partner if it is
    stuck).  ``w_eff`` changes by the device's move from its drifted value now; the rest of
    the cache keeps the state of the last refresh.  Per row: ``row_pulses`` receives the
    pulses applied (RESETs included), ``row_max`` the most on one device, ``row_verify``
    the verify reads of refreshes.
    """
    rows, cols = delta.shape
    t0 = dp[D_T0]
    nstep = pp[PP_NU_STEP]
    ps = pp[PP_PULSE_STD]
    t_now_rel = now - t_base
    reads_per_verify = int(pp[PP_VERIFY_READS])
    for i in range(rows):
        st = row_seed(seed, i)
        total = 0
        most = 0
        verify = 0
        for j in range(cols):
            d = float(delta[i, j])
            if d == 0.0:
                continue
            n = int(math.floor(abs(d) / pulse_step_w + 0.5))
            if n == 0:
                continue
            n = min(n, max_pulses)
            if set_only:
                k = 0 if d > 0.0 else 1
                up = True
            else:
                g0, _a0 = _drifted(g, t_rel, nu, 0, i, j, t_base, now, nstep, t0)
                g1, _a1 = _drifted(g, t_rel, nu, 1, i, j, t_base, now, nstep, t0)
                ku = 0 if d > 0.0 else 1
                kd = 1 - ku
                room_up = device_gsat(key, (ku * rows + i) * cols + j, pp) - (g0 if ku == 0 else g1)
                room_down = g0 if kd == 0 else g1
                up = room_up >= room_down
                if up and life[ku, i, j] == 0:
                    up = False
                elif (not up) and life[kd, i, j] == 0:
                    up = True
                k = ku if up else kd
            if life[k, i, j] == 0:
                continue
            idx = (k * rows + i) * cols + j
            gsat = device_gsat(key, idx, pp)
            gk, _age = _drifted(g, t_rel, nu, k, i, j, t_base, now, nstep, t0)
            spent = 0
            if set_only and gk >= pp[PP_REFRESH_AT] * gsat:
                st, spent = _refresh_pair(g, t_rel, nu, life, key, i, j, t_base, now, drift_on, pp, dp, rp, st)
                verify += 1 + reads_per_verify
                w_eff[i, j] = np.float32((float(g[0, i, j]) - float(g[1, i, j])) * w_max)
                gk = float(g[k, i, j])
            taken = _wear(life, k, i, j, n) if life[k, i, j] != 0 else 0
            if taken > 0:
                xi = 0.0
                if ps > 0.0:
                    st, r = xorshift_next(st)
                    xi = normal_from_bits(r)
                new = _soft_pulses(gk, gsat, device_step(key, idx, pp, up), taken, up, ps, xi)
                st = _program_device(g, t_rel, nu, life, key, idx, k, i, j, new, t_now_rel, drift_on, pp, dp, st)
                moved = float(g[k, i, j]) - gk
                w_eff[i, j] = np.float32(float(w_eff[i, j]) + (moved if k == 0 else -moved) * w_max)
                spent += taken
            total += spent
            if spent > most:
                most = spent
        row_pulses[i] = total
        row_max[i] = most
        row_verify[i] = verify


@JIT
def verify_kernel(target, g, t_rel, nu, life, w_eff, key, t_base, now, dp, pp, rp, set_only, drift_on,
                  one_per_sign, common_mode, w_max, seed, row_pulses, row_max, row_verify):
    """Program-and-verify every weight of a layer to ``target`` (float32 (rows, cols), nominal
    weight units).

    The pair's targets follow the mapping: ``one_per_sign`` puts ``|w| / w_max`` on the
    device of the weight's sign and 0 on the other; otherwise the weight is split around
    ``common_mode``.  ``set_only`` devices are RESET first and then SET; bidirectional
    devices are moved from where they are.  Stuck devices keep their value.  Per row, as
    :func:`program_kernel`, with ``verify_reads`` reads per device written.
    """
    rows, cols = target.shape
    t0 = dp[D_T0]
    nstep = pp[PP_NU_STEP]
    t_now_rel = now - t_base
    reads_per_verify = int(pp[PP_VERIFY_READS])
    for i in range(rows):
        st = row_seed(seed, i)
        total = 0
        most = 0
        verify = 0
        for j in range(cols):
            u = float(target[i, j]) / w_max
            if one_per_sign:
                want0 = max(u, 0.0)
                want1 = max(-u, 0.0)
            else:
                low = max(common_mode - 0.5 * abs(u), 0.0)
                want0 = low + abs(u) if u > 0.0 else low
                want1 = low if u > 0.0 else low + abs(u)
            spent_pair = 0
            for k in range(2):
                if life[k, i, j] == 0:
                    continue
                want = want0 if k == 0 else want1
                spent = 0
                if set_only:
                    st, spent = _reset(g, t_rel, nu, life, key, k, i, j, t_now_rel, drift_on, pp, dp, st)
                    if want <= 0.0 or life[k, i, j] == 0:
                        spent_pair += spent
                        continue
                    g_from = float(g[k, i, j])
                else:
                    g_from, _age = _drifted(g, t_rel, nu, k, i, j, t_base, now, nstep, t0)
                st, n = _set_verified(g, t_rel, nu, life, key, k, i, j, g_from, want, t_now_rel, drift_on,
                                      pp, dp, rp, st)
                spent_pair += spent + n
                verify += reads_per_verify
            w_eff[i, j] = np.float32((float(g[0, i, j]) - float(g[1, i, j])) * w_max)
            total += spent_pair
            if spent_pair > most:
                most = spent_pair
        row_pulses[i] = total
        row_max[i] = most
        row_verify[i] = verify


@JIT
def failure_times(key, life, median, dtod, share, fail_at, fail_on):
    """Each device's failure time (log-normal around ``median`` s) and whether it sticks high.

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
                else:
                    t = median * math.exp(dtod * fab_normal(key, F_FAIL, idx))
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
