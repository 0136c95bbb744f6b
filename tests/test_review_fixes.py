"""Fixes of a review: oversized chips refused up front, no in-place rewrite of a resumed
fleet's config, finite numbers only, settle_s needs a refit, the chip digest required in
current checkpoints, records of chips outside the config set aside on resume."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

import devices
from mortal.config import ConfigError, config_from_dict
from mortal.data import load_dataset, load_mnist_mini
from mortal.distill import DistillConfig
from mortal.errors import InputError
from mortal.ff import CHIP_FILE, LEARNER_FILE, FFConfig, FFLearner, latest_checkpoint, load_learner
from mortal.ff import checkpoint as ckmod
from mortal.fleet import CONFIG_FILE, RECORDS_FILE, REJECTED_FILE, load_run, run_fleet
from mortal.lifetime import LifetimeConfig, run_lifetime

HUGE = [1_000_000_000]
TINY = {
    "name": "tiny", "seed": 7, "chips": 2,
    "chip": {"preset": "pcm", "layers": [16, 12]},
    "train": {"epochs": 1, "batch_size": 50},
    "data": {"source": "mini", "train_size": 300, "test_size": 100},
}


def _cfg(**changes):
    raw = json.loads(json.dumps(TINY))
    raw.update(changes)
    return config_from_dict(raw)


# -- 1: oversized chips -----------------------------------------------------------------------------

def test_check_memory_is_public():
    devices.check_memory("pcm", (784, 16))
    with pytest.raises(ValueError, match="memory"):
        devices.check_memory("pcm", (784, *HUGE))
    with pytest.raises(ValueError, match="layer_sizes"):
        devices.check_memory("pcm", (784,))


@pytest.mark.parametrize("sweep", [None, {"chip.layers": [[16], HUGE]}])
@pytest.mark.parametrize("check_data", [True, False])
def test_fleet_refuses_oversized_chips_up_front(tmp_path, sweep, check_data):
    raw = {"chip": {"preset": "pcm", "layers": HUGE if sweep is None else [16]}}
    if sweep is not None:
        raw["sweep"] = sweep
    cfg = _cfg(**raw)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="memory"):
        run_fleet(cfg, out, workers=1, check_data=check_data)
    assert time.perf_counter() - t0 < 1.0
    assert not out.exists() or not any(out.iterdir())


def test_lifetime_refuses_oversized_chips_up_front():
    data = load_dataset("mini")
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="memory"):
        run_lifetime(LifetimeConfig(layers=tuple(HUGE)), data, emit=lambda ev: pytest.fail("an event was emitted"))
    assert time.perf_counter() - t0 < 1.0


def test_demo_refuses_oversized_chips_before_the_folder(tmp_path):
    from mortal.demo import run_demo

    out = tmp_path / "demo"
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="memory"):
        run_demo(out, layers=tuple(HUGE), quiet=True)
    assert time.perf_counter() - t0 < 1.0
    assert not out.exists()


# -- 2 and 6: a resumed fleet -----------------------------------------------------------------------

def test_resume_leaves_the_config_alone_and_sets_foreign_records_aside(tmp_path):
    cfg = _cfg()
    out = tmp_path / "run"
    run_fleet(cfg, out, workers=1)
    cfg_path, rec_path = out / CONFIG_FILE, out / RECORDS_FILE
    before = cfg_path.stat()
    lines = rec_path.read_bytes().splitlines(keepends=True)
    rec = json.loads(lines[0])
    foreign = dict(rec, key="p0000-c00009", chip=9)
    foreign_line = (json.dumps(foreign) + "\n").encode()
    rec_path.write_bytes(b"".join(lines) + foreign_line)
    skipped: list = []
    load_run(out, skipped=skipped)
    assert any("not one of the config's" in why for _, why in skipped)

    res = run_fleet(cfg, out, workers=1, resume=True)
    assert res.ran == 0 and len(res.records) == 2
    after = cfg_path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    assert [json.loads(x)["key"] for x in rec_path.read_bytes().splitlines()] == ["p0000-c00000", "p0000-c00001"]
    assert (out / REJECTED_FILE).read_bytes() == foreign_line
    skipped = []
    load_run(out, skipped=skipped)
    assert skipped == []


# -- 3: finite numbers ------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda v: LifetimeConfig(margin=v),
    lambda v: DistillConfig(min_confidence=v),
    lambda v: LifetimeConfig(distill={"min_confidence": v}),
])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nan_and_inf_are_refused_as_not_finite(make, value):
    with pytest.raises(ValidationError, match="finite number"):
        make(value)


def test_experiment_configs_refuse_nan():
    with pytest.raises(ConfigError, match="finite number"):
        _cfg(train={"epochs": 1, "batch_size": 50, "optimizer": {"lr": math.nan}})


# -- 4: settle_s needs a refit ----------------------------------------------------------------------

def test_settle_without_refit_is_refused():
    msg = r"refit\.settle_s needs refit\.epochs > 0"
    with pytest.raises(ValidationError, match=msg):
        FFConfig(refit={"epochs": 0, "settle_s": 5.0})
    with pytest.raises(ValidationError, match=msg):
        FFConfig(defaults="hinton", settle_s=5.0)
    with pytest.raises(ValidationError, match=msg):
        FFConfig(settle_s=5.0).changed(**{"refit.epochs": 0})
    with pytest.raises(ConfigError, match=msg):
        _cfg(train={"epochs": 1, "batch_size": 50, "refit": {"epochs": 0, "settle_s": 5.0}})
    hinton = FFConfig(defaults="hinton")
    assert hinton.refit.epochs == 0 and hinton.refit.settle_s == 0
    assert hinton.changed(epochs=3).epochs == 3
    both = hinton.changed(**{"refit.epochs": 2, "refit.settle_s": 5.0})
    assert (both.refit.epochs, both.refit.settle_s) == (2, 5.0)
    assert FFConfig(settle_s=5.0).refit.settle_s == 5.0


# -- 5: the chip digest is required in current checkpoints ------------------------------------------

def test_a_current_checkpoint_without_the_chip_digest_is_refused(tmp_path):
    m = load_mnist_mini()
    cfg = FFConfig(defaults="hinton", policy="direct", epochs=1, seed=3)
    ckdir = tmp_path / "ck"
    FFLearner(cfg).fit(devices.make_chip("ideal", (784, 16), 1), m.train_images[:100], m.train_labels[:100],
                       checkpoint_dir=ckdir, progress=False)
    ck = latest_checkpoint(ckdir)
    chip = devices.load_chip(ck / CHIP_FILE)
    load_learner(ckdir, chip)  # as saved: accepted
    meta, arrays = ckmod.read_checkpoint(ck)
    assert "digest" in meta["chip"]
    del meta["chip"]["digest"]
    ckmod._write_learner(ck / LEARNER_FILE, meta, arrays)  # sealed again, as an editor could
    with pytest.raises(InputError, match="records no digest of its chip") as err:
        load_learner(ckdir, chip)
    assert str(ck / LEARNER_FILE) in str(err.value)
