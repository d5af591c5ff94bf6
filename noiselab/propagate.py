"""Closed-form propagation of first-layer Gaussian noise through a network, and its Monte Carlo check.

The noise nu ~ N(0, sigma^2 I) enters at the pre-activation of the first Conv2d/Linear layer
(Z = conv1(x) + nu). From there a diagonal Gaussian (mean, var) is pushed through the remaining
layers, one rule per layer type, looked up by type in PROPAGATION_RULES (pool="clark-prerelu" alone takes a
ReLU and the max-pool right after it together, the max first). The model is an
nn.Sequential (nested ones are flattened); propagation and the expectation model `model(x)` use
the same module and weights. covariance="full" / "full-linear" carries the units' covariance instead of taking them
as independent, from the first layer that correlates them on (noiselab.covariance's rules).

    >>> out = noiselab.propagate(model, x, sigma=0.5, relu="moment", pool="clark")
    >>> out.mean.shape, out.var.shape          # (B, 10) each
    >>> out = noiselab.propagate(model, x, 0.5, relu="moment", pool="clark-prerelu", covariance="full")
    >>> out.cov.shape                          # (B, 10, 10): the logits' covariance, out.var on its diagonal
    >>> mc = noiselab.monte_carlo(model, x, sigma=0.5, samples=10_000, seed=0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_input, check_positive_int, check_sigma
from .covariance import (
    check_covariance_mode,
    diagonal,
    map_covariance,
    map_variance,
    maxpool_covariance,
    relu_covariance,
)
from .moments import (
    POOL_RULES,
    RELU_RULES,
    _check_rule,
    _pair,
    avgpool_moments,
    maxpool_moments,
    relu_maxpool_moments,
    relu_moments,
)


class Gaussian(NamedTuple):
    """A diagonal Gaussian: element-wise mean and variance tensors of the same shape."""

    mean: Tensor
    var: Tensor


class CorrelatedGaussian(Gaussian):
    """A Gaussian whose units' covariance is known: unpacks as (mean, var) like Gaussian, and `.cov`, (B, D, D) over
    each example's D units (flattened as nn.Flatten orders them), has var on its diagonal."""

    def __new__(cls, mean: Tensor, var: Tensor, cov: Tensor):
        self = super().__new__(cls, mean, var)
        self.cov = cov
        return self

    def __getnewargs__(self):  # pickling keeps the covariance
        return self.mean, self.var, self.cov

    def _replace(self, **fields):  # keeps (or replaces) the covariance too
        return CorrelatedGaussian(fields.pop("mean", self.mean), fields.pop("var", self.var),
                                  fields.pop("cov", self.cov))


@dataclass(frozen=True)
class LayerMoments:
    """The Gaussian after one layer: `name` is the layer's dotted path in the model, `kind` its class."""

    name: str
    kind: str
    mean: Tensor
    var: Tensor


@dataclass(frozen=True)
class Rules:
    relu: str = "paper"
    pool: str = "paper"


RuleFn = Callable[[nn.Module, Tensor, Tensor, Rules], tuple[Tensor, Tensor]]


def _conv2d(layer: nn.Conv2d, mean: Tensor, var: Tensor, rules: Rules) -> tuple[Tensor, Tensor]:
    # Var(sum_j w_j x_j) = sum_j w_j^2 var_j for independent x_j; no bias. _conv_forward applies the
    # layer's own padding mode, which is right for the variance too (a padded pixel copies a pixel).
    return layer(mean), layer._conv_forward(var, layer.weight.square(), None)


def _linear(layer: nn.Linear, mean: Tensor, var: Tensor, rules: Rules) -> tuple[Tensor, Tensor]:
    return layer(mean), F.linear(var, layer.weight.square())


def _relu(layer: nn.ReLU, mean: Tensor, var: Tensor, rules: Rules) -> tuple[Tensor, Tensor]:
    return relu_moments(mean, var, rules.relu)


def _maxpool2d(layer: nn.MaxPool2d, mean: Tensor, var: Tensor, rules: Rules) -> tuple[Tensor, Tensor]:
    return maxpool_moments(
        mean, var, rules.pool, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode
    )


def _avgpool2d(layer: nn.AvgPool2d, mean: Tensor, var: Tensor, rules: Rules) -> tuple[Tensor, Tensor]:
    return avgpool_moments(
        mean, var, layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode,
        layer.count_include_pad, layer.divisor_override,
    )


def _reshape(layer: nn.Module, mean: Tensor, var: Tensor, rules: Rules) -> tuple[Tensor, Tensor]:
    return layer(mean), layer(var)


def _identity(layer: nn.Module, mean: Tensor, var: Tensor, rules: Rules) -> tuple[Tensor, Tensor]:
    # Dropout is propagated as its expectation, the identity (what the expectation model computes in
    # eval mode); its own randomness is not added to the variance.
    return mean, var


PROPAGATION_RULES: dict[type, RuleFn] = {
    nn.Conv2d: _conv2d,
    nn.Linear: _linear,
    nn.ReLU: _relu,
    nn.MaxPool2d: _maxpool2d,
    nn.AvgPool2d: _avgpool2d,
    nn.Flatten: _reshape,
    nn.Unflatten: _reshape,
    nn.Dropout: _identity,
    nn.Identity: _identity,
}

NOISE_ENTRY_TYPES = (nn.Conv2d, nn.Linear)
NOISE_PLACEMENTS = ("preact", "input")  # the paper's first pre-activation, or the input (as randomized smoothing)


def check_noise_at(noise_at: str) -> None:
    if noise_at not in NOISE_PLACEMENTS:
        raise ValueError(f"noise_at must be one of {NOISE_PLACEMENTS} (the first pre-activation, as in the paper, "
                         f"or the input), got {noise_at!r}")


def _rule_for(layer: nn.Module) -> RuleFn | None:
    for cls in type(layer).__mro__:  # subclasses of a supported layer use its rule
        if cls in PROPAGATION_RULES:
            return PROPAGATION_RULES[cls]
    return None


def sequential_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's layers in order as (dotted name, module), nested nn.Sequentials flattened.

    Raises a ValueError naming the first layer that has no propagation rule, and one when the
    model has no Conv2d/Linear layer for the noise to enter.
    """
    if not isinstance(model, nn.Sequential):
        raise ValueError(
            f"propagation needs an nn.Sequential (nested ones are fine) built from "
            f"{', '.join(t.__name__ for t in PROPAGATION_RULES)}; got {type(model).__name__}"
        )
    layers: list[tuple[str, nn.Module]] = []

    def visit(module: nn.Sequential, prefix: str) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}{child_name}"
            if isinstance(child, nn.Sequential):
                visit(child, name + ".")
            elif _rule_for(child) is None:
                raise ValueError(
                    f"layer {name!r} ({type(child).__name__}) has no propagation rule; supported layers: "
                    f"{', '.join(t.__name__ for t in PROPAGATION_RULES)}"
                )
            else:
                layers.append((name, child))

    visit(model, "")
    if not any(isinstance(layer, NOISE_ENTRY_TYPES) for _, layer in layers):
        raise ValueError("the model has no Conv2d or Linear layer for the noise to enter")
    return layers


def noise_entry(layers: list[tuple[str, nn.Module]]) -> int:
    """The index in sequential_layers(model) of the first Conv2d/Linear: the noise is added to its output."""
    return next(i for i, (_, layer) in enumerate(layers) if isinstance(layer, NOISE_ENTRY_TYPES))


def first_preactivation(layers: list[tuple[str, nn.Module]], x: Tensor) -> Tensor:
    """(B, ...) the first Conv2d/Linear's output of sequential_layers(model), where the noise enters (the same entry
    point propagate uses): computed once for any number of noise draws (noiselab.defenses, noiselab.train)."""
    pre = x
    for _, layer in layers[: noise_entry(layers) + 1]:
        pre = layer(pre)
    return pre


def preactivation_scale(pre: Tensor) -> Tensor:
    """The spread of a batch of activations per channel (Conv2d output) or feature (Linear output): the standard
    deviation over the batch and the positions, detached, shaped to broadcast over `pre` ((1, C, 1, 1) or (1, F)).
    sigma_mode="relative" multiplies sigma by it, so the noise keeps its size relative to what it is added to."""
    if not isinstance(pre, Tensor) or pre.dim() < 2 or pre.numel() < 2 * pre.shape[1]:
        raise ValueError("pre must be a batch of activations, (B, C, ...) or (B, F), with at least 2 values per "
                         "channel or feature to take a spread over, got "
                         f"{tuple(pre.shape) if isinstance(pre, Tensor) else type(pre).__name__}")
    dims = [0] + list(range(2, pre.dim()))
    return pre.detach().std(dim=dims, keepdim=True)


# Layers that mix units (a linear map): after the first of them, behind the noise entry, the units are correlated.
MIXING_TYPES = (nn.Conv2d, nn.Linear, nn.AvgPool2d)


def _correlates(layer: nn.Module) -> bool:
    """Whether the layer makes independent units correlated: a linear map, or a max-pool whose windows overlap."""
    if isinstance(layer, nn.MaxPool2d):
        kernel = _pair(layer.kernel_size)
        stride = kernel if layer.stride is None else _pair(layer.stride)
        return stride[0] < kernel[0] or stride[1] < kernel[1]
    return isinstance(layer, MIXING_TYPES)


def _linear_map(layer: nn.Module) -> Callable[[Tensor], Tensor]:
    """The layer's linear part (no bias), for map_covariance."""
    if isinstance(layer, nn.Conv2d):
        return lambda t: layer._conv_forward(t, layer.weight, None)
    if isinstance(layer, nn.Linear):
        return lambda t: F.linear(t, layer.weight)
    return layer  # AvgPool2d: linear, no bias


def _check_covariance_pool(name: str, layer: nn.MaxPool2d, mode: str) -> None:
    if _pair(layer.padding) != (0, 0) or _pair(layer.dilation) != (1, 1) or layer.ceil_mode:
        raise ValueError(f"covariance={mode!r} takes max-pools without padding, dilation or ceil_mode; layer {name!r} "
                         f"({layer}) has one: use covariance='diagonal' for this model")


def _covariance_step(name: str, layer: nn.Module, mean: Tensor, var: Tensor, cov: Tensor | None, rules: Rules,
                     mode: str) -> tuple[Tensor, Tensor]:
    """One layer of N(mean, cov) (cov None: independent units with variances var): the output's mean and cov."""
    if isinstance(layer, nn.Linear) and cov is None:  # W diag(var) W^T, directly: (B, out, out)
        return layer(mean), torch.matmul(layer.weight * var.unsqueeze(-2), layer.weight.T)
    if isinstance(layer, MIXING_TYPES):
        fn = _linear_map(layer)
        out_cov = map_variance(fn, var) if cov is None else map_covariance(fn, cov, tuple(mean.shape[1:]))
        return layer(mean), out_cov
    if cov is None:
        cov = torch.diag_embed(var.flatten(1))
    if isinstance(layer, nn.ReLU):
        out_mean, out_cov = relu_covariance(mean.flatten(1), cov, rules.relu, mode)
        return out_mean.view_as(mean), out_cov
    if isinstance(layer, nn.MaxPool2d):
        _check_covariance_pool(name, layer, mode)
        return maxpool_covariance(mean, cov, rules.pool, layer.kernel_size, layer.stride, mode)
    return _rule_for(layer)(layer, mean, var, rules)[0], cov  # a reshape, Dropout, Identity: the same units


def _variance(sigma: float | Tensor, like: Tensor) -> Tensor:
    """sigma^2 everywhere `like` is, as a stride-0 view (no copy; the moment ReLU takes it as one number)."""
    if isinstance(sigma, Tensor):
        return (sigma.to(like) ** 2).expand_as(like)  # like's dtype and device
    return torch.tensor(float(sigma) ** 2, dtype=like.dtype, device=like.device).expand_as(like)


def propagate_unchecked(
    layers: list[tuple[str, nn.Module]],
    x: Tensor,
    sigma: float | Tensor,
    rules: Rules,
    return_layers: bool = False,
    noise_at: str = "preact",
    relative: bool = False,
    covariance: str = "diagonal",
) -> tuple[Gaussian, list[LayerMoments]]:
    """propagate() without input checks, for hot loops whose inputs are already checked once.

    relative=True: the noise's std is sigma times preactivation_scale() of what it is added to (this batch's).
    covariance as in propagate(), on the whole batch at once (propagate() splits it to bound the memory)."""
    record: list[LayerMoments] = []
    if noise_at == "input":  # x + nu: every layer, the first one included, carries the variance
        scale = sigma * preactivation_scale(x) if relative else sigma
        mean, var, rest = x, _variance(scale, x), layers
    else:
        entry = noise_entry(layers)
        mean = x
        for _, layer in layers[:entry]:
            mean = layer(mean)
        name, first = layers[entry]
        mean = first(mean)  # (B, C, H, W) or (B, F): the first pre-activation; noise enters here
        var = _variance(sigma * preactivation_scale(mean) if relative else sigma, mean)
        if return_layers:
            record.append(LayerMoments(name, type(first).__name__, mean, var))
        rest = layers[entry + 1 :]
    cov = None  # the units' covariance (B, D, D), once a layer has correlated them (covariance != "diagonal")
    index = 0
    while index < len(rest):
        name, layer = rest[index]
        following = rest[index + 1][1] if index + 1 < len(rest) else None
        prerelu = rules.pool == "clark-prerelu" and isinstance(layer, nn.ReLU) and isinstance(following, nn.MaxPool2d)
        # a ReLU right before a max-pool, the ReLU's own output not wanted: both rules in one call (one fused kernel
        # for the moment ReLU and Clark's 2x2 pool, where noiselab.native runs)
        pair = not prerelu and not return_layers and covariance == "diagonal" and isinstance(layer, nn.ReLU) and \
            isinstance(following, nn.MaxPool2d)
        if prerelu and return_layers:  # the ReLU's own output, for the record (the explorer); not on the way on
            record.append(LayerMoments(name, type(layer).__name__, *relu_moments(mean, var, rules.relu)))
        if covariance != "diagonal" and (cov is not None or _correlates(following if prerelu else layer)):
            if prerelu:  # the max over the ReLU's inputs first, then the ReLU (below)
                mean, cov = _covariance_step(rest[index + 1][0], following, mean, var, cov, rules, covariance)
                var = diagonal(cov).reshape(mean.shape)
            mean, cov = _covariance_step(name, layer, mean, var, cov, rules, covariance)
            var = diagonal(cov).reshape(mean.shape)
        elif prerelu:
            # max_j ReLU(z_j) = ReLU(max_j z_j): Clark's max over the ReLU's inputs, Gaussians (exactly so, and
            # independent, where the noise enters), then the ReLU rule on one Gaussian per window
            mean, var = relu_moments(*_maxpool2d(following, mean, var, rules), rules.relu)
        elif pair:
            mean, var = relu_maxpool_moments(mean, var, rules.relu, rules.pool, following.kernel_size,
                                             following.stride, following.padding, following.dilation,
                                             following.ceil_mode)
        else:
            mean, var = _rule_for(layer)(layer, mean, var, rules)
        if prerelu or pair:
            name, layer, index = rest[index + 1][0], following, index + 1
        if return_layers:
            record.append(LayerMoments(name, type(layer).__name__, mean, var))
        index += 1
    if cov is not None:  # symmetric to rounding on the way: exactly so at the output
        return CorrelatedGaussian(mean, var, (cov + cov.transpose(1, 2)) / 2), record
    if covariance != "diagonal":  # no layer correlated the units: their covariance is diagonal
        return CorrelatedGaussian(mean, var, torch.diag_embed(var.flatten(1))), record
    return Gaussian(mean, var), record


# covariance="full": the largest covariance one example may take (bytes, at the widest layer), and the memory a
# batch's chunk aims at (a ReLU's rule holds several tensors of the covariance's size at once).
MAX_COVARIANCE_BYTES = 1 << 28
COVARIANCE_CHUNK_BYTES = 1 << 31
_COVARIANCE_TEMPORARIES = 8


def covariance_width(layers: list[tuple[str, nn.Module]], x: Tensor, noise_at: str = "preact") -> tuple[int, str]:
    """The largest number of units D whose (D, D) covariance (or a matrix as large) covariance="full" keeps per
    example, and the layer where it does: the outputs of every layer from the first one that correlates the units (a
    linear map after the noise entry, or an overlapping max-pool) on, that layer's input where it is a convolution or
    an average pool (its matrix is read off an identity that size), and the first level of each max-pool's tree.
    Shapes from one example of x's, without gradients."""
    start = 0 if noise_at == "input" else noise_entry(layers) + 1
    width, where, correlated = 0, "", False
    with torch.no_grad():
        h = torch.zeros((1, *x.shape[1:]), dtype=x.dtype, device=x.device)
        for index, (name, layer) in enumerate(layers):
            before = h
            h = layer(h)
            sizes = []
            if index >= start and not correlated and _correlates(layer):
                correlated = True
                if not isinstance(layer, nn.Linear):  # a pool's input made a full covariance; a map's identity
                    sizes.append(before[0].numel())
            if correlated:
                sizes.append(h[0].numel())
                if isinstance(layer, nn.MaxPool2d):  # the tree's first level: ceil(K / 2) nodes per window
                    kernel = _pair(layer.kernel_size)
                    sizes.append(h[0].numel() * -(-(kernel[0] * kernel[1]) // 2))
            for size in sizes:
                if size > width:
                    width, where = size, name
    return width, where


def propagate(
    model: nn.Module,
    x: Tensor,
    sigma: float | Tensor,
    relu: str = "paper",
    pool: str = "paper",
    return_layers: bool = False,
    noise_at: str = "preact",
    covariance: str = "diagonal",
):
    """Propagate N(0, sigma^2) noise, added to the first layer's pre-activation, through `model` in closed form.

    Args:
        model: an nn.Sequential of Conv2d, Linear, ReLU, MaxPool2d, AvgPool2d, Flatten, Dropout, Identity.
        x: a batch of inputs, (B, ...) as the model expects, float32 or float64.
        sigma: the noise standard deviation, a float >= 0 or a 0-dim tensor (it may require grad).
        relu: "paper" (mode/Laplace approximation) or "moment" (exact moment matching).
        pool: "paper" (max of means, variance of the winner), "clark" (Clark's moment-matched max) or
            "clark-prerelu" (Clark's max taken before a ReLU that comes right before the pool: the two commute, and
            the max then meets Gaussians, not moment-matched censored variables; closer to sampling,
            docs/propagation.md, and cheaper: the ReLU rule runs on the pooled activations).
        return_layers: also return the Gaussian after every layer from the noise entry on.
        noise_at: "preact" (the paper: the first Conv2d/Linear's output) or "input" (x + noise, as in randomized
            smoothing; the first layer then carries sigma^2 * sum of its squared weights).
        covariance: "diagonal" (the paper's and every moment-propagation codebase's: the units entering each layer
            are taken as independent), "full" (every pair of units' covariance is carried from the first layer that
            correlates them on, noiselab.covariance; much closer to sampling, docs/propagation.md, and far dearer:
            a (D, D) matrix per example at each layer) or "full-linear" (the same, the ReLU's cross-covariances to
            first order in the correlation). Without gradients the batch is taken in chunks so the covariances fit in
            memory; with them every chunk's graph is kept (noiselab.train checks a batch's memory before training).

    Returns:
        Gaussian(mean, var) of the output, each (B, classes); with covariance="full"/"full-linear" a
        CorrelatedGaussian, which also has `.cov`, the outputs' covariance (B, classes, classes); with
        return_layers=True, a pair (Gaussian, list[LayerMoments]).
    """
    _check_rule(relu, RELU_RULES, "relu")
    _check_rule(pool, POOL_RULES, "pool")
    check_sigma(sigma)
    check_noise_at(noise_at)
    check_covariance_mode(covariance)
    layers = sequential_layers(model)
    check_input(model, x)
    rules = Rules(relu, pool)
    if covariance == "diagonal":
        output, record = propagate_unchecked(layers, x, sigma, rules, return_layers, noise_at)
        return (output, record) if return_layers else output
    width, where = covariance_width(layers, x, noise_at)
    per_example = width * width * x.element_size()
    if per_example > MAX_COVARIANCE_BYTES:
        raise ValueError(f"covariance={covariance!r} would keep a {width} x {width} covariance per example after layer "
                         f"{where!r} ({per_example / 2**20:,.0f} MiB, more than {MAX_COVARIANCE_BYTES >> 20} MiB): "
                         "use covariance='diagonal' for this model" +
                         (", or noise_at='preact'" if noise_at == "input" else ""))
    chunk = max(1, COVARIANCE_CHUNK_BYTES // max(per_example * _COVARIANCE_TEMPORARIES, 1))
    count = x.shape[0]
    if count == 0:  # an empty batch: one example's shapes, none of its values
        x = torch.zeros((1, *x.shape[1:]), dtype=x.dtype, device=x.device)
    parts = [propagate_unchecked(layers, x[start : start + chunk], sigma, rules, return_layers, noise_at,
                                 covariance=covariance) for start in range(0, x.shape[0], chunk)]
    output = CorrelatedGaussian(*(torch.cat([part[0][i] for part in parts])[:count] for i in range(2)),
                                torch.cat([part[0].cov for part in parts])[:count])
    if not return_layers:
        return output
    record = [LayerMoments(first.name, first.kind, torch.cat([part[1][i].mean for part in parts])[:count],
                           torch.cat([part[1][i].var for part in parts])[:count])
              for i, first in enumerate(parts[0][1])]
    return output, record


class _RunningMoments:
    """Mean and variance over samples, merged chunk by chunk (Chan et al.'s parallel update), which stays
    accurate in float32 because each chunk is centred on its own mean before squaring."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, chunk: Tensor) -> None:  # chunk: (S, B, ...), S samples
        n = chunk.shape[0]
        chunk_mean = chunk.mean(0)
        chunk_m2 = ((chunk - chunk_mean) ** 2).sum(0)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, chunk_mean, chunk_m2
            return
        total = self.count + n
        delta = chunk_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + chunk_m2 + delta**2 * (self.count * n / total)
        self.count = total

    def result(self, dtype: torch.dtype) -> Gaussian:
        var = self.m2 / max(self.count - 1, 1)  # unbiased
        return Gaussian(self.mean.to(dtype), var.to(dtype))


# Monte Carlo runs at most this many activation elements per layer at once (64 MB in float32).
MC_CHUNK_ELEMENTS = 1 << 24


@torch.no_grad()
def monte_carlo(
    model: nn.Module,
    x: Tensor,
    sigma: float | Tensor,
    samples: int,
    seed: int | None = None,
    return_layers: bool = False,
    noise_at: str = "preact",
):
    """The same first-layer noise injected by sampling: the empirical mean and (unbiased) variance over `samples` draws.

    Draws are run in chunks, so memory stays bounded for any `samples`. With a seed the result is
    reproducible on the same device. Returns Gaussian(mean, var), or (Gaussian, list[LayerMoments])
    with return_layers=True, with the same layer names as propagate(). noise_at as in propagate().
    """
    check_positive_int(samples, "samples")
    check_sigma(sigma)
    check_noise_at(noise_at)
    layers = sequential_layers(model)
    check_input(model, x)
    sigma_value = float(sigma.detach()) if isinstance(sigma, Tensor) else float(sigma)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=x.device).manual_seed(seed)

    if noise_at == "input":
        pre, after, names = x, layers, list(layers)
    else:
        entry = noise_entry(layers)
        pre = x
        for _, layer in layers[: entry + 1]:
            pre = layer(pre)  # (B, ...) the first pre-activation, computed once
        after = layers[entry + 1 :]
        names = [layers[entry]] + after
    batch = pre.shape[0]
    per_sample = max(pre[0].numel() * batch, 1)
    chunk_samples = max(1, min(samples, MC_CHUNK_ELEMENTS // per_sample))

    stats = [_RunningMoments() for _ in names] if return_layers else [_RunningMoments()]
    done = 0
    while done < samples:
        n = min(chunk_samples, samples - done)
        noise = torch.randn((n,) + tuple(pre.shape), generator=generator, device=pre.device, dtype=pre.dtype)
        h = (pre.unsqueeze(0) + sigma_value * noise).flatten(0, 1)  # (n*B, ...)
        outputs = [h] if return_layers and noise_at == "preact" else []  # the noisy pre-activation is a layer's
        for _, layer in after:
            h = layer(h)
            if return_layers:
                outputs.append(h)
        if not return_layers:
            outputs = [h]  # only the network's output is kept
        for stat, out in zip(stats, outputs):
            stat.add(out.view((n, batch) + tuple(out.shape[1:])))
        done += n

    if not return_layers:
        return stats[0].result(x.dtype)
    record = []
    for (name, layer), stat in zip(names, stats):
        mean, var = stat.result(x.dtype)
        record.append(LayerMoments(name, type(layer).__name__, mean, var))
    return Gaussian(record[-1].mean, record[-1].var), record
