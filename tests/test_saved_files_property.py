"""Randomly edited saved chips and learner checkpoints are all refused (issue 15, items 6, 11, 12).

Hypothesis edits a saved chip (``chip.npz``) and a learner checkpoint (``learner.npz``) as
a damaged disk or a hostile user would: bytes flipped at random offsets, the file cut at a
random length, or one metadata field or array element rewritten and the archive re-saved with
numpy (a valid zip; sometimes compressed, sometimes with the old seal copied onto it).  Every
edit must be refused with a ``ValueError`` subclass whose message names the file: never a
``BadZipFile``, ``KeyError``, ``AttributeError`` or ``zlib.error``, and never a file loaded as a
different chip or learner.

A chip file edited the same way but sealed again by ``save``'s own writer (``devices.archive``)
is checked field by field: it is refused with a ``ValueError`` naming the file, or it loads as
a chip that works (reads, programs, program-and-verify writes and waits give finite outputs)
and that saves and loads back to itself.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import devices
from mortal.data import load_mnist_mini
from mortal.errors import InputError
from mortal.ff import CHIP_FILE, LEARNER_FILE, FFConfig, FFLearner, latest_checkpoint, load_learner
from mortal.ff import checkpoint as ckmod
from devices import archive

# Deterministic (the same examples every run) and writing no example database into the tree.
SETTINGS = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _leaves(meta, prefix=()):
    """Paths of every scalar in a JSON tree."""
    if isinstance(meta, dict):
        return [p for k, v in meta.items() for p in _leaves(v, prefix + (k,))]
    if isinstance(meta, list):
        return [p for i, v in enumerate(meta) for p in _leaves(v, prefix + (i,))]
    return [prefix]


def _decode(raw: bytes, path: Path):
    path.write_bytes(raw)
    with np.load(path) as z:
        arrays = dict(z)
    return arrays, json.loads(arrays.pop("meta").tobytes().decode())


class _Originals(dict):
    def __repr__(self) -> str:  # Hypothesis prints the arguments of a failing example
        return "<originals>"


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """The bytes of a used chip's file and of a checkpoint's learner file, their metadata's
    leaves and arrays, and what loading a checkpoint needs."""
    root = tmp_path_factory.mktemp("originals")
    chip = devices.make_chip("pcm", (12, 10, 6), seed=5)
    chip.read(0, np.full((3, 12), 0.5, np.float32))
    chip.program(0, np.full(chip.info.weight_shapes[0], chip.info.pulse_step[0], np.float32))
    chip.wait(10.0)
    chip_raw = chip.save(root / "chip.npz").read_bytes()

    m = load_mnist_mini()
    data = m.train_images[:200], m.train_labels[:200]
    cfg = FFConfig(defaults="hinton", policy="direct", epochs=1, seed=2)
    FFLearner(cfg).fit(devices.make_chip("ideal", (784, 12, 10), 3), *data, checkpoint_dir=root / "ck",
                       progress=False)
    ck = latest_checkpoint(root / "ck")
    learner_raw = (ck / LEARNER_FILE).read_bytes()
    out = _Originals({"chip": chip_raw, "learner": learner_raw, "data": data, "cfg": cfg, "ck": ck,
           "chip_of_ck": devices.load_chip(ck / CHIP_FILE)})
    for name, raw in (("chip", chip_raw), ("learner", learner_raw)):
        arrays, meta = _decode(raw, root / f"decoded-{name}.npz")
        out[f"{name}_leaves"] = _leaves(meta)
        out[f"{name}_arrays"] = sorted(k for k, v in arrays.items() if v.size)
    return out


_values = st.one_of(st.integers(-(10**20), 10**20), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=6), st.booleans(), st.none(), st.lists(st.integers(0, 9), max_size=3))


def _why(exc: Exception) -> str:
    """The kind of a refusal, for ``--hypothesis-show-statistics``."""
    text = str(exc)
    for phrase in ("do not match the seal", "lacks the seal", "before", "earlier version", "unsupported format",
                   "not a saved chip", "not a readable", "not a valid saved chip"):
        if phrase in text:
            return phrase
    return "other"


@st.composite
def edits(draw, which: str):
    """An edit of file ``which`` ("chip" or "learner"): a function of (original bytes, originals, folder)
    returning the edited bytes, and a description."""
    kind = draw(st.sampled_from(["flip", "truncate", "rewrite-meta", "rewrite-array"]))
    if kind == "flip":
        flips = draw(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
                              min_size=1, max_size=3))

        def apply(raw, orig, folder):
            b = bytearray(raw)
            masks = {}
            for where, mask in flips:  # one mask per byte: two flips of one byte must not cancel
                masks.setdefault(int(where * len(b)), mask)
            for offset, mask in masks.items():
                b[offset] ^= mask
            return bytes(b)
        return apply, f"flip {flips}"
    if kind == "truncate":
        keep = draw(st.floats(0, 1, exclude_max=True))
        return (lambda raw, orig, folder: raw[:int(keep * len(raw))]), f"truncate to {keep:.4f}"
    compressed, copy_seal = draw(st.booleans()), draw(st.booleans())
    leaf_i, array_i = draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6))
    value, where = draw(_values), draw(st.floats(0, 1, exclude_max=True))

    def apply(raw, orig, folder):
        arrays, meta = _decode(raw, folder / "decode.npz")
        if kind == "rewrite-meta":
            leaves = orig[f"{which}_leaves"]
            *path, last = leaves[leaf_i % len(leaves)]
            node = meta
            for k in path:
                node = node[k]
            node[last] = value
        else:
            names = orig[f"{which}_arrays"]
            a = arrays[names[array_i % len(names)]].copy()
            flat = a.reshape(-1)
            flat[int(where * flat.size)] = flat[int(where * flat.size)] + 1 if a.dtype.kind in "iub" else np.nan
            arrays[names[array_i % len(names)]] = a
        out = folder / "resaved.npz"
        (np.savez_compressed if compressed else np.savez)(
            out, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
        if copy_seal:
            with zipfile.ZipFile(folder / "decode.npz") as z:
                seal = z.comment
            with zipfile.ZipFile(out, "a") as z:
                z.comment = seal
        return out.read_bytes()
    return apply, f"{kind} leaf {leaf_i} array {array_i} = {value!r} (compressed={compressed}, seal={copy_seal})"


@SETTINGS
@given(edit=edits("chip"))
def test_every_edit_of_a_saved_chip_is_refused(originals, tmp_path_factory, edit):
    apply, what = edit
    folder = tmp_path_factory.mktemp("chip-edit")
    path = folder / "chip.npz"
    path.write_bytes(apply(originals["chip"], originals, folder))
    with pytest.raises(ValueError) as err:
        devices.load_chip(path)
    assert str(path) in str(err.value), what
    event(f"{what.split()[0]}: {_why(err.value)}")


@SETTINGS
@given(edit=edits("learner"))
def test_every_edit_of_a_learner_checkpoint_is_refused(originals, tmp_path_factory, edit):
    apply, what = edit
    folder = tmp_path_factory.mktemp("learner-edit")
    ck = Path(shutil.copytree(originals["ck"], folder / "epoch-0001"))
    path = ck / LEARNER_FILE
    path.write_bytes(apply(originals["learner"], originals, folder))
    chip, cfg, data = originals["chip_of_ck"], originals["cfg"], originals["data"]
    for call in (lambda: ckmod.read_checkpoint(ck), lambda: load_learner(ck, chip),
                 lambda: FFLearner(cfg).fit(chip, *data, resume=ck, progress=False)):
        with pytest.raises(InputError) as err:
            call()
        assert str(path) in str(err.value), what
    event(f"{what.split()[0]}: {_why(err.value)}")


def _value_for(dtype: np.dtype, draw_int: int, draw_float: float):
    """A value of an array element of ``dtype``: any integer the dtype holds, or any float."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return info.min + draw_int % (int(info.max) - int(info.min) + 1)
    return draw_float


@st.composite
def sealed_edits(draw):
    """An edit of the chip file sealed again by save's writer: one metadata leaf set to any value,
    or one array element set to any value its dtype holds (integers) or any float."""
    kind = draw(st.sampled_from(["rewrite-meta", "rewrite-array"]))
    leaf_i, array_i = draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6))
    value, where = draw(_values), draw(st.floats(0, 1, exclude_max=True))
    as_int, as_float = draw(st.integers(0, 2**64)), draw(st.floats(allow_nan=True, allow_infinity=True, width=32))

    def apply(raw, orig, folder):
        arrays, meta = _decode(raw, folder / "decode.npz")
        if kind == "rewrite-meta":
            leaves = orig["chip_leaves"]
            *path, last = leaves[leaf_i % len(leaves)]
            node = meta
            for k in path:
                node = node[k]
            node[last] = value
        else:
            names = orig["chip_arrays"]
            name = names[array_i % len(names)]
            a = arrays[name].copy()
            flat = a.reshape(-1)
            flat[int(where * flat.size)] = _value_for(a.dtype, as_int, as_float)
            arrays[name] = a
        out = folder / "resealed.npz"
        archive.atomic_savez(out, dict(arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8)))
        return out.read_bytes()
    return apply, f"{kind} leaf {leaf_i} array {array_i} = {value!r} / {as_int} / {as_float!r}"


@SETTINGS
@given(edit=sealed_edits())
def test_a_resealed_edit_of_a_saved_chip_is_refused_or_loads_as_a_working_chip(originals, tmp_path_factory, edit):
    apply, what = edit
    folder = tmp_path_factory.mktemp("chip-reseal")
    path = folder / "chip.npz"
    path.write_bytes(apply(originals["chip"], originals, folder))
    try:
        chip = devices.load_chip(path)
    except ValueError as err:
        assert str(path) in str(err), what
        event(f"{what.split()[0]}: refused ({_why(err)})")
        return
    event(f"{what.split()[0]}: loaded")
    again = devices.load_chip(chip.save(folder / "again.npz"))
    assert again.state_digest() == chip.state_digest(), what
    x = np.full((4, 12), 0.4, np.float32)
    outs = [chip.read(0, x)]
    chip.program(0, np.full(chip.info.weight_shapes[0], 3 * chip.info.pulse_step[0], np.float32))
    chip.program_verify(1, np.full(chip.info.weight_shapes[1], 0.1, np.float32))
    chip.wait(100.0)
    outs += [chip.read(0, x), chip.read(1, np.full((4, 10), 0.4, np.float32))]
    assert all(np.isfinite(y).all() for y in outs), what
