"""Shared test fixtures: the real data in ../shared/data (see its README); how the suite runs in parallel.

`make test` runs the suite on two pytest-xdist workers, a whole test file at a time (`--dist loadfile`). Each
worker, and every process it starts (the CLI in a subprocess, kernels, Ray), computes with one thread, so two
workers keep two cores busy without oversubscribing them. A module fixture (a Voila server, Ray's reference sweep)
is built once, and two Ray tests never start a local Ray each at the same time. (`--dist loadgroup` with
`xdist_group` marks did this before pytest 9.2, on which pytest-xdist 3.8 stops grouping without a word:
pytest-xdist issue 1386; both workers built the Voila server and the Ray reference sweep.) The long files are
handed out first, in a chosen order (LONGEST below), so that no long file starts when the other worker has nothing
left to do. The hook below orders them; `--no-loadscope-reorder` (pytest-xdist 3.8) keeps that order, which xdist
would otherwise replace by the files' numbers of tests (a file of many quick tests first, the longest anywhere).
"""

import os
from pathlib import Path

import pytest

XDIST_WORKER = bool(os.environ.get("PYTEST_XDIST_WORKER"))  # a worker of `pytest -n N`
if XDIST_WORKER:  # one thread here and in every process the tests start (they inherit the environment)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if not os.environ.get(variable, "").strip().isdigit():  # unset, empty or not a count: one thread
            os.environ[variable] = "1"


def pytest_configure(config):
    if XDIST_WORKER:
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

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


# the files that took longest on one worker (pytest --durations=0, 2 workers, the 2-core machine, 2026-12-07:
# Ray 141-178 s, ablations 148-176, kernel bound 122-152, experiments 87-106, browser 83-111, train 88-90, suites
# 58-69, attacks 46-48, notebooks 45-51, covariance 32-37), in the order they are handed out. The Ray sweeps, the
# bounded servers' kernels and the browser each keep more than one core busy: each is placed to run beside files
# that keep one busy (Ray beside train and suites, the kernel bound beside the ablations' runs, the browser beside
# the reproductions), not beside another of them (in a run that paired them, each took 20-34% longer than in the
# run before it).
LONGEST = ["test_ray_sweep.py", "test_train.py", "test_suites.py", "test_ablations.py", "test_kernel_bound.py",
           "test_experiments.py", "test_browser.py", "test_attacks.py", "test_notebooks.py", "test_covariance.py"]


def pytest_collection_modifyitems(config, items):
    """The longest work first, so that two workers end close together: the LONGEST files in that order, then the
    others by how many of their tests are marked slow, the files without any last. Whole files move (a stable sort
    on the file), each in its own order."""
    slow: dict = {}
    for item in items:
        slow[item.path] = slow.get(item.path, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: (LONGEST.index(item.path.name) if item.path.name in LONGEST else len(LONGEST),
                                 -slow[item.path]))
