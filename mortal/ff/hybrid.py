"""Hybrid negatives of the unsupervised mode: two examples cut along a blurred random mask.

Per example: a random bit image of the example's spatial shape ``(H, W)`` (each pixel 0 or 1
with probability 1/2) is blurred ``blurs`` times with the filter [1/4, 1/2, 1/4], along the
rows and then along the columns in each pass, and thresholded into a mask; the hybrid is
``mask * a + (1 - mask) * b``.  Short-range structure (strokes) survives, long-range shape
does not, so a layer that tells examples from hybrids must learn long-range correlations.

Edges: the image is extended by repeating its border pixels before each filter pass (the
filter's weights always sum to 1, so the border is neither darkened nor brightened and the
mask's statistics are the same at the border as inside).

Threshold: a pixel is 1 where the blurred image exceeds ``threshold``; a pixel exactly at the
threshold keeps its own unblurred bit.  At ``threshold = 0.5`` the mask is then exactly as
likely to be 1 as 0 (flipping every bit flips the mask), whatever the number of passes.

Partner ``b``: for each example ``a`` at index ``i`` of a training set of ``n``, a draw from
the whole training set other than ``i`` (uniform over the ``n - 1`` others), so ``b`` does not
depend on how the set was cut into batches.  Images with channels ``(H, W, C)`` share one mask
across their channels.  Every random draw comes from the generator passed in.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import InputError

__all__ = ["blur", "hybrid_masks", "hybrid_partners", "hybrids", "example_shape_of", "example_shape_from",
           "hybrid_ops"]


def example_shape_of(shape: Any, n_data: int, name: str = "example_shape") -> tuple[int, ...]:
    """``shape`` checked as an example's shape ``(H, W)`` or ``(H, W, C)`` of ``n_data`` values."""
    try:
        out = tuple(int(s) for s in shape)
        ok = all(float(s) == int(s) and not isinstance(s, bool) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be (H, W) or (H, W, C) positive integers, got {shape!r}") from None
    if not ok or len(out) not in (2, 3) or min(out) < 1:
        raise InputError(f"{name} must be (H, W) or (H, W, C) positive integers, got {shape!r}")
    if int(np.prod(out)) != n_data:
        raise InputError(f"{name} {out} holds {int(np.prod(out))} values, the examples have {n_data}")
    return out


def example_shape_from(inputs: Any, given: Any) -> tuple[int, ...] | None:
    """One example's shape: that of ``inputs`` (n, H, W) or (n, H, W, C), or ``given`` for flat
    inputs (n, d) (checked against ``d``); None if neither says."""
    dims = tuple(int(v) for v in np.shape(inputs))
    if len(dims) in (3, 4):
        if given is not None and example_shape_of(given, int(np.prod(dims[1:]))) != dims[1:]:
            raise InputError(f"example_shape {tuple(given)} differs from the inputs' shape {dims[1:]}")
        return dims[1:]
    if given is None:
        return None
    if len(dims) != 2:
        raise InputError(f"inputs of shape {dims} are neither (n, d), (n, H, W) nor (n, H, W, C)")
    return example_shape_of(given, dims[1])


def hybrid_ops(batch: int, shape: Sequence[int], blurs: int) -> int:
    """The controller's digital operations to make ``batch`` hybrids of examples of ``shape``:
    per mask pixel a bit draw, 10 per filter pass (3 multiplies and 2 adds along each axis) and
    the threshold; per example value the selection of ``a`` or ``b``."""
    pixels = int(shape[0]) * int(shape[1])
    return int(batch) * (pixels * (2 + 10 * int(blurs)) + int(np.prod(shape)))


def blur(images: np.ndarray, passes: int) -> np.ndarray:
    """``images`` (B, H, W) blurred ``passes`` times by [1/4, 1/2, 1/4] along rows, then columns
    (border pixels repeated), float32 (B, H, W)."""
    a = np.asarray(images, np.float32)
    if a.ndim != 3:
        raise InputError(f"blur needs images (B, H, W), got shape {a.shape}")
    q, h = np.float32(0.25), np.float32(0.5)
    for _ in range(int(passes)):
        for axis in (2, 1):
            pad = np.concatenate([a.take([0], axis=axis), a, a.take([-1], axis=axis)], axis=axis)
            n = a.shape[axis]
            lo = pad.take(np.arange(0, n), axis=axis)
            mid = pad.take(np.arange(1, n + 1), axis=axis)
            hi = pad.take(np.arange(2, n + 2), axis=axis)
            a = q * lo + h * mid + q * hi
    return a


def hybrid_masks(n: int, hw: Sequence[int], blurs: int, threshold: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` masks of shape ``hw = (H, W)``, float32 (n, H, W) of 0 and 1 (see the module docstring)."""
    height, width = int(hw[0]), int(hw[1])
    bits = rng.integers(0, 2, size=(int(n), height, width), dtype=np.int8).astype(np.float32)
    smooth = blur(bits, blurs)
    t = np.float32(threshold)
    return np.where(smooth == t, bits, (smooth > t).astype(np.float32))


def hybrid_partners(idx: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """For each training index in ``idx`` a different index of ``0..n-1``, uniform over the others (int64)."""
    if n < 2:
        raise InputError("hybrid negatives need at least 2 training examples")
    idx = np.asarray(idx, np.int64)
    return (idx + rng.integers(1, n, size=idx.shape[0])) % n


def hybrids(a: np.ndarray, b: np.ndarray, shape: Sequence[int], blurs: int, threshold: float,
            rng: np.random.Generator) -> np.ndarray:
    """Hybrids ``mask * a + (1 - mask) * b`` of examples ``a`` and ``b`` (float (B, d) with
    ``d = prod(shape)``, or (B, *shape)), one mask per row; float32 of ``a``'s shape.

    ``shape``: the example's ``(H, W)`` or ``(H, W, C)`` (channels share the mask)."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    if a.shape != b.shape:
        raise InputError(f"hybrids of examples of shapes {a.shape} and {b.shape}")
    shape = example_shape_of(shape, int(np.prod(a.shape[1:])))
    batch = a.shape[0]
    mask = hybrid_masks(batch, shape[:2], blurs, threshold, rng)
    if len(shape) == 3:
        mask = mask[..., None]
    ar = a.reshape(batch, *shape)
    br = b.reshape(batch, *shape)
    return np.where(mask > 0, ar, br).reshape(a.shape)
