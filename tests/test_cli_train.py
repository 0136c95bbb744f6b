"""The ``mortal`` command: ``--version``, ``train`` end to end, ``--resume`` and bad arguments.

Settings other than the few short options are given as ``--set train.<dotted key>=VALUE``
(``mortal options train`` lists them).  Runs are tiny: two 30-unit layers, one epoch, 600
images, and a one-epoch refit of the head (or ``train.defaults=hinton``: no refit at all).
"""

from __future__ import annotations

import io
import json
import math
import sys

import pytest

import devices
import mortal
from cli_helpers import one_error_line, tree_digest
from mortal.cli import main
from mortal.ff import CHIP_FILE, latest_checkpoint

TRAIN = ["train", "--preset", "ideal", "--layers", "30,30", "--epochs", "1", "--mini", "--train-size", "600",
         "--quiet", "--set", "train.refit.epochs=1"]


def test_version_exits_zero_and_prints_it(capsys):
    assert main(["--version"]) == 0
    assert mortal.__version__ in capsys.readouterr().out


def test_help_and_no_command_exit_zero(capsys):
    assert main([]) == 0
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One quick finished ``train`` run: (exit code, output folder, stdout, stderr)."""
    out = tmp_path_factory.mktemp("run") / "out"
    capture = pytest.MonkeyPatch()
    so, se = io.StringIO(), io.StringIO()
    capture.setattr(sys, "stdout", so)
    capture.setattr(sys, "stderr", se)
    try:
        code = main(TRAIN + ["--out", str(out), "--seed", "5"])
    finally:
        capture.undo()
    return code, out, so.getvalue(), se.getvalue()


def test_train_writes_log_summary_config_and_checkpoint(finished_run):
    code, out, stdout, stderr = finished_run
    assert code == 0, stderr
    lines = (out / "epochs.jsonl").read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["epoch"] == 1 and set(rec["test_error"]) == {"goodness", "softmax"}
    assert "test_error_before_refit" in rec  # the one-epoch refit ran at the end

    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "ideal" and summary["layers"] == [784, 30, 30] and summary["epochs"] == 1
    assert summary["test_error"] == rec["test_error"]
    # six batches teach little; this test is about the plumbing
    assert all(0.0 <= v <= 1.0 for v in summary["test_error"].values())
    assert summary["total_energy_j"] > 0 and math.isfinite(summary["total_energy_j"])
    assert summary["pulses"] > 0

    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "ideal" and config["seed"] == 5
    assert config["data"]["source"] == "mini" and config["data"]["train_size"] == 600
    assert config["layer_sizes"] == [784, 30, 30]
    assert config["train"]["epochs"] == 1 and config["train"]["seed"] == 5
    assert config["train"]["refit"]["epochs"] == 1

    assert (out / "checkpoints" / "LATEST").read_text().strip() == "epoch-0001"
    chip = devices.load_chip(latest_checkpoint(out / "checkpoints") / CHIP_FILE)
    assert chip.info.layer_sizes == (784, 30, 30)
    assert chip.ledger.total_energy_j == pytest.approx(summary["total_energy_j"])
    assert chip.ledger.counts["pulses"] == summary["pulses"]
    # --quiet: no per-epoch lines; the summary table is printed
    assert "epoch    1" not in stdout and "test error (softmax)" in stdout


def test_the_same_seed_gives_the_same_run(finished_run, tmp_path):
    code, out, _, _ = finished_run
    assert main(TRAIN + ["--out", str(tmp_path / "again"), "--seed", "5"]) == 0
    a = json.loads((out / "summary.json").read_text())
    b = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert {k: v for k, v in a.items() if k != "wall_s"} == {k: v for k, v in b.items() if k != "wall_s"}


def test_resume_of_a_finished_run_adds_no_epochs(finished_run, capsys):
    code, out, _, _ = finished_run
    log_before = (out / "epochs.jsonl").read_text()
    summary_before = json.loads((out / "summary.json").read_text())
    assert main(TRAIN + ["--out", str(out), "--seed", "5", "--resume"]) == 0
    assert (out / "epochs.jsonl").read_text() == log_before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1
    assert summary["test_error"] == summary_before["test_error"]
    assert summary["total_energy_j"] == summary_before["total_energy_j"]
    assert (out / "checkpoints" / "LATEST").read_text().strip() == "epoch-0001"


@pytest.mark.parametrize("change", [
    ["--set", "train.optimizer.lr=0.02"],
    ["--set", "train.lr=0.02"],  # the same field by its unique name
    ["--set", "train.policy=direct"],
    ["--set", "train.refit.settle_s=5"],
])
def test_resume_with_other_settings_is_refused_and_changes_nothing(finished_run, change, capsys):
    code, out, _, _ = finished_run
    before = tree_digest(out)
    assert main(TRAIN + ["--out", str(out), "--seed", "5", "--resume"] + change) == 2
    assert "settings" in one_error_line(capsys.readouterr().err)
    assert tree_digest(out) == before


@pytest.mark.parametrize("item,needle", [
    ("train.nope=1", "train.nope: unknown key"),
    ("train.recipe.nope=1", "train.recipe.nope: unknown key"),
    ("train.optimizer.lr=-1", "train.optimizer.lr: "),
    ("train.foo.bar=1", "train.foo"),
])
def test_resume_with_a_bad_set_is_refused_and_changes_nothing(finished_run, item, needle, capsys):
    code, out, _, _ = finished_run
    before = tree_digest(out)
    assert main(TRAIN + ["--out", str(out), "--seed", "5", "--resume", "--set", item]) == 2
    assert needle in one_error_line(capsys.readouterr().err)
    assert tree_digest(out) == before


def test_resume_to_fewer_epochs_than_trained_is_refused(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["train", "--preset", "ideal", "--layers", "20", "--mini", "--train-size", "200", "--quiet",
            "--set", "train.defaults=hinton", "--out", str(out)]
    assert main(args + ["--epochs", "2"]) == 0
    before = tree_digest(out)
    assert main(args + ["--epochs", "1", "--resume"]) == 2
    assert "epochs" in one_error_line(capsys.readouterr().err)
    assert tree_digest(out) == before


def test_resume_may_raise_the_epochs(tmp_path, capsys):
    """``--epochs 2 --resume`` continues a one-epoch run for one more epoch."""
    out = tmp_path / "r"
    args = ["train", "--preset", "ideal", "--layers", "20", "--mini", "--train-size", "300", "--quiet",
            "--set", "train.defaults=hinton", "--out", str(out)]
    assert main(args + ["--epochs", "1"]) == 0
    first = json.loads((out / "epochs.jsonl").read_text())
    assert main(args + ["--epochs", "2", "--resume"]) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0] == first  # the first epoch is kept, not redone
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert summary["total_energy_j"] > first["total_energy_j"]
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2
    assert (out / "checkpoints" / "LATEST").read_text().strip() == "epoch-0002"


def test_resume_with_other_data_is_refused_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["train", "--preset", "ideal", "--layers", "20", "--mini", "--quiet", "--set", "train.defaults=hinton",
            "--out", str(out)]
    assert main(args + ["--epochs", "1", "--train-size", "200"]) == 0
    before = tree_digest(out)
    assert main(args + ["--epochs", "2", "--train-size", "300", "--resume"]) == 2
    assert "data" in one_error_line(capsys.readouterr().err)
    assert tree_digest(out) == before


def test_resume_needs_out(capsys):
    assert main(TRAIN + ["--resume"]) == 2
    assert "--out" in one_error_line(capsys.readouterr().err)


def test_resume_without_a_checkpoint_is_a_usage_error(tmp_path, capsys):
    # issue 15, item 3: an --out that holds no train run is refused as such, before anything is read
    assert main(TRAIN + ["--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "holds no train run to resume" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "empty").exists()


def test_train_without_out_prints_epochs_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [a for a in TRAIN if a != "--quiet"]
    assert main(args + ["--train-size", "200", "--layers", "20,20"]) == 0
    out = capsys.readouterr().out
    assert "epoch    1" in out and "test error (goodness)" in out
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_fails_exits_1_and_keeps_its_checkpoint(tmp_path, monkeypatch, capsys):
    """The second epoch fails (a power cut): training stops after the first epoch.

    (This test once made epochs.jsonl a folder beforehand; a folder that is not empty is now
    refused before the run starts, issue 15 item 3.)"""
    import mortal.ff.learner as learner_module

    real = learner_module.train_epoch

    def power_cut_after_one(cfg, st, *a, **k):
        if st.epoch >= 1:
            raise RuntimeError("power cut")
        return real(cfg, st, *a, **k)

    monkeypatch.setattr(learner_module, "train_epoch", power_cut_after_one)
    out = tmp_path / "out"
    assert main(TRAIN + ["--epochs", "2", "--checkpoint-every", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("mortal: training failed after 1 epochs") and str(out / "checkpoints") in err
    assert (out / "checkpoints" / "LATEST").read_text().strip() == "epoch-0001"
    assert not (out / "summary.json").exists()


@pytest.mark.parametrize("args,needle", [
    (["--preset", "unobtainium"], "unobtainium"),
    (["--layers", "0,5"], "--layers"),
    (["--layers", "abc"], "--layers"),
    (["--layers", ""], "--layers"),
    (["--epochs", "-1"], "train.epochs"),
    (["--epochs", "0"], "train.epochs"),
    (["--epochs", "two"], "--epochs"),
    (["--set", "train.optimizer.lr=-0.5"], "train.optimizer.lr"),
    (["--set", "train.lr=-0.5"], "train.optimizer.lr"),
    (["--set", "train.batch_size=1"], "train.batch_size"),
    (["--set", "train.policy=sometimes"], "train.policy"),
    (["--set", "train.measurement.estimator=guess"], "train.measurement.estimator"),
    (["--set", "train.recipe.head_layers=some"], "train.recipe.head_layers"),
    (["--seed", "-3"], "train.seed"),
    (["--set", "train.refit.epochs=-2"], "train.refit.epochs"),
    (["--set", "train.refit.settle_s=-5"], "train.refit.settle_s"),
    (["--set", "train.refit.settle_s=inf"], "train.refit.settle_s"),
    (["--set", "train.refit.settle_s=NaN"], "train.refit.settle_s"),
    (["--set", "train.polcy=direct"], "train.policy"),  # the suggestion
    (["--set", "distill.negatives=own"], "train."),
    (["--set", "train.policy"], "="),
    (["--checkpoint-every", "-1"], "checkpoint_every"),
    (["--eval-every", "-1"], "eval_every"),
    (["--no-such-flag"], "no-such-flag"),
])
def test_bad_train_arguments_exit_2_with_a_message(args, needle, tmp_path, capsys):
    base = ["train", "--mini", "--epochs", "1", "--layers", "20", "--train-size", "200", "--quiet",
            "--out", str(tmp_path / "out")]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if err.startswith("usage:"):  # argparse: the usage, then one error line
        assert needle in err.strip().splitlines()[-1]
    else:
        assert needle in one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_train_with_a_refit_of_the_head(tmp_path):
    out = tmp_path / "out"
    assert main(["train", "--preset", "pcm", "--layers", "20", "--epochs", "1", "--mini", "--train-size", "200",
                 "--set", "train.refit.epochs=2", "--set", "train.refit.settle_s=60", "--out", str(out),
                 "--quiet"]) == 0
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert cfg["refit"]["epochs"] == 2 and cfg["refit"]["settle_s"] == 60.0
    last = [json.loads(line) for line in (out / "epochs.jsonl").read_text().splitlines()][-1]
    assert "test_error_before_refit" in last and last["refit_wall_s"] > 0
    assert json.loads((out / "summary.json").read_text())["chip_time_s"] >= 60.0  # the chip idled 60 s


def test_set_reaches_nested_and_routed_fields(tmp_path):
    out = tmp_path / "out"
    assert main(["train", "--preset", "ideal", "--layers", "20,20", "--epochs", "1", "--mini", "--train-size", "200",
                 "--quiet", "--out", str(out), "--set", "train.defaults=hinton", "--set", "train.policy=direct",
                 "--set", "train.measurement.estimator=perturbed", "--set", "train.lr=0.02",
                 "--set", "train.batch_size=50", "--set", "train.recipe.head_layers=all",
                 "--set", "train.measurement.slope_probes=64"]) == 0
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert cfg["defaults"] == "hinton" and cfg["policy"] == "direct" and cfg["batch_size"] == 50
    assert cfg["measurement"]["estimator"] == "perturbed" and cfg["measurement"]["slope_probes"] == 64
    assert cfg["optimizer"]["lr"] == 0.02
    assert cfg["recipe"]["head_layers"] == "all"  # given explicitly: wins over the hinton table
    assert cfg["refit"]["epochs"] == 0  # the hinton table
    assert len((out / "epochs.jsonl").read_text().splitlines()) == 1


def test_the_default_epochs_are_the_configs(tmp_path, capsys):
    """Without ``--epochs`` the run is ``train.epochs`` long (10 by default); ``--set train.epochs`` sets it."""
    out = tmp_path / "out"
    assert main(["train", "--preset", "ideal", "--layers", "10", "--mini", "--train-size", "100", "--quiet",
                 "--eval-every", "0", "--set", "train.defaults=hinton", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == 10
    assert len((out / "epochs.jsonl").read_text().splitlines()) == 10
    out2 = tmp_path / "out2"
    assert main(["train", "--preset", "ideal", "--layers", "10", "--mini", "--train-size", "100", "--quiet",
                 "--set", "train.defaults=hinton", "--set", "train.epochs=2", "--out", str(out2)]) == 0
    assert json.loads((out2 / "summary.json").read_text())["epochs"] == 2


def test_epochs_flag_and_set_train_epochs_together(tmp_path, capsys):
    """``--epochs`` wins over ``--set train.epochs``, as on --resume."""
    out = tmp_path / "out"
    code = main(["train", "--preset", "ideal", "--layers", "10", "--mini", "--train-size", "100", "--quiet",
                 "--set", "train.defaults=hinton", "--set", "train.epochs=3", "--epochs", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2
    assert len((out / "epochs.jsonl").read_text().splitlines()) == 2


def test_set_of_the_whole_train_tree_to_a_scalar_is_a_usage_error(tmp_path, capsys):
    assert main(["train", "--mini", "--layers", "10", "--quiet", "--set", "train=3",
                 "--out", str(tmp_path / "out")]) == 2
    assert "train" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_a_batch_larger_than_the_data_writes_nothing(tmp_path, capsys):
    assert main(["train", "--mini", "--layers", "10", "--epochs", "1", "--train-size", "100", "--quiet",
                 "--set", "train.batch_size=200", "--out", str(tmp_path / "out")]) == 2
    assert "batch" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_missing_data_path_exits_2(tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    assert main(["train", "--data", str(missing), "--epochs", "1", "--layers", "20", "--quiet"]) == 2
    assert str(missing) in one_error_line(capsys.readouterr().err)


def test_unknown_command_exits_2(capsys):
    assert main(["fly"]) == 2
    assert "fly" in capsys.readouterr().err


def test_train_size_is_respected(tmp_path):
    vectors = {}
    for size in (200, 400):
        out = tmp_path / f"n{size}"
        assert main(["train", "--preset", "pcm", "--layers", "20,20", "--epochs", "1", "--mini", "--train-size",
                     str(size), "--out", str(out), "--quiet", "--set", "train.policy=direct",
                     "--set", "train.defaults=hinton"]) == 0
        config = json.loads((out / "config.json").read_text())
        assert config["data"]["train_size"] == size and config["train"]["policy"] == "direct"
        assert json.loads((out / "summary.json").read_text())["pulses"] > 0
        chip = devices.load_chip(latest_checkpoint(out / "checkpoints") / CHIP_FILE)
        vectors[size] = chip.ledger.counts["vectors"]
    # 200 more images: each is read in the neutral, positive and negative passes through both layers;
    # the evaluation on the 2000 test images is the same in both runs (no refit under hinton)
    assert vectors[400] - vectors[200] == 200 * 3 * 2


@pytest.mark.parametrize("size", ["-100", "0", "100000"])
def test_impossible_train_size_exits_2(size, tmp_path, capsys):
    code = main(["train", "--mini", "--epochs", "1", "--layers", "20", "--quiet", "--train-size", size,
                 "--out", str(tmp_path / "out")])
    if code == 0:  # at least the recorded size must be the number of images actually used
        config = json.loads((tmp_path / "out" / "config.json").read_text())
        assert 1 <= config["data"]["train_size"] <= 6000 and str(config["data"]["train_size"]) == size
    assert code == 2
    assert "train-size" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
