"""In-array updates by pulse coincidence (``mortal.ff.analog``, policy ``analog``).

The batched coincidence sampler is checked against pulse trains simulated slot by slot: each
cell's mean and variance of the net count agree within three standard errors over many draws,
in the three regimes of the sampler (small counts, binomial mixtures, normal); the same check
fails for a sampler with a wrong variance.  Update management, refusals and the policy on
chips follow.
"""

from __future__ import annotations

import numpy as np
import pytest

import devices
from mortal.data import load_mnist_mini
from mortal.errors import InputError
from mortal.ff import CHIP_FILE, FFConfig, FFLearner, latest_checkpoint
from mortal.ff import _kernels as K
from mortal.ff.analog import Coincidences, apply_analog_update, coincidences, pulse_probabilities, sampler_threads
from mortal.updates import check_pulse_chip


def _draws(px, pd, bl, n, exact, seed):
    rng = np.random.default_rng(seed)
    return np.stack([coincidences(px, pd, bl, rng, exact=exact).net for _ in range(n)]).astype(np.float64)


def _moments(draws):
    """Per-cell mean and variance with their standard errors."""
    n = draws.shape[0]
    mean = draws.mean(axis=0)
    c = draws - mean
    var = (c ** 2).sum(axis=0) / (n - 1)
    m4 = (c ** 4).mean(axis=0)
    return mean, np.sqrt(var / n), var, np.sqrt(np.maximum(m4 - var ** 2, 0.0) / n)


def _disagreements(a, b):
    """Cells whose means or variances differ by more than three standard errors of the difference."""
    ma, sea, va, sva = _moments(a)
    mb, seb, vb, svb = _moments(b)
    bad_mean = np.abs(ma - mb) > 3.0 * np.sqrt(sea ** 2 + seb ** 2)
    bad_var = np.abs(va - vb) > 3.0 * np.sqrt(sva ** 2 + svb ** 2)
    return int(bad_mean.sum()), int(bad_var.sum())


def _probs(seed, batch, rows, cols, lo, hi):
    r = np.random.default_rng(seed)
    sign = lambda shape: np.where(r.random(shape) < 0.5, -1.0, 1.0)  # noqa: E731
    px = (sign((batch, rows)) * r.uniform(lo, hi, (batch, rows))).astype(np.float32)
    pd = (sign((batch, cols)) * r.uniform(lo, hi, (batch, cols))).astype(np.float32)
    return px, pd


# (name, batch, rows, cols, bit length, probability range): small counts (Poisson-like),
# binomial mixtures with large probabilities, and counts above NORMAL_ABOVE.  Sparse rows (the
# inputs of a real batch) change only which samples enter each cell's sums: the row kernel is
# checked on them exactly, against ``_count`` cell by cell, further below.
REGIMES = [("small", 6, 4, 3, 4, (0.02, 0.25)), ("mixture", 4, 4, 3, 6, (0.3, 0.95)),
           ("normal", 3, 3, 3, 40, (0.7, 1.0))]


@pytest.mark.parametrize("name,batch,rows,cols,bl,span", REGIMES)
def test_batched_sampler_agrees_with_pulse_trains_in_mean_and_variance(name, batch, rows, cols, bl, span):
    px, pd = _probs(1, batch, rows, cols, *span)
    fast = _draws(px, pd, bl, 3000, False, 2)
    slow = _draws(px, pd, bl, 3000, True, 3)
    assert _disagreements(fast, slow) == (0, 0)
    # both against the exact moments of the Bernoulli sums
    q = np.abs(px)[:, :, None] * np.abs(pd)[:, None, :]
    s = np.sign(px)[:, :, None] * np.sign(pd)[:, None, :]
    mean, var = bl * (s * q).sum(axis=0), bl * (q * (1 - q)).sum(axis=0)
    for draws in (fast, slow):
        m, se, v, vse = _moments(draws)
        assert np.all(np.abs(m - mean) <= 3.0 * se)
        # the variance too, against its exact value: four standard errors (over the 66 cells of
        # the three regimes, some cell would exceed three by chance about one run in six)
        assert np.all(np.abs(v - var) <= 4.0 * vse)
    if name == "normal":
        assert (bl * (np.abs(q) * (s > 0)).sum(axis=0)).max() > K.NORMAL_ABOVE


def _oracle(px, pd, bl, key):
    """Each cell drawn by ``_count`` from its four moments, summed in sample order in float32 as
    the kernel sums them."""
    rows, cols = px.shape[1], pd.shape[1]
    net = np.zeros((rows, cols), np.int64)
    gross = 0
    h = 0.5 * bl
    for i in range(rows):
        s, a, q, qs = (np.zeros(cols, np.float32) for _ in range(4))
        for b in np.flatnonzero(px[:, i]):
            v, d = px[b, i], pd[b]
            av = np.float32(abs(v))
            s += v * d
            a += av * np.abs(d)
            qs += (v * av) * (d * np.abs(d))
            q += (v * v) * (d * d)
        for j in range(cols):
            m_pos, m_neg = h * (float(a[j]) + float(s[j])), h * (float(a[j]) - float(s[j]))
            k = (i * cols + j) * 4
            n_pos = K._count(m_pos, m_pos - h * (float(q[j]) + float(qs[j])), bl * px.shape[0], np.uint64(key),
                             np.uint64(k))
            n_neg = K._count(m_neg, m_neg - h * (float(q[j]) - float(qs[j])), bl * px.shape[0], np.uint64(key),
                             np.uint64(k + 2))
            net[i, j] = n_pos - n_neg
            gross += n_pos + n_neg
    return net, gross


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_the_row_kernel_draws_every_cell_as_count_does_from_its_moments(parts):
    """``coincidence_rows`` against ``_count`` called cell by cell: the zero test before the
    draws, the rows no sample drives, and the split of the rows into parts change no draw."""
    px, pd = _probs(3, 9, 4 * K.ROW_BLOCK + 5, 6, 0.0, 1.0)
    px[np.random.default_rng(8).random(px.shape) < 0.6] = 0.0
    px[:, K.ROW_BLOCK - 2:K.ROW_BLOCK + 3] = 0.0
    pd[:, 4] = 0.0
    px[0, 0], pd[0, 0] = 1.0, -1.0  # certain coincidences
    for bl, key in ((5, 11), (40, 12)):  # 40: some means above NORMAL_ABOVE
        want_net, want_gross = _oracle(px, pd, bl, key)
        rows = px.shape[1]
        ptr, sample, value = K.row_entries(px)
        net = np.full((rows, pd.shape[1]), -99, np.int32)  # every cell must be written
        row_gross = np.full(rows, -1, np.int64)
        for part in range(parts):
            K.coincidence_rows(part, parts, ptr, sample, value, pd, float(bl), bl * px.shape[0], np.uint64(key),
                               net, row_gross)
        assert np.array_equal(net, want_net) and int(row_gross.sum()) == want_gross
        assert want_gross > 0 and not net[K.ROW_BLOCK - 2:K.ROW_BLOCK + 3].any()


def test_count_in_the_poisson_limit():
    """``_count`` with the variance equal to the mean (every probability tiny) draws a Poisson
    count: its mean, variance and zero frequency."""
    mean, n = 2.5, 20000
    draws = np.array([K._count(mean, mean, 1000, np.uint64(21), np.uint64(4 * t)) for t in range(n)], np.float64)
    se = np.sqrt(mean / n)
    assert abs(draws.mean() - mean) < 4 * se
    assert abs(draws.var() - mean) < 4 * np.sqrt(2 * mean ** 2 / n + mean / n)
    assert abs((draws == 0).mean() - np.exp(-mean)) < 4 * np.sqrt(np.exp(-mean) / n)


def test_draws_do_not_depend_on_the_sampler_threads():
    """The batched sampler splits rows among BLAS's threads; every cell's draw is fixed by the
    key and the cell, and rows that no sample drives come out all zero."""
    from threadpoolctl import threadpool_limits

    px, pd = _probs(4, 12, 5 * K.ROW_BLOCK + 3, 17, 0.0, 0.9)
    px[:, 3:11] = 0.0  # rows no sample drives, across a block boundary
    pd[:, 5] = 0.0
    got = []
    for threads in (1, 2, 3):
        with threadpool_limits(threads):
            assert sampler_threads() == threads
            got.append(coincidences(px, pd, 6, np.random.default_rng(5)))
    assert got[0].net[3:11].any() == False and got[0].net[:, 5].any() == False  # noqa: E712
    assert got[0].net.any() and got[0].gross > 0
    for other in got[1:]:
        assert np.array_equal(other.net, got[0].net) and other.gross == got[0].gross


def test_the_agreement_check_fails_for_a_wrong_variance():
    """A sampler that takes the variance of each count equal to its mean (Poisson: the
    -BL sum p^2 term left out) is told apart from the pulse trains."""
    px, pd = _probs(1, 4, 4, 3, 0.3, 0.95)
    bl = 6
    slow = _draws(px, pd, bl, 3000, True, 3)
    rng = np.random.default_rng(2)
    ax, ad = np.abs(px).astype(np.float64), np.abs(pd).astype(np.float64)
    s, a = px.astype(np.float64).T @ pd, ax.T @ ad
    m_pos, m_neg = 0.5 * bl * (a + s), 0.5 * bl * (a - s)
    wrong = [rng.poisson(m_pos) - rng.poisson(m_neg) for _ in range(3000)]
    bad_mean, bad_var = _disagreements(np.array(wrong, np.float64), slow)
    assert bad_var >= 6 and bad_mean <= 1


def test_line_pulses_and_gross_counts_follow_the_trains():
    px, pd = _probs(4, 5, 6, 4, 0.1, 0.8)
    bl = 8
    rng = np.random.default_rng(0)
    got = [coincidences(px, pd, bl, rng, exact=e) for e in (False, True) for _ in range(400)]
    fast, slow = got[:400], got[400:]
    want_rows, want_cols = bl * np.abs(px).sum(), bl * np.abs(pd).sum()
    want_gross = bl * (np.abs(px).sum(axis=1) * np.abs(pd).sum(axis=1)).sum()
    for draws in (fast, slow):
        assert abs(np.mean([g.row_pulses for g in draws]) - want_rows) < 0.02 * want_rows
        assert abs(np.mean([g.col_pulses for g in draws]) - want_cols) < 0.02 * want_cols
        assert abs(np.mean([g.gross for g in draws]) - want_gross) < 0.02 * want_gross


def test_draws_are_fixed_by_the_generator():
    px, pd = _probs(5, 3, 5, 4, 0.1, 0.9)
    a = coincidences(px, pd, 5, np.random.default_rng(9))
    b = coincidences(px, pd, 5, np.random.default_rng(9))
    c = coincidences(px, pd, 5, np.random.default_rng(10))
    assert np.array_equal(a.net, b.net) and a.row_pulses == b.row_pulses
    assert not np.array_equal(a.net, c.net)


# -- update management ---------------------------------------------------------------------------
def test_update_management_maps_the_learning_rate_to_the_device_step_and_balances_the_sides():
    r = np.random.default_rng(0)
    x = r.uniform(0, 3, (5, 7)).astype(np.float32)
    d = r.normal(0, 0.2, (5, 4)).astype(np.float32)
    eta, bl, dw = 1e-4, 10, 3e-4
    px, pd, clipped = pulse_probabilities(x, d, eta, bl, dw)
    assert clipped == 0.0
    mean_change = bl * dw * (px.astype(np.float64).T @ pd)
    np.testing.assert_allclose(mean_change, eta * (x.astype(np.float64).T @ d), rtol=1e-5)
    np.testing.assert_allclose(np.abs(px).max(axis=1), np.abs(pd).max(axis=1), rtol=1e-5)
    assert np.all(np.sign(px) == np.sign(x)) and np.all(np.sign(pd) == np.sign(d))
    _, _, clipped = pulse_probabilities(x, d, 1.0, 1, dw)  # far beyond one coincidence per slot
    assert clipped > 0.0


def test_a_zero_sample_sends_nothing():
    x = np.zeros((2, 3), np.float32)
    x[1] = 1.0
    d = np.ones((2, 2), np.float32)
    px, pd, _ = pulse_probabilities(x, d, 1e-3, 4, 1e-3)
    assert not px[0].any() and not pd[0].any() and px[1].all()


@pytest.mark.parametrize("call,match", [
    (lambda x, d: pulse_probabilities(x, d, 1e-3, 0, 1e-3), "bit_length"),
    (lambda x, d: pulse_probabilities(x, d, 1e-3, -3, 1e-3), "bit_length"),
    (lambda x, d: pulse_probabilities(x, d, 1e-3, 2.5, 1e-3), "bit_length"),
    (lambda x, d: pulse_probabilities(x, d, -1e-3, 4, 1e-3), "eta"),
    (lambda x, d: pulse_probabilities(x, d, float("nan"), 4, 1e-3), "eta"),
    (lambda x, d: pulse_probabilities(x, d, 1e-3, 4, 0.0), "dw"),
    (lambda x, d: pulse_probabilities(x * np.nan, d, 1e-3, 4, 1e-3), "NaN"),
    (lambda x, d: pulse_probabilities(x, d[:1], 1e-3, 4, 1e-3), "same samples"),
    (lambda x, d: coincidences(x, d, 4, np.random.default_rng(0)), r"\[-1, 1\]"),
    (lambda x, d: coincidences(x * 0.1, d * 0.1, 0, np.random.default_rng(0)), "bit_length"),
    (lambda x, d: coincidences(x * 0.1, -np.inf * d, 3, np.random.default_rng(0)), "NaN or infinite"),
    (lambda x, d: coincidences(x * 0.1, d * 0.1, 3, 7), "Generator"),
])
def test_bad_settings_are_refused(call, match):
    x = np.full((2, 3), 2.0, np.float32)
    d = np.full((2, 2), 2.0, np.float32)
    with pytest.raises(InputError, match=match):
        call(x, d)


# -- on chips ------------------------------------------------------------------------------------
def test_analog_on_an_exact_chip_is_refused_before_anything_is_programmed():
    chip = devices.make_chip("ideal", (784, 20), seed=0)
    digest = chip.state_digest()
    d = load_mnist_mini()
    learner = FFLearner(FFConfig(policy="analog", epochs=1))
    with pytest.raises(InputError, match="pulse requests"):
        learner.fit(chip, d.train_images[:200], d.train_labels[:200], progress=False)
    assert chip.state_digest() == digest
    with pytest.raises(InputError, match="pulse_step"):
        check_pulse_chip(chip)


def test_bit_length_zero_is_refused_by_the_settings():
    with pytest.raises(ValueError, match="bit_length"):
        FFConfig(policy="analog", bit_length=0)


def test_the_net_count_reaches_the_chip_as_pulses_and_the_periphery_is_charged():
    chip = devices.make_chip("rram", (6, 4), seed=1)
    r = np.random.default_rng(0)
    x = np.abs(r.normal(size=(8, 7))).astype(np.float32)
    d = r.normal(size=(8, 4)).astype(np.float32)
    step = chip.info.pulse_step[0]
    got = apply_analog_update(chip, 0, x, d, 20 * step, 10, np.random.default_rng(1))
    assert isinstance(got, Coincidences) and got.gross > 0
    led = chip.ledger
    assert led.counts["pulses"] == int(np.abs(got.net).sum())
    e = chip.spec.energy
    assert led.energy_j["drivers"] == pytest.approx((got.row_pulses + got.col_pulses) * e.driver_pulse_j)
    # the update's time is counted once, by the programming of the net counts
    assert led.time_s["drivers"] == 0.0 and led.time_s["translators"] == 0.0
    assert led.total_time_s == pytest.approx(led.time_s["program"] + led.time_s["digital"] + led.time_s["array"]
                                             + led.time_s["adc"] + led.time_s["dac"] + led.time_s["neuron"])
    assert led.energy_j["translators"] == pytest.approx(8 * (7 + 4) * 10 * e.translator_bit_j)
    assert led.counts["translations"] == 8 * 11 and led.energy_j["digital"] > 0
    cancelled = got.gross - int(np.abs(got.net).sum())
    assert cancelled > 0 and led.counts["cancelled_pulses"] == cancelled
    assert led.energy_j["program"] == pytest.approx((led.counts["pulses"] + cancelled) * e.pulse_j)


def test_ledgers_without_in_array_updates_keep_their_categories():
    chip = devices.make_chip("pcm", (6, 4), seed=1)
    chip.program(0, np.full((7, 4), chip.info.pulse_step[0], np.float32))
    assert "drivers" not in chip.ledger.energy_j and "translators" not in chip.ledger.to_dict()["energy_j"]


def test_controller_precision_scales_the_digital_operation():
    fp32 = devices.make_chip("pcm", (6, 4), seed=1)
    int8 = devices.make_chip(devices.variant("pcm", energy={"controller_precision": "int8"}), (6, 4), seed=1)
    assert fp32.info.digital_op_energy_j == devices.get_preset("pcm").energy.digital_op_j
    assert int8.info.digital_op_energy_j == pytest.approx(2.3e-12 * 0.23 / 4.6)
    assert int8.ledger.digital_op_j == int8.info.digital_op_energy_j


@pytest.mark.parametrize("preset", ["pcm", "rram"])
def test_policy_analog_learns_on_chips_and_moves_the_energy_off_the_controller(preset):
    d = load_mnist_mini()
    x, y = d.train_images[:1000], d.train_labels[:1000]
    xt, yt = d.test_images[:300], d.test_labels[:300]
    figures = {}
    for policy in ("mixed", "analog"):
        chip = devices.make_chip(preset, (784, 60, 40), seed=11)
        # no momentum averages the array's updates: a smaller learning rate (chosen on these images)
        lr = 0.003 if policy == "analog" else 0.01
        learner = FFLearner(FFConfig(seed=3, epochs=2, policy=policy, bit_length=10, lr=lr, refit={"epochs": 0}))
        learner.fit(chip, x, y, eval_every=0, progress=False)
        err = learner.evaluate(chip, xt, yt, "softmax").errors["softmax"]
        led = chip.ledger
        figures[policy] = (err, led.energy_j["digital"], led.total_energy_j, led.counts["pulses"])
        if policy == "analog":
            assert led.energy_j["drivers"] > 0 and led.energy_j["translators"] > 0
            assert not learner.state.accumulators
            assert np.all(learner.state.smooth[0] == 0)  # no momentum in the array
    assert figures["analog"][0] < 0.7  # far better than chance (0.9) after 2 epochs of 1000 images
    assert figures["analog"][0] < figures["mixed"][0] + 0.1
    assert figures["analog"][1] < 0.5 * figures["mixed"][1]
    assert figures["analog"][3] > 0


def test_policy_analog_is_reproducible():
    d = load_mnist_mini()
    out = []
    for _ in range(2):
        chip = devices.make_chip("pcm", (784, 30), seed=2)
        learner = FFLearner(FFConfig(seed=5, epochs=1, policy="analog", bit_length=4, refit={"epochs": 0}))
        learner.fit(chip, d.train_images[:300], d.train_labels[:300], eval_every=0, progress=False)
        out.append(chip.state_digest())
    assert out[0] == out[1]


def test_controller_precision_moves_the_cost_of_mixed_and_not_its_learning():
    d = load_mnist_mini()
    runs = {}
    for precision in ("fp32", "int8"):
        spec = devices.variant("pcm", energy={"controller_precision": precision})
        chip = devices.make_chip(spec, (784, 30), seed=2)
        learner = FFLearner(FFConfig(seed=5, epochs=1, policy="mixed", refit={"epochs": 0}))
        learner.fit(chip, d.train_images[:300], d.train_labels[:300], eval_every=0, progress=False)
        runs[precision] = (devices.inspect(chip).layers[0].weights, chip.ledger)
    (w32, led32), (w8, led8) = runs["fp32"], runs["int8"]
    assert np.array_equal(w32, w8) and led32.counts == led8.counts
    assert led8.energy_j["digital"] == pytest.approx(led32.energy_j["digital"] * 0.23 / 4.6)
    assert led8.energy_j["program"] == led32.energy_j["program"]


def test_policy_analog_resumed_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    """The coincidence stream of epoch e is keyed by (seed, e): a run resumed at an epoch
    boundary draws what the uninterrupted run drew."""
    d = load_mnist_mini()
    x, y = d.train_images[:300], d.train_labels[:300]
    cfg = FFConfig(seed=5, epochs=2, policy="analog", bit_length=4, refit={"epochs": 0})
    chip_a = devices.make_chip("pcm", (784, 30), seed=2)
    FFLearner(cfg).fit(chip_a, x, y, eval_every=0, progress=False)
    chip_b = devices.make_chip("pcm", (784, 30), seed=2)
    FFLearner(cfg.changed(epochs=1)).fit(chip_b, x, y, eval_every=0, checkpoint_dir=tmp_path, progress=False)
    chip_c = devices.load_chip(latest_checkpoint(tmp_path) / CHIP_FILE)
    FFLearner(cfg).fit(chip_c, x, y, eval_every=0, resume=tmp_path, progress=False)
    np.testing.assert_array_equal(devices.inspect(chip_a).layers[0].weights, devices.inspect(chip_c).layers[0].weights)
    assert chip_a.ledger.counts == chip_c.ledger.counts


def test_a_chip_with_an_int8_controller_and_in_array_updates_is_saved_and_loaded(tmp_path):
    spec = devices.variant("rram", energy={"controller_precision": "int8"})
    chip = devices.make_chip(spec, (6, 4), seed=1)
    r = np.random.default_rng(0)
    apply_analog_update(chip, 0, np.abs(r.normal(size=(8, 7))).astype(np.float32),
                        r.normal(size=(8, 4)).astype(np.float32), 20 * chip.info.pulse_step[0], 10,
                        np.random.default_rng(1))
    chip.ledger.charge_digital(10)
    back = devices.load_chip(chip.save(tmp_path / "chip.npz"))
    assert back.ledger.to_dict() == chip.ledger.to_dict() and back.state_digest() == chip.state_digest()


def test_the_protocols_update_categories_are_the_device_ledgers():
    # mortal.chip names the in-array update categories for chips from anywhere; the devices'
    # ledger creates exactly those.
    from devices.energy import UPDATE_CATEGORIES as DEVICE_CATEGORIES
    from mortal.chip import UPDATE_CATEGORIES

    assert UPDATE_CATEGORIES == DEVICE_CATEGORIES


@pytest.mark.parametrize("layer,xs,ds,match", [(0, (8, 3), (8, 4), "shape"), (0, (8, 7), (8, 9), "shape"),
                                               (2, (8, 7), (8, 4), "layer"), (-1, (8, 7), (8, 4), "layer")])
def test_updates_of_the_wrong_shape_or_layer_are_refused_before_anything_is_drawn(layer, xs, ds, match):
    # all-zero samples would send no pulse at all: the shapes are checked first, not by program
    chip = devices.make_chip("rram", (6, 4), seed=1)
    rng = np.random.default_rng(1)
    before = rng.bit_generator.state
    with pytest.raises(InputError, match=match):
        apply_analog_update(chip, layer, np.zeros(xs, np.float32), np.zeros(ds, np.float32),
                            20 * chip.info.pulse_step[0], 10, rng)
    assert rng.bit_generator.state == before and chip.ledger.counts.get("driver_pulses", 0) == 0
