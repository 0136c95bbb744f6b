"""Forward-Forward's recurrent (top-down) mode on full MNIST: error, seconds per epoch.

    python benchmarks/bench_recurrent.py --preset ideal --layers 500,500,500 --epochs 6 --holdout 10000

The chip has the top-down layout (every layer hears the layer above, the top layer the label;
``devices.top_down_layout``).  ``--holdout N`` trains on all but the last N training images and
evaluates on those (the split on which settings are chosen); without it the 10,000 test
images are evaluated.  ``--set key=value`` (repeatable) changes a learner setting
(``FFConfig.changed``, e.g. ``--set recurrent.train_steps=all``); the learner starts from
Hinton's plain table (``defaults="hinton"``) and the ``direct`` policy unless ``--policy``
says otherwise.  ``--eval-every K`` evaluates every K epochs (0: at the end only).  Prints the
machine, one line per epoch and a JSON summary; ``--out FILE`` also writes the summary, with
every epoch's record, to FILE.

A long run (2000-unit layers for 60 epochs, as published, take many hours on one core) can be
stopped and continued: ``--checkpoint-dir DIR`` saves the learner and the chip after every
epoch, and the same command with ``--resume`` added continues from DIR's latest checkpoint to
the same final result as an uninterrupted run (the learner checks that the settings and the
data are the run's; ``--epochs`` may be raised, but a run that reached its end
has evaluated the test set on its chip, so raising it continues from a chip that was read).  The
summary then covers every epoch of the run, those before the resume included (``wall_s`` is
this process's).  The summary gives the mean and the median training time per epoch (an epoch
paused from outside counts in the mean).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import devices  # noqa: E402
from _common import machine_line  # noqa: E402
from mortal.data import load_mnist  # noqa: E402
from mortal.ff import CHIP_FILE, FFConfig, FFLearner, latest_checkpoint  # noqa: E402


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="ideal")
    ap.add_argument("--layers", default="500,500,500")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--holdout", type=int, default=0)
    ap.add_argument("--train-size", type=int, default=0, help="first N training images only (0: all)")
    ap.add_argument("--policy", default="direct")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=None, help="JSON file for the summary and every epoch's record")
    ap.add_argument("--checkpoint-dir", default=None, help="save learner and chip here after every epoch")
    ap.add_argument("--resume", action="store_true", help="continue the run checkpointed in --checkpoint-dir")
    args = ap.parse_args(argv)
    if args.resume and not args.checkpoint_dir:
        ap.error("--resume continues the run in --checkpoint-dir: give it")
    print(f"# {machine_line()}", flush=True)
    data = load_mnist(os.environ.get("MORTAL_DATA"))
    x = data.train_images.reshape(len(data.train_images), -1)
    y = data.train_labels.astype(np.int64)
    if args.holdout:
        xt, yt = x[-args.holdout:], y[-args.holdout:]
        x, y = x[:-args.holdout], y[:-args.holdout]
        evaluated = f"held-out last {args.holdout} training images"
    else:
        xt, yt = data.test_images.reshape(len(data.test_images), -1), data.test_labels.astype(np.int64)
        evaluated = "test set"
    if args.train_size:
        x, y = x[:args.train_size], y[:args.train_size]
    changes = {k: _value(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = FFConfig(defaults="hinton", mode="recurrent", epochs=args.epochs, policy=args.policy,
                   seed=args.seed).changed(**changes)
    spec = devices.get_preset(args.preset)
    sizes = (x.shape[1],) + tuple(int(w) for w in args.layers.split(","))
    copies = cfg.label_copies(spec.programming.mode != "exact")
    if args.resume:
        chip = devices.load_chip(latest_checkpoint(args.checkpoint_dir) / CHIP_FILE)
        if tuple(chip.info.layer_sizes) != sizes or chip.info.preset != args.preset:
            ap.error(f"--resume: {args.checkpoint_dir} holds a {chip.info.preset} chip of layers "
                     f"{chip.info.layer_sizes}, not {args.preset} {sizes}")
    else:
        chip = devices.make_chip(spec, sizes, args.seed, top_down=devices.top_down_layout(sizes, 10 * copies))

    def show(r):
        print(f"epoch {r['epoch']}: train {r['train_wall_s']:.1f} s, online head error {r['train_error_online']:.4f}"
              + (f", error {r['test_error']}" if "test_error" in r else "")
              + f" (wall {r['wall_s']:.1f} s)", flush=True)

    t0 = time.perf_counter()
    learner = FFLearner(cfg).fit(chip, x, y, n_classes=10, test_inputs=xt, test_labels=yt,
                                 eval_every=args.eval_every, log=show, progress=False,
                                 checkpoint_dir=args.checkpoint_dir, checkpoint_every=1 if args.checkpoint_dir else 0,
                                 resume=args.checkpoint_dir if args.resume else None)
    records = learner.history  # every epoch of the run, those before a resume included
    summary = {
        "preset": args.preset, "layers": sizes[1:], "epochs": args.epochs, "policy": args.policy,
        "train_images": int(x.shape[0]), "evaluated_on": evaluated, "settings": changes,
        "recurrent": cfg.recurrent.model_dump(), "error": records[-1]["test_error"],
        "train_s_per_epoch": float(np.mean([r["train_wall_s"] for r in records])),
        # (an epoch paused from outside, e.g. with SIGSTOP, counts in the mean, hardly in the median)
        "train_s_per_epoch_median": float(np.median([r["train_wall_s"] for r in records])),
        "wall_s": time.perf_counter() - t0, "train_energy_j": records[-1]["total_energy_j"],
        "resumed": bool(args.resume),
    }
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps({**summary, "command": " ".join(sys.argv), "epochs_log": records},
                                             indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
