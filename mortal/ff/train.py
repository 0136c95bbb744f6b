"""The training loop: one loop over targets and a negative sampler.

Per batch: a neutral pass (the softmax head's input, and its predictions for hard
negatives), the head's update toward the targets, then a positive pass (examples with
their positive label) and a negative pass (with the sampled wrong label); each layer is
updated from what the controller sent and measured (chip -> measurement -> controller
state -> update -> chip).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from .. import _kernels as K
from .. import ops
from ..chip import Chip
from ..progress import Progress
from ..slopes import perturbed_tables
from ..updates import apply_update
from .analog import apply_analog_update
from .config import FFConfig
from .measure import Pass, input_scales
from .readout import controller_pass, head_logits, ledger_snapshot, lr_gain, update_head
from .state import ControllerState
from .targets import NegativeSampler, Targets, sample_rows

__all__ = ["train_epoch", "train_batch", "update_layer", "update_layers", "BatchFn", "ANALOG_UPDATE_STREAM"]

#: Spawn key of the in-array updates' random stream: epoch e draws from
#: ``SeedSequence(seed, spawn_key=(ANALOG_UPDATE_STREAM, e))``.
ANALOG_UPDATE_STREAM = 1 << 21


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def update_layer(cfg: FFConfig, st: ControllerState, chip: Chip, layer: int, pos: Pass, neg: Pass, s: float,
                 gain: float, weight: np.ndarray | None = None,
                 update_rng: np.random.Generator | None = None) -> np.ndarray:
    """Update one layer from a positive and a negative pass; returns the two mean losses.

    Policy ``analog`` (``update_rng`` draws its coincidences): the array applies the rank-1
    products of the inputs sent (bias line at ``s / bias_level``) and the signals, with no
    smoothing and no weight cost (``mortal.updates``)."""
    rec, opt = cfg.recipe, cfg.optimizer
    n_out = pos.outputs[layer].shape[1]
    batch = pos.outputs[layer].shape[0]
    temp = rec.goodness_temperature
    theta = rec.threshold_per_unit * n_out
    z_pos = (pos.goodness[layer] - theta) / temp
    z_neg = (neg.goodness[layer] - theta) / temp
    p_pos, p_neg = _sigmoid(z_pos), _sigmoid(z_neg)
    if not chip.info.trainable[layer]:  # a fixed layer: no update to compute (nor to charge)
        return np.array([np.logaddexp(0.0, -z_pos).mean(), np.logaddexp(0.0, z_neg).mean()])
    mean_act = pos.outputs[layer].mean(axis=0, dtype=np.float64) / s
    st.peer_mean[layer] = 0.9 * st.peer_mean[layer] + 0.1 * mean_act
    peer = (opt.peer_strength * (st.peer_mean[layer].mean() - st.peer_mean[layer])).astype(np.float32)
    table, width = st.slopes[layer]
    c_pos, c_neg = (1.0 - p_pos) / temp, -p_neg / temp
    if weight is not None:
        c_pos, c_neg = c_pos * weight, c_neg * weight
    sig = np.empty((2 * batch, n_out), np.float32)
    K.ff_signal(pos.outputs[layer], 1.0 / s, c_pos, table, width, peer, sig[:batch])
    K.ff_signal(neg.outputs[layer], 1.0 / s, c_neg, table, width, np.zeros(n_out, np.float32), sig[batch:])
    if cfg.policy == "analog":
        n_in = pos.inputs[layer].shape[1]
        x = np.empty((2 * batch, n_in + 1), np.float32)
        x[:batch, :n_in] = pos.inputs[layer]
        x[batch:, :n_in] = neg.inputs[layer]
        x[:, n_in] = np.float32(s / float(chip.info.bias_level))
        chip.ledger.charge_digital(ops.signal_ops(batch, n_out))
        if chip.info.trainable[layer]:
            if update_rng is None:
                raise ValueError("policy 'analog' needs the update stream (update_rng)")
            apply_analog_update(chip, layer, x, sig, opt.lr * gain / batch, cfg.bit_length, update_rng)
        return np.array([np.logaddexp(0.0, -z_pos).mean(), np.logaddexp(0.0, z_neg).mean()])
    h = np.concatenate([pos.inputs[layer], neg.inputs[layer]], axis=0)
    grad = np.empty((h.shape[1] + 1, n_out), np.float32)
    np.matmul(h.T, sig, out=grad[:-1])
    grad[-1] = sig.sum(axis=0)
    grad *= np.float32(1.0 / batch)
    delta = np.empty_like(grad)
    bias_level = float(chip.info.bias_level)
    K.smooth_step(grad, st.smooth[layer], st.shadow[layer], opt.momentum, opt.lr * gain, opt.weight_cost,
                  s / bias_level, delta)
    chip.ledger.charge_digital(ops.layer_update_ops(batch, h.shape[1], n_out))
    if chip.info.trainable[layer]:
        apply_update(cfg.policy, chip, layer, delta, st.accumulators)
    return np.array([np.logaddexp(0.0, -z_pos).mean(), np.logaddexp(0.0, z_neg).mean()])


def train_batch(cfg: FFConfig, st: ControllerState, chip: Chip, x: np.ndarray, idx: np.ndarray,
                targets: Targets, sampler: NegativeSampler, gain: float, rng: np.random.Generator,
                update_rng: np.random.Generator | None = None) -> np.ndarray:
    """One batch (rows ``idx`` of ``x``); returns [loss+, loss-, online errors, examples].
    ``update_rng``: the in-array updates' stream (policy ``analog``)."""
    xb = x[idx]
    labels = targets.labels[idx]
    probs = None if targets.probs is None else targets.probs[idx]
    batch = xb.shape[0]
    lay = st.layout
    neutral = controller_pass(cfg, st, chip, lay.embed(xb, None))
    logits, feats = head_logits(st, chip, neutral)
    if probs is not None and targets.positives == "sample":
        labels = sample_rows(probs, rng)
    online_err = float(np.count_nonzero(logits.argmax(axis=1) != labels))
    wrong = sampler(logits, labels, probs, rng)
    target = targets.target_matrix(idx, labels)
    update_head(cfg, st, chip, feats, logits, target, gain, cfg.optimizer.weight_cost_head)
    weight = probs[np.arange(batch), labels].astype(np.float64) if targets.weighting == "confidence" else None
    if probs is not None and targets.min_confidence > 0.0:
        keep = probs.max(axis=1) >= targets.min_confidence
        if not keep.all():
            xb, labels, wrong = xb[keep], labels[keep], wrong[keep]
            weight = None if weight is None else weight[keep]
        if xb.shape[0] == 0:
            return np.array([0.0, 0.0, online_err, batch])
    pos = controller_pass(cfg, st, chip, lay.embed(xb, labels))
    neg = controller_pass(cfg, st, chip, lay.embed(xb, wrong))
    loss = update_layers(cfg, st, chip, pos, neg, gain, weight, update_rng)
    return np.array([loss[0], loss[1], online_err, batch])


def update_layers(cfg: FFConfig, st: ControllerState, chip: Chip, pos: Pass, neg: Pass, gain: float,
                  weight: np.ndarray | None = None, update_rng: np.random.Generator | None = None) -> np.ndarray:
    """Update every layer from a positive and a negative pass (:func:`update_layer`); returns the
    summed mean losses [loss+, loss-].  ``update_rng``: policy ``analog``'s stream."""
    scales = input_scales(chip, cfg.measurement.input_clip_rms)
    extra = () if update_rng is None else (update_rng,)  # only policy analog draws
    loss = np.zeros(2)
    for layer in range(len(pos.outputs)):
        loss += update_layer(cfg, st, chip, layer, pos, neg, scales[layer], gain, weight, *extra)
    return loss


#: ``batch(cfg, state, chip, x, idx, targets, sampler, gain, rng, update_rng) -> [loss+, loss-,
#: online errors, examples]``: one batch of a mode (:func:`train_batch` is the supervised one).
BatchFn = Callable[[FFConfig, ControllerState, Chip, np.ndarray, np.ndarray, Targets, NegativeSampler, float,
                    np.random.Generator, "np.random.Generator | None"], np.ndarray]


def train_epoch(cfg: FFConfig, st: ControllerState, chip: Chip, x: np.ndarray, targets: Targets,
                sampler: NegativeSampler, show: bool,
                refit: Callable[[], dict[str, Any]] | None = None, batch: BatchFn = train_batch) -> dict[str, Any]:
    """Train epoch ``st.epoch`` over all of ``x`` (n, n_data); returns its record.

    ``batch``: the mode's per-batch step (:func:`train_batch`: the supervised mode's).

    The epoch's shuffling and sampling stream is ``SeedSequence(seed, spawn_key=(epoch,))``; policy
    ``analog`` draws its coincidences from ``SeedSequence(seed, spawn_key=(ANALOG_UPDATE_STREAM, epoch))``.
    ``refit``: called after the last batch of the run's last epoch (the head refit), returning
    fields to add to the record.
    """
    e = st.epoch
    t_wall = time.perf_counter()
    before = ledger_snapshot(chip)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(cfg.seed, spawn_key=(e,))))
    order = rng.permutation(x.shape[0])
    update_rng = None
    if cfg.policy == "analog":
        update_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            cfg.seed, spawn_key=(ANALOG_UPDATE_STREAM, e))))
    m = cfg.measurement
    if m.estimator == "perturbed":
        probe = st.layout.embed(x[order[: m.slope_probes]], None)
        base = controller_pass(cfg, st, chip, probe)
        st.slopes = perturbed_tables(chip, base, input_scales(chip, m.input_clip_rms), m.slope_levels, m.slope_bins)
    gain = lr_gain(e, cfg.epochs)
    n_batches = x.shape[0] // cfg.batch_size
    stats = np.zeros(4)
    bar = Progress(n_batches, f"epoch {e + 1}/{cfg.epochs}", enabled=show)
    for k in range(n_batches):
        idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
        stats += batch(cfg, st, chip, x, idx, targets, sampler, gain, rng, update_rng)
        bar.update(k + 1)
    bar.close()
    train_wall = time.perf_counter() - t_wall
    extra = refit() if refit is not None else {}
    after = ledger_snapshot(chip)
    record: dict[str, Any] = {
        "epoch": e + 1,
        "loss_pos": stats[0] / n_batches,
        "loss_neg": stats[1] / n_batches,
        "train_error_online": stats[2] / stats[3],
        "lr_gain": gain,
        "train_energy_j": {c: after[0][c] - before[0].get(c, 0.0) for c in after[0]},
        "chip_time_s": after[1],
        "train_wall_s": train_wall,
        **extra,
    }
    st.epoch = e + 1
    return record
