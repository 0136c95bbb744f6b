"""Chips with a fixed black-box stage: FF in situ around it against backpropagation's two routes.

Four runs on MNIST, each on its own chip fabricated from the same seed:

* ``ff_stage``: FF in situ on a ``pcm_blackbox`` chip ``784-W-[W]-W``, the middle layer a fixed
  stage (``trainable=(True, False, True)``), the learner's measured defaults;
* ``ff_plain``: the same network without the stage, ``784-W-W`` on a ``pcm`` chip;
* ``bp_digital``: the digital BP reference, ``784-W-W`` trained by backpropagation in the
  controller (``mortal.backprop.train_digital``, 20 epochs) and deployed on the ``ideal`` chip;
* ``bp_model``: BP through a learned model of the stage (``mortal.backprop.train_through_model``)
  on the ``pcm_blackbox`` chip of ``ff_stage``'s seed: probe reads, model fit, BP in the
  controller, program-and-verify of the trainable layers, head refit on chip reads.

Reported per run: the error (FF: softmax head after the refit, and per-label goodness; BP: the
output layer on chip reads), the energy of training (total and by ledger category: for BP,
everything up to the deployed chip) and of the evaluation, wall time.

    python benchmarks/bench_blackbox.py --runs ff_stage,ff_plain,bp_digital,bp_model --train-size 50000 \\
        --width 500 --out runs/blackbox.json

``--other-readouts`` evaluates ``ff_stage``'s per-label goodness also summed over layers [1, 2]
(Hinton's rule: all but the first), [2] and [0, 2]; on a chip with a fixed layer the learner sums
the layers before the first fixed one ([0]), the best of these on held-out images.

``--age SECONDS`` evaluates each trained chip again after it idled that long (drift of its devices
and of the stage's thresholds; no drift compensation, no retraining).

``--holdout N`` evaluates on the last N training images (never trained on) instead of the test
set: the split on which settings are chosen.  ``--train-size`` takes the first images of the
training set (after the held-out ones are cut off).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import devices
from _common import MNIST_CLASSES, machine_line, split_holdout
from mortal import backprop as B
from mortal.data import load_mnist
from mortal.ff import FFConfig, FFLearner

RUNS = ("ff_stage", "ff_plain", "bp_digital", "bp_model")


def _energy(ledger_before: dict, ledger_after: dict) -> dict:
    return {c: float(ledger_after[c]) - float(ledger_before.get(c, 0.0)) for c in ledger_after}


def aged(args, chip, evaluate) -> dict:
    """With ``--age``: the errors after the chip idled that long since the end of training (no care)."""
    if not args.age:
        return {}
    chip.wait(args.age)
    return {"age_s": args.age, "aged_errors": evaluate()}


def run_ff(name: str, args, x, y, xe, ye) -> dict:
    w = args.width
    if name == "ff_stage":
        chip = devices.make_chip("pcm_blackbox", (784, w, w, w), seed=args.chip_seed, trainable=(True, False, True))
    else:
        chip = devices.make_chip("pcm", (784, w, w), seed=args.chip_seed)
    cfg = FFConfig(epochs=args.epochs_ff, seed=args.seed)
    t0 = time.perf_counter()
    learner = FFLearner(cfg).fit(chip, x, y, n_classes=MNIST_CLASSES, eval_every=0, progress=False)
    wall = time.perf_counter() - t0
    train_energy = dict(chip.ledger.energy_j)
    res = learner.evaluate(chip, xe, ye)
    others = {}
    if args.other_readouts and name == "ff_stage":  # the goodness readout over other layer sets
        chosen = list(learner.state.readout_layers)
        for layers in ([1, 2], [2], [0, 2]):
            learner.state.readout_layers = layers
            others[str(layers)] = learner.evaluate(chip, xe, ye, "goodness").errors["goodness"]
        learner.state.readout_layers = chosen
    return {"run": name, "preset": chip.info.preset, "layer_sizes": list(chip.info.layer_sizes),
            "trainable": list(chip.info.trainable), "readout_layers": learner.state.readout_layers,
            "head_layers": learner.state.head_layers, "epochs": args.epochs_ff,
            "error_softmax": res.errors["softmax"], "error_goodness": res.errors["goodness"],
            "train_energy_j": train_energy, "train_energy_total_j": float(sum(train_energy.values())),
            "eval_energy_total_j": res.total_energy_j, "eval_energy_j": res.energy_j, "wall_s": wall,
            "pulses": int(chip.ledger.counts["pulses"]),
            "train_error_online_last": learner.history[-1]["train_error_online"], "other_readouts": others,
            **aged(args, chip, lambda: learner.evaluate(chip, xe, ye).errors)}


def run_bp(name: str, args, x, y, xe, ye) -> dict:
    w = args.width
    cfg = B.BPConfig(epochs=args.epochs_bp, lr=args.lr_bp, seed=args.seed, head_refit_epochs=args.head_refit)
    if name == "bp_digital":
        chip = devices.make_chip("ideal", (784, w, w), seed=args.chip_seed)
        res = B.train_digital(chip, x, y, cfg, n_classes=MNIST_CLASSES)
    else:
        chip = devices.make_chip("pcm_blackbox", (784, w, w, w), seed=args.chip_seed, trainable=(True, False, True))
        fit = B.StageFitConfig(probes=args.probes, epochs=args.fit_epochs, seed=args.seed)
        res = B.train_through_model(chip, x, y, cfg, fit, n_classes=MNIST_CLASSES)
    train_energy = dict(res.energy_j)
    ev = B.evaluate_on_chip(chip, res.network, xe, ye)
    return {"run": name, "preset": chip.info.preset, "layer_sizes": list(chip.info.layer_sizes),
            "trainable": list(chip.info.trainable), "epochs": args.epochs_bp, "lr": args.lr_bp,
            "error": ev["error"], "train_energy_j": train_energy, "train_energy_total_j": res.total_energy_j,
            "train_ops": res.train_ops, "eval_energy_total_j": ev["total_energy_j"], "eval_energy_j": ev["energy_j"],
            "wall_s": res.wall_s, "fits": res.fits, "history_last": res.history[-1] if res.history else None,
            "train_error_online_last_bp_epoch": res.history[args.epochs_bp - 1]["train_error_online"],
            **aged(args, chip, lambda: {"error": B.evaluate_on_chip(chip, res.network, xe, ye)["error"]})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    ap.add_argument("--data", default=None, help="MNIST .npz or folder (default: MORTAL_DATA)")
    ap.add_argument("--holdout", type=int, default=0, help="evaluate on the last N training images instead")
    ap.add_argument("--train-size", type=int, default=0, help="train on the first N images (0: all)")
    ap.add_argument("--width", type=int, default=500)
    ap.add_argument("--epochs-ff", type=int, default=10)
    ap.add_argument("--epochs-bp", type=int, default=20)
    ap.add_argument("--lr-bp", type=float, default=0.05)
    ap.add_argument("--head-refit", type=int, default=10, help="bp_model: head refit epochs on chip reads")
    ap.add_argument("--probes", type=int, default=10000, help="bp_model: probe inputs read through the stage")
    ap.add_argument("--fit-epochs", type=int, default=30, help="bp_model: epochs of the stage model's fit")
    ap.add_argument("--seed", type=int, default=0, help="learners' seed")
    ap.add_argument("--chip-seed", type=int, default=1, help="every chip's fabrication seed")
    ap.add_argument("--other-readouts", action="store_true",
                    help="ff_stage: also the goodness error summed over layers [1, 2], [2] and [0, 2]")
    ap.add_argument("--age", type=float, default=0.0,
                    help="also evaluate after the chip idled this many seconds (no drift compensation)")
    ap.add_argument("--out", default=None, help="JSON file of the results")
    args = ap.parse_args()
    runs = [r for r in args.runs.split(",") if r]
    bad = [r for r in runs if r not in RUNS]
    if bad:
        ap.error(f"unknown runs {bad}; expected some of {list(RUNS)}")
    data = load_mnist(args.data)
    x, y, xe, ye = split_holdout(data.train_images, data.train_labels, data.test_images, data.test_labels,
                                 args.holdout)
    x, y = x.reshape(x.shape[0], -1), y.astype(np.int64)
    xe, ye = xe.reshape(xe.shape[0], -1), ye.astype(np.int64)
    if args.train_size:
        x, y = x[:args.train_size], y[:args.train_size]
    out = {"machine": machine_line(), "evaluated_on": f"last {args.holdout} training images" if args.holdout
           else "test set", "n_train": int(x.shape[0]), "n_eval": int(xe.shape[0]), "args": vars(args), "results": []}
    for r in runs:
        rec = run_ff(r, args, x, y, xe, ye) if r.startswith("ff") else run_bp(r, args, x, y, xe, ye)
        out["results"].append(rec)
        err = rec.get("error_softmax", rec.get("error"))
        print(f"{r}: error {100 * err:.2f} %" + (f" (goodness {100 * rec['error_goodness']:.2f} %)"
                                                   if "error_goodness" in rec else "")
              + f", training energy {rec['train_energy_total_j']:.4g} J "
              + "(" + ", ".join(f"{k} {v:.3g}" for k, v in sorted(rec["train_energy_j"].items(),
                                                                   key=lambda kv: -kv[1]) if v > 0) + ")"
              + f", evaluation {rec['eval_energy_total_j']:.3g} J, {rec['wall_s']:.0f} s"
              + "".join(f"; goodness over {k}: {100 * v:.2f} %" for k, v in rec.get("other_readouts", {}).items())
              + "".join(f"; after {rec['age_s']:.3g} s idle, {k} {100 * v:.2f} %"
                        for k, v in rec.get("aged_errors", {}).items()),
              flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
