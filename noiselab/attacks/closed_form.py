"""The paper's adaptive attack (Sec. 4): ascend the closed-form stochastic loss of the noisy network.

    x_adv = closed_form_fgsm(model, x, y, eps=0.1, sigma=0.6)          # the paper's: one backward pass
    x_adv = closed_form_pgd(model, x, y, eps=0.1, sigma=0.6, steps=40)

The noise is not sampled: the first-layer noise N(0, sigma^2) is propagated in closed form (noiselab.propagate)
and the gradient of a loss of the output Gaussian is taken through it. Each step costs one pass of the moment
network (a mean path and a variance path, about two network passes) and its backward pass.

Objectives (LOSSES): "stochastic", the paper's loss (MSE minus the mean probability that the true class beats
another); "probability", that probability term alone (ascending it lowers P(Y_true > Y_i)); "mean_ce",
cross-entropy on the propagated means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_input, check_positive_int
from ..defenses import _sigma_float
from ..loss import _terms
from ..moments import POOL_RULES, RELU_RULES, _check_rule
from ..propagate import Rules, propagate_unchecked, sequential_layers
from ._common import ascend, check_attack_inputs


def _stochastic(mean: Tensor, var: Tensor, y: Tensor) -> Tensor:
    mse, prob = _terms(mean, var, y)
    return mse - prob


def _probability(mean: Tensor, var: Tensor, y: Tensor) -> Tensor:
    return -_terms(mean, var, y)[1]


def _mean_ce(mean: Tensor, var: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(mean, y, reduction="none")


LOSSES = {"stochastic": _stochastic, "probability": _probability, "mean_ce": _mean_ce}


def closed_form_pgd(model, x: Tensor, y: Tensor, eps: float, sigma: float, steps: int = 40,
                    alpha: float | None = None, loss: str = "stochastic", relu: str = "paper", pool: str = "paper",
                    random_init: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """PGD on a closed-form loss of the noisy network at the defender's sigma (no sampling)."""
    eps = check_attack_inputs(x, y, eps)
    sigma = _sigma_float(sigma)
    check_positive_int(steps, "steps")
    _check_rule(relu, RELU_RULES, "relu")
    _check_rule(pool, POOL_RULES, "pool")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {loss!r}")
    check_input(model, x)
    if eps == 0:
        return x.detach().clone()
    alpha = 2.5 * eps / steps if alpha is None else alpha
    layers, rules, objective, target = sequential_layers(model), Rules(relu, pool), LOSSES[loss], y.long()

    def gradient(x_adv: Tensor) -> Tensor:
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            output, _ = propagate_unchecked(layers, x_adv, sigma, rules)
            (grad,) = torch.autograd.grad(objective(output.mean, output.var, target).sum(), x_adv)
        return grad

    return ascend(gradient, x, eps, steps, alpha, random_init, generator)


def closed_form_fgsm(model, x: Tensor, y: Tensor, eps: float, sigma: float, loss: str = "stochastic",
                     relu: str = "paper", pool: str = "paper", generator: torch.Generator | None = None) -> Tensor:
    """The paper's attack: x + eps * sign(grad_x Loss(x, y; sigma)), one backward pass."""
    return closed_form_pgd(model, x, y, eps, sigma, steps=1, alpha=eps, loss=loss, relu=relu, pool=pool,
                           random_init=False, generator=generator)
