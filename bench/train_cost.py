"""Benchmark 1 of issue 6: training cost per step of each method, same model, data and batch size, one run.

    .venv/bin/python bench/train_cost.py                     # LeNet5, batch 128, on CUDA when present
    .venv/bin/python bench/train_cost.py --device cpu --steps 30 --out bench/results/train_cost-cpu.json

Targets on the H100 (issue 6): noise with the paper's rules <= 1.5x vanilla; with moment/clark <= 2.5x; PGD-10 AT,
the reference the method claims to beat, ~8x. On a CPU only the ratios mean anything (measured side by side here).

Each method trains through noiselab.train.train (the code users run) on the embedded MNIST digits; the time of a
step is taken between progress callbacks (after the optimizer step and a host sync, since the callback reads the
loss), over `--steps` steps after `--warmup` steps, so start-up and the epoch-end evaluation are not counted.
The methods are interleaved over `--rounds` rounds and the median per method reported, so a machine that slows
down for a while does not favour one method.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from timing import fused_kernels  # noqa: E402

from noiselab import data as data_module  # noqa: E402
from noiselab.experiments.records import environment, write_json  # noqa: E402
from noiselab.train import TrainConfig, resolve_device, train  # noqa: E402

METHODS = {
    "vanilla": {"method": "vanilla"},
    "noise (paper rules)": {"method": "noise", "relu": "paper", "pool": "paper"},
    "noise (moment/clark)": {"method": "noise", "relu": "moment", "pool": "clark"},
    "noise (moment/clark, torch ops)": {"method": "noise", "relu": "moment", "pool": "clark", "native": False},
    "noise (moment/clark-prerelu)": {"method": "noise", "relu": "moment", "pool": "clark-prerelu"},
    "sampled": {"method": "sampled"},
    "fgsm_rs": {"method": "fgsm_rs"},
    "pgd_at (10 steps)": {"method": "pgd_at", "pgd_steps": 10},
}


def seconds_per_step(config: TrainConfig, data, warmup: int, steps: int) -> float:
    stamps: list[float] = []

    def progress(p) -> None:
        if config.device != "cpu" and torch.cuda.is_available():
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    train(config, data=data, progress=progress)
    timed = stamps[warmup : warmup + steps + 1]
    return (timed[-1] - timed[0]) / (len(timed) - 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", nargs="+", default=None, metavar="METHOD",
                        help=f"time only these rows (vanilla is always timed, for the ratios); of {list(METHODS)}")
    parser.add_argument("--out", default=None, help="JSON file (default bench/results/train_cost-<device>.json)")
    args = parser.parse_args(argv)

    methods = METHODS
    if args.only:
        unknown = sorted(set(args.only) - set(METHODS))
        if unknown:
            parser.error(f"unknown --only {unknown}; choose from {list(METHODS)}")
        methods = {name: METHODS[name] for name in METHODS if name == "vanilla" or name in args.only}
    device = resolve_device(args.device)
    if device.type != "cpu":  # noiselab.native's kernels are CPU kernels: elsewhere both rows would be the same
        methods = {name: settings for name, settings in methods.items() if settings.get("native", True)}
    data = data_module.load(device=device)
    limit = args.batch_size * (args.warmup + args.steps + 1)  # one epoch holds every timed step
    if limit > data.train_images.shape[0]:
        parser.error(f"--warmup + --steps need {limit} training digits; the embedded set has "
                     f"{data.train_images.shape[0]}")
    base = TrainConfig(model=args.model, batch_size=args.batch_size, epochs=1, train_limit=limit, sigma=0.5,
                       eps=0.3, device=str(device))
    times: dict[str, list[float]] = {name: [] for name in methods}
    for round_ in range(args.rounds):
        for name, overrides in methods.items():
            overrides = dict(overrides)
            native = overrides.pop("native", True)
            config = TrainConfig(**{**base.__dict__, **overrides})
            with fused_kernels(native):
                times[name].append(seconds_per_step(config, data, args.warmup, args.steps))
            print(f"round {round_ + 1}/{args.rounds} {name:28s} {1000 * times[name][-1]:8.2f} ms/step",
                  file=sys.stderr, flush=True)

    vanilla = statistics.median(times["vanilla"])
    rows = []
    print(f"\n{args.model}, batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds on {device}")
    print(f"{'method':30s} {'ms/step':>9s} {'epoch of 60k (s)':>17s} {'x vanilla':>10s}")
    for name in methods:
        median = statistics.median(times[name])
        epoch = median * 60000 / args.batch_size
        rows.append({"method": name, "seconds_per_step": median, "all_rounds": times[name],
                     "full_mnist_epoch_seconds": epoch, "ratio_to_vanilla": median / vanilla})
        print(f"{name:30s} {1000 * median:9.2f} {epoch:17.1f} {median / vanilla:10.2f}")
    out = Path(args.out) if args.out else REPO / "bench" / "results" / f"train_cost-{device.type}.json"
    write_json(out, {"benchmark": "train_cost", "config": vars(args), "environment": environment(device),
                     "rows": rows})
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
