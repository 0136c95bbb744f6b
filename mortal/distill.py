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
   drawn from the student's own head (or in proportion to the teacher's
   probabilities of the wrong labels), and the softmax head fitted to ``p``.

Every teacher read and every student step is charged to that chip's ledger.

Modes (``FFConfig.mode``): a teacher of a mode without the per-label goodness readout
(``unsupervised``) teaches through its softmax head only (``teacher_readout="softmax"``;
``goodness`` and ``combined`` are refused before any read).  A student of such a mode needs
no label for its layers: they learn the transfer images against their hybrids, exactly as
when training from labels, and its softmax head (trained alongside, then refitted) is fitted
to the teacher's probabilities; ``positives``, ``negatives``, ``weighting`` and
``min_confidence``, which shape a supervised student's layer updates, must keep their
defaults there (refused otherwise, before any read).  Its hybrid masks need the images'
shape: that of ``transfer_inputs`` if they are images, else ``example_shape``, else the one
the teacher's learner kept.  Teacher and student may be of different modes when their chips
have the same layer sizes (a supervised teacher's labels over its first inputs).  A teacher or
student of mode ``recurrent`` takes part like a supervised one (its layers learn from the wrong
labels on top); its chip must have the top-down layout (refused otherwise, saying how to build one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from . import ops
from .chip import Chip, check_chip
from .errors import InputError
from .ff import FFConfig, FFLearner, energy_since, ledger_snapshot, log_sink
from .ff.hybrid import example_shape_from
from .ff.modes import mode_recipe, settle_shape
from .validate import as_inputs, as_labels, both_or_neither, real_in

__all__ = ["DistillConfig", "DistillResult", "distill", "teacher_probabilities", "check_alive", "check_modes"]


class DistillConfig(BaseModel):
    """Settings of a transfer.  The student's own training settings are its learner's
    ``FFConfig``; its training ends with that config's head refit (``refit``), here to the
    teacher's soft targets.  Defaults: the settings chosen on held-out images
    (``benchmarks/RESULTS.md``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)

    temperature: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    """Softness of the teacher's probabilities: its logits are divided by this (1: the teacher's
    own calibration; larger: softer)."""
    teacher_readout: Literal["goodness", "softmax", "combined"] = "softmax"
    """The teacher's logits: its summed goodness log-odds (k passes per example), its softmax
    head's logits (1 pass), or their sum."""
    positives: Literal["argmax", "sample"] = "argmax"
    """Label of the student's positive data: the teacher's most likely label, or a draw from the
    teacher's probabilities (anew every batch)."""
    negatives: Literal["teacher", "own", "mixed"] = "own"
    """Where the student's negative labels come from: the teacher's probabilities of the wrong
    labels, the student's own one-pass head (as when training from labels), or their mean."""
    weighting: Literal["none", "confidence"] = "none"
    """confidence: each example's update of the student's layers is weighted by the teacher's
    probability of its positive label."""
    min_confidence: float = Field(0.0, ge=0.0, lt=1.0)
    """Examples whose largest teacher probability is below this train only the student's head."""
    student_epochs: Optional[int] = Field(None, ge=1, le=100_000)
    """Epochs of the student's training (student_config derives the student's settings with
    them; distill refuses a student learner set to other epochs); None: twice the teacher's."""
    query_batch: int = Field(1000, ge=1, le=100_000)
    """Examples per batch when the teacher is read."""

    def student_config(self, teacher: FFConfig, seed: int) -> FFConfig:
        """The student's settings: the teacher's, with ``student_epochs`` and ``seed``."""
        epochs = self.student_epochs if self.student_epochs is not None else min(2 * teacher.epochs, 100_000)
        return teacher.changed(epochs=epochs, seed=seed)


@dataclass
class DistillResult:
    """What a transfer produced and cost.

    ``teacher_probs`` float32 (n, k): the soft targets; ``teacher_energy_j`` and
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


def teacher_probabilities(teacher: Chip, teacher_learner: FFLearner, inputs: Any, temperature: float = 1.0,
                          batch_size: int = 1000, readout: str = "softmax") -> np.ndarray:
    """The teacher's soft labels, float32 (n, k), from its per-label goodness read through the
    chip, from its softmax head (``readout="softmax"``), or from both (``"combined"``)."""
    temperature = real_in(temperature, "temperature", 0.0, float("inf"), lo_open=True, hi_open=True)
    if readout not in ("goodness", "softmax", "combined"):
        raise InputError(f"readout must be 'goodness', 'softmax' or 'combined', got {readout!r}")
    st = teacher_learner.check_bound(teacher)
    x = as_inputs(inputs, "inputs", st.layout.n_data)
    z = np.zeros((x.shape[0], st.n_classes))
    if readout != "softmax":
        z += teacher_learner.goodness_scores(teacher, x, batch_size=batch_size)
        z /= teacher_learner.config.recipe.goodness_temperature
    if readout != "goodness":
        z += teacher_learner.head_logits(teacher, x, batch_size=batch_size)
    z /= float(temperature)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    teacher.ledger.charge_digital(ops.probability_ops(p.size))
    return p.astype(np.float32)


def check_modes(cfg: DistillConfig, teacher: FFConfig, student: FFConfig) -> None:
    """InputError if the transfer settings ``cfg`` do not fit the teacher's and the student's
    modes (see the module docstring): a goodness readout the teacher's mode lacks, or rules for
    the layers' negatives and positives in a student mode whose layers never see a label."""
    t_mode, s_mode = mode_recipe(teacher), mode_recipe(student)
    if cfg.teacher_readout != "softmax" and "goodness" not in t_mode.methods:
        raise InputError(f"teacher_readout={cfg.teacher_readout!r} needs the teacher's per-label goodness, which its "
                         f"mode {t_mode.name!r} does not have; use teacher_readout='softmax'")
    if not s_mode.label_inputs and not s_mode.top_down and cfg.negatives != "own":
        raise InputError(f"the student's mode {s_mode.name!r} learns against hybrid images, not wrong labels; "
                         "negatives must keep its default 'own'")
    s_mode.check_soft_rules(cfg.positives, cfg.weighting, cfg.min_confidence)


def distill(teacher: Chip, student: Chip, teacher_learner: FFLearner, student_learner: FFLearner,
            transfer_inputs: Any, config: DistillConfig | None = None, *, test_inputs: Any = None,
            test_labels: Any = None, log: Callable[[dict[str, Any]], None] | str | None = None,
            progress: bool | None = None, example_shape: Any = None) -> DistillResult:
    """Train ``student`` from ``teacher`` on unlabelled ``transfer_inputs``; both through ``Chip`` only.

    Parameters
    ----------
    teacher, student : Chip
        The same layer sizes; neither may be dead.
    teacher_learner : FFLearner
        The learner fitted on (or loaded with) ``teacher``: its label layout and readouts.
    student_learner : FFLearner
        A fresh learner; its ``config`` sets the student's training (epochs, policy, refit, ...);
        ``DistillConfig.student_config(teacher_learner.config, seed)`` derives one from the teacher's.
    transfer_inputs : array (n, d) or (n, ...)
        Unlabelled examples; they may differ from the teacher's training data.
    test_inputs, test_labels : optional
        Evaluated on the student during training, for reporting only.
    example_shape : tuple of int, optional
        The images' shape (H, W) or (H, W, C) for flat ``transfer_inputs`` (a student of mode
        ``unsupervised`` needs it; default: the teacher learner's).

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
    if not teacher_learner.fitted or teacher_learner.chip is not teacher:
        raise InputError("teacher_learner must be the learner fitted on the teacher chip")
    if student_learner.fitted:
        raise InputError("student_learner has been used already; distill needs a fresh FFLearner")
    st = teacher_learner.check_bound(teacher)
    check_modes(cfg, teacher_learner.config, student_learner.config)
    s_mode = mode_recipe(student_learner.config)
    shape = settle_shape(s_mode, example_shape_from(transfer_inputs, example_shape) or st.example_shape, None)
    x = as_inputs(transfer_inputs, "transfer_inputs", st.layout.n_data)
    if x.shape[0] < student_learner.config.batch_size:
        raise InputError(f"{x.shape[0]} transfer examples is fewer than one student batch "
                         f"({student_learner.config.batch_size})")
    if both_or_neither(test_inputs, test_labels, "test_inputs and test_labels"):
        xt = as_inputs(test_inputs, "test_inputs", st.layout.n_data)
        as_labels(test_labels, xt.shape[0], st.n_classes, "test_labels")
    # The student's state is made (and checked against its chip) before any read.
    student_learner.new_state(student, st.layout.n_data, st.n_classes)
    if cfg.student_epochs is not None and cfg.student_epochs != student_learner.config.epochs:
        raise InputError(f"the config asks for {cfg.student_epochs} student epochs (student_epochs) but the student "
                         f"learner's settings train {student_learner.config.epochs}; build the student's settings "
                         "with DistillConfig.student_config, or leave student_epochs unset")

    sink = log_sink(log)  # a log path that cannot be written fails here, before any read
    t0 = ledger_snapshot(teacher)
    probs = teacher_probabilities(teacher, teacher_learner, x, cfg.temperature, cfg.query_batch,
                                  cfg.teacher_readout)
    t_energy, t_time = energy_since(teacher, t0)
    s0 = ledger_snapshot(student)
    student_learner.fit_soft(student, x, probs, positives=cfg.positives, min_confidence=cfg.min_confidence,
                             negatives="targets" if cfg.negatives == "teacher" else cfg.negatives,
                             weighting=cfg.weighting, test_inputs=test_inputs, test_labels=test_labels,
                             log=sink, progress=progress, example_shape=shape)
    s_energy, s_time = energy_since(student, s0)
    agreement = float(np.mean(student_learner.predict(student, x, "softmax") == probs.argmax(axis=1)))
    return DistillResult(
        teacher_probs=probs, teacher_energy_j=t_energy, teacher_time_s=t_time,
        student_energy_j=s_energy, student_time_s=s_time,
        agreement=agreement, history=list(student_learner.history),
    )


def _mean_entropy(p: np.ndarray) -> float:
    q = np.clip(p.astype(np.float64), 1e-12, 1.0)
    return float(-(q * np.log(q)).sum(axis=1).mean())
