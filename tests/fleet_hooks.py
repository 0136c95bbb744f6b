"""Worker tasks for the fleet tests that kill their worker process.

``run_fleet(..., task_fn=...)`` pickles its task function to the workers, so these live in
a module of their own (importable by a worker) rather than in the test file.  Bind the
arguments with :func:`functools.partial`, which pickles as long as the function does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from mortal.fleet import ChipTask, run_chip

#: The exit status of a killed worker (any abrupt exit breaks the pool the same way).
KILLED_STATUS = 17


def kill_worker(task: ChipTask, *, chip: int, marker: Optional[str] = None) -> dict[str, Any]:
    """Run ``task`` with :func:`run_chip`, except that the worker running chip ``chip``
    exits abruptly (no exception, no record): every time if ``marker`` is None, else once,
    creating the file ``marker`` first (when it exists, the chip runs normally)."""
    if task.chip == chip:
        if marker is None:
            os._exit(KILLED_STATUS)
        if not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))
            os._exit(KILLED_STATUS)
    return run_chip(task)


def sleep_in_worker(task: ChipTask, *, pid_dir: str, seconds: float = 60.0) -> dict[str, Any]:
    """Write the worker's process id into ``pid_dir`` (a file named after it), then sleep
    ``seconds`` before running ``task``: a worker that is busy when its fleet is killed."""
    import time

    Path(pid_dir, str(os.getpid())).write_text("")
    time.sleep(seconds)
    return run_chip(task)
