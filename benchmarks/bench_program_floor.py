"""How far the programming kernel is from the cost of touching its state at all.

Run:  python benchmarks/bench_program_floor.py [--preset pcm] [--repeat 20]

A mixed-policy FF epoch on ``pcm`` spends most of its extra time (against
``ideal``) in ``devices._program.program_kernel``.  The kernel works on a row's
requested entries only (a third of the weights in the histogram below): for each
it gathers the compact state of the device pair (conductances, programming
times, drift exponents, pulses left; 32 bytes per weight with the cached
effective weight) and scatters what it changes; the constants a device keeps
from fabrication are hashes, computed, not loaded.

This benchmark times, on one 1000 x 1000 layer, alternately:

- the programming kernel, on a request whose pulse counts follow the histogram
  seen in a mixed-policy training batch on ``pcm`` (67 % of the weights 0 pulses,
  20 % one, 5.5 % two, 3 % three, 1.7 % four, 3 % five or more);
- a kernel that only streams the same state: it reads every array the
  programming kernel reads and stores back, unchanged, every array it writes
  (the layer's ``Crossbar.program`` call is timed for the kernel, so a refresh of
  the cached weights that falls due is included, as in training).

The second touches the state of every weight, as a dense request would; against
this sparser request it shows how much of the kernel's time is its arithmetic per
requested entry rather than moving state.  Its ratio
to the plain float32 product ``x @ W`` (batch 100) of the same layer is printed
too, as the FF epoch has three such products per layer and batch.
"""

from __future__ import annotations

import argparse

import numba
import numpy as np

import devices
from _common import machine_line, median_time, paired_median_times

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

    def program() -> None:
        clock["now"] += 0.03
        pulses, _, _, _ = layer.program(delta, clock["now"], int(rng.integers(0, 2**63)))
        clock["pulses"] = pulses

    def stream() -> None:
        stream_state(delta, layer.g, layer.t_rel, layer.nu, layer.life, layer.w_eff, layer.row_gsum)

    t_prog, t_stream = paired_median_times(program, stream, repeat=args.repeat)
    x = rng.standard_normal((100, rows), dtype=np.float32)
    w = layer.w_eff.copy()
    t_mm = median_time(lambda: x @ w, repeat=max(args.repeat, 30))
    state_bytes = sum(a.nbytes for a in (delta, layer.g, layer.t_rel, layer.nu, layer.life, layer.w_eff))
    weighted = float((counts > 0).mean())
    print(f"layer {rows}x{cols}, {weighted:.1%} of weights pulsed, {clock['pulses']} pulses per call, "
          f"state {state_bytes / 1e6:.0f} MB")
    print("| kernel | ms per call | ns per weight | x (plain product, batch 100) |")
    print("|---|---|---|---|")
    for name, t in (("Crossbar.program", t_prog), ("stream the state only (floor)", t_stream)):
        print(f"| {name} | {1e3 * t:.2f} | {1e9 * t / (rows * cols):.1f} | {t / t_mm:.1f} |")
    print(f"plain product: {1e3 * t_mm:.3f} ms; program / floor: {t_prog / t_stream:.2f}; "
          f"streaming rate {2 * state_bytes / t_stream / 1e9:.1f} GB/s (reads + writes, upper bound)")


if __name__ == "__main__":
    main()
