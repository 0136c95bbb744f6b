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

A policy's memory (the accumulators) belongs to the controller state; the functions here
take it as an argument and update it in place.
"""

from __future__ import annotations

import numpy as np

from . import _kernels as K
from .chip import Chip
from . import ops

__all__ = ["POLICIES", "policy_memory", "apply_update"]

POLICIES = ("direct", "mixed")


def policy_memory(name: str, chip: Chip) -> list[np.ndarray]:
    """Fresh controller memory of policy ``name`` for ``chip`` (zero accumulators for ``mixed``)."""
    if name == "direct":
        return []
    if name == "mixed":
        return [np.zeros(s, np.float32) for s in chip.info.weight_shapes]
    raise ValueError(f"unknown update policy {name!r}; expected one of {POLICIES}")


def apply_update(name: str, chip: Chip, layer: int, wanted: np.ndarray, memory: list[np.ndarray]) -> None:
    """Send ``wanted`` (float32 ``weight_shapes[layer]``) to ``chip`` by policy ``name``,
    possibly deferred in ``memory``; the controller's work is charged."""
    step = float(chip.info.pulse_step[layer]) if name == "mixed" else 0.0
    if step <= 0.0:
        chip.program(layer, wanted)
        chip.ledger.charge_digital(ops.direct_program_ops(wanted.size))
        return
    send = np.empty_like(wanted)
    if K.accumulate_pulses(memory[layer], wanted, step, send):
        chip.program(layer, send)
    chip.ledger.charge_digital(ops.mixed_program_ops(wanted.size))
