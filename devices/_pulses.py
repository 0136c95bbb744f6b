"""Numba kernels that change the device state: drift refresh, refresh of pairs, program-and-verify.

Private: :class:`devices.crossbar.Crossbar` validates every input first.  The state and the
functions they share are in :mod:`devices._devstate`; plain-numpy references live in
``tests/reference.py``.
"""

from __future__ import annotations

import math

import numpy as np

from ._devstate import (
    PP_NU_STEP, PP_RESET_LEVEL, PP_RESET_STD, PP_VERIFY_READS, RP_GMIN, RP_LAW,
    RP_QEXP, RP_QFLOOR, RP_QMAX, RP_QS, RP_SPAN, RP_TREAD, device_gsat, device_sigma, device_step, drifted,
    exp_rows32, ln_rows32, program_device, pulses_to, verify_sigma, wear,
)
from ._kernels import D_T0, JIT, ROW_CHUNK, normal_from_bits, row_seed, xorshift_next
from ._threads import n_chunks, run_chunks

#: ``t_read / t0`` up to which the refresh takes the read noise's time logarithm from the drift's
#: (``_refresh_chunks``); above it, the logarithm is computed on its own.
TIME_LOG_SHORTCUT = 1e-4


@JIT
def _refresh_chunks(c0, c1, g, t_rel, nu, nu_step, t_base, now, dp, rp, w_max, w_eff, row_gsum, row_var, parts, g_now):
    """Chunks ``c0`` to ``c1`` (of ``ROW_CHUNK`` rows) of :func:`refresh_kernel`; ``parts[ch]``
    receives chunk ``ch``'s column sums of the read-noise variance."""
    keep = g_now.size > 0
    rows, cols = w_eff.shape
    f32 = np.float32
    t0 = dp[D_T0]
    law = rp[RP_LAW] != 0.0
    qs, qexp, qfloor, qmax, tread = rp[RP_QS], rp[RP_QEXP], rp[RP_QFLOOR], rp[RP_QMAX], rp[RP_TREAD]
    gmin_rel, span_rel = rp[RP_GMIN], rp[RP_SPAN]
    lift = gmin_rel / span_rel
    since = now - t_base
    inv_t0 = 1.0 / t0
    # The read noise's time factor, with t = age + t0: ln((t + t_read) / (2 t_read)) =
    # ln((t + t_read) / t0) + ln(t0 / (2 t_read)).  Where t_read / t0 <= TIME_LOG_SHORTCUT (the
    # presets: 1e-8) the first term is the drift's logarithm ln(t / t0) plus e = t_read / t
    # (log1p(e) = e to within e^2 / 2 <= 5e-9); otherwise it is a logarithm of its own.
    ln_shift = math.log(t0 / (2.0 * tread)) if law else 0.0
    own_log = law and tread > TIME_LOG_SHORTCUT * t0
    x_top = 1e38  # float32 range: ages beyond 1e38 t0 count as 1e38 t0
    xin = np.empty(cols, f32)
    lnv = np.empty(cols, f32)
    tl = np.empty(cols, f32)
    arg = np.empty(cols, f32)
    abits = arg.view(np.int32)
    ex = np.empty(cols, f32)
    scr = np.empty(cols, f32)
    xbits = xin.view(np.int32)
    sbits = scr.view(np.int32)
    gd = np.empty((2, cols), f32)
    var = np.zeros(cols, np.float64)
    qv = np.empty(cols, f32)
    ns32 = f32(nu_step)
    e32 = f32(tread / t0) if law else f32(0.0)
    sh32 = f32(ln_shift)
    lo32, hi32, zero32 = f32(-64.0), f32(8.0), f32(0.0)
    for i in range(c0 * ROW_CHUNK, min(c1 * ROW_CHUNK, rows)):
        col_var = parts[i // ROW_CHUNK]
        for j in range(cols):
            var[j] = 0.0
        for k in range(2):
            gr = g[k, i]
            tr = t_rel[k, i]
            nr = nu[k, i]
            for j in range(cols):  # x = (age + t0) / t0, the age in float64 (a float32 difference would lose it)
                xin[j] = f32(min(1.0 + min(max(since - float(tr[j]), 0.0), 1e300) * inv_t0, x_top))
            ln_rows32(xin, lnv, xbits, sbits)
            if own_log:  # tl = L = ln((t + t_read) / t0) + ln(t0 / (2 t_read))
                for j in range(cols):
                    arg[j] = xin[j] + e32
                ln_rows32(arg, tl, abits, sbits)
                for j in range(cols):
                    tl[j] += sh32
            elif law:  # the same from ln(t / t0) and t_read / t
                for j in range(cols):
                    tl[j] = lnv[j] + sh32 + e32 / xin[j]
            for j in range(cols):
                arg[j] = max(-(f32(nr[j]) * ns32) * lnv[j], lo32)
            exp_rows32(arg, ex, sbits)  # (into another array: a loop over overlapping arrays does not vectorize)
            gk = gd[k]
            for j in range(cols):
                gk[j] = gr[j] * ex[j]
            if keep:
                gn = g_now[k, i]
                for j in range(cols):
                    gn[j] = gk[j]
            if law:
                # Q_s = min(q_s / max(rel^q_exponent, q_floor), q_max) at the programmed conductance
                for j in range(cols):
                    xin[j] = f32(max(gmin_rel + float(gr[j]) * span_rel, 1e-30))
                ln_rows32(xin, arg, xbits, sbits)
                q32 = f32(qexp)
                for j in range(cols):
                    arg[j] = min(q32 * arg[j], hi32)
                exp_rows32(arg, ex, sbits)
                qs32, qf32, qm32 = f32(qs), f32(qfloor), f32(qmax)
                for j in range(cols):
                    qv[j] = min(qs32 / max(ex[j], qf32), qm32)
                lf32, wm32 = f32(lift), f32(w_max)
                for j in range(cols):
                    tf = np.sqrt(max(tl[j], zero32))
                    sd = (lf32 + gk[j]) * qv[j] * tf * wm32
                    var[j] += float(sd) * float(sd) if gk[j] > zero32 else 0.0
        acc = 0.0
        vacc = 0.0
        wr = w_eff[i]
        for j in range(cols):
            wr[j] = np.float32((float(gd[0, j]) - float(gd[1, j])) * w_max)
        for j in range(cols):
            acc += float(gd[0, j]) + float(gd[1, j])
            vacc += var[j]
            col_var[j] += var[j]
        row_gsum[i] = acc
        row_var[i] = vacc


def refresh_kernel(g, t_rel, nu, nu_step, t_base, now, dp, rp, w_max, w_eff, row_gsum, row_var, col_var, g_now):
    """Effective weights, row conductance sums and read-noise sums at time ``now``.

    w_eff : float32 (rows, cols) = (g+ f+ - g- f-) w_max, f the drift factor of each device.
    row_gsum : float64 (rows,), sum of the drifted conductances of both devices.
    row_var, col_var : float64 (rows,), (cols,): sums of the per-weight read-noise variance
    ``w_max^2 (sigma+^2 + sigma-^2)`` over each row and each column (zeros without a law;
    :func:`devices._devstate.device_sigma` per device).
    g_now : float32 (2, rows, cols) receives the drifted conductances, or has size 0 (not wanted).

    Row by row in vectorized stages of float32 arithmetic (``ln`` from bit operations and ``exp``
    from a short series, :func:`devices._devstate.ln_rows32` and ``exp_rows32``: twice the
    vector width of float64; the weights are float32 and the read noise a percent, so a few
    float32 roundings, a relative error near 1e-6, change nothing a read can show); the ages
    and every sum are float64.  The read noise's time factor reuses the drift's logarithm where
    ``t_read / t0 <= TIME_LOG_SHORTCUT``.
    Blocks of rows run on several threads (:mod:`devices._threads`); the column sums are added
    per chunk of ``ROW_CHUNK`` rows, chunk by chunk in order, so that the result does not
    depend on the thread count.
    """
    chunks = n_chunks(w_eff.shape[0])
    parts = np.zeros((chunks, w_eff.shape[1]), np.float64)
    run_chunks(_refresh_chunks, chunks, g, t_rel, nu, nu_step, t_base, now, dp, rp, w_max, w_eff, row_gsum, row_var,
               parts, g_now)
    np.sum(parts, axis=0, out=col_var)  # chunk by chunk, in order


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
def refresh_pair(g, t_rel, nu, life, key, i, j, t_base, now, drift_on, pp, dp, rp, st):
    """Refresh a one-directional pair: read its weight (with read noise), RESET both devices,
    program-and-verify the weight back onto the device of its sign.  Returns (state, pulses,
    whether a program-and-verify ran)."""
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
    verified = False
    if w != 0.0 and life[s, i, j] != 0:
        st, n = _set_verified(g, t_rel, nu, life, key, s, i, j, float(g[s, i, j]), abs(w), t_now_rel, drift_on,
                               pp, dp, rp, st)
        spent += n
        verified = True
    return st, spent, verified


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
            w_eff[i, j] = np.float32((np.float64(g[0, i, j]) - np.float64(g[1, i, j])) * w_max)
            total += spent_pair
            if spent_pair > most:
                most = spent_pair
        row_pulses[i] = total
        row_max[i] = most
        row_verify[i] = verify
