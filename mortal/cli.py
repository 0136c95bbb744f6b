"""The ``mortal`` command.

Exit codes: 0 success; 1 the run failed (or, for ``fleet`` and ``sweep``, some chips
failed; their errors are in the records); 2 bad command line, config or input, nothing
written; 3 the Dask scheduler could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from . import __version__

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CLUSTER = 0, 1, 2, 3


def _layers(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers must be comma-separated integers, got {text!r}") from None
    if not sizes or any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"--layers needs positive widths, got {text!r}")
    return sizes


#: The DistillConfig fields that `mortal distill` and `mortal lifetime` take as options.
_TRANSFER_FIELDS = ("temperature", "teacher_readout", "positives", "min_confidence", "negatives", "weighting",
                    "head_epochs", "head_weight_cost")


def _transfer_options(p: argparse.ArgumentParser) -> None:
    """The distillation options (``_TRANSFER_FIELDS``), checked by ``DistillConfig``."""
    p.add_argument("--temperature", type=float, default=1.0, help="distillation temperature")
    p.add_argument("--teacher-readout", choices=("goodness", "softmax", "combined"), default="softmax")
    p.add_argument("--positives", choices=("argmax", "sample"), default="argmax")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="transfer images the teacher is less sure of train only the student's head")
    p.add_argument("--negatives", choices=("teacher", "own", "mixed"), default="teacher",
                   help="the student's negative labels: from the teacher's ranking of the wrong labels, its own, "
                        "or both")
    p.add_argument("--weighting", choices=("none", "confidence"), default="none",
                   help="weight each transfer image's update of the student's layers by the teacher's "
                        "probability of its label")
    p.add_argument("--head-epochs", type=int, default=0,
                   help="after the transfer, refit the student's head to the teacher's targets over its frozen "
                        "layers for this many epochs")
    p.add_argument("--head-weight-cost", type=float, default=None,
                   help="the head's weight cost during that refit (default: the learner's weight_cost_head)")


def _transfer_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in _TRANSFER_FIELDS}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mortal", description=(
        "Emulate unique, noisy analog chips and train them in situ with Forward-Forward."))
    p.add_argument("--version", action="version", version=f"mortal {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train one chip on MNIST with Forward-Forward")
    t.add_argument("--preset", default="pcm", help="device preset (ideal, pcm, rram, wild)")
    t.add_argument("--layers", type=_layers, default=(1000, 1000, 1000), help="hidden widths, e.g. 1000,1000,1000")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--seed", type=int, default=0, help="seeds the chip and the learner")
    t.add_argument("--data", default=None, help="MNIST .npz or IDX folder (default: MORTAL_DATA, cache, download)")
    t.add_argument("--mini", action="store_true", help="use the small MNIST subset bundled with the package")
    t.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    t.add_argument("--out", default=None, help="output folder (JSON lines, checkpoints, summary)")
    t.add_argument("--policy", choices=("direct", "mixed"), default="direct")
    t.add_argument("--estimator", choices=("nominal", "perturbed"), default="nominal")
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--refit-epochs", type=int, default=0,
                   help="after training, refit the softmax head over the frozen layers for this many epochs")
    t.add_argument("--refit-settle", type=float, default=0.0,
                   help="idle chip seconds before that refit (a head fitted on a settled chip holds longer)")
    t.add_argument("--head-layers", choices=("readout", "all"), default="readout",
                   help="the hidden layers the softmax head reads (default: those of the goodness readout)")
    t.add_argument("--checkpoint-every", type=int, default=0, help="epochs between checkpoints (0: only with --out, at the end)")
    t.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")

    life = sub.add_parser("lifetime", help="train a chip, age it, and distill it into fresh chips as it dies")
    life.add_argument("--preset", default="pcm", help="device preset (ideal, pcm, rram, wild)")
    life.add_argument("--layers", type=_layers, default=(1000, 1000, 1000), help="hidden widths")
    life.add_argument("--generations", type=int, default=3, help="chips in the lineage")
    life.add_argument("--epochs", type=int, default=10, help="epochs of generation 0's training from labels")
    life.add_argument("--distill-epochs", type=int, default=None, help="epochs of each distillation (default: --epochs)")
    life.add_argument("--seed", type=int, default=0)
    life.add_argument("--data", default=None, help="MNIST .npz or IDX folder (default: MORTAL_DATA, cache, download)")
    life.add_argument("--mini", action="store_true", help="use the small MNIST subset bundled with the package")
    life.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    life.add_argument("--check-every", default="30d", help="simulated time between health checks (e.g. 30d, 6mo, 1y)")
    life.add_argument("--max-age", default="20y", help="retire a chip at this age after training even if healthy")
    life.add_argument("--margin", type=float, default=0.03,
                      help="dying once the probe error exceeds its post-training value by this much")
    life.add_argument("--compensation", choices=("none", "global", "column"), default="column")
    _transfer_options(life)
    life.add_argument("--policy", choices=("direct", "mixed"), default="mixed")
    life.add_argument("--refit-epochs", type=int, default=0,
                      help="every generation's training ends with a refit of its softmax head (K epochs)")
    life.add_argument("--out", default=None, help="output folder (events.jsonl, config.json, lifetime.png/.svg)")
    life.add_argument("--quiet", action="store_true", help="no per-event lines")

    ds = sub.add_parser("distill", help="teach a fresh chip from a chip trained with `mortal train`")
    ds.add_argument("--teacher", required=True, help="the --out folder of a `mortal train` run")
    ds.add_argument("--seed", type=int, default=1, help="seeds the student chip and its learner")
    ds.add_argument("--epochs", type=int, default=None, help="student epochs (default: the teacher's)")
    _transfer_options(ds)
    ds.add_argument("--data", default=None, help="the data the teacher was trained on (as for `mortal train`)")
    ds.add_argument("--mini", action="store_true", help="the teacher was trained on the bundled subset")
    ds.add_argument("--transfer-size", type=int, default=None, help="unlabelled transfer images (default: all)")
    ds.add_argument("--baselines", action="store_true", help="also a weight copy and a student trained from labels")
    ds.add_argument("--out", default=None, help="output folder (summary.json, epochs.jsonl)")
    ds.add_argument("--quiet", action="store_true")

    for name, text in (("fleet", "train and evaluate N unique chips from a TOML config"),
                       ("sweep", "run every combination of a config's [sweep] lists over the fleet")):
        f = sub.add_parser(name, help=text)
        f.add_argument("config", help="experiment config (TOML)")
        f.add_argument("--out", default=None, help="output folder (default: runs/NAME from the config)")
        f.add_argument("--workers", type=int, default=None, help="local worker processes (default: CPUs)")
        f.add_argument("--scheduler", default=None, help="address of a Dask scheduler, e.g. tcp://host:8786")
        f.add_argument("--dask-local", type=int, default=None, metavar="N", help="run on a local Dask cluster of N workers")
        f.add_argument("--resume", action="store_true", help="continue the run in --out, skipping finished chips")
        f.add_argument("--save-chips", action="store_true", help="save every trained chip and its learner")
        f.add_argument("--quiet", action="store_true", help="no progress bar or tables")

    r = sub.add_parser("report", help="tables and figures from a finished fleet or sweep folder")
    r.add_argument("dir", help="the run folder")
    r.add_argument("--quiet", action="store_true")

    d = sub.add_parser("demo", help="the tour: a fleet of pcm chips, one aged and distilled into a fresh chip")
    d.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    d.add_argument("--chips", type=int, default=4)
    d.add_argument("--workers", type=int, default=None, help="local worker processes (default: CPUs)")
    d.add_argument("--layers", type=_layers, default=(300, 300))
    d.add_argument("--epochs", type=int, default=5)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true")
    return p


def _error(msg: str) -> int:
    print(f"mortal: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def cmd_train(args: argparse.Namespace) -> int:
    import devices
    from .checkpoint import CHIP_FILE, latest_checkpoint, read_history
    from .data import load_mnist, load_mnist_mini
    from .errors import InputError
    from .ff import FFConfig, FFLearner

    try:
        cfg_args = {"epochs": args.epochs, "seed": args.seed, "policy": args.policy, "estimator": args.estimator}
        if args.lr is not None:
            cfg_args["lr"] = args.lr
        if args.batch_size is not None:
            cfg_args["batch_size"] = args.batch_size
        if args.refit_epochs:
            cfg_args["refit_epochs"] = args.refit_epochs
        if args.refit_settle:
            cfg_args["refit_settle_s"] = args.refit_settle
        if args.head_layers != "readout":
            cfg_args["head_layers"] = args.head_layers
        out = Path(args.out) if args.out else None
        if out is not None and args.epochs >= 1:
            cfg_args["checkpoint_every"] = args.checkpoint_every or args.epochs
        cfg = FFConfig(**cfg_args)
        data = load_mnist_mini() if args.mini else load_mnist(args.data)
        sizes = (784,) + tuple(args.layers)
        ckdir = out / "checkpoints" if out else None
        if args.resume:
            if out is None:
                return _error("--resume needs --out (the folder of the run to continue)")
            chip = devices.load_chip(latest_checkpoint(ckdir) / CHIP_FILE)
        else:
            chip = devices.make_chip(args.preset, sizes, args.seed)
    except (ValueError, FileNotFoundError, ValidationError) as exc:
        return _error(str(exc))

    n_all = data.train_images.shape[0]
    n = n_all if args.train_size is None else args.train_size
    if not 1 <= n <= n_all:
        return _error(f"--train-size must be between 1 and {n_all} (the training images available), got {n}")
    x, y = data.train_images[:n], data.train_labels[:n]
    log_path = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "epochs.jsonl"
        if args.resume:  # keep only the epochs the checkpoint holds; the rest will be redone
            history = read_history(ckdir)
            log_path.write_text("".join(json.dumps(r) + "\n" for r in history))
        (out / "config.json").write_text(json.dumps({
            "preset": chip.spec.name, "layer_sizes": list(chip.info.layer_sizes), "seed": args.seed,
            "chip_seed": chip.seed, "data": data.source, "train_size": int(n), "ff": cfg.model_dump(mode="json"),
        }, indent=2))

    def show(rec: dict) -> None:
        if not args.quiet:
            te = rec.get("test_error", {})
            te_s = " ".join(f"{k} {v:.4f}" for k, v in te.items())
            print(f"epoch {rec['epoch']:4d}  loss+ {rec['loss_pos']:.3f}  loss- {rec['loss_neg']:.3f}  "
                  f"online err {rec['train_error_online']:.4f}  test {te_s or '-'}  "
                  f"E {rec['total_energy_j']:.3e} J  {rec['wall_s']:.1f} s", flush=True)
        if log_path is not None:
            with open(log_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")

    learner = FFLearner(cfg)
    t0 = time.perf_counter()
    try:
        learner.fit(chip, x, y, test_images=data.test_images, test_labels=data.test_labels,
                    checkpoint_dir=ckdir, resume=ckdir if args.resume else None, log=show,
                    progress=False if args.quiet else None)
    except InputError as exc:
        return _error(str(exc))
    except Exception as exc:  # the run itself failed (exit 1): say what and where the checkpoints are
        where = f"; checkpoints in {ckdir}" if ckdir is not None else ""
        print(f"mortal: training failed after {learner.epoch} epochs: {type(exc).__name__}: {exc}{where}",
              file=sys.stderr)
        return EXIT_FAIL
    final = learner.history[-1]
    summary = {
        "preset": chip.spec.name, "layers": list(chip.info.layer_sizes), "epochs": learner.epoch,
        "test_error": final.get("test_error"), "energy_j": final["energy_j"],
        "total_energy_j": final["total_energy_j"], "chip_time_s": final["chip_time_s"],
        "pulses": chip.ledger.counts.get("pulses", 0), "wall_s": time.perf_counter() - t0,
    }
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_table(summary)
    return EXIT_OK


def cmd_lifetime(args: argparse.Namespace) -> int:
    from .data import load_mnist, load_mnist_mini
    from .errors import InputError
    from .lifetime import LifetimeConfig, format_duration, run_lifetime, write_events

    try:
        cfg = LifetimeConfig(preset=args.preset, layers=args.layers, generations=args.generations,
                             epochs=args.epochs, distill_epochs=args.distill_epochs, seed=args.seed,
                             check_every=args.check_every, max_age=args.max_age, margin=args.margin,
                             compensation=args.compensation, policy=args.policy, refit_epochs=args.refit_epochs,
                             **_transfer_settings(args))
        data = load_mnist_mini() if args.mini else load_mnist(args.data)
    except ValidationError as exc:
        return _error(_validation_message(exc))
    except (ValueError, FileNotFoundError) as exc:
        return _error(str(exc))
    n_all = data.train_images.shape[0]
    n = n_all if args.train_size is None else args.train_size
    if not 1 <= n <= n_all:
        return _error(f"--train-size must be between 1 and {n_all} (the training images available), got {n}")
    out = Path(args.out) if args.out else None
    sinks = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"lifetime": cfg.model_dump(mode="json"),
                                                     "data": data.source, "train_size": int(n)}, indent=2))
        sinks.append(write_events(out / "events.jsonl"))

    def show(ev: dict) -> None:
        for sink in sinks:
            sink(ev)
        if args.quiet:
            return
        te = ev.get("test_error", {})
        err = " ".join(f"{k} {100 * v:.2f}%" for k, v in te.items())
        extra = ""
        if ev["event"] == "check":
            extra = f"probe {100 * ev['probe_error']:.2f}%  stuck {100 * ev['stuck_fraction']:.2f}%"
        elif ev["event"] == "distilled":
            extra = (f"teacher reads {ev['teacher_energy_j']:.3g} J  student {ev['student_energy_j']:.3g} J  "
                     f"agreement {100 * ev['agreement']:.1f}%")
        elif ev["event"] in ("dying", "retired"):
            extra = ev["reason"]
        print(f"[{format_duration(ev['time_s']):>9}] gen {ev['generation']} {ev['event']:<9} {err}  {extra}",
              flush=True)

    t0 = time.perf_counter()
    try:
        events = run_lifetime(cfg, data.train_images[:n], data.train_labels[:n], data.test_images,
                              data.test_labels, emit=show, progress=not args.quiet and sys.stderr.isatty())
    except InputError as exc:
        return _error(str(exc))
    except Exception as exc:
        print(f"mortal: lifetime run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if out is not None:
        from .plots import plot_lifetime

        paths = plot_lifetime(events, out / "lifetime")
        if not args.quiet:
            print(f"figure: {paths[0]}")
    _print_lifetime_table(events, time.perf_counter() - t0)
    return EXIT_OK


def _print_lifetime_table(events: list, wall: float) -> None:
    from .lifetime import format_duration

    print(f"{'gen':>3}  {'born':>9}  {'error at start':>14}  {'error at end':>12}  {'lived':>9}  end")
    gens = sorted({e["generation"] for e in events})
    for g in gens:
        evs = [e for e in events if e["generation"] == g]
        start = next(e for e in evs if e["event"] in ("trained", "distilled"))
        checks = [e for e in evs if e["event"] == "check"]
        end = next((e for e in evs if e["event"] in ("dying", "retired")), None)
        last = checks[-1]["test_error"]["softmax"] if checks else float("nan")
        born = start["time_s"] - start["age_s"]
        lived = format_duration(end["time_s"] - born) if end else "-"
        print(f"{g:>3}  {format_duration(born):>9}  {100 * start['test_error']['softmax']:>13.2f}%  "
              f"{100 * last:>11.2f}%  {lived:>9}  {end['event'] if end else '-'}")
    print(f"wall time {wall:.1f} s")


def _validation_message(exc: ValidationError) -> str:
    from .config import validation_messages

    return validation_messages(exc)


def cmd_fleet(args: argparse.Namespace, sweep: bool) -> int:
    from .config import ConfigError, load_config
    from .errors import InputError
    from .fleet import dask_executor, run_fleet
    from .report import write_report

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return _error(str(exc))
    if sweep and not cfg.sweep:
        return _error(f"{args.config}: a sweep needs a [sweep] table with lists of values (or use mortal fleet)")
    if not sweep and cfg.sweep:
        return _error(f"{args.config}: this config has a [sweep] table; run it with mortal sweep")
    if args.scheduler is not None and args.dask_local is not None:
        return _error("give --scheduler or --dask-local, not both")
    if args.workers is not None and args.workers < 1:
        return _error(f"--workers must be >= 1, got {args.workers}")
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    executor, close = None, None
    if args.scheduler is not None or args.dask_local is not None:
        try:
            executor, close = dask_executor(args.scheduler, args.dask_local, timeout_s=5.0)
        except ConnectionError as exc:
            print(f"mortal: error: {exc}", file=sys.stderr)
            return EXIT_CLUSTER
        except InputError as exc:
            return _error(str(exc))
    n_chips = len(cfg.points()) * cfg.chips

    def show(rec: dict) -> None:
        if args.quiet or sys.stderr.isatty():
            return
        if rec.get("status") == "ok":
            e = rec["result"]["test_error"]
            print(f"{rec['key']}: softmax {100 * e['softmax']:.2f}%  goodness {100 * e['goodness']:.2f}%  "
                  f"{rec['result']['train_energy_total_j']:.3g} J", flush=True)
        else:
            print(f"{rec['key']}: FAILED {rec.get('error')}", flush=True)

    try:
        res = run_fleet(cfg, out, executor, workers=args.workers, resume=args.resume, save_chips=args.save_chips,
                        progress=not args.quiet and sys.stderr.isatty(), on_record=show)
    except InputError as exc:
        return _error(str(exc))
    except Exception as exc:
        print(f"mortal: the {'sweep' if sweep else 'fleet'} failed: {type(exc).__name__}: {exc}; "
              f"finished records are in {out}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        if close is not None:
            close()
    write_report(out, quiet=args.quiet)
    if not args.quiet:
        print(f"{len(res.ok)}/{n_chips} chips ok ({res.ran} run now) in {res.wall_s:.1f} s; results in {out}")
    return EXIT_OK if not res.failed else EXIT_FAIL


def cmd_distill(args: argparse.Namespace) -> int:
    import devices
    from .checkpoint import CHIP_FILE, latest_checkpoint
    from .data import load_mnist, load_mnist_mini
    from .distill import DistillConfig, distill
    from .errors import InputError
    from .ff import FFConfig, FFLearner
    from .lifetime import weight_copy

    teacher_dir = Path(args.teacher)
    try:
        meta = json.loads((teacher_dir / "config.json").read_text())
        ckdir = teacher_dir / "checkpoints"
        teacher = devices.load_chip(latest_checkpoint(ckdir) / CHIP_FILE)
        t_cfg = FFConfig(**meta["ff"])
        epochs = args.epochs if args.epochs is not None else t_cfg.epochs
        s_cfg = FFConfig(**{**t_cfg.model_dump(), "epochs": epochs, "seed": args.seed, "checkpoint_every": 0,
                            "eval_every": 0})
        d_cfg = DistillConfig(**_transfer_settings(args))
        data = load_mnist_mini() if args.mini else load_mnist(args.data)
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        return _error(f"{teacher_dir} is not a finished `mortal train --out` folder ({exc})")
    except ValidationError as exc:
        return _error(_validation_message(exc))
    except (ValueError, FileNotFoundError) as exc:
        return _error(str(exc))
    n = int(meta.get("train_size", data.n_train))
    x, y = data.train_images[:n], data.train_labels[:n]
    n_t = n if args.transfer_size is None else args.transfer_size
    if not 1 <= n_t <= data.n_train:
        return _error(f"--transfer-size must be between 1 and {data.n_train}, got {n_t}")
    transfer = data.train_images[:n_t]
    t_learner = FFLearner(t_cfg)
    try:
        # Restores the teacher's learner from its checkpoint (no epochs left to train).
        t_learner.fit(teacher, x, y, resume=ckdir, checkpoint_dir=ckdir, progress=False)
        sizes = teacher.info.layer_sizes
        student = devices.make_chip(teacher.spec, sizes, args.seed)
        s_learner = FFLearner(s_cfg)
        out = Path(args.out) if args.out else None
        log = out / "epochs.jsonl" if out else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            log.write_text("")
        res = distill(teacher, student, t_learner, s_learner, transfer, d_cfg, log=log,
                      progress=not args.quiet and sys.stderr.isatty())
    except InputError as exc:
        return _error(str(exc))
    rows = [("teacher", t_learner.evaluate(teacher, data.test_images, data.test_labels).errors, None),
            ("student, distilled", s_learner.evaluate(student, data.test_images, data.test_labels).errors,
             res.total_energy_j)]
    if args.baselines:
        copy_chip = devices.make_chip(teacher.spec, sizes, args.seed)
        c_learner = weight_copy(teacher, copy_chip, t_learner)
        rows.append(("weight copy (immortal)", c_learner.evaluate(copy_chip, data.test_images, data.test_labels).errors,
                     copy_chip.ledger.total_energy_j))
        scratch = devices.make_chip(teacher.spec, sizes, args.seed)
        sc = FFLearner(s_cfg)
        sc.fit(scratch, x, y, progress=False)
        rows.append(("student from labels", sc.evaluate(scratch, data.test_images, data.test_labels).errors,
                     scratch.ledger.total_energy_j))
    summary = {"teacher": str(teacher_dir), "student_seed": args.seed, "epochs": epochs,
               "distill": d_cfg.model_dump(), "transfer_images": int(n_t), **res.summary(),
               "rows": [{"what": w, "test_error": e, "energy_j": j} for w, e, j in rows]}
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if not args.quiet:
        print(f"{'':<24} {'goodness':>9} {'softmax':>9} {'energy':>12}")
        for what, err, joules in rows:
            e = "" if joules is None else f"{joules:.4g} J"
            print(f"{what:<24} {100 * err['goodness']:>8.2f}% {100 * err['softmax']:>8.2f}% {e:>12}")
        print(f"teacher reads {sum(res.teacher_energy_j.values()):.4g} J, agreement {100 * res.agreement:.1f} %")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from .errors import InputError
    from .report import write_report

    try:
        write_report(args.dir, quiet=args.quiet)
    except InputError as exc:
        return _error(str(exc))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .errors import InputError

    try:
        return run_demo(Path(args.out), chips=args.chips, workers=args.workers, layers=args.layers,
                        epochs=args.epochs, seed=args.seed, quiet=args.quiet)
    except InputError as exc:
        return _error(str(exc))


def _print_table(s: dict) -> None:
    rows = [("preset", s["preset"]), ("layers", ",".join(map(str, s["layers"]))), ("epochs", s["epochs"])]
    for k, v in (s["test_error"] or {}).items():
        rows.append((f"test error ({k})", f"{100 * v:.2f} %"))
    rows.append(("energy, total", f"{s['total_energy_j']:.4g} J"))
    for k, v in s["energy_j"].items():
        if v:
            rows.append((f"  {k}", f"{v:.4g} J"))
    rows += [("chip time", f"{s['chip_time_s']:.4g} s"), ("pulses", f"{s['pulses']:,}"),
             ("wall time", f"{s['wall_s']:.1f} s")]
    w = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    if args.command == "train":
        return cmd_train(args)
    if args.command == "lifetime":
        return cmd_lifetime(args)
    if args.command == "distill":
        return cmd_distill(args)
    if args.command in ("fleet", "sweep"):
        return cmd_fleet(args, sweep=args.command == "sweep")
    if args.command == "report":
        return cmd_report(args)
    if args.command == "demo":
        return cmd_demo(args)
    return _error(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
