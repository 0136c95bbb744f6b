"""Refits of the softmax head over a saved chip's frozen layers (``FFLearner.refit_head``).

Run on chips saved by ``bench_mortality.py`` (``--teacher-dir``, ``--student-dir``) or
``bench_ff.py`` (``--save-dir``); restored with ``mortal.ff.load_learner``:

    python benchmarks/bench_refit.py --teacher-dir runs/teacher-wild-ho --student-dir runs/student-wild-ho \\
        --holdout 10000 --settings 10:0.003,10:0,30:0 --teacher-refit 30:0

Each setting ``E:W`` is a refit of ``E`` epochs at head weight cost ``W``, made on a
fresh load of the saved chip, so that every setting starts from the same state
(``--head-layers all``: the refitted heads read all hidden layers; ``--head-last N``, for chips
trained in mode ``unsupervised``: they read the top N hidden layers):

1. the teacher as saved, and refitted to the true labels with each setting;
2. with ``--student-dir``: the student refitted, with each setting, to the teacher's
   soft targets (softmax readout, temperature 1) on the transfer images, no labels.
   ``--teacher-refit E:W`` first refits the teacher's head to the labels and takes the
   targets from the refitted teacher.

``--settle S1,S2,..``: before each teacher refit to the labels, the freshly loaded chip idles
S seconds of chip time (drift goes on; ``0`` refits at once), one refit per setting and S.
``--recheck-after T``: each refitted teacher is evaluated again after T more idle seconds
(how well a head fitted at one moment holds as the chip drifts on).

``--holdout N``: the chips were trained on all but the last N training images; the
refits use those and errors are measured on the last N (the split on which settings
are chosen).  ``--holdout 0``: the refits use all 60,000 training images and errors
are measured on the test set.  ``--train-size N``: the refits use the first N of those only
(as a chip trained with ``bench_ff.py --train-size N``).  Prints one line per refit, with the
energy the refit charged to the chip's ledger (by category; ``digital`` is the controller's
work, also given as operations), and writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import devices
from _common import machine_line, split_holdout
from mortal.data import load_mnist
from mortal.distill import teacher_probabilities
from mortal.ff import CHIP_FILE, latest_checkpoint, load_learner


def parse_settings(text: str) -> list[tuple[int, float]]:
    out = []
    for item in text.split(","):
        epochs, _, cost = item.partition(":")
        out.append((int(epochs), float(cost or 0.0)))
    return out


def load(directory: str, head_layers: str | None = None, head_last: int | None = None):
    """A fresh load of a saved chip and its learner; ``head_layers`` (``head_last`` in mode
    unsupervised): the copy to refit reads those."""
    chip = devices.load_chip(latest_checkpoint(directory) / CHIP_FILE)
    learner = load_learner(directory, chip)
    if head_layers is not None and head_layers != learner.config.recipe.head_layers:
        learner = learner.copy_controller(chip, head_layers=head_layers)
    if head_last is not None and head_last != learner.config.unsupervised.head_last:
        learner = learner.copy_controller(chip, unsupervised={"head_last": head_last})
    return chip, learner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher-dir", required=True)
    ap.add_argument("--student-dir", default=None)
    ap.add_argument("--holdout", type=int, default=0)
    ap.add_argument("--settings", default="10:0.003,10:0,30:0", help="refits E:W (epochs : head weight cost)")
    ap.add_argument("--teacher-refit", default=None, help="E:W: take the student's targets from the teacher "
                                                          "after this refit to the labels")
    ap.add_argument("--head-layers", choices=("readout", "all"), default="readout",
                    help="the layers every refitted head reads (FFConfig recipe.head_layers; the heads saved "
                         "by the benchmarks' default runs read the readout layers)")
    ap.add_argument("--head-last", type=int, default=None,
                    help="chips trained in mode unsupervised: every refitted head reads this many top hidden layers")
    ap.add_argument("--settle", default="0", help="comma-separated idle seconds before each teacher refit")
    ap.add_argument("--recheck-after", type=float, default=0.0,
                    help="evaluate each refitted teacher again after this many more idle seconds")
    ap.add_argument("--train-size", type=int, default=0,
                    help="refit on the first N training images only (0: all of the split)")
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args()
    settings = parse_settings(args.settings)
    try:
        settles = [float(v) for v in args.settle.split(",")]
    except ValueError:
        ap.error(f"--settle takes comma-separated seconds, got {args.settle!r}")
    if any(not np.isfinite(v) or v < 0 for v in settles + [args.recheck_after]):
        ap.error("--settle and --recheck-after take finite seconds >= 0")
    data = load_mnist(args.data)
    try:
        xtr, ytr, xte, yte = split_holdout(data.train_images, data.train_labels, data.test_images,
                                           data.test_labels, args.holdout)
    except ValueError as exc:
        ap.error(str(exc))
    if args.train_size < 0:
        ap.error(f"--train-size takes a count >= 0, got {args.train_size}")
    if args.train_size:
        xtr, ytr = xtr[:args.train_size], ytr[:args.train_size]
    print(machine_line(), flush=True)
    where = f"last {args.holdout} training images" if args.holdout else "test set"
    result: dict = {"command": " ".join(sys.argv), "errors_on": where, "head_layers": args.head_layers,
                    "refit_images": int(xtr.shape[0]),
                    "head_last": args.head_last,
                    "teacher": {}, "student": {}}

    def error(learner, chip) -> float:
        return float(learner.evaluate(chip, xte, yte, "softmax").errors["softmax"])

    t = time.perf_counter()
    chip, tl = load(args.teacher_dir)
    result["teacher"]["as saved"] = error(tl, chip)
    print(f"teacher as saved: {result['teacher']['as saved']:.4f} ({where})", flush=True)
    def refits(role: str, directory: str, targets: np.ndarray, what: str, settle: float = 0.0,
               recheck: float = 0.0) -> None:
        """Each setting's refit of a fresh load of ``directory`` to ``targets``, and its error;
        ``settle``: idle seconds before the refit (named in the key when not 0); ``recheck``:
        if not 0, the error again after that many more idle seconds."""
        for epochs, cost in settings:
            chip, learner = load(directory, args.head_layers, args.head_last)
            if settle:
                chip.wait(settle)
            before = chip.ledger.copy()
            learner.refit_head(chip, xtr, targets, epochs, weight_cost=cost)
            spent = {k: v - before.energy_j.get(k, 0.0) for k, v in chip.ledger.energy_j.items()}
            ops = chip.ledger.counts["digital_ops"] - before.counts["digital_ops"]
            key = f"{what} {epochs}:{cost}" + (f" after {settle:g} s" if settle else "")
            result[role][key] = e = error(learner, chip)
            result.setdefault("refit_energy_j", {})[f"{role} {key}"] = {"by_category": spent, "digital_ops": ops}
            line = f"{role}, refit to the {what}{f' after {settle:g} s idle' if settle else ''}, " \
                   f"{epochs} epochs, weight cost {cost}: {e:.4f} (refit {sum(spent.values()):.4g} J, " \
                   f"digital {spent.get('digital', 0.0):.4g} J, {ops:.3g} operations)"
            if recheck:
                chip.wait(recheck)
                result[role][f"{key}, {recheck:g} s later"] = e2 = error(learner, chip)
                line += f"; {recheck:g} s later {e2:.4f}"
            print(line, flush=True)

    for settle in settles:
        refits("teacher", args.teacher_dir, ytr, "labels", settle, args.recheck_after)
    if args.student_dir:
        chip, tl = load(args.teacher_dir, args.head_layers if args.teacher_refit else None)
        if args.teacher_refit:
            (epochs, cost), = parse_settings(args.teacher_refit)
            tl.refit_head(chip, xtr, ytr, epochs, weight_cost=cost)
        probs = teacher_probabilities(chip, tl, xtr, readout="softmax")
        result["teacher_targets"] = {"refit": args.teacher_refit,
                                     "label_error": float(np.mean(probs.argmax(1) != ytr))}
        print(f"teacher targets (teacher refit {args.teacher_refit}): wrong on "
              f"{result['teacher_targets']['label_error']:.4f} of the transfer images", flush=True)
        chip, sl = load(args.student_dir)
        result["student"]["as saved"] = error(sl, chip)
        print(f"student as saved: {result['student']['as saved']:.4f}", flush=True)
        refits("student", args.student_dir, probs, "teacher's targets")
    result["wall_s"] = time.perf_counter() - t
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
