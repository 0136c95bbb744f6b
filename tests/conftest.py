"""Shared fixtures: the chip under test (one per preset) and state snapshots.

The ``chip`` fixture is parametrized over every preset in ``devices.PRESETS``,
so the contract suite runs on each of them; a new preset is tested without
touching the tests.  ``snapshot`` and ``assert_same_state`` compare the whole
observable and hidden state of two chips (or one chip before and after).
``bench_script`` imports a script of ``benchmarks/`` on a small MNIST file.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import numpy as np
import pytest

import devices

#: Layer sizes of the small chips most tests use: two layers, odd widths.
SMALL_SIZES = (12, 10, 6)
SEED = 20240607


@pytest.fixture(params=sorted(devices.PRESETS))
def preset_name(request) -> str:
    """Name of each preset in the registry in turn."""
    return request.param


@pytest.fixture
def chip(preset_name):
    """A small fresh chip of each preset (fixed seed)."""
    return devices.make_chip(preset_name, SMALL_SIZES, seed=SEED)


def _snapshot(chip) -> dict:
    """Plain-data copy of a chip's ledger and every array of its inspected state."""
    st = devices.inspect(chip)
    snap = {"clock_s": st.clock_s, "seed": st.seed, "ledger": chip.ledger.to_dict(), "layers": []}
    for L in st.layers:
        snap["layers"].append({f.name: getattr(L, f.name) for f in dataclasses.fields(L)})
    return snap


def _assert_same_state(a: dict, b: dict) -> None:
    """Bit-for-bit equality of two snapshots (NaN-aware, dtypes included)."""
    assert a["clock_s"] == b["clock_s"]
    assert a["seed"] == b["seed"]
    assert a["ledger"] == b["ledger"]
    assert len(a["layers"]) == len(b["layers"])
    for la, lb in zip(a["layers"], b["layers"]):
        assert la.keys() == lb.keys()
        for name in la:
            va, vb = la[name], lb[name]
            if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
                assert isinstance(va, np.ndarray) and isinstance(vb, np.ndarray), name
                assert va.dtype == vb.dtype, name
                np.testing.assert_array_equal(va, vb, err_msg=name, strict=True)
            else:
                assert va == vb, name


@pytest.fixture
def snapshot():
    """Function ``snapshot(chip) -> dict`` copying the chip's whole state."""
    return _snapshot


@pytest.fixture
def assert_same_state():
    """Function ``assert_same_state(snap_a, snap_b)`` asserting bit-identical state."""
    return _assert_same_state


@pytest.fixture
def bench_script(monkeypatch, tmp_path):
    """Function ``bench_script(name, n_train)``: the module ``benchmarks/<name>.py``, imported with
    ``MORTAL_DATA`` set to an MNIST file of the bundled subset's first ``n_train`` training and
    100 test images."""
    from mortal.data import load_mnist_mini

    def load(name: str, n_train: int):
        d = load_mnist_mini()
        path = tmp_path / "small.npz"
        np.savez(path, x_train=d.train_images[:n_train], y_train=d.train_labels[:n_train],
                 x_test=d.test_images[:100], y_test=d.test_labels[:100])
        monkeypatch.setenv("MORTAL_DATA", str(path))
        monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
        return importlib.import_module(name)
    return load


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Run every test module with one BLAS thread.

    The matrices in the tests are small: one thread is as fast on an idle
    machine and many times faster on a shared one (an epoch of 784-300-300
    measured 0.3 s against 8.4 s while other jobs held both cores).  It also
    fixes the summation order of the products, which follows the thread count,
    so thresholds measured here hold in CI.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
