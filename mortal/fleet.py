"""Fleets of unique chips: build N instances, train and evaluate each, collect records.

:func:`run_fleet` runs every chip of every sweep point of an
:class:`~mortal.config.ExperimentConfig` on an executor:

* the default is a local process pool (one BLAS thread per worker; :func:`mortal.executors.local_pool`,
  whose workers end with the fleet's process, even when that is killed with ``kill -9``); any
  ``concurrent.futures.Executor`` can be passed instead, e.g. a Dask ``distributed`` client's
  ``client.get_executor(pure=False)`` (see :func:`mortal.executors.dask_executor`);
* chip ``i`` is fabricated from ``SeedSequence(seed, spawn_key=(i,))`` and its
  learner seeded from the same sequence, and every chip runs with one BLAS
  thread, so chip ``i``'s record is the same bit for bit whatever the number of
  chips, the number of workers or the backend (only its ``timing`` differs);
* each record is appended to ``records.jsonl`` in one write as soon as it
  arrives; ``resume=True`` skips the chips already recorded as ``ok``; a worker
  that dies has its chip re-run (up to ``max_retries`` times); a chip that
  raises is recorded as ``failed`` with its error and the fleet goes on.

Before any chip starts (and before anything is written), :func:`run_fleet` checks the output
folder (:func:`mortal.runfolder.check_out`: a folder, or a place one can be made, that is empty
or holds this fleet's run to resume) and loads the data once, refusing data that cannot be
read or is too small for a sweep point's batch, and chips too large for this machine's memory.  While it runs it holds the folder's lock
(:func:`mortal.runfolder.claim`): a second run on the same folder, new or resumed, is refused
with the process id of the first.

The record files and their readers are in :mod:`mortal.records`; a resumed run moves the lines
of ``records.jsonl`` that are not complete records to ``records.rejected.jsonl`` and runs again
the chips they leave without a record.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
import traceback
import zipfile
import zlib
from concurrent.futures import Executor, Future, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

import devices

from .config import DataConfig, ExperimentConfig, SweepPoint, chip_input_width, chip_top_down, image_shape, load_data
from .errors import InputError
from .executors import SCHEDULER_SCHEMES, dask_executor, local_pool, scheduler_address
from .ff import FFLearner, mode_recipe
from .progress import Progress
from .records import (CONFIG_FILE, RECORDS_FILE, REJECTED_FILE, load_run, outside_config, pareto_front, read_records,
                      record_problem, same_run_config, scan_records, summarize)
from .runfolder import check_out, claim

# The record files' readers and the executors live in mortal.records and mortal.executors; they
# are named here too, where callers have always found them.
__all__ = ["run_fleet", "FleetResult", "ChipTask", "run_chip", "chip_seed", "learner_seed", "read_records",
           "record_problem", "load_run", "summarize", "pareto_front", "dask_executor", "scheduler_address",
           "SCHEDULER_SCHEMES", "RECORDS_FILE", "CONFIG_FILE", "REJECTED_FILE"]


def chip_seed(root: int, i: int) -> np.random.SeedSequence:
    """The seed sequence of chip ``i`` of a fleet with root seed ``root``."""
    return np.random.SeedSequence(root, spawn_key=(i,))


def learner_seed(root: int, i: int) -> int:
    """The learner seed of chip ``i`` (drawn from the chip's own sequence)."""
    return int(chip_seed(root, i).generate_state(1, np.uint32)[0])


# -- one chip (runs in a worker) ----------------------------------------------------------------------

@dataclass(frozen=True)
class ChipTask:
    point: SweepPoint
    chip: int
    root_seed: int
    data: DataConfig
    save_dir: Optional[str] = None

    @property
    def key(self) -> str:
        return f"p{self.point.index:04d}-c{self.chip:05d}"


_DATA_CACHE: dict[str, Any] = {}


def _data(cfg: DataConfig):
    """The dataset ``cfg`` names (``mortal.config.load_data``), loaded once per process."""
    key = cfg.model_dump_json()
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_data(cfg)
    return _DATA_CACHE[key]


def run_chip(task: ChipTask) -> dict[str, Any]:
    """Build, train and evaluate one chip; never raises for the chip's own errors."""
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    rec: dict[str, Any] = {"key": task.key, "point": task.point.index, "params": task.point.params,
                           "chip": task.chip}
    seq = chip_seed(task.root_seed, task.chip)
    rec["seed"] = {"entropy": seq.entropy, "spawn_key": list(seq.spawn_key)}
    rec["learner_seed"] = learner_seed(task.root_seed, task.chip)
    with threadpool_limits(1), devices.limit_threads(1):  # the workers already share the CPUs
        try:
            data = _data(task.data)
            point = task.point
            spec = point.chip.build_spec()
            sizes = point.chip.sizes(chip_input_width(spec, point.train, data))
            chip = devices.make_chip(spec, sizes, seq, top_down=chip_top_down(spec, point.train, data.n_classes, sizes))
            ckdir = Path(task.save_dir) / task.key if task.save_dir is not None else None
            learner = FFLearner(point.train.changed(seed=rec["learner_seed"]))
            # checkpoint_dir alone: one checkpoint, at the end of training
            learner.fit(chip, data.train_inputs, data.train_labels, n_classes=data.n_classes, eval_every=0,
                        checkpoint_dir=ckdir, progress=False, example_shape=image_shape(data))
            train_energy = dict(chip.ledger.energy_j)
            train_time = float(chip.ledger.total_time_s)
            pulses = int(chip.ledger.counts.get("pulses", 0))
            errors, infer = dict.fromkeys(("softmax", "goodness")), dict.fromkeys(("softmax", "goodness"))
            for method in mode_recipe(learner.config).methods:
                ev = learner.evaluate(chip, data.test_inputs, data.test_labels, method)
                errors[method] = ev.errors[method]
                infer[method] = ev.total_energy_j / ev.n
            rec["status"] = "ok"
            rec["result"] = {
                "test_error": errors,
                "train_energy_j": train_energy,
                "train_energy_total_j": float(sum(train_energy.values())),
                "inference_energy_per_image_j": infer,
                "chip_time_s": train_time,
                "pulses": pulses,
                "stuck_fraction": devices.inspect(chip).stuck_fraction,
                "history": [{k: r[k] for k in ("epoch", "loss_pos", "loss_neg", "train_error_online")}
                            for r in learner.history],
                "n_train": int(data.n_train), "n_test": int(data.n_test),
                "layer_sizes": [int(n) for n in sizes], "n_classes": int(data.n_classes),
            }
        except Exception as exc:  # the chip failed; the fleet goes on
            rec["status"] = "failed"
            rec["error"] = f"{type(exc).__name__}: {exc}"
            rec["traceback"] = traceback.format_exc(limit=6)
    rec["timing"] = {"wall_s": time.perf_counter() - t0, "worker": f"{socket.gethostname()}:{os.getpid()}"}
    return rec


def _append(path: Path, rec: dict[str, Any]) -> None:
    """Append one record to ``records.jsonl`` in one write, on disk before the next."""
    line = json.dumps(rec) + "\n"
    with open(path, "a") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


# -- checks before anything runs ----------------------------------------------------------------------

def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in params.items())


def _check_data(config: ExperimentConfig) -> Optional[str]:
    """Load the config's data once in this process (kept for the run: forked workers inherit it)
    and check that every sweep point can train on it; InputError if not.  Returns the cache key
    when this call loaded the data (the caller drops it after the run)."""
    key = config.data.model_dump_json()
    added = key not in _DATA_CACHE
    try:
        data = _data(config.data)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError(f"data: {exc}") from None
    try:
        for p in config.points():
            if p.train.batch_size > data.n_train:
                where = f"sweep point [{_params_text(p.params)}]: " if p.params else ""
                raise InputError(f"{where}train.batch_size = {p.train.batch_size} is more than the {data.n_train} "
                                 "training examples of the data (see data.train_size); no chip could train")
        check_chips(config, data)
    except InputError:
        if added:
            _DATA_CACHE.pop(key, None)
        raise
    return key if added else None


def check_chips(config: ExperimentConfig, data: Any = None) -> None:
    """InputError if a chip of some sweep point could not hold its device state in this machine's
    memory (``devices.check_memory``).  ``data`` (a ``Dataset``) gives the chips' input width;
    without it only the hidden layers are checked (as if the chips had one input)."""
    seen: set[str] = set()
    for p in config.points():
        try:
            spec = p.chip.build_spec()
            width = chip_input_width(spec, p.train, data) if data is not None else 1
            sizes = p.chip.sizes(width)
            down = chip_top_down(spec, p.train, data.n_classes, sizes) if data is not None else None  # recurrent
            once = json.dumps([spec.programming.mode, list(sizes), down])
            if once in seen:
                continue
            seen.add(once)
            devices.check_memory(spec, sizes, down)
        except ValueError as exc:
            where = f"sweep point [{_params_text(p.params)}]: " if p.params else ""
            raise InputError(f"{where}chip.layers: {exc}") from None


def _open_run(config: ExperimentConfig, out: Path, resume: bool) -> dict[str, dict[str, Any]]:
    """With ``out`` claimed: write the resolved config and an empty record file (a new run), or
    check and tidy a run to resume; returns the chips already recorded ``ok``."""
    rec_path, cfg_path = out / RECORDS_FILE, out / CONFIG_FILE
    if not resume:
        cfg_path.write_text(json.dumps(config.resolved(), indent=2))
        rec_path.write_text("")
        return {}
    if not cfg_path.is_file():
        raise InputError(f"nothing to resume in {out} (no {CONFIG_FILE})")
    try:
        before = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {cfg_path} to resume: {exc}") from None
    if not same_run_config(before, config):
        raise InputError(f"{out} holds a run of another config; resume needs the same config")
    good, bad = scan_records(rec_path)
    kept = []
    lines: Optional[list[bytes]] = None
    for n, rec in sorted(good.values(), key=lambda nr: nr[1]["key"]):
        why = outside_config(config, rec)
        if why is None:
            kept.append(rec)
            continue
        if lines is None:
            lines = rec_path.read_bytes().splitlines(keepends=True)
        bad.append((n, why, lines[n - 1]))
    bad.sort(key=lambda item: item[0])
    if bad:  # kept aside, not lost: a killed run's torn last line, a damaged or edited record
        with open(out / REJECTED_FILE, "ab") as fh:
            fh.write(b"".join(raw if raw.endswith(b"\n") else raw + b"\n" for _, _, raw in bad))
            fh.flush()
            os.fsync(fh.fileno())
    # Rewrite with the records only, atomically.
    tmp = rec_path.with_name(rec_path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, rec_path)
    # The recorded config equals this one (checked above): it is left as it is, so no kill can
    # catch it half written.
    return {r["key"]: r for r in kept if r.get("status") == "ok"}


# -- the fleet ----------------------------------------------------------------------------------------

@dataclass
class FleetResult:
    """Records of a fleet run (all of them, including those from earlier resumed runs)."""

    config: ExperimentConfig
    records: list[dict[str, Any]]
    out_dir: Optional[Path]
    ran: int
    wall_s: float

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") == "ok"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") != "ok"]


def run_fleet(config: ExperimentConfig, out_dir: str | Path | None = None, executor: Executor | None = None, *,
              workers: int | None = None, resume: bool = False, save_chips: bool = False,
              max_retries: int = 2, progress: bool = False,
              on_record: Callable[[dict[str, Any]], None] | None = None,
              task_fn: Callable[[ChipTask], dict[str, Any]] = run_chip,
              overwrite: bool = False, check_data: bool = True) -> FleetResult:
    """Run every chip of every sweep point; see the module docstring.

    Parameters
    ----------
    out_dir : path, optional
        Where ``config.resolved.json`` and ``records.jsonl`` go (and chips with
        ``save_chips``).  Without it, records are only returned.  It must be a folder (or a
        place one can be made) that is empty, or that holds this fleet's run with ``resume``,
        or anything with ``overwrite``; the run holds its lock until it returns, and a second
        run on it is refused (InputError naming the process that holds it).
    executor : Executor, optional
        Runs the chips; default: a local process pool with ``workers`` (default
        ``config.workers`` or the CPU count) processes, which end with this process.
    resume : bool
        Continue a run in ``out_dir``: chips recorded ``ok`` are skipped.  The
        config must equal the one recorded there.  Lines of ``records.jsonl`` that are not
        complete records, or records of chips that are not the config's, are moved to
        ``records.rejected.jsonl``; the chips left without a record run again.
    save_chips : bool
        Save each trained chip and its learner as a checkpoint under ``out_dir/chips/KEY``.
    task_fn : callable, optional
        What each worker runs for one chip: ``task_fn(task) -> record``; default
        :func:`run_chip`.  It must be picklable by the executor (a module-level function).
        Tests pass a wrapper of :func:`run_chip` that kills its worker, to exercise re-runs.
    overwrite : bool
        Replace whatever ``out_dir`` holds (once its lock is held).
    check_data : bool
        Load the data in this process before any chip starts, and refuse (InputError) data that
        cannot be read or that holds fewer training examples than a sweep point's batch.  Turn
        off only for data that the executor's workers can reach and this process cannot.

    Every InputError is raised before anything is written and before any chip starts.
    """
    if not isinstance(config, ExperimentConfig):
        raise InputError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise InputError(f"max_retries must be a non-negative integer, got {max_retries!r}")
    if not callable(task_fn):
        raise InputError(f"task_fn must be callable, got {type(task_fn).__name__}")
    if resume and overwrite:
        raise InputError("resume and overwrite exclude each other: resume continues the run in out_dir, "
                         "overwrite replaces it")
    if out_dir is None:
        if save_chips:
            raise InputError("save_chips needs an out_dir")
        if resume:
            raise InputError("resume needs an out_dir")
    # Nothing is written until every check has passed: the folder (a second run on it is refused
    # with the first's process id), then the data.
    out = check_out(out_dir, "fleet", resume=resume, overwrite=overwrite, legacy=(CONFIG_FILE,))
    if check_data:
        cached = _check_data(config)
    else:
        check_chips(config)
        cached = None
    try:
        run = functools.partial(_run, config, executor, workers=workers, save_chips=save_chips,
                                max_retries=max_retries, progress=progress, on_record=on_record, task_fn=task_fn)
        if out is None:
            return run(None, {})
        # The folder is checked again under its lock: another run may have written into it meanwhile.
        with claim(out, "fleet", overwrite=overwrite, resume=resume, legacy=(CONFIG_FILE,)):
            done = _open_run(config, out, resume)
            return run(out, done)
    finally:
        if cached is not None:
            _DATA_CACHE.pop(cached, None)


def _run(config: ExperimentConfig, executor: Executor | None, out: Optional[Path], done: dict[str, dict[str, Any]],
         *, workers: int | None, save_chips: bool, max_retries: int, progress: bool,
         on_record: Callable[[dict[str, Any]], None] | None,
         task_fn: Callable[[ChipTask], dict[str, Any]]) -> FleetResult:
    """The chips of :func:`run_fleet` (its checks done, ``out`` claimed), ``done`` skipped."""
    rec_path = out / RECORDS_FILE if out is not None else None
    save_dir = str(out / "chips") if save_chips and out is not None else None
    tasks = [ChipTask(point=p, chip=i, root_seed=config.seed, data=config.data, save_dir=save_dir)
             for p in config.points() for i in range(config.chips)]
    todo = [t for t in tasks if t.key not in done]
    records = dict(done)
    n_workers = workers or config.workers or os.cpu_count() or 1
    own = executor is None
    pool: Executor | None = executor
    attempts: dict[str, int] = {}
    previous_broken = False
    bar = Progress(len(tasks), "chips", enabled=progress)
    bar.update(len(done))
    t0 = time.perf_counter()
    pending = list(todo)
    isolate = False  # after two broken rounds in a row: one chip per fresh one-worker pool

    def finish(rec: dict[str, Any]) -> None:
        records[rec["key"]] = rec
        if rec_path is not None:
            _append(rec_path, rec)
        if on_record is not None:
            on_record(rec)
        bar.update(len(records))

    def worker_lost(task: ChipTask, exc: BaseException) -> None:
        """Charge the chip one attempt: queue it again, or record it failed once out of retries."""
        attempts[task.key] = attempts.get(task.key, 0) + 1
        if attempts[task.key] <= max_retries:
            pending.append(task)
            return
        finish({"key": task.key, "point": task.point.index, "params": task.point.params, "chip": task.chip,
                "status": "failed",
                "error": f"worker lost {attempts[task.key]} times: {type(exc).__name__}: {exc}"})

    try:
        while pending:
            if isolate and own:
                # A chip that kills its worker takes the others in the same pool down with it; run
                # each remaining chip alone, so that only the culprit uses up its retries.
                task = pending.pop(0)
                with local_pool(1) as solo:
                    try:
                        finish(solo.submit(task_fn, task).result())
                    except Exception as exc:
                        worker_lost(task, exc)
                continue
            if pool is None:
                pool = local_pool(min(n_workers, len(pending)))
            futures: dict[Future, ChipTask] = {pool.submit(task_fn, t): t for t in pending}
            pending.clear()
            broken = False
            for fut in as_completed(futures):
                task = futures[fut]
                try:
                    rec = fut.result()
                except BrokenProcessPool:
                    # Every unfinished chip of the pool fails with it; which one killed its worker is
                    # unknown, so none is charged an attempt yet.
                    broken = True
                    pending.append(task)
                    continue
                except Exception as exc:  # the worker was lost (e.g. Dask's KilledWorker), not the chip
                    worker_lost(task, exc)
                    continue
                finish(rec)
            if broken:
                if not own:
                    raise RuntimeError("the executor broke while chips were running; the records so far are saved")
                pool.shutdown(wait=True, cancel_futures=True)  # type: ignore[union-attr]
                pool = None
                isolate = isolate or previous_broken
            previous_broken = broken
        bar.close()
    finally:
        if own and pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    ordered = [records[t.key] for t in tasks if t.key in records]
    return FleetResult(config=config, records=ordered, out_dir=out, ran=len(todo),
                       wall_s=time.perf_counter() - t0)
