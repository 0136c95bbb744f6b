"""Saving and loading chips: bit-identical resumption, atomic writes, clear errors.

Saved chips are format ``mortal-chip/3`` (the compact device state of ``devices.parameters.
state_layout`` and the scalars t_eval, t_prog_max, t_base, fab_key, fail_key, pulses_since);
archives of formats 1 and 2 are refused by name.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import devices
from devices import _devstate, archive
from devices.parameters import programming_parameters

SIZES = (12, 10, 6)
#: The formats written by earlier versions, whose device state this version no longer holds.
OLD_FORMATS = ("mortal-chip/1", "mortal-chip/2")


def _ops(chip, rng: np.random.Generator, waits: tuple[float, ...]) -> list[np.ndarray]:
    """Reads, programs, program-and-verify writes and waits driven by ``rng``; returns every read."""
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
        w_max = chip.info.weight_range[1]
        w_max = w_max if math.isfinite(w_max) else 1.0
        chip.program_verify(1, rng.uniform(-0.9 * w_max, 0.9 * w_max, chip.info.weight_shapes[1]).astype(np.float32))
        outs.append(chip.read(1, outs[-2]))
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
    assert loaded.state_digest() == saved.state_digest() == twin.state_digest()
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
    assert loaded.state_digest() == saved.state_digest() == twin.state_digest()


def _pcm_past_refreshes(seed: int):
    """A pcm chip whose layer 0 was programmed with large deltas of a fixed sign per weight, so
    often that its devices reach the refresh threshold, across a rebase of its programming times."""
    chip = devices.make_chip("pcm", SIZES, seed=seed)
    sign = np.where(np.random.default_rng(seed).random(chip.info.weight_shapes[0]) < 0.5, -1.0, 1.0)
    big = (sign * chip.spec.programming.max_pulses * chip.info.pulse_step[0]).astype(np.float32)
    for k in range(12):
        chip.wait(5e4 if k in (4, 8) else 1.0)  # programs after 1e5 s move t_base (REBASE_S) once
        chip.program(0, big)
    return chip, big


def test_a_pcm_chip_past_pair_refreshes_resumes_bit_identically(tmp_path, snapshot, assert_same_state):
    saved, big = _pcm_past_refreshes(seed=31)
    twin, _ = _pcm_past_refreshes(seed=31)
    # Pairs were refreshed: program() charges verify reads only for the refresh of a pair.
    assert saved.ledger.counts["verify_reads"] > 0
    t_base = saved._layers[0].t_base
    assert t_base > 0  # saved with rebased programming times
    loaded = devices.load_chip(saved.save(tmp_path / "chip.npz"))
    assert_same_state(snapshot(loaded), snapshot(twin))
    assert loaded.state_digest() == saved.state_digest()  # the scalars too (t_base, keys, pulses_since)
    x = np.random.default_rng(4).uniform(-1, 1, (7, SIZES[0])).astype(np.float32)
    target = np.random.default_rng(5).uniform(-0.5, 0.5, twin.info.weight_shapes[0]).astype(np.float32)
    verify_reads, runs = [], []
    for chip in (loaded, saved, twin):
        before = chip.ledger.counts["verify_reads"]
        outs = [chip.read(0, x)]  # first from the cache as saved, right after a program call
        for k in range(6):  # programming, refreshes, reads, waits and a rebase of t_base
            chip.wait(1.0 if k < 3 else 6e4)
            chip.program(0, big)
            outs.append(chip.read(0, x))
        verify_reads.append(chip.ledger.counts["verify_reads"] - before)  # of refreshes after the load
        chip.program_verify(0, target)
        outs.append(chip.read(0, x))
        chip.program(0, -big)
        chip.wait(5.0)
        outs.append(chip.read(0, x))
        runs.append(outs)
    assert verify_reads[0] > 0 and len(set(verify_reads)) == 1
    assert loaded._layers[0].t_base > t_base  # the programming times were rebased again after loading
    for chip, outs in zip((loaded, saved), runs):
        for a, b in zip(outs, runs[2], strict=True):
            np.testing.assert_array_equal(a, b, strict=True)
        assert_same_state(snapshot(chip), snapshot(twin))
        assert chip.state_digest() == twin.state_digest()


@pytest.mark.parametrize("preset", ["pcm", "rram"])
def test_a_chip_saved_right_after_program_verify_reads_like_the_original(preset, tmp_path):
    # program_verify refreshes the layer's cache (weights, read-noise sums); the next reads use
    # it as it is, so what a load derives from the saved sums must be what the chip had.
    twin = devices.make_chip(preset, SIZES, seed=12)
    saved = devices.make_chip(preset, SIZES, seed=12)
    target = np.random.default_rng(6).uniform(-0.6, 0.6, twin.info.weight_shapes[0]).astype(np.float32)
    target *= twin.info.weight_range[0]
    for chip in (saved, twin):
        chip.program_verify(0, target)
    loaded = devices.load_chip(saved.save(tmp_path / "chip.npz"))
    x = np.random.default_rng(7).uniform(-1, 1, (64, SIZES[0])).astype(np.float32)
    reads = [[c.read(0, x) for _ in range(3)] for c in (loaded, saved, twin)]
    for run in reads[:2]:
        for a, b in zip(run, reads[2], strict=True):
            np.testing.assert_array_equal(a, b, strict=True)
    assert not np.array_equal(reads[2][0], reads[2][1])  # the reads are noisy: the noise is compared too
    assert loaded.state_digest() == twin.state_digest()


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


def _entries(path):
    """The arrays of a saved archive and its metadata (decoded)."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(arrays.pop("meta").tobytes().decode())


def _write_sealed(path, arrays, meta):
    """Write an archive as ``AnalogChip.save`` does (sealed), so that what ``load_chip`` then
    refuses is refused for its values, not for a missing seal."""
    devices.archive.atomic_savez(path, dict(arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8)))
    return path


def _write_unsealed(path, arrays, meta):
    """Write an archive with numpy alone: a valid zip, but not sealed."""
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    return path


def _listing(folder):
    """Every file under ``folder`` with its bytes: what a refused load must leave as it was."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("key,bad", [
    ("L0_g", lambda a: a[:, :-1]),                       # one column short
    ("L0_g", lambda a: a[0]),                            # one device of each pair
    ("L0_life", lambda a: a.astype(np.float32)),         # the old endurance's dtype
    ("L0_nu", lambda a: a.astype(np.float32)),           # the old drift exponent's dtype
    ("L1_nu", lambda a: a.astype(np.uint32)),
    ("L0_t_rel", lambda a: a.astype(np.float64)),        # the old t_prog's dtype
    ("L1_w_eff", lambda a: a.T),
    ("L0_row_var", lambda a: a[:-1]),
    ("L1_col_var", lambda a: a.astype(np.float32)),
])
def test_load_refuses_arrays_of_the_wrong_shape_or_dtype(tmp_path, key, bad):
    chip = devices.make_chip("pcm", (6, 4, 3), seed=0)
    path = chip.save(tmp_path / "chip.npz")
    arrays, meta = _entries(path)
    broken = dict(arrays, **{key: np.ascontiguousarray(bad(arrays[key]))})
    # re-saved with numpy: refused for the missing seal; sealed by save's own writer: for its values
    for write, phrase in ((_write_unsealed, "lacks the seal"), (_write_sealed, f"saved array '{key[3:]}' is")):
        edited = write(tmp_path / "broken.npz", broken, meta)
        before = _listing(tmp_path)
        with pytest.raises(ValueError, match=phrase) as err:
            devices.load_chip(edited)
        assert str(edited) in str(err.value) and "not a valid saved chip" in str(err.value)
        assert _listing(tmp_path) == before


# -- saved files are sealed and checked (issue 15, items 6, 11, 12) -----------------------------------
def _used_chip(preset="pcm", seed=8):
    """A small chip that has read, programmed and waited (a non-trivial ledger and state)."""
    chip = devices.make_chip(preset, SIZES, seed=seed)
    _ops(chip, np.random.default_rng(3), waits=(2.0,))
    return chip


def _node(meta, path):
    for key in path:
        meta = meta[int(key)] if isinstance(meta, list) else meta[key]
    return meta


def _set(meta, dotted, value):
    *path, last = dotted.split(".")
    _node(meta, path)[last] = value


def _edit_array(name, index, value):
    def edit(arrays, meta):
        arrays[name] = arrays[name].copy()
        arrays[name][index] = value
    return edit


def _edit_meta(dotted, value):
    def edit(arrays, meta):
        _set(meta, dotted, value)
    return edit


def _drop_meta(dotted):
    def edit(arrays, meta):
        *path, last = dotted.split(".")
        del _node(meta, path)[last]
    return edit


def _drop_array(name):
    def edit(arrays, meta):
        del arrays[name]
    return edit


def _add_array(name):
    def edit(arrays, meta):
        arrays[name] = np.zeros(3)
    return edit


def _add_layer_array(layer, name, value):
    """An array the layer's metadata lists as its own (``value(arrays)``)."""
    def edit(arrays, meta):
        arrays[f"L{layer}_{name}"] = value(arrays)
        meta["layers"][layer]["arrays"] = sorted(meta["layers"][layer]["arrays"] + [name])
    return edit


def _stick_a_drifting_device(layer):
    """Mark a working device stuck (life 0) but leave its drift exponent: no chip holds that."""
    def edit(arrays, meta):
        life, nu = arrays[f"L{layer}_life"].copy(), arrays[f"L{layer}_nu"]
        life[tuple(np.argwhere((life != 0) & (nu != 0))[0])] = 0
        arrays[f"L{layer}_life"] = life
    return edit


def _g_sat(arrays, meta, layer):
    """Each device's own saturation level, from the saved fabrication key (as the chip derives it)."""
    pp = programming_parameters(devices.ChipSpec.model_validate(meta["spec"]))
    out = [np.empty(arrays[f"L{layer}_g"].shape, np.float32) for _ in range(3)]
    _devstate.device_constants(np.uint64(meta["layers"][layer]["scalars"]["fab_key"]), pp, *out)
    return out[0]


def _above_own_saturation(layer):
    """Set a device just above its own saturation level, which lies below the largest any
    device can have (1.5): only a per-device check refuses it."""
    def edit(arrays, meta):
        g_sat = _g_sat(arrays, meta, layer)
        g = arrays[f"L{layer}_g"].copy()
        idx = tuple(np.argwhere(g_sat < 1.2)[0])
        g[idx] = g_sat[idx] * np.float32(1.001)
        arrays[f"L{layer}_g"] = g
    return edit


# Each edit makes a file no chip could have written; the phrase is what load_chip says about it.
INVALID_EDITS = {
    "layer_sizes disagree with the arrays": (_edit_meta("layer_sizes", [12, 10, 7]), "disagree with layer_sizes"),
    "a layer's n_in disagrees": (_edit_meta("layers.0.n_in", 11), "disagree with layer_sizes"),
    "a stuck device that drifts": (_stick_a_drifting_device(0), "'nu'"),
    "NaN conductance": (_edit_array("L0_g", (0, 1, 2), np.nan), "'g'"),
    "negative conductance": (_edit_array("L1_g", (1, 0, 1), -0.01), "'g'"),
    "conductance above saturation": (_edit_array("L1_g", (0, 0, 0), 2.0), "'g'"),
    "conductance above the device's own saturation": (_above_own_saturation(0), "'g'"),
    "programmed after the clock": (_edit_array("L0_t_rel", (0, 0, 0), 1e9), "'t_rel'"),
    "programmed before fabrication": (_edit_array("L1_t_rel", (1, 2, 3), -10.0), "'t_rel'"),
    "NaN programming time": (_edit_array("L0_t_rel", (1, 1, 1), np.nan), "'t_rel'"),
    "infinite effective weight": (_edit_array("L0_w_eff", (2, 3), np.inf), "'w_eff'"),
    "negative row conductance sum": (_edit_array("L1_row_gsum", 0, -1.0), "'row_gsum'"),
    "NaN row read-noise sum": (_edit_array("L0_row_var", 1, np.nan), "'row_var'"),
    "negative column read-noise sum": (_edit_array("L1_col_var", 2, -1.0), "'col_var'"),
    "NaN neuron gain": (_edit_array("L1_gain", 0, np.nan), "'gain'"),
    "neuron curvature out of range": (_edit_array("L0_curv", 0, 3.0), "'curv'"),
    "negative ledger energy": (_edit_meta("ledger.energy_j.dac", -1.0), "ledger"),
    "NaN ledger time": (_edit_meta("ledger.time_s.idle", math.nan), "ledger"),
    "negative count": (_edit_meta("ledger.counts.pulses", -3), "ledger counts"),
    "an update category in energy only": (_edit_meta("ledger.energy_j.drivers", 1e-9), "same categories"),
    "another digital-op cost": (_edit_meta("ledger.digital_op_j", 1.0), "digital operation costs"),
    "t_eval after the clock": (_edit_meta("layers.1.scalars.t_eval", 1e12), "after the chip's clock"),
    "t_prog_max NaN": (_edit_meta("layers.0.scalars.t_prog_max", math.nan), "t_prog_max"),
    "t_base after the clock": (_edit_meta("layers.0.scalars.t_base", 1e12), "t_base"),
    "negative t_base": (_edit_meta("layers.1.scalars.t_base", -1.0), "t_base"),
    "fab_key beyond 2**63": (_edit_meta("layers.0.scalars.fab_key", 2**63), "fab_key"),
    "fab_key not an integer": (_edit_meta("layers.1.scalars.fab_key", 1.5), "fab_key"),
    "negative fail_key": (_edit_meta("layers.0.scalars.fail_key", -1), "fail_key"),
    "fail_key a string": (_edit_meta("layers.1.scalars.fail_key", "7"), "fail_key"),
    "fail_key true": (_edit_meta("layers.0.scalars.fail_key", True), "fail_key"),
    "pulses_since NaN": (_edit_meta("layers.1.scalars.pulses_since", math.nan), "pulses_since"),
    "the failure key dropped": (_drop_meta("layers.1.scalars.fail_key"), "saved scalars"),
    "a scalar of the old layout": (_edit_meta("layers.0.scalars.wear", 0), "saved scalars"),
    "an array of the old layout": (_add_layer_array(0, "wear", lambda a: np.zeros(a["L0_life"].shape, np.uint32)),
                                   "saved layer holds arrays"),
    "trainable flags short": (_edit_meta("trainable", [True]), "trainable"),
    "negative seed": (_edit_meta("seed.entropy", -1), "seed"),
    "read stream garbage": (_edit_meta("read_rng", {"bit_generator": "PCG64", "state": 3}), "read_rng"),
    "write stream of another generator": (_edit_meta("write_rng.bit_generator", "MT19937"), "write_rng"),
    "spec out of range": (_edit_meta("spec.adc.bits", -2), "spec"),
    "spec of an unknown device law": (_edit_meta("spec.read_noise.device_law", "pcm_2f"), "spec"),
    "an unknown metadata field": (_edit_meta("extra", 1), "metadata fields"),
    "a missing array": (_drop_array("L1_nu"), "lacks"),
    "an extra array": (_add_array("L9_x"), "unexpected entries"),
    "the wear counters dropped": (_drop_array("L0_life"), "lacks"),
}


@pytest.mark.parametrize("name", sorted(INVALID_EDITS))
def test_load_checks_every_field_of_a_sealed_file(tmp_path, name):
    # Item 6: even a file sealed by save's own writer is refused if a field is one no chip holds.
    edit, phrase = INVALID_EDITS[name]
    arrays, meta = _entries(_used_chip().save(tmp_path / "chip.npz"))
    edit(arrays, meta)
    path = _write_sealed(tmp_path / "edited.npz", arrays, meta)
    before = _listing(tmp_path)
    for legacy in (False, True):  # legacy=True changes nothing
        with pytest.raises(ValueError, match=phrase) as err:
            devices.load_chip(path, legacy=legacy)
        assert str(path) in str(err.value) and "not a valid saved chip" in str(err.value)
    assert _listing(tmp_path) == before  # a refused load writes nothing and changes no file


@pytest.mark.parametrize("name", sorted(INVALID_EDITS) + ["other ADC bits", "another seed", "another fabrication key",
                                                          "another failure key", "a wear counter changed", "no change"])
def test_any_edit_resaved_with_numpy_is_refused(tmp_path, name):
    # Item 6: the seal.  An archive re-saved by other means is refused whatever it holds, even
    # an edit its values cannot betray (the ADC's bits changed reads by up to 0.086 in the issue).
    edits = dict(INVALID_EDITS, **{"other ADC bits": (_edit_meta("spec.adc.bits", 6), None),
                                   "another seed": (_edit_meta("seed.entropy", 12345), None),
                                   "another fabrication key": (_edit_meta("layers.0.scalars.fab_key", 12345), None),
                                   "another failure key": (_edit_meta("layers.1.scalars.fail_key", 12345), None),
                                   "a wear counter changed": (_edit_array("L0_life", (0, 1, 1), 5), None),
                                   "no change": (lambda arrays, meta: None, None)})
    arrays, meta = _entries(_used_chip().save(tmp_path / "chip.npz"))
    edits[name][0](arrays, meta)
    path = _write_unsealed(tmp_path / "edited.npz", arrays, meta)
    with pytest.raises(ValueError, match="lacks the seal") as err:
        devices.load_chip(path)
    assert str(path) in str(err.value)


def test_an_edit_behind_a_copied_seal_is_refused(tmp_path):
    # The old seal appended to an edited archive no longer matches its bytes.
    import zipfile

    path = _used_chip().save(tmp_path / "chip.npz")
    with zipfile.ZipFile(path) as z:
        seal = z.comment
    arrays, meta = _entries(path)
    _set(meta, "spec.adc.bits", 6)
    edited = _write_unsealed(tmp_path / "edited.npz", arrays, meta)
    with zipfile.ZipFile(edited, "a") as z:
        z.comment = seal
    with pytest.raises(ValueError, match="do not match the seal") as err:
        devices.load_chip(edited)
    assert str(edited) in str(err.value)


def _flip(path, offset, mask=0x01):
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", [0, 5, 40, 100, 1 / 3, 1 / 2, 0.9, -300, -120, -90, -84, -83, -64, -1])
def test_a_flipped_bit_anywhere_is_refused(tmp_path, where):
    # Items 11: headers, array data, the central directory, the zip comment and the seal itself.
    good = _used_chip().save(tmp_path / "chip.npz")
    size = good.stat().st_size
    offset = int(where * size) if isinstance(where, float) else where % size
    _flip(good, offset)
    with pytest.raises(ValueError) as err:
        devices.load_chip(good)
    assert str(good) in str(err.value)


@pytest.mark.parametrize("keep", [0, 1, 4, 30, 1 / 2, -200, -84, -83, -40, -1])
def test_a_truncated_file_is_refused_at_any_length(tmp_path, keep):
    # Item 11: a file cut anywhere (zip headers, central directory, comment, seal).
    path = _used_chip().save(tmp_path / "chip.npz")
    data = path.read_bytes()
    n = int(keep * len(data)) if isinstance(keep, float) else keep % len(data)
    path.write_bytes(data[:n])
    with pytest.raises(ValueError) as err:
        devices.load_chip(path)
    assert str(path) in str(err.value)


def _member_data(path, name):
    """Offset and length of member ``name``'s (compressed) bytes in the zip at ``path``."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", fh.read(4))
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


@pytest.mark.parametrize("member", ["meta.npy", "L0_g.npy", "L1_life.npy"])
def test_a_corrupt_compressed_stream_is_a_value_error(tmp_path, member):
    # Item 12: a compressed archive whose deflate stream is damaged gave zlib.error.  Sealed after
    # the damage, so that load_chip reads every member (it reads only the metadata of an unsealed file).
    import zipfile
    import zlib

    chip = _used_chip()
    arrays, meta = chip.payload()
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    start, length = _member_data(path, member)
    data = bytearray(path.read_bytes())
    data[start] |= 0b110  # the first deflate block's type becomes 3, which does not exist
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as z, pytest.raises(zlib.error):  # the damage this test is about
        z.read(member)
    with open(path, "r+b") as fh:
        archive.seal(fh)
    with open(path, "rb") as fh:
        assert archive.seal_status(fh) == "sealed"
    for legacy in (False, True):
        with pytest.raises(ValueError, match="not a saved chip") as err:
            devices.load_chip(path, legacy=legacy)
        assert str(path) in str(err.value)


# -- archives of earlier formats (1: before the seal; 2: sealed, the per-device layout before format 3) -------
def _old_layout(chip):
    """``chip``'s payload in the layout formats 1 and 2 held: per device a float64 programming
    time, a float32 drift exponent, a block of response parameters, endurance, wear counter,
    stuck flag and failure time and side; only t_eval and t_prog_max as scalars."""
    arrays, meta = chip.payload()
    state = devices.inspect(chip)
    old = {}
    for i, lm in enumerate(meta["layers"]):
        layer = {k: arrays[f"L{i}_{k}"] for k in lm["arrays"]}
        L = state.layers[i]
        if L.g is not None:
            layer = {k: layer[k] for k in ("w_eff", "row_gsum", "gain", "offset", "curv", "sat", "g")}
            layer.update(t_prog=L.t_prog, nu=L.nu, params=np.stack([L.g_sat, L.step_up, L.step_down, L.g_sat]),
                         endurance=np.minimum(L.pulses_left, 1e30).astype(np.float32),
                         wear=np.zeros(L.g.shape, np.uint32), stuck=L.stuck, fail_at=L.failure_time,
                         fail_on=np.zeros(L.g.shape, np.int8))
        lm["arrays"] = sorted(layer)
        lm["scalars"] = {k: lm["scalars"][k] for k in ("t_eval", "t_prog_max")}
        old.update({f"L{i}_{k}": v for k, v in layer.items()})
    return old, meta


def _relabelled(chip):
    """``chip``'s payload as it is, only the format changed later: the format alone is refused."""
    return chip.payload()


@pytest.mark.parametrize("fmt", OLD_FORMATS)
@pytest.mark.parametrize("layout", [_old_layout, _relabelled])
@pytest.mark.parametrize("write", [_write_sealed, _write_unsealed])
def test_archives_of_earlier_formats_are_refused_naming_their_format(tmp_path, fmt, layout, write):
    # Format 1 was unsealed, format 2 sealed; either way the device state they hold is not this
    # version's, and legacy=True (kept for callers of earlier versions) changes nothing.
    arrays, meta = layout(_used_chip())
    meta["format"] = fmt
    path = write(tmp_path / "old.npz", arrays, meta)
    before = _listing(tmp_path)
    messages = set()
    for legacy in (False, True):
        with pytest.raises(ValueError) as err:
            devices.load_chip(path, legacy=legacy)
        text = str(err.value)
        assert text.startswith(f"{path} was saved by an earlier version of mortal (format {fmt!r})"), text
        assert repr(archive.FORMAT) in text and "fabricate the chip again from its spec and seed" in text
        messages.add(text)
    assert len(messages) == 1
    assert _listing(tmp_path) == before


def test_an_earlier_format_with_a_broken_seal_is_refused_for_the_seal(tmp_path):
    arrays, meta = _old_layout(_used_chip())
    meta["format"] = "mortal-chip/2"
    path = _write_sealed(tmp_path / "old.npz", arrays, meta)
    _flip(path, path.stat().st_size // 2)
    for legacy in (False, True):
        with pytest.raises(ValueError, match="do not match the seal"):
            devices.load_chip(path, legacy=legacy)


def test_legacy_true_changes_nothing(tmp_path, snapshot, assert_same_state):
    chip = _used_chip()
    path = chip.save(tmp_path / "chip.npz")
    a, b = devices.load_chip(path), devices.load_chip(path, legacy=True)
    assert_same_state(snapshot(a), snapshot(b))
    assert a.state_digest() == b.state_digest() == chip.state_digest()
    # an unsealed copy of the current format, or a sealed file no chip could hold, is refused
    # with the same words either way
    arrays, meta = _entries(path)
    cases = [_write_unsealed(tmp_path / "resaved.npz", arrays, meta)]
    for name in ("a stuck device that drifts", "fab_key beyond 2**63", "an array of the old layout"):
        edited = ({k: v.copy() for k, v in arrays.items()}, json.loads(json.dumps(meta)))
        INVALID_EDITS[name][0](*edited)
        cases.append(_write_sealed(tmp_path / f"{len(cases)}.npz", *edited))
    for case, phrase in zip(cases, ["lacks the seal", "'nu'", "fab_key", "saved layer holds arrays"], strict=True):
        texts = []
        for legacy in (False, True):
            with pytest.raises(ValueError, match=phrase) as err:
                devices.load_chip(case, legacy=legacy)
            texts.append(str(err.value))
        assert texts[0] == texts[1]


# -- the chip's state digest (issue 15, item 5) --------------------------------------------------------
def test_state_digest_identifies_the_chip_state(tmp_path):
    # Ideal chips of different seeds that did the same work have equal ledgers, not equal digests.
    a, b = devices.make_chip("ideal", SIZES, seed=1), devices.make_chip("ideal", SIZES, seed=2)
    assert a.ledger.to_dict() == b.ledger.to_dict() and a.state_digest() != b.state_digest()
    assert a.state_digest() == devices.make_chip("ideal", SIZES, seed=1).state_digest()
    chip = _used_chip()
    digest = chip.state_digest()
    path = chip.save(tmp_path / "chip.npz")
    assert chip.state_digest() == digest  # saving changes nothing
    assert devices.load_chip(path).state_digest() == digest
    x = np.full((2, SIZES[0]), 0.5, np.float32)
    for op in (lambda c: c.read(0, x), lambda c: c.wait(1.0),
               lambda c: c.program(0, np.full(c.info.weight_shapes[0], c.info.pulse_step[0], np.float32)),
               lambda c: c.program_verify(1, np.zeros(c.info.weight_shapes[1], np.float32))):
        twin = devices.load_chip(path)
        op(twin)
        assert twin.state_digest() != digest
