"""Update policies: how a wanted weight change becomes ``program`` calls.

``direct``
    Program every batch's change as requested.  The chip rounds each request
    to whole pulses, so changes below half a pulse are lost.
``mixed``
    Mixed precision: accumulate wanted changes in controller memory and
    program a weight only once its accumulated change reaches one nominal
    pulse (``chip.info.pulse_step``); whole pulses are sent and the remainder
    stays in the accumulator.  Chips with ``pulse_step == 0`` (exact weights)
    are programmed directly.
``analog``
    In-array updates by pulse coincidence.  The controller computes no weight
    gradient: per sample it only has the vector it sent to the layer's rows
    (the bias line included) and the per-unit signal it derived from the
    measurements.  Stochastic translators turn each value into a train of
    ``bit_length`` (BL) time slots, a pulse in each slot with probability
    ``p = min(|value| * scale, 1)``; a device moves by one pulse (of the sign
    ``sign(x) sign(d)``) where a row pulse and a column pulse coincide, so every
    sample's rank-1 product is applied by the array in parallel.  The scales
    follow update management: per sample, ``scale_x scale_d = eta / (BL dw)``
    (``eta`` the learning rate per sample, ``dw = pulse_step``), so that the mean
    change ``BL p_x p_d dw`` is ``eta x d``, split so that the largest row and the
    largest column probability are equal.  The net count of coincidences per
    cell is sent through the chip's ``program`` as ``count * pulse_step``, so the
    device response (step size and its spread, asymmetry, soft bounds, one-sided
    devices and their refresh, wear) is the chip's own.

What the controller's optimizer becomes under ``analog``:

* momentum: off.  Smoothing needs a per-weight memory and a per-weight
  product every batch, which is the digital work the array takes over; the
  ``momentum`` setting does not apply.
* weight cost: dropped.  It needs the weights (or the controller's sum of
  requested changes) per weight; the array has neither.  Soft-bounded devices
  pull weights toward their symmetry point on their own.
* peer normalization: kept.  It is a per-unit term of the signal, computed by
  the controller as before.

Emulation: over a batch the coincidences of one cell are a sum of Bernoulli
variables (``BL`` per sample) with mean ``BL sum_b p_x p_d``: four sums over
the samples that drive a row (the probability matrices' four products, taken
over the nonzero row probabilities only) give the means and exact variances of
the positive and the negative count of every cell, and the same pass draws each
count with those two moments (:func:`mortal.ff.analog.coincidences`).  The
joint law of cells that share a row or column within a sample (they see the
same pulse train) is not kept, only each cell's own law; ``exact=True``
simulates every pulse slot of every sample instead (for tests).

Energy: the device pulses of each cell's net count are charged by the chip's
``program``; the coincidences that cancelled within the batch (a positive and a
negative one on the same cell: two device pulses in the array, no net change
here, and no wear), the row and column driver pulses (counted: a sum of the
Bernoulli trains) and the stochastic translators (one per number translated, BL
bits each) are charged by the chip's ``charge_pulse_update`` when it has one
(chips of ``devices`` do); the controller's per-sample vector work is charged as
digital operations (``ops.analog_update_ops``).  The sampling and the update live in
:mod:`mortal.ff.analog` (beside the learner's loop, which calls them).

A policy's memory (the accumulators) belongs to the controller state; the functions here
take it as an argument and update it in place.
"""

from __future__ import annotations

import math

import numpy as np

from . import _kernels as K
from .chip import Chip
from .errors import InputError
from . import ops

__all__ = ["POLICIES", "policy_memory", "apply_update", "check_pulse_chip"]

POLICIES = ("direct", "mixed", "analog")


def policy_memory(name: str, chip: Chip) -> list[np.ndarray]:
    """Fresh controller memory of policy ``name`` for ``chip`` (zero accumulators for ``mixed``,
    none for ``direct`` and ``analog``); ``analog`` on a chip that cannot take it is refused here,
    before anything is programmed."""
    if name == "direct":
        return []
    if name == "mixed":
        return [np.zeros(s, np.float32) for s in chip.info.weight_shapes]
    if name == "analog":
        check_pulse_chip(chip)
        return []
    raise ValueError(f"unknown update policy {name!r}; expected one of {POLICIES}")


def check_pulse_chip(chip: Chip) -> None:
    """InputError unless every trainable layer of ``chip`` takes pulse requests: a finite
    ``info.pulse_step > 0`` (a chip with exact weights has none)."""
    steps = tuple(chip.info.pulse_step)
    for layer, (step, train) in enumerate(zip(steps, chip.info.trainable)):
        if not train:
            continue
        try:
            ok = math.isfinite(float(step)) and float(step) > 0.0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(
                f"policy 'analog' needs a chip whose program takes pulse requests, but layer {layer} has "
                f"pulse_step {step!r} (exact weights or no pulse response); use policy 'direct' or 'mixed'")


def apply_update(name: str, chip: Chip, layer: int, wanted: np.ndarray, memory: list[np.ndarray]) -> None:
    """Send ``wanted`` (float32 ``weight_shapes[layer]``) to ``chip`` by policy ``name``
    (``direct`` or ``mixed``), possibly deferred in ``memory``; the controller's work is charged.
    ``analog`` takes the two vectors instead: :func:`mortal.ff.analog.apply_analog_update`."""
    if name == "analog":
        raise ValueError("policy 'analog' updates from the row and column vectors: use apply_analog_update")
    step = float(chip.info.pulse_step[layer]) if name == "mixed" else 0.0
    if step <= 0.0:
        chip.program(layer, wanted)
        chip.ledger.charge_digital(ops.direct_program_ops(wanted.size))
        return
    send = np.empty_like(wanted)
    if K.accumulate_pulses(memory[layer], wanted, step, send):
        chip.program(layer, send)
    chip.ledger.charge_digital(ops.mixed_program_ops(wanted.size))
