"""What the programming kernel costs on the requests of a real training batch, and how much of it
is the refresh of one-directional pairs.

Run:  MORTAL_DATA=/path/to/mnist.npz python benchmarks/bench_program_replay.py [--preset pcm]
          [--layers 1000,1000,1000] [--train-size 10000] [--epoch 2] [--batch 50] [--repeat 9]

Trains one chip as ``bench_ff.py --speed`` does (the measured defaults without the head refit,
policy ``mixed``, this process's BLAS and kernel settings: ``mortal.process_env``), and keeps,
for every layer, the state, the request and the result of its ``Crossbar.program`` call in batch
``--batch`` of epoch ``--epoch`` (a layer whose update asks for no pulse makes no call).  Each
captured call is then replayed ``--repeat`` times from its captured state, with the caches
flushed before each (a 128 MB buffer is written; a refresh of the cached weights that falls due
at the call's time runs first, untimed), as in training, where the reads and products between
two calls evict the layer's state.  A second replay moves the
refresh level of one-directional pairs (``programming.refresh_at``) out of reach, so that the
difference is what the pair refreshes of that call cost.  A replay that does not reproduce the
captured call's result and weights stops the benchmark.

Prints per layer: the median milliseconds per call with and without pair refreshes, the
requested entries (at least half a pulse), pulses per requested entry and verify reads; then
the sums per batch.  Compare with ``bench_time_split.py``'s ``program`` column, which times every
call of a run (epoch 1 included).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

from mortal import process_env

process_env.apply()  # as the command line: BLAS's short spin, the kernels' threads (before numpy)

import numpy as np  # noqa: E402

import devices  # noqa: E402
from devices import _devstate as S  # noqa: E402
from devices import crossbar as CB  # noqa: E402
from _common import MNIST_CLASSES, ff_config, machine_line  # noqa: E402
from mortal.data import load_mnist  # noqa: E402
from mortal.ff import FFLearner  # noqa: E402
from mortal.ff import train  # noqa: E402

_STATE = ("g", "t_rel", "nu", "life", "w_eff", "row_gsum", "row_var", "col_var")
_SCALARS = ("t_base", "t_eval", "pulses_since", "t_prog_max")


def capture(first: int, n_layers: int) -> tuple[list[dict], Callable[[], None]]:
    """Wrap the learner's per-layer update (``mortal.ff.train.apply_update``, called once per layer
    and batch) and ``Crossbar.program`` so that the program calls made inside update calls
    ``first .. first + n_layers - 1`` (counted from 0 in this process) keep their layer, state,
    request and result.  A layer whose update asked for no pulse in that batch makes no call and
    is not kept.  Returns the list the calls go to and a function that undoes both wraps."""
    program, update = CB.Crossbar.program, train.apply_update
    seen = {"n": -1, "inside": False}
    kept: list[dict] = []

    def wrapped_update(*args, **kwargs):
        seen["n"] += 1
        seen["inside"] = first <= seen["n"] < first + n_layers
        try:
            return update(*args, **kwargs)
        finally:
            seen["inside"] = False

    def wrapped_program(self, delta, now, seed):
        if not seen["inside"]:
            return program(self, delta, now, seed)
        c = {"layer": self, "delta": delta.copy(), "now": float(now), "seed": int(seed),
             "state": {k: getattr(self, k).copy() for k in _STATE},
             "scalars": {k: getattr(self, k) for k in _SCALARS}}
        c["result"] = program(self, delta, now, seed)
        c["after"] = {k: getattr(self, k).copy() for k in ("g", "w_eff")}
        kept.append(c)
        return c["result"]

    def undo() -> None:
        CB.Crossbar.program, train.apply_update = program, update

    CB.Crossbar.program, train.apply_update = wrapped_program, wrapped_update
    return kept, undo


def replay(program, c: dict, repeat: int, flush: np.ndarray) -> tuple[float, tuple]:
    """Median seconds of ``program`` (the unwrapped ``Crossbar.program``) on the captured call, each
    run from the captured state with cold caches; and the last run's result."""
    layer = c["layer"]
    times = []
    out = None
    for _ in range(repeat):
        for k, v in c["state"].items():
            getattr(layer, k)[...] = v
        for k, v in c["scalars"].items():
            setattr(layer, k, v)
        layer.ensure_current(c["now"])  # a refresh due at this time runs untimed (program would run it first)
        flush += 1.0
        t = time.perf_counter()
        out = program(layer, c["delta"], c["now"], c["seed"])
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="pcm")
    ap.add_argument("--layers", default="1000,1000,1000")
    ap.add_argument("--train-size", type=int, default=10000)
    ap.add_argument("--epoch", type=int, default=2, help="the epoch (from 1) of the captured batch")
    ap.add_argument("--batch", type=int, default=50, help="the batch (from 1) within that epoch")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--data", default=None)
    args = ap.parse_args(argv)
    try:
        layers = tuple(int(v) for v in args.layers.split(","))
    except ValueError:
        ap.error(f"--layers takes comma-separated widths, got {args.layers!r}")
    cfg = ff_config("measured", refit_epochs=0, epochs=args.epoch)
    data = load_mnist(args.data)
    x, y = data.train_images[:args.train_size], data.train_labels[:args.train_size]
    per_epoch = x.shape[0] // cfg.batch_size
    if min(layers, default=0) < 1 or args.epoch < 1 or not 1 <= args.batch <= per_epoch or args.repeat < 1:
        ap.error(f"give widths >= 1, --epoch >= 1, 1 <= --batch <= {per_epoch} (the batches of "
                 f"{x.shape[0]} images) and --repeat >= 1")
    spec = devices.get_preset(args.preset)
    sizes = (int(np.prod(x.shape[1:])),) + layers
    chip = devices.make_chip(spec, sizes, cfg.seed)
    if chip._layers[0].exact:
        ap.error(f"preset {args.preset} programs weights exactly; choose a pulsed preset")
    print(f"# {machine_line()}")
    n_layers = len(layers)
    original = CB.Crossbar.program
    kept, undo = capture(((args.epoch - 1) * per_epoch + args.batch - 1) * n_layers, n_layers)
    t = time.perf_counter()
    try:
        FFLearner(cfg).fit(chip, x, y, n_classes=MNIST_CLASSES, progress=False)
    finally:
        undo()
    print(f"# trained {args.epoch} epochs in {time.perf_counter() - t:.1f} s; replaying epoch {args.epoch}, "
          f"batch {args.batch}", flush=True)
    missing = n_layers - len(kept)
    if missing:
        print(f"# {missing} layer(s) asked for no pulse in that batch (no program call to replay)")
    flush = np.zeros(16_000_000)  # 128 MB
    print("| layer | ms per call | without pair refreshes | requested entries | pulses per entry | verify reads |")
    print("|---|---|---|---|---|---|")
    sums = [0.0, 0.0]
    for c in kept:
        layer = c["layer"]
        t_with, out = replay(original, c, args.repeat, flush)
        if out != c["result"] or any(not np.array_equal(getattr(layer, k), v) for k, v in c["after"].items()):
            raise SystemExit(f"the replay of layer {layer.n_in}x{layer.n_out} did not reproduce the captured call")
        at = float(layer.pp[S.PP_REFRESH_AT])
        layer.pp[S.PP_REFRESH_AT] = np.inf
        try:
            t_without, _ = replay(original, c, args.repeat, flush)
        finally:
            layer.pp[S.PP_REFRESH_AT] = at
        req = int(np.count_nonzero(np.abs(c["delta"]) >= 0.5 * layer.pulse_step_w))
        sums[0] += t_with
        sums[1] += t_without
        print(f"| {layer.n_in}x{layer.n_out} | {1e3 * t_with:.2f} | {1e3 * t_without:.2f} | {req} | "
              f"{out[0] / max(req, 1):.1f} | {out[3]} |")
    print(f"per batch: {1e3 * sums[0]:.2f} ms, {1e3 * sums[1]:.2f} ms without pair refreshes")


if __name__ == "__main__":
    main()
