"""MNIST as stored on disk: the :class:`MNIST` container and the readers of its files.

:class:`MNIST` holds uint8 images (n, 28, 28) and labels (n,), validated on
construction. :data:`RESOURCES` describes the four IDX files (names, magic
numbers, counts, and the checks a download must pass, used by
:mod:`mortal.data.download`). :func:`read_idx` decodes one IDX file (plain or
gzip); :func:`load_location` and :func:`load_given` load MNIST from a ``.npz``
file with keys ``x_train, y_train, x_test, y_test`` or from a directory holding
the four IDX files (plain or ``.gz``) or ``mnist.npz``. Where to look is decided
by :func:`mortal.data.mnist.load_mnist`.

MNIST is by Y. LeCun, C. Cortes and C. J. C. Burges, licensed CC BY-SA 3.0.
"""

from __future__ import annotations

import dataclasses
import gzip
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

N_PIXELS = 784
N_CLASSES = 10
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


@dataclasses.dataclass(frozen=True)
class Resource:
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
RESOURCES = (
    Resource("train-images-idx3-ubyte", "train_images", IMAGES_MAGIC, 60000,
              "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
              mean_pixel=33.318),
    Resource("train-labels-idx1-ubyte", "train_labels", LABELS_MAGIC, 60000,
              "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
              class_counts=(5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)),
    Resource("t10k-images-idx3-ubyte", "test_images", IMAGES_MAGIC, 10000,
              "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
              mean_pixel=33.791),
    Resource("t10k-labels-idx1-ubyte", "test_labels", LABELS_MAGIC, 10000,
              "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
              class_counts=(980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
              first_labels=(7, 2, 1, 0, 4, 1, 4, 9, 5, 9)),
)
FORMS = ("a .npz file with keys x_train, y_train, x_test, y_test, or a directory "
          "holding the four IDX files " + ", ".join(r.stem for r in RESOURCES)
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


def read_idx(path, expected_magic: int, data: bytes | None = None) -> np.ndarray:
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


# What a corrupt or truncated archive can raise while numpy and zipfile decode it.
NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, IndexError, TypeError,
              OverflowError, SyntaxError, NotImplementedError, RuntimeError,
              zipfile.BadZipFile, zlib.error, struct.error)


def read_npz_arrays(path: Path, optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays ``NPZ_KEYS`` (and those of ``optional`` that are present) of an .npz file.

    Raises one of ``NPZ_ERRORS`` for anything that is not such an archive (a missing key, a
    single array, a corrupt or truncated file); callers turn it into their own message.
    """
    # Own the handle: np.load leaks it when the zip is corrupt.
    with open(path, "rb") as fh:
        f = np.load(fh, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not an archive")
        with f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise ValueError(f"missing keys {missing} (has {sorted(f.files)})")
            keys = NPZ_KEYS + tuple(k for k in optional if k in f.files)
            return {k: f[k] for k in keys}


def _load_npz(path: Path) -> MNIST:
    try:
        arrays = read_npz_arrays(path)
    except NPZ_ERRORS as e:
        raise ValueError(f"{path}: not a usable MNIST .npz ({e}); expected keys "
                         f"{', '.join(NPZ_KEYS)}") from None
    return MNIST(*(arrays[k] for k in NPZ_KEYS), source=f"{path} (npz)")


def idx_files(directory: Path) -> dict:
    """Map resource stem -> existing file (plain preferred over .gz)."""
    found = {}
    for r in RESOURCES:
        for name in (r.stem, r.stem + ".gz"):
            if (directory / name).is_file():
                found[r.stem] = directory / name
                break
    return found


def load_idx_dir(directory: Path, files: dict) -> MNIST:
    arrays = {r.field: read_idx(files[r.stem], r.magic) for r in RESOURCES}
    return MNIST(**arrays, source=f"{directory} (IDX files)")


def load_location(p: Path, what: str) -> MNIST | None:
    """Load from a file or directory; None if a directory holds no data."""
    if p.is_file():
        if p.suffix != ".npz":
            raise ValueError(f"{what} {p} is a file but not a .npz; expected {FORMS}")
        return _load_npz(p)
    files = idx_files(p)
    if len(files) == len(RESOURCES):
        return load_idx_dir(p, files)
    if (p / "mnist.npz").is_file():
        return _load_npz(p / "mnist.npz")
    if files:
        missing = [r.stem for r in RESOURCES if r.stem not in files]
        raise FileNotFoundError(f"{what} {p} holds only some IDX files; missing "
                                f"{', '.join(missing)} (plain or .gz)")
    return None


def load_given(p: Path, what: str) -> MNIST:
    """Load from a place the user named; any failure is an error."""
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} does not exist; expected {FORMS}")
    result = load_location(p, what)
    if result is None:
        raise FileNotFoundError(f"{what} {p} is a directory without MNIST data; "
                                f"expected {FORMS}")
    return result
