"""The chip contract, run over every preset in ``devices.PRESETS``.

The ``chip`` fixture (``conftest.py``) yields a small fresh chip of each
preset.  What is checked here holds for any chip the learner may be given:
the ``mortal.chip`` protocols, shapes and dtypes, output bounds, the ledger's
bookkeeping, seeding, and the ideal preset's exact arithmetic.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import devices
from mortal import chip as proto

SIZES = (12, 10, 6)  # the sizes of the conftest ``chip`` fixture (SMALL_SIZES)
#: What fabrication decides (pulses_left is each device's endurance until it is programmed;
#: failure_time comes from the ageing stream).
FABRICATION_FIELDS = ("g", "nu", "t_prog", "stuck", "pulses_left", "failure_time", "g_sat", "step_up", "step_down",
                      "gain", "offset", "curvature", "saturation")


def inputs(chip, layer: int, batch: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Random float32 inputs within the layer's input range (unit scale if infinite)."""
    r = chip.info.input_range[layer]
    r = r if math.isfinite(r) else 1.0
    n_in = chip.info.layer_sizes[layer]
    return (rng.uniform(-1.0, 1.0, (batch, n_in)) * r * scale).astype(np.float32)


def few_pulses(chip, layer: int, rng: np.random.Generator, pulses: int = 3) -> np.ndarray:
    """A request of about ``pulses`` pulses on every device (random signs)."""
    shape = chip.info.weight_shapes[layer]
    step = chip.info.pulse_step[layer] or 0.01
    return (rng.choice([-1.0, 1.0], shape) * pulses * step).astype(np.float32)


def has_read_noise(spec) -> bool:
    return spec.read_noise.output_std > 0 or spec.read_noise.weight_std > 0


# -- protocols -----------------------------------------------------------------------------------
def test_chip_satisfies_the_protocols(chip):
    assert isinstance(chip, proto.Chip)
    assert proto.check_chip(chip) is chip
    assert isinstance(chip.info, proto.ChipInfo)
    assert isinstance(chip.ledger, proto.Ledger)
    assert isinstance(chip.info, devices.ChipInfo)
    assert isinstance(chip.ledger, devices.Ledger)


def test_devices_chipinfo_and_ledger_classes_satisfy_the_protocols():
    info = devices.ChipInfo(layer_sizes=(3, 2), weight_shapes=((4, 2),), trainable=(True,),
                            input_range=(1.0,), weight_range=(0.5,), pulse_step=(0.01,),
                            output_range=(2.0,), bias_level=1.0, digital_op_energy_j=1e-12,
                            digital_op_time_s=1e-9)
    ledger = devices.Ledger(1e-12, 1e-9)
    assert isinstance(info, proto.ChipInfo)
    assert isinstance(ledger, proto.Ledger)
    for cat in proto.LEDGER_CATEGORIES:
        assert ledger.energy_j[cat] == 0.0 and ledger.time_s[cat] == 0.0
    ledger.charge_digital(10)
    assert ledger.counts["digital_ops"] == 10
    assert ledger.energy_j["digital"] == pytest.approx(1e-11)
    assert ledger.total_time_s == pytest.approx(1e-8)


def test_check_chip_rejects_non_chips(chip):
    with pytest.raises(TypeError, match="missing"):
        proto.check_chip(object())
    assert not isinstance(object(), proto.Chip)


# -- datasheet -------------------------------------------------------------------------------------
def test_info_fields_are_consistent(chip, preset_name):
    spec = devices.PRESETS[preset_name]
    info = chip.info
    n = len(SIZES) - 1
    assert info.layer_sizes == SIZES and info.n_layers == n
    assert info.weight_shapes == tuple((SIZES[i] + 1, SIZES[i + 1]) for i in range(n))
    assert info.trainable == (True,) * n
    assert info.input_range == (spec.dac.range,) * n
    assert info.output_range == (spec.adc.range,) * n
    assert info.bias_level == spec.bias_level
    assert info.digital_op_energy_j == spec.energy.digital_op_j
    assert info.digital_op_time_s == spec.energy.digital_op_s
    assert info.preset == preset_name
    state = devices.inspect(chip)
    for i, L in enumerate(state.layers):
        assert L.weights.shape == info.weight_shapes[i] and L.weights.dtype == np.float32
        assert L.gain.shape == (SIZES[i + 1],)
        if spec.programming.mode == "exact":
            assert info.weight_range[i] == math.inf and info.pulse_step[i] == 0.0
            assert L.g is None
        else:
            w_max = spec.conductance.weight_range_fan_in / math.sqrt(SIZES[i] + 1)
            assert info.weight_range[i] == pytest.approx(w_max, rel=1e-12)
            assert info.pulse_step[i] == pytest.approx(spec.programming.step * w_max / 2, rel=1e-12)
            assert L.w_max == info.weight_range[i] and L.pulse_step == info.pulse_step[i]
            assert L.g.shape == (2,) + info.weight_shapes[i]
            # Weights are differential pairs of devices bounded by their own saturation level.
            assert (np.abs(L.weights) <= L.g_sat.max(axis=0) * L.w_max * (1 + 1e-6)).all()
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.layer_sizes = (1, 1)  # type: ignore[misc]


def test_trainable_flags_are_reported():
    chip = devices.make_chip("pcm", SIZES, seed=1, trainable=(False, True))
    assert chip.info.trainable == (False, True)


# -- read ------------------------------------------------------------------------------------------
def test_read_shape_dtype_and_range(chip):
    rng = np.random.default_rng(0)
    x = inputs(chip, 0, 7, rng, scale=1.5)
    for layer in range(chip.info.n_layers):
        y = chip.read(layer, x)
        assert y.shape == (7, chip.info.layer_sizes[layer + 1])
        assert y.dtype == np.float32
        assert np.isfinite(y).all()
        assert (y >= 0).all() and (y <= chip.info.output_range[layer]).all()
        x = y
    # Other real dtypes and nested lists are accepted and give float32 too.
    y64 = chip.read(0, inputs(chip, 0, 2, rng).astype(np.float64))
    y_list = chip.read(0, inputs(chip, 0, 2, rng).tolist())
    assert y64.dtype == y_list.dtype == np.float32


def test_read_does_not_modify_its_input(chip):
    x = inputs(chip, 0, 5, np.random.default_rng(1), scale=3.0)
    before = x.copy()
    chip.read(0, x)
    np.testing.assert_array_equal(x, before)


def test_ledger_grows_on_read(chip, preset_name):
    spec = devices.PRESETS[preset_name]
    e = spec.energy
    batch, layer = 9, 1
    n_out = SIZES[layer + 1]
    before = chip.ledger.to_dict()
    chip.read(layer, inputs(chip, layer, batch, np.random.default_rng(2)))
    after = chip.ledger.to_dict()
    c0, c1 = before["counts"], after["counts"]
    assert c1["reads"] == c0["reads"] + 1
    assert c1["vectors"] == c0["vectors"] + batch
    assert c1["conversions"] == c0["conversions"] + batch * n_out
    assert c1["pulses"] == c0["pulses"]
    de = {k: after["energy_j"][k] - before["energy_j"][k] for k in after["energy_j"]}
    assert de["array"] > 0
    assert (de["dac"] > 0) == (spec.dac.bits is not None and e.dac_conversion_j > 0)
    assert (de["adc"] > 0) == (spec.adc.bits is not None and e.adc_fom_j_per_step > 0)
    assert (de["neuron"] > 0) == (e.neuron_j > 0)
    assert de["program"] == de["digital"] == de["idle"] == 0
    assert chip.ledger.total_energy_j > 0
    # Latency: integration per vector plus the shared converters' rounds.
    dt = chip.ledger.total_time_s - sum(before["time_s"].values())
    rounds = math.ceil(n_out / spec.adc.columns_per_adc)
    assert dt == pytest.approx(batch * (e.t_read_s + rounds * e.adc_conversion_s), rel=1e-9, abs=1e-18)
    if e.t_read_s > 0:
        assert chip.ledger.total_time_s > 0


def test_ledger_grows_on_program(chip, preset_name):
    spec = devices.PRESETS[preset_name]
    before = chip.ledger.to_dict()
    chip.program(0, few_pulses(chip, 0, np.random.default_rng(3)))
    after = chip.ledger.to_dict()
    pulses = after["counts"]["pulses"] - before["counts"]["pulses"]
    assert pulses > 0
    assert after["counts"]["program_calls"] == before["counts"]["program_calls"] + 1
    assert after["energy_j"]["program"] - before["energy_j"]["program"] == pytest.approx(
        pulses * spec.energy.pulse_j, rel=1e-12)
    for cat in ("dac", "array", "adc", "neuron", "digital"):
        assert after["energy_j"][cat] == before["energy_j"][cat]
    assert after["counts"]["reads"] == before["counts"]["reads"]


def test_zero_delta_program_costs_nothing(chip, snapshot):
    before = snapshot(chip)
    chip.program(0, np.zeros(chip.info.weight_shapes[0], np.float32))
    after = snapshot(chip)
    assert after["ledger"]["counts"]["pulses"] == before["ledger"]["counts"]["pulses"]
    assert after["ledger"]["energy_j"] == before["ledger"]["energy_j"]
    assert after["ledger"]["time_s"] == before["ledger"]["time_s"]
    for la, lb in zip(before["layers"], after["layers"]):
        for name, value in la.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(lb[name], value, err_msg=name)


def test_wait_advances_the_clock_but_spends_no_energy(chip):
    chip.read(0, inputs(chip, 0, 3, np.random.default_rng(4)))
    e0, t0, counts = chip.ledger.total_energy_j, chip.ledger.total_time_s, dict(chip.ledger.counts)
    chip.wait(3600.0)
    chip.wait(0)
    assert chip.ledger.total_time_s == pytest.approx(t0 + 3600.0, rel=1e-12)
    assert devices.inspect(chip).clock_s == chip.ledger.total_time_s
    assert chip.ledger.total_energy_j == e0
    assert chip.ledger.counts == counts


def test_learner_charges_digital_work(chip):
    chip.ledger.charge_digital(1000)
    assert chip.ledger.counts["digital_ops"] == 1000
    assert chip.ledger.energy_j["digital"] == pytest.approx(1000 * chip.info.digital_op_energy_j)
    assert chip.ledger.time_s["digital"] == pytest.approx(1000 * chip.info.digital_op_time_s)


# -- the ideal preset is exact arithmetic ---------------------------------------------------------------
def test_ideal_equals_relu_of_affine_map():
    chip = devices.make_chip("ideal", (20, 15, 7), seed=5)
    rng = np.random.default_rng(5)
    x = rng.normal(0.0, 1.0, (33, 20)).astype(np.float32)
    level = np.float32(chip.info.bias_level)

    def expected(layer, x):
        W = devices.inspect(chip).layers[layer].weights
        return np.maximum(x @ W[:-1] + level * W[-1], np.float32(0))

    for step in range(3):
        h = x
        for layer in range(2):
            want = expected(layer, h)
            got = chip.read(layer, h)
            np.testing.assert_array_equal(got, want, strict=True)
            assert (want > 0).any() and (want == 0).any()
            # ... and float64 arithmetic agrees to float32 rounding.
            W = devices.inspect(chip).layers[layer].weights.astype(np.float64)
            w64 = np.maximum(h.astype(np.float64) @ W[:-1] + W[-1], 0)
            np.testing.assert_allclose(got, w64, rtol=1e-5, atol=1e-5)
            h = got
        # Programming adds the request exactly.
        for layer in range(2):
            W = devices.inspect(chip).layers[layer].weights
            delta = rng.normal(0.0, 0.1, W.shape).astype(np.float32)
            chip.program(layer, delta)
            np.testing.assert_array_equal(devices.inspect(chip).layers[layer].weights, W + delta)
        chip.wait(1e6)  # no drift on the digital twin


# -- seeding ---------------------------------------------------------------------------------------
def _exercise(chip, rng):
    """A fixed sequence of operations; returns every read."""
    outs = [chip.read(0, inputs(chip, 0, 4, rng))]
    chip.program(0, few_pulses(chip, 0, rng, pulses=2))
    chip.wait(100.0)
    outs.append(chip.read(1, np.abs(inputs(chip, 1, 4, rng))))
    chip.program(1, few_pulses(chip, 1, rng, pulses=5))
    outs.append(chip.read(0, inputs(chip, 0, 4, rng)))
    return outs


def test_same_seed_gives_bit_identical_chips(preset_name, snapshot, assert_same_state):
    a = devices.make_chip(preset_name, SIZES, seed=99)
    b = devices.make_chip(preset_name, SIZES, seed=99)
    assert_same_state(snapshot(a), snapshot(b))
    for ya, yb in zip(_exercise(a, np.random.default_rng(0)), _exercise(b, np.random.default_rng(0))):
        np.testing.assert_array_equal(ya, yb, strict=True)
    assert_same_state(snapshot(a), snapshot(b))


def test_different_seeds_give_different_chips(preset_name):
    a = devices.make_chip(preset_name, SIZES, seed=1)
    b = devices.make_chip(preset_name, SIZES, seed=2)
    assert not np.array_equal(devices.inspect(a).layers[0].weights, devices.inspect(b).layers[0].weights)
    x = inputs(a, 0, 8, np.random.default_rng(0))
    assert not np.array_equal(a.read(0, x), b.read(0, x))


def test_seed_sequence_seeds(preset_name, snapshot, assert_same_state):
    as_int = devices.make_chip(preset_name, SIZES, seed=5)
    as_seq = devices.make_chip(preset_name, SIZES, seed=np.random.SeedSequence(5))
    assert_same_state(snapshot(as_int), snapshot(as_seq))
    fleet = [devices.make_chip(preset_name, SIZES, seed=np.random.SeedSequence(5, spawn_key=(i,)))
             for i in (0, 1, 1)]
    assert devices.inspect(fleet[1]).seed == {"entropy": 5, "spawn_key": [1]}
    assert_same_state(snapshot(fleet[1]), snapshot(fleet[2]))
    assert not np.array_equal(devices.inspect(fleet[0]).layers[0].weights,
                              devices.inspect(fleet[1]).layers[0].weights)
    assert not np.array_equal(devices.inspect(fleet[1]).layers[0].weights,
                              devices.inspect(as_int).layers[0].weights)


def test_reads_repeat_exactly_only_without_read_noise(chip, preset_name):
    x = inputs(chip, 0, 16, np.random.default_rng(6))
    y1, y2 = chip.read(0, x), chip.read(0, x)
    if has_read_noise(devices.PRESETS[preset_name]):
        assert not np.array_equal(y1, y2)
    else:
        np.testing.assert_array_equal(y1, y2)


def test_extra_reads_do_not_change_fabrication(preset_name):
    a = devices.make_chip(preset_name, SIZES, seed=7)
    rng = np.random.default_rng(7)
    for _ in range(100):
        a.read(0, inputs(a, 0, 2, rng))
    b = devices.make_chip(preset_name, SIZES, seed=7)
    sa, sb = devices.inspect(a), devices.inspect(b)
    assert sa.clock_s > 0 or devices.PRESETS[preset_name].energy.t_read_s == 0
    for La, Lb in zip(sa.layers, sb.layers):
        for name in FABRICATION_FIELDS:
            va, vb = getattr(La, name), getattr(Lb, name)
            if vb is None:
                assert va is None
            else:
                np.testing.assert_array_equal(va, vb, err_msg=name, strict=True)


def test_extra_reads_do_not_change_programming():
    # The write stream is separate: with drift off the programmed devices end up
    # the same however many reads came first.
    spec = devices.variant("pcm", drift={"enabled": False})
    a = devices.make_chip(spec, SIZES, seed=8)
    b = devices.make_chip(spec, SIZES, seed=8)
    rng = np.random.default_rng(8)
    for _ in range(50):
        a.read(0, inputs(a, 0, 3, rng))
    delta = few_pulses(a, 0, np.random.default_rng(9), pulses=4)
    a.program(0, delta)
    b.program(0, delta)
    La, Lb = devices.inspect(a).layers[0], devices.inspect(b).layers[0]
    for name in ("g", "pulses_left", "stuck", "weights"):
        np.testing.assert_array_equal(getattr(La, name), getattr(Lb, name), err_msg=name)
    assert a.ledger.counts["pulses"] == b.ledger.counts["pulses"] > 0


# -- the ADC -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 3])
def test_reads_take_at_most_two_to_the_bits_values(preset_name, bits):
    spec = devices.variant(preset_name, adc={"bits": bits, "range": 2.0})
    chip = devices.make_chip(spec, (16, 12), seed=10)
    W = devices.inspect(chip).layers[0].weights
    r = chip.info.input_range[0] if math.isfinite(chip.info.input_range[0]) else 1.0
    # For each neuron, inputs along the sign of its weights sweep its output from
    # below zero to beyond the converter's full scale.
    t = np.linspace(-1.0, 1.0, 201)
    n_out = W.shape[1]
    x = np.concatenate([t[:, None] * np.sign(W[:-1, j]) * r for j in range(n_out)]).astype(np.float32)
    y = chip.read(0, x).reshape(n_out, t.size, n_out)
    step = 2.0 / (2**bits - 1)
    levels = y / np.float32(step)
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)  # on the ADC grid
    assert y.min() == 0.0 and y.max() <= 2.0
    counts = []
    for j in range(n_out):
        own = y[j, :, j]
        counts.append(np.unique(own).size)
        assert counts[-1] <= 2**bits
        # The sweep is dense: every level from 0 to the neuron's largest output occurs.
        assert counts[-1] == int(round(own.max() / step)) + 1
    if spec.neuron.family == "relu" or spec.neuron.saturation_mean > 1.0:
        assert max(counts) == 2**bits  # the whole range is covered
    for j in range(n_out):
        assert np.unique(y[:, :, j]).size <= 2**bits
