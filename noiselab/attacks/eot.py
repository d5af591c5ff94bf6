"""Attacks on the randomized defense (noise kept at inference) by sampling: EOT and the naive attack.

    x_adv = eot_pgd(model, x, y, eps=0.1, sigma=0.6, draws=16, steps=40)

EOT (expectation over transformation, Athalye et al. 2018) follows the gradient of the loss averaged over
`draws` noisy passes, the standard adaptive attack on randomized defenses. With draws=1 it is the naive attack:
the gradient of one noisy pass. Each step costs `draws` forward and backward passes (batched together).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_input, check_positive_int
from ..defenses import _sigma_float, noisy_logits_unchecked
from ..propagate import sequential_layers
from ._common import ascend, check_attack_inputs, loss_fn


def _eot_gradient(layers: list, y: Tensor, sigma: float, draws: int, loss, generator):
    def gradient(x_adv: Tensor) -> Tensor:
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = noisy_logits_unchecked(layers, x_adv, sigma, draws, generator)  # (draws, B, classes)
            losses = loss(logits.flatten(0, 1), y.repeat(draws))
            (grad,) = torch.autograd.grad(losses.sum() / draws, x_adv)
        return grad
    return gradient


def eot_pgd(model, x: Tensor, y: Tensor, eps: float, sigma: float, draws: int = 8, steps: int = 40,
            alpha: float | None = None, loss: str = "ce", random_init: bool = True,
            generator: torch.Generator | None = None) -> Tensor:
    """PGD on the loss averaged over `draws` noise draws per step (fresh draws each step)."""
    eps = check_attack_inputs(x, y, eps)
    sigma = _sigma_float(sigma)
    check_positive_int(draws, "draws")
    check_positive_int(steps, "steps")
    check_input(model, x)
    alpha = 2.5 * eps / steps if alpha is None else alpha
    if eps == 0:
        return x.detach().clone()
    gradient = _eot_gradient(sequential_layers(model), y, sigma, draws, loss_fn(loss), generator)
    return ascend(gradient, x, eps, steps, alpha, random_init, generator)


def eot_fgsm(model, x: Tensor, y: Tensor, eps: float, sigma: float, draws: int = 8, loss: str = "ce",
             generator: torch.Generator | None = None) -> Tensor:
    """One signed step of size eps along the gradient averaged over `draws` noise draws."""
    return eot_pgd(model, x, y, eps, sigma, draws=draws, steps=1, alpha=eps, loss=loss, random_init=False,
                   generator=generator)


def naive_fgsm(model, x: Tensor, y: Tensor, eps: float, sigma: float, loss: str = "ce",
               generator: torch.Generator | None = None) -> Tensor:
    """FGSM through a single noisy pass: what an attacker who ignores the randomness does."""
    return eot_fgsm(model, x, y, eps, sigma, draws=1, loss=loss, generator=generator)
