"""Bad input is rejected with a message saying what was wrong, and changes nothing.

Every rejected ``read``, ``program``, ``program_verify`` or ``wait`` must leave the chip
exactly as it was: same ledger, same hidden state, the same random streams (its
``state_digest`` covers all three) and the same behaviour (checked by comparing the next
operations with a twin that never saw the bad calls).
"""

from __future__ import annotations

import math

import numpy as np
import pydantic
import pytest

import devices

SIZES = (6, 5, 4)


def _chip(preset="pcm", **kwargs):
    return devices.make_chip(preset, SIZES, seed=77, **kwargs)


def _good_x(batch=3):
    return np.full((batch, SIZES[0]), 0.5, np.float32)


def _good_delta():
    return np.full((SIZES[0] + 1, SIZES[1]), 0.01, np.float32)


def _good_weights():
    """Weights within a pcm chip's range for layer 0 (w_max = 4 / sqrt(7) = 1.5)."""
    return np.linspace(-1.0, 1.0, (SIZES[0] + 1) * SIZES[1], dtype=np.float32).reshape(SIZES[0] + 1, SIZES[1])


def _bad_arrays(good: np.ndarray):
    """(array, key phrase of the message) pairs, each wrong in one way."""
    nan = good.copy()
    nan.flat[1] = np.nan
    inf = good.copy()
    inf.flat[-1] = -np.inf
    return [
        (good[0], "shape"),                          # 1-D
        (good[:, :-1], "shape"),                     # one column short
        (good[..., None], "shape"),                  # 3-D
        (good.astype(np.complex64), "dtype"),
        (good.astype(object), "dtype"),
        (good.astype(str), "dtype"),
        (np.full(good.shape, "a"), "dtype"),
        (nan, "NaN or infinite"),
        (inf, "NaN or infinite"),
        (good.astype(np.float64) * 1e300, "NaN or infinite"),  # beyond float32
        (np.zeros(good.shape, "datetime64[s]"), "dtype"),
    ]


def _rejected(chip, twin, snapshot, assert_same_state, call, exc=ValueError, match=None):
    """Run ``call(chip)`` expecting ``exc``; assert the chip is unchanged (also vs. ``twin``)."""
    before, digest = snapshot(chip), chip.state_digest()
    with pytest.raises(exc, match=match):
        call(chip)
    assert_same_state(snapshot(chip), before)
    assert chip.state_digest() == digest  # the scalars and random streams too
    # The random streams were not advanced either: the next operations match the twin's.
    for c in (chip, twin):
        c.program(0, _good_delta())
        c.program_verify(0, _good_weights())
    np.testing.assert_array_equal(chip.read(0, _good_x()), twin.read(0, _good_x()))
    assert_same_state(snapshot(chip), snapshot(twin))
    assert chip.state_digest() == twin.state_digest()


# -- read -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", range(len(_bad_arrays(_good_x()))))
def test_read_rejects_bad_inputs(case, snapshot, assert_same_state):
    x, phrase = _bad_arrays(_good_x())[case]
    _rejected(_chip(), _chip(), snapshot, assert_same_state,
              lambda c: c.read(0, x), match=phrase)


def test_read_rejects_an_empty_batch_and_ragged_lists(snapshot, assert_same_state):
    chip, twin = _chip(), _chip()
    _rejected(chip, twin, snapshot, assert_same_state,
              lambda c: c.read(0, np.zeros((0, SIZES[0]), np.float32)), match="at least one")
    _rejected(chip, twin, snapshot, assert_same_state,
              lambda c: c.read(0, [[0.1] * SIZES[0], [0.2]]))
    _rejected(chip, twin, snapshot, assert_same_state,
              lambda c: c.read(1, _good_x()), match=r"shape \(3, 6\), expected \(batch, 5\)")


@pytest.mark.parametrize("layer,phrase", [
    (-1, "out of range"), (2, "out of range"), (10**9, "out of range"),
    (0.0, "integer"), (1.5, "integer"), ("0", "integer"), (None, "integer"),
    (True, "integer"), (np.float64(0), "integer"), ([0], "integer"),
])
def test_layer_index_must_be_an_integer_in_range(layer, phrase, snapshot, assert_same_state):
    chip, twin = _chip(), _chip()
    _rejected(chip, twin, snapshot, assert_same_state, lambda c: c.read(layer, _good_x()), match=phrase)
    _rejected(chip, twin, snapshot, assert_same_state, lambda c: c.program(layer, _good_delta()),
              match=phrase)
    _rejected(chip, twin, snapshot, assert_same_state, lambda c: c.program_verify(layer, _good_weights()),
              match=phrase)


def test_numpy_integer_layer_indices_are_accepted():
    chip = _chip()
    assert chip.read(np.int64(1), np.ones((2, SIZES[1]), np.float32)).shape == (2, SIZES[2])
    chip.program(np.int32(0), _good_delta())
    chip.program_verify(np.int16(0), _good_weights())


# -- program ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", range(len(_bad_arrays(_good_delta()))))
def test_program_rejects_bad_requests(case, snapshot, assert_same_state):
    delta, phrase = _bad_arrays(_good_delta())[case]
    _rejected(_chip(), _chip(), snapshot, assert_same_state, lambda c: c.program(0, delta), match=phrase)


def test_program_needs_the_bias_row(snapshot, assert_same_state):
    without_bias = np.zeros((SIZES[0], SIZES[1]), np.float32)
    _rejected(_chip(), _chip(), snapshot, assert_same_state, lambda c: c.program(0, without_bias),
              match=r"shape \(6, 5\), expected \(7, 5\)")


@pytest.mark.parametrize("preset", ["ideal", "pcm", "rram"])
def test_program_on_a_fixed_layer_is_rejected(preset, snapshot, assert_same_state):
    chip, twin = _chip(preset, trainable=(True, False)), _chip(preset, trainable=(True, False))
    delta = np.zeros(chip.info.weight_shapes[1], np.float32)
    _rejected(chip, twin, snapshot, assert_same_state, lambda c: c.program(1, delta), match="not trainable")
    _rejected(chip, twin, snapshot, assert_same_state, lambda c: c.program_verify(1, delta), match="not trainable")
    chip.read(1, np.ones((1, SIZES[1]), np.float32))  # reading it is fine


# -- program_verify ---------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["pcm", "ideal"])
@pytest.mark.parametrize("case", range(len(_bad_arrays(_good_weights()))))
def test_program_verify_rejects_bad_weights(preset, case, snapshot, assert_same_state):
    weights, phrase = _bad_arrays(_good_weights())[case]
    _rejected(_chip(preset), _chip(preset), snapshot, assert_same_state, lambda c: c.program_verify(0, weights),
              match=phrase)


def test_program_verify_needs_the_bias_row_and_names_its_argument(snapshot, assert_same_state):
    _rejected(_chip(), _chip(), snapshot, assert_same_state,
              lambda c: c.program_verify(0, np.zeros((SIZES[0], SIZES[1]), np.float32)),
              match=r"weights.*shape \(6, 5\), expected \(7, 5\)")
    _rejected(_chip(), _chip(), snapshot, assert_same_state,
              lambda c: c.program_verify(1, _good_weights()), match=r"expected \(6, 4\)")


# -- wait -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seconds,phrase", [
    (-1.0, ">= 0"), (-1e-12, ">= 0"), (math.nan, "finite"), (math.inf, "finite"), (np.float32(np.nan), "finite"),
    ("10", "real number"), (None, "real number"), (True, "real number"), (1 + 2j, "real number"),
    (np.array([1.0]), "real number"),
])
def test_wait_rejects_bad_times(seconds, phrase, snapshot, assert_same_state):
    _rejected(_chip(), _chip(), snapshot, assert_same_state, lambda c: c.wait(seconds), match=phrase)


def test_wait_accepts_integers_and_numpy_scalars():
    chip = _chip()
    chip.wait(3)
    chip.wait(np.float32(0.5))
    chip.wait(np.int64(2))
    assert chip.ledger.total_time_s == pytest.approx(5.5)


# -- make_chip --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["PCM", "nope", "", "ideal "])
def test_unknown_preset_names_are_rejected(name):
    with pytest.raises(ValueError, match="unknown preset"):
        devices.make_chip(name, SIZES, seed=0)
    with pytest.raises(ValueError, match="unknown preset"):
        devices.get_preset(name)
    with pytest.raises(ValueError, match="unknown preset"):
        devices.variant(name, adc={"bits": 4})


@pytest.mark.parametrize("spec", [None, 3, {"name": "pcm"}])
def test_spec_must_be_a_chip_spec_or_a_name(spec):
    with pytest.raises(ValueError, match="ChipSpec"):
        devices.make_chip(spec, SIZES, seed=0)


@pytest.mark.parametrize("sizes", [
    (), (5,), (5, 0), (5, -3), (0, 4), (5.0, 4), (5, 4.5), (True, 4), ("5", 4), "ab", None, 5, (5, None),
])
def test_bad_layer_sizes_are_rejected(sizes):
    with pytest.raises(ValueError, match="layer_sizes"):
        devices.make_chip("pcm", sizes, seed=0)


@pytest.mark.parametrize("seed", [-1, np.int64(-5), 1.5, "7", None, True, [1, 2]])
def test_bad_seeds_are_rejected(seed):
    with pytest.raises(ValueError, match="seed"):
        devices.make_chip("pcm", SIZES, seed=seed)


def test_trainable_needs_one_flag_per_layer():
    with pytest.raises(ValueError, match="one flag per layer"):
        devices.make_chip("pcm", SIZES, seed=0, trainable=(True,))


# -- specs ------------------------------------------------------------------------------------------
def test_unknown_spec_fields_are_validation_errors():
    with pytest.raises(pydantic.ValidationError, match="bitz"):
        devices.variant("pcm", adc={"bitz": 6})
    with pytest.raises(pydantic.ValidationError, match="colour"):
        devices.variant("pcm", colour="red")
    with pytest.raises(pydantic.ValidationError, match="extra"):
        devices.ChipSpec(dacs=devices.DACSpec())
    with pytest.raises(pydantic.ValidationError):
        devices.ADCSpec(bits=8, rang=2.0)


@pytest.mark.parametrize("build,phrase", [
    (lambda: devices.ADCSpec(bits=0), "greater than or equal"),
    (lambda: devices.DACSpec(bits=1), "greater than or equal"),
    (lambda: devices.DACSpec(range=-1.0), "greater than"),
    (lambda: devices.ProgrammingSpec(mode="analog"), "exact"),
    (lambda: devices.ProgrammingSpec(max_pulses=2.5), "integer"),
    (lambda: devices.ConductanceSpec(g_min_us=30.0, g_max_us=25.0), "must exceed"),
    (lambda: devices.ConductanceSpec(init_weight_std_fan_in=3.0), "at most half"),
    (lambda: devices.DriftSpec(mu_min=0.2, mu_max=0.1), "min <= max"),
    (lambda: devices.NeuronSpec(family="relu", gain_dtod=0.1), "no gain"),
    (lambda: devices.NeuronSpec(family="sigmoid"), "relu"),
    (lambda: devices.ChipSpec(bias_level=2.0), "exceeds the DAC range"),
    (lambda: devices.variant("pcm", faults={"stuck_on_prob": 0.3, "stuck_off_prob": 0.3}), "at most 0.5"),
    (lambda: devices.variant("pcm", adc={"range": math.inf}), "finite ADC range"),
    (lambda: devices.variant("pcm", read_noise={"weight_std": -0.1}), "greater than or equal"),
    (lambda: devices.variant("pcm", programming={"step": "big"}), "valid number"),
    # device physics on a chip without devices (exact weights)
    (lambda: devices.variant("ideal", read_noise={"device_law": "pcm_1f"}), "describe devices"),
    (lambda: devices.variant("ideal", programming={"direction": "set_only"}), "describe devices"),
    (lambda: devices.variant("ideal", wires={"segment_ohm": 0.35}), "describe devices"),
    (lambda: devices.variant("pcm", programming={"mode": "exact"}), "exact programming has none"),
    # one-directional devices: refresh threshold, RESET level and spread
    (lambda: devices.ProgrammingSpec(refresh_at=0.0), r"refresh_at\n.*greater than 0"),
    (lambda: devices.ProgrammingSpec(refresh_at=1.5), r"refresh_at\n.*less than or equal to 1"),
    (lambda: devices.ProgrammingSpec(reset_level=0.3), r"reset_level\n.*less than or equal to 0.2"),
    (lambda: devices.ProgrammingSpec(reset_level=-0.01), r"reset_level\n.*greater than or equal to 0"),
    (lambda: devices.ProgrammingSpec(reset_std=0.5), r"reset_std\n.*less than or equal to 0.2"),
    (lambda: devices.ProgrammingSpec(direction="reset_only"), "'both' or 'set_only'"),
    # program-and-verify: at most five coefficients of the residual's polynomial, finite, >= 1 read
    (lambda: devices.ProgrammingSpec(verify_error_us=(0.1,) * 6), "at most 5 items"),
    (lambda: devices.variant("pcm", programming={"verify_error_us": [0.2, 1.0, -1.0, 0.5, 0.1, 0.0]}),
     r"programming.verify_error_us\n.*at most 5 items"),
    (lambda: devices.ProgrammingSpec(verify_error_us=()), "at least 1 item"),
    (lambda: devices.ProgrammingSpec(verify_error_us=(0.1, math.nan)), "finite number"),
    (lambda: devices.ProgrammingSpec(verify_reads=0), r"verify_reads\n.*greater than or equal to 1"),
    # mapping, read-noise law, wires, drift redraw
    (lambda: devices.ConductanceSpec(mapping="two_per_sign"), "'common_mode' or 'one_per_sign'"),
    (lambda: devices.ConductanceSpec(init_common_mode=1.2), "less than or equal to 1"),
    (lambda: devices.ReadNoiseSpec(device_law="pcm_2f"), "'none' or 'pcm_1f'"),
    (lambda: devices.WireSpec(segment_ohm=-1.0), "greater than or equal to 0"),
    (lambda: devices.WireSpec(segment_ohm=101.0), "less than or equal to 100"),
    (lambda: devices.WireSpec(tile_rows=0), "greater than or equal to 1"),
    (lambda: devices.DriftSpec(nu_redraw="sometimes"), "valid boolean"),
])
def test_inconsistent_specs_are_rejected(build, phrase):
    with pytest.raises(pydantic.ValidationError, match=phrase):
        build()


def test_specs_are_frozen_and_presets_unchanged_by_variants():
    pcm = devices.PRESETS["pcm"]
    dumped = pcm.model_dump()
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        pcm.bias_level = 0.5  # type: ignore[misc]
    v = devices.variant("pcm", adc={"bits": 4})
    assert v.adc.bits == 4 and v.dac == pcm.dac and v.name == "pcm*"
    assert devices.PRESETS["pcm"].model_dump() == dumped


def test_large_finite_inputs_are_accepted_even_when_their_sum_overflows():
    # The finite check sums first; a float32 sum of 3e38 + 3e38 overflows although
    # every element is finite, so the element-wise check must decide.
    chip = devices.make_chip("pcm", (4, 3), seed=0)
    y = chip.read(0, np.full((2, 4), 3e38, np.float32))
    assert y.shape == (2, 3) and np.isfinite(y).all()


@pytest.mark.parametrize("changes, phrase", [
    ({"adc": {"bits": 8}}, "adc.bits needs a finite adc.range"),
    ({"dac": {"bits": 8}}, "dac.bits needs a finite dac.range"),
    ({"read_noise": {"output_std": 0.01}}, "needs a finite adc.range"),
])
def test_converter_bits_need_a_finite_range(changes, phrase):
    # On the ideal preset both converters span an infinite range; levels across it are undefined.
    with pytest.raises(pydantic.ValidationError, match=phrase):
        devices.variant("ideal", **changes)


@pytest.mark.parametrize("group, field", [("energy", "pulse_j"), ("energy", "v_read"),
                                          ("programming", "step"), ("neuron", "saturation_mean")])
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_physical_fields_reject_inf_and_nan(group, field, value):
    with pytest.raises(pydantic.ValidationError):
        devices.variant("pcm", **{group: {field: value}})


def test_exact_program_refuses_overflow_and_changes_nothing(snapshot, assert_same_state):
    chip = devices.make_chip("ideal", (4, 3), seed=0)
    chip.program(0, np.full((5, 3), 2e38, np.float32))
    before, ledger = snapshot(chip), chip.ledger.to_dict()
    with pytest.raises(ValueError, match="float32 range"):
        chip.program(0, np.full((5, 3), 2e38, np.float32))
    assert_same_state(before, snapshot(chip))
    assert chip.ledger.to_dict() == ledger


# -- issue 15, item 22: a wait that would make the clock non-finite --------------------------------
@pytest.mark.parametrize("preset", ["ideal", "pcm"])
def test_wait_refuses_to_push_the_clock_beyond_the_float_range(preset, snapshot, assert_same_state, tmp_path):
    chip, twin = _chip(preset), _chip(preset)
    for c in (chip, twin):
        c.wait(1e308)  # finite: accepted, and the chip still works: reads are finite, it saves and loads
        assert np.isfinite(c.read(0, _good_x())).all()
    assert math.isfinite(chip.clock_s)
    assert devices.load_chip(chip.save(tmp_path / "old.npz")).state_digest() == chip.state_digest()
    # twice would make the clock infinite; an integer beyond the float range raised OverflowError
    for seconds in (1e308, 10**400, np.float64(1.7e308)):
        _rejected(chip, twin, snapshot, assert_same_state, lambda c: c.wait(seconds), match="finite|float range")
    assert math.isfinite(chip.clock_s) and chip.clock_s == 1e308
    _rejected(_chip(preset), _chip(preset), snapshot, assert_same_state, lambda c: c.wait(10**400), match="finite")


# -- issue 15, item 16: a chip that cannot fit in memory is refused before anything is allocated ------
@pytest.mark.parametrize("preset,sizes", [("pcm", (784, 10**9)), ("ideal", (784, 10**9)),
                                          ("pcm", (10**6, 10**6, 10)), ("rram", (784, 1000, 10**12))])
def test_a_chip_too_large_for_memory_is_refused_up_front(preset, sizes):
    import time

    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="memory") as err:
        devices.make_chip(preset, sizes, 0)
    assert time.perf_counter() - t0 < 1.0  # nothing was allocated
    assert "narrower layers" in str(err.value)


def test_the_memory_limit_is_the_state_of_the_chip(monkeypatch):
    from devices.parameters import state_bytes, state_layout

    sizes = (30, 20, 10)
    for preset, exact in (("pcm", False), ("ideal", True)):
        need = sum(state_bytes(exact, sizes[i], sizes[i + 1]) for i in range(2))
        monkeypatch.setattr(devices.chip, "memory_limit_bytes", lambda: need)
        chip = devices.make_chip(preset, sizes, 0)  # exactly fits
        states = [L.state()["arrays"] for L in chip._layers]
        assert sum(a.nbytes for st in states for a in st.values()) == need  # the estimate is the state's true size
        for i, st in enumerate(states):  # and the state is the layout, array by array
            layout = state_layout(exact, sizes[i], sizes[i + 1])
            assert {k: (a.shape, a.dtype) for k, a in st.items()} == \
                {k: (shape, np.dtype(dtype)) for k, (shape, dtype) in layout.items()}
        monkeypatch.setattr(devices.chip, "memory_limit_bytes", lambda: need - 1)
        with pytest.raises(ValueError, match="memory"):
            devices.make_chip(preset, sizes, 0)
    monkeypatch.undo()
    assert devices.chip.memory_limit_bytes() > 2**20


@pytest.mark.parametrize("n_in,n_out", [(1, 1), (6, 5), (784, 1000), (10**6, 10**6)])
def test_a_pulsed_layer_holds_32_bytes_per_weight_plus_its_row_and_column_sums(n_in, n_out):
    from devices.parameters import state_bytes

    rows, cols = n_in + 1, n_out
    # per weight: w_eff float32 (4) and, for each of the two devices, g float32 (4), t_rel float32 (4),
    # nu uint16 (2) and life uint32 (4); per row: row_gsum and row_var float64; per column: col_var
    # float64 and the neuron's gain, offset, curvature and saturation float32
    assert 4 + 2 * (4 + 4 + 2 + 4) == 32
    assert state_bytes(False, n_in, n_out) == 32 * rows * cols + 2 * 8 * rows + (8 + 4 * 4) * cols
    # exact layers: the weights, row_gsum and the neurons
    assert state_bytes(True, n_in, n_out) == 4 * rows * cols + 8 * rows + 4 * 4 * cols


def test_a_refused_chip_reports_its_bytes_per_weight(monkeypatch):
    monkeypatch.setattr(devices.chip, "memory_limit_bytes", lambda: 2**20)
    with pytest.raises(ValueError, match=r"about 32 bytes each in pulsed mode"):
        devices.make_chip("pcm", (784, 1000), 0)
    with pytest.raises(ValueError, match=r"about 4 bytes each in exact mode"):
        devices.make_chip("ideal", (784, 10**5), 0)
