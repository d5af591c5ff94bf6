"""Gaussian rules that carry the units' covariance: what one layer does to N(mean, Cov) (issue 15).

The diagonal rules of noiselab.moments assume the units entering a layer are independent. The noise is independent
where it enters, but the first layer that mixes units (a convolution, a linear layer) correlates its outputs, and
from there on every layer's inputs are correlated. These rules keep a full covariance per image, (B, D, D) over the
D units of a layer flattened as nn.Flatten orders them, and noiselab.propagate(covariance=...) chains them:

- a linear map A (Conv2d, Linear, AvgPool2d; no bias): Cov -> A Cov A^T, exact. It is computed with the layer
  itself, applied to the covariance's rows taken as inputs (a convolution's sparsity for free): map_covariance.
- ReLU: each unit's mean and variance by the rule's own formulas (noiselab.moments.relu_moments, exact for a
  Gaussian input with rule="moment"); between two units, by the mode:
  - "full": Cov(ReLU X, ReLU Y) for jointly Gaussian X, Y, exactly (to quadrature accuracy). By Price's theorem
    dCov/dC = P(X > 0, Y > 0) and d P(X > 0, Y > 0)/d rho = phi2(a, b; rho), so with a = mu_x / s_x, b = mu_y / s_y,
    rho their correlation:  Cov = s_x s_y [rho Phi(a) Phi(b) + int_0^rho (rho - t) phi2(a, b; t) dt],
    the integral by Gauss-Legendre (RELU_QUADRATURE_NODES) after t = rho u.
  - "full-linear": its first order in the correlation, Phi(a) Phi(b) Cov(X, Y) (Stein's lemma: the ReLU's expected
    slope on each side). Cheaper, and exact where the correlation is small.
  With rule="paper" both modes use the paper's own slope: 1 where it keeps the variance, 0 where it drops it.
- max-pool: a tree of pairwise maxima over each window, as pool="clark" (and "clark-prerelu"), now of correlated
  Gaussians: Clark's (1961) max of two with theta^2 = Var(A - B) = var_a + var_b - 2 Cov(A, B) gives the mean and
  variance (exact for jointly Gaussian A, B). Between two maxima M = max(A, B), M' = max(C, D):
  - "full-linear": Cov(M, M') = sum over X in (A, B), Y in (C, D) of P(X wins) P(Y wins) Cov(X, Y), Phi(+-alpha)
    each; exact where M' is a Gaussian Z (Cov(M, Z) = Phi(alpha) Cov(A, Z) + Phi(-alpha) Cov(B, Z)), first order in
    the cross-covariances otherwise;
  - "full": that plus theta theta' price_correction(alpha, alpha', rho), rho = Corr(A - B, C - D): exact for jointly
    Gaussian A, B, C, D (Price's theorem again: scaling the cross-covariances by t from 0 to 1, the derivative is
    P(A > B, C > D) and its own derivative in rho the bivariate density; a ReLU is the case B = D = 0).
  pool="paper" takes the winner of the means, with its row and column of the covariance.

Every rule is plain torch ops: autograd differentiates it. The cost is the covariance's size: D^2 per image at the
widest layer after the first mixing one (LeNet5: 4608^2 after its second convolution, 85 MB per image in float32),
and each rule is a few passes over it (the "full" ReLU about ten per quadrature node).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .moments import (
    POOL_RULES,
    RELU_RULES,
    VAR_FLOOR,
    _check_rule,
    _pair,
    _std,
    correlated_max2_terms,
    normal_cdf,
    relu_moments,
)

COVARIANCE_MODES = ("diagonal", "full", "full-linear")
# Price's integral, int_0^1 (1 - u) phi2(a, b; rho u) du, by Gauss-Legendre on [0, 1]: 12 nodes keep the ReLU's
# cross-covariance within 2e-4 of s_x s_y over a, b in [-3, 3] and every rho, rho -> +-1 included
# (tests/test_covariance.py checks it against a 2-D numerical integration).
RELU_QUADRATURE_NODES = 12

_nodes, _weights = np.polynomial.legendre.leggauss(RELU_QUADRATURE_NODES)
_U = tuple(float(u) for u in (_nodes + 1) / 2)  # on [0, 1]
_W = tuple(float(w) for w in _weights / 2)
_INV_2PI = 1.0 / (2.0 * math.pi)


def check_covariance_mode(mode: str) -> None:
    if mode not in COVARIANCE_MODES:
        raise ValueError(f"covariance={mode!r} is not a known mode; choose one of {COVARIANCE_MODES} (\"diagonal\": "
                         "independent units, as the paper; \"full\": every pair's covariance; \"full-linear\": the "
                         "same, with the ReLU's cross-covariances to first order)")


def diagonal(cov: Tensor) -> Tensor:
    """(B, D) the variances on a (B, D, D) covariance's diagonal."""
    return cov.diagonal(dim1=1, dim2=2)


def _with_diagonal(cov: Tensor, var: Tensor) -> Tensor:
    """cov with its diagonal replaced by var (out of place, so autograd sees it)."""
    eye = torch.eye(cov.shape[-1], dtype=torch.bool, device=cov.device)
    return torch.where(eye, torch.diag_embed(var), cov)


def map_covariance(fn: Callable[[Tensor], Tensor], cov: Tensor, in_shape: tuple[int, ...]) -> Tensor:
    """A Cov A^T for the linear map fn = A (no bias) on (N, *in_shape) inputs; cov (B, D_in, D_in) -> (B, D_out, D_out),
    symmetric to rounding (propagate symmetrizes the output's).

    fn takes the covariance's rows as inputs: row j of Cov is column j (Cov is symmetric), so fn gives (A Cov)'s
    columns, i.e. the rows of Cov A^T; fn on the rows of its transpose A Cov gives the columns of A Cov A^T.
    """
    batch, d_in, _ = cov.shape
    right = fn(cov.reshape(batch * d_in, *in_shape)).reshape(batch, d_in, -1)  # Cov A^T: (B, D_in, D_out)
    d_out = right.shape[-1]
    return fn(right.transpose(1, 2).reshape(batch * d_out, *in_shape)).reshape(batch, d_out, d_out)


def map_variance(fn: Callable[[Tensor], Tensor], var: Tensor) -> Tensor:
    """A diag(var) A^T for the linear map fn = A (no bias): var (B, *in_shape), independent units -> (B, D_out, D_out).

    A is read off fn applied to the identity's rows (once for the batch); fn on the rows of A diag(var) then gives
    A diag(var) A^T."""
    batch, in_shape = var.shape[0], tuple(var.shape[1:])
    d_in = math.prod(in_shape)
    matrix = fn(torch.eye(d_in, dtype=var.dtype, device=var.device).reshape(d_in, *in_shape)).reshape(d_in, -1).T
    d_out = matrix.shape[0]
    scaled = matrix.contiguous().unsqueeze(0) * var.reshape(batch, 1, d_in)  # A diag(var): (B, D_out, D_in)
    return fn(scaled.reshape(batch * d_out, *in_shape)).reshape(batch, d_out, d_out)


def price_correction(a: Tensor, b: Tensor, rho: Tensor) -> Tensor:
    """int_0^rho (rho - t) phi2(a, b; t) dt (phi2: the standard bivariate normal density with correlation t, at
    (a, b)), by Gauss-Legendre after t = rho u: what the cross-covariance of two maxima (a ReLU is max(X, 0)) adds,
    times their thetas, to its first order in the correlation (module docstring). Broadcasts a, b and rho."""
    sum_squares, product = a * a + b * b, a * b
    integral = torch.zeros_like(rho * product)
    for u, w in zip(_U, _W):
        t = rho * u
        one_minus = (1.0 - t * t).clamp_min(1e-12)
        density = torch.exp((sum_squares - 2.0 * t * product) / (-2.0 * one_minus)) / one_minus.sqrt()
        integral = integral + (w * (1.0 - u) * _INV_2PI) * density
    return rho * rho * integral


def _price_correction(a: Tensor, b: Tensor, rho: Tensor) -> Tensor:
    """price_correction, recomputed in the backward where a gradient is wanted: its quadrature's temporaries, a dozen
    tensors of the covariance's size, are not kept for it."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (a, b, rho)):
        return checkpoint(price_correction, a, b, rho, use_reentrant=False)
    return price_correction(a, b, rho)


def relu_pair_covariance(a: Tensor, b: Tensor, rho: Tensor) -> Tensor:
    """Cov(ReLU(a + U), ReLU(b + V)) for standard normal U, V with correlation rho (broadcast): the covariance of
    ReLU(X), ReLU(Y) over s_x s_y for jointly Gaussian X = mu_x + s_x U, Y = mu_y + s_y V, a = mu_x / s_x,
    b = mu_y / s_y. It is rho Phi(a) Phi(b) + price_correction(a, b, rho)."""
    return rho * normal_cdf(a) * normal_cdf(b) + _price_correction(a, b, rho)


def relu_covariance(mean: Tensor, cov: Tensor, rule: str, mode: str) -> tuple[Tensor, Tensor]:
    """ReLU of N(mean, cov), mean (B, D), cov (B, D, D): the output's mean (B, D) and covariance (B, D, D).

    Each unit's mean and variance by relu_moments(rule); the pairs' covariances by the mode (module docstring)."""
    _check_rule(rule, RELU_RULES, "relu")
    var = diagonal(cov)
    out_mean, out_var = relu_moments(mean, var, rule)
    std = _std(var)
    if rule == "paper" or mode == "full-linear":
        # each side's slope: the paper keeps the variance (1) or drops it (0); the moment rule's expected slope
        slope = (out_var > 0).to(mean.dtype) if rule == "paper" else normal_cdf(mean / std)
        cross = cov * slope.unsqueeze(2) * slope.unsqueeze(1)
    else:
        a = mean / std
        scale = std.unsqueeze(2) * std.unsqueeze(1)
        rho = (cov / scale).clamp(-1.0, 1.0)
        cross = scale * relu_pair_covariance(a.unsqueeze(2), a.unsqueeze(1), rho)
    return out_mean, _with_diagonal(cross, out_var)


def _window_index(shape: tuple[int, int, int], kernel: tuple[int, int], stride: tuple[int, int],
                  device: torch.device) -> Tensor:
    """(D_out, K): the flat indices (in C, H, W order) of each max-pool window's K inputs, windows in output order."""
    c, h, w = shape
    flat = torch.arange(c * h * w, device=device).reshape(1, c, h, w).double()
    patches = F.unfold(flat, kernel, stride=stride)  # (1, C*K, L)
    k = kernel[0] * kernel[1]
    return patches.reshape(c, k, -1).permute(0, 2, 1).reshape(-1, k).long()


def _combine(cov: Tensor, first: Tensor, second: Tensor, weight: Tensor, other: float | None = None) -> Tensor:
    """W Cov W^T for rows w_n = weight_n e_first_n + (1 - weight_n) e_second_n (or + other e_second_n, a number):
    (B, D, D) -> (B, N, N)."""
    second_weight = (1 - weight) if other is None else torch.full_like(weight, other)
    rows = cov[:, first] * weight.unsqueeze(2) + cov[:, second] * second_weight.unsqueeze(2)  # (B, N, D)
    return rows[:, :, first] * weight.unsqueeze(1) + rows[:, :, second] * second_weight.unsqueeze(1)


def maxpool_covariance(mean: Tensor, cov: Tensor, rule: str, kernel_size, stride=None,
                       mode: str = "full") -> tuple[Tensor, Tensor]:
    """Max-pool of N(mean, cov), mean (B, C, H, W), cov (B, CHW, CHW), windows without padding or dilation: the
    output's mean (B, C, Ho, Wo) and covariance (B, D_out, D_out), as a tree of pairwise maxima over each window;
    mode "full" or "full-linear" (the module docstring)."""
    _check_rule(rule, POOL_RULES, "pool")
    kernel = _pair(kernel_size)
    stride = kernel if stride is None else _pair(stride)
    batch, channels, height, width = mean.shape
    out_h, out_w = (height - kernel[0]) // stride[0] + 1, (width - kernel[1]) // stride[1] + 1
    table = _window_index((channels, height, width), kernel, stride, mean.device)  # (D_out, K) into the variables
    means = mean.reshape(batch, -1)  # the variables: at first the inputs, then the tree's nodes
    d_out = table.shape[0]
    while table.shape[1] > 1:
        half, k = table.shape[1] // 2, table.shape[1]
        first, second = table[:, :half].reshape(-1), table[:, half : 2 * half].reshape(-1)  # node n = window*half + j
        mean_a, mean_b = means[:, first], means[:, second]
        var_a, var_b = cov[:, first, first], cov[:, second, second]
        if rule == "paper":
            weight = (mean_a >= mean_b).to(mean.dtype)  # the winner of the means, with its variance
            node_mean = torch.maximum(mean_a, mean_b)
            node_var = weight * var_a + (1 - weight) * var_b
        else:
            node_mean, node_var, weight = correlated_max2_terms(mean_a, var_a, mean_b, var_b, cov[:, first, second])
        correction = None
        if rule != "paper" and mode == "full":  # Cov(A - B, C - D) over every pair of nodes, and their thetas
            difference = _combine(cov, first, second, torch.ones_like(mean_a), -1.0)
            theta = diagonal(difference).clamp_min(VAR_FLOOR).sqrt()
            scale = theta.unsqueeze(2) * theta.unsqueeze(1)
            alpha = (mean_a - mean_b) / theta
            correction = scale * _price_correction(alpha.unsqueeze(2), alpha.unsqueeze(1),
                                                  (difference / scale).clamp(-1.0, 1.0))
        if k % 2:  # an odd last input is carried to the next level: its own row, weight 1
            carried = table[:, -1]
            first, second = torch.cat([first, carried]), torch.cat([second, carried])
            weight = torch.cat([weight, torch.ones_like(means[:, carried])], 1)
            node_mean = torch.cat([node_mean, means[:, carried]], 1)
            node_var = torch.cat([node_var, cov[:, carried, carried]], 1)
        combined = _combine(cov, first, second, weight)
        if correction is not None:  # the carried input's rows and columns get none (a max of one: linear)
            paired = correction.shape[-1]
            combined = combined + F.pad(correction, (0, combined.shape[-1] - paired, 0, combined.shape[-1] - paired))
        cov = _with_diagonal(combined, node_var)
        means = node_mean
        paired = torch.arange(d_out * half, device=mean.device).reshape(d_out, half)
        table = torch.cat([paired, d_out * half + torch.arange(d_out, device=mean.device).unsqueeze(1)], 1) \
            if k % 2 else paired
    order = table[:, 0]  # the last level's nodes, one per window, in output order
    if not torch.equal(order, torch.arange(d_out, device=mean.device)):
        means, cov = means[:, order], cov[:, order][:, :, order]
    return means.reshape(batch, channels, out_h, out_w), cov
