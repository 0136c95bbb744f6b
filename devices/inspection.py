"""Inspection: read-only copies of a chip's hidden state, for analysis and tests only.

Learning code never calls :func:`inspect`; it sees a chip only through ``read``, ``program``,
``wait``, ``info`` and ``ledger``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _devstate as S
from .chip import AnalogChip

__all__ = ["inspect", "LayerState", "ChipState"]


@dataclass(frozen=True)
class LayerState:
    """Read-only copy of one layer's hidden state (for analysis and tests only).

    ``weights`` float32 (n_in + 1, n_out): effective weights now, last row the bias.
    ``device_weights``: the same from the devices alone, without the wires' IR drop (what
    ``program_verify`` writes: deploying ``device_weights`` of one chip on another of the same
    geometry gives it the first chip's effective weights).
    ``g`` (as programmed, normalized), ``nu``, ``t_prog``, ``stuck``, ``pulses_left``
    (before the device wears out; inf if never): per device, shape (2, n_in + 1, n_out),
    index 0 the positive device (None in exact mode).
    ``g_sat``, ``step_up``, ``step_down``: per-device response parameters.
    ``failure_time``: per device, the chip age (s) at which it fails and sticks
    (``inf`` if never).
    ``gain``, ``offset``, ``curvature``, ``saturation``: per neuron (n_out,).
    """

    weights: np.ndarray
    device_weights: np.ndarray
    w_max: float
    pulse_step: float
    g: np.ndarray | None
    nu: np.ndarray | None
    t_prog: np.ndarray | None
    stuck: np.ndarray | None
    pulses_left: np.ndarray | None
    g_sat: np.ndarray | None
    step_up: np.ndarray | None
    step_down: np.ndarray | None
    failure_time: np.ndarray | None
    gain: np.ndarray
    offset: np.ndarray
    curvature: np.ndarray
    saturation: np.ndarray


@dataclass(frozen=True)
class ChipState:
    """Read-only snapshot of a chip: its clock, seed and each layer's state."""

    clock_s: float
    seed: dict
    layers: list[LayerState] = field(default_factory=list)

    @property
    def stuck_fraction(self) -> float:
        """Fraction of devices stuck, over all layers (0 in exact mode)."""
        n = sum(L.stuck.size for L in self.layers if L.stuck is not None)
        k = sum(int(L.stuck.sum()) for L in self.layers if L.stuck is not None)
        return k / n if n else 0.0


def inspect(chip: AnalogChip) -> ChipState:
    """Copy of a chip's hidden state at its current time.  Never used by learning code."""
    if not isinstance(chip, AnalogChip):
        raise ValueError(f"inspect needs a chip from devices.make_chip, got {type(chip).__name__}")
    now = chip.clock_s
    layers = []
    for L in chip._layers:
        if L.exact:
            dev: dict[str, Any] = dict.fromkeys(("g", "nu", "t_prog", "stuck", "pulses_left", "g_sat", "step_up",
                                                 "step_down", "failure_time"))
        else:
            g_sat, up, down = L.device_constants()
            left = L.life.astype(np.float64)
            left[L.life == S.UNLIMITED] = np.inf
            dev = dict(g=L.g.copy(), nu=L.nu.astype(np.float32) * np.float32(L.nu_step),
                       t_prog=L.t_base + L.t_rel.astype(np.float64), stuck=(L.life == 0).astype(np.int8),
                       pulses_left=left, g_sat=g_sat, step_up=up, step_down=down,
                       failure_time=L.failure_times()[0])
        layers.append(LayerState(
            weights=L.effective_weights(now), device_weights=L.effective_weights(now, wires=False), w_max=L.w_max, pulse_step=L.pulse_step_w, **dev,
            gain=L.gain.copy(), offset=L.offset.copy(), curvature=L.curv.copy(), saturation=L.sat.copy(),
        ))
    return ChipState(clock_s=now, seed=dict(chip.seed), layers=layers)
