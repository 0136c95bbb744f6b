"""One layer of a chip: a crossbar of differential device pairs and its periphery.

:class:`Crossbar` holds the hidden state of one layer and calls the numba
kernels of :mod:`devices._kernels`.  It trusts its inputs: the public
:class:`devices.chip.AnalogChip` validates them first.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _kernels as K
from .spec import ChipSpec

__all__ = ["Crossbar", "drift_parameters", "state_layout"]

_STATE_ARRAYS = ("w_eff", "row_gsum", "g", "t_prog", "nu", "params", "endurance", "wear", "stuck",
                 "fail_at", "fail_on")


def state_layout(exact: bool, n_in: int, n_out: int) -> dict[str, tuple[tuple[int, ...], type]]:
    """Shape and dtype of every array of a layer's saved state (``Crossbar.state``).

    ``exact`` layers hold only the weights and the neurons; pulsed layers hold every
    device of each pair, shape ``(2, n_in + 1, n_out)``.  Sizes are Python ints, so the
    layout of a layer too large to build can still be measured (``state_bytes``).
    """
    rows, cols = int(n_in) + 1, int(n_out)
    dev = (2, rows, cols)
    layout: dict[str, tuple[tuple[int, ...], type]] = {
        "w_eff": ((rows, cols), np.float32), "row_gsum": ((rows,), np.float64),
        "gain": ((cols,), np.float32), "offset": ((cols,), np.float32),
        "curv": ((cols,), np.float32), "sat": ((cols,), np.float32)}
    if not exact:
        layout.update(g=(dev, np.float32), t_prog=(dev, np.float64), nu=(dev, np.float32),
                      params=((4,) + dev, np.float32), endurance=(dev, np.float32),
                      wear=(dev, np.uint32), stuck=(dev, np.int8), fail_at=(dev, np.float64),
                      fail_on=(dev, np.int8))
    return layout


def state_bytes(exact: bool, n_in: int, n_out: int) -> int:
    """Bytes of a layer's hidden state (the arrays of :func:`state_layout`)."""
    return sum(math.prod(shape) * np.dtype(dtype).itemsize
               for shape, dtype in state_layout(exact, n_in, n_out).values())


def _flat_from(coeff: float, offset: float, lo: float, hi: float) -> tuple[float, float]:
    """Where ``clip(coeff ln g + offset, lo, hi)`` becomes constant for all larger g, and its value."""
    if coeff == 0.0:
        return 0.0, min(max(offset, lo), hi)
    edge = lo if coeff < 0 else hi
    return math.exp((edge - offset) / coeff), edge


def drift_parameters(spec: ChipSpec) -> np.ndarray:
    """The drift spec as the float64 vector the kernels index (``_kernels.D_*``)."""
    d = spec.drift
    g_mu, mu_flat = _flat_from(d.mu_log_coeff, d.mu_offset, d.mu_min, d.mu_max)
    g_s, s_flat = _flat_from(d.sigma_log_coeff, d.sigma_offset, d.sigma_min, d.sigma_max)
    return np.array(
        [d.t0_s, d.mu_log_coeff, d.mu_offset, d.mu_min, d.mu_max,
         d.sigma_log_coeff, d.sigma_offset, d.sigma_min, d.sigma_max,
         max(g_mu, g_s), mu_flat, s_flat],
        dtype=np.float64,
    )


class Crossbar:
    """Hidden state and physics of one ``(n_in + 1) x n_out`` layer.

    In ``exact`` programming mode only ``w_eff`` exists (a float weight matrix);
    in ``pulsed`` mode every weight is a pair of devices with their own
    conductance, drift exponent, step sizes, endurance, wear and stuck flag,
    and ``w_eff`` caches the effective weights at time ``t_eval``.
    """

    def __init__(self, spec: ChipSpec, n_in: int, n_out: int, fab: np.random.Generator) -> None:
        self._derive(spec, n_in, n_out)
        rows = self.n_in + 1
        c = spec.conductance
        self.t_eval = 0.0
        self.t_prog_max = 0.0

        w0 = fab.standard_normal((rows, self.n_out)) * (c.init_weight_std_fan_in / math.sqrt(rows))
        w0[-1] = 0.0
        w0 = np.clip(w0, -0.9 * self.w_max, 0.9 * self.w_max)
        self._fabricate_neurons(fab)
        self.row_gsum = np.zeros(rows, dtype=np.float64)
        if self.exact:
            self.w_eff = np.ascontiguousarray(w0, dtype=np.float32)
            self.row_gsum[:] = np.abs(self.w_eff).sum(axis=1) / self.w_max
            return
        self._fabricate_devices(fab, w0)
        self.refresh(0.0)

    def draw_failures(self, age: np.random.Generator) -> None:
        """Draw each device's failure time and stuck state from the chip's ageing stream.

        A separate stream keeps the fabrication draws of every layer unchanged
        whether or not the spec has failures with time.
        """
        if self.exact:
            return
        f = self.spec.faults
        shape = self.g.shape
        if f.failure_median_s is None:
            self.fail_at = np.full(shape, np.inf, dtype=np.float64)
            self.fail_on = np.zeros(shape, dtype=np.int8)
        else:
            z = age.standard_normal(shape)
            self.fail_at = f.failure_median_s * np.exp(f.failure_dtod * z)
            self.fail_on = (age.random(shape) < f.failure_stuck_on_share).astype(np.int8)
        self._next_failure()

    def _next_failure(self) -> None:
        live = self.stuck == 0
        self.next_fail = float(self.fail_at[live].min()) if live.any() else math.inf

    def _derive(self, spec: ChipSpec, n_in: int, n_out: int) -> None:
        """Set the quantities that follow from the spec and the shape alone."""
        self.spec = spec
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.w_max = spec.conductance.weight_range_fan_in / math.sqrt(self.n_in + 1)
        self.exact = spec.programming.mode == "exact"
        self.pulse_step_w = spec.programming.step * self.w_max / 2.0
        self.dp = drift_parameters(spec)
        self.soft = spec.neuron.family == "soft"

    # -- fabrication -------------------------------------------------------------------------
    def _fabricate_neurons(self, fab: np.random.Generator) -> None:
        nspec = self.spec.neuron
        n = self.n_out
        r = self.spec.adc.range
        if self.soft:
            draw = fab.standard_normal((4, n))
            self.gain = np.exp(nspec.gain_dtod * draw[0] - 0.5 * nspec.gain_dtod**2).astype(np.float32)
            self.offset = (nspec.offset_dtod * draw[1] * r).astype(np.float32)
            curv = nspec.curvature_mean + nspec.curvature_dtod * draw[2]
            self.curv = np.clip(curv, -0.45, 2.0).astype(np.float32)
            sat = nspec.saturation_mean * (1.0 + nspec.saturation_dtod * draw[3])
            self.sat = (np.clip(sat, 0.1 * nspec.saturation_mean, None) * r).astype(np.float32)
        else:
            self.gain = np.ones(n, np.float32)
            self.offset = np.zeros(n, np.float32)
            self.curv = np.zeros(n, np.float32)
            self.sat = np.full(n, np.inf, np.float32)

    def _fabricate_devices(self, fab: np.random.Generator, w0: np.ndarray) -> None:
        p, c, f = self.spec.programming, self.spec.conductance, self.spec.faults
        shape = (2, self.n_in + 1, self.n_out)
        params = np.empty((4,) + shape, dtype=np.float32)
        params[K.P_GSAT] = np.clip(1.0 + c.g_max_dtod * fab.standard_normal(shape), 0.5, 1.5)
        base = p.step * np.exp(p.step_dtod * fab.standard_normal(shape) - 0.5 * p.step_dtod**2)
        ud = np.clip(p.up_down + p.up_down_dtod * fab.standard_normal(shape), -0.9, 0.9)
        params[K.P_STEP_UP] = base * (1.0 + ud)
        params[K.P_STEP_DOWN] = base * (1.0 - ud)
        params[K.P_XI] = fab.standard_normal(shape)
        self.params = params

        g = np.empty(shape, dtype=np.float32)
        # Split each weight around the common mode c; pairs that would go below 0 are lifted.
        span = np.abs(w0) / self.w_max
        low = np.maximum(self.spec.conductance.init_common_mode - 0.5 * span, 0.0)
        g[0] = np.where(w0 > 0, low + span, low)
        g[1] = np.where(w0 > 0, low, low + span)
        g = np.minimum(g, params[K.P_GSAT])
        fate = fab.random(shape)
        stuck_on = fate < f.stuck_on_prob
        stuck_off = (fate >= f.stuck_on_prob) & (fate < f.stuck_on_prob + f.stuck_off_prob)
        g[stuck_on] = params[K.P_GSAT][stuck_on]
        g[stuck_off] = 0.0
        self.g = g
        self.stuck = (stuck_on | stuck_off).astype(np.int8)
        if f.endurance_pulses is None:
            self.endurance = np.full(shape, np.inf, dtype=np.float32)
        else:
            life = f.endurance_pulses * np.exp(f.endurance_dtod * fab.standard_normal(shape))
            self.endurance = life.astype(np.float32)
        self.wear = np.zeros(shape, dtype=np.uint32)
        self.t_prog = np.zeros(shape, dtype=np.float64)
        self.nu = np.zeros(shape, dtype=np.float32)
        self.w_eff = np.empty(shape[1:], dtype=np.float32)
        if self.spec.drift.enabled:
            self.nu[:] = self._exponents(self.g, self.params[K.P_XI])
            self.nu[self.stuck.astype(bool)] = 0.0

    def _exponents(self, g: np.ndarray, xi: np.ndarray) -> np.ndarray:
        d = self.spec.drift
        lg = np.log(np.maximum(g.astype(np.float64), 1e-6))
        mu = np.clip(d.mu_log_coeff * lg + d.mu_offset, d.mu_min, d.mu_max)
        sg = np.clip(d.sigma_log_coeff * lg + d.sigma_offset, d.sigma_min, d.sigma_max)
        return np.abs(mu + sg * xi).astype(np.float32)

    # -- time ---------------------------------------------------------------------------------
    def refresh(self, now: float) -> None:
        """Recompute the effective weights at time ``now`` (pulsed mode only)."""
        if self.exact:
            return
        K.refresh_kernel(self.g, self.t_prog, self.nu, float(now), float(self.dp[K.D_T0]),
                         float(self.w_max), self.w_eff, self.row_gsum)
        self.t_eval = float(now)

    def ensure_current(self, now: float) -> None:
        """Refresh the cached weights if drift since ``t_eval`` may exceed the tolerance."""
        if self.exact or not self.spec.drift.enabled or now <= self.t_eval:
            return
        age = self.t_eval - self.t_prog_max + self.spec.drift.t0_s
        if now - self.t_eval > self.spec.drift.refresh_rel * age:
            self.refresh(now)

    def age(self, now: float) -> int:
        """Stick every working device whose failure time has come; returns how many failed."""
        if self.exact or now < self.next_fail:
            return 0
        hit = (self.fail_at <= now) & (self.stuck == 0)
        n = int(np.count_nonzero(hit))
        if n:
            on = hit & (self.fail_on != 0)
            self.g[on] = self.params[K.P_GSAT][on]
            self.g[hit & ~on] = 0.0
            self.nu[hit] = 0.0
            self.stuck[hit] = 1
            self.refresh(now)
            if not self.spec.drift.enabled:
                self.row_gsum[:] = self.g.sum(axis=(0, 2), dtype=np.float64)
        self._next_failure()
        return n

    # -- operations ---------------------------------------------------------------------------
    def read(self, x: np.ndarray, now: float, seed: int) -> tuple[np.ndarray, float]:
        """Measured outputs for float32 inputs ``x`` (batch, n_in); returns (y, sum of (x / range)^2)."""
        self.ensure_current(now)
        spec = self.spec
        batch = x.shape[0]
        sq = np.zeros(batch, np.float64)
        ab = np.zeros(batch, np.float64)
        r_in = spec.dac.range
        need_norms = spec.read_noise.weight_std > 0.0
        if spec.dac.bits is not None or math.isfinite(r_in) or need_norms:
            step = r_in / (2 ** (spec.dac.bits - 1) - 1) if spec.dac.bits is not None else 0.0
            xq = np.empty_like(x)
            K.dac_kernel(x, xq, float(r_in), float(step), sq, ab)
        else:
            xq = x
        y = xq @ self.w_eff[:-1]
        if need_norms:
            noise_var_rows = (spec.read_noise.weight_std * self.w_max) ** 2 * sq
        else:
            noise_var_rows = np.zeros(0, np.float64)
        r_out = spec.adc.range
        out_sd = spec.read_noise.output_std * (r_out if math.isfinite(r_out) else 1.0)
        adc_step = r_out / (2**spec.adc.bits - 1) if spec.adc.bits is not None else 0.0
        K.periphery_kernel(y, self.w_eff[-1], float(spec.bias_level), noise_var_rows, float(out_sd**2),
                           np.uint64(seed), self.soft, self.gain, self.offset, self.curv, self.sat,
                           float(r_out), float(adc_step))
        # Cell energy follows V^2: the drive is sum (x / r)^2 over the batch.
        if xq is x:  # no converter: the drive is only needed when cells cost energy
            drive = float(np.square(x, dtype=np.float64).sum()) if spec.energy.v_read > 0 else 0.0
        else:
            drive = float(sq.sum()) / (r_in**2 if math.isfinite(r_in) else 1.0)
        return y, drive

    def program(self, delta: np.ndarray, now: float, seed: int) -> tuple[int, int, int]:
        """Apply a requested change; returns (pulses, rows touched, pulses of the slowest row)."""
        if self.exact:
            n, touched = K.add_exact(self.w_eff, delta, self.spec.energy.v_read > 0, self.row_gsum,
                                     float(self.w_max))
            if n < 0:
                raise ValueError("delta would push weights beyond the float32 range (|w| > 3e38); nothing was changed")
            return int(n), int(touched), int(n > 0)
        self.ensure_current(now)
        rows = self.n_in + 1
        row_pulses = np.zeros(rows, np.int64)
        row_max = np.zeros(rows, np.int64)
        p = self.spec.programming
        K.program_kernel(delta, self.g, self.t_prog, self.nu, self.params, self.endurance, self.wear,
                         self.stuck, self.w_eff, float(now), float(self.pulse_step_w), float(self.w_max),
                         int(p.max_pulses), float(p.pulse_std), bool(self.spec.drift.enabled), self.dp,
                         np.uint64(seed), row_pulses, row_max)
        total = int(row_pulses.sum())
        if total:
            self.t_prog_max = float(now)
            if not self.spec.drift.enabled:
                # Without drift no refresh ever renews the row sums the read-energy model uses.
                self.row_gsum[:] = self.g.sum(axis=(0, 2), dtype=np.float64)
        return total, int(np.count_nonzero(row_pulses)), int(row_max.sum())

    # -- inspection and persistence -------------------------------------------------------------
    def effective_weights(self, now: float) -> np.ndarray:
        """Exact effective weights at ``now`` (float32 (n_in + 1, n_out)), without caching."""
        if self.exact or not self.spec.drift.enabled:
            return self.w_eff.copy()
        out = np.empty_like(self.w_eff)
        K.refresh_kernel(self.g, self.t_prog, self.nu, float(now), float(self.dp[K.D_T0]),
                         float(self.w_max), out, np.empty(self.n_in + 1, np.float64))
        return out

    def state(self) -> dict[str, Any]:
        """Arrays and scalars that, with the spec, restore this layer exactly."""
        arrays = {k: getattr(self, k) for k in _STATE_ARRAYS if hasattr(self, k)}
        arrays.update(gain=self.gain, offset=self.offset, curv=self.curv, sat=self.sat)
        scalars = {"t_eval": self.t_eval, "t_prog_max": self.t_prog_max}
        return {"arrays": arrays, "scalars": scalars}

    @classmethod
    def from_state(cls, spec: ChipSpec, n_in: int, n_out: int, state: dict[str, Any]) -> "Crossbar":
        """Rebuild a layer saved with :meth:`state`."""
        self = cls.__new__(cls)
        self._derive(spec, n_in, n_out)
        layout = state_layout(self.exact, self.n_in, self.n_out)
        arrays = dict(state["arrays"])
        # Chips saved before failures with time existed lack their two arrays; the loader
        # redraws them from the chip's seed (``needs_failures``), which gives the same values.
        self.needs_failures = not self.exact and not ({"fail_at", "fail_on"} & set(arrays))
        if self.needs_failures:
            for k in ("fail_at", "fail_on"):
                layout.pop(k)
        if set(arrays) != set(layout):
            raise ValueError(f"saved layer holds arrays {sorted(arrays)}, expected {sorted(layout)}")
        for k, (shape, dtype) in layout.items():
            v = arrays[k]
            if v.shape != shape or v.dtype != dtype:
                raise ValueError(f"saved array {k!r} is {v.dtype}{v.shape}, expected {np.dtype(dtype)}{shape}")
            setattr(self, k, np.ascontiguousarray(v))
        scalars = state["scalars"]
        if not isinstance(scalars, dict) or set(scalars) != {"t_eval", "t_prog_max"}:
            raise ValueError(f"saved scalars {scalars!r} are not t_eval and t_prog_max")
        for k, v in scalars.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"saved {k} {v!r} is not a finite time >= 0")
        self.t_eval = float(scalars["t_eval"])
        self.t_prog_max = float(scalars["t_prog_max"])
        if not self.exact and not self.needs_failures:
            self._next_failure()
        return self

    def check_values(self, clock_s: float) -> None:
        """ValueError naming the first array of a loaded layer whose values this layer could
        never have held at chip time ``clock_s`` (NaN, out of range, flags other than 0/1)."""
        f32 = np.float32

        def need(ok: Any, name: str, what: str) -> None:
            if not bool(np.all(ok)):
                raise ValueError(f"saved array {name!r} holds values that are not {what}")

        if self.t_eval > clock_s or self.t_prog_max > clock_s:
            raise ValueError(f"saved times t_eval={self.t_eval}, t_prog_max={self.t_prog_max} lie after "
                             f"the chip's clock {clock_s}")
        need(np.isfinite(self.w_eff), "w_eff", "finite")
        need(np.isfinite(self.row_gsum) & (self.row_gsum >= 0), "row_gsum", "finite and >= 0")
        if self.soft:
            need(np.isfinite(self.gain) & (self.gain > 0), "gain", "finite and > 0")
            need(np.isfinite(self.offset), "offset", "finite")
            need((self.curv >= f32(-0.45)) & (self.curv <= f32(2.0)), "curv", "within [-0.45, 2]")
            need(np.isfinite(self.sat) & (self.sat > 0), "sat", "finite and > 0")
        else:  # a ReLU neuron has no parameters of its own
            need(self.gain == 1, "gain", "1 (ReLU neurons)")
            need(self.offset == 0, "offset", "0 (ReLU neurons)")
            need(self.curv == 0, "curv", "0 (ReLU neurons)")
            need(self.sat == np.inf, "sat", "inf (ReLU neurons)")
        if self.exact:
            return
        g_sat = self.params[K.P_GSAT]
        need((g_sat >= f32(0.5)) & (g_sat <= f32(1.5)), "params", "device saturation levels within [0.5, 1.5]")
        for k, name in ((K.P_STEP_UP, "step up"), (K.P_STEP_DOWN, "step down")):
            step = self.params[k]
            need(np.isfinite(step) & (step >= 0), "params", f"{name} sizes finite and >= 0")
        need(np.isfinite(self.params[K.P_XI]), "params", "finite drift draws")
        need((self.g >= 0) & (self.g <= g_sat), "g", "conductances within [0, the device's saturation level]")
        need(np.isfinite(self.nu) & (self.nu >= 0), "nu", "finite drift exponents >= 0")
        need((self.t_prog >= 0) & (self.t_prog <= clock_s), "t_prog", "times between 0 and the chip's clock")
        need((self.stuck == 0) | (self.stuck == 1), "stuck", "flags 0 or 1")
        need(~np.isnan(self.endurance) & (self.endurance > 0), "endurance", "pulse counts > 0")
        if not self.needs_failures:
            need(~np.isnan(self.fail_at) & (self.fail_at > 0), "fail_at", "times > 0")
            need((self.fail_on == 0) | (self.fail_on == 1), "fail_on", "flags 0 or 1")
