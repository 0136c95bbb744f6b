"""The record files of a fleet run folder: ``config.resolved.json``, ``records.jsonl``, and what
reads them (:func:`read_records`, :func:`load_run`, :func:`summarize`).

A record is one chip's result, one JSON line: :func:`record_problem` says what a complete one
holds.  A line that is not a complete record (a torn last line of a killed run, bytes that are
not UTF-8, a record missing a key the reports read) is left out by the readers and named to
the caller (``skipped``): ``mortal report`` says so on one warning line and in ``summary.json``;
a resumed fleet moves such lines to :data:`REJECTED_FILE` and runs again the chips they leave
without a record.  Records of chips that are not the config's are left out too, and a resumed
fleet moves them to :data:`REJECTED_FILE` as well.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from .config import ConfigError, ExperimentConfig, config_from_dict
from .errors import InputError

__all__ = ["RECORDS_FILE", "CONFIG_FILE", "REJECTED_FILE", "record_problem", "scan_records", "read_records",
           "load_run", "outside_config", "same_run_config", "pareto_front", "summarize"]

RECORDS_FILE = "records.jsonl"
CONFIG_FILE = "config.resolved.json"
#: Where a resumed run moves the lines of ``records.jsonl`` that are not complete records.
REJECTED_FILE = "records.rejected.jsonl"


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _count(x: Any, least: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= least


def _errors(v: Any) -> bool:
    # goodness is None for a mode without that readout (unsupervised)
    return isinstance(v, dict) and _number(v.get("softmax")) and (_number(v.get("goodness")) or
                                                                  ("goodness" in v and v["goodness"] is None))


#: What the reports read of an ``ok`` record's ``result``: the check and what the value should be.
_RESULT_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "test_error": (_errors, "softmax and goodness error rates (goodness may be null)"),
    "train_energy_j": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and _number(x) for k, x in v.items()),
                       "energies (J) by category"),
    "train_energy_total_j": (_number, "a number"),
    "inference_energy_per_image_j": (_errors, "softmax and goodness energies (goodness may be null)"),
    "pulses": (_count, "a count"),
    "stuck_fraction": (_number, "a number"),
    "n_train": (lambda v: _count(v, 1), "a positive count"),
    "layer_sizes": (lambda v: isinstance(v, list) and len(v) >= 2 and all(_count(n, 1) for n in v),
                    "a list of layer sizes"),
}


def record_problem(rec: Any) -> Optional[str]:
    """Why ``rec`` is not a complete chip record (None if it is one).

    A record is a JSON object with ``key`` (``pNNNN-cNNNNN``), ``point`` and ``chip`` (counts that
    ``key`` spells), a text ``status``; an ``ok`` record also has the ``result`` fields the reports
    read (test errors, energies, pulses, stuck fraction, layer sizes, training examples).
    """
    if not isinstance(rec, dict):
        return "not a JSON object"
    for k in ("key", "point", "chip", "status"):
        if k not in rec:
            return f"missing {k!r}"
    if not _count(rec["point"]) or not _count(rec["chip"]):
        return "'point' and 'chip' must be counts"
    if rec["key"] != f"p{rec['point']:04d}-c{rec['chip']:05d}":
        return f"'key' {rec['key']!r} does not match point {rec['point']} and chip {rec['chip']}"
    if not isinstance(rec["status"], str):
        return "'status' is not text"
    if not isinstance(rec.get("params", {}), dict):
        return "'params' is not an object"
    timing = rec.get("timing", {})
    if not isinstance(timing, dict) or not _number(timing.get("wall_s", 0.0)):
        return "'timing' is not an object with a number wall_s"
    if rec["status"] != "ok":
        return None if isinstance(rec.get("error", ""), str) else "'error' is not text"
    res = rec.get("result")
    if not isinstance(res, dict):
        return "an ok record without its 'result'"
    for k, (check, what) in _RESULT_FIELDS.items():
        if k not in res:
            return f"missing 'result.{k}'"
        if not check(res[k]):
            return f"'result.{k}' is not {what}"
    if "n_classes" in res and not _count(res["n_classes"], 2):
        return "'result.n_classes' is not a count of 2 or more"
    return None


#: What :func:`scan_records` returns: records by key with their line numbers, and the other lines.
Scan = tuple[dict[str, tuple[int, dict[str, Any]]], list[tuple[int, str, bytes]]]


def scan_records(path: Path) -> Scan:
    """The records of ``path`` by key (the latest of each chip, with its line number) and the lines
    that are not records (line number, why, the raw bytes).  A missing file holds nothing."""
    if not path.exists():
        return {}, []
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the records ({exc.strerror or exc})") from None
    good: dict[str, tuple[int, dict[str, Any]]] = {}
    bad: list[tuple[int, str, bytes]] = []
    for n, raw in enumerate(data.splitlines(keepends=True), start=1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            bad.append((n, "not UTF-8 text", raw))
            continue
        except ValueError:
            torn = not raw.endswith(b"\n")
            bad.append((n, "not valid JSON" + (", the torn last line of a killed run" if torn else ""), raw))
            continue
        problem = record_problem(rec)
        if problem is not None:
            bad.append((n, problem, raw))
            continue
        good[rec["key"]] = (n, rec)
    return good, bad


def read_records(path: str | Path, *, skipped: list[tuple[int, str]] | None = None) -> list[dict[str, Any]]:
    """Records of ``records.jsonl``, sorted by key; the latest record of each chip wins.

    A line that is not a complete record (see :func:`record_problem`; e.g. the torn last line
    of a killed run, bytes that are not UTF-8, a record missing a key) is left out; with
    ``skipped`` given, its ``(line number, why)`` is appended to that list.  InputError if the
    file exists but cannot be read.
    """
    good, bad = scan_records(Path(path))
    if skipped is not None:
        skipped.extend((n, why) for n, why, _ in bad)
    return [rec for _, rec in sorted(good.values(), key=lambda nr: nr[1]["key"])]


def outside_config(config: ExperimentConfig, rec: dict[str, Any]) -> Optional[str]:
    """Why the complete record ``rec`` is not one of ``config``'s chips (None if it is one)."""
    n_points = math.prod(len(v) for v in config.sweep.values())
    if rec["point"] >= n_points or rec["chip"] >= config.chips:
        return f"chip {rec['key']} is not one of the config's ({n_points} points x {config.chips} chips)"
    return None


def same_run_config(saved: Any, config: ExperimentConfig) -> bool:
    """Whether ``saved`` (a run's ``config.resolved.json``, parsed) is ``config``'s resolved
    config, ``workers`` aside.  A run written before some setting existed has no entry for it:
    it is read back (that setting at its default, every saved value kept) and compared again,
    so such a run still resumes under the same config."""
    def plain(data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in json.loads(json.dumps(data)).items() if k != "workers"}

    now = plain(config.resolved())
    if not isinstance(saved, dict):
        return False
    if plain(saved) == now:
        return True
    try:
        again = config_from_dict({k: v for k, v in saved.items() if k not in ("points", "workers")})
    except ConfigError:
        return False
    return plain(again.resolved()) == now


def load_run(out_dir: str | Path, *, skipped: list[tuple[int, str]] | None = None
             ) -> tuple[ExperimentConfig, list[dict[str, Any]]]:
    """The config and records of a finished (or partial) fleet run in ``out_dir``.

    InputError (one line, naming the file) when ``config.resolved.json`` is missing, unreadable,
    not UTF-8, not JSON or not a valid config.  Lines of ``records.jsonl`` that are not complete
    records, or whose chip is not one of the config's, are left out; with ``skipped`` given,
    their ``(line number, why)`` are appended to it.
    """
    out = Path(out_dir)
    cfg_path = out / CONFIG_FILE
    if not cfg_path.is_file():
        raise InputError(f"{out} is not a fleet run folder (no {CONFIG_FILE})")
    try:
        text = cfg_path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"{cfg_path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"{cfg_path}: not UTF-8 text; the file is damaged") from None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{cfg_path}: not valid JSON ({exc}); the file is damaged") from None
    if not isinstance(raw, dict):
        raise InputError(f"{cfg_path}: expected a JSON object (the resolved config), found {type(raw).__name__}")
    raw.pop("points", None)
    try:
        config = config_from_dict(raw, str(cfg_path))
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    good, bad = scan_records(out / RECORDS_FILE)
    records = []
    for n, rec in sorted(good.values(), key=lambda nr: nr[1]["key"]):
        why = outside_config(config, rec)
        if why is not None:
            bad.append((n, why, b""))
        else:
            records.append(rec)
    if skipped is not None:
        skipped.extend(sorted((n, why) for n, why, _ in bad))
    return config, records


# -- sweeps: summary and Pareto front -----------------------------------------------------------------

def pareto_front(points: Iterable[tuple[float, float]]) -> list[bool]:
    """For (cost, error) pairs, whether each is on the front (no other is at least as good in
    both and better in one)."""
    pts = list(points)
    flags = []
    for i, (c, e) in enumerate(pts):
        dominated = any((c2 <= c and e2 <= e) and (c2 < c or e2 < e) for j, (c2, e2) in enumerate(pts) if j != i)
        flags.append(not dominated)
    return flags


def summarize(config: ExperimentConfig, records: list[dict[str, Any]], method: str = "softmax") -> list[dict[str, Any]]:
    """Per sweep point: chips ok/failed, mean and spread of the test error, mean energies, and
    whether the point is on the energy/error Pareto front (per training run and per inference).

    InputError if a record is not a complete record (:func:`record_problem`)."""
    for i, r in enumerate(records):
        problem = record_problem(r)
        if problem is not None:
            key = r.get("key") if isinstance(r, dict) else None
            raise InputError(f"record {i + 1}{f' ({key})' if isinstance(key, str) else ''}: {problem}")
    rows = []
    for p in config.points():
        done = [r["result"] for r in records if r["point"] == p.index and r.get("status") == "ok"]
        ok = [r for r in done if r["test_error"][method] is not None]  # a mode may lack the readout
        n_failed = sum(1 for r in records if r["point"] == p.index and r.get("status") != "ok")
        row: dict[str, Any] = {"point": p.index, "params": p.params, "chips_ok": len(done), "chips_failed": n_failed}
        if ok:
            err = np.array([r["test_error"][method] for r in ok])
            row.update({
                "error_mean": float(err.mean()), "error_std": float(err.std(ddof=1)) if len(err) > 1 else 0.0,
                "error_min": float(err.min()), "error_max": float(err.max()),
                "goodness_error_mean": (float(np.mean(good)) if (good := [r["test_error"]["goodness"] for r in ok
                                                                         if r["test_error"]["goodness"] is not None])
                                        else None),
                "train_energy_j": float(np.mean([r["train_energy_total_j"] for r in ok])),
                "inference_energy_j": float(np.mean([r["inference_energy_per_image_j"][method] for r in ok])),
                "pulses": float(np.mean([r["pulses"] for r in ok])),
            })
        rows.append(row)
    have = [r for r in rows if "error_mean" in r]
    for key, flag in (("train_energy_j", "pareto_train"), ("inference_energy_j", "pareto_inference")):
        front = pareto_front((r[key], r["error_mean"]) for r in have)
        for r, f in zip(have, front):
            r[flag] = f
    return rows
