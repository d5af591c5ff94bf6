"""Benchmark 3 of issue 6: how many Monte Carlo samples match the closed form's error, and the closed form's speed-up.

    .venv/bin/python bench/closed_form_vs_mc.py                     # two starter LeNet5 models, 8 test digits, CPU
    .venv/bin/python bench/closed_form_vs_mc.py --images 64 --reference 100000 --max-samples 100000 --device cuda

Target (issue 6): the closed form >= 100x faster than Monte Carlo at equal error.

For each starter model (LeNet5 trained on the embedded digits) and rule set, at σ = `--sigma`:
  - reference: Monte Carlo with `--reference` draws (seed 0) of the output's mean and variance;
  - the closed form's error against it: relative L1 error of the mean and of the variance (as noiselab.layerwise);
  - Monte Carlo with n = 2, 4, 8, ... draws (other seeds, `--trials` of them, errors averaged) against the same
    reference, until its error is below the closed form's, for the mean and for the variance separately;
  - times of the closed form and of Monte Carlo at that n (median of `--timing-repeats`), and their ratio.
The reference's own sampling error is printed beside (the error of a second reference-sized draw): a closed-form
error below it cannot be resolved, and neither can the n that matches it.
What this measures is the closed form's *bias* (the diagonal and rule approximations) against sampling noise: a
rule that is far from the truth is matched by few samples, and its speed-up is then small. That is the honest
number for a user who wants the output distribution; a user who wants training speed reads train_cost.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from timing import timed  # noqa: E402

from noiselab import data as data_module  # noqa: E402
from noiselab.experiments.records import environment, write_json  # noqa: E402
from noiselab.layerwise import relative_error  # noqa: E402
from noiselab.propagate import monte_carlo, propagate  # noqa: E402
from noiselab.starter import load_starters  # noqa: E402
from noiselab.train import resolve_device  # noqa: E402

RULE_SETS = [("paper", "paper"), ("moment", "clark")]


def median_seconds(function, repeats: int, device: torch.device) -> float:
    return statistics.median(timed(device, function) for _ in range(repeats))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=["vanilla", "noise σ=0.8"], help="starter model names")
    parser.add_argument("--reference", type=int, default=4000, help="Monte Carlo draws of the reference")
    parser.add_argument("--trials", type=int, default=2, help="Monte Carlo runs averaged per n")
    parser.add_argument("--max-samples", type=int, default=4096)
    parser.add_argument("--timing-repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="JSON (default bench/results/closed_form_vs_mc-<device>.json)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    x, _ = data_module.load(device=device).tensors("test", limit=args.images)
    rows = []
    with torch.no_grad():
        for starter in load_starters(names=args.models):
            model = starter.model.to(device).eval()
            reference = monte_carlo(model, x, args.sigma, args.reference, seed=0)
            second = monte_carlo(model, x, args.sigma, args.reference, seed=1)
            floor = {"mean": relative_error(second.mean, reference.mean),
                     "var": relative_error(second.var, reference.var)}
            for relu, pool in RULE_SETS:
                closed = propagate(model, x, args.sigma, relu=relu, pool=pool)
                errors = {"mean": relative_error(closed.mean, reference.mean),
                          "var": relative_error(closed.var, reference.var)}
                closed_seconds = median_seconds(
                    lambda m=model, r=relu, p=pool: propagate(m, x, args.sigma, relu=r, pool=p), args.timing_repeats,
                    device)
                row = {"model": starter.name, "rules": f"{relu}/{pool}", "closed_error": errors,
                       "reference_noise": floor, "closed_seconds": closed_seconds}
                for moment in ("mean", "var"):
                    samples, matched = 2, None
                    while samples <= args.max_samples:
                        error = statistics.mean(
                            relative_error(getattr(monte_carlo(model, x, args.sigma, samples, seed=10 + t), moment),
                                           getattr(reference, moment)) for t in range(args.trials))
                        if error <= errors[moment]:
                            matched = samples
                            break
                        samples *= 2
                    mc_seconds = None if matched is None else median_seconds(
                        lambda m=model, n=matched: monte_carlo(m, x, args.sigma, n, seed=3), args.timing_repeats,
                        device)
                    row[f"samples_to_match_{moment}"] = matched
                    row[f"mc_seconds_{moment}"] = mc_seconds
                    row[f"speedup_{moment}"] = None if mc_seconds is None else mc_seconds / closed_seconds
                rows.append(row)
                speedups = ", ".join(
                    f"{m}: err {errors[m]:.3f} (ref noise {floor[m]:.3f}) = MC n={row[f'samples_to_match_{m}']} -> "
                    + (f"{row[f'speedup_{m}']:.0f}x" if row[f"speedup_{m}"] else f"> {args.max_samples} draws")
                    for m in ("mean", "var"))
                print(f"{starter.name:14s} {relu}/{pool:6s} {speedups}", flush=True)
    out = Path(args.out) if args.out else REPO / "bench" / "results" / f"closed_form_vs_mc-{device.type}.json"
    write_json(out, {"benchmark": "closed_form_vs_mc", "config": vars(args), "environment": environment(device),
                     "rows": rows})
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
