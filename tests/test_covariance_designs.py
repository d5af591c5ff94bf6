"""The closed-form pieces of bench/covariance_designs.py (issue 15's measurement), checked against exact answers."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

BENCH = Path(__file__).resolve().parents[1] / "bench" / "covariance_designs.py"


@pytest.fixture(scope="module")
def designs():
    spec = importlib.util.spec_from_file_location("covariance_designs", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pool_weights_are_the_probabilities_that_each_input_wins_its_window(designs):
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(1, 3, 4, 4, generator=generator, dtype=torch.float64)
    var = torch.rand(1, 3, 4, 4, generator=generator, dtype=torch.float64) * 0.5 + 0.05
    weights = designs.pool_weights(mean, var)  # (1, 3, 2, 2, 4)
    assert torch.allclose(weights.sum(-1), torch.ones(1, 3, 2, 2, dtype=torch.float64))
    draws = mean + var.sqrt() * torch.randn((100_000,) + tuple(mean.shape), generator=generator, dtype=torch.float64)
    winners = torch.stack(designs._windows(draws), -1).argmax(-1)
    sampled = torch.nn.functional.one_hot(winners, 4).double().mean(0)
    # Clark's tree approximates the max of each pair by a Gaussian: close to, not exactly, the frequencies
    # (measured: 0.014 apart on average, 0.056 at most, on these 48 inputs; a swapped input would be ~0.5 off)
    assert (weights - sampled).abs().mean() < 0.02 and (weights - sampled).abs().max() < 0.08


def test_on_a_network_without_relu_or_pool_both_designs_give_the_exact_covariance(designs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3)).double()
    layers = designs.sequential_layers(model)
    pre = torch.randn(2, 5, dtype=torch.float64)  # the first layer's pre-activation: the noise enters here
    exact = 0.7**2 * model[1].weight @ model[1].weight.T
    for expected in (False, True):
        cov = designs.linear_covariance(designs.linear_rest(layers, pre, 0.7, expected), pre, 0.7)
        assert torch.allclose(cov, exact.expand(2, 3, 3))


@pytest.mark.slow
def test_the_bench_writes_every_designs_errors(tmp_path):
    out = tmp_path / "designs.json"
    result = subprocess.run([sys.executable, str(BENCH), "--images", "2", "--draws", "2000", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert set(report["errors"]) >= {"diagonal (today)", "jacobian", "expected-slopes",
                                     "MC mean+var+cov (the noise floor)"}
    floor = report["errors"]["MC mean+var+cov (the noise floor)"]
    assert floor["std_relative_error"] == 0 and floor["correlation_abs_error"] < 1e-9
    assert "P(Yk>Yi) max err" in result.stdout
