"""Tests for mortal.data: loading, bundled subset, download, label embedding."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from mortal import data
from mortal.data import (MNIST, cache_dir, embed_labels, embed_neutral, images_to_float,
                         load_mnist, load_mnist_mini, split_validation)

ROOT = Path(__file__).resolve().parents[1]
# Read before the autouse fixture clears the variable.
FULL_PATH = Path(os.environ.get("MORTAL_DATA") or ROOT.parent / "shared" / "data" / "mnist.npz")
FULL_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
FULL_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
REAL_FETCH = data._fetch
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
    monkeypatch.setattr(data, "_fetch", no_network)


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
    """Fake gz files, and _RESOURCES patched to describe them."""
    arrays = fake_arrays(n_train=60, n_test=30, seed=5)
    files, resources = {}, []
    for r, key in zip(data._RESOURCES, ["x_train", "y_train", "x_test", "y_test"]):
        gz = gzip.compress(idx_bytes(arrays[key]))
        files[r.stem + ".gz"] = gz
        a = arrays[key]
        resources.append(dataclasses.replace(
            r, sha256=hashlib.sha256(gz).hexdigest(), count=len(a),
            class_counts=tuple(np.bincount(a, minlength=10).tolist()) if r.class_counts else (),
            first_labels=tuple(a[:10].tolist()) if r.first_labels else (),
            mean_pixel=round(float(a.mean()), 3) if r.mean_pixel is not None else None))
    monkeypatch.setattr(data, "_RESOURCES", tuple(resources))
    monkeypatch.setattr(data, "MIRRORS", ("https://mirror-a.invalid/mnist/",
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

    monkeypatch.setattr(data, "_fetch", fetch)
    m = load_mnist()
    assert_same(m, arrays)
    assert "downloaded" in m.source
    assert len(calls) == 8
    cache = tmp_path / "cache"
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)  # no temp files left
    for name, gz in files.items():
        assert (cache / name).read_bytes() == gz
    # second call: from the cache, no fetching
    monkeypatch.setattr(data, "_fetch", lambda url, timeout=60.0: pytest.fail(url))
    assert_same(load_mnist(download=False), arrays)


def test_download_only_missing_files(tmp_path, monkeypatch, served):
    arrays, files = served
    cache = tmp_path / "cache"
    cache.mkdir()
    name = STEMS[0] + ".gz"
    (cache / name).write_bytes(files[name])
    calls = []
    monkeypatch.setattr(data, "_fetch", lambda url, timeout=60.0:
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
    monkeypatch.setattr(data, "_fetch", REAL_FETCH)
    monkeypatch.setattr(data, "MIRRORS", ((tmp_path / "absent").as_uri() + "/",
                                          mirror.as_uri() + "/"))
    monkeypatch.setenv("MORTAL_OFFLINE", "1")  # overridden by download=True
    assert_same(load_mnist(download=True), arrays)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(files)


def test_download_rejects_bad_checksum(tmp_path, monkeypatch, served):
    arrays, files = served
    monkeypatch.setattr(data, "_fetch", lambda url, timeout=60.0:
                        files[url.rsplit("/", 1)[1]] + b"x")
    with pytest.raises(OSError) as info:
        load_mnist()
    msg = str(info.value)
    assert "sha256" in msg and "mirror-a" in msg and "mirror-b" in msg
    assert "MORTAL_DATA" in msg and "load_mnist_mini" in msg
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_rejects_wrong_content(tmp_path, monkeypatch, served):
    arrays, files = served
    r = data._RESOURCES[1]
    wrong = dataclasses.replace(r, class_counts=(6,) * 9 + (7,))
    monkeypatch.setattr(data, "_RESOURCES", (data._RESOURCES[0], wrong) + data._RESOURCES[2:])
    monkeypatch.setattr(data, "_fetch", lambda url, timeout=60.0: files[url.rsplit("/", 1)[1]])
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
    r = dataclasses.replace(data._RESOURCES[idx], **{field: value})
    with pytest.raises(ValueError, match=pattern):
        data._check_download(r, files[r.stem + ".gz"], "u")
    data._check_download(data._RESOURCES[idx], files[r.stem + ".gz"], "u")  # unchanged passes


# --------------------------------------------------------- label embedding

def test_images_to_float():
    imgs = np.array([[[0] * 28] * 28, [[255] * 28] * 28], np.uint8)
    imgs[0, 0, 3] = 51
    x = images_to_float(imgs)
    assert x.dtype == np.float32 and x.shape == (2, 784)
    assert x[0, 3] == pytest.approx(0.2) and x[1].min() == 1.0 and x[0, 0] == 0.0
    np.testing.assert_array_equal(images_to_float(imgs.reshape(2, 784)), x)
    with pytest.raises(ValueError, match="uint8"):
        images_to_float(imgs.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(n, 28, 28\) or \(n, 784\)"):
        images_to_float(imgs[0])
    with pytest.raises(ValueError, match="uint8"):
        images_to_float(imgs.tolist())


def test_embed_labels_and_neutral():
    x = np.random.default_rng(0).random((5, 784)).astype(np.float32)
    before = x.copy()
    labels = np.array([0, 3, 9, 3, 1], np.uint8)
    e = embed_labels(x, labels, strength=2.0)
    assert e.dtype == np.float32 and e.shape == (5, 784)
    np.testing.assert_array_equal(x, before)  # input untouched
    expected = np.zeros((5, 10), np.float32)
    expected[np.arange(5), labels] = 2.0
    np.testing.assert_array_equal(e[:, :10], expected)
    np.testing.assert_array_equal(e[:, 10:], x[:, 10:])
    np.testing.assert_array_equal(embed_labels(x, 3)[:, :10], np.eye(10, dtype=np.float32)[[3] * 5])
    np.testing.assert_array_equal(embed_labels(x.astype(np.float64), [0, 3, 9, 3, 1]),
                                  embed_labels(x, labels))
    n = embed_neutral(x, level=0.25)
    assert n.dtype == np.float32 and np.all(n[:, :10] == 0.25)
    np.testing.assert_array_equal(n[:, 10:], x[:, 10:])
    assert np.all(embed_neutral(x)[:, :10] == np.float32(0.1))
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("call, pattern", [
    (lambda x: embed_labels(x, [1, 2]), r"shape \(5,\)"),
    (lambda x: embed_labels(x, [0, 1, 2, 3, 10]), "0..9"),
    (lambda x: embed_labels(x, [0, 1, -1, 3, 4]), "0..9"),
    (lambda x: embed_labels(x, [0.0, 1, 2, 3, 4]), "integers"),
    (lambda x: embed_labels(x[:, :100], [0] * 5), r"\(n, 784\)"),
    (lambda x: embed_labels((x * 255).astype(np.uint8), [0] * 5), "images_to_float"),
    (lambda x: embed_labels(x, [0] * 5, strength=float("nan")), "strength"),
    (lambda x: embed_neutral(x, level="high"), "level"),
    (lambda x: embed_neutral(x.ravel()), r"\(n, 784\)"),
])
def test_embedding_validation(call, pattern):
    x = np.zeros((5, 784), np.float32)
    with pytest.raises(ValueError, match=pattern):
        call(x)


def test_split_validation():
    a = fake_arrays(n_train=100)
    m = MNIST(a["x_train"], a["y_train"], a["x_test"], a["y_test"], source="t")
    state = np.random.get_state()[1].copy()
    tx, ty, vx, vy = split_validation(m, 30, seed=7)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    assert tx.shape == (70, 28, 28) and ty.shape == (70,)
    assert vx.shape == (30, 28, 28) and vy.shape == (30,)
    assert tx.dtype == vx.dtype == np.uint8
    # rows of train+val are exactly the original rows, no overlap
    key = lambda imgs: {im.tobytes() for im in imgs}  # noqa: E731
    assert key(tx) | key(vx) == key(m.train_images) and not key(tx) & key(vx)
    again = split_validation(m, 30, seed=7)
    np.testing.assert_array_equal(again[2], vx)
    assert not np.array_equal(split_validation(m, 30, seed=8)[2], vx)
    assert split_validation(m, 0, seed=0)[2].shape == (0, 28, 28)
    for bad in (-1, 100, 2.5, True):
        with pytest.raises(ValueError, match="n_val"):
            split_validation(m, bad, seed=0)
    for bad in (None, -3, 1.0):
        with pytest.raises(ValueError, match="seed"):
            split_validation(m, 10, seed=bad)
    with pytest.raises(ValueError, match="MNIST"):
        split_validation(a, 10, seed=0)


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
    for r, a in zip(data._RESOURCES, arrays):
        gz = gzip.compress(idx_bytes(a), compresslevel=1)
        data._check_download(dataclasses.replace(r, sha256=hashlib.sha256(gz).hexdigest()),
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
