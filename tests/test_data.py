"""Data loading: the embedded subset, real MNIST IDX files, an ImageFolder tree, and clear errors."""

import gzip

import numpy as np
import pytest
import torch

from noiselab import data


def test_embedded_subset_is_stratified_real_mnist():
    dataset = data.load()
    assert dataset.name == "mnist-embedded"
    assert dataset.train_images.shape == (10000, 1, 28, 28) and dataset.train_images.dtype == torch.uint8
    assert dataset.test_images.shape == (2000, 1, 28, 28)
    assert torch.equal(torch.bincount(dataset.train_labels), torch.full((10,), 1000))
    assert torch.equal(torch.bincount(dataset.test_labels), torch.full((10,), 200))
    x, y = dataset.tensors("test", limit=5)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and y.shape == (5,)


def test_embedded_subset_is_drawn_from_the_real_files(mnist_root):
    """Every embedded training digit is an exact copy of one of MNIST's training digits with the same label."""
    full = data.load("mnist", root=mnist_root)
    embedded = data.load()
    assert full.train_images.shape == (60000, 1, 28, 28) and full.test_images.shape == (10000, 1, 28, 28)
    keys = {bytes(image.numpy().tobytes()): int(label) for image, label in zip(full.test_images, full.test_labels)}
    for image, label in zip(embedded.test_images[:300], embedded.test_labels[:300]):
        assert keys[bytes(image.numpy().tobytes())] == int(label)


def test_batches_cover_the_split_once_and_are_seeded():
    dataset = data.load().subset(train=1000, test=100)
    seen = torch.cat([y for _, y in dataset.batches("train", 128, generator=torch.Generator().manual_seed(0))])
    assert seen.shape == (1000,)
    assert torch.equal(torch.bincount(seen, minlength=10), torch.bincount(dataset.train_labels, minlength=10))
    first = next(dataset.batches("train", 64, generator=torch.Generator().manual_seed(1)))[1]
    again = next(dataset.batches("train", 64, generator=torch.Generator().manual_seed(1)))[1]
    assert torch.equal(first, again)
    with pytest.raises(ValueError, match="batch_size"):
        next(dataset.batches("train", 0))
    with pytest.raises(ValueError, match="split"):
        dataset.split("validation")


def test_image_folder_tree_loads_and_is_cached(tmp_path):
    from PIL import Image

    for split, count in (("train", 2), ("test", 1)):
        for label, cls in enumerate(data.CIFAR10_CLASSES):
            folder = tmp_path / "cifar10-jpeg" / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (32, 32), (label * 20 + i,) * 3).save(folder / f"{i:04d}.png")
    dataset = data.load("cifar10", root=tmp_path)
    assert dataset.train_images.shape == (20, 3, 32, 32) and dataset.test_images.shape == (10, 3, 32, 32)
    # every image still carries its own label (its pixel value encodes it) ...
    assert torch.equal(dataset.train_images[:, 0, 0, 0].long() // 20, dataset.train_labels)
    # ... and the class-by-class listing is shuffled, so the first examples cover many classes
    assert len(set(dataset.train_labels[:10].tolist())) >= 5
    assert (tmp_path / "cifar10-jpeg" / "noiselab-cache-v2.npz").is_file()
    assert torch.equal(data.load("cifar10", root=tmp_path).train_images, dataset.train_images)


def test_missing_data_offline_says_where_to_put_it(tmp_path):
    with pytest.raises(data.DataNotFoundError, match=r"Put the four IDX files \(train-images-idx3-ubyte.gz"):
        data.load("fashion-mnist", root=tmp_path / "nowhere")
    with pytest.raises(data.DataNotFoundError, match="ImageFolder tree"):
        data.load("cifar10", root=tmp_path)


def test_unreachable_download_is_a_clear_error(tmp_path, monkeypatch):
    import urllib.request

    def refuse(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", refuse)
    with pytest.raises(data.DataNotFoundError, match="could not download mnist"):
        data.load("mnist", root=tmp_path / "mnist", download=True)


def test_unknown_dataset_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        data.load("imagenet")
    for stem in data.IDX_FILES.values():
        (tmp_path / f"{stem}.gz").write_bytes(gzip.compress(b"not an idx file"))
    with pytest.raises(ValueError, match="is not an IDX file"):
        data.load("mnist", root=tmp_path)
    header = np.array([0, 0, 8, 1], dtype=np.uint8).tobytes() + (100).to_bytes(4, "big")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + b"\x01" * 10))
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz")
