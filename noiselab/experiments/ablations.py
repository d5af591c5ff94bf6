"""Ablations and controls a careful reader of the paper asks for (issue 7), as reproduce-style experiments.

    noiselab reproduce meanpath --quick --out results/     # seconds on a CPU: the starter LeNet5s, 100 digits
    noiselab reproduce losses --quick --out results/       # minutes on a CPU: the embedded digits, DemoCNN, 3 seeds
    noiselab reproduce placement --quick --out results/
    noiselab reproduce sigmascale --quick --out results/
    noiselab reproduce recipe --quick --out results/         # the best noise-only variant under the constraints
    noiselab reproduce losses --data-root ../shared/data/mnist --out results/   # full MNIST, LeNet5: for a GPU

meanpath: is the propagated mean the deterministic network's output? For each starter model (LeNet5 trained on the
embedded digits: vanilla, noise σ = 0.3 and 0.8, PGD-AT), each rule set and a grid of σ, the relative gap between
the closed-form mean and the noise-free activation at every layer (noiselab.layerwise.mean_path), and how
often the propagated mean picks the network's class. No randomness is involved (closed forms on fixed weights):
the one seed is the one the starter models were trained with.

losses: which part of the training objective buys the robustness? The same network, data and σ trained with the
full stochastic loss, its MSE term alone, its probability term alone, cross-entropy on the propagated means, and
plain cross-entropy without noise (vanilla); robust accuracy against ε under the same attacks, 3 seeds.

placement: the noise at the first pre-activation (the paper) or on the input (as in randomized smoothing), each
over a grid of σ, closed form and stochastic loss both times. The two σ scales are not comparable, so the
comparison is robust accuracy against clean accuracy: at matched clean accuracy, which placement is more robust?

sigmascale: the noise is added to a pre-activation whose scale the network learns. Over training, for several σ,
the first layer's weight norm and its pre-activation's std (so the noise's size relative to the signal), with σ as
the paper has it (absolute) and σ relative to each channel's std (sigma_mode="relative"), and the robust accuracy
of both against σ: does robustness depend on σ as the paper claims, and does it once σ cannot be outgrown?

recipe: the noise-only variants the other ablations point at (loss, rules, σ and its unit, placement, sampled
noise), 3 seeds each, beside vanilla, PGD-AT and FGSM-RS; each with its clean and robust accuracy and its training
cost measured against vanilla's in the same run. The best variant at each ε among those that keep the clean
accuracy (full: >= 98%; quick: within 2 points of vanilla's) at <= 2x vanilla's training time, beside PGD-AT.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd

from .. import data as data_module
from ..charts import save_chart
from ..charts.ablations import mean_path_chart, placement_chart, recipe_chart, sigma_scale_chart
from ..layerwise import mean_path
from ..starter import load_starters
from ..train import NOISE_LOSSES, TrainConfig, resolve_device
from .presets import mnist_preset, overridden, robustness_figure
from .records import environment, write_json
from .sweep import robust_table, run_sweep

ABLATION_SEEDS = 3          # the headline comparisons report at least 3 seeds, quick mode included
LOSS_SIGMA = 0.5            # the σ of the loss ablation's noise-trained models
PLACEMENT_SIGMAS = {        # (quick, full) grids; input noise is in pixel units, pre-activation noise in the layer's
    "preact": ([0.3, 0.8, 2.0], [0.1, 0.3, 0.5, 0.8, 1.5, 2.5]),
    "input": ([0.1, 0.3, 0.6], [0.05, 0.1, 0.2, 0.3, 0.5, 0.8]),
}
SCALE_SIGMAS = ([0.3, 0.8, 2.0], [0.1, 0.3, 0.5, 0.8, 1.5, 2.5])  # (quick, full), for both sigma modes
SCALE_QUICK_EPOCHS = 4  # quick mode: enough epochs to see the first layer's scale move

RULE_SETS = (("paper", "paper"), ("moment", "paper"), ("paper", "clark"), ("moment", "clark"))


def meanpath(out: Path, quick: bool = False, device: str = "auto", **_) -> dict:
    device_ = resolve_device(device)
    sigmas = [0.0, 0.25, 0.5, 1.0, 2.0] if quick else [0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]
    limit = overridden("test_limit", 100 if quick else 2000)  # reproduce meanpath --test-limit N
    x, _ = data_module.load(device=device_).tensors("test", limit=limit)
    rows = []
    for starter in load_starters():
        model = starter.model.to(device_).eval()
        for relu, pool in RULE_SETS:
            for sigma in sigmas:
                path = mean_path(model, x, sigma, relu, pool)
                for gap in path.gaps:
                    rows.append({"model": starter.name, "rules": f"{relu}/{pool}", "sigma": sigma,
                                 "layer": gap.index, "name": gap.name, "kind": gap.kind, "gap": gap.gap,
                                 "is_output": gap.index == len(path.gaps) - 1, "agreement": path.agreement})
    table = pd.DataFrame(rows)
    table.to_csv(out / "meanpath.csv", index=False)
    write_json(out / "results.json", {"experiment": "meanpath", "quick": quick, "sigmas": sigmas, "images": limit,
                                      "models": "noiselab starter LeNet5s (seed 0)", "environment":
                                      environment(device_)})
    title = "Is the propagated mean the network's output?" + (" — quick mode" if quick else "")
    summary = table[table["is_output"]][["model", "rules", "sigma", "gap", "agreement"]].reset_index(drop=True)
    return {"summary": summary, "files": save_chart(mean_path_chart(table, title), out, "meanpath")}


def _ablation_preset(quick: bool, data_root: str | None, device: str):
    preset = mnist_preset(quick, data_root, device)
    return replace(preset, seeds=max(preset.seeds, ABLATION_SEEDS))


def _sigma_scale_preset(quick: bool, data_root: str | None, device: str):
    preset = _ablation_preset(quick, data_root, device)
    if not quick:
        return preset
    return replace(preset, base=replace(preset.base, epochs=overridden("epochs", SCALE_QUICK_EPOCHS)))


def ablation_grids(quick: bool = False, data_root: str | None = None, device: str = "auto") -> dict:
    """The sweep-shaped ablations as {name: (base config, cells, evaluation)}: the one definition of each grid, which
    the experiments below run and bench/sweep_cost.py prices."""
    preset, scale = _ablation_preset(quick, data_root, device), _sigma_scale_preset(quick, data_root, device)
    recipe_eval = replace(preset.evaluation, eps=[0.0, *RECIPE_EPS])
    return {"losses": (preset.base, loss_cells(preset.seeds), preset.evaluation),
            "recipe": (preset.base, recipe_cells(preset.seeds), recipe_eval),
            "placement": (preset.base, placement_cells(preset.seeds, quick), preset.evaluation),
            "sigmascale": (scale.base, sigma_scale_cells(scale.seeds, quick), scale.evaluation)}


def loss_cells(seeds: int) -> list[dict]:
    cells = []
    for seed in range(seeds):
        cells.append({"method": "vanilla", "seed": seed})
        cells += [{"method": "noise", "sigma": LOSS_SIGMA, "loss": loss, "seed": seed} for loss in NOISE_LOSSES]
    return cells


def losses(out: Path, quick: bool = False, data_root: str | None = None, device: str = "auto", **hooks) -> dict:
    preset = _ablation_preset(quick, data_root, device)
    title = f"Loss ablation: robust accuracy vs ε, σ = {LOSS_SIGMA:g}" + (" — quick mode" if quick else "")
    # its vanilla cells and the stochastic loss's are Fig. 4's (same settings): their results are taken as they are
    return robustness_figure("losses", preset, out, title, cells=loss_cells(preset.seeds),
                             adopt_from=out.parent / "fig4", **hooks)


def placement_cells(seeds: int, quick: bool) -> list[dict]:
    cells = []
    for seed in range(seeds):
        cells.append({"method": "vanilla", "seed": seed})
        for where, (quick_grid, full_grid) in PLACEMENT_SIGMAS.items():
            cells += [{"method": "noise", "sigma": s, "noise_at": where, "seed": seed}
                      for s in (quick_grid if quick else full_grid)]
    return cells


def placement_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (placement, σ, ε): clean and robust accuracy, mean and std over seeds. Vanilla is placement 'none'."""
    table = table.assign(placement=table["noise_at"].where(table["method"] == "noise", "none (vanilla)"),
                         sigma=table["sigma"].where(table["method"] == "noise", 0.0))
    keys = ["placement", "sigma", "seed"]
    clean = table[table["eps"] == 0][keys + ["accuracy"]].rename(columns={"accuracy": "clean"})
    robust = table[table["eps"] > 0].merge(clean, on=keys)
    return robust.groupby(["placement", "sigma", "eps"]).agg(
        clean_mean=("clean", "mean"), clean_std=("clean", "std"), robust_mean=("accuracy", "mean"),
        robust_std=("accuracy", "std"), seeds=("seed", "count")).reset_index().fillna(0.0)


def placement(out: Path, quick: bool = False, data_root: str | None = None, device: str = "auto", **hooks) -> dict:
    results = run_sweep("placement", *ablation_grids(quick, data_root, device)["placement"], out, **hooks)
    summary = placement_summary(robust_table(results))
    summary.to_csv(out / "placement.csv", index=False)
    title = "Noise placement: robust vs clean accuracy, over σ" + (" — quick mode" if quick else "")
    return {"results": results, "summary": summary, "files": save_chart(placement_chart(summary, title), out,
                                                                        "placement")}


def sigma_scale_cells(seeds: int, quick: bool) -> list[dict]:
    cells = []
    for seed in range(seeds):
        cells.append({"method": "vanilla", "seed": seed})
        for mode in ("absolute", "relative"):
            cells += [{"method": "noise", "sigma": s, "sigma_mode": mode, "seed": seed}
                      for s in SCALE_SIGMAS[0 if quick else 1]]
    return cells


def sigma_scale_trajectories(results: dict) -> pd.DataFrame:
    """Per cell and epoch: the first layer's weight norm, its pre-activation's std, and the noise's std relative
    to it (sigma / preact_std under absolute σ; sigma itself under relative σ)."""
    rows = []
    for cell in results["cells"].values():
        config = TrainConfig.with_defaults(cell["config"])
        mode = config["sigma_mode"] if config["method"] == "noise" else "none (vanilla)"
        sigma = config["sigma"] if config["method"] == "noise" else 0.0
        for row in cell["history"]:
            relative = sigma if mode == "relative" else sigma / row["preact_std"]
            rows.append({"mode": mode, "sigma": sigma, "seed": config["seed"], "epoch": row["epoch"],
                         "weight_norm": row["weight_norm"], "preact_std": row["preact_std"],
                         "relative_noise": relative, "test_accuracy": row["test_accuracy"]})
    return pd.DataFrame(rows)


def sigmascale(out: Path, quick: bool = False, data_root: str | None = None, device: str = "auto",
               **hooks) -> dict:
    results = run_sweep("sigmascale", *ablation_grids(quick, data_root, device)["sigmascale"], out, **hooks)
    trajectories = sigma_scale_trajectories(results)
    trajectories.to_csv(out / "sigmascale_training.csv", index=False)
    table = robust_table(results)
    table["mode"] = table["sigma_mode"].where(table["method"] == "noise", "none (vanilla)")
    summary = table.assign(sigma=table["sigma"].where(table["method"] == "noise", 0.0)).groupby(
        ["mode", "sigma", "eps"])["accuracy"].agg(mean="mean", std="std", seeds="count").reset_index().fillna(0.0)
    summary.to_csv(out / "sigmascale.csv", index=False)
    title = "The scale of σ: first layer over training, robustness against σ" + (" — quick mode" if quick else "")
    return {"results": results, "summary": summary,
            "files": save_chart(sigma_scale_chart(trajectories, summary, title), out, "sigmascale")}


# (label, overrides): the noise-only candidates, then the references they are measured against
RECIPE_VARIANTS = [
    ("paper: stochastic loss, σ=0.5", {"method": "noise", "sigma": 0.5}),
    ("stochastic loss, σ=1.5", {"method": "noise", "sigma": 1.5}),
    ("MSE term alone (σ-free)", {"method": "noise", "sigma": 0.5, "loss": "mse"}),
    ("moment/Clark rules, σ=0.5", {"method": "noise", "sigma": 0.5, "relu": "moment", "pool": "clark"}),
    ("relative σ=2", {"method": "noise", "sigma": 2.0, "sigma_mode": "relative"}),
    ("relative σ=2, moment/Clark", {"method": "noise", "sigma": 2.0, "sigma_mode": "relative", "relu": "moment",
                                    "pool": "clark"}),
    ("input noise σ=0.6", {"method": "noise", "sigma": 0.6, "noise_at": "input"}),
    ("sampled noise σ=0.8 (CE)", {"method": "sampled", "sigma": 0.8}),
]
RECIPE_REFERENCES = [("vanilla", {"method": "vanilla"}), ("PGD-AT ε=0.3", {"method": "pgd_at", "eps": 0.3}),
                     ("FGSM-RS ε=0.3", {"method": "fgsm_rs", "eps": 0.3})]
RECIPE_EPS = (0.1, 0.3)
RECIPE_MAX_COST = 2.0        # training time relative to vanilla's
RECIPE_CLEAN_FULL = 0.98     # the clean-accuracy floor on full MNIST
RECIPE_CLEAN_QUICK_DROP = 0.02  # quick mode cannot reach 98%: within 2 points of vanilla's clean accuracy instead


def recipe_cells(seeds: int) -> list[dict]:
    return [dict(overrides, seed=seed) for seed in range(seeds) for _, overrides in RECIPE_VARIANTS + RECIPE_REFERENCES]


def recipe_summary(results: dict, quick: bool) -> tuple[pd.DataFrame, dict]:
    """Per variant: clean and robust accuracy at RECIPE_EPS (mean, std over seeds), training seconds and their ratio
    to vanilla's; which noise-only variants meet the constraints, and the best of them at each ε beside PGD-AT."""
    names = {json.dumps(o, sort_keys=True): label for label, o in RECIPE_VARIANTS + RECIPE_REFERENCES}
    rows = []
    for cell in results["cells"].values():
        overrides = {k: v for k, v in cell["overrides"].items() if k != "seed"}
        by_eps = {}
        for row in cell["robust"]:
            by_eps[row["eps"]] = row["accuracy"]  # the last stage per eps is the worst case
        rows.append({"variant": names[json.dumps(overrides, sort_keys=True)], "seed": cell["config"]["seed"],
                     "noise_only": cell["config"]["method"] in ("noise", "sampled"),
                     "train_seconds": cell["train_seconds"], "clean": by_eps[0.0],
                     **{f"robust_{eps:g}": by_eps[eps] for eps in RECIPE_EPS}})
    table = pd.DataFrame(rows)
    metrics = ["clean", "train_seconds", *(f"robust_{eps:g}" for eps in RECIPE_EPS)]
    summary = table.groupby(["variant", "noise_only"], sort=False)[metrics].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary = summary.reset_index().fillna(0.0)
    summary["seeds"] = table.groupby(["variant", "noise_only"], sort=False).size().values
    vanilla = summary[summary["variant"] == "vanilla"].iloc[0]
    summary["cost_ratio"] = summary["train_seconds_mean"] / vanilla["train_seconds_mean"]
    floor = vanilla["clean_mean"] - RECIPE_CLEAN_QUICK_DROP if quick else RECIPE_CLEAN_FULL
    summary["eligible"] = summary["noise_only"] & (summary["clean_mean"] >= floor) & (
        summary["cost_ratio"] <= RECIPE_MAX_COST)
    pgd = summary[summary["variant"] == "PGD-AT ε=0.3"].iloc[0]
    answers = {"clean_floor": float(floor), "max_cost_ratio": RECIPE_MAX_COST, "best": {}}
    for eps in RECIPE_EPS:
        column = f"robust_{eps:g}_mean"
        eligible = summary[summary["eligible"]]
        entry = {"pgd_at": float(pgd[column]), "pgd_at_cost_ratio": float(pgd["cost_ratio"])}
        if len(eligible):
            best = eligible.loc[eligible[column].idxmax()]
            entry.update({"variant": best["variant"], "robust": float(best[column]),
                          "std": float(best[f"robust_{eps:g}_std"]), "cost_ratio": float(best["cost_ratio"]),
                          "gap_to_pgd_at": float(pgd[column] - best[column])})
        answers["best"][f"{eps:g}"] = entry
    return summary, answers


def recipe(out: Path, quick: bool = False, data_root: str | None = None, device: str = "auto", **hooks) -> dict:
    # its references and several of its variants are cells of Fig. 4, the loss ablation and Fig. 6 (same settings):
    # their finished trainings are evaluated, not redone (PGD-AT's take most of an hour each on a CPU)
    results = run_sweep("recipe", *ablation_grids(quick, data_root, device)["recipe"], out,
                        adopt_from=[out.parent / name for name in ("fig4", "losses", "fig6")], **hooks)
    summary, answers = recipe_summary(results, quick)
    summary.to_csv(out / "recipe.csv", index=False)
    write_json(out / "summary.json", answers)
    title = "Noise-only variants: robustness against training cost" + (" — quick mode" if quick else "")
    return {"results": results, "summary": summary, "answers": answers,
            "files": save_chart(recipe_chart(summary, RECIPE_EPS, title), out, "recipe")}
