"""Issue 7's controls: the mean path under each rule set (core, and the reproduce experiment through the CLI)."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from noiselab.layerwise import mean_path, mean_path_gaps
from noiselab.models import DemoCNN


@pytest.fixture(scope="module")
def small_model_and_digits():
    torch.manual_seed(0)
    return DemoCNN().eval(), torch.rand(6, 1, 28, 28)


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5])
def test_under_the_paper_rules_the_propagated_mean_is_the_network_whatever_sigma(small_model_and_digits, sigma):
    model, x = small_model_and_digits
    path = mean_path(model, x, sigma, relu="paper", pool="paper")
    gaps = mean_path_gaps(model, x, sigma, relu="paper", pool="paper")
    assert gaps == path.gaps and path.agreement == 1.0
    assert len(gaps) == len(list(model)) and [g.kind for g in gaps][:2] == ["Conv2d", "ReLU"]
    assert all(g.gap == 0.0 for g in gaps)  # exactly: the same ops on the same numbers


def test_under_the_moment_rules_the_mean_moves_with_sigma(small_model_and_digits):
    model, x = small_model_and_digits
    at = {s: mean_path_gaps(model, x, s, relu="moment", pool="clark") for s in (0.0, 0.3, 1.0)}
    assert at[0.3][0].gap == 0.0  # the noise's mean is 0: the first pre-activation's mean is the network's
    assert max(g.gap for g in at[0.0]) < 1e-5  # no noise: only the variance floor's trace
    output = {s: gaps[-1].gap for s, gaps in at.items()}
    assert 0.01 < output[0.3] < output[1.0], output


def test_mean_path_rejects_bad_input(small_model_and_digits):
    model, x = small_model_and_digits
    with pytest.raises(ValueError, match="sigma"):
        mean_path_gaps(model, x, -0.5)
    with pytest.raises(ValueError, match="relu"):
        mean_path_gaps(model, x, 0.5, relu="laplace")


def test_reproduce_meanpath_quick_writes_data_and_chart(tmp_path):
    result = subprocess.run([sys.executable, "-m", "noiselab.cli", "reproduce", "meanpath", "--quick", "--out",
                             str(tmp_path), "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "meanpath"
    table = pd.read_csv(folder / "meanpath.csv")
    output = table[table["is_output"]]
    assert set(output["rules"]) == {"paper/paper", "moment/paper", "paper/clark", "moment/clark"}
    assert (output[output.rules == "paper/paper"]["gap"] == 0).all()
    assert (output[output.rules == "paper/paper"]["agreement"] == 1).all()
    moment = output[(output.rules == "moment/clark") & (output.sigma == 1.0)]
    assert len(moment) == 4 and (moment["gap"] > 0.05).all()  # the four starter models
    assert json.loads((folder / "results.json").read_text())["environment"]["torch"]
    assert (folder / "meanpath.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cdn.jsdelivr" not in (folder / "meanpath.html").read_text()
