"""Datasets for the learner: ``(n, d)`` inputs in [0, 1] with ``k`` classes.

:class:`Dataset` is what the learner consumes: float32 inputs of shape (n, d)
within [0, 1], int64 labels 0..k-1, the per-example shape before flattening,
and where the data came from. :func:`load_dataset` makes one from

- ``"mnist"``: full MNIST, found by :func:`load_mnist`;
- ``"mini"``: the bundled 6000/2000 MNIST subset (:func:`load_mnist_mini`);
- ``"digits"``: scikit-learn's bundled 8x8 digits (needs ``mortal[digits]``);
- a path: any ``.npz`` with keys ``x_train, y_train, x_test, y_test`` of any
  per-example shape, or an MNIST folder (IDX files or ``mnist.npz``).

:func:`mnist_dataset` converts an :class:`MNIST` (uint8 images) into a
:class:`Dataset`.

This package only re-exports; the code lives in

- :mod:`mortal.data.mnist_files`: the :class:`MNIST` container and reading its
  files (IDX, ``.npz``, folders);
- :mod:`mortal.data.download`: the cache folder (:func:`cache_dir`) and the
  verified download;
- :mod:`mortal.data.mnist`: where :func:`load_mnist` looks, and
  :func:`load_mnist_mini`;
- :mod:`mortal.data.dataset`: :class:`Dataset` and :func:`mnist_dataset`;
- :mod:`mortal.data.sources`: :func:`load_dataset`, ``.npz`` datasets and the
  8x8 digits.

MNIST is by Y. LeCun, C. Cortes and C. J. C. Burges, licensed CC BY-SA 3.0.
The 8x8 digits are the UCI "Optical Recognition of Handwritten Digits" test
set (E. Alpaydin and C. Kaynak), as bundled with scikit-learn.
"""

from __future__ import annotations

from .dataset import Dataset, mnist_dataset
from .download import cache_dir
from .mnist import load_mnist, load_mnist_mini
from .mnist_files import IMAGES_MAGIC, LABELS_MAGIC, MNIST, N_CLASSES, N_PIXELS, NPZ_KEYS
from .sources import DATASET_NAMES, DIGITS_N_TEST, load_dataset

__all__ = [
    "Dataset", "load_dataset", "mnist_dataset",
    "MNIST", "load_mnist", "load_mnist_mini", "cache_dir",
]
