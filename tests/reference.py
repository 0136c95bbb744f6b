"""Plain-numpy references of the kernels in ``devices._kernels``.

Each function is written from the kernel's docstring (and the spec's), as
slow, obvious numpy or Python code; ``tests/test_kernels.py`` compares the
kernels with them.  Integer arithmetic on uint64 is done on *arrays* (numpy
wraps array arithmetic modulo 2**64 silently, while scalar overflow warns).
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
    r = _u64(r)
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


def periphery(u, bias, bias_level, noise_var_rows, out_var, seed, soft, gain, offset, curv, sat,
              adc_range, adc_step) -> np.ndarray:
    """Bias, read noise, neuron and ADC after the product ``u = x @ W``, in float32.

    Row ``b`` gets noise std ``sqrt(out_var + noise_var_rows[b])`` times the
    normals of :func:`lane_normals` (``seed``, ``b``).  Neuron: ReLU, or if
    ``soft``: ``r = max(gain (v - offset), 0); h = r + curv r^2 / (R + r);
    v = h sat / (sat + h)``.  ADC: ``min(v, R)`` and, if ``adc_step > 0``,
    ``floor(v / adc_step + 0.5) * adc_step``.  Returns a new float32 array.
    """
    f32 = np.float32
    u = np.asarray(u, dtype=np.float32)
    batch, n = u.shape
    R = f32(adc_range)
    out = np.empty_like(u)
    for b in range(batch):
        var = out_var + (float(noise_var_rows[b]) if len(noise_var_rows) else 0.0)
        v = u[b] + f32(bias_level) * bias
        if var > 0:
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


# -- drift ---------------------------------------------------------------------------------------
def drift_factor(age, nu, t0):
    """``((age + t0) / t0) ** -nu`` (1 for age <= 0), float64, exact power."""
    age = np.asarray(age, dtype=np.float64)
    nu = np.asarray(nu, dtype=np.float64)
    f = ((np.maximum(age, 0.0) + t0) / t0) ** (-nu)
    return np.where(age <= 0.0, 1.0, f)


def drift_exponent(g, xi, dp):
    """``|mu(g) + sigma(g) xi|`` with the clipped log-linear mu and sigma of ``DriftSpec``."""
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
    """Effective weights ``(g+ f+ - g- f-) * w_max`` (float64) and each row's summed drifted g."""
    f = drift_factor(now - np.asarray(t_prog), nu, t0)
    gd = np.asarray(g, dtype=np.float64) * f
    return (gd[0] - gd[1]) * w_max, gd.sum(axis=(0, 2))


# -- programming -------------------------------------------------------------------------------
@dataclass
class Pair:
    """One differential pair: per-device lists of length 2 (index 0 the positive device)."""

    g: list
    t_prog: list
    nu: list
    g_sat: list
    step_up: list
    step_down: list
    xi: list
    endurance: list
    wear: list
    stuck: list
    w: float | None = None
    applied: int = 0


def program_pair(pair: Pair, d: float, now: float, pulse_step_w: float, w_max: float,
                 max_pulses: int, drift_on: bool, dp, pulse_std: float = 0.0, xis=None) -> Pair:
    """Apply a request ``d`` (nominal weight units) to one pair.

    From ``ProgrammingSpec`` and ``program_kernel``'s docstring:
    ``n = min(round(|d| / pulse_step_w), max_pulses)`` pulses go to the device
    with more room in the needed direction (d > 0: raise g+ or lower g-;
    d < 0: the mirror; room up = g_sat - g, room down = g, both at their
    drifted value at ``now``), the other device if that one is stuck, none if
    both are.  Each pulse: ``up: g += step_up (1 - g / g_sat)``, ``down: g -=
    step_down g / g_sat``, clipped to [0, g_sat]; a device sticks on the pulse
    that brings its wear to its endurance (and, if it was not flagged then,
    instead of taking the next pulse).  A device that
    took pulses is re-dated (t_prog = now), its exponent re-drawn from its new
    g (0 if it stuck), and the pair's effective weight recomputed.
    With ``pulse_std > 0`` each pulse's step is scaled by ``1 + pulse_std * xi``
    with ``xi`` taken in turn from the iterator ``xis``.
    Returns a new Pair (``w`` None when nothing was applied).
    """
    p = Pair(**{k: list(v) if isinstance(v, list) else v for k, v in vars(pair).items()})
    p.w, p.applied = None, 0
    if d == 0.0:
        return p
    n = min(int(math.floor(abs(d) / pulse_step_w + 0.5)), max_pulses)
    if n == 0:
        return p
    t0 = dp[0]
    gd = [float(p.g[k]) * float(drift_factor(now - p.t_prog[k], p.nu[k], t0)) for k in (0, 1)]
    k_up, k_down = (0, 1) if d > 0 else (1, 0)
    room_up = p.g_sat[k_up] - gd[k_up]
    room_down = gd[k_down]
    use_up = room_up >= room_down
    if p.stuck[k_up if use_up else k_down]:
        use_up = not use_up
    k = k_up if use_up else k_down
    if p.stuck[k]:
        return p
    gk = gd[k]
    gsat = p.g_sat[k]
    for _ in range(n):
        if p.wear[k] >= p.endurance[k]:
            p.stuck[k] = 1
            break
        c = 1.0 + pulse_std * next(xis) if pulse_std > 0 else 1.0
        if use_up:
            gk = gk + p.step_up[k] * (1.0 - gk / gsat) * c
        else:
            gk = gk - p.step_down[k] * (gk / gsat) * c
        gk = min(max(gk, 0.0), gsat)
        p.wear[k] += 1
        p.applied += 1
        if p.wear[k] >= p.endurance[k]:
            p.stuck[k] = 1
            break
    if p.applied == 0:
        return p
    p.g[k] = float(np.float32(gk))
    p.t_prog[k] = now
    if p.stuck[k]:
        p.nu[k] = 0.0
    elif drift_on:
        p.nu[k] = float(np.float32(drift_exponent(gk, p.xi[k], dp)))
    gd[k] = p.g[k]
    p.w = (gd[0] - gd[1]) * w_max
    return p


def row_pulse_normals(seed: int, row: int):
    """The normals ``program_kernel`` draws for the pulses of row ``row``, in order.

    One xorshift64* stream per row, started at :func:`row_seed`; each pulse
    takes the next output through :func:`irwin_hall` (float64).
    """
    state = row_seed(seed, row)
    while True:
        state, r = xorshift_star(state)
        yield float(irwin_hall(r)[0])


def program_array(delta, state: dict, now, pulse_step_w, w_max, max_pulses, drift_on, dp,
                  pulse_std=0.0, seed=0) -> tuple[dict, np.ndarray, np.ndarray]:
    """:func:`program_pair` over every entry of a small array, row by row, columns in order.

    ``state`` holds ``g, t_prog, nu, wear, stuck, endurance`` (2, rows, cols),
    ``params`` (4, 2, rows, cols) and ``w_eff`` (rows, cols).  Returns
    (new state as float64/int arrays, pulses per row, most pulses on one device per row).
    """
    rows, cols = delta.shape
    out = {k: np.array(v, dtype=np.float64) for k, v in state.items() if k != "params"}
    prm = np.asarray(state["params"], dtype=np.float64)
    row_pulses = np.zeros(rows, np.int64)
    row_max = np.zeros(rows, np.int64)
    for i in range(rows):
        xis = row_pulse_normals(seed, i)
        for j in range(cols):
            pair = Pair(
                g=list(out["g"][:, i, j]), t_prog=list(out["t_prog"][:, i, j]), nu=list(out["nu"][:, i, j]),
                g_sat=list(prm[0, :, i, j]), step_up=list(prm[1, :, i, j]), step_down=list(prm[2, :, i, j]),
                xi=list(prm[3, :, i, j]), endurance=list(out["endurance"][:, i, j]),
                wear=[int(v) for v in out["wear"][:, i, j]], stuck=[int(v) for v in out["stuck"][:, i, j]],
            )
            new = program_pair(pair, float(delta[i, j]), now, pulse_step_w, w_max, max_pulses,
                               drift_on, dp, pulse_std, xis)
            for name in ("g", "t_prog", "nu", "wear", "stuck"):
                out[name][:, i, j] = getattr(new, name)
            if new.w is not None:
                out["w_eff"][i, j] = new.w
            row_pulses[i] += new.applied
            row_max[i] = max(row_max[i], new.applied)
    return out, row_pulses, row_max
