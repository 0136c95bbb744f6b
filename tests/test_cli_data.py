"""``mortal train`` on data other than MNIST: scikit-learn's 8x8 digits and an ``.npz`` of any shape."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import one_error_line
from mortal.cli import main


def test_train_on_the_8x8_digits(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "digits"
    assert main(["train", "--data", "digits", "--preset", "ideal", "--layers", "40", "--epochs", "2",
                 "--set", "train.defaults=hinton", "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["layer_sizes"] == [74, 40]  # 64 pixels + 10 appended label inputs (1 copy on ideal)
    assert config["data"]["source"] == "digits" and config["data"]["train_size"] == 1500
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2
    # measured: softmax 0.370, goodness 0.892 (one layer, two epochs; chance 0.9)
    assert summary["test_error"]["softmax"] < 0.5


def thirds(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, 6, 5) uint8 images of 3 classes: class c brightens rows 2c and 2c + 1, over uniform noise."""
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 80, (n, 6, 5))
    for i, c in enumerate(labels):
        images[i, 2 * c:2 * c + 2, :] += 150
    return images.astype(np.uint8), labels.astype(np.int64)


@pytest.fixture(scope="module")
def thirds_npz(tmp_path_factory):
    rng = np.random.default_rng(7)
    x_train, y_train = thirds(300, rng)
    x_test, y_test = thirds(150, rng)
    path = tmp_path_factory.mktemp("data") / "thirds.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.mark.parametrize("preset,copies", [("ideal", 1), ("pcm", 8)])
def test_train_on_an_npz_of_another_shape(thirds_npz, preset, copies, tmp_path):
    out = tmp_path / "out"
    assert main(["train", "--data", str(thirds_npz), "--preset", preset, "--layers", "30", "--epochs", "3",
                 "--set", "train.defaults=hinton", "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    # 30 pixels + 3 classes x copies appended label inputs (the first pixels are not blank)
    assert config["layer_sizes"] == [30 + 3 * copies, 30]
    assert config["data"]["name"] == "thirds" and config["data"]["train_size"] == 300
    summary = json.loads((out / "summary.json").read_text())
    # chance is 2/3; measured 0.0 for the softmax head on both presets
    assert summary["test_error"]["softmax"] < 1 / 3


def test_the_label_placement_can_be_forced(thirds_npz, tmp_path):
    out = tmp_path / "out"
    assert main(["train", "--data", str(thirds_npz), "--preset", "ideal", "--layers", "10", "--epochs", "1",
                 "--set", "train.defaults=hinton", "--set", "train.labels.placement=first", "--out", str(out),
                 "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["layer_sizes"] == [30, 10]


@pytest.mark.parametrize("change,needle", [
    ({"x_train": np.full((300, 6, 5), 2.0)}, "[0, 1]"),  # float inputs must already be in [0, 1]
    ({"y_train": np.full(300, -1)}, "label"),
    ({"x_test": np.zeros((150, 5, 6), np.uint8)}, "x_test"),  # another per-example shape than x_train
    ({"y_train": None}, "y_train"),
])
def test_a_bad_npz_exits_2_and_writes_nothing(thirds_npz, change, needle, tmp_path, capsys):
    with np.load(thirds_npz) as z:
        arrays = {k: z[k] for k in z.files}
    for key, value in change.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    out = tmp_path / "out"
    assert main(["train", "--data", str(bad), "--preset", "ideal", "--layers", "10", "--epochs", "1",
                 "--out", str(out), "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert needle in line and str(bad) in line
    assert not out.exists()
