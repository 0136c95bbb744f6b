"""Saving and loading chips: bit-identical resumption, atomic writes, clear errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import devices

SIZES = (12, 10, 6)


def _ops(chip, rng: np.random.Generator, waits: tuple[float, ...]) -> list[np.ndarray]:
    """Reads, programs and waits driven by ``rng``; returns every read."""
    outs = []
    for seconds in waits:
        r = chip.info.input_range[0]
        r = r if math.isfinite(r) else 1.0
        x = rng.uniform(-r, r, (5, SIZES[0])).astype(np.float32)
        outs.append(chip.read(0, x))
        outs.append(chip.read(1, outs[-1]))
        for layer in range(2):
            step = chip.info.pulse_step[layer] or 0.01
            shape = chip.info.weight_shapes[layer]
            chip.program(layer, (rng.integers(-4, 5, shape) * step).astype(np.float32))
        chip.wait(seconds)
    return outs


def test_round_trip_mid_use_is_bit_identical(preset_name, tmp_path, snapshot, assert_same_state):
    saved = devices.make_chip(preset_name, SIZES, seed=31)
    twin = devices.make_chip(preset_name, SIZES, seed=31)
    for chip in (saved, twin):
        _ops(chip, np.random.default_rng(1), waits=(0.5, 50.0))
    path = saved.save(tmp_path / "chip.npz")
    assert path == tmp_path / "chip.npz" and path.is_file()
    loaded = devices.load_chip(path)
    assert_same_state(snapshot(loaded), snapshot(twin))
    assert loaded.info == twin.info
    assert loaded.spec == twin.spec
    # From here on the three behave identically: the loaded chip, the chip that was
    # saved (saving changes nothing) and the twin that never was.
    runs = [_ops(c, np.random.default_rng(2), waits=(3.0, 1e4, 0.0)) for c in (loaded, saved, twin)]
    for outs in runs[:2]:
        for a, b in zip(outs, runs[2]):
            np.testing.assert_array_equal(a, b, strict=True)
    assert_same_state(snapshot(loaded), snapshot(twin))
    assert_same_state(snapshot(saved), snapshot(twin))


def test_save_creates_missing_folders(tmp_path):
    chip = devices.make_chip("pcm", SIZES, seed=1)
    path = chip.save(tmp_path / "a" / "b" / "chip.npz")
    assert devices.load_chip(path).info == chip.info


def test_save_is_atomic(tmp_path, monkeypatch, snapshot, assert_same_state):
    chip = devices.make_chip("pcm", SIZES, seed=3)
    path = chip.save(tmp_path / "chip.npz")
    old_bytes = path.read_bytes()
    old_state = snapshot(devices.load_chip(path))
    chip.program(0, np.full(chip.info.weight_shapes[0], 3 * chip.info.pulse_step[0], np.float32))

    def crash(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        chip.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chip.npz"]  # no temporary file left
    assert_same_state(snapshot(devices.load_chip(path)), old_state)
    # A save that succeeds replaces the file.
    chip.save(path)
    assert path.read_bytes() != old_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chip.npz"]


def _write_text(p):
    p.write_text("not a chip\n")


def _write_npy(p):
    with open(p, "wb") as fh:  # np.save would append ".npy" to the name
        np.save(fh, np.arange(3))


def _write_plain_npz(p):
    np.savez(p, x=np.arange(3))


def _write_foreign_meta(p):
    np.savez(p, meta=np.frombuffer(json.dumps({"format": "something/9"}).encode(), np.uint8))


def _write_empty(p):
    p.write_bytes(b"")


def _write_bad_zip(p):
    p.write_bytes(b"PK\x03\x04" + bytes(range(256)))


@pytest.mark.parametrize("writer,message", [
    (_write_text, "not a saved chip"),
    (_write_npy, "not a saved chip"),
    (_write_plain_npz, "not a saved chip"),
    (_write_foreign_meta, "unsupported format"),
    (_write_empty, "not a saved chip"),
    (_write_bad_zip, "not a saved chip"),
])
def test_loading_a_file_that_is_not_a_chip_raises_value_error(tmp_path, writer, message):
    path = tmp_path / "thing.npz"
    writer(path)
    with pytest.raises(ValueError, match=message):
        devices.load_chip(path)


def test_loading_a_truncated_chip_raises_value_error(tmp_path):
    path = devices.make_chip("rram", SIZES, seed=4).save(tmp_path / "chip.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a saved chip"):
        devices.load_chip(path)


def test_loading_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved chip"):
        devices.load_chip(tmp_path / "nowhere.npz")
    with pytest.raises(FileNotFoundError):
        devices.load_chip(tmp_path)  # a folder is not a file


def test_load_refuses_arrays_of_the_wrong_shape_or_dtype(tmp_path):
    chip = devices.make_chip("pcm", (6, 4), seed=0)
    path = chip.save(tmp_path / "chip.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for key, bad in (("L0_g", arrays["L0_g"][:, :-1]), ("L0_wear", arrays["L0_wear"].astype(np.float32))):
        broken = dict(arrays, **{key: bad})
        np.savez(tmp_path / "broken.npz", **broken)
        with pytest.raises(ValueError, match="not a valid saved chip"):
            devices.load_chip(tmp_path / "broken.npz")
