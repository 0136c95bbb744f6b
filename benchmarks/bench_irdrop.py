"""Accuracy and speed of the fast IR-drop model against the exact nodal solve.

Run:  python benchmarks/bench_irdrop.py [--sizes 16 32 64 128 256] [--batch 32] [--repeat 20]
      [--exact-repeat 3]

For square arrays of each size, wire resistance 0.35 ohm per segment (aihwkit's default,
``devices.irdrop.AIHWKIT_SEGMENT_OHM``), conductances uniform in [0, 25] uS and ``--batch``
inputs per density (the fraction of rows driven, 1.0 / 0.5 / 0.1; driven rows uniform in
[0, 0.2] V): the relative error ``|I_model - I_exact| / |I_exact|`` (Frobenius norms over the
batch) of no model (``v @ g``) and of ``ir_drop_weights`` at order 1 and 2, and the seconds
of the fast model (building ``W_eff`` plus ``v @ W_eff``, median of ``--repeat``) and of
``exact_column_currents`` on the same batch (median of ``--exact-repeat`` calls, scipy
already imported).  ``max loss`` is the largest first-order relative loss of a cell,
``max(1 - W_eff / G)`` at order 1 (= ``r * max(A + C)`` of the module docstring): the
expansion parameter of the model.  One seed, printed.
"""

from __future__ import annotations

import argparse

import numpy as np

from _common import machine_line, median_time
from devices.irdrop import AIHWKIT_SEGMENT_OHM, exact_column_currents, ir_drop_weights

G_MAX = 25e-6
V_MAX = 0.2
DENSITIES = (1.0, 0.5, 0.1)


def _rel_err(i_model: np.ndarray, i_exact: np.ndarray) -> float:
    return float(np.linalg.norm(i_model - i_exact) / np.linalg.norm(i_exact))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--exact-repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    r = AIHWKIT_SEGMENT_OHM
    print(f"# {machine_line()}")
    print(f"# r = {r} ohm, G ~ U[0, {G_MAX * 1e6:g}] uS, V ~ U[0, {V_MAX}] V on driven rows, "
          f"batch {args.batch}, seed {args.seed}")
    print("| size | max loss | density | err no model | err order 1 | err order 2 "
          "| fast order 1 (s) | fast order 2 (s) | exact (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    exact_column_currents(np.ones((2, 2)), r, np.ones(2))   # scipy's import out of the timings
    rng = np.random.default_rng(args.seed)
    for n in args.sizes:
        g = rng.uniform(0.0, G_MAX, (n, n))
        on = g > 0
        max_loss = float(np.max(1.0 - ir_drop_weights(g, r)[on] / g[on]))
        for density in DENSITIES:
            v = rng.uniform(0.0, V_MAX, (args.batch, n)) * (rng.random((args.batch, n)) < density)
            exact = exact_column_currents(g, r, v)
            t_exact = median_time(lambda: exact_column_currents(g, r, v), repeat=args.exact_repeat, warmup=0)
            errs = [_rel_err(v @ g, exact)]
            times = []
            for order in (1, 2):
                errs.append(_rel_err(v @ ir_drop_weights(g, r, order=order), exact))
                times.append(median_time(lambda: v @ ir_drop_weights(g, r, order=order),
                                         repeat=args.repeat, warmup=1))
            print(f"| {n} | {max_loss:.3f} | {density:g} | {errs[0]:.2e} | {errs[1]:.2e} | {errs[2]:.2e} "
                  f"| {times[0]:.1e} | {times[1]:.1e} | {t_exact:.1e} |")


if __name__ == "__main__":
    main()
