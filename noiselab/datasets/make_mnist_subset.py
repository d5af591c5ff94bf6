"""Make the embedded MNIST subset shipped inside noiselab (mnist_subset.npz) from the original IDX files.

    python -m noiselab.datasets.make_mnist_subset ../shared/data/mnist noiselab/datasets/mnist_subset.npz

Draws, with numpy's PCG64 seeded 0, 1,000 training digits of each class from MNIST's 60,000 training digits and
200 test digits of each class from its 10,000 test digits (stratified, without replacement), keeps them in
their original order within the set, and stores them as uint8 arrays (N, 28, 28) and labels (N,) in a
compressed .npz. MNIST (LeCun, Cortes, Burges) is available under CC BY-SA 3.0; so is this subset.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from noiselab.data import read_idx

TRAIN_PER_CLASS = 1000
TEST_PER_CLASS = 200
SEED = 0


def stratified(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(picks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mnist_dir", type=Path, help="folder with MNIST's four IDX .gz files")
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    arrays = {}
    for split, prefix, per_class in (("train", "train", TRAIN_PER_CLASS), ("test", "t10k", TEST_PER_CLASS)):
        images = read_idx(args.mnist_dir / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(args.mnist_dir / f"{prefix}-labels-idx1-ubyte.gz")
        index = stratified(labels, per_class, rng)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[index], labels[index]
    np.savez_compressed(args.output, **arrays)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB):",
          ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
    main()
