"""Readouts of a trained chip: per-label goodness, the softmax head, evaluation, head refits.

Functions here take the learner's settings (``FFConfig``), its controller state and the
chip; :class:`~mortal.ff.learner.FFLearner` wraps them as methods after validating input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np

from .. import ops
from ..chip import Chip
from .config import FFConfig
from .measure import Pass, forward, input_scales
from .state import ControllerState

__all__ = ["EvalResult", "controller_pass", "neutral_pass", "PassFn", "ScoreFn", "features", "head_logits",
           "update_head", "goodness_scores", "predict", "head_features", "fit_head", "lr_gain", "ledger_snapshot", "energy_since"]


@dataclass
class EvalResult:
    """Result of an evaluation.

    ``errors`` maps the method (``goodness``, ``softmax``) to the error rate;
    ``energy_j`` by category and ``chip_time_s`` are what the evaluation cost.
    """

    errors: dict[str, float]
    n: int
    energy_j: dict[str, float]
    chip_time_s: float

    @property
    def total_energy_j(self) -> float:
        return float(sum(self.energy_j.values()))


def lr_gain(epoch: int, epochs: int) -> float:
    """Learning-rate factor of epoch ``epoch`` (from 0) of ``epochs``: 1 for the first half,
    then falling linearly towards 0 (the recipe's schedule)."""
    return 1.0 if epoch + 1 <= epochs / 2 else (1.0 + 2.0 * (epochs - (epoch + 1))) / epochs


def ledger_snapshot(chip: Chip) -> tuple[dict[str, float], float]:
    """Energy by category and total chip time, copied from the chip's ledger."""
    led = chip.ledger
    return {k: float(v) for k, v in led.energy_j.items()}, float(led.total_time_s)


def energy_since(chip: Chip, before: tuple[dict[str, float], float]) -> tuple[dict[str, float], float]:
    """Energy by category and chip time spent since ``before`` (a :func:`ledger_snapshot`)."""
    after = ledger_snapshot(chip)
    return {c: after[0][c] - before[0].get(c, 0.0) for c in after[0]}, after[1] - before[1]


_STATE = object()


def controller_pass(cfg: FFConfig, st: ControllerState, chip: Chip, x: np.ndarray,
                    n_layers: int | None = None, correction: Any = _STATE) -> Pass:
    """A forward pass of embedded inputs ``x`` (B, n_0) with the learner's measurement settings
    and drift correction (``correction``: other factors, or None for none)."""
    m = cfg.measurement
    corr = st.correction if correction is _STATE else correction
    return forward(chip, x, input_scales(chip, m.input_clip_rms), reads=m.reads, correction=corr,
                   n_layers=n_layers)


def neutral_pass(cfg: FFConfig, st: ControllerState, chip: Chip, x: np.ndarray) -> Pass:
    """One pass of data ``x`` (B, n_data) with the neutral label written in (no label at all
    when the layout has no label inputs): the softmax head's input in the feed-forward modes."""
    return controller_pass(cfg, st, chip, st.layout.embed(x, None))


#: ``head_pass(cfg, state, chip, x) -> Pass``: the pass of data ``x`` (B, n_data) whose
#: normalized activities the softmax head reads (a mode's choice; :func:`neutral_pass` by default).
PassFn = Callable[[FFConfig, ControllerState, Chip, np.ndarray], Pass]
#: ``scores(cfg, state, chip, x) -> float64 (B, k)``: a mode's per-label goodness readout.
ScoreFn = Callable[[FFConfig, ControllerState, Chip, np.ndarray], np.ndarray]


def features(st: ControllerState, p: Pass) -> np.ndarray:
    """The head's input (B, f): the normalized activities of the head's layers."""
    return np.concatenate([p.normed[i] for i in st.head_layers], axis=1)


def head_logits(st: ControllerState, chip: Chip, p: Pass) -> tuple[np.ndarray, np.ndarray]:
    """Head logits (B, k) and the features they came from; the product is charged."""
    feats = features(st, p)
    chip.ledger.charge_digital(ops.logits_ops(feats.shape[0], feats.shape[1], st.n_classes))
    return feats @ st.head, feats


def update_head(cfg: FFConfig, st: ControllerState, chip: Chip, feats: np.ndarray, logits: np.ndarray,
                target: np.ndarray, gain: float, weight_cost: float) -> None:
    """One smoothed step of the softmax head toward ``target`` rows (float32 (B, k))."""
    z = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(axis=1, keepdims=True)
    grad = feats.T @ (target.astype(prob.dtype) - prob).astype(np.float32) / np.float32(target.shape[0])
    m = np.float32(cfg.optimizer.momentum)
    st.head_smooth *= m
    st.head_smooth += (1 - m) * grad
    st.head += np.float32(cfg.optimizer.lr_head * gain) * (st.head_smooth - np.float32(weight_cost) * st.head)
    chip.ledger.charge_digital(ops.head_update_ops(feats.shape[0], feats.shape[1], st.n_classes))


def goodness_scores(cfg: FFConfig, st: ControllerState, chip: Chip, x: np.ndarray) -> np.ndarray:
    """Per-label goodness float64 (B, k) of data ``x`` (B, n_data), summed over the readout layers."""
    readout = st.readout_layers
    score = np.zeros((x.shape[0], st.n_classes))
    for label in range(st.n_classes):
        p = controller_pass(cfg, st, chip, st.layout.embed(x, label), n_layers=readout[-1] + 1)
        score[:, label] = sum(p.goodness[i] for i in readout)
    return score


def head_features(cfg: FFConfig, st: ControllerState, chip: Chip, x: np.ndarray, batch_size: int,
                  head_pass: PassFn = neutral_pass) -> np.ndarray:
    """The head's input for every row of ``x`` (n, n_data): one ``head_pass`` each, in batches."""
    return np.concatenate([features(st, head_pass(cfg, st, chip, x[s:s + batch_size]))
                           for s in range(0, x.shape[0], batch_size)])


def predict(cfg: FFConfig, st: ControllerState, chip: Chip, x: np.ndarray,
            method: Literal["goodness", "softmax"], batch_size: int, head_pass: PassFn = neutral_pass,
            scores: ScoreFn | None = goodness_scores) -> np.ndarray:
    """Predicted labels int64 (n,) by per-label goodness (``scores``, k passes) or the softmax
    head (one ``head_pass``)."""
    if method == "goodness" and scores is None:
        raise ValueError(f"mode {cfg.mode!r} has no per-label goodness readout")
    out = np.empty(x.shape[0], np.int64)
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        if method == "softmax":
            logits, _ = head_logits(st, chip, head_pass(cfg, st, chip, xb))
            out[start:start + xb.shape[0]] = logits.argmax(axis=1)
        else:
            assert scores is not None
            out[start:start + xb.shape[0]] = scores(cfg, st, chip, xb).argmax(axis=1)
    return out


# Spawn key of the head refit's shuffling stream (training epoch e uses spawn key (e,)).
HEAD_REFIT_STREAM = 1 << 20


def fit_head(cfg: FFConfig, st: ControllerState, chip: Chip, feats: np.ndarray, labels: np.ndarray,
             probs: np.ndarray | None, epochs: int, weight_cost: float) -> None:
    """Fit the head anew, from zero, on stored features ``feats`` (n, f) for ``epochs``, to
    ``probs`` rows or one-hot ``labels``, with the learner's head settings and schedule."""
    st.head[:] = 0.0
    st.head_smooth[:] = 0.0
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(cfg.seed, spawn_key=(HEAD_REFIT_STREAM,))))
    b = cfg.batch_size
    n = feats.shape[0]
    for e in range(epochs):
        gain = lr_gain(e, epochs)
        order = rng.permutation(n)
        for k in range(n // b):
            idx = order[k * b:(k + 1) * b]
            f = feats[idx]
            logits = f @ st.head
            chip.ledger.charge_digital(ops.logits_ops(f.shape[0], f.shape[1], st.n_classes))
            if probs is not None:
                target = probs[idx]
            else:
                target = np.zeros((idx.shape[0], st.n_classes), np.float32)
                target[np.arange(idx.shape[0]), labels[idx]] = 1.0
            update_head(cfg, st, chip, f, logits, target, gain, weight_cost)
