"""Fleet scaling: 8 chips on 1 and on 2 workers, on the local process pool and on Dask.

    python benchmarks/bench_fleet.py --out runs/bench-fleet

Each chip is a ``pcm`` 784-300-300 chip trained 5 epochs on the bundled subset
(the ``mortal demo`` setting), with Hinton's recipe and the ``mixed`` policy
(``train.defaults = "hinton"``: the settings of the figures in ``benchmarks/RESULTS.md``);
``BENCH_FLEET_CHIPS`` sets the number of chips (default 8).  For each backend the same
fleet runs on one and on two single-threaded workers; scaling efficiency is ``T1 / (2 T2)``.

Two timings per run: *cold* (workers started for the run: process start and
the numba compilation of the kernels in every worker are included) and *warm*
(the workers already ran one small chip, so compilation is done).  Records
must be identical across all runs, and every chip must have trained (status ``ok``); the
script checks both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from _common import machine_line  # noqa: E402
from mortal.config import config_from_dict  # noqa: E402
from mortal.fleet import run_chip, run_fleet  # noqa: E402

FLEET = {"name": "bench", "seed": 0, "chips": int(os.environ.get("BENCH_FLEET_CHIPS", "8")),
         "chip": {"preset": "pcm", "layers": [300, 300]},
         "train": {"defaults": "hinton", "epochs": 5, "policy": "mixed"}, "data": {"source": "mini"}}
WARM = {"name": "warm", "seed": 99, "chips": 1, "chip": {"preset": "pcm", "layers": [20, 20]},
        "train": {"defaults": "hinton", "epochs": 1, "policy": "direct"},
        "data": {"source": "mini", "train_size": 300, "test_size": 100}}


def _warm_task(_: int) -> int:
    """Compile the kernels in this worker (one tiny chip), then hold it so the next warm-up
    task lands on another worker."""
    task = _warm_tasks()[0]
    run_chip(task)
    time.sleep(2.0)
    return os.getpid()


def _warm_tasks():
    from mortal.fleet import ChipTask

    cfg = config_from_dict(WARM)
    return [ChipTask(point=cfg.points()[0], chip=0, root_seed=cfg.seed, data=cfg.data)]


def _strip(records):
    return [{k: v for k, v in r.items() if k != "timing"} for r in records]


def time_pool(workers: int, warm: bool) -> tuple[float, list]:
    cfg = config_from_dict(FLEET)
    t = time.perf_counter()
    with ProcessPoolExecutor(workers) as ex:
        if warm:
            pids = {f.result() for f in wait([ex.submit(_warm_task, i) for i in range(workers)]).done}
            assert len(pids) == workers, pids
            t = time.perf_counter()
        res = run_fleet(cfg, executor=ex)
        dt = time.perf_counter() - t
    return dt, _strip(res.records)


def time_dask(workers: int, warm: bool) -> tuple[float, list]:
    from distributed import Client, LocalCluster

    cfg = config_from_dict(FLEET)
    t = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:
        if warm:
            client.run(lambda: run_chip(_warm_tasks()[0]) and None)
            t = time.perf_counter()
        res = run_fleet(cfg, executor=client.get_executor(pure=False))
        dt = time.perf_counter() - t
    return dt, _strip(res.records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--backends", default="pool,dask")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(machine_line(), flush=True)
    result: dict = {"fleet": FLEET, "command": " ".join(sys.argv), "runs": {}}
    reference = None
    for backend in args.backends.split(","):
        fn = {"pool": time_pool, "dask": time_dask}[backend]
        for mode in ("cold", "warm"):
            times = {}
            for workers in (1, 2):
                dt, recs = fn(workers, mode == "warm")
                failed = [r for r in recs if r.get("status") != "ok"]
                if failed:
                    raise SystemExit(f"{len(failed)} chip(s) failed, e.g. {failed[0]['key']}: {failed[0].get('error')}")
                if reference is None:
                    reference = recs
                same = recs == reference
                times[workers] = dt
                print(f"{backend:5} {mode} {workers} worker(s): {dt:7.1f} s  records identical: {same}", flush=True)
                if not same:
                    raise SystemExit("records differ between runs")
            eff = times[1] / (2 * times[2])
            result["runs"][f"{backend}-{mode}"] = {"t1_s": times[1], "t2_s": times[2], "efficiency": eff}
            print(f"{backend:5} {mode} scaling efficiency on 2 workers: {100 * eff:.1f} %", flush=True)
            (out / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
