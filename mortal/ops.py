"""The controller's operation counts, in one place.

Each function returns the digital operations of one step of the learner; the learner
charges the ledger from these counts (``chip.ledger.charge_digital``).  :func:`training_macs`
counts the multiply-accumulates of the same steps (the three passes and the gradients per
batch, the head, and the head refit at the end) for the fleet's digital GPU reference.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["forward_ops", "averaging_ops", "logits_ops", "layer_update_ops", "head_update_ops",
           "direct_program_ops", "mixed_program_ops", "signal_ops", "analog_update_ops", "probability_ops", "slope_table_ops",
           "column_mean_ops", "training_macs", "head_width"]


def forward_ops(batch: int, sizes: Sequence[int], n_layers: int, corrected: bool) -> int:
    """RMS normalization, goodness and scaling of a pass through ``n_layers`` layers: about 5
    operations per value (6 with a drift correction applied)."""
    per_value = 6 if corrected else 5
    return per_value * batch * sum(sizes[: n_layers + 1])


def averaging_ops(reads: int, size: int) -> int:
    """Averaging ``reads`` reads of ``size`` outputs."""
    return reads * size


def logits_ops(batch: int, width: int, n_classes: int) -> int:
    """The softmax head's logits: one multiply-add (2 operations) per feature and class."""
    return 2 * batch * width * n_classes


def layer_update_ops(batch: int, n_in: int, n_out: int) -> int:
    """One layer's update from a positive and a negative phase of ``batch`` examples: the
    signal (~6 per value), the gradient product (2 per multiply-add) and smoothing and step
    (~6 per weight, bias row included)."""
    sig = 2 * batch * n_out
    return 6 * sig + 2 * (2 * batch * n_in) * n_out + 6 * (n_in + 1) * n_out


def head_update_ops(batch: int, width: int, n_classes: int) -> int:
    """The softmax head's update: gradient product and smoothing and step (~8 per weight)."""
    return 2 * batch * width * n_classes + 8 * width * n_classes


def signal_ops(batch: int, n_out: int) -> int:
    """The per-unit signal of a positive and a negative phase of ``batch`` examples, alone (the
    ``analog`` policy's share of :func:`layer_update_ops`): ~6 per value."""
    return 6 * (2 * batch * n_out)


def analog_update_ops(samples: int, rows: int, cols: int) -> int:
    """Update management of ``samples`` rank-1 updates sent to the array: per sample the largest
    magnitude of the row and the column vector (1 per value) and its two scales (~4), then per
    value a scaling and a clip (2): about ``3 (rows + cols) + 4`` per sample, nothing per weight."""
    return samples * (3 * (rows + cols) + 4)


def direct_program_ops(size: int) -> int:
    """Sending a wanted change as it is: one operation per weight."""
    return size


def mixed_program_ops(size: int) -> int:
    """Mixed precision: accumulate, divide, truncate, multiply, subtract per weight."""
    return 5 * size


def probability_ops(size: int) -> int:
    """Softmax of a teacher's logits: about 4 operations per value."""
    return 4 * size


def slope_table_ops(size: int) -> int:
    """Building perturbed slope tables from ``size`` swept outputs: about 12 per value."""
    return 12 * size


def column_mean_ops(batch: int, n_out: int) -> int:
    """Mean of a layer's measured outputs per column."""
    return batch * n_out


def head_width(sizes: Sequence[int], head_layers: Sequence[int]) -> int:
    """Features the softmax head reads: the widths of its hidden layers."""
    return sum(int(sizes[i + 1]) for i in head_layers)


def training_macs(sizes: Sequence[int], n_images: int, batch: int, epochs: int, head_features: int,
                  n_classes: int = 10, refit_epochs: int = 0, passes: int = 3,
                  top_down: Sequence[int] | None = None, top_down_passes: int = 0, updates: int = 2) -> float:
    """Multiply-accumulates of the same training on a digital machine.

    Per batch and layer ``passes`` forward passes (supervised: neutral, positive, negative; the
    unsupervised mode's positive pass is also the head's, so 2), of which ``top_down_passes``
    also read the layer's ``top_down[i]`` top-down inputs (the recurrent mode's steps), and the
    weight gradient of ``updates`` example sets (2: positive and negative; bias row and top-down
    inputs included), plus the head's logits and gradient over ``head_features`` features; with
    ``refit_epochs``, the head refit at the end: one neutral (bottom-up) pass of every image
    and, per refit epoch, the head's logits and gradient.  ``Mode.reference_work`` gives a
    mode's counts.
    """
    n_batches = n_images // batch
    down = tuple(top_down) if top_down else (0,) * (len(sizes) - 1)
    if len(down) != len(sizes) - 1:
        raise ValueError(f"top_down names {len(down)} layers, sizes {len(sizes) - 1}")
    per_batch = 0.0
    for i in range(len(sizes) - 1):
        n_in, n_out = sizes[i], sizes[i + 1]
        per_batch += passes * batch * n_in * n_out + top_down_passes * batch * down[i] * n_out
        per_batch += (updates * batch) * (n_in + down[i] + 1) * n_out
    per_batch += 2 * batch * head_features * n_classes
    total = per_batch * n_batches * epochs
    if refit_epochs:
        total += n_images * sum(sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1))
        total += refit_epochs * n_batches * 2 * batch * head_features * n_classes
    return total
