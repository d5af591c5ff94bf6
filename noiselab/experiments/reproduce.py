"""The paper's figures and table as runnable experiments, each writing data (JSON, CSV) and a chart (HTML, PNG).

    noiselab reproduce fig4 --quick --out results/      # minutes on a laptop CPU: the embedded digits, DemoCNN
    noiselab reproduce fig4 --data-root ../shared/data/mnist --out docs/results/   # the full run, for a GPU

Every robustness figure puts the `sampled` baseline and the PGD-AT and FGSM-RS references on the same axes as
the noise-trained models, all attacked by the same attacks. The presets (presets.py) are the whole definition of each
run; the results file repeats them beside the library versions and the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from .. import data as data_module
from ..charts import censoring_chart, clean_accuracy_chart, save_chart, sigma_trajectory_chart
from ..checkpoint import load_model
from ..layerwise import loss_sigma_gradient
from ..moments import censoring_curves
from ..train import TrainConfig, resolve_device
from .ablations import ablation_grids, losses, meanpath, placement, recipe, sigmascale
from .adaptive import attackloss, fig7
from .names import RAY_READY
from .presets import (
    CLEAN_ONLY_ATTACKS,
    OVERRIDABLE,
    apply_overrides,
    cifar_preset,
    mnist_preset,
    overridden,
    preset_overrides,
    robustness_cells,
    robustness_figure,
)
from .records import check_output_folder, environment, write_json
from .sweep import EvalSpec, cell_key, cell_label, checkpoint_path, robust_table, run_sweep


def fig3(out: Path, quick: bool = False, **_) -> dict:
    grid = torch.linspace(-4, 5, 181 if quick else 721)
    frames = []
    for mu in (-2.0, -1.0, 0.0, 1.0, 2.0, 3.0):
        curves = censoring_curves(mu, 1.0, grid)
        panel = f"μ = {mu:g}, P(ReLU = 0) = {float(curves['mass_at_zero']):.2f}"
        for curve, label in (("z", "Z"), ("relu", "ReLU(Z), continuous part"), ("paper", "paper rule"),
                             ("moment", "moment matching")):
            frames.append(pd.DataFrame({"xi": grid.numpy(), "density": curves[curve].numpy(), "curve": label,
                                        "panel": panel, "mu": mu}))
    curves = pd.concat(frames, ignore_index=True)
    curves.to_csv(out / "fig3.csv", index=False)
    write_json(out / "results.json", {"experiment": "fig3", "sigma": 1.0, "environment": environment()})
    return {"summary": curves, "files": save_chart(censoring_chart(curves), out, "fig3")}


def fig4(out: Path, quick: bool = False, data_root: str | None = None, device: str = "auto", **hooks) -> dict:
    preset = mnist_preset(quick, data_root, device)
    title = "MNIST: robust accuracy vs ε (the paper's Fig. 4)" + (" — quick mode" if quick else "")
    return robustness_figure("fig4", preset, out, title, **hooks)


def fig5(out: Path, quick: bool = False, data_root: str | None = None, device: str = "auto", **hooks) -> dict:
    preset = cifar_preset(quick, data_root, device)
    title = "CIFAR-10 (JPEG copy): robust accuracy vs ε (the paper's Fig. 5)" + (" — quick mode" if quick else "")
    return robustness_figure("fig5", preset, out, title, eps_scale=255.0, eps_title="ε × 255 (L∞ attack budget)",
                              **hooks)


# eps = 0: the clean accuracy on the whole test split (or test_limit)
CLEAN_ONLY = EvalSpec([0.0], CLEAN_ONLY_ATTACKS, None)


def _fig6_grid(quick: bool, data_root: str | None, device: str) -> tuple[TrainConfig, list[dict], EvalSpec]:
    preset = mnist_preset(quick, data_root, device)
    sigmas = [0.0, 0.3, 0.8] if quick else [0.0, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5]
    # the ends of AT's range first: the verdict's rule compares them, and a PGD-AT cell takes the CPU most of an hour
    epsilons = [0.1, 0.3] if quick else [0.05, 0.4, 0.1, 0.2, 0.3]
    # whole curves, seed by seed (the chart sorts by the knob), in the order they add to the figure: the σ half's
    # first two seeds (minutes a cell on a CPU), AT's half for seed 0 (PGD-AT costs ~8x a noise cell), the σ half's
    # other seeds, AT's other seeds. A run stopped part-way has whole curves, not a scatter of cells.
    noise = [[{"method": "noise", "sigma": s, "seed": seed} for s in sigmas] for seed in range(preset.seeds)]
    adversarial = [[{"method": "pgd_at", "eps": e, "seed": seed} for e in epsilons] for seed in range(preset.seeds)]
    cells = [cell for curve in noise[:2] + adversarial[:1] + noise[2:] + adversarial[1:] for cell in curve]
    return preset.base, cells, apply_overrides(preset.base, CLEAN_ONLY)[1]


TABLE1_VARIANTS = {"Model": 0.0, "Bimodel (α = 0.25)": 0.25}
TABLE1_SEEDS = 3


def _table1_grid(quick: bool, data_root: str | None, device: str) -> tuple[TrainConfig, list[dict], EvalSpec]:
    preset = mnist_preset(quick, data_root, device)
    # long enough to see σ settle or drift (quick: 192 steps), with several seeds (issue 7, item 4)
    base = replace(preset.base, method="noise", learnable_sigma=True, sigma=1.9,
                   epochs=overridden("epochs", 6 if quick else 20))
    cells = [{"bimodel_alpha": alpha, "seed": seed} for seed in range(max(preset.seeds, TABLE1_SEEDS))
             for alpha in TABLE1_VARIANTS.values()]
    return base, cells, apply_overrides(base, CLEAN_ONLY)[1]


def sweep_grids(quick: bool = False, data_root: str | None = None,
                device: str = "auto") -> dict[str, tuple[TrainConfig, list[dict], EvalSpec]]:
    """The sweeps behind fig4, fig5, fig6, table1 and the sweep-shaped ablations (losses, placement, sigmascale) as
    (base config, cells, evaluation): what `reproduce` runs, for whoever needs the whole grid (bench/sweep_cost.py
    prices it)."""
    mnist, cifar = mnist_preset(quick, data_root, device), cifar_preset(quick, data_root, device)
    return {"fig4": (mnist.base, robustness_cells(mnist), mnist.evaluation),
            "fig5": (cifar.base, robustness_cells(cifar), cifar.evaluation),
            "fig6": _fig6_grid(quick, data_root, device), "table1": _table1_grid(quick, data_root, device),
            **ablation_grids(quick, data_root, device)}


def fig6(out: Path, quick: bool = False, data_root: str | None = None, device: str = "auto", **hooks) -> dict:
    base, cells, evaluation = _fig6_grid(quick, data_root, device)
    # fig4's grid trains some of these cells under the same settings: its finished trainings are evaluated, not redone
    results = run_sweep("fig6", base, cells, evaluation, out, adopt_from=out.parent / "fig4", **hooks)
    table = robust_table(results)
    noise = table[table.method == "noise"].groupby("sigma")["accuracy"].agg(["mean", "std"]).reset_index()
    adversarial = table[table.method == "pgd_at"].groupby("train_eps")["accuracy"].agg(["mean", "std"]).reset_index()
    summary = pd.concat([noise.assign(knob="sigma"), adversarial.assign(knob="train_eps")], ignore_index=True)
    summary.fillna({"std": 0.0}).to_csv(out / "fig6.csv", index=False)
    chart = clean_accuracy_chart(noise.fillna({"std": 0.0}), adversarial.fillna({"std": 0.0}),
                                 "Clean accuracy: noise σ vs PGD-AT ε (the paper's Fig. 6)")
    return {"results": results, "summary": summary, "files": save_chart(chart, out, "fig6")}


def table1(out: Path, quick: bool = False, data_root: str | None = None, device: str = "auto", **hooks) -> dict:
    base, cells, clean_only = _table1_grid(quick, data_root, device)
    trajectory: list[dict] = []

    def record(overrides: dict, progress) -> None:
        trajectory.append({"alpha": overrides["bimodel_alpha"], "seed": overrides["seed"], "step": progress.step,
                           "sigma": progress.sigma, "loss": progress.loss, "weight_norm": progress.weight_norm})
        if hooks.get("on_train_progress"):
            hooks["on_train_progress"](overrides, progress)

    results = run_sweep("table1", base, cells, clean_only, out, progress=hooks.get("progress"),
                        on_train_progress=record, stop=hooks.get("stop"))
    names = {alpha: name for name, alpha in TABLE1_VARIANTS.items()}
    # trajectories of this run are kept beside the results; cells finished in an earlier run keep their history
    stored = results.setdefault("trajectories", [])
    stored += trajectory
    write_json(out / "results.json", results)
    frame = pd.DataFrame(stored) if stored else pd.DataFrame(columns=["alpha", "seed", "step", "sigma", "loss",
                                                                      "weight_norm"])
    # a cell resumed from its checkpoint repeats the steps after that checkpoint: keep the last record of each
    frame = frame.drop_duplicates(["alpha", "seed", "step"], keep="last").sort_values(["alpha", "seed", "step"])
    frame["variant"] = frame["alpha"].map(names)
    rows = []
    for cell in results["cells"].values():
        alpha = cell["config"]["bimodel_alpha"]
        last = cell["history"][-1]
        rows.append({"variant": names[alpha], "seed": cell["config"]["seed"], "sigma_0": 1.9,
                     "sigma_final": cell["final_sigma"], "test_accuracy": last["test_accuracy"],
                     "paper_sigma_star": 0.79 if alpha else 0.7,
                     # σ means little without the scale it is added to, which the network learns too
                     "weight_norm_final": last.get("weight_norm"), "preact_std_final": last.get("preact_std"),
                     "sigma_over_preact_std": cell["final_sigma"] / last["preact_std"] if last.get("preact_std")
                     else None, "steps": last["step"]})
    summary = pd.DataFrame(rows)
    summary.to_csv(out / "table1.csv", index=False)
    gradients = _table1_sigma_gradients(base, cells, out, names)
    gradients.to_csv(out / "table1_sigma_gradient.csv", index=False)
    step = max(1, len(frame) // 2000)
    return {"results": results, "summary": summary,
            "files": save_chart(sigma_trajectory_chart(frame.iloc[::step], gradients), out, "table1")}


SIGMA_GRADIENT_GRID = [0.1, 0.25, 0.4, 0.55, 0.7, 0.79, 0.9, 1.1, 1.3, 1.5, 1.7, 1.9, 2.2, 2.5]


def _table1_sigma_gradients(base: TrainConfig, cells: list[dict], out: Path, names: dict) -> pd.DataFrame:
    """For each trained cell's final weights: d(stochastic loss)/dσ over a σ grid on the first 1,000 training images
    (those the cells trained on, where a run had fewer), beside 2ασ (where the Bimodel's σ settles): where σ would
    stop for these weights."""
    device = resolve_device(base.device)
    data = data_module.load(base.dataset, root=base.data_root, device=device)
    x, y = data.tensors("train", limit=min(1000, base.train_limit or 1000))
    rows = []
    for overrides in cells:
        path = checkpoint_path(out, cell_key(overrides))
        if not path.exists():  # a cell not trained in this folder (stopped before it began)
            continue
        model, _ = load_model(path, map_location=device)
        alpha = overrides["bimodel_alpha"]
        for sigma, gradient in loss_sigma_gradient(model, data_module.to_float(x), y, SIGMA_GRADIENT_GRID,
                                                   base.relu, base.pool):
            rows.append({"variant": names[alpha], "seed": overrides["seed"], "sigma": sigma,
                         "dloss_dsigma": gradient, "bimodel_pull": 2 * alpha * sigma})
    return pd.DataFrame(rows, columns=["variant", "seed", "sigma", "dloss_dsigma", "bimodel_pull"])


# the functions of names.EXPERIMENT_NAMES, in its order (the CLI offers that list without importing this module)
EXPERIMENTS: dict[str, Callable[..., dict]] = {"fig3": fig3, "fig4": fig4, "fig5": fig5, "fig6": fig6,
                                               "fig7": fig7, "table1": table1, "meanpath": meanpath,
                                               "losses": losses, "placement": placement, "sigmascale": sigmascale,
                                               "attackloss": attackloss, "recipe": recipe}


def reproduce(name: str, out: str | Path, quick: bool = False, data_root: str | None = None, device: str = "auto",
              **hooks) -> dict:
    """Run one experiment into <out>/<name>/ (resuming what an earlier run left there).

    hooks: progress, on_train_progress, stop, and for the sweeps (RAY_READY) backend, ray_options, on_status;
    epochs, train_limit, test_limit and suite override the preset's (presets.preset_overrides)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {tuple(EXPERIMENTS)}")
    if name not in RAY_READY:
        if hooks.pop("backend", "local") != "local":
            raise ValueError(f"{name} runs in-process only; --backend ray serves {', '.join(RAY_READY)}")
        hooks.pop("ray_options", None)
        hooks.pop("on_status", None)
    scale = {key: hooks.pop(key, None) for key in OVERRIDABLE}
    with preset_overrides(**scale):  # checked before anything is written
        folder = check_output_folder(Path(out) / name)
        return EXPERIMENTS[name](folder, quick=quick, data_root=data_root, device=device, **hooks)


__all__ = ["EXPERIMENTS", "RAY_READY", "cell_label", "reproduce", "sweep_grids"]
