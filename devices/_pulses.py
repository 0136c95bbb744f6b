"""Numba kernels that change the device state: drift refresh, pulses, refresh of pairs, verify.

Private: :class:`devices.crossbar.Crossbar` validates every input first.  The state and the
functions they share are in :mod:`devices._devstate`; plain-numpy references live in
``tests/reference.py``.
"""

from __future__ import annotations

import math

import numpy as np

from ._devstate import (
    PP_NU_STEP, PP_PULSE_STD, PP_REFRESH_AT, PP_RESET_LEVEL, PP_RESET_STD, PP_VERIFY_READS, RP_GMIN, RP_LAW,
    RP_SPAN, device_gsat, device_sigma, device_step, drifted, program_device, pulses_to, soft_pulses,
    verify_sigma, wear,
)
from ._kernels import D_T0, JIT, drift_factor, normal_from_bits, row_seed, xorshift_next

@JIT
def refresh_kernel(g, t_rel, nu, nu_step, t_base, now, dp, rp, w_max, w_eff, row_gsum, row_var, col_var, g_now):
    """Effective weights, row conductance sums and read-noise sums at time ``now``.

    w_eff : float32 (rows, cols) = (g+ f+ - g- f-) w_max, f the drift factor of each device.
    row_gsum : float64 (rows,), sum of the drifted conductances of both devices.
    row_var, col_var : float64 (rows,), (cols,): sums of the per-weight read-noise variance
    ``w_max^2 (sigma+^2 + sigma-^2)`` over each row and each column (zeros without a law).
    g_now : float32 (2, rows, cols) receives the drifted conductances, or has size 0 (not wanted).
    """
    keep = g_now.size > 0
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
                if keep:
                    g_now[k, i, j] = np.float32(gd)
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
def _set_verified(g, t_rel, nu, life, key, s, i, j, g_from, target, t_now_rel, drift_on, pp, dp, rp, st):
    """Program-and-verify device (s, i, j) from ``g_from`` to ``target``: the pulses such a loop
    spends (counted as the soft-bounded steps between the two levels, worn), the residual
    error it leaves (``verify_sigma``).  Returns (state, pulses)."""
    rows, cols = g.shape[1], g.shape[2]
    idx = (s * rows + i) * cols + j
    ssat = device_gsat(key, idx, pp)
    tgt = min(max(target, 0.0), ssat)
    m = pulses_to(min(g_from, tgt), max(g_from, tgt), ssat, device_step(key, idx, pp, True), 1000)
    spent = wear(life, s, i, j, m)
    st, r = xorshift_next(st)
    val = tgt + verify_sigma(tgt, pp, rp[RP_GMIN], rp[RP_SPAN]) * normal_from_bits(r)
    val = min(max(val, 0.0), ssat)
    st = program_device(g, t_rel, nu, life, key, idx, s, i, j, val, t_now_rel, drift_on, pp, dp, st)
    return st, spent


@JIT
def _reset(g, t_rel, nu, life, key, kk, i, j, t_now_rel, drift_on, pp, dp, st):
    """RESET device (kk, i, j) to near 0 with one pulse; returns (state, pulses)."""
    if life[kk, i, j] == 0:
        return st, 0
    rows, cols = g.shape[1], g.shape[2]
    idx = (kk * rows + i) * cols + j
    spent = wear(life, kk, i, j, 1)
    st, r = xorshift_next(st)
    lvl = min(max(pp[PP_RESET_LEVEL] + pp[PP_RESET_STD] * normal_from_bits(r), 0.0), device_gsat(key, idx, pp))
    st = program_device(g, t_rel, nu, life, key, idx, kk, i, j, lvl, t_now_rel, drift_on, pp, dp, st)
    return st, spent


@JIT
def _refresh_pair(g, t_rel, nu, life, key, i, j, t_base, now, drift_on, pp, dp, rp, st):
    """Refresh a one-directional pair: read its weight (with read noise), RESET both devices,
    program-and-verify the weight back onto the device of its sign.  Returns (state, pulses)."""
    t0 = dp[D_T0]
    nstep = pp[PP_NU_STEP]
    g0, a0 = drifted(g, t_rel, nu, 0, i, j, t_base, now, nstep, t0)
    g1, a1 = drifted(g, t_rel, nu, 1, i, j, t_base, now, nstep, t0)
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
def program_kernel(delta, g, t_rel, nu, life, w_eff, row_gsum, key, t_base, now, dp, pp, rp, set_only, drift_on,
                   pulse_step_w, w_max, max_pulses, seed, row_pulses, row_max, row_verify):
    """Turn a requested weight change into pulses and apply them, sparsely.

    delta : float32 (rows, cols) in nominal weight units; zero entries cost nothing.
    Each nonzero entry asks for ``n = min(round(|delta| / pulse_step_w), max_pulses)``
    pulses.  ``set_only``: they raise g+ (delta > 0) or g- (delta < 0), after a refresh of
    the pair if that device has reached ``refresh_at`` of its saturation level.  Otherwise
    they go to the device with more room in the needed direction (its partner if it is
    stuck).  ``w_eff`` and ``row_gsum`` change by the device's move from its drifted value
    now; the rest of the cache keeps the state of the last refresh.  Per row: ``row_pulses`` receives the
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
                if life[k, i, j] == 0:
                    continue
                gk, _age = drifted(g, t_rel, nu, k, i, j, t_base, now, nstep, t0)
            else:
                g0, _a0 = drifted(g, t_rel, nu, 0, i, j, t_base, now, nstep, t0)
                g1, _a1 = drifted(g, t_rel, nu, 1, i, j, t_base, now, nstep, t0)
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
                gk = g0 if k == 0 else g1
            idx = (k * rows + i) * cols + j
            gsat = device_gsat(key, idx, pp)
            spent = 0
            if set_only and gk >= pp[PP_REFRESH_AT] * gsat:
                st, spent = _refresh_pair(g, t_rel, nu, life, key, i, j, t_base, now, drift_on, pp, dp, rp, st)
                verify += 1 + reads_per_verify
                w_eff[i, j] = np.float32((float(g[0, i, j]) - float(g[1, i, j])) * w_max)
                gk = float(g[k, i, j])
            taken = wear(life, k, i, j, n) if life[k, i, j] != 0 else 0
            if taken > 0:
                xi = 0.0
                if ps > 0.0:
                    st, r = xorshift_next(st)
                    xi = normal_from_bits(r)
                new = soft_pulses(gk, gsat, device_step(key, idx, pp, up), taken, up, ps, xi)
                st = program_device(g, t_rel, nu, life, key, idx, k, i, j, new, t_now_rel, drift_on, pp, dp, st)
                moved = float(g[k, i, j]) - gk
                w_eff[i, j] = np.float32(float(w_eff[i, j]) + (moved if k == 0 else -moved) * w_max)
                row_gsum[i] += moved
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
                    g_from, _age = drifted(g, t_rel, nu, k, i, j, t_base, now, nstep, t0)
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
