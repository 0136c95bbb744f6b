"""Finding full MNIST (:func:`load_mnist`) and the bundled subset (:func:`load_mnist_mini`).

Where :func:`load_mnist` looks, in order:

1. the ``path`` argument;
2. the ``MORTAL_DATA`` environment variable;
3. the cache folder ``$MORTAL_CACHE``, else ``$XDG_CACHE_HOME/mortal``, else
   ``~/.cache/mortal``;
4. a download of the four gzipped IDX files into the cache folder (unless
   ``download=False`` or ``MORTAL_OFFLINE=1``), by :mod:`mortal.data.download`.

A location is a ``.npz`` file with keys ``x_train, y_train, x_test, y_test``,
or a directory holding the four IDX files (plain or ``.gz``) or ``mnist.npz``
(read by :mod:`mortal.data.mnist_files`). An explicit ``path`` or a set
``MORTAL_DATA`` that is missing or malformed is an error; the loader never
silently falls through to another place.

:func:`load_mnist_mini` returns a class-balanced 6000/2000 subset shipped in the
package (``mortal/_mini/mnist_mini.npz``); it needs no files and no network.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import numpy as np

from . import mnist_files
from .download import cache_dir, download_mnist
from .mnist_files import FORMS, MNIST, NPZ_KEYS, idx_files, load_given, load_location


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
        return load_given(Path(path).expanduser(), "MNIST path")
    looked = ["path argument: not given"]
    env = os.environ.get("MORTAL_DATA")
    if env:
        return load_given(Path(env).expanduser(), "MORTAL_DATA")
    looked.append("MORTAL_DATA environment variable: not set")
    cache = cache_dir()
    have = idx_files(cache) if cache.is_dir() else {}
    if len(have) == len(mnist_files.RESOURCES) or (cache / "mnist.npz").is_file():
        return load_location(cache, "cache folder")
    looked.append(f"cache folder {cache}: {len(have)} of the 4 IDX files, no mnist.npz")
    allowed = (not _offline()) if download is None else bool(download)
    if allowed:
        return download_mnist(cache)
    why = "download=False" if download is False else "MORTAL_OFFLINE is set"
    raise FileNotFoundError(
        "MNIST data not found. Looked in:\n" + "".join(f"  - {p}\n" for p in looked)
        + f"and did not download ({why}).\nProvide it as {FORMS}, in one of these "
        f"ways:\n  - pass it as load_mnist(path)\n  - set MORTAL_DATA to it\n"
        f"  - put the files in the cache folder {cache} (MORTAL_CACHE moves it)\n"
        "  - or allow downloading (download=True, or unset MORTAL_OFFLINE).\n"
        "load_mnist_mini() always works offline with a bundled 6000/2000 subset.")


def load_mnist_mini() -> MNIST:
    """The bundled subset: 6000 training (600 per class) and 2000 test images
    (200 per class), same layout as :func:`load_mnist`. Works offline."""
    res = importlib.resources.files("mortal").joinpath("_mini").joinpath("mnist_mini.npz")
    with res.open("rb") as fh, np.load(fh, allow_pickle=False) as f:
        arrays = [f[k] for k in NPZ_KEYS]
    return MNIST(*arrays, source="mortal/_mini/mnist_mini.npz (bundled subset)")
