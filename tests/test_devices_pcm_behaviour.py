"""Behaviour of the rebuilt device layer, through the chip's public operations.

``make_chip``, ``program``, ``program_verify``, ``wait`` and ``read`` drive the chips;
``devices.inspect`` shows the hidden state (as-programmed conductance ``g``, ``t_prog``, ``nu``,
``pulses_left``, ``g_sat``, ``step_up`` / ``step_down`` per device, index 0 the positive device).
Most tests use ``devices.fidelity.transparent(spec)``: the spec's devices with a periphery that
adds nothing (no converters, ReLU neurons, no output noise, ideal wires, no faults).

Statistical checks use >= 2,000 devices (most >= 20,000) and fixed seeds; tolerances are stated
in standard errors (SE) where they are used.  Normal draws of the emulator are Irwin-Hall sums
of four uniforms (exact mean and variance, tails cut at sqrt(12) = 3.46 sigma), hence the hard
bounds of ``IH_BOUND`` sigma.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import devices
from devices.fidelity import transparent
from devices.irdrop import ir_drop_weights

#: Largest |deviate| of one Irwin-Hall normal (sqrt(12)), with room for float32 rounding.
IH_BOUND = 3.47
#: pcm's programming error after program-and-verify, sigma_prog(g) = c0 + c1 g + c2 g^2 uS with
#: g = G / 25 uS (IBM's PCM model, PCMLikeNoiseModel.prog_coeff), and its RESET spread.
PCM_PROG_US = (0.26348, 1.9650, -1.1731)
PCM_RESET_STD = 0.26348 / 25.0
#: pcm with a finite endurance without spread: ``pulses_left`` then shows every pulse a device took.
COUNTED = {"endurance_pulses": 1e9, "endurance_dtod": 0.0}


def poly_us(coeffs, x):
    """``c0 + c1 x + c2 x^2 + ...`` floored at 0 (a verify-error law, microsiemens)."""
    return np.maximum(sum(c * np.asarray(x, np.float64) ** m for m, c in enumerate(coeffs)), 0.0)


def pick(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """From a per-device array (2, rows, cols), device ``k`` (rows, cols) of each pair."""
    return np.take_along_axis(np.asarray(a), k[None], axis=0)[0]


def drifted(L, clock: float, t0: float) -> np.ndarray:
    """Each device's conductance at ``clock`` (float64 (2, rows, cols)): g ((t - t_prog + t0) / t0) ** -nu."""
    return L.g.astype(np.float64) * ((clock - L.t_prog + t0) / t0) ** (-L.nu.astype(np.float64))


def pulses_to(g_from, g_to, g_sat, step, max_n=1000):
    """Pulses of size ``step`` a soft-bounded device needs from ``g_from`` up to ``g_to`` (at least 1):
    the count the spec documents for program-and-verify."""
    a = np.minimum(step / g_sat, 0.999)
    top = np.minimum(g_to, 0.999 * g_sat)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.log((g_sat - top) / (g_sat - g_from)) / np.log1p(-a)
    return np.where(top <= g_from, 1, np.clip(np.ceil(n), 1, max_n))


def pcm_read_sigma(g_prog, g_now, age, spec) -> np.ndarray:
    """IBM's 1/f read noise of a device (normalized units; g_min = 0), as ``ReadNoiseSpec`` documents:
    G(t) Q_s sqrt(ln((t + t_read) / (2 t_read))) with t = age + t0 and
    Q_s = min(q_s / max(g_prog ** q_exponent, q_floor), q_max)."""
    r = spec.read_noise
    q = np.minimum(r.q_s / np.maximum(np.asarray(g_prog, np.float64) ** r.q_exponent, r.q_floor), r.q_max)
    t = age + spec.drift.t0_s
    return np.where(g_now > 0, g_now * q * np.sqrt(np.log((t + r.t_read_s) / (2 * r.t_read_s))), 0.0)


def assert_standard_normal(z: np.ndarray, what: str) -> None:
    """``z`` looks like unit Irwin-Hall normals: mean within 5 SE (1 / sqrt(n)), std within 5 SE
    (1 / sqrt(2 n); the Irwin-Hall's lighter tails make the true SE smaller), all |z| <= 3.47."""
    n = z.size
    assert abs(z.mean()) < 5 / math.sqrt(n), f"{what}: mean {z.mean():.4f} over {n}"
    assert abs(z.std(ddof=1) - 1.0) < 5 / math.sqrt(2 * n), f"{what}: std {z.std(ddof=1):.4f} over {n}"
    assert np.abs(z).max() <= IH_BOUND, f"{what}: max |z| {np.abs(z).max():.3f}"


def assert_reset_level(g: np.ndarray, what: str) -> None:
    """``g`` (normalized) is distributed as pcm's RESET state, max(N(0, 0.26348 / 25), 0).

    For a unit normal Z, max(Z, 0) has mean 1 / sqrt(2 pi) = 0.3989, std sqrt(1/2 - 1/(2 pi))
    = 0.5838 and P(0) = 1/2 (the Irwin-Hall draws give 0.4041 and 0.5802: 1.3 % and 0.6 %
    off, well inside the tolerances below).  Mean within 5 SE (SE = 0.58 sigma / sqrt(n),
    about 1 % of the mean at n = 20,000), std within 5 SE (1 / sqrt(n) relative: the half-normal's
    kurtosis is higher than a normal's), zeros within 5 binomial SE, none beyond 3.47 sigma.
    """
    n = g.size
    s = PCM_RESET_STD
    mean, std = s / math.sqrt(2 * math.pi), s * math.sqrt(0.5 - 1 / (2 * math.pi))
    g = g.astype(np.float64)
    assert abs(g.mean() - mean) < 5 * std / math.sqrt(n), f"{what}: mean {g.mean():.5f}, want {mean:.5f}"
    assert abs(g.std() / std - 1.0) < 5 / math.sqrt(n), f"{what}: std {g.std():.5f}, want {std:.5f}"
    assert abs((g == 0).mean() - 0.5) < 5 * 0.5 / math.sqrt(n), f"{what}: {(g == 0).mean():.4f} at 0"
    assert g.min() >= 0 and g.max() <= IH_BOUND * s, what


# -- mapping ---------------------------------------------------------------------------------------
def test_pcm_maps_one_device_per_sign():
    spec = transparent("pcm")
    chip = devices.make_chip(spec, (199, 200), seed=1)
    w_max = chip.info.weight_range[0]
    rng = np.random.default_rng(1)
    shape = chip.info.weight_shapes[0]
    u = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.05, 0.5, shape)  # weight / w_max
    chip.program_verify(0, (u * w_max).astype(np.float32))
    L = devices.inspect(chip).layers[0]
    g_max = spec.conductance.g_max_us
    sigma = poly_us(PCM_PROG_US, np.abs(u)) / g_max  # normalized
    # Every target lies 3.47 sigma below its device's saturation level: no clipping at g_sat.
    assert (np.abs(u) + IH_BOUND * sigma < L.g_sat.min(axis=0)).all()
    for sign, k in ((1.0, 0), (-1.0, 1)):
        mine = np.sign(u) == sign
        assert mine.sum() > 19_000
        # The device of the weight's sign holds |w| / w_max within the verify error ...
        assert_standard_normal((L.g[k][mine] - np.abs(u[mine])) / sigma[mine], f"device {k} of w {sign:+}")
        # ... and its partner sits at the RESET level.  (A common-mode split, 0.5 -+ |u| / 2,
        # or a partner left where fabrication put it, would fail here.)
        assert_reset_level(L.g[1 - k][mine], f"device {1 - k} of w {sign:+}")


def test_rram_splits_a_weight_around_its_common_mode():
    spec = transparent("rram")
    c, p = spec.conductance, spec.programming
    chip = devices.make_chip(spec, (199, 200), seed=2)
    w_max = chip.info.weight_range[0]
    rng = np.random.default_rng(2)
    shape = chip.info.weight_shapes[0]
    u = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 0.6, shape)
    chip.program_verify(0, (u * w_max).astype(np.float32))
    L = devices.inspect(chip).layers[0]
    span = c.g_max_us - c.g_min_us
    want = np.stack([c.init_common_mode + u / 2, c.init_common_mode - u / 2])
    sigma = poly_us(p.verify_error_us, (c.g_min_us + want * span) / c.g_max_us) / span
    ok = want + IH_BOUND * sigma < L.g_sat  # not clipped at the device's saturation level
    assert ok.sum() > 60_000
    assert_standard_normal((L.g[ok] - want[ok]) / sigma[ok], "rram pair around 0.5")
    # The one-per-sign mapping would put the partner near 0 (want - 0.5 + |u| / 2 below).
    assert np.median(L.g.min(axis=0)) > 0.3


# -- SET-only programming and refresh -----------------------------------------------------------------
@pytest.mark.parametrize("drift", [False, True])
def test_pcm_devices_only_grow_between_refreshes(drift):
    # A request moves exactly one device of the pair up: g+ for a positive request, g- for a
    # negative one.  Pulse noise is off here: pcm's cycle-to-cycle spread (0.6 of a step per
    # pulse, unclipped) lets a single SET pulse lower a device (test_set_pulse_noise_never_lowers).
    # With drift a request starts from the drifted conductance, so the new as-programmed value
    # is compared with the drifted one (the old as-programmed value may be higher).
    spec = devices.variant(transparent("pcm"), programming={"pulse_std": 0.0}, faults=COUNTED,
                           drift={"enabled": drift})
    chip = devices.make_chip(spec, (63, 64), seed=3)
    rng = np.random.default_rng(3)
    shape = chip.info.weight_shapes[0]
    w_max, step = chip.info.weight_range[0], chip.info.pulse_step[0]
    u = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 0.9, shape)  # some pairs start due for a refresh
    chip.program_verify(0, (u * w_max).astype(np.float32))
    refreshed_total = plain_total = 0
    for _ in range(8):
        chip.wait(float(rng.uniform(1.0, 300.0)))
        n = rng.integers(0, 33, shape) * (rng.random(shape) < 0.8)
        sign = rng.choice([-1.0, 1.0], shape)
        st0 = devices.inspect(chip)
        before = st0.layers[0]
        pulses0, reads0 = chip.ledger.counts["pulses"], chip.ledger.counts.get("verify_reads", 0)
        chip.program(0, (sign * n * step).astype(np.float32))
        after = devices.inspect(chip).layers[0]
        k = np.where(sign > 0, 0, 1)
        g_now = drifted(before, st0.clock_s, spec.drift.t0_s)
        g_k, g_sat_k = pick(g_now, k), pick(before.g_sat, k).astype(np.float64)
        asked = n > 0
        # The refresh rule, decided on the drifted conductance of the device to raise (pairs
        # within float rounding of the threshold are left out).
        due = asked & (g_k >= spec.programming.refresh_at * g_sat_k)
        clear = np.abs(g_k - spec.programming.refresh_at * g_sat_k) > 1e-6
        # A refresh RESETs both devices: both get a new programming time.
        touched = after.t_prog != before.t_prog
        np.testing.assert_array_equal((touched[0] & touched[1])[clear], due[clear])
        plain = asked & ~due & clear
        # Pairs without a request are untouched.
        for name in ("g", "t_prog", "nu", "pulses_left"):
            np.testing.assert_array_equal(getattr(after, name)[:, ~asked], getattr(before, name)[:, ~asked])
        # Between refreshes: the raised device grows (a negative request raises g-) ...
        assert (pick(after.g, k)[plain] > g_k[plain]).all()
        if not drift:  # as-programmed conductances never decrease
            assert (pick(after.g, k)[plain] >= pick(before.g, k)[plain]).all()
        # ... by exactly the requested pulses; its partner is left alone.
        spent = before.pulses_left - after.pulses_left
        np.testing.assert_array_equal(pick(spent, k)[plain], n[plain])
        for name in ("g", "t_prog", "nu"):
            np.testing.assert_array_equal(pick(getattr(after, name), 1 - k)[plain],
                                          pick(getattr(before, name), 1 - k)[plain], err_msg=name)
        np.testing.assert_array_equal(pick(spent, 1 - k)[plain], 0)
        w0, w1 = before.weights.astype(np.float64), after.weights.astype(np.float64)
        assert (np.sign(w1 - w0)[plain] == sign[plain]).all()
        # Every pulse is counted; refreshes cost verify reads.
        assert chip.ledger.counts["pulses"] - pulses0 == spent.sum()
        reads = chip.ledger.counts.get("verify_reads", 0) - reads0
        assert reads == (touched[0] & touched[1]).sum() * (1 + spec.programming.verify_reads)
        refreshed_total += int(due.sum())
        plain_total += int(plain.sum())
    assert refreshed_total >= 100 and plain_total >= 10_000  # both paths are exercised


def test_set_pulse_noise_never_lowers_a_set_only_device():
    # ProgrammingSpec: a set_only device "only grows by partial-SET pulses".  With pcm's pulse
    # noise a one-pulse step is step (1 - g / g_sat) (1 + 0.6 xi), negative for xi < -1.67.
    spec = devices.variant(transparent("pcm"), drift={"enabled": False})
    chip = devices.make_chip(spec, (63, 64), seed=4)
    rng = np.random.default_rng(4)
    shape = chip.info.weight_shapes[0]
    u = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.05, 0.5, shape)
    chip.program_verify(0, (u * chip.info.weight_range[0]).astype(np.float32))
    before = devices.inspect(chip).layers[0]
    chip.program(0, (np.sign(u) * chip.info.pulse_step[0]).astype(np.float32))
    after = devices.inspect(chip).layers[0]
    k = np.where(u > 0, 0, 1)
    assert (pick(after.g, k) >= pick(before.g, k)).all()


def test_refresh_writes_the_weight_back_on_one_device():
    # Pairs whose device holds a large weight (>= refresh_at of its saturation level) get one
    # more SET pulse on that device: the chip refreshes the pair first.  Pulse noise is off so
    # that the value the refresh wrote can be recovered from the device after its one pulse.
    # The threshold is lowered to 0.5 so that weights written back stay clear of g_sat (no
    # clipping); the preset's 0.75 is checked in test_pcm_devices_only_grow_between_refreshes.
    spec = devices.variant(transparent("pcm"), programming={"pulse_std": 0.0, "refresh_at": 0.5}, faults=COUNTED)
    p, t0 = spec.programming, spec.drift.t0_s
    chip = devices.make_chip(spec, (127, 128), seed=5)
    rng = np.random.default_rng(5)
    shape = chip.info.weight_shapes[0]
    w_max, step = chip.info.weight_range[0], chip.info.pulse_step[0]
    sign = rng.choice([-1.0, 1.0], shape)
    k = np.where(sign > 0, 0, 1)
    g_sat = pick(devices.inspect(chip).layers[0].g_sat, k).astype(np.float64)
    high = rng.random(shape) < 0.5
    frac = np.where(high, rng.uniform(0.55, 0.65, shape), rng.uniform(0.1, 0.35, shape))
    chip.program_verify(0, (sign * frac * g_sat * w_max).astype(np.float32))
    chip.wait(10.0)
    st0 = devices.inspect(chip)
    before = st0.layers[0]
    pulses0, reads0 = chip.ledger.counts["pulses"], chip.ledger.counts["verify_reads"]
    chip.program(0, (sign * step).astype(np.float32))  # one SET pulse on the device of each weight
    after = devices.inspect(chip).layers[0]

    g_now = drifted(before, st0.clock_s, t0)
    due = pick(g_now, k) >= p.refresh_at * g_sat
    touched = after.t_prog != before.t_prog
    clear = np.abs(pick(g_now, k) - p.refresh_at * g_sat) > 1e-6  # not within rounding of the threshold
    np.testing.assert_array_equal((touched[0] & touched[1])[clear], due[clear])
    due = touched[0] & touched[1]
    assert 6_000 < due.sum() < 9_000 and (due <= high).all()
    spent = before.pulses_left - after.pulses_left
    # The ledger: two RESETs, the verify SET pulses and the requested pulse per refreshed pair,
    # one pulse per other pair; one read of the weight plus verify_reads per refresh.
    assert chip.ledger.counts["pulses"] - pulses0 == spent.sum()
    assert chip.ledger.counts["verify_reads"] - reads0 == due.sum() * (1 + p.verify_reads)
    np.testing.assert_array_equal(pick(spent, 1 - k)[due], 1)
    np.testing.assert_array_equal(pick(spent, k)[~due], 1)
    np.testing.assert_array_equal(pick(spent, 1 - k)[~due], 0)
    # The partner of the weight's device is RESET ...
    assert_reset_level(pick(after.g, 1 - k)[due], "partner after refresh")

    # ... and the weight is written back on its own device.  Undo the one soft-bounded pulse:
    # g_after = g_sat - (g_sat - g_written) (1 - a) with a = step_up / g_sat.
    s_up = pick(after.step_up, k).astype(np.float64)
    a = np.minimum(s_up / g_sat, 0.999)
    written = g_sat - (g_sat - pick(after.g, k).astype(np.float64)) / (1 - a)
    w_before = np.abs(before.weights.astype(np.float64)) / w_max  # drifted g+ - g- when the pair was read
    age = st0.clock_s - before.t_prog
    s_read = np.hypot(pcm_read_sigma(before.g[0], g_now[0], age[0], spec),
                      pcm_read_sigma(before.g[1], g_now[1], age[1], spec))
    s_verify = poly_us(PCM_PROG_US, w_before) / spec.conductance.g_max_us
    # Targets well inside the device's range (no clipping at g_sat).
    ok = due & (w_before + IH_BOUND * (s_read + s_verify) < g_sat)
    assert ok.sum() > 2_000
    # The written weight is the weight read (with read noise) plus the verify error.
    z = (written - w_before)[ok] / np.hypot(s_read, s_verify)[ok]
    assert_standard_normal(z, "weight written back by the refresh")
    # The read noise is part of it: the verify error alone is too narrow (z's std ~1.3).
    assert ((written - w_before)[ok] / s_verify[ok]).std() > 1.0 + 10 / math.sqrt(2 * ok.sum())
    # Verify SET pulses: from the RESET level up to the weight read, within its noise bounds.
    m = pick(spent, k)[ok] - 2  # minus the RESET and the requested pulse
    reach = IH_BOUND * s_read[ok]
    lo = pulses_to(IH_BOUND * PCM_RESET_STD, w_before[ok] - reach, g_sat[ok], s_up[ok])
    hi = pulses_to(0.0, w_before[ok] + reach, g_sat[ok], s_up[ok])
    assert ((m >= lo) & (m <= hi)).all()


@pytest.mark.parametrize("spec", [
    transparent("rram"),
    transparent(devices.variant("pcm", programming={"direction": "both"}, conductance={"mapping": "common_mode"})),
], ids=["rram", "pcm-bidirectional"])
def test_bidirectional_devices_are_lowered_gradually(spec):
    # direction "both": a request goes to the device of the pair with more room in the needed
    # direction; a negative request lowers g+ when g+ has more room down than g- has up.
    p = spec.programming
    chip = devices.make_chip(spec, (127, 128), seed=6)
    rng = np.random.default_rng(6)
    shape = chip.info.weight_shapes[0]
    u = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.0, 0.6, shape)
    chip.program_verify(0, (u * chip.info.weight_range[0]).astype(np.float32))
    chip.wait(10.0)
    st0 = devices.inspect(chip)
    before = st0.layers[0]
    n = 4
    chip.program(0, np.full(shape, -n * chip.info.pulse_step[0], np.float32))
    after = devices.inspect(chip).layers[0]
    g_now = drifted(before, st0.clock_s, spec.drift.t0_s)
    room_up = before.g_sat[1] - g_now[1]
    room_down = g_now[0]
    clear = np.abs(room_up - room_down) > 1e-5  # leave out pairs within rounding of a tie
    assert clear.mean() > 0.99
    down = clear & (room_down > room_up)
    up = clear & (room_down < room_up)
    assert down.sum() > 2_000 and up.sum() > 2_000
    # Lowered devices: the closed-form soft-bounded path of n down pulses, g (1 - a)^n with
    # a = step_down / g_sat, within the summed pulse noise (<= 3.47 sd); the partner untouched.
    g, gs = g_now[0][down], before.g_sat[0][down].astype(np.float64)
    a = before.step_down[0][down] / gs
    keep = (1 - a) ** n
    sd = p.pulse_std * before.step_down[0][down] * (g / gs) * np.sqrt((1 - keep**2) / (a * (2 - a)))
    new = after.g[0][down].astype(np.float64)
    assert (new < g).all()
    assert (np.abs(new - g * keep) <= IH_BOUND * sd + 1e-6).all()
    np.testing.assert_array_equal(after.g[1][down], before.g[1][down])
    # The others raise g- and leave g+ alone.
    assert (after.g[1][up] > g_now[1][up]).all()
    np.testing.assert_array_equal(after.g[0][up], before.g[0][up])


# -- drift exponents --------------------------------------------------------------------------------
def _exponents_of_two_programmings(redraw: bool, u: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    spec = devices.variant(transparent("pcm"), drift={"nu_redraw": redraw})
    chip = devices.make_chip(spec, (199, 200), seed=seed)
    W = (u * chip.info.weight_range[0]).astype(np.float32)
    chip.program_verify(0, W)
    first = devices.inspect(chip).layers[0]
    chip.wait(60.0)
    chip.program_verify(0, W)
    second = devices.inspect(chip).layers[0]
    assert (second.t_prog > first.t_prog).all()  # every device was programmed again
    return first.nu[0].astype(np.float64), second.nu[0].astype(np.float64)


def test_drift_exponent_is_redrawn_at_each_programming():
    # Two conductances of pcm's drift laws: at 2.5 uS (g = 0.1) mu = 0.060 and sigma = 0.023
    # vary with g; from g >= 0.33 both are clipped flat (mu 0.049, sigma 0.008, never 0).
    # Each device gets the same target twice; the two verify errors are independent, so with
    # fresh draws the two exponents are independent: r ~ 0 with SE 1 / sqrt(n); allow 5 SE.
    cols = 100
    u = np.where(np.arange(200) < cols, 0.1, 0.5)[None].repeat(200, axis=0)
    n_each = 200 * cols
    assert n_each >= 20_000
    a, b = _exponents_of_two_programmings(True, u, seed=7)
    for sel in (u == 0.1, u == 0.5):
        r = np.corrcoef(a[sel], b[sel])[0, 1]
        assert abs(r) < 5 / math.sqrt(n_each), r
    # One draw for life: where both laws are flat the exponent is the same bit for bit; at
    # 2.5 uS it follows the programmed g (verify error 0.45 uS, 18 %: ln g moves mu and sigma by
    # ~0.003 against a spread of 0.023, r ~ 0.98).
    a, b = _exponents_of_two_programmings(False, u, seed=7)
    np.testing.assert_array_equal(a[u == 0.5], b[u == 0.5])
    assert np.corrcoef(a[u == 0.1], b[u == 0.1])[0, 1] > 0.9


# -- program-and-verify -----------------------------------------------------------------------------
@pytest.mark.parametrize("g_us", [2.5, 20.0])
def test_pcm_verify_error_follows_sigma_prog(g_us):
    spec = transparent("pcm")
    chip = devices.make_chip(spec, (239, 240), seed=8)
    g_max = spec.conductance.g_max_us
    W = np.full(chip.info.weight_shapes[0], g_us / g_max * chip.info.weight_range[0], np.float32)
    chip.program_verify(0, W)
    L = devices.inspect(chip).layers[0]
    sigma = float(poly_us(PCM_PROG_US, g_us / g_max))  # 0.448 uS at 2.5, 1.085 uS at 20
    ok = g_us / g_max + IH_BOUND * sigma / g_max < L.g_sat[0]  # no clipping at g_sat
    err = L.g[0][ok].astype(np.float64) * g_max - g_us
    n = err.size
    assert n >= 20_000
    # std within 5 SE (1 / sqrt(2 n) relative, 2.4 % at n = 20,000: tighter than IBM's 10 %);
    # unbiased within 5 SE.
    assert abs(err.std(ddof=1) / sigma - 1.0) < 5 / math.sqrt(2 * n)
    assert abs(err.mean()) < 5 * sigma / math.sqrt(n)


def test_rram_verify_error_follows_its_own_law():
    # rram's pair of a weight u w_max sits at 0.5 +- u / 2: u = 0.5 programs its devices to
    # g = 0.75 and 0.25 (31 and 13 uS of 4..40 uS).
    spec = transparent("rram")
    c = spec.conductance
    span = c.g_max_us - c.g_min_us
    chip = devices.make_chip(spec, (199, 200), seed=9)
    chip.program_verify(0, np.full(chip.info.weight_shapes[0], 0.5 * chip.info.weight_range[0], np.float32))
    L = devices.inspect(chip).layers[0]
    for k, g in ((0, 0.75), (1, 0.25)):
        G = c.g_min_us + g * span
        sigma = float(poly_us(spec.programming.verify_error_us, G / c.g_max_us))  # 1.50 and 2.30 uS
        ok = g + IH_BOUND * sigma / span < L.g_sat[k]
        err = L.g[k][ok].astype(np.float64) * span + c.g_min_us - G
        n = err.size
        assert n >= 20_000
        assert abs(err.std(ddof=1) / sigma - 1.0) < 5 / math.sqrt(2 * n), (G, err.std(ddof=1), sigma)
        assert abs(err.mean()) < 5 * sigma / math.sqrt(n)
        # The check can fail: pcm's law (0.90 and 0.97 uS here) is off by far more.
        assert abs(err.std(ddof=1) / float(poly_us(PCM_PROG_US, G / 25.0)) - 1.0) > 0.5


@pytest.mark.parametrize("preset", ["pcm", "rram"])
def test_program_verify_charges_pulses_and_verify_reads(preset):
    spec = devices.PRESETS[preset]
    e, p, c = spec.energy, spec.programming, spec.conductance
    chip = devices.make_chip(preset, (40, 30), seed=10)
    rng = np.random.default_rng(10)
    shape = chip.info.weight_shapes[0]
    u = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 0.5, shape)
    before = devices.inspect(chip).layers[0]
    e0 = chip.ledger.energy_j["program"]
    chip.program_verify(0, (u * chip.info.weight_range[0]).astype(np.float32))
    after = devices.inspect(chip).layers[0]
    works = before.stuck == 0
    spent = before.pulses_left - after.pulses_left
    assert (spent[~works] == 0).all()
    if p.direction == "set_only":
        # Every working device is RESET (one pulse); the device of the weight's sign is then
        # SET and verified.
        k = np.where(u > 0, 0, 1)
        verified = pick(works, k)
        np.testing.assert_array_equal(pick(spent, 1 - k)[pick(works, 1 - k)], 1)
        assert (pick(spent, k)[verified] >= 2).all()
        reads = p.verify_reads * int(verified.sum())
    else:  # both devices of a pair are moved and verified
        assert (spent[works] >= 1).all()
        reads = p.verify_reads * int(works.sum())
    pulses = int(spent.sum())
    assert chip.ledger.counts["pulses"] == pulses
    assert chip.ledger.counts["verify_reads"] == reads
    # Each verify read is one ADC conversion and one cell read (at the mid-range conductance).
    per_read = e.adc_fom_j_per_step * 2**spec.adc.bits + e.v_read**2 * 0.5 * (c.g_min_us + c.g_max_us) * 1e-6 \
        * e.t_read_s
    assert chip.ledger.energy_j["program"] - e0 == pytest.approx(pulses * e.pulse_j + reads * per_read, rel=1e-9)
    assert chip.ledger.counts["program_calls"] == 1


def test_ideal_program_verify_sets_the_weights_exactly():
    chip = devices.make_chip("ideal", (20, 15), seed=11)
    rng = np.random.default_rng(11)
    W = rng.normal(0.0, 0.5, chip.info.weight_shapes[0]).astype(np.float32)
    chip.program_verify(0, W)
    np.testing.assert_array_equal(devices.inspect(chip).layers[0].weights, W, strict=True)
    x = rng.normal(0.0, 1.0, (9, 20)).astype(np.float32)
    want = np.maximum(x @ W[:-1] + np.float32(chip.info.bias_level) * W[-1], np.float32(0))
    np.testing.assert_array_equal(chip.read(0, x), want, strict=True)
    assert chip.ledger.counts.get("verify_reads", 0) == 0


# -- IR drop ---------------------------------------------------------------------------------------
def test_ir_drop_lowers_outputs_as_the_wire_model_predicts():
    # The same devices (transparent pcm, same seed: identical fabrication and programming) on
    # ideal wires, on one 256 x 256 array of 0.35 ohm segments, and cut into 64 x 64 tiles.
    base = transparent("pcm")
    wires = {"none": {"segment_ohm": 0.0}, "256": {"segment_ohm": 0.35, "tile_rows": 256, "tile_cols": 256},
             "64": {"segment_ohm": 0.35, "tile_rows": 64, "tile_cols": 64}}
    rng = np.random.default_rng(12)
    n_in, n_out = 255, 256
    chips = {}
    for name, w in wires.items():
        chip = devices.make_chip(devices.variant(base, wires=w), (n_in, n_out), seed=12)
        if not chips:
            W = (rng.uniform(0.2, 0.6, chip.info.weight_shapes[0]) * chip.info.weight_range[0]).astype(np.float32)
        chip.program_verify(0, W)
        chip.wait(3600.0)
        chips[name] = chip
    states = {name: devices.inspect(chip) for name, chip in chips.items()}
    ref = states["none"].layers[0]
    for name in ("256", "64"):  # the wires change only what a read sees
        for field in ("g", "nu", "t_prog"):
            np.testing.assert_array_equal(getattr(states[name].layers[0], field), getattr(ref, field))
    clock = states["none"].clock_s
    assert all(s.clock_s == clock for s in states.values())

    # The chip's effective weights are the wire model applied to each device's drifted
    # conductance, each device of a pair on its own array (float32 weights: atol 1e-6 w_max).
    span = (base.conductance.g_max_us - base.conductance.g_min_us) * 1e-6
    w_max = ref.w_max
    G_now = drifted(ref, clock, base.drift.t0_s).astype(np.float32).astype(np.float64) * span

    def predicted(G, tile):
        return (ir_drop_weights(G[0], 0.35, tile, tile) - ir_drop_weights(G[1], 0.35, tile, tile)) * (w_max / span)

    for name, tile in (("256", 256), ("64", 64)):
        np.testing.assert_allclose(states[name].layers[0].weights, predicted(G_now, tile), rtol=0, atol=1e-6 * w_max)
    # The check can fail: the wrong tile, or the as-programmed (undrifted) conductances, miss by far more.
    assert np.abs(states["256"].layers[0].weights - predicted(G_now, 64)).max() > 1e-2 * w_max
    G_prog = ref.g.astype(np.float64) * span
    assert np.abs(states["256"].layers[0].weights - predicted(G_prog, 256)).max() > 1e-2 * w_max

    # Reads: all-positive weights and inputs, so wires can only lower the outputs; by
    # x @ (W_ideal - W_wires) on average over 8 reads, within 5 SE of the read noise.
    x = rng.uniform(0.0, 1.0, (40, n_in)).astype(np.float32)
    reads = {name: np.stack([chip.read(0, x) for _ in range(8)]).astype(np.float64) for name, chip in chips.items()}
    y = {name: r.mean(axis=0) for name, r in reads.items()}
    se = {name: r.std(axis=0, ddof=1) / math.sqrt(r.shape[0]) for name, r in reads.items()}
    W0 = ref.weights.astype(np.float64)
    drop = {}
    for name in ("256", "64"):
        dW = W0 - states[name].layers[0].weights.astype(np.float64)
        want = x.astype(np.float64) @ dW[:-1] + chips[name].info.bias_level * dW[-1]
        got = y["none"] - y[name]
        assert (got > 0).all()
        assert (np.abs(got - want) <= 5 * np.hypot(se["none"], se[name]) + 1e-5).all()
        drop[name] = got.sum() / y["none"].sum()
    # Smaller tiles, shorter wires: a 64 x 64 tile loses far less than one 256 x 256 array
    # (0.35 ohm: about 12 % and under 1 % of the output here).
    assert (y["64"] > y["256"]).all()
    assert drop["256"] > 0.05 and drop["64"] < drop["256"] / 4
