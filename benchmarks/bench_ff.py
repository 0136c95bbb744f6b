"""Forward-Forward on full MNIST: test error, seconds per epoch, throughput.

Accuracy run (Hinton's recipe; hold-out as in his code is not used, the
10,000 MNIST test images are the test set):

    python benchmarks/bench_ff.py --preset ideal --layers 1000,1000,1000 --epochs 100 --out runs/ff-ideal

``--holdout N`` trains on all but the last N training images and evaluates on those
instead (the split on which settings are chosen before a test-set run); ``--save-dir DIR``
saves the trained learner and chip as a checkpoint (for ``bench_refit.py``).

``--mode unsupervised`` trains Hinton's unsupervised recipe (examples against hybrid images,
no label input, the softmax head over the top ``--head-last`` hidden layers; ``--mask-blurs``
sets the masks' blur passes; reported errors are then those of the softmax head only: the mode
has no goodness readout); ``--mode recurrent`` the recurrent one, on a chip with the top-down
layout (``benchmarks/bench_recurrent.py`` has its schedule's settings).

``--defaults hinton`` (the default) builds the learner's settings on Hinton's plain recipe
and the ``direct`` update policy unless ``--policy`` says otherwise: the settings under which
the figures in ``benchmarks/RESULTS.md`` were made.  ``--defaults measured`` starts from the
learner's current defaults instead (``mixed`` policy, head over all hidden layers, a 30-epoch
head refit at weight cost 0); the options below override either table.

Speed comparison of presets in one process (same data, same seed):

    python benchmarks/bench_ff.py --speed --presets ideal,pcm --train-size 10000 --epochs 1 [--repeats 3]

(``--repeats``: the presets run that many times, alternating, each one's median reported.  An
entry ``preset:policy`` runs that preset under that update policy, e.g. ``--presets
ideal,pcm:mixed,pcm:analog``.)

Throughput is the learner's GEMM work (three forward passes and one
weight-gradient product per batch and layer, plus the head) divided by the
training wall time, as a fraction of the float32 GEMM peak measured in the
same process.  ``--unset-blas-tuning`` drops OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE for this process (both together), before numpy loads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from mortal import process_env

process_env.apply()  # as the command line: BLAS's short spin, the kernels' threads (before numpy)

if "--unset-blas-tuning" in sys.argv:  # before numpy loads OpenBLAS; both variables together
    for _var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        os.environ.pop(_var, None)

import numpy as np  # noqa: E402

import devices  # noqa: E402
from _common import MNIST_CLASSES, ff_config, gemm_peak_gflops, machine_line, split_holdout  # noqa: E402
from mortal.chip import top_down_widths  # noqa: E402
from mortal.config import chip_top_down  # noqa: E402
from mortal.data import load_mnist  # noqa: E402
from mortal.ff import FFConfig, FFLearner  # noqa: E402
from mortal.ff.config import MODES  # noqa: E402
from mortal.ff.modes import mode_recipe  # noqa: E402
from mortal.ops import head_width, training_macs  # noqa: E402
from mortal.updates import policy_memory  # noqa: E402


def training_flops(sizes: tuple[int, ...], n_images: int, batch: int, head_layers: list[int],
                   cfg: FFConfig | None = None, top_down: tuple[int, ...] | None = None) -> float:
    """Floating-point operations of the GEMMs of one training epoch (two per multiply-accumulate);
    ``head_layers``: the hidden layers the softmax head reads; ``cfg``: the settings whose mode
    gives the passes and updates per batch (None: the supervised mode's); ``top_down``: the
    chip's top-down inputs per layer (the recurrent mode's)."""
    cfg = FFConfig() if cfg is None else cfg
    return 2.0 * training_macs(sizes, n_images, batch, 1, head_width(sizes, head_layers), MNIST_CLASSES,
                               top_down=top_down, **mode_recipe(cfg).reference_work(cfg))


def _median_train_s(history: list[dict]) -> float:
    """Median training seconds per epoch, leaving out the first (it compiles the kernels) when there are more."""
    times = [r["train_wall_s"] for r in history]
    return float(np.median(times[1:] if len(times) > 1 else times))


def parse_layers(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def run(preset: str, sizes: tuple[int, ...], cfg: FFConfig, split, n_train: int, log_path: str | None,
        eval_test: bool = True, eval_every: int = 1, save_dir: str | None = None) -> tuple[FFLearner, object]:
    """Train one chip of ``preset`` on the first ``n_train`` images of ``split``
    (``split_holdout``'s four arrays), evaluating on its last two (reported as ``test_error``)
    every ``eval_every`` epochs and at the end; ``save_dir``: checkpoint learner and chip there
    at the end."""
    spec = devices.get_preset(preset)  # mode recurrent: the top-down layout
    chip = devices.make_chip(spec, sizes, cfg.seed, top_down=chip_top_down(spec, cfg, MNIST_CLASSES, sizes))
    learner = FFLearner(cfg)

    def log(rec: dict) -> None:
        te = rec.get("test_error", {})
        refit = f" (before the head refit {rec['test_error_before_refit']})" if "test_error_before_refit" in rec else ""
        print(f"[{preset}] epoch {rec['epoch']} train {rec['train_wall_s']:.1f}s online-err "
              f"{rec['train_error_online']:.4f} test {te}{refit}", flush=True)
        if log_path:
            with open(log_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")

    xtr, ytr, xev, yev = split
    kw = {"test_inputs": xev, "test_labels": yev} if eval_test else {}
    learner.fit(chip, xtr[:n_train], ytr[:n_train], n_classes=MNIST_CLASSES, eval_every=eval_every,
                checkpoint_dir=save_dir, log=log, progress=False, **kw)  # the images carry their shape
    return learner, chip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="ideal")
    ap.add_argument("--presets", default="ideal,pcm", help="with --speed: presets to compare")
    ap.add_argument("--speed", action="store_true", help="compare seconds per epoch of --presets")
    ap.add_argument("--repeats", type=int, default=1,
                    help="with --speed: run the presets this many times, alternating, and take each one's median")
    ap.add_argument("--layers", type=parse_layers, default=(1000, 1000, 1000))
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--train-size", type=int, default=60000)
    ap.add_argument("--defaults", choices=("hinton", "measured"), default="hinton",
                    help="the learner's default table (FFConfig.defaults): hinton, the recorded figures' "
                         "settings (with policy direct), or measured, the current defaults")
    ap.add_argument("--policy", choices=("direct", "mixed", "analog"), default=None,
                    help="update policy (default: direct with --defaults hinton, else the table's, mixed)")
    ap.add_argument("--bl", type=int, default=None,
                    help="with --policy analog: pulse slots per sample (FFConfig bit_length; default 10)")
    ap.add_argument("--estimator", choices=("nominal", "perturbed"), default="nominal")
    ap.add_argument("--mode", choices=MODES, default="supervised",
                    help="what the layers learn from (FFConfig.mode): labels written in, real against hybrid "
                         "images (unsupervised), or the recurrent network")
    ap.add_argument("--head-last", type=int, default=None,
                    help="with --mode unsupervised: the head reads this many top hidden layers (default: all; 3 under --defaults hinton)")
    ap.add_argument("--mask-blurs", type=int, default=None,
                    help="with --mode unsupervised: blur passes of the hybrid masks (default 6)")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None, help="MNIST .npz or folder (default: MORTAL_DATA)")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--refit-epochs", type=int, default=None,
                    help="after training, refit the softmax head over the frozen layers for K epochs "
                         "(FFConfig refit.epochs; default: the table's, 0 for hinton, 30 for measured)")
    ap.add_argument("--refit-weight-cost", type=float, default=None,
                    help="the head's weight cost in that refit (refit.weight_cost; default 0)")
    ap.add_argument("--refit-settle", type=float, default=None,
                    help="idle chip seconds before that refit (refit.settle_s; default 0)")
    ap.add_argument("--head-layers", choices=("readout", "all"), default=None,
                    help="the hidden layers the softmax head reads (FFConfig recipe.head_layers; default: the "
                         "table's, readout for hinton, all for measured)")
    ap.add_argument("--holdout", type=int, default=0,
                    help="evaluate on the last N training images, left out of training, instead of the test set")
    ap.add_argument("--save-dir", default=None, help="save the trained learner and chip here (a checkpoint)")
    ap.add_argument("--out", default=None, help="folder for per-epoch JSON lines and the summary")
    ap.add_argument("--unset-blas-tuning", action="store_true")
    args = ap.parse_args()

    sizes = (784,) + args.layers
    extra = {"lr": args.lr} if args.lr is not None else {}
    if args.bl is not None:
        extra["bit_length"] = args.bl
    extra["mode"] = args.mode
    unsup = {k: v for k, v in (("head_last", args.head_last), ("mask_blurs", args.mask_blurs)) if v is not None}
    if unsup:
        if args.mode != "unsupervised":
            ap.error("--head-last and --mask-blurs apply to --mode unsupervised")
        extra["unsupervised"] = unsup
    if args.eval_every < 0:
        ap.error("--eval-every must be >= 0")
    try:
        cfg = ff_config(args.defaults, policy=args.policy, refit_epochs=args.refit_epochs,
                        refit_weight_cost=args.refit_weight_cost, refit_settle_s=args.refit_settle,
                        head_layers=args.head_layers, epochs=args.epochs, seed=args.seed,
                        estimator=args.estimator, **extra)
    except ValueError as exc:  # pydantic's ValidationError names the field
        ap.error(str(exc))
    data = load_mnist(args.data)
    print(f"# {machine_line()}")
    peak = gemm_peak_gflops()
    print(f"# float32 GEMM peak here: {peak:.1f} GFLOP/s")
    try:
        split = split_holdout(data.train_images, data.train_labels, data.test_images, data.test_labels, args.holdout)
    except ValueError as exc:
        ap.error(str(exc))
    n_trained = min(args.train_size, split[0].shape[0])
    if args.out:
        os.makedirs(args.out, exist_ok=True)

    if args.speed:
        # entries "preset" or "preset:policy" (the policy of that entry instead of --policy's)
        configs = {}
        for entry in args.presets.split(","):
            name, _, policy = entry.partition(":")
            try:
                configs[entry] = (name, cfg.changed(policy=policy) if policy else cfg)
                # refused before any run: a policy the chip cannot take (analog on exact weights)
                policy_memory(configs[entry][1].policy, devices.make_chip(name, sizes[:2], 0))
            except (ValueError, KeyError) as exc:
                ap.error(f"--presets {entry}: {exc}")
        runs: dict[str, list[float]] = {e: [] for e in configs}
        for rep in range(max(1, args.repeats)):
            for entry, (preset, entry_cfg) in configs.items():
                learner, entry_chip = run(preset, sizes, entry_cfg, split, n_trained, None, eval_test=False)
                runs[entry].append(_median_train_s(learner.history))
                flops = training_flops(sizes, n_trained, entry_cfg.batch_size, learner.state.head_layers,
                                       entry_cfg, top_down_widths(entry_chip.info))
                gf = flops / runs[entry][-1] / 1e9
                print(f"| {entry} (run {rep + 1}) | {runs[entry][-1]:.2f} s/epoch | {gf:.1f} GFLOP/s | "
                      f"{gf / peak:.1%} of peak |", flush=True)
        times = {e: float(np.median(t)) for e, t in runs.items()}
        base = next(iter(times.values()))
        for entry, t in times.items():
            print(f"{entry}: {t / base:.2f}x the first preset's seconds per epoch")
        return

    t0 = time.perf_counter()
    log_path = os.path.join(args.out, "epochs.jsonl") if args.out else None
    learner, chip = run(args.preset, sizes, cfg, split, n_trained, log_path, eval_every=args.eval_every,
                        save_dir=args.save_dir)
    train_s = _median_train_s(learner.history)
    gf = training_flops(sizes, n_trained, cfg.batch_size, learner.state.head_layers, cfg,
                        top_down_widths(chip.info)) / train_s / 1e9
    summary = {
        "preset": args.preset, "layers": list(sizes), "epochs": args.epochs, "defaults": cfg.defaults,
        "policy": cfg.policy, "bit_length": cfg.bit_length, "lr": cfg.optimizer.lr,
        "estimator": cfg.measurement.estimator, "mode": cfg.mode, "seed": args.seed, "train_size": n_trained,
        "batch_size": cfg.batch_size,
        "evaluated_on": f"last {args.holdout} training images" if args.holdout else "test set",
        "test_error": learner.history[-1].get("test_error"),
        "refit_epochs": cfg.refit.epochs, "refit_weight_cost": cfg.refit.weight_cost,
        "refit_settle_s": cfg.refit.settle_s,
        "head_layers": cfg.recipe.head_layers, "head_layer_indices": list(learner.state.head_layers),
        **({"unsupervised": cfg.unsupervised.model_dump()} if cfg.mode == "unsupervised" else {}),
        "test_error_before_refit": learner.history[-1].get("test_error_before_refit"),
        "best_test_error": {m: min(r["test_error"][m] for r in learner.history if "test_error" in r)
                            for m in learner.history[-1].get("test_error", {})},
        "median_train_s_per_epoch": train_s,
        "gflops": gf, "gemm_peak_gflops": peak, "fraction_of_peak": gf / peak,
        "energy_j": chip.ledger.energy_j, "total_energy_j": chip.ledger.total_energy_j,
        "pulses": chip.ledger.counts.get("pulses", 0), "ledger_counts": dict(chip.ledger.counts),
        "wall_s": time.perf_counter() - t0,
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        with open(os.path.join(args.out, "summary.json"), "w") as fh:
            json.dump(summary, fh, indent=2)


if __name__ == "__main__":
    main()
