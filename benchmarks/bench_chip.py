"""Speed of the chip emulation against a plain float32 matrix product.

Run:  python benchmarks/bench_chip.py [--repeat 50] [--unset-blas-tuning]

For each preset: ``read`` of a 512x512 layer at batch 256 and of a 784x1000
layer at batch 100, as a ratio to ``x @ W`` of the same shape timed in the
same process (medians of alternating calls); ``program`` of a dense random delta and of one with
1 % non-zeros on the 784x1000 layer, in milliseconds and as a ratio to the
same matmul.  ``--unset-blas-tuning`` drops OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE for this process (both together).
"""

from __future__ import annotations

import argparse
import os
import sys

from mortal import process_env

process_env.apply()  # as the command line: BLAS's short spin, the kernels' threads (before numpy)

if "--unset-blas-tuning" in sys.argv:  # before numpy loads OpenBLAS; both variables together
    for _var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        os.environ.pop(_var, None)

import numpy as np  # noqa: E402

import devices  # noqa: E402
from _common import machine_line, paired_median_times  # noqa: E402

SHAPES = ((512, 512, 256), (784, 1000, 100))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--unset-blas-tuning", action="store_true")
    args = ap.parse_args()
    print(f"# {machine_line()}")
    print("| preset | op | shape | time (ms) | plain matmul (ms) | ratio |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for n_in, n_out, batch in SHAPES:
        x = rng.uniform(-0.5, 0.5, (batch, n_in)).astype(np.float32)
        w = rng.standard_normal((n_in, n_out)).astype(np.float32)
        for name in devices.PRESETS:
            chip = devices.make_chip(name, (n_in, n_out), seed=1)
            base, t = paired_median_times(lambda: x @ w, lambda: chip.read(0, x), args.repeat)
            print(f"| {name} | read | {n_in}x{n_out}, batch {batch} | {t * 1e3:.3f} | {base * 1e3:.3f} | "
                  f"{t / base:.2f} |", flush=True)
    n_in, n_out, batch = SHAPES[1]
    x = rng.uniform(-0.5, 0.5, (batch, n_in)).astype(np.float32)
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    dense = (rng.standard_normal((n_in + 1, n_out)) * 1e-3).astype(np.float32)
    sparse = np.where(rng.random(dense.shape) < 0.01, dense * 10, 0).astype(np.float32)
    for name in devices.PRESETS:
        for label, delta in (("dense", dense), ("1% non-zero", sparse)):
            chip = devices.make_chip(name, (n_in, n_out), seed=1)
            base, t = paired_median_times(lambda: x @ w, lambda: chip.program(0, delta), max(args.repeat // 3, 5))
            print(f"| {name} | program, {label} | {n_in + 1}x{n_out} | {t * 1e3:.3f} | {base * 1e3:.3f} | "
                  f"{t / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
