"""Lifetimes of mortal chips: train, age with care, and hand knowledge on before death.

This is composition code: it builds chips from ``devices`` (the learning modules
never do).  It holds

* :func:`weight_copy`, the *immortal* baseline: a fresh chip programmed (by
  program-and-verify) with another chip's effective weights, read out with
  ``devices.inspect``.  Real
  mortal hardware cannot do this; it is shown as the reference it is.
* :class:`LifetimeConfig` and :func:`run_lifetime`: train generation 0 from
  labels, let it age in steps of simulated time with drift compensation and a
  health monitor, distill it into a freshly fabricated chip when it is dying,
  and repeat for the given number of generations.  Every event is one JSON
  record.

Chip ``g`` of a lifetime run is fabricated from ``SeedSequence(seed,
spawn_key=(g,))``; the learners are seeded with ``seed + g``.  Generation 0 trains
with the ``train`` settings; every later generation with
``distill.student_config(train, seed + g)`` from its teacher's soft targets.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

import devices

from .care import SECONDS_PER_DAY, SECONDS_PER_YEAR, DriftCompensator, HealthMonitor
from .config import chip_input_width, chip_top_down, image_shape, known_preset, positive_widths
from .distill import DistillConfig, check_modes, distill
from .errors import InputError
from .ff import FFConfig, FFLearner

__all__ = ["weight_copy", "LifetimeConfig", "run_lifetime", "parse_duration", "format_duration",
           "SECONDS_PER_YEAR"]

_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": SECONDS_PER_DAY, "w": 7 * SECONDS_PER_DAY,
          "mo": SECONDS_PER_YEAR / 12, "y": SECONDS_PER_YEAR}


def parse_duration(text: str | float | int) -> float:
    """Seconds from a number or a string such as ``"30d"``, ``"6mo"``, ``"1.5y"``, ``"12h"``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(s|min|h|d|w|mo|y)?\s*", str(text))
        if not m:
            raise ValueError(f"cannot read the duration {text!r}; use a number of seconds or e.g. 12h, 30d, 6mo, 2y")
        value = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a duration must be positive and finite, got {text!r}")
    return value


def format_duration(seconds: float) -> str:
    """Short human form of a simulated duration."""
    for unit, size in (("y", SECONDS_PER_YEAR), ("d", SECONDS_PER_DAY), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def weight_copy(teacher: devices.AnalogChip, student: devices.AnalogChip, teacher_learner: FFLearner,
                rounds: int = 1) -> FFLearner:
    """Program ``student`` with ``teacher``'s effective weights; return a learner for it.

    The teacher's effective weights are read with ``devices.inspect`` (an analysis call: a
    real controller would have to measure them) and deployed on the student by
    ``program_verify``, as a chip deploys fixed weights: charged for its pulses and verify
    reads, and left with the residual error that program-and-verify leaves on such devices.
    ``rounds`` > 1 writes the weights that many times (each a fresh program-and-verify; the
    last one's residual error stands).  The
    returned learner holds a copy of the teacher's controller memory (head, peer means, and any
    drift correction, which matches the drifted weights copied).  What cannot be copied is the
    neurons: each chip has its own.
    """
    for role, chip in (("teacher", teacher), ("student", student)):
        if not isinstance(chip, devices.AnalogChip):
            raise InputError(f"weight_copy needs chips from devices.make_chip; the {role} is {type(chip).__name__}")
    if teacher.info.layer_sizes != student.info.layer_sizes:
        raise InputError(f"teacher and student need the same layer sizes, got {teacher.info.layer_sizes} "
                         f"and {student.info.layer_sizes}")
    if teacher is student:
        raise InputError("teacher and student must be two different chips")
    if student.dead:
        raise InputError("the student chip is dead (it reports dead=True)")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise InputError(f"rounds must be a positive integer, got {rounds!r}")
    teacher_learner.check_bound(teacher)
    learner = teacher_learner.copy_controller(student)
    # The devices' weights, without the teacher's IR drop: the student's own wires apply theirs.
    target = [L.device_weights for L in devices.inspect(teacher).layers]
    for _ in range(rounds):
        for i, w in enumerate(target):
            if student.info.trainable[i]:
                student.program_verify(i, w)
    return learner


class LifetimeConfig(BaseModel):
    """Settings of a lifetime run (durations accept seconds or strings like ``"30d"``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)

    preset: str = "pcm"
    """Device preset of every chip."""
    layers: tuple[int, ...] = (1000, 1000, 1000)
    """Hidden layer widths."""
    generations: int = Field(3, ge=1, le=100)
    """Chips in the lineage."""
    seed: int = Field(0, ge=0)
    """Root seed: chip g is SeedSequence(seed, spawn_key=(g,)), its learner seed + g."""
    check_every: float = 30 * SECONDS_PER_DAY
    """Simulated time between health checks."""
    max_age: float = 20 * SECONDS_PER_YEAR
    """A chip is retired (and distilled) at this age even if it never reports dying."""
    probe_size: int = Field(500, ge=10)
    """Labelled probe examples kept by the controller for the health monitor (taken from the end
    of the training set)."""
    margin: float = Field(0.03, gt=0.0, lt=1.0)
    """Dying once the probe error exceeds the first post-training probe error by this much."""
    max_rise_per_day: Optional[float] = Field(None, gt=0.0, allow_inf_nan=False)
    """Dying once the probe error rises faster than this per simulated day."""
    compensation: Literal["none", "global", "column"] = "column"
    """Drift compensation: none, one factor per layer, or one per column."""
    reference_size: int = Field(200, ge=1)
    """Unlabelled examples the drift compensator reads as its fixed reference."""
    transfer_size: Optional[int] = Field(None, ge=1)
    """Unlabelled transfer examples per distillation (default: all training examples)."""
    train: FFConfig = Field(default_factory=FFConfig)
    """Generation 0's training from labels (its seed is replaced by the lifetime seed)."""
    distill: DistillConfig = Field(default_factory=DistillConfig)
    """Each transfer; the students train with distill.student_config(train)."""

    _durations = field_validator("check_every", "max_age", mode="before")(parse_duration)
    _widths = field_validator("layers")(positive_widths)
    _preset = field_validator("preset")(known_preset)


def run_lifetime(config: LifetimeConfig, data: Any, emit: Callable[[dict[str, Any]], None] | None = None,
                 progress: bool = False) -> list[dict[str, Any]]:
    """Run a lifetime on ``data`` (a :class:`mortal.data.Dataset`) and return its events (also
    passed to ``emit`` as they happen).

    Events (``event`` field): ``trained`` (generation 0 after training from labels),
    ``check`` (one health check: probe error, softmax test error, compensation factors,
    stuck fraction; both readouts are measured at ``trained`` and ``distilled``), ``dying``
    (the monitor's verdict), ``distilled`` (a new generation trained from the dying one:
    energies and errors), ``retired`` (the last chip at the end).  ``dying`` and ``retired``
    carry ``dead``: a chip found dead then (half of some layer's devices stuck) cannot teach,
    so the lineage ends with it, before ``generations`` chips if need be.  ``time_s`` is
    simulated time since generation 0 was fabricated; ``age_s`` the chip's own age.
    """
    from .data import Dataset

    if not isinstance(config, LifetimeConfig):
        raise InputError(f"config must be a LifetimeConfig, got {type(config).__name__}")
    if not isinstance(data, Dataset):
        raise InputError(f"data must be a mortal.data.Dataset (e.g. load_dataset(\"mini\")), got {type(data).__name__}")
    cfg = config
    spec = devices.get_preset(cfg.preset)
    sizes = (chip_input_width(spec, cfg.train, data),) + tuple(cfg.layers)
    try:
        devices.check_memory(spec, sizes, chip_top_down(spec, cfg.train, data.n_classes, sizes))
    except ValueError as exc:
        raise InputError(f"layers: {exc}") from None
    # Every transfer's settings against the modes, before generation 0 trains (its students
    # train with the teacher's settings: distill.student_config).
    check_modes(cfg.distill, cfg.train, cfg.distill.student_config(cfg.train, cfg.seed))
    n = data.n_train
    if cfg.probe_size + cfg.reference_size > n - 1:
        raise InputError(f"probe_size + reference_size ({cfg.probe_size} + {cfg.reference_size}) must leave "
                         f"training examples (there are {n})")
    n_fit = n - cfg.probe_size
    n_transfer = n_fit if cfg.transfer_size is None else min(cfg.transfer_size, n_fit)
    if min(n_fit, n_transfer) < cfg.train.batch_size:
        raise InputError(f"{min(n_fit, n_transfer)} training/transfer examples is fewer than one batch "
                         f"({cfg.train.batch_size}); use more data or a smaller probe_size/transfer_size")
    events: list[dict[str, Any]] = []

    def put(ev: dict[str, Any]) -> None:
        events.append(ev)
        if emit is not None:
            emit(ev)

    x_all, y_all, k = data.train_inputs, data.train_labels, data.n_classes
    test_x, test_y = data.test_inputs, data.test_labels
    probe_x, probe_y = x_all[n - cfg.probe_size:], y_all[n - cfg.probe_size:]
    fit_x, fit_y = x_all[: n - cfg.probe_size], y_all[: n - cfg.probe_size]
    reference = fit_x[: cfg.reference_size]
    transfer = fit_x[:n_transfer]

    def fabricate(g: int) -> devices.AnalogChip:
        return devices.make_chip(spec, sizes, np.random.SeedSequence(cfg.seed, spawn_key=(g,)),
                                 top_down=chip_top_down(spec, cfg.train, data.n_classes, sizes))

    def test_errors(chip: devices.AnalogChip, learner: FFLearner, method: str = "both") -> dict[str, float]:
        return learner.evaluate(chip, test_x, test_y, method=method).errors

    t_wall = time.perf_counter()
    chip = fabricate(0)
    learner = FFLearner(cfg.train.changed(seed=cfg.seed))
    learner.fit(chip, fit_x, fit_y, n_classes=k, progress=progress, example_shape=image_shape(data))
    birth = 0.0  # simulated time at which the current chip was fabricated
    put({"event": "trained", "generation": 0, "time_s": birth + chip.clock_s, "age_s": chip.clock_s,
         "test_error": test_errors(chip, learner), "energy_j": chip.ledger.total_energy_j,
         "wall_s": time.perf_counter() - t_wall})

    for gen in range(cfg.generations):
        comp = None
        if cfg.compensation != "none":
            comp = DriftCompensator(reference, mode=cfg.compensation)
            comp.calibrate(chip, learner)
        first = learner.evaluate(chip, probe_x, probe_y, method="softmax").errors["softmax"]
        monitor = HealthMonitor(probe_x, probe_y, max_error=min(first + cfg.margin, 0.999),
                                max_rise_per_day=cfg.max_rise_per_day)
        trained_at = chip.clock_s
        verdict = None
        while True:
            age_after = chip.clock_s - trained_at
            if age_after >= cfg.max_age:
                verdict = {"status": "retired", "reason": f"reached max_age {format_duration(cfg.max_age)}"}
                break
            chip.wait(min(cfg.check_every, cfg.max_age - age_after))
            if comp is not None:
                comp.update(chip, learner)
            report = monitor.check(chip, learner)
            st = devices.inspect(chip)
            put({"event": "check", "generation": gen, "time_s": birth + chip.clock_s, "age_s": chip.clock_s,
                 "since_training_s": chip.clock_s - trained_at, "probe_error": report.error,
                 "status": report.status, "test_error": test_errors(chip, learner, "softmax"),
                 "compensation": comp.summary() if comp is not None else {},
                 "stuck_fraction": st.stuck_fraction,
                 "device_failures": int(chip.ledger.counts.get("device_failures", 0)),
                 "energy_j": chip.ledger.total_energy_j})
            if report.status == "dying":
                verdict = {"status": "dying", "reason": report.reason}
                break
        dead = bool(chip.dead)  # half of some layer's devices stuck: it can no longer teach
        if dead and gen + 1 < cfg.generations:
            verdict["reason"] += "; the chip is dead (half of a layer's devices stuck), so nothing can be handed on"
        put({"event": "dying" if verdict["status"] == "dying" else "retired", "generation": gen,
             "time_s": birth + chip.clock_s, "age_s": chip.clock_s, "reason": verdict["reason"], "dead": dead})
        if gen + 1 >= cfg.generations or dead:  # a dead chip ends the lineage: a result, not an error
            break
        # Hand the knowledge on to a freshly fabricated chip, born now.
        t_birth = birth + chip.clock_s
        student = fabricate(gen + 1)
        s_learner = FFLearner(cfg.distill.student_config(cfg.train, cfg.seed + gen + 1))
        teacher_test = test_errors(chip, learner)
        res = distill(chip, student, learner, s_learner, transfer, cfg.distill, progress=progress)
        birth = t_birth
        put({"event": "distilled", "generation": gen + 1, "teacher_generation": gen,
             "time_s": birth + student.clock_s, "age_s": student.clock_s,
             "teacher_test_error": teacher_test, "test_error": test_errors(student, s_learner),
             **res.summary(), "transfer_images": int(n_transfer), "wall_s": time.perf_counter() - t_wall})
        chip, learner = student, s_learner
    return events


def write_events(path: str | Path) -> Callable[[dict[str, Any]], None]:
    """An ``emit`` callback appending one JSON line per event to ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("")

    def emit(ev: dict[str, Any]) -> None:
        with open(p, "a") as fh:
            fh.write(json.dumps(ev) + "\n")

    return emit

