"""Chip instances: the public face of the emulator.

``make_chip(spec, layer_sizes, seed)`` fabricates a unique chip; it satisfies
``mortal.chip.Chip`` (``info``, ``ledger``, ``read``, ``program``, ``wait``).
Per-chip randomness comes from ``numpy.random.SeedSequence``: fabrication,
reads, writes and the devices' failure times use separate streams addressed by ``spawn_key``, so extra
reads never change which devices were fabricated.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from pydantic import ValidationError

from .crossbar import Crossbar, state_bytes
from .energy import CATEGORIES, Ledger, read_cost
from .presets import get_preset
from .spec import ChipSpec

__all__ = ["AnalogChip", "ChipInfo", "make_chip", "load_chip", "inspect", "LayerState", "ChipState",
           "memory_limit_bytes"]

# Archives are sealed (a SHA-256 of their bytes in the zip comment) since format 2.  Format 1
# archives, written before the seal existed, are read only when asked for (``legacy=True``) and
# then checked by their values alone (see devices/README.md).
_FORMAT = "mortal-chip/2"
_LEGACY_FORMATS = ("mortal-chip/1",)
_META_KEYS = {"format", "spec", "seed", "trainable", "layer_sizes", "layers", "read_rng", "write_rng", "ledger"}
#: Where the physical memory cannot be read, the most device state one chip may hold.
FALLBACK_MEMORY_LIMIT = 64 * 2**30
# Stream numbers under a chip's SeedSequence.
_FAB, _READ, _WRITE, _AGE = 0, 1, 2, 3


@dataclass(frozen=True)
class ChipInfo:
    """The public datasheet of a chip; see ``mortal.chip.ChipInfo`` for the fields."""

    layer_sizes: tuple[int, ...]
    weight_shapes: tuple[tuple[int, int], ...]
    trainable: tuple[bool, ...]
    input_range: tuple[float, ...]
    weight_range: tuple[float, ...]
    pulse_step: tuple[float, ...]
    output_range: tuple[float, ...]
    bias_level: float
    digital_op_energy_j: float
    digital_op_time_s: float
    preset: str = ""

    @property
    def n_layers(self) -> int:
        """Number of layers."""
        return len(self.layer_sizes) - 1


def _seed_sequence(seed: int | np.random.SeedSequence) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or a numpy SeedSequence, got {seed!r}")
    return np.random.SeedSequence(int(seed))


def _stream(root: np.random.SeedSequence, k: int) -> np.random.Generator:
    child = np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + (k,))
    return np.random.Generator(np.random.PCG64(child))


class AnalogChip:
    """One emulated chip: a stack of crossbar layers with converters and neurons.

    Build with :func:`make_chip`.  Hidden state is reachable only through
    :func:`inspect`, which learning code never calls.
    """

    def __init__(self, spec: ChipSpec, layer_sizes: Sequence[int], seed: Any,
                 trainable: Sequence[bool] | None = None) -> None:
        sizes = _check_sizes(layer_sizes)
        _check_memory(spec, sizes)
        root = _seed_sequence(seed)
        n_layers = len(sizes) - 1
        if trainable is None:
            train = (True,) * n_layers
        else:
            train = tuple(bool(t) for t in trainable)
            if len(train) != n_layers:
                raise ValueError(f"trainable needs one flag per layer ({n_layers}), got {len(train)}")
        self.spec = spec
        self.seed = {"entropy": root.entropy, "spawn_key": list(root.spawn_key)}
        fab = _stream(root, _FAB)
        self._layers = [Crossbar(spec, sizes[i], sizes[i + 1], fab) for i in range(n_layers)]
        age = _stream(root, _AGE)
        for L in self._layers:
            L.draw_failures(age)
        self._read_rng = _stream(root, _READ)
        self._write_rng = _stream(root, _WRITE)
        self.ledger = Ledger(spec.energy.digital_op_j, spec.energy.digital_op_s)
        self.info = self._make_info(sizes, train)

    def _make_info(self, sizes: tuple[int, ...], train: tuple[bool, ...]) -> ChipInfo:
        s = self.spec
        exact = s.programming.mode == "exact"
        return ChipInfo(
            layer_sizes=sizes,
            weight_shapes=tuple((sizes[i] + 1, sizes[i + 1]) for i in range(len(sizes) - 1)),
            trainable=train,
            input_range=tuple(float(s.dac.range) for _ in self._layers),
            weight_range=tuple(math.inf if exact else L.w_max for L in self._layers),
            pulse_step=tuple(0.0 if exact else L.pulse_step_w for L in self._layers),
            output_range=tuple(float(s.adc.range) for _ in self._layers),
            bias_level=float(s.bias_level),
            digital_op_energy_j=s.energy.digital_op_j,
            digital_op_time_s=s.energy.digital_op_s,
            preset=s.name,
        )

    # -- the Chip protocol ----------------------------------------------------------------------
    @property
    def clock_s(self) -> float:
        """Simulated seconds since fabrication."""
        return self.ledger.total_time_s

    @property
    def dead(self) -> bool:
        """True once some layer has at least half of its devices stuck: most of its pairs
        can no longer be set, and the chip cannot learn."""
        return any(not L.exact and 2 * int(np.count_nonzero(L.stuck)) >= L.stuck.size for L in self._layers)

    def read(self, layer: int, x: np.ndarray) -> np.ndarray:
        """Measure layer ``layer`` for inputs ``x`` (batch, n_in); returns float32 (batch, n_out)."""
        L = self._layer(layer)
        x = _as_float32(x, "x", (None, L.n_in), f"(batch, {L.n_in})")
        if x.shape[0] == 0:
            raise ValueError("x must hold at least one input vector (batch >= 1)")
        self._age()
        seed = int(self._read_rng.integers(0, 2**63))
        y, drive = L.read(x, self.clock_s, seed)
        cost = read_cost(self.spec, x.shape[0], L.n_in, L.n_out, drive,
                         float(L.row_gsum[:-1].mean()), float(L.row_gsum[-1]))
        cost.book(self.ledger, x.shape[0], L.n_out)
        return y

    def program(self, layer: int, delta: np.ndarray) -> None:
        """Request a change ``delta`` of shape ``info.weight_shapes[layer]`` in nominal weight units."""
        L = self._layer(layer)
        if not self.info.trainable[layer]:
            raise ValueError(f"layer {layer} is not trainable on this chip (info.trainable)")
        shape = (L.n_in + 1, L.n_out)
        delta = _as_float32(delta, "delta", shape, f"{shape}")
        self._age()
        # Exact weights use no write noise: no draw, so a refused request leaves the stream alone.
        seed = 0 if L.exact else int(self._write_rng.integers(0, 2**63))
        pulses, rows, slow = L.program(delta, self.clock_s, seed)
        e = self.spec.energy
        self.ledger.charge("program", pulses * e.pulse_j, slow * e.pulse_s)
        self.ledger.count("pulses", pulses)
        self.ledger.count("program_calls")

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` of idle time pass: drift continues and devices whose failure time
        has come stick (``faults.failure_median_s``)."""
        if isinstance(seconds, (bool, np.bool_)) or not isinstance(seconds, (int, float, np.integer, np.floating)):
            raise ValueError(f"seconds must be a real number, got {type(seconds).__name__}")
        try:
            s = float(seconds)
        except OverflowError:  # an int beyond the float range
            s = math.inf
        if not math.isfinite(s) or s < 0:
            raise ValueError(f"seconds must be finite and >= 0, got {seconds}")
        times = dict(self.ledger.time_s, idle=self.ledger.time_s["idle"] + s)
        if not math.isfinite(sum(times.values())):
            raise ValueError(f"waiting {seconds} s would push the chip's clock ({self.clock_s:.6g} s) beyond "
                             "the float range; nothing was changed")
        self.ledger.charge("idle", 0.0, s)
        self._age()

    def _age(self) -> None:
        """Apply the failures with time due by the chip's clock."""
        now = self.clock_s
        failed = sum(L.age(now) for L in self._layers)
        if failed:
            self.ledger.count("device_failures", failed)

    # -- persistence ------------------------------------------------------------------------------
    def _payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The arrays of a saved chip (not copied) and its metadata."""
        arrays: dict[str, np.ndarray] = {}
        layers_meta = []
        for i, L in enumerate(self._layers):
            st = L.state()
            for k, v in st["arrays"].items():
                arrays[f"L{i}_{k}"] = v
            layers_meta.append({"n_in": L.n_in, "n_out": L.n_out, "arrays": sorted(st["arrays"]),
                                "scalars": st["scalars"]})
        meta = {
            "format": _FORMAT,
            "spec": self.spec.model_dump(mode="json"),
            "seed": self.seed,
            "trainable": list(self.info.trainable),
            "layer_sizes": list(self.info.layer_sizes),
            "layers": layers_meta,
            "read_rng": self._read_rng.bit_generator.state,
            "write_rng": self._write_rng.bit_generator.state,
            "ledger": self.ledger.to_dict(),
        }
        return arrays, meta

    def state_digest(self) -> str:
        """SHA-256 (hex) of the chip's whole state: every hidden array, the spec, seed, random
        streams and ledger (what :meth:`save` writes, not the file's bytes).  Two chips with the
        same digest behave identically from here on; a read, program or wait changes it; a chip
        loaded from a file has the digest of the chip that was saved.  Checkpoints use it to
        recognize their chip."""
        arrays, meta = self._payload()
        arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
        return _content_digest(arrays)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the whole hidden state, random streams included, atomically to ``path`` (.npz),
        sealed with a SHA-256 of its bytes: ``load_chip`` refuses the file after any change."""
        path = Path(path)
        arrays, meta = self._payload()
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        _atomic_savez(path, arrays)
        return path

    # -- helpers ----------------------------------------------------------------------------------
    def _layer(self, layer: int) -> Crossbar:
        if isinstance(layer, (bool, np.bool_)) or not isinstance(layer, (int, np.integer)):
            raise ValueError(f"layer must be an integer index, got {layer!r}")
        if not 0 <= layer < len(self._layers):
            raise ValueError(f"layer {layer} out of range; this chip has layers 0..{len(self._layers) - 1}")
        return self._layers[int(layer)]

    def __repr__(self) -> str:
        return (f"AnalogChip(preset={self.spec.name!r}, layer_sizes={self.info.layer_sizes}, "
                f"seed={self.seed['entropy']}/{self.seed['spawn_key']}, clock_s={self.clock_s:.4g})")


def _check_sizes(layer_sizes: Sequence[int]) -> tuple[int, ...]:
    try:
        sizes = tuple(layer_sizes)
    except TypeError:
        raise ValueError(f"layer_sizes must be a sequence of positive integers, got {layer_sizes!r}") from None
    ok = all(isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) and s > 0 for s in sizes)
    if len(sizes) < 2 or not ok:
        raise ValueError(
            f"layer_sizes must be at least two positive integers (inputs, then each layer), got {layer_sizes!r}")
    return tuple(int(s) for s in sizes)


def _as_float32(a: Any, name: str, shape: tuple, expected: str) -> np.ndarray:
    """Validate an array input and return it as C-contiguous float32 (no copy if already so)."""
    arr = np.asarray(a)
    if arr.dtype == object or not np.can_cast(arr.dtype, np.float32, casting="same_kind"):
        raise ValueError(f"{name} has dtype {arr.dtype}, which cannot be converted to float32; "
                         "expected a real-valued array")
    if arr.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, arr.shape)):
        raise ValueError(f"{name} has shape {arr.shape}, expected {expected}")
    with np.errstate(over="ignore"):  # values beyond float32 become inf and are rejected below
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    # A finite sum proves every element finite (one fast pass); only if it is not,
    # look element by element (a large but finite input can overflow the sum).
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(arr.sum())
    if not math.isfinite(total) and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values (or values beyond the float32 range)")
    return arr


def memory_limit_bytes() -> int:
    """The most device state one chip may hold: this machine's physical memory
    (``os.sysconf``), or ``FALLBACK_MEMORY_LIMIT`` (64 GiB) where it cannot be read."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return FALLBACK_MEMORY_LIMIT
    return int(total) if total > 0 else FALLBACK_MEMORY_LIMIT


def _check_memory(spec: ChipSpec, sizes: tuple[int, ...]) -> None:
    """ValueError before anything is allocated if the chip's state cannot fit in memory."""
    exact = spec.programming.mode == "exact"
    need = sum(state_bytes(exact, sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1))
    limit = memory_limit_bytes()
    if need > limit:
        weights = sum((sizes[i] + 1) * sizes[i + 1] for i in range(len(sizes) - 1))
        raise ValueError(
            f"layer_sizes {list(sizes)} need {_bytes_text(need)} of device state ({weights:.3g} weights, "
            f"about {need / weights:.0f} bytes each in {spec.programming.mode} mode), more than this machine's "
            f"memory ({_bytes_text(limit)}); use narrower layers")


def _bytes_text(n: int) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def _content_digest(entries: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) of arrays: per entry in name order its name, little-endian dtype, shape
    and bytes."""
    h = hashlib.sha256(b"mortal-content-digest/1\0")
    for name in sorted(entries):
        a = np.asarray(entries[name])
        dt = a.dtype.newbyteorder("<")
        a = np.ascontiguousarray(a, dtype=dt)
        head = json.dumps([name, dt.str, list(a.shape)]).encode()
        h.update(len(head).to_bytes(8, "little") + head + a.nbytes.to_bytes(8, "little"))
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def _create_exclusive(folder: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new file ``folder/prefix<random>suffix`` opened for reading and writing; unlike ``mkstemp``
    (mode 0600) it gets the permissions of any new file (0666 less the umask)."""
    while True:
        tmp = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


# The seal: the zip comment of a saved archive is this prefix and the SHA-256 (hex) of every
# byte of the file before the hex digits, so that a change to any byte is found.
_SEAL = b"mortal-seal sha256:"
_SEAL_LEN = len(_SEAL) + 64
_EOCD = struct.Struct("<4s4H2LH")  # the zip's end-of-central-directory record, comment length last


def _sha256_of(fh: Any, size: int) -> str:
    fh.seek(0)
    h = hashlib.sha256()
    left = size
    while left > 0:
        block = fh.read(min(left, 1 << 22))
        if not block:
            break
        h.update(block)
        left -= len(block)
    return h.hexdigest()


def _seal(fh: Any) -> None:
    """Seal the comment-less zip archive just written to ``fh`` (open for reading and writing)."""
    fh.seek(-_EOCD.size, os.SEEK_END)
    end = fh.tell()
    record = _EOCD.unpack(fh.read(_EOCD.size))
    if record[0] != b"PK\x05\x06" or record[-1] != 0:
        raise RuntimeError("numpy wrote a zip archive of an unexpected layout; cannot seal it")
    fh.seek(end + _EOCD.size - 2)
    fh.write(struct.pack("<H", _SEAL_LEN) + _SEAL)
    fh.flush()
    size = fh.tell()
    fh.write(_sha256_of(fh, size).encode())


def _seal_status(fh: Any) -> str:
    """``"sealed"`` (the seal matches the file's bytes), ``"broken"`` (a seal that does not) or
    ``"none"`` (no seal at the end of the file), for the file open as ``fh``."""
    size = fh.seek(0, os.SEEK_END)
    if size < _SEAL_LEN + _EOCD.size:
        return "none"
    fh.seek(size - _SEAL_LEN)
    tail = fh.read(_SEAL_LEN)
    if not tail.startswith(_SEAL):
        return "none"
    return "sealed" if _sha256_of(fh, size - 64).encode() == tail[-64:] else "broken"


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_exclusive(path.parent, path.name + ".", ".tmp")
    try:
        with os.fdopen(fd, "w+b") as fh:
            np.savez(fh, **arrays)
            _seal(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_npz(fh: Any, path: Path, only: str | None = None) -> dict[str, np.ndarray]:
    """Every entry (or only the entry ``only``) of the .npz archive open as ``fh``; ValueError
    naming the file for anything that is not a readable archive of plain arrays (truncated,
    flipped bits, corrupt compressed streams)."""
    try:
        fh.seek(0)
        with np.load(fh, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            return {k: z[k] for k in z.files if only is None or k == only}
    except Exception as exc:  # whatever a damaged archive makes zipfile, zlib or numpy raise
        raise ValueError(f"{path} is not a saved chip ({type(exc).__name__}: {exc})") from None


def make_chip(spec: ChipSpec | str, layer_sizes: Sequence[int], seed: int | np.random.SeedSequence,
              trainable: Sequence[bool] | None = None) -> AnalogChip:
    """Fabricate one chip.

    Parameters
    ----------
    spec : ChipSpec or str
        A spec or the name of a preset in ``devices.PRESETS``.
    layer_sizes : sequence of int
        Input width then each layer's width, e.g. ``(784, 1000, 1000, 1000)``.
    seed : int or numpy.random.SeedSequence
        Same spec and seed give a bit-identical chip; fleets pass
        ``SeedSequence(root, spawn_key=(i,))``.
    trainable : sequence of bool, optional
        Per layer, whether ``program`` is accepted (default: all).
    """
    if isinstance(spec, str):
        spec = get_preset(spec)
    elif not isinstance(spec, ChipSpec):
        raise ValueError(f"spec must be a ChipSpec or a preset name, got {type(spec).__name__}")
    return AnalogChip(spec, layer_sizes, seed, trainable)


def load_chip(path: str | os.PathLike, *, legacy: bool = False) -> AnalogChip:
    """Load a chip written by ``AnalogChip.save``; it behaves bit-identically from there on.

    The file must be as ``save`` wrote it: its seal (a SHA-256 of its bytes) must match, so any
    edit, truncation or damage is refused, and every field must be one a chip can hold.
    FileNotFoundError if there is no file; ValueError naming the file for everything else.

    ``legacy=True`` also accepts an archive saved before archives were sealed (format
    ``mortal-chip/1``).  Such a file cannot be proven unedited, only checked field by field:
    pass it only for a file you trust, then ``save`` the chip to seal it (devices/README.md).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved chip at {path}")
    with open(path, "rb") as fh:  # OSError (no permission, ...) is not the file's fault: it propagates
        seal = _seal_status(fh)
        if seal == "broken":
            raise ValueError(f"{path} is not a valid saved chip: its bytes do not match the seal saved with them "
                             "(the file was edited, truncated or damaged)")
        # An unsealed file is refused unless it is a legacy archive and legacy=True: read only its
        # metadata to say which, and nothing else of it before that.
        entries = _read_npz(fh, path, only=None if seal == "sealed" else "meta")
        if "meta" not in entries:
            raise ValueError(f"{path} is not a saved chip (no 'meta' entry)")
        try:
            meta = json.loads(entries["meta"].tobytes().decode())
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"{path} is not a saved chip (its metadata is not JSON: {exc})") from None
        fmt = meta.get("format") if isinstance(meta, dict) else None
        if fmt != _FORMAT and fmt not in _LEGACY_FORMATS:
            raise ValueError(f"{path}: unsupported format {fmt!r}, expected {_FORMAT!r}")
        if seal == "sealed" and fmt != _FORMAT:
            raise ValueError(f"{path} is not a valid saved chip: it is sealed but says format {fmt!r}, which "
                             "save() never sealed")
        if seal != "sealed":
            if fmt == _FORMAT:
                raise ValueError(f"{path} is not a valid saved chip: it lacks the seal that save() writes (the "
                                 "file was re-written by other means, or truncated or damaged)")
            if not legacy:
                raise ValueError(
                    f"{path} was saved before saved chips were sealed (format {fmt!r}), so an edit to it cannot be "
                    f"detected; if you trust it, load it with devices.load_chip(path, legacy=True) and save it "
                    "again to seal it (see devices/README.md)")
            entries = _read_npz(fh, path)
    try:
        return _chip_from(meta, entries, legacy=fmt in _LEGACY_FORMATS)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
        raise ValueError(f"{path} is not a valid saved chip ({text})") from None


def _chip_from(meta: dict[str, Any], entries: dict[str, np.ndarray], legacy: bool) -> AnalogChip:
    """The chip described by a saved archive's metadata and arrays, each field checked."""
    if set(meta) != _META_KEYS:
        raise ValueError(f"metadata fields {sorted(meta)}, expected {sorted(_META_KEYS)}")
    try:
        spec = ChipSpec.model_validate(meta["spec"])
    except ValidationError as exc:
        why = "; ".join(f"{'.'.join(str(part) for part in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"spec: {why}") from None
    sizes = _check_sizes(meta["layer_sizes"]) if isinstance(meta["layer_sizes"], list) else None
    if sizes is None:
        raise ValueError(f"layer_sizes {meta['layer_sizes']!r} is not a list")
    n_layers = len(sizes) - 1
    train = meta["trainable"]
    if not isinstance(train, list) or len(train) != n_layers or not all(isinstance(t, bool) for t in train):
        raise ValueError(f"trainable {train!r} is not one true/false per layer ({n_layers})")
    seed = meta["seed"]

    def naturals(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in v)

    if not isinstance(seed, dict) or set(seed) != {"entropy", "spawn_key"} or not naturals(seed["spawn_key"]) \
            or not (naturals([seed["entropy"]]) or (naturals(seed["entropy"]) and seed["entropy"])):
        raise ValueError(f"seed {seed!r} is not an entropy and a spawn_key of integers >= 0")
    root = np.random.SeedSequence(seed["entropy"], spawn_key=tuple(seed["spawn_key"]))
    layers_meta = meta["layers"]
    if not isinstance(layers_meta, list) or len(layers_meta) != n_layers:
        raise ValueError(f"{len(layers_meta) if isinstance(layers_meta, list) else 'no'} layer entries for "
                         f"layer_sizes {list(sizes)}")
    ledger = _ledger_from(meta["ledger"], spec)
    clock = ledger.total_time_s
    names = {"meta"}
    chip = AnalogChip.__new__(AnalogChip)
    chip.spec = spec
    chip.seed = seed
    chip._layers = []
    for i, lm in enumerate(layers_meta):
        if not isinstance(lm, dict) or set(lm) != {"n_in", "n_out", "arrays", "scalars"}:
            raise ValueError(f"layer {i}: metadata {lm!r} is not n_in, n_out, arrays, scalars")
        if (lm["n_in"], lm["n_out"]) != (sizes[i], sizes[i + 1]) \
                or not all(type(v) is int for v in (lm["n_in"], lm["n_out"])):
            raise ValueError(f"layer {i}: n_in, n_out = {lm['n_in']!r}, {lm['n_out']!r} disagree with "
                             f"layer_sizes {list(sizes)}")
        keys = lm["arrays"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
            raise ValueError(f"layer {i}: array names {keys!r} are not a list of distinct names")
        missing = [f"L{i}_{k}" for k in keys if f"L{i}_{k}" not in entries]
        if missing:
            raise ValueError(f"layer {i}: the archive lacks {missing}")
        names.update(f"L{i}_{k}" for k in keys)
        try:
            L = Crossbar.from_state(spec, sizes[i], sizes[i + 1],
                                    {"arrays": {k: entries[f"L{i}_{k}"] for k in keys}, "scalars": lm["scalars"]})
        except ValueError as exc:
            raise ValueError(f"layer {i}: {exc}") from None
        if L.needs_failures and not legacy:
            raise ValueError(f"layer {i}: the failure times (fail_at, fail_on) are missing")
        chip._layers.append(L)
    extra = sorted(set(entries) - names)
    if extra:
        raise ValueError(f"unexpected entries {extra}")
    if any(L.needs_failures for L in chip._layers):
        age = _stream(root, _AGE)
        for L in chip._layers:
            L.draw_failures(age)
            L.needs_failures = False
    for i, L in enumerate(chip._layers):
        try:
            L.check_values(clock)
        except ValueError as exc:
            raise ValueError(f"layer {i}: {exc}") from None
    chip._read_rng = _generator_from(meta["read_rng"], "read_rng")
    chip._write_rng = _generator_from(meta["write_rng"], "write_rng")
    chip.ledger = ledger
    chip.info = chip._make_info(sizes, tuple(train))
    return chip


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
    if (data["digital_op_j"], data["digital_op_s"]) != (spec.energy.digital_op_j, spec.energy.digital_op_s):
        raise ValueError("ledger: its digital operation costs are not the spec's")

    def real(v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v >= 0

    for group in ("energy_j", "time_s"):
        d = data[group]
        if not isinstance(d, dict) or set(d) != set(CATEGORIES) or not all(real(v) for v in d.values()):
            raise ValueError(f"ledger {group} {d!r} is not a finite amount >= 0 for each of {list(CATEGORIES)}")
    counts = data["counts"]
    base = set(Ledger().counts)
    if not isinstance(counts, dict) or not base <= set(counts) \
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts.values()):
        raise ValueError(f"ledger counts {counts!r} are not integers >= 0 for each of {sorted(base)}")
    ledger = Ledger.from_dict(data)
    if not (math.isfinite(ledger.total_time_s) and math.isfinite(ledger.total_energy_j)):
        raise ValueError("ledger: its totals are not finite")
    return ledger


@dataclass(frozen=True)
class LayerState:
    """Read-only copy of one layer's hidden state (for analysis and tests only).

    ``weights`` float32 (n_in + 1, n_out): effective weights now, last row the bias.
    ``g``, ``nu``, ``t_prog``, ``wear``, ``stuck``, ``endurance``: per device,
    shape (2, n_in + 1, n_out), index 0 the positive device (None in exact mode).
    ``g_sat``, ``step_up``, ``step_down``: per-device response parameters.
    ``failure_time``: per device, the chip age (s) at which it fails and sticks
    (``inf`` if never).
    ``gain``, ``offset``, ``curvature``, ``saturation``: per neuron (n_out,).
    """

    weights: np.ndarray
    w_max: float
    pulse_step: float
    g: np.ndarray | None
    nu: np.ndarray | None
    t_prog: np.ndarray | None
    wear: np.ndarray | None
    stuck: np.ndarray | None
    endurance: np.ndarray | None
    g_sat: np.ndarray | None
    step_up: np.ndarray | None
    step_down: np.ndarray | None
    failure_time: np.ndarray | None
    gain: np.ndarray
    offset: np.ndarray
    curvature: np.ndarray
    saturation: np.ndarray


@dataclass(frozen=True)
class ChipState:
    """Read-only snapshot of a chip: its clock, seed and each layer's state."""

    clock_s: float
    seed: dict
    layers: list[LayerState] = field(default_factory=list)

    @property
    def stuck_fraction(self) -> float:
        """Fraction of devices stuck, over all layers (0 in exact mode)."""
        n = sum(L.stuck.size for L in self.layers if L.stuck is not None)
        k = sum(int(L.stuck.sum()) for L in self.layers if L.stuck is not None)
        return k / n if n else 0.0


def inspect(chip: AnalogChip) -> ChipState:
    """Copy of a chip's hidden state at its current time.  Never used by learning code."""
    if not isinstance(chip, AnalogChip):
        raise ValueError(f"inspect needs a chip from devices.make_chip, got {type(chip).__name__}")
    from . import _kernels as K

    now = chip.clock_s
    layers = []
    for L in chip._layers:
        dev = not L.exact

        def cp(name: str) -> np.ndarray | None:
            return getattr(L, name).copy() if dev else None

        layers.append(LayerState(
            weights=L.effective_weights(now), w_max=L.w_max, pulse_step=L.pulse_step_w,
            g=cp("g"), nu=cp("nu"), t_prog=cp("t_prog"), wear=cp("wear"), stuck=cp("stuck"),
            endurance=cp("endurance"),
            g_sat=L.params[K.P_GSAT].copy() if dev else None,
            step_up=L.params[K.P_STEP_UP].copy() if dev else None,
            step_down=L.params[K.P_STEP_DOWN].copy() if dev else None,
            failure_time=cp("fail_at"),
            gain=L.gain.copy(), offset=L.offset.copy(), curvature=L.curv.copy(), saturation=L.sat.copy(),
        ))
    return ChipState(clock_s=now, seed=dict(chip.seed), layers=layers)
