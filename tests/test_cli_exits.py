"""Exit codes as promised (issue 15): 2 only for bad input with nothing written, and then one
``mortal: error:`` line naming what is wrong; a chip that dies in a lifetime is a result (0);
options that would be silently ignored are refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cli_helpers import one_error_line, tree_digest
from mortal.cli import main

TINY = ["--preset", "ideal", "--layers", "20", "--mini", "--train-size", "200", "--quiet",
        "--set", "train.defaults=hinton"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "t"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    return out


# -- item 17: a lifetime whose chip dies is a result -----------------------------------------------

def test_a_lifetime_whose_chip_dies_exits_0(tmp_path, capsys):
    """After a thousand simulated years nearly every device has failed: the chip is dead and can
    teach no successor.  The lineage ends there (exit 0, its events and figure written); it once
    exited 2, "the teacher chip is dead", after writing its events."""
    out = tmp_path / "life"
    code = main(["lifetime", "--mini", "--train-size", "1000", "--layers", "20", "--epochs", "1",
                 "--generations", "2", "--check-every", "1000y", "--max-age", "2000y",
                 "--set", "train.defaults=hinton", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] in ("dying", "retired") and events[-1]["dead"] is True
    assert "nothing can be handed on" in events[-1]["reason"]
    assert {e["generation"] for e in events} == {0} and "distilled" not in {e["event"] for e in events}
    assert (out / "lifetime.png").is_file()
    assert "(dead)" in captured.out  # the table's last column


@pytest.mark.parametrize("argv,needle", [
    (["train", *TINY, "--epochs", "1", "--set", "train.batch_size=100000"], "fewer than one batch"),
    (["train", "--mini", "--layers", "20", "--epochs", "1", "--train-size", "50", "--quiet"], "fewer than one batch"),
    (["lifetime", "--mini", "--layers", "10", "--epochs", "1", "--train-size", "50", "--quiet"], "probe_size"),
])
def test_input_refused_late_exits_2_and_writes_nothing(argv, needle, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(argv + ["--out", str(out)]) == 2
    assert needle in one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_a_multi_line_data_error_is_one_line(tmp_path, monkeypatch, capsys):
    """MNIST not found offline: the loader's message lists the places searched on several lines;
    the command prints it as the one error line it promises."""
    monkeypatch.delenv("MORTAL_DATA", raising=False)
    monkeypatch.setenv("MORTAL_OFFLINE", "1")
    monkeypatch.setenv("MORTAL_CACHE", str(tmp_path / "cache"))
    assert main(["train", "--data", "mnist", "--layers", "10", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "out")]) == 2
    assert "MNIST data not found" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


# -- item 19: distill blames missing data on the data ----------------------------------------------

def test_distill_with_missing_data_blames_the_data(teacher, tmp_path, capsys):
    before = tree_digest(teacher)
    for teacher_dir in (teacher, tmp_path / "no-teacher"):  # whatever the teacher folder
        assert main(["distill", "--teacher", str(teacher_dir), "--data", "/nonexistent.npz", "--quiet",
                     "--out", str(tmp_path / "s")]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert line.startswith("mortal: error: --data /nonexistent.npz: ") and "does not exist" in line, line
        assert str(teacher_dir) not in line
    assert tree_digest(teacher) == before and not (tmp_path / "s").exists()


def test_distill_names_the_teachers_record_when_its_data_is_gone(teacher, tmp_path, capsys):
    moved = tmp_path / "t"
    moved.mkdir()
    for p in teacher.iterdir():
        if p.is_file():
            (moved / p.name).write_bytes(p.read_bytes())
    (moved / "checkpoints").symlink_to(teacher / "checkpoints")
    config = json.loads((moved / "config.json").read_text())
    config["data"]["source"] = str(tmp_path / "gone.npz")
    (moved / "config.json").write_text(json.dumps(config))
    assert main(["distill", "--teacher", str(moved), "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "the teacher's data" in line and str(moved / "config.json") in line and "gone.npz" in line


def test_distill_with_data_smaller_than_the_teachers_says_so(teacher, tmp_path, capsys):
    import numpy as np

    small = tmp_path / "small.npz"
    rng = np.random.default_rng(0)
    np.savez(small, x_train=rng.integers(0, 256, (100, 28, 28), dtype=np.uint8), y_train=np.arange(100) % 10,
             x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), y_test=np.arange(20) % 10)
    assert main(["distill", "--teacher", str(teacher), "--data", str(small), "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"--data {small}" in line and "100 training examples, fewer than the 200" in line


def test_distill_refuses_an_out_inside_its_teacher(teacher, capsys):
    before = tree_digest(teacher)
    for out in (teacher, teacher / "student"):
        assert main(["distill", "--teacher", str(teacher), "--quiet", "--overwrite", "--out", str(out)]) == 2
        assert "overlap" in one_error_line(capsys.readouterr().err)
    assert tree_digest(teacher) == before


# -- item 22: options that would be silently ignored are refused -----------------------------------

def test_checkpoint_every_without_out_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--epochs", "1", "--checkpoint-every", "1"]) == 2
    assert "--checkpoint-every needs --out" in one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["train", "lifetime", "distill"])
def test_overwrite_without_out_is_refused(command, teacher, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = {"train": ["train", *TINY, "--epochs", "1"],
            "lifetime": ["lifetime", "--mini", "--layers", "10", "--quiet"],
            "distill": ["distill", "--teacher", str(teacher), "--quiet"]}[command]
    assert main(argv + ["--overwrite"]) == 2
    assert "--overwrite needs --out" in one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag,value", [("--seed", "6"), ("--preset", "rram"), ("--layers", "20,20")])
def test_resume_refuses_preset_layers_or_seed_other_than_the_runs(flag, value, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *TINY, "--epochs", "1", "--seed", "5", "--out", str(out)]) == 0
    before = tree_digest(out)
    argv = ["train", *TINY, "--epochs", "2", "--resume", "--out", str(out)]
    if flag == "--preset":
        argv[argv.index("--preset") + 1] = value
    elif flag == "--layers":
        argv[argv.index("--layers") + 1] = value
    else:
        argv += [flag, value]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{flag} {value}" in line and "--resume" in line
    assert tree_digest(out) == before


@pytest.mark.parametrize("argv", [
    ["train", *TINY, "--epochs", "1", "--set", "train.refit.settle_s=60"],  # hinton: no refit
    ["train", "--mini", "--layers", "10", "--epochs", "1", "--train-size", "200", "--quiet",
     "--set", "train.refit.epochs=0", "--set", "train.refit.settle_s=5"],
    ["lifetime", "--mini", "--layers", "10", "--quiet", "--set", "train.refit.epochs=0",
     "--set", "train.refit.settle_s=5"],
    ["distill", "--quiet", "--set", "train.refit.settle_s=5"],  # the teacher (hinton) has no refit
])
def test_a_settle_time_without_a_refit_is_refused(argv, teacher, tmp_path, capsys):
    if argv[0] == "distill":
        argv = argv + ["--teacher", str(teacher)]
    assert main(argv + ["--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert re.search(r"train[.:] ?refit\.settle_s", line) and "refit.epochs" in line  # FFConfig's message
    assert not (tmp_path / "out").exists()


def test_the_settle_time_refusal_says_what_to_do(tmp_path, capsys):
    assert main(["train", *TINY, "--epochs", "1", "--set", "train.refit.settle_s=60",
                 "--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert re.search(r"train[.:] ?refit\.settle_s", line) and "refit.epochs > 0" in line
