"""Datasets for the learner: ``(n, d)`` inputs in [0, 1] with ``k`` classes.

:class:`Dataset` is what the learner consumes: float32 inputs of shape (n, d)
within [0, 1], int64 labels 0..k-1, the per-example shape before flattening,
and where the data came from. :func:`load_dataset` makes one from

- ``"mnist"``: full MNIST, found by :func:`load_mnist` (below);
- ``"mini"``: the bundled 6000/2000 MNIST subset (:func:`load_mnist_mini`);
- ``"digits"``: scikit-learn's bundled 8x8 digits (needs ``mortal[digits]``);
- a path: any ``.npz`` with keys ``x_train, y_train, x_test, y_test`` of any
  per-example shape, or an MNIST folder (IDX files or ``mnist.npz``).

:func:`mnist_dataset` converts an :class:`MNIST` (uint8 images) into a
:class:`Dataset`.

Where :func:`load_mnist` looks, in order:

1. the ``path`` argument;
2. the ``MORTAL_DATA`` environment variable;
3. the cache folder ``$MORTAL_CACHE``, else ``$XDG_CACHE_HOME/mortal``, else
   ``~/.cache/mortal``;
4. a download of the four gzipped IDX files into the cache folder (unless
   ``download=False`` or ``MORTAL_OFFLINE=1``).

A location is a ``.npz`` file with keys ``x_train, y_train, x_test, y_test``,
or a directory holding the four IDX files (plain or ``.gz``) or ``mnist.npz``.
An explicit ``path`` or a set ``MORTAL_DATA`` that is missing or malformed is an
error; the loader never silently falls through to another place.

:func:`load_mnist_mini` returns a class-balanced 6000/2000 subset shipped in the
package (``mortal/_mini/mnist_mini.npz``); it needs no files and no network.

MNIST is by Y. LeCun, C. Cortes and C. J. C. Burges, licensed CC BY-SA 3.0.
The 8x8 digits are the UCI "Optical Recognition of Handwritten Digits" test
set (E. Alpaydin and C. Kaynak), as bundled with scikit-learn.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import importlib.resources
import logging
import math
import numbers
import os
import struct
import tempfile
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "Dataset", "load_dataset", "mnist_dataset",
    "MNIST", "load_mnist", "load_mnist_mini", "cache_dir",
]

log = logging.getLogger(__name__)

N_PIXELS = 784
N_CLASSES = 10
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


@dataclasses.dataclass(frozen=True)
class _Resource:
    """One MNIST IDX file and what its downloaded form must satisfy."""

    stem: str                 # file name without ".gz"
    field: str                # MNIST attribute it fills
    magic: int
    count: int
    sha256: str               # of the .gz as served by the mirrors
    class_counts: tuple = ()  # labels only
    first_labels: tuple = ()  # labels only
    mean_pixel: float | None = None  # images only, to 3 decimals


# Downloads are checked twice. (1) sha256 of each .gz against the published
# sums below (the ones torchvision and TFDS pin; they could not be re-derived
# on this offline machine, but appear identically in many independent public
# sources). (2) the decoded content: magic number, count, 28x28 shape, and the
# data README's class counts, first ten test labels and mean pixel values.
_RESOURCES = (
    _Resource("train-images-idx3-ubyte", "train_images", IMAGES_MAGIC, 60000,
              "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
              mean_pixel=33.318),
    _Resource("train-labels-idx1-ubyte", "train_labels", LABELS_MAGIC, 60000,
              "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
              class_counts=(5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)),
    _Resource("t10k-images-idx3-ubyte", "test_images", IMAGES_MAGIC, 10000,
              "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
              mean_pixel=33.791),
    _Resource("t10k-labels-idx1-ubyte", "test_labels", LABELS_MAGIC, 10000,
              "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
              class_counts=(980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
              first_labels=(7, 2, 1, 0, 4, 1, 4, 9, 5, 9)),
)
_MAX_DOWNLOAD_BYTES = 20_000_000

_FORMS = ("a .npz file with keys x_train, y_train, x_test, y_test, or a directory "
          "holding the four IDX files " + ", ".join(r.stem for r in _RESOURCES)
          + " (each plain or .gz), or a directory containing mnist.npz")


@dataclasses.dataclass(frozen=True, eq=False)
class MNIST:
    """MNIST images and labels, validated on construction.

    Attributes
    ----------
    train_images : ndarray of uint8, shape (n_train, 28, 28)
    train_labels : ndarray of uint8, shape (n_train,), values 0..9
    test_images : ndarray of uint8, shape (n_test, 28, 28)
    test_labels : ndarray of uint8, shape (n_test,), values 0..9
    source : str
        Where the data came from.
    """

    train_images: np.ndarray = dataclasses.field(repr=False)
    train_labels: np.ndarray = dataclasses.field(repr=False)
    test_images: np.ndarray = dataclasses.field(repr=False)
    test_labels: np.ndarray = dataclasses.field(repr=False)
    source: str = ""

    def __post_init__(self):
        _check_pair(self.train_images, self.train_labels, f"{self.source}: training set")
        _check_pair(self.test_images, self.test_labels, f"{self.source}: test set")

    @property
    def n_train(self) -> int:
        return len(self.train_labels)

    @property
    def n_test(self) -> int:
        return len(self.test_labels)


def _check_pair(images, labels, where: str) -> None:
    if not isinstance(images, np.ndarray) or not isinstance(labels, np.ndarray):
        raise ValueError(f"{where}: images and labels must be numpy arrays, got "
                         f"{type(images).__name__} and {type(labels).__name__}")
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise ValueError(f"{where}: expected dtype uint8 for images and labels, got "
                         f"{images.dtype} and {labels.dtype}")
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) == 0:
        raise ValueError(f"{where}: expected images of shape (n, 28, 28) with n >= 1, "
                         f"got {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"{where}: expected labels of shape ({len(images)},) to match "
                         f"{len(images)} images, got {labels.shape}")
    if labels.max() >= N_CLASSES:
        raise ValueError(f"{where}: labels must be in 0..9, found {int(labels.max())}")


# ----------------------------------------------------------------- file formats

def _read_idx(path, expected_magic: int, data: bytes | None = None) -> np.ndarray:
    """Decode an IDX file (plain or gzip) of unsigned bytes.

    ``path`` names the file in messages; it is read unless ``data`` is given.
    Returns uint8 array, shape (n, 28, 28) for magic 2051 or (n,) for 2049.
    """
    if data is None:
        data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: not a valid gzip file ({e})") from None
    kind = "images" if expected_magic == IMAGES_MAGIC else "labels"
    ndim = 3 if expected_magic == IMAGES_MAGIC else 1
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: too short ({len(data)} bytes) for an IDX {kind} file")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{path}: expected IDX magic number {expected_magic} ({kind}, "
                         f"uint8, {ndim}-d), found {magic}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != (28, 28):
        raise ValueError(f"{path}: expected 28x28 images, header says {dims[1]}x{dims[2]}")
    start, expected = 4 + 4 * ndim, int(np.prod(dims))
    if len(data) - start != expected:
        raise ValueError(f"{path}: header declares {dims} = {expected} bytes of data, "
                         f"file holds {len(data) - start}")
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(dims).copy()


def _load_npz(path: Path) -> MNIST:
    try:
        # Own the handle: np.load leaks it when the zip is corrupt.
        with open(path, "rb") as fh:
            f = np.load(fh, allow_pickle=False)
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise ValueError("it holds a single array, not an archive")
            with f:
                missing = [k for k in NPZ_KEYS if k not in f.files]
                if missing:
                    raise ValueError(f"missing keys {missing} (has {sorted(f.files)})")
                arrays = [f[k] for k in NPZ_KEYS]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a usable MNIST .npz ({e}); expected keys "
                         f"{', '.join(NPZ_KEYS)}") from None
    return MNIST(*arrays, source=f"{path} (npz)")


def _idx_files(directory: Path) -> dict:
    """Map resource stem -> existing file (plain preferred over .gz)."""
    found = {}
    for r in _RESOURCES:
        for name in (r.stem, r.stem + ".gz"):
            if (directory / name).is_file():
                found[r.stem] = directory / name
                break
    return found


def _load_idx_dir(directory: Path, files: dict) -> MNIST:
    arrays = {r.field: _read_idx(files[r.stem], r.magic) for r in _RESOURCES}
    return MNIST(**arrays, source=f"{directory} (IDX files)")


def _load_location(p: Path, what: str) -> MNIST | None:
    """Load from a file or directory; None if a directory holds no data."""
    if p.is_file():
        if p.suffix != ".npz":
            raise ValueError(f"{what} {p} is a file but not a .npz; expected {_FORMS}")
        return _load_npz(p)
    files = _idx_files(p)
    if len(files) == len(_RESOURCES):
        return _load_idx_dir(p, files)
    if (p / "mnist.npz").is_file():
        return _load_npz(p / "mnist.npz")
    if files:
        missing = [r.stem for r in _RESOURCES if r.stem not in files]
        raise FileNotFoundError(f"{what} {p} holds only some IDX files; missing "
                                f"{', '.join(missing)} (plain or .gz)")
    return None


def _load_given(p: Path, what: str) -> MNIST:
    """Load from a place the user named; any failure is an error."""
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} does not exist; expected {_FORMS}")
    result = _load_location(p, what)
    if result is None:
        raise FileNotFoundError(f"{what} {p} is a directory without MNIST data; "
                                f"expected {_FORMS}")
    return result


# --------------------------------------------------------------------- download

def cache_dir() -> Path:
    """The per-user cache folder: ``$MORTAL_CACHE``, ``$XDG_CACHE_HOME/mortal``
    or ``~/.cache/mortal`` (not created here)."""
    if os.environ.get("MORTAL_CACHE"):
        return Path(os.environ["MORTAL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mortal"


def _fetch(url: str, timeout: float = 60.0) -> bytes:
    """Return the body at ``url`` (https or file); tests replace this."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data = response.read(_MAX_DOWNLOAD_BYTES + 1)
    if len(data) > _MAX_DOWNLOAD_BYTES:
        raise ValueError(f"more than {_MAX_DOWNLOAD_BYTES} bytes")
    return data


def _check_download(r: _Resource, data: bytes, url: str) -> None:
    """Raise ValueError unless ``data`` is the genuine gzipped file ``r``."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != r.sha256:
        raise ValueError(f"sha256 {digest}, expected {r.sha256}")
    arr = _read_idx(url, r.magic, data)
    if len(arr) != r.count:
        raise ValueError(f"{len(arr)} items, expected {r.count}")
    if r.class_counts:
        if arr.max() >= N_CLASSES:
            raise ValueError(f"label {int(arr.max())} outside 0..9")
        counts = tuple(np.bincount(arr, minlength=N_CLASSES).tolist())
        if counts != r.class_counts:
            raise ValueError(f"class counts {counts}, expected {r.class_counts}")
    if r.first_labels and tuple(arr[:len(r.first_labels)].tolist()) != r.first_labels:
        raise ValueError(f"first labels {arr[:len(r.first_labels)].tolist()}, "
                         f"expected {list(r.first_labels)}")
    if r.mean_pixel is not None and abs(arr.mean(dtype=np.float64) - r.mean_pixel) > 5e-4:
        raise ValueError(f"mean pixel {arr.mean():.4f}, expected {r.mean_pixel}")


def _write_atomic(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _download(directory: Path) -> MNIST:
    """Fetch the missing .gz files into ``directory``, verified, then load them."""
    directory.mkdir(parents=True, exist_ok=True)
    have = _idx_files(directory)
    for r in _RESOURCES:
        if r.stem in have:
            continue
        failures = []
        for mirror in MIRRORS:
            url = mirror.rstrip("/") + "/" + r.stem + ".gz"
            try:
                log.info("mortal: downloading %s", url)
                data = _fetch(url)
                _check_download(r, data, url)
            except (OSError, ValueError, http.client.HTTPException) as e:
                failures.append(f"  {url}: {e}")
                continue
            _write_atomic(directory / (r.stem + ".gz"), data)
            break
        else:
            raise OSError(f"could not download {r.stem}.gz into {directory}:\n"
                          + "\n".join(failures) + "\nProvide the data yourself instead "
                          "(load_mnist(path), MORTAL_DATA, or the four .gz files in "
                          f"{directory}), or use load_mnist_mini().")
    mnist = _load_idx_dir(directory, _idx_files(directory))
    return dataclasses.replace(mnist, source=f"{directory} (IDX files, downloaded)")


def _offline() -> bool:
    return os.environ.get("MORTAL_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def load_mnist(path: str | os.PathLike | None = None, *, download: bool | None = None) -> MNIST:
    """Load the full MNIST set (60000 training, 10000 test images).

    Parameters
    ----------
    path : str or path-like, optional
        A ``.npz`` file (keys ``x_train, y_train, x_test, y_test``), or a
        directory with the four IDX files (plain or ``.gz``) or ``mnist.npz``.
        If given, only this place is tried.
    download : bool, optional
        Allow downloading into the cache folder when nothing is found.
        Default: allowed unless the environment has ``MORTAL_OFFLINE=1``.

    Returns
    -------
    MNIST
        ``train_images`` (n, 28, 28) uint8, ``train_labels`` (n,) uint8, the
        same for the test set, and ``source``.

    Raises
    ------
    FileNotFoundError
        A given path does not exist, or nothing was found and downloading is
        off; the message lists the places searched.
    ValueError
        The data found is malformed (bad magic number, shape, dtype, labels).
    OSError
        Every mirror failed for some file during a download.
    """
    if path is not None:
        return _load_given(Path(path).expanduser(), "MNIST path")
    looked = ["path argument: not given"]
    env = os.environ.get("MORTAL_DATA")
    if env:
        return _load_given(Path(env).expanduser(), "MORTAL_DATA")
    looked.append("MORTAL_DATA environment variable: not set")
    cache = cache_dir()
    have = _idx_files(cache) if cache.is_dir() else {}
    if len(have) == len(_RESOURCES) or (cache / "mnist.npz").is_file():
        return _load_location(cache, "cache folder")
    looked.append(f"cache folder {cache}: {len(have)} of the 4 IDX files, no mnist.npz")
    allowed = (not _offline()) if download is None else bool(download)
    if allowed:
        return _download(cache)
    why = "download=False" if download is False else "MORTAL_OFFLINE is set"
    raise FileNotFoundError(
        "MNIST data not found. Looked in:\n" + "".join(f"  - {p}\n" for p in looked)
        + f"and did not download ({why}).\nProvide it as {_FORMS}, in one of these "
        f"ways:\n  - pass it as load_mnist(path)\n  - set MORTAL_DATA to it\n"
        f"  - put the files in the cache folder {cache} (MORTAL_CACHE moves it)\n"
        "  - or allow downloading (download=True, or unset MORTAL_OFFLINE).\n"
        "load_mnist_mini() always works offline with a bundled 6000/2000 subset.")


def load_mnist_mini() -> MNIST:
    """The bundled subset: 6000 training (600 per class) and 2000 test images
    (200 per class), same layout as :func:`load_mnist`. Works offline."""
    res = importlib.resources.files(__package__).joinpath("_mini").joinpath("mnist_mini.npz")
    with res.open("rb") as fh, np.load(fh, allow_pickle=False) as f:
        arrays = [f[k] for k in NPZ_KEYS]
    return MNIST(*arrays, source="mortal/_mini/mnist_mini.npz (bundled subset)")


# ------------------------------------------------------------- any dataset

DATASET_NAMES = ("mnist", "mini", "digits")
DIGITS_N_TEST = 297  # the last 297 of scikit-learn's 1797 digits are the test set

_NPZ_FORMS = ("a .npz file with keys x_train (n, ...), y_train (n,), x_test (m, ...), "
              "y_test (m,) and optionally n_classes, or an MNIST directory (the four "
              "IDX files, plain or .gz, or mnist.npz)")

# What a corrupt or truncated archive can raise while numpy and zipfile decode it.
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, IndexError, TypeError,
               OverflowError, SyntaxError, NotImplementedError, RuntimeError,
               zipfile.BadZipFile, zlib.error, struct.error)


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
        # Own the handle: np.load leaks it when the zip is corrupt.
        with open(path, "rb") as fh:
            f = np.load(fh, allow_pickle=False)
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise ValueError("it holds a single array, not an archive")
            with f:
                missing = [k for k in NPZ_KEYS if k not in f.files]
                if missing:
                    raise ValueError(f"missing keys {missing} (has {sorted(f.files)})")
                keys = NPZ_KEYS + (("n_classes",) if "n_classes" in f.files else ())
                return {k: f[k] for k in keys}
    except _NPZ_ERRORS as e:
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
    return mnist_dataset(_load_given(p, "dataset path"), name=name or "mnist")
