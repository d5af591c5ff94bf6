"""What the reproduce-style experiments share: the data-set presets (quick and full), the attack suites, and the
robustness figure (a sweep, its summary over seeds, its chart)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..charts import robustness_chart, save_chart
from ..train import TrainConfig
from .sweep import EvalSpec, robust_table, run_sweep, summarize

STRONG_ATTACKS = ["fgsm", ["pgd", {"steps": 40, "restarts": 2}], ["pgd", {"steps": 40, "loss": "margin"}],
                  ["apgd", {"steps": 100}]]
QUICK_ATTACKS = ["fgsm", ["pgd", {"steps": 10}]]


@dataclass
class Preset:
    base: TrainConfig
    evaluation: EvalSpec
    sigmas: list[float]
    adversarial_eps: float
    seeds: int


def mnist_preset(quick: bool, data_root: str | None, device: str) -> Preset:
    if quick:
        base = TrainConfig(dataset="mnist-embedded", model="demo-cnn", train_limit=2000, epochs=2, batch_size=64,
                           pgd_steps=3, eps_warmup=0.5, device=device)
        return Preset(base, EvalSpec([0.0, 0.1, 0.2, 0.3], QUICK_ATTACKS, 200), [0.3, 0.8], 0.3, 1)
    base = TrainConfig(dataset="mnist", data_root=data_root, model="lenet5", epochs=10, batch_size=128,
                       pgd_steps=10, eps_warmup=0.3, device=device)
    return Preset(base, EvalSpec([0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3], STRONG_ATTACKS, 2000),
                  [0.1, 0.3, 0.5, 0.8], 0.3, 3)


def cifar_preset(quick: bool, data_root: str | None, device: str) -> Preset:
    eps = [0.0, 2 / 255, 4 / 255, 8 / 255]
    if quick:
        base = TrainConfig(dataset="cifar10", data_root=data_root, model="cifar-cnn", train_limit=2000, epochs=1,
                           batch_size=64, pgd_steps=3, device=device)
        return Preset(base, EvalSpec(eps, QUICK_ATTACKS, 200), [0.3, 0.8], 8 / 255, 1)
    base = TrainConfig(dataset="cifar10", data_root=data_root, model="cifar-cnn", epochs=30, batch_size=128,
                       pgd_steps=10, device=device)
    return Preset(base, EvalSpec(eps, STRONG_ATTACKS, 2000), [0.1, 0.3, 0.5, 0.8], 8 / 255, 3)


def robustness_cells(preset: Preset) -> list[dict]:
    cells = []
    for seed in range(preset.seeds):
        cells.append({"method": "vanilla", "seed": seed})
        cells += [{"method": "noise", "sigma": s, "seed": seed} for s in preset.sigmas]
        cells += [{"method": "sampled", "sigma": s, "seed": seed} for s in preset.sigmas]
        cells += [{"method": m, "eps": preset.adversarial_eps, "seed": seed} for m in ("pgd_at", "fgsm_rs")]
    return cells


def robustness_figure(name: str, preset: Preset, out: Path, title: str, eps_scale: float = 1.0,
                       eps_title: str = "ε (L∞ attack budget)", cells: list[dict] | None = None, **hooks) -> dict:
    """Train and attack `cells` (default: the robustness grid of Figs. 4-5); write <name>.csv and its chart."""
    cells = robustness_cells(preset) if cells is None else cells
    results = run_sweep(name, preset.base, cells, preset.evaluation, out, **hooks)
    summary = summarize(robust_table(results))
    summary["eps"] = summary["eps"] * eps_scale
    summary.to_csv(out / f"{name}.csv", index=False)
    files = save_chart(robustness_chart(summary, title, eps_title), out, name)
    return {"results": results, "summary": summary, "files": files}
