"""The saved chip's file: a sealed ``.npz`` archive, written atomically, and its content digest.

This module knows bytes, not chips: :mod:`devices.chip` hands it the arrays and metadata
of a chip to write (``AnalogChip.save``) or to digest (``AnalogChip.state_digest``), and
:mod:`devices.persistence` reads an archive back and checks what it holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["FORMAT", "LEGACY_FORMATS", "SEAL", "SEAL_LEN", "content_digest", "atomic_savez", "seal",
           "seal_status", "read_npz"]

# Archives are sealed (a SHA-256 of their bytes in the zip comment) since format 2.  Format 3
# holds the compact device state (devices/_pulses.py); archives of formats 1 and 2 hold the
# older per-device layout, which this version cannot read: they are refused by name.
FORMAT = "mortal-chip/3"
LEGACY_FORMATS = ("mortal-chip/1", "mortal-chip/2")


def content_digest(entries: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) of arrays: per entry in name order its name, little-endian dtype, shape
    and bytes."""
    h = hashlib.sha256(b"mortal-content-digest/1\0")
    for name in sorted(entries):
        a = np.asarray(entries[name])
        dt = a.dtype.newbyteorder("<")
        a = np.ascontiguousarray(a, dtype=dt)
        head = json.dumps([name, dt.str, list(a.shape)]).encode()
        h.update(len(head).to_bytes(8, "little") + head + a.nbytes.to_bytes(8, "little"))
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def _create_exclusive(folder: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new file ``folder/prefix<random>suffix`` opened for reading and writing; unlike ``mkstemp``
    (mode 0600) it gets the permissions of any new file (0666 less the umask)."""
    while True:
        tmp = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


# The seal: the zip comment of a saved archive is this prefix and the SHA-256 (hex) of every
# byte of the file before the hex digits, so that a change to any byte is found.
SEAL = b"mortal-seal sha256:"
SEAL_LEN = len(SEAL) + 64
_EOCD = struct.Struct("<4s4H2LH")  # the zip's end-of-central-directory record, comment length last


def _sha256_of(fh: Any, size: int) -> str:
    fh.seek(0)
    h = hashlib.sha256()
    left = size
    while left > 0:
        block = fh.read(min(left, 1 << 22))
        if not block:
            break
        h.update(block)
        left -= len(block)
    return h.hexdigest()


def seal(fh: Any) -> None:
    """Seal the comment-less zip archive just written to ``fh`` (open for reading and writing)."""
    fh.seek(-_EOCD.size, os.SEEK_END)
    end = fh.tell()
    record = _EOCD.unpack(fh.read(_EOCD.size))
    if record[0] != b"PK\x05\x06" or record[-1] != 0:
        raise RuntimeError("numpy wrote a zip archive of an unexpected layout; cannot seal it")
    fh.seek(end + _EOCD.size - 2)
    fh.write(struct.pack("<H", SEAL_LEN) + SEAL)
    fh.flush()
    size = fh.tell()
    fh.write(_sha256_of(fh, size).encode())


def seal_status(fh: Any) -> str:
    """``"sealed"`` (the seal matches the file's bytes), ``"broken"`` (a seal that does not) or
    ``"none"`` (no seal at the end of the file), for the file open as ``fh``."""
    size = fh.seek(0, os.SEEK_END)
    if size < SEAL_LEN + _EOCD.size:
        return "none"
    fh.seek(size - SEAL_LEN)
    tail = fh.read(SEAL_LEN)
    if not tail.startswith(SEAL):
        return "none"
    return "sealed" if _sha256_of(fh, size - 64).encode() == tail[-64:] else "broken"


def atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` as a sealed .npz archive, atomically (a temporary file in the
    same folder, synced, then renamed over ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_exclusive(path.parent, path.name + ".", ".tmp")
    try:
        with os.fdopen(fd, "w+b") as fh:
            np.savez(fh, **arrays)
            seal(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_npz(fh: Any, path: Path, only: str | None = None) -> dict[str, np.ndarray]:
    """Every entry (or only the entry ``only``) of the .npz archive open as ``fh``; ValueError
    naming the file for anything that is not a readable archive of plain arrays (truncated,
    flipped bits, corrupt compressed streams)."""
    try:
        fh.seek(0)
        with np.load(fh, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            return {k: z[k] for k in z.files if only is None or k == only}
    except Exception as exc:  # whatever a damaged archive makes zipfile, zlib or numpy raise
        raise ValueError(f"{path} is not a saved chip ({type(exc).__name__}: {exc})") from None
