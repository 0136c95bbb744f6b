"""The ``mortal`` command: the parser and the dispatch.

Every setting is reachable from the command line without an option of its own: ``--set
KEY=VALUE`` (repeatable) sets any field of the command's settings tree, e.g. ``--set
train.recipe.head_layers=readout --set distill.negatives=teacher``; ``mortal options``
lists every key with its type, default and meaning (the same text as ``docs/config.md``).
A few short options cover the common settings.

Exit codes: 0 success; 1 the run failed (or, for ``fleet`` and ``sweep``, some chips
failed; their errors are in the records); 2 bad command line, config or input, nothing
written (one line, ``mortal: error: ...``, on stderr); 3 the Dask scheduler could not be
reached.

Output folders (:mod:`mortal.runfolder`): an ``--out`` must be a folder that is absent or
empty, the command's own run to resume, or a mortal run folder given with ``--overwrite``
(never the current folder, its ancestors, the home folder or ``/``, nor a folder holding the
config, data or teacher the run reads); a run holds a lock on it while it writes, and a second
run on a folder in use is refused (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import __version__
from . import process_env

process_env.apply()  # before anything loads numpy: BLAS's spin, the kernels' threads

from . import commands  # noqa: E402
from .commands import EXIT_CLUSTER, EXIT_FAIL, EXIT_OK, EXIT_USAGE

__all__ = ["main", "EXIT_OK", "EXIT_FAIL", "EXIT_USAGE", "EXIT_CLUSTER"]


def _layers(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers must be comma-separated integers, got {text!r}") from None
    if not sizes or any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"--layers needs positive widths, got {text!r}")
    return sizes


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape must be H,W or H,W,C (integers), got {text!r}") from None
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"--shape must be H,W or H,W,C of positive integers, got {text!r}")
    return shape


def _add_set(p: argparse.ArgumentParser, keys: str) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"set any setting ({keys}; repeatable; values are JSON or plain text; "
                        "`mortal options` lists the keys)")


def _add_data(p: argparse.ArgumentParser, what: str = "the data") -> None:
    p.add_argument("--data", default=None, metavar="SOURCE",
                   help=f"{what}: mnist (MORTAL_DATA, cache, download), mini (the bundled MNIST subset), digits "
                        "(scikit-learn's 8x8 digits), or a path (.npz with x_train, y_train, x_test, y_test, or "
                        "an MNIST folder)")
    p.add_argument("--mini", action="store_true", help="the bundled MNIST subset (same as --data mini)")
    p.add_argument("--shape", type=_shape, default=None, metavar="H,W[,C]",
                   help="each example's shape, for data stored flat (mode unsupervised cuts images along masks)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mortal", description=(
        "Emulate unique, noisy analog chips and train them in situ with Forward-Forward."))
    p.add_argument("--version", action="version", version=f"mortal {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train one chip with Forward-Forward")
    # --preset, --layers and --seed default to None so that --resume can tell them given (and
    # refuse them if they differ from the run's) from left out; a new run takes the defaults.
    t.add_argument("--preset", default=None, help="device preset (ideal, pcm, rram, wild; default pcm)")
    t.add_argument("--layers", type=_layers, default=None, help="hidden widths (default 1000,1000,1000)")
    t.add_argument("--epochs", type=int, default=None, help="training epochs (train.epochs; default 10)")
    t.add_argument("--seed", type=int, default=None, help="seeds the chip and the learner (default 0)")
    _add_data(t)
    t.add_argument("--train-size", type=int, default=None, help="use only the first N training examples")
    t.add_argument("--out", default=None, help="output folder (epochs.jsonl, checkpoints, summary.json)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run checkpointed in --out with its recorded chip, settings, seed and data "
                        "(--preset, --layers and --seed, if given, must be the run's; --epochs may raise the total)")
    t.add_argument("--overwrite", action="store_true", help="replace whatever --out holds (default: a folder "
                   "that is not empty is refused)")
    t.add_argument("--checkpoint-every", type=int, default=0, help="epochs between checkpoints (needs --out; "
                   "a checkpoint is always written at the end)")
    t.add_argument("--eval-every", type=int, default=1, help="epochs between test evaluations (0: only at the end)")
    t.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    _add_set(t, "train.*")

    life = sub.add_parser("lifetime", help="train a chip, age it, and distill it into fresh chips as it dies")
    life.add_argument("--preset", default=None, help="device preset (default pcm)")
    life.add_argument("--layers", type=_layers, default=None, help="hidden widths (default 1000,1000,1000)")
    life.add_argument("--generations", type=int, default=None, help="chips in the lineage (default 3)")
    life.add_argument("--epochs", type=int, default=None, help="epochs of generation 0's training (train.epochs)")
    life.add_argument("--seed", type=int, default=None, help="root seed (default 0)")
    _add_data(life)
    life.add_argument("--train-size", type=int, default=None, help="use only the first N training examples")
    life.add_argument("--check-every", default=None, help="simulated time between health checks (e.g. 30d, 6mo)")
    life.add_argument("--max-age", default=None, help="retire a chip at this age after training (e.g. 20y)")
    life.add_argument("--out", default=None, help="output folder (events.jsonl, config.json, lifetime.png/.svg)")
    life.add_argument("--overwrite", action="store_true", help="replace whatever --out holds")
    life.add_argument("--quiet", action="store_true", help="no per-event lines")
    _add_set(life, "lifetime fields such as margin, and train.*, distill.*")

    ds = sub.add_parser("distill", help="teach a fresh chip from a chip trained with `mortal train --out`")
    ds.add_argument("--teacher", required=True, help="the --out folder of a finished `mortal train` run (read only)")
    ds.add_argument("--seed", type=int, default=1, help="seeds the student chip and its learner")
    ds.add_argument("--epochs", type=int, default=None,
                    help="student epochs (distill.student_epochs; default twice the teacher's)")
    _add_data(ds, "the teacher's data (default: as recorded in the teacher folder)")
    ds.add_argument("--transfer-size", type=int, default=None, help="unlabelled transfer examples (default: all)")
    ds.add_argument("--baselines", action="store_true", help="also a weight copy and a student trained from labels")
    ds.add_argument("--out", default=None, help="output folder (summary.json, epochs.jsonl)")
    ds.add_argument("--overwrite", action="store_true", help="replace whatever --out holds")
    ds.add_argument("--quiet", action="store_true")
    _add_set(ds, "distill.* and train.* (the student's settings, derived from the teacher's)")

    for name, text in (("fleet", "train and evaluate N unique chips from a TOML config"),
                       ("sweep", "run every combination of a config's [sweep] lists over the fleet")):
        f = sub.add_parser(name, help=text)
        f.add_argument("config", help="experiment config (TOML)")
        f.add_argument("--out", default=None, help="output folder (default: runs/NAME from the config)")
        f.add_argument("--workers", type=int, default=None, help="local worker processes (default: CPUs)")
        f.add_argument("--scheduler", default=None, help="address of a Dask scheduler, e.g. tcp://host:8786")
        f.add_argument("--dask-local", type=int, default=None, metavar="N", help="run on a local Dask cluster of N workers")
        f.add_argument("--resume", action="store_true", help="continue the run in --out, skipping finished chips")
        f.add_argument("--overwrite", action="store_true", help="replace whatever --out holds")
        f.add_argument("--save-chips", action="store_true", help="save every trained chip and its learner")
        f.add_argument("--quiet", action="store_true", help="no progress bar or tables")
        _add_set(f, "any key of the config file, e.g. chips=2, train.epochs=3")

    r = sub.add_parser("report", help="tables and figures from a finished fleet or sweep folder")
    r.add_argument("dir", help="the run folder")
    r.add_argument("--quiet", action="store_true")

    d = sub.add_parser("demo", help="the tour: a fleet of pcm chips, one aged and distilled into a fresh chip")
    d.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo; an earlier demo there "
                   "is replaced, any other content refused)")
    d.add_argument("--chips", type=int, default=4)
    d.add_argument("--workers", type=int, default=None, help="local worker processes (default: CPUs)")
    d.add_argument("--layers", type=_layers, default=(300, 300))
    d.add_argument("--epochs", type=int, default=5)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true")
    _add_set(d, "train.* for every chip, distill.* for the transfer")

    o = sub.add_parser("options", help="every settable key with its type, default and meaning")
    o.add_argument("section", nargs="?", choices=("train", "distill", "lifetime", "experiment"), default=None)
    o.add_argument("--markdown", action="store_true", help="the whole reference as Markdown (docs/config.md)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    try:
        return commands.run(args)
    except BrokenPipeError:  # output piped into a command that stopped reading (e.g. head)
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
