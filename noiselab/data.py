"""Data sets as tensors on the device, sliced into batches (no DataLoader in the hot path).

    >>> data = noiselab.data.load("mnist-embedded")                 # offline, ships inside noiselab
    >>> data = noiselab.data.load("mnist", root="../shared/data/mnist", device="cuda")
    >>> for x, y in data.batches("train", 128, generator=torch.Generator().manual_seed(0)): ...

Names: "mnist-embedded" (the default: 10,000 training and 2,000 test digits of real MNIST, stratified by
class, 2 MB inside the package; see noiselab/datasets/README.md), "mnist", "fashion-mnist", "cifar10".

Where a set is looked for, in order: `root` if given (else $NOISELAB_DATA, else ~/.cache/noiselab/<name>),
holding MNIST-style IDX files (as on MNIST's site or in torchvision's MNIST/raw/), or for cifar10 an
ImageFolder tree <root>/{train,test}/<class>/*.jpg|png (such as ../shared/data/cifar10-jpeg-*.tar.gz unpacked),
or torchvision's cifar-10-batches-py; then, if `download=True`, torchvision's download into that folder.
Offline without a local copy, the error says where to put the files.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DATASETS = ("mnist-embedded", "mnist", "fashion-mnist", "cifar10")
DEFAULT_DATASET = "mnist-embedded"


class DataNotFoundError(FileNotFoundError):
    """A data set is neither on disk nor downloadable; the message says where to put it."""


@dataclass
class Dataset:
    """A whole data set as uint8 images (N, C, H, W) and int64 labels (N,), on one device."""

    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: tuple[str, ...]
    source: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    def split(self, split: str) -> tuple[Tensor, Tensor]:
        if split == "train":
            return self.train_images, self.train_labels
        if split == "test":
            return self.test_images, self.test_labels
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")

    def tensors(self, split: str, limit: int | None = None) -> tuple[Tensor, Tensor]:
        """The split (or its first `limit` examples) as float images in [0, 1] and labels."""
        images, labels = self.split(split)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        return to_float(images), labels

    def batches(
        self, split: str, batch_size: int, shuffle: bool = True, generator: torch.Generator | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches of (float images in [0, 1], labels), sliced from the tensors on the device; the last may be short."""
        images, labels = self.split(split)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        count = images.shape[0]
        order = torch.randperm(count, generator=generator).to(images.device) if shuffle else None
        for start in range(0, count, batch_size):
            if order is None:
                index = slice(start, start + batch_size)
            else:
                index = order[start : start + batch_size]
            yield to_float(images[index]), labels[index]

    def subset(self, train: int | None = None, test: int | None = None) -> Dataset:
        """The first `train` training and `test` test examples (a quick mode's data)."""
        return Dataset(self.name, self.train_images[:train], self.train_labels[:train], self.test_images[:test],
                       self.test_labels[:test], self.classes, self.source + (" (subset)" if train or test else ""))


def to_float(images: Tensor) -> Tensor:
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as an array. Header: two zero bytes, 0x08 (uint8), ndim; then big-endian dims."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"{path} cannot be read as an IDX file: {error}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {body.size}")
    return body.reshape(dims)


IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_idx_folder(root: Path, name: str) -> Path | None:
    torchvision_name = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]
    for folder in (root, root / "raw", root / torchvision_name / "raw", root / name):
        if all(any((folder / (stem + ext)).is_file() for ext in (".gz", "")) for stem in IDX_FILES.values()):
            return folder
    return None


def _load_idx(folder: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for key, stem in IDX_FILES.items():
        path = folder / (stem + ".gz") if (folder / (stem + ".gz")).is_file() else folder / stem
        arrays[key] = read_idx(path)
    return arrays


def _find_image_folder(root: Path) -> Path | None:
    for folder in (root, root / "cifar10-jpeg"):
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            return folder
    return None


def _load_image_folder(folder: Path) -> dict[str, np.ndarray]:
    """An ImageFolder tree decoded once, then cached beside it (decoding 60,000 JPEGs takes a while).

    A tree lists its images class by class; they are put in one fixed shuffled order (numpy PCG64, seed 0), as
    MNIST's files are, so that the first N examples of a split are a fair sample of all classes."""
    from PIL import Image  # installed with torchvision

    cache = folder / "noiselab-cache-v2.npz"
    if cache.is_file():
        with np.load(cache) as stored:
            return {key: stored[key] for key in stored.files}
    arrays = {}
    for split in ("train", "test"):
        images, labels = [], []
        for label, cls in enumerate(CIFAR10_CLASSES):
            files = sorted(p for p in (folder / split / cls).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if not files:
                raise DataNotFoundError(f"{folder / split / cls} holds no images; expected <class>/*.jpg per class")
            for path in files:
                with Image.open(path) as image:
                    images.append(np.asarray(image.convert("RGB")).transpose(2, 0, 1))  # (H, W, C) -> (C, H, W)
                labels.append(label)
        order = np.random.default_rng(0).permutation(len(images))
        arrays[f"{split}_images"] = np.stack(images)[order]
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.uint8)[order]
    try:
        np.savez(cache, **arrays)
    except OSError:
        pass  # a read-only folder: decode again next time
    return arrays


def _load_cifar_batches(root: Path) -> dict[str, np.ndarray] | None:
    if not (root / "cifar-10-batches-py").is_dir():
        return None
    from torchvision.datasets import CIFAR10

    arrays = {}
    for split, train in (("train", True), ("test", False)):
        ds = CIFAR10(str(root), train=train, download=False)
        arrays[f"{split}_images"] = ds.data.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        arrays[f"{split}_labels"] = np.asarray(ds.targets, dtype=np.uint8)
    return arrays


def _download(name: str, root: Path) -> None:
    from torchvision import datasets

    make = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[name]
    try:
        for train in (True, False):
            make(str(root), train=train, download=True)
    except Exception as error:  # URLError, socket errors, HTTP errors: all mean "not reachable"
        raise DataNotFoundError(
            f"could not download {name} into {root} ({type(error).__name__}: {error}). "
            + _where_to_put(name, root)
        ) from None


def _where_to_put(name: str, root: Path) -> str:
    if name == "cifar10":
        return (f"Put an ImageFolder tree at {root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg "
                "(or torchvision's cifar-10-batches-py) there, or pass root=... / --data-root pointing at one.")
    return (f"Put the four IDX files ({', '.join(s + '.gz' for s in IDX_FILES.values())}) in {root}, "
            "or pass root=... / --data-root pointing at a folder that holds them.")


def default_root(name: str) -> Path:
    base = os.environ.get("NOISELAB_DATA")
    return Path(base) / name if base else Path.home() / ".cache" / "noiselab" / name


def _load_arrays(name: str, root: Path | None, download: bool) -> tuple[dict[str, np.ndarray], str]:
    if name == "mnist-embedded":
        with resources.files("noiselab.datasets").joinpath("mnist_subset.npz").open("rb") as handle:
            with np.load(handle) as stored:
                return {key: stored[key] for key in stored.files}, "embedded MNIST subset (noiselab/datasets)"
    folder = Path(root) if root is not None else default_root(name)
    for attempt in range(2):
        if name in ("mnist", "fashion-mnist"):
            found = _find_idx_folder(folder, name) if folder.is_dir() else None
            if found is not None:
                return _load_idx(found), str(found)
        else:
            if folder.is_dir():
                arrays = _load_cifar_batches(folder)
                if arrays is not None:
                    return arrays, str(folder)
                found = _find_image_folder(folder)
                if found is not None:
                    return _load_image_folder(found), str(found)
        if attempt == 0 and download:
            folder.mkdir(parents=True, exist_ok=True)
            _download(name, folder)
        else:
            break
    raise DataNotFoundError(
        f"{name} was not found in {folder}" + ("" if download else " and download=False") + ". "
        + _where_to_put(name, folder)
    )


def load(
    name: str = DEFAULT_DATASET, root: str | Path | None = None, device: str | torch.device = "cpu",
    download: bool = False,
) -> Dataset:
    """Load a whole data set onto `device` as uint8 tensors. See the module docstring for names and sources."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    arrays, source = _load_arrays(name, root, download)
    tensors = {}
    for key, array in arrays.items():
        tensor = torch.from_numpy(np.array(array))  # a writable copy (IDX buffers are read-only)
        if key.endswith("images") and tensor.dim() == 3:
            tensor = tensor.unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
        tensors[key] = tensor.to(device=device, dtype=torch.int64 if key.endswith("labels") else torch.uint8)
    classes = {"cifar10": CIFAR10_CLASSES, "fashion-mnist": FASHION_CLASSES}.get(name, MNIST_CLASSES)
    for split in ("train", "test"):
        images, labels = tensors[f"{split}_images"], tensors[f"{split}_labels"]
        if images.shape[0] != labels.shape[0] or images.dim() != 4:
            raise ValueError(
                f"{source}: {split} images {tuple(images.shape)} do not match labels {tuple(labels.shape)}"
            )
    return Dataset(name, tensors["train_images"], tensors["train_labels"], tensors["test_images"],
                   tensors["test_labels"], classes, source)
