"""Statistics of the device model against the formulas its specs document.

Each test isolates one effect on a variant with the other noise sources off,
uses a fixed seed and enough devices or reads, and states its tolerance and
why in a comment.  Device-level quantities come from ``devices.inspect``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import devices
import reference as ref
from devices.crossbar import drift_parameters

#: No device-to-device spread, no faults, ideal wires: pcm's pulse response and drift alone.
#: pcm maps one device per sign (``one_per_sign``): one device of each fresh pair sits at
#: g = 0, so tests can pick the pulsed device by sign.  Its devices are SET-only.
QUIET = dict(
    programming={"step_dtod": 0.0, "up_down_dtod": 0.0},
    conductance={"g_max_dtod": 0.0},
    faults={"stuck_on_prob": 0.0, "stuck_off_prob": 0.0, "endurance_pulses": None},
    # IR drop couples every weight to the conductances of its whole array; tests of one
    # device's response turn it off (tests/test_devices_pcm_behaviour.py tests it).
    wires={"segment_ohm": 0.0},
)
#: SET-only devices are refreshed once the device to raise reaches refresh_at of its
#: saturation level; at 1.0 a device below g_sat (every fabricated device: |w0| <= 0.9 w_max
#: and g_sat = 1 without spread) is never refreshed by one request, so the pulses of a single
#: call are exactly the requested ones.
NO_REFRESH = {"refresh_at": 1.0}
#: pcm devices made bidirectional (the old pcm model): a request goes to the device of the
#: pair with more room in the needed direction, so devices can be lowered gradually.  With
#: the common mode at 0 a fresh pair still has one device at g = 0.
BIDIRECTIONAL = dict(programming={"direction": "both"},
                     conductance={"mapping": "common_mode", "init_common_mode": 0.0})
#: The read fluctuation of each weight the old pcm preset had (aihwkit's w_noise 0.0175 of
#: StandardHWATrainingPreset); pcm now uses the per-device 1/f law instead.
WEIGHT_NOISE = {"weight_std": 0.0175, "device_law": "none"}


def merged(*group_sets: dict) -> dict:
    """Spec group changes merged group by group (later sets win)."""
    groups: dict = {}
    for changes in group_sets:
        for key, value in changes.items():
            groups[key] = {**groups.get(key, {}), **value}
    return groups


def quiet_pcm(**changes):
    """pcm without spreads, faults or wire resistance, with further group changes merged in."""
    return devices.variant("pcm", **merged(QUIET, changes))


def pick(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """From a per-device array (2, rows, cols), the device ``k`` (rows, cols) of each pair."""
    return np.take_along_axis(a, k[None], axis=0)[0]


# -- (a) programming noise -------------------------------------------------------------------------
def test_pulse_noise_matches_pulse_std():
    spec = quiet_pcm(drift={"enabled": False}, conductance={"init_weight_std_fan_in": 2.0},
                     programming=NO_REFRESH)
    chip = devices.make_chip(spec, (255, 64), seed=1)
    before = devices.inspect(chip).layers[0]
    w = before.weights
    # One pulse on every pair, in the direction of its sign: the non-zero device of
    # each pair (the other is at g = 0 from fabrication) takes one up (SET) pulse.
    chip.program(0, (np.sign(w) * chip.info.pulse_step[0]).astype(np.float32))
    after = devices.inspect(chip).layers[0]
    assert chip.ledger.counts["pulses"] == np.count_nonzero(w)
    k = np.where(w > 0, 0, 1)
    g0 = pick(before.g, k).astype(np.float64)
    dg = pick(after.g, k).astype(np.float64) - g0
    np.testing.assert_array_equal(pick(after.g, 1 - k), pick(before.g, 1 - k))
    # Expected step of an up pulse: step_up (1 - g / g_sat); the noise multiplies it
    # by (1 + pulse_std xi).  Devices far from the bounds, so that clipping to
    # [0, g_sat] never acts (|pulse_std xi| <= 0.6 * 3.47).
    expected = pick(before.step_up, k) * (1.0 - g0 / pick(before.g_sat, k))
    sel = (g0 > 0.1) & (g0 < 0.8)
    z = dg[sel] / expected[sel] - 1.0
    n = z.size
    assert n > 10_000
    # std of z is pulse_std; its sampling error is ~ 1/sqrt(2n) ~ 0.7 %: allow 5 %.
    assert z.std() == pytest.approx(spec.programming.pulse_std, rel=0.05)
    # Mean zero: SE = pulse_std / sqrt(n) ~ 0.006, allow 5 SE.
    assert abs(z.mean()) < 5 * spec.programming.pulse_std / math.sqrt(n)


# -- (b) drift -------------------------------------------------------------------------------------
def test_drift_exponents_follow_the_spec():
    spec = quiet_pcm(programming={"pulse_std": 0.0}, read_noise={"output_std": 0.0, "weight_std": 0.0})
    chip = devices.make_chip(spec, (255, 64), seed=2)
    rng = np.random.default_rng(2)
    w = devices.inspect(chip).layers[0].weights
    # Move half the columns' devices up by 0..32 pulses; the rest keep their
    # fabrication state (their exponent was drawn from their fabricated g).
    k_pulses = rng.integers(0, 33, w.shape)
    k_pulses[:, ::2] = 0
    chip.program(0, (np.sign(w) * k_pulses * chip.info.pulse_step[0]).astype(np.float32))
    chip.wait(100.0)
    s1 = devices.inspect(chip)
    chip.wait(1.0e4)
    s2 = devices.inspect(chip)
    L1, L2 = s1.layers[0], s2.layers[0]
    k = np.where(w > 0, 0, 1)
    sel = (w != 0) & (pick(L1.g, 1 - k) == 0)  # pairs with one live device
    assert sel.sum() > 10_000
    # Recover each device's exponent from its weight at two times:
    # w2 / w1 = ((t2 - tp + t0) / (t1 - tp + t0)) ** -nu.
    t0 = spec.drift.t0_s
    tp = pick(L1.t_prog, k)[sel]
    ratio = L2.weights[sel].astype(np.float64) / L1.weights[sel]
    nu_rec = -np.log(ratio) / np.log((s2.clock_s - tp + t0) / (s1.clock_s - tp + t0))
    # Per device: equal to the hidden exponent up to the float32 rounding of the two
    # weights (2 eps32 relative) divided by a log-time ratio >= ln(84): < 1e-6.
    nu = pick(L1.nu, k)[sel].astype(np.float64)
    np.testing.assert_allclose(nu_rec, nu, rtol=0, atol=1e-6)
    # Population: nu = |mu(g) + sigma(g) xi| with xi ~ N(0, 1), mu and sigma from the
    # spec's clipped log-linear laws at each device's programmed g.
    dp = drift_parameters(spec)
    g = pick(L1.g, k)[sel].astype(np.float64)
    lg = np.log(np.maximum(g, 1e-6))
    mu = np.clip(dp[1] * lg + dp[2], dp[3], dp[4])
    sg = np.clip(dp[5] * lg + dp[6], dp[7], dp[8])
    mean_theory = ref.folded_normal_mean(mu, sg).mean()
    var_theory = (mu**2 + sg**2).mean() - mean_theory**2
    n = nu_rec.size
    # Mean: SE = std / sqrt(n) ~ 2e-4 (0.3 %): allow 4 SE.
    assert abs(nu_rec.mean() - mean_theory) < 4 * nu_rec.std() / math.sqrt(n)
    # Std: sampling error ~ 1/sqrt(2n) ~ 0.6 % (heavier tails of the mixture at most
    # double it): allow 5 %.
    assert nu_rec.std() == pytest.approx(math.sqrt(var_theory), rel=0.05)
    # The spread comes from the per-device xi: standardized, it has unit spread.
    xi_abs = np.abs((nu_rec - mu) / sg)  # = |xi| where mu + sigma xi >= 0 (most devices)
    assert np.median(xi_abs) == pytest.approx(0.6745, rel=0.05)  # median of |N(0,1)|


def test_weights_shrink_with_time_on_pcm_and_not_on_ideal():
    pcm = devices.make_chip("pcm", (64, 32), seed=3)
    ideal = devices.make_chip("ideal", (64, 32), seed=3)
    quiet = devices.make_chip(quiet_pcm(), (64, 32), seed=3)
    for chip in (pcm, ideal, quiet):
        chip.wait(60.0)
    w1 = {id(c): devices.inspect(c).layers[0].weights for c in (pcm, ideal, quiet)}
    for chip in (pcm, ideal, quiet):
        chip.wait(1.0e5)
    w2 = {id(c): devices.inspect(c).layers[0].weights for c in (pcm, ideal, quiet)}
    np.testing.assert_array_equal(w2[id(ideal)], w1[id(ideal)])
    # Without stuck devices every pair has one live device: each |w| decays strictly.
    a, b = np.abs(w1[id(quiet)]), np.abs(w2[id(quiet)])
    live = a > 0
    assert (b[live] < a[live]).all() and (b[~live] == 0).all()
    # pcm (with stuck-on partners, whose |w| can grow): the total still decays, by
    # about ((1e5 + 80) / 80) ** -0.05 ~ 0.70 for the typical nu ~ 0.05.
    shrink = np.abs(w2[id(pcm)]).sum() / np.abs(w1[id(pcm)]).sum()
    assert 0.6 < shrink < 0.8


def test_reads_follow_drifted_weights():
    # The cached weights a read uses are refreshed once drift could exceed
    # refresh_rel: after a long wait a read matches the inspected weights.
    spec = quiet_pcm(read_noise={"output_std": 0.0, "weight_std": 0.0, "device_law": "none"},
                     neuron={"family": "relu", "gain_dtod": 0.0, "offset_dtod": 0.0,
                             "saturation_mean": 1.0, "saturation_dtod": 0.0},
                     adc={"bits": None, "range": 1e6}, dac={"bits": None})
    chip = devices.make_chip(spec, (32, 16), seed=4)
    x = np.random.default_rng(4).uniform(0, 1, (5, 32)).astype(np.float32)
    y0 = chip.read(0, x)
    chip.wait(1e5)
    y1 = chip.read(0, x)
    W = devices.inspect(chip).layers[0].weights.astype(np.float64)
    want = np.maximum(x @ W[:-1] + W[-1], 0)
    # Drift of the cache is bounded by about nu * refresh_rel (< 1e-3) of each weight.
    scale = np.abs(x) @ np.abs(W[:-1]) + np.abs(W[-1])
    assert (np.abs(y1 - want) <= 2e-3 * scale + 1e-6).all()
    assert not np.allclose(y0, y1, rtol=1e-2)


# -- (c) read noise -----------------------------------------------------------------------------------
@pytest.mark.parametrize("x_level", [8 / 127, 64 / 127])
def test_read_noise_std_matches_the_spec(x_level):
    # The output floor and a constant fluctuation per weight (the per-device 1/f law is
    # measured against IBM's statistics in test_pcm_fidelity.py).
    spec = quiet_pcm(drift={"enabled": False}, read_noise=WEIGHT_NOISE,
                     neuron={"family": "relu", "gain_dtod": 0.0, "offset_dtod": 0.0,
                             "saturation_mean": 1.0, "saturation_dtod": 0.0},
                     adc={"bits": None})
    chip = devices.make_chip(spec, (64, 64), seed=5)
    rng = np.random.default_rng(5)
    x = (rng.choice([-1.0, 1.0], 64) * x_level).astype(np.float32)[None]
    xq, sq, _ = ref.dac(x, spec.dac.range, spec.dac.range / (2 ** (spec.dac.bits - 1) - 1))
    W = devices.inspect(chip).layers[0].weights.astype(np.float64)
    mean = xq.astype(np.float64) @ W[:-1] + W[-1]
    R = spec.adc.range
    w_max = chip.info.weight_range[0]
    # Every weight fluctuates, the bias row's (driven at bias_level) too.
    sd = math.sqrt((spec.read_noise.output_std * R) ** 2
                   + (spec.read_noise.weight_std * w_max) ** 2 * (sq[0] + spec.bias_level**2))
    # Columns whose output stays > 5 sd away from the ReLU and the ADC clip.
    cols = (mean[0] > 5 * sd) & (mean[0] < R - 5 * sd)
    assert cols.sum() >= 8
    y = np.concatenate([chip.read(0, np.repeat(x, 4000, axis=0)) for _ in range(5)])
    resid = (y[:, cols] - mean[0, cols]).astype(np.float64)
    # Pooled over columns and 20000 reads each (> 1.6e5 samples): the std's sampling
    # error is ~ 1/sqrt(2n) < 0.2 %; allow 3 %.
    assert resid.std() == pytest.approx(sd, rel=0.03)
    # Unbiased: per column, the mean of 20000 reads within 5 SE of the noise-free output.
    assert (np.abs(resid.mean(axis=0)) < 5 * sd / math.sqrt(y.shape[0])).all()
    # Every read is a fresh draw: no two reads of the same input agree everywhere.
    assert np.unique(y[:, cols], axis=0).shape[0] == y.shape[0]


# -- (d) stuck devices ----------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["pcm", "rram"])
def test_stuck_fraction_at_fabrication(preset):
    spec = devices.PRESETS[preset]
    chip = devices.make_chip(preset, (1023, 128), seed=6)
    L = devices.inspect(chip).layers[0]
    n = L.stuck.size
    stuck = L.stuck.astype(bool)
    on = stuck & (L.g == L.g_sat)
    off = stuck & (L.g == 0)
    assert (on | off).sum() == stuck.sum()
    for observed, p in ((on.mean(), spec.faults.stuck_on_prob), (off.mean(), spec.faults.stuck_off_prob),
                        (stuck.mean(), spec.faults.stuck_on_prob + spec.faults.stuck_off_prob)):
        # Binomial: allow 5 standard errors sqrt(p (1 - p) / n).
        assert abs(observed - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert devices.inspect(chip).stuck_fraction == pytest.approx(stuck.mean())
    assert (L.nu[stuck] == 0).all()  # stuck devices do not drift
    # Stuck devices ignore programming (pcm: SET pulses and the refreshes they trigger).
    chip.program(0, np.full(chip.info.weight_shapes[0], 5 * chip.info.pulse_step[0], np.float32))
    chip.program(0, np.full(chip.info.weight_shapes[0], -5 * chip.info.pulse_step[0], np.float32))
    after = devices.inspect(chip).layers[0]
    for name in ("g", "t_prog", "nu"):
        np.testing.assert_array_equal(getattr(after, name)[stuck], getattr(L, name)[stuck], err_msg=name)
    assert after.stuck[stuck].all()
    # ... and are charged no pulse: every pulse counted wore a working device by one.
    assert np.isfinite(L.pulses_left).all()  # both presets have a finite endurance
    spent = L.pulses_left - after.pulses_left
    assert (spent >= 0).all()
    assert spent.sum() == chip.ledger.counts["pulses"] > 0


# -- (e) endurance ------------------------------------------------------------------------------------
@pytest.mark.parametrize("pulses_per_call", [3, 5])
def test_devices_stick_after_their_endurance(pulses_per_call):
    spec = quiet_pcm(faults={"endurance_pulses": 5.0, "endurance_dtod": 0.0})
    chip = devices.make_chip(spec, (8, 6), seed=7)
    shape = chip.info.weight_shapes[0]
    step = chip.info.pulse_step[0]
    prev = devices.inspect(chip).layers[0]
    assert (prev.pulses_left == 5).all()
    # SET-only pcm: positive requests raise g+, negative ones g- (a pair whose device has
    # reached refresh_at of g_sat is refreshed first: two RESETs and a verified SET, all worn).
    for i in range(12):
        sign = 1.0 if i % 4 < 2 else -1.0
        chip.program(0, np.full(shape, sign * pulses_per_call * step, np.float32))
        L = devices.inspect(chip).layers[0]
        # Pulses left count down by whole pulses from the endurance and stop at 0 ...
        assert (L.pulses_left == np.round(L.pulses_left)).all()
        assert ((L.pulses_left >= 0) & (L.pulses_left <= prev.pulses_left)).all()
        # ... by exactly the pulses the ledger counted (2 devices x 5 pulses per pair at most).
        assert chip.ledger.counts["pulses"] == (5 - L.pulses_left).sum()
        # A device that had worn out stays where it was.
        was = prev.stuck.astype(bool)
        np.testing.assert_array_equal(L.g[was], prev.g[was])
        assert L.stuck[was].all()
        prev = L
    assert (L.pulses_left == 0).all() and L.stuck.all()
    # Every device took exactly its endurance: 2 devices x 5 pulses per pair.
    assert chip.ledger.counts["pulses"] == 2 * 5 * np.prod(shape)
    # Dead devices stay where they are: neither programming nor time moves them.
    assert (L.nu == 0).all()
    w_dead = L.weights
    e_before = chip.ledger.energy_j["program"]
    chip.program(0, np.full(shape, 10 * step, np.float32))
    chip.wait(1.0e5)
    L2 = devices.inspect(chip).layers[0]
    np.testing.assert_array_equal(L2.g, L.g)
    np.testing.assert_array_equal(L2.weights, w_dead)
    assert chip.ledger.energy_j["program"] == e_before


# -- (f) soft bounds ------------------------------------------------------------------------------------
def test_repeated_requests_saturate_at_g_sat():
    # Bidirectional devices: a pair is driven to (g_sat, 0) by raising one device and
    # lowering the other.  (SET-only pcm refreshes a pair instead of letting it saturate:
    # test_devices_pcm_behaviour.py.)
    spec = quiet_pcm(**merged(BIDIRECTIONAL, dict(drift={"enabled": False}, programming={"max_pulses": 1024},
                                                  conductance={"g_max_dtod": 0.2})))
    chip = devices.make_chip(spec, (16, 8), seed=8)
    shape = chip.info.weight_shapes[0]
    w_max = chip.info.weight_range[0]
    big = 1024 * chip.info.pulse_step[0]
    for sign, device in ((1.0, 0), (-1.0, 1)):
        for _ in range(6):
            chip.program(0, np.full(shape, sign * big, np.float32))
            L = devices.inspect(chip).layers[0]
            bound = L.g_sat[device] * w_max
            assert (np.abs(L.weights) <= bound * (1 + 1e-6)).all()
        # After 6 x 1024 pulses shared by the two devices of a pair, each pair sits
        # at (g_sat, 0) or (0, g_sat): each device's remaining gap is about
        # g_sat (1 - step / g_sat) ** 3072 < 1.5 e**-10 of the range (g_sat <= 1.5;
        # pulse noise is multiplicative with mean 1); allow 1 % of w_max.
        np.testing.assert_allclose(L.weights, sign * bound, rtol=0, atol=0.01 * w_max)
        assert np.ptp(L.g_sat[device]) > 0.1  # each device saturates at its own level


# -- (g) pulses -------------------------------------------------------------------------------------
def test_requests_below_half_a_pulse_do_nothing(snapshot):
    chip = devices.make_chip("pcm", (16, 8), seed=9)
    shape = chip.info.weight_shapes[0]
    rng = np.random.default_rng(9)
    delta = (rng.choice([-1.0, 1.0], shape) * rng.uniform(0.0, 0.49, shape)
             * chip.info.pulse_step[0]).astype(np.float32)
    before = snapshot(chip)
    chip.program(0, delta)
    after = snapshot(chip)
    assert after["ledger"]["counts"]["pulses"] == before["ledger"]["counts"]["pulses"]
    assert after["ledger"]["energy_j"] == before["ledger"]["energy_j"]
    for name in ("g", "pulses_left", "stuck", "t_prog", "nu", "weights"):
        np.testing.assert_array_equal(after["layers"][0][name], before["layers"][0][name], err_msg=name)


def test_pulse_count_is_rounded_request_capped_at_max_pulses():
    # A finite endurance without spread makes the pulses each device took visible as
    # pulses_left; no refresh, so that a request's pulses are all the pulses spent.
    spec = quiet_pcm(programming={"max_pulses": 16, **NO_REFRESH},
                     faults={"endurance_pulses": 1e9, "endurance_dtod": 0.0})
    chip = devices.make_chip(spec, (40, 12), seed=10)
    shape = chip.info.weight_shapes[0]
    rng = np.random.default_rng(10)
    k = rng.integers(0, 40, shape)
    frac = rng.uniform(-0.4, 0.4, shape)  # never near a half: rounding is unambiguous
    delta = (rng.choice([-1.0, 1.0], shape) * (k + frac) * chip.info.pulse_step[0]).astype(np.float32)
    before = devices.inspect(chip).layers[0]
    chip.program(0, delta)
    after = devices.inspect(chip).layers[0]
    want = np.minimum(k, 16)
    # SET-only: all of a request's pulses go to one device of the pair.
    spent = before.pulses_left - after.pulses_left
    np.testing.assert_array_equal(spent.sum(axis=0), want)
    np.testing.assert_array_equal(spent.min(axis=0), 0)
    assert chip.ledger.counts["pulses"] == want.sum()
    e = spec.energy
    assert chip.ledger.energy_j["program"] == pytest.approx(want.sum() * e.pulse_j, rel=1e-12)
    # Rows are programmed one after another, the devices of a row in parallel.
    assert chip.ledger.time_s["program"] == pytest.approx(want.max(axis=1).sum() * e.pulse_s, rel=1e-12)


def test_pulse_step_is_the_weight_change_of_one_pulse_at_mid_range():
    spec = quiet_pcm(drift={"enabled": False}, programming={"pulse_std": 0.0, **NO_REFRESH},
                     conductance={"init_weight_std_fan_in": 2.0})
    chip = devices.make_chip(spec, (255, 16), seed=11)
    w0 = devices.inspect(chip).layers[0].weights
    chip.program(0, (np.sign(w0) * chip.info.pulse_step[0]).astype(np.float32))
    before = devices.inspect(chip).layers[0]
    g = np.where(w0 > 0, before.g[0], before.g[1])
    w1 = before.weights
    dw = np.abs(w1 - w0)
    # Noise-free soft bound: |dw| = step (1 - g_before) w_max, so |dw| = pulse_step
    # where the device was at g = 0.5 (float32 weights: rtol 1e-4 at this size).
    g_before = g - dw / chip.info.weight_range[0]
    expected = 2 * chip.info.pulse_step[0] * (1 - g_before)
    np.testing.assert_allclose(dw[w0 != 0], expected[w0 != 0], rtol=1e-4)


# -- read energy --------------------------------------------------------------------------------------
@pytest.mark.parametrize("drift", [False, True])
def test_read_energy_follows_the_programmed_conductances(drift):
    # Cell energy is V^2 G t per cell with the row voltage proportional to its input
    # level (energy.read_cost).  With the same level on every row the model's use of
    # the mean row conductance is exact, so the charge must equal the sum over the
    # devices' conductances now on the chip.  The row sums are renewed with the
    # cached weights: without drift right after programming; with drift once the
    # refresh policy acts (after refresh_rel of the youngest device's age, here a
    # wait of 2 s > 0.05 * 20 s).
    # pcm pairs start with one device at 0 (one device per sign), so that programming can
    # raise the conductances a lot.
    spec = devices.variant("pcm", drift={"enabled": drift})
    chip = devices.make_chip(spec, (64, 32), seed=12)
    x = np.full((10, 64), 64 / 127, np.float32)  # on the DAC grid
    e, c = spec.energy, spec.conductance

    def charged():
        before = chip.ledger.energy_j["array"]
        chip.read(0, x)
        return chip.ledger.energy_j["array"] - before

    def documented():
        st = devices.inspect(chip)
        L = st.layers[0]
        _, g_rows = ref.refresh(L.g, L.t_prog, L.nu, st.clock_s, spec.drift.t0_s, L.w_max)
        n_devices = 2 * L.g.shape[2]
        G_rows = (g_rows * (c.g_max_us - c.g_min_us) + n_devices * c.g_min_us) * 1e-6  # siemens
        levels = (x.astype(np.float64) / spec.dac.range) ** 2  # V^2: squared relative row voltage
        bias = x.shape[0] * (spec.bias_level / spec.dac.range) ** 2
        return e.v_read**2 * e.t_read_s * ((levels @ G_rows[:-1]).sum() + bias * G_rows[-1])

    e0, want0 = charged(), documented()
    for _ in range(3):
        chip.program(0, np.full(chip.info.weight_shapes[0], 32 * chip.info.pulse_step[0], np.float32))
        chip.program(0, np.full(chip.info.weight_shapes[0], -32 * chip.info.pulse_step[0], np.float32))
    if drift:
        chip.wait(2.0)
    want1 = documented()
    e1 = charged()
    # float64 sums of float32 conductances; the conductances drift by < 1e-6 of
    # themselves between the inspection and the read: rtol 1e-5.
    assert e0 == pytest.approx(want0, rel=1e-5)
    assert e1 == pytest.approx(want1, rel=1e-5)
    assert e1 > 2 * e0  # programming raised the conductances a lot
