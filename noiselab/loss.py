"""The paper's stochastic loss over the output Gaussian, and learnable sigma with the Bimodel term.

For an output Y ~ N(mean, diag(var)) with n classes and true class k (paper, Sec. 2.2):

    Loss = (1/n) sum_i (onehot_i - mean_i)^2  -  (1/(n-1)) sum_{i != k} P(Y_k > Y_i),
    P(Y_k > Y_i) = Phi((mean_k - mean_i) / sqrt(var_k + var_i)).

Where the outputs' covariance is known, `cov=` puts it in: Var(Y_k - Y_i) = var_k + var_i - 2 Cov(Y_k, Y_i). The
paper's formula drops the covariance; the outputs of a noisy network are correlated (docs/propagation.md).

The paper's expanded formula writes erf((mu_i - mu_k)/...), which is P(Y_i > Y_k): the opposite of
its stated intent (and minimising it would reward wrong classes). We implement the intent,
P(Y_k > Y_i). Its derivative in mean_i (i != k) is +phi(z_i) / ((n-1) sqrt(var_k + var_i)) with
z_i = (mean_k - mean_i)/sqrt(var_k + var_i); the paper's Sec. 4 prints 1/(c (var_i + var_k)) where
the square root belongs. Autograd differentiates this module; the tests check it against the
correct hand derivation.

As sigma -> 0 the probability term becomes a step function; the variance sum is floored at
VAR_FLOOR under the square root so values and gradients stay finite.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_sigma, check_target
from .moments import VAR_FLOOR, normal_cdf

REDUCTIONS = ("mean", "sum", "none")


def _check_moments(mean: Tensor, var: Tensor, cov: Tensor | None = None) -> None:
    if not isinstance(mean, Tensor) or not isinstance(var, Tensor):
        raise ValueError("mean and var must be tensors")
    if mean.dim() != 2 or mean.shape != var.shape:
        raise ValueError(
            f"mean and var must both have shape (batch, classes), got {tuple(mean.shape)} and {tuple(var.shape)}"
        )
    if mean.shape[1] < 2:
        raise ValueError(f"the stochastic loss needs at least 2 classes, got {mean.shape[1]}")
    if cov is None:
        return
    batch, classes = mean.shape
    if not isinstance(cov, Tensor) or tuple(cov.shape) != (batch, classes, classes):
        shape = tuple(cov.shape) if isinstance(cov, Tensor) else type(cov).__name__
        raise ValueError(f"cov must be the outputs' covariance, shape (batch, classes, classes) = "
                         f"{(batch, classes, classes)}, got {shape}")
    if cov.dtype != mean.dtype:
        raise ValueError(f"cov must have the outputs' dtype ({mean.dtype}), got {cov.dtype}")
    if not bool(torch.isfinite(cov.detach()).all()):
        raise ValueError("cov must be finite; got NaN or infinity")
    if not bool(((cov - cov.transpose(1, 2)).detach().abs() <= 1e-4 * (1.0 + cov.detach().abs())).all()):
        raise ValueError("cov must be symmetric (Cov(Y_k, Y_i) = Cov(Y_i, Y_k)); got one that is not")
    diagonal = cov.diagonal(dim1=1, dim2=2)
    tolerance = 1e-4 * (1.0 + var.detach().abs())
    if not bool(((diagonal.detach() - var.detach()).abs() <= tolerance).all()):
        raise ValueError("cov's diagonal must be var (the same outputs' variances); pass the covariance that "
                         "came with them, or leave cov out for independent outputs")
    eigenvalues = torch.linalg.eigvalsh(cov.detach().double())  # (B, n), ascending
    if not bool((eigenvalues[:, 0] >= -1e-4 * eigenvalues[:, -1].abs() - 1e-12).all()):
        raise ValueError("cov must be positive semi-definite (a covariance: no combination of the outputs has a "
                         "negative variance); got one with a negative eigenvalue")


def _reduce(value: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return value.mean()
    if reduction == "sum":
        return value.sum()
    return value


def stochastic_loss_terms(mean: Tensor, var: Tensor, target: Tensor,
                          cov: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The loss's two terms per example, (mse, prob), each of shape (B,): Loss = mse - prob.

    mse  = (1/n) sum_i (onehot_i - mean_i)^2
    prob = (1/(n-1)) sum_{i != k} P(Y_k > Y_i), the mean probability that the true class beats another.
    cov: the outputs' covariance (B, n, n), whose diagonal is var, where it is known (see win_probabilities).
    """
    _check_moments(mean, var, cov)
    check_target(target, mean.shape[0], mean.shape[1])
    return _terms(mean, var, target.long(), cov)


def _terms(mean: Tensor, var: Tensor, target: Tensor, cov: Tensor | None = None) -> tuple[Tensor, Tensor]:
    classes = mean.shape[1]
    onehot = F.one_hot(target, classes).to(mean.dtype)  # (B, n)
    mse = (onehot - mean).square().mean(1)
    index = target.unsqueeze(1)
    mean_true, var_true = mean.gather(1, index), var.gather(1, index)  # (B, 1)
    spread = var_true + var  # Var(Y_k - Y_i) of independent outputs, (B, n)
    if cov is not None:  # less twice their covariance: Cov(Y_k, Y_i), row k of cov
        spread = spread - 2 * cov.gather(1, index.unsqueeze(2).expand(-1, 1, classes)).squeeze(1)
    z = (mean_true - mean) / spread.clamp_min(VAR_FLOOR).sqrt()  # (B, n)
    beats = normal_cdf(z) * (1.0 - onehot)  # P(Y_k > Y_i), zero at i = k
    prob = beats.sum(1) / (classes - 1)
    return mse, prob


def win_probabilities(mean: Tensor, var: Tensor, cov: Tensor | None = None) -> Tensor:
    """P(Y_k > Y_i) for every pair of classes of a Gaussian output Y: a (B, n, n) tensor, row k, column i.

    P(Y_k > Y_i) = Phi((mean_k - mean_i) / sqrt(Var(Y_k - Y_i))), Var(Y_k - Y_i) = var_k + var_i - 2 Cov(Y_k, Y_i).
    Without `cov` the outputs are taken as independent (the paper's formula, Cov = 0); with it, their covariance
    (B, n, n), whose diagonal must be var, enters. The diagonal of the result is 0 (a class never strictly beats
    itself), as in the loss, whose probability term for true class k is win_probabilities(mean, var, cov)[b, k]
    .sum() / (n - 1). mean, var: (B, n).
    """
    _check_moments(mean, var, cov)
    difference = mean.unsqueeze(2) - mean.unsqueeze(1)  # (B, n, n): mean_k - mean_i
    spread = var.unsqueeze(2) + var.unsqueeze(1)
    if cov is not None:
        spread = spread - 2 * cov
    off_diagonal = 1.0 - torch.eye(mean.shape[1], dtype=mean.dtype, device=mean.device)
    return normal_cdf(difference / spread.clamp_min(VAR_FLOOR).sqrt()) * off_diagonal


def stochastic_loss(mean: Tensor, var: Tensor, target: Tensor, reduction: str = "mean",
                    cov: Tensor | None = None) -> Tensor:
    """The paper's stochastic loss of the output Gaussian for class indices `target`: N(mean, diag(var)) as in the
    paper, or N(mean, cov) where the outputs' covariance is known (its diagonal is var).

    mean, var: (B, n) tensors (n >= 2 classes); target: (B,) integer class indices in [0, n); cov: (B, n, n).
    reduction: "mean" (default), "sum" or "none" (per-example losses), as in torch's losses.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    mse, prob = stochastic_loss_terms(mean, var, target, cov)
    return _reduce(mse - prob, reduction)


def bimodel_term(sigma: Tensor | float, alpha: float = 0.25) -> Tensor | float:
    """The paper's Bimodel term, -alpha * sigma^2, added to the loss to push sigma up (alpha = 0.25 in the paper)."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    return -alpha * sigma**2


class LearnableSigma(nn.Module):
    """A positive noise level trained with the weights: sigma = softplus(raw), so sigma > 0 always.

    >>> sigma = LearnableSigma(1.9)          # the paper's Table 1 start
    >>> optimizer = torch.optim.Adam([*model.parameters(), *sigma.parameters()])
    >>> out = propagate(model, x, sigma())   # sigma() is a 0-dim tensor that requires grad
    """

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        check_sigma(init, "init")
        if init <= 0:
            raise ValueError(f"init must be > 0 for a learnable sigma (softplus never reaches 0), got {init}")
        # inverse softplus: raw = log(exp(init) - 1), written stably for large init
        raw = init + math.log(-math.expm1(-init))
        self.raw = nn.Parameter(torch.tensor(raw, dtype=torch.float32))

    def forward(self) -> Tensor:
        return F.softplus(self.raw)

    def extra_repr(self) -> str:
        return f"sigma={float(self.forward().detach()):.4g}"
