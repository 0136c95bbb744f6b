"""The ``mortal lifetime`` and ``mortal distill`` commands: handing knowledge on between chips."""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from pydantic import ValidationError

from .cli_support import (EXIT_FAIL, EXIT_OK, assignments, dataset_from_args, flatten, usage_error,
                          validated)
from .errors import InputError
from .options import format_validation_error, merge

__all__ = ["cmd_lifetime", "cmd_distill"]


_HINT = "choose another folder or give --overwrite to replace it"


def _protect(args: argparse.Namespace) -> tuple[Path, ...]:
    """What an overwritten ``--out`` must not hold: ``--data`` when it names a file or folder, and
    the teacher folder (distill)."""
    paths = [Path(args.data)] if getattr(args, "data", None) and Path(args.data).exists() else []
    if getattr(args, "teacher", None):
        paths.append(Path(args.teacher))
    return tuple(paths)


def _folder(args: argparse.Namespace, kind: str) -> Path | None:
    """``--out`` checked for a new run of ``kind`` (nothing read or written yet); None without it."""
    from . import runfolder

    if args.out is None and args.overwrite:
        raise InputError("--overwrite needs --out (the run folder)")
    return runfolder.check_out(args.out, kind, overwrite=args.overwrite, hint=_HINT, protect=_protect(args))


def _claim(stack: ExitStack, out: Path | None, args: argparse.Namespace, kind: str) -> None:
    """Claim ``out`` for the rest of the command, once its input is checked: locked, checked
    again, marked (and left as it was if the run then refuses its input before writing)."""
    from . import runfolder

    if out is not None:
        stack.enter_context(runfolder.claim(out, kind, overwrite=args.overwrite, resume=False, hint=_HINT,
                                            protect=_protect(args)))


def cmd_lifetime(args: argparse.Namespace) -> int:
    from .lifetime import LifetimeConfig, format_duration, run_lifetime, write_events

    tree = assignments(args)
    out = _folder(args, "lifetime")
    flags = {"preset": args.preset, "layers": args.layers, "generations": args.generations, "seed": args.seed,
             "check_every": args.check_every, "max_age": args.max_age}
    tree = merge(tree, {k: v for k, v in flags.items() if v is not None})
    if args.epochs is not None:
        tree = merge(tree, {"train": {"epochs": args.epochs}})
    cfg = validated(LifetimeConfig, tree, "")
    data = dataset_from_args(args)
    sinks: list = []
    seen: list = []  # the events so far

    with ExitStack() as stack:
        _claim(stack, out, args, "lifetime")

        def show(ev: dict) -> None:
            seen.append(ev["event"])
            if out is not None and not sinks:  # written once the run has accepted every input
                (out / "config.json").write_text(json.dumps({"lifetime": cfg.model_dump(mode="json"),
                                                             "data": data.source, "train_size": data.n_train},
                                                            indent=2))
                sinks.append(write_events(out / "events.jsonl"))
            for sink in sinks:
                sink(ev)
            if args.quiet:
                return
            err = " ".join(f"{k} {100 * v:.2f}%" for k, v in ev.get("test_error", {}).items())
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
            events = run_lifetime(cfg, data, emit=show, progress=not args.quiet and sys.stderr.isatty())
        except InputError as exc:
            if not seen:  # refused before the run began (and wrote anything): bad input (exit 2)
                raise
            print(f"mortal: lifetime run failed: InputError: {exc}", file=sys.stderr)
            return EXIT_FAIL
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
    for g in sorted({e["generation"] for e in events}):
        evs = [e for e in events if e["generation"] == g]
        start = next(e for e in evs if e["event"] in ("trained", "distilled"))
        checks = [e for e in evs if e["event"] == "check"]
        end = next((e for e in evs if e["event"] in ("dying", "retired")), None)
        last = checks[-1]["test_error"]["softmax"] if checks else float("nan")
        born = start["time_s"] - start["age_s"]
        lived = format_duration(end["time_s"] - born) if end else "-"
        fate = (end["event"] + (" (dead)" if end.get("dead") else "")) if end else "-"
        print(f"{g:>3}  {format_duration(born):>9}  {100 * start['test_error']['softmax']:>13.2f}%  "
              f"{100 * last:>11.2f}%  {lived:>9}  {fate}")
    print(f"wall time {wall:.1f} s")


def _overlap(a: Path, b: Path) -> bool:
    ra, rb = a.resolve(), b.resolve()
    return ra == rb or ra in rb.parents or rb in ra.parents


def _distill_data(args: argparse.Namespace, origin: str):
    """The data named by ``args``; a data error says where the data came from (``origin``)."""
    try:
        return dataset_from_args(args)
    except (FileNotFoundError, ValueError) as exc:  # InputError is a ValueError
        raise InputError(f"{origin}: {exc}") from None


def cmd_distill(args: argparse.Namespace) -> int:
    import devices
    from . import runfolder
    from .distill import DistillConfig
    from .ff import CHIP_FILE, FFConfig, latest_checkpoint, load_learner

    tree = assignments(args)
    teacher_dir = Path(args.teacher)
    if args.out is not None and args.out.strip() and _overlap(Path(args.out), teacher_dir):
        out = Path(args.out)
        raise InputError(f"--out {out} and the teacher folder {teacher_dir} overlap; the teacher is only read: "
                         "choose another --out")
    out = _folder(args, "distill")
    # Data given on the command line is loaded first: an error in it is the data's, whatever the teacher.
    data = _distill_data(args, f"--data {args.data}" if args.data else "--mini") \
        if args.data is not None or args.mini else None
    holder = runfolder.in_use(teacher_dir)
    if holder is not None:
        raise InputError(f"the teacher folder {teacher_dir} is in use by another mortal run (process {holder}); "
                         "wait for it to end")
    ckdir = teacher_dir / "checkpoints"
    try:
        meta = json.loads((teacher_dir / "config.json").read_text())
        recorded = meta["data"]
        if not isinstance(recorded, dict):
            raise TypeError(f"its data record is {type(recorded).__name__}, not a table")
    except (OSError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        return usage_error(f"{teacher_dir} is not a `mortal train --out` folder ({type(exc).__name__}: {exc})")
    teacher = devices.load_chip(latest_checkpoint(ckdir) / CHIP_FILE)
    t_learner = load_learner(ckdir, teacher)
    if t_learner.epoch < t_learner.config.epochs:
        return usage_error(f"the teacher in {teacher_dir} is unfinished ({t_learner.epoch} of {t_learner.config.epochs} "
                           "epochs); finish it with `mortal train --resume --out` first")
    d_tree = tree.get("distill", {})
    if args.epochs is not None:
        d_tree = merge(d_tree, {"student_epochs": args.epochs})
    d_cfg = validated(DistillConfig, d_tree, "distill")
    s_cfg = d_cfg.student_config(t_learner.config, args.seed)
    if tree.get("train"):
        try:
            s_cfg = s_cfg.changed(**flatten(tree["train"]))
        except ValidationError as exc:
            raise InputError(format_validation_error(exc, "train", model=FFConfig)) from None
    origin = f"--data {args.data}" if args.data else "--mini"
    if data is None:
        args.data = recorded.get("source", "mnist")
        origin = f"the teacher's data {args.data} (recorded in {teacher_dir / 'config.json'})"
        data = _distill_data(args, origin)
    n_rec = int(recorded.get("train_size", 0)) or None
    if n_rec is not None and n_rec > data.n_train:
        raise InputError(f"{origin}: {data.n_train} training examples, fewer than the {n_rec} the teacher "
                         "was trained on")
    data = data.subset(n_rec)
    n_t = data.n_train if args.transfer_size is None else args.transfer_size
    if not 1 <= n_t <= data.n_train:
        return usage_error(f"--transfer-size must be between 1 and {data.n_train}, got {n_t}")
    with ExitStack() as stack:
        _claim(stack, out, args, "distill")
        return _distill(args, stack, out, teacher_dir, teacher, t_learner, d_cfg, s_cfg, data, n_t)


def _distill(args: argparse.Namespace, stack: ExitStack, out: Path | None, teacher_dir: Path, teacher, t_learner,
             d_cfg, s_cfg, data, n_t: int) -> int:
    """The transfer set up by ``cmd_distill``, into ``out`` (claimed) if given."""
    import devices
    from .distill import distill
    from .ff import FFLearner
    from .lifetime import weight_copy

    from .config import chip_top_down

    sizes = teacher.info.layer_sizes
    s_down = chip_top_down(teacher.spec, s_cfg, data.n_classes, sizes)  # a recurrent student's layout
    student = devices.make_chip(teacher.spec, sizes, args.seed, top_down=s_down)
    s_learner = FFLearner(s_cfg)
    opened: list = []
    logged: list = []  # the student's epochs so far

    def log(record: dict) -> None:
        """The student's epoch records, written once the transfer has accepted every input."""
        logged.append(True)
        if out is None:
            return
        if not opened:
            (out / "epochs.jsonl").write_text("")
            opened.append(True)
        with open(out / "epochs.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    try:
        res = distill(teacher, student, t_learner, s_learner, data.train_inputs[:n_t], d_cfg, log=log,
                      progress=not args.quiet and sys.stderr.isatty())
    except InputError as exc:
        if not (opened or logged):  # refused before the transfer began (and wrote anything): exit 2
            raise
        print(f"mortal: distillation failed: InputError: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except Exception as exc:  # the transfer itself failed (exit 1)
        print(f"mortal: distillation failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    xt, yt = data.test_inputs, data.test_labels
    rows = [("teacher", t_learner.evaluate(teacher, xt, yt).errors, None),
            ("student, distilled", s_learner.evaluate(student, xt, yt).errors, res.total_energy_j)]
    if args.baselines:
        copy_chip = devices.make_chip(teacher.spec, sizes, args.seed, top_down=teacher.info.top_down)
        c_learner = weight_copy(teacher, copy_chip, t_learner)
        rows.append(("weight copy (immortal)", c_learner.evaluate(copy_chip, xt, yt).errors,
                     copy_chip.ledger.total_energy_j))
        scratch = devices.make_chip(teacher.spec, sizes, args.seed, top_down=s_down)
        sc = FFLearner(s_cfg).fit(scratch, data.train_inputs, data.train_labels, n_classes=data.n_classes,
                                  progress=False, example_shape=t_learner.state.example_shape)
        rows.append(("student from labels", sc.evaluate(scratch, xt, yt).errors, scratch.ledger.total_energy_j))
    summary = {"teacher": str(teacher_dir), "student_seed": args.seed, "epochs": s_cfg.epochs,
               "distill": d_cfg.model_dump(), "train": s_cfg.model_dump(mode="json"), "transfer_images": int(n_t),
               **res.summary(), "rows": [{"what": w, "test_error": e, "energy_j": j} for w, e, j in rows]}
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if not args.quiet:
        print(f"{'':<24} {'goodness':>9} {'softmax':>9} {'energy':>12}")
        for what, err, joules in rows:
            e = "" if joules is None else f"{joules:.4g} J"
            good = f"{100 * err['goodness']:>8.2f}%" if "goodness" in err else f"{'-':>9}"  # a mode may lack it
            print(f"{what:<24} {good} {100 * err['softmax']:>8.2f}% {e:>12}")
        print(f"teacher reads {sum(res.teacher_energy_j.values()):.4g} J, agreement {100 * res.agreement:.1f} %")
    return EXIT_OK
