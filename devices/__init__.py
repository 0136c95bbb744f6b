"""Emulated analog chips: unique, noisy crossbar instances behind a small contract.

Public names: ``PRESETS``, ``make_chip``, ``inspect``, ``load_chip``,
``top_down_layout``, ``variant``, ``get_preset``, ``check_memory``, ``limit_threads``, the spec models, ``ChipInfo`` and
``Ledger``.
This package never imports ``mortal``.
"""

from .chip import AnalogChip, ChipInfo, check_memory, make_chip
from .layout import top_down_layout
from .inspection import ChipState, LayerState, inspect
from .energy import Ledger
from .persistence import load_chip
from .presets import PRESETS, get_preset, variant
from ._threads import limit_threads
from .spec import (
    ADCSpec,
    ChipSpec,
    ConductanceSpec,
    DACSpec,
    DriftSpec,
    EnergySpec,
    FaultSpec,
    NeuronSpec,
    ProgrammingSpec,
    ReadNoiseSpec,
    StageSpec,
    WireSpec,
)

__all__ = [
    "AnalogChip", "ChipInfo", "ChipState", "LayerState", "Ledger", "PRESETS",
    "check_memory", "get_preset", "inspect", "limit_threads", "load_chip", "make_chip", "top_down_layout", "variant",
    "ADCSpec", "ChipSpec", "ConductanceSpec", "DACSpec", "DriftSpec", "EnergySpec",
    "FaultSpec", "NeuronSpec", "ProgrammingSpec", "ReadNoiseSpec", "StageSpec", "WireSpec",
]
