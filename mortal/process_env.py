"""Settings a program gives its own process before numpy loads: :func:`apply`.

The command line (importing :mod:`mortal.cli` applies it) and the speed benchmarks
(``bench_ff.py``, ``bench_time_split.py``, ``bench_chip.py``) call it first thing.  A library
user's process is left as it is (``import mortal`` changes nothing); such a user can set the
same variables before starting Python.  The spin setting is OpenBLAS's (numpy's wheels bring
OpenBLAS); another BLAS ignores it.

Why: after every matrix product OpenBLAS's worker threads spin, waiting for the next one, for
about 2^28 cycles (a tenth of a second) before they sleep.  Between its products the learner runs
kernels of its own (the device layer's programming and refreshes, the ``analog`` policy's
coincidence sampler), and a spinning BLAS thread holds one of the cores those kernels could use.
On two cores this made two kernel threads slower than one (so the device kernels default to one
thread, :mod:`devices._threads`).  With the spin cut to 2^22 cycles (about 1.6 ms, longer than
the gaps between the products of one batch), the kernels get the cores back and BLAS keeps its
speed (``benchmarks/RESULTS.md``, "Sharing the cores with BLAS").

:func:`apply` sets, where the environment does not set them already:

- ``OPENBLAS_THREAD_TIMEOUT`` to ``22`` (OpenBLAS reads it once, when numpy loads it);
- ``MORTAL_KERNEL_THREADS`` to BLAS's thread count (``OPENBLAS_NUM_THREADS``, else
  ``OMP_NUM_THREADS``, else the CPUs this process may run on): the device kernels' threads;
  only where the spin is at most 2^22 cycles (a user's own longer spin keeps them at one).

Results do not depend on either (the kernels give the same result on any number of threads).
"""

from __future__ import annotations

import os
import sys
from typing import MutableMapping

__all__ = ["BLAS_SPIN_VAR", "BLAS_SPIN", "KERNEL_THREADS_VAR", "apply", "blas_threads"]

#: OpenBLAS's idle-spin setting: its threads wait 2^N cycles for work before they sleep.
BLAS_SPIN_VAR = "OPENBLAS_THREAD_TIMEOUT"
#: 2^22 cycles: about 1.6 ms at 2.6 GHz (OpenBLAS's own default is 28).
BLAS_SPIN = "22"
#: The device kernels' thread count (:mod:`devices._threads`).
KERNEL_THREADS_VAR = "MORTAL_KERNEL_THREADS"


def blas_threads(environ: MutableMapping[str, str] = os.environ) -> int:
    """The thread count OpenBLAS will start with: ``OPENBLAS_NUM_THREADS``, else
    ``OMP_NUM_THREADS``, else the CPUs this process may run on (a value that is not a positive
    integer is passed over, as OpenBLAS does)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        text = environ.get(var, "").strip()
        if text.isdigit() and int(text) > 0:
            return int(text)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # platforms without affinity
        return max(1, os.cpu_count() or 1)


def apply(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set the two variables above where ``environ`` does not; returns those it set.

    Nothing is set once numpy is loaded: OpenBLAS has read its settings by then, and kernel
    threads beside a long BLAS spin would slow the kernels down.
    """
    if "numpy" in sys.modules:
        return {}
    done = {}
    if BLAS_SPIN_VAR not in environ:
        done[BLAS_SPIN_VAR] = BLAS_SPIN
    spin = environ.get(BLAS_SPIN_VAR, BLAS_SPIN).strip()
    # Kernel threads only beside a short spin (a user's own longer one keeps them at one).
    if KERNEL_THREADS_VAR not in environ and spin.isdigit() and int(spin) <= int(BLAS_SPIN):
        done[KERNEL_THREADS_VAR] = str(blas_threads(environ))
    environ.update(done)
    return done
