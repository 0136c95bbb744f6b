"""Review of the modes, top-down chips, black-box stages and BP references: one test per fix."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import devices
from mortal.errors import InputError

RAW = {"name": "old", "seed": 5, "chips": 1, "chip": {"preset": "pcm", "layers": [12, 10]},
       "train": {"epochs": 1, "batch_size": 50}, "data": {"source": "mini", "train_size": 200, "test_size": 100}}


def _without(data, keys):
    """``data`` with every entry named in ``keys`` removed, at every depth."""
    if isinstance(data, dict):
        return {k: _without(v, keys) for k, v in data.items() if k not in keys}
    if isinstance(data, list):
        return [_without(v, keys) for v in data]
    return data


def test_a_fleet_run_written_before_the_mode_settings_resumes(tmp_path):
    from mortal.config import config_from_dict
    from mortal.fleet import CONFIG_FILE, run_fleet

    out = tmp_path / "run"
    with ThreadPoolExecutor(1) as ex:
        run_fleet(config_from_dict(json.loads(json.dumps(RAW))), out, ex)
    saved = json.loads((out / CONFIG_FILE).read_text())
    assert saved["train"]["mode"] == "supervised"
    # the file as a run made before train.mode, train.unsupervised and train.recurrent wrote it
    (out / CONFIG_FILE).write_text(json.dumps(_without(saved, {"mode", "unsupervised", "recurrent"}), indent=2))
    with ThreadPoolExecutor(1) as ex:
        res = run_fleet(config_from_dict(json.loads(json.dumps(RAW))), out, ex, resume=True)
    assert res.ran == 0 and len(res.ok) == 1
    # a saved value that differs is still another config, even in an old file
    old = _without(saved, {"mode", "unsupervised", "recurrent"})
    old["train"]["optimizer"]["lr"] = 0.5
    (out / CONFIG_FILE).write_text(json.dumps(old, indent=2))
    with ThreadPoolExecutor(1) as ex, pytest.raises(InputError, match="another config"):
        run_fleet(config_from_dict(json.loads(json.dumps(RAW))), out, ex, resume=True)


def test_the_digital_reference_counts_each_modes_passes_and_names_the_mode():
    from mortal.config import config_from_dict
    from mortal.ff import FFConfig
    from mortal.ff.modes import mode_recipe
    from mortal.ops import training_macs
    from mortal.report import digital_reference

    raw = json.loads(json.dumps(RAW))
    raw["sweep"] = {"train.mode": ["supervised", "unsupervised", "recurrent"]}
    raw["train"]["recurrent"] = {"train_steps": "all"}  # 8 steps: 1 + 2 x 8 passes per batch
    config = config_from_dict(raw)
    records = [{"point": i, "status": "ok", "result": {"layer_sizes": [784, 12, 10], "n_train": 200, "n_classes": 10}}
               for i in range(3)]
    train, _ = digital_reference(config, records)
    # one figure per mode (the same sizes and epochs no longer hide two of them)
    assert sorted(train) == ["GPU, 12x10, 1 ep", "GPU, 12x10, 1 ep, recurrent", "GPU, 12x10, 1 ep, unsupervised"]
    assert train["GPU, 12x10, 1 ep, unsupervised"] < train["GPU, 12x10, 1 ep"] < train["GPU, 12x10, 1 ep, recurrent"]
    rec = FFConfig(mode="recurrent", recurrent={"train_steps": "all"})
    assert mode_recipe(rec).forward_passes(rec) == 17
    assert mode_recipe(rec).forward_passes(FFConfig(mode="recurrent")) == mode_recipe("recurrent").passes == 11
    mac_j = devices.get_preset("ideal").energy.mac_j
    head = 12 + 10  # the head reads every hidden layer
    # the 16 steps after the bottom-up pass read the rows from above too (layer 0 hears layer 1's
    # 10 units, layer 1 the label), and all 8 steps are trained: 16 example sets per update
    down = (10, 10 * rec.label_copies(bounded_weights=True))  # pcm: bounded weights
    assert mode_recipe(rec).reference_work(rec) == {"passes": 17, "top_down_passes": 16, "updates": 16}
    want = training_macs((784, 12, 10), 200, 50, 1, head, 10, 30, passes=17, top_down=down, top_down_passes=16,
                         updates=16) * mac_j
    assert train["GPU, 12x10, 1 ep, recurrent"] == pytest.approx(want, rel=1e-12)
    assert want > training_macs((784, 12, 10), 200, 50, 1, head, 10, 30, passes=17) * mac_j


def test_training_macs_counts_top_down_rows_and_every_trained_set_by_hand():
    from mortal.ff import FFConfig
    from mortal.ff.modes import mode_recipe
    from mortal.ops import training_macs

    # 784-6-4, top-down rows (4, 10), 2 batches of 10, head over 10 features and 10 classes:
    # per batch, 3 passes of 10 x (784*6 + 6*4) = 141,840; 2 of them also read the rows from
    # above, 2 x 10 x (4*6 + 10*4) = 1,280; 4 sets of 10 update (785+4)*6 + (7+10)*4 = 4,802
    # weights: 192,080; the head 2 x 10 x 10 x 10 = 2,000.  Two batches: 2 x 337,200.
    assert training_macs((784, 6, 4), 20, 10, 1, 10, 10, passes=3, top_down=(4, 10), top_down_passes=2,
                         updates=4) == 674_400
    assert training_macs((784, 6, 4), 20, 10, 1, 10, 10, passes=3) == 2 * (141_840 + 2 * 10 * (785 * 6 + 7 * 4) + 2_000)
    with pytest.raises(ValueError, match="top_down names 1 layers, sizes 2"):
        training_macs((784, 6, 4), 20, 10, 1, 10, 10, top_down=(4,))
    # the default schedule: bottom-up + 5 steps x 2 runs, the steps 3-5 trained in both phases
    rec = FFConfig(mode="recurrent")
    assert mode_recipe(rec).reference_work(rec) == {"passes": 11, "top_down_passes": 10, "updates": 6}
    assert mode_recipe("supervised").reference_work(FFConfig()) == {"passes": 3, "top_down_passes": 0, "updates": 2}


def test_backprop_refuses_fewer_examples_than_a_batch_before_any_work():
    from mortal import backprop as B

    rng = np.random.default_rng(0)
    x, y = rng.random((50, 20)).astype(np.float32), rng.integers(0, 4, 50)
    chip = devices.make_chip("ideal", (20, 8), seed=1)
    # it used to train nothing and report a loss and an online error of 0
    with pytest.raises(InputError, match="fewer than one batch"):
        B.train_digital(chip, x, y, B.BPConfig(batch_size=100), n_classes=4)
    stage = devices.make_chip("pcm_blackbox", (20, 8, 8, 4), seed=1, trainable=(True, False, True))
    with pytest.raises(InputError, match="fewer than one batch"):
        B.train_through_model(stage, x, y, B.BPConfig(batch_size=100), n_classes=4)
    # a stage fit whose probes (after the held-out share) fill no batch would report the linear start as fitted
    with pytest.raises(InputError, match="fewer than one batch"):
        B.fit_stage_model(stage, 1, B.StageFitConfig(probes=100, batch_size=100))
    with pytest.raises(InputError, match="layer must be one of"):
        B.fit_stage_model(stage, 3, B.StageFitConfig())
    assert chip.ledger.total_energy_j == 0.0 and stage.ledger.total_energy_j == 0.0
    res = B.train_digital(chip, x, y, B.BPConfig(batch_size=25, epochs=1), n_classes=4)
    assert res.train_ops > 0 and res.history[0]["loss"] > 0


@pytest.mark.parametrize("distill_settings, match", [
    ({"teacher_readout": "goodness"}, "teacher_readout='goodness'"),
    ({"teacher_readout": "combined"}, "teacher_readout='combined'"),
    ({"negatives": "teacher"}, "hybrid images"),
    ({"weighting": "confidence"}, "train only the softmax head"),
])
def test_lifetime_refuses_transfer_settings_its_mode_cannot_take_before_training(distill_settings, match,
                                                                                  monkeypatch):
    import mortal.lifetime as lifetime
    from mortal.data import load_mnist_mini, mnist_dataset
    from mortal.distill import DistillConfig
    from mortal.ff import FFConfig

    made = []
    monkeypatch.setattr(lifetime.devices, "make_chip", lambda *a, **k: made.append(a) or pytest.fail("made a chip"))
    cfg = lifetime.LifetimeConfig(layers=(20,), train=FFConfig(mode="unsupervised", epochs=1),
                                  distill=DistillConfig(**distill_settings))
    # these used to be refused by the first transfer, after generation 0 had trained and aged
    with pytest.raises(InputError, match=match):
        lifetime.run_lifetime(cfg, mnist_dataset(load_mnist_mini()).subset(1500))
    assert not made


def test_a_controller_is_bound_or_copied_only_to_a_chip_of_its_top_down_layout():
    from mortal.data import load_mnist_mini
    from mortal.ff import FFConfig, FFLearner

    d = load_mnist_mini()
    x, y = d.train_images[:200], d.train_labels[:200]
    sizes = (784, 20, 20)
    cfg = FFConfig(mode="recurrent", epochs=1, recurrent={"iterations": 2, "score_from": 1, "score_to": 2})
    chip = devices.make_chip("pcm", sizes, 1, top_down=devices.top_down_layout(sizes, 80))
    learner = FFLearner(cfg).fit(chip, x, y, progress=False)
    # another label width (10 inputs, not 80): the copy used to keep the 80 and fail at its first read
    other = devices.make_chip("pcm", sizes, 2, top_down=devices.top_down_layout(sizes, 10))
    with pytest.raises(InputError, match=r"top-down inputs are \[20, 10\], the controller's \[20, 80\]"):
        learner.copy_controller(other)
    with pytest.raises(InputError, match=r"top-down inputs are \[0, 0\], the controller's \[20, 80\]"):
        FFLearner(cfg).bind(devices.make_chip("pcm", sizes, 3), learner.state.copy())
    with pytest.raises(InputError, match=r"top-down inputs are \[20, 80\], the controller's none"):
        FFLearner(FFConfig()).bind(chip, FFLearner(FFConfig(labels={"placement": "first"})).new_state(
            devices.make_chip("pcm", sizes, 4), 784, 10))
    same = devices.make_chip("pcm", sizes, 5, top_down=devices.top_down_layout(sizes, 80))
    copy = learner.copy_controller(same)
    assert copy.state.top_down == (20, 80) and copy.goodness_scores(same, x[:4]).shape == (4, 10)


def test_fleet_memory_check_counts_the_recurrent_chips_top_down_rows(monkeypatch):
    import devices.chip as device_chip
    from devices.parameters import state_bytes
    from mortal.config import config_from_dict, load_data
    from mortal.fleet import check_chips

    raw = json.loads(json.dumps(RAW))
    raw["chip"]["layers"] = [300, 300]
    raw["sweep"] = {"train.mode": ["supervised", "recurrent"]}
    config = config_from_dict(raw)
    data = load_data(config.data)
    plain = state_bytes(False, 784, 300) + state_bytes(False, 300, 300)
    recurrent = state_bytes(False, 784 + 300, 300) + state_bytes(False, 300 + 80, 300)  # pcm: 8 label copies
    monkeypatch.setattr(device_chip, "memory_limit_bytes", lambda: (plain + recurrent) // 2)
    # the recurrent point's chips (same sizes as the supervised one's) used to be checked without their rows
    with pytest.raises(InputError, match=r"sweep point \[train.mode = 'recurrent'\]"):
        check_chips(config, data)
    monkeypatch.setattr(device_chip, "memory_limit_bytes", lambda: recurrent)
    check_chips(config, data)


def test_recurrent_iterations_matter_only_when_every_step_trains():
    """As RecurrentConfig.iterations says: with train_steps="scored" a batch stops at score_to."""
    from mortal.ff import FFConfig, FFLearner
    from mortal.ff import recurrent as R
    from mortal.ff.targets import Targets, negative_sampler

    sizes = (12, 9, 7)
    x = np.random.default_rng(3).random((4, 12)).astype(np.float32)
    reads = {}
    for steps in ("scored", "all"):
        for iterations in (5, 8):
            cfg = FFConfig(mode="recurrent", batch_size=4, recurrent={"iterations": iterations, "train_steps": steps})
            chip = devices.make_chip("ideal", sizes, 4, top_down=devices.top_down_layout(sizes, 4))
            learner = FFLearner(cfg)
            learner.bind(chip, learner.new_state(chip, 12, 4))
            R.train_batch_recurrent(cfg, learner.state, chip, x, np.arange(4), Targets(np.arange(4), 4),
                                    negative_sampler("own"), 1.0, np.random.default_rng(0))
            reads[steps, iterations] = chip.ledger.counts["reads"]
    assert reads["scored", 5] == reads["scored", 8] == 2 + 5 * 2  # bottom-up, then steps 1..score_to
    assert (reads["all", 5], reads["all", 8]) == (2 + 5 * 2, 2 + 8 * 2)


def test_bench_ff_counts_the_modes_passes_and_builds_a_recurrent_chip(monkeypatch):
    import importlib
    import sys
    from pathlib import Path

    from mortal.ff import FFConfig
    from mortal.ops import training_macs

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    bench = importlib.import_module("bench_ff")
    sizes, head = (784, 20, 20), [0, 1]
    rec = FFConfig(mode="recurrent", recurrent={"train_steps": "all"})
    assert bench.training_flops(sizes, 100, 50, head, rec, (20, 30)) == 2.0 * training_macs(
        sizes, 100, 50, 1, 40, 10, passes=17, top_down=(20, 30), top_down_passes=16, updates=16)
    assert bench.training_flops(sizes, 100, 50, head) == 2.0 * training_macs(sizes, 100, 50, 1, 40, 10, passes=3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (120, 784)).astype(np.uint8)
    y = rng.integers(0, 10, 120)
    cfg = FFConfig(mode="recurrent", epochs=1, batch_size=60, refit={"epochs": 0},
                   recurrent={"iterations": 2, "score_from": 1, "score_to": 2})
    learner, chip = bench.run("ideal", sizes, cfg, (x, y, x[:60], y[:60]), 120, None, eval_test=False)
    assert chip.info.top_down == (20, 10) and learner.epoch == 1
    sys.modules.pop("bench_ff", None)


def test_backprop_refuses_a_chip_with_top_down_inputs_before_any_work():
    from mortal import backprop as B

    rng = np.random.default_rng(0)
    x, y = rng.random((100, 20)).astype(np.float32), rng.integers(0, 4, 100)
    chip = devices.make_chip("ideal", (20, 8, 6), seed=1, top_down=devices.top_down_layout((20, 8, 6), 4))
    # it used to fail inside the first product with a shape error
    for call in (lambda: B.train_digital(chip, x, y, n_classes=4),
                 lambda: B.train_through_model(chip, x, y, n_classes=4)):
        with pytest.raises(InputError, match=r"top-down inputs \[6, 4\]"):
            call()
    assert chip.ledger.total_energy_j == 0.0
