"""The unsupervised mode: hybrid negatives, the learner in that mode, its checkpoints, the
commands and configs that select it, and what it refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest

import devices
from mortal.cli import main
from mortal.data import load_mnist_mini
from mortal.distill import DistillConfig, distill
from mortal.errors import InputError
from mortal.ff import ControllerState, FFConfig, FFLearner, load_learner
from mortal.ff.hybrid import blur, example_shape_of, hybrid_masks, hybrid_partners, hybrids
from mortal.ff.modes import mode_recipe


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- masks and hybrids ------------------------------------------------------------------------------
@pytest.mark.parametrize("blurs", [1, 6])
def test_masks_are_binary_with_half_ones(blurs):
    m = hybrid_masks(400, (28, 28), blurs, 0.5, _rng(1))
    assert m.shape == (400, 28, 28) and m.dtype == np.float32
    assert set(np.unique(m)) == {0.0, 1.0}
    # 400 masks of 784 pixels; the masks' own means vary (large regions), the pooled share
    # is 0.5 up to a few of their standard errors
    per_mask = m.mean(axis=(1, 2))
    assert abs(per_mask.mean() - 0.5) < 4 * per_mask.std() / np.sqrt(400) + 1e-3


def test_a_higher_threshold_gives_fewer_ones():
    lo = hybrid_masks(200, (28, 28), 6, 0.4, _rng(2)).mean()
    hi = hybrid_masks(200, (28, 28), 6, 0.6, _rng(2)).mean()
    assert hi < 0.3 and lo > 0.7  # the blurred values spread about 0.08 around 0.5 after 6 passes


def _neighbour_agreement(m: np.ndarray, lag: int) -> float:
    """Share of pixel pairs ``lag`` apart (along rows and columns) with the same mask value."""
    return float(np.mean(np.concatenate([(m[:, :, lag:] == m[:, :, :-lag]).ravel(),
                                         (m[:, lag:, :] == m[:, :-lag, :]).ravel()])))


def test_regions_grow_with_the_blur_passes():
    agree = [_neighbour_agreement(hybrid_masks(300, (28, 28), b, 0.5, _rng(3)), 3) for b in (1, 3, 6, 12)]
    assert all(a < b for a, b in zip(agree, agree[1:])), agree
    assert agree[0] < 0.6 and agree[-1] > 0.7  # near independent after one pass, large regions after 12


def test_blur_keeps_a_constant_image_and_the_mean_at_the_border():
    flat = np.full((2, 5, 7), 0.25, np.float32)
    np.testing.assert_array_equal(blur(flat, 4), flat)  # border pixels repeated: nothing darkens
    edge = np.zeros((1, 6, 6), np.float32)
    edge[0, :, 0] = 1.0
    out = blur(edge, 1)
    # a column at the border spreads inward by one pixel, keeping 3/4 of its value
    np.testing.assert_allclose(out[0, :, 0], 0.75)
    np.testing.assert_allclose(out[0, :, 1], 0.25)
    np.testing.assert_allclose(out[0, :, 2:], 0.0)


def test_hybrids_are_a_where_the_mask_is_one_and_b_elsewhere():
    rng = _rng(4)
    a = rng.random((50, 12 * 10), dtype=np.float32)
    b = rng.random((50, 12 * 10), dtype=np.float32)
    h = hybrids(a, b, (12, 10), 6, 0.5, _rng(5))
    mask = hybrid_masks(50, (12, 10), 6, 0.5, _rng(5)).reshape(50, -1)
    np.testing.assert_array_equal(h[mask == 1], a[mask == 1])
    np.testing.assert_array_equal(h[mask == 0], b[mask == 0])
    assert 0 < mask.mean() < 1


def test_channels_share_one_mask():
    rng = _rng(6)
    a = rng.random((8, 9, 9, 3), dtype=np.float32)
    b = a + 2.0  # every value of b differs from a's
    h = hybrids(a, b, (9, 9, 3), 3, 0.5, _rng(7))
    from_a = h == a
    assert h.shape == a.shape
    assert (from_a == from_a[..., :1]).all()  # each pixel takes all its channels from one example
    assert 0 < from_a.mean() < 1


def test_hybrids_are_determined_by_the_seed():
    a = _rng(8).random((10, 64), dtype=np.float32)
    b = _rng(9).random((10, 64), dtype=np.float32)
    one = hybrids(a, b, (8, 8), 6, 0.5, _rng(10))
    np.testing.assert_array_equal(one, hybrids(a, b, (8, 8), 6, 0.5, _rng(10)))
    assert not np.array_equal(one, hybrids(a, b, (8, 8), 6, 0.5, _rng(11)))


def test_partners_are_other_examples_of_the_whole_set():
    idx = np.arange(1000) % 40
    p = hybrid_partners(idx, 40, _rng(12))
    assert (p != idx).all() and p.min() >= 0 and p.max() < 40
    assert len(np.unique(p)) == 40  # drawn from the whole set, not only the batch
    with pytest.raises(InputError, match="at least 2"):
        hybrid_partners(np.arange(1), 1, _rng(0))


@pytest.mark.parametrize("shape", [(28,), (28, 28, 1, 1), (27, 28), (0, 784), (28.5, 28)])
def test_bad_example_shapes_are_refused(shape):
    with pytest.raises(InputError, match="example_shape"):
        example_shape_of(shape, 784)


# -- the learner in the mode ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mini():
    d = load_mnist_mini()
    return d.train_images[:1500], d.train_labels[:1500], d.test_images[:500], d.test_labels[:500]


def _cfg(**kw) -> FFConfig:
    return FFConfig(mode="unsupervised", seed=3, **{"epochs": 3, "refit": {"epochs": 3}, **kw})


@pytest.fixture(scope="module")
def trained(mini):
    x, y, xt, yt = mini
    chip = devices.make_chip("ideal", (784, 80, 80, 80, 80), seed=5)
    learner = FFLearner(_cfg(epochs=6, batch_size=50, refit={"epochs": 10}))
    learner.fit(chip, x, y, test_inputs=xt, test_labels=yt, eval_every=0, progress=False)
    return learner, chip


def test_the_mode_learns_on_the_ideal_chip(trained, mini):
    learner, chip = trained
    _, _, xt, yt = mini
    res = learner.evaluate(chip, xt, yt)
    assert set(res.errors) == {"softmax"}  # "both": every readout the mode has
    assert res.errors["softmax"] < 0.3  # chance is 0.9 (6 epochs of 1500 images on a small chip)
    assert learner.history[-1]["test_error"] == res.errors


def test_no_label_enters_the_chip_and_the_head_reads_the_top_layers(trained):
    learner, chip = trained
    st = learner.state
    assert chip.info.layer_sizes[0] == 784 and st.layout.n_label_inputs == 0 and st.layout.chip_width == 784
    assert st.head_layers == [0, 1, 2, 3] and st.readout_layers == []  # measured default: every layer
    assert st.head.shape == (320, 10) and st.example_shape == (28, 28)
    top3 = FFLearner(FFConfig(defaults="hinton", mode="unsupervised")).new_state(chip, 784, 10)
    assert top3.head_layers == [1, 2, 3]  # Hinton's recipe: the top three
    small = FFLearner(_cfg(unsupervised={"head_last": 5})).new_state(devices.make_chip("ideal", (784, 8, 8), 0), 784,
                                                                     10)
    assert small.head_layers == [0, 1]  # all, if fewer


def test_there_is_no_goodness_readout(trained, mini):
    learner, chip = trained
    _, _, xt, yt = mini
    for call in (lambda: learner.predict(chip, xt, "goodness"), lambda: learner.goodness_scores(chip, xt),
                 lambda: learner.evaluate(chip, xt, yt, "goodness")):
        with pytest.raises(InputError, match="no per-label goodness readout"):
            call()
    assert learner.predict(chip, xt[:20], "softmax").shape == (20,)
    assert mode_recipe("unsupervised").methods == ("softmax",)


def test_the_labels_train_only_the_head(mini):
    """The layers' updates do not depend on the labels: permuted labels leave the chip as it was."""
    x, y, _, _ = mini
    chips = []
    for labels in (y[:400], np.roll(y[:400], 7)):
        chip = devices.make_chip("ideal", (784, 30, 30), seed=1)
        FFLearner(_cfg(epochs=2, refit={"epochs": 0})).fit(chip, x[:400], labels, n_classes=10, progress=False)
        chips.append(chip)
    feats = [c.read(0, np.ones((2, 784), np.float32)) for c in chips]
    np.testing.assert_array_equal(feats[0], feats[1])


@pytest.mark.parametrize("preset,policy", [("pcm", "direct"), ("pcm", "mixed"), ("pcm", "analog")])
def test_every_update_policy_trains_the_layers(mini, preset, policy):
    x, y, _, _ = mini
    chip = devices.make_chip(preset, (784, 24), seed=2)
    before = devices.inspect(chip).layers[0].device_weights  # not a read: pcm's read noise alone differs
    learner = FFLearner(_cfg(epochs=1, policy=policy, batch_size=50, refit={"epochs": 0}))
    learner.fit(chip, x[:300], y[:300], progress=False)
    rec = learner.history[-1]
    assert np.isfinite([rec["loss_pos"], rec["loss_neg"]]).all()
    assert chip.ledger.counts.get("pulses", 0) > 0
    after = devices.inspect(chip).layers[0].device_weights
    assert np.abs(after[:-1] - before[:-1]).max() > 1e-3  # the weights (not only the bias row) moved


def test_checkpoint_and_resume_continue_the_run(tmp_path, mini):
    """A run resumed at an epoch boundary from flat inputs (the checkpoint keeps the shape)
    equals the uninterrupted run, bit for bit."""
    x, y, _, _ = mini
    flat = x[:400].reshape(400, -1)
    sizes = (784, 24, 24)
    cfg = _cfg(epochs=2, refit={"epochs": 0})
    whole_chip = devices.make_chip("pcm", sizes, seed=4)
    whole = FFLearner(cfg).fit(whole_chip, flat, y[:400], example_shape=(28, 28), progress=False)
    chip = devices.make_chip("pcm", sizes, seed=4)
    FFLearner(cfg.changed(epochs=1)).fit(chip, flat, y[:400], example_shape=(28, 28),
                                         checkpoint_dir=tmp_path / "ck", progress=False)
    saved = devices.load_chip(tmp_path / "ck" / "epoch-0001" / "chip.npz")
    resumed = FFLearner(cfg)
    resumed.fit(saved, flat, y[:400], resume=tmp_path / "ck", progress=False)
    assert resumed.state.example_shape == (28, 28)
    np.testing.assert_array_equal(resumed.state.head, whole.state.head)
    for a, b in zip(devices.inspect(saved).layers, devices.inspect(whole_chip).layers):
        np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(resumed.predict(saved, flat[:100], "softmax"),
                                  whole.predict(whole_chip, flat[:100], "softmax"))
    loaded = load_learner(tmp_path / "ck", devices.load_chip(tmp_path / "ck" / "epoch-0001" / "chip.npz"))
    assert loaded.config.mode == "unsupervised" and loaded.state.example_shape == (28, 28)
    with pytest.raises(InputError, match="shape"):  # other images than the checkpoint's
        FFLearner(cfg.changed(epochs=3)).fit(devices.load_chip(tmp_path / "ck" / "epoch-0001" / "chip.npz"), flat,
                                      y[:400], example_shape=(14, 56), resume=tmp_path / "ck", progress=False)


def test_a_state_saved_before_the_example_shape_loads(trained):
    sd = trained[0].state.state_dict()
    meta = dict(sd["meta"])
    del meta["example_shape"]
    assert ControllerState.from_state_dict({"arrays": sd["arrays"], "meta": meta}).example_shape is None
    meta["example_shape"] = [27, 28]
    with pytest.raises(InputError, match="example shape"):
        ControllerState.from_state_dict({"arrays": sd["arrays"], "meta": meta})


def test_bad_settings_are_refused(mini):
    x, y, _, _ = mini
    x, y = x[:200], y[:200]
    chip = devices.make_chip("ideal", (784, 16), seed=0)
    learner = FFLearner(_cfg(epochs=1))
    with pytest.raises(InputError, match=r"needs the examples' shape.*example_shape"):
        learner.fit(chip, x.reshape(200, -1), y, progress=False)
    with pytest.raises(InputError, match="differs from the inputs' shape"):
        learner.fit(chip, x, y, example_shape=(14, 56), progress=False)
    with pytest.raises(InputError, match="holds 780 values"):
        learner.fit(chip, x.reshape(200, -1), y, example_shape=(26, 30), progress=False)
    with pytest.raises(InputError, match="no per-label goodness"):
        learner.fit(chip, x, y, eval_method="goodness", progress=False)
    with pytest.raises(InputError, match="writes no label into the chip's input"):
        learner.fit(devices.make_chip("ideal", (794, 16), seed=0), x, y, progress=False)
    with pytest.raises(InputError, match="train only the softmax head"):
        learner.fit_soft(chip, x, np.full((200, 10), 0.1, np.float32), weighting="confidence", progress=False)
    assert not learner.fitted
    with pytest.raises(ValueError, match="mask_threshold"):
        FFConfig(mode="unsupervised", unsupervised={"mask_threshold": 1.0})
    with pytest.raises(ValueError, match="mask_blurs"):
        FFConfig(mode="unsupervised", unsupervised={"mask_blurs": 0})


def test_a_copy_cannot_change_the_mode(trained):
    learner, _ = trained
    with pytest.raises(InputError, match="cannot change the mode"):
        learner.copy_controller(devices.make_chip("ideal", (784, 80, 80, 80, 80), seed=9), mode="supervised")


# -- distillation -----------------------------------------------------------------------------------
def test_an_unsupervised_teacher_teaches_an_unsupervised_student(trained, mini):
    teacher_learner, teacher = trained
    x, _, xt, yt = mini
    student = devices.make_chip("ideal", (784, 80, 80, 80, 80), seed=6)
    cfg = DistillConfig(student_epochs=2)
    s_learner = FFLearner(cfg.student_config(teacher_learner.config, seed=1))
    res = distill(teacher, student, teacher_learner, s_learner, x.reshape(x.shape[0], -1), cfg)
    assert s_learner.state.example_shape == (28, 28)  # the teacher's, for flat transfer images
    assert res.agreement > 0.7
    assert s_learner.evaluate(student, xt, yt).errors["softmax"] < 0.35
    for bad, match in ((DistillConfig(teacher_readout="goodness"), "teacher_readout='goodness'"),
                       (DistillConfig(negatives="teacher"), "hybrid images"),
                       (DistillConfig(weighting="confidence"), "train only the softmax head")):
        fresh = FFLearner(cfg.student_config(teacher_learner.config, seed=1))
        before = teacher.ledger.total_energy_j
        with pytest.raises(InputError, match=match):
            distill(teacher, devices.make_chip("ideal", (784, 80, 80, 80, 80), seed=6), teacher_learner, fresh, x, bad)
        assert teacher.ledger.total_energy_j == before  # refused before any read


# -- commands and configs ---------------------------------------------------------------------------
def test_mortal_train_selects_the_mode_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--mini", "--train-size", "600", "--preset", "pcm", "--layers", "24,24", "--epochs", "1",
            "--set", "train.mode=unsupervised", "--set", "train.refit.epochs=1", "--out", str(out), "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["mode"] == "unsupervised" and cfg["layer_sizes"] == [784, 24, 24]
    assert set(json.loads((out / "summary.json").read_text())["test_error"]) == {"softmax"}
    resume = ["train", "--epochs", "2", "--resume", "--out", str(out)]
    assert main(resume) == 0, capsys.readouterr().err
    assert "test error (softmax)" in capsys.readouterr().out
    lines = (out / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(v)["epoch"] for v in lines] == [1, 2]


def test_flat_data_needs_a_shape_on_the_command_line(tmp_path, capsys):
    mini = load_mnist_mini()
    flat = tmp_path / "flat.npz"
    np.savez(flat, x_train=mini.train_images[:300].reshape(300, 784), y_train=mini.train_labels[:300],
             x_test=mini.test_images[:100].reshape(100, 784), y_test=mini.test_labels[:100])
    base = ["train", "--data", str(flat), "--preset", "ideal", "--layers", "16,16", "--epochs", "1",
            "--set", "train.mode=unsupervised", "--set", "train.refit.epochs=1", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "refused")]) != 0
    assert "--shape H,W" in capsys.readouterr().err
    assert main(base + ["--shape", "27,28", "--out", str(tmp_path / "wrong")]) != 0
    assert "holds 756 values" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(base + ["--shape", "28,28", "--out", str(out)]) == 0, capsys.readouterr().err
    assert set(json.loads((out / "summary.json").read_text())["test_error"]) == {"softmax"}
    assert main(["train", "--epochs", "2", "--resume", "--out", str(out), "--quiet"]) == 0, \
        capsys.readouterr().err  # the shape was kept with the learner


def test_a_config_file_gives_flat_data_its_shape(tmp_path):
    from mortal.config import DataConfig, load_data

    assert load_data(DataConfig(source="mini", train_size=10, shape=(28, 28))).shape == (28, 28)
    with pytest.raises(ValueError, match="holds 756 values"):
        load_data(DataConfig(source="mini", train_size=10, shape=(27, 28)))
    with pytest.raises(ValueError, match="shape must be"):
        DataConfig(shape=(784,))


def test_a_sweep_over_the_mode_from_a_toml_config(tmp_path, capsys):
    config = tmp_path / "modes.toml"
    config.write_text('name = "modes"\nseed = 0\nchips = 1\n\n[chip]\npreset = "ideal"\nlayers = [24, 24]\n\n'
                      '[train]\nepochs = 1\n\n[train.refit]\nepochs = 1\n\n'
                      '[data]\nsource = "mini"\ntrain_size = 500\ntest_size = 200\n\n'
                      '[sweep]\n"train.mode" = ["supervised", "unsupervised"]\n')
    out = tmp_path / "out"
    assert main(["sweep", str(config), "--out", str(out), "--quiet", "--workers", "1"]) == 0, \
        capsys.readouterr().err
    records = [json.loads(v) for v in (out / "records.jsonl").read_text().splitlines()]
    by_mode = {r["params"]["train.mode"]: r for r in records}
    assert set(by_mode) == {"supervised", "unsupervised"} and all(r["status"] == "ok" for r in records)
    assert by_mode["unsupervised"]["result"]["test_error"]["goodness"] is None
    assert by_mode["supervised"]["result"]["test_error"]["goodness"] is not None
    assert by_mode["unsupervised"]["result"]["layer_sizes"][0] == 784
    assert main(["report", str(out), "--quiet"]) == 0, capsys.readouterr().err
