"""The core numbers behind the lab's explorers: ReLU censoring of one Gaussian, pairwise win probabilities,
layer-by-layer comparison with sampling, and the live tables the charts read. Checked against independent
references: numerical integration, sampling, monte_carlo, hand calculations."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import integrate, stats

import noiselab
from noiselab.censoring import censoring_moments, mass_at_zero, relu_histogram
from noiselab.charts.live import table_value
from noiselab.layerwise import activation_map, layer_errors, relative_error, sample_layers
from noiselab.loss import stochastic_loss_terms, win_probabilities
from noiselab.models import DemoCNN, LeNet5

# ---- censoring ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mu, sigma", [(-2.0, 1.0), (0.0, 0.5), (1.3, 2.0)])
def test_censoring_moments_exact_row_is_the_integral_and_paper_row_is_the_papers_rule(mu, sigma):
    def density(z):
        return stats.norm.pdf(z, mu, sigma)

    mean = integrate.quad(lambda z: z * density(z), 0, np.inf)[0]
    second = integrate.quad(lambda z: z * z * density(z), 0, np.inf)[0]
    rows = {row.rule: row for row in censoring_moments(mu, sigma)}
    assert rows["exact"].mean == pytest.approx(mean, abs=1e-9)
    assert rows["exact"].var == pytest.approx(second - mean**2, abs=1e-9)
    assert (rows["moment"].mean_error, rows["moment"].var_error) == pytest.approx((0.0, 0.0), abs=1e-12)
    # the paper: mean max(mu, 0); variance sigma^2 kept unless mu < -3 sigma
    assert rows["paper"].mean == max(mu, 0.0)
    assert rows["paper"].var == pytest.approx(sigma**2)
    assert rows["paper"].mean_error == pytest.approx(max(mu, 0.0) - mean)
    assert rows["paper"].var_error == pytest.approx(sigma**2 - (second - mean**2))


def test_paper_rule_censors_fully_below_three_sigma():
    rows = {row.rule: row for row in censoring_moments(-3.5, 1.0)}
    assert (rows["paper"].mean, rows["paper"].var) == (0.0, 0.0)
    assert rows["exact"].var > 0


def test_relu_histogram_matches_the_censored_gaussian():
    mu, sigma, samples = -0.4, 1.2, 40_000
    hist = relu_histogram(mu, sigma, samples=samples, bins=30, seed=1)
    p0 = stats.norm.cdf(-mu / sigma)
    # the censored fraction within 4 standard errors of Phi(-mu/sigma)
    assert abs(hist.mass_at_zero - p0) < 4 * math.sqrt(p0 * (1 - p0) / samples)
    assert mass_at_zero(mu, sigma) == pytest.approx(p0)
    # all draws are accounted for: at zero, in a bin, or above the last bin
    width = float(hist.edges[1] - hist.edges[0])
    assert hist.mass_at_zero + float(hist.density.sum()) * width + hist.above == pytest.approx(1.0, abs=1e-12)
    # the density of the draws above 0 follows Z's density (bin-averaged), within sampling error
    centres = ((hist.edges[:-1] + hist.edges[1:]) / 2).numpy()
    expected = stats.norm.pdf(centres, mu, sigma)
    assert np.abs(hist.density.numpy() - expected).max() < 0.05
    exact = censoring_moments(mu, sigma)[0]
    assert hist.mean == pytest.approx(exact.mean, abs=0.02)
    assert hist.var == pytest.approx(exact.var, rel=0.05)


def test_relu_histogram_reuses_its_draws_and_adds_a_monte_carlo_row():
    a = relu_histogram(0.5, 1.0, samples=1000, seed=3)
    b = relu_histogram(0.5, 1.0, samples=1000, seed=3)
    assert torch.equal(a.density, b.density)
    rows = censoring_moments(0.5, 1.0, sampled=a)
    assert rows[-1].rule == "Monte Carlo" and rows[-1].mean == a.mean
    assert rows[-1].mean_error == pytest.approx(a.mean - rows[0].mean)
    with pytest.raises(ValueError, match="sampled was drawn"):
        censoring_moments(0.4, 1.0, sampled=a)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_censoring_rejects_a_sigma_that_is_not_positive(sigma):
    with pytest.raises(ValueError, match="sigma"):
        censoring_moments(0.0, sigma)
    with pytest.raises(ValueError, match="sigma"):
        relu_histogram(0.0, sigma)


def test_relu_histogram_rejects_bad_counts():
    with pytest.raises(ValueError, match="samples"):
        relu_histogram(0.0, 1.0, samples=0)
    with pytest.raises(ValueError, match="bins"):
        relu_histogram(0.0, 1.0, bins=1.5)


# ---- win probabilities -------------------------------------------------------------------------------------------


def test_win_probabilities_by_hand():
    mean = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    var = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    wins = win_probabilities(mean, var)
    # Y_1 - Y_0 ~ N(1, 2): P(Y_1 > Y_0) = Phi(1 / sqrt 2) = 0.7602
    assert wins[0, 1, 0].item() == pytest.approx(stats.norm.cdf(1 / math.sqrt(2)), abs=1e-12)
    assert wins[0, 0, 1].item() == pytest.approx(1 - stats.norm.cdf(1 / math.sqrt(2)), abs=1e-12)
    assert wins[0, 0, 0].item() == 0.0 and wins[0, 1, 1].item() == 0.0


def test_win_probabilities_against_sampling_and_the_loss():
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(2, 4, generator=generator, dtype=torch.float64)
    var = 0.2 + torch.rand(2, 4, generator=generator, dtype=torch.float64)
    wins = win_probabilities(mean, var)
    draws = mean + var.sqrt() * torch.randn(200_000, 2, 4, generator=generator, dtype=torch.float64)
    sampled = (draws.unsqueeze(3) > draws.unsqueeze(2)).double().mean(0)  # (2, 4, 4): [b, k, i]
    torch.testing.assert_close(wins, sampled, atol=0.005, rtol=0)  # 4 standard errors at 200,000 draws
    target = torch.tensor([2, 0])
    _, prob = stochastic_loss_terms(mean, var, target)
    torch.testing.assert_close(wins[torch.arange(2), target].sum(1) / 3, prob)


def test_win_probabilities_reject_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        win_probabilities(torch.zeros(3), torch.zeros(3))


# ---- layer by layer ----------------------------------------------------------------------------------------------


def test_relative_error():
    assert relative_error(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0])) == pytest.approx(0.5)
    assert relative_error(torch.zeros(2), torch.zeros(2)) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        relative_error(torch.zeros(2), torch.zeros(3))


def test_sample_layers_is_monte_carlo_for_one_image():
    torch.manual_seed(0)
    model = LeNet5().eval()
    x = torch.rand(1, 1, 28, 28)
    output, layers = sample_layers(model, x, 0.7, samples=300, seed=5)
    reference, reference_layers = noiselab.monte_carlo(model, x, 0.7, samples=300, seed=5, return_layers=True)
    assert [layer.name for layer in layers] == [layer.name for layer in reference_layers]
    for ours, theirs in zip(layers, reference_layers):
        torch.testing.assert_close(ours.mean, theirs.mean, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ours.var, theirs.var, atol=1e-5, rtol=1e-3)
    torch.testing.assert_close(output.mean, reference.mean, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="one example"):
        sample_layers(model, torch.rand(2, 1, 28, 28), 0.5)


def test_layer_errors_are_sampling_error_where_the_closed_form_is_exact():
    torch.manual_seed(1)
    model = DemoCNN().eval()
    x = torch.rand(1, 1, 28, 28)
    _, closed = noiselab.propagate(model, x, 0.5, relu="moment", pool="clark", return_layers=True)
    _, sampled = sample_layers(model, x, 0.5, samples=2000, seed=0)
    errors = layer_errors(closed, sampled)
    assert [e.name for e in errors] == [layer.name for layer in closed]
    assert errors[0].label == "0 Conv2d"
    # layer 0 (conv1 + noise) and its ReLU are exact in closed form: what is left is sampling error, about
    # sqrt(2 / 2000) = 3% for a variance
    assert errors[0].var_error < 0.06 and errors[1].mean_error < 0.06
    assert all(math.isfinite(e.mean_error) and math.isfinite(e.var_error) for e in errors)
    with pytest.raises(ValueError, match="same layers"):
        layer_errors(closed, sampled[1:])


def test_activation_map():
    activation = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    torch.testing.assert_close(activation_map(activation), activation.double().mean(0))
    torch.testing.assert_close(activation_map(activation, channel=1), activation[1].double())
    wrapped = activation_map(torch.arange(45.0), width=20)
    assert wrapped.shape == (3, 20)
    assert wrapped[2, 4].item() == 44.0 and math.isnan(wrapped[2, 5].item())
    assert activation_map(torch.arange(64.0)).shape == (8, 8)  # about square by default
    with pytest.raises(ValueError, match="channel"):
        activation_map(activation, channel=2)
    with pytest.raises(ValueError, match="no channels"):
        activation_map(torch.zeros(10), channel=0)
    with pytest.raises(ValueError, match="shape"):
        activation_map(torch.zeros(1, 2, 3, 4))


# ---- live tables -------------------------------------------------------------------------------------------------


def test_table_value_is_column_wise_with_nulls_and_short_decimals():
    frame = pd.DataFrame({"x": [0.1, float("nan"), 1 / 3], "name": ["a", "b", "c"], "count": [1, 2, 3]})
    value = table_value(frame, capacity=5)
    assert value["n"] == 3
    assert value["x"] == [0.1, None, 0.333333]  # six significant digits of the column's largest value
    assert value["name"] == ["a", "b", "c"] and value["count"] == [1, 2, 3]
    assert table_value({"x": np.arange(3.0)}) == {"n": 3, "x": [0.0, 1.0, 2.0]}
    with pytest.raises(ValueError, match="at most 2"):
        table_value(frame, capacity=2)
    with pytest.raises(ValueError, match="equal lengths"):
        table_value({"a": [1, 2], "b": [1]})


def test_a_live_table_is_drawn_from_its_parameter():
    """vl-convert runs Vega on the spec: the text mark's label can only appear if the row lookups work."""
    import vl_convert

    from noiselab.charts.live import live_table

    param, base = live_table("rows", {"x": [1.0, 2.0], "label": ["first-row", "second-row"]}, capacity=4)
    chart = base.mark_text().encode(x="x:Q", text="label:N").add_params(param)
    svg = vl_convert.vegalite_to_svg(chart.to_dict())
    assert "first-row" in svg and "second-row" in svg
