"""Checkpoints of a training run: learner state and chip, saved together atomically.

Layout of a checkpoint directory ``DIR``::

    DIR/LATEST              name of the newest complete checkpoint, e.g. "epoch-0005"
    DIR/epoch-0005/learner.npz
    DIR/epoch-0005/chip.npz  written by the chip's own ``save(path)``

Each checkpoint is written into a temporary folder that is renamed into
place, then ``LATEST`` is replaced atomically, so a crash at any point leaves
the previous checkpoint usable.  Older checkpoints are removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..chip import Chip
from ..errors import InputError
from .config import FFConfig
from .state import ControllerState

__all__ = ["save_checkpoint", "check_checkpoint", "read_checkpoint", "latest_checkpoint", "read_history",
           "CHIP_FILE", "LEARNER_FILE"]

CHIP_FILE = "chip.npz"
LEARNER_FILE = "learner.npz"
_FORMAT = "mortal-learner/2"


def latest_checkpoint(directory: str | os.PathLike) -> Path:
    """The newest complete checkpoint folder under ``directory`` (or ``directory`` itself if it is one)."""
    d = Path(directory)
    if (d / LEARNER_FILE).is_file():
        return d
    pointer = d / "LATEST"
    if not pointer.is_file():
        raise FileNotFoundError(f"no checkpoint in {d} (neither {LEARNER_FILE} nor LATEST found)")
    target = d / pointer.read_text().strip()
    if not (target / LEARNER_FILE).is_file():
        raise FileNotFoundError(f"{pointer} names {target.name}, which holds no {LEARNER_FILE}")
    return target


def read_checkpoint(checkpoint: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metadata and arrays of ``checkpoint/learner.npz``; InputError for an unreadable or foreign file."""
    path = checkpoint / LEARNER_FILE
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a readable learner checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise InputError(f"{path}: unsupported format {got!r} (this version reads {_FORMAT!r})")
    return meta, arrays


def read_history(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch records stored in the newest checkpoint under ``directory``."""
    meta, _ = read_checkpoint(latest_checkpoint(directory))
    return list(meta["state"]["history"])


def _fingerprint(chip: Chip) -> dict[str, float]:
    return {"energy_j": float(chip.ledger.total_energy_j), "time_s": float(chip.ledger.total_time_s)}


def save_checkpoint(config: FFConfig, state: ControllerState, chip: Chip, directory: str | os.PathLike,
                    data_id: str = "") -> Path:
    """Save the learner (``config``, ``state``) and ``chip`` as ``directory/epoch-NNNN``; point
    ``LATEST`` at it."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{state.epoch:04d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        chip.save(tmp / CHIP_FILE)  # type: ignore[attr-defined]
        sd = state.state_dict()
        arrays = dict(sd["arrays"])
        meta = {"format": _FORMAT, "config": config.model_dump(mode="json"), "state": sd["meta"],
                "chip": _fingerprint(chip), "data": data_id}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        with open(tmp / LEARNER_FILE, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fd, ptmp = tempfile.mkstemp(prefix=".LATEST.", dir=root)
    with os.fdopen(fd, "w") as fh:
        fh.write(name + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(ptmp, root / "LATEST")
    for old in root.glob("epoch-*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return final


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
    try:
        saved = FFConfig(**meta["config"])
    except Exception as exc:  # pydantic's ValidationError, or a malformed entry
        raise InputError(f"the settings saved in {ck} are not valid here: {exc}") from None
    state = ControllerState.from_state_dict({"arrays": arrays, "meta": meta["state"]})
    if saved.model_dump(exclude={"epochs"}) != config.model_dump(exclude={"epochs"}):
        raise InputError(f"the checkpoint in {ck} was made with other settings; resume with the same "
                         "settings (only epochs may change)")
    if config.epochs < state.epoch:
        raise InputError(f"the checkpoint in {ck} has trained {state.epoch} epochs, more than epochs={config.epochs}")
    sizes = tuple(int(s) for s in chip.info.layer_sizes)
    if tuple(state.sizes) != sizes:
        raise InputError(f"the checkpoint is for layer sizes {list(state.sizes)}, the chip has {list(sizes)}")
    if _fingerprint(chip) != meta["chip"]:
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
    try:
        return FFConfig(**meta["config"])
    except Exception as exc:
        raise InputError(f"the settings saved in {ck} are not valid here: {exc}") from None
