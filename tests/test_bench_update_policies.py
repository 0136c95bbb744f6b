"""``bench_update_policies.py --refits``: a run's training energy plus each refit's, worked by hand."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

import devices
from devices.spec import CONTROLLER_MULTIPLY_ADD_J


def _bench(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return importlib.import_module("bench_update_policies")


def _run(tmp_path: Path, refit_epochs: int = 0) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    summary = {"preset": "rram", "layers": [784, 20, 20], "epochs": 2, "policy": "analog", "bit_length": 10,
               "lr": 0.01, "train_size": 200, "batch_size": 100, "head_layers": "all",
               "test_error": {"softmax": 0.3, "goodness": 0.4}, "refit_epochs": refit_epochs, "pulses": 1000,
               "median_train_s_per_epoch": 1.0}
    (run / "summary.json").write_text(json.dumps(summary))
    epochs = [{"epoch": e, "train_energy_j": {"digital": 0.002, "program": 0.001, "array": 0.0005}} for e in (1, 2)]
    (run / "epochs.jsonl").write_text("\n".join(json.dumps(r) for r in epochs) + "\n")
    return run


def _refits(tmp_path: Path, images: int = 200) -> Path:
    path = tmp_path / "refits.json"
    path.write_text(json.dumps({
        "refit_images": images,
        "teacher": {"as saved": 0.3, "labels 3:0.0": 0.25},
        "refit_energy_j": {"teacher labels 3:0.0": {"by_category": {"digital": 0.003, "adc": 0.0001},
                                                    "digital_ops": 1}},
    }))
    return path


def test_a_refit_row_adds_the_refits_energy_to_the_trainings(tmp_path, monkeypatch):
    bench = _bench(monkeypatch)
    run, refits = _run(tmp_path), _refits(tmp_path)
    (row,) = bench._refit_rows(f"{run}:{refits}")
    assert row["run"] == "run, refit 3:0.0 (epochs:weight cost)"
    assert row["error"] == {"softmax": 0.25}
    # training 0.004 + 0.002 + 0.001 J, refit 0.003 + 0.0001 J
    assert row["total"] == pytest.approx(0.0101)
    assert row["energy"]["digital"] == pytest.approx(0.007)
    assert row["digital_share"] == pytest.approx(0.007 / 0.0101)
    fp32 = devices.get_preset("rram").energy.digital_op_j
    int8 = fp32 * CONTROLLER_MULTIPLY_ADD_J["int8"] / CONTROLLER_MULTIPLY_ADD_J["fp32"]
    ops = 0.007 / fp32
    assert row["int8_total"] == pytest.approx(0.0031 + ops * int8)
    assert row["int8_digital_share"] == pytest.approx(ops * int8 / (0.0031 + ops * int8))
    base = bench._row(run)
    assert row["gpu"] > base["gpu"]  # the refit's head epochs and its one pass are added


def test_refit_rows_refuse_a_run_with_its_own_refit_or_other_images(tmp_path, monkeypatch):
    bench = _bench(monkeypatch)
    with pytest.raises(SystemExit, match="RUN:REFITS"):
        bench._refit_rows(str(tmp_path))
    run = _run(tmp_path, refit_epochs=30)
    with pytest.raises(SystemExit, match="30-epoch head refit"):
        bench._refit_rows(f"{run}:{_refits(tmp_path)}")
    held = tmp_path / "held"
    held.mkdir()
    run = _run(held)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "evaluated_on": "test set"}))
    refits = _refits(held)
    data = json.loads(refits.read_text())
    refits.write_text(json.dumps({**data, "errors_on": "last 10000 training images"}))
    with pytest.raises(SystemExit, match="--holdout"):
        bench._refit_rows(f"{run}:{refits}")
    other = tmp_path / "other"
    other.mkdir()
    run = _run(other)
    with pytest.raises(SystemExit, match="--train-size 200"):
        bench._refit_rows(f"{run}:{_refits(other, images=50)}")
