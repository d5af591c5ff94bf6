"""FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps."""

from __future__ import annotations

from torch import Tensor

from ._common import check_attack_inputs, input_gradient, loss_fn, project


def fgsm(model, x: Tensor, y: Tensor, eps: float, loss: str = "ce") -> Tensor:
    eps = check_attack_inputs(x, y, eps)
    _, gradient, _ = input_gradient(model, x, y, loss_fn(loss))
    return project(x + eps * gradient.sign(), x, eps)
