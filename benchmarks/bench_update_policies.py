"""Update policies compared: a table from ``bench_ff.py`` summaries, and the sampler's speed.

Table mode reads the ``summary.json`` and ``epochs.jsonl`` of ``bench_ff.py --out DIR`` runs (one
per policy, bit length and preset) and prints per run: the error, the training energy (the
epochs' ``train_energy_j``, head refit included, evaluations left out) and its breakdown, the
controller's digital share, the same run re-costed with an int8 controller (every digital
operation at the ``int8`` energy of ``devices.spec.CONTROLLER_MULTIPLY_ADD_J``: the ledger
charges digital work only through the operation count), and the GPU reference for the same
multiply-accumulates (``mortal.ops.training_macs`` at the ``ideal`` preset's 1.41 pJ/MAC)::

    python benchmarks/bench_update_policies.py runs/pcm-mixed runs/pcm-analog-bl10 ...

Speed mode times one in-array update of a ``rows x cols`` layer at a batch (both phases) and
the float32 gradient product the ``mixed`` policy computes instead::

    python benchmarks/bench_update_policies.py --speed [--rows 785 --cols 1000 --batch 200 --bl 10]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import devices
from devices.spec import CONTROLLER_MULTIPLY_ADD_J
from mortal.ops import head_width, training_macs
from _common import MNIST_CLASSES

CATS = ("digital", "program", "adc", "array", "dac", "neuron", "drivers", "translators")


def _row(folder: Path) -> dict:
    s = json.loads((folder / "summary.json").read_text())
    # Training energy: each epoch's train_energy_j (the head refit is in the last epoch's);
    # evaluations on held-out or test images are left out.
    e: dict[str, float] = {}
    for line in (folder / "epochs.jsonl").read_text().splitlines():
        for k, v in json.loads(line)["train_energy_j"].items():
            e[k] = e.get(k, 0.0) + float(v)
    total = sum(e.values())
    fp32 = devices.get_preset(s["preset"]).energy.digital_op_j
    int8_op = fp32 * CONTROLLER_MULTIPLY_ADD_J["int8"] / CONTROLLER_MULTIPLY_ADD_J["fp32"]
    ops = e["digital"] / fp32  # the training's digital operations (charged at fp32 in these runs)
    int8_total = total - e["digital"] + ops * int8_op
    sizes = tuple(s["layers"])
    head = list(range(len(sizes) - 1)) if s["head_layers"] == "all" else list(range(1, len(sizes) - 1))
    # bench_ff trains MNIST (10 classes); summaries before it recorded its batch size used 100
    macs = training_macs(sizes, s["train_size"], s.get("batch_size", 100), s["epochs"], head_width(sizes, head),
                         MNIST_CLASSES, s["refit_epochs"])
    gpu = macs * devices.get_preset("ideal").energy.mac_j
    return {"run": folder.name, "preset": s["preset"], "policy": s["policy"], "bl": s.get("bit_length"),
            "lr": s.get("lr"), "error": s["test_error"], "total": total, "energy": e,
            "digital_share": e["digital"] / total, "int8_total": int8_total,
            "int8_digital_share": ops * int8_op / int8_total, "gpu": gpu, "pulses": s["pulses"],
            "s_per_epoch": s["median_train_s_per_epoch"]}


def table(folders: list[Path]) -> None:
    rows = [_row(f) for f in folders]
    print("| run | softmax error | goodness error | training energy (J) | digital share | "
          "with an int8 controller (J, digital share) | GPU reference (J) | pulses | s/epoch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        err = r["error"] or {}
        print(f"| {r['run']} | {err.get('softmax', float('nan')):.2%} | {err.get('goodness', float('nan')):.2%} "
              f"| {r['total']:.4g} | {r['digital_share']:.1%} | {r['int8_total']:.4g} ({r['int8_digital_share']:.1%}) "
              f"| {r['gpu']:.4g} | {r['pulses']:.3g} | {r['s_per_epoch']:.1f} |")
    print()
    print("| run | " + " | ".join(CATS) + " |")
    print("|---|" + "---|" * len(CATS))
    for r in rows:
        print(f"| {r['run']} | " + " | ".join(f"{r['energy'].get(c, 0.0):.3g}" for c in CATS) + " |")


def speed(rows: int, cols: int, batch: int, bl: int, repeats: int) -> None:
    from mortal.ff.analog import coincidences, pulse_probabilities

    r = np.random.default_rng(0)
    x = np.maximum(r.normal(size=(batch, rows)), 0).astype(np.float32)
    d = (r.normal(0, 0.3, size=(batch, cols)) * (r.random((batch, cols)) < 0.5)).astype(np.float32)
    rng = np.random.default_rng(1)
    px, pd, clipped = pulse_probabilities(x, d, 3e-5, bl, 3.6e-4)
    coincidences(px, pd, bl, rng)  # compile
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        px, pd, _ = pulse_probabilities(x, d, 3e-5, bl, 3.6e-4)
        got = coincidences(px, pd, bl, rng)
        t.append(time.perf_counter() - t0)
    g = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        x.T @ d
        g.append(time.perf_counter() - t0)
    print(f"in-array update of {rows} x {cols}, {batch} samples, BL {bl}: {np.median(t) * 1e3:.1f} ms "
          f"(gross {got.gross} coincidences, clipped {clipped:.2%}); gradient product {np.median(g) * 1e3:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="*", type=Path, help="bench_ff.py --out folders")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--rows", type=int, default=785)
    ap.add_argument("--cols", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--bl", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    if args.speed:
        speed(args.rows, args.cols, args.batch, args.bl, args.repeats)
    if args.folders:
        table(args.folders)
    if not args.speed and not args.folders:
        ap.error("give bench_ff.py output folders, or --speed")


if __name__ == "__main__":
    main()
