"""Why per-column drift factors can hurt: the chip's true per-column drift against the factors
the controller measures.

Run on a chip saved by ``bench_mortality.py --teacher-dir``::

    python benchmarks/bench_drift_columns.py --teacher-dir runs/teacher-pcm --ages 1,365

For each age (days), a fresh load of the saved chip and its learner:

1. the compensators (one factor per layer, one per column) are calibrated on the first
   ``--reference`` training images (neutral label), as ``bench_mortality.py`` does;
2. the chip idles for the age;
3. **true drift per column** (the emulator's hidden state, ``devices.inspect``): the
   least-squares slope of each column's effective weights now against those after loading, its
   mean and spread over the columns, and the part of the weights no column factor explains
   (RMS residual over RMS weight);
4. **measured factors**: each column's factor divided by its layer's factor, mean and spread
   (a perfect column factor would spread as little as the true slopes);
5. test error, per-label goodness and softmax readouts, without compensation, per layer and
   per column.

The learner never sees step 3; it is the emulator's view, for analysis only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import devices
from _common import machine_line
from mortal.care import SECONDS_PER_DAY, DriftCompensator
from mortal.data import load_mnist
from mortal.errors import InputError
from mortal.ff.learner import CHIP_FILE, latest_checkpoint, load_learner


def column_slopes(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, float]:
    """Per column the least-squares slope of ``after`` on ``before`` (both (n_in + 1, n_out)),
    and the RMS residual over the RMS of ``before`` (the layer's whole matrix)."""
    a, w = before.astype(np.float64), after.astype(np.float64)
    slope = (a * w).sum(axis=0) / np.maximum((a * a).sum(axis=0), 1e-300)
    resid = float(np.sqrt(((w - slope * a) ** 2).mean() / max((a * a).mean(), 1e-300)))
    return slope, resid


def spread(v: np.ndarray) -> dict[str, float]:
    return {"mean": float(v.mean()), "sd": float(v.std()), "min": float(v.min()), "max": float(v.max())}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher-dir", required=True, help="a checkpoint folder saved by bench_mortality.py")
    ap.add_argument("--ages", default="1,365", help="comma-separated idle times in days")
    ap.add_argument("--reference", type=int, default=200, help="training images the compensators read")
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args(argv)
    try:
        ages = [float(v) for v in args.ages.split(",")]
    except ValueError:
        ap.error(f"--ages takes comma-separated days, got {args.ages!r}")
    if any(not np.isfinite(a) or a <= 0 for a in ages):
        ap.error("--ages takes finite days > 0")
    if args.reference < 1:
        ap.error(f"--reference takes a count >= 1, got {args.reference}")
    try:
        snap = latest_checkpoint(args.teacher_dir) / CHIP_FILE
    except (FileNotFoundError, InputError) as exc:  # the message names the folder and what is missing
        ap.error(str(exc))
    data = load_mnist(args.data)
    reference = data.train_images[: args.reference]
    print(machine_line(), flush=True)
    result: dict = {"command": " ".join(sys.argv), "errors_on": "test set", "ages": {}}
    for days in ages:
        t = time.perf_counter()
        chip = devices.load_chip(snap)
        learner = load_learner(args.teacher_dir, chip)
        before = [layer.weights for layer in devices.inspect(chip).layers]
        comps = {m: DriftCompensator(reference, mode=m) for m in ("global", "column")}
        for c in comps.values():
            c.calibrate(chip, learner)
        chip.wait(days * SECONDS_PER_DAY)
        after = [layer.weights for layer in devices.inspect(chip).layers]
        row: dict = {"true": [], "measured": [], "error": {}}
        for b, a in zip(before, after):
            slope, resid = column_slopes(b, a)
            row["true"].append({"column_slope": spread(slope), "relative_sd": float(slope.std() / slope.mean()),
                                "residual": resid})
        row["error"]["none"] = learner.evaluate(chip, data.test_images, data.test_labels, "both").errors
        factors = {}
        for m, c in comps.items():
            factors[m] = c.update(chip, learner)
            row["error"][m] = learner.evaluate(chip, data.test_images, data.test_labels, "both").errors
        learner.state.correction = None
        for col, glob in zip(factors["column"], factors["global"]):
            rel = col.astype(np.float64) / glob.astype(np.float64)
            row["measured"].append({"layer_factor": float(glob[0]), "column_over_layer": spread(rel)})
        row["wall_s"] = time.perf_counter() - t
        result["ages"][f"{days:g} d"] = row
        print(f"after {days:g} days ({row['wall_s']:.0f} s)", flush=True)
        for k, (tr, me) in enumerate(zip(row["true"], row["measured"])):
            s, c = tr["column_slope"], me["column_over_layer"]
            print(f"  layer {k}: true column slope {s['mean']:.3f} (relative sd {tr['relative_sd']:.3f}, "
                  f"residual {tr['residual']:.3f}); measured column/layer factor sd {c['sd']:.3f} "
                  f"[{c['min']:.2f}, {c['max']:.2f}], layer factor {me['layer_factor']:.3f}", flush=True)
        for m, e in row["error"].items():
            print(f"  {m:>6}: goodness {100 * e['goodness']:.2f} %, softmax {100 * e['softmax']:.2f} %", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
