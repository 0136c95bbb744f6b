"""The ``mortal`` command: ``--version``, ``train`` end to end, ``--resume`` and bad arguments."""

from __future__ import annotations

import io
import json
import math
import sys

import pytest

import devices
import mortal
from mortal.checkpoint import CHIP_FILE, latest_checkpoint
from mortal.cli import main

TRAIN = ["train", "--preset", "ideal", "--layers", "100,100", "--epochs", "1", "--mini", "--train-size", "600",
         "--quiet"]


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

    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "ideal" and summary["layers"] == [784, 100, 100] and summary["epochs"] == 1
    assert summary["test_error"] == rec["test_error"]
    # six batches teach little (measured: goodness 0.8735, softmax 0.90); this test is about the plumbing
    assert all(0.0 <= v <= 1.0 for v in summary["test_error"].values())
    assert summary["total_energy_j"] > 0 and math.isfinite(summary["total_energy_j"])
    assert summary["pulses"] > 0

    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "ideal" and config["seed"] == 5 and config["train_size"] == 600
    assert config["layer_sizes"] == [784, 100, 100]
    assert config["ff"]["epochs"] == 1 and config["ff"]["seed"] == 5

    assert (out / "checkpoints" / "LATEST").read_text().strip() == "epoch-0001"
    chip = devices.load_chip(latest_checkpoint(out / "checkpoints") / CHIP_FILE)
    assert chip.info.layer_sizes == (784, 100, 100)
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


def test_resume_with_a_different_configuration_is_refused(finished_run, capsys):
    code, out, _, _ = finished_run
    assert main(TRAIN[:5] + ["--epochs", "2"] + TRAIN[7:] + ["--out", str(out), "--seed", "5", "--resume"]) == 2
    assert "configuration" in capsys.readouterr().err


def test_resume_needs_out(capsys):
    assert main(TRAIN + ["--resume"]) == 2
    assert "--out" in capsys.readouterr().err


def test_resume_without_a_checkpoint_is_a_usage_error(tmp_path, capsys):
    assert main(TRAIN + ["--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "checkpoint" in capsys.readouterr().err


def test_train_without_out_prints_epochs_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [a for a in TRAIN if a != "--quiet"]
    assert main(args + ["--train-size", "200", "--layers", "20,20"]) == 0
    out = capsys.readouterr().out
    assert "epoch    1" in out and "test error (goodness)" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,needle", [
    (["--preset", "unobtainium"], "unobtainium"),
    (["--layers", "0,5"], "--layers"),
    (["--layers", "abc"], "--layers"),
    (["--layers", ""], "--layers"),
    (["--epochs", "-1"], "epochs"),
    (["--epochs", "0"], "epochs"),
    (["--epochs", "two"], "--epochs"),
    (["--lr", "-0.5"], "lr"),
    (["--batch-size", "1"], "batch_size"),
    (["--policy", "sometimes"], "--policy"),
    (["--estimator", "guess"], "--estimator"),
    (["--seed", "-3"], "seed"),
    (["--refit-epochs", "-2"], "refit_epochs"),
    (["--refit-settle", "-5"], "refit_settle_s"),
    (["--refit-settle", "inf"], "refit_settle_s"),
    (["--no-such-flag"], "no-such-flag"),
])
def test_bad_train_arguments_exit_2_with_a_message(args, needle, tmp_path, capsys):
    base = ["train", "--mini", "--epochs", "1", "--layers", "20", "--train-size", "200", "--quiet",
            "--out", str(tmp_path / "out")]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_train_with_a_refit_of_the_head(tmp_path):
    out = tmp_path / "out"
    assert main(["train", "--preset", "pcm", "--layers", "20", "--epochs", "1", "--mini", "--train-size", "200",
                 "--refit-epochs", "2", "--refit-settle", "60", "--out", str(out), "--quiet"]) == 0
    cfg = json.loads((out / "config.json").read_text())["ff"]
    assert cfg["refit_epochs"] == 2 and cfg["refit_settle_s"] == 60.0
    last = [json.loads(line) for line in (out / "epochs.jsonl").read_text().splitlines()][-1]
    assert "test_error_before_refit" in last and last["refit_wall_s"] > 0


def test_missing_data_path_exits_2(tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    assert main(["train", "--data", str(missing), "--epochs", "1", "--layers", "20", "--quiet"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_unknown_command_exits_2(capsys):
    assert main(["fly"]) == 2
    assert "fly" in capsys.readouterr().err


def test_train_size_is_respected(tmp_path):
    vectors = {}
    for size in (200, 400):
        out = tmp_path / f"n{size}"
        assert main(["train", "--preset", "pcm", "--layers", "20,20", "--epochs", "1", "--mini", "--train-size",
                     str(size), "--out", str(out), "--quiet", "--policy", "mixed"]) == 0
        config = json.loads((out / "config.json").read_text())
        assert config["train_size"] == size and config["ff"]["policy"] == "mixed"
        assert json.loads((out / "summary.json").read_text())["pulses"] > 0
        chip = devices.load_chip(latest_checkpoint(out / "checkpoints") / CHIP_FILE)
        vectors[size] = chip.ledger.counts["vectors"]
    # 200 more images: each is read in the neutral, positive and negative passes through both layers;
    # the evaluation on the 2000 test images is the same in both runs
    assert vectors[400] - vectors[200] == 200 * 3 * 2


@pytest.mark.parametrize("size", ["-100", "0", "100000"])
def test_impossible_train_size_exits_2(size, tmp_path, capsys):
    code = main(["train", "--mini", "--epochs", "1", "--layers", "20", "--quiet", "--train-size", size,
                 "--out", str(tmp_path / "out")])
    if code == 0:  # at least the recorded size must be the number of images actually used
        config = json.loads((tmp_path / "out" / "config.json").read_text())
        assert 1 <= config["train_size"] <= 6000 and str(config["train_size"]) == size
    assert code == 2
    assert "train-size" in capsys.readouterr().err
