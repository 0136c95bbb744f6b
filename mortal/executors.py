"""Where a fleet's chips run: a local process pool whose workers end with the fleet, or a Dask
``distributed`` cluster (:func:`dask_executor`, its scheduler address checked first)."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Optional

from .errors import InputError

__all__ = ["local_pool", "dask_executor", "scheduler_address", "SCHEDULER_SCHEMES"]


# -- the fleet's own pool ---------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die() -> None:
    """End this worker at once, as the kernel does on its parent's death."""
    os.kill(os.getpid(), signal.SIGKILL)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.25)
        if os.getppid() != parent:
            _die()


def _end_with_parent(fleet_pid: Optional[int]) -> None:
    """Initializer of the fleet's pool workers: the worker ends when the process that started it
    ends, even by ``kill -9`` (on Linux the kernel kills it, ``PR_SET_PDEATHSIG``; everywhere a
    daemon thread watches the parent process id).  ``fleet_pid``: the fleet's process id when
    workers are forked from it (a worker whose parent is already another process exits at once)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watch below still ends the worker
            pass
    parent = os.getppid()
    if fleet_pid is not None and parent != fleet_pid:
        _die()
    threading.Thread(target=_watch_parent, args=(parent,), name="mortal-watch-parent", daemon=True).start()


def local_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of ``workers`` processes that end with this process, even when it is
    killed with ``kill -9`` (see ``_end_with_parent``).

    The platform's default start method (fork on Linux: no re-import of the caller's script);
    ``mortal.fleet.run_chip`` limits BLAS to one thread inside the worker, for any executor.
    """
    ctx = multiprocessing.get_context()
    fleet_pid = os.getpid() if ctx.get_start_method() == "fork" else None
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_end_with_parent,
                               initargs=(fleet_pid,))


# -- Dask ---------------------------------------------------------------------------------------------

#: Address schemes of a Dask scheduler (``distributed.comm``), ``inproc`` aside (in-process only).
SCHEDULER_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?):([^:]*)")


def scheduler_address(address: Any) -> str:
    """``address`` as a Dask scheduler address, ``scheme://host:port`` (``host:port`` alone means
    ``tcp://``); InputError for anything else, without any attempt to connect."""
    expected = "expected tcp://HOST:PORT (or HOST:PORT; schemes " + ", ".join(SCHEDULER_SCHEMES) + ")"
    if not isinstance(address, str) or not address.strip():
        raise InputError(f"scheduler address {address!r} is empty; {expected}")
    scheme, sep, rest = address.strip().partition("://")
    if not sep:
        scheme, rest = "tcp", scheme
    if scheme.lower() not in SCHEDULER_SCHEMES:
        raise InputError(f"scheduler address {address!r} has an unknown scheme {scheme!r}; {expected}")
    m = _HOST_PORT.fullmatch(rest)
    if m is None:
        raise InputError(f"scheduler address {address!r} is not an address; {expected}")
    if not re.fullmatch(r"[0-9]{1,5}", m[2]) or not 1 <= int(m[2]) <= 65535:
        raise InputError(f"scheduler address {address!r}: the port {m[2]!r} is not a number from 1 to 65535")
    return f"{scheme.lower()}://{rest}"


def dask_executor(scheduler: str | None = None, local_workers: int | None = None, timeout_s: float = 10.0):
    """A ``(executor, closer)`` pair on a Dask ``distributed`` cluster.

    ``scheduler``: the address of a running scheduler (``tcp://host:8786``; checked by
    :func:`scheduler_address` before any connection is tried);
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
        address = scheduler_address(scheduler)
        try:
            client = Client(address, timeout=f"{timeout_s}s")
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot reach the Dask scheduler at {address} within {timeout_s:g} s: "
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
