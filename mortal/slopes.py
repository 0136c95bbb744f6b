"""Neuron slope estimates for the local update.

The learner never knows a neuron's transfer function.  The update of a unit
is its measured activity times an estimate of the neuron's slope at that
activity, relative to its slope at low activity (a ReLU has relative slope 1
everywhere it is on):

``nominal``
    Relative slope 1 (the ReLU assumption).
``perturbed``
    Measured by extra reads: probe vectors ``v`` are swept in amplitude,
    ``t * v`` for ``t`` on a grid up to the DAC limit.  Each unit then sees a
    pre-activation that is affine in ``t``, so finite differences of its
    output trace the shape of its non-linearity up to a constant factor.
    Differences are normalized by the mean of the unit's first few active ones,
    binned by output level and averaged over probes.  The reads are charged like
    any other.

A table is ``(table, bin_width)``: float32 ``(n_out, bins)`` of relative slopes
by output bin of ``bin_width`` chip units; ``(n_out, 0)`` means nominal.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from . import ops
from .chip import Chip

if TYPE_CHECKING:  # annotations only
    from .ff.measure import Pass

__all__ = ["perturbed_tables", "curve_slopes"]

_MAX_REL_SLOPE = 4.0


def curve_slopes(y: np.ndarray, bins: int, bin_width: float, n_ref: int = 4, min_count: int = 3) -> np.ndarray:
    """Relative slope table from amplitude sweeps.

    Parameters
    ----------
    y : float32 (levels, probes, n_out)
        Outputs for inputs ``t_k * v_p`` with ``t_k`` equally spaced and increasing.
    bins, bin_width : int, float
        Output bins of the table, in chip units.
    n_ref : int
        Each sweep's reference slope is the mean of its first ``n_ref`` active
        differences (both ends above zero), which averages out read noise and
        converter steps.
    min_count : int
        Bins with fewer differences than this count as empty.

    Returns
    -------
    float32 (n_out, bins): mean relative slope per output bin, clipped to
    [0, 4]; empty bins take the nearest filled bin's value, units without data 1.
    Differences of every sign are averaged (noise cancels; a saturated unit
    averages to 0), and sweeps whose reference slope is not positive are skipped.
    """
    y = y.astype(np.float64)
    d = np.diff(y, axis=0)                         # (levels-1, probes, n)
    mid = 0.5 * (y[1:] + y[:-1])
    active = (y[:-1] > 0) & (y[1:] > 0)
    rank = np.cumsum(active, axis=0)               # 1 for the first active difference, ...
    first = active & (rank <= n_ref)
    n_first = first.sum(axis=0)
    ref = np.where(n_first > 0, (d * first).sum(axis=0) / np.maximum(n_first, 1), 0.0)
    # The reference must be taken near zero output (the unit's slope as it turns on);
    # sweeps that start high (bias, offset) cannot supply it.
    start = np.take_along_axis(y[:-1], np.argmax(active, axis=0)[None], axis=0)[0]
    use = active & ((ref > 0) & (start < bin_width))[None]
    rho = np.where(use, d / np.where(ref > 0, ref, 1.0)[None], 0.0)
    n_out = y.shape[2]
    b = np.clip((mid / bin_width).astype(np.int64), 0, bins - 1)
    unit = np.broadcast_to(np.arange(n_out)[None, None, :], b.shape)
    sums = np.zeros((n_out, bins))
    counts = np.zeros((n_out, bins))
    np.add.at(sums, (unit[use], b[use]), rho[use])
    np.add.at(counts, (unit[use], b[use]), 1.0)
    table = np.full((n_out, bins), np.nan)
    filled = counts >= min_count
    table[filled] = np.clip(sums[filled] / counts[filled], 0.0, _MAX_REL_SLOPE)
    # nearest filled bin: forward fill, then backward fill, then 1
    for k in range(1, bins):
        gap = np.isnan(table[:, k])
        table[gap, k] = table[gap, k - 1]
    for k in range(bins - 2, -1, -1):
        gap = np.isnan(table[:, k])
        table[gap, k] = table[gap, k + 1]
    table[np.isnan(table)] = 1.0
    return table.astype(np.float32)


def perturbed_tables(chip: Chip, base: "Pass", scales: Sequence[float], levels: int,
                     bins: int) -> list[tuple[np.ndarray, float]]:
    """Measure every layer's slope table with amplitude sweeps around a measured pass.

    ``base``: the forward pass of the probes (neutral-label examples) through the chip;
    each layer's measured input vectors (times the layer's input scale) are swept from 0 to
    the DAC limit in ``levels`` steps.  The reads and the controller's work are charged.
    """
    tables = []
    for layer, h in enumerate(base.inputs):
        v = h * np.float32(scales[layer])
        r = float(chip.info.input_range[layer])
        peak = float(np.abs(v).max())
        # Up to the DAC limit, and at least to the operating point (t = 1).
        t_max = max(r / peak, 1.0) if math.isfinite(r) and peak > 0 else 4.0
        t = np.linspace(0.0, t_max, levels, dtype=np.float32)
        sweep = (t[:, None, None] * v[None]).reshape(levels * v.shape[0], v.shape[1])
        y = chip.read(layer, sweep).reshape(levels, v.shape[0], -1)
        top = float(chip.info.output_range[layer])
        if not math.isfinite(top):
            top = max(float(y.max()), 1e-6)
        width = top / bins
        tables.append((curve_slopes(y, bins, width), width))
        chip.ledger.charge_digital(ops.slope_table_ops(y.size))
    return tables
