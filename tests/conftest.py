"""Shared test fixtures: the real data in ../shared/data (see its README)."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(relative: str) -> Path:
    """A path under ../shared/data. Missing data fails in CI (CI=true) and skips, with the reason, elsewhere."""
    path = SHARED_DATA / relative
    if not path.exists():
        message = f"{path} is missing: these tests use the real data sets in ../shared/data"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    return shared_data("mnist")


@pytest.fixture(scope="session")
def mnist_test(mnist_root):
    """The first 500 digits of real MNIST's test set, float in [0, 1]."""
    from noiselab import data

    return data.load("mnist", root=mnist_root).tensors("test", limit=500)


@pytest.fixture(scope="session")
def vanilla_demo_model():
    """A DemoCNN trained with cross-entropy for 2 epochs on 5,000 embedded digits (~5 s on 2 cores, ~85%)."""
    from noiselab.train import TrainConfig, train

    return train(TrainConfig(model="demo-cnn", method="vanilla", epochs=2, train_limit=5000, device="cpu")).model
