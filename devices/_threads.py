"""The device kernels' rows on several threads.

The kernels are compiled without the GIL (``nogil``), so Python threads run their row blocks
in parallel; no numba threading layer is involved.  The threads live for one call only (no
pool stays alive between calls: a process may fork at any time, and callers on several threads
share nothing).  Results do not depend on the thread count: each row draws from its own random
streams and writes only its own devices, and sums over rows are added per fixed chunk of
``ROW_CHUNK`` rows, chunk by chunk in order, whichever thread computed them.

The thread count is ``MORTAL_KERNEL_THREADS`` (default 1: everything on the caller's thread),
at most the limit of :func:`limit_threads` on the calling thread.  One is the default because
it measured best beside two BLAS threads as OpenBLAS runs them by default: an FF epoch on
``pcm`` (784-1000-1000-1000, mixed policy) took 1.55x ``ideal`` with one kernel thread and 1.63x
with two, the kernels' second thread competing for the two cores with BLAS threads that spin
while they wait for the next product.  With that spin cut short (``OPENBLAS_THREAD_TIMEOUT``),
two kernel threads are faster (programming and refreshes of 784-2000-2000-2000-2000 on ``pcm``:
97 against 162 ms per batch); the ``mortal`` command line and the speed benchmarks
(``bench_ff.py``, ``bench_time_split.py``, ``bench_chip.py``) set both variables before numpy
loads (``mortal.process_env``; ``benchmarks/RESULTS.md``, "Sharing the cores with BLAS").
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator

from ._kernels import ROW_CHUNK

__all__ = ["ENV", "ROW_CHUNK", "kernel_threads", "limit_threads", "n_chunks", "run_chunks"]

_local = threading.local()
#: The environment variable that sets the kernels' thread count.
ENV = "MORTAL_KERNEL_THREADS"


def kernel_threads() -> int:
    """Threads the device kernels use on this thread (``MORTAL_KERNEL_THREADS``, default 1, at
    most the limit of an enclosing :func:`limit_threads`)."""
    text = os.environ.get(ENV, "1")
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{ENV} must be a positive integer, got {text!r}")
    cap = getattr(_local, "cap", None)
    return n if cap is None else min(n, cap)


@contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Within the block, kernels called from this thread use at most ``n`` threads (a fleet's
    workers, already one per CPU, use 1)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"thread limit must be a positive integer, got {n!r}")
    before = getattr(_local, "cap", None)
    _local.cap = n if before is None else min(before, n)
    try:
        yield
    finally:
        _local.cap = before


def n_chunks(rows: int) -> int:
    """Chunks of ``ROW_CHUNK`` rows covering ``rows`` rows."""
    return (rows + ROW_CHUNK - 1) // ROW_CHUNK


def run_chunks(fn, chunks: int, *args) -> None:
    """Call ``fn(c0, c1, *args)`` on consecutive blocks of the chunks ``0 .. chunks - 1``, one
    block per thread; the caller's thread takes the first block.  Every block finishes before
    this returns; the first error raised by any block is raised again here."""
    threads = min(kernel_threads(), chunks)
    if threads <= 1:
        fn(0, chunks, *args)
        return
    bounds = [chunks * t // threads for t in range(threads + 1)]
    errors: list[BaseException] = []

    def block(t: int) -> None:
        try:
            fn(bounds[t], bounds[t + 1], *args)
        except BaseException as exc:  # handed to the caller after every block has finished
            errors.append(exc)

    helpers = [threading.Thread(target=block, args=(t,), name="mortal-kernel", daemon=True)
               for t in range(1, threads)]
    for h in helpers:
        h.start()
    block(0)
    for h in helpers:
        h.join()
    if errors:
        raise errors[0]
