"""The spec of fixed black-box stages (:class:`StageSpec`), the ``stage`` section of a
:class:`~devices.spec.ChipSpec`; the physics is :mod:`devices.stages`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["StageSpec"]


class StageSpec(BaseModel):
    """Fixed analog stages: layers the controller cannot program and knows nothing about.

    A chip of a spec with a ``stage`` section builds every layer it marks non-trainable
    (``make_chip(..., trainable=...)``) as a stage: a crossbar whose weights are set once at
    fabrication (normal, std ``weight_std_fan_in / sqrt(n_rows)``, then held by the chip's own
    devices, which drift, fail and read noisily as every device of the chip does) followed, in
    place of the chip's neurons, by one fixed analog unit per column with a random
    non-linearity of its own.  With ``u`` a column's current (bias line and read noise
    included, nominal output units) and ``R`` the ADC full scale::

        z = gain * (u / R - width * theta(t)) / width
        y = R * amplitude * sigmoid(z) ** power          (then the ADC: clip to [0, R], quantize)
        theta(t) = threshold + bti_shift * bti * (t / bti_ref_s) ** bti_exponent

    per unit: ``gain`` log-normal around 1 (``gain_dtod``), ``threshold`` normal (``threshold_mean``,
    ``threshold_dtod``, in widths), ``amplitude`` normal around ``amplitude_mean`` (``amplitude_dtod``,
    clipped to [0.05, 1]), ``power`` log-normal around 1 (``power_dtod``: the shape of the onset
    differs per unit), ``bti`` exponential with mean 1.  Unlike the chip's neurons (one-sided
    rectifiers with mild spreads) a stage unit is a two-sided saturating curve that leaks below
    its threshold, with spreads several times larger, and its threshold wanders with the chip's
    time ``t`` (seconds since fabrication) as a transistor's does under bias-temperature
    instability.  The parameters are drawn from a stream of their own under the chip's seed
    (fabrication of every other part is unchanged) and are a function of the spec, the seed and
    the layer, so a saved chip restores them from its seed.
    """

    # As every spec group (devices.spec.SpecModel): frozen, unknown fields and NaN/inf refused.
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False)

    # A unit-gain random projection: a unit-RMS input keeps its scale (the as-fabricated weights
    # of the chip's layers have the same std by default, ConductanceSpec.init_weight_std_fan_in).
    weight_std_fan_in: float = Field(1.0, gt=0.0)
    """Std of the stage's fixed weights times sqrt(n_rows) (bias row included, fixed at 0 mean)."""
    width: float = Field(0.125, gt=0.0, le=1.0)
    """Input span of one unit of ``z``, a fraction of the ADC full scale."""
    gain_dtod: float = Field(0.5, ge=0.0, le=1.5)
    """Log-normal sigma of each unit's slope."""
    threshold_mean: float = Field(0.5, ge=-5.0, le=5.0)
    """Mean threshold of the units, in widths."""
    threshold_dtod: float = Field(0.5, ge=0.0, le=5.0)
    """Unit-to-unit spread of the threshold (normal), in widths."""
    amplitude_mean: float = Field(0.8, gt=0.0, le=1.0)
    """Mean output swing of a unit, a fraction of the ADC full scale."""
    amplitude_dtod: float = Field(0.1, ge=0.0, le=1.0)
    """Relative spread of the output swing (normal, clipped to [0.05, 1] of the full scale)."""
    power_dtod: float = Field(0.3, ge=0.0, le=1.5)
    """Log-normal sigma of the exponent of each unit's curve (its shape)."""
    bti_shift: float = Field(0.4, ge=0.0, le=10.0)
    """Mean threshold shift after ``bti_ref_s`` of chip time, in widths."""
    bti_exponent: float = Field(0.2, gt=0.0, le=1.0)
    """Power-law exponent of the threshold shift with time."""
    bti_ref_s: float = Field(3.156e8, gt=0.0)
    """Chip time at which the mean shift is ``bti_shift``, seconds."""
