"""Per-layer parameters derived from a spec: the vectors the kernels index and the state layout.

Pure functions of a :class:`~devices.spec.ChipSpec` (and a layer's shape): what the numba kernels
of :mod:`devices._kernels` and :mod:`devices._pulses` read, and the shape and dtype of every
array a layer saves.
"""

from __future__ import annotations

import math

import numpy as np

from . import _devstate as S
from .spec import ChipSpec

__all__ = ["drift_parameters", "nu_step", "programming_parameters", "read_noise_parameters", "state_layout",
           "state_bytes"]


def state_layout(exact: bool, n_in: int, n_out: int) -> dict[str, tuple[tuple[int, ...], type]]:
    """Shape and dtype of every array of a layer's saved state (``Crossbar.state``).

    ``exact`` layers hold only the weights and the neurons; pulsed layers hold the
    compact device state of :mod:`devices._pulses` for both devices of each pair, shape
    ``(2, n_in + 1, n_out)``, the cached effective weights and their row and column sums.
    Sizes are Python ints, so the layout of a layer too large to build can still be
    measured (``state_bytes``).
    """
    rows, cols = int(n_in) + 1, int(n_out)
    dev = (2, rows, cols)
    layout: dict[str, tuple[tuple[int, ...], type]] = {
        "w_eff": ((rows, cols), np.float32), "row_gsum": ((rows,), np.float64),
        "gain": ((cols,), np.float32), "offset": ((cols,), np.float32),
        "curv": ((cols,), np.float32), "sat": ((cols,), np.float32)}
    if not exact:
        layout.update(row_var=((rows,), np.float64), col_var=((cols,), np.float64),
                      g=(dev, np.float32), t_rel=(dev, np.float32), nu=(dev, np.uint16),
                      life=(dev, np.uint32))
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


def nu_step(spec: ChipSpec) -> float:
    """Drift exponent per uint16 step: the largest exponent the laws can give (the clip
    bounds plus 3.5 sigma, beyond the normal draws' 3.46 sigma tails) over 65535."""
    d = spec.drift
    return (d.mu_max + 3.5 * d.sigma_max) / 65535.0 if d.enabled else 0.0


def programming_parameters(spec: ChipSpec) -> np.ndarray:
    """The programming spec as the float64 vector the kernels index (``_pulses.PP_*``)."""
    p, c = spec.programming, spec.conductance
    span_us = c.g_max_us - c.g_min_us
    pp = np.zeros(S.PP_LEN, dtype=np.float64)
    pp[[S.PP_STEP, S.PP_STEP_DTOD, S.PP_UD, S.PP_UD_DTOD, S.PP_GMAX_DTOD, S.PP_PULSE_STD, S.PP_REFRESH_AT,
        S.PP_RESET_LEVEL, S.PP_RESET_STD, S.PP_NU_STEP, S.PP_NU_REDRAW, S.PP_VERIFY_READS, S.PP_VE_N]] = [
        p.step, p.step_dtod, p.up_down, p.up_down_dtod, c.g_max_dtod, p.pulse_std, p.refresh_at,
        p.reset_level, p.reset_std, nu_step(spec), float(spec.drift.nu_redraw), p.verify_reads,
        len(p.verify_error_us)]
    pp[S.PP_VE0:S.PP_VE0 + len(p.verify_error_us)] = np.asarray(p.verify_error_us) / span_us
    return pp


def read_noise_parameters(spec: ChipSpec) -> np.ndarray:
    """The per-device read-noise law as the float64 vector the kernels index (``_pulses.RP_*``)."""
    r, c = spec.read_noise, spec.conductance
    return np.array([1.0 if r.device_law == "pcm_1f" else 0.0, r.q_s, r.q_exponent, r.q_floor, r.q_max,
                     r.t_read_s, c.g_min_us / c.g_max_us, (c.g_max_us - c.g_min_us) / c.g_max_us],
                    dtype=np.float64)


