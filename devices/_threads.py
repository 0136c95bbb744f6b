"""The device kernels' rows on several threads.

The kernels are compiled without the GIL (``nogil``), so Python threads run their row blocks
in parallel; no numba threading layer is involved (that keeps forked worker processes and
callers on several threads safe).  Results do not depend on the thread count: each row draws
from its own random streams and writes only its own devices, and sums over rows are added
per fixed chunk of ``ROW_CHUNK`` rows, chunk by chunk in order, whichever thread computed them.

The thread count is numba's own setting, ``NUMBA_NUM_THREADS`` (by default the CPUs this
process may use); ``NUMBA_NUM_THREADS=1`` runs everything on the caller's thread.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba

from ._kernels import ROW_CHUNK

__all__ = ["ROW_CHUNK", "kernel_threads", "n_chunks", "run_chunks"]

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def kernel_threads() -> int:
    """Threads the device kernels use (``NUMBA_NUM_THREADS``)."""
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def n_chunks(rows: int) -> int:
    """Chunks of ``ROW_CHUNK`` rows covering ``rows`` rows."""
    return (rows + ROW_CHUNK - 1) // ROW_CHUNK


def _executor(workers: int) -> ThreadPoolExecutor:
    """The process's helper threads (at least ``workers``)."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="mortal-kernel")
            _pool_size = workers
        return _pool


def _forget_after_fork() -> None:
    """A forked child inherits the pool object but none of its threads, and perhaps a held lock."""
    global _lock, _pool, _pool_size
    _lock = threading.Lock()
    _pool, _pool_size = None, 0


os.register_at_fork(after_in_child=_forget_after_fork)


def run_chunks(fn, chunks: int, *args) -> None:
    """Call ``fn(c0, c1, *args)`` on consecutive blocks of the chunks ``0 .. chunks - 1``, one
    block per thread; the caller's thread takes the first block and waits for the others."""
    threads = min(kernel_threads(), chunks)
    if threads <= 1:
        fn(0, chunks, *args)
        return
    bounds = [chunks * t // threads for t in range(threads + 1)]
    pool = _executor(threads - 1)
    futures = [pool.submit(fn, bounds[t], bounds[t + 1], *args) for t in range(1, threads)]
    try:
        fn(bounds[0], bounds[1], *args)
    finally:
        for f in futures:
            f.result()
