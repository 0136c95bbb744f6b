"""Transfer on the bundled subset: which teacher readout a student learns best from.

    python benchmarks/bench_transfer_mini.py --preset wild --out runs/transfer-mini

A teacher chip (784-300-300, 5 epochs, mixed policy) is trained from labels; fresh
students (all the same instance, chip seed 2) learn for 5 epochs from its
``goodness``, ``softmax`` and ``combined`` readouts on the 6,000 training images
without labels; a weight copy and a student trained from the true labels are
shown beside them.  One BLAS thread.

Every learner follows Hinton's recipe (``FFConfig(defaults="hinton")``: head over the
readout layers, no head refit) and the students take their negatives from the teacher's
probabilities (``DistillConfig(negatives="teacher")``): the settings of the figures in
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import devices  # noqa: E402
from _common import MNIST_CLASSES, ff_config, machine_line  # noqa: E402
from mortal.data import load_mnist_mini  # noqa: E402
from mortal.distill import DistillConfig, distill  # noqa: E402
from mortal.ff import FFConfig, FFLearner  # noqa: E402
from mortal.lifetime import weight_copy  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="wild")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(machine_line(), flush=True)
    d = load_mnist_mini()
    xtr, ytr, xte, yte = d.train_images, d.train_labels, d.test_images, d.test_labels
    sizes = (784, 300, 300)

    def cfg(seed: int) -> FFConfig:
        return ff_config("hinton", policy="mixed", epochs=args.epochs, seed=seed)

    teacher = devices.make_chip(args.preset, sizes, seed=1)
    tl = FFLearner(cfg(0))
    tl.fit(teacher, xtr, ytr, n_classes=MNIST_CLASSES)
    result = {"command": " ".join(sys.argv), "preset": args.preset, "epochs": args.epochs,
              "teacher": tl.evaluate(teacher, xte, yte).errors}
    print("teacher", result["teacher"], flush=True)
    snap = teacher.save(out / "teacher.npz")
    for readout in ("goodness", "softmax", "combined"):
        t = devices.load_chip(snap)
        student = devices.make_chip(args.preset, sizes, seed=2)
        sl = FFLearner(cfg(1))
        r = distill(t, student, tl.copy_controller(t), sl, xtr,
                    DistillConfig(teacher_readout=readout, negatives="teacher"))
        result[f"student_{readout}"] = {"test_error": sl.evaluate(student, xte, yte).errors, **r.summary()}
        print(readout, result[f"student_{readout}"]["test_error"], flush=True)
    t = devices.load_chip(snap)
    copy_chip = devices.make_chip(args.preset, sizes, seed=2)
    cl = weight_copy(t, copy_chip, tl.copy_controller(t))
    result["weight_copy"] = cl.evaluate(copy_chip, xte, yte).errors
    print("weight copy", result["weight_copy"], flush=True)
    scratch = devices.make_chip(args.preset, sizes, seed=2)
    sc = FFLearner(cfg(1))
    sc.fit(scratch, xtr, ytr, n_classes=MNIST_CLASSES)
    result["scratch"] = {"test_error": sc.evaluate(scratch, xte, yte).errors,
                         "energy_j": scratch.ledger.total_energy_j}
    print("scratch", result["scratch"], flush=True)
    (out / "teacher.npz").unlink()
    (out / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
