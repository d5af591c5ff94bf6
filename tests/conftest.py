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
