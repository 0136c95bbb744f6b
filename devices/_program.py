"""The programming kernel: requested weight changes become pulses on the devices, one row at a time.

Private: :class:`devices.crossbar.Crossbar` validates every input first.  The plain-numpy
reference is ``tests/reference.py``.

Each row runs in stages over all its columns, every stage a branch-free loop that the
compiler vectorizes: the request and the device it goes to, the devices' fabrication
constants (hashes), their drifted conductance (``ln`` and ``exp`` from bit operations and
short series, no libm call), the closed-form pulses (exact mean and variance), a fresh drift exponent, and the
write-back.  Pairs of one-directional devices that must be refreshed first are set aside by
the vectorized stages and handled one by one afterwards (:func:`devices._pulses.refresh_pair`).

Random numbers: per row, two buffers of normals from the row's 16 lanes
(:func:`devices._kernels.fill_normals` after :func:`devices._kernels.seed_lanes` with the
call's seed): the first for the pulses' cycle-to-cycle noise, the second for the fresh drift
draws, entry ``j`` for column ``j``.  The refresh of a pair, and the fresh drift draw of the
pulses that follow it, draw from a separate xorshift stream per row (``row_seed(seed ^
REFRESH_SALT, row)``) in column order.
"""

from __future__ import annotations

import numpy as np

from ._devstate import (
    F_GSAT, F_STEP, F_UPDOWN, F_XI, PP_GMAX_DTOD, PP_NU_REDRAW, PP_NU_STEP, PP_PULSE_STD, PP_REFRESH_AT,
    PP_STEP, PP_STEP_DTOD, PP_UD, PP_UD_DTOD, PP_VERIFY_READS, UNLIMITED, exp_neg, fab_normal, ln_rows,
    program_device, soft_pulses, wear,
)
from ._kernels import (
    D_G_FLAT, D_MU_A, D_MU_B, D_MU_FLAT, D_MU_HI, D_MU_LO, D_S_A, D_S_B, D_S_FLAT, D_S_HI, D_S_LO, D_T0, JIT,
    LANES, drift_exponent, exp_bounded, fill_normals, row_seed, seed_lanes,
)
from ._pulses import refresh_pair

#: Mixed into the call's seed for the per-row stream of pair refreshes.
REFRESH_SALT = np.uint64(0x5DEECE66DA3B1F27)


@JIT
def _mix(key, field):
    z = np.uint64(key) ^ (np.uint64(field + 1) * np.uint64(0xD6E8FEB86659FD93))
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@JIT
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
    """
    rows, cols = delta.shape
    nb = (cols + LANES - 1) // LANES
    width = nb * LANES
    t0 = dp[D_T0]
    nstep = pp[PP_NU_STEP]
    inv_nstep = 1.0 / nstep if nstep > 0.0 else 0.0
    ps = pp[PP_PULSE_STD]
    redraw = pp[PP_NU_REDRAW] != 0.0
    reads_per_verify = int(pp[PP_VERIFY_READS])
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
    nbits = 1
    while (1 << nbits) <= max_pulses:
        nbits += 1
    f64 = np.float64
    npulse = np.empty(width, f64)
    kdev = np.empty(width, np.int64)
    up = np.empty(width, np.bool_)
    gd = np.empty((2, width), f64)
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
    flagged = np.empty(cols, np.int64)
    flag_k = np.empty(cols, np.int64)
    for i in range(rows):
        # A row asked for nothing changes nothing (rows of inputs that are always 0, as the
        # background pixels of an image): skip it.  Rows draw from their own streams, so
        # skipping one changes no other.
        asked = 0
        drow = delta[i]
        for j in range(cols):
            asked += 1 if drow[j] != 0.0 else 0
        if asked == 0:
            row_pulses[i] = 0
            row_max[i] = 0
            row_verify[i] = 0
            continue
        seed_lanes(lanes, seed, i)
        fill_normals(lanes, noise)
        fill_normals(lanes, draw)
        # 1. Drifted conductance of both devices now: g * exp(-nu ln((age + t0) / t0)).
        for k in range(2):
            for j in range(cols):
                xin[j] = 1.0 + min(max(now - (t_base + float(t_rel[k, i, j])), 0.0), 1e280) / t0
            ln_rows(xin[:cols], lnv, xbits, mbits)
            for j in range(cols):
                gd[k, j] = float(g[k, i, j]) * exp_neg(float(nu[k, i, j]) * nstep * lnv[j])
        # 2. The request, the device it goes to, that device's constants (one array written
        # per loop, as in step 6).
        for j in range(cols):
            npulse[j] = min(np.floor(abs(float(drow[j])) / pulse_step_w + 0.5), float(max_pulses))
        for j in range(cols):
            kdev[j] = 0 if drow[j] > 0.0 else 1
        l0 = life[0, i]
        l1 = life[1, i]
        if set_only:
            for j in range(cols):
                up[j] = True
        else:  # the device with more room in the needed direction, unless it is stuck
            for j in range(cols):
                ku_ = kdev[j]
                idx_u = (ku_ * rows + i) * cols + j
                sat_u = min(max(1.0 + gmax_dtod * _hash_normal(kg, idx_u), 0.5), 1.5)
                g_u = gd[1, j] if ku_ == 1 else gd[0, j]
                g_d = gd[0, j] if ku_ == 1 else gd[1, j]
                dead_u = (l1[j] if ku_ == 1 else l0[j]) == 0
                dead_d = (l0[j] if ku_ == 1 else l1[j]) == 0
                u = (sat_u - g_u) >= g_d
                up[j] = (u and not dead_u) or dead_d
            for j in range(cols):
                kdev[j] = kdev[j] if up[j] else 1 - kdev[j]
        unl = np.int64(UNLIMITED)
        for j in range(cols):  # a device takes at most the pulses it has left
            left = np.int64(l1[j]) if kdev[j] == 1 else np.int64(l0[j])
            n = npulse[j]
            npulse[j] = n if left == unl else min(n, float(left))
        for j in range(cols):
            idx = (kdev[j] * rows + i) * cols + j
            gsat[j] = min(max(1.0 + gmax_dtod * _hash_normal(kg, idx), 0.5), 1.5)
        for j in range(cols):
            idx = (kdev[j] * rows + i) * cols + j
            ud = min(max(ud_mean + ud_dtod * _hash_normal(ku, idx), -0.9), 0.9)
            b = step0 * exp_bounded(sd * _hash_normal(ks, idx) + lognorm_shift)
            step[j] = b * (1.0 + ud) if up[j] else b * (1.0 - ud)
        n_flag = 0
        if set_only:
            thr = pp[PP_REFRESH_AT]
            count = 0
            for j in range(cols):
                gk = gd[1, j] if kdev[j] == 1 else gd[0, j]
                due = npulse[j] > 0.0 and gk >= thr * gsat[j]
                count += 1 if due else 0
            if count:
                for j in range(cols):
                    gk = gd[1, j] if kdev[j] == 1 else gd[0, j]
                    if npulse[j] > 0.0 and gk >= thr * gsat[j]:
                        flagged[n_flag] = j
                        n_flag += 1
        # 3. (1 - a)^n by squaring, a = step / g_sat: nbits passes, each vectorized.
        for j in range(cols):
            a = min(step[j] / gsat[j], 0.999)
            base[j] = 1.0 - a
            powv[j] = 1.0
        for j in range(cols):
            a = min(step[j] / gsat[j], 0.999)
            base2[j] = 1.0 + (a * ps / (1.0 - a)) ** 2
            powv2[j] = 1.0
        for j in range(cols):
            a = min(step[j] / gsat[j], 0.999)
            base3[j] = (1.0 - a) * (1.0 - a) + (a * ps) ** 2
            powv3[j] = 1.0
        for bit in range(nbits):
            for j in range(cols):
                on = (int(npulse[j]) >> bit) & 1
                powv[j] *= base[j] if on else 1.0
                base[j] *= base[j]
            for j in range(cols):
                on = (int(npulse[j]) >> bit) & 1
                powv2[j] *= base2[j] if on else 1.0
                base2[j] *= base2[j]
            for j in range(cols):
                on = (int(npulse[j]) >> bit) & 1
                powv3[j] *= base3[j] if on else 1.0
                base3[j] *= base3[j]
        # 4. The closed-form pulses (devices._devstate.soft_pulses): exact mean and variance.
        for j in range(cols):
            gk = gd[1, j] if kdev[j] == 1 else gd[0, j]
            sat = gsat[j]
            pw = powv[j]
            u = up[j]
            d0 = (sat - gk) if u else gk
            dist = d0 * pw
            ok = powv2[j] < 1e300 and pw > 1e-150
            sdv = dist * np.sqrt(max(powv2[j] - 1.0, 0.0)) if ok else d0 * np.sqrt(max(powv3[j] - pw * pw, 0.0))
            mean = (sat - dist) if u else dist
            moved = min(max(mean + sdv * float(noise[j]), 0.0), sat)
            # A SET pulse never lowers a one-directional device, however its noise falls.
            newg[j] = max(moved, gk) if set_only else moved
        # 5. A fresh drift exponent at the programmed conductance: |mu(g) + sigma(g) xi|.
        for j in range(cols):
            xin[j] = max(newg[j], 1e-6)
        ln_rows(xin[:cols], lnv, xbits, mbits)
        for j in range(cols):
            xi = float(draw[j]) if redraw else 0.0
            lg = lnv[j]
            flat = newg[j] >= g_flat
            mu = mu_flat if flat else min(max(mu_a * lg + mu_b, mu_lo), mu_hi)
            sg = s_flat if flat else min(max(s_a * lg + s_b, s_lo), s_hi)
            lnv[j] = mu + sg * xi  # kept signed; |.| below
        if not redraw:  # the device's own lifelong draw: scalar hashes, only when asked for
            for j in range(cols):
                if npulse[j] > 0.0:
                    lnv[j] = drift_exponent(newg[j], fab_normal(key, F_XI, (kdev[j] * rows + i) * cols + j), dp)
        # 6. Write back every device that took pulses (and was not set aside for a refresh),
        # as selects over whole rows so that the loop vectorizes.
        for f in range(n_flag):
            flag_k[f] = kdev[flagged[f]]
            npulse[flagged[f]] = -npulse[flagged[f]] - 1.0  # marked: handled in step 7
        t32 = np.float32(t_now_rel)
        for j in range(cols):  # which device of the pair takes the pulses: 0, 1 or none (-1)
            kdev[j] = kdev[j] if npulse[j] > 0.0 else -1
        for j in range(cols):  # the drift exponent a device gets, unless it wears out now
            qv = np.floor(abs(lnv[j]) * inv_nstep + 0.5) if drift_on else 0.0
            lnv[j] = min(qv, 65535.0)
        # One loop per array written, each over one row of one device, so that every loop
        # vectorizes (a loop writing several arrays would need alias checks on all of them).
        for k in range(2):
            gr = g[k, i]
            tr = t_rel[k, i]
            nr = nu[k, i]
            lr = life[k, i]
            for j in range(cols):
                lv = np.int64(lr[j])
                lr[j] = np.uint32(lv - np.int64(npulse[j])) if (kdev[j] == k and lv != unl) else lr[j]
            for j in range(cols):
                q = np.uint16(0) if lr[j] == 0 else np.uint16(np.int64(lnv[j]))
                nr[j] = q if (kdev[j] == k and (drift_on or lr[j] == 0)) else nr[j]
            for j in range(cols):
                gr[j] = np.float32(newg[j]) if kdev[j] == k else gr[j]
            for j in range(cols):
                tr[j] = t32 if kdev[j] == k else tr[j]
        total = 0
        most = 0
        for j in range(cols):  # the cached weights; counts as integers (their sums vectorize)
            n = npulse[j]
            k1 = kdev[j] == 1
            moved = (float(np.float32(newg[j])) - (gd[1, j] if k1 else gd[0, j])) if kdev[j] >= 0 else 0.0
            w_eff[i, j] = np.float32(float(w_eff[i, j]) + (-moved if k1 else moved) * w_max)
            base[j] = moved
            taken = np.int64(max(n, 0.0))
            total += taken
            most = max(most, taken)
        moved_sum = 0.0
        for j in range(cols):
            moved_sum += base[j]
        row_gsum[i] += moved_sum
        # 7. Pairs set aside: refresh (read, RESET both, write back by program-and-verify), then
        # the requested pulses from the fresh state, one by one.
        verify = 0
        if n_flag > 0:
            st = row_seed(seed ^ REFRESH_SALT, i)
            for f in range(n_flag):
                j = flagged[f]
                k = flag_k[f]
                n = int(-npulse[j] - 1.0)
                before = gd[0, j] + gd[1, j]
                st, spent, verified = refresh_pair(g, t_rel, nu, life, key, i, j, t_base, now, drift_on, pp, dp,
                                                   rp, st)
                verify += 1 + (reads_per_verify if verified else 0)
                gk = float(g[k, i, j])
                taken = wear(life, k, i, j, n) if life[k, i, j] != 0 else 0
                if taken > 0:
                    new = max(soft_pulses(gk, gsat[j], step[j], taken, True, ps, float(noise[j])), gk)
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
