"""Experiment configs: TOML files read into validated pydantic models.

A fleet config names the chips, the learner settings and the data; a sweep
adds lists of values to try.  Example (every table and key is optional)::

    name = "pcm-adc"
    seed = 0              # root seed: chip i is SeedSequence(seed, spawn_key=(i,))
    chips = 8             # instances per sweep point

    [chip]
    preset = "pcm"
    layers = [300, 300]   # hidden widths
    [chip.spec]           # overrides of the preset's spec groups (see devices.spec)
    adc = { bits = 6 }

    [train]               # any field of mortal.ff.FFConfig
    epochs = 5
    policy = "mixed"

    [data]
    source = "mini"       # or "mnist" (path, MORTAL_DATA, cache, download)
    train_size = 6000

    [sweep]               # dotted keys from the list below; every combination is run
    "chip.adc_bits" = [4, 6, 8]
    "train.policy" = ["direct", "mixed"]

Sweepable keys: ``chip.preset``, ``chip.layers`` (a list of width lists),
``chip.adc_bits``, ``chip.dac_bits``, ``train.reads_per_measurement``,
``train.policy``, ``train.epochs``, and any other ``train.<field>``.

Errors are :class:`ConfigError` with one message that names the file and the
field.  :meth:`ExperimentConfig.resolved` is the config with every default and
seed filled in; it is written beside the results so that a run can be repeated.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import devices

from .ff import FFConfig

__all__ = ["ConfigError", "ChipConfig", "DataConfig", "ExperimentConfig", "SweepPoint", "load_config",
           "SWEEP_KEYS"]

#: Sweep keys outside ``train.*`` and what they change.
SWEEP_KEYS = ("chip.preset", "chip.layers", "chip.adc_bits", "chip.dac_bits")
#: FFConfig fields a fleet sets itself (per chip), so a config may not.
FLEET_OWNED = ("seed", "eval_every", "checkpoint_every")


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
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChipConfig(_Model):
    """Which chips to build."""

    preset: str = "pcm"
    layers: tuple[int, ...] = (300, 300)
    """Hidden layer widths (the input width, 784, is implied)."""
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

    @property
    def sizes(self) -> tuple[int, ...]:
        return (784,) + tuple(self.layers)


class DataConfig(_Model):
    """Which MNIST to use."""

    source: Literal["mini", "mnist"] = "mini"
    path: Optional[str] = None
    """For ``source = "mnist"``: an .npz or IDX folder (default: MORTAL_DATA, cache, download)."""
    train_size: Optional[int] = Field(None, ge=1)
    test_size: Optional[int] = Field(None, ge=1)


class SweepPoint(_Model):
    """One combination of a sweep: its index, the values that vary, and the full settings."""

    index: int
    params: dict[str, Any]
    chip: ChipConfig
    train: FFConfig


class ExperimentConfig(_Model):
    """A fleet (and optionally a sweep) of chips."""

    name: str = "fleet"
    seed: int = Field(0, ge=0)
    chips: int = Field(4, ge=1, le=100_000)
    workers: Optional[int] = Field(None, ge=1, le=1024)
    """Local worker processes (default: the number of CPUs)."""
    chip: ChipConfig = Field(default_factory=ChipConfig)
    train: FFConfig = Field(default_factory=lambda: FFConfig(epochs=5, policy="mixed"))
    data: DataConfig = Field(default_factory=DataConfig)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("sweep")
    @classmethod
    def _sweep_keys(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        train_fields = set(FFConfig.model_fields) - set(FLEET_OWNED)
        for key, values in v.items():
            ok = key in SWEEP_KEYS or (key.startswith("train.") and key[6:] in train_fields)
            if not ok:
                raise ValueError(f"unknown sweep key {key!r}; expected one of {list(SWEEP_KEYS)} "
                                 "or train.<field of FFConfig>")
            if not isinstance(values, list) or not values:
                raise ValueError(f"sweep key {key!r} needs a non-empty list of values")
        return v

    @field_validator("train")
    @classmethod
    def _not_fleet_owned(cls, v: FFConfig) -> FFConfig:
        owned = sorted(set(FLEET_OWNED) & v.model_fields_set)
        if owned:
            raise ValueError(f"{', '.join(owned)} cannot be set here: the fleet seeds each chip's learner from "
                             "the top-level seed and evaluates once at the end")
        return v

    @model_validator(mode="after")
    def _points_valid(self) -> "ExperimentConfig":
        self.points()  # every combination must build
        return self

    def points(self) -> list[SweepPoint]:
        """Every combination of the sweep (one point when there is no sweep), validated."""
        keys = list(self.sweep)
        out = []
        for index, combo in enumerate(itertools.product(*(self.sweep[k] for k in keys))):
            chip = self.chip.model_dump()
            train = self.train.model_dump()
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
                    train[key[6:]] = value
            try:
                point = SweepPoint(index=index, params=params, chip=ChipConfig(**chip), train=FFConfig(**train))
            except ValidationError as exc:
                where = ", ".join(f"{k} = {v!r}" for k, v in params.items())
                raise ValueError(f"sweep point [{where}] is invalid: {_first_error(exc)}") from None
            out.append(point)
        return out

    def resolved(self) -> dict[str, Any]:
        """Plain data with every default filled in, plus each sweep point's settings."""
        data = self.model_dump(mode="json")
        for name in FLEET_OWNED:  # set per chip by the fleet (see the records), not by the config
            data["train"].pop(name, None)
        data["points"] = [p.model_dump(mode="json") for p in self.points()]
        for point in data["points"]:
            for name in FLEET_OWNED:
                point["train"].pop(name, None)
        return data


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def validation_messages(exc: ValidationError) -> str:
    """All of a ``ValidationError``'s problems on one line, each with its dotted location."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a TOML experiment config; raise :class:`ConfigError` naming file and field."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config ({exc.strerror or exc})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return config_from_dict(raw, str(p))


def config_from_dict(raw: dict[str, Any], origin: str = "config") -> ExperimentConfig:
    """Validate plain data (as read from TOML or JSON) into an :class:`ExperimentConfig`."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {validation_messages(exc)}") from None


def write_resolved(config: ExperimentConfig, path: str | Path) -> Path:
    """Write the resolved config as JSON (readable back with ``config_from_dict``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(config.resolved(), indent=2))
    return p
