"""Fixed black-box stages (``devices.stages``), FF around them, and the BP references (``mortal.backprop``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

import devices
from devices.spec import StageSpec
from mortal import backprop as B
from mortal.errors import InputError
from mortal.ff import FFConfig, FFLearner
from tests.test_layering import imported_packages

SIZES = (24, 16, 16, 8)
STAGE = (True, False, True)
SEED = 11


def quiet(name: str = "pcm_blackbox", **changes):
    """The black-box preset without read noise (to see the stage's own map)."""
    return devices.variant(name, read_noise={"output_std": 0.0, "weight_std": 0.0, "device_law": "none"}, **changes)


def probes(n: int, width: int, seed: int = 0) -> np.ndarray:
    x = np.abs(np.random.default_rng(seed).standard_normal((n, width))).astype(np.float32)
    return x / np.sqrt(np.mean(x**2, axis=1, keepdims=True)) * np.float32(0.25)


# -- the device layer ---------------------------------------------------------------------------
def test_a_stage_cannot_be_programmed_and_the_datasheet_says_only_that():
    chip = devices.make_chip("pcm_blackbox", SIZES, seed=SEED, trainable=STAGE)
    plain = devices.make_chip("pcm", SIZES, seed=SEED, trainable=STAGE)
    assert chip.info.trainable == STAGE
    for name in ("weight_shapes", "input_range", "weight_range", "pulse_step", "output_range", "bias_level"):
        assert getattr(chip.info, name) == getattr(plain.info, name), name
    with pytest.raises(ValueError, match="not trainable"):
        chip.program(1, np.zeros(chip.info.weight_shapes[1], np.float32))
    with pytest.raises(ValueError, match="not trainable"):
        chip.program_verify(1, np.zeros(chip.info.weight_shapes[1], np.float32))
    chip.program(0, np.full(chip.info.weight_shapes[0], 0.01, np.float32))  # the layers around it train


def test_the_stage_is_a_fixed_nonlinear_map_unlike_the_chips_neurons():
    chip = devices.make_chip(quiet(), SIZES, seed=SEED, trainable=STAGE)
    x = probes(400, SIZES[1])
    y = chip.read(1, x)
    # No read noise here: a fixed map (up to an ADC step of drift between two reads).
    np.testing.assert_allclose(chip.read(1, x), y, atol=2 * 2.0 / 255)
    # Along a ray through the input space each unit's response bends: the best affine fit in the
    # ray's scale leaves a large share of its variance (an affine map would leave none).
    a = np.linspace(-1.0, 1.0, 41, dtype=np.float32)
    corner = np.where(np.random.default_rng(1).random(SIZES[1]) < 0.5, -1.0, 1.0).astype(np.float32)
    ray = chip.read(1, a[:, None] * corner[None, :])  # to a corner of the DAC's range
    A = np.stack([a, np.ones_like(a)], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(A, ray.astype(np.float64), rcond=None)
    bends = np.var(ray - A @ coef, axis=0) / np.maximum(np.var(ray, axis=0), 1e-12)
    assert np.quantile(bends, 0.75) > 0.04 and bends.max() > 0.1
    lin = devices.make_chip(quiet("pcm"), SIZES, seed=SEED, trainable=STAGE)
    # Two-sided and leaking: units answer below their threshold (the chip's neurons rectify to 0)
    # and no input drives a unit beyond its swing (amplitude_mean 0.8 of full scale, spread 0.1).
    assert np.mean(y == 0) < 0.05
    assert y.max() < 2.0
    # Another map than the same crossbar read through the chip's neurons.
    assert not np.allclose(lin.read(1, x), y, atol=0.05)


def test_stages_differ_between_instances_and_repeat_within_one():
    x = probes(50, SIZES[1])
    a = devices.make_chip("pcm_blackbox", SIZES, seed=1, trainable=STAGE)
    b = devices.make_chip("pcm_blackbox", SIZES, seed=2, trainable=STAGE)
    a2 = devices.make_chip("pcm_blackbox", SIZES, seed=1, trainable=STAGE)
    ya, yb = a.read(1, x), b.read(1, x)
    assert np.array_equal(ya, a2.read(1, x))
    assert np.mean(np.abs(ya - yb)) > 0.1


def test_other_layers_are_fabricated_as_on_the_chip_without_stages():
    base = devices.inspect(devices.make_chip("pcm", SIZES, seed=SEED, trainable=STAGE))
    box = devices.inspect(devices.make_chip("pcm_blackbox", SIZES, seed=SEED, trainable=STAGE))
    np.testing.assert_array_equal(base.layers[0].weights, box.layers[0].weights)
    np.testing.assert_array_equal(base.layers[2].weights, box.layers[2].weights)
    # An all-trainable chip of the preset has no stage: it is the pcm chip.
    full = devices.make_chip("pcm_blackbox", SIZES, seed=SEED)
    plain = devices.make_chip("pcm", SIZES, seed=SEED)
    x = probes(20, SIZES[1])
    np.testing.assert_array_equal(full.read(1, x), plain.read(1, x))
    # The stage's weights have the stage's spread.
    held = {"drift": {"enabled": False}, "faults": {"stuck_on_prob": 0.0, "stuck_off_prob": 0.0}}
    wide = devices.variant("pcm_blackbox", stage={"weight_std_fan_in": 1.8}, **held)
    narrow = devices.variant("pcm_blackbox", stage={"weight_std_fan_in": 0.6}, **held)
    big = (200, 300, 300, 10)
    sd = [float(np.std(devices.inspect(devices.make_chip(s, big, seed=3, trainable=STAGE)).layers[1]
                       .device_weights[:-1]) * math.sqrt(301)) for s in (wide, narrow)]
    assert sd[0] == pytest.approx(1.8, rel=0.1) and sd[1] == pytest.approx(0.6, rel=0.1)


def test_the_stage_drifts_with_time_even_with_its_weights_held():
    x = probes(200, SIZES[1])
    held = {"drift": {"enabled": False}, "faults": {"failure_median_s": None}}
    for spec in (quiet(), quiet(**held)):
        chip = devices.make_chip(spec, SIZES, seed=SEED, trainable=STAGE)
        before = chip.read(1, x)
        chip.wait(3.156e7)  # a year
        after = chip.read(1, x)
        assert np.mean(np.abs(after - before)) > 0.02, spec.drift.enabled
    # Without the threshold's wander and with held weights nothing changes.
    still = devices.make_chip(quiet(stage={"bti_shift": 0.0}, **held), SIZES, seed=SEED,
                              trainable=STAGE)
    y0 = still.read(1, x)
    still.wait(3.156e7)
    np.testing.assert_array_equal(y0, still.read(1, x))
    # Threshold wander lowers the units' outputs on average (thresholds rise).
    chip = devices.make_chip(quiet(**held), SIZES, seed=SEED, trainable=STAGE)
    y0 = chip.read(1, x)
    chip.wait(3.156e8)
    assert chip.read(1, x).mean() < y0.mean() - 0.02


def test_a_saved_chip_keeps_its_stage(tmp_path: Path):
    chip = devices.make_chip("pcm_blackbox", SIZES, seed=SEED, trainable=STAGE)
    x = probes(30, SIZES[1])
    chip.read(1, x)
    chip.wait(1e5)
    path = chip.save(tmp_path / "c.npz")
    back = devices.load_chip(path)
    assert back.info.trainable == STAGE and back.state_digest() == chip.state_digest()
    np.testing.assert_array_equal(back.read(1, x), chip.read(1, x))
    back.wait(1e7)
    chip.wait(1e7)
    np.testing.assert_array_equal(back.read(1, x), chip.read(1, x))
    with pytest.raises(ValueError, match="not trainable"):
        back.program(1, np.zeros(back.info.weight_shapes[1], np.float32))


def test_specs_without_stages_dump_as_before():
    for name in ("ideal", "pcm", "rram", "wild"):
        assert "stage" not in devices.get_preset(name).model_dump()
    assert devices.get_preset("pcm_blackbox").model_dump()["stage"]["width"] == 0.125


@pytest.mark.parametrize("changes, match", [
    ({"stage": {"width": 0.0}}, "width"),
    ({"stage": {"gain_dtod": -0.1}}, "gain_dtod"),
    ({"stage": {"bti_exponent": 0.0}}, "bti_exponent"),
    ({"stage": {"amplitude_mean": 1.5}}, "amplitude_mean"),
    ({"stage": {"unknown": 1.0}}, "unknown"),
    ({"stage": {"width": math.nan}}, "width"),
    ({"stage": {"weight_std_fan_in": 2.5}}, "at most half"),
])
def test_bad_stage_settings_are_refused(changes, match):
    with pytest.raises(ValidationError, match=match):
        devices.variant("pcm_blackbox", **changes)


def test_a_stage_needs_a_finite_output_scale():
    with pytest.raises(ValidationError, match="finite ADC range"):
        devices.variant("ideal", stage=StageSpec().model_dump())


# -- FF around the stage ------------------------------------------------------------------------------
def test_the_goodness_readout_leaves_fixed_layers_out():
    cfg = FFConfig(epochs=1)
    chip = devices.make_chip("pcm_blackbox", (784, 20, 20, 20), seed=SEED, trainable=STAGE)
    st = FFLearner(cfg).new_state(chip, 784, 10)
    assert st.readout_layers == [0] and st.head_layers == [0, 1, 2]
    # A fixed first layer leaves the trainable ones.
    chip = devices.make_chip("pcm_blackbox", (784, 20, 20, 20), seed=SEED, trainable=(False, True, True))
    assert FFLearner(cfg).new_state(chip, 784, 10).readout_layers == [1, 2]
    st = FFLearner(cfg).new_state(devices.make_chip("pcm", (784, 20, 20, 20), seed=SEED), 784, 10)
    assert st.readout_layers == [1, 2]
    # A head over the goodness readout's layers (Hinton's recipe) follows the rule.
    chip = devices.make_chip("pcm_blackbox", (784, 20, 20, 20), seed=SEED, trainable=STAGE)
    st = FFLearner(FFConfig(defaults="hinton")).new_state(chip, 784, 10)
    assert st.readout_layers == [0] and st.head_layers == [0]
    # A mode without a goodness readout keeps none.
    chip = devices.make_chip("pcm_blackbox", (784, 20, 20, 20), seed=SEED, trainable=STAGE)
    st = FFLearner(FFConfig(mode="unsupervised")).new_state(chip, 784, 10)
    assert st.readout_layers == [] and st.head_layers == [0, 1, 2]


def test_a_fixed_layers_update_is_neither_computed_nor_charged():
    from mortal import ops
    rng = np.random.default_rng(0)
    x = (rng.random((400, 30)) * 255).astype(np.uint8)
    y = rng.integers(0, 4, 400)
    cfg = FFConfig(epochs=1, refit={"epochs": 0}, labels={"copies": 1})
    charged = {}
    for tr in (STAGE, (True, True, True)):
        chip = devices.make_chip("pcm", (30, 12, 12, 12), seed=1, trainable=tr)
        FFLearner(cfg).fit(chip, x, y, n_classes=4, eval_every=0, progress=False)
        charged[tr] = chip.ledger.counts["digital_ops"]
    # The only difference: layer 1's update (4 batches) and its mixed-policy accumulation.
    per_batch = ops.layer_update_ops(100, 12, 12) + ops.mixed_program_ops(13 * 12)
    assert charged[(True, True, True)] - charged[STAGE] == 4 * per_batch


# -- backpropagation ----------------------------------------------------------------------------------
def test_backprop_never_imports_devices():
    path = Path(B.__file__)
    assert "devices" not in imported_packages(path, path.parents[1])


def _tiny_net(rng, with_stage: bool):
    chip = devices.make_chip("pcm_blackbox" if with_stage else "pcm", (6, 5, 5, 4), seed=3,
                             trainable=STAGE if with_stage else None)
    stages = {}
    if with_stage:
        stages[1] = B.StageModel(rng.standard_normal((6, 5)), np.full(5, -2.0), np.full(5, 2.0),
                                 rng.standard_normal((5, 7)), 1.0)
    net = B._new_network(chip, B.BPConfig(seed=1), stages, 3)
    net.head = rng.standard_normal(net.head.shape)
    # float64 copies for the finite differences
    net.weights = [None if w is None else (w + rng.normal(0, 0.3, w.shape)).astype(np.float64) for w in net.weights]
    net.limits = [math.inf] * 3 if not with_stage else [2.0, 2.0, 2.0]
    return net


@pytest.mark.parametrize("with_stage", [False, True])
def test_the_bp_gradient_matches_finite_differences(with_stage):
    rng = np.random.default_rng(5)
    net = _tiny_net(rng, with_stage)
    x = np.abs(rng.standard_normal((7, 6)))
    y = rng.integers(0, 3, 7)

    def loss() -> float:
        logits, caches = net.forward(x)
        return net.backward(logits, y, caches)[2]

    logits, caches = net.forward(x)
    grads, g_head, _ = net.backward(logits, y, caches)
    checked = 0
    for i, W in enumerate(net.weights):
        if W is None:
            assert grads[i] is None
            continue
        for idx in [(0, 0), (2, 3), (W.shape[0] - 1, 1)]:
            old = W[idx]
            W[idx] = old + 1e-6
            up = loss()
            W[idx] = old - 1e-6
            down = loss()
            W[idx] = old
            assert grads[i][idx] == pytest.approx((up - down) / 2e-6, rel=1e-4, abs=1e-8)
            checked += 1
    for idx in [(0, 0), (net.head.shape[0] - 1, 2)]:
        old = net.head[idx]
        net.head[idx] = old + 1e-6
        up = loss()
        net.head[idx] = old - 1e-6
        down = loss()
        net.head[idx] = old
        assert g_head[idx] == pytest.approx((up - down) / 2e-6, rel=1e-4, abs=1e-8)
    assert checked >= 6


def test_the_stage_model_fit_lowers_the_held_out_error():
    chip = devices.make_chip("pcm_blackbox", (30, 40, 40, 10), seed=SEED, trainable=STAGE)
    before = chip.ledger.total_energy_j
    model, rep = B.fit_stage_model(chip, 1, B.StageFitConfig(probes=1500, epochs=20, seed=2))
    assert rep["heldout_mse_fitted"] < 0.7 * rep["heldout_mse_linear"]
    assert rep["heldout_mse_fitted"] < 0.2 * rep["heldout_output_var"]
    assert chip.ledger.counts["reads"] > 0 and chip.ledger.energy_j["digital"] > 0
    assert chip.ledger.total_energy_j > before


def _blobs(n: int, d: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    centers = rng.random((k, d))
    y = rng.integers(0, k, n)
    x = np.clip(centers[y] + 0.15 * rng.standard_normal((n, d)), 0, 1).astype(np.float32)
    return x, y


def test_the_digital_reference_learns_and_charges_its_arithmetic():
    x, y = _blobs(1200, 20, 4, 0)
    chip = devices.make_chip("ideal", (20, 32, 32), seed=1)
    res = B.train_digital(chip, x[:1000], y[:1000], B.BPConfig(epochs=5, lr=0.1), n_classes=4)
    ev = B.evaluate_on_chip(chip, res.network, x[1000:], y[1000:])
    assert ev["error"] < 0.1
    assert res.energy_j["digital"] == pytest.approx(res.train_ops * chip.info.digital_op_energy_j, rel=1e-9)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    with pytest.raises(InputError, match="fixed layers"):
        B.train_digital(devices.make_chip("pcm_blackbox", (20, 8, 8, 8), seed=1, trainable=STAGE), x, y)


def test_the_model_route_runs_end_to_end_and_charges_energy():
    x, y = _blobs(1200, 24, 4, 1)
    chip = devices.make_chip("pcm_blackbox", (24, 32, 32, 32), seed=4, trainable=STAGE)
    res = B.train_through_model(chip, x[:1000], y[:1000], B.BPConfig(epochs=5, lr=0.1, head_refit_epochs=3),
                                B.StageFitConfig(probes=800, epochs=10), n_classes=4)
    assert len(res.fits) == 1 and res.fits[0]["layer"] == 1
    for cat in ("digital", "program", "adc"):
        assert res.energy_j[cat] > 0, cat
    ev = B.evaluate_on_chip(chip, res.network, x[1000:], y[1000:])
    assert ev["error"] < 0.3 and ev["total_energy_j"] > 0
    # The trainable layers hold the programmed weights (to program-and-verify's error).
    w = devices.inspect(chip).layers[0].device_weights
    assert np.corrcoef(w.ravel(), res.network.weights[0].ravel())[0, 1] > 0.9


@pytest.mark.parametrize("x, y, match", [
    (np.zeros((5, 19)), np.zeros(5, int), "take 20"),
    (np.zeros((5, 20)), np.zeros(4, int), "expected \\(5,\\)"),
    (np.full((5, 20), 2.0), np.zeros(5, int), "within \\[0, 1\\]"),
    (np.zeros((5, 20)), np.array([0, 1, 2, 3, 9]), "0..3"),
    (np.zeros((5, 20)), np.zeros(5), "integers"),
])
def test_bad_data_is_refused_before_any_work(x, y, match):
    chip = devices.make_chip("ideal", (20, 8, 8), seed=1)
    with pytest.raises(InputError, match=match):
        B.train_digital(chip, x, y, n_classes=4)
    assert chip.ledger.total_energy_j == 0.0
