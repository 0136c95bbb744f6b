"""A PCM chip measured against IBM's PCM statistical model, through the chip's own operations.

:func:`pcm_fidelity` deploys weights with ``program_verify``, lets time pass with ``wait`` and
measures with ``read`` (plus :func:`devices.inspect` for the as-programmed conductances and
drift exponents), then sets each quantity beside the reference statistics of aihwkit's
``PCMLikeNoiseModel`` (a JSON file of 200,000 devices per conductance; the project's tests use
``reference/pcm-reference-stats.json``).

A weight ``w = f w_max`` (``f = G / 25 uS``) sits on its pair as ``G`` on the positive device and a
RESET device on the negative one, so the pair's reference is built from the file's per-device
statistics at ``G`` and at 0 uS: mean ``m_G - m_0``, spread and read noise ``sqrt(s_G^2 +
s_0^2)``.  The periphery is made transparent for the measurement (no converters, ReLU
neurons, no output noise, ideal wires, no faults); the devices are the spec's.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from .chip import make_chip
from .inspection import inspect
from .presets import variant
from .spec import ChipSpec

__all__ = ["pcm_fidelity", "TIMES_S", "transparent"]

#: Times after programming at which the reference file has statistics.
TIMES_S = {"1h": 3600.0, "1day": 86400.0, "1year": 31536000.0}


def transparent(spec: ChipSpec | str) -> ChipSpec:
    """``spec`` with a periphery that adds nothing (no converters, ReLU neurons, no output
    noise, ideal wires, no faults), for measuring its devices."""
    return variant(spec, dac={"bits": None, "range": math.inf}, adc={"bits": None, "range": math.inf},
                   neuron={"family": "relu", "gain_dtod": 0.0, "offset_dtod": 0.0, "curvature_mean": 0.0,
                           "curvature_dtod": 0.0, "saturation_mean": 1.0, "saturation_dtod": 0.0},
                   read_noise={"output_std": 0.0}, wires={"segment_ohm": 0.0},
                   faults={"stuck_on_prob": 0.0, "stuck_off_prob": 0.0, "endurance_pulses": None,
                           "failure_median_s": None})


def pcm_fidelity(reference: str | os.PathLike, spec: ChipSpec | str = "pcm", g_us: tuple[float, ...] = (2.5, 20.0),
                 rows: int = 200, cols: int = 200, reads: int = 8, seed: int = 1) -> list[dict[str, Any]]:
    """Measure ``spec``'s devices at each conductance of ``g_us`` and set them beside the reference.

    Returns one row per quantity: ``{"g_us", "quantity", "time", "measured", "reference",
    "ratio"}`` with conductances in microsiemens.  Quantities: ``programming error`` (std of
    the as-programmed conductance after ``program_verify``), ``nu mean``, ``nu std``, and at
    each of :data:`TIMES_S`: ``weight mean`` and ``weight spread`` (one read of each pair),
    ``read noise`` (std of repeated reads of one pair).  ``rows x cols`` pairs are measured
    per conductance, each read ``reads`` times.
    """
    with open(reference) as fh:
        ref = json.load(fh)
    per_g = {float(e["g_target_uS"]): e for e in ref["per_g_target"]}
    zero = ref["extra_g_target_0_uS_not_in_requested_grid"]
    spec = transparent(spec)
    g_max = spec.conductance.g_max_us
    out: list[dict[str, Any]] = []

    def row(g: float, quantity: str, time: str, measured: float, reference: float) -> None:
        out.append({"g_us": g, "quantity": quantity, "time": time, "measured": float(measured),
                    "reference": float(reference), "ratio": float(measured / reference)})

    for g in g_us:
        if g not in per_g:
            raise ValueError(f"the reference has no statistics at {g} uS; it has {sorted(per_g)}")
        r = per_g[g]
        chip = make_chip(spec, (rows, cols), seed)
        w_max = chip.info.weight_range[0]
        target = np.full((rows + 1, cols), g / g_max * w_max, np.float32)
        target[-1] = 0.0  # the bias row holds weight 0: its noise is measured and taken out below
        chip.program_verify(0, target)
        st = inspect(chip).layers[0]
        row(g, "programming error", "0", np.std(st.g[0, :-1] * g_max - g, ddof=1),
            r["programming_noise"]["std_g_prog_minus_g_target_uS"])
        nu = st.nu[0, :-1].astype(np.float64)
        row(g, "nu mean", "0", nu.mean(), r["drift_coefficient_nu"]["mean"])
        row(g, "nu std", "0", nu.std(ddof=1), r["drift_coefficient_nu"]["std"])
        eye = np.eye(rows, dtype=np.float32)
        none = np.zeros((rows, rows), np.float32)
        for label, t in TIMES_S.items():
            chip.wait(t - chip.clock_s)
            with_row = np.stack([chip.read(0, eye) for _ in range(reads)]).astype(np.float64)
            bias_only = np.stack([chip.read(0, none) for _ in range(reads)]).astype(np.float64)
            to_us = g_max / w_max
            w = (with_row - bias_only.mean(axis=(0, 1))) * to_us
            a, z = r["after_drift_and_read_noise"][label], zero["after_drift_and_read_noise"][label]
            row(g, "weight mean", label, w[0].mean(), a["mean_g_t_uS"] - z["mean_g_t_uS"])
            row(g, "weight spread", label, w[0].std(ddof=1), math.hypot(a["std_g_t_uS"], z["std_g_t_uS"]))
            noise_var = np.var(with_row, axis=0, ddof=1).mean() - np.var(bias_only, axis=0, ddof=1).mean()
            row(g, "read noise", label, math.sqrt(max(noise_var, 0.0)) * to_us,
                math.hypot(a["read_noise_alone"]["std_uS"], z["read_noise_alone"]["std_uS"]))
    return out
