"""The :class:`Dataset` the learner consumes, and :func:`mnist_dataset` to make one from MNIST.

A :class:`Dataset` holds float32 inputs of shape (n, d) within [0, 1], int64
labels 0..k-1, the per-example shape before flattening, and where the data
came from; it is validated on construction. :meth:`Dataset.subset` keeps the
first examples of each split.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from .mnist_files import MNIST, N_CLASSES, N_PIXELS


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset as the learner consumes it, validated on construction.

    Attributes
    ----------
    train_inputs : ndarray of float32, shape (n, d)
        Finite, within [0, 1]; each row is one example flattened in C order.
    train_labels : ndarray of int64, shape (n,)
        Values 0..n_classes-1.
    test_inputs : ndarray of float32, shape (m, d)
    test_labels : ndarray of int64, shape (m,)
    n_classes : int
        Number of classes k >= 2 (a class may have no examples).
    shape : tuple of int
        Shape of one example before flattening, e.g. ``(28, 28)``, ``(8, 8)``
        or ``(d,)``; its product is d.
    source : str
        Where the data came from.
    name : str
        Short name, e.g. ``"mnist"``, ``"digits"`` or a file's stem.

    Raises
    ------
    ValueError
        On construction, if any of the above does not hold; n and m must be >= 1.
    """

    train_inputs: np.ndarray = dataclasses.field(repr=False)
    train_labels: np.ndarray = dataclasses.field(repr=False)
    test_inputs: np.ndarray = dataclasses.field(repr=False)
    test_labels: np.ndarray = dataclasses.field(repr=False)
    n_classes: int
    shape: tuple[int, ...]
    source: str
    name: str

    def __post_init__(self):
        for attr in ("source", "name"):
            if not isinstance(getattr(self, attr), str):
                raise ValueError(f"Dataset: {attr} must be a str, got "
                                 f"{type(getattr(self, attr)).__name__}")
        where = f"Dataset {self.name!r} ({self.source})"
        k = self.n_classes
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 2:
            raise ValueError(f"{where}: n_classes must be an int >= 2, got {k!r}")
        object.__setattr__(self, "n_classes", int(k))
        shape = self.shape
        if not isinstance(shape, tuple) or not shape or any(
                isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1
                for s in shape):
            raise ValueError(f"{where}: shape must be a non-empty tuple of positive ints, "
                             f"got {shape!r}")
        object.__setattr__(self, "shape", tuple(int(s) for s in shape))
        d = _check_split(self.train_inputs, self.train_labels, self.n_classes, None,
                         f"{where}: train")
        _check_split(self.test_inputs, self.test_labels, self.n_classes, d, f"{where}: test")
        if math.prod(self.shape) != d:
            raise ValueError(f"{where}: shape {self.shape} holds {math.prod(self.shape)} "
                             f"values but the inputs have d = {d} columns")

    @property
    def n_train(self) -> int:
        """Number of training examples n."""
        return len(self.train_labels)

    @property
    def n_test(self) -> int:
        """Number of test examples m."""
        return len(self.test_labels)

    @property
    def n_inputs(self) -> int:
        """Input width d (the product of ``shape``)."""
        return self.train_inputs.shape[1]

    def with_shape(self, shape: tuple[int, ...]) -> Dataset:
        """The same examples with each one's ``shape`` given anew (for data stored flat); ValueError
        unless ``shape`` is (H, W) or (H, W, C) of positive ints holding exactly ``n_inputs`` values."""
        shape = tuple(shape)
        if len(shape) not in (2, 3) or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1
                                           for v in shape):
            raise ValueError(f"shape must be (H, W) or (H, W, C) of positive integers, got {list(shape)}")
        if math.prod(shape) != self.n_inputs:
            raise ValueError(f"shape {','.join(map(str, shape))} holds {math.prod(shape)} values; the examples of "
                             f"{self.source} have {self.n_inputs}")
        return dataclasses.replace(self, shape=tuple(int(v) for v in shape))

    def subset(self, train_size: int | None = None, test_size: int | None = None) -> Dataset:
        """The first ``train_size`` training and ``test_size`` test examples.

        Parameters
        ----------
        train_size, test_size : int, optional
            How many examples to keep, 1..n_train and 1..n_test; None keeps all.

        Returns
        -------
        Dataset
            Same ``n_classes``, ``shape`` and ``name``; ``source`` notes the
            cut. Shortened arrays are copies (they do not keep the full arrays
            alive).

        Raises
        ------
        ValueError
            A size is not an int, is < 1 or exceeds what is available.
        """
        n = _subset_size(train_size, self.n_train, "train_size")
        m = _subset_size(test_size, self.n_test, "test_size")
        if (n, m) == (self.n_train, self.n_test):
            return dataclasses.replace(self)

        def cut(a, k):
            return a if k == len(a) else a[:k].copy()
        return dataclasses.replace(
            self, train_inputs=cut(self.train_inputs, n), train_labels=cut(self.train_labels, n),
            test_inputs=cut(self.test_inputs, m), test_labels=cut(self.test_labels, m),
            source=f"{self.source}; first {n} of {self.n_train} training and "
                   f"{m} of {self.n_test} test examples")


def _subset_size(size, available: int, what: str) -> int:
    if size is None:
        return available
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) \
            or not 1 <= size <= available:
        raise ValueError(f"subset: {what} must be an int in 1..{available} (the examples "
                         f"available), got {size!r}")
    return int(size)


def _check_split(inputs, labels, k: int, d: int | None, where: str) -> int:
    """Validate one split of a Dataset; return its input width d."""
    if not isinstance(inputs, np.ndarray) or not isinstance(labels, np.ndarray):
        raise ValueError(f"{where}: inputs and labels must be numpy arrays, got "
                         f"{type(inputs).__name__} and {type(labels).__name__}")
    if inputs.dtype != np.float32:
        raise ValueError(f"{where}: inputs must be float32, got {inputs.dtype}")
    if inputs.ndim != 2 or inputs.shape[0] < 1 or inputs.shape[1] < 1:
        raise ValueError(f"{where}: inputs must have shape (n, d) with n, d >= 1, "
                         f"got {inputs.shape}")
    if d is not None and inputs.shape[1] != d:
        raise ValueError(f"{where}: inputs have {inputs.shape[1]} columns, the training "
                         f"inputs {d}")
    if not np.isfinite(inputs).all():
        raise ValueError(f"{where}: inputs hold {int((~np.isfinite(inputs)).sum())} "
                         "non-finite values (NaN or inf)")
    lo, hi = float(inputs.min()), float(inputs.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{where}: inputs must lie within [0, 1], found {lo:.6g}..{hi:.6g}")
    if labels.dtype != np.int64:
        raise ValueError(f"{where}: labels must be int64, got {labels.dtype}")
    if labels.shape != (len(inputs),):
        raise ValueError(f"{where}: expected labels of shape ({len(inputs)},) to match the "
                         f"inputs, got {labels.shape}")
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"{where}: labels must be in 0..{k - 1}, found "
                         f"{int(labels.min())}..{int(labels.max())}")
    return inputs.shape[1]


def mnist_dataset(mnist: MNIST, *, name: str = "mnist") -> Dataset:
    """Convert :class:`MNIST` into a :class:`Dataset`.

    Parameters
    ----------
    mnist : MNIST
        uint8 images (n, 28, 28) and labels (n,).
    name : str

    Returns
    -------
    Dataset
        Inputs ``images.reshape(n, 784).astype(np.float32) / np.float32(255.0)``
        (float32, (n, 784)), int64 labels, ``n_classes`` 10, ``shape`` (28, 28),
        and ``mnist.source``.
    """
    if not isinstance(mnist, MNIST):
        raise ValueError(f"mnist_dataset: expected an MNIST, got {type(mnist).__name__}")

    def flat(images):
        return images.reshape(len(images), N_PIXELS).astype(np.float32) / np.float32(255.0)
    return Dataset(flat(mnist.train_images), mnist.train_labels.astype(np.int64),
                   flat(mnist.test_images), mnist.test_labels.astype(np.int64),
                   n_classes=N_CLASSES, shape=(28, 28), source=mnist.source, name=name)
