"""The command line's process settings (``mortal.process_env``): BLAS's idle spin and the
device kernels' threads, set before numpy loads, only where the environment leaves them open."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mortal import process_env

VARS = ("OPENBLAS_THREAD_TIMEOUT", "MORTAL_KERNEL_THREADS")


def _cli_process_env(**env: str) -> dict:
    """The two variables as a process that imports the command line sees them."""
    base = {k: v for k, v in os.environ.items() if k not in VARS + ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    base.update(env)
    code = ("import json, os, sys; import mortal.cli; import numpy; "
            f"print(json.dumps({{k: os.environ.get(k) for k in {VARS!r}}}))")
    out = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_the_command_line_sets_a_short_spin_and_as_many_kernel_threads_as_blas():
    assert _cli_process_env(OPENBLAS_NUM_THREADS="3") == {"OPENBLAS_THREAD_TIMEOUT": "22",
                                                         "MORTAL_KERNEL_THREADS": "3"}


def test_what_the_user_set_is_kept():
    got = _cli_process_env(OPENBLAS_NUM_THREADS="2", MORTAL_KERNEL_THREADS="1")
    assert got == {"OPENBLAS_THREAD_TIMEOUT": "22", "MORTAL_KERNEL_THREADS": "1"}
    # a longer spin of the user's own leaves the kernels on one thread (their default)
    got = _cli_process_env(OPENBLAS_NUM_THREADS="2", OPENBLAS_THREAD_TIMEOUT="28")
    assert got == {"OPENBLAS_THREAD_TIMEOUT": "28", "MORTAL_KERNEL_THREADS": None}


def test_nothing_is_set_once_numpy_is_loaded():
    import numpy  # noqa: F401  (loaded by this test process anyway)

    environ: dict[str, str] = {}
    assert process_env.apply(environ) == {} and environ == {}


def test_blas_threads_reads_what_openblas_reads():
    assert process_env.blas_threads({"OPENBLAS_NUM_THREADS": "4", "OMP_NUM_THREADS": "2"}) == 4
    assert process_env.blas_threads({"OPENBLAS_NUM_THREADS": "x", "OMP_NUM_THREADS": "2"}) == 2
    assert process_env.blas_threads({"OPENBLAS_NUM_THREADS": "0"}) == len(os.sched_getaffinity(0))
