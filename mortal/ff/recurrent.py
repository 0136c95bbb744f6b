"""The recurrent mode: the image held still while every hidden layer also hears the layer above.

The chip has the top-down layout (``chip.info.top_down``, see :func:`check_top_down_chip`):
hidden layer ``l`` reads ``[h_below, h_above]`` through one array, where ``h_below`` is the
normalized layer ``l - 1`` (the normalized image for ``l = 0``) and ``h_above`` the normalized
layer ``l + 1``; the top layer hears the label instead, a one-hot written ``copies`` times whose
hot inputs are ``labels.strength * sqrt(k)`` (so the label block, like a normalized layer, has
RMS ``strength`` over its ``k`` classes).

Schedule (:func:`bottom_up` then :func:`iterate`):

* step 0, one bottom-up pass: every top-down input, the label included, is 0, so this pass
  does not depend on the label; its state is what was measured;
* steps 1, 2, ...: synchronous; every layer's *computed* state is the chip's read of the inputs
  above from the states of the step before, and its new state is
  ``damping * old + (1 - damping) * computed`` (on the measured activities, before
  normalization).  A layer's goodness at a step is ``sum(state**2)`` in activity units.

Training (:func:`train_batch_recurrent`): the bottom-up pass of the batch feeds the softmax
head (one smoothed step toward the targets) and its prediction gives the negative labels
(``recipe.negatives``: ``own`` draws a wrong label in proportion to the head's softmax over the
wrong labels, ``uniform`` uniformly); the positive run (true label on top) and the negative run
(the wrong label) start from that same pass.  Every layer is updated once per batch by
:func:`mortal.ff.train.update_layer` from the steps ``recurrent.train_steps`` names, each step
one more set of examples: its input the vector sent at that step, its activity the computed
read, its goodness that of the damped state.  The weights do not change within a batch.

Readouts: per-label goodness (:func:`goodness_scores`): every label is run from the shared
bottom-up pass, and the label whose goodness, summed over the readout layers and averaged
over steps ``score_from..score_to``, is highest wins.  Steps after ``score_to`` cannot change
that score and are not run.  The softmax head reads the bottom-up pass (:func:`bottom_up_pass`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import _kernels as K
from .. import ops
from ..chip import Chip, top_down_widths
from ..errors import InputError
from .config import FFConfig
from .measure import Pass, input_scales, read_layer
from .readout import head_logits, update_head
from .state import ControllerState
from .targets import NegativeSampler, Targets, sample_rows
from .train import update_layers

__all__ = ["Step", "check_top_down_chip", "check_recurrent", "label_block", "bottom_up", "iterate", "bottom_up_pass",
           "goodness_scores", "train_batch_recurrent", "train_step_numbers", "recurrent_step_ops"]


@dataclass
class Step(Pass):
    """One step of the recurrent schedule: a :class:`~mortal.ff.measure.Pass` whose ``inputs[l]``
    are the unit-RMS vectors sent to layer ``l`` (bottom-up then top-down, (B, n_l + top_down_l)),
    ``outputs[l]`` the computed reads (chip units), ``normed[l]`` the normalized states and
    ``goodness[l]`` the goodness of the states; ``states[l]`` float32 (B, n_out) the damped states
    (chip units)."""

    states: list[np.ndarray] = field(default_factory=list)


def check_top_down_chip(chip: Chip, n_classes: int) -> tuple[int, ...]:
    """The chip's top-down widths if it has the full layout for ``n_classes`` classes: every layer
    below the top hears the layer above, the top layer a label of ``n_classes * copies`` inputs;
    else InputError saying how to build such a chip."""
    sizes = tuple(int(s) for s in chip.info.layer_sizes)
    down = top_down_widths(chip.info)
    want = tuple(sizes[i + 2] for i in range(len(sizes) - 2))
    how = (f"build the chip with the top-down layout, e.g. devices.make_chip(spec, {list(sizes)}, seed, "
           f"top_down=devices.top_down_layout({list(sizes)}, {n_classes} * copies)) (the command line does so "
           "for train.mode=recurrent)")
    if down[:-1] != want or down[-1] < 1:
        raise InputError(f"mode 'recurrent' needs a chip whose every layer also hears the layer above and whose top "
                         f"layer hears the label; this chip's top-down inputs are {list(down)}: {how}")
    if down[-1] % n_classes:
        raise InputError(f"the chip's top layer takes a label of {down[-1]} inputs, not a multiple of the "
                         f"{n_classes} classes: {how}")
    return down


def check_recurrent(cfg: FFConfig, chip: Chip, n_classes: int) -> tuple[int, ...]:
    """:func:`check_top_down_chip`, and InputError for settings the recurrent mode does not take
    (the perturbed slope estimator sweeps feed-forward passes)."""
    if cfg.measurement.estimator == "perturbed":
        raise InputError("mode 'recurrent' measures neuron slopes only by the nominal estimator; "
                         "set measurement.estimator='nominal'")
    return check_top_down_chip(chip, n_classes)


def label_block(n_classes: int, copies: int, strength: float, labels: np.ndarray | int, batch: int) -> np.ndarray:
    """The top layer's top-down input: float32 (batch, n_classes * copies), the one-hot of
    ``labels`` (an int or int (batch,)) at ``strength * sqrt(n_classes)``, written ``copies`` times."""
    out = np.zeros((batch, n_classes * copies), np.float32)
    lab = np.broadcast_to(np.asarray(labels), (batch,))
    rows = np.arange(batch)
    for c in range(copies):
        out[rows, n_classes * c + lab] = np.float32(strength * math.sqrt(n_classes))
    return out


def recurrent_step_ops(batch: int, sizes: tuple[int, ...], corrected: bool) -> int:
    """Controller work of one synchronous step: each layer's normalization and goodness
    (:func:`mortal.ops.forward_ops`) and its damping (3 operations per value)."""
    n_layers = len(sizes) - 1
    return ops.forward_ops(batch, sizes, n_layers, corrected) + 3 * batch * sum(sizes[1:])


def _map_step(step: Step, f) -> Step:
    """A step with ``f`` applied to every array of every layer (a selection of rows, a stacking)."""
    return Step(inputs=[f(a) for a in step.inputs], outputs=[f(a) for a in step.outputs],
                normed=[f(a) for a in step.normed], goodness=[f(a) for a in step.goodness],
                states=[f(a) for a in step.states])


def _measure(step: Step, state: np.ndarray, s: float) -> None:
    """Append ``state``'s normalized activities and goodness to ``step``."""
    normed = np.empty_like(state)
    good = np.empty(state.shape[0], np.float64)
    K.measure_rows(state, 1.0 / s, normed, 1.0, good)
    step.states.append(state)
    step.normed.append(normed)
    step.goodness.append(good)


def _image(x: np.ndarray) -> np.ndarray:
    h = np.empty_like(x)
    K.measure_rows(x, 1.0, h, 1.0, np.empty(x.shape[0], np.float64))
    return h


_STATE = object()


def bottom_up(cfg: FFConfig, st: ControllerState, chip: Chip, x: np.ndarray, n_layers: int | None = None,
              correction: object = _STATE) -> Step:
    """Step 0 for data ``x`` float32 (B, n_data): one bottom-up pass with every top-down input (the
    label's too) at 0; each layer's state is what was measured.  ``n_layers``: the first layers
    only; ``correction``: drift correction factors per layer instead of the state's (None: none)."""
    scales = input_scales(chip, cfg.measurement.input_clip_rms)
    corr = st.correction if correction is _STATE else correction
    n_layers = len(st.sizes) - 1 if n_layers is None else n_layers
    down = st.top_down
    batch = x.shape[0]
    step = Step()
    below = _image(x)
    for layer in range(n_layers):
        sent = np.zeros((batch, below.shape[1] + down[layer]), np.float32)
        sent[:, : below.shape[1]] = below
        y = read_layer(chip, layer, sent, scales[layer], cfg.measurement.reads, corr)  # type: ignore[arg-type]
        step.inputs.append(sent)
        step.outputs.append(y)
        _measure(step, y, scales[layer])
        below = step.normed[-1]
    chip.ledger.charge_digital(ops.forward_ops(batch, st.sizes, n_layers, corr is not None))
    return step


def iterate(cfg: FFConfig, st: ControllerState, chip: Chip, x: np.ndarray, start: Step, labels: np.ndarray | int,
            n_steps: int) -> list[Step]:
    """Steps ``1..n_steps`` from ``start`` (step 0) with ``labels`` on top; data ``x`` (B, n_data)."""
    scales = input_scales(chip, cfg.measurement.input_clip_rms)
    d = np.float32(cfg.recurrent.damping)
    n_layers = len(st.sizes) - 1
    batch = x.shape[0]
    image = _image(x)
    copies = st.top_down[-1] // st.n_classes
    label = label_block(st.n_classes, copies, st.layout.strength, labels, batch)
    prev, out = start, []
    for _ in range(n_steps):
        step = Step()
        for layer in range(n_layers):
            below = image if layer == 0 else prev.normed[layer - 1]
            above = label if layer == n_layers - 1 else prev.normed[layer + 1]
            sent = np.concatenate([below, above], axis=1)
            y = read_layer(chip, layer, sent, scales[layer], cfg.measurement.reads, st.correction)
            state = d * prev.states[layer] + (np.float32(1.0) - d) * y
            step.inputs.append(sent)
            step.outputs.append(y)
            _measure(step, state, scales[layer])
        chip.ledger.charge_digital(recurrent_step_ops(batch, st.sizes, st.correction is not None))
        out.append(step)
        prev = step
    return out


def bottom_up_pass(cfg: FFConfig, st: ControllerState, chip: Chip, x: np.ndarray) -> Pass:
    """The softmax head's pass of data ``x`` (B, n_data): the bottom-up pass (no label)."""
    return bottom_up(cfg, st, chip, x)


def train_step_numbers(cfg: FFConfig) -> list[int]:
    """The steps (from 1) whose measurements update the layers: ``scored`` (score_from..score_to)
    or ``all`` (1..iterations)."""
    r = cfg.recurrent
    return list(range(r.score_from, r.score_to + 1)) if r.train_steps == "scored" else \
        list(range(1, r.iterations + 1))


def _scored(cfg: FFConfig, st: ControllerState, steps: list[Step]) -> np.ndarray:
    r = cfg.recurrent
    use = steps[r.score_from - 1:r.score_to]
    return sum(sum(s.goodness[i] for i in st.readout_layers) for s in use) / len(use)


def goodness_scores(cfg: FFConfig, st: ControllerState, chip: Chip, x: np.ndarray) -> np.ndarray:
    """Per-label goodness float64 (B, k) of data ``x`` (B, n_data): each label run for steps
    ``1..score_to`` from the shared bottom-up pass, goodness summed over the readout layers and
    averaged over steps ``score_from..score_to``."""
    start = bottom_up(cfg, st, chip, x)
    score = np.zeros((x.shape[0], st.n_classes))
    for label in range(st.n_classes):
        score[:, label] = _scored(cfg, st, iterate(cfg, st, chip, x, start, label, cfg.recurrent.score_to))
    return score


def _stack(steps: list[Step], rows: slice) -> Pass:
    """The steps' measurements of examples ``rows`` as one pass (each step more examples)."""
    p = Pass()
    for layer in range(len(steps[0].outputs)):
        p.inputs.append(np.concatenate([s.inputs[layer][rows] for s in steps], axis=0))
        p.outputs.append(np.concatenate([s.outputs[layer][rows] for s in steps], axis=0))
        p.goodness.append(np.concatenate([s.goodness[layer][rows] for s in steps], axis=0))
    return p


def train_batch_recurrent(cfg: FFConfig, st: ControllerState, chip: Chip, x: np.ndarray, idx: np.ndarray,
                          targets: Targets, sampler: NegativeSampler, gain: float, rng: np.random.Generator,
                          update_rng: np.random.Generator | None = None) -> np.ndarray:
    """One batch (rows ``idx`` of ``x``) of the recurrent mode; returns [loss+, loss-, online
    errors of the head, examples].  ``rng`` draws the negative labels (and sampled positives of
    soft targets); ``update_rng``: policy ``analog``'s stream."""
    xb = x[idx]
    labels = targets.labels[idx]
    probs = None if targets.probs is None else targets.probs[idx]
    batch = xb.shape[0]
    start = bottom_up(cfg, st, chip, xb)
    logits, feats = head_logits(st, chip, start)
    if probs is not None and targets.positives == "sample":
        labels = sample_rows(probs, rng)
    online_err = float(np.count_nonzero(logits.argmax(axis=1) != labels))
    wrong = sampler(logits, labels, probs, rng)
    update_head(cfg, st, chip, feats, logits, targets.target_matrix(idx, labels), gain,
                cfg.optimizer.weight_cost_head)
    weight = probs[np.arange(batch), labels].astype(np.float64) if targets.weighting == "confidence" else None
    if probs is not None and targets.min_confidence > 0.0:
        keep = probs.max(axis=1) >= targets.min_confidence
        if not keep.any():
            return np.array([0.0, 0.0, online_err, batch])
        if not keep.all():
            xb, labels, wrong = xb[keep], labels[keep], wrong[keep]
            weight = None if weight is None else weight[keep]
            start = _map_step(start, lambda a: a[keep])
    n = xb.shape[0]
    # Positives and negatives run together (one read of 2n rows per layer and step).
    both = _map_step(start, lambda a: np.concatenate([a, a]))
    train = train_step_numbers(cfg)
    steps = iterate(cfg, st, chip, np.concatenate([xb, xb]), both, np.concatenate([labels, wrong]), max(train))
    used = [steps[t - 1] for t in train]
    pos, neg = _stack(used, slice(0, n)), _stack(used, slice(n, 2 * n))
    w = None if weight is None else np.tile(weight, len(used))
    loss = update_layers(cfg, st, chip, pos, neg, gain, w, update_rng)
    return np.array([loss[0], loss[1], online_err, batch])
