"""A chip written inside the tests, independent of ``devices``.

It exists to show that ``mortal`` learns through the ``Chip`` protocol alone:
nothing here comes from ``devices`` (deliberately not imported), and its
neurons are its own odd family, unknown to the learner:

``u = gain_j * (x @ W + bias_level * b)``, then per neuron ``j``
``y = u / (1 + u / sat_j)`` for ``u > 0`` (a saturating rise towards
``sat_j``) and ``y = leak_j * u`` for ``u <= 0`` (a small leak), plus
optional Gaussian read noise and clipping to the output range.  Drawn once
per neuron: ``gain_j`` log-normal (sigma 0.3), ``sat_j`` uniform in [1, 3]
chip units, ``leak_j`` uniform in [0, 0.05].  Initial weights are
N(0, 1 / (n_in + 1)) with zero biases.

Inputs are clipped to ``input_range``.  ``program`` applies each request with
a hidden per-device response factor (0.7..1.3) and clips weights to
``weight_range``; with ``pulse_step > 0`` changes are rounded to whole pulses
and counted.  All randomness comes from ``numpy.random.Generator`` objects
seeded by the constructor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CATEGORIES = ("dac", "array", "adc", "neuron", "program", "digital", "idle")


@dataclass(frozen=True)
class ToyInfo:
    """Datasheet with the members of ``mortal.chip.ChipInfo``."""

    layer_sizes: tuple[int, ...]
    weight_shapes: tuple[tuple[int, int], ...]
    trainable: tuple[bool, ...]
    input_range: tuple[float, ...]
    weight_range: tuple[float, ...]
    pulse_step: tuple[float, ...]
    output_range: tuple[float, ...]
    bias_level: float
    digital_op_energy_j: float
    digital_op_time_s: float


class ToyLedger:
    """Minimal ledger with the members of ``mortal.chip.Ledger``."""

    def __init__(self, digital_op_j: float, digital_op_s: float) -> None:
        self.digital_op_j = digital_op_j
        self.digital_op_s = digital_op_s
        self.energy_j = {c: 0.0 for c in CATEGORIES}
        self.time_s = {c: 0.0 for c in CATEGORIES}
        self.counts = {"reads": 0, "pulses": 0, "digital_ops": 0}

    @property
    def total_energy_j(self) -> float:
        return float(sum(self.energy_j.values()))

    @property
    def total_time_s(self) -> float:
        return float(sum(self.time_s.values()))

    def charge(self, category: str, joules: float, seconds: float) -> None:
        self.energy_j[category] += float(joules)
        self.time_s[category] += float(seconds)

    def charge_digital(self, ops: float) -> None:
        ops = float(ops)
        assert math.isfinite(ops) and ops >= 0, ops
        self.charge("digital", ops * self.digital_op_j, ops * self.digital_op_s)
        self.counts["digital_ops"] += int(round(ops))

    def to_dict(self) -> dict:
        return {"energy_j": dict(self.energy_j), "time_s": dict(self.time_s), "counts": dict(self.counts)}


class ToyChip:
    """A small analog-looking chip with its own neurons (see the module docstring).

    Parameters
    ----------
    layer_sizes : sequence of int
        Input width, then each layer's width.
    seed : int
        Seeds fabrication (weights, neuron and device parameters) and read noise.
    input_range, output_range : float
        Inputs are clipped to ``[-input_range, input_range]``, outputs to
        ``[-output_range, output_range]``.
    read_noise : float
        Standard deviation of additive output noise, chip units.
    pulse_step : float
        If > 0, program requests are rounded to whole pulses of this size.
    bias_level : float
        The input level that drives the bias row.
    weight_range_fan_in : float
        Weights are clipped to ``weight_range_fan_in / sqrt(n_in + 1)``.
    relu : bool
        Plain ReLU neurons (gain 1, no leak, no saturation) instead of the odd ones.
    exact : bool
        Program requests exactly (no per-device response factor).
    """

    def __init__(self, layer_sizes, seed: int, *, input_range: float = 1.0, output_range: float = 2.0,
                 read_noise: float = 0.002, pulse_step: float = 0.0, bias_level: float = 1.0,
                 weight_range_fan_in: float = 4.0, relu: bool = False, exact: bool = False) -> None:
        sizes = tuple(int(s) for s in layer_sizes)
        fab = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
        self._noise = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
        n_layers = len(sizes) - 1
        self.weights = []
        self.response = []
        self.gain, self.sat, self.leak = [], [], []
        w_range = []
        for i in range(n_layers):
            rows = sizes[i] + 1
            w = fab.standard_normal((rows, sizes[i + 1])) / math.sqrt(rows)
            w[-1] = 0.0
            self.weights.append(w)
            w_range.append(weight_range_fan_in / math.sqrt(rows))
            self.response.append(fab.uniform(0.7, 1.3, (rows, sizes[i + 1])))
            self.gain.append(fab.lognormal(0.0, 0.3, sizes[i + 1]))
            self.sat.append(fab.uniform(1.0, 3.0, sizes[i + 1]))
            self.leak.append(fab.uniform(0.0, 0.05, sizes[i + 1]))
            if relu:
                self.gain[-1][:] = 1.0
                self.sat[-1][:] = np.inf
                self.leak[-1][:] = 0.0
            if exact:
                self.response[-1][:] = 1.0
        self.read_noise = float(read_noise)
        self._pulse = float(pulse_step)
        self.info = ToyInfo(
            layer_sizes=sizes,
            weight_shapes=tuple((sizes[i] + 1, sizes[i + 1]) for i in range(n_layers)),
            trainable=(True,) * n_layers,
            input_range=(float(input_range),) * n_layers,
            weight_range=tuple(w_range),
            pulse_step=(float(pulse_step),) * n_layers,
            output_range=(float(output_range),) * n_layers,
            bias_level=float(bias_level),
            digital_op_energy_j=1e-12,
            digital_op_time_s=1e-10,
        )
        self.ledger = ToyLedger(self.info.digital_op_energy_j, self.info.digital_op_time_s)
        self.read_calls = 0
        self.program_calls = 0

    def neuron(self, layer: int, u: np.ndarray) -> np.ndarray:
        """The hidden transfer function of layer ``layer``'s neurons (without gain)."""
        s = self.sat[layer]
        pos = np.maximum(u, 0.0)
        return np.where(u > 0, pos / (1.0 + pos / s), self.leak[layer] * u)

    def read(self, layer: int, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == self.info.layer_sizes[layer], (
            x.dtype, x.shape)
        r = self.info.input_range[layer]
        xc = np.clip(x.astype(np.float64), -r, r)
        w = self.weights[layer]
        u = self.gain[layer] * (xc @ w[:-1] + self.info.bias_level * w[-1])
        y = self.neuron(layer, u)
        if self.read_noise > 0:
            y = y + self.read_noise * self._noise.standard_normal(y.shape)
        top = self.info.output_range[layer]
        y = np.clip(y, -top, top)
        batch, n_in = x.shape
        n_out = y.shape[1]
        self.ledger.charge("dac", 1e-13 * batch * n_in, 1e-9)
        self.ledger.charge("array", 1e-15 * batch * n_in * n_out, 1e-8)
        self.ledger.charge("adc", 2e-13 * batch * n_out, 1e-9)
        self.ledger.charge("neuron", 1e-14 * batch * n_out, 0.0)
        self.ledger.counts["reads"] += 1
        self.read_calls += 1
        return y.astype(np.float32)

    def program(self, layer: int, delta: np.ndarray) -> None:
        delta = np.asarray(delta)
        assert delta.dtype == np.float32 and delta.shape == self.info.weight_shapes[layer], (
            delta.dtype, delta.shape)
        assert np.isfinite(delta).all()
        d = delta.astype(np.float64) * self.response[layer]
        if self._pulse > 0:
            n = np.rint(d / self._pulse)
            d = n * self._pulse
            pulses = int(np.abs(n).sum())
        else:
            pulses = int(np.count_nonzero(d))
        lim = self.info.weight_range[layer]
        np.clip(self.weights[layer] + d, -lim, lim, out=self.weights[layer])
        self.ledger.charge("program", 1e-12 * pulses, 1e-7)
        self.ledger.counts["pulses"] += pulses
        self.program_calls += 1

    def wait(self, seconds: float) -> None:
        self.ledger.charge("idle", 0.0, float(seconds))
