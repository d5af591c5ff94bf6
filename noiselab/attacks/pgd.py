"""PGD (Madry et al. 2018), L-infinity: signed-gradient ascent from a random start, projected, with restarts.

Each example keeps the worst case over restarts: the first point found that is misclassified, or else the
point of highest loss. Step size alpha defaults to 2.5 eps / steps (Madry et al.); schedule "cosine" anneals it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_positive_int
from ._common import check_attack_inputs, input_gradient, loss_fn, project, random_start

SCHEDULES = ("constant", "cosine")


def pgd(
    model,
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int = 40,
    alpha: float | None = None,
    restarts: int = 1,
    loss: str = "ce",
    random_init: bool = True,
    schedule: str = "constant",
    generator: torch.Generator | None = None,
) -> Tensor:
    eps = check_attack_inputs(x, y, eps)
    check_positive_int(steps, "steps")
    check_positive_int(restarts, "restarts")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if eps == 0:
        return x.detach().clone()  # the ball is one point
    alpha = 2.5 * eps / steps if alpha is None else alpha
    if not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ValueError(f"alpha must be a step size > 0, got {alpha!r}")
    objective = loss_fn(loss)
    best = x.clone()
    best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        x_adv = random_start(x, eps, generator) if random_init else x.clone()
        for step in range(steps + 1):  # the last pass only scores the final point
            losses, gradient, logits = input_gradient(model, x_adv, y, objective)
            wrong = logits.argmax(1) != y
            # keep the first misclassified point; until one is found, the highest-loss point
            better = ~fooled & (wrong | (losses > best_loss))
            best[better] = x_adv[better]
            best_loss = torch.where(better, losses, best_loss)
            fooled |= wrong
            if step == steps:
                break
            size = alpha if schedule == "constant" else alpha * 0.5 * (1 + math.cos(math.pi * step / steps))
            x_adv = project(x_adv + size * gradient.sign(), x, eps)
    return best.detach()
