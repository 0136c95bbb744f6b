"""``bench_recurrent.py --checkpoint-dir/--resume``: a stopped run continues to the result of an
uninterrupted one (on a small MNIST file made from the bundled subset)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import devices
from mortal.errors import InputError
from mortal.ff import CHIP_FILE, latest_checkpoint

COMMON = ["--layers", "16,16", "--eval-every", "0", "--set", "labels.strength=4"]


@pytest.fixture
def bench(bench_script):
    return bench_script("bench_recurrent", 200)


def _digest(directory: Path) -> str:
    return devices.load_chip(latest_checkpoint(directory) / CHIP_FILE).state_digest()


def test_a_stopped_run_resumes_to_the_uninterrupted_result(bench, tmp_path, monkeypatch, capsys):
    whole = tmp_path / "whole"
    assert bench.main(COMMON + ["--epochs", "2", "--checkpoint-dir", str(whole), "--out", str(tmp_path / "w.json")]) == 0
    # the same run, stopped after its first epoch's checkpoint (the learner saves it before the
    # epoch's line is printed)
    part = tmp_path / "part"

    def stop_after_epoch_1(*args, **kwargs):
        if args and str(args[0]).startswith("epoch 1:"):
            raise KeyboardInterrupt
    monkeypatch.setattr(bench, "print", stop_after_epoch_1, raising=False)
    with pytest.raises(KeyboardInterrupt):
        bench.main(COMMON + ["--epochs", "2", "--checkpoint-dir", str(part)])
    monkeypatch.delattr(bench, "print")
    assert latest_checkpoint(part).name == "epoch-0001"
    capsys.readouterr()
    assert bench.main(COMMON + ["--epochs", "2", "--checkpoint-dir", str(part), "--resume",
                                "--out", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    assert "epoch 2:" in printed and "epoch 1:" not in printed  # it continued, it did not start over
    w, r = (json.loads((tmp_path / f).read_text()) for f in ("w.json", "r.json"))
    assert r["resumed"] and not w["resumed"]
    times = [e["train_wall_s"] for e in r["epochs_log"]]
    assert r["train_s_per_epoch_median"] == pytest.approx(float(np.median(times)))
    assert [e["epoch"] for e in r["epochs_log"]] == [1, 2]  # the epoch before the resume is kept
    assert [e["train_error_online"] for e in r["epochs_log"]] == [e["train_error_online"] for e in w["epochs_log"]]
    assert r["error"] == w["error"] and r["train_energy_j"] == w["train_energy_j"]
    assert _digest(part) == _digest(whole)


def test_resume_needs_the_folder_and_the_run_settings(bench, tmp_path):
    with pytest.raises(SystemExit):
        bench.main(COMMON + ["--epochs", "2", "--resume"])
    part = tmp_path / "part"
    assert bench.main(COMMON + ["--epochs", "1", "--checkpoint-dir", str(part)]) == 0
    other = ["--layers", "16,16", "--eval-every", "0", "--set", "labels.strength=2"]
    with pytest.raises(InputError):
        bench.main(other + ["--epochs", "2", "--checkpoint-dir", str(part), "--resume"])
    for wrong in (["--layers", "16,12"], ["--preset", "pcm"]):
        with pytest.raises(SystemExit):
            bench.main(COMMON + wrong + ["--epochs", "2", "--checkpoint-dir", str(part), "--resume"])
