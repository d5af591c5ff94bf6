"""One cell of a sweep, as every backend runs it: how it is attacked (EvalSpec), what it is called (its key, label and
checkpoint), and run_cell, which trains it (resuming its checkpoint), attacks it and returns its record.

sweep.py (the grid, its records and the in-process backend) and ray_backend.py (each cell as a Ray task) both build
on this module, which imports neither.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import data as data_module
from ..attacks import check_eps, suite
from ..evaluate import robust_accuracy
from ..train import TrainConfig, TrainProgress, resolve_device, train
from .records import environment


@dataclass
class EvalSpec:
    """How each trained model is attacked: the eps grid, the attacks (as in robust_accuracy), the test examples."""

    eps: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3])
    attacks: list = field(default_factory=lambda: suite("strong"))
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
    """A legend label from a cell's settings (its overrides, or its whole config): 'noise σ=0.5', 'pgd_at ε=0.3',
    'vanilla', 'noise σ=0.5 loss=mse'."""
    method = overrides.get("method", "vanilla")
    if method in ("noise", "sampled"):
        label = f"{method} σ={overrides.get('sigma', TrainConfig().sigma):g}"
        if overrides.get("learnable_sigma"):
            label = f"{method} learnable σ₀={overrides.get('sigma'):g}"
            if overrides.get("bimodel_alpha", 0) > 0:
                label += f" Bimodel α={overrides['bimodel_alpha']:g}"
        if overrides.get("loss", "stochastic") != "stochastic":
            label += f" loss={overrides['loss']}"
        if overrides.get("noise_at", "preact") != "preact":
            label += f" at {overrides['noise_at']}"
        if overrides.get("sigma_mode", "absolute") != "absolute":
            label += f" ({overrides['sigma_mode']})"
    elif method in ("pgd_at", "fgsm_rs"):
        label = f"{method} ε={format_eps(overrides.get('eps', TrainConfig().eps))}"
    else:
        label = method
    return label


def checkpoint_path(out: Path, key: str) -> Path:
    return out / "checkpoints" / f"{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt"


def run_cell(
    config: TrainConfig,
    overrides: dict,
    evaluation: EvalSpec,
    out: Path,
    data: data_module.Dataset | None = None,
    on_phase: Callable[[str], None] | None = None,
    on_train_progress: Callable[[TrainProgress], None] | None = None,
    stop=None,
    on_attack_stage: Callable[[float, str], None] | None = None,
) -> dict | None:
    """Train one cell (resuming its checkpoint in <out>/checkpoints/), attack it, return its record; None if stopped.
    on_attack_stage(eps, attack) is called as each attack of the evaluation finishes at each eps.

    The same function runs a cell in-process and inside a Ray task, so both backends write the same records."""
    device = resolve_device(config.device)
    if data is None:
        data = data_module.load(config.dataset, root=config.data_root, device=device)
    if on_phase:
        on_phase("training")
    trained = train(config, data=data, progress=on_train_progress, stop=stop,
                    checkpoint=checkpoint_path(Path(out), cell_key(overrides)), resume=True)
    if trained.stopped:
        return None
    if on_phase:
        on_phase("attacking")
    started = time.perf_counter()
    x, y = data.tensors("test", limit=evaluation.limit)
    attacks = [tuple(a) if isinstance(a, list) else a for a in evaluation.attacks]
    table = robust_accuracy(trained.model, x, y, eps=evaluation.eps, attacks=attacks, seed=config.seed,
                            progress=on_attack_stage)
    return {
        "overrides": overrides, "label": cell_label(asdict(config)), "config": asdict(config),
        "history": trained.history,
        "final_sigma": trained.history[-1]["sigma"] if trained.history else config.sigma,
        # each epoch's time as it ran, summed: a cell resumed after an interruption or a retry is not undercounted
        "train_seconds": sum(row["seconds"] for row in trained.history),
        "attack_seconds": time.perf_counter() - started, "device": environment(device)["device"],
        "robust": table.to_dict("records"),
    }
