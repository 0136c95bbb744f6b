"""Update policies compared: a table from ``bench_ff.py`` summaries, and the sampler's speed.

Table mode reads the ``summary.json`` and ``epochs.jsonl`` of ``bench_ff.py --out DIR`` runs (one
per policy, bit length and preset) and prints per run: the error, the training energy (the
epochs' ``train_energy_j``, head refit included, evaluations left out) and its breakdown, the
controller's digital share, the same run re-costed with an int8 controller (every digital
operation at the ``int8`` energy of ``devices.spec.CONTROLLER_MULTIPLY_ADD_J``: the ledger
charges digital work only through the operation count), and the GPU reference for the same
multiply-accumulates (``mortal.ops.training_macs`` at the ``ideal`` preset's 1.41 pJ/MAC)::

    python benchmarks/bench_update_policies.py runs/pcm-mixed runs/pcm-analog-bl10 ...

``--refits RUN:REFITS`` adds one row per head refit of ``bench_refit.py --out REFITS`` made on the
chip that the run ``RUN`` (trained with ``--refit-epochs 0`` and saved with ``--save-dir``)
left: the refit's error, and the run's training energy plus what that refit charged (the
refit's digital operations re-costed for the int8 column as the run's)::

    python benchmarks/bench_update_policies.py --refits runs/rram-analog:runs/rram-refits.json

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


def _priced(s: dict, e: dict[str, float], refit_epochs: int) -> dict:
    """Totals of the training energy ``e`` (by category) of the run summarized by ``s`` with a
    head refit of ``refit_epochs``: digital share, the same re-costed with an int8 controller,
    and the GPU reference."""
    total = sum(e.values())
    fp32 = devices.get_preset(s["preset"]).energy.digital_op_j
    int8_op = fp32 * CONTROLLER_MULTIPLY_ADD_J["int8"] / CONTROLLER_MULTIPLY_ADD_J["fp32"]
    ops = e["digital"] / fp32  # the training's digital operations (charged at fp32 in these runs)
    int8_total = total - e["digital"] + ops * int8_op
    sizes = tuple(s["layers"])
    head = list(range(len(sizes) - 1)) if s["head_layers"] == "all" else list(range(1, len(sizes) - 1))
    # bench_ff trains MNIST (10 classes); summaries before it recorded its batch size used 100
    macs = training_macs(sizes, s["train_size"], s.get("batch_size", 100), s["epochs"], head_width(sizes, head),
                         MNIST_CLASSES, refit_epochs)
    return {"total": total, "energy": e, "digital_share": e["digital"] / total, "int8_total": int8_total,
            "int8_digital_share": ops * int8_op / int8_total, "gpu": macs * devices.get_preset("ideal").energy.mac_j}


def _row(folder: Path) -> dict:
    s = json.loads((folder / "summary.json").read_text())
    # Training energy: each epoch's train_energy_j (the head refit is in the last epoch's);
    # evaluations on held-out or test images are left out.
    e: dict[str, float] = {}
    for line in (folder / "epochs.jsonl").read_text().splitlines():
        for k, v in json.loads(line)["train_energy_j"].items():
            e[k] = e.get(k, 0.0) + float(v)
    return {"run": folder.name, "preset": s["preset"], "policy": s["policy"], "bl": s.get("bit_length"),
            "lr": s.get("lr"), "error": s["test_error"], "pulses": s["pulses"],
            "s_per_epoch": s["median_train_s_per_epoch"], **_priced(s, e, s["refit_epochs"])}


def _refit_rows(spec: str) -> list[dict]:
    """Rows of ``RUN:REFITS``: the run's training with each refit of the refits file added."""
    run, sep, refits = spec.rpartition(":")
    if not sep:
        raise SystemExit(f"--refits takes RUN:REFITS (a bench_ff.py --out folder and a bench_refit.py --out "
                         f"file), got {spec!r}")
    base = _row(Path(run))
    s = json.loads((Path(run) / "summary.json").read_text())
    if s["refit_epochs"]:
        raise SystemExit(f"{run} was trained with a {s['refit_epochs']}-epoch head refit; --refits needs a run "
                         "trained with --refit-epochs 0")
    data = json.loads(Path(refits).read_text())
    if data.get("errors_on", s.get("evaluated_on")) != s.get("evaluated_on", data.get("errors_on")):
        raise SystemExit(f"{refits} measured errors on the {data.get('errors_on')}, {run} on the "
                         f"{s.get('evaluated_on')}: give bench_refit.py the run's --holdout")
    if data.get("refit_images") != s["train_size"]:
        raise SystemExit(f"{refits} refitted on {data.get('refit_images')} images, {run} trained on "
                         f"{s['train_size']}: give bench_refit.py --train-size {s['train_size']}")
    rows = []
    for key, spent in data["refit_energy_j"].items():
        role, _, setting = key.partition(" labels ")
        if role != "teacher":
            continue
        epochs = int(setting.split(":")[0])
        e = dict(base["energy"])
        for k, v in spent["by_category"].items():
            e[k] = e.get(k, 0.0) + v
        refit = dict(s, head_layers=data.get("head_layers", s["head_layers"]))  # the refitted head's layers
        rows.append({**base, "run": f"{base['run']}, refit {setting} (epochs:weight cost)",
                     "error": {"softmax": data["teacher"][f"labels {setting}"]}, **_priced(refit, e, epochs)})
    return rows


def table(folders: list[Path], refits: list[str]) -> None:
    rows = [_row(f) for f in folders]
    for spec in refits:
        rows += _refit_rows(spec)
    print("| run | softmax error | goodness error | training energy (J) | digital share | "
          "with an int8 controller (J, digital share) | GPU reference (J) | pulses | s/epoch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        err = r["error"] or {}
        soft, good = (f"{err[k]:.2%}" if err.get(k) is not None else "-" for k in ("softmax", "goodness"))
        print(f"| {r['run']} | {soft} | {good} "
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
    ap.add_argument("--refits", action="append", default=[], metavar="RUN:REFITS",
                    help="rows for each head refit (bench_refit.py --out REFITS) of the chip run RUN saved")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--rows", type=int, default=785)
    ap.add_argument("--cols", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--bl", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    if args.speed:
        speed(args.rows, args.cols, args.batch, args.bl, args.repeats)
    if args.folders or args.refits:
        table(args.folders, args.refits)
    if not args.speed and not args.folders and not args.refits:
        ap.error("give bench_ff.py output folders, or --speed")


if __name__ == "__main__":
    main()
