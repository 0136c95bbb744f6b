"""The ``pcm`` preset against IBM's PCM statistical model (aihwkit 1.2.0 ``PCMLikeNoiseModel``,
200,000 devices per conductance; ``tests/data/pcm-reference-stats.json`` says how it was made).

Every quantity is measured through the chip's operations (``program_verify``, ``wait``,
``read``; ``inspect`` for the as-programmed state) and must lie within 10 % of the reference.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devices.fidelity import pcm_fidelity

REFERENCE = Path(__file__).parent / "data" / "pcm-reference-stats.json"


@pytest.fixture(scope="module")
def rows():
    return pcm_fidelity(REFERENCE, "pcm", g_us=(2.5, 20.0), rows=200, cols=200, reads=8, seed=1)


def test_every_quantity_is_measured(rows):
    quantities = {(r["g_us"], r["quantity"], r["time"]) for r in rows}
    for g in (2.5, 20.0):
        for q in ("programming error", "nu mean", "nu std"):
            assert (g, q, "0") in quantities
        for t in ("1h", "1day", "1year"):
            for q in ("weight mean", "weight spread", "read noise"):
                assert (g, q, t) in quantities


@pytest.mark.parametrize("g_us", [2.5, 20.0])
@pytest.mark.parametrize("quantity", ["programming error", "nu mean", "nu std", "weight mean", "weight spread",
                                      "read noise"])
def test_pcm_matches_ibm_within_ten_percent(rows, g_us, quantity):
    mine = [r for r in rows if r["g_us"] == g_us and r["quantity"] == quantity]
    assert mine
    off = {r["time"]: round(r["ratio"], 3) for r in mine if abs(r["ratio"] - 1.0) > 0.10}
    assert not off, f"{quantity} at {g_us} uS differs from the reference by more than 10 % (ratios {off})"


def test_the_old_constant_read_noise_would_fail():
    """The check can fail: the preset's former read noise (a constant 0.0175 w_max per weight,
    no per-device law) is off by more than 10 % at most conductances and times (it only
    crosses IBM's law near 20 uS after a year)."""
    import devices

    old = devices.variant("pcm", read_noise={"device_law": "none", "weight_std": 0.0175})
    rows = pcm_fidelity(REFERENCE, old, g_us=(2.5, 20.0), rows=60, cols=60, reads=6, seed=2)
    ratios = [r["ratio"] for r in rows if r["quantity"] == "read noise"]
    assert len(ratios) == 6 and sum(abs(x - 1.0) > 0.10 for x in ratios) >= 4, ratios


def _exact_weight_variance(layer, now):
    """Per-weight read-noise variance from IBM's law, device by device (numpy, float64)."""
    import numpy as np

    rp, t0 = layer.spec.read_noise, layer.spec.drift.t0_s
    nu = layer.nu.astype(np.float64) * layer.nu_step
    v = np.zeros(layer.w_eff.shape)
    for k in range(2):
        age = np.maximum(now - (layer.t_base + layer.t_rel[k].astype(np.float64)), 0.0)
        g = layer.g[k].astype(np.float64)
        g_now = g * ((age + t0) / t0) ** -nu[k]
        q = np.minimum(rp.q_s / np.maximum(np.where(g > 0, g, 1e-300) ** rp.q_exponent, rp.q_floor), rp.q_max)
        tf = np.sqrt(np.log((age + t0 + rp.t_read_s) / (2 * rp.t_read_s)))
        v += np.where(g_now > 0, g_now * q * tf * layer.w_max, 0.0) ** 2
    return v


def test_the_product_form_of_device_noise_on_trained_like_weights():
    """The chip applies per-device noise as row sums times column sums over the total.  On
    weights like a trained layer's (normal, spread 1/sqrt(fan-in)) and inputs like MNIST's
    (20 % of the rows on), the noise std of 90 % of the outputs is within 8 % of the exact sum
    over the driven devices; on a block-structured array the outputs of its empty half get
    noticeably too little (the form's known limit: 5 % of them below 0.85 of the exact std)."""
    import numpy as np

    import devices
    from devices.fidelity import transparent

    rng = np.random.default_rng(5)
    rows, cols = 300, 300
    for structured in (False, True):
        chip = devices.make_chip(transparent("pcm"), (rows, cols), 3)
        L = chip._layers[0]
        if structured:
            W = np.zeros((rows + 1, cols), np.float32)
            W[: rows // 2, : cols // 2] = 0.9 * L.w_max
            W[rows, :] = 0.3 * L.w_max
        else:
            W = np.clip(rng.standard_normal((rows + 1, cols)) / np.sqrt(rows), -0.9 * L.w_max, 0.9 * L.w_max)
        chip.program_verify(0, W.astype(np.float32))
        chip.wait(3600.0)
        L.refresh(chip.clock_s)
        V = _exact_weight_variance(L, chip.clock_s)
        np.testing.assert_allclose(V.sum(axis=1), L.row_var, rtol=1e-6)
        x = (rng.random((200, rows)) < 0.2).astype(np.float64)
        exact = x @ V[:-1] + V[-1]
        product = np.outer(x @ L.row_var[:-1] + L.row_var[-1], L.col_var / L.row_var.sum())
        ratio = np.sqrt(product / exact)
        lo, hi = np.percentile(ratio, [5, 95])
        if structured:  # half the array at 0.9 w_max, half empty: outputs of the empty half get too little
            assert lo < 0.85, (lo, hi)
        else:
            assert 0.92 <= lo and hi <= 1.08, (lo, hi)
