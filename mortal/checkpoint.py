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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .chip import Chip
from .errors import InputError

if TYPE_CHECKING:
    from .ff import FFLearner

__all__ = ["save_checkpoint", "check_checkpoint", "load_checkpoint", "load_learner", "latest_checkpoint",
           "read_history", "CHIP_FILE", "LEARNER_FILE"]

CHIP_FILE = "chip.npz"
LEARNER_FILE = "learner.npz"
_FORMAT = "mortal-learner/1"


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


def _read_meta(checkpoint: Path) -> dict[str, Any]:
    with np.load(checkpoint / LEARNER_FILE, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
    if meta.get("format") != _FORMAT:
        raise InputError(f"{checkpoint / LEARNER_FILE}: unsupported format {meta.get('format')!r}")
    return meta


def read_history(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch records stored in the newest checkpoint under ``directory``."""
    return list(_read_meta(latest_checkpoint(directory))["history"])


def _fingerprint(chip: Chip) -> dict[str, float]:
    return {"energy_j": float(chip.ledger.total_energy_j), "time_s": float(chip.ledger.total_time_s)}


def save_checkpoint(learner: "FFLearner", chip: Chip, directory: str | os.PathLike, data_id: str = "") -> Path:
    """Save ``learner`` and ``chip`` as ``directory/epoch-NNNN`` and point ``LATEST`` at it."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{learner.epoch:04d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        chip.save(tmp / CHIP_FILE)  # type: ignore[attr-defined]
        arrays: dict[str, np.ndarray] = {
            "head": learner.head, "head_smooth": learner.head_smooth,
        }
        for i in range(len(learner.smooth)):
            arrays[f"smooth{i}"] = learner.smooth[i]
            arrays[f"shadow{i}"] = learner.shadow[i]
            arrays[f"peer{i}"] = learner.peer_mean[i]
            arrays[f"slope{i}"] = learner.slopes[i][0]
        for k, v in learner.policy.state().items():
            arrays[f"policy_{k}"] = v
        for i, f in enumerate(learner.correction or ()):
            arrays[f"correction{i}"] = f
        meta = {
            "format": _FORMAT,
            "epoch": learner.epoch,
            "config": learner.config.model_dump(mode="json"),
            "sizes": list(learner._sizes or ()),
            "slope_widths": [float(w) for _, w in learner.slopes],
            "history": learner.history,
            "chip": _fingerprint(chip),
            "data": data_id,
        }
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


def check_checkpoint(config: Any, chip: Chip, sizes: tuple[int, ...], data_id: str,
                     directory: str | os.PathLike) -> dict[str, Any]:
    """Check that the newest checkpoint under ``directory`` matches this run; return its metadata.

    The configuration, the layer sizes, the chip (its ledger totals) and the training
    data (a digest) must all be those of the checkpoint; nothing is changed.
    """
    ck = latest_checkpoint(directory)
    meta = _read_meta(ck)
    # Settings added to the config after a checkpoint was written take their defaults.
    saved = {**type(config)().model_dump(mode="json"), **meta["config"]}
    if saved != config.model_dump(mode="json"):
        raise InputError(f"the checkpoint in {ck} was made with a different FFConfig; resume with the same configuration")
    _check_saved_chip(meta, ck, chip, sizes, "the chip passed to fit(resume=...)")
    if meta.get("data", "") != data_id:
        raise InputError(f"the training images or labels (or the soft-target settings) differ from those "
                         f"the checkpoint in {ck} was trained with")
    meta["path"] = str(ck)
    return meta


def _check_saved_chip(meta: dict[str, Any], ck: Path, chip: Chip, sizes: tuple[int, ...], what: str) -> None:
    """Refuse a chip whose layer sizes or ledger totals are not those saved in checkpoint ``ck``."""
    if tuple(meta["sizes"]) != tuple(sizes):
        raise InputError(f"the checkpoint is for layer sizes {meta['sizes']}, the chip has {list(sizes)}")
    if _fingerprint(chip) != meta["chip"]:
        raise InputError(f"{what} is not the chip saved in {ck}; "
                         f"load it with devices.load_chip({str(ck / CHIP_FILE)!r})")


def load_learner(directory: str | os.PathLike, chip: Chip) -> "FFLearner":
    """The learner saved in the newest checkpoint under ``directory``, bound to ``chip``.

    ``chip`` must be the chip saved with it, loaded by the caller (for the emulator:
    ``devices.load_chip(latest_checkpoint(directory) / CHIP_FILE)``); another chip is refused.
    The learner can predict, evaluate, ``refit_head`` and ``copy_controller`` at once.
    """
    from .ff import FFConfig, FFLearner

    ck = latest_checkpoint(directory)
    meta = _read_meta(ck)
    meta["path"] = str(ck)
    learner = FFLearner(FFConfig(**meta["config"]))
    sizes = learner._check_chip(chip)
    _check_saved_chip(meta, ck, chip, sizes, "the chip")
    learner._init_state(chip, sizes)
    load_checkpoint(learner, meta)
    return learner


def load_checkpoint(learner: "FFLearner", meta: dict[str, Any]) -> None:
    """Restore ``learner`` from the checkpoint that :func:`check_checkpoint` accepted."""
    ck = Path(meta["path"])
    with np.load(ck / LEARNER_FILE, allow_pickle=False) as z:
        learner.head[...] = z["head"]
        learner.head_smooth[...] = z["head_smooth"]
        for i in range(len(learner.smooth)):
            learner.smooth[i][...] = z[f"smooth{i}"]
            learner.shadow[i][...] = z[f"shadow{i}"]
            learner.peer_mean[i][...] = z[f"peer{i}"]
            learner.slopes[i] = (z[f"slope{i}"].copy(), meta["slope_widths"][i])
        learner.policy.load_state({k[len("policy_"):]: z[k] for k in z.files if k.startswith("policy_")})
        n_corr = sum(k.startswith("correction") for k in z.files)
        learner.correction = [z[f"correction{i}"].copy() for i in range(n_corr)] if n_corr else None
    learner.epoch = int(meta["epoch"])
    learner.history = list(meta["history"])
