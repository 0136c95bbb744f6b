"""A differentiable model of a fixed black-box stage, fitted from measurements.

:func:`fit_stage_model` drives a stage of a chip with probe inputs (read through the chip and
charged by its ledger) and fits a :class:`StageModel` to what it measured: a linear map and one
learned piecewise-linear function per unit, started from ridge least squares and fitted by Adam on
the squared error (the controller's arithmetic charged).  :mod:`mortal.backprop` trains networks
by backpropagation through such models.  Operation counts follow :mod:`mortal.ops` (2 per
multiply-add).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .chip import Chip, check_chip
from .errors import InputError
from .ff.readout import lr_gain

__all__ = ["StageFitConfig", "StageModel", "fit_stage_model", "stage_fit_ops", "rms_norm", "stream"]

_EPS = 1e-6
# Spawn keys of the fit's random streams under StageFitConfig.seed.
_PROBES, _FIT = 2, 3


class StageFitConfig(BaseModel):
    """Fitting a differentiable model of a black-box stage from measurements."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)

    probes: int = Field(4000, ge=10, le=1_000_000)
    """Probe inputs read through the stage (a share held out to check the fit)."""
    holdout: float = Field(0.2, gt=0.0, lt=1.0)
    reads: int = Field(1, ge=1, le=64)
    """Reads averaged per probe."""
    knots: int = Field(16, ge=2, le=256)
    """Knots of each unit's piecewise-linear function."""
    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(100, ge=1, le=100_000)
    lr: float = Field(3e-3, gt=0.0, le=1.0)
    """Adam's step size."""
    seed: int = Field(0, ge=0)


def stage_fit_ops(batch: int, n_in: int, n_out: int) -> int:
    """One Adam step of a stage model on ``batch`` probes: forward, both gradients, ~12
    operations per value for the piecewise-linear functions and ~10 per parameter for Adam."""
    return 3 * 2 * batch * (n_in + 1) * n_out + 12 * batch * n_out + 10 * (n_in + 2) * n_out


def stream(seed: int, key: int) -> np.random.Generator:
    """The random stream ``SeedSequence(seed, spawn_key=(key,))``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(key,))))


def rms_norm(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``a`` scaled to unit RMS, and the RMS (batch, 1) they were divided by."""
    r = np.sqrt(np.mean(np.square(a), axis=1, keepdims=True) + np.asarray(_EPS, a.dtype))
    return a / r, r


# -- the stage model -----------------------------------------------------------------------------
class StageModel:
    """A differentiable model of one stage: ``v = x @ A[:-1] + bias_level * A[-1]``, then per unit
    a piecewise-linear function on ``knots`` evenly spaced points of ``[lo_j, hi_j]`` (flat
    beyond them) with values ``P[j]``.

    It assumes only what any crossbar stage is: a linear array followed by one function per
    column; it knows neither the weights nor the functions.
    """

    def __init__(self, A: np.ndarray, lo: np.ndarray, hi: np.ndarray, P: np.ndarray, bias_level: float) -> None:
        self.A, self.lo, self.hi, self.P = A, lo, hi, P
        self.bias_level = float(bias_level)

    @property
    def n_out(self) -> int:
        return self.A.shape[1]

    def _pre(self, x: np.ndarray) -> np.ndarray:
        return x @ self.A[:-1] + np.asarray(self.bias_level, x.dtype) * self.A[-1]

    def _locate(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        K = self.P.shape[1]
        step = (self.hi - self.lo) / (K - 1)
        t = (v - self.lo) / step
        inside = (t >= 0) & (t <= K - 1)
        k = np.clip(np.floor(t), 0, K - 2).astype(np.int64)
        frac = np.clip(t - k, 0.0, 1.0).astype(v.dtype)
        return k, frac, inside, step

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, tuple]:
        """Outputs (batch, n_out) for inputs ``x`` (batch, n_in) and what backward needs."""
        v = self._pre(x)
        k, frac, inside, step = self._locate(v)
        cols = np.arange(self.n_out)
        p0, p1 = self.P[cols, k], self.P[cols, k + 1]
        y = p0 + (p1 - p0) * frac
        return y, (x, k, frac, inside, step, p0, p1)

    def backward(self, g: np.ndarray, cache: tuple, params: bool) -> tuple[np.ndarray, Optional[tuple]]:
        """Gradient with respect to the input and, if ``params``, to (A, P)."""
        x, k, frac, inside, step, p0, p1 = cache
        gv = g * np.where(inside, (p1 - p0) / step, 0.0).astype(g.dtype)
        gx = gv @ self.A[:-1].T
        if not params:
            return gx, None
        gA = np.empty_like(self.A)
        gA[:-1] = x.T @ gv
        gA[-1] = self.bias_level * gv.sum(axis=0)
        K = self.P.shape[1]
        idx = (np.arange(self.n_out) * K + k).ravel()
        gP = np.bincount(idx, weights=(g * (1 - frac)).ravel(), minlength=self.P.size)
        gP += np.bincount(idx + 1, weights=(g * frac).ravel(), minlength=self.P.size)
        return gx, (gA, gP.reshape(self.P.shape).astype(self.P.dtype))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[0]


def _probe_inputs(n: int, n_in: int, data: Optional[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS non-negative probes: half like a ReLU layer's normalized output on the data (a random
    projection of the data, rectified), half random sparse vectors of random density."""
    half = n // 2 if data is not None else 0
    out = np.empty((n, n_in), np.float32)
    if half:
        d = data[rng.integers(0, data.shape[0], half)].astype(np.float32)
        d, _ = rms_norm(d)
        proj = rng.standard_normal((d.shape[1], n_in)).astype(np.float32) / np.float32(math.sqrt(d.shape[1]))
        out[:half] = np.maximum(d @ proj + rng.normal(0, 0.3, (1, n_in)).astype(np.float32), 0)
    rest = n - half
    density = rng.uniform(0.1, 0.9, (rest, 1))
    out[half:] = np.abs(rng.standard_normal((rest, n_in))) * (rng.random((rest, n_in)) < density)
    return rms_norm(out + np.float32(1e-3))[0].astype(np.float32)


def fit_stage_model(chip: Chip, layer: int, cfg: StageFitConfig, data: Optional[np.ndarray] = None,
                    scale: Optional[float] = None) -> tuple[StageModel, dict[str, Any]]:
    """Fit a :class:`StageModel` of layer ``layer`` of ``chip`` from probe reads.

    ``data``: examples (n, d), unit-RMS after normalization, from which half of the probes are
    made (None: all probes random).  ``scale``: the factor from unit-RMS inputs to the chip's
    input levels (default ``input_range / 4``).  Every read is charged by the chip, the fit's
    arithmetic to its ledger.  Returns the model and a report: held-out mean squared error of
    the linear least-squares start and of the fitted model, and the probes read.
    """
    check_chip(chip)
    info = chip.info
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < len(info.trainable):
        raise InputError(f"layer must be one of the chip's layers 0..{len(info.trainable) - 1}, got {layer!r}")
    n_fit = cfg.probes - max(1, int(round(cfg.holdout * cfg.probes)))
    if n_fit < cfg.batch_size:
        raise InputError(f"the fit keeps {n_fit} of the {cfg.probes} probes (holdout {cfg.holdout}), fewer than one "
                         f"batch ({cfg.batch_size}): no step would be taken; use more probes or a smaller batch_size")
    n_in, n_out = info.weight_shapes[layer][0] - 1, info.weight_shapes[layer][1]
    s = scale if scale is not None else (float(info.input_range[layer]) / 4.0
                                         if math.isfinite(info.input_range[layer]) else 1.0)
    rng = stream(cfg.seed, _PROBES)
    x = _probe_inputs(cfg.probes, n_in, data, rng) * np.float32(s)
    y = np.zeros((cfg.probes, n_out), np.float32)
    for start in range(0, cfg.probes, 1000):
        xb = x[start:start + 1000]
        for _ in range(cfg.reads):
            y[start:start + xb.shape[0]] += chip.read(layer, xb)
    y /= np.float32(cfg.reads)
    chip.ledger.charge_digital(cfg.reads * y.size)
    n_hold = max(1, int(round(cfg.holdout * cfg.probes)))
    xf, yf, xh, yh = x[:-n_hold], y[:-n_hold], x[-n_hold:], y[-n_hold:]
    bias = float(info.bias_level)
    # Start: ridge least squares of the outputs on the inputs, functions the identity.
    X = np.concatenate([xf, np.full((xf.shape[0], 1), bias, np.float32)], axis=1).astype(np.float64)
    A = np.linalg.solve(X.T @ X + 1e-3 * np.eye(X.shape[1]), X.T @ yf.astype(np.float64)).astype(np.float32)
    chip.ledger.charge_digital(2 * X.shape[0] * X.shape[1] * (X.shape[1] + n_out) + X.shape[1] ** 3)
    v = xf @ A[:-1] + bias * A[-1]
    lo, hi = np.quantile(v, 0.005, axis=0), np.quantile(v, 0.995, axis=0)
    spread = np.maximum(hi - lo, 1e-3)
    lo, hi = (lo - 0.25 * spread).astype(np.float32), (hi + 0.25 * spread).astype(np.float32)
    P = np.linspace(lo, hi, cfg.knots, axis=1).astype(np.float32)
    model = StageModel(A, lo, hi, P, bias)
    before = float(np.mean((model.predict(xh) - yh) ** 2))
    # Adam on the squared error.
    params = [model.A, model.P]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    b1, b2 = 0.9, 0.999
    order_rng = stream(cfg.seed, _FIT)
    step = 0
    n = xf.shape[0]
    for e in range(cfg.epochs):
        order = order_rng.permutation(n)
        lr = cfg.lr * lr_gain(e, cfg.epochs)
        for start in range(0, n - cfg.batch_size + 1, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            pred, cache = model.forward(xf[idx])
            g = (2.0 / pred.size) * (pred - yf[idx])
            _, grads = model.backward(g.astype(np.float32), cache, params=True)
            step += 1
            for p, gr, a, b in zip(params, grads, m1, m2):
                a *= b1
                a += (1 - b1) * gr
                b *= b2
                b += (1 - b2) * gr * gr
                p -= (lr * (a / (1 - b1**step)) / (np.sqrt(b / (1 - b2**step)) + 1e-8)).astype(p.dtype)
            chip.ledger.charge_digital(stage_fit_ops(idx.size, n_in, n_out))
    after = float(np.mean((model.predict(xh) - yh) ** 2))
    chip.ledger.charge_digital(2 * 2 * n_hold * (n_in + 1) * n_out)
    return model, {"layer": layer, "probes": cfg.probes, "heldout_mse_linear": before, "heldout_mse_fitted": after,
                   "heldout_output_var": float(np.var(yh))}
