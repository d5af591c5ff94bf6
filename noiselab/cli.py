"""The `noiselab` command.

    noiselab demo [--model lenet5] [--sigma 0.5] [--samples 4000] [--seed 0]

`demo` shows the core at work, offline, in seconds on a CPU: the two ReLU rules against the exact
moments of the censored Gaussian, then first-layer noise propagated through a network in closed form
under each rule set, layer by layer, beside Monte Carlo sampling of the same noise.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from .models import MODELS, build
from .moments import relu_moments
from .propagate import monte_carlo, propagate


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _relative_error(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    return float((estimate - reference).abs().mean() / reference.abs().mean().clamp_min(1e-12))


@torch.no_grad()
def demo(model_name: str, sigma: float, samples: int, seed: int, out=sys.stdout) -> None:
    print("ReLU(Z), Z ~ N(mu, 1): the two rules against the exact moments", file=out)
    print(f"{'mu':>6} {'exact mean':>11} {'paper mean':>11} {'exact var':>10} {'paper var':>10}", file=out)
    mu = torch.tensor([-3.5, -2.0, -1.0, 0.0, 1.0, 2.0, 3.5], dtype=torch.float64)
    ones = torch.ones_like(mu)
    exact_mean, exact_var = relu_moments(mu, ones, "moment")
    paper_mean, paper_var = relu_moments(mu, ones, "paper")
    for row in zip(mu, exact_mean, paper_mean, exact_var, paper_var):
        print(f"{row[0]:6.1f} {row[1]:11.4f} {row[2]:11.4f} {row[3]:10.4f} {row[4]:10.4f}", file=out)

    torch.manual_seed(seed)
    model = build(model_name).eval()
    x = torch.rand(4, *model.input_shape)  # an untrained model and random images: the rules, not a task
    print(
        f"\n{type(model).__name__} (untrained, seed {seed}), 4 random inputs, sigma = {sigma}: "
        f"closed form vs Monte Carlo ({samples} samples)",
        file=out,
    )
    start = time.perf_counter()
    reference, reference_layers = monte_carlo(model, x, sigma, samples, seed=seed, return_layers=True)
    mc_seconds = time.perf_counter() - start
    rule_sets = [("paper", "paper"), ("moment", "paper"), ("paper", "clark"), ("moment", "clark")]
    results = {}
    for relu, pool in rule_sets:
        start = time.perf_counter()
        output, layers = propagate(model, x, sigma, relu=relu, pool=pool, return_layers=True)
        results[(relu, pool)] = (output, layers, time.perf_counter() - start)

    header = " ".join(f"{r + '/' + p:>13}" for r, p in rule_sets)
    print(f"relative error of the propagated mean / variance, per layer (relu/pool rules)\n{'layer':<14} {header}",
          file=out)
    for i, ref in enumerate(reference_layers):
        cells = []
        for key in rule_sets:
            layer = results[key][1][i]
            cells.append(f"{_relative_error(layer.mean, ref.mean):6.3f}/{_relative_error(layer.var, ref.var):6.3f}")
        print(f"{ref.name + ' ' + ref.kind:<14} " + " ".join(f"{c:>13}" for c in cells), file=out)
    timing = ", ".join(f"{r}/{p} {results[(r, p)][2] * 1e3:.1f} ms" for r, p in rule_sets)
    print(f"\ntime: Monte Carlo {mc_seconds:.2f} s; closed form {timing}", file=out)
    predicted = model(x).argmax(1)
    agree = (reference.mean.argmax(1) == predicted).float().mean()
    print(f"expectation model's class = Monte Carlo mean's class for {agree:.0%} of the inputs", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="noiselab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="the closed forms beside Monte Carlo, on the CPU, offline")
    demo_parser.add_argument("--model", choices=sorted(MODELS), default="lenet5")
    demo_parser.add_argument("--sigma", type=_nonnegative_float, default=0.5, help="noise std (default 0.5)")
    demo_parser.add_argument("--samples", type=_positive_int, default=4000, help="Monte Carlo draws (default 4000)")
    demo_parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.model, args.sigma, args.samples, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
