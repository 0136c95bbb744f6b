"""Each numba kernel of ``mortal._kernels`` against its numpy reference.

Tolerances follow the dtype: sums are float64 in both (the order differs:
the kernel adds sequentially, numpy pairwise), so float64 results agree to
``n * eps64``; results stored as float32 agree to a couple of float32 ulps.
``smooth_step`` is float32 arithmetic in the same order as the reference, so
it agrees to one ulp (exactly, unless the compiler contracts to FMA).
"""

from __future__ import annotations

import re
from pathlib import Path

import numba
import numpy as np
import pytest

import mortal
import reference_ff as ref
from mortal import _kernels as K

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
MORTAL_DIR = Path(mortal.__file__).resolve().parent
KERNELS = ("measure_rows", "ff_signal", "smooth_step", "accumulate_pulses")


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def _assert_f32_close(actual: np.ndarray, expected: np.ndarray, ulps: float = 2.0) -> None:
    """``|a - e| <= ulps * eps32 * max(|e|, tiny)``, elementwise; dtypes must both be float32."""
    assert actual.dtype == np.float32 and expected.dtype == np.float32
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    tol = ulps * EPS32 * np.maximum(np.abs(e), np.finfo(np.float32).tiny)
    bad = np.abs(a - e) > tol
    assert not bad.any(), f"{bad.sum()} of {bad.size} values differ; worst {np.abs(a - e)[bad].max()}"


# -- measure_rows as the input normalization (gain 1) ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (17, 784), (64, 1000)])
@pytest.mark.parametrize("scale", [1.0, 0.25, 3.0])
def test_input_normalization_matches_reference(shape, scale):
    x = _rng(1).standard_normal(shape).astype(np.float32) * np.float32(5.0)
    x[0, 0] = 0.0
    out = np.empty_like(x)
    K.measure_rows(x, 1.0, out, scale, np.empty(x.shape[0]))
    _assert_f32_close(out, ref.measure_rows(x, 1.0, scale)[0])
    # each non-zero row now has RMS ``scale`` (up to float32 rounding and the tiny epsilon)
    nonzero = np.abs(x).sum(axis=1) > 0
    assert nonzero.sum() >= shape[0] - 1
    np.testing.assert_allclose(ref.rms_rows(out)[nonzero, 0], scale, rtol=4 * EPS32 * np.sqrt(shape[1]))


def test_input_normalization_zero_row_stays_zero_and_finite():
    x = np.zeros((2, 10), np.float32)
    x[1, 3] = 1e-30
    out = np.full_like(x, np.nan)
    K.measure_rows(x, 1.0, out, 1.0, np.empty(x.shape[0]))
    assert np.isfinite(out).all()
    assert (out[0] == 0).all()
    _assert_f32_close(out, ref.measure_rows(x, 1.0, 1.0)[0])


def test_input_normalization_images_with_label_pixels():
    """The controller's first step: uint8 images in [0, 1] with the label in the first 10 pixels."""
    img = _rng(2).integers(0, 256, (50, 784)).astype(np.float32) / np.float32(255)
    img[:, :10] = 0.0
    img[np.arange(50), _rng(3).integers(0, 10, 50)] = 1.0
    out = np.empty_like(img)
    K.measure_rows(img, 1.0, out, 1.0, np.empty(img.shape[0]))
    _assert_f32_close(out, ref.measure_rows(img, 1.0, 1.0)[0])


# -- measure_rows -----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (5, 13), (100, 300), (31, 1000)])
@pytest.mark.parametrize("gain,scale", [(1.0, 1.0), (4.0, 1.0), (0.5, 2.0)])
def test_measure_rows_matches_reference(shape, gain, scale):
    rng = _rng(4)
    y = np.maximum(rng.standard_normal(shape), 0.0).astype(np.float32) * np.float32(0.7)
    y[-1, 0] = -0.01  # chips can report small negative outputs (offsets, noise)
    out = np.empty_like(y)
    good = np.empty(shape[0], np.float64)
    K.measure_rows(y, gain, out, scale, good)
    ref_out, ref_good = ref.measure_rows(y, gain, scale)
    _assert_f32_close(out, ref_out)
    np.testing.assert_allclose(good, ref_good, rtol=4 * shape[1] * EPS64, atol=0)
    assert good.dtype == np.float64


def test_measure_rows_all_zero_row():
    y = np.zeros((3, 8), np.float32)
    y[1] = 2.0
    out = np.full_like(y, np.nan)
    good = np.full(3, np.nan)
    K.measure_rows(y, 0.5, out, 1.0, good)
    assert (out[0] == 0).all() and good[0] == 0.0
    assert good[1] == pytest.approx(8 * 1.0)  # a = 0.5 * 2 = 1 per unit
    np.testing.assert_allclose(out[1], 1.0, rtol=2 * EPS32)


# -- ff_signal --------------------------------------------------------------------------------
def _signal_case(seed: int, batch: int, n: int, k: int):
    rng = _rng(seed)
    y = (rng.standard_normal((batch, n)) * 0.8 + 0.3).astype(np.float32)  # some negative outputs
    coef = rng.uniform(-1.0, 1.0, batch)
    table = rng.uniform(0.0, 2.0, (n, k)).astype(np.float32)
    peer = (rng.standard_normal(n) * 0.03).astype(np.float32)
    return y, coef, table, peer


@pytest.mark.parametrize("k", [0, 1, 5, 16])
@pytest.mark.parametrize("gain", [1.0, 4.0])
def test_ff_signal_matches_reference(k, gain):
    batch, n = 40, 33
    y, coef, table, peer = _signal_case(10 + k, batch, n, k)
    width = 0.125
    out = np.full((batch, n), np.nan, np.float32)
    K.ff_signal(y, gain, coef, table, width, peer, out)
    expected = ref.ff_signal(y, gain, coef, table, width, peer)
    # one float32 rounding of a float64 value; tiny results near a cancellation
    # between the two terms get an absolute floor of a few eps32 of the terms' size
    scale = np.abs(coef)[:, None] * gain * np.abs(y.astype(np.float64)) + np.abs(peer)[None, :]
    np.testing.assert_array_less(np.abs(out.astype(np.float64) - expected.astype(np.float64)),
                                 2 * EPS32 * scale + 1e-30)


def test_ff_signal_bins_at_the_edges():
    """Outputs below 0 use bin 0, beyond the table the last bin; bin edges go up."""
    n, width = 4, 0.5
    table = np.array([[1.0, 2.0, 3.0]] * n, np.float32)
    y = np.array([[-2.0, 0.0, 0.49, 0.5], [0.99, 1.0, 1.5, 100.0]], np.float32)
    out = np.empty_like(y)
    K.ff_signal(y, 1.0, np.ones(2), table, width, np.zeros(n, np.float32), out)
    slopes = np.where(y != 0, out / np.where(y != 0, y, 1), np.nan)
    np.testing.assert_array_equal(slopes[0, [0, 2, 3]], [1.0, 1.0, 2.0])
    np.testing.assert_array_equal(slopes[1], [2.0, 3.0, 3.0, 3.0])
    assert out[0, 1] == 0.0
    np.testing.assert_array_equal(out, ref.ff_signal(y, 1.0, np.ones(2), table, width, np.zeros(n, np.float32)))


def test_ff_signal_nominal_table_is_the_relu_rule():
    """With a (n, 0) table the signal is ``coef * a + peer`` (ffcode: no ReLU derivative)."""
    y, coef, _, peer = _signal_case(7, 6, 5, 0)
    out = np.empty_like(y)
    K.ff_signal(y, 2.0, coef, np.zeros((5, 0), np.float32), 1.0, peer, out)
    want = (coef[:, None] * 2.0 * y.astype(np.float64) + peer.astype(np.float64)).astype(np.float32)
    _assert_f32_close(out, want, ulps=1.0)


# -- smooth_step --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 1), (11, 7), (785, 300)])
@pytest.mark.parametrize("momentum,step,wc,bias_scale", [
    (0.9, 0.01, 0.001, 1.0), (0.0, 0.03, 0.0, 0.25), (0.5, 1.0, 0.1, 4.0)])
def test_smooth_step_matches_reference(shape, momentum, step, wc, bias_scale):
    rng = _rng(20 + shape[0])
    grad = rng.standard_normal(shape).astype(np.float32)
    smooth = (rng.standard_normal(shape) * 0.1).astype(np.float32)
    shadow = (rng.standard_normal((shape[0] - 1, shape[1])) * 0.05).astype(np.float32)
    want_smooth, want_shadow, want_delta = ref.smooth_step(grad, smooth, shadow, momentum, step, wc, bias_scale)
    delta = np.full(shape, np.nan, np.float32)
    grad0 = grad.copy()
    K.smooth_step(grad, smooth, shadow, momentum, step, wc, bias_scale, delta)
    np.testing.assert_array_equal(grad, grad0)  # the gradient is read only
    _assert_f32_close(smooth, want_smooth, ulps=1.0)
    _assert_f32_close(shadow, want_shadow, ulps=1.0)
    _assert_f32_close(delta, want_delta, ulps=1.0)


def test_smooth_step_repeated_calls_accumulate_like_the_reference():
    """Ten steps in a row keep smooth and shadow in step with the reference (no drift)."""
    rng = _rng(30)
    shape = (51, 20)
    smooth = np.zeros(shape, np.float32)
    shadow = np.zeros((shape[0] - 1, shape[1]), np.float32)
    r_smooth, r_shadow = smooth.copy(), shadow.copy()
    delta = np.empty(shape, np.float32)
    for _ in range(10):
        grad = rng.standard_normal(shape).astype(np.float32)
        K.smooth_step(grad, smooth, shadow, 0.9, 0.05, 0.001, 0.25, delta)
        r_smooth, r_shadow, r_delta = ref.smooth_step(grad, r_smooth, r_shadow, 0.9, 0.05, 0.001, 0.25)
        _assert_f32_close(delta, r_delta, ulps=4.0)
    _assert_f32_close(smooth, r_smooth, ulps=4.0)
    _assert_f32_close(shadow, r_shadow, ulps=4.0)
    # the shadow is the sum of the requested weight changes (rows but the bias)
    assert np.abs(shadow).max() > 0


def test_smooth_step_bias_row_has_no_weight_cost():
    shape = (4, 3)
    grad = np.zeros(shape, np.float32)
    smooth = np.ones(shape, np.float32)
    shadow = np.full((3, 3), 10.0, np.float32)
    delta = np.empty(shape, np.float32)
    K.smooth_step(grad, smooth, shadow, 1.0 - 0.5, 2.0, 0.1, 3.0, delta)
    # weights: smooth 0.5, delta = 2 * (0.5 - 0.1 * 10) = -1; bias: delta = (2 * 3) * 0.5 = 3
    np.testing.assert_array_equal(delta[:-1], -1.0)
    np.testing.assert_array_equal(delta[-1], 3.0)
    np.testing.assert_array_equal(shadow, 9.0)


# -- accumulate_pulses (mixed-precision update policy) --------------------------------------------
@pytest.mark.parametrize("step", [0.0072, 0.01, 1 / 3])
def test_accumulate_pulses_matches_reference(step):
    rng = _rng(40)
    shape = (97, 31)
    acc = (rng.uniform(-1, 1, shape) * step).astype(np.float32)
    wanted = (rng.standard_normal(shape) * 2.5 * step).astype(np.float32)
    r_acc, r_send, r_count = ref.accumulate_pulses(acc, wanted, step)
    # entries within a few ulps of a whole number of pulses may round either way
    q = (acc.astype(np.float64) + wanted) / np.float32(step)
    clear = np.abs(q - np.rint(q)) > 1e-4
    assert clear.mean() > 0.99
    send = np.full(shape, np.nan, np.float32)
    count = K.accumulate_pulses(acc, wanted, step, send)
    np.testing.assert_array_equal(send[clear], r_send[clear])
    np.testing.assert_array_equal(acc[clear], r_acc[clear])
    assert count == np.count_nonzero(send)
    assert abs(count - r_count) <= np.count_nonzero(~clear)
    assert 0 < count < send.size


def test_accumulate_pulses_invariants_at_exact_pulse_multiples():
    """Requests of exactly k pulses: nothing is lost, send is whole pulses, the rest is below one pulse.

    (Multiplying by a float32 reciprocal can leave a whole pulse in the
    accumulator, to be sent on the next call; allowed to a few ulps.)
    """
    for step in (0.1, 0.003, 0.0072, 0.01, 0.00123):
        s32 = np.float32(step)
        wanted = (np.arange(-50, 51, dtype=np.float32) * s32)[None, :]
        acc = np.zeros_like(wanted)
        send = np.empty_like(wanted)
        K.accumulate_pulses(acc, wanted, step, send)
        np.testing.assert_allclose(acc + send, wanted, rtol=0, atol=4 * EPS32 * float(np.abs(wanted).max()))
        pulses = send.astype(np.float64) / float(s32)
        np.testing.assert_allclose(pulses, np.rint(pulses), rtol=0, atol=1e-4)
        assert np.abs(acc).max() <= float(s32) * (1 + 8 * EPS32)
        assert np.abs(pulses).sum() >= np.abs(np.arange(-50, 51)).sum() - 101


# -- compilation flags --------------------------------------------------------------------------
def test_no_fastmath_and_no_cache_anywhere_in_mortal():
    texts = {p: p.read_text() for p in MORTAL_DIR.rglob("*.py")}
    assert MORTAL_DIR / "_kernels.py" in texts
    for path, text in texts.items():
        assert not re.search(r"fastmath\s*=\s*True", text), path
        assert not re.search(r"cache\s*=\s*True", text), path
        assert not re.search(r"\b(FASTMATH|CACHE)\s*=\s*True", text), path
        assert not re.search(r"fastmath\s*=\s*\{", text), path  # flag sets enable fast math too
    assert K.FASTMATH is False and K.CACHE is False


@pytest.mark.parametrize("name", KERNELS)
def test_each_kernel_is_compiled_without_fastmath_or_cache(name):
    d = getattr(K, name)
    assert isinstance(d, numba.core.registry.CPUDispatcher), name
    assert not d.targetoptions.get("fastmath"), name
    assert not d.targetoptions.get("cache"), name
    assert d.signatures, f"{name} was not compiled by the tests above"


def test_every_kernel_in_the_module_is_covered():
    dispatchers = {n for n, v in vars(K).items() if isinstance(v, numba.core.registry.CPUDispatcher)}
    assert dispatchers == set(KERNELS), "a new kernel needs a reference in tests/reference_ff.py"
