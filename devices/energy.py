"""The ledger (energy and time by category) and the per-operation cost model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .spec import ChipSpec

__all__ = ["Ledger", "ReadCost", "read_cost", "CATEGORIES", "UPDATE_CATEGORIES"]

#: Categories of energy and time.  ``idle`` holds time spent in ``wait``.
CATEGORIES = ("dac", "array", "adc", "neuron", "program", "digital", "idle")
#: Categories of in-array updates (``AnalogChip.charge_pulse_update``): the row and column
#: pulse drivers and the stochastic translators.  They appear in a ledger once charged, so the
#: ledgers of chips that never update in the array are unchanged.
UPDATE_CATEGORIES = ("drivers", "translators")


class Ledger:
    """Joules and simulated seconds spent, by category, and event counts.

    Attributes
    ----------
    energy_j : dict of str to float
        Joules by category (``CATEGORIES``, and ``UPDATE_CATEGORIES`` once charged).
    time_s : dict of str to float
        Simulated seconds by category; ``total_time_s`` is the chip's clock.
    counts : dict of str to int
        ``reads`` (read calls), ``vectors`` (input rows read), ``conversions``
        (ADC conversions), ``pulses``, ``program_calls``, ``digital_ops``.
    """

    def __init__(self, digital_op_j: float = 0.0, digital_op_s: float = 0.0) -> None:
        self.digital_op_j = float(digital_op_j)
        self.digital_op_s = float(digital_op_s)
        self.energy_j: dict[str, float] = {c: 0.0 for c in CATEGORIES}
        self.time_s: dict[str, float] = {c: 0.0 for c in CATEGORIES}
        self.counts: dict[str, int] = {
            k: 0 for k in ("reads", "vectors", "conversions", "pulses", "program_calls", "digital_ops")
        }

    @property
    def total_energy_j(self) -> float:
        """Sum of energy over all categories, joules."""
        return float(sum(self.energy_j.values()))

    @property
    def total_time_s(self) -> float:
        """Simulated seconds since fabrication (busy and idle)."""
        return float(sum(self.time_s.values()))

    def charge(self, category: str, joules: float = 0.0, seconds: float = 0.0) -> None:
        """Add ``joules`` and ``seconds`` to ``category``."""
        if category not in self.energy_j:
            if category not in UPDATE_CATEGORIES:
                raise ValueError(f"unknown ledger category {category!r}; expected one of "
                                 f"{CATEGORIES + UPDATE_CATEGORIES}")
            self.energy_j[category] = 0.0
            self.time_s[category] = 0.0
        if not (math.isfinite(joules) and math.isfinite(seconds)) or joules < 0 or seconds < 0:
            raise ValueError(f"charges must be finite and >= 0, got {joules} J, {seconds} s")
        self.energy_j[category] += float(joules)
        self.time_s[category] += float(seconds)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` events called ``name``."""
        self.counts[name] = self.counts.get(name, 0) + int(n)

    def charge_digital(self, ops: float) -> None:
        """Charge ``ops`` digital operations of the controller (the learner's own work)."""
        ops = float(ops)
        if not math.isfinite(ops) or ops < 0:
            raise ValueError(f"ops must be a finite number >= 0, got {ops}")
        self.charge("digital", ops * self.digital_op_j, ops * self.digital_op_s)
        self.counts["digital_ops"] += int(round(ops))

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (JSON-serializable)."""
        return {
            "digital_op_j": self.digital_op_j,
            "digital_op_s": self.digital_op_s,
            "energy_j": dict(self.energy_j),
            "time_s": dict(self.time_s),
            "counts": dict(self.counts),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Ledger":
        """Inverse of :meth:`to_dict`."""
        led = cls(data["digital_op_j"], data["digital_op_s"])
        led.energy_j.update({k: float(v) for k, v in data["energy_j"].items()})
        led.time_s.update({k: float(v) for k, v in data["time_s"].items()})
        led.counts.update({k: int(v) for k, v in data["counts"].items()})
        return led

    def copy(self) -> "Ledger":
        """An independent copy."""
        return Ledger.from_dict(self.to_dict())

    def __repr__(self) -> str:
        return f"Ledger(total_energy_j={self.total_energy_j:.4g}, total_time_s={self.total_time_s:.4g})"


@dataclass(frozen=True)
class ReadCost:
    """Energy (J) and time (s) of one read call, by category."""

    dac_j: float
    array_j: float
    adc_j: float
    neuron_j: float
    array_s: float
    adc_s: float

    def book(self, ledger: Ledger, batch: int, n_out: int) -> None:
        """Charge this cost to ``ledger`` and count the read."""
        ledger.charge("dac", self.dac_j)
        ledger.charge("array", self.array_j, self.array_s)
        ledger.charge("adc", self.adc_j, self.adc_s)
        ledger.charge("neuron", self.neuron_j)
        ledger.count("reads")
        ledger.count("vectors", batch)
        ledger.count("conversions", batch * n_out)


def read_cost(spec: ChipSpec, batch: int, n_in: int, n_out: int, input_level_sum: float,
              mean_row_g: float, bias_g: float) -> ReadCost:
    """Cost of reading ``batch`` vectors through a ``n_in`` x ``n_out`` layer.

    Parameters
    ----------
    input_level_sum : float
        Sum over the batch of sum_i (x_i / input range)^2 (the squared row voltages
        relative to full scale, 0..n_in per vector).
    mean_row_g : float
        Mean over the input rows of the row's summed conductance, normalized units.
    bias_g : float
        Summed conductance of the bias row, normalized units.

    Cell energy is V^2 G t per cell, with the row voltage proportional to the
    input level (so it scales with the squared input); rows are taken to hold
    the mean row conductance; ADC energy is fom * 2**bits per conversion; latency is the
    integration time plus ``ceil(n_out / columns_per_adc)`` conversions per vector.
    """
    e = spec.energy
    c = spec.conductance
    g_scale_s = (c.g_max_us - c.g_min_us) * 1e-6
    g_floor_s = c.g_min_us * 1e-6
    r_in = spec.dac.range if math.isfinite(spec.dac.range) else 1.0
    bias_drive = batch * (spec.bias_level / r_in) ** 2
    row_g_s = mean_row_g * g_scale_s + 2 * n_out * g_floor_s
    bias_g_s = bias_g * g_scale_s + 2 * n_out * g_floor_s
    array_j = e.v_read**2 * e.t_read_s * (input_level_sum * row_g_s + bias_drive * bias_g_s)
    array_j += e.mac_j * batch * (n_in + 1) * n_out
    dac_j = e.dac_conversion_j * batch * n_in if spec.dac.bits is not None else 0.0
    bits = spec.adc.bits
    adc_j = e.adc_fom_j_per_step * (2.0**bits) * batch * n_out if bits is not None else 0.0
    n_adc_rounds = math.ceil(n_out / spec.adc.columns_per_adc)
    return ReadCost(
        dac_j=dac_j,
        array_j=array_j,
        adc_j=adc_j,
        neuron_j=e.neuron_j * batch * n_out,
        array_s=batch * e.t_read_s,
        adc_s=batch * n_adc_rounds * e.adc_conversion_s,
    )
