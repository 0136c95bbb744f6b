"""Learner checkpoints that never lose, mix or silently change a user's work (issue 15).

Each test names the item of issue 15 it covers.  The chip files themselves are covered in
``test_devices_persistence.py`` (seal, field checks, damaged files) and
``test_devices_bad_input.py`` (clock overflow, chips too large for memory); the random
edits in ``test_saved_files_property.py``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

import devices
from mortal.data import load_mnist_mini
from mortal.errors import InputError
from mortal.ff import CHIP_FILE, LEARNER_FILE, FFConfig, FFLearner, latest_checkpoint, load_learner
from mortal.ff import checkpoint as ckmod
from mortal.ff.config import _GROUPS
from toy_chip import ToyChip

ROOT = Path(__file__).resolve().parents[1]
SIZES = (784, 16, 12)
#: An ideal chip whose weight updates cost nothing: the ledgers of two such chips that did the
#: same work are equal to the last bit whatever their seeds (only the weights differ).
FREE_UPDATES = devices.variant("ideal", energy={"pulse_j": 0.0})


@pytest.fixture(scope="module")
def data():
    m = load_mnist_mini()
    return m.train_images[:200], m.train_labels[:200]


@pytest.fixture(scope="module")
def cfg():
    return FFConfig(defaults="hinton", policy="direct", epochs=2, seed=3)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, data, cfg):
    """A checkpoint folder of a 2-epoch run on an ideal chip (seed 1)."""
    directory = tmp_path_factory.mktemp("run") / "ck"
    FFLearner(cfg).fit(devices.make_chip(FREE_UPDATES, SIZES, 1), *data, checkpoint_dir=directory,
                       checkpoint_every=1, progress=False)
    return directory


@pytest.fixture
def run(saved, tmp_path):
    """A private copy of the saved checkpoint folder."""
    return Path(shutil.copytree(saved, tmp_path / "ck"))


def _refusals(directory, chip, data, cfg):
    """Every way to load the checkpoint: each must raise; returns the exceptions."""
    out = []
    for call in (lambda: ckmod.read_checkpoint(latest_checkpoint(directory)),
                 lambda: load_learner(directory, chip),
                 lambda: FFLearner(cfg).fit(chip, *data, resume=directory, progress=False)):
        with pytest.raises(InputError) as err:
            call()
        out.append(err.value)
    return out


# -- item 5: the chip itself is recognized, not its ledger -----------------------------------------------
def test_resume_and_load_refuse_another_ideal_chip_with_an_equal_ledger(run, data, cfg, snapshot,
                                                                         assert_same_state):
    other = devices.make_chip(FREE_UPDATES, SIZES, 2)
    FFLearner(cfg).fit(other, *data, progress=False)  # the same training on another chip
    right = devices.load_chip(latest_checkpoint(run) / CHIP_FILE)
    assert (other.ledger.total_energy_j, other.ledger.total_time_s) == \
        (right.ledger.total_energy_j, right.ledger.total_time_s)  # what the old check compared
    before = snapshot(other)
    with pytest.raises(InputError, match="not the chip saved"):
        FFLearner(cfg).fit(other, *data, resume=run, progress=False)
    with pytest.raises(InputError, match="not the chip saved"):
        load_learner(run, other)
    assert_same_state(before, snapshot(other))
    # the chip saved there is accepted, by both
    assert load_learner(run, right).epoch == 2
    assert FFLearner(cfg).fit(right, *data, resume=run, progress=False).epoch == 2
    # another chip's own sealed file put in the checkpoint's place loads, but is not the chip
    other.save(latest_checkpoint(run) / CHIP_FILE)
    with pytest.raises(InputError, match="not the chip saved"):
        load_learner(run, devices.load_chip(latest_checkpoint(run) / CHIP_FILE))


class SavingToyChip(ToyChip):
    """A hand-written chip with ``save`` but no ``state_digest``."""

    def save(self, path):
        np.save(Path(path).with_suffix(".npy"), np.zeros(1))
        return path


def test_chips_without_a_state_digest_are_recognized_by_their_ledger(tmp_path, data, cfg):
    chip = SavingToyChip((784, 16, 12), 0)
    FFLearner(cfg).fit(chip, *data, checkpoint_dir=tmp_path, progress=False)
    meta, _ = ckmod.read_checkpoint(latest_checkpoint(tmp_path))
    assert set(meta["chip"]) == {"energy_j", "time_s"}
    assert load_learner(tmp_path, chip).epoch == 2
    chip.wait(1.0)  # the ledger moved: no longer the chip saved
    with pytest.raises(InputError, match="not the chip saved"):
        load_learner(tmp_path, chip)


# -- items 11, 12: damaged checkpoints are ValueErrors naming the file -----------------------------------
@pytest.mark.parametrize("where", [0, 20, 300, 1 / 4, 1 / 2, 3 / 4, -400, -100, -84, -70, -1])
def test_a_flipped_bit_in_a_learner_checkpoint_is_refused(run, data, cfg, where):
    path = latest_checkpoint(run) / LEARNER_FILE
    raw = bytearray(path.read_bytes())
    raw[int(where * len(raw)) if isinstance(where, float) else where % len(raw)] ^= 0x10
    path.write_bytes(bytes(raw))
    chip = devices.load_chip(latest_checkpoint(run) / CHIP_FILE)
    for err in _refusals(run, chip, data, cfg):
        assert str(path) in str(err)


@pytest.mark.parametrize("keep", [0, 3, 100, 1 / 2, -100, -83, -1])
def test_a_truncated_learner_checkpoint_is_refused(run, data, cfg, keep):
    path = latest_checkpoint(run) / LEARNER_FILE
    raw = path.read_bytes()
    path.write_bytes(raw[:int(keep * len(raw)) if isinstance(keep, float) else keep % len(raw)])
    chip = devices.load_chip(latest_checkpoint(run) / CHIP_FILE)
    for err in _refusals(run, chip, data, cfg):
        assert str(path) in str(err)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00", b"", b"epoch-0009\n", b"../../elsewhere\n", b"epoch-00\x802\n"])
def test_a_damaged_latest_pointer_is_refused_naming_it(run, content):
    (run / "LATEST").write_bytes(content)
    with pytest.raises(InputError) as err:
        latest_checkpoint(run)
    assert str(run / "LATEST") in str(err.value)


@pytest.mark.parametrize("what", ["flip", "truncate"])
def test_a_damaged_chip_in_a_checkpoint_is_refused(run, what):
    path = latest_checkpoint(run) / CHIP_FILE
    raw = bytearray(path.read_bytes())
    if what == "flip":
        raw[len(raw) // 2] ^= 0x01
    else:
        del raw[len(raw) // 2:]
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError) as err:
        devices.load_chip(path)
    assert str(path) in str(err.value)


def test_a_corrupt_compressed_learner_checkpoint_is_refused(run):
    # Item 12: a compressed archive whose deflate stream is damaged (here a pre-seal file, the only
    # kind that can be compressed) gives an InputError naming the file, with or without legacy.
    path = latest_checkpoint(run) / LEARNER_FILE
    with np.load(path) as z:
        arrays = dict(z)
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    meta["format"] = "mortal-learner/2"
    np.savez_compressed(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("head.npy")
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little") \
        + int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    raw[start] |= 0b110  # the first deflate block's type becomes 3, which does not exist
    path.write_bytes(bytes(raw))
    for legacy in (False, True):
        with pytest.raises(InputError) as err:
            ckmod.read_checkpoint(path.parent, legacy=legacy)
        assert str(path) in str(err.value)


def test_both_copies_of_the_seal_agree(run):
    # mortal.ff does not import devices, so the seal is written by two copies of the same code.
    ck = latest_checkpoint(run)
    for path in (ck / LEARNER_FILE, ck / CHIP_FILE):
        for status in (devices.archive.seal_status, ckmod.seal_status):
            with open(path, "rb") as fh:
                assert status(fh) == "sealed"
    assert (devices.archive.SEAL, devices.archive.SEAL_LEN) == (ckmod.SEAL, ckmod.SEAL_LEN)


# -- item 6 for checkpoints: any edit is refused, and a file built by the writer is still checked --------
def test_a_learner_checkpoint_resaved_with_numpy_is_refused(run, data, cfg):
    path = latest_checkpoint(run) / LEARNER_FILE
    with np.load(path) as z:
        arrays = dict(z)
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    meta["state"]["epoch"] = 1
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    chip = devices.load_chip(latest_checkpoint(run) / CHIP_FILE)
    for err in _refusals(run, chip, data, cfg):
        assert str(path) in str(err) and "lacks the seal" in str(err)


def test_invalid_saved_settings_are_named_without_pydantic_links(run):
    path = latest_checkpoint(run) / LEARNER_FILE
    meta, arrays = ckmod.read_checkpoint(path.parent)
    meta["config"]["optimizer"]["lr"] = 50.0
    ckmod._write_learner(path, meta, arrays)
    with pytest.raises(InputError, match=r"optimizer\.lr: Input should be less than or equal to 10") as err:
        ckmod.saved_config(run)
    assert str(path) in str(err.value) and "http" not in str(err.value)


# -- item 20: a refused resume names the settings that differ ------------------------------------------
def test_a_refused_resume_names_each_differing_setting(run, data, cfg):
    chip = devices.load_chip(latest_checkpoint(run) / CHIP_FILE)
    with pytest.raises(InputError, match=r"optimizer\.lr: 0\.01 saved, 0\.02 now"):
        FFLearner(cfg.changed(lr=0.02)).fit(chip, *data, resume=run, progress=False)
    with pytest.raises(InputError) as err:
        load_learner(run, chip, cfg.changed(policy="mixed", seed=4, refit={"epochs": 3}))
    text = str(err.value)
    for phrase in ('policy: "direct" saved, "mixed" now', "seed: 3 saved, 4 now", "refit.epochs: 0 saved, 3 now"):
        assert phrase in text
    assert "epochs: 2" not in text.replace("refit.epochs", "")  # epochs may change: never named
    assert ckmod.config_differences(cfg, cfg.changed(epochs=5)) == []


# -- item 21: settings refuse NaN and infinity with a clear message ---------------------------------------
def _float_fields():
    for group, model in _GROUPS.items():
        for name, field in model.model_fields.items():
            if field.annotation is float:
                yield f"{group}.{name}"


@pytest.mark.parametrize("dotted", list(_float_fields()))
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan", "inf"])
def test_float_settings_refuse_nan_and_infinity(dotted, value):
    group, name = dotted.split(".")
    with pytest.raises(ValidationError) as err:
        FFConfig(**{group: {name: value}})
    assert "finite number" in str(err.value) and dotted in str(err.value)


def test_every_float_setting_was_checked():
    assert len(list(_float_fields())) >= 10
    for model in _GROUPS.values():
        assert issubclass(model, BaseModel) and model.model_config.get("allow_inf_nan") is False


# -- item 22: leftovers of a killed save, and folder permissions ----------------------------------------
KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys
    import devices
    from mortal.ff import FFConfig, FFLearner
    from mortal.ff.checkpoint import save_checkpoint

    directory = sys.argv[1]
    chip = devices.make_chip("ideal", (784, 8), 0)
    cfg = FFConfig(defaults="hinton", epochs=3)
    state = FFLearner(cfg).new_state(chip, 784, 10)
    state.epoch = 1
    save_checkpoint(cfg, state, chip, directory)
    save = type(chip).save

    def save_then_die(self, path):  # killed while the next checkpoint is being written
        save(self, path)
        os.kill(os.getpid(), signal.SIGKILL)

    type(chip).save = save_then_die
    state.epoch = 2
    save_checkpoint(cfg, state, chip, directory)
""")


def test_a_killed_save_leaves_the_last_checkpoint_and_the_next_save_clears_its_leftovers(tmp_path):
    directory = tmp_path / "ck"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(directory)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = [p for p in directory.iterdir() if p.name.startswith(".epoch-0002.")]
    assert len(leftovers) == 1 and (leftovers[0] / CHIP_FILE).is_file()
    (directory / ".LATEST.k1ll3d").write_text("epoch-0002\n")  # a pointer killed before its rename
    assert latest_checkpoint(directory).name == "epoch-0001"  # the last checkpoint is intact
    chip = devices.load_chip(directory / "epoch-0001" / CHIP_FILE)
    learner = load_learner(directory, chip)
    learner.state.epoch = 2
    ckmod.save_checkpoint(learner.config, learner.state, chip, directory)
    assert sorted(p.name for p in directory.iterdir()) == ["LATEST", "epoch-0002"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_checkpoint_folders_and_files_follow_the_umask(tmp_path, umask):
    chip = devices.make_chip("ideal", (784, 8), 0)
    cfg = FFConfig(defaults="hinton", epochs=3)
    state = FFLearner(cfg).new_state(chip, 784, 10)
    old = os.umask(umask)
    try:
        final = ckmod.save_checkpoint(cfg, state, chip, tmp_path / "ck")
    finally:
        os.umask(old)
    assert (final.stat().st_mode & 0o777) == 0o777 & ~umask  # mkdtemp made it 0700 whatever the umask
    for path in (final / CHIP_FILE, final / LEARNER_FILE, final.parent / "LATEST"):
        assert (path.stat().st_mode & 0o777) == 0o666 & ~umask, path.name


# -- checkpoints saved before the seal -------------------------------------------------------------------
def _make_pre_seal(ck):
    """Rewrite a checkpoint as the code before the seal wrote it (plain np.savez, no digest); its
    chip file becomes format 1, which this version of devices refuses."""
    path = ck / LEARNER_FILE
    with np.load(path) as z:
        arrays = dict(z)
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    meta["format"] = "mortal-learner/2"
    del meta["chip"]["digest"]
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    chip_arrays, chip_meta = devices.load_chip(ck / CHIP_FILE).payload()
    chip_meta["format"] = "mortal-chip/1"
    np.savez(ck / CHIP_FILE, meta=np.frombuffer(json.dumps(chip_meta).encode(), np.uint8), **chip_arrays)


def test_a_checkpoint_saved_before_the_seal_is_refused_until_upgraded(run, data, cfg):
    ck = latest_checkpoint(run)
    chip = devices.load_chip(ck / CHIP_FILE)  # the chip, as its owner still holds it
    digest = chip.state_digest()
    _make_pre_seal(ck)
    # Its chip file holds a device state this version does not read: refused by its format, with
    # or without legacy (which changes nothing).
    for legacy in (False, True):
        with pytest.raises(ValueError, match=r"earlier version of mortal \(format 'mortal-chip/1'\)") as err:
            devices.load_chip(ck / CHIP_FILE, legacy=legacy)
        assert str(ck / CHIP_FILE) in str(err.value)
    # The learner file is refused until sealed once, with the chip saved in it.
    for err in _refusals(run, chip, data, cfg):
        assert "upgrade_checkpoint" in str(err) and str(ck / LEARNER_FILE) in str(err)
    other = devices.make_chip(FREE_UPDATES, SIZES, 7)
    with pytest.raises(InputError, match="not the chip saved"):
        ckmod.upgrade_checkpoint(run, other)
    assert ckmod.upgrade_checkpoint(run, chip) == ck
    chip = devices.load_chip(ck / CHIP_FILE)  # written again by the upgrade: sealed, this version's format
    assert chip.state_digest() == digest
    assert load_learner(run, chip).epoch == 2
    assert FFLearner(cfg.changed(epochs=3)).fit(chip, *data, resume=run, progress=False).epoch == 3
