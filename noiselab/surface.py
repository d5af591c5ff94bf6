"""The loss around one input, over a plane of perturbations: is the loss smooth there, or jagged (gradient masking)?

    >>> surface = loss_surface(model, x, y, eps=0.3)              # 41 x 41 points, one batched forward
    >>> surface.loss.shape                                         # (41, 41): [gradient step, random step]
    >>> surface = loss_surface(model, x, y, eps=0.3, sigma=0.5)    # the closed-form stochastic loss under noise

The plane is x + a g + b r, clipped to [0, 1], for a and b in [-eps, eps]: g = sign of the gradient of the
expectation model's cross-entropy at x (the direction FGSM steps along), r a random +-1 direction (seeded). The
same plane is used whatever sigma is, so surfaces at different sigma (or of two models with the same gradient
sign) can be compared point by point. With sigma == 0 the loss is the cross-entropy of the expectation model; with
sigma > 0 it is the paper's stochastic loss of the output Gaussian propagated in closed form (noiselab.propagate
and noiselab.loss.stochastic_loss), the quantity noise training minimises.
A smooth bowl around x means gradients point somewhere useful; a surface that is flat at x and steep nearby, or
jagged, is the classic sign of gradient masking (Athalye et al., 2018).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_input, check_sigma
from .loss import stochastic_loss
from .moments import POOL_RULES, RELU_RULES, _check_rule
from .propagate import Rules, propagate_unchecked, sequential_layers

MAX_STEPS = 101
# Inputs per forward pass. Small batches keep each layer's activations (and the moment rules' many temporaries) in
# the CPU's caches: a 41 x 41 LeNet5 surface on the 2-core development CPU was 2.0x (σ = 0), 2.2x (σ = 0.5, paper
# rules) and 3.1x (moment/clark) faster in batches of 128 than of 2,048, and 64 or 256 were no better
# (bench/interactive.py measures the surface in place). Memory stays bounded for any grid.
CHUNK = 128


@dataclass(frozen=True)
class LossSurface:
    offsets: Tensor       # (steps,) float64, from -eps to eps: the coefficients a (rows) and b (columns)
    loss: Tensor          # (steps, steps) float64: loss[i, j] at x + offsets[i] g + offsets[j] r, clipped
    predicted: Tensor     # (steps, steps) int64: the class the loss is scored on predicts there (argmax of the
                          # expectation model's logits for sigma == 0, of the propagated mean for sigma > 0)
    label: int
    eps: float
    sigma: float
    relu: str
    pool: str
    gradient_zero: bool   # the input gradient was exactly zero: the g axis is degenerate (the loss is flat along it)

    @property
    def loss_at_input(self) -> float:
        """The loss at the grid point nearest the unperturbed input (x itself when steps is odd)."""
        center = int(self.offsets.abs().argmin())
        return float(self.loss[center, center])

    @property
    def wrong_fraction(self) -> float:
        """The share of the plane's points where the predicted class is not the label."""
        return float((self.predicted != self.label).double().mean())

    def to_table(self) -> dict[str, np.ndarray]:
        """Columns a, b, loss, wrong (predicted != label), one row per grid point: a chart's data."""
        a, b = torch.meshgrid(self.offsets, self.offsets, indexing="ij")
        return {
            "a": a.reshape(-1).numpy(),
            "b": b.reshape(-1).numpy(),
            "loss": self.loss.reshape(-1).numpy(),
            "wrong": (self.predicted != self.label).reshape(-1).numpy(),
        }


def _check_arguments(model: nn.Module, x, y, eps, steps) -> tuple[Tensor, int]:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or not 0 < eps <= 1:
        raise ValueError(f"eps must be a number in (0, 1] (the plane's half-width on images in [0, 1]), got {eps!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be an integer in [2, {MAX_STEPS}] (points per axis), got {steps!r}")
    if isinstance(x, Tensor) and x.dim() == 3:
        x = x.unsqueeze(0)
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] != 1:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be one image, shaped (C, H, W) or (1, C, H, W), got {shape}")
    check_input(model, x)
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError("x must hold an image in [0, 1]")
    if isinstance(y, Tensor):
        if y.numel() != 1 or y.is_floating_point():
            raise ValueError(f"y must be one integer class index, got a tensor of shape {tuple(y.shape)} ({y.dtype})")
        y = int(y.reshape(()))
    if isinstance(y, bool) or not isinstance(y, (int, np.integer)):
        raise ValueError(f"y must be an integer class index, got {type(y).__name__}")
    return x, int(y)


def _gradient_sign(model: nn.Module, x: Tensor, y: int) -> Tensor:
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), torch.tensor([y], device=x.device))
    (gradient,) = torch.autograd.grad(loss, x)
    return gradient.sign()


def loss_surface(
    model: nn.Module,
    x: Tensor,
    y: int | Tensor,
    eps: float,
    steps: int = 41,
    sigma: float = 0.0,
    relu: str = "paper",
    pool: str = "paper",
    seed: int = 0,
) -> LossSurface:
    """The loss of `model` at x + a g + b r (clipped to [0, 1]) for a, b on a steps x steps grid over [-eps, eps].

    Args:
        model: an nn.Sequential classifier (noiselab.models), in eval mode; its weights are not changed.
        x: one image in [0, 1], (C, H, W) or (1, C, H, W); y: its class index (an int or a one-element tensor).
        eps: the plane's half-width, in (0, 1]. steps: points per axis, 2 to 101 (odd puts x itself on the grid).
        sigma: 0 for the expectation model's cross-entropy; > 0 for the closed-form stochastic loss at that noise,
            propagated under the `relu` and `pool` rules.
        seed: the random direction's seed.
    """
    _check_rule(relu, RELU_RULES, "relu")
    _check_rule(pool, POOL_RULES, "pool")
    check_sigma(sigma)
    sigma = float(sigma)
    x, y = _check_arguments(model, x, y, eps, steps)
    layers = sequential_layers(model)
    classes = getattr(model, "classes", None)
    with torch.no_grad():
        logits = model(x)
    if not 0 <= y < logits.shape[1] or (classes is not None and y >= classes):
        raise ValueError(f"y must be a class index in [0, {logits.shape[1] - 1}], got {y}")

    gradient = _gradient_sign(model, x, y)  # (1, C, H, W) in {-1, 0, 1}
    if x.device.type == "cpu":
        # A channels-last copy of the weights makes every convolution, pool and ReLU after them channels-last: the
        # same numbers to float rounding, and LeNet5's forward over 1,681 images twice as fast on a CPU (measured
        # 335 ms against 654 ms on one thread). A copy, so the caller's model is left as it was.
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        layers = sequential_layers(model)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    random = (torch.randint(0, 2, x.shape, generator=generator).to(x) * 2 - 1)  # (1, C, H, W) in {-1, 1}
    offsets = torch.linspace(-eps, eps, steps, dtype=torch.float64)
    a, b = torch.meshgrid(offsets, offsets, indexing="ij")
    a = a.reshape(-1, 1, 1, 1).to(x)  # (steps^2, 1, 1, 1)
    b = b.reshape(-1, 1, 1, 1).to(x)

    losses, predictions = [], []
    with torch.no_grad():
        for start in range(0, steps * steps, CHUNK):
            batch = (x + a[start : start + CHUNK] * gradient + b[start : start + CHUNK] * random).clamp_(0.0, 1.0)
            target = torch.full((batch.shape[0],), y, dtype=torch.long, device=x.device)
            if sigma == 0.0:
                scores = model(batch)  # (n, classes) logits
                loss = F.cross_entropy(scores, target, reduction="none")
            else:
                output, _ = propagate_unchecked(layers, batch, sigma, Rules(relu, pool))
                scores = output.mean
                loss = stochastic_loss(output.mean, output.var, target, reduction="none")
            losses.append(loss.double())
            predictions.append(scores.argmax(1))
    return LossSurface(
        offsets=offsets,
        loss=torch.cat(losses).view(steps, steps),
        predicted=torch.cat(predictions).view(steps, steps),
        label=y,
        eps=float(eps),
        sigma=sigma,
        relu=relu,
        pool=pool,
        gradient_zero=not bool(gradient.abs().sum()),
    )
