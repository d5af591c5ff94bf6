"""Gaussian moment rules: what one layer does to a diagonal Gaussian N(mean, var).

Each rule takes element-wise means and variances (tensors of the same shape) and returns the
mean and variance of the layer's output, assuming independent inputs (the diagonal, ADF-style
approximation). Rules come in two flavours, selectable by name:

- ReLU
  - "paper":  the paper's Laplace/mode approximation (Sec. 2.1): mean = max(mu, 0); the variance
              is kept where mu >= -3 s and set to 0 below (s = sqrt(var)).
  - "moment": the exact first two moments of ReLU(Z), Z ~ N(mu, s^2) (moment matching).
- max-pool
  - "paper":  the max of the means in each window, carrying the variance of the chosen element.
  - "clark":  Clark's (1961) moment-matched max of two Gaussians, applied as a tree of pairwise
              maxima over the window.

Everything is written with torch ops only so autograd differentiates through it, and is safe for
var -> 0 (no NaN or Inf in values or gradients): variances are floored at VAR_FLOOR before any
square root.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# Variances below this are treated as this under square roots (std >= 1e-6): small enough to be
# invisible next to float32 activations, large enough that 1/sqrt stays far from overflow.
VAR_FLOOR = 1e-12

# The paper's censoring threshold: below mu = -3 s the ReLU output is treated as the constant 0.
PAPER_CENSOR_SIGMAS = 3.0

RELU_RULES = ("paper", "moment")
POOL_RULES = ("paper", "clark")

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def normal_pdf(z: Tensor) -> Tensor:
    """phi(z), the standard normal density."""
    return torch.exp(-0.5 * z * z) * _INV_SQRT_2PI


def normal_cdf(z: Tensor) -> Tensor:
    """Phi(z), the standard normal distribution function (accurate in the tails)."""
    return torch.special.ndtr(z)


def _std(var: Tensor) -> Tensor:
    return var.clamp_min(VAR_FLOOR).sqrt()


def _check_rule(rule: str, allowed: tuple[str, ...], parameter: str) -> None:
    if rule not in allowed:
        raise ValueError(f"{parameter}={rule!r} is not a known rule; choose one of {allowed}")


def relu_moments(mean: Tensor, var: Tensor, rule: str = "moment") -> tuple[Tensor, Tensor]:
    """Mean and variance of ReLU(Z) for Z ~ N(mean, var), element-wise.

    rule="moment" is exact. rule="paper" is the paper's mode/Laplace approximation.
    """
    _check_rule(rule, RELU_RULES, "rule")
    if mean.shape != var.shape:
        raise ValueError(f"mean and var must have the same shape, got {tuple(mean.shape)} and {tuple(var.shape)}")
    if rule == "paper":
        std = _std(var)
        keep = mean >= -PAPER_CENSOR_SIGMAS * std
        return F.relu(mean), torch.where(keep, var, torch.zeros_like(var))
    std = _std(var)
    a = mean / std
    cdf, pdf = normal_cdf(a), normal_pdf(a)
    out_mean = mean * cdf + std * pdf
    # var/s^2 = (a^2 + 1) Phi(a) + a phi(a) - (a Phi(a) + phi(a))^2, rewritten with Q = Phi(-a) as
    # 1 - Q + a^2 Q Phi(a) - a phi(a) (1 - 2Q) - phi(a)^2, which has no catastrophic cancellation
    # for large positive a (where var -> s^2). For large negative a both forms are tiny next to s^2.
    q = normal_cdf(-a)
    ratio = torch.where(
        a > 0,
        1.0 - q + a * a * q * cdf - a * pdf * (1.0 - 2.0 * q) - pdf * pdf,
        (a * a + 1.0) * cdf + a * pdf - (a * cdf + pdf) ** 2,
    )
    out_var = (ratio.clamp_min(0.0) * std * std).where(var > 0, torch.zeros_like(var))
    return out_mean, out_var


def max2_moments(mean_a: Tensor, var_a: Tensor, mean_b: Tensor, var_b: Tensor) -> tuple[Tensor, Tensor]:
    """Clark's moment-matched max(A, B) of independent Gaussians A ~ N(mean_a, var_a), B ~ N(mean_b, var_b).

    With theta = sqrt(var_a + var_b) and alpha = (mean_a - mean_b) / theta:
      E[max]   = mean_a Phi(alpha) + mean_b Phi(-alpha) + theta phi(alpha)
      Var[max] = var_a Phi(alpha) + var_b Phi(-alpha)
                 + theta^2 [alpha^2 Phi(alpha) Phi(-alpha) + alpha phi(alpha) (Phi(-alpha) - Phi(alpha)) - phi(alpha)^2]
    The variance is written in differences of means (algebraically equal to E[max^2] - E[max]^2),
    so it stays accurate when the means are large next to the spread.
    """
    theta = _std(var_a + var_b)
    alpha = (mean_a - mean_b) / theta
    cdf, cdf_neg, pdf = normal_cdf(alpha), normal_cdf(-alpha), normal_pdf(alpha)
    out_mean = mean_a * cdf + mean_b * cdf_neg + theta * pdf
    spread = alpha * alpha * cdf * cdf_neg + alpha * pdf * (cdf_neg - cdf) - pdf * pdf
    out_var = var_a * cdf + var_b * cdf_neg + theta * theta * spread
    return out_mean, out_var.clamp_min(0.0)


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def maxpool_moments(
    mean: Tensor,
    var: Tensor,
    rule: str = "clark",
    kernel_size=2,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
) -> tuple[Tensor, Tensor]:
    """Mean and variance of a 2-D max-pool over (B, C, H, W) Gaussians, with F.max_pool2d's arguments.

    rule="paper": the max of the means, with the variance of the element that won.
    rule="clark": Clark's moment-matched max, as a tree of pairwise maxima over each window
                  (padding, dilation and ceil_mode are not supported by this rule).
    """
    _check_rule(rule, POOL_RULES, "rule")
    if mean.shape != var.shape:
        raise ValueError(f"mean and var must have the same shape, got {tuple(mean.shape)} and {tuple(var.shape)}")
    stride = kernel_size if stride is None else stride
    if rule == "paper":
        out_mean, index = F.max_pool2d(
            mean, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True
        )
        out_var = var.flatten(2).gather(2, index.flatten(2)).view_as(out_mean)
        return out_mean, out_var
    if _pair(padding) != (0, 0) or _pair(dilation) != (1, 1) or ceil_mode:
        raise ValueError(
            "pool='clark' supports max-pooling without padding, dilation or ceil_mode; "
            "use pool='paper' for this layer's settings"
        )
    (kh, kw), (sh, sw) = _pair(kernel_size), _pair(stride)
    # (B, C, H, W) -> (B, C, Ho, Wo, kh*kw): a view of each window, no copy.
    windows_mean = mean.unfold(2, kh, sh).unfold(3, kw, sw).flatten(-2)
    windows_var = var.unfold(2, kh, sh).unfold(3, kw, sw).flatten(-2)
    means = list(windows_mean.unbind(-1))
    vars_ = list(windows_var.unbind(-1))
    while len(means) > 1:  # a tree: pair the first half with the second, carry an odd one over
        half = len(means) // 2
        paired = [max2_moments(means[i], vars_[i], means[i + half], vars_[i + half]) for i in range(half)]
        carry_m, carry_v = means[2 * half :], vars_[2 * half :]
        means = [m for m, _ in paired] + carry_m
        vars_ = [v for _, v in paired] + carry_v
    return means[0], vars_[0]


def avgpool_moments(
    mean: Tensor,
    var: Tensor,
    kernel_size=2,
    stride=None,
    padding=0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override=None,
) -> tuple[Tensor, Tensor]:
    """Mean and variance of a 2-D average pool, with F.avg_pool2d's arguments (exact for independent inputs).

    The pool is linear: out = sum_j x_j / d, so Var(out) = sum_j var_j / d^2 = avg_pool(var) / d, where d,
    the divisor, may vary by position (padding with count_include_pad=False, ceil_mode). 1/d is recovered
    as avg_pool(ones) / sum_pool(ones) with the same arguments.
    """
    args = dict(kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode)
    out_mean = F.avg_pool2d(mean, count_include_pad=count_include_pad, divisor_override=divisor_override, **args)
    avg_var = F.avg_pool2d(var, count_include_pad=count_include_pad, divisor_override=divisor_override, **args)
    ones = torch.ones((1, 1) + tuple(mean.shape[-2:]), dtype=mean.dtype, device=mean.device)
    avg_ones = F.avg_pool2d(ones, count_include_pad=count_include_pad, divisor_override=divisor_override, **args)
    sum_ones = F.avg_pool2d(ones, divisor_override=1, **args)
    return out_mean, avg_var * (avg_ones / sum_ones)


def censoring_curves(mu: float, sigma: float, grid: Tensor) -> dict[str, Tensor]:
    """The paper's Fig. 3 for Z ~ N(mu, sigma^2), on the points `grid`: densities of Z, of ReLU(Z)'s continuous part
    (Z's density for xi > 0, zero below), of the paper's and the moment-matched Gaussian approximations of ReLU(Z),
    and the probability mass ReLU(Z) puts at 0 (as a 0-dim tensor)."""
    if not (sigma > 0):
        raise ValueError(f"sigma must be > 0 to draw densities, got {sigma}")
    grid = grid.double()
    mean, var = torch.tensor(float(mu), dtype=torch.float64), torch.tensor(float(sigma) ** 2, dtype=torch.float64)

    def gaussian(m: Tensor, v: Tensor) -> Tensor:
        if float(v) <= 0:  # a point mass: no density to draw
            return torch.zeros_like(grid)
        return normal_pdf((grid - m) / v.sqrt()) / v.sqrt()

    density = gaussian(mean, var)
    paper = relu_moments(mean, var, "paper")
    moment = relu_moments(mean, var, "moment")
    return {
        "z": density,
        "relu": torch.where(grid > 0, density, torch.zeros_like(density)),
        "paper": gaussian(*paper),
        "moment": gaussian(*moment),
        "mass_at_zero": normal_cdf(-mean / var.sqrt()),
    }
