"""How far the programming kernel is from two floors: moving its state, and the physics' arithmetic.

Run:  python benchmarks/bench_program_floor.py [--preset pcm] [--repeat 20]

A mixed-policy FF epoch on ``pcm`` spends most of its extra time (against
``ideal``) in ``devices._program.program_kernel``.  The kernel works on a row's
requested entries only (a third of the weights in the histogram below): for each
it gathers the compact state of the device pair (conductances, programming
times, drift exponents, pulses left; 32 bytes per weight with the cached
effective weight) and scatters what it changes; the constants a device keeps
from fabrication are hashes, computed, not loaded.

This benchmark times, on one 1000 x 1000 layer, alternately with the kernel
(the layer's ``Crossbar.program`` call; every call starts from the fabricated state at the
same clock, so no refresh of the cached weights falls due inside it: the refresh is timed
on its own, below), on a request whose pulse counts follow
the histogram seen in a mixed-policy training batch on ``pcm`` (67 % of the
weights 0 pulses, 20 % one, 5.5 % two, 3 % three, 1.7 % four, 3 % five or more):

- **state floor**: a kernel that only streams the state: it reads every array the
  programming kernel reads and stores back, unchanged, every array it writes, for
  every weight (as a dense request would);
- **arithmetic floor**: a kernel that does, for each requested entry, only the
  arithmetic the device model cannot do without, in the kernel's own float64
  functions: the request's pulse count, one device's drifted conductance now
  (``ln`` and ``exp``), one lognormal pulse step (``exp``), the mean move and its
  noise (a square root, a normal), a fresh drift exponent (``ln``, a normal) and
  the write-back of conductance, time and exponent.  It leaves out what the model
  also does (the choice between the pair's devices, the device's own saturation
  level and asymmetry, soft bounds over several pulses, wear, refreshes of
  one-directional pairs, the cached weights and row sums), so it is a lower bound
  on any kernel for the same physics in float64 arithmetic.

The layer's full refresh of its cached weights and read-noise sums (every weight) is timed
beside them.  Times are given per requested entry and against the plain float32 product
``x @ W`` (batch 100) of the same layer; ``bench_time_split.py`` measures what an ``ideal``
training step costs, against which these are read.
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

import devices
from devices._devstate import exp_neg, ln_rows
from devices._kernels import LANES, exp_bounded, fill_normals, seed_lanes
from _common import machine_line, median_time

#: Pulse counts 0..5 of a mixed-policy training batch on pcm (layer 2 of 784-1000-1000-1000,
#: batch 50 of epoch 1); 5 stands for "five or more".
PULSE_HISTOGRAM = np.array([0.665, 0.204, 0.055, 0.029, 0.017, 0.030])


@numba.njit(nogil=True, error_model="numpy")
def stream_state(delta, g, t_rel, nu, life, w_eff, row_gsum):
    """Read every state array of the programming kernel and store back, unchanged, those it writes."""
    rows, cols = delta.shape
    total = 0.0
    for i in range(rows):
        acc = 0.0
        for j in range(cols):
            keep = np.float32(0.0) * delta[i, j]
            for k in range(2):
                g[k, i, j] += keep
                t_rel[k, i, j] += keep
                nu[k, i, j] = nu[k, i, j]
                life[k, i, j] = life[k, i, j]
            w_eff[i, j] += keep
            acc += keep
        row_gsum[i] += acc
        total += acc
    return total


@numba.njit(nogil=True, error_model="numpy")
def arithmetic_floor(delta, g, t_rel, nu, inv_step, now, t0, nu_step, seed):
    """The per-entry arithmetic the device model cannot do without (module docstring), on device 0
    of each requested entry; returns the sum of the new conductances (keeps the work live)."""
    rows, cols = delta.shape
    width = ((cols + LANES - 1) // LANES) * LANES
    jcol = np.empty(width, np.int64)
    xin = np.empty(width)
    lnv = np.empty(width)
    mscr = np.empty(width)
    xbits = xin.view(np.int64)
    mbits = mscr.view(np.int64)
    gk = np.empty(width)
    newg = np.empty(width)
    npulse = np.empty(width)
    noise = np.zeros(width, np.float32)
    draw = np.zeros(width, np.float32)
    lanes = np.empty(LANES, np.uint64)
    gf, tf, nf = g[0].reshape(-1), t_rel[0].reshape(-1), nu[0].reshape(-1)
    total = 0.0
    for i in range(rows):
        d = delta[i]
        m = 0
        for j in range(cols):
            jcol[m] = j
            m += 1 if np.floor(abs(float(d[j])) * inv_step + 0.5) >= 1.0 else 0
        if m == 0:
            continue
        wm = ((m + LANES - 1) // LANES) * LANES
        seed_lanes(lanes, seed, i)
        fill_normals(lanes, noise[:wm])
        fill_normals(lanes, draw[:wm])
        for c in range(m):  # gather; the pulse count
            f = i * cols + jcol[c]
            xin[c] = 1.0 + max(now - float(tf[f]), 0.0) / t0
            gk[c] = float(gf[f])
            newg[c] = float(nf[f]) * nu_step
            npulse[c] = np.floor(abs(float(d[jcol[c]])) * inv_step + 0.5)
        ln_rows(xin[:m], lnv, xbits, mbits)
        for c in range(m):  # drifted conductance now
            gk[c] = gk[c] * exp_neg(newg[c] * lnv[c])
        for c in range(m):  # a lognormal step, the mean move, its noise
            a = 0.01 * exp_bounded(0.1 * float(draw[c]))
            n = npulse[c]
            newg[c] = min(max(gk[c] + (1.0 - gk[c]) * a * n + np.sqrt(a * n) * 0.01 * float(noise[c]), 0.0), 1.0)
        for c in range(m):
            xin[c] = max(newg[c], 1e-6)
        ln_rows(xin[:m], lnv, xbits, mbits)
        for c in range(m):  # a fresh drift exponent; write back
            q = abs(0.05 - 0.01 * lnv[c] + 0.01 * float(draw[c]))
            f = i * cols + jcol[c]
            nf[f] = np.uint16(min(np.floor(q / nu_step + 0.5), 65535.0))
            gf[f] = np.float32(newg[c])
            tf[f] = np.float32(now)
            total += newg[c]
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="pcm")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    print(f"# {machine_line()}")
    chip = devices.make_chip(args.preset, (1000, 1000), 0)
    layer = chip._layers[0]
    if layer.exact:
        raise SystemExit(f"preset {args.preset} programs weights exactly; choose a pulsed preset")
    rows, cols = layer.n_in + 1, layer.n_out
    rng = np.random.default_rng(0)
    counts = rng.choice(6, size=(rows, cols), p=PULSE_HISTOGRAM / PULSE_HISTOGRAM.sum())
    counts[counts == 5] = rng.integers(5, 12, size=int((counts == 5).sum()))
    step = float(layer.pulse_step_w)
    sign = rng.choice([-1.0, 1.0], size=(rows, cols))
    delta = (sign * counts * step * rng.uniform(0.8, 1.2, (rows, cols))).astype(np.float32)
    clock = {"now": 1.0, "pulses": 0}
    # Every call starts from the fabricated state (restored before it, untimed): a request
    # repeated on the same weights would drive the one-directional devices to saturation and
    # time their pair refreshes instead.
    names = ("g", "t_rel", "nu", "life", "w_eff", "row_gsum")
    fresh = {k: getattr(layer, k).copy() for k in names}
    scalars = (layer.t_eval, layer.pulses_since, layer.t_prog_max)
    g, t_rel, nu = layer.g.copy(), layer.t_rel.copy(), layer.nu.copy()
    t0, nu_step = float(layer.spec.drift.t0_s), max(float(layer.nu_step), 1e-6)

    def restore() -> None:
        for k in names:
            getattr(layer, k)[...] = fresh[k]
        layer.t_eval, layer.pulses_since, layer.t_prog_max = scalars
        g[...], t_rel[...], nu[...] = fresh["g"], fresh["t_rel"], fresh["nu"]

    def program() -> None:
        pulses, _, _, _ = layer.program(delta, clock["now"], int(rng.integers(0, 2**63)))
        clock["pulses"] = pulses

    def stream() -> None:
        stream_state(delta, layer.g, layer.t_rel, layer.nu, layer.life, layer.w_eff, layer.row_gsum)

    def arithmetic() -> None:
        arithmetic_floor(delta, g, t_rel, nu, 1.0 / step, clock["now"], t0, nu_step,
                         np.uint64(rng.integers(0, 2**63)))

    def refresh() -> None:
        layer.refresh(clock["now"])

    kernels = {"program": program, "stream": stream, "arithmetic": arithmetic, "refresh": refresh}
    times: dict[str, list[float]] = {k: [] for k in kernels}
    for rep in range(args.repeat + 2):  # the first two compile and warm up
        for name, fn in kernels.items():
            restore()
            t = time.perf_counter()
            fn()
            if rep >= 2:
                times[name].append(time.perf_counter() - t)
    t_prog, t_stream, t_arith, t_refresh = (float(np.median(times[k])) for k in kernels)
    restore()
    before = layer.t_eval
    program()
    if layer.t_eval != before:
        raise SystemExit("a refresh fell due inside the timed program call; the comparison would not hold")
    x = rng.standard_normal((100, rows), dtype=np.float32)
    w = layer.w_eff.copy()
    t_mm = median_time(lambda: x @ w, repeat=max(args.repeat, 30))
    state_bytes = sum(a.nbytes for a in (delta, layer.g, layer.t_rel, layer.nu, layer.life, layer.w_eff))
    requested = int((np.floor(np.abs(delta) / step + 0.5) >= 1.0).sum())
    print(f"layer {rows}x{cols}, {requested / (rows * cols):.1%} of weights requested ({requested} entries), "
          f"{clock['pulses']} pulses per call, state {state_bytes / 1e6:.0f} MB")
    print("| kernel | ms per call | ns per requested entry | x (plain product, batch 100) |")
    print("|---|---|---|---|")
    for name, t in (("Crossbar.program", t_prog), ("state floor: stream the state only", t_stream),
                    ("arithmetic floor: the physics' own arithmetic, float64", t_arith)):
        print(f"| {name} | {1e3 * t:.2f} | {1e9 * t / requested:.1f} | {t / t_mm:.1f} |")
    print(f"| Crossbar.refresh (the cached weights and noise sums of every weight) | {1e3 * t_refresh:.2f} | "
          f"{1e9 * t_refresh / (rows * cols):.1f} per weight | {t_refresh / t_mm:.1f} |")
    print(f"plain product: {1e3 * t_mm:.3f} ms; program / state floor: {t_prog / t_stream:.2f}; "
          f"program / arithmetic floor: {t_prog / t_arith:.2f}; "
          f"streaming rate {2 * state_bytes / t_stream / 1e9:.1f} GB/s (reads + writes, upper bound)")


if __name__ == "__main__":
    main()
