"""Ageing in ``devices``: random device failures with time, on top of drift and wear.

Each device's failure time is a hash of its layer's ``fail_key`` (drawn from the chip's own
ageing stream) and its index: ``median * exp(dtod * z)`` with ``z`` a unit normal, and whether
it then sticks high (at its own saturation level) or low (at 0).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import devices
from devices import archive
from devices.spec import FaultSpec

YEAR = 365.25 * 86400.0


def _failing(median_s: float = 1e6, dtod: float = 1.0, on_share: float = 0.3, **faults):
    return devices.variant("pcm", faults={"failure_median_s": median_s, "failure_dtod": dtod,
                                          "failure_stuck_on_share": on_share, **faults})


def _sides(chip, layer: int) -> np.ndarray:
    """Whether each device of ``layer`` sticks high (1) or low (0) when it fails."""
    return chip._layers[layer].failure_times()[1]


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
    chip.wait(1e5)  # everything has failed: 1e5 s is 46 sigma above the median of 1e3 s
    L = devices.inspect(chip).layers[0]
    assert L.stuck.all() and (L.pulses_left == 0).all()
    on = _sides(chip, 0) == 1
    np.testing.assert_array_equal(L.g[on], L.g_sat[on], strict=True)  # the device's own level, exactly
    assert (L.g[~on] == 0.0).all()
    # a binomial share over 16160 devices: 5 standard errors
    assert abs(on.mean() - 0.3) < 5 * math.sqrt(0.3 * 0.7 / on.size)
    assert (L.nu == 0).all()
    assert chip.ledger.counts["device_failures"] == on.size
    # stuck devices no longer move when programmed, nor by program-and-verify
    before = L.weights.copy()
    chip.program(0, np.full((101, 80), 0.05, np.float32))
    chip.program_verify(0, np.zeros((101, 80), np.float32))
    np.testing.assert_array_equal(devices.inspect(chip).layers[0].weights, before)


def test_devices_fail_at_their_own_time_and_nothing_else_changes():
    spec = _failing(median_s=1e4, dtod=1.0, on_share=0.5)
    chip = devices.make_chip(spec, (40, 30, 20), seed=4)
    start = devices.inspect(chip)
    fab_stuck = [L.stuck == 1 for L in start.layers]
    failed = 0
    for until in (2e3, 1e4, 3e4, 1e5):
        before = devices.inspect(chip)
        chip.wait(until - chip.clock_s)
        now = devices.inspect(chip)
        for i, (L0, L1) in enumerate(zip(before.layers, now.layers)):
            due = L1.failure_time <= chip.clock_s
            np.testing.assert_array_equal(L1.stuck == 1, due | fab_stuck[i])  # stuck exactly when due
            new = due & (L0.stuck == 0)
            assert new.any() and (~due).any()  # each step fails some devices and spares others
            high = new & (_sides(chip, i) == 1)
            np.testing.assert_array_equal(L1.g[high], L1.g_sat[high], strict=True)
            assert (L1.g[new & ~high] == 0).all() and (L1.nu[new] == 0).all() and (L1.pulses_left[new] == 0).all()
            keep = ~new  # every other device is as it was
            for name in ("g", "nu", "t_prog", "pulses_left"):
                np.testing.assert_array_equal(getattr(L1, name)[keep], getattr(L0, name)[keep], err_msg=name)
            failed += int(new.sum())
        assert chip.ledger.counts["device_failures"] == failed


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
    n = t.size  # 2 x 301 x 200 = 120400 devices
    z = np.log(t / 1e7) / 0.8
    # Standard errors of a unit normal's sample moments: mean 1 / sqrt(n), std 1 / sqrt(2 n),
    # median sqrt(pi / 2) / sqrt(n) = 1.25 / sqrt(n) (1.30 / sqrt(n) for the emulator's Irwin-Hall
    # deviates, whose lighter tails make the other two smaller); 5 of each.
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.std() - 1.0) < 5 / math.sqrt(2 * n)
    assert abs(np.median(z)) < 5 * 1.30 / math.sqrt(n)


def test_the_share_failed_by_each_age_is_the_spec_failed_fraction():
    # FaultSpec.failed_fraction is the log-normal CDF the presets are calibrated with (1 % failed
    # at ten years, see below); the chip's failure times must give that share at every age, the
    # tails too.  (pcm, rram and wild share failure_dtod = 1 and that calibration.)
    from statistics import NormalDist

    spec = devices.get_preset("pcm")
    f = spec.faults
    chip = devices.make_chip(spec, (300, 200), seed=11)
    t = devices.inspect(chip).layers[0].failure_time.ravel()
    n = t.size
    ages = {"ten years": 10 * YEAR}
    ages.update({f"median x exp({q} sigma)": f.failure_median_s * math.exp(q * f.failure_dtod)
                 for q in (-3.0, -1.0, 0.5, 1.5)})
    wrong = {}
    for name, age in ages.items():
        p = f.failed_fraction(age)
        assert p == pytest.approx(NormalDist().cdf(math.log(age / f.failure_median_s) / f.failure_dtod), rel=1e-9)
        share = float(np.mean(t <= age))
        se = math.sqrt(p * (1 - p) / n)  # binomial standard error of the share; 5 of it
        if abs(share - p) >= 5 * se:
            wrong[name] = f"{share:.5f} failed, the spec's log-normal says {p:.5f} (+- {se:.5f})"
    assert not wrong, wrong


def test_failure_times_scale_with_the_median_and_keep_their_order():
    # The same hashed draw per device whatever the median and spread: times scale exactly.
    a = devices.make_chip(_failing(median_s=1e6, dtod=1.0), (20, 15), seed=3)
    b = devices.make_chip(_failing(median_s=4e6, dtod=1.0), (20, 15), seed=3)
    c = devices.make_chip(_failing(median_s=1e6, dtod=0.5), (20, 15), seed=3)
    ta, tb, tc = (devices.inspect(x).layers[0].failure_time for x in (a, b, c))
    np.testing.assert_allclose(tb, 4.0 * ta, rtol=1e-12)
    np.testing.assert_allclose(np.log(tc / 1e6), 0.5 * np.log(ta / 1e6), rtol=1e-9, atol=1e-12)


def test_each_layer_draws_its_own_failure_key():
    # Two layers of the same shape: one key for both would give equal times device by device.
    chip = devices.make_chip(_failing(median_s=1e6, dtod=1.0), (20, 20, 20), seed=6)
    keys = [L.fail_key for L in chip._layers]
    assert keys[0] != keys[1]
    z0, z1 = (np.log(L.failure_time.ravel() / 1e6) for L in devices.inspect(chip).layers)
    # uncorrelated: the sample correlation of n independent pairs has standard error 1 / sqrt(n); 5 of it
    assert abs(np.corrcoef(z0, z1)[0, 1]) < 5 / math.sqrt(z0.size)
    # the key comes from the chip's ageing stream: the same seed gives the same keys
    assert [L.fail_key for L in devices.make_chip(_failing(), (20, 20, 20), seed=6)._layers] == keys


@pytest.mark.parametrize("op", ["read", "program", "program_verify", "wait"])
def test_failures_apply_at_the_start_of_every_operation(op):
    spec = _failing(median_s=1e4, dtod=1.0)
    chip = devices.make_chip(spec, (40, 30), seed=2)
    L = devices.inspect(chip).layers[0]
    times = np.sort(L.failure_time[L.stuck == 0])
    x = np.full((2, 40), 0.1, np.float32)
    probe = devices.make_chip(spec, (40, 30), seed=2)
    probe.read(0, x)
    read_s = probe.clock_s  # how long one read takes
    due = times[10]
    assert times[11] > due + read_s  # only one failure falls within the read below
    chip.wait(due - 0.5 * read_s)
    assert chip.clock_s < due and chip.ledger.counts["device_failures"] == 10
    chip.read(0, x)  # the clock passes the failure time during the read, after the check at its start
    assert chip.clock_s > due and chip.ledger.counts["device_failures"] == 10
    calls = {"read": lambda: chip.read(0, x),
             "program": lambda: chip.program(0, np.zeros((41, 30), np.float32)),
             "program_verify": lambda: chip.program_verify(0, np.zeros((41, 30), np.float32)),
             "wait": lambda: chip.wait(0.0)}
    calls[op]()
    assert chip.ledger.counts["device_failures"] == 11
    assert devices.inspect(chip).layers[0].stuck.sum() == (L.stuck == 1).sum() + 11


def test_failures_survive_save_load(tmp_path):
    spec = _failing(median_s=1e4, dtod=1.0)
    chip = devices.make_chip(spec, (40, 30), seed=2)
    chip.wait(5e3)
    twin = devices.load_chip(chip.save(tmp_path / "c.npz"))
    np.testing.assert_array_equal(devices.inspect(twin).layers[0].failure_time,
                                  devices.inspect(chip).layers[0].failure_time)
    for c in (chip, twin):
        c.wait(2e4)
        c.read(0, np.ones((2, 40), np.float32) * 0.1)
    a, b = devices.inspect(chip), devices.inspect(twin)
    for name in ("stuck", "g", "weights", "failure_time"):
        np.testing.assert_array_equal(getattr(a.layers[0], name), getattr(b.layers[0], name), err_msg=name)
    assert chip.ledger.counts["device_failures"] == twin.ledger.counts["device_failures"] > 0
    assert a.stuck_fraction > devices.inspect(devices.make_chip(spec, (40, 30), seed=2)).stuck_fraction


def test_the_saved_failure_key_is_the_only_record_of_the_failure_times(tmp_path):
    # A saved chip holds no failure times: they follow from each layer's fail_key.  The same file
    # sealed with another (valid) key loads with other failure times, of the same law.
    spec = _failing(median_s=1e6, dtod=1.0)
    chip = devices.make_chip(spec, (30, 20, 10), seed=5)
    path = chip.save(tmp_path / "chip.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    assert not any(k.endswith(("_fail_at", "_fail_on")) for k in arrays)
    meta["layers"][0]["scalars"]["fail_key"] ^= 1
    archive.atomic_savez(tmp_path / "other.npz", dict(arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8)))
    other = devices.load_chip(tmp_path / "other.npz")
    mine, theirs = devices.inspect(chip).layers, devices.inspect(other).layers
    np.testing.assert_array_equal(mine[1].failure_time, theirs[1].failure_time)  # layer 1 kept its key
    np.testing.assert_array_equal(mine[0].g, theirs[0].g)
    assert np.count_nonzero(mine[0].failure_time == theirs[0].failure_time) == 0
    z = [np.log(L.failure_time.ravel() / 1e6) for L in (mine[0], theirs[0])]
    # the same law: medians of n = 1240 unit deviates each differ by a standard error of
    # sqrt(2) x 1.30 / sqrt(n) (see the log-normal test above); 5 of it
    assert abs(np.median(z[0]) - np.median(z[1])) < 5 * math.sqrt(2) * 1.30 / math.sqrt(z[0].size)


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
