"""Measurement: the forward pass through a chip, as the controller does it.

Scaling between model and chip: a normalized input ``h`` (RMS 1) is sent as ``s * h`` with
``s = input_range / input_clip_rms`` and the measured output ``y`` becomes the activity
``a = y / s``.  For ReLU-like neurons this makes the model's weights equal to the chip's
nominal weights.  Each layer's measured output is RMS-normalized in the controller before it
is sent to the next layer; its goodness is ``sum(a**2)``.

Label layout: a one-hot label of ``k`` classes is written ``copies`` times, either over the
first ``k * copies`` inputs of each example or appended after them (:class:`LabelLayout`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .. import _kernels as K
from ..chip import Chip
from ..errors import InputError
from .. import ops

__all__ = ["Pass", "LabelLayout", "input_scales", "read_layer", "forward", "label_layout"]


@dataclass
class Pass:
    """One forward pass: per layer, the normalized input, the measured output and goodness.

    ``inputs[i]`` float32 (B, n_in) unit-RMS inputs; ``outputs[i]`` float32 (B, n_out) measured
    outputs (chip units, drift correction applied); ``normed[i]`` float32 (B, n_out) unit-RMS
    activities; ``goodness[i]`` float64 (B,).
    """

    inputs: list[np.ndarray] = field(default_factory=list)
    outputs: list[np.ndarray] = field(default_factory=list)
    normed: list[np.ndarray] = field(default_factory=list)
    goodness: list[np.ndarray] = field(default_factory=list)


@dataclass(frozen=True)
class LabelLayout:
    """Where labels go in the chip's input: ``n_data`` data values per example, ``n_classes``
    classes written ``copies`` times, ``append`` after the data (else over its first values)."""

    n_data: int
    n_classes: int
    copies: int
    append: bool
    strength: float
    neutral_level: float

    @property
    def n_label_inputs(self) -> int:
        return self.n_classes * self.copies

    @property
    def chip_width(self) -> int:
        return self.n_data + (self.n_label_inputs if self.append else 0)

    def embed(self, x: np.ndarray, labels: np.ndarray | int | None) -> np.ndarray:
        """``x`` float32 (B, n_data) with the label (or the neutral level) written in: (B, chip_width)."""
        width = self.n_label_inputs
        if self.append:
            out = np.empty((x.shape[0], self.chip_width), np.float32)
            out[:, : self.n_data] = x
            start = self.n_data
        else:
            out = x.copy()
            start = 0
        block = out[:, start:start + width]
        if labels is None:
            block[...] = self.neutral_level
        else:
            block[...] = 0.0
            lab = np.broadcast_to(np.asarray(labels), (x.shape[0],))
            rows = np.arange(x.shape[0])
            for c in range(self.copies):
                out[rows, start + self.n_classes * c + lab] = self.strength
        return out


def label_layout(chip_inputs: int, n_data: int, n_classes: int, copies: int, placement: str,
                 strength: float, neutral_level: float) -> LabelLayout:
    """The layout that fits a chip with ``chip_inputs`` inputs (``placement`` "first",
    "append" or "auto"); InputError naming both widths if none does."""
    width = n_classes * copies
    fits_first = chip_inputs == n_data and width <= n_data
    fits_append = chip_inputs == n_data + width
    if placement == "first" or (placement == "auto" and fits_first):
        if not fits_first:
            raise InputError(f"labels over the first inputs need a chip of {n_data} inputs and at least "
                             f"{width} data values ({n_classes} classes x {copies} copies); the chip takes "
                             f"{chip_inputs} and the data has {n_data}")
        return LabelLayout(n_data, n_classes, copies, False, strength, neutral_level)
    if placement == "append" or (placement == "auto" and fits_append):
        if not fits_append:
            raise InputError(f"appended labels need a chip of {n_data} + {width} = {n_data + width} inputs "
                             f"({n_classes} classes x {copies} copies); the chip takes {chip_inputs}")
        return LabelLayout(n_data, n_classes, copies, True, strength, neutral_level)
    raise InputError(f"the chip takes {chip_inputs} inputs; data of {n_data} values with {n_classes} classes x "
                     f"{copies} label copies needs {n_data} (labels over the first inputs) or "
                     f"{n_data + width} (labels appended)")


def input_scales(chip: Chip, input_clip_rms: float) -> list[float]:
    """Per layer, the factor from unit-RMS inputs to chip input levels."""
    return [float(r) / input_clip_rms if math.isfinite(r) else 1.0 for r in chip.info.input_range]


def read_layer(chip: Chip, layer: int, h: np.ndarray, s: float, reads: int = 1,
               correction: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """The measured outputs of ``layer`` for unit-RMS inputs ``h`` sent at scale ``s``: ``reads``
    reads averaged (the averaging charged), times the layer's drift ``correction`` if given."""
    sent = h * np.float32(s) if s != 1.0 else h
    y = chip.read(layer, sent)
    if reads > 1:
        y = y.astype(np.float32, copy=True)
        for _ in range(reads - 1):
            y += chip.read(layer, sent)
        y *= np.float32(1.0 / reads)
        chip.ledger.charge_digital(ops.averaging_ops(reads, y.size))
    if correction is not None:
        y = y * correction[layer]
    return y


def forward(chip: Chip, x: np.ndarray, scales: Sequence[float], *, reads: int = 1,
            correction: Sequence[np.ndarray] | None = None, n_layers: int | None = None) -> Pass:
    """Run ``x`` (float32 (B, n_0), label already embedded) through the chip's first ``n_layers``
    layers; every read and the controller's arithmetic are charged to the chip's ledger.

    ``reads``: reads averaged per measurement; ``correction``: per layer a float32 (n_out,)
    factor applied to each measured output (drift compensation), or None.
    """
    n_layers = len(scales) if n_layers is None else n_layers
    out = Pass()
    h = np.empty_like(x)
    batch = x.shape[0]
    K.measure_rows(x, 1.0, h, 1.0, np.empty(batch, np.float64))
    for layer in range(n_layers):
        s = scales[layer]
        y = read_layer(chip, layer, h, s, reads, correction)
        normed = np.empty_like(y)
        good = np.empty(batch, np.float64)
        K.measure_rows(y, 1.0 / s, normed, 1.0, good)
        out.inputs.append(h)
        out.outputs.append(y)
        out.normed.append(normed)
        out.goodness.append(good)
        h = normed
    chip.ledger.charge_digital(ops.forward_ops(batch, chip.info.layer_sizes, n_layers, correction is not None))
    return out
