"""The randomized defense: the same network with its first-layer noise N(0, sigma^2) kept at inference.

    >>> prediction = randomized_predict(model, x, sigma=0.6, samples=256, seed=0)
    >>> prediction.labels, prediction.top_interval()           # majority vote, and how sure the vote is
    >>> randomized_accuracy(model, x, y, sigma=0.6, samples=256, seed=0)   # with a 95% confidence interval
    >>> closed_form_predict(model, x, sigma=0.6)               # the class with the largest propagated mean

This is the PixelDP-like target of the paper's Sec. 4: every prediction is a vote over `samples` noisy passes,
the noise added where noise training adds it (the first Conv2d/Linear pre-activation). `noisy_logits` is the
differentiable single building block; attacks on the defense (noiselab.attacks.eot, .closed_form) use it or the
closed form.

Two sources of randomness meet in an accuracy: which test examples were drawn, and the defense's own draws.
`randomized_accuracy` reports a Wilson interval over the examples, and, for the defense's own randomness, the
fraction of examples whose vote is undecided (the top class's vote share not separated from the runner-up's at
the given confidence). With enough samples that fraction is small, and the interval is the test set's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_input, check_positive_int, check_sigma
from .propagate import MC_CHUNK_ELEMENTS, first_preactivation, noise_entry, propagate, sequential_layers

VOTES = ("majority", "mean_softmax")


def _check_samples(samples) -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1 (noisy passes per prediction), got {samples!r}")
    return samples


def _sigma_float(sigma) -> float:
    check_sigma(sigma)
    return float(sigma.detach()) if isinstance(sigma, Tensor) else float(sigma)


def noisy_passes(layers: list, pre: Tensor, sigma: float, draws: int, generator: torch.Generator | None) -> Tensor:
    """(draws, B, classes): `draws` draws of noise added to the first pre-activation `pre`, through the rest."""
    noise = torch.randn((draws,) + tuple(pre.shape), generator=generator, device=pre.device, dtype=pre.dtype)
    h = (pre.unsqueeze(0) + sigma * noise).flatten(0, 1)  # (draws * B, ...)
    for _, layer in layers[noise_entry(layers) + 1 :]:
        h = layer(h)
    return h.view(draws, pre.shape[0], -1)


def noisy_logits_unchecked(layers: list, x: Tensor, sigma: float, draws: int,
                           generator: torch.Generator | None = None) -> Tensor:
    """(draws, B, classes) logits of `draws` noisy passes; differentiable with respect to x and the weights."""
    return noisy_passes(layers, first_preactivation(layers, x), sigma, draws, generator)


def noisy_logits(model: nn.Module, x: Tensor, sigma: float, draws: int = 1,
                 generator: torch.Generator | None = None) -> Tensor:
    """Logits of `draws` passes of x through `model` with fresh first-layer noise each: (draws, B, classes)."""
    sigma = _sigma_float(sigma)
    check_positive_int(draws, "draws")
    check_input(model, x)
    return noisy_logits_unchecked(sequential_layers(model), x, sigma, draws, generator)


def wilson_interval(successes: Tensor, trials: int | Tensor, confidence: float = 0.95) -> tuple[Tensor, Tensor]:
    """Wilson's score interval for a binomial proportion (elementwise): good at proportions near 0 and 1."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    n = torch.as_tensor(trials, dtype=torch.float64)
    successes = torch.as_tensor(successes)
    if bool((n < 1).any()) or bool((successes < 0).any()) or bool((successes > n).any()):
        raise ValueError("wilson_interval needs trials >= 1 and 0 <= successes <= trials")
    z = math.sqrt(2) * torch.erfinv(torch.tensor(confidence, dtype=torch.float64)).item()
    p = successes.double() / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * torch.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # exact ends at 0 and n successes (the formula gives them up to rounding)
    low = torch.where(successes == 0, torch.zeros_like(centre), (centre - half).clamp(0, 1))
    high = torch.where(successes == n, torch.ones_like(centre), (centre + half).clamp(0, 1))
    return low, high


@dataclass
class RandomizedPrediction:
    labels: Tensor   # (B,) the defense's predictions
    counts: Tensor   # (B, classes) votes per class over the noisy passes (majority vote)
    scores: Tensor   # (B, classes) vote shares (majority) or mean softmax (mean_softmax)
    samples: int

    def top_interval(self, confidence: float = 0.95) -> tuple[Tensor, Tensor]:
        """A Wilson interval for the winning class's vote share, per example: narrows as samples grow."""
        top = self.counts.gather(1, self.labels.unsqueeze(1)).squeeze(1)
        return wilson_interval(top, self.samples, confidence)

    def undecided(self, confidence: float = 0.95) -> Tensor:
        """(B,) bool: the winner's interval overlaps the runner-up's, so another set of draws could flip the vote."""
        ordered = self.counts.sort(1, descending=True).values
        top_low, _ = wilson_interval(ordered[:, 0], self.samples, confidence)
        _, second_high = wilson_interval(ordered[:, 1], self.samples, confidence)
        return top_low <= second_high


@torch.no_grad()
def randomized_predict(
    model: nn.Module,
    x: Tensor,
    sigma: float,
    samples: int = 256,
    vote: str = "majority",
    seed: int | None = None,
) -> RandomizedPrediction:
    """The randomized defense's prediction: a vote over `samples` noisy passes (majority, or mean softmax)."""
    sigma = _sigma_float(sigma)
    _check_samples(samples)
    if vote not in VOTES:
        raise ValueError(f"vote must be one of {VOTES}, got {vote!r}")
    check_input(model, x)
    layers = sequential_layers(model)
    generator = torch.Generator(device=x.device).manual_seed(seed) if seed is not None else None
    pre = first_preactivation(layers, x)
    # the first pre-activation is the widest activation of these networks: its size bounds a chunk's memory
    chunk = max(1, min(samples, MC_CHUNK_ELEMENTS // max(1, pre.numel())))
    counts = probabilities = None
    done = 0
    while done < samples:
        n = min(chunk, samples - done)
        logits = noisy_passes(layers, pre, sigma, n, generator)  # (n, B, classes)
        votes = F.one_hot(logits.argmax(2), logits.shape[2]).sum(0)
        soft = logits.softmax(2).sum(0)
        counts = votes if counts is None else counts + votes
        probabilities = soft if probabilities is None else probabilities + soft
        done += n
    scores = counts.double() / samples if vote == "majority" else probabilities.double() / samples
    # ties go to the lowest class index, as argmax does
    return RandomizedPrediction(scores.argmax(1), counts, scores, samples)


@dataclass
class AccuracyEstimate:
    accuracy: float
    low: float          # Wilson interval over the n examples, at `confidence`
    high: float
    n: int
    samples: int
    undecided: float    # fraction of examples whose vote the defense's own randomness could flip
    confidence: float = 0.95

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def randomized_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    sigma: float,
    samples: int = 256,
    vote: str = "majority",
    seed: int | None = 0,
    batch_size: int = 500,
    confidence: float = 0.95,
) -> AccuracyEstimate:
    """Accuracy of the randomized defense on (x, y), with a confidence interval; see the module docstring."""
    check_positive_int(batch_size, "batch_size")
    if not isinstance(x, Tensor) or x.dim() == 0 or x.shape[0] == 0:
        raise ValueError("x must be a non-empty batch of images (B, C, H, W)")
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],):
        raise ValueError(f"y must be a tensor of {x.shape[0]} class indices, got {getattr(y, 'shape', type(y))}")
    correct, undecided = [], []
    for start in range(0, x.shape[0], batch_size):
        chunk_seed = None if seed is None else seed + start
        prediction = randomized_predict(model, x[start : start + batch_size], sigma, samples, vote, chunk_seed)
        correct.append(prediction.labels == y[start : start + batch_size])
        undecided.append(prediction.undecided(confidence))
    correct_all, undecided_all = torch.cat(correct), torch.cat(undecided)
    n = int(correct_all.numel())
    hits = correct_all.sum()
    low, high = wilson_interval(hits, n, confidence)
    return AccuracyEstimate(float(hits) / n, float(low), float(high), n, samples,
                            float(undecided_all.float().mean()), confidence)


@torch.no_grad()
def closed_form_predict(model: nn.Module, x: Tensor, sigma: float, relu: str = "moment",
                        pool: str = "clark") -> Tensor:
    """The defense's closed-form counterpart: the class with the largest propagated output mean.

    With the paper's rules the propagated mean is the expectation model's output (sigma changes nothing); with
    the moment-matched rules (the default here) it moves with sigma, as the noisy network's average output does.
    """
    return propagate(model, x, sigma, relu=relu, pool=pool).mean.argmax(1)
