"""Tests for mortal.data: MNIST loading, bundled subset, download, and generic datasets."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from mortal import data
from mortal.data import download, mnist_files
from mortal.data import (MNIST, Dataset, cache_dir, load_dataset, load_mnist, load_mnist_mini,
                         mnist_dataset)

ROOT = Path(__file__).resolve().parents[1]
# Read before the autouse fixture clears the variable.
FULL_PATH = Path(os.environ.get("MORTAL_DATA") or ROOT.parent / "shared" / "data" / "mnist.npz")
FULL_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
FULL_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
REAL_FETCH = download._fetch
STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No real cache, no data variable, and no network in any test."""
    for var in ("MORTAL_DATA", "MORTAL_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MORTAL_CACHE", str(tmp_path / "cache"))

    def no_network(url, timeout=60.0):
        raise AssertionError(f"unexpected fetch of {url}")
    monkeypatch.setattr(download, "_fetch", no_network)


def fake_arrays(n_train=40, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "y_train": (np.arange(n_train) % 10).astype(np.uint8),
            "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "y_test": rng.permutation(np.arange(n_test) % 10).astype(np.uint8)}


def idx_bytes(arr, magic=None):
    arr = np.asarray(arr)
    if magic is None:
        magic = 2051 if arr.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_dir(directory, arrays, gz=False, overrides=None):
    """Write the four IDX files; ``overrides`` maps stem -> raw bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem, key in zip(STEMS, ["x_train", "y_train", "x_test", "y_test"]):
        raw = (overrides or {}).get(stem, idx_bytes(arrays[key]))
        if gz:
            (directory / (stem + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (directory / stem).write_bytes(raw)
    return directory


def assert_same(mnist, arrays):
    np.testing.assert_array_equal(mnist.train_images, arrays["x_train"])
    np.testing.assert_array_equal(mnist.train_labels, arrays["y_train"])
    np.testing.assert_array_equal(mnist.test_images, arrays["x_test"])
    np.testing.assert_array_equal(mnist.test_labels, arrays["y_test"])


# ------------------------------------------------------------------ package layout

def test_public_names_are_importable_from_mortal_data():
    from mortal.data import (DATASET_NAMES, DIGITS_N_TEST, MNIST, NPZ_KEYS, Dataset,  # noqa: F401
                             cache_dir, load_dataset, load_mnist, load_mnist_mini, mnist_dataset)
    assert DATASET_NAMES == ("mnist", "mini", "digits") and DIGITS_N_TEST == 297
    assert NPZ_KEYS == ("x_train", "y_train", "x_test", "y_test")
    assert sorted(data.__all__) == sorted(["Dataset", "load_dataset", "mnist_dataset", "MNIST",
                                           "load_mnist", "load_mnist_mini", "cache_dir"])


def test_patch_points_live_in_their_submodules():
    # Patching mortal.data._fetch / MIRRORS / _RESOURCES would not reach the code; make that loud.
    for name in ("_fetch", "MIRRORS", "_RESOURCES", "RESOURCES"):
        assert not hasattr(data, name)
    assert download.log.name == "mortal.data"


# ------------------------------------------------------------------ mini set

def test_mini_loads_balanced():
    m = load_mnist_mini()
    assert m.train_images.shape == (6000, 28, 28) and m.train_labels.shape == (6000,)
    assert m.test_images.shape == (2000, 28, 28) and m.test_labels.shape == (2000,)
    for a in (m.train_images, m.train_labels, m.test_images, m.test_labels):
        assert a.dtype == np.uint8
    assert np.bincount(m.train_labels, minlength=10).tolist() == [600] * 10
    assert np.bincount(m.test_labels, minlength=10).tolist() == [200] * 10
    assert "mini" in m.source and (m.n_train, m.n_test) == (6000, 2000)
    assert 20 < m.train_images.mean() < 50  # real digits, not blank


def test_mini_readme_records_file_sha256():
    mini = ROOT / "mortal" / "_mini"
    digest = hashlib.sha256((mini / "mnist_mini.npz").read_bytes()).hexdigest()
    readme = (mini / "README.md").read_text()
    assert digest in readme
    assert "CC BY-SA 3.0" in readme


# ------------------------------------------------------------- file formats

def test_npz_round_trip(tmp_path):
    arrays = fake_arrays()
    np.savez(tmp_path / "d.npz", **arrays)
    m = load_mnist(tmp_path / "d.npz")
    assert_same(m, arrays)
    assert str(tmp_path / "d.npz") in m.source
    # a directory holding mnist.npz
    np.savez_compressed(tmp_path / "mnist.npz", **arrays)
    assert_same(load_mnist(str(tmp_path)), arrays)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    arrays = fake_arrays()
    d = write_idx_dir(tmp_path / "idx", arrays, gz=gz)
    m = load_mnist(d)
    assert_same(m, arrays)
    assert "IDX" in m.source and str(d) in m.source
    assert m.train_images.flags.writeable


def test_idx_mixed_plain_and_gz(tmp_path):
    arrays = fake_arrays()
    d = write_idx_dir(tmp_path / "idx", arrays, gz=True)
    (d / (STEMS[1] + ".gz")).unlink()
    (d / STEMS[1]).write_bytes(idx_bytes(arrays["y_train"]))
    assert_same(load_mnist(d), arrays)


def test_env_lookup(tmp_path, monkeypatch):
    arrays = fake_arrays()
    np.savez(tmp_path / "d.npz", **arrays)
    monkeypatch.setenv("MORTAL_DATA", str(tmp_path / "d.npz"))
    assert_same(load_mnist(), arrays)
    d = write_idx_dir(tmp_path / "idx", fake_arrays(seed=1), gz=True)
    monkeypatch.setenv("MORTAL_DATA", str(d))
    assert_same(load_mnist(), fake_arrays(seed=1))


def test_env_missing_is_an_error(tmp_path, monkeypatch):
    write_idx_dir(tmp_path / "cache", fake_arrays())  # would be found next
    monkeypatch.setenv("MORTAL_DATA", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="MORTAL_DATA.*nope"):
        load_mnist()


def test_cache_lookup(tmp_path):
    arrays = fake_arrays()
    write_idx_dir(tmp_path / "cache", arrays, gz=True)
    m = load_mnist(download=False)
    assert_same(m, arrays)
    assert str(tmp_path / "cache") in m.source


def test_cache_dir_resolution(tmp_path, monkeypatch):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("MORTAL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "mortal"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "mortal"


@pytest.mark.parametrize("how", ["env", "argument"])
def test_not_found_offline_lists_places(tmp_path, monkeypatch, how):
    kwargs = {}
    if how == "env":
        monkeypatch.setenv("MORTAL_OFFLINE", "1")
    else:
        kwargs["download"] = False
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(**kwargs)
    msg = str(info.value)
    for needle in ("path argument", "MORTAL_DATA", str(tmp_path / "cache"), "load_mnist(path)",
                   "MORTAL_CACHE", "load_mnist_mini", "train-images-idx3-ubyte"):
        assert needle in msg
    assert ("MORTAL_OFFLINE" if how == "env" else "download=False") in msg
    assert not (tmp_path / "cache").exists()  # nothing created


def test_bad_paths(tmp_path, monkeypatch):
    np.savez(tmp_path / "good.npz", **fake_arrays())
    monkeypatch.setenv("MORTAL_DATA", str(tmp_path / "good.npz"))  # must not be used
    with pytest.raises(FileNotFoundError, match="does not exist.*npz"):
        load_mnist(tmp_path / "missing.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*without MNIST data"):
        load_mnist(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="notes.txt.*not a .npz"):
        load_mnist(tmp_path / "notes.txt")
    d = write_idx_dir(tmp_path / "partial", fake_arrays())
    (d / STEMS[3]).unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist(d)


# --------------------------------------------------------------- malformed

def _bad_idx(kind):
    a = fake_arrays()
    if kind == "wrong magic":
        return {STEMS[0]: idx_bytes(a["x_train"], magic=2049)}, "magic number 2051"
    if kind == "labels magic":
        return {STEMS[1]: idx_bytes(a["y_train"], magic=2051)}, "magic number 2049"
    if kind == "count mismatch":
        return {STEMS[1]: idx_bytes(a["y_train"][:-1])}, "labels of shape"
    if kind == "truncated":
        return {STEMS[2]: idx_bytes(a["x_test"])[:-5]}, "header declares"
    if kind == "trailing bytes":
        return {STEMS[3]: idx_bytes(a["y_test"]) + b"\0"}, "header declares"
    if kind == "label > 9":
        y = a["y_test"].copy()
        y[3] = 12
        return {STEMS[3]: idx_bytes(y)}, "0..9"
    if kind == "not 28x28":
        return {STEMS[0]: idx_bytes(np.zeros((40, 27, 28), np.uint8))}, "28x28"
    if kind == "short header":
        return {STEMS[1]: b"\0\0\x08"}, "too short"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["wrong magic", "labels magic", "count mismatch", "truncated",
                                  "trailing bytes", "label > 9", "not 28x28", "short header"])
@pytest.mark.parametrize("gz", [False, True])
def test_malformed_idx(tmp_path, kind, gz):
    overrides, pattern = _bad_idx(kind)
    d = write_idx_dir(tmp_path / "idx", fake_arrays(), gz=gz, overrides=overrides)
    with pytest.raises(ValueError, match=pattern):
        load_mnist(d)


def test_corrupt_gzip(tmp_path):
    d = write_idx_dir(tmp_path / "idx", fake_arrays(), gz=True)
    raw = (d / (STEMS[0] + ".gz")).read_bytes()
    (d / (STEMS[0] + ".gz")).write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ValueError, match="gzip"):
        load_mnist(d)


@pytest.mark.parametrize("change, pattern", [
    (lambda a: a.update(y_train=a["y_train"].astype(np.int64)), "uint8"),
    (lambda a: a.update(y_test=np.full(20, 10, np.uint8)), "0..9"),
    (lambda a: a.pop("x_test"), "missing keys.*x_test"),
    (lambda a: a.update(x_train=a["x_train"].reshape(40, 784)), r"\(n, 28, 28\)"),
    (lambda a: a.update(y_train=a["y_train"][:30]), "labels of shape"),
])
def test_malformed_npz(tmp_path, change, pattern):
    arrays = fake_arrays()
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=pattern) as info:
        load_mnist(tmp_path / "bad.npz")
    assert "bad.npz" in str(info.value)


def test_garbage_npz(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        load_mnist(tmp_path / "junk.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    os.replace(tmp_path / "single.npy", tmp_path / "single.npz")
    with pytest.raises(ValueError, match="single array"):
        load_mnist(tmp_path / "single.npz")


def test_mnist_dataclass_validates_and_is_frozen():
    a = fake_arrays()
    m = MNIST(a["x_train"], a["y_train"], a["x_test"], a["y_test"], source="t")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.source = "x"
    with pytest.raises(ValueError, match="t: test set"):
        MNIST(a["x_train"], a["y_train"], a["x_test"], a["y_train"], source="t")
    with pytest.raises(ValueError, match="numpy arrays"):
        MNIST(a["x_train"], list(a["y_train"]), a["x_test"], a["y_test"])
    assert "array" not in repr(m)


# ---------------------------------------------------------------- download

@pytest.fixture
def served(tmp_path, monkeypatch):
    """Fake gz files, and mnist_files.RESOURCES patched to describe them."""
    arrays = fake_arrays(n_train=60, n_test=30, seed=5)
    files, resources = {}, []
    for r, key in zip(mnist_files.RESOURCES, ["x_train", "y_train", "x_test", "y_test"]):
        gz = gzip.compress(idx_bytes(arrays[key]))
        files[r.stem + ".gz"] = gz
        a = arrays[key]
        resources.append(dataclasses.replace(
            r, sha256=hashlib.sha256(gz).hexdigest(), count=len(a),
            class_counts=tuple(np.bincount(a, minlength=10).tolist()) if r.class_counts else (),
            first_labels=tuple(a[:10].tolist()) if r.first_labels else (),
            mean_pixel=round(float(a.mean()), 3) if r.mean_pixel is not None else None))
    monkeypatch.setattr(mnist_files, "RESOURCES", tuple(resources))
    monkeypatch.setattr(download, "MIRRORS", ("https://mirror-a.invalid/mnist/",
                                          "https://mirror-b.invalid/mnist"))
    return arrays, files


def test_download_with_fallback_and_cache(tmp_path, monkeypatch, served):
    arrays, files = served
    calls = []

    def fetch(url, timeout=60.0):
        calls.append(url)
        if "mirror-a" in url:
            raise urllib.error.URLError("unreachable")
        assert url.startswith("https://mirror-b.invalid/mnist/")
        return files[url.rsplit("/", 1)[1]]

    monkeypatch.setattr(download, "_fetch", fetch)
    m = load_mnist()
    assert_same(m, arrays)
    assert "downloaded" in m.source
    assert len(calls) == 8
    cache = tmp_path / "cache"
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)  # no temp files left
    for name, gz in files.items():
        assert (cache / name).read_bytes() == gz
    # second call: from the cache, no fetching
    monkeypatch.setattr(download, "_fetch", lambda url, timeout=60.0: pytest.fail(url))
    assert_same(load_mnist(download=False), arrays)


def test_download_only_missing_files(tmp_path, monkeypatch, served):
    arrays, files = served
    cache = tmp_path / "cache"
    cache.mkdir()
    name = STEMS[0] + ".gz"
    (cache / name).write_bytes(files[name])
    calls = []
    monkeypatch.setattr(download, "_fetch", lambda url, timeout=60.0:
                        calls.append(url) or files[url.rsplit("/", 1)[1]])
    assert_same(load_mnist(), arrays)
    assert len(calls) == 3 and not any(name in c for c in calls)


def test_download_real_fetch_file_url(tmp_path, monkeypatch, served):
    """The real urllib fetcher, against a local file:// mirror."""
    arrays, files = served
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, gz in files.items():
        (mirror / name).write_bytes(gz)
    monkeypatch.setattr(download, "_fetch", REAL_FETCH)
    monkeypatch.setattr(download, "MIRRORS", ((tmp_path / "absent").as_uri() + "/",
                                          mirror.as_uri() + "/"))
    monkeypatch.setenv("MORTAL_OFFLINE", "1")  # overridden by download=True
    assert_same(load_mnist(download=True), arrays)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(files)


def test_download_rejects_bad_checksum(tmp_path, monkeypatch, served):
    arrays, files = served
    monkeypatch.setattr(download, "_fetch", lambda url, timeout=60.0:
                        files[url.rsplit("/", 1)[1]] + b"x")
    with pytest.raises(OSError) as info:
        load_mnist()
    msg = str(info.value)
    assert "sha256" in msg and "mirror-a" in msg and "mirror-b" in msg
    assert "MORTAL_DATA" in msg and "load_mnist_mini" in msg
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_rejects_wrong_content(tmp_path, monkeypatch, served):
    arrays, files = served
    r = mnist_files.RESOURCES[1]
    wrong = dataclasses.replace(r, class_counts=(6,) * 9 + (7,))
    resources = mnist_files.RESOURCES
    monkeypatch.setattr(mnist_files, "RESOURCES", (resources[0], wrong) + resources[2:])
    monkeypatch.setattr(download, "_fetch", lambda url, timeout=60.0: files[url.rsplit("/", 1)[1]])
    with pytest.raises(OSError, match="class counts"):
        load_mnist()
    assert not (tmp_path / "cache" / (STEMS[1] + ".gz")).exists()


@pytest.mark.parametrize("field, value, pattern", [
    ("count", 61, "60 items, expected 61"),
    ("first_labels", (9,) * 10, "first labels"),
    ("mean_pixel", 1.0, "mean pixel"),
])
def test_check_download_content(served, field, value, pattern):
    arrays, files = served
    idx = {"count": 0, "first_labels": 3, "mean_pixel": 2}[field]
    r = dataclasses.replace(mnist_files.RESOURCES[idx], **{field: value})
    with pytest.raises(ValueError, match=pattern):
        download._check_download(r, files[r.stem + ".gz"], "u")
    download._check_download(mnist_files.RESOURCES[idx], files[r.stem + ".gz"], "u")  # unchanged passes


# ------------------------------------------------------------ Dataset class

def small_dataset(n=6, m=4, d=6, k=3, **overrides):
    rng = np.random.default_rng(3)
    fields = dict(train_inputs=rng.random((n, d)).astype(np.float32),
                  train_labels=np.arange(n, dtype=np.int64) % k,
                  test_inputs=rng.random((m, d)).astype(np.float32),
                  test_labels=np.arange(m, dtype=np.int64) % k,
                  n_classes=k, shape=(2, d // 2), source="made up", name="tiny")
    fields.update(overrides)
    return Dataset(**fields)


def test_dataset_properties_and_frozen():
    ds = small_dataset()
    assert (ds.n_train, ds.n_test, ds.n_inputs, ds.n_classes, ds.shape) == (6, 4, 6, 3, (2, 3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "x"
    assert "array" not in repr(ds) and "tiny" in repr(ds)
    # numpy integers are normalized to int
    ds = small_dataset(n_classes=np.int64(3), shape=(np.int32(6),))
    assert type(ds.n_classes) is int and ds.shape == (6,) and type(ds.shape[0]) is int


@pytest.mark.parametrize("overrides, pattern", [
    (dict(train_inputs=np.full((6, 6), 0.5)), "float32"),
    (dict(train_inputs=np.full((6, 6), 1.5, np.float32)), r"within \[0, 1\]"),
    (dict(test_inputs=np.full((4, 6), -0.1, np.float32)), r"test: inputs must lie within \[0, 1\]"),
    (dict(train_inputs=np.full((6, 6), np.nan, np.float32)), "non-finite"),
    (dict(test_inputs=np.full((4, 6), np.inf, np.float32)), "non-finite"),
    (dict(train_inputs=np.zeros((6, 2, 3), np.float32)), r"shape \(n, d\)"),
    (dict(train_inputs=np.zeros((0, 6), np.float32), train_labels=np.zeros(0, np.int64)),
     r"n, d >= 1"),
    (dict(test_inputs=np.zeros((4, 5), np.float32)), "5 columns"),
    (dict(train_inputs=[[0.0] * 6] * 6), "numpy arrays"),
    (dict(train_labels=np.arange(6, dtype=np.int32) % 3), "int64"),
    (dict(train_labels=np.arange(5, dtype=np.int64) % 3), r"labels of shape \(6,\)"),
    (dict(train_labels=np.array([0, 1, 2, 3, 0, 1])), r"0\.\.2"),
    (dict(test_labels=np.array([0, -1, 2, 1])), r"0\.\.2"),
    (dict(n_classes=1), "n_classes"),
    (dict(n_classes=True), "n_classes"),
    (dict(n_classes=3.0), "n_classes"),
    (dict(shape=(4, 2)), r"shape \(4, 2\) holds 8"),
    (dict(shape=[2, 3]), "shape must be"),
    (dict(shape=()), "shape must be"),
    (dict(shape=(6, 0)), "shape must be"),
    (dict(source=None), "source must be a str"),
    (dict(name=3), "name must be a str"),
])
def test_dataset_validates(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        small_dataset(**overrides)


def test_subset_takes_the_first_examples():
    ds = small_dataset(n=10, m=7)
    sub = ds.subset(4, 2)
    assert (sub.n_train, sub.n_test) == (4, 2)
    np.testing.assert_array_equal(sub.train_inputs, ds.train_inputs[:4], strict=True)
    np.testing.assert_array_equal(sub.train_labels, ds.train_labels[:4], strict=True)
    np.testing.assert_array_equal(sub.test_inputs, ds.test_inputs[:2], strict=True)
    np.testing.assert_array_equal(sub.test_labels, ds.test_labels[:2], strict=True)
    assert not np.shares_memory(sub.train_inputs, ds.train_inputs)
    assert (sub.n_classes, sub.shape, sub.name) == (ds.n_classes, ds.shape, ds.name)
    assert sub.source.startswith(ds.source) and "first 4 of 10" in sub.source
    assert ds.subset(train_size=3).n_test == 7 and ds.subset(test_size=1).n_train == 10
    same = ds.subset()
    assert same is not ds and (same.n_train, same.n_test, same.source) == (10, 7, ds.source)
    assert ds.subset(10, 7).n_train == 10  # all of them is allowed
    assert ds.subset(np.int64(2), None).n_train == 2


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(train_size=11), r"train_size must be an int in 1\.\.10"),
    (dict(train_size=0), "train_size"),
    (dict(test_size=8), r"test_size must be an int in 1\.\.7"),
    (dict(test_size=-1), "test_size"),
    (dict(train_size=2.0), "train_size"),
    (dict(train_size=True), "train_size"),
])
def test_subset_bounds(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        small_dataset(n=10, m=7).subset(**kwargs)


# ---------------------------------------------------------- generic .npz

def odd_arrays(seed=0):
    """A dataset of another shape: (n, 5, 3) uint8 inputs, 3 classes."""
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (12, 5, 3), dtype=np.uint8),
            "y_train": (np.arange(12) % 3).astype(np.uint8),
            "x_test": rng.integers(0, 256, (5, 5, 3), dtype=np.uint8),
            "y_test": np.array([2, 0, 1, 1, 0], np.int16)}


def save_npz(path, arrays, compressed=False):
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_of_another_shape(tmp_path, compressed):
    a = odd_arrays()
    ds = load_dataset(save_npz(tmp_path / "shapes.npz", a, compressed))
    assert (ds.n_train, ds.n_test, ds.n_inputs, ds.n_classes) == (12, 5, 15, 3)
    assert ds.shape == (5, 3) and ds.name == "shapes"
    assert str(tmp_path / "shapes.npz") in ds.source
    assert ds.train_inputs.dtype == np.float32 and ds.train_labels.dtype == np.int64
    expected = a["x_train"].reshape(12, 15).astype(np.float32) / np.float32(255.0)
    np.testing.assert_array_equal(ds.train_inputs, expected, strict=True)
    np.testing.assert_array_equal(ds.test_labels, a["y_test"].astype(np.int64), strict=True)
    assert load_dataset(str(tmp_path / "shapes.npz"), name="other").name == "other"


def test_npz_flat_float_inputs_and_n_classes(tmp_path):
    rng = np.random.default_rng(1)
    a = {"x_train": rng.random((8, 4)), "y_train": np.array([0, 1] * 4),
         "x_test": rng.random((3, 4)).astype(np.float16), "y_test": np.array([1, 0, 1], np.uint64),
         "n_classes": np.array(5)}
    a["x_train"][0, 0], a["x_train"][1, 1] = 0.0, 1.0  # the bounds are allowed
    ds = load_dataset(save_npz(tmp_path / "flat.npz", a))
    assert (ds.shape, ds.n_inputs, ds.n_classes) == ((4,), 4, 5)
    np.testing.assert_array_equal(ds.train_inputs, a["x_train"].astype(np.float32), strict=True)
    np.testing.assert_array_equal(ds.test_inputs, a["x_test"].astype(np.float32), strict=True)
    # k is the largest label over both sets, plus one
    a.pop("n_classes")
    a["y_test"] = np.array([1, 3, 0])
    assert load_dataset(save_npz(tmp_path / "k.npz", a)).n_classes == 4


@pytest.mark.parametrize("change, pattern", [
    (lambda a: a.update(x_train=a["x_train"] / 100.0), r"within \[0, 1\].*scale"),
    (lambda a: a.update(x_test=a["x_test"] / 255.0 - 0.5), r"x_test must already lie within"),
    (lambda a: a.update(x_train=np.where(a["x_train"] > 9, np.nan, 0.5)), "non-finite"),
    (lambda a: a.update(x_train=a["x_train"].astype(np.int16)), "dtype int16.*uint8"),
    (lambda a: a.update(x_train=a["x_train"] > 9), "dtype bool"),
    (lambda a: a.update(y_train=a["y_train"].astype(np.int8) - 1), "negative label -1"),
    (lambda a: a.update(y_test=np.array([0, -3, 1, 1, 0])), "negative label -3"),
    (lambda a: a.update(y_train=a["y_train"].astype(np.float32)), "integer labels"),
    (lambda a: a.update(y_train=a["y_train"][:11]), r"y_train of shape \(12,\)"),
    (lambda a: a.update(y_train=a["y_train"] * 0, y_test=a["y_test"] * 0), "at least 2 classes"),
    (lambda a: a.update(n_classes=np.array(2)), "n_classes is 2"),
    (lambda a: a.update(n_classes=np.array([3])), "integer scalar"),
    (lambda a: a.update(n_classes=np.array(3.0)), "integer scalar"),
    (lambda a: a.update(x_test=a["x_test"].reshape(5, 3, 5)), r"\(5, 3\).*\(3, 5\)"),
    (lambda a: a.update(x_train=a["x_train"][:, 0, 0], y_train=a["y_train"]), r"reshape \(n,\)"),
    (lambda a: a.update(x_test=a["x_test"][:0], y_test=a["y_test"][:0]), "n >= 1"),
    (lambda a: a.pop("y_test"), "missing keys.*y_test"),
])
def test_npz_refused(tmp_path, change, pattern):
    a = odd_arrays()
    change(a)
    with pytest.raises(ValueError, match=pattern) as info:
        load_dataset(save_npz(tmp_path / "bad.npz", a))
    assert str(tmp_path / "bad.npz") in str(info.value)


@pytest.mark.parametrize("compressed", [False, True])
def test_corrupt_or_truncated_npz(tmp_path, compressed):
    buffer = io.BytesIO()
    save_npz(buffer, odd_arrays(), compressed)
    raw = buffer.getvalue()
    path = tmp_path / "broken.npz"
    rng = np.random.default_rng(11)
    cases = [raw[:n] for n in (0, 1, 4, 30, 100, len(raw) // 2, len(raw) - 22, len(raw) - 1)]
    cases.append(b"PK\x03\x04" + bytes(rng.integers(0, 256, 300, dtype=np.uint8)))
    for _ in range(200):  # a few random bytes overwritten, anywhere
        r = bytearray(raw)
        for i in rng.integers(0, len(r), rng.integers(1, 6)):
            r[i] = int(rng.integers(0, 256))
        cases.append(bytes(r))
    refused = 0
    for data in cases:
        path.write_bytes(data)
        try:
            load_dataset(path)
        except ValueError as e:
            assert str(path) in str(e)
            refused += 1
    assert refused >= len(cases) // 2
    for data in cases[:9]:  # truncated or garbage: always refused
        path.write_bytes(data)
        with pytest.raises(ValueError, match="broken.npz"):
            load_dataset(path)


def test_npz_that_is_a_single_array(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    os.replace(tmp_path / "one.npy", tmp_path / "one.npz")
    with pytest.raises(ValueError, match="one.npz.*single array"):
        load_dataset(tmp_path / "one.npz")


def test_dataset_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz does not exist.*'digits'"):
        load_dataset(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="MNIST"):
        load_dataset("MNIST")  # names are exact; this is a (missing) path
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="notes.txt.*not a .npz"):
        load_dataset(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*without MNIST data"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(ValueError, match="source must be"):
        load_dataset(3)
    with pytest.raises(ValueError, match="name must be a str"):
        load_dataset("mini", name=5)


def test_keyword_names_a_path_when_given_as_path(tmp_path, monkeypatch):
    save_npz(tmp_path / "digits", odd_arrays())  # np.savez appends .npz
    os.replace(tmp_path / "digits.npz", tmp_path / "digits")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="not a .npz"):
        load_dataset(Path("digits"))


# ------------------------------------------------------- MNIST as Dataset

def test_mnist_dataset_is_bit_identical_on_mini():
    m = load_mnist_mini()
    ds = mnist_dataset(m)
    for images, labels, inputs, ys in ((m.train_images, m.train_labels, ds.train_inputs,
                                        ds.train_labels),
                                       (m.test_images, m.test_labels, ds.test_inputs,
                                        ds.test_labels)):
        n = len(images)
        expected = images.reshape(n, 784).astype(np.float32) / np.float32(255.0)
        assert inputs.dtype == np.float32 and inputs.shape == (n, 784)
        np.testing.assert_array_equal(inputs.view(np.uint32), expected.view(np.uint32))
        np.testing.assert_array_equal(ys, labels.astype(np.int64), strict=True)
    assert (ds.n_classes, ds.shape, ds.source, ds.name) == (10, (28, 28), m.source, "mnist")
    assert inputs.max() == 1.0
    with pytest.raises(ValueError, match="expected an MNIST"):
        mnist_dataset(ds)


def test_load_dataset_mini():
    ds = load_dataset("mini")
    assert (ds.n_train, ds.n_test, ds.n_inputs, ds.n_classes, ds.name) == (
        6000, 2000, 784, 10, "mnist-mini")
    ref = mnist_dataset(load_mnist_mini())
    np.testing.assert_array_equal(ds.test_inputs, ref.test_inputs, strict=True)
    assert "mini" in ds.source


@pytest.mark.parametrize("gz", [False, True])
def test_load_dataset_mnist_folder_and_npz(tmp_path, gz):
    arrays = fake_arrays()
    d = write_idx_dir(tmp_path / "idx", arrays, gz=gz)
    ds = load_dataset(d)
    ref = mnist_dataset(load_mnist(d))
    assert (ds.shape, ds.n_classes, ds.name, ds.n_train) == ((28, 28), 10, "mnist", 40)
    assert "IDX" in ds.source
    np.testing.assert_array_equal(ds.train_inputs, ref.train_inputs, strict=True)
    np.testing.assert_array_equal(ds.test_labels, ref.test_labels, strict=True)
    np.savez(tmp_path / "mnist.npz", **arrays)  # an MNIST .npz, through the generic reader
    from_npz = load_dataset(tmp_path / "mnist.npz")
    assert (from_npz.shape, from_npz.n_classes) == ((28, 28), 10)
    np.testing.assert_array_equal(from_npz.train_inputs, ref.train_inputs, strict=True)
    (tmp_path / "idx2").mkdir()
    os.replace(tmp_path / "mnist.npz", tmp_path / "idx2" / "mnist.npz")
    np.testing.assert_array_equal(load_dataset(tmp_path / "idx2").test_inputs,
                                  ref.test_inputs, strict=True)


def test_load_dataset_mnist_follows_the_search_order(tmp_path, monkeypatch):
    arrays = fake_arrays()
    np.savez(tmp_path / "d.npz", **arrays)
    monkeypatch.setenv("MORTAL_DATA", str(tmp_path / "d.npz"))
    for ds in (load_dataset("mnist"), load_dataset()):
        assert (ds.name, ds.n_train, ds.n_classes) == ("mnist", 40, 10)
        np.testing.assert_array_equal(ds.train_inputs,
                                      mnist_dataset(load_mnist()).train_inputs, strict=True)
    monkeypatch.delenv("MORTAL_DATA")
    write_idx_dir(tmp_path / "cache", fake_arrays(seed=2), gz=True)
    assert str(tmp_path / "cache") in load_dataset("mnist", download=False).source


def test_load_dataset_mnist_not_found(monkeypatch):
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_dataset("mnist", download=False)
    monkeypatch.setenv("MORTAL_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="load_mnist_mini"):
        load_dataset("mnist")


# ----------------------------------------------------------------- digits

def test_digits():
    from sklearn.datasets import load_digits
    ds = load_dataset("digits")
    assert (ds.n_train, ds.n_test, ds.n_inputs, ds.n_classes) == (1500, 297, 64, 10)
    assert ds.n_train + ds.n_test == 1797 == data.DIGITS_N_TEST + 1500
    assert ds.shape == (8, 8) and ds.name == "digits" and "scikit-learn" in ds.source
    for x in (ds.train_inputs, ds.test_inputs):
        assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    assert ds.train_inputs.max() == 1.0
    assert np.all(ds.train_inputs * 16 == np.round(ds.train_inputs * 16))
    bunch = load_digits()
    # the fixed split: the last 297 images are the test set
    np.testing.assert_array_equal(ds.test_inputs * np.float32(16.0),
                                  bunch.data[-297:].astype(np.float32))
    np.testing.assert_array_equal(ds.test_labels, bunch.target[-297:].astype(np.int64),
                                  strict=True)
    np.testing.assert_array_equal(ds.train_labels, bunch.target[:1500].astype(np.int64),
                                  strict=True)
    assert set(np.unique(ds.test_labels)) == set(range(10))
    again = load_dataset("digits", name="d8")
    assert again.name == "d8"
    np.testing.assert_array_equal(again.train_inputs, ds.train_inputs, strict=True)


def test_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ValueError, match=r"pip install 'mortal\[digits\]'"):
        load_dataset("digits")

# ----------------------------------------------------------------- full set

needs_full = pytest.mark.skipif(
    not FULL_PATH.exists(),
    reason=f"full MNIST not found at {FULL_PATH} (set MORTAL_DATA to a copy to run this test)")


@pytest.fixture(scope="module")
def full():
    return load_mnist(FULL_PATH, download=False)


@needs_full
def test_full_set_checks(full):
    assert full.train_images.shape == (60000, 28, 28) and full.test_images.shape == (10000, 28, 28)
    assert np.bincount(full.train_labels, minlength=10).tolist() == FULL_TRAIN_COUNTS
    assert np.bincount(full.test_labels, minlength=10).tolist() == FULL_TEST_COUNTS
    assert full.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert round(float(full.train_images.mean()), 3) == 33.318
    assert round(float(full.test_images.mean()), 3) == 33.791


@needs_full
def test_download_content_checks_accept_the_real_files(full):
    """The module's content constants hold for real MNIST (sha256 can't be checked offline)."""
    arrays = [full.train_images, full.train_labels, full.test_images, full.test_labels]
    for r, a in zip(mnist_files.RESOURCES, arrays):
        gz = gzip.compress(idx_bytes(a), compresslevel=1)
        download._check_download(dataclasses.replace(r, sha256=hashlib.sha256(gz).hexdigest()),
                             gz, r.stem)


@needs_full
def test_mini_is_subset_of_full(full):
    mini = load_mnist_mini()
    for images, labels, f_images, f_labels in (
            (mini.train_images, mini.train_labels, full.train_images, full.train_labels),
            (mini.test_images, mini.test_labels, full.test_images, full.test_labels)):
        wanted = {im.tobytes(): int(y) for im, y in zip(images, labels)}
        found = {im.tobytes(): int(y) for im, y in zip(f_images, f_labels)
                 if im.tobytes() in wanted}
        assert found == wanted


@needs_full
def test_full_as_dataset(full, monkeypatch):
    monkeypatch.setenv("MORTAL_DATA", str(FULL_PATH))
    ds = load_dataset("mnist")
    assert (ds.n_train, ds.n_test, ds.n_inputs, ds.n_classes, ds.shape) == (
        60000, 10000, 784, 10, (28, 28))
    expected = full.test_images.reshape(10000, 784).astype(np.float32) / np.float32(255.0)
    np.testing.assert_array_equal(ds.test_inputs, expected, strict=True)
    assert np.bincount(ds.train_labels).tolist() == FULL_TRAIN_COUNTS


def test_with_shape_gives_each_example_a_new_shape_or_refuses_naming_the_counts():
    ds = small_dataset(d=6, shape=(6,))
    shaped = ds.with_shape((3, 2))
    assert shaped.shape == (3, 2) and ds.shape == (6,)
    assert shaped.train_inputs is ds.train_inputs  # the examples are not copied
    assert ds.with_shape((1, 3, 2)).shape == (1, 3, 2)
    with pytest.raises(ValueError, match=r"shape 4,2 holds 8 values; the examples of made up have 6"):
        ds.with_shape((4, 2))
    for bad in [(6,), (1, 1, 2, 3), (0, 6), (True, 6), (1.5, 4)]:
        with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\)"):
            ds.with_shape(bad)
