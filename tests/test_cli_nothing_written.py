"""Bad input found late (by the run itself, not the parser) still writes nothing, and a resumed
run keeps what its folder records."""

from __future__ import annotations

import json

from mortal.cli import main

TINY = ["--mini", "--train-size", "200", "--layers", "20", "--quiet", "--set", "train.defaults=hinton"]


def test_lifetime_refused_by_the_run_writes_nothing(tmp_path, capsys):
    out = tmp_path / "life"
    args = ["lifetime", "--mini", "--train-size", "300", "--layers", "10", "--epochs", "1", "--generations", "1",
            "--set", "probe_size=6000", "--out", str(out), "--quiet"]
    assert main(args) == 2
    assert "probe_size" in capsys.readouterr().err
    assert not out.exists()


def test_demo_with_a_bad_setting_keeps_the_earlier_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text("{}")  # an earlier demo, which a good run would replace
    for bad in ("train.optimizer.lr=-1", "distill.negatives=bogus"):
        assert main(["demo", "--out", str(out), "--chips", "1", "--quiet", "--set", bad]) == 2
        assert bad.split("=")[0] in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == ["demo.json"]


def test_resume_with_epochs_flag_and_set_epochs_lets_the_flag_win(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *TINY, "--epochs", "1", "--seed", "5", "--out", str(out)]) == 0
    assert main(["train", *TINY, "--epochs", "2", "--set", "train.epochs=3", "--resume", "--out", str(out)]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 5  # the recorded seed, not the command line's default
    assert config["train"]["epochs"] == 2
    assert [json.loads(line)["epoch"] for line in (out / "epochs.jsonl").read_text().splitlines()] == [1, 2]


def test_resume_takes_the_recorded_train_size_with_the_data_flag(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    # --mini again, but no --train-size: the recorded 200 examples are used, so the data matches.
    assert main(["train", "--mini", "--layers", "20", "--quiet", "--set", "train.defaults=hinton", "--epochs", "2",
                 "--resume", "--out", str(out)]) == 0, capsys.readouterr().err
