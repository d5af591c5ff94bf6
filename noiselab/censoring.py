"""ReLU censoring of one Gaussian, Z ~ N(mu, sigma^2): the numbers the censoring explorer shows.

ReLU(Z) is a censored Gaussian: a point mass Phi(-mu/sigma) at 0 and Z's density above 0. The paper replaces
it by a Gaussian (its mode/Laplace rule); moment matching uses the exact mean and variance. This module puts
the two rules beside the exact moments and beside sampling:

    >>> table = censoring_moments(-0.5, 1.0)          # exact, paper, moment: mean, var, errors vs exact
    >>> hist = relu_histogram(-0.5, 1.0, samples=20_000, bins=40, seed=0)

Everything is float64 (the errors shown can be tiny next to the values).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .moments import normal_cdf, relu_moments


def _check_mu_sigma(mu: float, sigma: float) -> tuple[float, float]:
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu):
        raise ValueError(f"mu must be a finite number, got {mu!r}")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0 (the standard deviation of Z), got {sigma!r}")
    return float(mu), float(sigma)


@dataclass(frozen=True)
class RuleMoments:
    """Mean and variance of ReLU(Z) under one rule, and their signed errors against the exact moments."""

    rule: str            # "exact", "paper", "moment", or "Monte Carlo"
    mean: float
    var: float
    mean_error: float    # rule - exact
    var_error: float


def censoring_moments(mu: float, sigma: float, sampled: ReluHistogram | None = None) -> list[RuleMoments]:
    """The exact moments of ReLU(Z), Z ~ N(mu, sigma^2), and those of the paper's and the moment-matching rule.

    "exact" and "moment" agree by construction (moment matching *is* the exact first two moments); both are
    listed so the explorer can show that the paper's rule is the one that errs, and by how much. With `sampled`
    (a relu_histogram of the same mu and sigma) a "Monte Carlo" row is added: its error is the sampling error.
    """
    mu, sigma = _check_mu_sigma(mu, sigma)
    mean = torch.tensor(mu, dtype=torch.float64)
    var = torch.tensor(sigma * sigma, dtype=torch.float64)
    exact_mean, exact_var = (float(t) for t in relu_moments(mean, var, "moment"))
    rows = [RuleMoments("exact", exact_mean, exact_var, 0.0, 0.0)]
    for rule in ("paper", "moment"):
        rule_mean, rule_var = (float(t) for t in relu_moments(mean, var, rule))
        rows.append(RuleMoments(rule, rule_mean, rule_var, rule_mean - exact_mean, rule_var - exact_var))
    if sampled is not None:
        if (sampled.mu, sampled.sigma) != (mu, sigma):
            raise ValueError(f"sampled was drawn for mu={sampled.mu}, sigma={sampled.sigma}, "
                             f"not mu={mu}, sigma={sigma}")
        rows.append(RuleMoments("Monte Carlo", sampled.mean, sampled.var, sampled.mean - exact_mean,
                                sampled.var - exact_var))
    return rows


def mass_at_zero(mu: float, sigma: float) -> float:
    """P(ReLU(Z) = 0) = P(Z <= 0) = Phi(-mu / sigma)."""
    mu, sigma = _check_mu_sigma(mu, sigma)
    return float(normal_cdf(torch.tensor(-mu / sigma, dtype=torch.float64)))


@dataclass(frozen=True)
class ReluHistogram:
    """A Monte Carlo histogram of ReLU(Z): the fraction of draws at exactly 0, and the density of the rest.

    `density` is count / (samples * bin width) over (0, upper), so that mass_at_zero + sum(density * width) = 1
    (up to draws above `upper`, which are counted in `above`).
    """

    edges: Tensor        # (bins + 1,) float64, from 0 to upper
    density: Tensor      # (bins,) float64
    mass_at_zero: float  # fraction of draws with Z <= 0
    above: float         # fraction of draws above `upper` (not in any bin)
    mean: float          # sample mean and (unbiased) variance of ReLU(Z)
    var: float
    samples: int
    mu: float            # the Gaussian it was drawn from
    sigma: float


@functools.lru_cache(maxsize=8)
def _standard_draws(samples: int, seed: int) -> Tensor:
    # the same draws for every (mu, sigma): drawn once per (samples, seed), reused while a slider moves
    return torch.randn(samples, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def relu_histogram(
    mu: float, sigma: float, samples: int = 20_000, bins: int = 40, seed: int = 0, upper: float | None = None
) -> ReluHistogram:
    """Draw ReLU(Z), Z ~ N(mu, sigma^2), `samples` times and histogram it.

    The draws are mu + sigma * E with E the same standard normal draws for a given seed (common random numbers),
    so a histogram moves smoothly as mu and sigma change instead of flickering with fresh noise.
    `upper` (default max(mu + 4 sigma, sigma)) is the right end of the last bin.
    """
    mu, sigma = _check_mu_sigma(mu, sigma)
    for name, value in (("samples", samples), ("bins", bins)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if upper is None:
        upper = max(mu + 4.0 * sigma, sigma)
    if not (isinstance(upper, (int, float)) and math.isfinite(upper) and upper > 0):
        raise ValueError(f"upper must be a finite number > 0, got {upper!r}")
    relu = (mu + sigma * _standard_draws(samples, seed)).clamp_min(0.0)  # (samples,)
    width = float(upper) / bins
    # Bin k holds draws in [k w, (k+1) w); index `bins` collects the draws >= upper. The censored draws (exactly 0)
    # get weight 0, so they count in mass_at_zero only. bincount over indices, not a masked select, because
    # boolean indexing is slow on a busy CPU (measured ~20 ms for 20,000 draws under load, against < 1 ms).
    positive = (relu > 0).double()
    # relu >= 0, so truncation (.long()) is the floor; Tensor.floor on float64 measured 25 ms here for 20,000 values
    index = (relu / width).long().clamp_max(bins)
    counts = torch.bincount(index, weights=positive, minlength=bins + 1)  # (bins + 1,)
    edges = torch.linspace(0.0, float(upper), bins + 1, dtype=torch.float64)
    return ReluHistogram(
        edges=edges,
        density=counts[:bins] / (samples * width),
        mass_at_zero=1.0 - float(positive.sum()) / samples,
        above=float(counts[bins]) / samples,
        mean=float(relu.mean()),
        var=float(relu.var()) if samples > 1 else 0.0,
        samples=samples,
        mu=mu,
        sigma=sigma,
    )
