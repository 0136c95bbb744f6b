"""Where a noisy chip's training time goes: programming, refreshes of the cached weights, reads.

    python benchmarks/bench_time_split.py --presets ideal,pcm --layers 2000,2000,2000,2000 \
        --train-size 5000 --epochs 2

Trains one chip of each preset in this process (same data, seed and settings: the measured
defaults with the head refit left out, ``--policy``, default ``mixed``; an entry
``preset:policy`` trains that preset under that policy, e.g. ``ideal,pcm:mixed,pcm:analog``)
and times, around every
call, the layer methods that carry the device model: ``Crossbar.program`` (every ``program``
request, with the refresh that may fall due inside it), ``Crossbar.refresh`` (the cached
weights and read-noise sums of every weight of a layer) and ``Crossbar.read``.  The timers wrap
those methods in this process only; they add two clock reads per call.  Each preset first
trains a small chip for a few batches, untimed, so that compiling the kernels is left out.

Prints, per preset, milliseconds per training batch in each and in the rest of the learner
(its controller arithmetic and the BLAS products it calls itself), how many program calls and
refreshes ran, and the share of the weights a program request asked to change; then the budget
that ``--target`` times the first preset's time per batch leaves the others.  Time spent in a
refresh inside ``program`` or ``read`` is counted once, under refresh.
"""

from __future__ import annotations

import argparse
import time

from mortal import process_env

process_env.apply()  # as the command line: BLAS's short spin, the kernels' threads (before numpy)

import numpy as np  # noqa: E402

import devices  # noqa: E402
from devices import crossbar as CB  # noqa: E402
from _common import MNIST_CLASSES, ff_config, machine_line  # noqa: E402
from mortal.data import load_mnist  # noqa: E402
from mortal.ff import FFLearner  # noqa: E402

#: Seconds and counts gathered by the wrappers of :func:`instrument`.
STATS: dict[str, float] = {}


def _reset() -> None:
    STATS.clear()
    STATS.update(program_s=0.0, refresh_s=0.0, read_s=0.0, program_calls=0, refreshes=0, reads=0,
                 requested=0, offered=0, nested_refresh_s=0.0)


def instrument() -> None:
    """Wrap ``Crossbar.program``, ``refresh`` and ``read`` with timers (this process only)."""
    program, refresh, read = CB.Crossbar.program, CB.Crossbar.refresh, CB.Crossbar.read
    depth = {"outer": 0}

    def timed_refresh(self, now):
        t = time.perf_counter()
        out = refresh(self, now)
        dt = time.perf_counter() - t
        STATS["refresh_s"] += dt
        STATS["refreshes"] += 1
        if depth["outer"]:
            STATS["nested_refresh_s"] += dt
        return out

    def timed(kind, method):
        def call(self, values, now, seed):
            nested = STATS["nested_refresh_s"]
            depth["outer"] += 1
            t = time.perf_counter()
            try:
                out = method(self, values, now, seed)
            finally:
                depth["outer"] -= 1
            STATS[f"{kind}_s"] += time.perf_counter() - t - (STATS["nested_refresh_s"] - nested)
            STATS[f"{kind}s" if kind == "read" else f"{kind}_calls"] += 1
            if kind == "program":
                STATS["requested"] += int(np.count_nonzero(values))
                STATS["offered"] += int(values.size)
            return out
        return call

    CB.Crossbar.refresh = timed_refresh
    CB.Crossbar.program = timed("program", program)
    CB.Crossbar.read = timed("read", read)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="ideal,pcm")
    ap.add_argument("--layers", default="1000,1000,1000")
    ap.add_argument("--train-size", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--policy", default="mixed")
    ap.add_argument("--target", type=float, default=1.3, help="the budget: this many times the first preset's time")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    entries = [p for p in args.presets.split(",") if p]
    presets = [e.partition(":")[0] for e in entries]
    policies = [e.partition(":")[2] or args.policy for e in entries]
    try:
        layers = tuple(int(v) for v in args.layers.split(","))
    except ValueError:
        ap.error(f"--layers takes comma-separated widths, got {args.layers!r}")
    if not presets or args.train_size < 2 or args.epochs < 1 or args.target <= 1.0 or min(layers, default=0) < 1:
        ap.error("give presets, widths >= 1, --train-size >= 2, --epochs >= 1 and --target > 1")
    for p in presets:
        devices.get_preset(p)  # an unknown preset is refused before any training
    data = load_mnist(args.data)
    x, y = data.train_images[:args.train_size], data.train_labels[:args.train_size]
    sizes = (int(np.prod(x.shape[1:])),) + layers  # MNIST's label is written over its blank top rows
    base_cfg = ff_config("measured", refit_epochs=0, epochs=args.epochs)
    print(f"# {machine_line()}")
    instrument()
    rows = []
    for entry, preset, policy in zip(entries, presets, policies):
        cfg = base_cfg.changed(policy=policy)
        _reset()
        # compile the kernels first: a small chip, a few batches, untimed
        warm = devices.make_chip(preset, (sizes[0], 16, 16), cfg.seed)
        FFLearner(cfg.changed(epochs=1)).fit(warm, x[:3 * cfg.batch_size], y[:3 * cfg.batch_size],
                                             n_classes=MNIST_CLASSES, progress=False)
        chip = devices.make_chip(preset, sizes, cfg.seed)
        learner = FFLearner(cfg)
        _reset()
        t = time.perf_counter()
        learner.fit(chip, x, y, n_classes=MNIST_CLASSES, progress=False)
        wall = time.perf_counter() - t
        batches = args.epochs * (len(x) // cfg.batch_size)
        ms = {k: 1e3 * STATS[f"{k}_s"] / batches for k in ("program", "refresh", "read")}
        ms["rest"] = 1e3 * wall / batches - sum(ms.values())
        rows.append((entry, 1e3 * wall / batches, ms, dict(STATS)))
        print(f"[{entry}] {wall:.1f} s for {batches} batches", flush=True)
    print(f"\n{'-'.join(map(str, sizes))}, {len(x)} images, {args.epochs} epochs, policy {args.policy} "
          "unless an entry names its own")
    print("| preset | ms per batch | program | refresh | read | rest | program calls | refreshes | "
          "requested share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset, total, ms, st in rows:
        share = st["requested"] / st["offered"] if st["offered"] else 0.0
        print(f"| {preset} | {total:.1f} | {ms['program']:.1f} | {ms['refresh']:.1f} | {ms['read']:.1f} | "
              f"{ms['rest']:.1f} | {int(st['program_calls'])} | {int(st['refreshes'])} | {share:.1%} |")
    base = rows[0][1]
    print(f"\nbudget at {args.target}x {rows[0][0]}: {args.target * base:.1f} ms per batch, "
          f"{(args.target - 1.0) * base:.1f} ms for everything beyond it")
    for preset, total, _, _ in rows[1:]:
        print(f"{preset}: {total / base:.2f}x {rows[0][0]}")


if __name__ == "__main__":
    main()
