"""Checks of user input shared by the learning modules.

Every function returns a clean array (or value) or raises :class:`~mortal.errors.InputError`
with one message that names the argument; nothing is changed before the checks pass.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["is_real", "as_inputs", "as_labels", "as_class_labels", "as_targets", "positive_int", "nonneg_int",
           "real_in", "both_or_neither"]


def is_real(v: Any) -> bool:
    """A real number (Python or numpy), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def positive_int(v: Any, name: str) -> int:
    """``v`` as an int >= 1 (bools and floats refused)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
        raise InputError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def nonneg_int(v: Any, name: str) -> int:
    """``v`` as an int >= 0 (bools and floats refused)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0:
        raise InputError(f"{name} must be an integer >= 0, got {v!r}")
    return int(v)


def real_in(v: Any, name: str, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False,
            allow_none: bool = False) -> float | None:
    """``v`` as a finite float within ``[lo, hi]`` (ends open as asked); ``None`` if allowed."""
    if v is None and allow_none:
        return None
    ok = is_real(v) and math.isfinite(float(v))
    if ok:
        f = float(v)
        ok = (f > lo if lo_open else f >= lo) and (f < hi if hi_open else f <= hi)
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        extra = " or None" if allow_none else ""
        raise InputError(f"{name} must be a number in {interval}{extra}, got {v!r}")
    return float(v)


def as_inputs(inputs: Any, name: str = "inputs", width: int | None = None) -> np.ndarray:
    """Validate examples and return float32 ``(n, d)`` in [0, 1].

    ``inputs``: ``(n, d)`` or ``(n, ...)`` (images are flattened), uint8 (scaled by 1/255)
    or float within [0, 1].  ``width``: the ``d`` the caller needs, if any.
    """
    arr = np.asarray(inputs)
    if arr.ndim < 2:
        raise InputError(f"{name} has shape {arr.shape}, expected (n, d) or (n, ...) examples")
    if arr.shape[0] == 0:
        raise InputError(f"{name} is empty")
    if arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if width is not None and arr.shape[1] != width:
        raise InputError(f"{name} has {arr.shape[1]} values per example (shape {np.shape(inputs)}); "
                         f"this learner and chip take {width}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if arr.dtype.kind != "f":
        raise InputError(f"{name} has dtype {arr.dtype}, expected uint8 (0..255) or float in [0, 1]")
    out = arr.astype(np.float32)
    if not np.isfinite(out).all() or out.min() < 0.0 or out.max() > 1.0:
        raise InputError(f"float {name} must be finite and within [0, 1]")
    return out


def as_labels(labels: Any, n: int, n_classes: int, name: str = "labels") -> np.ndarray:
    """Validate integer labels ``(n,)`` within ``0..n_classes-1``; int64."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputError(f"{name} has shape {arr.shape}, expected ({n},) to match the inputs")
    if arr.dtype.kind not in "iu":
        raise InputError(f"{name} has dtype {arr.dtype}, expected integers 0..{n_classes - 1}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise InputError(f"{name} must lie in 0..{n_classes - 1}, got values in {arr.min()}..{arr.max()}")
    return arr.astype(np.int64)


def as_class_labels(labels: Any, n: int, name: str = "labels") -> np.ndarray:
    """Validate ``n`` non-negative integer labels before the number of classes is known; int64."""
    arr = np.asarray(labels)
    if arr.shape != (n,) or arr.dtype.kind not in "iu" or (arr.size and arr.min() < 0):
        raise InputError(f"{name} must be {n} non-negative integers, one per example "
                         f"(got shape {arr.shape}, dtype {arr.dtype})")
    return arr.astype(np.int64)


def as_targets(targets: Any, n: int, n_classes: int | None = None) -> np.ndarray:
    """Validate soft targets: float ``(n, k)``, finite, >= 0, each row with a positive sum;
    returned as float32 rows that sum to 1."""
    arr = np.asarray(targets)
    k = arr.shape[1] if n_classes is None and arr.ndim == 2 else n_classes
    if arr.ndim != 2 or arr.shape != (n, k) or (k is not None and k < 2):
        raise InputError(f"targets have shape {arr.shape}, expected ({n}, {k if k else 'k >= 2'}) "
                         "to match the inputs")
    if arr.dtype.kind != "f":
        raise InputError(f"targets have dtype {arr.dtype}, expected float probabilities")
    a = arr.astype(np.float64)
    if not np.isfinite(a).all() or (a < 0).any():
        raise InputError("targets must be finite and non-negative")
    total = a.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        raise InputError("every row of targets needs a positive sum")
    return (a / total).astype(np.float32)


def both_or_neither(a: Any, b: Any, names: str) -> bool:
    """True if both are given, False if neither; InputError if only one."""
    if (a is None) != (b is None):
        raise InputError(f"give both {names}, or neither")
    return a is not None
