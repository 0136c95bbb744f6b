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
from . import _wires
from . import _program
from . import _pulses as P
from . import _devstate as S
from .parameters import drift_parameters, nu_step, programming_parameters, read_noise_parameters, state_layout
from .spec import ChipSpec

__all__ = ["Crossbar"]

_STATE_ARRAYS = ("w_eff", "row_gsum", "row_var", "col_var", "g", "t_rel", "nu", "life")
_SCALARS = ("t_eval", "t_prog_max", "t_base", "fab_key", "fail_key", "pulses_since")
#: Programming times are stored as float32 offsets from ``t_base``; the base moves up to the
#: chip's clock once it lags by this much (seconds), so a fresh device's age keeps a float32
#: resolution of about 0.01 s (its drift over t0 = 20 s then changes by under 1e-4).
REBASE_S = 1.0e5
#: The read-noise sums and the drift of devices not touched since the last refresh are
#: recomputed once this many pulses per device have been applied since then.
NOISE_STALE_PULSES = 8.0


class Crossbar:
    """Hidden state and physics of one ``(n_in + 1) x n_out`` layer.

    In ``exact`` programming mode only ``w_eff`` exists (a float weight matrix); in
    ``pulsed`` mode every weight is a pair of devices in the compact state of
    :mod:`devices._pulses` (conductance, programming time, drift exponent, pulses left),
    and ``w_eff`` caches the effective weights at time ``t_eval``.
    """

    def __init__(self, spec: ChipSpec, n_in: int, n_out: int, fab: np.random.Generator) -> None:
        self._derive(spec, n_in, n_out)
        rows = self.n_in + 1
        c = spec.conductance
        self.t_eval = 0.0
        self.t_prog_max = 0.0
        self.t_base = 0.0
        self.pulses_since = 0.0
        self.fail_key = 0

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
        """Draw the key of the devices' failure times from the chip's ageing stream.

        A separate stream keeps the fabrication draws of every layer unchanged whether or
        not the spec has failures with time.
        """
        if self.exact:
            return
        self.fail_key = int(age.integers(0, 2**63))
        self._next_failure()

    def failure_times(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Each device's failure time (s, inf if never), whether it then sticks high, and the
        earliest failure time of a device not stuck yet."""
        f = self.spec.faults
        fail_at = np.empty(self.g.shape, np.float64)
        fail_on = np.empty(self.g.shape, np.int8)
        median = -1.0 if f.failure_median_s is None else float(f.failure_median_s)
        first = S.failure_times(np.uint64(self.fail_key), self.life, median, float(f.failure_dtod),
                                float(f.failure_stuck_on_share), fail_at, fail_on)
        return fail_at, fail_on, float(first)

    def _next_failure(self) -> None:
        self.next_fail = self.failure_times()[2] if self.spec.faults.failure_median_s is not None else math.inf

    def _derive(self, spec: ChipSpec, n_in: int, n_out: int) -> None:
        """Set the quantities that follow from the spec and the shape alone."""
        self.spec = spec
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.w_max = spec.conductance.weight_range_fan_in / math.sqrt(self.n_in + 1)
        self.exact = spec.programming.mode == "exact"
        self.pulse_step_w = spec.programming.step * self.w_max / 2.0
        self.dp = drift_parameters(spec)
        self.pp = programming_parameters(spec)
        self.rp = read_noise_parameters(spec)
        self.nu_step = nu_step(spec)
        self.soft = spec.neuron.family == "soft"
        self.noise_cols = np.zeros(0, np.float32)

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

    def device_constants(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every device's saturation level and up and down step (float32 (2, rows, cols) each)."""
        shape = self.g.shape
        out = tuple(np.empty(shape, np.float32) for _ in range(3))
        S.device_constants(np.uint64(self.fab_key), self.pp, *out)
        return out

    def _fabricate_devices(self, fab: np.random.Generator, w0: np.ndarray) -> None:
        c, f = self.spec.conductance, self.spec.faults
        shape = (2, self.n_in + 1, self.n_out)
        self.fab_key = int(fab.integers(0, 2**63))
        self.g = np.empty(shape, dtype=np.float32)
        self.life = np.empty(shape, dtype=np.uint32)
        g_sat = self.device_constants()[0]
        span = np.abs(w0) / self.w_max
        if c.mapping == "one_per_sign":
            low = np.zeros_like(span)
        else:  # split around the common mode; pairs that would go below 0 are lifted
            low = np.maximum(c.init_common_mode - 0.5 * span, 0.0)
        g = np.empty(shape, dtype=np.float64)
        g[0] = np.where(w0 > 0, low + span, low)
        g[1] = np.where(w0 > 0, low, low + span)
        g = np.minimum(g, g_sat)
        fate = fab.random(shape)
        stuck_on = fate < f.stuck_on_prob
        stuck_off = (fate >= f.stuck_on_prob) & (fate < f.stuck_on_prob + f.stuck_off_prob)
        g[stuck_on] = g_sat[stuck_on]
        g[stuck_off] = 0.0
        self.g[:] = g
        if f.endurance_pulses is None:
            self.life[:] = S.UNLIMITED
        else:
            life = f.endurance_pulses * np.exp(f.endurance_dtod * fab.standard_normal(shape))
            self.life[:] = np.clip(np.rint(life), 1, int(S.UNLIMITED) - 1).astype(np.uint32)
        stuck = stuck_on | stuck_off
        self.life[stuck] = 0
        self.t_rel = np.zeros(shape, dtype=np.float32)
        self.nu = np.zeros(shape, dtype=np.uint16)
        self.w_eff = np.empty(shape[1:], dtype=np.float32)
        self.row_var = np.zeros(shape[1], dtype=np.float64)
        self.col_var = np.zeros(shape[2], dtype=np.float64)
        if self.spec.drift.enabled:
            xi = fab.standard_normal(shape)
            if not self.spec.drift.nu_redraw:  # the device's own draw for life
                xi = np.empty(self.g.shape, np.float64)
                S.fixed_xi(np.uint64(self.fab_key), xi)
            nu = self._exponents(self.g, xi)
            nu[stuck] = 0.0
            if self.nu_step > 0:  # else every law is clipped to 0: nu stays 0
                self.nu[:] = np.minimum(np.rint(nu / self.nu_step), 65535).astype(np.uint16)

    def _exponents(self, g: np.ndarray, xi: np.ndarray) -> np.ndarray:
        d = self.spec.drift
        lg = np.log(np.maximum(g.astype(np.float64), 1e-6))
        mu = np.clip(d.mu_log_coeff * lg + d.mu_offset, d.mu_min, d.mu_max)
        sg = np.clip(d.sigma_log_coeff * lg + d.sigma_offset, d.sigma_min, d.sigma_max)
        return np.abs(mu + sg * xi)

    # -- time ---------------------------------------------------------------------------------
    def refresh(self, now: float) -> None:
        """Recompute the effective weights and read-noise sums at time ``now`` (pulsed mode only)."""
        if self.exact:
            return
        self._weights_at(now, self.w_eff, self.row_gsum, self.row_var, self.col_var)
        self.t_eval = float(now)
        self.pulses_since = 0.0
        self._noise_summary()

    def _weights_at(self, now: float, w_eff: np.ndarray, row_gsum: np.ndarray, row_var: np.ndarray,
                    col_var: np.ndarray, wires: bool = True) -> None:
        """Fill the effective weights (drift, then the wires' IR drop unless ``wires`` is false) and
        the row and column sums at ``now``."""
        spec_wires = self.spec.wires
        use_wires = wires and spec_wires.segment_ohm > 0
        g_now = np.empty(self.g.shape if use_wires else (0, 0, 0), np.float32)
        P.refresh_kernel(self.g, self.t_rel, self.nu, float(self.nu_step), float(self.t_base), float(now),
                         self.dp, self.rp, float(self.w_max), w_eff, row_gsum, row_var, col_var, g_now)
        if use_wires:
            wires = spec_wires
            c = self.spec.conductance
            span = c.g_max_us - c.g_min_us
            lift, r = c.g_min_us / span, wires.segment_ohm * span * 1e-6
            _wires.ir_pair_weights(g_now, lift, r, wires.tile_rows, wires.tile_cols, float(self.w_max), w_eff)

    def _noise_summary(self) -> None:
        total = float(self.row_var.sum())
        self.noise_cols = (self.col_var / total).astype(np.float32) if total > 0 else np.zeros(0, np.float32)

    def _rebase(self, now: float) -> None:
        """Move ``t_base`` up to ``now`` once it lags by ``REBASE_S`` (keeps float32 ages precise)."""
        if now - self.t_base > REBASE_S:
            shift = now - self.t_base
            # Offsets below -1e38 (devices programmed that long before) stay there: their age is
            # then only known to exceed 1e38 s, where drift and noise no longer change.
            moved = self.t_rel.astype(np.float64) - shift
            self.t_rel[:] = np.maximum(moved, -1e38).astype(np.float32)
            self.t_base = float(now)

    def ensure_current(self, now: float) -> None:
        """Refresh the cached weights if drift since ``t_eval`` may exceed the tolerance, or if
        enough pulses have been applied since that the read-noise sums may be stale."""
        if self.exact or now < self.t_eval:
            return
        if self.pulses_since > NOISE_STALE_PULSES * self.g.size:
            self.refresh(now)
            return
        # Without drift the weights stay, but IBM's read noise still grows with the devices' age.
        if (not self.spec.drift.enabled and self.rp[S.RP_LAW] == 0.0) or now == self.t_eval:
            return
        age = self.t_eval - self.t_prog_max + self.spec.drift.t0_s
        if now - self.t_eval > self.spec.drift.refresh_rel * age:
            self.refresh(now)

    def age(self, now: float) -> int:
        """Stick every working device whose failure time has come; returns how many failed."""
        if self.exact or now < self.next_fail:
            return 0
        fail_at, fail_on, _ = self.failure_times()
        hit = (fail_at <= now) & (self.life != 0)
        n = int(np.count_nonzero(hit))
        if n:
            on = hit & (fail_on != 0)
            self.g[on] = self.device_constants()[0][on]
            self.g[hit & ~on] = 0.0
            self.nu[hit] = 0
            self.life[hit] = 0
            self.refresh(now)
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
        per_device = self.noise_cols.size > 0
        need_norms = spec.read_noise.weight_std > 0.0
        if spec.dac.bits is not None or math.isfinite(r_in) or need_norms:
            step = r_in / (2 ** (spec.dac.bits - 1) - 1) if spec.dac.bits is not None else 0.0
            xq = np.empty_like(x)
            K.dac_kernel(x, xq, float(r_in), float(step), sq, ab)
        else:
            xq = x
        y = xq @ self.w_eff[:-1]
        if need_norms:
            noise_var_rows = (spec.read_noise.weight_std * self.w_max) ** 2 * (sq + spec.bias_level**2)
        else:
            noise_var_rows = np.zeros(0, np.float64)
        if per_device:
            dev_rows = np.square(xq, dtype=np.float32) @ self.row_var[:-1].astype(np.float32)
            dev_rows = dev_rows.astype(np.float64) + spec.bias_level**2 * self.row_var[-1]
        else:
            dev_rows = np.zeros(0, np.float64)
        r_out = spec.adc.range
        out_sd = spec.read_noise.output_std * (r_out if math.isfinite(r_out) else 1.0)
        adc_step = r_out / (2**spec.adc.bits - 1) if spec.adc.bits is not None else 0.0
        K.periphery_kernel(y, self.w_eff[-1], float(spec.bias_level), noise_var_rows, dev_rows, self.noise_cols,
                           float(out_sd**2), np.uint64(seed), self.soft, self.gain, self.offset, self.curv,
                           self.sat, float(r_out), float(adc_step))
        # Cell energy follows V^2: the drive is sum (x / r)^2 over the batch.
        if xq is x:  # no converter: the drive is only needed when cells cost energy
            drive = float(np.square(x, dtype=np.float64).sum()) if spec.energy.v_read > 0 else 0.0
        else:
            drive = float(sq.sum()) / (r_in**2 if math.isfinite(r_in) else 1.0)
        return y, drive

    def program(self, delta: np.ndarray, now: float, seed: int) -> tuple[int, int, int, int]:
        """Apply a requested change; returns (pulses, rows touched, pulses of the slowest row,
        verify reads)."""
        if self.exact:
            n, touched = K.add_exact(self.w_eff, delta, self.spec.energy.v_read > 0, self.row_gsum,
                                     float(self.w_max))
            if n < 0:
                raise ValueError("delta would push weights beyond the float32 range (|w| > 3e38); nothing was changed")
            return int(n), int(touched), int(n > 0), 0
        return self._pulsed(delta, now, seed, verify=False)

    def program_verify(self, target: np.ndarray, now: float, seed: int) -> tuple[int, int, int, int]:
        """Program-and-verify every weight to ``target``; returns as :meth:`program`."""
        if self.exact:
            self.w_eff[:] = target
            if self.spec.energy.v_read > 0:
                self.row_gsum[:] = np.abs(self.w_eff).sum(axis=1, dtype=np.float64) / self.w_max
            n = int(np.count_nonzero(target))
            return n, int(np.count_nonzero(np.any(target != 0, axis=1))), int(n > 0), 0
        return self._pulsed(target, now, seed, verify=True)

    def _pulsed(self, values: np.ndarray, now: float, seed: int, verify: bool) -> tuple[int, int, int, int]:
        self.ensure_current(now)
        self._rebase(now)
        rows = self.n_in + 1
        row_pulses = np.zeros(rows, np.int64)
        row_max = np.zeros(rows, np.int64)
        row_verify = np.zeros(rows, np.int64)
        p, c = self.spec.programming, self.spec.conductance
        set_only = p.direction == "set_only"
        drift_on = bool(self.spec.drift.enabled)
        state = (self.g, self.t_rel, self.nu, self.life, self.w_eff)
        rest = (np.uint64(self.fab_key), float(self.t_base), float(now), self.dp, self.pp, self.rp, set_only, drift_on)
        if verify:
            P.verify_kernel(values, *state, *rest, c.mapping == "one_per_sign", float(c.init_common_mode),
                            float(self.w_max), np.uint64(seed), row_pulses, row_max, row_verify)
        else:
            _program.program_kernel(values, *state, self.row_gsum, *rest, float(self.pulse_step_w), float(self.w_max),
                             int(p.max_pulses), np.uint64(seed), row_pulses, row_max, row_verify)
        total = int(row_pulses.sum())
        if total:
            self.t_prog_max = float(now)
            self.pulses_since += total
            if verify:  # every weight was rewritten: the cache starts afresh
                self.refresh(now)
        return total, int(np.count_nonzero(row_pulses)), int(row_max.sum()), int(row_verify.sum())

    # -- inspection and persistence -------------------------------------------------------------
    def effective_weights(self, now: float, wires: bool = True) -> np.ndarray:
        """Exact effective weights at ``now`` (float32 (n_in + 1, n_out)), without caching;
        ``wires=False``: those of the devices alone, without the wires' IR drop."""
        if self.exact:
            return self.w_eff.copy()
        out = np.empty_like(self.w_eff)
        rows = self.n_in + 1
        self._weights_at(now, out, np.empty(rows, np.float64), np.empty(rows, np.float64),
                         np.empty(self.n_out, np.float64), wires=wires)
        return out

    def state(self) -> dict[str, Any]:
        """Arrays and scalars that, with the spec, restore this layer exactly."""
        arrays = {k: getattr(self, k) for k in _STATE_ARRAYS if hasattr(self, k)}
        arrays.update(gain=self.gain, offset=self.offset, curv=self.curv, sat=self.sat)
        scalars = {"t_eval": self.t_eval, "t_prog_max": self.t_prog_max}
        if not self.exact:
            scalars.update(t_base=self.t_base, fab_key=self.fab_key, fail_key=self.fail_key,
                           pulses_since=self.pulses_since)
        return {"arrays": arrays, "scalars": scalars}

    @classmethod
    def from_state(cls, spec: ChipSpec, n_in: int, n_out: int, state: dict[str, Any]) -> "Crossbar":
        """Rebuild a layer saved with :meth:`state`."""
        self = cls.__new__(cls)
        self._derive(spec, n_in, n_out)
        layout = state_layout(self.exact, self.n_in, self.n_out)
        arrays = dict(state["arrays"])
        if set(arrays) != set(layout):
            raise ValueError(f"saved layer holds arrays {sorted(arrays)}, expected {sorted(layout)}")
        for k, (shape, dtype) in layout.items():
            v = arrays[k]
            if v.shape != shape or v.dtype != dtype:
                raise ValueError(f"saved array {k!r} is {v.dtype}{v.shape}, expected {np.dtype(dtype)}{shape}")
            setattr(self, k, np.ascontiguousarray(v))
        scalars = state["scalars"]
        names = set(_SCALARS) if not self.exact else {"t_eval", "t_prog_max"}
        if not isinstance(scalars, dict) or set(scalars) != names:
            raise ValueError(f"saved scalars {scalars!r} are not {sorted(names)}")
        for k, v in scalars.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"saved {k} {v!r} is not a finite number >= 0")
        for k in ("fab_key", "fail_key"):
            if k in scalars and (not isinstance(scalars[k], int) or scalars[k] >= 2**63):
                raise ValueError(f"saved {k} {scalars[k]!r} is not an integer key below 2**63")
        for k, v in scalars.items():
            setattr(self, k, int(v) if k.endswith("_key") else float(v))
        if not self.exact:
            self._noise_summary()
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
        if self.t_base > clock_s:
            raise ValueError(f"saved t_base={self.t_base} lies after the chip's clock {clock_s}")
        g_sat = self.device_constants()[0]
        need((self.g >= 0) & (self.g <= g_sat), "g", "conductances within [0, the device's saturation level]")
        need(np.isfinite(self.row_var) & (self.row_var >= 0), "row_var", "finite and >= 0")
        need(np.isfinite(self.col_var) & (self.col_var >= 0), "col_var", "finite and >= 0")
        t = self.t_base + self.t_rel.astype(np.float64)
        # Offsets from t_base are float32: after a rebase, a time is known to its float32
        # spacing at the size of the shift (4 s a year after fabrication).
        slack = 1.0 + max(self.t_base, clock_s) * 2.0**-22
        need(np.isfinite(self.t_rel) & (t >= -slack) & (t <= clock_s + slack), "t_rel",
             "programming times between 0 and the chip's clock")
        need((self.life != 0) | (self.nu == 0), "nu", "0 for stuck devices")

