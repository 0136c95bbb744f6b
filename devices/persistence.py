"""Loading a saved chip: ``load_chip`` reads the archive ``AnalogChip.save`` wrote and checks it.

A sealed archive (format ``mortal-chip/3``) is refused after any change to its bytes, and
every field is checked before a chip is built from it; archives of earlier formats are refused
by name.  The file itself (the seal,
atomic writes, reading the zip) is :mod:`devices.archive`; the chip is :mod:`devices.chip`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from .archive import FORMAT, LEGACY_FORMATS, read_npz, seal_status
from .chip import AnalogChip, check_layer_sizes
from .layout import check_top_down
from .crossbar import Crossbar
from .energy import CATEGORIES, UPDATE_CATEGORIES, Ledger
from .spec import ChipSpec

__all__ = ["load_chip", "META_KEYS", "OPTIONAL_META_KEYS"]

#: The metadata fields of a saved chip (``AnalogChip.payload``); a chip with the top-down
#: layout also saves ``top_down`` (one width per layer; absent means none).
META_KEYS = {"format", "spec", "seed", "trainable", "layer_sizes", "layers", "read_rng", "write_rng", "ledger"}
OPTIONAL_META_KEYS = {"top_down"}


def load_chip(path: str | os.PathLike, *, legacy: bool = False) -> AnalogChip:
    """Load a chip written by ``AnalogChip.save``; it behaves bit-identically from there on.

    The file must be as ``save`` wrote it: its seal (a SHA-256 of its bytes) must match, so any
    edit, truncation or damage is refused, and every field must be one a chip can hold.
    FileNotFoundError if there is no file; ValueError naming the file for everything else.

    Archives of earlier versions (formats ``mortal-chip/1`` and ``mortal-chip/2``) hold a
    device state this version no longer has and are refused with a message naming their format;
    ``legacy`` is kept for callers written for those versions and changes nothing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved chip at {path}")
    with open(path, "rb") as fh:  # OSError (no permission, ...) is not the file's fault: it propagates
        seal = seal_status(fh)
        if seal == "broken":
            raise ValueError(f"{path} is not a valid saved chip: its bytes do not match the seal saved with them "
                             "(the file was edited, truncated or damaged)")
        # Read only the metadata of an unsealed file (to name its format in the refusal).
        entries = read_npz(fh, path, only=None if seal == "sealed" else "meta")
        if "meta" not in entries:
            raise ValueError(f"{path} is not a saved chip (no 'meta' entry)")
        try:
            meta = json.loads(entries["meta"].tobytes().decode())
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"{path} is not a saved chip (its metadata is not JSON: {exc})") from None
        fmt = meta.get("format") if isinstance(meta, dict) else None
        if fmt in LEGACY_FORMATS:
            raise ValueError(
                f"{path} was saved by an earlier version of mortal (format {fmt!r}), whose device state this "
                f"version does not hold (it reads {FORMAT!r}: one conductance, programming time, drift exponent "
                "and wear counter per device); fabricate the chip again from its spec and seed, or read the file "
                "with the earlier version")
        if fmt != FORMAT:
            raise ValueError(f"{path}: unsupported format {fmt!r}, expected {FORMAT!r}")
        if seal != "sealed":
            raise ValueError(f"{path} is not a valid saved chip: it lacks the seal that save() writes (the "
                             "file was re-written by other means, or truncated or damaged)")
    try:
        return _chip_from(meta, entries)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
        raise ValueError(f"{path} is not a valid saved chip ({text})") from None


def _chip_from(meta: dict[str, Any], entries: dict[str, np.ndarray]) -> AnalogChip:
    """The chip described by a saved archive's metadata and arrays, each field checked."""
    if not META_KEYS <= set(meta) <= META_KEYS | OPTIONAL_META_KEYS:
        raise ValueError(f"metadata fields {sorted(meta)}, expected {sorted(META_KEYS)} "
                         f"(and optionally {sorted(OPTIONAL_META_KEYS)})")
    try:
        spec = ChipSpec.model_validate(meta["spec"])
    except ValidationError as exc:
        why = "; ".join(f"{'.'.join(str(part) for part in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"spec: {why}") from None
    sizes = check_layer_sizes(meta["layer_sizes"]) if isinstance(meta["layer_sizes"], list) else None
    if sizes is None:
        raise ValueError(f"layer_sizes {meta['layer_sizes']!r} is not a list")
    n_layers = len(sizes) - 1
    if "top_down" in meta:
        if not isinstance(meta["top_down"], list) or not any(meta["top_down"]):
            raise ValueError(f"top_down {meta['top_down']!r} is not a list with some top-down input "
                             "(a chip without one saves no top_down)")
        down = check_top_down(sizes, meta["top_down"])
    else:
        down = (0,) * n_layers
    train = meta["trainable"]
    if not isinstance(train, list) or len(train) != n_layers or not all(isinstance(t, bool) for t in train):
        raise ValueError(f"trainable {train!r} is not one true/false per layer ({n_layers})")
    seed = meta["seed"]

    def naturals(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in v)

    if not isinstance(seed, dict) or set(seed) != {"entropy", "spawn_key"} or not naturals(seed["spawn_key"]) \
            or not (naturals([seed["entropy"]]) or (naturals(seed["entropy"]) and seed["entropy"])):
        raise ValueError(f"seed {seed!r} is not an entropy and a spawn_key of integers >= 0")
    layers_meta = meta["layers"]
    if not isinstance(layers_meta, list) or len(layers_meta) != n_layers:
        raise ValueError(f"{len(layers_meta) if isinstance(layers_meta, list) else 'no'} layer entries for "
                         f"layer_sizes {list(sizes)}")
    ledger = _ledger_from(meta["ledger"], spec)
    clock = ledger.total_time_s
    names = {"meta"}
    layers: list[Crossbar] = []
    for i, lm in enumerate(layers_meta):
        if not isinstance(lm, dict) or set(lm) != {"n_in", "n_out", "arrays", "scalars"}:
            raise ValueError(f"layer {i}: metadata {lm!r} is not n_in, n_out, arrays, scalars")
        if (lm["n_in"], lm["n_out"]) != (sizes[i] + down[i], sizes[i + 1]) \
                or not all(type(v) is int for v in (lm["n_in"], lm["n_out"])):
            raise ValueError(f"layer {i}: n_in, n_out = {lm['n_in']!r}, {lm['n_out']!r} disagree with "
                             f"layer_sizes {list(sizes)} and top_down {list(down)}")
        keys = lm["arrays"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
            raise ValueError(f"layer {i}: array names {keys!r} are not a list of distinct names")
        missing = [f"L{i}_{k}" for k in keys if f"L{i}_{k}" not in entries]
        if missing:
            raise ValueError(f"layer {i}: the archive lacks {missing}")
        names.update(f"L{i}_{k}" for k in keys)
        try:
            L = Crossbar.from_state(spec, sizes[i] + down[i], sizes[i + 1],
                                    {"arrays": {k: entries[f"L{i}_{k}"] for k in keys}, "scalars": lm["scalars"]})
        except ValueError as exc:
            raise ValueError(f"layer {i}: {exc}") from None
        layers.append(L)
    extra = sorted(set(entries) - names)
    if extra:
        raise ValueError(f"unexpected entries {extra}")
    for i, L in enumerate(layers):
        try:
            L.check_values(clock)
        except ValueError as exc:
            raise ValueError(f"layer {i}: {exc}") from None
    return AnalogChip.restore(spec, seed, sizes, tuple(train), layers,
                              read_rng=_generator_from(meta["read_rng"], "read_rng"),
                              write_rng=_generator_from(meta["write_rng"], "write_rng"), ledger=ledger,
                              top_down=down)


def _generator_from(state: Any, name: str) -> np.random.Generator:
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise ValueError(f"{name} is not the state of a PCG64 generator")
    gen = np.random.Generator(np.random.PCG64())
    try:
        gen.bit_generator.state = state
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise ValueError(f"{name} is not the state of a PCG64 generator ({exc})") from None
    if gen.bit_generator.state != state:
        raise ValueError(f"{name} is not the state of a PCG64 generator (it does not read back)")
    return gen


def _ledger_from(data: Any, spec: ChipSpec) -> Ledger:
    """The saved ledger, each entry checked: the spec's digital costs, finite non-negative
    joules and seconds in the known categories, non-negative integer counts."""
    keys = {"digital_op_j", "digital_op_s", "energy_j", "time_s", "counts"}
    if not isinstance(data, dict) or set(data) != keys:
        raise ValueError(f"ledger {data!r} is not {sorted(keys)}")
    if (data["digital_op_j"], data["digital_op_s"]) != (spec.energy.controller_op_j, spec.energy.digital_op_s):
        raise ValueError("ledger: its digital operation costs are not the spec's")

    def real(v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v >= 0

    for group in ("energy_j", "time_s"):
        d = data[group]
        # the in-array update categories appear once charged (devices.energy.UPDATE_CATEGORIES)
        if not isinstance(d, dict) or not set(CATEGORIES) <= set(d) <= set(CATEGORIES + UPDATE_CATEGORIES) \
                or not all(real(v) for v in d.values()):
            raise ValueError(f"ledger {group} {d!r} is not a finite amount >= 0 for each of {list(CATEGORIES)} "
                             f"(and at most {list(UPDATE_CATEGORIES)})")
    if set(data["energy_j"]) != set(data["time_s"]):
        raise ValueError("ledger: energy_j and time_s do not name the same categories")
    counts = data["counts"]
    base = set(Ledger().counts)
    if not isinstance(counts, dict) or not base <= set(counts) \
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts.values()):
        raise ValueError(f"ledger counts {counts!r} are not integers >= 0 for each of {sorted(base)}")
    ledger = Ledger.from_dict(data)
    if not (math.isfinite(ledger.total_time_s) and math.isfinite(ledger.total_energy_j)):
        raise ValueError("ledger: its totals are not finite")
    return ledger
