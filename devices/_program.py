"""The programming kernel: requested weight changes become pulses on the devices, one row at a time.

Private: :class:`devices.crossbar.Crossbar` validates every input first.  The plain-numpy
reference is ``tests/reference.py``.

A row's requested entries (those asking for at least one pulse) are first compacted into a
list of columns; the row then runs in stages over that list only, most of them branch-free
loops that the compiler vectorizes: the request and the device it goes to (gathered once),
its drifted conductance (``ln`` and ``exp`` from bit operations and short series, no libm
call), its fabrication constants (hashes), the closed-form pulses (exact mean and variance),
a fresh drift exponent, and the write-back (scattered once).  Pairs of one-directional
devices that must be refreshed first are set aside by the vectorized stages and handled one
by one afterwards (:func:`devices._pulses.refresh_pair`).  Blocks of rows run on several
threads (:mod:`devices._threads`).

Random numbers: per row, two buffers of normals from the row's 16 lanes
(:func:`devices._kernels.fill_normals` after :func:`devices._kernels.seed_lanes` with the
call's seed): the first for the pulses' cycle-to-cycle noise, the second for the fresh drift
draws, entry ``c`` for the row's ``c``-th requested entry in column order.  The refresh of a
pair, and the fresh drift draw of the pulses that follow it, draw from a separate xorshift
stream per row (``row_seed(seed ^ REFRESH_SALT, row)``) in column order.
"""
from __future__ import annotations

import numpy as np

from ._devstate import (
    F_GSAT, F_STEP, F_UPDOWN, F_XI, PP_GMAX_DTOD, PP_NU_REDRAW, PP_NU_STEP, PP_PULSE_STD, PP_REFRESH_AT,
    PP_STEP, PP_STEP_DTOD, PP_UD, PP_UD_DTOD, PP_VERIFY_READS, UNLIMITED, exp_neg, fab_normal, ln_rows,
    drifted, program_device, soft_pulses, wear,
)
from ._kernels import (
    D_G_FLAT, D_MU_A, D_MU_B, D_MU_FLAT, D_MU_HI, D_MU_LO, D_S_A, D_S_B, D_S_FLAT, D_S_HI, D_S_LO, D_T0, JIT,
    JIT_INLINE, ROW_CHUNK,
    LANES, drift_exponent, exp_bounded, fill_normals, row_seed, seed_lanes,
)
from ._pulses import refresh_pair
from ._threads import n_chunks, run_chunks

#: Mixed into the call's seed for the per-row stream of pair refreshes.
REFRESH_SALT = np.uint64(0x5DEECE66DA3B1F27)


@JIT_INLINE
def _mix(key, field):
    z = np.uint64(key) ^ (np.uint64(field + 1) * np.uint64(0xD6E8FEB86659FD93))
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@JIT_INLINE
def _hash_normal(kf, idx):
    """Unit normal of one fabrication constant: :func:`devices._devstate.fab_normal` with the
    field's key ``kf = _mix(key, field)`` already mixed (inlined so the loop vectorizes)."""
    z = (kf ^ np.uint64(idx)) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    r = z ^ (z >> np.uint64(31))
    m = np.uint64(0xFFFF)
    s = (r & m) + ((r >> np.uint64(16)) & m) + ((r >> np.uint64(32)) & m) + (r >> np.uint64(48))
    return (float(s) + 2.0) * (1.7320508075688772 / 65536.0) - 2.0 * 1.7320508075688772


@JIT
def _program_chunks(c0, c1, delta, g, t_rel, nu, life, w_eff, row_gsum, key, t_base, now, dp, pp, rp, set_only, drift_on,
                   pulse_step_w, w_max, max_pulses, seed, row_pulses, row_max, row_verify):
    """Chunks ``c0`` to ``c1`` (of ``ROW_CHUNK`` rows) of :func:`program_kernel`, serially."""
    r0 = c0 * ROW_CHUNK
    r1 = min(c1 * ROW_CHUNK, delta.shape[0])
    rows, cols = delta.shape
    nb = (cols + LANES - 1) // LANES
    width = nb * LANES
    t0 = dp[D_T0]
    nstep = pp[PP_NU_STEP]
    inv_nstep = 1.0 / nstep if nstep > 0.0 else 0.0
    ps = pp[PP_PULSE_STD]
    redraw = pp[PP_NU_REDRAW] != 0.0
    reads_per_verify = int(pp[PP_VERIFY_READS])
    thr = pp[PP_REFRESH_AT]
    t_now_rel = now - t_base
    kg, ks, ku = _mix(key, F_GSAT), _mix(key, F_STEP), _mix(key, F_UPDOWN)
    sd = pp[PP_STEP_DTOD]
    # Every parameter read once into a local: a load from ``pp`` or ``dp`` inside a loop that
    # stores to an array keeps the loop from vectorizing (the arrays might alias).
    gmax_dtod, ud_mean, ud_dtod, step0 = pp[PP_GMAX_DTOD], pp[PP_UD], pp[PP_UD_DTOD], pp[PP_STEP]
    g_flat, mu_flat, s_flat = dp[D_G_FLAT], dp[D_MU_FLAT], dp[D_S_FLAT]
    mu_a, mu_b, mu_lo, mu_hi = dp[D_MU_A], dp[D_MU_B], dp[D_MU_LO], dp[D_MU_HI]
    s_a, s_b, s_lo, s_hi = dp[D_S_A], dp[D_S_B], dp[D_S_LO], dp[D_S_HI]
    lognorm_shift = -0.5 * sd * sd
    f64 = np.float64
    unl = np.int64(UNLIMITED)
    t32 = np.float32(t_now_rel)
    inv_step = 1.0 / pulse_step_w
    # Per-row scratch, entry c for the row's c-th requested column ``jcol[c]``.
    jcol = np.empty(width, np.int64)
    req = np.empty(width, f64)
    npulse = np.empty(width, f64)
    kdev = np.empty(width, np.int64)
    up = np.empty(width, np.bool_)
    graw = np.empty(width, f64)
    gd = np.empty((2, width), f64)
    lifes = np.empty((2, width), np.int64)
    gk_ = np.empty(width, f64)
    gsat = np.empty(width, f64)
    step = np.empty(width, f64)
    powv = np.empty(width, f64)
    powv2 = np.empty(width, f64)
    powv3 = np.empty(width, f64)
    base3 = np.empty(width, f64)
    base2 = np.empty(width, f64)
    base = np.empty(width, f64)
    newg = np.empty(width, f64)
    xin = np.empty(width, f64)
    lnv = np.empty(width, f64)
    mscr = np.empty(width, f64)
    xbits = xin.view(np.int64)
    mbits = mscr.view(np.int64)
    noise = np.zeros(width, np.float32)
    draw = np.zeros(width, np.float32)
    lanes = np.empty(LANES, np.uint64)
    flagged = np.empty(width, np.int64)
    fidx = np.empty(width, np.int64)
    g_flat_ = g.reshape(-1)
    t_flat = t_rel.reshape(-1)
    nu_flat = nu.reshape(-1)
    life_flat = life.reshape(-1)
    ndev = 1 if set_only else 2
    for i in range(r0, r1):
        # Only the requested entries (at least one pulse) are worked on: the row's columns
        # are compacted into ``jcol`` first (branch-free).  A row asked for nothing changes
        # nothing (rows of inputs that are always 0, as the background pixels of an image).
        drow = delta[i]
        m = 0
        for j in range(cols):
            jcol[m] = j
            m += 1 if np.floor(abs(float(drow[j])) * inv_step + 0.5) >= 1.0 else 0
        if m == 0:
            row_pulses[i] = 0
            row_max[i] = 0
            row_verify[i] = 0
            continue
        wm = ((m + LANES - 1) // LANES) * LANES
        seed_lanes(lanes, seed, i)
        fill_normals(lanes, noise[:wm])
        fill_normals(lanes, draw[:wm])
        for c in range(m):
            req[c] = float(drow[jcol[c]])
        for c in range(m):
            npulse[c] = min(np.floor(abs(req[c]) * inv_step + 0.5), float(max_pulses))
        for c in range(m):
            kdev[c] = 0 if req[c] > 0.0 else 1
        # 1. Drifted conductance now, g * exp(-nu ln((age + t0) / t0)): of the device asked for
        # (set-only: ``gd[0]``), or of both devices (``gd[k]``); the device's state gathered once.
        for k in range(ndev):
            for c in range(m):
                f = ((kdev[c] if set_only else k) * rows + i) * cols + jcol[c]
                xin[c] = float(t_flat[f])
                graw[c] = float(g_flat_[f])
                gk_[c] = float(nu_flat[f]) * nstep
                lifes[k, c] = np.int64(life_flat[f])
            for c in range(m):
                xin[c] = 1.0 + min(max(t_now_rel - xin[c], 0.0), 1e280) / t0
            ln_rows(xin[:m], lnv, xbits, mbits)
            for c in range(m):
                gd[k, c] = graw[c] * exp_neg(gk_[c] * lnv[c])
        if set_only:
            for c in range(m):
                up[c] = True
            for c in range(m):
                gk_[c] = gd[0, c]
        else:  # the device with more room in the needed direction, unless it is stuck
            for c in range(m):
                ku_ = kdev[c]
                idx_u = (ku_ * rows + i) * cols + jcol[c]
                sat_u = min(max(1.0 + gmax_dtod * _hash_normal(kg, idx_u), 0.5), 1.5)
                g_u = gd[1, c] if ku_ == 1 else gd[0, c]
                g_d = gd[0, c] if ku_ == 1 else gd[1, c]
                dead_u = (lifes[1, c] if ku_ == 1 else lifes[0, c]) == 0
                dead_d = (lifes[0, c] if ku_ == 1 else lifes[1, c]) == 0
                u = (sat_u - g_u) >= g_d
                up[c] = (u and not dead_u) or dead_d
            for c in range(m):
                kdev[c] = kdev[c] if up[c] else 1 - kdev[c]
            for c in range(m):
                gk_[c] = gd[1, c] if kdev[c] == 1 else gd[0, c]
            for c in range(m):
                lifes[0, c] = lifes[1, c] if kdev[c] == 1 else lifes[0, c]
        # 2. A device takes at most the pulses it has left; its fabrication constants.
        for c in range(m):
            left = lifes[0, c]
            n = npulse[c]
            npulse[c] = n if left == unl else min(n, float(left))
        for c in range(m):
            idx = (kdev[c] * rows + i) * cols + jcol[c]
            gsat[c] = min(max(1.0 + gmax_dtod * _hash_normal(kg, idx), 0.5), 1.5)
        for c in range(m):
            idx = (kdev[c] * rows + i) * cols + jcol[c]
            ud = min(max(ud_mean + ud_dtod * _hash_normal(ku, idx), -0.9), 0.9)
            b = step0 * exp_bounded(sd * _hash_normal(ks, idx) + lognorm_shift)
            step[c] = b * (1.0 + ud) if up[c] else b * (1.0 - ud)
        n_flag = 0
        if set_only:
            count = 0
            for c in range(m):
                due = npulse[c] > 0.0 and gk_[c] >= thr * gsat[c]
                count += 1 if due else 0
            if count:
                for c in range(m):
                    if npulse[c] > 0.0 and gk_[c] >= thr * gsat[c]:
                        flagged[n_flag] = c
                        n_flag += 1
        # 3. (1 - a)^n by squaring, a = step / g_sat: one vectorized pass per bit of the row's
        # largest count.
        top = 0.0
        for c in range(m):
            top = max(top, npulse[c])
        nbits = 1
        while (1 << nbits) <= int(top):
            nbits += 1
        for c in range(m):
            a = min(step[c] / gsat[c], 0.999)
            base[c] = 1.0 - a
            powv[c] = 1.0
        for c in range(m):
            a = min(step[c] / gsat[c], 0.999)
            base2[c] = 1.0 + (a * ps / (1.0 - a)) ** 2
            powv2[c] = 1.0
        for c in range(m):
            a = min(step[c] / gsat[c], 0.999)
            base3[c] = (1.0 - a) * (1.0 - a) + (a * ps) ** 2
            powv3[c] = 1.0
        for bit in range(nbits):  # the three powers in one pass per bit
            for c in range(m):
                on = (int(npulse[c]) >> bit) & 1
                b1 = base[c]
                b2 = base2[c]
                b3 = base3[c]
                powv[c] *= b1 if on else 1.0
                powv2[c] *= b2 if on else 1.0
                powv3[c] *= b3 if on else 1.0
                base[c] = b1 * b1
                base2[c] = b2 * b2
                base3[c] = b3 * b3
        # 4. The closed-form pulses (devices._devstate.soft_pulses): exact mean and variance.
        for c in range(m):
            gk = gk_[c]
            sat = gsat[c]
            pw = powv[c]
            u = up[c]
            d0 = (sat - gk) if u else gk
            dist = d0 * pw
            ok = powv2[c] < 1e300 and pw > 1e-150
            sdv = dist * np.sqrt(max(powv2[c] - 1.0, 0.0)) if ok else d0 * np.sqrt(max(powv3[c] - pw * pw, 0.0))
            mean = (sat - dist) if u else dist
            moved = min(max(mean + sdv * float(noise[c]), 0.0), sat)
            # A SET pulse never lowers a one-directional device, however its noise falls.
            newg[c] = max(moved, gk) if set_only else moved
        # 5. A fresh drift exponent at the programmed conductance: |mu(g) + sigma(g) xi|.
        for c in range(m):
            xin[c] = max(newg[c], 1e-6)
        ln_rows(xin[:m], lnv, xbits, mbits)
        for c in range(m):
            xi = float(draw[c]) if redraw else 0.0
            lg = lnv[c]
            flat = newg[c] >= g_flat
            mu = mu_flat if flat else min(max(mu_a * lg + mu_b, mu_lo), mu_hi)
            sg = s_flat if flat else min(max(s_a * lg + s_b, s_lo), s_hi)
            lnv[c] = mu + sg * xi  # kept signed; |.| below
        if not redraw:  # the device's own lifelong draw: scalar hashes, only when asked for
            for c in range(m):
                if npulse[c] > 0.0:
                    lnv[c] = drift_exponent(newg[c], fab_normal(key, F_XI, (kdev[c] * rows + i) * cols + jcol[c]),
                                            dp)
        for c in range(m):  # the drift exponent a device gets, unless it wears out now
            qv = np.floor(abs(lnv[c]) * inv_nstep + 0.5) if drift_on else 0.0
            lnv[c] = min(qv, 65535.0)
        # 6. Write back every device that took pulses and was not set aside for a refresh (those
        # are marked by a negative count and handled in step 7), and the cached weights.
        for f in range(n_flag):
            npulse[flagged[f]] = -npulse[flagged[f]] - 1.0
        for c in range(m):
            fidx[c] = (kdev[c] * rows + i) * cols + jcol[c]
        for c in range(m):  # the new conductance as stored
            xin[c] = float(np.float32(newg[c]))
        for c in range(m):  # the device's move (0 if it took no pulses)
            newg[c] = (xin[c] - gk_[c]) if npulse[c] > 0.0 else 0.0
        # Scatter (one device per entry): pulses left, exponent, conductance, time.
        for c in range(m):
            n = npulse[c]
            if n > 0.0:
                f = fidx[c]
                lv = np.int64(life_flat[f])
                left = lv if lv == unl else lv - np.int64(n)
                life_flat[f] = np.uint32(left)
                if left == 0:
                    nu_flat[f] = np.uint16(0)
                elif drift_on:
                    nu_flat[f] = np.uint16(np.int64(lnv[c]))
                g_flat_[f] = np.float32(xin[c])
                t_flat[f] = t32
        wrow = w_eff[i]
        for c in range(m):
            j = jcol[c]
            mv = newg[c]
            wrow[j] = np.float32(float(wrow[j]) + (-mv if kdev[c] == 1 else mv) * w_max)
        total = 0
        most = 0
        moved_sum = 0.0
        for c in range(m):  # counts as integers (their sums vectorize)
            taken = np.int64(max(npulse[c], 0.0))
            total += taken
            most = max(most, taken)
        for c in range(m):
            moved_sum += newg[c]
        row_gsum[i] += moved_sum
        # 7. Pairs set aside: refresh (read, RESET both, write back by program-and-verify), then
        # the requested pulses from the fresh state, one by one.
        verify = 0
        if n_flag > 0:
            st = row_seed(seed ^ REFRESH_SALT, i)
            for f in range(n_flag):
                c = flagged[f]
                j = jcol[c]
                k = kdev[c]
                n = int(-npulse[c] - 1.0)
                before = (drifted(g, t_rel, nu, 0, i, j, t_base, now, nstep, t0)[0]
                          + drifted(g, t_rel, nu, 1, i, j, t_base, now, nstep, t0)[0])
                st, spent, verified = refresh_pair(g, t_rel, nu, life, key, i, j, t_base, now, drift_on, pp, dp,
                                                   rp, st)
                verify += 1 + (reads_per_verify if verified else 0)
                gk = float(g[k, i, j])
                taken = wear(life, k, i, j, n) if life[k, i, j] != 0 else 0
                if taken > 0:
                    new = max(soft_pulses(gk, gsat[c], step[c], taken, True, ps, float(noise[c])), gk)
                    st = program_device(g, t_rel, nu, life, key, (k * rows + i) * cols + j, k, i, j, new,
                                        t_now_rel, drift_on, pp, dp, st)
                    spent += taken
                g0, g1 = np.float64(g[0, i, j]), np.float64(g[1, i, j])
                w_eff[i, j] = np.float32((g0 - g1) * w_max)
                row_gsum[i] += g0 + g1 - before
                total += spent
                most = max(most, spent)
        row_pulses[i] = total
        row_max[i] = most
        row_verify[i] = verify


def program_kernel(delta, g, t_rel, nu, life, w_eff, row_gsum, key, t_base, now, dp, pp, rp, set_only, drift_on,
                   pulse_step_w, w_max, max_pulses, seed, row_pulses, row_max, row_verify):
    """Turn a requested weight change into pulses and apply them.

    delta : float32 (rows, cols) in nominal weight units; zero entries change nothing.
    Each nonzero entry asks for ``n = min(round(|delta| / pulse_step_w), max_pulses)``
    pulses.  ``set_only``: they raise g+ (delta > 0) or g- (delta < 0), after a refresh of
    the pair if that device has reached ``refresh_at`` of its saturation level.  Otherwise
    they go to the device with more room in the needed direction (its partner if it is
    stuck).  A device takes at most the pulses it has left (``life``) and sticks when none
    are left.  ``w_eff`` and ``row_gsum`` change by the device's move from its drifted value
    now; the rest of the cache keeps the state of the last refresh.  Per row: ``row_pulses``
    receives the pulses applied (RESETs included), ``row_max`` the most on one device,
    ``row_verify`` the verify reads of refreshes.

    Blocks of rows run on several threads (:mod:`devices._threads`); each row draws from its
    own streams and writes only its own devices, so the result does not depend on the thread
    count.
    """
    run_chunks(_program_chunks, n_chunks(delta.shape[0]), delta, g, t_rel, nu, life, w_eff, row_gsum, key, t_base,
               now, dp, pp, rp, set_only, drift_on, pulse_step_w, w_max, max_pulses, seed, row_pulses, row_max,
               row_verify)
