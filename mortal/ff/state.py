"""The controller's memory of one learner on one chip, as one object.

Everything the digital controller next to a chip keeps between steps lives here: the
smoothed gradients, the sum of requested weight changes (for the weight cost), the
peer-normalization means, the softmax head, the neuron slope tables, the update policy's
accumulators, the drift correction, the label layout, the epoch count and the history.
:meth:`ControllerState.state_dict` / :meth:`ControllerState.from_state_dict` turn it into
plain data (arrays and JSON values) and back, for checkpoints; :meth:`copy` duplicates it.
"""

from __future__ import annotations

import copy as _copy
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..errors import InputError
from .measure import LabelLayout

__all__ = ["ControllerState"]

SlopeTable = tuple[np.ndarray, float]


@dataclass
class ControllerState:
    """Controller memory (see the module docstring).

    Attributes
    ----------
    sizes : tuple of int
        The chip's layer sizes ``(n_0, ..., n_L)``.
    layout : LabelLayout
        How labels enter the input.
    readout_layers, head_layers : list of int
        Hidden layers summed by the goodness readout, and read by the softmax head.
    smooth : list of float32 (n_in + 1, n_out)
        Smoothed gradients, bias row last.
    shadow : list of float32 (n_in, n_out)
        Sum of the weight changes requested so far.
    peer_mean : list of float64 (n_out,)
        Running mean activity per unit.
    head, head_smooth : float32 (features, k)
        The softmax head and its smoothed gradient.
    slopes : list of (float32 (n_out, bins), float)
        Relative slope table and bin width per layer; ``(n_out, 0)`` tables mean nominal.
    accumulators : list of float32 arrays
        The update policy's memory (empty for ``direct``).
    correction : list of float32 (n_out,) or None
        Drift correction factors applied to every measured output.
    example_shape : tuple of int or None
        The shape ``(H, W)`` or ``(H, W, C)`` of one example, if known (the unsupervised
        mode's masks need it); checkpoints saved before it existed load with None.
    top_down : tuple of int or None
        Per layer, the chip's top-down input rows (``chip.info.top_down``, the recurrent mode);
        ``smooth``, ``shadow`` and the accumulators count them.  None: none.
    """

    sizes: tuple[int, ...]
    layout: LabelLayout
    readout_layers: list[int]
    head_layers: list[int]
    smooth: list[np.ndarray]
    shadow: list[np.ndarray]
    peer_mean: list[np.ndarray]
    head: np.ndarray
    head_smooth: np.ndarray
    slopes: list[SlopeTable]
    accumulators: list[np.ndarray] = field(default_factory=list)
    correction: Optional[list[np.ndarray]] = None
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    example_shape: Optional[tuple[int, ...]] = None
    top_down: Optional[tuple[int, ...]] = None

    @classmethod
    def fresh(cls, sizes: tuple[int, ...], layout: LabelLayout, readout_layers: list[int],
              head_layers: list[int], accumulators: list[np.ndarray],
              top_down: tuple[int, ...] = ()) -> "ControllerState":
        """Zero memory for a chip of ``sizes`` (peer means start at 0.5, slopes nominal) and
        ``top_down`` input rows per layer (empty or all 0: none)."""
        n_layers = len(sizes) - 1
        down = tuple(int(t) for t in top_down) if any(top_down) else None
        rows = [sizes[i] + (down[i] if down else 0) for i in range(n_layers)]
        width = sum(sizes[i + 1] for i in head_layers)
        head = np.zeros((width, layout.n_classes), np.float32)
        return cls(
            sizes=tuple(sizes), layout=layout, readout_layers=list(readout_layers), head_layers=list(head_layers),
            smooth=[np.zeros((rows[i] + 1, sizes[i + 1]), np.float32) for i in range(n_layers)],
            shadow=[np.zeros((rows[i], sizes[i + 1]), np.float32) for i in range(n_layers)],
            peer_mean=[np.full(sizes[i + 1], 0.5, np.float64) for i in range(n_layers)],
            head=head, head_smooth=np.zeros_like(head),
            slopes=[(np.zeros((sizes[i + 1], 0), np.float32), 1.0) for i in range(n_layers)],
            accumulators=accumulators, top_down=down,
        )

    @property
    def n_classes(self) -> int:
        return self.layout.n_classes

    def copy(self) -> "ControllerState":
        """A deep copy (arrays included)."""
        return _copy.deepcopy(self)

    # -- plain data ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"arrays": {name: ndarray}, "meta": JSON-able dict}``; the arrays are not copied."""
        arrays: dict[str, np.ndarray] = {"head": self.head, "head_smooth": self.head_smooth}
        for i in range(len(self.smooth)):
            arrays[f"smooth{i}"] = self.smooth[i]
            arrays[f"shadow{i}"] = self.shadow[i]
            arrays[f"peer{i}"] = self.peer_mean[i]
            arrays[f"slope{i}"] = self.slopes[i][0]
        for i, a in enumerate(self.accumulators):
            arrays[f"acc{i}"] = a
        for i, f in enumerate(self.correction or ()):
            arrays[f"correction{i}"] = f
        lay = self.layout
        meta = {
            "sizes": list(self.sizes),
            "layout": {"n_data": lay.n_data, "n_classes": lay.n_classes, "copies": lay.copies,
                       "append": lay.append, "strength": lay.strength, "neutral_level": lay.neutral_level},
            "readout_layers": list(self.readout_layers), "head_layers": list(self.head_layers),
            "slope_widths": [float(w) for _, w in self.slopes],
            "n_accumulators": len(self.accumulators),
            "epoch": int(self.epoch), "history": self.history,
            "example_shape": None if self.example_shape is None else [int(v) for v in self.example_shape],
        }
        if self.top_down:  # saved only by the recurrent mode: other states are unchanged
            meta["top_down"] = list(self.top_down)
        return {"arrays": arrays, "meta": meta}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "ControllerState":
        """Rebuild from :meth:`state_dict` output; InputError if arrays are missing or misshapen."""
        arrays, meta = state["arrays"], state["meta"]
        try:
            sizes = tuple(_whole(s, "layer size") for s in meta["sizes"])
            layout = _layout(meta["layout"])
            n_layers = len(sizes) - 1
            if n_layers < 1 or min(sizes) < 1:
                raise InputError(f"saved layer sizes {sizes} are not those of a chip")
            if layout.chip_width != sizes[0]:
                raise InputError(f"the saved label layout takes {layout.chip_width} inputs, the chip {sizes[0]}")
            readout = [_whole(i, "readout layer") for i in meta["readout_layers"]]
            head = [_whole(i, "head layer") for i in meta["head_layers"]]
            # A layout without label inputs (the unsupervised mode) has no goodness readout.
            if (not readout and layout.copies > 0) or not head or any(not 0 <= i < n_layers for i in readout + head):
                raise InputError(f"saved readout/head layers {readout}/{head} do not fit {n_layers} layers")
            n_acc = _whole(meta["n_accumulators"], "number of accumulators")
            if n_acc not in (0, n_layers):
                raise InputError(f"{n_acc} saved accumulators for {n_layers} layers")
            down = [_whole(t, "top-down width") for t in meta.get("top_down", [0] * n_layers)]
            if len(down) != n_layers or min(down) < 0 \
                    or not all(t in (0, sizes[i + 2]) for i, t in enumerate(down[:-1])):
                raise InputError(f"the saved top-down widths {down} do not fit layer sizes {sizes}")
            acc = [_shaped(arrays[f"acc{i}"], (sizes[i] + down[i] + 1, sizes[i + 1]), f"acc{i}").astype(np.float32)
                   for i in range(n_acc)]
            st = cls.fresh(sizes, layout, readout, head, acc, tuple(down))
            st.head[...] = _shaped(arrays["head"], st.head.shape, "head")
            st.head_smooth[...] = _shaped(arrays["head_smooth"], st.head.shape, "head_smooth")
            widths = [float(w) for w in meta["slope_widths"]]
            for i in range(n_layers):
                st.smooth[i][...] = _shaped(arrays[f"smooth{i}"], st.smooth[i].shape, f"smooth{i}")
                st.shadow[i][...] = _shaped(arrays[f"shadow{i}"], st.shadow[i].shape, f"shadow{i}")
                st.peer_mean[i][...] = _shaped(arrays[f"peer{i}"], st.peer_mean[i].shape, f"peer{i}")
                table = np.array(arrays[f"slope{i}"], np.float32)
                if table.ndim != 2 or table.shape[0] != sizes[i + 1] or not np.isfinite(table).all():
                    raise InputError(f"saved slope{i} has shape {table.shape} or non-finite values")
                if not (np.isfinite(widths[i]) and widths[i] > 0):
                    raise InputError(f"saved slope width {widths[i]} of layer {i} is not positive")
                st.slopes[i] = (table, widths[i])
            n_corr = sum(1 for k in arrays if k.startswith("correction"))
            if n_corr not in (0, n_layers):
                raise InputError(f"{n_corr} saved drift corrections for {n_layers} layers")
            st.correction = ([_shaped(arrays[f"correction{i}"], (sizes[i + 1],), f"correction{i}").astype(np.float32)
                              for i in range(n_corr)] if n_corr else None)
            st.epoch = _whole(meta["epoch"], "epoch")
            if st.epoch < 0:
                raise InputError(f"saved epoch {st.epoch} is negative")
            if not isinstance(meta["history"], list) or not all(isinstance(r, dict) for r in meta["history"]):
                raise InputError("the saved history is not a list of epoch records")
            st.history = list(meta["history"])
            shape = meta.get("example_shape")  # absent in checkpoints saved before it existed
            if shape is not None:
                if not isinstance(shape, list) or len(shape) not in (2, 3):
                    raise InputError(f"the saved example shape {shape!r} is not (H, W) or (H, W, C)")
                shape = tuple(_whole(v, "example shape") for v in shape)
                if min(shape) < 1 or int(np.prod(shape)) != layout.n_data:
                    raise InputError(f"the saved example shape {shape} does not hold {layout.n_data} values")
                st.example_shape = shape
        except KeyError as exc:
            raise InputError(f"the saved controller state lacks {exc}") from None
        except (TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"the saved controller state is malformed: {exc}") from None
        return st


def _whole(v: Any, name: str) -> int:
    """``v`` if it is an integer (bool and float are not), else InputError."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise InputError(f"saved {name} {v!r} is not an integer")
    return int(v)


def _layout(data: Any) -> LabelLayout:
    """The saved label layout, each field checked."""
    if not isinstance(data, dict):
        raise InputError(f"the saved label layout {data!r} is not a mapping")
    lay = LabelLayout(**data)
    # copies == 0: no label input at all (the unsupervised mode).
    if _whole(lay.n_data, "n_data") < 1 or _whole(lay.copies, "copies") < 0 or _whole(lay.n_classes, "n_classes") < 2:
        raise InputError(f"the saved label layout {data} has no data, fewer than 2 classes or negative label copies")
    if not isinstance(lay.append, bool) or (not lay.append and lay.n_label_inputs > lay.n_data):
        raise InputError(f"the saved label layout {data} does not fit its inputs")
    for name, lo, hi in (("strength", 0.0, 10.0), ("neutral_level", 0.0, 1.0)):
        v = getattr(lay, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi \
                or (name == "strength" and v == 0):
            raise InputError(f"the saved label {name} {v!r} is not a number in [{lo}, {hi}]")
    return lay


def _shaped(a: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.shape != tuple(shape):
        raise InputError(f"saved {name} has shape {arr.shape}, expected {tuple(shape)}")
    if not np.isfinite(arr).all():
        raise InputError(f"saved {name} holds non-finite values")
    return arr
