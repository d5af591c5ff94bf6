"""A sweep: a grid of training runs ("cells"), each trained and then attacked, results in one JSON file.

Each cell is a set of TrainConfig overrides ({"method": "noise", "sigma": 0.5, "seed": 1}) on a base config.
Finished cells are recorded in <out>/results.json after each cell; a sweep run again with the same out folder
skips them, and a cell interrupted mid-training resumes from its checkpoint in <out>/checkpoints/.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

from .. import data as data_module
from ..attacks import check_eps
from ..evaluate import robust_accuracy
from ..train import TrainConfig, TrainProgress, resolve_device, train
from .records import check_output_folder, environment, read_json, write_json


@dataclass
class EvalSpec:
    """How each trained model is attacked: the eps grid, the attacks (as in robust_accuracy), the test examples."""

    eps: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3])
    attacks: list = field(default_factory=lambda: ["fgsm", ["pgd", {"steps": 40, "restarts": 1}]])
    limit: int | None = 1000

    def validate(self) -> EvalSpec:
        for e in self.eps:
            check_eps(e)
        return self


def cell_key(overrides: dict) -> str:
    return json.dumps(overrides, sort_keys=True)


def format_eps(eps: float) -> str:
    """0.3 -> '0.3'; 8/255 -> '8/255' (CIFAR budgets are counted in 1/255 steps)."""
    steps = eps * 255
    if 0 < eps < 0.1 and abs(steps - round(steps)) < 1e-6:
        return f"{round(steps)}/255"
    return f"{eps:g}"


def cell_label(overrides: dict) -> str:
    """A legend label: 'noise σ=0.5', 'pgd_at ε=0.3', 'vanilla'."""
    method = overrides.get("method", "vanilla")
    if method in ("noise", "sampled"):
        label = f"{method} σ={overrides.get('sigma', TrainConfig().sigma):g}"
        if overrides.get("learnable_sigma"):
            label = f"{method} learnable σ₀={overrides.get('sigma'):g}"
    elif method in ("pgd_at", "fgsm_rs"):
        label = f"{method} ε={format_eps(overrides.get('eps', TrainConfig().eps))}"
    else:
        label = method
    return label


def run_sweep(
    name: str,
    base: TrainConfig,
    cells: list[dict],
    evaluation: EvalSpec,
    out: str | Path,
    progress: Callable[[str], None] | None = None,
    on_train_progress: Callable[[dict, TrainProgress], None] | None = None,
    stop=None,
) -> dict:
    """Train and attack every cell not yet in <out>/results.json; return the results dict."""
    out = check_output_folder(out)
    evaluation.validate()
    configs = [replace(base, **cell).validate() for cell in cells]  # every cell's settings checked up front
    results_path = out / "results.json"
    results = read_json(results_path) or {"experiment": name, "cells": {}}
    if results.get("experiment") != name:
        raise ValueError(f"{results_path} holds results of {results.get('experiment')!r}, not {name!r}; "
                         "use another output folder")
    device = resolve_device(base.device)
    results.update({"base_config": asdict(base), "evaluation": asdict(evaluation), "environment": environment(device)})
    data = None
    for overrides, config in zip(cells, configs):
        key = cell_key(overrides)
        if key in results["cells"]:
            continue
        if stop is not None and stop.is_set():
            break
        if data is None:
            data = data_module.load(base.dataset, root=base.data_root, device=device)
        label = cell_label(overrides)
        if progress:
            progress(f"{label} (seed {config.seed}): training")
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        started = time.perf_counter()
        callback = (lambda p, o=overrides: on_train_progress(o, p)) if on_train_progress else None
        trained = train(config, data=data, progress=callback, stop=stop,
                        checkpoint=out / "checkpoints" / f"{digest}.pt", resume=True)
        if trained.stopped:
            break
        train_seconds = time.perf_counter() - started
        if progress:
            progress(f"{label} (seed {config.seed}): attacking")
        x, y = data.tensors("test", limit=evaluation.limit)
        attacks = [tuple(a) if isinstance(a, list) else a for a in evaluation.attacks]
        table = robust_accuracy(trained.model, x, y, eps=evaluation.eps, attacks=attacks, seed=config.seed)
        results["cells"][key] = {
            "overrides": overrides, "label": label, "config": asdict(config), "history": trained.history,
            "final_sigma": trained.history[-1]["sigma"] if trained.history else config.sigma,
            "train_seconds": train_seconds, "robust": table.to_dict("records"),
        }
        write_json(results_path, results)  # after every cell: an interruption loses at most the cell in progress
    write_json(results_path, results)
    return results


def robust_table(results: dict) -> pd.DataFrame:
    """Worst-case robust accuracy per (cell, eps), long form, from a sweep's results."""
    rows = []
    for cell in results["cells"].values():
        by_eps: dict[float, float] = {}
        for row in cell["robust"]:
            by_eps[row["eps"]] = row["accuracy"]  # the last stage per eps is the worst case
        for eps, accuracy in by_eps.items():
            rows.append({"label": cell["label"], "method": cell["config"]["method"], "sigma": cell["config"]["sigma"],
                         "train_eps": cell["config"]["eps"], "seed": cell["config"]["seed"], "eps": eps,
                         "accuracy": accuracy})
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, spread (std) and seed count of accuracy per (label, eps)."""
    grouped = table.groupby(["label", "method", "eps"], sort=False)["accuracy"]
    return grouped.agg(mean="mean", std="std", seeds="count").reset_index().fillna({"std": 0.0})


def print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


