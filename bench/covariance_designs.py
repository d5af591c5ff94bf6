"""Issue 15's first measurement: where can the logits' correlations come from, and how close does each design get?

The closed form's diagonal Gaussian drops every covariance. Two linear designs for the logits' covariance, beside
today's diagonal and beside Monte Carlo (the sampled mean and covariance of the logits, and the sampled frequencies
of Y_k > Y_i):

- jacobian: the network linearised at the noise-free first pre-activation, Cov = σ² J Jᵀ (J: the logits' Jacobian
  in that pre-activation; ReLU's slope 1[x > 0], max-pool's winner, at the mean).
- expected-slopes: the same product with each layer's *expected* local derivative under the propagated Gaussian
  (moment/Clark rules): a ReLU's slope Φ(μ/s), a max-pool's inputs weighted by the probability that each wins its
  window (the tree of pairwise Clark maxima that pool="clark" uses). Closed form, no sampling.

Each gives a covariance with its own diagonal; a "hybrid" keeps its correlations and takes the variances from the
moment/Clark rules (so the diagonal is the closed form's). Errors, per design, averaged over the images:
max |P(Y_k > Y_i) - sampled| over pairs, the logits' standard deviations (relative), and the correlations (absolute).

    python bench/covariance_designs.py                       # untrained LeNet5, sigma 0.5, 8 images
    python bench/covariance_designs.py --model starter:vanilla --sigma 0.8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from noiselab import data as data_module  # noqa: E402
from noiselab.loss import win_probabilities  # noqa: E402
from noiselab.models import LeNet5  # noqa: E402
from noiselab.moments import VAR_FLOOR, max2_moments, normal_cdf  # noqa: E402
from noiselab.propagate import Rules, _rule_for, first_preactivation, noise_entry, propagate, sequential_layers  # noqa: E402


def _windows(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The four inputs of each 2x2, stride-2 window: a, b (top row), c, d (bottom row), each (B, C, H/2, W/2)."""
    t = t[..., : t.shape[-2] // 2 * 2, : t.shape[-1] // 2 * 2]
    return t[..., 0::2, 0::2], t[..., 0::2, 1::2], t[..., 1::2, 0::2], t[..., 1::2, 1::2]


def _clark_pair(mean_a, var_a, mean_b, var_b):
    """P(a wins) and Clark's moments of max(a, b) for independent Gaussians a, b (noiselab.moments.max2_moments)."""
    p = normal_cdf((mean_a - mean_b) / (var_a + var_b).clamp_min(VAR_FLOOR).sqrt())
    return (p, *max2_moments(mean_a, var_a, mean_b, var_b))


def pool_weights(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """(B, C, H/2, W/2, 4): the probability that each input of a window wins it, along pool='clark''s tree."""
    (ma, mb, mc, md), (va, vb, vc, vd) = _windows(mean), _windows(var)
    p_ab, m_ab, v_ab = _clark_pair(ma, va, mb, vb)
    p_cd, m_cd, v_cd = _clark_pair(mc, vc, md, vd)
    p_top, _, _ = _clark_pair(m_ab, v_ab, m_cd, v_cd)
    return torch.stack([p_ab * p_top, (1 - p_ab) * p_top, p_cd * (1 - p_top), (1 - p_cd) * (1 - p_top)], -1)


class _Weighted2x2(nn.Module):
    """A max-pool replaced by the fixed linear map sum_j w_j x_j over each window."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.weights = weights

    def forward(self, x):
        return (torch.stack(_windows(x), -1) * self.weights).sum(-1)


class _Slope(nn.Module):
    def __init__(self, slope: torch.Tensor):
        super().__init__()
        self.slope = slope

    def forward(self, x):
        return x * self.slope


def linear_rest(layers, pre: torch.Tensor, sigma: float, expected: bool) -> list[nn.Module]:
    """The layers after the noise entry as fixed linear maps: slopes and pool weights at the mean (expected=False)
    or their expectations under the propagated moment/Clark Gaussian (expected=True)."""
    rules = Rules("moment", "clark")
    mean, var = pre, torch.full_like(pre, sigma**2)
    out = []
    for _, layer in layers[noise_entry(layers) + 1:]:
        if isinstance(layer, nn.ReLU):
            slope = normal_cdf(mean / var.clamp_min(1e-12).sqrt()) if expected else (mean > 0).to(mean.dtype)
            out.append(_Slope(slope))
        elif isinstance(layer, nn.MaxPool2d):
            if expected:
                weights = pool_weights(mean, var)
            else:
                winner = torch.stack(_windows(mean), -1).argmax(-1)
                weights = F.one_hot(winner, 4).to(mean.dtype)
            out.append(_Weighted2x2(weights))
        elif isinstance(layer, (nn.Conv2d, nn.Linear)):
            out.append(_NoBias(layer))
        else:
            out.append(layer)
        mean, var = _rule_for(layer)(layer, mean, var, rules)
    return out


class _NoBias(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, self.layer.weight, None)
        return F.linear(x, self.layer.weight)


def linear_covariance(maps: list[nn.Module], pre: torch.Tensor, sigma: float) -> torch.Tensor:
    """σ² J Jᵀ of the composed linear maps, (B, n, n): J from one backward pass per logit."""
    x = torch.zeros_like(pre, requires_grad=True)
    h = x
    for layer in maps:
        h = layer(h)
    rows = []
    for k in range(h.shape[1]):
        (grad,) = torch.autograd.grad(h[:, k].sum(), x, retain_graph=True)
        rows.append(grad.flatten(1))
    jacobian = torch.stack(rows, 1)  # (B, n, D)
    return sigma**2 * jacobian @ jacobian.transpose(1, 2)


def sampled(layers, pre, sigma, draws, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = []
    with torch.no_grad():
        for _ in range(draws // 1000):
            h = (pre.unsqueeze(0) + sigma * torch.randn((1000,) + tuple(pre.shape), generator=generator)).flatten(0, 1)
            for _, layer in layers[noise_entry(layers) + 1:]:
                h = layer(h)
            logits.append(h.view(1000, pre.shape[0], -1).double())
    y = torch.cat(logits)  # (S, B, n)
    mean = y.mean(0)
    centred = y - mean
    cov = torch.einsum("sbi,sbj->bij", centred, centred) / (y.shape[0] - 1)
    wins = (y.unsqueeze(3) > y.unsqueeze(2)).double().mean(0) * (1 - torch.eye(y.shape[2], dtype=torch.float64))
    return mean, cov, wins


def errors(mean, cov, reference) -> dict:
    ref_mean, ref_cov, ref_wins, labels = reference
    mean, cov = mean.detach(), cov.detach()
    var = cov.diagonal(dim1=1, dim2=2)
    wins = win_probabilities(mean.double(), var.double(), cov.double())
    std, ref_std = var.sqrt(), ref_cov.diagonal(dim1=1, dim2=2).sqrt()
    corr = cov / (std.unsqueeze(2) * std.unsqueeze(1)).clamp_min(1e-12)
    ref_corr = ref_cov / (ref_std.unsqueeze(2) * ref_std.unsqueeze(1)).clamp_min(1e-12)
    off = 1 - torch.eye(mean.shape[1], dtype=torch.float64)
    rows = torch.arange(len(labels))
    true_row = (wins[rows, labels] - ref_wins[rows, labels]).abs().amax(1)  # P(Y_true > Y_i), the loss's term
    return {"win_probability_max_error": float((wins - ref_wins).abs().amax((1, 2)).mean()),
            "true_class_win_max_error": float(true_row.mean()),
            "std_relative_error": float(((std - ref_std).abs() / ref_std).mean()),
            "correlation_abs_error": float(((corr - ref_corr).abs() * off).sum((1, 2)).mean() / off.sum())}


def hybrid(cov: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """cov's correlations with the variances var."""
    std = cov.diagonal(dim1=1, dim2=2).clamp_min(1e-12).sqrt()
    corr = cov / (std.unsqueeze(2) * std.unsqueeze(1))
    scale = var.sqrt()
    return corr * scale.unsqueeze(2) * scale.unsqueeze(1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--draws", type=int, default=20_000)
    parser.add_argument("--model", default="untrained", help="untrained (LeNet5, seed 0) or a checkpoint path")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.model == "untrained":
        model = LeNet5().eval()
    else:
        from noiselab.checkpoint import load_model

        model = load_model(args.model)[0].eval()
    x, labels = data_module.load().tensors("test", limit=args.images)  # the embedded digits
    x = data_module.to_float(x)
    layers = sequential_layers(model)
    with torch.no_grad():
        pre = first_preactivation(layers, x)
    start = time.perf_counter()
    reference = (*sampled(layers, pre, args.sigma, args.draws, seed=0), labels.long())
    seconds = {"monte_carlo": time.perf_counter() - start}
    report = {}
    start = time.perf_counter()
    out = propagate(model, x, args.sigma, relu="moment", pool="clark")
    seconds["diagonal"] = time.perf_counter() - start
    mean, var = out.mean.double(), out.var.double()
    report["diagonal (today)"] = errors(mean, torch.diag_embed(var), reference)
    linear = {}
    for name, expected in (("jacobian", False), ("expected-slopes", True)):
        start = time.perf_counter()
        cov = linear_covariance(linear_rest(layers, pre, args.sigma, expected), pre, args.sigma).double()
        seconds[name] = time.perf_counter() - start + seconds["diagonal"] * expected
        report[name] = errors(mean, cov, reference)
        report[f"{name} hybrid"] = errors(mean, hybrid(cov, var), reference)
        linear[name] = cov
    # the correlations alone: Monte Carlo's means and variances, with each design's correlations (or none)
    ref_mean, ref_var = reference[0], reference[1].diagonal(dim1=1, dim2=2)
    report["MC mean+var, no correlations"] = errors(ref_mean, torch.diag_embed(ref_var), reference)
    for name, cov in linear.items():
        report[f"MC mean+var, {name} corr."] = errors(ref_mean, hybrid(cov, ref_var), reference)
    report["MC mean+var+cov (the noise floor)"] = errors(ref_mean, reference[1], reference)
    print(f"{args.model}, σ = {args.sigma}, {args.images} images, {args.draws:,} draws for the reference")
    print(f"{'design':36} {'P(Yk>Yi) max err':>17} {'P(Ytrue>Yi)':>12} {'std rel err':>12} {'corr abs err':>13}")
    for name, row in report.items():
        print(f"{name:36} {row['win_probability_max_error']:17.4f} {row['true_class_win_max_error']:12.4f} "
              f"{row['std_relative_error']:12.3f} {row['correlation_abs_error']:13.3f}")
    print("seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in seconds.items()))
    if args.out:
        args.out.write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)}, "errors": report,
                                        "seconds": seconds}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
