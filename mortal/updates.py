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
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from . import _kernels as K
from .chip import Chip

__all__ = ["UpdatePolicy", "make_policy", "POLICIES"]

POLICIES = ("direct", "mixed")


class UpdatePolicy:
    """Sends wanted changes to a chip, one layer at a time."""

    name: str = "direct"

    def __init__(self, chip: Chip) -> None:
        self.chip = chip

    def apply(self, layer: int, wanted: np.ndarray) -> None:
        """Program ``wanted`` (float32 ``weight_shapes[layer]``), possibly deferred."""
        self.chip.program(layer, wanted)
        self.chip.ledger.charge_digital(wanted.size)

    def state(self) -> dict[str, np.ndarray]:
        """Controller memory to checkpoint."""
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore from :meth:`state`."""


class MixedPolicy(UpdatePolicy):
    """Accumulate in the controller, program whole pulses (see module docstring)."""

    name = "mixed"

    def __init__(self, chip: Chip) -> None:
        super().__init__(chip)
        self.acc = [np.zeros(s, np.float32) for s in chip.info.weight_shapes]

    def apply(self, layer: int, wanted: np.ndarray) -> None:
        step = float(self.chip.info.pulse_step[layer])
        if step <= 0.0:
            super().apply(layer, wanted)
            return
        send = np.empty_like(wanted)
        if K.accumulate_pulses(self.acc[layer], wanted, step, send):
            self.chip.program(layer, send)
        # accumulate, divide, truncate, multiply, subtract: 5 ops per weight
        self.chip.ledger.charge_digital(5 * wanted.size)

    def state(self) -> dict[str, np.ndarray]:
        return {f"acc{i}": a for i, a in enumerate(self.acc)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for i in range(len(self.acc)):
            self.acc[i][...] = state[f"acc{i}"]


def make_policy(name: Literal["direct", "mixed"], chip: Chip) -> UpdatePolicy:
    """The update policy called ``name`` for ``chip``."""
    if name == "direct":
        return UpdatePolicy(chip)
    if name == "mixed":
        return MixedPolicy(chip)
    raise ValueError(f"unknown update policy {name!r}; expected one of {POLICIES}")
