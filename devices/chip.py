"""Chip instances: the public face of the emulator.

``make_chip(spec, layer_sizes, seed)`` fabricates a unique chip; it satisfies
``mortal.chip.Chip`` (``info``, ``ledger``, ``read``, ``program``, ``wait``).
Per-chip randomness comes from ``numpy.random.SeedSequence``: fabrication,
reads, writes and the devices' failure times use separate streams addressed by ``spawn_key``, so extra
reads never change which devices were fabricated.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .crossbar import Crossbar
from .energy import Ledger, read_cost
from .presets import get_preset
from .spec import ChipSpec

__all__ = ["AnalogChip", "ChipInfo", "make_chip", "load_chip", "inspect", "LayerState", "ChipState"]

_FORMAT = "mortal-chip/1"
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
        s = float(seconds)
        if not math.isfinite(s) or s < 0:
            raise ValueError(f"seconds must be finite and >= 0, got {seconds}")
        self.ledger.charge("idle", 0.0, s)
        self._age()

    def _age(self) -> None:
        """Apply the failures with time due by the chip's clock."""
        now = self.clock_s
        failed = sum(L.age(now) for L in self._layers)
        if failed:
            self.ledger.count("device_failures", failed)

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the whole hidden state, random streams included, atomically to ``path`` (.npz)."""
        path = Path(path)
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


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def load_chip(path: str | os.PathLike) -> AnalogChip:
    """Load a chip written by ``AnalogChip.save``; it behaves bit-identically from there on."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved chip at {path}")
    fh = open(path, "rb")  # opened here so that it is closed even when np.load fails
    try:
        z = np.load(fh, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        fh.close()
        raise ValueError(f"{path} is not a saved chip ({exc})") from exc
    with fh, z:
        if "meta" not in z.files:
            raise ValueError(f"{path} is not a saved chip (no 'meta' entry)")
        meta = json.loads(z["meta"].tobytes().decode())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path}: unsupported format {meta.get('format')!r}, expected {_FORMAT!r}")
        spec = ChipSpec.model_validate(meta["spec"])
        chip = AnalogChip.__new__(AnalogChip)
        chip.spec = spec
        chip.seed = meta["seed"]
        chip._layers = []
        for i, lm in enumerate(meta["layers"]):
            arrays = {k: z[f"L{i}_{k}"] for k in lm["arrays"]}
            try:
                chip._layers.append(Crossbar.from_state(spec, lm["n_in"], lm["n_out"],
                                                        {"arrays": arrays, "scalars": lm["scalars"]}))
            except ValueError as exc:
                raise ValueError(f"{path} is not a valid saved chip (layer {i}: {exc})") from None
    if any(getattr(L, "needs_failures", False) for L in chip._layers):
        root = np.random.SeedSequence(meta["seed"]["entropy"], spawn_key=tuple(meta["seed"]["spawn_key"]))
        age = _stream(root, _AGE)
        for L in chip._layers:
            L.draw_failures(age)
            L.needs_failures = False
    chip._read_rng = np.random.Generator(np.random.PCG64())
    chip._read_rng.bit_generator.state = meta["read_rng"]
    chip._write_rng = np.random.Generator(np.random.PCG64())
    chip._write_rng.bit_generator.state = meta["write_rng"]
    chip.ledger = Ledger.from_dict(meta["ledger"])
    chip.info = chip._make_info(tuple(meta["layer_sizes"]), tuple(meta["trainable"]))
    return chip


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
