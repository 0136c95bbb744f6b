"""Datasets by name or path: :func:`load_dataset` and the ``.npz`` and 8x8-digits readers.

:func:`load_dataset` makes a :class:`~mortal.data.dataset.Dataset` from

- ``"mnist"``: full MNIST, found by :func:`mortal.data.mnist.load_mnist`;
- ``"mini"``: the bundled 6000/2000 MNIST subset (``load_mnist_mini``);
- ``"digits"``: scikit-learn's bundled 8x8 digits (needs ``mortal[digits]``);
- a path: any ``.npz`` with keys ``x_train, y_train, x_test, y_test`` of any
  per-example shape, or an MNIST folder (IDX files or ``mnist.npz``).

The 8x8 digits are the UCI "Optical Recognition of Handwritten Digits" test
set (E. Alpaydin and C. Kaynak), as bundled with scikit-learn.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from .dataset import Dataset, mnist_dataset
from .mnist import load_mnist, load_mnist_mini
from .mnist_files import NPZ_ERRORS, load_given, read_npz_arrays

DATASET_NAMES = ("mnist", "mini", "digits")
DIGITS_N_TEST = 297  # the last 297 of scikit-learn's 1797 digits are the test set

_NPZ_FORMS = ("a .npz file with keys x_train (n, ...), y_train (n,), x_test (m, ...), "
              "y_test (m,) and optionally n_classes, or an MNIST directory (the four "
              "IDX files, plain or .gz, or mnist.npz)")


def _load_digits(name: str) -> Dataset:
    """scikit-learn's bundled 8x8 digits: first 1500 for training, last 297 for test."""
    try:
        import sklearn
        from sklearn.datasets import load_digits
    except ImportError:
        raise ValueError("the 'digits' dataset comes with scikit-learn, which is not "
                         "installed; install it with: pip install 'mortal[digits]'") from None
    bunch = load_digits()
    images, target = np.asarray(bunch.images), np.asarray(bunch.target)
    if images.shape != (1797, 8, 8) or target.shape != (1797,) \
            or images.min() < 0 or images.max() > 16:
        raise ValueError(f"scikit-learn {sklearn.__version__}: load_digits returned images "
                         f"{images.shape} in {images.min()}..{images.max()} and labels "
                         f"{target.shape}; expected (1797, 8, 8) in 0..16 and (1797,)")
    x = images.reshape(len(images), 64).astype(np.float32) / np.float32(16.0)
    y = target.astype(np.int64)
    cut = len(y) - DIGITS_N_TEST
    return Dataset(x[:cut], y[:cut], x[cut:], y[cut:], n_classes=10, shape=(8, 8),
                   source=f"scikit-learn {sklearn.__version__} load_digits (UCI optdigits); "
                          f"first {cut} for training, last {DIGITS_N_TEST} for test",
                   name=name)


def _read_npz(path: Path) -> dict:
    """The arrays of a dataset .npz; any decoding failure is a ValueError naming ``path``."""
    try:
        return read_npz_arrays(path, optional=("n_classes",))
    except NPZ_ERRORS as e:
        kind = "zlib.error" if isinstance(e, zlib.error) else type(e).__name__
        raise ValueError(f"{path}: not a usable dataset .npz ({kind}: {e}); "
                         f"expected {_NPZ_FORMS}") from None


def _npz_inputs(x: np.ndarray, key: str, where: str) -> np.ndarray:
    """uint8 (n, ...) scaled by 1/255, or float (n, ...) within [0, 1]; -> float32 (n, d)."""
    if x.ndim < 2 or x.shape[0] < 1 or x.size == 0:
        raise ValueError(f"{where}: {key} must have shape (n, ...) with n >= 1 and at least "
                         f"one value per example, got {x.shape} (reshape (n,) to (n, 1))")
    flat = x.reshape(len(x), -1)
    if x.dtype == np.uint8:
        return flat.astype(np.float32) / np.float32(255.0)
    if x.dtype.kind != "f":
        raise ValueError(f"{where}: {key} has dtype {x.dtype}; expected uint8 (0..255, "
                         "scaled by 1/255) or float within [0, 1] (e.g. x.astype(np.float32) "
                         "/ x.max() for non-negative data)")
    bad = int((~np.isfinite(flat)).sum())
    if bad:
        raise ValueError(f"{where}: {key} holds {bad} non-finite values (NaN or inf)")
    lo, hi = float(flat.min()), float(flat.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{where}: float {key} must already lie within [0, 1], found "
                         f"{lo:.6g}..{hi:.6g}; scale it first (e.g. (x - x.min()) / "
                         "(x.max() - x.min())), or store uint8 0..255")
    return flat.astype(np.float32)


def _npz_labels(y: np.ndarray, n: int, key: str, where: str) -> np.ndarray:
    if y.dtype.kind not in "iu":
        raise ValueError(f"{where}: {key} must hold integer labels 0..k-1, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"{where}: expected {key} of shape ({n},) to match the inputs, "
                         f"got {y.shape}")
    if int(y.min()) < 0:
        raise ValueError(f"{where}: {key} must hold labels 0..k-1, found negative label "
                         f"{int(y.min())}")
    if int(y.max()) >= 2**31:
        raise ValueError(f"{where}: {key} holds label {int(y.max())}; labels must be 0..k-1")
    return y.astype(np.int64)


def _dataset_from_npz(path: Path, name: str) -> Dataset:
    a = _read_npz(path)
    where = str(path)
    x_train = _npz_inputs(a["x_train"], "x_train", where)
    x_test = _npz_inputs(a["x_test"], "x_test", where)
    shape = a["x_train"].shape[1:]
    if a["x_test"].shape[1:] != shape:
        raise ValueError(f"{where}: x_train examples have shape {shape} but x_test examples "
                         f"{a['x_test'].shape[1:]}")
    y_train = _npz_labels(a["y_train"], len(x_train), "y_train", where)
    y_test = _npz_labels(a["y_test"], len(x_test), "y_test", where)
    top = max(int(y_train.max()), int(y_test.max()))
    if "n_classes" in a:
        k = a["n_classes"]
        if k.ndim != 0 or k.dtype.kind not in "iu":
            raise ValueError(f"{where}: n_classes must be an integer scalar, got dtype "
                             f"{k.dtype} and shape {k.shape}")
        k = int(k)
        if k < max(2, top + 1):
            raise ValueError(f"{where}: n_classes is {k}, but it must be >= 2 and exceed "
                             f"the largest label {top}")
    else:
        k = top + 1
        if k < 2:
            raise ValueError(f"{where}: every label is 0; a dataset needs at least 2 "
                             "classes (store n_classes to declare them)")
    return Dataset(x_train, y_train, x_test, y_test, n_classes=k, shape=tuple(shape),
                   source=f"{path} (npz)", name=name)


def load_dataset(source: str | os.PathLike | None = None, *, name: str | None = None,
                 download: bool | None = None) -> Dataset:
    """Load a dataset by name or from a path.

    Parameters
    ----------
    source : str or path-like, optional
        One of

        - ``"mnist"`` (the default, also for None): full MNIST, 60000/10000
          examples, d = 784, k = 10, found as :func:`load_mnist` does;
        - ``"mini"``: the bundled MNIST subset, 6000/2000 examples;
        - ``"digits"``: scikit-learn's bundled 8x8 digits, 1797 examples,
          values 0..16 scaled by 1/16, d = 64, k = 10. The split is fixed:
          the first 1500 images are the training set, the last 297 the test
          set (:data:`DIGITS_N_TEST`). Works offline; needs
          ``pip install 'mortal[digits]'``;
        - a path to a ``.npz`` with keys ``x_train`` (n, ...), ``y_train``
          (n,), ``x_test`` (m, ...), ``y_test`` (m,): inputs uint8 (scaled by
          1/255) or float already within [0, 1], flattened to (n, d) with
          ``shape`` the per-example shape; integer labels 0..k-1 with
          k = largest label + 1, unless an integer scalar ``n_classes`` is stored;
        - a path to an MNIST directory (the four IDX files or ``mnist.npz``).

        The three names are matched exactly; pass a :class:`pathlib.Path` (or
        ``"./mnist"``) for a file or folder so named.
    name : str, optional
        The dataset's ``name``; default the keyword, the .npz file's stem, or
        ``"mnist"`` for an MNIST directory.
    download : bool, optional
        For ``"mnist"`` only, passed to :func:`load_mnist`.

    Returns
    -------
    Dataset
        Inputs float32 (n, d) in [0, 1], labels int64 (n,), and the same for
        the test set.

    Raises
    ------
    FileNotFoundError
        A path does not exist, or MNIST was not found (see :func:`load_mnist`).
    ValueError
        Malformed, corrupt or truncated data (the message names the file),
        float inputs outside [0, 1], bad labels, or scikit-learn missing.
    OSError
        An MNIST download failed.
    """
    if name is not None and not isinstance(name, str):
        raise ValueError(f"load_dataset: name must be a str, got {type(name).__name__}")
    if source is None or (isinstance(source, str) and source in DATASET_NAMES):
        key = source or "mnist"
        if key == "mnist":
            return mnist_dataset(load_mnist(download=download), name=name or "mnist")
        if key == "mini":
            return mnist_dataset(load_mnist_mini(), name=name or "mnist-mini")
        return _load_digits(name or "digits")
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"load_dataset: source must be one of {', '.join(DATASET_NAMES)} "
                         f"or a path, got {type(source).__name__}")
    p = Path(source).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"dataset path {p} does not exist and is not one of the names "
                                f"{', '.join(map(repr, DATASET_NAMES))}; expected {_NPZ_FORMS}")
    if p.is_file():
        if p.suffix != ".npz":
            raise ValueError(f"dataset path {p} is a file but not a .npz; expected {_NPZ_FORMS}")
        return _dataset_from_npz(p, name or p.stem)
    return mnist_dataset(load_given(p, "dataset path"), name=name or "mnist")
