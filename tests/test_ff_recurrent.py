"""The recurrent (top-down) FF mode: its schedule against plain numpy, learning, resume, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

import devices
import reference_ff as ref
from mortal.data import load_mnist_mini
from mortal.errors import InputError
from mortal.ff import CHIP_FILE, FFConfig, FFLearner, latest_checkpoint
from mortal.ff import recurrent as R
from mortal.ff.measure import input_scales

K = 4  # classes of the small schedule tests
SIZES = (12, 9, 7, 5)


@pytest.fixture(scope="module")
def mnist():
    return load_mnist_mini()


def _cfg(**fields) -> FFConfig:
    return FFConfig(**{"defaults": "hinton", "mode": "recurrent", "policy": "direct", **fields})


def _chip(sizes=SIZES, label=K, preset="ideal", seed=4):
    return devices.make_chip(preset, sizes, seed, top_down=devices.top_down_layout(sizes, label))


def _bound(cfg, chip, n_data=SIZES[0], k=K):
    learner = FFLearner(cfg)
    return learner.bind(chip, learner.new_state(chip, n_data, k))


# -- the schedule against a plain-numpy reference on the ideal chip ------------------------------------------------
def _reference_run(chip, cfg, x, label, copies, n_steps):
    """States (float64, activity units) of steps 0..n_steps, written from the mode's description:
    step 0 bottom-up with top-down inputs 0; then each layer reads [normalized layer below (the
    image), normalized layer above (the label)] of the previous step and is damped."""
    Ws = [devices.inspect(chip).layers[i].weights.astype(np.float64) for i in range(len(SIZES) - 1)]
    level = chip.info.bias_level
    s = input_scales(chip, cfg.measurement.input_clip_rms)
    d = cfg.recurrent.damping
    n_layers = len(Ws)

    def read(i, sent):  # exact product plus the ReLU neuron, in activity units
        return np.maximum((s[i] * sent) @ Ws[i][:-1] + level * Ws[i][-1], 0.0) / s[i]

    def norm(a):
        return a / (ref.rms_rows(a) + ref.RMS_EPS)

    image = norm(x.astype(np.float64))
    onehot = np.zeros((x.shape[0], K * copies))
    for c in range(copies):
        onehot[:, K * c + label] = cfg.labels.strength * math.sqrt(K)
    states, below = [], image
    for i in range(n_layers):
        a = read(i, np.concatenate([below, np.zeros((x.shape[0], chip.info.top_down[i]))], axis=1))
        states.append(a)
        below = norm(a)
    out = [states]
    for _ in range(n_steps):
        prev = out[-1]
        new = []
        for i in range(n_layers):
            b = image if i == 0 else norm(prev[i - 1])
            t = onehot if i == n_layers - 1 else norm(prev[i + 1])
            new.append(d * prev[i] + (1 - d) * read(i, np.concatenate([b, t], axis=1)))
        out.append(new)
    return out


@pytest.mark.parametrize("damping, copies", [(0.3, 1), (0.0, 2), (0.8, 1)])
def test_schedule_matches_plain_numpy(damping, copies):
    cfg = _cfg(recurrent={"iterations": 6, "damping": damping, "score_from": 2, "score_to": 4})
    chip = _chip(label=K * copies)
    learner = _bound(cfg, chip)
    st = learner.state
    x = np.random.default_rng(1).random((6, SIZES[0])).astype(np.float32)
    start = R.bottom_up(cfg, st, chip, x)
    steps = R.iterate(cfg, st, chip, x, start, 2, 6)
    assert len(steps) == 6
    want = _reference_run(chip, cfg, x, 2, copies, 6)
    s = input_scales(chip, cfg.measurement.input_clip_rms)
    for t, step in enumerate([start] + steps):
        for i in range(len(SIZES) - 1):
            np.testing.assert_allclose(step.states[i] / s[i], want[t][i], rtol=2e-4, atol=1e-5)
            np.testing.assert_allclose(step.goodness[i], (want[t][i] ** 2).sum(axis=1), rtol=5e-4)
            assert step.inputs[i].shape == (6, chip.info.weight_shapes[i][0] - 1)
    # the states move from step to step (the top-down inputs matter) and the label reaches layer 0
    assert not np.allclose(steps[0].states[0], start.states[0])
    # another label: at step t it has come down to layer 3 - t only (synchronous steps)
    other = R.iterate(cfg, st, chip, x, start, 1, 3)
    for t, changed in ((0, [2]), (1, [1, 2]), (2, [0, 1, 2])):
        for i in range(3):
            assert np.array_equal(other[t].states[i], steps[t].states[i]) == (i not in changed), (t, i)


def test_scores_average_the_scored_steps_over_the_readout_layers():
    cfg = _cfg(recurrent={"iterations": 7, "score_from": 2, "score_to": 4})
    chip = _chip()
    learner = _bound(cfg, chip)
    st = learner.state
    assert st.readout_layers == [1, 2]
    x = np.random.default_rng(2).random((5, SIZES[0])).astype(np.float32)
    reads = chip.ledger.counts["reads"]
    got = learner.goodness_scores(chip, x)
    # one shared bottom-up pass, then score_to steps per label (steps after score_to are not run)
    assert chip.ledger.counts["reads"] - reads == 3 + K * 4 * 3
    want = _reference_run(chip, cfg, x, 0, 1, 4)  # label 0; the chip is not programmed between
    g0 = np.mean([sum(((want[t][i] ** 2).sum(axis=1)) for i in (1, 2)) for t in (2, 3, 4)], axis=0)
    np.testing.assert_allclose(got[:, 0], g0, rtol=5e-4)
    assert got.shape == (5, K) and not np.allclose(got[:, 0], got[:, 1])


def test_train_steps_choose_which_steps_update():
    assert R.train_step_numbers(_cfg()) == [3, 4, 5]
    assert R.train_step_numbers(_cfg(recurrent={"train_steps": "all"})) == list(range(1, 9))
    # a batch runs the bottom-up pass and max(train steps) steps for positives and negatives together
    for steps, reads in (("scored", 3 + 5 * 3), ("all", 3 + 8 * 3)):
        cfg = _cfg(recurrent={"train_steps": steps}, batch_size=4)
        chip = _chip()
        learner = _bound(cfg, chip)
        x = np.random.default_rng(3).random((4, SIZES[0])).astype(np.float32)
        from mortal.ff.targets import Targets, negative_sampler
        tg = Targets(np.array([0, 1, 2, 3]), K)
        before = chip.ledger.counts["reads"]
        w0 = devices.inspect(chip).layers[0].weights.copy()
        out = R.train_batch_recurrent(cfg, learner.state, chip, x, np.arange(4), tg, negative_sampler("own"), 1.0,
                                      np.random.default_rng(0))
        assert chip.ledger.counts["reads"] - before == reads
        assert out[3] == 4 and np.isfinite(out[:2]).all()
        assert not np.array_equal(devices.inspect(chip).layers[0].weights, w0)  # the top-down rows learn too
        assert not np.array_equal(devices.inspect(chip).layers[0].weights[SIZES[0]:-1], w0[SIZES[0]:-1])


def test_label_block():
    b = R.label_block(3, 2, 1.5, np.array([0, 2]), 2)
    hot = 1.5 * math.sqrt(3)
    np.testing.assert_allclose(b, [[hot, 0, 0, hot, 0, 0], [0, 0, hot, 0, 0, hot]], rtol=1e-6)


# -- learning, end to end ---------------------------------------------------------------------------------------------
def test_small_network_learns(mnist):
    sizes = (784, 120, 120)
    cfg = _cfg(epochs=4, lr=0.03, seed=2, recurrent={"iterations": 4, "score_from": 2, "score_to": 3})
    x, y = mnist.train_images[:3000], mnist.train_labels[:3000]
    tx, ty = mnist.test_images[:500], mnist.test_labels[:500]
    chip = _chip(sizes, 10)
    learner = FFLearner(cfg).fit(chip, x, y, progress=False)
    res = learner.evaluate(chip, tx, ty)
    assert set(res.errors) == {"goodness", "softmax"}
    assert res.errors["softmax"] < 0.5, res.errors
    assert res.errors["goodness"] < 0.5, res.errors  # chance is 0.9
    assert learner.predict(chip, tx[:50]).shape == (50,)


def test_checkpoint_and_resume_equal_an_uninterrupted_run(tmp_path, mnist, snapshot, assert_same_state):
    sizes = (784, 30, 20)
    cfg = _cfg(epochs=2, seed=5, policy="mixed", recurrent={"iterations": 3, "score_from": 1, "score_to": 2})
    x, y = mnist.train_images[:300], mnist.train_labels[:300]
    chip_a = devices.make_chip("pcm", sizes, 3, top_down=devices.top_down_layout(sizes, 80))
    run_a = FFLearner(cfg).fit(chip_a, x, y, progress=False)
    chip_b = devices.make_chip("pcm", sizes, 3, top_down=devices.top_down_layout(sizes, 80))
    FFLearner(cfg.changed(epochs=1)).fit(chip_b, x, y, checkpoint_dir=tmp_path, progress=False)
    chip_r = devices.load_chip(latest_checkpoint(tmp_path) / CHIP_FILE)
    assert chip_r.info.top_down == (20, 80)
    run_b = FFLearner(cfg).fit(chip_r, x, y, resume=tmp_path, progress=False)
    assert run_b.state.top_down == (20, 80)
    assert run_b.state.smooth[0].shape == (784 + 20 + 1, 30)
    for name in ("smooth", "shadow", "accumulators"):
        for a, b in zip(getattr(run_a.state, name), getattr(run_b.state, name)):
            np.testing.assert_array_equal(a, b)
    assert_same_state(snapshot(chip_a), snapshot(chip_r))
    np.testing.assert_array_equal(run_a.goodness_scores(chip_a, x[:20]), run_b.goodness_scores(chip_r, x[:20]))


# -- refusals ---------------------------------------------------------------------------------------------------------
def test_recurrent_learner_refuses_a_chip_without_the_layout(mnist):
    x, y = mnist.train_images[:200], mnist.train_labels[:200]
    plain = devices.make_chip("ideal", (784, 20, 20), 0)
    with pytest.raises(InputError, match=r"top_down_layout\(\[784, 20, 20\], 10 \* copies\)"):
        FFLearner(_cfg(epochs=1)).fit(plain, x, y, progress=False)
    only_label = devices.make_chip("ideal", (784, 20, 20), 0, top_down=(0, 10))
    with pytest.raises(InputError, match="every layer also hears the layer above"):
        FFLearner(_cfg(epochs=1)).fit(only_label, x, y, progress=False)
    odd = devices.make_chip("ideal", (784, 20, 20), 0, top_down=(20, 15))
    with pytest.raises(InputError, match="not a multiple of the 10 classes"):
        FFLearner(_cfg(epochs=1)).fit(odd, x, y, progress=False)


def test_other_modes_refuse_a_top_down_chip(mnist):
    x, y = mnist.train_images[:200], mnist.train_labels[:200]
    chip = devices.make_chip("ideal", (784, 20, 20), 0, top_down=(20, 10))
    with pytest.raises(InputError, match="train it with mode 'recurrent'"):
        FFLearner(FFConfig(epochs=1, labels={"placement": "first"})).fit(chip, x, y, progress=False)


def test_bad_settings_are_refused(mnist):
    with pytest.raises(ValidationError, match="scored steps"):
        _cfg(recurrent={"iterations": 4, "score_to": 5})
    with pytest.raises(ValidationError):
        _cfg(recurrent={"train_steps": "some"})
    x, y = mnist.train_images[:200], mnist.train_labels[:200]
    with pytest.raises(InputError, match="estimator='nominal'"):
        FFLearner(_cfg(epochs=1, estimator="perturbed")).fit(_chip((784, 20, 20), 10), x, y, progress=False)


def test_cli_train_builds_the_top_down_layout_and_resumes(tmp_path, capsys):
    from mortal.cli import main

    out = tmp_path / "out"
    args = ["train", "--preset", "ideal", "--layers", "20,15", "--epochs", "1", "--mini", "--train-size", "300",
            "--quiet", "--set", "train.mode=recurrent", "--set", "train.recurrent.iterations=3",
            "--set", "train.recurrent.score_from=1", "--set", "train.recurrent.score_to=2", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    chip = devices.load_chip(latest_checkpoint(out / "checkpoints") / CHIP_FILE)
    assert chip.info.layer_sizes == (784, 20, 15)
    assert chip.info.top_down == (15, 10)  # ideal weights: one label copy
    assert main(args[:6] + ["2"] + args[7:] + ["--resume"]) == 0, capsys.readouterr().err
    assert latest_checkpoint(out / "checkpoints").name == "epoch-0002"


def test_drift_compensation_reads_the_bottom_up_pass(mnist):
    from mortal.care import DriftCompensator

    sizes = (784, 30, 20)
    x, y = mnist.train_images[:200], mnist.train_labels[:200]
    chip = devices.make_chip("pcm", sizes, 2, top_down=devices.top_down_layout(sizes, 80))
    learner = FFLearner(_cfg(epochs=1, seed=1, recurrent={"iterations": 2, "score_from": 1, "score_to": 2})).fit(
        chip, x, y, progress=False)
    p = learner.forward(chip, learner.embed(x[:10]), n_layers=1)
    assert len(p.outputs) == 1 and p.inputs[0].shape == (10, 784 + 20)
    assert not p.inputs[0][:, 784:].any()  # top-down inputs at 0
    comp = DriftCompensator(x[:100])
    comp.calibrate(chip, learner)
    chip.wait(1e6)
    factors = comp.update(chip, learner)
    assert [f.shape for f in factors] == [(30,), (20,)]
    assert learner.state.correction is not None and np.mean(factors[0]) > 1.0  # pcm conductances drift down
    assert learner.goodness_scores(chip, x[:10]).shape == (10, 10)


def test_distillation_between_recurrent_chips(mnist):
    from mortal.distill import DistillConfig, distill

    sizes = (784, 30, 20)
    x, y = mnist.train_images[:300], mnist.train_labels[:300]
    cfg = _cfg(epochs=1, seed=1, recurrent={"iterations": 2, "score_from": 1, "score_to": 2})
    teacher = _chip(sizes, 10, seed=1)
    t_learner = FFLearner(cfg).fit(teacher, x, y, progress=False)
    student = _chip(sizes, 10, seed=2)
    s_learner = FFLearner(cfg)
    res = distill(teacher, student, t_learner, s_learner, x,
                  DistillConfig(teacher_readout="combined", negatives="mixed", positives="sample"), progress=False)
    assert s_learner.epoch == 1 and s_learner.state.top_down == (20, 10)
    assert res.total_energy_j > 0 and res.student_energy_j["program"] > 0
    # a student chip without the layout is refused with the way to build one
    with pytest.raises(InputError, match="top_down_layout"):
        distill(teacher, devices.make_chip("ideal", sizes, 3), t_learner, FFLearner(cfg), x, progress=False)
