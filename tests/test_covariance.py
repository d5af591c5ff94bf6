"""propagate(covariance="full" | "full-linear") and noiselab.covariance's rules, against exact answers, numerical
integration and Monte Carlo sampling of the same noise; and their input checks."""

import importlib
import math
import pickle

import pytest
import torch
from torch import nn

import noiselab
from noiselab.covariance import COVARIANCE_MODES, relu_pair_covariance
from noiselab.loss import stochastic_loss
from noiselab.models import CifarCNN, LeNet5
from noiselab.moments import relu_moments
from noiselab.propagate import first_preactivation, noise_entry, sequential_layers

propagate_module = importlib.import_module("noiselab.propagate")  # the module (noiselab.propagate is the function)

CORRELATED = ("full", "full-linear")


def sampled_covariance(model, x, sigma, draws, seed=0):
    """The output's mean and covariance over `draws` draws of the first pre-activation's noise, float64."""
    layers = sequential_layers(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        pre = first_preactivation(layers, x)
        noise = torch.randn((draws,) + tuple(pre.shape), generator=generator, dtype=pre.dtype)
        h = (pre.unsqueeze(0) + sigma * noise).flatten(0, 1)
        for _, layer in layers[noise_entry(layers) + 1:]:
            h = layer(h)
    y = h.reshape(draws, x.shape[0], -1).double()
    centred = y - y.mean(0)
    return y.mean(0), torch.einsum("sbi,sbj->bij", centred, centred) / (draws - 1)


@pytest.mark.parametrize("mode", CORRELATED)
def test_a_linear_network_gets_its_exact_covariance(mode):
    """Noise N(0, sigma^2 I) at the first layer's output, then linear layers: Cov = sigma^2 A A^T, exactly."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 7), nn.Linear(7, 4)).double()
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    out = noiselab.propagate(model, x, 0.7, relu="moment", pool="clark", covariance=mode)
    a = model[3].weight @ model[2].weight  # (4, 48): the map from the noise to the output
    expected = 0.49 * a @ a.T
    assert out.cov.shape == (2, 4, 4)
    torch.testing.assert_close(out.cov, expected.expand(2, 4, 4), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.var, expected.diagonal().expand(2, 4))
    torch.testing.assert_close(out.mean, model(x))


@pytest.mark.parametrize("a, b", [(0.0, 0.0), (1.5, -0.5), (-2.0, -3.0), (2.5, 3.0), (-1.0, 0.7)])
@pytest.mark.parametrize("rho", [-0.999, -0.6, 0.0, 0.35, 0.9, 0.999, 1.0])
def test_relu_pair_covariance_matches_numerical_integration(a, b, rho):
    """Cov(ReLU(a + U), ReLU(b + V)) for standard normal U, V with correlation rho, against a 2-D trapezoid rule
    (U and Z independent, V = rho U + sqrt(1 - rho^2) Z; 2,001 points a side on [-9, 9]; its own error ~2e-5)."""
    grid = torch.linspace(-9, 9, 2001, dtype=torch.float64)
    step = float(grid[1] - grid[0])
    density = torch.exp(-grid**2 / 2) / math.sqrt(2 * math.pi)
    weights = torch.full_like(grid, step)
    weights[0] = weights[-1] = step / 2
    w = (density * weights).unsqueeze(1) * (density * weights).unsqueeze(0)  # (U, Z)
    u, z = grid.unsqueeze(1), grid.unsqueeze(0)
    x, y = torch.relu(a + u), torch.relu(b + rho * u + math.sqrt(max(1 - rho * rho, 0.0)) * z)
    expected = float((w * x * y).sum() - (w * x).sum() * (w * y).sum())
    got = float(relu_pair_covariance(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                                     torch.tensor(rho, dtype=torch.float64)))
    assert abs(got - expected) < 2e-4, (got, expected)


def test_relu_pair_covariance_of_a_unit_with_itself_is_its_variance():
    a = torch.linspace(-4, 4, 33, dtype=torch.float64)
    _, var = relu_moments(a, torch.ones_like(a), "moment")
    torch.testing.assert_close(relu_pair_covariance(a, a, torch.ones_like(a)), var, atol=2e-4, rtol=0)


def output_errors(out, mean, cov):
    """The largest relative error of the output variances and the largest absolute error of its correlations (cov's
    own for a CorrelatedGaussian, none for a diagonal one) against a sampled mean and covariance; and the means'."""
    out_cov = (out.cov if hasattr(out, "cov") else torch.diag_embed(out.var)).detach().double()
    var, out_var = cov.diagonal(dim1=1, dim2=2), out_cov.diagonal(dim1=1, dim2=2)
    corr = cov / (var.sqrt().unsqueeze(2) * var.sqrt().unsqueeze(1))
    out_corr = out_cov / (out_var.sqrt().unsqueeze(2) * out_var.sqrt().unsqueeze(1))
    return (float(((out_var - var).abs() / var).amax()), float((out_corr - corr).abs().amax()),
            float((out.mean.detach().double() - mean).abs().amax() / mean.abs().amax()))


def test_relu_of_jointly_gaussian_units_is_exact_in_full_mode():
    """Linear, linear (the noise is exactly Gaussian and correlated after it), ReLU, linear; sigma = 0.8, 400,000
    draws (their own error ~0.3%). Measured: the covariance's largest error 0.2% of its largest entry with "full"
    (sampling's own), 4.7% with "full-linear", 55% with the diagonal rules."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    mean, cov = sampled_covariance(model, x, 0.8, 400_000)
    errors = {}
    for mode in COVARIANCE_MODES:
        with torch.no_grad():
            out = noiselab.propagate(model, x, 0.8, relu="moment", pool="clark", covariance=mode)
        out_cov = out.cov if mode != "diagonal" else torch.diag_embed(out.var)
        errors[mode] = float((out_cov - cov).abs().amax() / cov.abs().amax())
        assert float((out.mean - mean).abs().amax() / mean.abs().amax()) < 0.01
    print(f"\ncovariance errors {errors}")
    assert errors["full"] < 0.01 < errors["full-linear"] < 0.1 < errors["diagonal"]


@pytest.mark.slow
def test_max_of_two_jointly_gaussian_units_is_exact_in_full_mode():
    """Two convolutions (exactly Gaussian, correlated outputs), then a 1x2 max-pool (one of Clark's maxima per window,
    no tree), sigma = 0.8, 200,000 draws. Measured: variances 0.7% off (sampling's error) in both modes; the largest
    correlation error 0.007 with "full" (its Price correction; 0.004 at 400,000 draws) and 0.15 with "full-linear"
    (first order)."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1), nn.MaxPool2d((1, 2)),
                          nn.Flatten()).double()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    mean, cov = sampled_covariance(model, x, 0.8, 200_000)
    with torch.no_grad():
        full = output_errors(noiselab.propagate(model, x, 0.8, relu="moment", pool="clark", covariance="full"),
                             mean, cov)
        linear = output_errors(noiselab.propagate(model, x, 0.8, relu="moment", pool="clark",
                                                  covariance="full-linear"), mean, cov)
    print(f"\nfull {full}, full-linear {linear}")
    assert full[0] < 0.02 and linear[0] < 0.02 and full[2] < 0.01
    assert full[1] < 0.015 and linear[1] > 0.05


def small_conv_net():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 5)).double().eval()


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["clark", "clark-prerelu"])
def test_conv_relu_pool_covariance_is_closer_to_sampling(pool):
    """Conv, ReLU, conv, ReLU, 2x2 max-pool, linear; sigma = 0.5, 100,000 draws: the output's variances and
    correlations, the correlated modes beside the diagonal rules. What is left is the Gaussian closure's (a sum of 27
    censored units taken as Gaussian, Clark's tree taking its first maxima as Gaussians), not the covariance's.
    Measured, largest over outputs: correlations 0.15 off against 0.44 for the diagonal rules; variances no worse."""
    model = small_conv_net()
    torch.manual_seed(4)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    mean, cov = sampled_covariance(model, x, 0.5, 100_000)
    with torch.no_grad():
        diagonal = output_errors(noiselab.propagate(model, x, 0.5, relu="moment", pool=pool), mean, cov)
        for mode in CORRELATED:
            errors = output_errors(noiselab.propagate(model, x, 0.5, relu="moment", pool=pool, covariance=mode),
                                   mean, cov)
            print(f"\n{pool} {mode}: variance, correlation, mean errors {errors}; diagonal rules {diagonal}")
            assert errors[1] < 0.2 and errors[1] < diagonal[1] / 2
            assert errors[0] <= diagonal[0] * 1.05 and errors[2] <= diagonal[2] * 1.05


@pytest.mark.parametrize("mode", CORRELATED)
@pytest.mark.parametrize("pool", ["clark", "clark-prerelu"])
def test_full_covariance_gradients_match_finite_differences(mode, pool):
    """The stochastic loss with the logits' covariance: autograd's gradient in sigma against finite differences
    (gradcheck, float64), and finite gradients for every weight."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(2 * 2 * 2, 3)).double()
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    target = torch.tensor([1])

    def loss(sigma):
        out = noiselab.propagate(model, x, sigma, relu="moment", pool=pool, covariance=mode)
        return stochastic_loss(out.mean, out.var, target, cov=out.cov)

    assert torch.autograd.gradcheck(loss, (torch.tensor(0.6, dtype=torch.float64, requires_grad=True),))
    loss(torch.tensor(0.6, dtype=torch.float64)).backward()
    assert all(bool(torch.isfinite(p.grad).all()) and float(p.grad.abs().sum()) > 0 for p in model.parameters())


def test_zero_sigma_is_the_expectation_model_with_no_covariance():
    torch.manual_seed(0)
    model = LeNet5().eval()
    x = torch.rand(1, 1, 28, 28)
    sigma = torch.tensor(0.0, requires_grad=True)
    out = noiselab.propagate(model, x, sigma, relu="moment", pool="clark-prerelu", covariance="full-linear")
    torch.testing.assert_close(out.mean, model(x), atol=1e-4, rtol=1e-4)
    assert float(out.cov.detach().abs().max()) < 1e-8
    stochastic_loss(out.mean, out.var, torch.tensor([3]), cov=out.cov).backward()
    assert torch.isfinite(sigma.grad)


def test_lenet5_full_covariance_is_closer_to_sampling_than_the_diagonal_rules():
    """Untrained LeNet5 (seeded), sigma = 0.5, 2 random images, 4,000 draws: the logits' correlations. Measured: 0.02
    largest error with covariance="full-linear" against 0.6 for the diagonal rules (which have none)."""
    torch.manual_seed(0)
    model = LeNet5().eval()
    x = torch.rand(2, 1, 28, 28)
    _, cov = sampled_covariance(model, x, 0.5, 4000)
    std = cov.diagonal(dim1=1, dim2=2).sqrt()
    corr = cov / (std.unsqueeze(2) * std.unsqueeze(1))
    with torch.no_grad():
        out = noiselab.propagate(model, x, 0.5, relu="moment", pool="clark-prerelu", covariance="full-linear")
    out_std = out.var.double().sqrt()
    out_corr = out.cov.double() / (out_std.unsqueeze(2) * out_std.unsqueeze(1))
    off = 1 - torch.eye(10, dtype=torch.float64)
    corr_error = float(((out_corr - corr).abs() * off).amax())
    std_error = float(((out_std - std).abs() / std).mean())
    print(f"\nLeNet5 full-linear: correlations' largest error {corr_error:.3f} "
          f"(diagonal rules {float((corr * off).abs().amax()):.3f}), std error {std_error:.3f}")
    assert corr_error < 0.08 < float((corr * off).abs().amax())
    assert std_error < 0.2


def test_the_result_unpacks_as_a_gaussian_and_keeps_its_covariance_when_pickled():
    model = small_conv_net()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    out = noiselab.propagate(model, x, 0.5, relu="moment", pool="clark", covariance="full")
    mean, var = out
    assert isinstance(out, noiselab.CorrelatedGaussian) and isinstance(out, noiselab.Gaussian)
    assert out.cov.shape == (3, 5, 5)
    torch.testing.assert_close(out.cov.diagonal(dim1=1, dim2=2), var)
    again = pickle.loads(pickle.dumps(out))
    torch.testing.assert_close(again.cov, out.cov)
    torch.testing.assert_close(again.mean, mean)


def test_return_layers_and_chunking_give_the_same_answer(monkeypatch):
    model = small_conv_net()
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    whole, record = noiselab.propagate(model, x, 0.5, relu="moment", pool="clark", covariance="full",
                                       return_layers=True)
    diagonal_record = noiselab.propagate(model, x, 0.5, relu="moment", pool="clark", return_layers=True)[1]
    assert [layer.name for layer in record] == [layer.name for layer in diagonal_record]
    # the layers before the first mixing one are the diagonal rules' exactly (independent units)
    torch.testing.assert_close(record[1].var, diagonal_record[1].var)
    monkeypatch.setattr(propagate_module, "COVARIANCE_CHUNK_BYTES", 1)  # one example per chunk
    parts = noiselab.propagate(model, x, 0.5, relu="moment", pool="clark", covariance="full")
    torch.testing.assert_close(parts.cov, whole.cov)
    torch.testing.assert_close(parts.mean, whole.mean)


def test_unknown_covariance_mode_is_named():
    with pytest.raises(ValueError, match="covariance='banded' is not a known mode"):
        noiselab.propagate(LeNet5(), torch.rand(1, 1, 28, 28), 0.5, covariance="banded")
    assert COVARIANCE_MODES[0] == "diagonal"


def test_a_covariance_too_large_is_refused_before_any_work():
    with pytest.raises(ValueError, match=r"16384 x 16384 covariance per example after layer '3'.*diagonal"):
        noiselab.propagate(CifarCNN(), torch.rand(1, 3, 32, 32), 0.5, covariance="full")
    with pytest.raises(ValueError, match=r"12544 x 12544 .*noise_at='preact'"):
        noiselab.propagate(LeNet5(), torch.rand(1, 1, 28, 28), 0.5, covariance="full", noise_at="input")


def test_a_pool_the_mode_cannot_take_is_named():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.ReLU(), nn.MaxPool2d(2, padding=1),
                          nn.Flatten(), nn.Linear(2 * 3 * 3, 3))
    with pytest.raises(ValueError, match=r"max-pools without padding.*layer '4'.*covariance='diagonal'"):
        noiselab.propagate(model, torch.rand(1, 1, 8, 8), 0.5, pool="paper", covariance="full")


@pytest.mark.slow
def test_the_covariance_bench_writes_errors_per_design_and_layer_and_the_costs(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench" / "covariance_full.py"
    out = tmp_path / "covariance.json"
    result = subprocess.run([sys.executable, str(bench), "--models", "vanilla", "--sigmas", "0.5", "--images", "1",
                             "--draws", "1000", "--layer-draws", "200", "--designs", "full-linear/clark-prerelu",
                             "--cost-batch", "1", "--repeats", "1", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    written = json.loads(out.read_text())
    rows = {row["design"]: row for row in written["rows"]}
    assert set(rows) == {"diagonal/clark-prerelu", "full-linear/clark-prerelu", "gaussian floor"}
    assert rows["full-linear/clark-prerelu"]["std_error"] < rows["diagonal/clark-prerelu"]["std_error"]
    assert len(rows["full-linear/clark-prerelu"]["layers"]) == 15  # LeNet5 from its first convolution on
    costs = {row["design"]: row for row in written["cost"]}
    assert costs["full-linear/clark-prerelu"]["forward_ratio"] > 1 and costs["diagonal/clark-prerelu"][
        "forward_backward_ratio"] == 1


def test_the_memory_check_counts_a_convolutions_input_and_a_pools_tree_and_an_empty_batch_works():
    from noiselab.propagate import covariance_width

    # conv -> conv -> overlapping 3x3 pool at stride 1 on 12 x 12: the tree's first level holds 4 * 10 * 10 * 5 nodes
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.MaxPool2d(3, stride=1),
                          nn.Flatten(), nn.Linear(400, 3))
    assert covariance_width(sequential_layers(model), torch.rand(2, 1, 12, 12)) == (2000, "2")
    # a convolution's matrix is read off an identity of its input's size: counted where that is the larger
    wide_in = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 1, 3, padding=1), nn.Flatten())
    assert covariance_width(sequential_layers(wide_in), torch.rand(1, 1, 6, 6)) == (288, "1")
    out = noiselab.propagate(small_conv_net(), torch.rand(0, 1, 8, 8, dtype=torch.float64), 0.5, relu="moment",
                             pool="clark", covariance="full")
    assert out.mean.shape == (0, 5) and out.cov.shape == (0, 5, 5)


def test_replacing_a_field_keeps_the_covariance():
    out = noiselab.propagate(small_conv_net(), torch.rand(2, 1, 8, 8, dtype=torch.float64), 0.5, relu="moment",
                             pool="clark", covariance="full-linear")
    replaced = out._replace(mean=out.mean * 2)
    torch.testing.assert_close(replaced.cov, out.cov)
    torch.testing.assert_close(replaced.mean, out.mean * 2)
