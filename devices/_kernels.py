"""Numba kernels for the emulator's hot paths.

Private: the public wrappers in ``devices.crossbar`` validate every input
once; these functions trust their arguments.  Plain-numpy references of each
kernel live in ``tests/reference.py``.

Random numbers inside kernels come from a per-row xorshift64* generator whose
seed is ``splitmix64(base + row)``; ``base`` is drawn by the caller from the
chip's own ``numpy.random.Generator``.  Results therefore do not depend on the
number of threads.  Each row runs ``LANES`` interleaved generators so the
loop vectorizes.  A normal deviate is the sum of the four 16-bit quarters of
one 64-bit draw (Irwin-Hall with n = 4), centred and scaled to unit variance:
exact mean and variance, tails cut at 2*sqrt(3) = 3.46 sigma, excess kurtosis
-0.3.  That is ample for read and write noise and costs no libm call.

No kernel uses numba's threading layer: they run right after multi-threaded BLAS
products, and a parallel numba region there fights BLAS's spinning threads for
the two cores (measured: 8 ms against 2 ms serial for the read periphery of a
100 x 1000 output; an FF epoch on ``pcm`` took 9.9 s with a parallel
programming kernel against 7.3 s serial).  The programming and refresh kernels
can run blocks of rows on Python threads (``devices._threads``,
``MORTAL_KERNEL_THREADS``, default 1: a second thread measured no gain beside two
BLAS threads spinning for OpenBLAS's default time; the command line shortens the
spin and sets two, ``mortal.process_env``).  Per-row generator seeds keep the results independent of the
order rows are processed in and of the thread count.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Flags in one place (checked by tests/test_kernels.py): no fastmath, no cache.
FASTMATH = False
CACHE = False
# error_model="numpy" drops Python's division-by-zero checks so that loops vectorize.
_jit = numba.njit(fastmath=FASTMATH, cache=CACHE, nogil=True, error_model="numpy")
#: The one jit decorator of the device kernels (``devices._pulses`` uses it too).
JIT = _jit
#: The same, inlined into its callers at numba's IR level: for the small functions of the
#: per-device state that take arrays (an out-of-line call passing array structs cost the
#: programming kernel about half its time).
JIT_INLINE = numba.njit(fastmath=FASTMATH, cache=CACHE, nogil=True, error_model="numpy", inline="always")
#: Rows per chunk of the kernels that run on several threads (:mod:`devices._threads`): fixed,
#: so that the chunks, not the threads, set the order of sums over rows.
ROW_CHUNK = 32
#: Independent generator lanes per row (one AVX-512 vector of uint64 is 8; 16 vectorizes best).
LANES = 16

_SQRT3 = math.sqrt(3.0)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_XS_MUL = np.uint64(0x2545F4914F6CDD1D)
_MASK16 = np.uint64(0xFFFF)

# Indices into the drift-parameter vector (see devices.crossbar.drift_parameters).
D_T0, D_MU_A, D_MU_B, D_MU_LO, D_MU_HI, D_S_A, D_S_B, D_S_LO, D_S_HI, D_G_FLAT, D_MU_FLAT, D_S_FLAT = range(12)


@JIT_INLINE
def splitmix64(x):
    """One splitmix64 step: a well-mixed uint64 from any uint64."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@JIT_INLINE
def row_seed(base, row):
    """Seed of row ``row``'s generator for a call whose base seed is ``base``."""
    s = splitmix64(np.uint64(base) + np.uint64(row) * _GOLDEN)
    if s == np.uint64(0):
        s = _GOLDEN
    return s


@JIT_INLINE
def xorshift_next(state):
    """Advance a xorshift64* state; returns (new_state, output)."""
    x = state
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    return x, x * _XS_MUL


@JIT_INLINE
def normal_from_bits(r):
    """Unit normal (Irwin-Hall n=4) from the four 16-bit quarters of ``r``."""
    s = (r & _MASK16) + ((r >> np.uint64(16)) & _MASK16) + ((r >> np.uint64(32)) & _MASK16) + (r >> np.uint64(48))
    return (float(s) + 2.0) * (_SQRT3 / 65536.0) - 2.0 * _SQRT3


@JIT_INLINE
def ln_fast(x):
    """ln(x) for finite x > 0 with one ``frexp`` and a short series, no ``log`` call.

    ``x = m 2^e`` with m moved into [sqrt(1/2), sqrt(2)); ``ln m = 2 atanh(f)``, ``f = (m - 1)
    / (m + 1)``, |f| <= 0.172, summed to f^11 (the first term left out is below 2e-11).
    """
    m, e = math.frexp(x)
    if m < 0.7071067811865476:
        m *= 2.0
        e -= 1
    f = (m - 1.0) / (m + 1.0)
    f2 = f * f
    s = f * (2.0 + f2 * (2.0 / 3.0 + f2 * (0.4 + f2 * (2.0 / 7.0 + f2 * (2.0 / 9.0 + f2 * (2.0 / 11.0))))))
    return s + e * 0.6931471805599453


@JIT_INLINE
def exp_bounded(x):
    """exp(x) for |x| <= 8 without a libm call: Taylor to x^7 of x / 16, then squared four times
    (relative error below 1e-8 for |x| <= 4, below 3e-6 at |x| = 8)."""
    y = x * 0.0625
    e = 1.0 + y * (1.0 + y * (0.5 + y * (1.0 / 6.0 + y * (1.0 / 24.0 + y * (1.0 / 120.0 + y * (
        1.0 / 720.0 + y * (1.0 / 5040.0)))))))
    e *= e
    e *= e
    e *= e
    return e * e


@JIT_INLINE
def drift_factor(age, nu, t0):
    """((age + t0) / t0) ** -nu.

    For young devices (a = age / t0 < 0.05) both the logarithm and the
    exponential are short series: ``log1p(a)`` to a^5 (error < a^6 / 6 = 3e-9)
    and ``exp(-x)`` to x^4 with ``x = nu log1p(a) <= 0.05`` (error < 3e-9),
    far below float32 resolution and without a libm call (for nu <= 1; up to 5e-6
    at the largest exponents a spec allows).  Older devices use :func:`ln_fast`
    and, while ``x <= 8``, :func:`exp_bounded` (relative error below 3e-6).
    """
    if nu == 0.0 or age <= 0.0:
        return 1.0
    a = age / t0
    if a < 0.05:
        lg = a * (1.0 - a * (0.5 - a * (1.0 / 3.0 - a * (0.25 - a * 0.2))))
        x = nu * lg
        return 1.0 - x * (1.0 - x * (0.5 - x * (1.0 / 6.0 - x * (1.0 / 24.0))))
    x = nu * ln_fast(1.0 + a)
    return exp_bounded(-x) if x <= 8.0 else math.exp(-x)


@JIT_INLINE
def drift_exponent(g, xi, dp):
    """Per-device exponent |mu(g) + sigma(g) xi| for a device programmed to ``g``.

    Above ``dp[D_G_FLAT]`` both clipped laws are constant (``dp[D_MU_FLAT]``,
    ``dp[D_S_FLAT]``) and no logarithm is needed.
    """
    if g >= dp[D_G_FLAT]:
        return abs(dp[D_MU_FLAT] + dp[D_S_FLAT] * xi)
    lg = ln_fast(max(g, 1e-6))
    mu = min(max(dp[D_MU_A] * lg + dp[D_MU_B], dp[D_MU_LO]), dp[D_MU_HI])
    sg = min(max(dp[D_S_A] * lg + dp[D_S_B], dp[D_S_LO]), dp[D_S_HI])
    return abs(mu + sg * xi)


@_jit
def dac_kernel(x, out, in_range, step, sq_rows, abs_rows):
    """Clip inputs to [-in_range, in_range] and quantize to multiples of ``step``.

    x, out : float32 (batch, n_in).  step <= 0 means no quantization.
    Arithmetic is float32: ``out = floor(clip(x) * (1/step) + 0.5) * step``.
    sq_rows, abs_rows : float64 (batch,), filled with sum(out**2) and sum(|out|)
    (accumulated in LANES float32 partial sums, then added in float64).  Only the
    squares are used (read noise, V^2 cell energy); the |x| sums stay because LLVM
    vectorizes this fused loop with both accumulators and not with one (measured on
    256 x 512: 41 us against 61 us with separate passes and 174 us fused without them).
    """
    batch, n = x.shape
    r = np.float32(in_range)
    quantize = step > 0.0
    inv = np.float32(1.0 / step) if quantize else np.float32(0.0)
    stp = np.float32(step)
    half = np.float32(0.5)
    acc2 = np.empty(LANES, np.float32)
    acc1 = np.empty(LANES, np.float32)
    nb = n // LANES
    for b in range(batch):
        xr = x[b]
        orow = out[b]
        acc2[:] = 0.0
        acc1[:] = 0.0
        for blk in range(nb):
            for k in range(LANES):
                j = blk * LANES + k
                v = min(max(xr[j], -r), r)
                if quantize:
                    v = np.floor(v * inv + half) * stp
                orow[j] = v
                acc2[k] += v * v
                acc1[k] += abs(v)
        s2 = 0.0
        s1 = 0.0
        for k in range(LANES):
            s2 += float(acc2[k])
            s1 += float(acc1[k])
        for j in range(nb * LANES, n):
            v = min(max(xr[j], -r), r)
            if quantize:
                v = np.floor(v * inv + half) * stp
            orow[j] = v
            s2 += float(v) * float(v)
            s1 += abs(float(v))
        sq_rows[b] = s2
        abs_rows[b] = s1


@_jit
def fill_normals(state, buf):
    """Fill ``buf`` (float32, length a multiple of LANES) with unit normals.

    ``state`` holds LANES independent xorshift64* states (uint64), advanced in
    place; entry ``blk * LANES + k`` comes from lane ``k``.  Each normal is the
    Irwin-Hall sum of the four 16-bit quarters of one 64-bit output.
    """
    scale = np.float32(_SQRT3 / 65536.0)
    shift = np.float32(2.0 * _SQRT3 / 65536.0 - 2.0 * _SQRT3)
    for blk in range(buf.shape[0] // LANES):
        for k in range(LANES):
            x = state[k]
            x ^= x >> np.uint64(12)
            x ^= x << np.uint64(25)
            x ^= x >> np.uint64(27)
            state[k] = x
            r = x * _XS_MUL
            s = (r & _MASK16) + ((r >> np.uint64(16)) & _MASK16) + ((r >> np.uint64(32)) & _MASK16) + (r >> np.uint64(48))
            buf[blk * LANES + k] = np.float32(s) * scale + shift


@_jit
def seed_lanes(state, base, row):
    """Seed the LANES generators of row ``row`` for a call with base seed ``base``."""
    s = row_seed(base, row)
    for k in range(LANES):
        state[k] = splitmix64(s + np.uint64(k)) | np.uint64(1)


@_jit
def periphery_kernel(u, bias, bias_level, noise_var_rows, dev_rows, dev_cols, out_var, seed,
                     soft, gain, offset, curv, sat, adc_range, adc_step):
    """Everything after the matrix product, in place, one pass per output row.

    For each output ``u[b, j]`` (float32 (batch, n_out), the product x @ W),
    in float32 arithmetic:

    1. add the bias line and read noise:
       ``v = u + bias_level * bias[j] + sd_b * n_bj`` with
       ``sd_b = sqrt(out_var + noise_var_rows[b])`` (rows empty: ``out_var`` only), or,
       if ``dev_rows`` (float64 (batch,)) is not empty, ``sd_bj = sqrt(out_var +
       noise_var_rows[b] + dev_rows[b] * dev_cols[j])`` (the product form of per-device
       noise, ``dev_cols`` float32 (n_out,)), and ``n_bj`` from :func:`fill_normals`
       seeded by :func:`seed_lanes`;
    2. the neuron: ReLU, or if ``soft`` the per-neuron function of
       ``NeuronSpec`` (gain, offset, curv, sat float32 (n_out,), offset and
       sat in output units, curv dimensionless)::

           r = max(gain (v - offset), 0);  h = r + curv r^2 / (R + r);  v = h sat / (sat + h)

    3. the ADC: ``v = min(v, R)``, then ``floor(v / adc_step + 0.5) * adc_step``
       if ``adc_step > 0`` (R = adc_range, may be inf).
    """
    batch, n = u.shape
    nb = (n + LANES - 1) // LANES
    noise = np.zeros(nb * LANES, np.float32)
    state = np.empty(LANES, np.uint64)
    R = np.float32(adc_range)
    zero = np.float32(0.0)
    half = np.float32(0.5)
    bl = np.float32(bias_level)
    quantize = adc_step > 0.0
    inv = np.float32(1.0 / adc_step) if quantize else np.float32(0.0)
    stp = np.float32(adc_step)
    per_row = noise_var_rows.shape[0] > 0
    per_dev = dev_rows.shape[0] > 0
    for b in range(batch):
        var = out_var + (noise_var_rows[b] if per_row else 0.0)
        sd = np.float32(math.sqrt(var))
        row = u[b]
        pdev = np.float32(dev_rows[b]) if per_dev else np.float32(0.0)
        if var > 0.0 or pdev > 0.0:
            seed_lanes(state, seed, b)
            fill_normals(state, noise)
        if pdev > 0.0:
            # Per-device noise: fold each output's own std into the normals, then use sd = 1.
            v32 = np.float32(var)
            for j in range(n):
                noise[j] *= np.sqrt(v32 + pdev * dev_cols[j])
            sd = np.float32(1.0)
            var = 1.0
        # One fused loop per case, so that each vectorizes without branches.
        if soft and quantize:
            for j in range(n):
                r = max(gain[j] * (row[j] + bl * bias[j] + sd * noise[j] - offset[j]), zero)
                h = r + curv[j] * r * r / (R + r)
                row[j] = np.floor(min(h * sat[j] / (sat[j] + h), R) * inv + half) * stp
        elif soft:
            for j in range(n):
                r = max(gain[j] * (row[j] + bl * bias[j] + sd * noise[j] - offset[j]), zero)
                h = r + curv[j] * r * r / (R + r)
                row[j] = min(h * sat[j] / (sat[j] + h), R)
        elif quantize:
            for j in range(n):
                v = min(max(row[j] + bl * bias[j] + sd * noise[j], zero), R)
                row[j] = np.floor(v * inv + half) * stp
        elif var > 0.0:
            for j in range(n):
                row[j] = min(max(row[j] + bl * bias[j] + sd * noise[j], zero), R)
        else:
            for j in range(n):
                row[j] = min(max(row[j] + bl * bias[j], zero), R)


@_jit
def add_exact(w, delta, track_rows, row_gsum, w_max):
    """Exact programming: ``w += delta``; returns (non-zero entries, rows touched).

    Returns (-1, -1) and changes nothing if a sum would leave the float32 range (|w| > 3e38).

    If ``track_rows``, ``row_gsum[i]`` becomes ``sum_j |w[i, j]| / w_max`` for the read-energy model.
    """
    rows, cols = w.shape
    # First pass without writing: refuse (-1, -1) if any sum would overflow float32.
    big = np.float32(3.0e38)
    for i in range(rows):
        bad = False
        for j in range(cols):
            bad |= abs(w[i, j] + delta[i, j]) > big
        if bad:
            return -1, -1
    nonzero = 0
    touched = 0
    for i in range(rows):
        k = 0
        for j in range(cols):
            d = delta[i, j]
            w[i, j] += d
            k += d != 0.0
        nonzero += k
        touched += k > 0
        if track_rows:
            acc = 0.0
            for j in range(cols):
                acc += abs(float(w[i, j]))
            row_gsum[i] = acc / w_max
    return nonzero, touched
