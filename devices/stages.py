"""Fixed black-box stages: layers of a chip that no controller can program.

A spec with a ``stage`` section (:class:`~devices.spec.StageSpec`) builds every layer a chip
marks non-trainable as a stage: a crossbar whose weights were set at fabrication (held by the
chip's own devices: they drift, fail and read noisily like every other device of the chip),
read through one fixed analog unit per column with a random non-linearity of its own whose
threshold wanders with the chip's time.  The learner sees none of this: only
``info.trainable`` says that the layer cannot be programmed.

:class:`StageUnits` holds a stage's per-unit parameters; :func:`build_stages` draws them for a
chip from a stream of their own under the chip's seed (so a chip of a spec without stages, or
the other layers of a chip with them, are fabricated exactly as before, and a saved chip
rebuilds its stages from its spec, seed and trainable flags); :func:`read_stage` is a stage
layer's read.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from . import _kernels as K
from .spec import ChipSpec, StageSpec

__all__ = ["StageUnits", "build_stages", "read_stage", "layer_specs", "STAGE_STREAM"]

#: Stream number of the stages' parameters under a chip's SeedSequence (after fabrication 0,
#: reads 1, writes 2, failure times 3).
STAGE_STREAM = 4


class StageUnits:
    """The fixed analog units after one stage's columns (parameters float64 (n_out,)).

    ``gain`` (slope factor), ``threshold`` (widths, at fabrication), ``amplitude`` (fraction of
    the ADC full scale), ``power`` (exponent of the curve), ``bti`` (the unit's share of the
    threshold's drift, mean 1); see :class:`~devices.spec.StageSpec` for the law.
    """

    def __init__(self, spec: StageSpec, n_out: int, rng: np.random.Generator) -> None:
        self.spec = spec
        d = rng.standard_normal((4, n_out))
        self.gain = np.exp(spec.gain_dtod * d[0] - 0.5 * spec.gain_dtod**2)
        self.threshold = spec.threshold_mean + spec.threshold_dtod * d[1]
        self.amplitude = np.clip(spec.amplitude_mean * (1.0 + spec.amplitude_dtod * d[2]), 0.05, 1.0)
        self.power = np.exp(spec.power_dtod * d[3])
        # Per-device shifts under bias-temperature instability are exponentially distributed
        # (Kaczer et al., IRPS 2010).
        self.bti = rng.exponential(1.0, n_out)

    def threshold_at(self, t_s: float) -> np.ndarray:
        """Each unit's threshold (widths) at chip time ``t_s`` (seconds since fabrication)."""
        s = self.spec
        wander = s.bti_shift * (max(t_s, 0.0) / s.bti_ref_s) ** s.bti_exponent
        return self.threshold + wander * self.bti

    def respond(self, u: np.ndarray, t_s: float, full_scale: float) -> np.ndarray:
        """The units' outputs (before the ADC) for column currents ``u`` (batch, n_out), float32."""
        w = self.spec.width
        theta = (w * self.threshold_at(t_s)).astype(np.float32)
        z = (u * np.float32(1.0 / full_scale) - theta) * (self.gain / w).astype(np.float32)
        sig = 0.5 * (1.0 + np.tanh(0.5 * z))
        return (np.float32(full_scale) * self.amplitude.astype(np.float32)) * sig ** self.power.astype(np.float32)


def layer_specs(spec: ChipSpec, trainable: Sequence[bool]) -> list[ChipSpec]:
    """The spec each layer's crossbar is fabricated with: the chip's, except that a stage's has
    the stage's weight spread (only fabrication reads it; a loaded layer takes the chip's spec)."""
    if spec.stage is None or all(trainable):
        return [spec] * len(trainable)
    data = spec.model_dump()
    data["conductance"]["init_weight_std_fan_in"] = spec.stage.weight_std_fan_in
    fixed = ChipSpec.model_validate(data)
    return [spec if t else fixed for t in trainable]


def build_stages(spec: ChipSpec, root: np.random.SeedSequence, sizes: Sequence[int],
                 trainable: Sequence[bool]) -> dict[int, StageUnits]:
    """The stages of a chip: for a spec with a ``stage`` section, one :class:`StageUnits` per
    non-trainable layer (keyed by layer), drawn in layer order from the chip's stage stream;
    empty otherwise."""
    if spec.stage is None or all(trainable):
        return {}
    child = np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + (STAGE_STREAM,))
    rng = np.random.Generator(np.random.PCG64(child))
    return {i: StageUnits(spec.stage, int(sizes[i + 1]), rng) for i, t in enumerate(trainable) if not t}


def read_stage(L, units: StageUnits, x: np.ndarray, now: float, seed: int) -> tuple[np.ndarray, float]:
    """A stage layer's read: the crossbar ``L`` (a :class:`~devices.crossbar.Crossbar`) driven by
    float32 ``x`` (batch, n_in) through the chip's DAC, its read noise as any layer's (output
    floor, per-weight and per-device parts), then the stage's units and the ADC.  Returns the
    float32 outputs (batch, n_out) and the drive sum of (x / range)^2 (for the cell energy)."""
    L.ensure_current(now)
    spec = L.spec
    batch = x.shape[0]
    r_in = spec.dac.range
    sq = np.zeros(batch, np.float64)
    ab = np.zeros(batch, np.float64)
    if spec.dac.bits is not None or math.isfinite(r_in):
        step = r_in / (2 ** (spec.dac.bits - 1) - 1) if spec.dac.bits is not None else 0.0
        xq = np.empty_like(x)
        K.dac_kernel(x, xq, float(r_in), float(step), sq, ab)
        drive = float(sq.sum()) / (r_in**2 if math.isfinite(r_in) else 1.0)
    else:
        xq = x
        sq = np.square(x, dtype=np.float64).sum(axis=1)
        drive = float(sq.sum())
    u = xq @ L.w_eff[:-1]
    u += np.float32(spec.bias_level) * L.w_eff[-1]
    r_out = float(spec.adc.range)
    rn = spec.read_noise
    var = np.full((batch, 1), (rn.output_std * r_out) ** 2, np.float64)
    if rn.weight_std > 0.0:
        var += ((rn.weight_std * L.w_max) ** 2 * (sq + spec.bias_level**2))[:, None]
    if L.noise_cols.size:
        rows = np.square(xq, dtype=np.float32) @ L.row_var[:-1].astype(np.float32)
        rows = rows.astype(np.float64) + spec.bias_level**2 * L.row_var[-1]
        var = var + rows[:, None] * L.noise_cols[None, :].astype(np.float64)
    if np.any(var > 0):
        rng = np.random.Generator(np.random.PCG64(seed))
        u += (np.sqrt(var) * rng.standard_normal(u.shape)).astype(np.float32)
    y = np.minimum(units.respond(u, now, r_out), np.float32(r_out))
    if spec.adc.bits is not None:
        adc_step = np.float32(r_out / (2**spec.adc.bits - 1))
        y = np.floor(y / adc_step + np.float32(0.5)) * adc_step
    return np.ascontiguousarray(y, dtype=np.float32), drive
