"""Downloading MNIST into the per-user cache folder, verified before it is kept.

:func:`cache_dir` names the cache folder; :func:`download_mnist` fetches the
missing gzipped IDX files from :data:`MIRRORS` (in order), checks each against
its published sha256 and its decoded content (:data:`mortal.data.mnist_files.RESOURCES`),
writes it atomically and loads the folder. Tests replace :func:`_fetch` and
:data:`MIRRORS`, and patch ``mortal.data.mnist_files.RESOURCES``, which is
therefore looked up through that module at call time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from . import mnist_files
from .mnist_files import MNIST, N_CLASSES, Resource, idx_files, load_idx_dir, read_idx

log = logging.getLogger(__package__)  # "mortal.data", as before the package split

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_MAX_DOWNLOAD_BYTES = 20_000_000


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


def _check_download(r: Resource, data: bytes, url: str) -> None:
    """Raise ValueError unless ``data`` is the genuine gzipped file ``r``."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != r.sha256:
        raise ValueError(f"sha256 {digest}, expected {r.sha256}")
    arr = read_idx(url, r.magic, data)
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


def download_mnist(directory: Path) -> MNIST:
    """Fetch the missing .gz files into ``directory``, verified, then load them."""
    directory.mkdir(parents=True, exist_ok=True)
    have = idx_files(directory)
    for r in mnist_files.RESOURCES:
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
    mnist = load_idx_dir(directory, idx_files(directory))
    return dataclasses.replace(mnist, source=f"{directory} (IDX files, downloaded)")
