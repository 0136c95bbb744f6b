"""Named chip specifications, each citing the measurements it is built from.

Presets are frozen :class:`~devices.spec.ChipSpec` instances in a registry,
not subclasses.  :func:`variant` derives a new spec and re-validates it.
Figures marked [derived] are computed from the cited inputs.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from .spec import (
    ADCSpec,
    ChipSpec,
    ConductanceSpec,
    DACSpec,
    DriftSpec,
    EnergySpec,
    FaultSpec,
    NeuronSpec,
    ProgrammingSpec,
    ReadNoiseSpec,
    StageSpec,
    WireSpec,
)

__all__ = ["PRESETS", "get_preset", "variant"]

IDEAL = ChipSpec(
    name="ideal",
    citation="Digital twin: exact float weights, ReLU neurons, no noise, no converters.",
    conductance=ConductanceSpec(g_min_us=0.0, g_max_us=25.0),
    programming=ProgrammingSpec(mode="exact"),
    drift=DriftSpec(enabled=False),
    read_noise=ReadNoiseSpec(),
    dac=DACSpec(bits=None, range=math.inf),
    adc=ADCSpec(bits=None, range=math.inf),
    neuron=NeuronSpec(family="relu"),
    faults=FaultSpec(),
    energy=EnergySpec(
        # Energy of the same arithmetic on a digital accelerator: NVIDIA H100 SXM at TDP
        # and peak BF16, 0.71 pJ/FLOP = 1.41 pJ/MAC [derived from 700 W and 989.4 TFLOPS].
        v_read=0.0,
        t_read_s=0.0,
        dac_conversion_j=0.0,
        adc_fom_j_per_step=0.0,
        adc_conversion_s=0.0,
        neuron_j=0.0,
        mac_j=1.41e-12,
        # One weight update as one fp32 add, 0.9 pJ (Horowitz, ISSCC 2014, 45 nm).
        pulse_j=0.9e-12,
        pulse_s=0.0,
        # No pulse drivers or stochastic translators: exact weights take no in-array update.
        driver_pulse_j=0.0,
        translator_bit_j=0.0,
    ),
)

PCM = ChipSpec(
    name="pcm",
    citation=(
        "IBM PCM statistical model (Nandakumar et al., ICECS 2019; Joshi et al., Nat. Commun. 2020) "
        "as published in aihwkit inference/noise/pcm.py; pulse response after aihwkit's "
        "PCMPresetDevice (Nandakumar et al., Front. Neurosci. 2020); periphery after aihwkit's "
        "StandardHWATrainingPreset (Rasch et al., Nat. Commun. 2023)."
    ),
    # g_max 25 uS per device, g_min 0, one device per sign (aihwkit SinglePairConductanceConverter).
    conductance=ConductanceSpec(g_min_us=0.0, g_max_us=25.0, g_max_dtod=0.1, mapping="one_per_sign"),
    programming=ProgrammingSpec(
        mode="pulsed",
        # PCMPresetDevice: dw_min 0.01 on a 0..2 range = 0.5 % of range; dtod 0.2 (log-normal);
        # up_down dtod 0.05; cycle-to-cycle dw_min_std 0.6 (Nandakumar 2020).
        step=0.005,
        step_dtod=0.2,
        up_down=0.0,
        up_down_dtod=0.05,
        pulse_std=0.6,
        # PCM grows only by partial SET; lowering takes a RESET.  Used as a one-sided pair with
        # refresh, as aihwkit's OneSidedUnitCell does with PCMPresetDevice (refresh_upper_thres
        # 0.75).  The RESET state is the IBM model's programming error at g_T = 0: 0.26348 uS,
        # clipped at 0 (aihwkit inference/noise/pcm.py) = 0.0105 of the range.
        direction="set_only",
        refresh_at=0.75,
        reset_level=0.0,
        reset_std=0.26348 / 25.0,
        # Error after iterative program-and-verify, sigma_prog(g) = 0.26348 + 1.9650 g - 1.1731 g^2
        # uS with g = G / 25 uS (PCMLikeNoiseModel.prog_coeff; Nandakumar et al., ICECS 2019).
        verify_error_us=(0.26348, 1.9650, -1.1731),
        # Iterations of one program-and-verify: 10 to 100 are typical [unconfirmed; reference
        # device-parameters.md sec. 8.2]; the lower end.
        verify_reads=10,
    ),
    drift=DriftSpec(
        enabled=True,
        # PCMLikeNoiseModel: t0 = 20 s; mu_nu = clip(-0.0155 ln g + 0.0244, 0.049, 0.1);
        # sigma_nu = clip(-0.0125 ln g - 0.0059, 0.008, 0.045) (aihwkit inference/noise/pcm.py).
        t0_s=20.0,
        mu_log_coeff=-0.0155,
        mu_offset=0.0244,
        mu_min=0.049,
        mu_max=0.1,
        sigma_log_coeff=-0.0125,
        sigma_offset=-0.0059,
        sigma_min=0.008,
        sigma_max=0.045,
    ),
    # Per-device 1/f read noise of PCMLikeNoiseModel: Q_s = min(0.0088 / max(g^0.65, 1e-3), 0.2),
    # sigma = G(t) Q_s sqrt(ln((t + t_read) / (2 t_read))), t_read = 250 ns (aihwkit
    # inference/noise/pcm.py); output noise of StandardHWATrainingPreset: out_noise 0.04 on an
    # out_bound of 10 (0.4 % of full scale).
    read_noise=ReadNoiseSpec(output_std=0.004, device_law="pcm_1f", q_s=0.0088, q_exponent=0.65, q_floor=1e-3,
                             q_max=0.2, t_read_s=250e-9),
    # Wires: 0.35 ohm per cell segment (aihwkit IOParameters.ir_drop_g_ratio = 1 / (0.35 ohm x 5 uS));
    # arrays of 256 x 256 cells, the core size of IBM's HERMES PCM chip (Le Gallo et al.,
    # Nat. Electron. 2023).
    wires=WireSpec(segment_ohm=0.35, tile_rows=256, tile_cols=256),
    # StandardIOParameters: 8-bit DAC and 8-bit ADC.
    dac=DACSpec(bits=8, range=1.0),
    adc=ADCSpec(bits=8, range=2.0, columns_per_adc=8),
    # Mild column-to-column mismatch of the sense circuit; aihwkit models a per-output spread
    # of an S-shaped output non-linearity (IOParameters.out_nonlinearity) with this form.
    neuron=NeuronSpec(family="soft", gain_dtod=0.05, offset_dtod=0.005, saturation_mean=2.0, saturation_dtod=0.1),
    faults=FaultSpec(
        # PCM endurance ~1e9 cycles (Hindawi J. Nanomater. 2013, table 4); stuck-RESET and
        # stuck-SET failures reported there; fabrication fraction set to aihwkit's
        # corrupt_devices_prob range (0.01), split between the two states.
        stuck_on_prob=0.005,
        stuck_off_prob=0.005,
        endurance_pulses=1e9,
        endurance_dtod=0.5,
        # Retention > 10 years (Hindawi 2013, table 4), read as at most 1 % of devices failed
        # at 10 years with a log-normal sigma of 1: median 10 y x exp(2.326) = 102 y [derived].
        # Retention loss of PCM is the amorphous (low-conductance) state crystallizing, so
        # failed devices stick high.
        failure_median_s=3.23e9,
        failure_dtod=1.0,
        failure_stuck_on_share=1.0,
    ),
    energy=EnergySpec(
        # Cell read V^2 G t: 0.2 V, 100 ns, 25 uS -> 100 fJ at full scale [derived, ref. sec. 8.2].
        v_read=0.2,
        t_read_s=100e-9,
        # Bit-line charging C V^2 = 50 fF x (0.2 V)^2 = 2 fJ per level line, x 8 bits [derived].
        dac_conversion_j=16e-15,
        # Walden FOM between the 2013 record (2.2 fJ/step) and a typical 50 fJ/step.
        adc_fom_j_per_step=20e-15,
        # SAR conversion: bits + 1 cycles at NeuroSim's 1 GHz clock; 8 columns per ADC (NeuroSim).
        adc_conversion_s=9e-9,
        # Column current-to-voltage stage (dominant in NeuroSim's column power): taken equal to
        # a 22 nm 5-bit SAR conversion, 46 fJ [derived, NeuroSim SarADC.cpp].
        neuron_j=46e-15,
        # PCM RESET/SET pulse 1-50 pJ (typical range), ~100 ns write (Hindawi 2013).
        pulse_j=10e-12,
        pulse_s=100e-9,
        # Controller: fp32 multiply-add 4.6 pJ = 2.3 pJ/op (Horowitz, ISSCC 2014); 32 lanes at 1 GHz.
        digital_op_j=2.3e-12,
        digital_op_s=1e-9 / 32,
        # In-array update drivers: one line charged per pulse, C V^2 = 50 fF (bit line, reference
        # sec. 8.2 [unconfirmed]) x (1 V)^2, half of a 2 V write on each of row and column
        # (NeuroSim Param.cpp; half-select scheme of Gokmen & Vlasov, Front. Neurosci. 2016) = 50 fJ [derived].
        driver_pulse_j=50e-15,
        # Stochastic translator: one 8-bit comparison with a pseudo-random number per bit, as an
        # 8-bit add, 0.03 pJ (Horowitz, ISSCC 2014) [derived].
        translator_bit_j=0.03e-12,
    ),
)

RRAM = ChipSpec(
    name="rram",
    citation=(
        "NeuRRAM-like RRAM (Wan et al., Nature 2022; aihwkit ReRamWan2022NoiseModel, CrossSim "
        "RRAM_Wan); pulse response after aihwkit's ReRamArrayHfO2PresetDevice (Gong & Rasch, IEDM 2022)."
    ),
    # g_max 40 uS (aihwkit Wan2022 reference); NeuroSim-style on/off ratio 10 -> g_min 4 uS.
    conductance=ConductanceSpec(g_min_us=4.0, g_max_us=40.0, g_max_dtod=0.2),
    programming=ProgrammingSpec(
        mode="pulsed",
        # Finer steps than the HfO2 array preset (dw_min 0.46 of +-1 is too coarse for
        # in-situ learning); spreads from ReRamArrayHfO2PresetDevice: dw_min dtod 0.71,
        # up_down dtod 0.01, dw_min_std 0.22.
        step=0.01,
        step_dtod=0.7,
        up_down=0.1,
        up_down_dtod=0.01,
        pulse_std=0.22,
        # Programming error of NeuRRAM after write-verify, 1 s after programming: the 4th-order
        # fit of aihwkit's ReRamWan2022NoiseModel (g = G / 40 uS), lowest order first.
        verify_error_us=(0.348, 16.030, -43.853, 45.393, -16.815),
        verify_reads=10,
    ),
    drift=DriftSpec(
        enabled=True,
        # CMO/HfOx relaxation: -0.089 uS per ln t on ~40 uS, ~2.5 % of range after a day;
        # as a power law, nu ~ 0.002 [derived]; spread 0.001.
        t0_s=1.0,
        mu_offset=0.002,
        mu_min=0.0,
        mu_max=0.01,
        sigma_offset=0.001,
        sigma_min=0.0,
        sigma_max=0.01,
    ),
    # aihwkit advises w_noise ~ 0.01 for NeuRRAM short-term read noise (additive, per weight).
    read_noise=ReadNoiseSpec(output_std=0.004, weight_std=0.01),
    # Wires: aihwkit's 0.35 ohm per cell segment; NeuRRAM's cores are 256 x 256 (Wan et al., Nature 2022).
    wires=WireSpec(segment_ohm=0.35, tile_rows=256, tile_cols=256),
    dac=DACSpec(bits=8, range=1.0),
    adc=ADCSpec(bits=8, range=2.0, columns_per_adc=8),
    neuron=NeuronSpec(family="soft", gain_dtod=0.08, offset_dtod=0.01, saturation_mean=2.0, saturation_dtod=0.1),
    faults=FaultSpec(
        # Measured HfO2 arrays: 9.77 % corrupt devices (Gong & Rasch, IEDM 2022); multi-level
        # HfOx endurance ~1e6 cycles (Huang et al.).
        stuck_on_prob=0.0488,
        stuck_off_prob=0.0489,
        endurance_pulses=1e6,
        endurance_dtod=0.5,
        # HfOx RRAM: 10-year retention lifetime from voltage/thermal acceleration tests (Zhang
        # et al., IRPS 2011), read as 1 % failed at 10 years, log-normal sigma 1 -> median
        # 102 y [derived]; filaments dissolve (low-resistance state lost), so failures stick low.
        failure_median_s=3.23e9,
        failure_dtod=1.0,
        failure_stuck_on_share=0.0,
    ),
    energy=EnergySpec(
        # NeuroSim RRAM read 0.55 V, 10 ns pulse; SAR 22 nm; write 2 V x 100 uA x 10 ns = 2 pJ.
        v_read=0.55,
        t_read_s=10e-9,
        dac_conversion_j=16e-15,
        adc_fom_j_per_step=20e-15,
        adc_conversion_s=9e-9,
        neuron_j=46e-15,
        pulse_j=2e-12,
        pulse_s=10e-9,
        digital_op_j=2.3e-12,
        digital_op_s=1e-9 / 32,
        # In-array update drivers: C V^2 = 50 fF (reference sec. 8.2 [unconfirmed]) x (1 V)^2, half
        # of NeuroSim's 2 V write per line (Gokmen & Vlasov 2016 half-select) = 50 fJ [derived].
        driver_pulse_j=50e-15,
        # Stochastic translator bit: an 8-bit comparison as an 8-bit add, 0.03 pJ (Horowitz 2014) [derived].
        translator_bit_j=0.03e-12,
    ),
)

WILD = ChipSpec(
    name="wild",
    citation=(
        "Black-box study chip: PCM devices and periphery of the 'pcm' preset with strongly varying "
        "neurons (gain spread x2, offsets, curvature and saturation all differ per neuron)."
    ),
    conductance=PCM.conductance,
    programming=PCM.programming,
    drift=PCM.drift,
    read_noise=PCM.read_noise,
    wires=PCM.wires,
    dac=PCM.dac,
    adc=PCM.adc,
    neuron=NeuronSpec(
        family="soft",
        gain_dtod=0.5,
        offset_dtod=0.03,
        curvature_mean=0.3,
        curvature_dtod=0.5,
        saturation_mean=0.8,
        saturation_dtod=0.3,
    ),
    faults=PCM.faults,
    energy=PCM.energy,
)

PCM_BLACKBOX = PCM.model_copy(update=dict(
    name="pcm_blackbox",
    citation=(
        "The 'pcm' preset whose non-trainable layers are fixed analog stages: weights set at "
        "fabrication on the chip's PCM devices (they drift as those do), read through analog units "
        "with per-unit mismatch after Pelgrom et al. (IEEE JSSC 1989) and Kinget (IEEE JSSC 2005) "
        "and a threshold that wanders by bias-temperature instability (Schroder & Babcock, J. Appl. "
        "Phys. 2003; Kaczer et al., IRPS 2010)."
    ),
    stage=StageSpec(
        # A unit-gain random projection (as the chip's as-fabricated layers, init_weight_std_fan_in 1).
        weight_std_fan_in=1.0,
        # The units' input span: a unit-RMS input at a quarter of the DAC range through a unit-gain
        # projection gives column currents of RMS 0.25 = 0.125 of the ADC full scale (2); one width
        # is that RMS, so a typical input sweeps a unit across its curve [derived].
        width=0.125,
        # Units built as weak-inversion differential pairs: their linear range is about 2 n U_T =
        # 2 x 1.3 x 26 mV = 68 mV [derived], one width.  Offset: A_VT = 3.5 mV um at 65 nm (Kinget,
        # JSSC 2005) on devices of 4x the minimum area (0.02 um^2 -> sigma_VT = 25 mV), sqrt(2) for
        # the pair: 35 mV = 0.5 width [derived].  Mean threshold half a width above the mean input,
        # so that most units sit on their lower half (a design choice).
        threshold_mean=0.5,
        threshold_dtod=0.5,
        # Slope set by the tail current, a weak-inversion mirror: sigma_I / I = sigma_VT / (n U_T) =
        # 25 mV / 34 mV = 0.7, taken as a log-normal sigma of 0.5 for a mirror of two devices of that
        # area sharing their gradient [derived, Kinget 2005].
        gain_dtod=0.5,
        # Output swing 0.8 of the ADC full scale (headroom); its spread from the load's current
        # factor mismatch, A_beta = 1 % um (Kinget 2005) on 0.02 um^2: 7 %, rounded to 10 % [derived].
        amplitude_mean=0.8,
        amplitude_dtod=0.1,
        # The exponent of each unit's curve spreads so that no single curve family fits every unit
        # (a design choice for a black box; the same order as the gain spread).
        power_dtod=0.3,
        # BTI: Delta V_T = A t^n with n = 0.16-0.25 (Schroder & Babcock, J. Appl. Phys. 2003), taken as
        # 0.2; 30 mV after 10 years, a usual end-of-life criterion (ibid.), = 0.44 width -> 0.4;
        # per-unit shifts exponential (Kaczer et al., IRPS 2010).
        bti_shift=0.4,
        bti_exponent=0.2,
        bti_ref_s=3.156e8,
    ),
))
PCM_BLACKBOX = ChipSpec.model_validate(PCM_BLACKBOX.model_dump())

#: Registry of presets by name.
PRESETS: Mapping[str, ChipSpec] = {spec.name: spec for spec in (IDEAL, PCM, RRAM, WILD, PCM_BLACKBOX)}


def get_preset(name: str) -> ChipSpec:
    """Return the preset called ``name`` or raise ``ValueError`` listing the known ones."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]


def variant(base: ChipSpec | str, name: str | None = None, **changes: Any) -> ChipSpec:
    """Derive a spec from ``base`` with nested changes, re-validated.

    Groups are changed with dicts, e.g.
    ``variant("pcm", adc={"bits": 6}, read_noise={"weight_std": 0.0})``.
    Unknown fields raise pydantic's ``ValidationError``.
    """
    spec = get_preset(base) if isinstance(base, str) else base
    data = spec.model_dump()
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    if name is not None:
        data["name"] = name
    elif changes:
        data["name"] = f"{data['name']}*"
    return ChipSpec.model_validate(data)
