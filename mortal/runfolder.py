"""Output folders of the commands: checked before anything is written, locked while a run writes.

A run folder holds a marker, ``.mortal-run`` (JSON: the kind of run, e.g. ``"train"`` or
``"fleet"``), and while a run writes into it, an exclusive lock on ``.mortal-lock`` (an
``fcntl`` lock, released by the operating system when the process ends, even by ``kill -9``,
and not kept by the workers it forked; the file holds the process id of the run that took it
last).

* :func:`check_out` refuses, before anything is written, an ``--out`` that cannot be a folder
  (an empty path, a file, a path under a file, a place that cannot be written), a folder
  another run is writing into (naming its process id), and a folder that holds something
  other than a resumable run of the same kind (unless ``overwrite``).
* :func:`claim` creates the folder, takes the lock (another run holding it is refused with
  its process id), checks the folder again under the lock if asked to, clears the folder
  first if asked to overwrite it, and writes the marker.  A block that refuses its input
  (:class:`InputError`) before writing anything leaves the folder as the claim found it.
* :func:`in_use` tells whether another process holds a folder's lock (it writes nothing).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import InputError

__all__ = ["MARKER", "LOCK", "check_out", "claim", "in_use", "run_kind"]

MARKER = ".mortal-run"
LOCK = ".mortal-lock"
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
_DEFAULT_HINT = "choose another folder, resume the run, or give --overwrite to replace it"


def run_kind(out: Path) -> str | None:
    """The kind of run recorded in ``out`` (None if it holds no marker, or an unreadable one)."""
    try:
        data = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data.get("kind") if isinstance(data, dict) else None


def in_use(out: str | os.PathLike) -> str | None:
    """The process id recorded by the run holding ``out``'s lock, or None if no process holds it.

    Nothing is written: the lock file is only opened for reading (a folder without one is free).
    """
    try:
        fd = os.open(Path(out) / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in _BUSY:
                return None
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _busy(path: Path, holder: str) -> InputError:
    return InputError(f"{path} is in use by another mortal run (process {holder}); "
                      "wait for it to end or choose another folder")


#: Files that mark a run folder made before markers existed, whatever command is asked to
#: overwrite it (a demo's; a train or fleet run's layout is given by its command as ``legacy``).
_KNOWN_LEGACY: tuple[tuple[str, ...], ...] = (("demo.json",),)


def _vacant(path: Path) -> bool:
    """True if ``path`` holds nothing but the marker, the lock and empty folders (a run stopped
    before its first file, e.g. by Ctrl-C): a fresh run may take it."""
    for entry in path.iterdir():
        if entry.name in (MARKER, LOCK) and not entry.is_symlink() and entry.is_file():
            continue
        if entry.is_symlink() or not entry.is_dir():
            return False
        for _root, dirs, files in os.walk(entry):
            if files or any((Path(_root) / d).is_symlink() for d in dirs):
                return False
    return True


def _has_all(path: Path, files: tuple[str, ...]) -> bool:
    return bool(files) and all((path / f).exists() for f in files)


def _resumable(path: Path, legacy: tuple[str, ...]) -> bool:
    """Whether a run of the folder's kind has something to resume: every ``legacy`` path exists
    and those that are folders hold something (a train run's checkpoints); True without ``legacy``."""
    for f in legacy:
        q = path / f
        if not q.exists() or (q.is_dir() and not any(q.iterdir())):
            return False
    return True


def _inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _check_overwrite(path: Path, legacy: tuple[str, ...], protect: tuple) -> None:
    """What ``--overwrite`` may replace: a mortal run folder only, never the current folder, one
    of its ancestors, the home folder or ``/``, nor a folder holding one of ``protect``."""
    real = path.resolve()
    if real == Path(real.anchor) or real == Path.home().resolve():
        raise InputError(f"--out {path} is {'the home folder' if real != Path(real.anchor) else '/'}; "
                         "it is never overwritten: choose another folder")
    cwd = Path.cwd().resolve()
    if _inside(cwd, real):
        raise InputError(f"--out {path} is the current folder" + ("" if cwd == real else " or holds it")
                         + "; --overwrite would delete it: choose another folder")
    if not ((path / MARKER).exists() or _has_all(path, legacy) or any(_has_all(path, k) for k in _KNOWN_LEGACY)):
        raise InputError(f"--out {path} holds files that are not a mortal run; --overwrite replaces only a "
                         "mortal run folder: choose another folder")
    for p in protect:
        if p is None:
            continue
        if _inside(Path(p).resolve(), real):
            raise InputError(f"--out {path} holds {p}, which this run reads; --overwrite would delete it: "
                             "choose another folder")


def _check_contents(path: Path, kind: str, resume: bool, overwrite: bool, legacy: tuple[str, ...],
                    hint: str | None, protect: tuple = ()) -> None:
    """What the folder must hold: a run of ``kind`` to resume, or nothing (a stopped run's marker,
    lock and empty folders count as nothing), or a mortal run that ``overwrite`` may replace."""
    if resume:
        recorded = run_kind(path)
        if not path.is_dir() or (recorded != kind and not (recorded is None and _has_all(path, legacy))):
            raise InputError(f"--out {path} holds no {kind} run to resume"
                             + (f" (it holds a {recorded} run)" if recorded else ""))
        return
    if not path.is_dir() or _vacant(path):
        return
    if overwrite:
        _check_overwrite(path, legacy, protect)
        return
    recorded = run_kind(path)
    what = f"a {recorded} run" if recorded else "files"
    if hint is None:
        hint = _DEFAULT_HINT if recorded == kind and _resumable(path, legacy) else \
            "choose another folder or give --overwrite to replace it" + (
                " (it holds no checkpoint to resume)" if recorded == kind else "")
    if "--overwrite" in hint and recorded is None and not _has_all(path, legacy) \
            and not any(_has_all(path, k) for k in _KNOWN_LEGACY):
        hint = "choose another folder (--overwrite replaces only a mortal run folder)"
    raise InputError(f"--out {path} already holds {what}; {hint}")


def check_out(out: str | os.PathLike | None, kind: str, *, resume: bool = False, overwrite: bool = False,
              legacy: tuple[str, ...] = (), hint: str | None = None, protect: tuple = ()) -> Path | None:
    """Check that ``out`` can take a run of ``kind``; nothing is written.

    ``out`` None (no ``--out``) is returned as None.  A folder whose lock another process holds
    is refused with that process's id.  ``resume``: the folder must hold a run of ``kind`` (its
    marker, or for runs made before markers existed, every file of ``legacy``).  Otherwise the
    folder must be absent or empty (a folder holding only a marker, a lock and empty folders, as
    a run stopped before its first file leaves it, counts as empty), or hold a mortal run (a
    marker of any kind, or every file of ``legacy``) and ``overwrite`` be given.  ``overwrite``
    never replaces the current folder, one of its ancestors, the home folder or ``/``, nor a
    folder holding a path of ``protect`` (the config, data or teacher the run reads).  ``hint``
    ends the message refusing a folder that holds something (default: choose another folder,
    resume (only if there is something to resume), or ``--overwrite``).  InputError (one line)
    when it cannot.
    """
    if out is None:
        return None
    text = os.fspath(out)
    if not text.strip():
        raise InputError("--out is empty; give a folder")
    path = Path(text)
    try:
        if path.is_symlink() and not path.exists():
            raise InputError(f"--out {path} is a symbolic link to nothing; give a folder")
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
        holder = in_use(path) if path.is_dir() else None
        if holder is not None:
            raise _busy(path, holder)
        _check_contents(path, kind, resume, overwrite, legacy, hint, tuple(protect))
    except OSError as exc:  # e.g. a parent that cannot be searched
        raise InputError(f"--out {path}: {exc.strerror or exc}") from None
    return path


#: Descriptors of the locks this process holds (inside :func:`claim`).  A forked child (a fleet
#: worker) closes its copies at once: an ``flock`` lock lasts while any copy of its descriptor is
#: open, so a worker that outlived the claim would otherwise keep the folder "in use".
_HELD: set[int] = set()


def _close_held_in_child() -> None:
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


def _lock(fd: int, out: Path) -> None:
    """Take the exclusive lock, waiting a moment out a check_out that probes it at this instant."""
    deadline = time.monotonic() + 0.5
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in _BUSY:
                raise
        if time.monotonic() >= deadline:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise _busy(out, holder) from None
        time.sleep(0.01)


@contextmanager
def claim(out: Path, kind: str, *, overwrite: bool = False, resume: bool | None = None,
          legacy: tuple[str, ...] = (), hint: str | None = None, protect: tuple = ()) -> Iterator[Path]:
    """Create ``out``, hold its lock for the block, and mark it as a run of ``kind``.

    Another process holding the lock is refused with an InputError naming its process id.
    ``resume`` True or False: once the lock is held, the folder is checked again as
    :func:`check_out` checks it (with ``overwrite``, ``legacy``, ``hint`` and ``protect``), since
    another run may have written into it meanwhile; None skips that check, except that with
    ``overwrite`` the folder is always checked to be one ``overwrite`` may replace.  With
    ``overwrite``, whatever the folder held is then removed (so claim it only once the run has
    accepted its input).  An OSError while creating or locking the folder is an InputError.  If that check
    or the block refuses with InputError while the block has added nothing to the folder, the
    claim's own traces are undone: the marker it wrote, the lock file's earlier content (or the
    lock file it made), and the folders it made.
    """
    out = Path(out)
    lock_path = out / LOCK
    while True:
        made: list[Path] = []  # the folders this claim creates, innermost first
        try:
            p = out
            while not p.exists() and p.parent != p:
                made.append(p)
                p = p.parent
            out.mkdir(parents=True, exist_ok=True)
            lock_existed = lock_path.exists()
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # e.g. a symbolic link to nothing, or a lock file that cannot be written
            for d in made:
                try:
                    d.rmdir()
                except OSError:
                    break
            raise InputError(f"--out {out}: {exc.strerror or exc}"
                             + (f" ({exc.filename})" if exc.filename else "")) from None
        try:
            _lock(fd, out)
            held = os.fstat(fd)
            now = os.stat(lock_path)
        except FileNotFoundError:  # the lock file was removed by a run undoing its claim: start again
            os.close(fd)
            continue
        except OSError as exc:
            os.close(fd)
            raise InputError(f"--out {out}: cannot lock {lock_path}: {exc.strerror or exc}") from None
        except BaseException:
            os.close(fd)
            raise
        if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
            _HELD.add(fd)
            break
        os.close(fd)
    try:
        old_marker: bytes | None = (out / MARKER).read_bytes()
    except OSError:
        old_marker = None

    def undo(marker: bool, previous: bytes | None) -> None:
        if marker:
            if old_marker is None:
                (out / MARKER).unlink(missing_ok=True)
            else:
                (out / MARKER).write_bytes(old_marker)
        if not lock_existed:
            lock_path.unlink(missing_ok=True)
        elif previous is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, previous, 0)
        for d in made:
            try:
                d.rmdir()
            except OSError:
                break

    try:
        if resume is not None or overwrite:
            try:
                if resume is not None:
                    _check_contents(out, kind, resume, overwrite, legacy, hint, tuple(protect))
                elif not _vacant(out):
                    _check_overwrite(out, legacy, tuple(protect))
            except InputError:
                undo(False, None)
                raise
        clear = overwrite and not _vacant(out)  # a vacant folder keeps its (empty) folders
        previous = os.pread(fd, 64, 0)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        if clear:
            for q in out.iterdir():
                if q.name == LOCK:
                    continue
                if q.is_dir() and not q.is_symlink():
                    shutil.rmtree(q)
                else:
                    q.unlink()
        wrote_marker = run_kind(out) != kind
        if wrote_marker:
            (out / MARKER).write_text(json.dumps({"kind": kind}) + "\n")
        entries = sorted(os.listdir(out))
        try:
            yield out
        except InputError:
            if sorted(os.listdir(out)) == entries:
                undo(wrote_marker, previous)
            raise
    finally:
        _HELD.discard(fd)
        os.close(fd)  # closing the descriptor releases the lock (children closed their copies)
