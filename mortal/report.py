"""Tables and figures from a fleet or sweep run folder (``mortal report DIR``).

A folder whose ``config.resolved.json`` is missing or damaged is refused (InputError, one line).
Lines of ``records.jsonl`` that are not complete records (``mortal.records.record_problem``: a
torn last line of a killed run, bytes that are not UTF-8, a record missing a key) are left out
of the tables, figures and counts, named on one ``mortal: warning:`` line on stderr and listed
in ``summary.json`` under ``records_skipped``; ``mortal fleet --resume`` sets such lines aside in
``records.rejected.jsonl`` and runs again the chips left without a record.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import devices

from .config import ExperimentConfig, chip_top_down
from .errors import InputError
from .ff.modes import mode_recipe
from .records import RECORDS_FILE, load_run, summarize
from .ops import head_width, training_macs

__all__ = ["fleet_table", "sweep_table", "write_report", "digital_reference"]


def _fmt_e(x: float) -> str:
    return f"{x:.3g}"


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def fleet_table(records: list[dict[str, Any]]) -> str:
    """One line per chip: seed, errors, energies, pulses, stuck fraction, wall time (or its error)."""
    head = (f"{'point':>5} {'chip':>5} {'softmax err':>11} {'goodness err':>12} {'train E (J)':>11} "
            f"{'infer E/img (J)':>15} {'pulses':>12} {'stuck':>7} {'wall (s)':>8}")
    lines = [head]
    for r in records:
        if r.get("status") != "ok":
            lines.append(f"{r['point']:>5} {r['chip']:>5}  FAILED: {r.get('error', '?')}")
            continue
        res = r["result"]
        wall = r.get("timing", {}).get("wall_s", float("nan"))
        lines.append(f"{r['point']:>5} {r['chip']:>5} {100 * res['test_error']['softmax']:>10.2f}% "
                     f"{_percent(res['test_error']['goodness']):>12} {_fmt_e(res['train_energy_total_j']):>11} "
                     f"{_fmt_e(res['inference_energy_per_image_j']['softmax']):>15} {res['pulses']:>12,} "
                     f"{100 * res['stuck_fraction']:>6.2f}% {wall:>8.1f}")
    return "\n".join(lines)


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """One line per sweep point: its values, chips, error mean +- std, energies, Pareto marks."""
    names = [", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-" for r in rows]
    w = max([len("params")] + [len(n) for n in names])
    lines = [f"{'point':>5}  {'params':<{w}} {'ok':>3} {'error (mean +- std)':>20} {'train E (J)':>11} "
             f"{'infer E/img (J)':>15}  front"]
    for r, params in zip(rows, names):
        if "error_mean" not in r:
            lines.append(f"{r['point']:>5}  {params:<{w}} {r['chips_ok']:>3}  no finished chips")
            continue
        front = " ".join(m for m, f in (("train", r.get("pareto_train")), ("inference", r.get("pareto_inference"))) if f)
        lines.append(f"{r['point']:>5}  {params:<{w}} {r['chips_ok']:>3} "
                     f"{100 * r['error_mean']:>9.2f}% +- {100 * r['error_std']:>5.2f}% "
                     f"{_fmt_e(r['train_energy_j']):>11} {_fmt_e(r['inference_energy_j']):>15}  {front or '-'}")
    return "\n".join(lines)


def digital_reference(config: ExperimentConfig, records: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """The same training's (and one inference pass's) multiply-accumulates at a GPU's energy per
    MAC: the ``ideal`` preset's ``mac_j`` (NVIDIA H100 SXM at TDP and peak BF16, 1.41 pJ/MAC).

    The layer sizes are those of the chips as built (recorded in each result: the input width
    follows from the data and the label layout); the head reads the layers the point's
    mode names (``recipe.head_layers`` in the supervised mode), the mode's forward passes per batch,
    and the head refit; in the recurrent mode, its steps' top-down inputs and every trained
    step's share of the update.
    """
    mac_j = devices.get_preset("ideal").energy.mac_j
    train, infer = {}, {}
    for p in config.points():
        ok = [r for r in records if r["point"] == p.index and r.get("status") == "ok"]
        if not ok:
            continue
        res = ok[0]["result"]
        sizes = tuple(int(s) for s in res["layer_sizes"])
        n_classes = int(res.get("n_classes", 10))
        mode = mode_recipe(p.train)
        head = head_width(sizes, mode.layer_roles(p.train, len(sizes) - 1)[1])
        down = chip_top_down(p.chip.build_spec(), p.train, n_classes, sizes)  # recurrent: the rows from above
        macs = training_macs(sizes, int(res["n_train"]), p.train.batch_size, p.train.epochs, head, n_classes,
                             p.train.refit.epochs, top_down=down, **mode.reference_work(p.train))
        # a mode other than the supervised one is named: points of several modes differ in passes
        named = "" if mode.name == "supervised" else f", {mode.name}"
        label = f"GPU, {'x'.join(map(str, sizes[1:]))}, {p.train.epochs} ep{named}"
        train[label] = macs * mac_j
        infer[f"GPU, {'x'.join(map(str, sizes[1:]))}"] = sum(sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1)) * mac_j
    return train, infer


def _skipped_warning(path: Path, skipped: list[tuple[int, str]]) -> str:
    shown = "; ".join(f"line {n}: {why}" for n, why in skipped[:5]) + ("; ..." if len(skipped) > 5 else "")
    return (f"mortal: warning: {path}: left out {len(skipped)} line{'s' if len(skipped) > 1 else ''} that "
            f"{'are' if len(skipped) > 1 else 'is'} not a complete record ({shown}); mortal fleet --resume "
            "sets such lines aside in records.rejected.jsonl and runs again the chips left without a record")


def write_report(out_dir: str | Path, quiet: bool = False) -> dict[str, Any]:
    """Write ``summary.json`` and the figures of a run folder; print the tables unless ``quiet``.

    InputError (one line) if the folder holds no readable fleet run or the report cannot be
    written there.  Lines of ``records.jsonl`` that are not complete records are left out, with a
    warning on stderr (even when ``quiet``) and their line numbers in ``summary["records_skipped"]``.
    """
    from .plots import plot_energy_breakdown, plot_energy_error, plot_fleet_errors

    out = Path(out_dir)
    skipped: list[tuple[int, str]] = []
    config, records = load_run(out, skipped=skipped)
    if skipped:
        print(_skipped_warning(out / RECORDS_FILE, skipped), file=sys.stderr)
    rows = summarize(config, records)
    train_ref, infer_ref = digital_reference(config, records)
    figures: list[str] = []
    try:
        if any(r.get("status") == "ok" for r in records):
            figures += plot_fleet_errors(records, out / "fleet_errors")
            figures += plot_energy_breakdown(records, out / "energy_breakdown")
            figures += plot_energy_error(rows, out / "energy_vs_error_training", "train_energy_j", train_ref)
            figures += plot_energy_error(rows, out / "energy_vs_error_inference", "inference_energy_j", infer_ref)
        summary = {"name": config.name, "chips_total": len(config.points()) * config.chips,
                   "chips_recorded": len(records),
                   "chips_failed": sum(1 for r in records if r.get("status") != "ok"),
                   "points": rows, "digital_reference_train_j": train_ref,
                   "digital_reference_inference_j": infer_ref, "figures": [str(f) for f in figures],
                   "records_skipped": [{"line": n, "reason": why} for n, why in skipped]}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    except OSError as exc:
        raise InputError(f"cannot write the report into {out}: {exc.strerror or exc}") from None
    if not quiet:
        print(fleet_table(records))
        print()
        print(sweep_table(rows))
        for label, j in train_ref.items():
            print(f"digital reference ({label}): {j:.3g} J per training run")
        if figures:
            print("figures: " + ", ".join(str(Path(f).name) for f in figures if str(f).endswith(".png")))
    return summary
