"""Issue 8: what the full reproduction grid costs in device-hours, and its wall time on 1, 8 and 64 devices.

    .venv/bin/python bench/sweep_cost.py --device cuda                 # on the GPU machine: the figures for docs
    .venv/bin/python bench/sweep_cost.py --device cpu --quick           # here: exercises it, CPU figures only

The grid is every cell of the sweeps behind fig4, fig5, fig6 and table1 and the sweep-shaped ablations (losses,
placement, sigmascale, recipe) at full size (noiselab.experiments.reproduce.sweep_grids: 234 cells; fig7,
attackloss and meanpath are not sweeps and are not in it). Cells that cost the same (same data shape, model,
method, batch size, PGD steps, rules, learnable σ, loss, noise placement, σ mode: σ and ε do not change the cost)
form one kind, and each kind is measured once on this device:
  - training: seconds per step through noiselab.train.train (bench/train_cost.py's timer, after warm-up),
    times the cell's exact step count (training examples / batch size, rounded up, times epochs);
  - the test-accuracy pass after each epoch, timed once and counted once per epoch;
  - the evaluation: every attack stage of the preset's suite at every ε > 0, timed on one batch and scaled to the
    preset's test examples. That is an upper bound: the shrinking pipeline attacks only the points still robust.
Synthetic images of each data set's shape stand in for the data (the time of a step does not depend on the
pixels), so this runs without the data sets. A cell's estimate = training + epoch passes + evaluation.

Wall time on N devices (one cell per device at a time, as `--backend ray` places them with --gpus-per-cell 1):
cells placed longest first on the least loaded device (LPT list scheduling); its makespan is printed beside the
lower bound max(total / N, longest cell). Ray's start-up and data loading per cell are not included.
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from timing import timed  # noqa: E402
from train_cost import seconds_per_step  # noqa: E402

from noiselab import data as data_module  # noqa: E402
from noiselab.evaluate import _attack_spec  # noqa: E402
from noiselab.experiments.records import environment, write_json  # noqa: E402
from noiselab.experiments.reproduce import sweep_grids  # noqa: E402
from noiselab.models import build  # noqa: E402
from noiselab.train import TrainConfig, accuracy, resolve_device  # noqa: E402

# (training examples, test examples, image shape) of the full data sets the grid trains on
SIZES = {"mnist": (60_000, 10_000, (1, 28, 28)), "cifar10": (50_000, 10_000, (3, 32, 32))}
KIND_FIELDS = ("dataset", "model", "method", "batch_size", "pgd_steps", "relu", "pool", "learnable_sigma", "loss",
               "noise_at", "sigma_mode")


def synthetic(dataset: str, train: int, test: int, device: torch.device) -> data_module.Dataset:
    shape = SIZES[dataset][2]
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (train + test, *shape), generator=generator, dtype=torch.uint8).to(device)
    labels = torch.randint(0, 10, (train + test,), generator=generator).to(device)
    return data_module.Dataset(f"synthetic {dataset}", images[:train], labels[:train], images[train:], labels[train:],
                               tuple(str(c) for c in range(10)), "random pixels")


def measure_training(config: TrainConfig, device: torch.device, warmup: int, steps: int, batch: int) -> dict:
    """Seconds per training step of this kind of cell, and of one test-accuracy pass over the full test split."""
    train_size, test_size, _ = SIZES[config.dataset]
    data = synthetic(config.dataset, config.batch_size * (warmup + steps + 1), batch, device)
    run = replace(config, epochs=1, train_limit=None, device=str(device), data_root=None)
    model = build(config.model).to(device).eval()
    return {"seconds_per_step": seconds_per_step(run, data, warmup, steps),
            "steps_per_epoch": math.ceil(train_size / config.batch_size),
            "test_pass_seconds": timed(device, accuracy, model, data.test_images, data.test_labels)
            * test_size / batch}


def measure_evaluation(config: TrainConfig, evaluation, device: torch.device, batch: int) -> float:
    """Seconds to attack the preset's test examples with every stage at every eps > 0 (no shrinking: an upper
    bound), plus one clean pass per eps."""
    _, test_size, _ = SIZES[config.dataset]
    data = synthetic(config.dataset, 1, batch, device)
    model = build(config.model).to(device).eval()
    x, y = data.tensors("test")
    seconds = timed(device, accuracy, model, data.test_images, data.test_labels) * len(evaluation.eps)
    for eps in (e for e in evaluation.eps if e > 0):
        for spec in evaluation.attacks:
            _, attack, options = _attack_spec(tuple(spec) if isinstance(spec, list) else spec)
            attack(model, x, y, eps, **options)  # warm-up
            seconds += timed(device, attack, model, x, y, eps, **options)
    return seconds * (evaluation.limit or test_size) / batch


def makespan(durations: list[float], devices: int) -> float:
    loads = [0.0] * devices
    for duration in sorted(durations, reverse=True):
        heapq.heapreplace(loads, loads[0] + duration)
    return max(loads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per kind")
    parser.add_argument("--batch", type=int, default=200, help="test examples an attack is timed on")
    parser.add_argument("--quick", action="store_true", help="fewer timed steps and examples: exercises it, less exact")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--out", default=None, help="JSON file (default bench/results/sweep_cost-<device>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.steps, args.batch = 2, 5, 20
    device = resolve_device(args.device)

    cells = []  # (experiment, config, evaluation)
    for experiment, (base, grid, evaluation) in sweep_grids(quick=False, device=str(device)).items():
        cells += [(experiment, replace(base, **overrides), evaluation) for overrides in grid]
    training: dict[tuple, dict] = {}
    evaluations: dict[tuple, float] = {}
    rows = []
    for experiment, config, evaluation in cells:
        kind = tuple(getattr(config, name) for name in KIND_FIELDS)
        if kind not in training:
            training[kind] = measure_training(config, device, args.warmup, args.steps, args.batch)
            print(f"{config.dataset:8s} {config.model:9s} {config.method:8s} pgd_steps={config.pgd_steps:<3d} "
                  f"{config.relu}/{config.pool} learnable={config.learnable_sigma!s:5s} "
                  f"{1e3 * training[kind]['seconds_per_step']:8.2f} ms/step", file=sys.stderr, flush=True)
        if (experiment, config.model) not in evaluations:
            evaluations[(experiment, config.model)] = measure_evaluation(config, evaluation, device, args.batch)
            print(f"{experiment} evaluation of one {config.model}: {evaluations[(experiment, config.model)]:.1f} s",
                  file=sys.stderr, flush=True)
        measured = training[kind]
        train_seconds = measured["seconds_per_step"] * measured["steps_per_epoch"] * config.epochs
        seconds = (train_seconds + measured["test_pass_seconds"] * config.epochs
                   + evaluations[(experiment, config.model)])
        rows.append({"experiment": experiment, "config": asdict(config), "train_seconds": train_seconds,
                     "seconds": seconds})
    durations = [row["seconds"] for row in rows]
    total = sum(durations)
    print(f"\nfull grid: {len(rows)} cells on {environment(device)['device']}")
    print(f"{'experiment':10s} {'cells':>5s} {'device-hours':>13s}")
    for experiment in dict.fromkeys(row["experiment"] for row in rows):
        part = [row["seconds"] for row in rows if row["experiment"] == experiment]
        print(f"{experiment:10s} {len(part):5d} {sum(part) / 3600:13.2f}")
    print(f"{'all':10s} {len(rows):5d} {total / 3600:13.2f}\n")
    walls = []
    print(f"{'devices':>7s} {'wall (h)':>9s} {'lower bound (h)':>16s}")
    for n in args.devices:
        wall, bound = makespan(durations, n), max(total / n, max(durations))
        walls.append({"devices": n, "wall_seconds": wall, "lower_bound_seconds": bound})
        print(f"{n:7d} {wall / 3600:9.2f} {bound / 3600:16.2f}")
    out = Path(args.out) if args.out else REPO / "bench" / "results" / f"sweep_cost-{device.type}.json"
    write_json(out, {"benchmark": "sweep_cost", "config": vars(args), "environment": environment(device),
                     "training": [dict(zip(KIND_FIELDS, kind)) | measured for kind, measured in training.items()],
                     "evaluation_seconds": {f"{e}/{m}": v for (e, m), v in evaluations.items()}, "cells": rows,
                     "device_hours": total / 3600, "wall": walls})
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
