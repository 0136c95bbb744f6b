"""The FF modes as recipes on the one training loop (``FFConfig.mode``).

A :class:`Mode` names what differs between modes: the per-batch step given to
:func:`mortal.ff.train.train_epoch`, the pass whose normalized activities the softmax head
reads, the per-label goodness readout (None where the mode has none), the hidden layers each
readout uses, and whether labels enter the chip and whether the examples' spatial shape is
needed.  :class:`~mortal.ff.learner.FFLearner` looks its mode up here (:func:`mode_recipe`)
and never branches on the mode's name; a new mode is one more entry of :data:`MODE_RECIPES`.

``supervised``    Hinton's recipe: the label written into the input (:mod:`mortal.ff.train`);
``unsupervised``  examples against hybrid images, no label input (:mod:`mortal.ff.unsupervised`);
``recurrent``     the image held for several steps, every layer hearing the one above, the label
                  on top (:mod:`mortal.ff.recurrent`; a chip with the top-down layout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..chip import Chip
from ..errors import InputError
from .config import FFConfig
from .measure import LabelLayout, label_layout
from .readout import PassFn, ScoreFn, goodness_scores, neutral_pass
from .train import BatchFn, train_batch
from .unsupervised import train_batch_unsupervised, unsupervised_roles
from . import recurrent as _rec
from ..chip import top_down_widths

__all__ = ["around_fixed_layers", "Mode", "MODE_RECIPES", "mode_recipe", "mode_layout", "mode_top_down", "same_layout", "settle_shape"]


@dataclass(frozen=True)
class Mode:
    """One FF mode (see the module docstring).

    Attributes
    ----------
    name : str
        The ``FFConfig.mode`` value.
    train_batch : BatchFn
        One training batch (:data:`mortal.ff.train.BatchFn`).
    head_pass : PassFn
        The pass of data (B, n_data) whose normalized activities feed the softmax head.
    goodness_scores : ScoreFn or None
        Per-label goodness float64 (B, k) of data (B, n_data); None: the mode has no such
        readout (``predict(method="goodness")`` is refused, ``evaluate(method="both")``
        reports the softmax head only).
    layer_roles : callable
        ``(cfg, n_layers) -> (readout layers, head layers)``, hidden layers 0-based.
    label_inputs : bool
        Whether labels are written into the chip's input (else the chip takes the data only).
    needs_shape : bool
        Whether training needs each example's spatial shape ``(H, W)`` or ``(H, W, C)``.
    top_down : bool
        Whether the label reaches the layers from above, through the chip's top-down inputs
        (which the mode then needs); other modes refuse a chip that has them.
    passes : int
        Forward passes through every layer per training batch (the digital reference's count,
        ``mortal.ops.training_macs``) with the mode's default settings; :meth:`forward_passes`
        gives the count for given settings.
    passes_of : callable or None
        ``cfg -> passes`` where the count depends on the settings (None: always ``passes``).
    work_of : callable or None
        ``cfg -> (top-down passes, gradient products)`` per training batch: of the forward passes,
        how many also read the top-down inputs, and how many example sets update every layer
        (None: ``(0, 2)``, a positive and a negative set and no top-down inputs).
    """

    name: str
    train_batch: BatchFn
    head_pass: PassFn
    goodness_scores: Optional[ScoreFn]
    layer_roles: Callable[[FFConfig, int], tuple[list[int], list[int]]]
    label_inputs: bool = True
    needs_shape: bool = False
    top_down: bool = False
    passes: int = 3
    passes_of: Optional[Callable[[FFConfig], int]] = None

    work_of: Optional[Callable[[FFConfig], tuple[int, int]]] = None

    def forward_passes(self, cfg: FFConfig) -> int:
        """Forward passes through every layer per training batch with the settings ``cfg``."""
        return self.passes if self.passes_of is None else int(self.passes_of(cfg))

    def reference_work(self, cfg: FFConfig) -> dict[str, int]:
        """The per-batch counts of ``mortal.ops.training_macs`` for the settings ``cfg``:
        ``passes``, ``top_down_passes`` and ``updates``."""
        down, updates = (0, 2) if self.work_of is None else self.work_of(cfg)
        return {"passes": self.forward_passes(cfg), "top_down_passes": int(down), "updates": int(updates)}

    @property
    def methods(self) -> tuple[str, ...]:
        """The readouts this mode has, of ``goodness`` and ``softmax``."""
        return ("goodness", "softmax") if self.goodness_scores is not None else ("softmax",)

    def check_soft_rules(self, positives: str, weighting: str, min_confidence: float) -> None:
        """InputError if soft-target rules that shape the layers' updates are set in a mode whose
        layers never see a label (there the targets train only the head)."""
        if not self.label_inputs and not self.top_down and (positives != "argmax" or weighting != "none"
                                                            or min_confidence > 0.0):
            raise InputError(f"in mode {self.name!r} the targets train only the softmax head (the layers never see "
                             "a label), so positives, weighting and min_confidence, which shape the layers' "
                             "updates, must keep their defaults")

    def check_method(self, method: str) -> None:
        """InputError if this mode lacks the readout ``method`` (``both`` means those it has)."""
        if method != "both" and method not in self.methods:
            raise InputError(f"mode {self.name!r} has no per-label goodness readout (no label enters its chip); "
                             "use method='softmax' (the softmax head)")


MODE_RECIPES: dict[str, Mode] = {
    "supervised": Mode("supervised", train_batch, neutral_pass, goodness_scores,
                       lambda cfg, n: cfg.layer_roles(n)),
    "unsupervised": Mode("unsupervised", train_batch_unsupervised, neutral_pass, None, unsupervised_roles,
                         label_inputs=False, needs_shape=True, passes=2),
    "recurrent": Mode("recurrent", _rec.train_batch_recurrent, _rec.bottom_up_pass, _rec.goodness_scores,
                      lambda cfg, n: cfg.layer_roles(n), label_inputs=False, top_down=True,
                      passes=11,  # default schedule: bottom-up + 5 steps x (positive, negative)
                      passes_of=lambda cfg: 1 + 2 * max(_rec.train_step_numbers(cfg)),
                      # every step after the bottom-up pass reads the top-down inputs too; each
                      # trained step is one more positive and negative set of the update
                      work_of=lambda cfg: (2 * max(_rec.train_step_numbers(cfg)),
                                           2 * len(_rec.train_step_numbers(cfg)))),
}


def mode_recipe(cfg: FFConfig | str) -> Mode:
    """The recipe of ``cfg.mode`` (or of the mode named); InputError for a mode not built yet."""
    name = cfg if isinstance(cfg, str) else cfg.mode
    try:
        return MODE_RECIPES[name]
    except KeyError:
        raise InputError(f"mode {name!r} is not available in this version; available: "
                         f"{', '.join(sorted(MODE_RECIPES))}") from None


def settle_shape(mode: Mode, given: tuple[int, ...] | None, saved: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The examples' shape for a run: the one the inputs carry (``given``) or the one the state
    kept (``saved``, e.g. from a checkpoint); InputError if they differ, or if ``mode`` needs a
    shape and neither gives it."""
    if given is not None and saved is not None and tuple(given) != tuple(saved):
        raise InputError(f"the examples have shape {tuple(given)}, this learner was fitted on examples of shape "
                         f"{tuple(saved)}")
    shape = given if given is not None else saved
    if mode.needs_shape and shape is None:
        raise InputError(f"mode {mode.name!r} cuts each example with another along a random image mask, so it needs "
                         "the examples' shape: give inputs as (n, H, W) or (n, H, W, C), or flat inputs with "
                         "fit(..., example_shape=(H, W)) (command line: --shape H,W; config file: data.shape)")
    return shape


def mode_layout(mode: Mode, cfg: FFConfig, chip: Chip, n_data: int, n_classes: int) -> LabelLayout:
    """Where labels enter ``chip``'s input in ``mode``: the layout that fits the chip's input width
    (``labels`` settings), or, in a mode without label inputs, none (the chip must take the data only)."""
    lab = cfg.labels
    chip_inputs = int(chip.info.layer_sizes[0])
    if mode.label_inputs:
        copies = cfg.label_copies(not all(math.isinf(float(r)) for r in chip.info.weight_range))
        return label_layout(chip_inputs, n_data, n_classes, copies, lab.placement, lab.strength, lab.neutral_level)
    if chip_inputs != n_data:
        raise InputError(f"mode {mode.name!r} writes no label into the chip's input, so the chip must take the "
                         f"data's {n_data} values; it takes {chip_inputs}")
    return LabelLayout(n_data, n_classes, 0, True, lab.strength, lab.neutral_level)


def mode_top_down(mode: Mode, cfg: FFConfig, chip: Chip, n_classes: int) -> tuple[int, ...]:
    """The chip's top-down widths per layer: the full layout for a mode that needs it (checked,
    InputError saying how to build one), else none (a chip that has them is refused)."""
    if mode.top_down:
        return _rec.check_recurrent(cfg, chip, n_classes)
    down = top_down_widths(chip.info)
    if any(down):
        raise InputError(f"mode {mode.name!r} reads a plain feed-forward chain, but this chip's layers also take "
                         f"top-down inputs {list(down)}; train it with mode 'recurrent' or use a chip without them")
    return ()


def same_layout(chip: Chip, sizes: tuple[int, ...], top_down: tuple[int, ...] | None) -> None:
    """InputError unless ``chip`` has the layer sizes and top-down inputs a controller state counts
    (``ControllerState.sizes`` and ``.top_down``; None: no top-down input)."""
    if tuple(int(s) for s in chip.info.layer_sizes) != tuple(sizes):
        raise InputError(f"the chip has layer sizes {tuple(chip.info.layer_sizes)}, the state {tuple(sizes)}")
    down = top_down_widths(chip.info)
    if down != (tuple(top_down) if top_down else (0,) * len(down)):
        raise InputError(f"the chip's top-down inputs are {list(down)}, the controller's "
                         f"{list(top_down) if top_down else 'none'}: build the chip with the same layout")


def around_fixed_layers(readout: list[int], head: list[int],
                        trainable: Sequence[bool]) -> tuple[list[int], list[int]]:
    """The readout and head layers on a chip whose ``trainable`` flags name a fixed layer: the
    goodness readout sums the layers before the first fixed one (held-out images, RESULTS
    "Black-box stages"), else every trainable layer; a head that reads the goodness readout's
    layers (``recipe.head_layers="readout"``) follows it.  A mode without a goodness readout
    (``readout`` empty), or a chip without fixed layers, keeps ``readout`` and ``head``."""
    tr = [bool(t) for t in trainable]
    if not readout or all(tr) or not any(tr):
        return readout, head
    fixed = list(range(tr.index(False))) or [i for i, t in enumerate(tr) if t]
    return fixed, (fixed if head == readout else head)
