"""Chip instances: the public face of the emulator.

``make_chip(spec, layer_sizes, seed)`` fabricates a unique chip; it satisfies
``mortal.chip.Chip`` (``info``, ``ledger``, ``read``, ``program``, ``wait``).
Per-chip randomness comes from ``numpy.random.SeedSequence``: fabrication,
reads, writes and the devices' failure times use separate streams addressed by ``spawn_key``, so extra
reads never change which devices were fabricated.  A chip may have the top-down layout of
:mod:`devices.layout` (``make_chip(..., top_down=...)``).  Saving a chip is here (``AnalogChip.save``,
writing the archive of :mod:`devices.archive`); loading one back is :mod:`devices.persistence`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import archive
from .crossbar import Crossbar
from .parameters import state_bytes
from .energy import Ledger, read_cost
from .layout import check_top_down
from .presets import get_preset
from .spec import ChipSpec
from .stages import build_stages, layer_specs, read_stage

__all__ = ["AnalogChip", "ChipInfo", "make_chip", "memory_limit_bytes", "check_memory", "check_layer_sizes",
           "failure_stream"]

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
    top_down: tuple[int, ...] = ()  # per layer, input rows from the layer above (devices.layout)

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


def failure_stream(root: np.random.SeedSequence) -> np.random.Generator:
    """The random stream that draws the failure times of the chip seeded with ``root``."""
    return _stream(root, _AGE)


class AnalogChip:
    """One emulated chip: a stack of crossbar layers with converters and neurons.

    Build with :func:`make_chip`.  Hidden state is reachable only through
    :func:`inspect`, which learning code never calls.
    """

    def __init__(self, spec: ChipSpec, layer_sizes: Sequence[int], seed: Any,
                 trainable: Sequence[bool] | None = None, top_down: Sequence[int] | None = None) -> None:
        sizes = check_layer_sizes(layer_sizes)
        down = check_top_down(sizes, top_down)
        _check_memory(spec, sizes, down)
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
        specs = layer_specs(spec, train)  # a stage's crossbar has the stage's weight spread
        self._layers = [Crossbar(specs[i], sizes[i] + down[i], sizes[i + 1], fab) for i in range(n_layers)]
        self._stages = build_stages(spec, root, sizes, train)
        age = failure_stream(root)
        for L in self._layers:
            L.draw_failures(age)
        self._read_rng = _stream(root, _READ)
        self._write_rng = _stream(root, _WRITE)
        self.ledger = Ledger(spec.energy.controller_op_j, spec.energy.digital_op_s)
        self.info = self._make_info(sizes, train, down)

    @classmethod
    def restore(cls, spec: ChipSpec, seed: dict, layer_sizes: tuple[int, ...], trainable: tuple[bool, ...],
                layers: list[Crossbar], *, read_rng: np.random.Generator, write_rng: np.random.Generator,
                ledger: Ledger, top_down: tuple[int, ...] | None = None) -> AnalogChip:
        """The chip made of saved parts that the caller has checked (``devices.persistence``):
        nothing is fabricated or drawn."""
        chip = cls.__new__(cls)
        chip.spec = spec
        chip.seed = seed
        chip._layers = list(layers)
        root = np.random.SeedSequence(seed["entropy"], spawn_key=tuple(seed["spawn_key"]))
        chip._stages = build_stages(spec, root, layer_sizes, trainable)  # drawn again from the seed
        chip._read_rng = read_rng
        chip._write_rng = write_rng
        chip.ledger = ledger
        chip.info = chip._make_info(layer_sizes, trainable, check_top_down(layer_sizes, top_down))
        return chip

    def _make_info(self, sizes: tuple[int, ...], train: tuple[bool, ...], down: tuple[int, ...]) -> ChipInfo:
        s = self.spec
        exact = s.programming.mode == "exact"
        return ChipInfo(
            layer_sizes=sizes,
            weight_shapes=tuple((sizes[i] + down[i] + 1, sizes[i + 1]) for i in range(len(sizes) - 1)),
            trainable=train,
            input_range=tuple(float(s.dac.range) for _ in self._layers),
            weight_range=tuple(math.inf if exact else L.w_max for L in self._layers),
            pulse_step=tuple(0.0 if exact else L.pulse_step_w for L in self._layers),
            output_range=tuple(float(s.adc.range) for _ in self._layers),
            bias_level=float(s.bias_level),
            digital_op_energy_j=s.energy.controller_op_j,
            digital_op_time_s=s.energy.digital_op_s,
            preset=s.name,
            top_down=down,
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
        return any(not L.exact and 2 * int(np.count_nonzero(L.life == 0)) >= L.life.size for L in self._layers)

    def read(self, layer: int, x: np.ndarray) -> np.ndarray:
        """Measure layer ``layer`` for inputs ``x`` (batch, n_in); returns float32 (batch, n_out)."""
        L = self._layer(layer)
        x = _as_float32(x, "x", (None, L.n_in), f"(batch, {L.n_in})")
        if x.shape[0] == 0:
            raise ValueError("x must hold at least one input vector (batch >= 1)")
        self._age()
        seed = int(self._read_rng.integers(0, 2**63))
        units = self._stages.get(int(layer))  # a fixed black-box stage (devices.stages)
        y, drive = L.read(x, self.clock_s, seed) if units is None else read_stage(L, units, x, self.clock_s, seed)
        cost = read_cost(self.spec, x.shape[0], L.n_in, L.n_out, drive,
                         float(L.row_gsum[:-1].mean()), float(L.row_gsum[-1]))
        cost.book(self.ledger, x.shape[0], L.n_out)
        return y

    def program(self, layer: int, delta: np.ndarray) -> None:
        """Request a change ``delta`` of shape ``info.weight_shapes[layer]`` in nominal weight units."""
        self._write(layer, delta, "delta", verify=False)

    def program_verify(self, layer: int, weights: np.ndarray) -> None:
        """Write ``weights`` (shape ``info.weight_shapes[layer]``, nominal weight units) into layer
        ``layer`` by program-and-verify, as a chip deploys fixed weights.

        Every pair is written as the spec's mapping says (``conductance.mapping``); one-directional
        devices are RESET first.  The result carries the residual error measured after such loops
        on real arrays (``programming.verify_error_us``), fresh drift exponents and the wear of
        the pulses spent; the ledger is charged for the pulses and the verify reads
        (``programming.verify_reads`` per device, each one ADC conversion and one cell read).
        Weights beyond a device's range saturate.  Exact chips take the weights as they are.
        """
        self._write(layer, weights, "weights", verify=True)

    def _write(self, layer: int, values: np.ndarray, name: str, verify: bool) -> None:
        """Validate a write to ``layer``, apply it (pulses, or program-and-verify) and charge it."""
        L = self._layer(layer)
        if not self.info.trainable[layer]:
            raise ValueError(f"layer {layer} is not trainable on this chip (info.trainable)")
        shape = (L.n_in + 1, L.n_out)
        values = _as_float32(values, name, shape, f"{shape}")
        self._age()
        # Exact weights use no write noise: no draw, so a refused request leaves the stream alone.
        seed = 0 if L.exact else int(self._write_rng.integers(0, 2**63))
        write = L.program_verify if verify else L.program
        pulses, _, slow, verify_reads = write(values, self.clock_s, seed)
        e = self.spec.energy
        self.ledger.charge("program", pulses * e.pulse_j, slow * e.pulse_s)
        if verify_reads:
            bits = self.spec.adc.bits or 0
            g_cell = 0.5 * (self.spec.conductance.g_min_us + self.spec.conductance.g_max_us) * 1e-6
            per_read = e.adc_fom_j_per_step * 2**bits + e.v_read**2 * g_cell * e.t_read_s
            cols = max(1, self.spec.adc.columns_per_adc)
            # A verify read reads a row of one device per weight: n_out devices at once, through
            # ceil(n_out / columns_per_adc) conversions; rows one after another.
            row_reads = verify_reads / max(1, L.n_out)
            self.ledger.charge("program", verify_reads * per_read,
                               row_reads * (e.t_read_s + math.ceil(L.n_out / cols) * e.adc_conversion_s))
            self.ledger.count("verify_reads", verify_reads)
        self.ledger.count("pulses", pulses)
        self.ledger.count("program_calls")

    def charge_pulse_update(self, layer: int, *, batch: int, bit_length: int, row_pulses: int, col_pulses: int,
                            translations: int, cancelled: int = 0) -> None:
        """Charge the periphery of an in-array update of layer ``layer`` by pulse coincidence.

        ``row_pulses`` and ``col_pulses`` pulses were sent by the line drivers
        (``energy.driver_pulse_j`` each, category ``drivers``) over ``batch`` samples of
        ``bit_length`` slots.  No time is charged here: the chip's clock advances by the
        programming of the net counts (``program``, row by row), which stands for the update's
        duration, so that it is counted once; ``translations`` numbers went through the stochastic translators,
        ``bit_length`` bits each (``energy.translator_bit_j`` per bit, category ``translators``).
        The device pulses of the net count per cell are charged by ``program``; ``cancelled``
        coincidences, which met a coincidence of the other sign on the same cell within the
        batch, were device pulses too and are charged here (``energy.pulse_j`` each, category
        ``program``, counted as ``cancelled_pulses``; their wear is not applied).
        """
        self._layer(layer)
        counts = {"batch": batch, "bit_length": bit_length, "row_pulses": row_pulses, "col_pulses": col_pulses,
                  "translations": translations, "cancelled": cancelled}
        for name, v in counts.items():
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        e = self.spec.energy
        pulses = int(row_pulses) + int(col_pulses)
        self.ledger.charge("drivers", pulses * e.driver_pulse_j)
        self.ledger.charge("translators", int(translations) * int(bit_length) * e.translator_bit_j)
        self.ledger.count("driver_pulses", pulses)
        self.ledger.count("translations", int(translations))
        if cancelled:
            self.ledger.charge("program", int(cancelled) * e.pulse_j)
            self.ledger.count("cancelled_pulses", int(cancelled))

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
    def payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The arrays of a saved chip (not copied) and its metadata: what :meth:`save` writes."""
        arrays: dict[str, np.ndarray] = {}
        layers_meta = []
        for i, L in enumerate(self._layers):
            st = L.state()
            for k, v in st["arrays"].items():
                arrays[f"L{i}_{k}"] = v
            layers_meta.append({"n_in": L.n_in, "n_out": L.n_out, "arrays": sorted(st["arrays"]),
                                "scalars": st["scalars"]})
        meta = {
            "format": archive.FORMAT,
            "spec": self.spec.model_dump(mode="json"),
            "seed": self.seed,
            "trainable": list(self.info.trainable),
            "layer_sizes": list(self.info.layer_sizes),
            "layers": layers_meta,
            "read_rng": self._read_rng.bit_generator.state,
            "write_rng": self._write_rng.bit_generator.state,
            "ledger": self.ledger.to_dict(),
        }
        if any(self.info.top_down):  # written only for the top-down layout: plain chips' files are unchanged
            meta["top_down"] = list(self.info.top_down)
        return arrays, meta

    def state_digest(self) -> str:
        """SHA-256 (hex) of the chip's whole state: every hidden array, the spec, seed, random
        streams and ledger (what :meth:`save` writes, not the file's bytes).  Two chips with the
        same digest behave identically from here on; a read, program or wait changes it; a chip
        loaded from a file has the digest of the chip that was saved.  Checkpoints use it to
        recognize their chip."""
        arrays, meta = self.payload()
        arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
        return archive.content_digest(arrays)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the whole hidden state, random streams included, atomically to ``path`` (.npz),
        sealed with a SHA-256 of its bytes: ``load_chip`` refuses the file after any change."""
        path = Path(path)
        arrays, meta = self.payload()
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        archive.atomic_savez(path, arrays)
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


def check_layer_sizes(layer_sizes: Sequence[int]) -> tuple[int, ...]:
    """``layer_sizes`` as a tuple of ints; ValueError unless it is at least two positive integers."""
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


def check_memory(spec: ChipSpec | str, layer_sizes: Sequence[int], top_down: Sequence[int] | None = None) -> None:
    """ValueError if a chip of ``spec`` (a spec or a preset name) with ``layer_sizes`` could not
    hold its device state in this machine's memory (``memory_limit_bytes``), or if the layer
    sizes are not valid; ``make_chip`` runs the same check before it allocates anything, and
    callers run it before they write or start anything."""
    if isinstance(spec, str):
        spec = get_preset(spec)
    elif not isinstance(spec, ChipSpec):
        raise ValueError(f"spec must be a ChipSpec or a preset name, got {type(spec).__name__}")
    sizes = check_layer_sizes(layer_sizes)
    _check_memory(spec, sizes, check_top_down(sizes, top_down))


def _check_memory(spec: ChipSpec, sizes: tuple[int, ...], down: tuple[int, ...]) -> None:
    """ValueError before anything is allocated if the chip's state cannot fit in memory."""
    exact = spec.programming.mode == "exact"
    rows = [sizes[i] + down[i] for i in range(len(sizes) - 1)]
    need = sum(state_bytes(exact, rows[i], sizes[i + 1]) for i in range(len(sizes) - 1))
    limit = memory_limit_bytes()
    if need > limit:
        weights = sum((rows[i] + 1) * sizes[i + 1] for i in range(len(sizes) - 1))
        raise ValueError(
            f"layer_sizes {list(sizes)} need {_bytes_text(need)} of device state ({weights:.3g} weights, "
            f"about {need / weights:.0f} bytes each in {spec.programming.mode} mode), more than this machine's "
            f"memory ({_bytes_text(limit)}); use narrower layers")


def _bytes_text(n: int) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def make_chip(spec: ChipSpec | str, layer_sizes: Sequence[int], seed: int | np.random.SeedSequence,
              trainable: Sequence[bool] | None = None, top_down: Sequence[int] | None = None) -> AnalogChip:
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
    top_down : sequence of int, optional
        Per layer, input rows that carry the layer above (:mod:`devices.layout`; default none,
        ``devices.top_down_layout`` gives the full one); they are fabricated like any other row.
    """
    if isinstance(spec, str):
        spec = get_preset(spec)
    elif not isinstance(spec, ChipSpec):
        raise ValueError(f"spec must be a ChipSpec or a preset name, got {type(spec).__name__}")
    return AnalogChip(spec, layer_sizes, seed, trainable, top_down)

