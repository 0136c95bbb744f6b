"""What the ``mortal`` commands do (the parser is in :mod:`mortal.cli`): ``train``, ``fleet`` and
``sweep``, ``report``, ``demo`` and ``options`` here; ``lifetime`` and ``distill`` in
:mod:`mortal.commands_lineage`; what they share in :mod:`mortal.cli_support`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from .cli_support import (EXIT_CLUSTER, EXIT_FAIL, EXIT_OK, EXIT_USAGE, SET_PREFIXES, assignments,
                          dataset_from_args, flatten, recorded_run, reference, usage_error)
from .errors import InputError
from .options import format_validation_error, merge

__all__ = ["run", "reference", "flatten", "EXIT_OK", "EXIT_FAIL", "EXIT_USAGE", "EXIT_CLUSTER", "SET_PREFIXES"]


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; returns its exit code."""
    from .commands_lineage import cmd_distill, cmd_lifetime

    handlers = {"train": cmd_train, "lifetime": cmd_lifetime, "distill": cmd_distill, "report": cmd_report,
                "demo": cmd_demo, "options": cmd_options}
    try:
        if args.command in ("fleet", "sweep"):
            return cmd_fleet(args, sweep=args.command == "sweep")
        return handlers[args.command](args)
    except (InputError, FileNotFoundError) as exc:
        return usage_error(str(exc))
    except ValueError as exc:  # loaders and specs report bad input as ValueError
        return usage_error(str(exc))


def cmd_options(args: argparse.Namespace) -> int:
    if args.markdown:
        sys.stdout.write(reference())
        return EXIT_OK
    from .config import ExperimentConfig
    from .distill import DistillConfig
    from .ff import FFConfig
    from .lifetime import LifetimeConfig
    from .options import field_rows

    sections = {"train": (FFConfig, "train"), "distill": (DistillConfig, "distill"),
                "lifetime": (LifetimeConfig, ""), "experiment": (ExperimentConfig, "")}
    for name in [args.section] if args.section else list(sections):
        model, prefix = sections[name]
        print(f"[{name}]")
        for row in field_rows(model, prefix):
            if not prefix and row.key.startswith(("train.", "distill.")):
                continue
            print(f"  {row.key} = {row.default}  ({row.type})  {row.doc}")
    return EXIT_OK


#: What a train folder made before run folders had markers holds (it may still be resumed).
TRAIN_LEGACY = ("config.json", "checkpoints")
_NEW_RUN = {"preset": "pcm", "layers": (1000, 1000, 1000), "seed": 0}  # defaults of --preset, --layers, --seed


def _data_paths(args: argparse.Namespace) -> tuple[Path, ...]:
    """``--data`` when it names a file or folder: what an overwritten ``--out`` must not hold."""
    data = getattr(args, "data", None)
    return (Path(data),) if data and Path(data).exists() else ()


def cmd_train(args: argparse.Namespace) -> int:
    import devices
    from . import runfolder
    from .config import chip_input_width, chip_top_down
    from .ff import CHIP_FILE, FFConfig, latest_checkpoint
    from .ff.checkpoint import check_checkpoint, saved_config

    tree = assignments(args).get("train", {})
    for flag, value in (("--checkpoint-every", args.checkpoint_every), ("--eval-every", args.eval_every)):
        if value < 0:
            key = flag[2:].replace("-", "_")
            return usage_error(f"{flag} must be >= 0 ({key}), got {value}")
    if args.out is None:
        for flag, given in (("--resume", args.resume), ("--overwrite", args.overwrite),
                            ("--checkpoint-every", args.checkpoint_every > 0)):
            if given:
                return usage_error(f"{flag} needs --out (the run folder)")
    if args.resume and args.overwrite:
        return usage_error("give --resume or --overwrite, not both")
    # The folder first, before anything in it is read (and nothing is written until the run starts).
    protect = _data_paths(args)
    out = runfolder.check_out(args.out, "train", resume=args.resume, overwrite=args.overwrite, legacy=TRAIN_LEGACY,
                              protect=protect)
    ckdir = out / "checkpoints" if out is not None else None
    given = {"preset": args.preset, "layers": args.layers, "seed": args.seed}
    size_origin = None
    if args.resume:  # the chip, settings, seed and data the run was started with
        recorded = recorded_run(out)
        try:
            latest_checkpoint(ckdir)
        except FileNotFoundError:
            raise InputError(f"--out {out} holds no checkpoint to resume (the run stopped before its first); "
                             "start it afresh without --resume") from None
        chip = devices.load_chip(latest_checkpoint(ckdir) / CHIP_FILE)
        base = saved_config(ckdir).model_dump()
        begun = {"preset": chip.spec.name, "layers": tuple(int(n) for n in chip.info.layer_sizes[1:]),
                 "seed": int(recorded.get("seed", base["seed"]))}

        def text(v: object) -> str:
            return ",".join(map(str, v)) if isinstance(v, tuple) else str(v)

        differ = [f"--{k} {text(v)} (the run's is {text(begun[k])})" for k, v in given.items()
                  if v is not None and v != begun[k]]
        if differ:  # they would be ignored: the run goes on as it began
            raise InputError(f"--resume continues the run in {out} as it began, but you gave " + ", ".join(differ)
                             + "; leave them out or start a new run")
        args.seed = begun["seed"]
        data_rec = recorded.get("data", {})
        if args.data is None and not args.mini:
            args.data = data_rec.get("source")
        if args.train_size is None and data_rec.get("train_size"):
            args.train_size = int(data_rec["train_size"])
            size_origin = f"the run in {out} was trained on {args.train_size} examples"
    else:
        for k, v in given.items():
            setattr(args, k, _NEW_RUN[k] if v is None else v)
        base = {"seed": args.seed}
    epochs = {"epochs": args.epochs} if args.epochs is not None else {}
    try:
        cfg = FFConfig(**base).changed(**{**flatten(tree), **epochs}) if args.resume \
            else FFConfig(**merge(merge(base, tree), epochs))
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, "train", model=FFConfig)) from None
    data = dataset_from_args(args, size_origin=size_origin)
    if data.n_train < cfg.batch_size:  # as fit would refuse it, but before the folder is claimed
        raise InputError(f"{data.n_train} training examples is fewer than one batch ({cfg.batch_size})")
    if args.resume:
        check_checkpoint(cfg, chip, None, ckdir)  # before anything in --out is rewritten
    else:
        spec = devices.get_preset(args.preset)
        sizes = (chip_input_width(spec, cfg, data),) + tuple(args.layers)
        chip = devices.make_chip(spec, sizes, args.seed, top_down=chip_top_down(spec, cfg, data.n_classes, sizes))
    if out is None:
        return _train(args, cfg, chip, data, None)
    # The run starts writing as soon as fit has accepted its input (checkpoints first): the folder
    # is claimed here, and left as it was if fit refuses the input after all.
    with runfolder.claim(out, "train", overwrite=args.overwrite, resume=args.resume, legacy=TRAIN_LEGACY,
                         protect=protect):
        return _train(args, cfg, chip, data, out)


def _train(args: argparse.Namespace, cfg, chip, data, out: Path | None) -> int:
    """Fit ``chip`` as ``cmd_train`` has set it up; write into ``out`` (claimed) if given."""
    from .config import image_shape
    from .ff import FFLearner

    ckdir = out / "checkpoints" if out is not None else None
    log_path = out / "epochs.jsonl" if out is not None else None
    started, shown = False, 0  # the run's files written; epochs reported

    def start() -> None:
        """Write the run's files once fit has accepted every input."""
        # The epochs before this one: on resume those the checkpoint held (the rest are redone).
        log_path.write_text("".join(json.dumps(r) + "\n" for r in learner.history[:-1]))  # type: ignore[union-attr]
        (out / "config.json").write_text(json.dumps({  # type: ignore[operator]
            "preset": chip.spec.name, "layer_sizes": list(chip.info.layer_sizes), "seed": args.seed,
            "chip_seed": chip.seed, "data": {"source": args.data or ("mini" if args.mini else "mnist"),
                                             "name": data.name, "train_size": data.n_train},
            "train": cfg.model_dump(mode="json")}, indent=2))

    def show(rec: dict) -> None:
        nonlocal started, shown
        shown += 1
        if log_path is not None and not started:
            start()
            started = True
        if not args.quiet:
            te = " ".join(f"{k} {v:.4f}" for k, v in rec.get("test_error", {}).items())
            print(f"epoch {rec['epoch']:4d}  loss+ {rec['loss_pos']:.3f}  loss- {rec['loss_neg']:.3f}  "
                  f"online err {rec['train_error_online']:.4f}  test {te or '-'}  "
                  f"E {rec['total_energy_j']:.3e} J  {rec['wall_s']:.1f} s", flush=True)
        if log_path is not None:
            with open(log_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")

    learner = FFLearner(cfg)
    t0 = time.perf_counter()
    try:
        learner.fit(chip, data.train_inputs, data.train_labels, n_classes=data.n_classes,
                    test_inputs=data.test_inputs, test_labels=data.test_labels, eval_every=args.eval_every,
                    checkpoint_dir=ckdir, checkpoint_every=args.checkpoint_every,
                    resume=ckdir if args.resume else None, log=show, progress=False if args.quiet else None,
                    example_shape=image_shape(data))
    except InputError as exc:
        if not (started or shown):  # refused before the run began: bad input (exit 2)
            raise
        print(f"mortal: training failed after {learner.epoch} epochs: InputError: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except Exception as exc:  # the run itself failed (exit 1): say what and where the checkpoints are
        where = f"; checkpoints in {ckdir}" if ckdir is not None and ckdir.is_dir() else ""
        print(f"mortal: training failed after {learner.epoch} epochs: {type(exc).__name__}: {exc}{where}",
              file=sys.stderr)
        return EXIT_FAIL
    final = learner.history[-1]
    summary = {"preset": chip.spec.name, "layers": list(chip.info.layer_sizes), "epochs": learner.epoch,
               "test_error": final.get("test_error"), "energy_j": final["energy_j"],
               "total_energy_j": final["total_energy_j"], "chip_time_s": final["chip_time_s"],
               "pulses": chip.ledger.counts.get("pulses", 0), "wall_s": time.perf_counter() - t0}
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_table(summary)
    return EXIT_OK


def cmd_fleet(args: argparse.Namespace, sweep: bool) -> int:
    from .config import ConfigError, load_config
    from . import runfolder
    from .fleet import CONFIG_FILE, dask_executor, run_fleet
    from .report import write_report

    try:
        cfg = load_config(args.config, assignments(args))
    except ConfigError as exc:
        return usage_error(str(exc))
    if sweep and not cfg.sweep:
        return usage_error(f"{args.config}: a sweep needs a [sweep] table with lists of values (or use mortal fleet)")
    if not sweep and cfg.sweep:
        return usage_error(f"{args.config}: this config has a [sweep] table; run it with mortal sweep")
    if args.scheduler is not None and args.dask_local is not None:
        return usage_error("give --scheduler or --dask-local, not both")
    if args.workers is not None and args.workers < 1:
        return usage_error(f"--workers must be >= 1, got {args.workers}")
    if args.out is not None and not args.out.strip():
        return usage_error("--out is empty; give a folder")
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    # The folder is checked before a Dask cluster is started (run_fleet checks it again under its lock).
    # Its config file must not be in a folder --overwrite would clear (run_fleet does not know the file).
    runfolder.check_out(out, "fleet", resume=args.resume, overwrite=args.overwrite, legacy=(CONFIG_FILE,),
                        protect=(Path(args.config),))
    executor, close = None, None
    if args.scheduler is not None or args.dask_local is not None:
        try:
            executor, close = dask_executor(args.scheduler, args.dask_local, timeout_s=5.0)
        except ConnectionError as exc:
            print(f"mortal: error: {exc}", file=sys.stderr)
            return EXIT_CLUSTER
    n_chips = len(cfg.points()) * cfg.chips

    def show(rec: dict) -> None:
        if args.quiet or sys.stderr.isatty():
            return
        if rec.get("status") == "ok":
            e = rec["result"]["test_error"]
            good = "-" if e["goodness"] is None else f"{100 * e['goodness']:.2f}%"
            print(f"{rec['key']}: softmax {100 * e['softmax']:.2f}%  goodness {good}  "
                  f"{rec['result']['train_energy_total_j']:.3g} J", flush=True)
        else:
            print(f"{rec['key']}: FAILED {rec.get('error')}", flush=True)

    try:
        res = run_fleet(cfg, out, executor, workers=args.workers, resume=args.resume, overwrite=args.overwrite,
                        save_chips=args.save_chips, progress=not args.quiet and sys.stderr.isatty(), on_record=show)
    except InputError:
        raise
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


def cmd_report(args: argparse.Namespace) -> int:
    from . import runfolder
    from .report import write_report

    holder = runfolder.in_use(args.dir)
    if holder is not None:
        raise InputError(f"{args.dir} is in use by another mortal run (process {holder}); "
                         "report it once that run has ended")

    write_report(args.dir, quiet=args.quiet)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    tree = assignments(args)
    return run_demo(args.out, chips=args.chips, workers=args.workers, layers=args.layers,
                    epochs=args.epochs, seed=args.seed, quiet=args.quiet, train=tree.get("train"),
                    distill_settings=tree.get("distill"))


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
