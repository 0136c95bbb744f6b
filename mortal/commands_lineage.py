"""The ``mortal lifetime`` and ``mortal distill`` commands: handing knowledge on between chips."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from .cli_support import EXIT_FAIL, EXIT_OK, assignments, dataset_from_args, flatten, usage_error, validated
from .errors import InputError
from .options import format_validation_error, merge

__all__ = ["cmd_lifetime", "cmd_distill"]


def cmd_lifetime(args: argparse.Namespace) -> int:
    from .lifetime import LifetimeConfig, format_duration, run_lifetime, write_events

    tree = assignments(args)
    flags = {"preset": args.preset, "layers": args.layers, "generations": args.generations, "seed": args.seed,
             "check_every": args.check_every, "max_age": args.max_age}
    tree = merge(tree, {k: v for k, v in flags.items() if v is not None})
    if args.epochs is not None:
        tree = merge(tree, {"train": {"epochs": args.epochs}})
    cfg = validated(LifetimeConfig, tree, "")
    data = dataset_from_args(args)
    out = Path(args.out) if args.out else None
    sinks: list = []

    def show(ev: dict) -> None:
        if out is not None and not sinks:  # written once the run has accepted every input
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps({"lifetime": cfg.model_dump(mode="json"),
                                                         "data": data.source, "train_size": data.n_train}, indent=2))
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
    except InputError:
        raise
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
        print(f"{g:>3}  {format_duration(born):>9}  {100 * start['test_error']['softmax']:>13.2f}%  "
              f"{100 * last:>11.2f}%  {lived:>9}  {end['event'] if end else '-'}")
    print(f"wall time {wall:.1f} s")


def cmd_distill(args: argparse.Namespace) -> int:
    import devices
    from .distill import DistillConfig, distill
    from .ff import CHIP_FILE, FFConfig, FFLearner, latest_checkpoint, load_learner
    from .lifetime import weight_copy

    tree = assignments(args)
    teacher_dir = Path(args.teacher)
    ckdir = teacher_dir / "checkpoints"
    try:
        meta = json.loads((teacher_dir / "config.json").read_text())
        recorded = meta["data"]
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
    if args.data is None and not args.mini:
        args.data = recorded.get("source", "mnist")
    data = dataset_from_args(args).subset(int(recorded.get("train_size", 0)) or None)
    n_t = data.n_train if args.transfer_size is None else args.transfer_size
    if not 1 <= n_t <= data.n_train:
        return usage_error(f"--transfer-size must be between 1 and {data.n_train}, got {n_t}")
    sizes = teacher.info.layer_sizes
    student = devices.make_chip(teacher.spec, sizes, args.seed)
    s_learner = FFLearner(s_cfg)
    out = Path(args.out) if args.out else None
    opened: list = []

    def log(record: dict) -> None:
        """The student's epoch records, written once the transfer has accepted every input."""
        if out is None:
            return
        if not opened:
            out.mkdir(parents=True, exist_ok=True)
            (out / "epochs.jsonl").write_text("")
            opened.append(True)
        with open(out / "epochs.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    res = distill(teacher, student, t_learner, s_learner, data.train_inputs[:n_t], d_cfg, log=log,
                  progress=not args.quiet and sys.stderr.isatty())
    xt, yt = data.test_inputs, data.test_labels
    rows = [("teacher", t_learner.evaluate(teacher, xt, yt).errors, None),
            ("student, distilled", s_learner.evaluate(student, xt, yt).errors, res.total_energy_j)]
    if args.baselines:
        copy_chip = devices.make_chip(teacher.spec, sizes, args.seed)
        c_learner = weight_copy(teacher, copy_chip, t_learner)
        rows.append(("weight copy (immortal)", c_learner.evaluate(copy_chip, xt, yt).errors,
                     copy_chip.ledger.total_energy_j))
        scratch = devices.make_chip(teacher.spec, sizes, args.seed)
        sc = FFLearner(s_cfg).fit(scratch, data.train_inputs, data.train_labels, n_classes=data.n_classes,
                                  progress=False)
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
            print(f"{what:<24} {100 * err['goodness']:>8.2f}% {100 * err['softmax']:>8.2f}% {e:>12}")
        print(f"teacher reads {sum(res.teacher_energy_j.values()):.4g} J, agreement {100 * res.agreement:.1f} %")
    return EXIT_OK
