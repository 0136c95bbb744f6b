"""Backpropagation references beside Forward-Forward in situ.

Backpropagation needs the derivative of every stage its error passes through.  A chip with a
fixed black-box stage (a layer that ``info.trainable`` marks as not programmable, whose
function the controller does not know) offers none, so BP has two routes, both here:

* :func:`train_digital` -- the **digital reference**: the same network, every layer a ReLU
  layer, trained by backpropagation in the controller (float32 minibatch SGD with momentum,
  the learning rate falling linearly over the second half as in the FF recipe) and deployed on
  a chip with ideal weights (``program_verify``); the arithmetic is charged to that chip's
  ledger at the controller's cost per operation (``info.digital_op_energy_j``).
* :func:`train_through_model` -- the **model-based route** for a chip with black-box stages:
  measure each stage with probe inputs read through the chip (charged by its ledger), fit a
  differentiable model of it (:class:`StageModel`: a linear map and one learned piecewise-linear
  function per unit, fitted by Adam on the squared error; charged), train the network by BP
  through the models in the controller (charged), program the trainable layers' weights onto
  the chip by program-and-verify (charged by the chip) and fit the output layer again on
  features read through the chip (charged).

The network mirrors how the FF learner measures a chip (``mortal.ff.measure``): each example is
RMS-normalized, sent at ``s = input_range / input_clip_rms``, every layer's output is
RMS-normalized before the next layer, and a linear softmax layer in the controller reads the
last hidden layer.  A trainable layer of an analog chip is modelled by its datasheet alone,
``min(relu(u), output_range)``.  Operation counts follow the style of :mod:`mortal.ops`
(2 operations per multiply-add).  This module sees a chip only through ``mortal.chip.Chip``
plus ``program_verify(layer, weights)``, the deployment call of chips that offer it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .chip import Chip, check_chip, top_down_widths
from .errors import InputError
from .validate import as_inputs, as_labels
from .ff.readout import lr_gain
from .stage_model import StageFitConfig, StageModel, fit_stage_model, rms_norm, stage_fit_ops, stream

__all__ = ["BPConfig", "StageFitConfig", "StageModel", "BPNetwork", "BPResult", "train_digital",
           "train_through_model", "fit_stage_model", "evaluate_on_chip", "forward_ops", "backward_ops",
           "update_ops", "stage_fit_ops"]

# Spawn keys of this module's random streams under BPConfig.seed.
_INIT, _ORDER = 0, 1


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)


class BPConfig(_Settings):
    """Backpropagation in the controller."""

    epochs: int = Field(20, ge=1, le=10_000)
    """Training epochs (20: what BP needs for an error like FF's after 60, in Hinton's paper)."""
    batch_size: int = Field(100, ge=1, le=100_000)
    lr: float = Field(0.05, gt=0.0, le=10.0)
    """Learning rate of SGD (falls linearly to 0 over the second half of the epochs)."""
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    input_clip_rms: float = Field(4.0, gt=0.0)
    """Normalized inputs are sent at input_range / input_clip_rms (as the FF learner sends them)."""
    head_refit_epochs: int = Field(10, ge=0, le=1000)
    """Model route: epochs of the output layer fitted again on features read through the chip (0: none)."""
    seed: int = Field(0, ge=0)


# -- operation counts --------------------------------------------------------------------------------
def forward_ops(batch: int, n_in: int, n_out: int) -> int:
    """A layer's forward pass: the product with the bias row (2 per multiply-add) and about 5
    operations per output (activation, RMS normalization)."""
    return 2 * batch * (n_in + 1) * n_out + 5 * batch * n_out


def backward_ops(batch: int, n_in: int, n_out: int, weights: bool, inputs: bool) -> int:
    """A layer's backward pass: the weight gradient (if ``weights``), the input gradient (if
    ``inputs``), about 8 operations per output (activation and normalization derivatives)."""
    return (2 * batch * (n_in + 1) * n_out if weights else 0) + (2 * batch * n_in * n_out if inputs else 0) \
        + 8 * batch * n_out


def update_ops(size: int) -> int:
    """SGD with momentum and weight decay, and the clip to the weight range: ~5 per weight."""
    return 5 * size


def _rms_norm_grad(g: np.ndarray, h: np.ndarray, r: np.ndarray) -> np.ndarray:
    return (g - h * np.mean(g * h, axis=1, keepdims=True)) / r


# -- the network ----------------------------------------------------------------------------------
@dataclass
class BPNetwork:
    """Weights of the trainable layers (``weights[i]`` float32 (n_in + 1, n_out), None for a stage),
    the stages' models, the output layer (``head`` (width + 1, k)) and how layers are sent."""

    weights: list[Optional[np.ndarray]]
    stages: dict[int, StageModel]
    head: np.ndarray
    scales: list[float]
    limits: list[float]
    """Per layer, the output range a trainable layer's model clips at (inf: none)."""
    bias_level: float
    weight_range: list[float]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list]:
        """Logits (batch, k) of data ``x`` (batch, d) and the caches of every layer."""
        h, r = rms_norm(x.astype(np.float32))
        caches: list = [(h, r)]
        for i, W in enumerate(self.weights):
            s = np.float32(self.scales[i])
            sent = h * s
            if W is None:
                a, c = self.stages[i].forward(sent)
                a = np.maximum(a, 0.0)
            else:
                u = sent @ W[:-1] + np.float32(self.bias_level) * W[-1]
                a = np.clip(u, 0.0, self.limits[i])
                c = u
            h, r = rms_norm(a)
            caches.append((sent, c, a, h, r))
        logits = h @ self.head[:-1] + self.head[-1]
        return logits, caches

    def backward(self, logits: np.ndarray, labels: np.ndarray, caches: list) -> tuple[list, np.ndarray, float]:
        """Gradients of the mean cross-entropy: per layer (None for stages), the head's, and the loss."""
        z = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        rows = np.arange(labels.size)
        loss = float(-np.mean(np.log(p[rows, labels] + 1e-12)))
        g = p
        g[rows, labels] -= 1.0
        g /= np.float32(labels.size)
        h_last = caches[-1][3]
        g_head = np.concatenate([h_last.T @ g, g.sum(axis=0, keepdims=True)], axis=0)
        gh = g @ self.head[:-1].T
        grads: list = [None] * len(self.weights)
        for i in range(len(self.weights) - 1, -1, -1):
            sent, c, a, h, r = caches[i + 1]
            ga = _rms_norm_grad(gh, h, r)
            W = self.weights[i]
            if W is None:
                pre_clip = c  # the stage model's cache
                gy = ga * (a > 0)
                gsent, _ = self.stages[i].backward(gy, pre_clip, params=False)
            else:
                gu = ga * ((c > 0) & (c < self.limits[i]))
                gW = np.empty_like(W)
                gW[:-1] = sent.T @ gu
                gW[-1] = self.bias_level * gu.sum(axis=0)
                grads[i] = gW
                gsent = gu @ W[:-1].T if i > 0 else None
            if i > 0:
                gh = gsent * np.float32(self.scales[i])
        return grads, g_head, loss

    def step_ops(self, batch: int, n_classes: int) -> int:
        """Controller operations of one training step (forward, backward, updates)."""
        ops = 0
        for i, W in enumerate(self.weights):
            n_in, n_out = (W.shape[0] - 1, W.shape[1]) if W is not None else \
                (self.stages[i].A.shape[0] - 1, self.stages[i].n_out)
            ops += forward_ops(batch, n_in, n_out) + (10 * batch * n_out if W is None else 0)
            ops += backward_ops(batch, n_in, n_out, weights=W is not None, inputs=i > 0)
            if W is not None:
                ops += update_ops(W.size)
        width = self.head.shape[0] - 1
        ops += forward_ops(batch, width, n_classes) + backward_ops(batch, width, n_classes, True, True)
        ops += update_ops(self.head.size)
        return ops


@dataclass
class BPResult:
    """What a BP route produced and cost.

    ``network``: the trained network; ``train_ops``: controller operations of the training;
    ``energy_j`` by category and ``total_energy_j``: the chip's ledger at the end of the route
    (training, probing and fitting, programming, head refit; not the evaluation);
    ``history``: per epoch, the training loss and online error; ``fits``: the stage models' reports.
    """

    network: BPNetwork
    train_ops: int
    energy_j: dict[str, float]
    wall_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    fits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_energy_j(self) -> float:
        return float(sum(self.energy_j.values()))


def _scales(chip: Chip, cfg: BPConfig) -> list[float]:
    return [float(r) / cfg.input_clip_rms if math.isfinite(r) else 1.0 for r in chip.info.input_range]


def _new_network(chip: Chip, cfg: BPConfig, stages: dict[int, StageModel], n_classes: int) -> BPNetwork:
    info = chip.info
    rng = stream(cfg.seed, _INIT)
    weights: list[Optional[np.ndarray]] = []
    for i, (rows, cols) in enumerate(info.weight_shapes):
        if i in stages:
            weights.append(None)
            continue
        W = (rng.standard_normal((rows, cols)) / math.sqrt(rows)).astype(np.float32)
        W[-1] = 0.0
        wr = float(info.weight_range[i])
        weights.append(np.clip(W, -wr, wr) if math.isfinite(wr) else W)
    width = int(info.layer_sizes[-1])
    head = np.zeros((width + 1, n_classes), np.float32)
    limits = [float(r) for r in info.output_range]
    return BPNetwork(weights, stages, head, _scales(chip, cfg), limits, float(info.bias_level),
                     [float(w) for w in info.weight_range])


def _train(net: BPNetwork, chip: Chip, x: np.ndarray, y: np.ndarray, cfg: BPConfig, n_classes: int,
           epochs: int, head_only: bool = False, feats: Optional[np.ndarray] = None) -> tuple[list, int]:
    """Minibatch SGD with momentum; charges the controller's operations; returns history and ops."""
    vel = [None if W is None else np.zeros_like(W) for W in net.weights]
    vel_head = np.zeros_like(net.head)
    rng = stream(cfg.seed + (1 << 16 if head_only else 0), _ORDER)
    n = x.shape[0] if feats is None else feats.shape[0]
    history, total = [], 0
    mom = np.float32(cfg.momentum)
    for e in range(epochs):
        lr = np.float32(cfg.lr * lr_gain(e, epochs))
        order = rng.permutation(n)
        loss_sum, wrong, seen = 0.0, 0, 0
        for start in range(0, n - cfg.batch_size + 1, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if head_only:
                f = feats[idx]
                logits = f @ net.head[:-1] + net.head[-1]
                z = logits - logits.max(axis=1, keepdims=True)
                p = np.exp(z)
                p /= p.sum(axis=1, keepdims=True)
                loss_sum += float(-np.mean(np.log(p[np.arange(idx.size), y[idx]] + 1e-12))) * idx.size
                p[np.arange(idx.size), y[idx]] -= 1.0
                p /= np.float32(idx.size)
                g_head = np.concatenate([f.T @ p, p.sum(axis=0, keepdims=True)], axis=0)
                grads: list = [None] * len(net.weights)
                ops = forward_ops(idx.size, f.shape[1], n_classes) + backward_ops(idx.size, f.shape[1], n_classes,
                                                                                   True, False) + update_ops(net.head.size)
            else:
                logits, caches = net.forward(x[idx])
                grads, g_head, loss = net.backward(logits, y[idx], caches)
                loss_sum += loss * idx.size
                ops = net.step_ops(idx.size, n_classes)
            wrong += int(np.count_nonzero(logits.argmax(axis=1) != y[idx]))
            seen += idx.size
            for i, g in enumerate(grads):
                if g is None:
                    continue
                W = net.weights[i]
                vel[i] *= mom
                vel[i] -= lr * (g + np.float32(cfg.weight_decay) * W)
                W += vel[i]
                wr = net.weight_range[i]
                if math.isfinite(wr):
                    np.clip(W, -wr, wr, out=W)
            vel_head *= mom
            vel_head -= lr * (g_head + np.float32(cfg.weight_decay) * net.head)
            net.head += vel_head
            chip.ledger.charge_digital(ops)
            total += ops
        history.append({"epoch": e + 1, "loss": loss_sum / max(seen, 1), "train_error_online": wrong / max(seen, 1)})
    return history, total


def _check_data(chip: Chip, x: Any, y: Any, n_classes: Optional[int]) -> tuple[np.ndarray, np.ndarray, int]:
    """Examples as float32 (n, d) in [0, 1] of the chip's input width, int64 labels, the class count."""
    check_chip(chip)
    if any(top_down_widths(chip.info)):
        raise InputError(f"backpropagation here trains a feed-forward chain; this chip's layers also take top-down "
                         f"inputs {list(top_down_widths(chip.info))} (the recurrent layout): use a chip without them")
    x = as_inputs(x, "x", int(chip.info.layer_sizes[0]))
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise InputError(f"labels have dtype {y.dtype}, expected integers 0..k-1")
    k = max(int(y.max()) + 1 if y.size else 2, 2) if n_classes is None else int(n_classes)
    if k < 2:
        raise InputError(f"training needs at least 2 classes, got {k}")
    return x, as_labels(y, x.shape[0], k), k


def _check_batches(x: np.ndarray, cfg: BPConfig) -> None:
    """InputError if ``x`` holds fewer examples than one batch (no step would be taken)."""
    if x.shape[0] < cfg.batch_size:
        raise InputError(f"{x.shape[0]} training examples is fewer than one batch ({cfg.batch_size})")


def _deploy(chip: Chip, net: BPNetwork) -> None:
    deploy = getattr(chip, "program_verify", None)
    if not callable(deploy):
        raise InputError("deploying trained weights needs a chip with program_verify(layer, weights)")
    for i, W in enumerate(net.weights):
        if W is not None:
            deploy(i, W)


def train_digital(chip: Chip, x: Any, y: Any, cfg: BPConfig | None = None,
                  n_classes: Optional[int] = None) -> BPResult:
    """The digital BP reference: train the network of ``chip``'s shape (every layer ReLU) by
    backpropagation in the controller and deploy it on ``chip`` (meant for the ideal chip).

    ``x`` (n, d) examples (uint8 or floats in [0, 1]), ``y`` integer labels.  The training's
    operations are charged to ``chip.ledger`` (``charge_digital``); the deployment by the chip.
    Every layer must be trainable.
    """
    cfg = cfg or BPConfig()
    x, y, k = _check_data(chip, x, y, n_classes)
    _check_batches(x, cfg)
    if not all(chip.info.trainable):
        raise InputError("the digital reference trains every layer; this chip has fixed layers "
                         "(use train_through_model)")
    t0 = time.perf_counter()
    net = _new_network(chip, cfg, {}, k)
    net.limits = [math.inf] * len(net.weights)
    history, ops = _train(net, chip, x, y, cfg, k, cfg.epochs)
    _deploy(chip, net)
    return BPResult(net, ops, {c: float(v) for c, v in chip.ledger.energy_j.items()},
                    time.perf_counter() - t0, history)


def chip_features(chip: Chip, net: BPNetwork, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """The last hidden layer's normalized activities of ``x`` read through the chip (charged)."""
    out = []
    for start in range(0, x.shape[0], batch_size):
        h, _ = rms_norm(x[start:start + batch_size])
        for i in range(len(net.weights)):
            yv = chip.read(i, (h * np.float32(net.scales[i])).astype(np.float32))
            h, _ = rms_norm(yv)
            chip.ledger.charge_digital(5 * yv.size)
        out.append(h.astype(np.float32))
    return np.concatenate(out, axis=0)


def evaluate_on_chip(chip: Chip, net: BPNetwork, x: Any, y: Any, batch_size: int = 1000) -> dict[str, Any]:
    """Test error of ``net`` run on ``chip`` by reads, and the energy the evaluation cost."""
    x, y, k = _check_data(chip, x, y, net.head.shape[1])
    before = {c: float(v) for c, v in chip.ledger.energy_j.items()}
    f = chip_features(chip, net, x, batch_size)
    logits = f @ net.head[:-1] + net.head[-1]
    chip.ledger.charge_digital(2 * f.shape[0] * f.shape[1] * k)
    energy = {c: float(v) - before.get(c, 0.0) for c, v in chip.ledger.energy_j.items()}
    return {"error": float(np.mean(logits.argmax(axis=1) != y)), "n": int(x.shape[0]), "energy_j": energy,
            "total_energy_j": float(sum(energy.values()))}


def train_through_model(chip: Chip, x: Any, y: Any, cfg: BPConfig | None = None,
                        fit: StageFitConfig | None = None, n_classes: Optional[int] = None) -> BPResult:
    """The model-based route on a chip with fixed stages (see the module docstring).

    Fits a :class:`StageModel` of every non-trainable layer from probe reads (half of them built
    from ``x``), trains the network by BP through the models, programs the trainable layers by
    ``program_verify`` and, with ``cfg.head_refit_epochs``, fits the output layer again on
    features of ``x`` read through the chip.  Everything is charged to ``chip.ledger``.
    """
    cfg = cfg or BPConfig()
    fit = fit or StageFitConfig(seed=cfg.seed)
    x, y, k = _check_data(chip, x, y, n_classes)
    _check_batches(x, cfg)
    t0 = time.perf_counter()
    scales = _scales(chip, cfg)
    stages, reports = {}, []
    for i, trainable in enumerate(chip.info.trainable):
        if not trainable:
            model, rep = fit_stage_model(chip, i, fit, data=x, scale=scales[i])
            stages[i] = model
            reports.append(rep)
    net = _new_network(chip, cfg, stages, k)
    history, ops = _train(net, chip, x, y, cfg, k, cfg.epochs)
    _deploy(chip, net)
    if cfg.head_refit_epochs:
        feats = chip_features(chip, net, x)
        net.head[:] = 0.0
        refit_hist, refit_ops = _train(net, chip, x, y, cfg, k, cfg.head_refit_epochs, head_only=True, feats=feats)
        history += [{**h, "head_refit": True} for h in refit_hist]
        ops += refit_ops
    return BPResult(net, ops, {c: float(v) for c, v in chip.ledger.energy_j.items()},
                    time.perf_counter() - t0, history, reports)
