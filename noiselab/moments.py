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
  - "clark-prerelu": Clark's max taken before the ReLU that precedes the pool (the two commute), so that it
              meets Gaussians rather than moment-matched censored variables (see noiselab.propagate).

The moment ReLU and Clark's max carry their gradients in closed form (torch.autograd.Function):
differentiated op by op they cost several times more, since their formulas are long chains of
element-wise ops, each a pass over memory (see bench/train_cost.py). The rest is plain torch ops.
Everything is safe for var -> 0 (no NaN or Inf in values or gradients): variances are floored at
VAR_FLOOR before any square root.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import native

# Variances below this are treated as this under square roots (std >= 1e-6): small enough to be
# invisible next to float32 activations, large enough that 1/sqrt stays far from overflow.
VAR_FLOOR = 1e-12

# The paper's censoring threshold: below mu = -3 s the ReLU output is treated as the constant 0.
PAPER_CENSOR_SIGMAS = 3.0

RELU_RULES = ("paper", "moment")
POOL_RULES = ("paper", "clark", "clark-prerelu")
# pool="clark-prerelu": where a ReLU comes right before the max-pool, the max is taken first, over the ReLU's inputs
# (max and ReLU commute: max_j ReLU(z_j) = ReLU(max_j z_j)), and the ReLU rule after it (noiselab.propagate); a pool
# on its own is Clark's either way.
CLARK_POOLS = ("clark", "clark-prerelu")

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)


def normal_pdf(z: Tensor) -> Tensor:
    """phi(z), the standard normal density."""
    return _normal_pdf_of_square(z * z)


def _normal_pdf_of_square(z_squared: Tensor) -> Tensor:
    """phi(z) from z^2, for callers that need z^2 anyway."""
    return torch.exp(z_squared * -0.5).mul_(_INV_SQRT_2PI)


def normal_cdf(z: Tensor) -> Tensor:
    """Phi(z), the standard normal distribution function (accurate in the tails).

    As erfc(-z / sqrt 2) / 2, which keeps Phi's lower tail to full relative precision like torch.special.ndtr and
    is several times faster on CPUs (5x with torch 2.14 on the 2-core development machine)."""
    return 0.5 * torch.special.erfc(z * -_INV_SQRT_2)


def normal_cdf_complement(z: Tensor) -> Tensor:
    """Phi(-z) = 1 - Phi(z), to full relative precision where it is tiny (z large)."""
    return 0.5 * torch.special.erfc(z * _INV_SQRT_2)


def _std(var: Tensor) -> Tensor:
    return var.clamp_min(VAR_FLOOR).sqrt()


def _fused(mean: Tensor, var: Tensor) -> bool:
    """Whether noiselab.native's fused kernels take this rule: float32 on a CPU, where they are built."""
    return (mean.dtype == var.dtype == torch.float32 and mean.device.type == var.device.type == "cpu"
            and native.enabled())


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
    return _MomentReLU.apply(mean, var)


class _MomentReLU(torch.autograd.Function):
    """The exact moments of ReLU(Z), Z ~ N(mean, s^2), with gradients in closed form (E = mean Phi(a) + s phi(a),
    a = mean / s; checked against finite differences in the tests):
      dE/dmean = Phi(a),   dE/dvar = phi(a) / (2 s),
      dV/dmean = 2 E Phi(-a),   dV/dvar = Phi(a) - phi(a) (a Phi(a) + phi(a)).
    Terms through s vanish where var is below the floor (s is then a constant); V and its gradients are 0 where
    var = 0, and V's where its clamp at 0 acted.

    Where the noise enters, var is sigma^2 everywhere (a stride-0 view, propagate's): s is then one number, and
    the passes over memory that compute it, its floor and its masks are skipped. A gradient no input needs (var's,
    when sigma is a fixed number) is not computed.
    """

    @staticmethod
    def forward(ctx, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        ctx.fused = _fused(mean, var)
        if ctx.fused:  # the same formulas in one pass over memory (noiselab.native); the backward recomputes them
            if any(ctx.needs_input_grad):
                ctx.save_for_backward(mean, var)
            return native.relu_forward(mean, var)
        # one variance for every element, above the floor: s is a 0-dim tensor and no element's var is 0
        constant = var.numel() > 0 and var.dim() > 0 and not any(var.stride()) and \
            bool(var[(0,) * var.dim()] > VAR_FLOOR)
        var_in = var[(0,) * var.dim()] if constant else var
        std = _std(var_in)
        a = mean / std
        a_squared = a * a
        pdf = _normal_pdf_of_square(a_squared)
        cdf = normal_cdf(a)
        q = normal_cdf_complement(a)  # Phi(-a), to full precision where a is large
        out_mean = torch.addcmul(mean * cdf, std, pdf)
        # var/s^2 = (a^2 + 1) Phi(a) + a phi(a) - (a Phi(a) + phi(a))^2, rewritten with Q = Phi(-a) (1 - Q = Phi(a),
        # 1 - 2Q = Phi(a) - Q) as Phi(a) + a^2 Q Phi(a) - phi(a) (a (Phi(a) - Q) + phi(a)), which has no catastrophic
        # cancellation for large positive a (where var -> s^2); for large negative a the result is tiny next to s^2
        # and its rounding error smaller still. One formula for every a, in few passes over memory.
        ratio = (q * cdf).mul_(a_squared).add_(cdf).sub_(pdf * torch.addcmul(pdf, a, cdf - q))
        keeps_var = ratio >= 0 if constant else (ratio >= 0) & (var > 0)
        out_var = torch.where(keeps_var, ratio * var_in.clamp_min(VAR_FLOOR), 0.0)
        if any(ctx.needs_input_grad):  # a forward-only pass (a loss surface, an evaluation) skips the masks
            # grows: where var is above the floor (None for one variance above it: everywhere)
            ctx.save_for_backward(std, a, cdf, pdf, q, out_mean, keeps_var, None if constant else var > VAR_FLOOR)
        return out_mean, out_var

    @staticmethod
    @once_differentiable  # the saved tensors carry no graph: a second derivative raises instead of being wrong
    def backward(ctx, grad_mean: Tensor, grad_var: Tensor):
        needs_mean, needs_var = ctx.needs_input_grad
        if ctx.fused:
            d_mean, d_var = native.relu_backward(*ctx.saved_tensors, grad_mean, grad_var, needs_var)
            return d_mean if needs_mean else None, d_var
        std, a, cdf, pdf, q, out_mean, keeps_var, grows = ctx.saved_tensors
        grad_var = torch.where(keeps_var, grad_var, 0.0)
        d_mean = torch.addcmul(grad_mean * cdf, grad_var, out_mean * q, value=2.0) if needs_mean else None
        if not needs_var:
            return d_mean, None
        d_var = grad_mean * pdf / (2.0 * std) + grad_var * (cdf - pdf * (a * cdf + pdf))
        return d_mean, d_var if grows is None else torch.where(grows, d_var, 0.0)


def max2_moments(mean_a: Tensor, var_a: Tensor, mean_b: Tensor, var_b: Tensor) -> tuple[Tensor, Tensor]:
    """Clark's moment-matched max(A, B) of independent Gaussians A ~ N(mean_a, var_a), B ~ N(mean_b, var_b).

    With theta = sqrt(var_a + var_b) and alpha = (mean_a - mean_b) / theta:
      E[max]   = mean_a Phi(alpha) + mean_b Phi(-alpha) + theta phi(alpha)
      Var[max] = var_a Phi(alpha) + var_b Phi(-alpha)
                 + theta^2 [alpha^2 Phi(alpha) Phi(-alpha) + alpha phi(alpha) (Phi(-alpha) - Phi(alpha)) - phi(alpha)^2]
    The variance is written in differences of means (algebraically equal to E[max^2] - E[max]^2),
    so it stays accurate when the means are large next to the spread. The gradients are Clark's, in closed
    form (_max2_backward), which costs a fraction of differentiating the formulas op by op.
    """
    mean_a, var_a, mean_b, var_b = torch.broadcast_tensors(mean_a, var_a, mean_b, var_b)
    stacked_mean, stacked_var = torch.stack([mean_a, mean_b]), torch.stack([var_a, var_b])
    out_mean, out_var = _ClarkTree.apply(stacked_mean, stacked_var)
    return out_mean, out_var


def correlated_max2_moments(mean_a: Tensor, var_a: Tensor, mean_b: Tensor, var_b: Tensor,
                            cov_ab: Tensor) -> tuple[Tensor, Tensor]:
    """Clark's max(A, B) of two jointly Gaussian A, B with covariance cov_ab: mean and variance, exact.

    max2_moments' formulas with theta^2 = Var(A - B) = var_a + var_b - 2 cov_ab (Clark 1961: the first two moments
    of the max of two jointly Gaussian variables are exact). At theta -> 0 (A - B constant: correlation 1 and equal
    variances) the max is whichever has the larger mean, and the formulas go there continuously. Differentiated by
    autograd. A covariance beyond what the variances allow (|cov_ab| > sqrt(var_a var_b)) is refused.
    """
    mean_a, var_a, mean_b, var_b, cov_ab = torch.broadcast_tensors(mean_a, var_a, mean_b, var_b, cov_ab)
    for name, value in (("mean_a", mean_a), ("var_a", var_a), ("mean_b", mean_b), ("var_b", var_b), ("cov_ab", cov_ab)):
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite; got NaN or infinity")
    if bool((var_a < 0).any()) or bool((var_b < 0).any()):
        raise ValueError("var_a and var_b must be >= 0")
    bound = (var_a * var_b).sqrt()
    if bool((cov_ab.abs() > bound * (1 + 1e-6) + 1e-12).any()):
        raise ValueError("cov_ab must satisfy |cov_ab| <= sqrt(var_a var_b) (a covariance of two variables with "
                         "these variances); got one beyond it")
    out_mean, out_var, _ = correlated_max2_terms(mean_a, var_a, mean_b, var_b, cov_ab)
    return out_mean, out_var


def correlated_max2_terms(mean_a: Tensor, var_a: Tensor, mean_b: Tensor, var_b: Tensor,
                          cov_ab: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """correlated_max2_moments without its checks, for inputs already checked (noiselab.covariance's max-pool), and
    with Phi(alpha) beside the mean and variance: the weight of A in Cov(max(A, B), Z) = Phi(alpha) Cov(A, Z) +
    Phi(-alpha) Cov(B, Z)."""
    theta_squared = (var_a + var_b - 2 * cov_ab).clamp_min(VAR_FLOOR)
    theta = theta_squared.sqrt()
    alpha = (mean_a - mean_b) / theta
    cdf, cdf_neg = normal_cdf(alpha), normal_cdf_complement(alpha)
    pdf = torch.exp(alpha.square() * -0.5) * _INV_SQRT_2PI  # not normal_pdf: its in-place scaling defeats autograd
    out_mean = mean_b + theta * (alpha * cdf + pdf)
    spread = alpha.square() * cdf * cdf_neg - pdf * (alpha * (cdf - cdf_neg) + pdf)
    out_var = var_b + (var_a - var_b) * cdf + theta_squared * spread
    return out_mean, out_var.clamp_min(0.0), cdf


def _max2_forward(mean_a: Tensor, var_a: Tensor, mean_b: Tensor, var_b: Tensor, for_backward: bool = True):
    """Clark's max of two, and what its backward needs (None when for_backward is False)."""
    total = var_a + var_b
    theta_squared = total.clamp_min(VAR_FLOOR)
    theta = theta_squared.sqrt()
    alpha = (mean_a - mean_b).div_(theta)
    alpha_squared = alpha * alpha
    cdf = normal_cdf(alpha)
    cdf_neg = normal_cdf_complement(alpha)  # not 1 - cdf: that loses Phi(-alpha)'s precision where alpha is large
    pdf = _normal_pdf_of_square(alpha_squared)
    # max2_moments' formulas in fewer passes over memory (the same values to rounding): mean_a - mean_b = alpha theta
    # makes E = mean_b + theta (alpha Phi + phi), and Phi + Phi(-alpha) = 1 makes var_a Phi + var_b Phi(-alpha) =
    # var_b + (var_a - var_b) Phi.
    out_mean = torch.addcmul(mean_b, theta, torch.addcmul(pdf, alpha, cdf))
    spread = (cdf * cdf_neg).mul_(alpha_squared).sub_(pdf * torch.addcmul(pdf, alpha, cdf - cdf_neg))
    difference = var_a - var_b
    raw_var = torch.addcmul(var_b, difference, cdf).addcmul_(theta_squared, spread)
    saved = (theta, alpha, cdf, cdf_neg, pdf, difference, total > VAR_FLOOR, raw_var >= 0) if for_backward else None
    return out_mean, raw_var.clamp_min_(0.0), saved


def _max2_backward(saved, grad_mean: Tensor, grad_var: Tensor):
    """Gradients of Clark's max of two with respect to (mean_a, var_a, mean_b, var_b).

    With E - mean_a = theta (phi - alpha Phi(-alpha)), E - mean_b = theta (alpha Phi + phi) and d = var_a - var_b:
      dE/dmean_a = Phi,  dE/dmean_b = Phi(-alpha),  dE/dvar_a = dE/dvar_b = phi / (2 theta)
      dV/dmean_a = -2 Phi theta (phi - alpha Phi(-alpha)) + theta phi + phi d / theta
      dV/dmean_b = -2 Phi(-alpha) theta (alpha Phi + phi) + theta phi - phi d / theta
      dV/dvar_a  = Phi         - phi (2 phi + alpha (Phi - Phi(-alpha))) / 2 - alpha phi d / (2 theta^2)
      dV/dvar_b  = Phi(-alpha) - (the same two terms)
    The terms through theta vanish where var_a + var_b is below the floor (theta is then a constant), and all of
    V's where its clamp at 0 acted. Checked against finite differences in the tests.
    """
    theta, alpha, cdf, cdf_neg, pdf, difference, grows, positive = saved
    grad_var = grad_var * positive
    alpha_term = pdf * difference / theta  # through alpha's dependence on the means
    # V depends on the means only through alpha = (mean_a - mean_b) / theta, so dV/dmean_b = -dV/dmean_a (1 - 2 Phi
    # = Phi(-alpha) - Phi): one coefficient for both means, in a third of the passes over memory
    dv_dmean = (cdf * cdf_neg).mul_(alpha).mul_(2).addcmul_(pdf, cdf_neg - cdf).mul_(theta).add_(alpha_term)
    mean_a = torch.addcmul(grad_mean * cdf, grad_var, dv_dmean)
    mean_b = torch.addcmul(grad_mean * cdf_neg, grad_var, dv_dmean, value=-1)
    through_theta = (-pdf * (2 * pdf + alpha * (cdf - cdf_neg)) / 2 - alpha * alpha_term / (2 * theta))
    common = (grad_mean * pdf / (2 * theta) + grad_var * through_theta) * grows
    return mean_a, common + grad_var * cdf, mean_b, common + grad_var * cdf_neg


class _ClarkTree(torch.autograd.Function):
    """Clark's max over the leading dimension of (K, ...) means and variances, as a tree of pairwise maxima
    (element i meets element i + K//2; an odd last one is carried to the next level), gradients in closed form.

    One autograd node for the whole tree: no slicing or concatenation in the autograd graph."""

    @staticmethod
    def forward(ctx, means: Tensor, vars_: Tensor) -> tuple[Tensor, Tensor]:
        levels = []
        for_backward = any(ctx.needs_input_grad)  # a forward-only pass keeps nothing for a backward
        while means.shape[0] > 1:
            half = means.shape[0] // 2
            paired_mean, paired_var, saved = _max2_forward(means[:half], vars_[:half], means[half : 2 * half],
                                                           vars_[half : 2 * half], for_backward)
            levels.append((half, means.shape[0] % 2, saved if for_backward else ()))
            means = torch.cat([paired_mean, means[2 * half :]]) if means.shape[0] % 2 else paired_mean
            vars_ = torch.cat([paired_var, vars_[2 * half :]]) if vars_.shape[0] % 2 else paired_var
        ctx.levels = [(half, odd) for half, odd, _ in levels]
        ctx.save_for_backward(*(t for _, _, saved in levels for t in saved))
        return means[0], vars_[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_mean: Tensor, grad_var: Tensor):
        saved_tensors = ctx.saved_tensors
        grad_means, grad_vars = grad_mean.unsqueeze(0), grad_var.unsqueeze(0)
        for index in reversed(range(len(ctx.levels))):
            half, odd = ctx.levels[index]
            saved = saved_tensors[8 * index : 8 * index + 8]
            mean_a, var_a, mean_b, var_b = _max2_backward(saved, grad_means[:half], grad_vars[:half])
            grad_means = torch.cat([mean_a, mean_b, grad_means[half:]] if odd else [mean_a, mean_b])
            grad_vars = torch.cat([var_a, var_b, grad_vars[half:]] if odd else [var_a, var_b])
        return grad_means, grad_vars


class _ClarkPool2x2(torch.autograd.Function):
    """_ClarkTree over the 2x2 windows of a (B, C, H, W) input with stride 2 (the usual pool), H and W even, without
    gathering the windows: its tree pairs each window's top row with its bottom row, then the two columns, so the
    first level reads the input's rows in place (a view of shape (B, C, H/2, 2, W)) and only the half-size second
    level's columns are gathered. The same pairs in the same order as _ClarkTree, gradients the same closed form.
    """

    @staticmethod
    def forward(ctx, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = mean.shape
        for_backward = any(ctx.needs_input_grad)
        ctx.fused = _fused(mean, var)
        if ctx.fused:  # the whole tree in one pass over memory (noiselab.native); the backward recomputes it
            if for_backward:
                ctx.save_for_backward(mean, var)
            return native.pool_forward(mean, var)
        rows_mean, rows_var = mean.reshape(b, c, h // 2, 2, w), var.reshape(b, c, h // 2, 2, w)
        row_mean, row_var, first = _max2_forward(rows_mean[:, :, :, 0], rows_var[:, :, :, 0], rows_mean[:, :, :, 1],
                                                 rows_var[:, :, :, 1], for_backward)
        # the columns side by side, gathered: (2, B, C, H/2, W/2), contiguous
        columns_mean = row_mean.reshape(b, c, h // 2, w // 2, 2).movedim(-1, 0).contiguous()
        columns_var = row_var.reshape(b, c, h // 2, w // 2, 2).movedim(-1, 0).contiguous()
        out_mean, out_var, second = _max2_forward(columns_mean[0], columns_var[0], columns_mean[1], columns_var[1],
                                                  for_backward)
        if for_backward:
            ctx.save_for_backward(*first, *second)
        return out_mean, out_var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_mean: Tensor, grad_var: Tensor):
        saved = ctx.saved_tensors
        if ctx.fused:
            return native.pool_backward(*saved, grad_mean, grad_var)
        mean_a, var_a, mean_b, var_b = _max2_backward(saved[8:], grad_mean, grad_var)
        row_mean = torch.stack([mean_a, mean_b], dim=-1).flatten(-2)  # (B, C, H/2, W): the columns interleaved
        row_var = torch.stack([var_a, var_b], dim=-1).flatten(-2)
        mean_a, var_a, mean_b, var_b = _max2_backward(saved[:8], row_mean, row_var)
        return torch.stack([mean_a, mean_b], dim=3).flatten(2, 3), torch.stack([var_a, var_b], dim=3).flatten(2, 3)


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
                  (padding, dilation and ceil_mode are not supported by this rule); "clark-prerelu" is the same
                  here (its reordering with the ReLU before it is noiselab.propagate's).
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
            f"pool={rule!r} supports max-pooling without padding, dilation or ceil_mode; "
            "use pool='paper' for this layer's settings"
        )
    (kh, kw), (sh, sw) = _pair(kernel_size), _pair(stride)
    if (kh, kw) == (sh, sw) == (2, 2) and mean.dim() == 4:  # the usual pool: its windows read in place
        h, w = mean.shape[-2] // 2 * 2, mean.shape[-1] // 2 * 2  # an odd last row or column is left out
        if (h, w) != tuple(mean.shape[-2:]):  # (sliced only then: a slice costs a full-size copy in the backward)
            mean, var = mean[..., :h, :w], var[..., :h, :w]
        if h and w:
            return _ClarkPool2x2.apply(mean, var)

    def windows(t: Tensor) -> Tensor:  # (B, C, H, W) -> (kh*kw, B, C, Ho, Wo), contiguous: one copy
        if (kh, kw) == (sh, sw):  # windows side by side (the usual 2x2 pool): a reshape, far cheaper than unfold
            b, c, h, w = t.shape  # its backward in particular
            ho, wo = h // kh, w // kw
            t = t[:, :, : ho * kh, : wo * kw].reshape(b, c, ho, kh, wo, kw)
            return t.permute(3, 5, 0, 1, 2, 4).reshape(kh * kw, b, c, ho, wo)
        return t.unfold(2, kh, sh).unfold(3, kw, sw).flatten(-2).movedim(-1, 0).contiguous()

    return _ClarkTree.apply(windows(mean), windows(var))


class _MomentReLUClarkPool2x2(torch.autograd.Function):
    """The moment ReLU, then _ClarkPool2x2, as one node run by noiselab.native's fused kernel (float32 on a CPU):
    the ReLU's means and variances, and their gradients, never go to memory. The same formulas as the two rules
    one after the other (tested against them)."""

    @staticmethod
    def forward(ctx, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(mean, var)
        return native.relu_pool_forward(mean, var)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_mean: Tensor, grad_var: Tensor):
        needs_mean, needs_var = ctx.needs_input_grad
        d_mean, d_var = native.relu_pool_backward(*ctx.saved_tensors, grad_mean, grad_var, needs_var)
        return d_mean if needs_mean else None, d_var


def relu_maxpool_moments(mean: Tensor, var: Tensor, relu: str, pool: str, kernel_size=2, stride=None, padding=0,
                         dilation=1, ceil_mode: bool = False) -> tuple[Tensor, Tensor]:
    """relu_moments(mean, var, relu), then maxpool_moments of the result with F.max_pool2d's arguments: a ReLU
    followed by a max-pool. The moment ReLU and Clark's usual 2x2 pool (H and W even) run as one fused kernel where
    noiselab.native runs (float32 on a CPU); everything else runs the two rules in turn."""
    _check_rule(relu, RELU_RULES, "relu")
    _check_rule(pool, POOL_RULES, "pool")
    stride = kernel_size if stride is None else stride
    if (relu, pool) == ("moment", "clark") and mean.dim() == 4 and mean.shape == var.shape and \
            _pair(kernel_size) == _pair(stride) == (2, 2) and _pair(padding) == (0, 0) and \
            _pair(dilation) == (1, 1) and not ceil_mode and mean.shape[-2] % 2 == 0 and mean.shape[-1] % 2 == 0 and \
            mean.shape[-2] > 0 and mean.shape[-1] > 0 and _fused(mean, var):
        return _MomentReLUClarkPool2x2.apply(mean, var)
    return maxpool_moments(*relu_moments(mean, var, relu), pool, kernel_size, stride, padding, dilation, ceil_mode)


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
