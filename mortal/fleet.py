"""Fleets of unique chips: build N instances, train and evaluate each, collect records.

:func:`run_fleet` runs every chip of every sweep point of an
:class:`~mortal.config.ExperimentConfig` on an executor:

* the default is a local process pool (one BLAS thread per worker); any ``concurrent.futures.Executor`` can be passed instead, e.g. a Dask
  ``distributed`` client's ``client.get_executor(pure=False)`` (see :func:`dask_executor`);
* chip ``i`` is fabricated from ``SeedSequence(seed, spawn_key=(i,))`` and its
  learner seeded from the same sequence, and every chip runs with one BLAS
  thread, so chip ``i``'s record is the same bit for bit whatever the number of
  chips, the number of workers or the backend (only its ``timing`` differs);
* each record is appended to ``records.jsonl`` in one write as soon as it
  arrives; ``resume=True`` skips the chips already recorded as ``ok``; a worker
  that dies has its chip re-run (up to ``max_retries`` times); a chip that
  raises is recorded as ``failed`` with its error and the fleet goes on.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

import devices

from .config import (ConfigError, DataConfig, ExperimentConfig, SweepPoint, chip_input_width, config_from_dict,
                     load_data)
from .errors import InputError
from .ff import FFLearner
from .progress import Progress

__all__ = ["run_fleet", "FleetResult", "chip_seed", "learner_seed", "read_records", "summarize",
           "pareto_front", "dask_executor", "RECORDS_FILE", "CONFIG_FILE"]

RECORDS_FILE = "records.jsonl"
CONFIG_FILE = "config.resolved.json"


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
    with threadpool_limits(1):
        try:
            data = _data(task.data)
            point = task.point
            spec = point.chip.build_spec()
            sizes = point.chip.sizes(chip_input_width(spec, point.train, data))
            chip = devices.make_chip(spec, sizes, seq)
            ckdir = Path(task.save_dir) / task.key if task.save_dir is not None else None
            learner = FFLearner(point.train.changed(seed=rec["learner_seed"]))
            # checkpoint_dir alone: one checkpoint, at the end of training
            learner.fit(chip, data.train_inputs, data.train_labels, n_classes=data.n_classes, eval_every=0,
                        checkpoint_dir=ckdir, progress=False)
            train_energy = dict(chip.ledger.energy_j)
            train_time = float(chip.ledger.total_time_s)
            pulses = int(chip.ledger.counts.get("pulses", 0))
            errors, infer = {}, {}
            for method in ("softmax", "goodness"):
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


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Records of ``records.jsonl`` (a torn last line from a crash is ignored); the latest
    record of each chip wins."""
    p = Path(path)
    if not p.is_file():
        return []
    out: dict[str, dict[str, Any]] = {}
    for line in p.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "key" in rec:
            out[rec["key"]] = rec
    return sorted(out.values(), key=lambda r: r["key"])


def _append(path: Path, rec: dict[str, Any]) -> None:
    line = json.dumps(rec) + "\n"
    with open(path, "a") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def _local_pool(workers: int) -> ProcessPoolExecutor:
    # The platform's default start method (fork on Linux: no re-import of the caller's
    # script); run_chip limits BLAS to one thread inside the worker, for any executor.
    return ProcessPoolExecutor(max_workers=workers)


def run_fleet(config: ExperimentConfig, out_dir: str | Path | None = None, executor: Executor | None = None, *,
              workers: int | None = None, resume: bool = False, save_chips: bool = False,
              max_retries: int = 2, progress: bool = False,
              on_record: Callable[[dict[str, Any]], None] | None = None,
              task_fn: Callable[[ChipTask], dict[str, Any]] = run_chip) -> FleetResult:
    """Run every chip of every sweep point; see the module docstring.

    Parameters
    ----------
    out_dir : path, optional
        Where ``config.resolved.json`` and ``records.jsonl`` go (and chips with
        ``save_chips``).  Without it, records are only returned.
    executor : Executor, optional
        Runs the chips; default: a local process pool with ``workers`` (default
        ``config.workers`` or the CPU count) processes.
    resume : bool
        Continue a run in ``out_dir``: chips recorded ``ok`` are skipped.  The
        config must equal the one recorded there.
    save_chips : bool
        Save each trained chip and its learner as a checkpoint under ``out_dir/chips/KEY``.
    task_fn : callable, optional
        What each worker runs for one chip: ``task_fn(task) -> record``; default
        :func:`run_chip`.  It must be picklable by the executor (a module-level function).
        Tests pass a wrapper of :func:`run_chip` that kills its worker, to exercise re-runs.
    """
    if not isinstance(config, ExperimentConfig):
        raise InputError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise InputError(f"max_retries must be a non-negative integer, got {max_retries!r}")
    if not callable(task_fn):
        raise InputError(f"task_fn must be callable, got {type(task_fn).__name__}")
    out = Path(out_dir) if out_dir is not None else None
    if save_chips and out is None:
        raise InputError("save_chips needs an out_dir")
    done: dict[str, dict[str, Any]] = {}
    rec_path = None
    if out is not None:
        rec_path = out / RECORDS_FILE
        cfg_path = out / CONFIG_FILE
        if resume:
            if not cfg_path.is_file():
                raise InputError(f"nothing to resume in {out} (no {CONFIG_FILE})")
            try:
                before = json.loads(cfg_path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise InputError(f"cannot read {cfg_path} to resume: {exc}") from None
            now = json.loads(json.dumps(config.resolved()))
            if isinstance(before, dict):
                before.pop("workers", None)
            now.pop("workers", None)
            if before != now:
                raise InputError(f"{out} holds a run of another config; resume needs the same config")
            kept = read_records(rec_path)
            done = {r["key"]: r for r in kept if r.get("status") == "ok"}
            # Rewrite without a torn last line (a killed run's partial write), atomically.
            tmp = rec_path.with_name(rec_path.name + ".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, rec_path)
        elif rec_path.exists() and rec_path.stat().st_size > 0:
            raise InputError(f"{out} already holds fleet records; use resume, or another output folder")
        out.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(json.dumps(config.resolved(), indent=2))
        if not rec_path.exists():
            rec_path.write_text("")
    elif resume:
        raise InputError("resume needs an out_dir")

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

    while pending:
        if isolate and own:
            # A chip that kills its worker takes the others in the same pool down with it; run
            # each remaining chip alone, so that only the culprit uses up its retries.
            task = pending.pop(0)
            with _local_pool(1) as solo:
                try:
                    finish(solo.submit(task_fn, task).result())
                except Exception as exc:
                    worker_lost(task, exc)
            continue
        if pool is None:
            pool = _local_pool(min(n_workers, len(pending)))
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
    if own and pool is not None:
        pool.shutdown(wait=True)
    ordered = [records[t.key] for t in tasks if t.key in records]
    return FleetResult(config=config, records=ordered, out_dir=out, ran=len(todo),
                       wall_s=time.perf_counter() - t0)


def load_run(out_dir: str | Path) -> tuple[ExperimentConfig, list[dict[str, Any]]]:
    """The config and records of a finished (or partial) fleet run in ``out_dir``."""
    out = Path(out_dir)
    cfg_path = out / CONFIG_FILE
    if not cfg_path.is_file():
        raise InputError(f"{out} is not a fleet run folder (no {CONFIG_FILE})")
    raw = json.loads(cfg_path.read_text())
    raw.pop("points", None)
    try:
        config = config_from_dict(raw, str(cfg_path))
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    return config, read_records(out / RECORDS_FILE)


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
    whether the point is on the energy/error Pareto front (per training run and per inference)."""
    rows = []
    for p in config.points():
        ok = [r["result"] for r in records if r["point"] == p.index and r.get("status") == "ok"]
        n_failed = sum(1 for r in records if r["point"] == p.index and r.get("status") != "ok")
        row: dict[str, Any] = {"point": p.index, "params": p.params, "chips_ok": len(ok), "chips_failed": n_failed}
        if ok:
            err = np.array([r["test_error"][method] for r in ok])
            row.update({
                "error_mean": float(err.mean()), "error_std": float(err.std(ddof=1)) if len(err) > 1 else 0.0,
                "error_min": float(err.min()), "error_max": float(err.max()),
                "goodness_error_mean": float(np.mean([r["test_error"]["goodness"] for r in ok])),
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


# -- Dask ---------------------------------------------------------------------------------------------

def dask_executor(scheduler: str | None = None, local_workers: int | None = None, timeout_s: float = 10.0):
    """A ``(executor, closer)`` pair on a Dask ``distributed`` cluster.

    ``scheduler``: the address of a running scheduler (``tcp://host:8786``);
    ``local_workers``: start a ``LocalCluster`` with that many single-threaded worker processes.
    An unreachable scheduler raises ``ConnectionError`` within ``timeout_s``.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("Dask is not installed; install the extra: pip install 'mortal[dask]'") from None
    if (scheduler is None) == (local_workers is None):
        raise InputError("give either a scheduler address or a number of local Dask workers")
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=f"{timeout_s}s")
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot reach the Dask scheduler at {scheduler} within {timeout_s:g} s: "
                                  f"{exc}") from None

        def close() -> None:
            client.close()
    else:
        if isinstance(local_workers, bool) or not isinstance(local_workers, int) or local_workers < 1:
            raise InputError(f"local Dask workers must be a positive integer, got {local_workers!r}")
        # The dashboard on a free local port: the default 8787 may be taken (by another cluster),
        # which only moves it, with a warning.
        cluster = LocalCluster(n_workers=local_workers, threads_per_worker=1, processes=True,
                               dashboard_address="127.0.0.1:0", silence_logs=40)
        client = Client(cluster)

        def close() -> None:
            client.close()
            cluster.close()
    return client.get_executor(pure=False), close

