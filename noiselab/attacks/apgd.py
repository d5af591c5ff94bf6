"""APGD (Croce and Hein 2020, "Reliable evaluation of adversarial robustness..."), L-infinity.

PGD with momentum and a step size that adapts per example: it starts at 2 eps and is halved at checkpoints
where the loss stopped rising often enough (fewer than rho = 75% of the steps since the last checkpoint raised
it) or where neither the step size nor the best loss changed since the previous checkpoint; the point then
restarts from the best found so far. Checkpoints follow the paper: p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), at steps ceil(p_j * steps).

The original runs 100 steps (AutoAttack's APGD-CE and APGD-DLR); so does this by default. Each example keeps
the first misclassified point found, else the point of highest loss, over steps and restarts.

targets=k > 0 is APGD-T: instead of one untargeted run per restart, one run per restart towards each of the k
classes the model ranks highest after the true one at the clean point, with the targeted form of `loss`
(AutoAttack's APGD-T uses the targeted DLR loss and 9 targets on 10 classes).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_positive_int
from ._common import TARGETED_LOSSES, check_attack_inputs, input_gradient, loss_fn, project

MOMENTUM = 0.75  # alpha in the paper: weight of the new step against the previous one
RHO = 0.75


def checkpoints(steps: int) -> list[int]:
    marks = [0.0, 0.22]
    while marks[-1] < 1:
        marks.append(marks[-1] + max(marks[-1] - marks[-2] - 0.03, 0.06))
    at = [math.ceil(round(p * steps, 6)) for p in marks[1:]]  # round first: 0.57 * 100 is 57.000000000000014
    return sorted({a for a in at if a < steps})


def apgd(
    model,
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int = 100,
    restarts: int = 1,
    loss: str = "ce",
    targets: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    eps = check_attack_inputs(x, y, eps)
    check_positive_int(steps, "steps")
    check_positive_int(restarts, "restarts")
    untargeted = loss_fn(loss)
    if isinstance(targets, bool) or not isinstance(targets, int) or targets < 0:
        raise ValueError(f"targets must be an integer >= 0 (0: untargeted), got {targets!r}")
    if eps == 0:
        return x.detach().clone()  # the ball is one point
    batch = x.shape[0]
    if targets:
        with torch.no_grad():
            ranked = model(x).sort(1, descending=True).indices  # (B, classes), the clean point's ranking
        if targets > ranked.shape[1] - 1:
            raise ValueError(f"targets must be at most {ranked.shape[1] - 1} (the classes other than the true one), "
                             f"got {targets}")
        if int(y.min()) < 0 or int(y.max()) >= ranked.shape[1]:
            raise ValueError(f"y must hold labels in [0, {ranked.shape[1] - 1}] (the model's classes)")
        others = ranked[ranked != y.unsqueeze(1)].view(batch, -1)  # (B, classes - 1): wrong classes, likeliest first
        aimed = [(lambda logits, labels, t=others[:, k]: TARGETED_LOSSES[loss](logits, labels, t))
                 for k in range(targets)]
    else:
        aimed = [untargeted]
    shape = (batch,) + (1,) * (x.dim() - 1)
    best = x.clone()
    best_loss_overall = torch.full((batch,), float("-inf"), device=x.device)
    fooled = torch.zeros(batch, dtype=torch.bool, device=x.device)
    marks = set(checkpoints(steps))

    def record(points, losses, logits):
        nonlocal best_loss_overall, fooled
        wrong = logits.argmax(1) != y
        better = ~fooled & (wrong | (losses > best_loss_overall))
        best[better] = points[better]
        best_loss_overall = torch.where(better, losses, best_loss_overall)
        fooled = fooled | wrong

    for objective in [o for o in aimed for _ in range(restarts)]:
        # a random start scaled so that its largest coordinate per example is eps (as in the original)
        if generator is not None:
            direction = 2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1
        else:
            direction = 2 * torch.rand_like(x) - 1
        scale = direction.flatten(1).abs().amax(1).clamp_min(1e-12).view(shape)
        x_adv = project(x + eps * direction / scale, x, eps)
        step_size = torch.full(shape, 2.0 * eps, device=x.device, dtype=x.dtype)

        losses, gradient, logits = input_gradient(model, x_adv, y, objective)
        record(x_adv, losses, logits)
        best_loss, x_best, gradient_best = losses.clone(), x_adv.clone(), gradient.clone()
        x_previous = x_adv.clone()
        increases = torch.zeros(batch, device=x.device)  # steps since the last checkpoint that raised the loss
        since_mark = 0
        reduced_at_last_mark = torch.ones(batch, dtype=torch.bool, device=x.device)
        best_loss_at_last_mark = best_loss.clone()

        for step in range(steps):
            with torch.no_grad():
                z = project(x_adv + step_size * gradient.sign(), x, eps)
                weight = MOMENTUM if step > 0 else 1.0
                x_new = project(x_adv + weight * (z - x_adv) + (1 - weight) * (x_adv - x_previous), x, eps)
            x_previous, x_adv = x_adv, x_new
            new_losses, gradient, logits = input_gradient(model, x_adv, y, objective)
            record(x_adv, new_losses, logits)
            increases += (new_losses > losses).float()
            losses = new_losses
            improved = losses > best_loss
            x_best[improved], gradient_best[improved] = x_adv[improved], gradient[improved]
            best_loss = torch.where(improved, losses, best_loss)
            since_mark += 1
            if step + 1 in marks:
                too_few_increases = increases <= RHO * since_mark
                stalled = ~reduced_at_last_mark & (best_loss_at_last_mark >= best_loss)
                halve = too_few_increases | stalled
                reduced_at_last_mark = halve
                best_loss_at_last_mark = best_loss.clone()
                step_size[halve] /= 2.0
                x_adv[halve], gradient[halve] = x_best[halve], gradient_best[halve]
                increases.zero_()
                since_mark = 0
    return best.detach()
