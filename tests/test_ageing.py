"""Ageing in ``devices``: random device failures with time, on top of drift and wear."""

from __future__ import annotations

import math

import numpy as np
import pytest

import devices
from devices.spec import FaultSpec

YEAR = 365.25 * 86400.0


def _failing(median_s: float = 1e6, dtod: float = 1.0, on_share: float = 0.3, **faults):
    return devices.variant("pcm", faults={"failure_median_s": median_s, "failure_dtod": dtod,
                                          "failure_stuck_on_share": on_share, **faults})


@pytest.mark.parametrize("age", [2e5, 1e6, 5e6])
def test_stuck_fraction_grows_with_time_as_the_spec_says(age):
    spec = _failing(stuck_on_prob=0.0, stuck_off_prob=0.0)
    chip = devices.make_chip(spec, (200, 150, 100), seed=3)
    assert devices.inspect(chip).stuck_fraction == 0.0
    chip.wait(age)
    st = devices.inspect(chip)
    n = sum(L.stuck.size for L in st.layers)
    want = spec.faults.failed_fraction(chip.clock_s)
    sd = math.sqrt(want * (1 - want) / n)
    assert abs(st.stuck_fraction - want) < 5 * sd + 1e-9, (st.stuck_fraction, want)
    assert chip.ledger.counts["device_failures"] == round(st.stuck_fraction * n)


def test_failed_devices_stick_on_or_off_in_the_spec_share():
    spec = _failing(median_s=1e3, dtod=0.1, on_share=0.3, stuck_on_prob=0.0, stuck_off_prob=0.0)
    chip = devices.make_chip(spec, (100, 80), seed=5)
    chip.wait(1e5)  # everything has failed
    L = devices.inspect(chip).layers[0]
    assert L.stuck.all()
    on = np.isclose(L.g, L.g_sat)
    off = L.g == 0.0
    assert (on | off).all()
    assert abs(on.mean() - 0.3) < 5 * math.sqrt(0.3 * 0.7 / on.size)
    assert (L.nu == 0).all()
    # stuck devices no longer move when programmed
    before = L.weights.copy()
    chip.program(0, np.full((101, 80), 0.05, np.float32))
    np.testing.assert_array_equal(devices.inspect(chip).layers[0].weights, before)


def test_failures_come_from_their_own_stream():
    """Adding failures to a spec leaves every fabrication draw of the chip unchanged."""
    a = devices.make_chip("pcm", (30, 20, 10), seed=9)
    b = devices.make_chip(devices.variant("pcm", faults={"failure_median_s": None}), (30, 20, 10), seed=9)
    for La, Lb in zip(devices.inspect(a).layers, devices.inspect(b).layers):
        np.testing.assert_array_equal(La.g, Lb.g)
        np.testing.assert_array_equal(La.weights, Lb.weights)
        assert np.isinf(Lb.failure_time).all()
        assert np.isfinite(La.failure_time).all()


def test_failure_times_follow_the_log_normal_of_the_spec():
    spec = _failing(median_s=1e7, dtod=0.8)
    chip = devices.make_chip(spec, (300, 200), seed=11)
    t = devices.inspect(chip).layers[0].failure_time.ravel()
    z = np.log(t / 1e7)
    assert abs(np.median(z)) < 0.02
    assert abs(z.std() - 0.8) < 0.02


def test_failures_apply_on_read_and_program_too_and_survive_save_load(tmp_path):
    spec = _failing(median_s=1e4, dtod=1.0)
    chip = devices.make_chip(spec, (40, 30), seed=2)
    chip.wait(5e3)
    path = chip.save(tmp_path / "c.npz")
    twin = devices.load_chip(path)
    for c in (chip, twin):
        c.wait(2e4)
        c.read(0, np.ones((2, 40), np.float32) * 0.1)
    a, b = devices.inspect(chip), devices.inspect(twin)
    np.testing.assert_array_equal(a.layers[0].stuck, b.layers[0].stuck)
    np.testing.assert_array_equal(a.layers[0].weights, b.layers[0].weights)
    assert a.stuck_fraction > devices.inspect(devices.make_chip(spec, (40, 30), seed=2)).stuck_fraction


def test_presets_have_cited_failure_parameters():
    for name in ("pcm", "rram", "wild"):
        f = devices.get_preset(name).faults
        assert f.failure_median_s is not None
        # at most 1 % failed after ten years: the retention figure the presets are built from
        assert f.failed_fraction(10 * YEAR) == pytest.approx(0.01, rel=0.05)
    assert devices.get_preset("ideal").faults.failure_median_s is None


def test_a_chip_with_half_its_devices_stuck_is_dead():
    chip = devices.make_chip(_failing(median_s=1e3, dtod=0.1), (50, 40), seed=1)
    assert not chip.dead
    chip.wait(1e5)
    assert chip.dead
    assert not devices.make_chip("pcm", (50, 40), seed=1).dead
    assert not devices.make_chip("ideal", (50, 40), seed=1).dead


def test_failure_spec_validation():
    with pytest.raises(ValueError):
        FaultSpec(failure_median_s=0.0)
    with pytest.raises(ValueError):
        FaultSpec(failure_stuck_on_share=1.5)
    assert FaultSpec().failed_fraction(1e12) == 0.0


def test_chips_saved_before_failures_existed_load_with_the_same_failure_times(tmp_path):
    import json

    chip = devices.make_chip("pcm", (30, 20, 10), seed=5)
    z = dict(np.load(chip.save(tmp_path / "new.npz")))
    meta = json.loads(z["meta"].tobytes().decode())
    for i, lm in enumerate(meta["layers"]):  # the layout written before failures with time
        lm["arrays"] = [a for a in lm["arrays"] if a not in ("fail_at", "fail_on")]
        del z[f"L{i}_fail_at"], z[f"L{i}_fail_on"]
    meta["format"] = "mortal-chip/1"  # such archives were written before the seal: format 1, unsealed
    z["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "old.npz", **z)
    old = devices.load_chip(tmp_path / "old.npz", legacy=True)
    for a, b in zip(devices.inspect(chip).layers, devices.inspect(old).layers):
        np.testing.assert_array_equal(a.failure_time, b.failure_time)
        np.testing.assert_array_equal(a.weights, b.weights)
