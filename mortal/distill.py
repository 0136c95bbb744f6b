"""Distillation: a dying teacher chip teaches a fresh student chip, through reads only.

Knowledge in a mortal chip lives in its own devices and neurons and cannot be
copied as weights.  :func:`distill` passes it on by teaching:

1. the teacher's per-label goodness on the (unlabelled) transfer images is
   measured through the teacher chip and turned into probabilities,
   ``p = softmax(scores / (tau * T))``: ``scores`` the goodness summed over the
   readout layers, ``tau`` the teacher learner's own logistic temperature (so at
   ``T = 1`` the logits are the summed log-odds the teacher was trained on) and
   ``T`` the distillation temperature;
2. the student learns with Forward-Forward from these soft targets
   (:meth:`mortal.ff.FFLearner.fit_soft`): positive data labelled with the
   teacher's most likely label (or a label drawn from ``p``), negative labels
   drawn in proportion to the teacher's probabilities of the wrong labels, and
   the softmax head fitted to ``p``.

Every teacher read and every student step is charged to that chip's ledger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .chip import Chip, check_chip
from .errors import InputError
from .ff import FFLearner, _as_images, _as_labels, _ledger_snapshot, _log_sink, is_real

__all__ = ["DistillConfig", "DistillResult", "distill", "teacher_probabilities", "check_alive"]


class DistillConfig(BaseModel):
    """Settings of a transfer (the student's own training settings are its learner's ``FFConfig``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    """Softness of the teacher's probabilities: logits are the teacher's summed goodness
    log-odds divided by T (T = 1: the teacher's own calibration; larger: softer)."""
    positives: Literal["argmax", "sample"] = "argmax"
    """Label of the student's positive data: the teacher's most likely label, or a draw from
    the teacher's probabilities (anew every epoch)."""
    teacher_readout: Literal["goodness", "softmax", "combined"] = "softmax"
    """The teacher's logits: its summed goodness log-odds (10 passes per image), its softmax
    head's logits (1 pass), or their sum (a product of the two readouts' probabilities)."""
    min_confidence: float = Field(0.0, ge=0.0, lt=1.0)
    """Transfer images whose teacher probability of its most likely label is below this train
    only the student's head, not its layers (0: every image trains the layers)."""
    negatives: Literal["teacher", "own", "mixed"] = "teacher"
    """Where the student's negative labels come from: drawn in proportion to the teacher's
    probabilities of the wrong labels, to the student's own (its one-pass head, as when it
    trains from labels), or to the mean of the two."""
    weighting: Literal["none", "confidence"] = "none"
    """``"confidence"``: each transfer image's update of the student's layers is weighted by the
    teacher's probability of its positive label, so that labels the teacher is unsure of (where
    its wrong labels concentrate) teach less, without dropping any image (``min_confidence``
    drops them)."""
    head_epochs: int = Field(0, ge=0, le=1000)
    """After the student's training, its softmax head is fitted anew over its frozen layers to
    the teacher's soft targets for this many epochs (``FFLearner.refit_head``; 0: not)."""
    head_weight_cost: Optional[float] = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    """Weight cost of the head during that refit (``None``: the student learner's
    ``weight_cost_head``).  The soft targets bound the head's logits by themselves; 0 lets the
    head follow the teacher more closely."""
    query_batch: int = Field(1000, ge=1, le=100_000)
    """Images per batch when the teacher is read."""


@dataclass
class DistillResult:
    """What a transfer produced and cost.

    ``teacher_probs`` float32 (n, 10): the soft targets; ``teacher_energy_j`` and
    ``teacher_time_s``: the teacher's reads; ``student_energy_j`` and ``student_time_s``:
    the student's training (by ledger category); ``history``: the student's epoch records;
    ``agreement``: share of transfer images whose teacher argmax the student's softmax
    head reproduces at the end (measured through the student, charged to it).
    """

    teacher_probs: np.ndarray
    teacher_energy_j: dict[str, float]
    teacher_time_s: float
    student_energy_j: dict[str, float]
    student_time_s: float
    agreement: float
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_energy_j(self) -> float:
        """Teacher reads plus student training, joules."""
        return float(sum(self.teacher_energy_j.values()) + sum(self.student_energy_j.values()))

    def summary(self) -> dict[str, Any]:
        return {
            "teacher_energy_j": float(sum(self.teacher_energy_j.values())),
            "student_energy_j": float(sum(self.student_energy_j.values())),
            "total_energy_j": self.total_energy_j,
            "teacher_time_s": self.teacher_time_s,
            "student_time_s": self.student_time_s,
            "agreement": self.agreement,
            "teacher_entropy_nats": _mean_entropy(self.teacher_probs),
        }


def check_alive(chip: Any, role: str = "chip") -> None:
    """Raise ``InputError`` if ``chip`` reports itself dead (an optional ``dead`` attribute)."""
    if bool(getattr(chip, "dead", False)):
        raise InputError(f"the {role} chip is dead (it reports dead=True) and cannot take part in a transfer")


def teacher_probabilities(teacher: Chip, teacher_learner: FFLearner, images: Any, temperature: float = 1.0,
                          batch_size: int = 1000, readout: str = "goodness") -> np.ndarray:
    """The teacher's soft labels, float32 (n, 10), from its per-label goodness read through the
    chip, from its softmax head (``readout="softmax"``), or from both (``"combined"``)."""
    if not is_real(temperature) or not math.isfinite(temperature) or temperature <= 0:
        raise InputError(f"temperature must be a finite number > 0, got {temperature!r}")
    if readout not in ("goodness", "softmax", "combined"):
        raise InputError(f"readout must be 'goodness', 'softmax' or 'combined', got {readout!r}")
    z = np.zeros((_as_images(images).shape[0], 10))
    if readout != "softmax":
        z += teacher_learner.goodness_scores(teacher, images, batch_size=batch_size)
        z /= teacher_learner.config.temperature
    if readout != "goodness":
        z += teacher_learner.head_logits(teacher, images, batch_size=batch_size)
    z /= float(temperature)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    teacher.ledger.charge_digital(4 * p.size)
    return p.astype(np.float32)


def distill(teacher: Chip, student: Chip, teacher_learner: FFLearner, student_learner: FFLearner,
            transfer_images: Any, config: DistillConfig | None = None, *, test_images: Any = None,
            test_labels: Any = None, log: Callable[[dict[str, Any]], None] | str | None = None,
            progress: bool | None = None) -> DistillResult:
    """Train ``student`` from ``teacher`` on unlabelled ``transfer_images``; both through ``Chip`` only.

    Parameters
    ----------
    teacher, student : Chip
        The same layer sizes; the student must not be dead, nor the teacher.
    teacher_learner : FFLearner
        The learner fitted on ``teacher`` (its controller memory: label embedding and readout).
    student_learner : FFLearner
        A fresh learner; its ``config`` sets the student's training (epochs, policy, ...).
    transfer_images : array (n, 28, 28) or (n, 784)
        Unlabelled images; they may differ from the teacher's training images.
    test_images, test_labels : optional
        Evaluated on the student during training, for reporting only.

    Everything is validated before either chip is read or programmed.
    """
    cfg = config if config is not None else DistillConfig()
    if not isinstance(cfg, DistillConfig):
        raise InputError(f"config must be a DistillConfig, got {type(cfg).__name__}")
    for role, chip in (("teacher", teacher), ("student", student)):
        try:
            check_chip(chip)
        except TypeError as exc:
            raise InputError(f"the {role}: {exc}") from None
    if teacher is student:
        raise InputError("teacher and student must be two different chips")
    t_sizes = tuple(int(s) for s in teacher.info.layer_sizes)
    s_sizes = tuple(int(s) for s in student.info.layer_sizes)
    if t_sizes != s_sizes:
        raise InputError(f"teacher and student need the same layer sizes, got {t_sizes} and {s_sizes}")
    check_alive(teacher, "teacher")
    check_alive(student, "student")
    for role, learner in (("teacher_learner", teacher_learner), ("student_learner", student_learner)):
        if not isinstance(learner, FFLearner):
            raise InputError(f"{role} must be an FFLearner, got {type(learner).__name__}")
    if teacher_learner is student_learner:
        raise InputError("teacher and student need their own learners")
    if teacher_learner._sizes is None or teacher_learner._chip is not teacher:
        raise InputError("teacher_learner must be the learner fitted on the teacher chip")
    if student_learner._chip is not None:
        raise InputError("student_learner has been used already; distill needs a fresh FFLearner")
    if student_learner.config.checkpoint_every:
        raise InputError("the student learner's config sets checkpoint_every, which distill does not support; "
                         "set it to 0")
    teacher_learner._check_chip(teacher)
    student_learner._check_chip(student, bound=False)
    x = _as_images(transfer_images, "transfer_images")
    if x.shape[0] < student_learner.config.batch_size:
        raise InputError(f"{x.shape[0]} transfer images is fewer than one student batch "
                         f"({student_learner.config.batch_size})")
    if (test_images is None) != (test_labels is None):
        raise InputError("give both test_images and test_labels, or neither")
    if test_images is not None:
        xt = _as_images(test_images, "test_images")
        _as_labels(test_labels, xt.shape[0], "test_labels")

    sink = _log_sink(log)  # a log path that cannot be written fails here, before any read
    t0 = _ledger_snapshot(teacher)
    probs = teacher_probabilities(teacher, teacher_learner, x, cfg.temperature, cfg.query_batch,
                                  cfg.teacher_readout)
    t1 = _ledger_snapshot(teacher)
    s0 = _ledger_snapshot(student)
    student_learner.fit_soft(student, x, probs, positives=cfg.positives, min_confidence=cfg.min_confidence,
                             negatives="targets" if cfg.negatives == "teacher" else cfg.negatives,
                             weighting=cfg.weighting,
                             test_images=test_images,
                             test_labels=test_labels, log=sink, progress=progress)
    if cfg.head_epochs:
        student_learner.refit_head(student, x, probs, cfg.head_epochs, cfg.query_batch, cfg.head_weight_cost)
    s1 = _ledger_snapshot(student)
    agreement = float(np.mean(student_learner.predict(student, x, "softmax") == probs.argmax(axis=1)))
    return DistillResult(
        teacher_probs=probs,
        teacher_energy_j=_diff(t0[0], t1[0]), teacher_time_s=t1[1] - t0[1],
        student_energy_j=_diff(s0[0], s1[0]), student_time_s=s1[1] - s0[1],
        agreement=agreement, history=list(student_learner.history),
    )


def _diff(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def _mean_entropy(p: np.ndarray) -> float:
    q = np.clip(p.astype(np.float64), 1e-12, 1.0)
    return float(-(q * np.log(q)).sum(axis=1).mean())

