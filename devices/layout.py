"""The top-down layout of a chip: extra input rows that carry the layer above.

A layer may also receive, on extra input rows of its own array, the activities of the layer
above it, and the top layer a label; physically these are more rows of the same crossbar, whose
currents add on the same column wires as the bottom-up rows.  A layout is one integer per layer,
the number of such rows (0: none): for a layer below the top, 0 or the width of the layer above;
for the top layer, the width of its label input.  A read of layer ``i`` then takes
``layer_sizes[i] + top_down[i]`` inputs (bottom-up first, then top-down; the bias row stays last
in the weights) and is charged for the whole array like any read.  ``make_chip(...,
top_down=...)`` builds such a chip; ``ChipInfo.top_down`` reports it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["check_top_down", "top_down_layout"]


def _whole(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_top_down(sizes: tuple[int, ...], top_down: Sequence[int] | None) -> tuple[int, ...]:
    """The top-down layout of a chip of (checked) ``sizes`` as one int per layer (None: all 0).

    Layer ``i`` below the top may hear only the whole layer above it: ``top_down[i]`` is 0 or
    ``sizes[i + 2]``; the top layer's entry is the width of its label input (any integer >= 0).
    ValueError naming the layer otherwise.
    """
    n_layers = len(sizes) - 1
    if top_down is None:
        return (0,) * n_layers
    try:
        down = tuple(top_down)
    except TypeError:
        raise ValueError(f"top_down must be a sequence of one integer per layer, got {top_down!r}") from None
    if len(down) != n_layers:
        raise ValueError(f"top_down needs one width per layer ({n_layers}), got {len(down)}: {list(down)!r}")
    for i, t in enumerate(down):
        if not _whole(t) or t < 0:
            raise ValueError(f"top_down[{i}] must be an integer >= 0 (input rows from above), got {t!r}")
        if i < n_layers - 1 and t not in (0, sizes[i + 2]):
            raise ValueError(f"top_down[{i}] = {t}: layer {i} can hear only the whole layer above it, "
                             f"{sizes[i + 2]} wide (or nothing: 0); only the top layer's entry is free (its "
                             "label width)")
    return tuple(int(t) for t in down)


def top_down_layout(layer_sizes: Sequence[int], label_width: int) -> tuple[int, ...]:
    """The full top-down layout of ``layer_sizes``: every layer hears the layer above it, the top
    layer a label of ``label_width`` inputs (e.g. classes x copies).  For ``make_chip(top_down=...)``."""
    try:
        sizes = tuple(layer_sizes)
    except TypeError:
        sizes = ()
    if len(sizes) < 2 or not all(_whole(s) and s > 0 for s in sizes):
        raise ValueError(f"layer_sizes must be at least two positive integers (inputs, then each layer), "
                         f"got {layer_sizes!r}")
    if not _whole(label_width) or label_width < 1:
        raise ValueError(f"label_width must be a positive integer, got {label_width!r}")
    return tuple(int(sizes[i + 2]) for i in range(len(sizes) - 2)) + (int(label_width),)
