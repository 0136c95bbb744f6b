"""``bench_drift_columns.py``: the per-column slope arithmetic, bad arguments refused, and a run
on a small saved `pcm` chip (a small MNIST file made from the bundled subset)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import devices
from mortal.ff import FFConfig, FFLearner


@pytest.fixture
def bench(bench_script):
    return bench_script("bench_drift_columns", 200)


def test_column_slopes_recover_a_per_column_scale(bench):
    rng = np.random.default_rng(3)
    before = rng.normal(size=(50, 4)).astype(np.float32)
    scale = np.array([0.5, 0.8, 1.0, 2.0])
    slope, resid = bench.column_slopes(before, before * scale)
    assert slope == pytest.approx(scale, rel=1e-6)
    assert resid == pytest.approx(0.0, abs=1e-6)
    noise = 0.1 * rng.normal(size=before.shape)
    _, resid = bench.column_slopes(before, before + noise)
    assert 0.05 < resid < 0.2  # the added spread, about 0.1 of the RMS weight


def test_bad_arguments_are_refused(bench, tmp_path):
    for argv in (["--teacher-dir", str(tmp_path), "--ages", "0"],
                 ["--teacher-dir", str(tmp_path), "--ages", "one"],
                 ["--teacher-dir", str(tmp_path), "--reference", "0"],
                 ["--teacher-dir", str(tmp_path / "missing")]):
        with pytest.raises(SystemExit):
            bench.main(argv)


def test_a_run_on_a_saved_pcm_chip(bench, tmp_path):
    from mortal.data import load_mnist

    data = load_mnist()
    chip = devices.make_chip("pcm", (784, 24, 16), seed=5)
    FFLearner(FFConfig(epochs=1)).fit(chip, data.train_images, data.train_labels, n_classes=10,
                                     checkpoint_dir=tmp_path / "t", progress=False)
    out = tmp_path / "r.json"
    bench.main(["--teacher-dir", str(tmp_path / "t"), "--ages", "1,365", "--reference", "50", "--out", str(out)])
    r = json.loads(out.read_text())
    day, year = r["ages"]["1 d"], r["ages"]["365 d"]
    for row in (day, year):
        assert len(row["true"]) == len(row["measured"]) == 2
        assert set(row["error"]) == {"none", "global", "column"}
        assert all(0.0 <= e[k] <= 1.0 for e in row["error"].values() for k in ("goodness", "softmax"))
    # PCM drift shrinks the weights, more after a year than after a day
    for d, y in zip(day["true"], year["true"]):
        assert y["column_slope"]["mean"] < d["column_slope"]["mean"] < 1.0
