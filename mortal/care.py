"""Controller-side care of an ageing chip: drift compensation and a health monitor.

Both work through the ``Chip`` protocol and an :class:`~mortal.ff.FFLearner`
bound to the chip; every read they make is charged to the chip's ledger by the
chip itself, and their arithmetic is charged as digital work.

* :class:`DriftCompensator` reads a fixed reference input right after training
  and again later; the ratio of the mean measured outputs rescales every
  later measurement digitally, per layer (``mode="global"``) or per column
  (``mode="column"``).  This is the scheme of PCM inference chips: it undoes
  the common shrinkage of drifting conductances, not the spread between
  devices, the converters' lost resolution or the neurons' fixed offsets.
* :class:`HealthMonitor` measures the error on a small labelled probe set
  through the chip and declares the chip *dying* when the error passes a
  threshold or rises too fast.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Optional

import numpy as np

from . import ops
from .chip import Chip
from .errors import InputError
from .ff import FFLearner
from .validate import as_class_labels, as_inputs, is_real

__all__ = ["DriftCompensator", "HealthMonitor", "HealthReport", "SECONDS_PER_DAY", "SECONDS_PER_YEAR"]

SECONDS_PER_DAY = 86400.0
SECONDS_PER_YEAR = 365.25 * SECONDS_PER_DAY


def _check_fitted(learner: Any, chip: Chip) -> FFLearner:
    if not isinstance(learner, FFLearner):
        raise InputError(f"learner must be an FFLearner, got {type(learner).__name__}")
    learner.check_bound(chip)
    return learner


class DriftCompensator:
    """Rescale measured outputs from reads of a fixed reference input.

    Parameters
    ----------
    reference_images : array (n, d) or (n, ...)
        The fixed reference input, sent with the neutral label (no labels needed).
        A few hundred images suffice.
    mode : "global" or "column"
        One factor per layer, or one per output column.  Per-column factors suit the
        softmax head; for the per-label goodness readout one factor per layer does better,
        because a column's factor also absorbs its neuron's non-linear response to the
        shrunken currents and reweights the columns in the goodness sums.
    floor : float
        Columns whose mean reference output is below ``floor`` times the
        layer mean (at calibration or now) take the layer's global factor.

    Use: ``comp.calibrate(chip, learner)`` right after training, then
    ``comp.update(chip, learner)`` whenever the chip has aged; ``update``
    sets the drift correction of the learner's controller state
    (``learner.state.correction``), which every later forward pass applies.
    """

    def __init__(self, reference_images: Any, mode: Literal["global", "column"] = "column",
                 floor: float = 0.05) -> None:
        if mode not in ("global", "column"):
            raise InputError(f"mode must be 'global' or 'column', got {mode!r}")
        if not is_real(floor) or not 0.0 < float(floor) < 1.0:
            raise InputError(f"floor must lie in (0, 1), got {floor!r}")
        self.reference = as_inputs(reference_images, "reference_images")
        self.mode = mode
        self.floor = float(floor)
        self._ref: Optional[list[np.ndarray]] = None
        self.factors: Optional[list[np.ndarray]] = None

    @property
    def calibrated(self) -> bool:
        return self._ref is not None

    def _column_means(self, chip: Chip, learner: FFLearner) -> list[np.ndarray]:
        """Mean measured output per column of each layer, each layer fed through the
        already-corrected layers before it (so a layer's factor sees corrected inputs)."""
        x = learner.embed(self.reference, None)
        n_layers = len(chip.info.layer_sizes) - 1
        means = []
        partial = [np.ones(chip.info.layer_sizes[i + 1], np.float32) for i in range(n_layers)]
        for layer in range(n_layers):
            p = learner.forward(chip, x, n_layers=layer + 1, correction=partial)
            m = p.outputs[layer].mean(axis=0, dtype=np.float64)
            means.append(m)
            if self._ref is not None:
                partial[layer] = self._factor(layer, m)
        chip.ledger.charge_digital(sum(ops.column_mean_ops(x.shape[0], m.size) for m in means))
        return means

    def _factor(self, layer: int, now: np.ndarray) -> np.ndarray:
        ref = self._ref[layer]  # type: ignore[index]
        g_ref, g_now = float(ref.mean()), float(now.mean())
        glob = g_ref / g_now if g_now > 0 and g_ref > 0 else 1.0
        if self.mode == "global":
            return np.full(ref.shape, glob, np.float32)
        ok = (ref > self.floor * max(g_ref, 1e-30)) & (now > self.floor * max(g_now, 1e-30))
        f = np.full(ref.shape, glob, np.float64)
        f[ok] = ref[ok] / now[ok]
        return f.astype(np.float32)

    def calibrate(self, chip: Chip, learner: FFLearner) -> None:
        """Record the reference outputs (no correction applied); clears the learner's drift correction."""
        _check_fitted(learner, chip)
        learner.state.correction = None  # type: ignore[union-attr]
        self._ref = None
        self._ref = self._column_means(chip, learner)
        self.factors = [np.ones(m.shape, np.float32) for m in self._ref]

    def update(self, chip: Chip, learner: FFLearner) -> list[np.ndarray]:
        """Re-read the reference; set the learner's drift correction to the new factors and return them."""
        _check_fitted(learner, chip)
        if self._ref is None:
            raise InputError("calibrate the compensator on the freshly trained chip before update")
        if [m.size for m in self._ref] != list(chip.info.layer_sizes[1:]):
            raise InputError("this compensator was calibrated on a chip with other layer sizes")
        now = self._column_means(chip, learner)
        self.factors = [self._factor(i, m) for i, m in enumerate(now)]
        learner.state.correction = [f.copy() for f in self.factors]  # type: ignore[union-attr]
        return self.factors

    def summary(self) -> dict[str, float]:
        """Mean factor per layer (1.0 before any update)."""
        if self.factors is None:
            return {}
        return {f"layer{i}": float(f.mean()) for i, f in enumerate(self.factors)}


@dataclass(frozen=True)
class HealthReport:
    """One check of :class:`HealthMonitor`."""

    time_s: float
    error: float
    status: Literal["healthy", "dying"]
    reason: str
    energy_j: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HealthMonitor:
    """Periodic error on a small labelled probe set, measured through the chip.

    Parameters
    ----------
    images, labels : arrays
        The probe set (a few hundred labelled images kept by the controller).
    max_error : float
        The chip is dying once the probe error exceeds this.
    max_rise_per_day : float, optional
        ... or once the error rose faster than this (error per simulated day)
        since the previous check.
    method : "softmax" or "goodness"
        The readout used for the probe (softmax is one pass, goodness ten).
    """

    def __init__(self, images: Any, labels: Any, *, max_error: float,
                 max_rise_per_day: float | None = None,
                 method: Literal["softmax", "goodness"] = "softmax") -> None:
        self.images = as_inputs(images, "probe images")
        self.labels = as_class_labels(labels, self.images.shape[0], "probe labels")
        if not is_real(max_error) or not 0.0 < float(max_error) < 1.0:
            raise InputError(f"max_error must lie in (0, 1), got {max_error!r}")
        if max_rise_per_day is not None and (not is_real(max_rise_per_day)
                                             or not float(max_rise_per_day) > 0.0
                                             or not math.isfinite(float(max_rise_per_day))):
            raise InputError(f"max_rise_per_day must be a positive number, got {max_rise_per_day!r}")
        if method not in ("softmax", "goodness"):
            raise InputError(f"method must be 'softmax' or 'goodness', got {method!r}")
        self.max_error = float(max_error)
        self.max_rise_per_day = None if max_rise_per_day is None else float(max_rise_per_day)
        self.method = method
        self.history: list[HealthReport] = []

    def check(self, chip: Chip, learner: FFLearner) -> HealthReport:
        """Measure the probe error now and append a report to ``history``."""
        _check_fitted(learner, chip)
        res = learner.evaluate(chip, self.images, self.labels, method=self.method)
        err = res.errors[self.method]
        now = float(chip.ledger.total_time_s)
        status, reason = "healthy", ""
        if err > self.max_error:
            status, reason = "dying", f"probe error {err:.4f} above {self.max_error:.4f}"
        elif self.max_rise_per_day is not None and self.history:
            prev = self.history[-1]
            days = (now - prev.time_s) / SECONDS_PER_DAY
            if days > 0 and (err - prev.error) / days > self.max_rise_per_day:
                status = "dying"
                reason = (f"probe error rose {err - prev.error:+.4f} in {days:.3g} days "
                          f"(limit {self.max_rise_per_day:g} per day)")
        report = HealthReport(time_s=now, error=err, status=status, reason=reason,
                              energy_j=res.total_energy_j)
        self.history.append(report)
        return report
