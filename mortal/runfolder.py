"""Output folders of the commands: checked before anything is written, locked while a run writes.

A run folder holds a marker, ``.mortal-run`` (JSON: the kind of run, e.g. ``"train"`` or
``"fleet"``), and while a run writes into it, an exclusive lock on ``.mortal-lock`` (an
``fcntl`` lock, released by the operating system when the process ends, even by ``kill -9``).

* :func:`check_out` refuses, before anything is written, an ``--out`` that cannot be a folder
  (an empty path, a file, a path under a file, a place that cannot be written) and a folder
  that holds something other than a resumable run of the same kind (unless ``overwrite``).
* :func:`claim` creates the folder, takes the lock (another run holding it is refused with
  its process id), clears the folder first if asked to overwrite it, and writes the marker.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import InputError

__all__ = ["MARKER", "LOCK", "check_out", "claim", "run_kind"]

MARKER = ".mortal-run"
LOCK = ".mortal-lock"


def run_kind(out: Path) -> str | None:
    """The kind of run recorded in ``out`` (None if it holds no marker, or an unreadable one)."""
    try:
        data = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data.get("kind") if isinstance(data, dict) else None


def check_out(out: str | os.PathLike | None, kind: str, *, resume: bool = False, overwrite: bool = False,
              legacy: tuple[str, ...] = ()) -> Path | None:
    """Check that ``out`` can take a run of ``kind``; nothing is written.

    ``resume``: the folder must hold a run of ``kind`` (its marker, or for runs made before
    markers existed, every file of ``legacy``).  Otherwise the folder must be absent or empty,
    or ``overwrite`` must be given.  InputError (one line) when it cannot.
    """
    if out is None:
        return None
    text = os.fspath(out)
    if not text.strip():
        raise InputError("--out is empty; give a folder")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path} is a file, not a folder")
    # The nearest existing ancestor must be a folder this process may create things in.
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"--out {path}: {probe} is a file, so no folder can be made under it")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"--out {path}: {probe} cannot be written")
    if resume:
        recorded = run_kind(path)
        if not path.is_dir() or (recorded != kind and not (recorded is None and legacy
                                                           and all((path / f).exists() for f in legacy))):
            raise InputError(f"--out {path} holds no {kind} run to resume"
                             + (f" (it holds a {recorded} run)" if recorded else ""))
        return path
    if path.is_dir() and any(p.name != LOCK for p in path.iterdir()) and not overwrite:
        what = f"a {run_kind(path)} run" if run_kind(path) else "files"
        raise InputError(f"--out {path} already holds {what}; choose another folder, resume the run, "
                         "or give --overwrite to replace it")
    return path


@contextmanager
def claim(out: Path, kind: str, *, overwrite: bool = False) -> Iterator[Path]:
    """Create ``out``, hold its lock for the block, and mark it as a run of ``kind``.

    With ``overwrite``, whatever the folder held is removed once the lock is held.  Another
    process holding the lock is refused with an InputError naming its process id.
    """
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise InputError(f"{out} is in use by another mortal run (process {holder}); "
                             "wait for it to end or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        if overwrite:
            for p in out.iterdir():
                if p.name == LOCK:
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        if run_kind(out) != kind:
            (out / MARKER).write_text(json.dumps({"kind": kind}) + "\n")
        yield out
    finally:
        os.close(fd)  # closing the descriptor releases the lock
