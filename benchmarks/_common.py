"""Shared helpers of the benchmark scripts: timing, GEMM peak, environment notes, the
learner's settings as the benchmarks build them."""

from __future__ import annotations

import os
import platform
import time
from typing import Callable

import numpy as np

BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

#: Classes of MNIST (the benchmarks' data); passed to ``fit`` so that a small training subset
#: that misses a class still gets the ten-class label layout and head.
MNIST_CLASSES = 10


def median_time(fn: Callable[[], object], repeat: int = 30, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def paired_median_times(base: Callable[[], object], other: Callable[[], object],
                        repeat: int = 30, warmup: int = 3) -> tuple[float, float]:
    """Median wall times (s) of ``base()`` and ``other()``, timed alternately.

    Alternating the two calls exposes both to the same load on a shared machine.
    """
    for _ in range(warmup):
        base()
        other()
    tb, to = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        base()
        tb.append(time.perf_counter() - t)
        t = time.perf_counter()
        other()
        to.append(time.perf_counter() - t)
    return float(np.median(tb)), float(np.median(to))


def gemm_peak_gflops(n: int = 2000, m: int = 1000, repeat: int = 10) -> float:
    """float32 GEMM throughput of (m x n) @ (n x n) here, best of ``repeat``, GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = min(_once(lambda: a @ b) for _ in range(repeat))
    return 2.0 * m * n * n / best / 1e9


def _once(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def machine_line() -> str:
    """One line describing where the benchmark ran."""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, "
            f"OpenBLAS tuning vars: {', '.join(f'{v}={os.environ.get(v)}' for v in BLAS_VARS)}, "
            f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, "
            f"OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT')}, "
            f"MORTAL_KERNEL_THREADS={os.environ.get('MORTAL_KERNEL_THREADS')}")


def split_holdout(train_images, train_labels, test_images, test_labels, holdout: int):
    """``(x_train, y_train, x_eval, y_eval)``: with ``holdout`` N > 0, the last N training
    images become the evaluation set and are left out of training; with 0, the test set.
    Raises ``ValueError`` if N does not leave both parts non-empty."""
    if not holdout:
        return train_images, train_labels, test_images, test_labels
    n = train_images.shape[0]
    if not 0 < holdout < n:
        raise ValueError(f"--holdout must lie between 1 and {n - 1}")
    cut = n - holdout
    return train_images[:cut], train_labels[:cut], train_images[cut:], train_labels[cut:]


def ff_config(defaults: str = "hinton", *, policy: str | None = None, refit_epochs: int | None = None,
              refit_weight_cost: float | None = None, refit_settle_s: float | None = None,
              head_layers: str | None = None, **fields):
    """The learner's settings (``mortal.ff.FFConfig``) from a benchmark's options.

    The figures in ``benchmarks/RESULTS.md`` were made under the learner's old defaults:
    Hinton's recipe (``defaults="hinton"``: head over the readout layers, no refit) and the
    ``direct`` update policy.  So with ``defaults="hinton"`` a ``policy`` of None means
    ``"direct"``; with ``defaults="measured"`` it means that table's policy.  The other
    options map the benchmarks' old flat options into the config tree (None: the table's
    value): ``refit_epochs`` / ``refit_weight_cost`` / ``refit_settle_s`` -> ``refit.epochs`` /
    ``refit.weight_cost`` / ``refit.settle_s``, ``head_layers`` -> ``recipe.head_layers``.
    ``fields``: other settings by their unique names (``epochs``, ``seed``, ``lr``,
    ``estimator``, ``reads``, ...).
    """
    from mortal.ff import FFConfig

    if policy is None and defaults == "hinton":
        policy = "direct"
    if policy is not None:
        fields["policy"] = policy
    refit = {k: v for k, v in (("epochs", refit_epochs), ("weight_cost", refit_weight_cost),
                               ("settle_s", refit_settle_s)) if v is not None}
    if refit:
        fields["refit"] = refit
    if head_layers is not None:
        fields["head_layers"] = head_layers
    return FFConfig(defaults=defaults, **fields)
