"""Checkpoints of a training run: learner state and chip, saved together atomically.

Layout of a checkpoint directory ``DIR``::

    DIR/LATEST              name of the newest complete checkpoint, e.g. "epoch-0005"
    DIR/epoch-0005/learner.npz
    DIR/epoch-0005/chip.npz  written by the chip's own ``save(path)``

Each checkpoint is written into a temporary folder ``DIR/.epoch-NNNN.<random>`` that is
renamed into place, then ``LATEST`` is replaced atomically, so a crash at any point leaves
the previous checkpoint usable.  Older checkpoints, and the temporary folders and pointer
files a killed save left behind, are removed by the next save (a checkpoint directory has one
writer at a time; the commands lock their run folder).  Folders and files get the permissions
of any new file (the umask applies).

``learner.npz`` is sealed like the emulator's chip files (its zip comment holds a SHA-256 of
the file's bytes before it), and its metadata holds the chip's ``state_digest()`` when the
chip has one (the emulator's chips do): an edited, truncated or damaged file is refused with
an ``InputError`` (a ``ValueError``) naming it, and so is any chip but the one saved with it.
Chips without ``state_digest`` (hand-written ones) are recognized by their ledger totals.

Checkpoints saved before the seal (format ``mortal-learner/2``) are refused too, with a message
saying how to seal them once, if they are trusted: :func:`upgrade_checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from pydantic import ValidationError

from ..chip import Chip
from ..errors import InputError
from .config import FFConfig
from .state import ControllerState

__all__ = ["save_checkpoint", "check_checkpoint", "read_checkpoint", "latest_checkpoint", "read_history",
           "saved_config", "config_differences", "upgrade_checkpoint", "CHIP_FILE", "LEARNER_FILE"]

CHIP_FILE = "chip.npz"
LEARNER_FILE = "learner.npz"
# Format 3 adds the seal; format 2 files (written before it) are read only to seal them (upgrade_checkpoint).
_FORMAT = "mortal-learner/3"
_LEGACY_FORMATS = ("mortal-learner/2",)
_META_KEYS = {"format", "config", "state", "chip", "data"}
_NAME = re.compile(r"epoch-\d{4,}")
_TEMP = re.compile(r"\.epoch-\d{4,}\.[0-9a-z_]+")  # a checkpoint folder being written (or left by a kill)
_TEMP_POINTER = re.compile(r"\.LATEST\.[0-9a-z_]+")


def latest_checkpoint(directory: str | os.PathLike) -> Path:
    """The newest complete checkpoint folder under ``directory`` (or ``directory`` itself if it is one)."""
    d = Path(directory)
    if (d / LEARNER_FILE).is_file():
        return d
    pointer = d / "LATEST"
    if not pointer.is_file():
        raise FileNotFoundError(f"no checkpoint in {d} (neither {LEARNER_FILE} nor LATEST found)")
    raw = pointer.read_bytes()
    try:
        name = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        name = ""
    if not _NAME.fullmatch(name):
        raise InputError(f"{pointer} is damaged: it should name a checkpoint folder such as epoch-0001, "
                         f"it holds {raw[:40]!r}")
    target = d / name
    if not (target / LEARNER_FILE).is_file():
        raise InputError(f"{pointer} names {target.name}, which holds no {LEARNER_FILE} (the pointer is damaged "
                         "or the checkpoint folder was removed)")
    return target


# The seal (the same as devices.chip's, which this package does not import): the zip comment
# is this prefix and the SHA-256 (hex) of every byte of the file before the hex digits.
SEAL = b"mortal-seal sha256:"
SEAL_LEN = len(SEAL) + 64
_EOCD = struct.Struct("<4s4H2LH")  # the zip's end-of-central-directory record, comment length last


def _sha256_of(fh: BinaryIO, size: int) -> str:
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


def _seal(fh: BinaryIO) -> None:
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


def seal_status(fh: BinaryIO) -> str:
    """``"sealed"``, ``"broken"`` (a seal that does not match the bytes) or ``"none"``, for the
    file open as ``fh``."""
    size = fh.seek(0, os.SEEK_END)
    if size < SEAL_LEN + _EOCD.size:
        return "none"
    fh.seek(size - SEAL_LEN)
    tail = fh.read(SEAL_LEN)
    if not tail.startswith(SEAL):
        return "none"
    return "sealed" if _sha256_of(fh, size - 64).encode() == tail[-64:] else "broken"


def _write_learner(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` and ``meta`` (as the entry ``meta``) to ``path``, sealed, atomically
    (a temporary file in the same folder renamed into place)."""
    entries = dict(arrays, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    while True:  # like mkstemp, but with the permissions of any new file (0666 less the umask), not 0600
        tmp = _new_name(path.parent, f".{path.name}.")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "w+b") as fh:
            np.savez(fh, **entries)
            _seal(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_npz(fh: BinaryIO, path: Path, only: str | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metadata and arrays (or only the metadata, if ``only == "meta"``) of the archive open as
    ``fh``; InputError naming the file for anything unreadable."""
    try:
        fh.seek(0)
        with np.load(fh, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            arrays = {k: z[k] for k in z.files if only is None or k == only}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except Exception as exc:  # whatever a damaged archive makes zipfile, zlib, numpy or json raise
        raise InputError(f"{path} is not a readable learner checkpoint ({type(exc).__name__}: {exc})") from None
    return meta, arrays


def read_checkpoint(checkpoint: Path, *, legacy: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metadata and arrays of ``checkpoint/learner.npz``; InputError naming the file for an
    unreadable, damaged, edited or foreign file.

    ``legacy=True`` also accepts a file saved before checkpoints were sealed (format
    ``mortal-learner/2``; see :func:`upgrade_checkpoint`).
    """
    path = Path(checkpoint) / LEARNER_FILE
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot read the learner checkpoint {path}: {exc}") from None
    with fh:
        seal = seal_status(fh)
        if seal == "broken":
            raise InputError(f"{path} is not a readable learner checkpoint: its bytes do not match the seal saved "
                             "with them (the file was edited, truncated or damaged)")
        # An unsealed file is refused unless it is a legacy file and legacy=True: read only its
        # metadata to say which, and nothing else of it before that.
        meta, arrays = _read_npz(fh, path, only=None if seal == "sealed" else "meta")
        fmt = meta.get("format") if isinstance(meta, dict) else None
        if fmt != _FORMAT and fmt not in _LEGACY_FORMATS:
            raise InputError(f"{path}: unsupported format {fmt!r} (this version reads {_FORMAT!r})")
        if seal == "sealed" and fmt != _FORMAT:
            raise InputError(f"{path} is not a readable learner checkpoint: it is sealed but says format {fmt!r}, "
                             "which save_checkpoint never sealed")
        if seal != "sealed":
            if fmt == _FORMAT:
                raise InputError(f"{path} is not a readable learner checkpoint: it lacks the seal that "
                                 "save_checkpoint writes (the file was re-written by other means, or truncated or "
                                 "damaged)")
            if not legacy:
                ck = path.parent
                raise InputError(
                    f"{path} was saved before checkpoints were sealed (format {fmt!r}), so an edit to it cannot be "
                    f"detected, and its chip ({str(ck / CHIP_FILE)!r}) holds a device state this version no longer "
                    "reads; read it with the version that wrote it (mortal.ff.checkpoint.upgrade_checkpoint "
                    "seals such a checkpoint given its chip)")
            meta, arrays = _read_npz(fh, path)
    if not _META_KEYS - {"data"} <= set(meta) <= _META_KEYS:  # files of format 2 may lack "data"
        raise InputError(f"{path} is not a readable learner checkpoint: its metadata holds {sorted(meta)}, "
                         f"expected {sorted(_META_KEYS)}")
    return meta, arrays


def read_history(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch records stored in the newest checkpoint under ``directory``."""
    ck = latest_checkpoint(directory)
    meta, _ = read_checkpoint(ck)
    try:
        return list(meta["state"]["history"])
    except (KeyError, TypeError) as exc:
        raise InputError(f"{ck / LEARNER_FILE} holds no history ({type(exc).__name__}: {exc})") from None


def _fingerprint(chip: Chip) -> dict[str, Any]:
    """What identifies ``chip``: its ledger totals and, if it has ``state_digest``, its digest."""
    ident: dict[str, Any] = {"energy_j": float(chip.ledger.total_energy_j), "time_s": float(chip.ledger.total_time_s)}
    digest = getattr(chip, "state_digest", None)
    if callable(digest):
        ident["digest"] = str(digest())
    return ident


def _is_saved_chip(chip: Chip, saved: Any, fmt: Any, path: Path) -> bool:
    """Whether ``chip`` is the chip recorded as ``saved``: by its state digest when both have
    one, else (hand-written chips, or checkpoints saved from them) by its ledger totals.

    In the current format a chip with ``state_digest`` needs the digest in the file
    (``save_checkpoint`` always writes it for such a chip): a file without it is refused
    (InputError naming ``path``) rather than matched by ledger totals, which another chip
    can share."""
    if not isinstance(saved, dict):
        return False
    digest = getattr(chip, "state_digest", None)
    if callable(digest) and "digest" in saved:
        return str(digest()) == saved["digest"]
    if callable(digest) and fmt == _FORMAT:
        raise InputError(f"{path} is not a readable learner checkpoint: it records no digest of its chip, which "
                         "save_checkpoint writes for every chip with state_digest (the file was re-written by "
                         "other means)")
    ledger = {"energy_j": float(chip.ledger.total_energy_j), "time_s": float(chip.ledger.total_time_s)}
    return ledger == {k: saved.get(k) for k in ledger}


def _clear_leftovers(root: Path) -> None:
    """Remove the temporary folders and pointer files a killed save left in ``root``."""
    for p in root.iterdir():
        if _TEMP.fullmatch(p.name) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif _TEMP_POINTER.fullmatch(p.name) and p.is_file():
            try:
                p.unlink()
            except OSError:  # a leftover that cannot be removed does no harm
                pass


def _new_name(root: Path, prefix: str) -> Path:
    return root / f"{prefix}{secrets.token_hex(4)}"


def save_checkpoint(config: FFConfig, state: ControllerState, chip: Chip, directory: str | os.PathLike,
                    data_id: str = "") -> Path:
    """Save the learner (``config``, ``state``) and ``chip`` as ``directory/epoch-NNNN``; point
    ``LATEST`` at it."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(root)
    name = f"epoch-{state.epoch:04d}"
    while True:  # like mkdtemp, but with the permissions of any new folder (0777 less the umask), not 0700
        tmp = _new_name(root, f".{name}.")
        try:
            tmp.mkdir(0o777)
            break
        except FileExistsError:
            continue
    try:
        chip.save(tmp / CHIP_FILE)  # type: ignore[attr-defined]
        sd = state.state_dict()
        arrays = dict(sd["arrays"])
        meta = {"format": _FORMAT, "config": config.model_dump(mode="json"), "state": sd["meta"],
                "chip": _fingerprint(chip), "data": data_id}
        _write_learner(tmp / LEARNER_FILE, meta, arrays)
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    while True:
        ptmp = _new_name(root, ".LATEST.")
        try:
            fd = os.open(ptmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(name + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(ptmp, root / "LATEST")
    except BaseException:
        ptmp.unlink(missing_ok=True)
        raise
    for old in root.glob("epoch-*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return final


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(_flat(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}"))
    return out


def config_differences(saved: FFConfig, now: FFConfig, ignore: tuple[str, ...] = ("epochs",)) -> list[str]:
    """``"group.field: <saved> saved, <now> now"`` for every setting that differs."""
    a = _flat(saved.model_dump(mode="json", exclude=set(ignore)))
    b = _flat(now.model_dump(mode="json", exclude=set(ignore)))
    return [f"{k}: {json.dumps(a.get(k))} saved, {json.dumps(b.get(k))} now"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check_checkpoint(config: FFConfig, chip: Chip, data_id: str | None,
                     directory: str | os.PathLike) -> tuple[ControllerState, Path]:
    """The controller state of the newest checkpoint under ``directory``, checked against this run.

    The settings must be those of the checkpoint except ``epochs``, which may be raised (the
    learning-rate schedule of the remaining epochs follows the new total); the chip must be
    the one saved with it; ``data_id`` (unless None) must match the training data's digest.
    Nothing is changed.
    """
    ck = latest_checkpoint(directory)
    meta, arrays = read_checkpoint(ck)
    saved = _saved_settings(ck, meta)
    try:
        state = ControllerState.from_state_dict({"arrays": arrays, "meta": meta["state"]})
    except InputError as exc:
        raise InputError(f"{ck / LEARNER_FILE} is not a usable learner checkpoint: {exc}") from None
    diff = config_differences(saved, config)
    if diff:
        raise InputError(f"the checkpoint in {ck} was made with other settings ({'; '.join(diff)}); resume with "
                         "the same settings (only epochs may change)")
    if config.epochs < state.epoch:
        raise InputError(f"the checkpoint in {ck} has trained {state.epoch} epochs, more than epochs={config.epochs}")
    sizes = tuple(int(s) for s in chip.info.layer_sizes)
    if tuple(state.sizes) != sizes:
        raise InputError(f"the checkpoint is for layer sizes {list(state.sizes)}, the chip has {list(sizes)}")
    if not _is_saved_chip(chip, meta["chip"], meta.get("format"), ck / LEARNER_FILE):
        raise InputError(f"the chip is not the chip saved in {ck}; "
                         f"load it with devices.load_chip({str(ck / CHIP_FILE)!r})")
    if data_id is not None and meta.get("data", "") != data_id:
        raise InputError(f"the training data (or the soft-target settings) differ from those the checkpoint in "
                         f"{ck} was trained with")
    return state, ck


def saved_config(directory: str | os.PathLike) -> FFConfig:
    """The settings saved in the newest checkpoint under ``directory``."""
    ck = latest_checkpoint(directory)
    meta, _ = read_checkpoint(ck)
    return _saved_settings(ck, meta)


def _saved_settings(ck: Path, meta: dict[str, Any]) -> FFConfig:
    try:
        return FFConfig(**meta["config"])
    except ValidationError as exc:
        why = "; ".join(f"{'.'.join(str(part) for part in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        raise InputError(f"the settings saved in {ck / LEARNER_FILE} are not valid here: {why}") from None
    except Exception as exc:  # a malformed entry (not a mapping, ...)
        raise InputError(f"the settings saved in {ck / LEARNER_FILE} are not valid here: "
                         f"{type(exc).__name__}: {exc}") from None


def upgrade_checkpoint(directory: str | os.PathLike, chip: Chip) -> Path:
    """Seal the newest checkpoint under ``directory`` if it was saved before checkpoints were
    sealed (format ``mortal-learner/2``), with ``chip`` the chip saved in it; returns its folder.

    Such a checkpoint cannot be proven unedited, so loading and resuming refuse it; call this
    once, for a checkpoint you trust, with the chip saved in it (chips of that time are of
    format ``mortal-chip/1``, which ``devices.load_chip`` of this version refuses: the upgrade
    needs the version that wrote them, or a chip object restored by other means).  Its settings and controller state
    are checked as on resume, the chip is recognized as before the seal (by its ledger totals),
    then ``chip.npz`` and ``learner.npz`` are written again, sealed, the learner file recording
    the chip's ``state_digest()``.  A checkpoint already sealed is left as it is (its chip is
    still checked).  Each file is replaced atomically; after a crash, call it again.
    """
    ck = latest_checkpoint(directory)
    meta, arrays = read_checkpoint(ck, legacy=True)
    path = ck / LEARNER_FILE
    _saved_settings(ck, meta)
    try:
        state = ControllerState.from_state_dict({"arrays": arrays, "meta": meta["state"]})
    except InputError as exc:
        raise InputError(f"{path} is not a usable learner checkpoint: {exc}") from None
    sizes = tuple(int(s) for s in chip.info.layer_sizes)
    if tuple(state.sizes) != sizes:
        raise InputError(f"the checkpoint is for layer sizes {list(state.sizes)}, the chip has {list(sizes)}")
    if not _is_saved_chip(chip, meta["chip"], meta["format"], path):
        raise InputError(f"the chip is not the chip saved in {ck} ({str(ck / CHIP_FILE)!r})")
    if meta["format"] == _FORMAT:
        return ck
    if not callable(getattr(chip, "save", None)):
        raise InputError("upgrading a checkpoint needs a chip with a save(path) method")
    chip.save(ck / CHIP_FILE)  # type: ignore[attr-defined]
    _write_learner(path, dict(meta, format=_FORMAT, chip=_fingerprint(chip), data=meta.get("data", "")), arrays)
    return ck
