"""Forward-Forward learning in situ, through the ``Chip`` protocol only.

The learner follows Hinton's supervised recipe (see the README): per layer,
the goodness ``G = sum(a**2)`` of the *measured* activities is pushed above a
threshold for positive data (image with its true label in the first 10
pixels) and below it for negative data (a wrong label, sampled from the
model's own one-pass predictions).  Each layer's update uses only what the
controller sent in and measured out; activities are length-normalized in the
controller before they go to the next layer.

Scaling between model and chip: a normalized input ``h`` (RMS 1) is sent as
``s * h`` with ``s = input_range / input_clip_rms`` and the measured output
``y`` becomes the activity ``a = y / s``.  For ReLU-like neurons this makes
the model's weights equal to the chip's nominal weights, so wanted changes
are sent as they are (the bias row scaled by ``s / bias_level``).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from . import _kernels as K
from ._progress import Progress
from .chip import Chip, check_chip
from .errors import InputError
from .checkpoint import check_checkpoint, load_checkpoint, save_checkpoint
from .slopes import nominal_tables, perturbed_tables
from .updates import make_policy

__all__ = ["FFConfig", "FFLearner", "EvalResult", "N_CLASSES"]

N_CLASSES = 10
N_PIXELS = 784


class FFConfig(BaseModel):
    """Hyper-parameters of the Forward-Forward learner (defaults: Hinton's ffcode)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(100, ge=2, le=100_000)
    lr: float = Field(0.01, gt=0.0, le=10.0)
    """Learning rate of the layers."""
    lr_head: float = Field(0.1, gt=0.0, le=10.0)
    """Learning rate of the softmax head."""
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    """Gradient smoothing: g <- momentum g + (1 - momentum) grad."""
    weight_cost: float = Field(0.001, ge=0.0, le=1.0)
    weight_cost_head: float = Field(0.003, ge=0.0, le=1.0)
    peer_strength: float = Field(0.03, ge=0.0, le=1.0)
    """Peer normalization: pulls every unit's mean activity to the layer mean."""
    label_strength: float = Field(1.0, gt=0.0, le=10.0)
    label_copies: Optional[int] = Field(None, ge=1, le=78)
    """The one-hot label is written into pixels ``10 c + label`` for ``c < label_copies``
    (the top rows of MNIST images are blank).  More copies let bounded weights carry
    the label (on an ideal chip, label weights grow to ~10x the largest image weight).
    ``None``: 1 on chips with unbounded weights (Hinton's recipe), 8 otherwise."""
    neutral_level: float = Field(0.1, ge=0.0, le=1.0)
    threshold_per_unit: float = Field(1.0, gt=0.0)
    """Goodness threshold per unit: theta = threshold_per_unit * layer width."""
    temperature: float = Field(1.0, gt=0.0)
    hard_negatives: bool = True
    """Sample negative labels from the head's predictions (else uniformly among wrong ones)."""
    skip_first_layer: bool = True
    """Leave the first hidden layer out of both readouts (needs two or more layers)."""
    head_layers: Literal["readout", "all"] = "readout"
    """The hidden layers whose normalized activities the softmax head reads: those of the
    goodness readout (``skip_first_layer`` applies; Hinton's recipe) or all of them."""
    estimator: Literal["nominal", "perturbed"] = "nominal"
    """Neuron slope in the update: nominal ReLU slope, or measured by extra reads."""
    policy: Literal["direct", "mixed"] = "direct"
    input_clip_rms: float = Field(4.0, gt=0.0)
    """Normalized inputs beyond this many RMS are clipped by the chip's DAC."""
    slope_bins: int = Field(16, ge=2, le=256)
    slope_probes: int = Field(256, ge=1, le=4096)
    slope_levels: int = Field(8, ge=4, le=1024)
    reads_per_measurement: int = Field(1, ge=1, le=64)
    """Reads averaged for every measurement of a layer (less read noise, more read energy)."""
    refit_epochs: int = Field(0, ge=0, le=1000)
    """After the last epoch, fit the softmax head anew over the frozen layers for this many
    epochs (:meth:`FFLearner.refit_head`), to the labels (``fit``) or the soft targets
    (``fit_soft``) it trained on; 0: the head is the one trained alongside the layers."""
    refit_weight_cost: float = Field(0.0, ge=0.0, le=1.0)
    """The head's weight cost during that refit (``weight_cost_head`` applies while training)."""
    refit_settle_s: float = Field(0.0, ge=0.0, le=1e9)
    """Idle chip seconds (``chip.wait``) before that refit.  Drift is fastest right after the
    last pulses; a head fitted after the chip has settled holds longer as it drifts on."""
    eval_every: int = Field(1, ge=0)
    """Evaluate on the test set every this many epochs (0: only at the end)."""
    eval_method: Literal["goodness", "softmax", "both"] = "both"
    checkpoint_every: int = Field(0, ge=0)
    """Save learner and chip every this many epochs (0: never)."""
    seed: int = Field(0, ge=0)


@dataclass
class EvalResult:
    """Result of :meth:`FFLearner.evaluate`.

    ``errors`` maps the method (``goodness``, ``softmax``) to the error rate;
    ``energy_j`` by category and ``chip_time_s`` are what the evaluation cost.
    """

    errors: dict[str, float]
    n: int
    energy_j: dict[str, float]
    chip_time_s: float

    @property
    def total_energy_j(self) -> float:
        return float(sum(self.energy_j.values()))


@dataclass
class _Pass:
    """One forward pass: per layer, the normalized input, measured output and goodness."""

    inputs: list[np.ndarray] = field(default_factory=list)   # unit-RMS inputs h, (B, n_in)
    outputs: list[np.ndarray] = field(default_factory=list)  # measured y, (B, n_out)
    normed: list[np.ndarray] = field(default_factory=list)   # unit-RMS activities, (B, n_out)
    goodness: list[np.ndarray] = field(default_factory=list)  # (B,)


def _as_images(images: Any, name: str = "images") -> np.ndarray:
    """Validate images and return float32 (n, 784) in [0, 1]."""
    arr = np.asarray(images)
    if arr.ndim == 3 and arr.shape[1:] == (28, 28):
        arr = arr.reshape(arr.shape[0], N_PIXELS)
    if arr.ndim != 2 or arr.shape[1] != N_PIXELS:
        raise InputError(f"{name} has shape {np.shape(images)}, expected (n, 28, 28) or (n, 784)")
    if arr.shape[0] == 0:
        raise InputError(f"{name} is empty")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if arr.dtype.kind != "f":
        raise InputError(f"{name} has dtype {arr.dtype}, expected uint8 (0..255) or float in [0, 1]")
    out = arr.astype(np.float32)
    if not np.isfinite(out).all() or out.min() < 0.0 or out.max() > 1.0:
        raise InputError(f"float {name} must be finite and within [0, 1]")
    return out


def _as_labels(labels: Any, n: int, name: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputError(f"{name} has shape {arr.shape}, expected ({n},) to match the images")
    if arr.dtype.kind not in "iu":
        raise InputError(f"{name} has dtype {arr.dtype}, expected integers 0..9")
    if arr.size and (arr.min() < 0 or arr.max() >= N_CLASSES):
        raise InputError(f"{name} must lie in 0..9, got values in {arr.min()}..{arr.max()}")
    return arr.astype(np.int64)


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")


def is_real(v: Any) -> bool:
    """A real number (Python or numpy), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class FFLearner:
    """Forward-Forward learner for any object that satisfies ``mortal.chip.Chip``.

    Parameters
    ----------
    config : FFConfig
        Hyper-parameters; ``config.seed`` seeds every random choice of the learner.

    The learner keeps controller memory per layer: the smoothed gradient, the
    sum of requested weight changes (for the weight cost: the chip's true
    weights are hidden), the peer-normalization means, the softmax head and,
    for the ``mixed`` policy, the update accumulators.
    """

    def __init__(self, config: FFConfig | None = None) -> None:
        self.config = config if config is not None else FFConfig()
        if not isinstance(self.config, FFConfig):
            raise InputError(f"config must be an FFConfig, got {type(self.config).__name__}")
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self._sizes: Optional[tuple[int, ...]] = None
        self._chip: Optional[Chip] = None
        self._copies = 1
        #: Per layer, a float32 (n_out,) factor applied to every measured output before
        #: use (set by :class:`mortal.care.DriftCompensator`); ``None``: no correction.
        self.correction: Optional[list[np.ndarray]] = None

    # -- set-up ---------------------------------------------------------------------------------
    def _check_chip(self, chip: Any, bound: bool = True) -> tuple[int, ...]:
        check_chip(chip)  # TypeError if it is not a Chip at all
        sizes = tuple(int(s) for s in chip.info.layer_sizes)
        if sizes[0] != N_PIXELS:
            raise InputError(f"the chip's first layer takes {sizes[0]} inputs; MNIST images need {N_PIXELS}")
        if sizes[-1] < 1:
            raise InputError("the chip has an empty layer")
        if bound and self._sizes is not None and sizes != self._sizes:
            raise InputError(f"this learner was set up for layer sizes {self._sizes}, the chip has {sizes}")
        return sizes

    def _readout_layers(self, n_layers: int) -> list[int]:
        if self.config.skip_first_layer and n_layers >= 2:
            return list(range(1, n_layers))
        return list(range(n_layers))

    def _head_layers(self, n_layers: int) -> list[int]:
        if self.config.head_layers == "all":
            return list(range(n_layers))
        return self._readout_layers(n_layers)

    def _label_copies(self, chip: Chip) -> int:
        if self.config.label_copies is not None:
            return self.config.label_copies
        return 1 if all(math.isinf(float(r)) for r in chip.info.weight_range) else 8

    def _init_state(self, chip: Chip, sizes: tuple[int, ...]) -> None:
        self._chip = chip
        self._sizes = sizes
        self._copies = self._label_copies(chip)
        n_layers = len(sizes) - 1
        self.smooth = [np.zeros((sizes[i] + 1, sizes[i + 1]), np.float32) for i in range(n_layers)]
        self.shadow = [np.zeros((sizes[i], sizes[i + 1]), np.float32) for i in range(n_layers)]
        self.peer_mean = [np.full(sizes[i + 1], 0.5, np.float64) for i in range(n_layers)]
        width = sum(sizes[i + 1] for i in self._head_layers(n_layers))
        self.head = np.zeros((width, N_CLASSES), np.float32)
        self.head_smooth = np.zeros_like(self.head)
        self.slopes = nominal_tables(sizes)
        self.policy = make_policy(self.config.policy, chip)
        self.epoch = 0
        self.history = []

    def copy_controller(self, chip: Chip, **changes: Any) -> "FFLearner":
        """A new learner bound to ``chip`` (same layer sizes) holding a copy of this learner's
        controller memory: head, peer means, smoothed gradients, slope tables, drift
        correction, history.

        This copies only what lives in the digital controller; the chip's weights are not
        involved (see ``mortal.lifetime.weight_copy`` for the immortal weight copy).
        ``changes``: ``FFConfig`` fields the copy uses instead of this learner's (validated);
        if they change the head's input (``head_layers``, ``skip_first_layer``), the copy's
        head starts from zero, to be fitted with :meth:`refit_head`.
        """
        if self._sizes is None:
            raise InputError("the learner has not been fitted yet (call fit first)")
        sizes = self._check_chip(chip, bound=False)
        if sizes != self._sizes:
            raise InputError(f"the chip has layer sizes {sizes}, this learner {self._sizes}")
        config = FFConfig(**{**self.config.model_dump(), **changes}) if changes else self.config
        new = FFLearner(config)
        new._init_state(chip, sizes)
        new._copies = self._copies
        for name in ("smooth", "shadow", "peer_mean"):
            setattr(new, name, [a.copy() for a in getattr(self, name)])
        if new.head.shape == self.head.shape:
            new.head, new.head_smooth = self.head.copy(), self.head_smooth.copy()
        new.slopes = [(t.copy(), w) for t, w in self.slopes]
        new.correction = None if self.correction is None else [f.copy() for f in self.correction]
        new.epoch = self.epoch
        new.history = [dict(r) for r in self.history]
        return new

    def _scales(self, chip: Chip) -> list[float]:
        """Per layer, the factor from unit-RMS inputs to chip input levels."""
        out = []
        for r in chip.info.input_range:
            out.append(float(r) / self.config.input_clip_rms if math.isfinite(r) else 1.0)
        return out

    # -- forward passes ---------------------------------------------------------------------------
    def _forward(self, chip: Chip, x: np.ndarray, n_layers: int | None = None) -> _Pass:
        """Run unit-RMS-normalized ``x`` (B, 784) through the chip's layers."""
        scales = self._scales(chip)
        n_layers = len(scales) if n_layers is None else n_layers
        out = _Pass()
        h = np.empty_like(x)
        batch = x.shape[0]
        K.measure_rows(x, 1.0, h, 1.0, np.empty(batch, np.float64))
        for layer in range(n_layers):
            s = scales[layer]
            sent = h * np.float32(s) if s != 1.0 else h
            y = chip.read(layer, sent)
            if self.config.reads_per_measurement > 1:
                y = y.astype(np.float32, copy=True)
                for _ in range(self.config.reads_per_measurement - 1):
                    y += chip.read(layer, sent)
                y *= np.float32(1.0 / self.config.reads_per_measurement)
                chip.ledger.charge_digital(self.config.reads_per_measurement * y.size)
            if self.correction is not None:
                y = y * self.correction[layer]
            normed = np.empty_like(y)
            good = np.empty(batch, np.float64)
            K.measure_rows(y, 1.0 / s, normed, 1.0, good)
            out.inputs.append(h)
            out.outputs.append(y)
            out.normed.append(normed)
            out.goodness.append(good)
            h = normed
        # normalization, goodness and scaling: about 5 operations per value (6 when corrected)
        per_value = 5 if self.correction is None else 6
        chip.ledger.charge_digital(per_value * batch * sum(chip.info.layer_sizes[: n_layers + 1]))
        return out

    def _features(self, p: _Pass) -> np.ndarray:
        """The head's input (B, f): the normalized activities of the head's layers."""
        return np.concatenate([p.normed[i] for i in self._head_layers(len(p.normed))], axis=1)

    def _head_logits(self, chip: Chip, p: _Pass) -> tuple[np.ndarray, np.ndarray]:
        """Head logits (B, 10) and the features they came from (normalized readout activities)."""
        feats = self._features(p)
        chip.ledger.charge_digital(2 * feats.shape[0] * feats.shape[1] * N_CLASSES)
        return feats @ self.head, feats

    def _embed(self, x: np.ndarray, labels: np.ndarray | int | None) -> np.ndarray:
        copies = self._copies
        out = x.copy()
        if labels is None:
            out[:, :N_CLASSES * copies] = self.config.neutral_level
        else:
            out[:, :N_CLASSES * copies] = 0.0
            lab = np.broadcast_to(np.asarray(labels), (x.shape[0],))
            rows = np.arange(x.shape[0])
            for c in range(copies):
                out[rows, N_CLASSES * c + lab] = self.config.label_strength
        return out

    # -- training -----------------------------------------------------------------------------------
    def fit(self, chip: Chip, images: Any, labels: Any, *, test_images: Any = None, test_labels: Any = None,
            checkpoint_dir: str | Path | None = None, resume: str | Path | None = None,
            log: Callable[[dict[str, Any]], None] | str | Path | None = None,
            progress: bool | None = None) -> "FFLearner":
        """Train ``chip`` in situ on ``images`` (uint8 (n, 28, 28)) and ``labels``.

        Parameters
        ----------
        test_images, test_labels : optional
            Evaluated every ``config.eval_every`` epochs and at the end.
        checkpoint_dir : path, optional
            Where ``config.checkpoint_every`` writes the learner state and the
            chip (the chip must have ``save(path)``).
        resume : path, optional
            A checkpoint directory to continue from.  ``chip`` must be the chip
            restored from that checkpoint (``devices.load_chip(dir / "chip.npz")``).
        log : callable or path, optional
            Receives one dict per epoch; a path appends one JSON line per epoch.
        progress : bool, optional
            A progress bar on stderr (default: when stderr is a terminal).
        """
        return self._fit(chip, images, labels, None, "argmax", test_images, test_labels, checkpoint_dir,
                         resume, log, progress)

    def fit_soft(self, chip: Chip, images: Any, targets: Any, *, positives: Literal["argmax", "sample"] = "argmax",
                 min_confidence: float = 0.0, negatives: Literal["targets", "own", "mixed"] = "targets",
                 weighting: Literal["none", "confidence"] = "none",
                 test_images: Any = None, test_labels: Any = None, checkpoint_dir: str | Path | None = None,
                 resume: str | Path | None = None, log: Callable[[dict[str, Any]], None] | str | Path | None = None,
                 progress: bool | None = None) -> "FFLearner":
        """Train ``chip`` from soft targets (float (n, 10) probabilities per image), e.g. a teacher's.

        Positive data carries each image's most likely label (``positives="argmax"``) or a
        label drawn from its target anew every epoch (``"sample"``); negative labels are drawn
        in proportion to the targets' probabilities of the other labels (``negatives="targets"``),
        to the learner's own one-pass probabilities of them, as ``fit`` does (``"own"``), or to
        the mean of the two (``"mixed"``); the softmax head is fitted to the targets themselves.
        With ``weighting="confidence"`` each image's update of the layers (its positive and its
        negative pass) is weighted by its target's probability of the positive label, so that
        labels the targets are unsure of teach less.  Images whose largest target probability
        is below ``min_confidence`` train only the head, not the layers (their label is likely
        wrong).  Other arguments as in :meth:`fit`.
        """
        if positives not in ("argmax", "sample"):
            raise InputError(f"positives must be 'argmax' or 'sample', got {positives!r}")
        if not is_real(min_confidence) or not 0.0 <= float(min_confidence) < 1.0:
            raise InputError(f"min_confidence must lie in [0, 1), got {min_confidence!r}")
        if negatives not in ("targets", "own", "mixed"):
            raise InputError(f"negatives must be 'targets', 'own' or 'mixed', got {negatives!r}")
        if weighting not in ("none", "confidence"):
            raise InputError(f"weighting must be 'none' or 'confidence', got {weighting!r}")
        x = _as_images(images)
        soft = _as_targets(targets, x.shape[0])
        return self._fit(chip, x, soft.argmax(axis=1), soft, positives, test_images, test_labels,
                         checkpoint_dir, resume, log, progress, float(min_confidence), negatives, weighting)

    def _fit(self, chip: Chip, images: Any, labels: Any, soft: np.ndarray | None, positives: str,
             test_images: Any, test_labels: Any, checkpoint_dir: str | Path | None, resume: str | Path | None,
             log: Callable[[dict[str, Any]], None] | str | Path | None, progress: bool | None,
             min_confidence: float = 0.0, negatives: str = "targets", weighting: str = "none") -> "FFLearner":
        cfg = self.config
        sizes = self._check_chip(chip, bound=resume is None)
        x_all = _as_images(images)
        y_all = _as_labels(labels, x_all.shape[0])
        if x_all.shape[0] < cfg.batch_size:
            raise InputError(f"{x_all.shape[0]} training images is fewer than one batch ({cfg.batch_size})")
        has_test = test_images is not None or test_labels is not None
        if has_test:
            if test_images is None or test_labels is None:
                raise InputError("give both test_images and test_labels, or neither")
            x_test = _as_images(test_images, "test_images")
            y_test = _as_labels(test_labels, x_test.shape[0], "test_labels")
        if cfg.checkpoint_every and checkpoint_dir is None:
            raise InputError("config.checkpoint_every is set but no checkpoint_dir was given")
        if (cfg.checkpoint_every or resume is not None) and not callable(getattr(chip, "save", None)):
            raise InputError("checkpoints need a chip with a save(path) method")
        data_id = _data_fingerprint(x_all, y_all, soft)
        if soft is not None:  # a run from soft targets must also resume with the same settings
            data_id += f"/{positives}/{min_confidence!r}/{negatives}/{weighting}"
        if checkpoint_dir is not None:
            try:
                Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"cannot create checkpoint_dir {checkpoint_dir}: {exc}") from None
        sink = _log_sink(log)
        if resume is not None:
            meta = check_checkpoint(cfg, chip, sizes, data_id, Path(resume))
            self._init_state(chip, sizes)
            load_checkpoint(self, meta)
        elif self._chip is None:
            self._init_state(chip, sizes)
        elif chip is not self._chip:
            raise InputError("this learner is bound to the chip it was fitted on; use a new FFLearner "
                             "for another chip, or fit(..., resume=DIR) with the checkpointed chip")
        show = sys.stderr.isatty() if progress is None else bool(progress)
        n_batches = x_all.shape[0] // cfg.batch_size

        while self.epoch < cfg.epochs:
            e = self.epoch
            t_wall = time.perf_counter()
            before = _ledger_snapshot(chip)
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(cfg.seed, spawn_key=(e,))))
            order = rng.permutation(x_all.shape[0])
            if cfg.estimator == "perturbed":
                probe = self._embed(x_all[order[: cfg.slope_probes]], None)
                self.slopes = perturbed_tables(self, chip, probe, cfg.slope_levels, cfg.slope_bins)
            gain = _lr_gain(e, cfg.epochs)
            stats = np.zeros(4)
            bar = Progress(n_batches, f"epoch {e + 1}/{cfg.epochs}", enabled=show)
            for k in range(n_batches):
                idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
                stats += self._train_batch(chip, x_all[idx], y_all[idx], gain, rng,
                                           None if soft is None else soft[idx], positives, min_confidence,
                                           negatives, weighting)
                bar.update(k + 1)
            bar.close()
            train_wall = time.perf_counter() - t_wall
            refit_wall, before_refit = None, None
            if e + 1 == cfg.epochs and cfg.refit_epochs:
                if has_test:  # the head trained alongside the layers, for comparison
                    before_refit = self.evaluate(chip, x_test, y_test).errors
                if cfg.refit_settle_s:
                    chip.wait(cfg.refit_settle_s)
                t_refit = time.perf_counter()
                self.refit_head(chip, x_all, y_all if soft is None else soft, cfg.refit_epochs,
                                weight_cost=cfg.refit_weight_cost)
                refit_wall = time.perf_counter() - t_refit
            after = _ledger_snapshot(chip)
            record: dict[str, Any] = {
                "epoch": e + 1,
                "loss_pos": stats[0] / n_batches,
                "loss_neg": stats[1] / n_batches,
                "train_error_online": stats[2] / stats[3],
                "lr_gain": gain,
                "train_energy_j": {c: after[0][c] - before[0].get(c, 0.0) for c in after[0]},
                "chip_time_s": after[1],
            }
            self.epoch = e + 1
            last = self.epoch == cfg.epochs
            if has_test and (last or (cfg.eval_every and self.epoch % cfg.eval_every == 0)):
                res = self.evaluate(chip, x_test, y_test)
                record["test_error"] = res.errors
                record["eval_energy_j"] = res.total_energy_j
            record["energy_j"] = dict(_ledger_snapshot(chip)[0])
            record["total_energy_j"] = float(sum(record["energy_j"].values()))
            record["train_wall_s"] = train_wall
            if refit_wall is not None:
                record["refit_wall_s"] = refit_wall
                if before_refit is not None:
                    record["test_error_before_refit"] = before_refit
            record["wall_s"] = time.perf_counter() - t_wall
            self.history.append(record)
            # Checkpoint first: a log line then never runs ahead of the saved state.
            if cfg.checkpoint_every and (self.epoch % cfg.checkpoint_every == 0 or last):
                save_checkpoint(self, chip, Path(checkpoint_dir), data_id)
            sink(record)
        return self

    def _train_batch(self, chip: Chip, x: np.ndarray, labels: np.ndarray, gain: float,
                     rng: np.random.Generator, soft: np.ndarray | None = None,
                     positives: str = "argmax", min_confidence: float = 0.0,
                     negatives: str = "targets", weighting: str = "none") -> np.ndarray:
        cfg = self.config
        batch = x.shape[0]
        # Neutral pass: trains the head and proposes hard negatives.
        neutral = self._forward(chip, self._embed(x, None))
        logits, feats = self._head_logits(chip, neutral)
        if soft is not None and positives == "sample":
            labels = _sample_rows(soft, rng)
        online_err = float(np.count_nonzero(logits.argmax(axis=1) != labels))
        if soft is not None or cfg.hard_negatives:
            if soft is None or negatives == "own":
                prob = _wrong_label_probs(logits, labels)
            else:
                # The targets' ranking of the wrong labels chooses the negatives.
                prob = _wrong_target_probs(soft, labels)
                if negatives == "mixed":
                    prob = 0.5 * (prob + _wrong_label_probs(logits, labels))
            wrong = _sample_rows(prob, rng)
            wrong = np.where(wrong == labels, (labels + 1) % N_CLASSES, wrong)
        else:
            wrong = (labels + rng.integers(1, N_CLASSES, batch)) % N_CLASSES
        self._update_head(chip, feats, logits, labels, gain, soft)
        # Per-image weight of the layers' update: the targets' probability of the positive label.
        weight = soft[np.arange(batch), labels].astype(np.float64) if weighting == "confidence" else None
        if soft is not None and min_confidence > 0.0:
            keep = soft.max(axis=1) >= min_confidence
            if not keep.all():
                x, labels, wrong = x[keep], labels[keep], wrong[keep]
                weight = None if weight is None else weight[keep]
            if x.shape[0] == 0:
                return np.array([0.0, 0.0, online_err, batch])
        pos = self._forward(chip, self._embed(x, labels))
        neg = self._forward(chip, self._embed(x, wrong))
        scales = self._scales(chip)
        loss = np.zeros(2)
        for layer in range(len(pos.outputs)):
            loss += self._update_layer(chip, layer, pos, neg, scales[layer], gain, weight)
        return np.array([loss[0], loss[1], online_err, batch])

    def _update_layer(self, chip: Chip, layer: int, pos: _Pass, neg: _Pass, s: float, gain: float,
                      weight: np.ndarray | None = None) -> np.ndarray:
        cfg = self.config
        n_out = pos.outputs[layer].shape[1]
        batch = pos.outputs[layer].shape[0]
        theta = cfg.threshold_per_unit * n_out
        z_pos = (pos.goodness[layer] - theta) / cfg.temperature
        z_neg = (neg.goodness[layer] - theta) / cfg.temperature
        p_pos, p_neg = _sigmoid(z_pos), _sigmoid(z_neg)
        mean_act = pos.outputs[layer].mean(axis=0, dtype=np.float64) / s
        self.peer_mean[layer] = 0.9 * self.peer_mean[layer] + 0.1 * mean_act
        peer = (cfg.peer_strength * (self.peer_mean[layer].mean() - self.peer_mean[layer])).astype(np.float32)
        table, width = self.slopes[layer]
        c_pos, c_neg = (1.0 - p_pos) / cfg.temperature, -p_neg / cfg.temperature
        if weight is not None:
            c_pos, c_neg = c_pos * weight, c_neg * weight
        sig = np.empty((2 * batch, n_out), np.float32)
        K.ff_signal(pos.outputs[layer], 1.0 / s, c_pos, table, width, peer, sig[:batch])
        K.ff_signal(neg.outputs[layer], 1.0 / s, c_neg, table, width,
                    np.zeros(n_out, np.float32), sig[batch:])
        h = np.concatenate([pos.inputs[layer], neg.inputs[layer]], axis=0)
        grad = np.empty((h.shape[1] + 1, n_out), np.float32)
        np.matmul(h.T, sig, out=grad[:-1])
        grad[-1] = sig.sum(axis=0)
        grad *= np.float32(1.0 / batch)
        delta = np.empty_like(grad)
        bias_level = float(chip.info.bias_level)
        K.smooth_step(grad, self.smooth[layer], self.shadow[layer], cfg.momentum, cfg.lr * gain,
                      cfg.weight_cost, s / bias_level, delta)
        # signal ~6, gradient product 2 per multiply-add, smoothing/step ~6 per weight
        chip.ledger.charge_digital(6 * sig.size + 2 * h.size * n_out + 6 * grad.size)
        if chip.info.trainable[layer]:
            self.policy.apply(layer, delta)
        return np.array([np.logaddexp(0.0, -z_pos).mean(), np.logaddexp(0.0, z_neg).mean()])

    def _update_head(self, chip: Chip, feats: np.ndarray, logits: np.ndarray, labels: np.ndarray,
                     gain: float, soft: np.ndarray | None = None, weight_cost: float | None = None) -> None:
        cfg = self.config
        wc = cfg.weight_cost_head if weight_cost is None else weight_cost
        z = logits - logits.max(axis=1, keepdims=True)
        prob = np.exp(z)
        prob /= prob.sum(axis=1, keepdims=True)
        if soft is None:
            target = np.zeros_like(prob)
            target[np.arange(labels.shape[0]), labels] = 1.0
        else:
            target = soft.astype(prob.dtype)
        grad = feats.T @ (target - prob).astype(np.float32) / np.float32(labels.shape[0])
        m = np.float32(cfg.momentum)
        self.head_smooth *= m
        self.head_smooth += (1 - m) * grad
        self.head += np.float32(cfg.lr_head * gain) * (self.head_smooth - np.float32(wc) * self.head)
        chip.ledger.charge_digital(2 * feats.size * N_CLASSES + 8 * self.head.size)

    def refit_head(self, chip: Chip, images: Any, targets: Any, epochs: int = 10,
                   batch_size: int = 1000, weight_cost: float | None = None) -> "FFLearner":
        """Fit the softmax head anew, from zero, over the chip's frozen layers.

        The head's input (the normalized activities of one neutral pass) is read through the
        chip once per image and kept by the controller; the head is then trained on it for
        ``epochs`` with the learner's head settings (``lr_head``, ``momentum``,
        ``weight_cost_head``, the learning-rate schedule, ``batch_size``).  During ``fit`` the
        head chases layers that keep changing; fitted afterwards it sees their final state.

        ``targets``: labels (integers (n,)) or probabilities (float (n, 10)), such as a
        teacher's soft targets.  No device is programmed; the reads and the controller's work
        are charged to the chip's ledger.  ``batch_size``: images per read.  ``weight_cost``:
        the head's weight cost during the refit (``None``: the learner's ``weight_cost_head``).
        Soft targets bound the head's logits by themselves, so a refit to them needs less of it.
        """
        self._check_chip(chip)
        if self._sizes is None or chip is not self._chip:
            raise InputError("refit_head needs the learner fitted on this chip (call fit or fit_soft first)")
        if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 1:
            raise InputError(f"epochs must be an integer >= 1, got {epochs!r}")
        _check_batch_size(batch_size)
        if weight_cost is not None and (not is_real(weight_cost) or not math.isfinite(weight_cost)
                                        or not 0.0 <= weight_cost <= 1.0):
            raise InputError(f"weight_cost must be a number in [0, 1] or None, got {weight_cost!r}")
        x = _as_images(images)
        if np.asarray(targets).ndim == 2:
            soft = _as_targets(targets, x.shape[0])
            labels = soft.argmax(axis=1)
        else:
            soft, labels = None, _as_labels(targets, x.shape[0], "targets")
        b = self.config.batch_size
        if x.shape[0] < b:
            raise InputError(f"{x.shape[0]} images is fewer than one batch ({b})")
        feats = np.concatenate([self._features(self._forward(chip, self._embed(x[s:s + batch_size], None)))
                                for s in range(0, x.shape[0], batch_size)])
        self.head[:] = 0.0
        self.head_smooth[:] = 0.0
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.config.seed,
                                                                          spawn_key=(_HEAD_REFIT_STREAM,))))
        for e in range(epochs):
            gain = _lr_gain(e, epochs)
            order = rng.permutation(x.shape[0])
            for k in range(x.shape[0] // b):
                idx = order[k * b:(k + 1) * b]
                f = feats[idx]
                logits = f @ self.head
                chip.ledger.charge_digital(2 * f.size * N_CLASSES)
                self._update_head(chip, f, logits, labels[idx], gain, None if soft is None else soft[idx],
                                  weight_cost)
        return self

    # -- prediction -----------------------------------------------------------------------------------
    def predict(self, chip: Chip, images: Any, method: Literal["goodness", "softmax"] = "goodness",
                batch_size: int = 1000) -> np.ndarray:
        """Predicted labels (int64 (n,)) by per-label goodness (10 passes) or the softmax head (1 pass)."""
        sizes = self._check_chip(chip)
        if self._sizes is None:
            raise InputError("the learner has not been fitted yet (call fit first)")
        if method not in ("goodness", "softmax"):
            raise InputError(f"unknown method {method!r}; expected 'goodness' or 'softmax'")
        _check_batch_size(batch_size)
        x = _as_images(images)
        readout = self._readout_layers(len(sizes) - 1)
        out = np.empty(x.shape[0], np.int64)
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size]
            if method == "softmax":
                logits, _ = self._head_logits(chip, self._forward(chip, self._embed(xb, None)))
                out[start:start + xb.shape[0]] = logits.argmax(axis=1)
            else:
                out[start:start + xb.shape[0]] = self._scores(chip, xb, readout).argmax(axis=1)
        return out

    def _scores(self, chip: Chip, x: np.ndarray, readout: list[int]) -> np.ndarray:
        score = np.zeros((x.shape[0], N_CLASSES))
        for label in range(N_CLASSES):
            p = self._forward(chip, self._embed(x, label), n_layers=readout[-1] + 1)
            score[:, label] = sum(p.goodness[i] for i in readout)
        return score

    def head_logits(self, chip: Chip, images: Any, batch_size: int = 1000) -> np.ndarray:
        """The softmax head's logits, float64 (n, 10), from one neutral pass through the chip."""
        self._check_chip(chip)
        if self._sizes is None:
            raise InputError("the learner has not been fitted yet (call fit first)")
        _check_batch_size(batch_size)
        x = _as_images(images)
        out = [self._head_logits(chip, self._forward(chip, self._embed(x[s:s + batch_size], None)))[0]
               for s in range(0, x.shape[0], batch_size)]
        return np.concatenate(out, axis=0).astype(np.float64)

    def goodness_scores(self, chip: Chip, images: Any, batch_size: int = 1000) -> np.ndarray:
        """Per-label goodness, float64 (n, 10): each label embedded in turn, goodness summed
        over the readout layers (10 passes per image, read through the chip)."""
        sizes = self._check_chip(chip)
        if self._sizes is None:
            raise InputError("the learner has not been fitted yet (call fit first)")
        _check_batch_size(batch_size)
        x = _as_images(images)
        readout = self._readout_layers(len(sizes) - 1)
        return np.concatenate([self._scores(chip, x[s:s + batch_size], readout)
                               for s in range(0, x.shape[0], batch_size)], axis=0)

    def evaluate(self, chip: Chip, images: Any, labels: Any,
                 method: Literal["goodness", "softmax", "both"] | None = None) -> EvalResult:
        """Error rate(s) on ``images`` and the energy and chip time the evaluation cost."""
        x = _as_images(images)
        y = _as_labels(labels, x.shape[0])
        method = method or self.config.eval_method
        methods = ["goodness", "softmax"] if method == "both" else [method]
        before = _ledger_snapshot(chip)
        errors = {m: float(np.mean(self.predict(chip, x, m) != y)) for m in methods}
        after = _ledger_snapshot(chip)
        energy = {c: after[0][c] - before[0].get(c, 0.0) for c in after[0]}
        return EvalResult(errors=errors, n=int(x.shape[0]), energy_j=energy, chip_time_s=after[1] - before[1])


# Spawn key of refit_head's shuffling stream (training epoch e uses spawn key (e,)).
_HEAD_REFIT_STREAM = 1 << 20


def _lr_gain(epoch: int, epochs: int) -> float:
    """Learning-rate factor of epoch ``epoch`` (from 0) of ``epochs``: 1 for the first half,
    then falling linearly towards 0 (the recipe's schedule)."""
    return 1.0 if epoch + 1 <= epochs / 2 else (1.0 + 2.0 * (epochs - (epoch + 1))) / epochs


def _data_fingerprint(x: np.ndarray, y: np.ndarray, soft: np.ndarray | None = None) -> str:
    """A short digest of a training set (all labels, every k-th image, soft targets if any),
    to match checkpoints to data."""
    h = hashlib.sha256()
    h.update(np.asarray(x.shape, np.int64).tobytes())
    h.update(np.ascontiguousarray(y, np.int64).tobytes())
    h.update(np.ascontiguousarray(x[:: max(1, x.shape[0] // 256)]).tobytes())
    if soft is not None:
        h.update(np.ascontiguousarray(soft, np.float32).tobytes())
    return h.hexdigest()[:16]


def _as_targets(targets: Any, n: int) -> np.ndarray:
    """Validate soft targets: float (n, 10), finite, >= 0, each row with a positive sum;
    returned as float32 rows that sum to 1."""
    arr = np.asarray(targets)
    if arr.ndim != 2 or arr.shape != (n, N_CLASSES):
        raise InputError(f"targets have shape {arr.shape}, expected ({n}, {N_CLASSES}) to match the images")
    if arr.dtype.kind != "f":
        raise InputError(f"targets have dtype {arr.dtype}, expected float probabilities")
    a = arr.astype(np.float64)
    if not np.isfinite(a).all() or (a < 0).any():
        raise InputError("targets must be finite and non-negative")
    total = a.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        raise InputError("every row of targets needs a positive sum")
    return (a / total).astype(np.float32)


def _wrong_label_probs(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Softmax of ``logits`` over every label but ``labels`` (which get probability 0), float64."""
    z = logits.astype(np.float64)
    z[np.arange(z.shape[0]), labels] = -np.inf
    z -= z.max(axis=1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(axis=1, keepdims=True)
    return prob


def _wrong_target_probs(soft: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``soft`` with ``labels`` zeroed and rows renormalized, float64; a row with no mass left
    becomes uniform over the other labels."""
    prob = soft.astype(np.float64)
    prob[np.arange(prob.shape[0]), labels] = 0.0
    flat = prob.sum(axis=1) <= 0.0
    prob[flat] = 1.0
    prob[flat, labels[flat]] = 0.0
    prob /= prob.sum(axis=1, keepdims=True)
    return prob


def _sample_rows(prob: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of a row-stochastic matrix, by inverse CDF."""
    u = rng.random(prob.shape[0])[:, None]
    return np.minimum((np.cumsum(prob, axis=1) < u).sum(axis=1), prob.shape[1] - 1)


def _ledger_snapshot(chip: Chip) -> tuple[dict[str, float], float]:
    led = chip.ledger
    return {k: float(v) for k, v in led.energy_j.items()}, float(led.total_time_s)


def _log_sink(log: Callable[[dict[str, Any]], None] | str | Path | None) -> Callable[[dict[str, Any]], None]:
    if log is None:
        return lambda record: None
    if callable(log):
        return log
    path = Path(log)
    try:  # fail now, not after an epoch of training
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as exc:
        raise InputError(f"cannot write the log {path}: {exc}") from None

    def write(record: dict[str, Any]) -> None:
        with open(path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    return write
