"""The learner's whole view of hardware: the ``Chip`` protocol.

Learning code (``mortal.ff``, ``mortal.updates``, ``mortal.distill``) touches a
chip only through the members defined here.  Any object with these members can
be trained, including chips that do not come from the ``devices`` package.

The concrete datasheet and ledger used by the emulator live in ``devices``
(``devices.ChipInfo`` and ``devices.Ledger``); they are also the easiest
building blocks for a hand-written chip.  This module states the contract as
structural protocols, because ``devices`` never imports ``mortal`` and
``mortal``'s learning modules never import ``devices``.
"""

from __future__ import annotations

from typing import Mapping, Protocol, runtime_checkable

import numpy as np

__all__ = ["Chip", "ChipInfo", "Ledger", "LEDGER_CATEGORIES", "UPDATE_CATEGORIES", "check_chip", "top_down_widths"]

#: Energy and time categories every ledger reports (missing ones count as 0).
LEDGER_CATEGORIES = ("dac", "array", "adc", "neuron", "program", "digital")
#: Categories a ledger reports once the chip has updated in the array (policy ``analog``).
UPDATE_CATEGORIES = ("drivers", "translators")


@runtime_checkable
class ChipInfo(Protocol):
    """The public datasheet of a chip (read-only).

    Attributes
    ----------
    layer_sizes : tuple of int
        ``(n_0, n_1, ..., n_L)``: input width then the width of each layer.
    weight_shapes : tuple of (int, int)
        ``(n_in + 1, n_out)`` per layer; the last row is the bias line.  On a chip with
        top-down inputs ``n_in = layer_sizes[i] + top_down[i]``.
    trainable : tuple of bool
        Whether ``program`` is accepted for each layer.
    input_range : tuple of float
        Per layer, the largest input magnitude the DAC represents; inputs are
        clipped to ``[-r, r]`` (``inf`` for an ideal chip).
    weight_range : tuple of float
        Per layer, the largest nominal weight magnitude the devices can hold.
    pulse_step : tuple of float
        Per layer, the nominal weight change of one write pulse (a hint).
    output_range : tuple of float
        Per layer, the full scale of the output converter (``inf`` if none).
    bias_level : float
        The fixed input level that drives the bias row.
    digital_op_energy_j, digital_op_time_s : float
        Cost of one digital operation in the controller next to the chip.
    top_down : tuple of int, optional
        Not a required member: per layer, the extra input rows of its array that carry the
        activities of the layer above (0: none, else ``layer_sizes[i + 2]``); the top layer's
        entry is the width of its label input.  A read of layer ``i`` then takes the
        ``layer_sizes[i]`` bottom-up inputs followed by the ``top_down[i]`` top-down ones.
        Chips without the member are plain feed-forward chains (:func:`top_down_widths`).
    """

    @property
    def layer_sizes(self) -> tuple[int, ...]: ...
    @property
    def weight_shapes(self) -> tuple[tuple[int, int], ...]: ...
    @property
    def trainable(self) -> tuple[bool, ...]: ...
    @property
    def input_range(self) -> tuple[float, ...]: ...
    @property
    def weight_range(self) -> tuple[float, ...]: ...
    @property
    def pulse_step(self) -> tuple[float, ...]: ...
    @property
    def output_range(self) -> tuple[float, ...]: ...
    @property
    def bias_level(self) -> float: ...
    @property
    def digital_op_energy_j(self) -> float: ...
    @property
    def digital_op_time_s(self) -> float: ...


@runtime_checkable
class Ledger(Protocol):
    """Energy (J) and time (s) a chip has spent, by category, plus counts.

    ``energy_j`` and ``time_s`` map a category (see ``LEDGER_CATEGORIES``)
    to joules and simulated seconds; ``counts`` maps an event name
    (``reads``, ``conversions``, ``pulses``, ``digital_ops``, ...) to a number.
    The learner charges its own controller work with ``charge_digital``.
    """

    @property
    def energy_j(self) -> Mapping[str, float]: ...
    @property
    def time_s(self) -> Mapping[str, float]: ...
    @property
    def counts(self) -> Mapping[str, int]: ...
    @property
    def total_energy_j(self) -> float: ...
    @property
    def total_time_s(self) -> float: ...
    def charge_digital(self, ops: float) -> None: ...


@runtime_checkable
class Chip(Protocol):
    """An analog chip a controller can train from forward measurements.

    ``read(layer, x)``
        ``x`` float32 ``(batch, n_in)`` input levels; returns the measured
        float32 ``(batch, n_out)`` after DAC, crossbar, neuron and ADC.
    ``program(layer, delta)``
        ``delta`` float32 of shape ``info.weight_shapes[layer]``: a requested
        change in nominal weight units that the chip turns into pulses.
    ``wait(seconds)``
        Idle time passes (drift, ageing).

    Optional: ``charge_pulse_update(layer, *, batch, bit_length, row_pulses, col_pulses,
    translations, cancelled=0)`` charges the periphery of an in-array update by pulse
    coincidence (policy ``analog``: line drivers, stochastic translators, coincidences that
    cancelled within the batch; ledger categories ``UPDATE_CATEGORIES``).  A chip without it
    can still be trained with ``analog``; only those charges are missing.
    """

    info: ChipInfo
    ledger: Ledger

    def read(self, layer: int, x: np.ndarray) -> np.ndarray: ...
    def program(self, layer: int, delta: np.ndarray) -> None: ...
    def wait(self, seconds: float) -> None: ...


def top_down_widths(info: ChipInfo) -> tuple[int, ...]:
    """Per layer, the top-down input rows of a chip's datasheet: ``info.top_down``, or all 0 for
    a datasheet without it (or with it empty)."""
    n_layers = len(tuple(info.layer_sizes)) - 1
    down = tuple(getattr(info, "top_down", ()) or ())
    return tuple(int(t) for t in down) if down else (0,) * n_layers


def check_chip(chip: object) -> Chip:
    """Return ``chip`` if it satisfies the protocol, else raise ``TypeError``.

    Checks the members of ``Chip`` and of its ``info`` and ``ledger``, and that
    the datasheet's shapes agree with each other (top-down rows included, when the
    datasheet has ``top_down``).
    """
    missing = [m for m in ("info", "ledger", "read", "program", "wait") if not hasattr(chip, m)]
    if missing:
        raise TypeError(f"object of type {type(chip).__name__} is not a Chip: missing {missing}")
    info, ledger = chip.info, chip.ledger  # type: ignore[attr-defined]
    if not isinstance(info, ChipInfo):
        raise TypeError("chip.info does not provide the ChipInfo datasheet members")
    if not isinstance(ledger, Ledger):
        raise TypeError("chip.ledger does not provide the Ledger members")
    sizes = tuple(info.layer_sizes)
    n_layers = len(sizes) - 1
    raw = tuple(getattr(info, "top_down", ()) or ())
    if raw:
        ok = len(raw) == n_layers and all(
            isinstance(t, (int, np.integer)) and not isinstance(t, (bool, np.bool_)) and t >= 0 for t in raw)
        if not ok or any(raw[i] not in (0, sizes[i + 2]) for i in range(n_layers - 1)):
            raise TypeError(f"chip.info.top_down {raw} is not one width per layer of {sizes}: 0 or the width of "
                            "the layer above, the top layer's entry any integer >= 0")
    down = top_down_widths(info)
    want = tuple((sizes[i] + down[i] + 1, sizes[i + 1]) for i in range(n_layers))
    if tuple(tuple(s) for s in info.weight_shapes) != want:
        extra = f" and top_down {down}" if any(down) else ""
        raise TypeError(f"chip.info.weight_shapes {info.weight_shapes} do not match layer_sizes {sizes}{extra}")
    for name in ("trainable", "input_range", "weight_range", "pulse_step", "output_range"):
        if len(getattr(info, name)) != n_layers:
            raise TypeError(f"chip.info.{name} must have one entry per layer ({n_layers})")
    return chip  # type: ignore[return-value]
