"""The real `noiselab` command, in a subprocess."""

import pytest
from cli_support import run_cli, run_cli_each


def test_demo_prints_rules_layers_and_timing():
    result = run_cli("demo", "--model", "demo-cnn", "--samples", "200", "--sigma", "0.4")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "ReLU(Z), Z ~ N(mu, 1)" in out
    assert "DemoCNN (untrained, seed 0), 4 random inputs, sigma = 0.4" in out
    for layer in ("0 Conv2d", "1 ReLU", "2 MaxPool2d", "9 Linear"):
        assert layer in out
    # the exact ReLU moments at mu = 0, s = 1: mean phi(0) = 0.3989, variance 1/2 - 1/(2 pi) = 0.3408
    assert "   0.0      0.3989      0.0000     0.3408     1.0000" in out
    assert "Warning" not in result.stderr


@pytest.mark.slow
def test_bad_arguments_get_a_usage_error_not_a_traceback():
    for result in run_cli_each([["demo", "--sigma", "-1"], ["demo", "--sigma", "nan"], ["demo", "--samples", "0"],
                                ["demo", "--model", "resnet"]]):
        assert result.returncode == 2, result.args
        assert "Traceback" not in result.stderr
        assert "error:" in result.stderr
