"""Make the bundled MNIST subset mortal/_mini/mnist_mini.npz.

Usage (from the repository root):

    python scripts/make_mini_mnist.py SOURCE [--out mortal/_mini/mnist_mini.npz]

SOURCE is anything ``mortal.data.load_mnist`` accepts (a .npz file or a
directory of IDX files) holding the full 60000/10000 set. For every class,
600 training and 200 test images are drawn without replacement by
``numpy.random.default_rng(seed)`` (training set first, classes 0..9 in
order); each subset keeps the original order of the source. The result is
written with ``np.savez_compressed`` under the keys x_train, y_train, x_test,
y_test. Re-running gives identical arrays; with the same numpy and zlib it also
gives the identical file (the zip entries carry the fixed 1980 timestamp). The
printed content sha256 covers only the arrays, so it stays the same even where
a different zlib compresses differently.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mortal.data import NPZ_KEYS, load_mnist  # noqa: E402

SEED = 20251128
TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 200


def pick(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_class`` examples of each class 0..9, sorted."""
    chosen = [rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
              for c in range(10)]
    return np.sort(np.concatenate(chosen))


def content_digest(arrays: dict) -> str:
    """sha256 over key, dtype, shape and bytes of each array in NPZ_KEYS order."""
    h = hashlib.sha256()
    for k in NPZ_KEYS:
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="full MNIST: .npz file or directory of IDX files")
    ap.add_argument("--out", default=str(ROOT / "mortal" / "_mini" / "mnist_mini.npz"))
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--train-per-class", type=int, default=TRAIN_PER_CLASS)
    ap.add_argument("--test-per-class", type=int, default=TEST_PER_CLASS)
    args = ap.parse_args(argv)

    full = load_mnist(args.source, download=False)
    rng = np.random.default_rng(args.seed)
    tr = pick(full.train_labels, args.train_per_class, rng)
    te = pick(full.test_labels, args.test_per_class, rng)
    arrays = {"x_train": full.train_images[tr], "y_train": full.train_labels[tr],
              "x_test": full.test_images[te], "y_test": full.test_labels[te]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)

    print(f"source         {full.source}")
    print(f"seed           {args.seed}")
    print(f"train          {len(tr)} ({args.train_per_class} per class)")
    print(f"test           {len(te)} ({args.test_per_class} per class)")
    print(f"wrote          {out} ({out.stat().st_size} bytes)")
    print(f"file sha256    {hashlib.sha256(out.read_bytes()).hexdigest()}")
    print(f"content sha256 {content_digest(arrays)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
