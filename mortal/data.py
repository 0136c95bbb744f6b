"""MNIST data: loading, a bundled offline subset, and label embedding.

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
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import importlib.resources
import logging
import os
import tempfile
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "MNIST", "load_mnist", "load_mnist_mini", "cache_dir", "images_to_float",
    "embed_labels", "embed_neutral", "split_validation",
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


# ------------------------------------------------------------ label embedding

def images_to_float(images) -> np.ndarray:
    """Flatten uint8 images and scale to [0, 1].

    Parameters
    ----------
    images : ndarray of uint8, shape (n, 28, 28) or (n, 784)

    Returns
    -------
    ndarray of float32, shape (n, 784)
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise ValueError(f"images_to_float: expected a uint8 numpy array, got "
                         f"{getattr(images, 'dtype', type(images).__name__)}")
    if not (images.ndim == 3 and images.shape[1:] == (28, 28)
            or images.ndim == 2 and images.shape[1] == N_PIXELS):
        raise ValueError(f"images_to_float: expected shape (n, 28, 28) or (n, 784), "
                         f"got {images.shape}")
    return images.reshape(len(images), N_PIXELS).astype(np.float32) / np.float32(255)


def _check_x(x, fn: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{fn}: expected a float numpy array (use images_to_float), got "
                         f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 2 or x.shape[1] != N_PIXELS:
        raise ValueError(f"{fn}: expected x of shape (n, 784), got {x.shape}")
    return x.astype(np.float32, copy=True)


def _check_scalar(value, name: str, fn: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value):
        raise ValueError(f"{fn}: {name} must be a finite number, got {value!r}")
    return float(value)


def _check_labels(labels, n: int, fn: str) -> np.ndarray:
    arr = np.asarray(labels)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{fn}: labels must be integers, got dtype {arr.dtype}")
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.shape != (n,):
        raise ValueError(f"{fn}: expected labels of shape ({n},) to match x, got {arr.shape}")
    if n and (arr.min() < 0 or arr.max() >= N_CLASSES):
        raise ValueError(f"{fn}: labels must be in 0..9, found range "
                         f"{int(arr.min())}..{int(arr.max())}")
    return arr


def embed_labels(x, labels, strength: float = 1.0) -> np.ndarray:
    """Write one-hot labels into the first 10 pixels (Forward-Forward input).

    Parameters
    ----------
    x : ndarray of float, shape (n, 784)
    labels : int array-like, shape (n,), values 0..9; or one int for all rows
    strength : float
        Value of the "hot" pixel; the other nine are 0.

    Returns
    -------
    ndarray of float32, shape (n, 784)
        A copy of ``x``; ``x`` is not modified.
    """
    out = _check_x(x, "embed_labels")
    labels = _check_labels(labels, len(out), "embed_labels")
    strength = _check_scalar(strength, "strength", "embed_labels")
    out[:, :N_CLASSES] = 0.0
    out[np.arange(len(out)), labels] = strength
    return out


def embed_neutral(x, level: float = 0.1) -> np.ndarray:
    """Set the first 10 pixels to ``level`` (no label information).

    Parameters
    ----------
    x : ndarray of float, shape (n, 784)
    level : float

    Returns
    -------
    ndarray of float32, shape (n, 784), a copy.
    """
    out = _check_x(x, "embed_neutral")
    out[:, :N_CLASSES] = _check_scalar(level, "level", "embed_neutral")
    return out


def split_validation(mnist: MNIST, n_val: int, seed: int):
    """Hold out ``n_val`` training examples chosen by a seeded permutation.

    Parameters
    ----------
    mnist : MNIST
    n_val : int, 0 <= n_val < mnist.n_train
    seed : int >= 0
        Seed for ``numpy.random.default_rng``; the global state is untouched.

    Returns
    -------
    train_images : uint8 (n_train - n_val, 28, 28)
    train_labels : uint8 (n_train - n_val,)
    val_images : uint8 (n_val, 28, 28)
    val_labels : uint8 (n_val,)
        Copies, each part in the original order.
    """
    if not isinstance(mnist, MNIST):
        raise ValueError(f"split_validation: expected an MNIST, got {type(mnist).__name__}")
    n = mnist.n_train
    if isinstance(n_val, bool) or not isinstance(n_val, (int, np.integer)) \
            or not 0 <= n_val < n:
        raise ValueError(f"split_validation: n_val must be an int in 0..{n - 1}, got {n_val!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"split_validation: seed must be a non-negative int, got {seed!r}")
    perm = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return (mnist.train_images[train], mnist.train_labels[train],
            mnist.train_images[val], mnist.train_labels[val])
