"""Experiment configs: TOML files read into validated pydantic models.

A fleet config names the chips, the learner settings and the data; a sweep
adds lists of values to try.  Example (every table and key is optional)::

    name = "pcm-adc"
    seed = 0              # root seed: chip i is SeedSequence(seed, spawn_key=(i,))
    chips = 8             # instances per sweep point

    [chip]
    preset = "pcm"
    layers = [300, 300]   # hidden widths (the input width follows from the data)
    [chip.spec]           # overrides of the preset's spec groups (see devices.spec)
    adc = { bits = 6 }

    [train]               # mortal.ff.FFConfig: top-level fields and groups
    epochs = 5
    [train.optimizer]
    lr = 0.02

    [data]
    source = "mini"       # "mnist", "digits", or an .npz path
    train_size = 6000

    [sweep]               # dotted keys; every combination is run
    "chip.adc_bits" = [4, 6, 8]
    "train.policy" = ["direct", "mixed"]
    "train.optimizer.lr" = [0.01, 0.02]

Sweepable keys: ``chip.preset``, ``chip.layers`` (a list of width lists),
``chip.adc_bits``, ``chip.dac_bits``, and any ``train.<field>`` of ``FFConfig``
(dotted through its groups, e.g. ``train.measurement.reads``).

``name`` is one plain folder name (the run goes to ``runs/<name>`` unless the command is given
``--out``): no path separator or drive, not empty, ``.`` or ``..``.  A config runs at most
:data:`MAX_CHIP_RUNS` (100,000) chips, sweep points x chips, counted before any point is built.

Errors are :class:`ConfigError` with one message that names the file and the
field.  :meth:`ExperimentConfig.resolved` is the config with every default and
seed filled in; it is written beside the results so that a run can be repeated.
"""

from __future__ import annotations

import itertools
import json
import math
import tomllib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import devices

from .options import format_validation_error, merge

from .ff import FFConfig

__all__ = ["ConfigError", "ChipConfig", "DataConfig", "ExperimentConfig", "SweepPoint", "load_config",
           "SWEEP_KEYS", "MAX_CHIP_RUNS", "chip_input_width", "chip_top_down", "image_shape", "load_data"]

#: Sweep keys outside ``train.*`` and what they change.
SWEEP_KEYS = ("chip.preset", "chip.layers", "chip.adc_bits", "chip.dac_bits")

#: The most chips one config may run: sweep points x chips per point (counted before any point is built).
MAX_CHIP_RUNS = 100_000


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the field."""


def known_preset(name: str) -> str:
    """``name`` if it is a preset of ``devices`` (else ``ValueError`` listing them)."""
    devices.get_preset(name)
    return name


def positive_widths(widths: tuple[int, ...]) -> tuple[int, ...]:
    """Hidden layer widths: one or more, all positive."""
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"needs one or more positive widths, got {list(widths)}")
    return widths


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)


class ChipConfig(_Model):
    """Which chips to build."""

    preset: str = "pcm"
    layers: tuple[int, ...] = (300, 300)
    """Hidden layer widths (the input width follows from the data and the label layout)."""
    spec: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Overrides of the preset's spec groups, e.g. ``{"adc": {"bits": 6}}``."""

    _known = field_validator("preset")(known_preset)
    _widths = field_validator("layers")(positive_widths)

    @model_validator(mode="after")
    def _spec_builds(self) -> "ChipConfig":
        try:
            self.build_spec()
        except ValidationError as exc:
            raise ValueError(f"spec.{_first_error(exc)}") from None
        return self

    def build_spec(self) -> devices.ChipSpec:
        """The preset with the overrides applied (validated by ``devices``)."""
        if not self.spec:
            return devices.get_preset(self.preset)
        return devices.variant(self.preset, **self.spec)

    def sizes(self, n_inputs: int) -> tuple[int, ...]:
        """Layer sizes for a chip whose first layer takes ``n_inputs`` inputs."""
        return (int(n_inputs),) + tuple(self.layers)


class DataConfig(_Model):
    """Which dataset to use (``mortal.data.load_dataset``)."""

    source: Literal["mini", "mnist", "digits", "npz"] = "mini"
    """The bundled MNIST subset, full MNIST, scikit-learn's 8x8 digits, or an .npz file (path)."""
    path: Optional[str] = None
    """For mnist: an .npz or IDX folder (default: MORTAL_DATA, cache, download); for npz: the file."""
    train_size: Optional[int] = Field(None, ge=1)
    """Use only the first N training examples."""
    test_size: Optional[int] = Field(None, ge=1)
    """Use only the first N test examples."""
    shape: Optional[tuple[int, ...]] = None
    """Each example's shape, (H, W) or (H, W, C), for data stored flat (the unsupervised mode's
    hybrid masks need it); None: the shape the dataset carries."""

    @model_validator(mode="after")
    def _npz_has_path(self) -> "DataConfig":
        if self.source == "npz" and not self.path:
            raise ValueError("source = \"npz\" needs a path")
        if self.shape is not None and (len(self.shape) not in (2, 3) or min(self.shape) < 1):
            raise ValueError(f"shape must be (H, W) or (H, W, C) of positive integers, got {list(self.shape)}")
        return self


def load_data(cfg: DataConfig):
    """The :class:`mortal.data.Dataset` a data config names (sizes applied); ValueError if unusable."""
    from .data import load_dataset

    if cfg.path and cfg.source not in ("npz", "mnist"):
        raise ValueError(f"data.path is for source \"npz\" or \"mnist\", not {cfg.source!r}")
    data = load_dataset(cfg.path or cfg.source).subset(cfg.train_size, cfg.test_size)
    if cfg.shape is not None:
        try:
            data = data.with_shape(cfg.shape)
        except ValueError as exc:
            raise ValueError(f"data.{exc}") from None
    return data


def chip_input_width(spec: devices.ChipSpec, train: FFConfig, data: Any) -> int:
    """The input width of a chip for ``data`` (a ``Dataset``) under ``train``'s label layout.

    ``placement = "auto"`` writes the label over the first inputs when those are nearly blank
    (at most 1 % of their values in the training set nonzero; 0.27 % for the 80 inputs that
    MNIST's 8 label copies take, in its top rows) and appends it otherwise.  A mode that writes
    no label into the chip (``unsupervised``) takes the data's width.
    """
    from .ff.modes import mode_recipe

    if not mode_recipe(train).label_inputs:
        return data.n_inputs
    lab = train.labels
    copies = train.label_copies(bounded_weights=spec.programming.mode != "exact")
    width = data.n_classes * copies
    d = data.n_inputs
    placement = lab.placement
    if placement == "auto":
        blank = width <= d and float(np.count_nonzero(data.train_inputs[:, :width])) <= 0.01 * data.n_train * width
        placement = "first" if blank else "append"
    return d if placement == "first" else d + width


def chip_top_down(spec: devices.ChipSpec, train: FFConfig, n_classes: int,
                  sizes: tuple[int, ...]) -> Optional[tuple[int, ...]]:
    """The top-down layout of a chip of ``sizes`` for ``train``'s mode (``make_chip(top_down=...)``):
    for mode ``recurrent`` every layer hears the layer above and the top layer the label
    (``n_classes`` x the label copies), else none."""
    if train.mode != "recurrent":
        return None
    copies = train.label_copies(bounded_weights=spec.programming.mode != "exact")
    return devices.top_down_layout(sizes, n_classes * copies)


def image_shape(data: Any) -> Optional[tuple[int, ...]]:
    """The examples' shape of ``data`` (a ``Dataset``) if they are images, (H, W) or (H, W, C);
    else None (``FFLearner.fit``'s ``example_shape``: the unsupervised mode's masks need it)."""
    return tuple(data.shape) if len(data.shape) in (2, 3) else None


class SweepPoint(_Model):
    """One combination of a sweep: its index, the values that vary, and the full settings."""

    index: int
    params: dict[str, Any]
    chip: ChipConfig
    train: FFConfig


class ExperimentConfig(_Model):
    """A fleet (and optionally a sweep) of chips."""

    # The run's name: ``mortal fleet`` and ``sweep`` write to ``runs/<name>`` unless given ``--out``,
    # so it is one plain folder name (no path separator or drive, not ``.`` or ``..``).
    name: str = "fleet"
    seed: int = Field(0, ge=0)
    chips: int = Field(4, ge=1, le=MAX_CHIP_RUNS)
    workers: Optional[int] = Field(None, ge=1, le=1024)
    """Local worker processes (default: the number of CPUs)."""
    chip: ChipConfig = Field(default_factory=ChipConfig)
    train: FFConfig = Field(default_factory=FFConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty: it names the run folder runs/<name>")
        parts = (PurePosixPath(v), PureWindowsPath(v))
        if v in (".", "..") or "\0" in v or any(p.anchor or len(p.parts) != 1 for p in parts):
            raise ValueError(f"{v!r} is not a plain folder name: the run goes to runs/<name>, so the name "
                             "may hold no path separator or drive and may not be '.' or '..'")
        return v

    @field_validator("sweep")
    @classmethod
    def _sweep_keys(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            ok = key in SWEEP_KEYS or (key.startswith("train.") and key != "train.seed")
            if not ok:
                raise ValueError(f"unknown sweep key {key!r}; expected one of {list(SWEEP_KEYS)} "
                                 "or train.<field of FFConfig> (dotted through its groups)")
            if not isinstance(values, list) or not values:
                raise ValueError(f"sweep key {key!r} needs a non-empty list of values")
        return v

    @field_validator("train")
    @classmethod
    def _seed_is_the_fleets(cls, v: FFConfig) -> FFConfig:
        if "seed" in v.model_fields_set:
            raise ValueError("seed cannot be set here: the fleet seeds each chip's learner from the top-level seed")
        return v

    @model_validator(mode="after")
    def _points_valid(self) -> "ExperimentConfig":
        # Counted before any point is built: a sweep of 10^8 points is refused at once.
        n_points = math.prod(len(values) for values in self.sweep.values())
        if n_points * self.chips > MAX_CHIP_RUNS:
            raise ValueError(f"sweep: {n_points:,} points x {self.chips:,} chip{'s' if self.chips > 1 else ''} = "
                             f"{n_points * self.chips:,} chips to run, more than the limit of {MAX_CHIP_RUNS:,} "
                             "in one run; split the sweep into several configs")
        self.points()  # every combination must build
        return self

    def points(self) -> list[SweepPoint]:
        """Every combination of the sweep (one point when there is no sweep), validated."""
        keys = list(self.sweep)
        out = []
        for index, combo in enumerate(itertools.product(*(self.sweep[k] for k in keys))):
            chip = self.chip.model_dump()
            train_changes: dict[str, Any] = {}
            params = dict(zip(keys, combo))
            for key, value in params.items():
                if key == "chip.preset":
                    chip["preset"] = value
                elif key == "chip.layers":
                    chip["layers"] = value
                elif key in ("chip.adc_bits", "chip.dac_bits"):
                    group = key[5:8]
                    chip["spec"] = {**chip["spec"], group: {**chip["spec"].get(group, {}), "bits": value}}
                else:
                    train_changes[key[6:]] = value
            try:
                train = self.train.changed(**train_changes) if train_changes else self.train
                point = SweepPoint(index=index, params=params, chip=ChipConfig(**chip), train=train)
            except ValidationError as exc:
                where = ", ".join(f"{k} = {v!r}" for k, v in params.items())
                raise ValueError(f"sweep point [{where}] is invalid: {_first_error(exc)}") from None
            out.append(point)
        return out

    def resolved(self) -> dict[str, Any]:
        """Plain data with every default filled in, plus each sweep point's settings."""
        data = self.model_dump(mode="json")
        data["train"].pop("seed", None)  # set per chip by the fleet (see the records), not by the config
        data["points"] = [p.model_dump(mode="json") for p in self.points()]
        for point in data["points"]:
            point["train"].pop("seed", None)
        return data


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate a TOML experiment config, with ``overrides`` (nested plain data, e.g.
    from ``--set``) merged over it; raise :class:`ConfigError` naming file and field."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a UTF-8 text file (TOML configs are UTF-8)") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    if overrides:
        raw = merge(raw, overrides)
    return config_from_dict(raw, str(p))


def config_from_dict(raw: dict[str, Any], origin: str = "config") -> ExperimentConfig:
    """Validate plain data (as read from TOML or JSON) into an :class:`ExperimentConfig`."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {format_validation_error(exc, model=ExperimentConfig)}") from None


def write_resolved(config: ExperimentConfig, path: str | Path) -> Path:
    """Write the resolved config as JSON (readable back with ``config_from_dict``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(config.resolved(), indent=2))
    return p
