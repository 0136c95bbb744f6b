"""Device specifications: frozen, validated data describing one kind of chip.

A :class:`ChipSpec` is pure data; :func:`devices.make_chip` turns a spec and a
seed into one unique chip instance.  Suffixes follow a fixed convention:

* ``*_dtod``: device-to-device (or neuron-to-neuron) spread, drawn once at
  fabrication and kept for the life of the chip;
* ``*_std``: cycle-to-cycle spread, drawn anew on every event (pulse, read).

Conductances are normalized: ``g = (G - G_min) / (G_max - G_min)``, so a
device nominally spans ``[0, 1]``.  A weight is a differential pair,
``w = (g_plus - g_minus) * w_max`` with ``w_max = weight_range_fan_in /
sqrt(n_rows)`` in nominal weight units.  Outputs, ADC range and neuron
saturation are in nominal output units (``x @ w`` for ideal devices).
"""

from __future__ import annotations

import math
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .stage_spec import StageSpec

__all__ = [
    "SpecModel",
    "ConductanceSpec",
    "ProgrammingSpec",
    "DriftSpec",
    "ReadNoiseSpec",
    "WireSpec",
    "DACSpec",
    "ADCSpec",
    "NeuronSpec",
    "FaultSpec",
    "EnergySpec",
    "StageSpec",
    "ChipSpec",
    "CONTROLLER_MULTIPLY_ADD_J",
]


class SpecModel(BaseModel):
    """Base of every spec group: frozen, unknown fields are errors, no NaN or inf
    (the converter ranges, which may be ``inf`` for an ideal chip, opt back in)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False)


class ConductanceSpec(SpecModel):
    """Conductance range and the weight mapping of a differential pair."""

    g_min_us: float = Field(0.0, ge=0.0)
    """Lowest conductance of a device, microsiemens (sets read energy only)."""
    g_max_us: float = Field(25.0, gt=0.0)
    """Highest nominal conductance of a device, microsiemens."""
    g_max_dtod: float = Field(0.0, ge=0.0, le=0.5)
    """Relative spread of each device's own saturation level (normal, clipped)."""
    weight_range_fan_in: float = Field(4.0, gt=0.0)
    """w_max * sqrt(n_rows): the largest weight of a layer, scaled by fan-in."""
    init_weight_std_fan_in: float = Field(1.0, ge=0.0)
    """Std of the as-fabricated weights times sqrt(n_rows) (bias row starts at 0)."""
    mapping: Literal["common_mode", "one_per_sign"] = "common_mode"
    """How a weight sits on its pair.  ``one_per_sign``: the device of the weight's sign
    holds ``|w| / w_max``, the other sits at 0 (aihwkit's single-pair converter; what
    program-and-verify and the refresh of one-directional devices write).
    ``common_mode``: the weight is split around ``init_common_mode``, ``g+- = c +- w /
    (2 w_max)``, both lifted if the lower would fall below 0 (a scheme for bidirectional
    devices: at c = 0.5, the symmetry point of soft-bounded devices, up and down pulses
    have equal size)."""
    init_common_mode: float = Field(0.5, ge=0.0, le=1.0)
    """Common-mode conductance of the ``common_mode`` mapping (unused by ``one_per_sign``)."""

    @model_validator(mode="after")
    def _range(self) -> "ConductanceSpec":
        if self.g_max_us <= self.g_min_us:
            raise ValueError(f"g_max_us ({self.g_max_us}) must exceed g_min_us ({self.g_min_us})")
        if self.init_weight_std_fan_in > 0.5 * self.weight_range_fan_in:
            raise ValueError(
                "init_weight_std_fan_in must be at most half of weight_range_fan_in "
                f"(got {self.init_weight_std_fan_in} and {self.weight_range_fan_in})"
            )
        return self


class ProgrammingSpec(SpecModel):
    """How a requested weight change becomes write pulses.

    ``mode="exact"`` adds the request to the weight exactly (digital twin).
    ``mode="pulsed"``: the chip converts a request into ``n = round(|delta| /
    pulse_step)`` pulses (``pulse_step`` = ``step`` * w_max / 2, the step at
    mid-range).  Each pulse moves a device with soft bounds::

        up:   g += step_up   * (1 - g / g_sat) * (1 + pulse_std * xi)
        down: g -= step_down * (g / g_sat)     * (1 + pulse_std * xi)

    with ``step_up = step (1 + up_down)``, ``step_down = step (1 - up_down)``,
    each with its own device-to-device spread.  The ``n`` pulses of one request are
    applied in closed form: one normal draw with the exact mean and variance of ``n``
    such pulses.

    ``direction="both"``: a device moves either way; a request goes to the device of the
    pair with more room in the needed direction.  ``direction="set_only"`` (PCM): a device
    only grows by partial-SET pulses (a request whose noise would lower it leaves it where it
    was); a positive request raises ``g+``, a negative one
    ``g-``.  When the device to raise has reached ``refresh_at`` of its saturation level,
    the chip refreshes the pair first: it reads the weight, RESETs both devices to near 0
    (``reset_level`` +- ``reset_std``, clipped at 0) and writes the weight back onto one device by
    program-and-verify.

    Program-and-verify (``AnalogChip.program_verify``, refresh) is emulated by its outcome:
    the pulses and verify reads such a loop spends, and the residual error measured after
    it on real arrays, normal with the standard deviation ``verify_error_us`` (a
    polynomial in ``G / g_max``, microsiemens).
    """

    mode: Literal["exact", "pulsed"] = "pulsed"
    step: float = Field(0.01, gt=0.0, le=0.5)
    """Conductance change of one pulse at g = 0, as a fraction of the range."""
    step_dtod: float = Field(0.0, ge=0.0, le=1.0)
    """Relative device-to-device spread of ``step`` (log-normal)."""
    up_down: float = Field(0.0, gt=-1.0, lt=1.0)
    """Mean asymmetry between potentiation and depression steps."""
    up_down_dtod: float = Field(0.0, ge=0.0, le=0.5)
    """Device-to-device spread of ``up_down`` (normal, clipped to (-0.9, 0.9))."""
    pulse_std: float = Field(0.0, ge=0.0, le=3.0)
    """Cycle-to-cycle relative spread of one pulse's step."""
    max_pulses: int = Field(32, ge=1, le=1024)
    """Most pulses one ``program`` call applies to one device."""
    direction: Literal["both", "set_only"] = "both"
    """Whether devices move both ways, or only up with an abrupt RESET to near 0 (PCM)."""
    refresh_at: float = Field(0.75, gt=0.0, le=1.0)
    """``set_only``: fraction of a device's saturation level at which its pair is refreshed."""
    reset_level: float = Field(0.0, ge=0.0, le=0.2)
    """``set_only``: mean conductance after a RESET, fraction of the range."""
    reset_std: float = Field(0.0, ge=0.0, le=0.2)
    """``set_only``: spread of the conductance after a RESET (normal, clipped at 0)."""
    verify_error_us: tuple[float, ...] = Field((0.0,), min_length=1, max_length=5)
    """Residual error left by program-and-verify, microsiemens: the standard deviation
    ``c0 + c1 g + c2 g^2 + ...`` with ``g = G / g_max`` (floored at 0)."""
    verify_reads: int = Field(10, ge=1, le=1000)
    """Verify reads one program-and-verify spends per device (the loop's iterations)."""


class DriftSpec(SpecModel):
    """Power-law conductance drift, g(t) = g_prog ((t + t0) / t0) ** -nu.

    Each device has its own exponent ``nu = |mu(g) + sigma(g) xi|`` with ``xi ~ N(0, 1)``
    drawn anew each time the device is programmed (``nu_redraw``; else once at
    fabrication), and ``mu``, ``sigma`` evaluated at the conductance it was programmed to::

        mu(g)    = clip(mu_log_coeff * ln g + mu_offset, mu_min, mu_max)
        sigma(g) = clip(sigma_log_coeff * ln g + sigma_offset, sigma_min, sigma_max)

    ``t`` is the time since that device was last programmed.
    """

    enabled: bool = True
    nu_redraw: bool = True
    """Draw a device's ``xi`` at every programming (IBM's model) instead of once for life."""
    t0_s: float = Field(20.0, gt=0.0)
    mu_log_coeff: float = 0.0
    mu_offset: float = 0.05
    mu_min: float = Field(0.0, ge=0.0)
    mu_max: float = Field(1.0, ge=0.0)
    sigma_log_coeff: float = 0.0
    sigma_offset: float = 0.0
    sigma_min: float = Field(0.0, ge=0.0)
    sigma_max: float = Field(1.0, ge=0.0)
    refresh_rel: float = Field(0.05, gt=0.0, le=0.1)
    """The cached effective weights are recomputed once the age of the most
    recently programmed device has grown by this fraction (bounds the drift
    error of a read by about nu * refresh_rel)."""

    @model_validator(mode="after")
    def _bounds(self) -> "DriftSpec":
        if self.mu_max < self.mu_min or self.sigma_max < self.sigma_min:
            raise ValueError("drift clip bounds must satisfy min <= max")
        return self


class ReadNoiseSpec(SpecModel):
    """Noise of one read, redrawn every call, referred to the output.

    Three independent parts add in variance: a constant floor ``output_std`` (a fraction
    of the ADC full scale); a constant fluctuation of each *weight* (``weight_std`` of
    w_max, aihwkit's additive constant weight noise); and, with ``device_law="pcm_1f"``,
    the 1/f noise of each *device* of IBM's PCM model, relative to its conductance::

        sigma_G = G(t) * Q_s * sqrt(ln((t + t_read) / (2 t_read)))
        Q_s     = min(q_s / max((G_prog / g_max) ** q_exponent, q_floor), q_max)

    with ``t`` the time since the device was programmed plus the drift's ``t0_s``.  The
    device noise reaches an output as ``sum_i x_i^2 (sigma_i+^2 + sigma_i-^2) w_max^2``;
    the chip keeps its row and column sums and applies the product form ``row_i col_j /
    total``, recomputed with the drift refresh.  It is exact for a uniform array and for
    one-hot inputs on it; on weights like a trained layer's the output noise std of 90 % of
    the outputs is within 8 % of the exact sum over the driven devices
    (``tests/test_pcm_fidelity.py``); on strongly block-structured arrays it can be off by
    much more (outputs of an empty block get too little noise).
    """

    output_std: float = Field(0.0, ge=0.0, le=1.0)
    """Additive output noise as a fraction of the ADC full scale."""
    weight_std: float = Field(0.0, ge=0.0, le=1.0)
    """Read fluctuation of each weight (of the pair together) as a fraction of w_max."""
    device_law: Literal["none", "pcm_1f"] = "none"
    """Per-device 1/f read noise relative to conductance (IBM's PCM law) or none."""
    q_s: float = Field(0.0088, ge=0.0, le=1.0)
    q_exponent: float = Field(0.65, ge=0.0, le=2.0)
    q_floor: float = Field(1e-3, gt=0.0, le=1.0)
    q_max: float = Field(0.2, ge=0.0, le=1.0)
    t_read_s: float = Field(250e-9, gt=0.0)


class WireSpec(SpecModel):
    """Resistance of the row and column wires (IR drop), and the size of one physical array.

    Rows are driven from one end and columns sensed at the other (``devices.irdrop`` gives
    the geometry).  A layer larger than ``tile_rows x tile_cols`` cells is cut into tiles,
    each with its own drivers and sense amplifiers, whose column currents add.  The chip folds
    the wires' first-order effect into its effective weights at each drift refresh
    (``devices.irdrop.ir_drop_weights``, each device of a pair on its own array).
    """

    segment_ohm: float = Field(0.0, ge=0.0, le=100.0)
    """Wire resistance between neighbouring cells, ohms; 0: ideal wires."""
    tile_rows: int = Field(256, ge=1)
    tile_cols: int = Field(256, ge=1)


class DACSpec(SpecModel):
    """Input converter: inputs are clipped to [-range, range] and quantized."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=True)

    bits: Optional[int] = Field(8, ge=2, le=16)
    """Signed resolution; ``None`` passes inputs through unquantized."""
    range: float = Field(1.0, gt=0.0)
    """Largest input level; ``inf`` disables clipping."""


class ADCSpec(SpecModel):
    """Output converter: outputs are clipped to [0, range] and quantized."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=True)

    bits: Optional[int] = Field(8, ge=1, le=16)
    """Resolution: at most 2**bits distinct values; ``None`` for none."""
    range: float = Field(2.0, gt=0.0)
    """Full scale in nominal output units; ``inf`` disables saturation."""
    columns_per_adc: int = Field(8, ge=1)
    """Columns sharing one converter (sets read latency)."""


class NeuronSpec(SpecModel):
    """The analog neuron after each column, with random per-neuron parameters.

    ``relu``: ``y = max(u, 0)``.  ``soft``::

        z = gain * (u - offset * R)           R = ADC full scale
        r = max(z, 0)
        h = r + curvature * r^2 / (1 + r / R)
        y = h / (1 + h / (saturation * R))

    gain is log-normal around 1 (``gain_dtod``), offset, curvature and
    saturation normal around their means (``*_dtod``), curvature clipped to
    [-0.45, 2] / R so that every neuron stays monotone.
    """

    family: Literal["relu", "soft"] = "relu"
    gain_dtod: float = Field(0.0, ge=0.0, le=1.5)
    offset_dtod: float = Field(0.0, ge=0.0, le=0.5)
    curvature_mean: float = Field(0.0, ge=-0.45, le=2.0)
    curvature_dtod: float = Field(0.0, ge=0.0, le=2.0)
    saturation_mean: float = Field(1.0, gt=0.0)
    saturation_dtod: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _relu_has_no_spread(self) -> "NeuronSpec":
        if self.family == "relu":
            spread = (self.gain_dtod, self.offset_dtod, self.curvature_dtod, self.saturation_dtod)
            if any(v != 0.0 for v in spread) or self.curvature_mean != 0.0:
                raise ValueError("neuron family 'relu' takes no gain/offset/curvature/saturation parameters")
        return self


class FaultSpec(SpecModel):
    """Stuck devices: at fabrication, by wear (endurance) and with time (random failures)."""

    stuck_on_prob: float = Field(0.0, ge=0.0, le=0.5)
    """Fraction of devices stuck at their highest conductance at fabrication."""
    stuck_off_prob: float = Field(0.0, ge=0.0, le=0.5)
    """Fraction of devices stuck at zero conductance at fabrication."""
    endurance_pulses: Optional[float] = Field(None, gt=0.0)
    """Median number of pulses a device survives; ``None`` for unlimited."""
    endurance_dtod: float = Field(0.0, ge=0.0, le=3.0)
    """Log-normal sigma of each device's endurance."""
    failure_median_s: Optional[float] = Field(None, gt=0.0)
    """Median time from fabrication until a device fails at random and sticks, seconds
    (retention failures); ``None``: devices never fail with time.  Each device draws its
    own failure time once, log-normal around this median."""
    failure_dtod: float = Field(1.0, ge=0.0, le=5.0)
    """Log-normal sigma of the per-device failure times."""
    failure_stuck_on_share: float = Field(0.5, ge=0.0, le=1.0)
    """Share of the failures with time that stick at the highest conductance (the rest at 0)."""

    def failed_fraction(self, age_s: float) -> float:
        """Expected fraction of devices failed with time (not by wear) at ``age_s`` after fabrication."""
        if self.failure_median_s is None or age_s <= 0:
            return 0.0
        if self.failure_dtod == 0.0:
            return 1.0 if age_s >= self.failure_median_s else 0.0
        z = math.log(age_s / self.failure_median_s) / self.failure_dtod
        return 0.5 * math.erfc(-z / math.sqrt(2.0))


#: Energy of one multiply-add by arithmetic precision, joules: Horowitz, ISSCC 2014 (45 nm, 0.9 V):
#: fp32 multiply 3.7 pJ + add 0.9 pJ; 8-bit integer multiply 0.2 pJ + add 0.03 pJ.  16-bit
#: integers are not in that table [derived]: multiply 0.2 pJ x (16/8)^2 = 0.8 pJ (array
#: multipliers grow with the square of the width; 3.1 pJ x (16/32)^2 = 0.78 pJ from the 32-bit
#: figure agrees), add 0.03 pJ x 2 = 0.06 pJ (linear in width), 0.86 pJ.
CONTROLLER_MULTIPLY_ADD_J = {"fp32": 4.6e-12, "int16": 0.86e-12, "int8": 0.23e-12}


class EnergySpec(SpecModel):
    """Energy and latency of each operation (joules, seconds, volts)."""

    v_read: float = Field(0.2, ge=0.0)
    """Read voltage across a cell at full-scale input."""
    t_read_s: float = Field(100e-9, ge=0.0)
    """Integration time of one read."""
    dac_conversion_j: float = Field(16e-15, ge=0.0)
    adc_fom_j_per_step: float = Field(20e-15, ge=0.0)
    """Walden figure of merit; one conversion costs fom * 2**bits."""
    adc_conversion_s: float = Field(9e-9, ge=0.0)
    neuron_j: float = Field(46e-15, ge=0.0)
    """One neuron (column sense and activation) evaluation."""
    pulse_j: float = Field(10e-12, ge=0.0)
    pulse_s: float = Field(100e-9, ge=0.0)
    """Duration of one pulse; rows are programmed one after another."""
    mac_j: float = Field(0.0, ge=0.0)
    """Energy per multiply-accumulate, for digital twins (else 0)."""
    digital_op_j: float = Field(2.3e-12, ge=0.0)
    """One operation of the controller in fp32 (half a multiply-add)."""
    digital_op_s: float = Field(1e-9 / 32, ge=0.0)
    controller_precision: Literal["fp32", "int16", "int8"] = "fp32"
    """Arithmetic of the controller: its operations cost ``digital_op_j`` scaled by the ratio of
    a multiply-add at this precision to one in fp32 (``CONTROLLER_MULTIPLY_ADD_J``);
    ``controller_op_j`` is the result, what the chip charges per operation."""
    # C V^2 of one line: 50 fF bit-line capacitance (reference device-parameters.md sec. 8.2,
    # [unconfirmed]) at 1 V, half of NeuroSim's 2 V write (Param.cpp; coincidence updates drive
    # rows and columns at half the write voltage each, Gokmen & Vlasov, Front. Neurosci. 2016) [derived].
    driver_pulse_j: float = Field(50e-15, ge=0.0)
    """One pulse of a row or column driver during an in-array update (charging the line)."""
    # One 8-bit comparison per bit, taken as an 8-bit add: 0.03 pJ (Horowitz, ISSCC 2014) [derived].
    translator_bit_j: float = Field(0.03e-12, ge=0.0)
    """One bit of a stochastic translator (a value compared with a pseudo-random number)."""

    @property
    def controller_op_j(self) -> float:
        """Energy of one controller operation at ``controller_precision``, joules."""
        if self.controller_precision == "fp32":
            return self.digital_op_j
        mac = CONTROLLER_MULTIPLY_ADD_J
        return self.digital_op_j * mac[self.controller_precision] / mac["fp32"]


class ChipSpec(SpecModel):
    """Everything that defines one kind of chip."""

    name: str = "custom"
    citation: str = ""
    bias_level: float = Field(1.0, gt=0.0)
    """Input level driving the bias row (in DAC units)."""
    conductance: ConductanceSpec = ConductanceSpec()
    programming: ProgrammingSpec = ProgrammingSpec()
    drift: DriftSpec = DriftSpec()
    read_noise: ReadNoiseSpec = ReadNoiseSpec()
    wires: WireSpec = WireSpec()
    dac: DACSpec = DACSpec()
    adc: ADCSpec = ADCSpec()
    neuron: NeuronSpec = NeuronSpec()
    faults: FaultSpec = FaultSpec()
    energy: EnergySpec = EnergySpec()
    # Left out of a dump when absent: a spec without stages saves and digests as before the section existed.
    stage: Optional[StageSpec] = Field(None, exclude_if=lambda v: v is None)
    """Fixed black-box stages: how the layers a chip marks non-trainable are built (None: those
    layers are ordinary crossbars that only refuse programming)."""

    @model_validator(mode="after")
    def _consistent(self) -> "ChipSpec":
        if self.stage is not None:
            if self.adc.range == float("inf"):
                raise ValueError("a stage needs a finite ADC range (its units' scale R)")
            if self.stage.weight_std_fan_in > 0.5 * self.conductance.weight_range_fan_in:
                raise ValueError(f"stage.weight_std_fan_in ({self.stage.weight_std_fan_in}) must be at most half of "
                                 f"conductance.weight_range_fan_in ({self.conductance.weight_range_fan_in})")
        if self.bias_level > self.dac.range:
            raise ValueError(f"bias_level {self.bias_level} exceeds the DAC range {self.dac.range}")
        if self.faults.stuck_on_prob + self.faults.stuck_off_prob > 0.5:
            raise ValueError("stuck_on_prob + stuck_off_prob must be at most 0.5")
        if self.neuron.family == "soft" and self.adc.range == float("inf"):
            raise ValueError("a 'soft' neuron needs a finite ADC range (its scale R)")
        for name, conv in (("dac", self.dac), ("adc", self.adc)):
            if conv.bits is not None and conv.range == float("inf"):
                raise ValueError(f"{name}.bits needs a finite {name}.range (the levels span it)")
        if self.programming.mode == "exact" and (self.read_noise.device_law != "none"
                                                 or self.programming.direction != "both"
                                                 or self.wires.segment_ohm > 0):
            raise ValueError("read_noise.device_law, programming.direction and wires.segment_ohm describe "
                             "devices; exact programming has none (use mode='pulsed')")
        if self.read_noise.output_std > 0 and self.adc.range == float("inf"):
            raise ValueError("read_noise.output_std is a fraction of the ADC full scale; it needs a finite adc.range")
        return self
