"""The top-down layout of a chip: extra input rows that carry the layer above (the label on top)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import devices
from devices import archive
from mortal.chip import check_chip, top_down_widths

SIZES = (20, 12, 9, 6)


def _chip(preset="ideal", seed=3, label=4):
    return devices.make_chip(preset, SIZES, seed, top_down=devices.top_down_layout(SIZES, label))


def test_layout_shapes_and_info():
    assert devices.top_down_layout(SIZES, 4) == (9, 6, 4)
    chip = _chip()
    assert chip.info.top_down == (9, 6, 4)
    assert chip.info.weight_shapes == ((20 + 9 + 1, 12), (12 + 6 + 1, 9), (9 + 4 + 1, 6))
    assert check_chip(chip) is chip
    assert top_down_widths(chip.info) == (9, 6, 4)
    # a plain chip reports zeros and keeps its shapes, fabrication and file contents
    plain = devices.make_chip("ideal", SIZES, 3)
    assert plain.info.top_down == (0, 0, 0)
    assert plain.info.weight_shapes == ((21, 12), (13, 9), (10, 6))
    same = devices.make_chip("ideal", SIZES, 3, top_down=(0, 0, 0))
    assert same.state_digest() == plain.state_digest()
    assert "top_down" not in plain.payload()[1]
    # partial layouts: only the label on top, or one middle layer
    only_label = devices.make_chip("ideal", SIZES, 3, top_down=(0, 0, 10))
    assert only_label.info.weight_shapes[-1] == (20, 6)
    assert devices.make_chip("ideal", SIZES, 3, top_down=(0, 6, 0)).info.weight_shapes[1] == (19, 9)


def test_read_takes_bottom_up_then_top_down_inputs_and_is_charged_for_the_whole_array():
    chip = _chip("pcm")
    plain = devices.make_chip("pcm", SIZES, 3)
    with pytest.raises(ValueError, match=r"expected \(batch, 29\)"):
        chip.read(0, np.zeros((2, 20), np.float32))
    x = np.ones((5, 29), np.float32) * 0.1
    chip.read(0, x)
    plain.read(0, np.ones((5, 20), np.float32) * 0.1)
    # a read drives every row of the array: more rows, more array and DAC energy
    for category in ("dac", "array"):
        assert chip.ledger.energy_j[category] > plain.ledger.energy_j[category] > 0
    assert chip.ledger.counts["reads"] == plain.ledger.counts["reads"] == 1


def test_read_of_ideal_top_down_chip_is_the_exact_product():
    chip = _chip()
    rng = np.random.default_rng(7)
    level = np.float32(chip.info.bias_level)
    for layer, (rows, cols) in enumerate(chip.info.weight_shapes):
        n_up = SIZES[layer]
        up = rng.normal(0, 1, (17, n_up)).astype(np.float32)
        down = rng.normal(0, 1, (17, rows - 1 - n_up)).astype(np.float32)
        W = devices.inspect(chip).layers[layer].weights
        assert W.shape == (rows, cols)
        want = np.maximum(up @ W[:n_up] + down @ W[n_up:-1] + level * W[-1], np.float32(0))
        got = chip.read(layer, np.concatenate([up, down], axis=1))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert (got > 0).any() and (got == 0).any()
        # the top-down rows matter: silencing them changes the result
        silent = chip.read(layer, np.concatenate([up, np.zeros_like(down)], axis=1))
        assert not np.allclose(silent, got)
        # programming a top-down row changes only what that row drives
        delta = np.zeros((rows, cols), np.float32)
        delta[n_up] = 0.5
        chip.program(layer, delta)
        np.testing.assert_array_equal(devices.inspect(chip).layers[layer].weights, W + delta)


@pytest.mark.parametrize("preset", ["ideal", "pcm"])
def test_save_and_load_round_trip(tmp_path, preset):
    chip = _chip(preset)
    x = np.full((3, 29), 0.2, np.float32)
    chip.read(0, x)
    chip.program(1, np.full(chip.info.weight_shapes[1], 0.01, np.float32))
    path = chip.save(tmp_path / "c.npz")
    back = devices.load_chip(path)
    assert back.info == chip.info
    assert back.info.top_down == (9, 6, 4)
    assert back.state_digest() == chip.state_digest()
    np.testing.assert_array_equal(back.read(0, x), chip.read(0, x))
    # the layout is part of the state: another layout, another digest
    assert _chip(preset).state_digest() != devices.make_chip(preset, SIZES, 3).state_digest()


def _rewrite_meta(src, dst, edit):
    with zipfile.ZipFile(src) as z:
        entries = {n[:-4]: np.load(z.open(n)) for n in z.namelist()}
    meta = json.loads(entries["meta"].tobytes().decode())
    edit(meta)
    entries["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    archive.atomic_savez(dst, entries)  # sealed again: only the field checks can refuse it


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(top_down=[9, 5, 4]), r"top_down\[1\] = 5"),
    (lambda m: m.update(top_down=[9, 6]), "one width per layer"),
    (lambda m: m.update(top_down=[0, 0, 0]), "some top-down input"),
    (lambda m: m.pop("top_down"), "disagree with layer_sizes"),
    (lambda m: m.update(top_down=[9, 6, 5]), "disagree with layer_sizes"),
])
def test_load_refuses_inconsistent_layouts(tmp_path, edit, match):
    path = _chip().save(tmp_path / "c.npz")
    _rewrite_meta(path, tmp_path / "bad.npz", edit)
    with pytest.raises(ValueError, match=match):
        devices.load_chip(tmp_path / "bad.npz")


@pytest.mark.parametrize("top_down, match", [
    ((9, 6), "one width per layer"),
    ((8, 6, 4), r"top_down\[0\] = 8"),
    ((9, -1, 4), r"top_down\[1\] must be an integer >= 0"),
    ((9, 6, 1.5), r"top_down\[2\] must be an integer"),
    ((True, 6, 4), r"top_down\[0\] must be an integer"),
    (5, "sequence of one integer per layer"),
])
def test_make_chip_refuses_inconsistent_layouts(top_down, match):
    with pytest.raises(ValueError, match=match):
        devices.make_chip("ideal", SIZES, 0, top_down=top_down)
    with pytest.raises(ValueError, match=match):
        devices.check_memory("ideal", SIZES, top_down)


def test_top_down_layout_refusals():
    with pytest.raises(ValueError, match="label_width"):
        devices.top_down_layout(SIZES, 0)
    with pytest.raises(ValueError, match="layer_sizes"):
        devices.top_down_layout((5,), 3)


def test_check_chip_on_hand_written_datasheets():
    base = dict(layer_sizes=(3, 2, 2), trainable=(True, True), input_range=(1.0, 1.0),
                weight_range=(1.0, 1.0), pulse_step=(0.1, 0.1), output_range=(1.0, 1.0), bias_level=1.0,
                digital_op_energy_j=1e-12, digital_op_time_s=1e-9)

    class Hand:
        ledger = devices.Ledger()

        def __init__(self, info):
            self.info = info

        def read(self, layer, x): ...
        def program(self, layer, delta): ...
        def wait(self, seconds): ...

    # without top_down (an empty field stands for "none"): the plain shapes
    check_chip(Hand(devices.ChipInfo(weight_shapes=((4, 2), (3, 2)), **base)))
    with pytest.raises(TypeError, match="weight_shapes"):
        check_chip(Hand(devices.ChipInfo(weight_shapes=((6, 2), (3, 2)), **base)))
    # with it: the shapes must count the top-down rows
    check_chip(Hand(devices.ChipInfo(weight_shapes=((6, 2), (6, 2)), top_down=(2, 3), **base)))
    check_chip(Hand(devices.ChipInfo(weight_shapes=((4, 2), (6, 2)), top_down=(0, 3), **base)))
    with pytest.raises(TypeError, match=r"weight_shapes .* top_down \(0, 3\)"):
        check_chip(Hand(devices.ChipInfo(weight_shapes=((4, 2), (3, 2)), top_down=(0, 3), **base)))
    with pytest.raises(TypeError, match="top_down"):  # layer 0 hears 1 of the 2 units above
        check_chip(Hand(devices.ChipInfo(weight_shapes=((5, 2), (3, 2)), top_down=(1, 0), **base)))
