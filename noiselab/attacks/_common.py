"""What every attack shares: input checks, the losses it ascends, the projection onto the eps-ball."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def check_eps(eps, name: str = "eps") -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or not 0 <= eps <= 1:
        raise ValueError(f"{name} must be a number in [0, 1] (an L-infinity budget on images in [0, 1]), got {eps!r}")
    return float(eps)


def check_attack_inputs(x: Tensor, y: Tensor, eps) -> float:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError("x must be a floating-point batch of images (B, C, H, W) in [0, 1]")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(f"x must hold images in [0, 1], got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],) or y.is_floating_point():
        raise ValueError(f"y must be integer labels of shape ({x.shape[0]},), got {getattr(y, 'shape', type(y))}")
    return check_eps(eps)


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner's margin, max_{i != y} z_i - z_y: positive exactly when the example is misclassified."""
    true = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    others = logits.scatter(1, y.unsqueeze(1), float("-inf"))
    return others.max(1).values - true


def dlr(logits: Tensor, y: Tensor) -> Tensor:
    """Croce and Hein's difference-of-logits ratio, -(z_y - max_{i != y} z_i) / (z_(1) - z_(3)); scale-invariant."""
    ordered = logits.sort(1).values
    return margin(logits, y) / (ordered[:, -1] - ordered[:, -3] + 1e-12)


LOSSES = {"ce": cross_entropy, "margin": margin, "dlr": dlr}


def targeted_cross_entropy(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """-CE towards `target`: rises as the target class gains probability."""
    return -F.cross_entropy(logits, target, reduction="none")


def targeted_margin(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """z_target - z_y: positive once the target beats the true class."""
    return (logits.gather(1, target.unsqueeze(1)) - logits.gather(1, y.unsqueeze(1))).squeeze(1)


def targeted_dlr(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Croce and Hein's targeted DLR, -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2); scale-invariant (APGD-T)."""
    ordered = logits.sort(1).values
    return targeted_margin(logits, y, target) / (ordered[:, -1] - 0.5 * (ordered[:, -3] + ordered[:, -4]) + 1e-12)


# the same objectives aimed at one class (loss(logits, y, target)), for targeted attacks
TARGETED_LOSSES = {"ce": targeted_cross_entropy, "margin": targeted_margin, "dlr": targeted_dlr}


def loss_fn(name: str):
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {name!r}")
    return LOSSES[name]


def project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Onto the eps-ball around x, then into [0, 1]."""
    return torch.clamp(torch.minimum(torch.maximum(x_adv, x - eps), x + eps), 0.0, 1.0)


def input_gradient(model, x_adv: Tensor, y: Tensor, loss) -> tuple[Tensor, Tensor, Tensor]:
    """Per-example losses, the gradient of their sum with respect to x_adv, and the logits (detached)."""
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_adv)
        losses = loss(logits, y)
        (gradient,) = torch.autograd.grad(losses.sum(), x_adv)
    return losses.detach(), gradient.detach(), logits.detach()


def random_start(x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) if generator is not None \
        else torch.rand_like(x)
    return project(x + eps * (2 * noise - 1), x, eps)


def ascend(gradient_fn, x: Tensor, eps: float, steps: int, alpha: float, random_init: bool,
           generator: torch.Generator | None) -> Tensor:
    """Signed-gradient ascent in the eps-ball (FGSM: one step of alpha = eps from x); returns the final iterate.

    gradient_fn(x_adv) -> the gradient of the attack's objective at x_adv. Used by the attacks on randomized
    defenses, whose success can only be judged by a many-sample vote afterwards, so no per-step scoring here.
    """
    x_adv = random_start(x, eps, generator) if random_init else x.clone()
    for _ in range(steps):
        x_adv = project(x_adv + alpha * gradient_fn(x_adv).sign(), x, eps)
    return x_adv.detach()
