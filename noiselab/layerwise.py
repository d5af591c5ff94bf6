"""Closed-form propagation beside Monte Carlo, layer by layer: the numbers the propagation explorer shows.

    >>> _, closed = propagate(model, x, 0.5, relu="moment", pool="clark", return_layers=True)
    >>> _, sampled = monte_carlo(model, x, 0.5, samples=500, seed=0, return_layers=True)
    >>> errors = layer_errors(closed, sampled)            # one LayerError per layer, noise entry onwards
    >>> activation_map(closed[0].mean[0])                 # (H, W): conv1's mean, averaged over channels

The relative error of a layer is mean |closed form - Monte Carlo| / mean |Monte Carlo| over its elements (as in
docs/propagation.md), for the mean and for the variance. With few samples it includes the sampling error: at the
noise entry, where the closed form is exact, it is about sqrt(2 / samples) for the variance.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._checks import check_input, check_positive_int, check_sigma
from .propagate import Gaussian, LayerMoments, noise_entry, sequential_layers

# Reference magnitudes below this count as zero (a layer whose sampled variance is all 0): the error is then
# reported against this floor rather than divided by 0.
REFERENCE_FLOOR = 1e-12


def relative_error(estimate: Tensor, reference: Tensor) -> float:
    """mean |estimate - reference| / mean |reference|, over all elements (the reference floored at 1e-12)."""
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate and reference must have the same shape, got {tuple(estimate.shape)} and "
                         f"{tuple(reference.shape)}")
    if estimate.numel() == 0:
        raise ValueError("estimate and reference are empty")
    estimate, reference = estimate.detach().double(), reference.detach().double()
    difference = (estimate - reference).abs().mean()
    return float(difference / reference.abs().mean().clamp_min(REFERENCE_FLOOR))


@dataclass(frozen=True)
class LayerError:
    index: int          # position from the noise entry on (0: the first pre-activation)
    name: str           # the layer's dotted name in the model
    kind: str           # its class, e.g. "Conv2d"
    mean_error: float   # relative error of the closed-form mean against sampling
    var_error: float    # and of the variance

    @property
    def label(self) -> str:
        return f"{self.index} {self.kind}"


def layer_errors(closed: list[LayerMoments], sampled: list[LayerMoments]) -> list[LayerError]:
    """The relative errors of each layer's closed-form moments against sampled ones (same model, x and sigma).

    `closed` and `sampled` are the per-layer lists of propagate(..., return_layers=True) and
    monte_carlo(..., return_layers=True); they must name the same layers in the same order.
    """
    if [layer.name for layer in closed] != [layer.name for layer in sampled]:
        raise ValueError("closed and sampled must list the same layers in the same order (same model)")
    return [
        LayerError(index, c.name, c.kind, relative_error(c.mean, s.mean), relative_error(c.var, s.var))
        for index, (c, s) in enumerate(zip(closed, sampled))
    ]


@functools.lru_cache(maxsize=2)
def _standard_noise(shape: tuple[int, ...], seed: int, dtype: torch.dtype) -> Tensor:
    """monte_carlo's draws for one example, randn((S, 1, ...)) from a seeded CPU generator, as (S, ...); images are
    stored channels-last (the same values), the layout the rest of the forward runs fastest in (see below)."""
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).flatten(0, 1)
    return noise.contiguous(memory_format=torch.channels_last) if noise.dim() == 4 else noise


def _moments(h: Tensor, samples: int) -> tuple[Tensor, Tensor]:
    """Mean and unbiased variance over the samples (dim 0) of h, each (1, ...), in two passes (centre, then square in
    place): the same numbers as torch.var_mean, in half its time here."""
    channels_last = h.dim() == 4 and not h.is_contiguous() and h.is_contiguous(memory_format=torch.channels_last)
    # A reduction over dim 0 of a channels-last tensor is 6x slower than over a contiguous one (measured 134 ms
    # against 21 ms for 500 x 16 x 28 x 28): reduce its contiguous (S, H, W, C) view and permute back.
    view = h.permute(0, 2, 3, 1) if channels_last else h
    mean = view.mean(0, keepdim=True)
    var = torch.sub(view, mean).square_().sum(0, keepdim=True) / (samples - 1)
    if channels_last:
        mean, var = mean.permute(0, 3, 1, 2).contiguous(), var.permute(0, 3, 1, 2).contiguous()
    return mean, var


@torch.no_grad()
def sample_layers(
    model: nn.Module, x: Tensor, sigma: float, samples: int = 500, seed: int = 0
) -> tuple[Gaussian, list[LayerMoments]]:
    """monte_carlo(model, x, sigma, samples, seed, return_layers=True) for one example on the CPU, fast enough for
    a slider: the same draws, the same layer names, means and unbiased variances.

    The speed comes from things monte_carlo cannot assume: one example, so all draws fit in one batch (samples x
    the largest layer, e.g. 500 x 12,544 floats for LeNet5's conv1), held channels-last; and the standard normal
    draws cached per (shape, seed) and rescaled by sigma, so moving sigma or the image does not draw 6 M normals
    again. With the same seed the noise equals monte_carlo's (it draws shape (samples, 1, ...) from a CPU generator
    seeded alike), so the two agree to float rounding.
    """
    check_positive_int(samples, "samples")
    if samples < 2:
        raise ValueError(f"samples must be >= 2 for a variance, got {samples}")
    check_sigma(sigma)
    layers = sequential_layers(model)
    check_input(model, x)
    if x.shape[0] != 1:
        raise ValueError(f"sample_layers takes one example, x of shape (1, ...); got a batch of {x.shape[0]}")
    if x.device.type != "cpu":
        raise ValueError("sample_layers runs on the CPU; use monte_carlo for other devices")
    entry = noise_entry(layers)
    pre = x
    for _, layer in layers[: entry + 1]:
        pre = layer(pre)  # (1, ...) the first pre-activation
    noise = _standard_noise((samples,) + tuple(pre.shape), seed, pre.dtype)  # (S, ...)
    # Channels-last images (from the noise's layout): the same numbers, and the rest of the forward, max-pools above
    # all, about twice as fast on a CPU (measured 57 ms against 118 ms for LeNet5 after conv1, 500 draws, 1 thread).
    h = torch.empty_like(noise)
    torch.add(pre, noise, alpha=float(sigma), out=h)  # (S, ...): pre broadcast over the draws
    record = []
    for index, (name, layer) in enumerate(layers[entry:]):
        if index > 0:
            h = layer(h)
        if index > 0 and isinstance(layer, (nn.Flatten, nn.Unflatten)):  # a reshape: the moments are reshaped too
            previous = record[-1]
            record.append(LayerMoments(name, type(layer).__name__, layer(previous.mean), layer(previous.var)))
            continue
        mean, var = _moments(h, samples)
        record.append(LayerMoments(name, type(layer).__name__, mean, var))
    return Gaussian(record[-1].mean, record[-1].var), record


def activation_map(activation: Tensor, channel: int | None = None, width: int | None = None) -> Tensor:
    """One example's activation as a 2-D map to draw: (H, W) float64.

    activation: (C, H, W) -> the mean over channels (channel=None) or channel `channel`;
                (F,) (a fully connected layer) -> wrapped into rows of `width` units (default ceil(sqrt(F)),
                about square), the last row padded with NaN (channel must be None).
    """
    if not isinstance(activation, Tensor):
        raise ValueError(f"activation must be a tensor, got {type(activation).__name__}")
    activation = activation.detach().double()
    if activation.dim() == 3:
        if channel is None:
            return activation.mean(0)
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < activation.shape[0]:
            raise ValueError(f"channel must be None or an integer in [0, {activation.shape[0] - 1}], got {channel!r}")
        return activation[channel]
    if activation.dim() == 1:
        if channel is not None:
            raise ValueError("a fully connected layer has no channels: pass channel=None")
        if width is None:
            width = math.ceil(math.sqrt(activation.numel()))
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be an integer >= 1, got {width!r}")
        width = min(width, activation.numel())
        rows = math.ceil(activation.numel() / width)
        padded = torch.full((rows * width,), float("nan"), dtype=torch.float64)
        padded[: activation.numel()] = activation
        return padded.view(rows, width)
    raise ValueError(f"activation must be one example's (C, H, W) or (F,) tensor, got shape {tuple(activation.shape)}")


@dataclass(frozen=True)
class MeanPathGap:
    index: int          # position from the noise entry on (0: the first pre-activation)
    name: str           # the layer's dotted name in the model
    kind: str           # its class, e.g. "ReLU"
    gap: float          # relative difference between the propagated mean and the deterministic network's activation


@dataclass(frozen=True)
class MeanPath:
    gaps: list[MeanPathGap]  # one per layer from the noise entry on
    agreement: float         # fraction of the inputs whose propagated mean picks the network's class


def mean_path(model: nn.Module, x: Tensor, sigma: float, relu: str = "paper", pool: str = "paper") -> MeanPath:
    """Is the propagated mean the deterministic network? Per layer from the noise entry on, relative_error of the
    closed-form mean (under `relu` and `pool`) against the activation of the network without noise, same x; and
    how often the propagated output mean picks the network's class.

    Under the paper's rules (ReLU mean = max(mu, 0), max-pool mean = max of the means) the noise's zero mean leaves
    every mean equal to the deterministic activation, whatever sigma: the gaps are exactly 0 and sigma reaches the
    loss only through the variances. The moment rules move the mean with sigma.
    """
    from .propagate import propagate

    with torch.no_grad():
        _, closed = propagate(model, x, sigma, relu=relu, pool=pool, return_layers=True)  # checks every input
        layers = sequential_layers(model)
        entry = noise_entry(layers)
        deterministic = []
        h = x
        for index, (_, layer) in enumerate(layers):
            h = layer(h)
            if index >= entry:
                deterministic.append(h)
    gaps = [MeanPathGap(index, c.name, c.kind, relative_error(c.mean, d))
            for index, (c, d) in enumerate(zip(closed, deterministic))]
    agreement = float((closed[-1].mean.argmax(1) == deterministic[-1].argmax(1)).float().mean())
    return MeanPath(gaps, agreement)


def mean_path_gaps(model: nn.Module, x: Tensor, sigma: float, relu: str = "paper",
                   pool: str = "paper") -> list[MeanPathGap]:
    """The per-layer gaps of mean_path (see there)."""
    return mean_path(model, x, sigma, relu, pool).gaps


def loss_sigma_gradient(model: nn.Module, x: Tensor, y: Tensor, sigmas: list[float], relu: str = "paper",
                        pool: str = "paper") -> list[tuple[float, float]]:
    """d(stochastic loss)/d(sigma) on (x, y) at each sigma of `sigmas` for the model's fixed weights: [(sigma, grad)].

    Where σ is learned, it stops where this derivative is 0 ("Model"); with the Bimodel term -α σ², where it equals
    2 α σ. So the curve says where σ would settle for these weights, and whether a σ* is reachable at all."""
    from .loss import stochastic_loss
    from .moments import POOL_RULES, RELU_RULES, _check_rule
    from .propagate import Rules, propagate_unchecked

    _check_rule(relu, RELU_RULES, "relu")
    _check_rule(pool, POOL_RULES, "pool")
    layers = sequential_layers(model)
    check_input(model, x)
    for value in sigmas:  # every sigma checked before any work
        check_sigma(value)
    gradients = []
    for value in sigmas:
        sigma = torch.tensor(float(value), dtype=x.dtype, device=x.device, requires_grad=True)
        output, _ = propagate_unchecked(layers, x, sigma, Rules(relu, pool))
        (gradient,) = torch.autograd.grad(stochastic_loss(output.mean, output.var, y), sigma)
        gradients.append((float(value), float(gradient)))
    return gradients
