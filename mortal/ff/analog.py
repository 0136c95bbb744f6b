"""In-array updates by pulse coincidence (policy ``analog``; see :mod:`mortal.updates`).

Update management turns each sample's row vector and column signal into signed pulse
probabilities (:func:`pulse_probabilities`); :func:`coincidences` draws the coincidences of a
batch of pulse trains, batched from the exact per-cell moments (one pass over the rows, on as
many threads as BLAS has) or, for tests, slot by slot;
:func:`apply_analog_update` sends the net counts to the chip as pulses and charges the
periphery and the controller.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from .. import ops
from ..chip import Chip
from ..errors import InputError
from ..updates import check_pulse_chip
from . import _kernels as K

__all__ = ["pulse_probabilities", "coincidences", "Coincidences", "apply_analog_update", "sampler_threads"]


def _bit_length(bl: object) -> int:
    if isinstance(bl, (bool, np.bool_)) or not isinstance(bl, (int, np.integer)) or bl <= 0:
        raise InputError(f"bit_length must be a positive integer (pulse slots per sample), got {bl!r}")
    return int(bl)


def _finite_matrix(a: object, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2 or arr.dtype.kind not in "fiu":
        raise InputError(f"{name} must be a real (batch, n) array, got shape {arr.shape} dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} holds NaN or infinite values")
    return arr


def pulse_probabilities(x: np.ndarray, d: np.ndarray, eta: float, bit_length: int,
                        dw: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Signed pulse probabilities of rows and columns, by update management.

    Parameters
    ----------
    x : float (batch, rows)
        What each sample sent to the rows (bias line included).
    d : float (batch, cols)
        Each sample's per-unit signal.
    eta : float
        Wanted change per unit of ``x d`` (weight units): the mean change of cell (i, j) is
        ``eta sum_b x_bi d_bj`` where no probability is clipped.
    bit_length : int
        Pulse slots per sample (BL).
    dw : float
        Nominal weight change of one coincidence (the chip's ``pulse_step``).

    Returns
    -------
    px : float32 (batch, rows), pd : float32 (batch, cols)
        ``sign(v) min(|v| scale, 1)`` with per-sample scales
        ``scale_x = sqrt(c m_d / m_x)``, ``scale_d = sqrt(c m_x / m_d)``, ``c = eta / (BL dw)``,
        ``m`` the sample's largest magnitude (a sample with a zero vector sends nothing).
    clipped : float
        Fraction of the nonzero probabilities that were clipped at 1 (the update is truncated there).
    """
    bl = _bit_length(bit_length)
    for name, v in (("eta", eta), ("dw", dw)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(v)) or float(v) < 0.0 or (name == "dw" and float(v) == 0.0):
            raise InputError(f"{name} must be a finite number {'> 0' if name == 'dw' else '>= 0'}, got {v!r}")
    xa, da = _finite_matrix(x, "x"), _finite_matrix(d, "d")
    if xa.shape[0] != da.shape[0]:
        raise InputError(f"x and d must hold the same samples, got {xa.shape[0]} and {da.shape[0]}")
    c = float(eta) / (bl * float(dw))
    mx = np.abs(xa).max(axis=1).astype(np.float64) if xa.shape[1] else np.zeros(xa.shape[0])
    md = np.abs(da).max(axis=1).astype(np.float64) if da.shape[1] else np.zeros(da.shape[0])
    live = (mx > 0) & (md > 0)
    sx = np.zeros_like(mx)
    sd = np.zeros_like(md)
    sx[live] = np.sqrt(c * md[live] / mx[live])
    sd[live] = np.sqrt(c * mx[live] / md[live])
    px = np.clip(xa * sx[:, None].astype(np.float32), -1.0, 1.0)
    pd = np.clip(da * sd[:, None].astype(np.float32), -1.0, 1.0)
    nonzero = np.count_nonzero(px) + np.count_nonzero(pd)
    clipped = (np.count_nonzero(np.abs(px) == 1.0) + np.count_nonzero(np.abs(pd) == 1.0)) / max(nonzero, 1)
    return px, pd, float(clipped)


@dataclass(frozen=True)
class Coincidences:
    """One batch of in-array updates.

    net : int32 (rows, cols)
        Positive minus negative coincidences per cell.
    gross : int
        Coincidences of either sign, all cells.
    row_pulses, col_pulses : int
        Pulses the row and the column drivers sent.
    """

    net: np.ndarray
    gross: int
    row_pulses: int
    col_pulses: int


def _probabilities(p: object, name: str) -> np.ndarray:
    arr = _finite_matrix(p, name)
    if arr.size and float(np.abs(arr).max()) > 1.0:
        raise InputError(f"{name}: pulse probabilities must lie in [-1, 1] (sign and probability), "
                         f"got magnitude {float(np.abs(arr).max())!r}")
    return arr


def coincidences(px: np.ndarray, pd: np.ndarray, bit_length: int, rng: np.random.Generator,
                 exact: bool = False) -> Coincidences:
    """Draw the coincidences of a batch of pulse trains.

    ``px`` float (batch, rows) and ``pd`` float (batch, cols) are signed probabilities (magnitude
    in [0, 1]); ``bit_length`` slots per sample; ``rng`` gives the draw's key (one integer).
    Batched (default): per cell, the positive and the negative count drawn from their exact
    means and variances (:func:`mortal.ff._kernels.coincidence_rows`, in one pass over the rows
    that some sample drives, on as many threads as BLAS has: the sampling takes the place of the
    update's matrix products); the driver pulses drawn as normals with the exact moments of
    their Bernoulli sums.  ``exact``: every slot of every sample simulated.
    """
    bl = _bit_length(bit_length)
    pxa, pda = _probabilities(px, "px"), _probabilities(pd, "pd")
    if pxa.shape[0] != pda.shape[0]:
        raise InputError(f"px and pd must hold the same samples, got {pxa.shape[0]} and {pda.shape[0]}")
    if not isinstance(rng, np.random.Generator):
        raise InputError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    key = np.uint64(int(rng.integers(0, 2**63)))
    rows, cols = pxa.shape[1], pda.shape[1]
    if exact:
        net = np.zeros((rows, cols), np.int32)
        lines = np.zeros(2, np.int64)
        gross = K.coincidence_exact(pxa, pda, bl, key, net, lines)
        return Coincidences(net, int(gross), int(lines[0]), int(lines[1]))
    net = np.empty((rows, cols), np.int32)  # every cell written by the kernel
    ptr, sample, value = K.row_entries(pxa)
    row_gross = np.zeros(rows, np.int64)
    _on_threads(K.coincidence_rows, rows, ptr, sample, value, pda, float(bl), bl * pxa.shape[0], key, net,
                row_gross)
    gross = int(row_gross.sum())
    ax, ad = np.abs(pxa), np.abs(pda)
    lines = []
    for a in (ax, ad):
        a64 = a.astype(np.float64)
        mean = bl * float(a64.sum())
        var = bl * float((a64 * (1.0 - a64)).sum())
        lines.append(int(min(max(round(mean + math.sqrt(var) * rng.standard_normal()), 0), bl * a.size)))
    return Coincidences(net, int(gross), lines[0], lines[1])


_blas = None


def sampler_threads() -> int:
    """Threads of the batched sampler: BLAS's current thread count (``OPENBLAS_NUM_THREADS``,
    or a ``threadpoolctl`` limit such as a fleet worker's one thread); the smallest count where
    several BLAS libraries are loaded (numpy's and scipy's; those loaded at the first call are
    the ones counted), 1 without BLAS.  It is BLAS's count, not ``MORTAL_KERNEL_THREADS``: the
    sampler takes the place of the update's matrix products, which ran on BLAS's threads."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas")
    return max(1, min([int(c.num_threads) for c in _blas.lib_controllers], default=1))


def _on_threads(kernel, rows: int, *args) -> None:
    """``kernel(part, parts, *args)`` for each part, one per thread of :func:`sampler_threads`
    (the kernel releases the GIL); the caller's thread takes part 0, and every part has finished
    when this returns (the first error is raised again)."""
    n = max(1, min(sampler_threads(), -(-rows // K.ROW_BLOCK)))
    errors: list[BaseException] = []

    def block(t: int) -> None:
        try:
            kernel(t, n, *args)
        except BaseException as exc:  # raised again below, after every block has finished
            errors.append(exc)

    helpers = [threading.Thread(target=block, args=(t,), name="mortal-sampler", daemon=True) for t in range(1, n)]
    for h in helpers:
        h.start()
    block(0)
    for h in helpers:
        h.join()
    if errors:
        raise errors[0]


def apply_analog_update(chip: Chip, layer: int, x: np.ndarray, d: np.ndarray, eta: float, bit_length: int,
                        rng: np.random.Generator) -> Coincidences:
    """Update layer ``layer`` of ``chip`` in the array: rows driven by ``x`` (batch, n_in + 1; the
    bias line last), columns by ``d`` (batch, n_out), mean change ``eta x^T d``.

    The net coincidences go to ``chip.program`` as ``count * pulse_step``; the drivers,
    translators and the coincidences that cancelled within the batch are charged through
    ``chip.charge_pulse_update`` when the chip has it, and the controller's vector work as
    digital operations.
    """
    n_layers = len(chip.info.weight_shapes)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < n_layers:
        raise InputError(f"layer must be an integer in [0, {n_layers}), got {layer!r}")
    rows, cols = chip.info.weight_shapes[layer]
    xs, ds = np.shape(x), np.shape(d)
    if len(xs) != 2 or len(ds) != 2 or xs[1] != rows or ds[1] != cols:
        raise InputError(f"layer {layer} takes x of shape (batch, {rows}) and d of shape (batch, {cols}), "
                         f"got {xs} and {ds}")
    step = float(chip.info.pulse_step[layer])
    if not (math.isfinite(step) and step > 0.0):
        check_pulse_chip(chip)
    px, pd, _ = pulse_probabilities(x, d, eta, bit_length, step)
    got = coincidences(px, pd, bit_length, rng)
    batch, rows = px.shape
    cols = pd.shape[1]
    if got.gross:
        chip.program(layer, got.net.astype(np.float32) * np.float32(step))
    charge = getattr(chip, "charge_pulse_update", None)
    if charge is not None:
        charge(layer, batch=batch, bit_length=int(bit_length), row_pulses=got.row_pulses,
               col_pulses=got.col_pulses, translations=batch * (rows + cols),
               cancelled=got.gross - int(np.abs(got.net).sum()))
    chip.ledger.charge_digital(ops.analog_update_ops(batch, rows, cols))
    return got
