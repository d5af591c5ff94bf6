"""The paper's Fig. 7 as a measurement: the closed-form adaptive attack against EOT on a randomized defense.

    noiselab reproduce fig7 --quick --out results/                            # minutes on a CPU
    noiselab reproduce fig7 --data-root ../shared/data/mnist --out docs/results/   # the full run, for a GPU

Defenses: networks trained with first-layer noise at sigma (the paper's closed-form training, "noise", and the
PixelDP-like "sampled" training), each keeping that noise at inference and predicting by a majority vote over
`samples` noisy passes (noiselab.defenses); beside them an undefended vanilla network under plain FGSM and PGD.
Attacks (noiselab.attacks.RANDOMIZED_ATTACKS): the naive attack (one noisy pass), EOT over k draws, and the
closed-form attack (FGSM as in the paper, and PGD). Every accuracy carries a Wilson interval over the test
examples and the fraction of votes the defense's own randomness could flip; every attack its cost in network
passes per example and in seconds on this device, measured in the same run.

Results land in <out>/results.json (one row per model x attack x eps, written as they come, so a rerun skips
what is done), fig7.csv, summary.json (the plain answers) and a chart (HTML + PNG).

attackloss (issue 7, item 5): which objective makes the strongest closed-form attack? Closed-form PGD ascending
the full stochastic loss, its probability term alone, and cross-entropy on the propagated means, beside EOT-PGD,
against randomized defenses trained with the stochastic loss ("noise") and with cross-entropy on noisy samples
("sampled"), 3 seeds each; attackloss.csv (mean, std over seeds), summary.json (the pick) and a chart.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from .. import data as data_module
from ..attacks import ATTACKS, RANDOMIZED_ATTACKS
from ..charts import save_chart
from ..charts.adaptive import adaptive_chart, attack_loss_chart
from ..defenses import randomized_accuracy, wilson_interval
from ..evaluate import predict
from ..train import TrainConfig, resolve_device, train
from .presets import COMMITTED_RECIPE, apply_overrides, mnist_preset, overridden
from .records import environment, read_json, write_json
from .sweep import EvalSpec, adopt_training, cell_key, cell_label, print_progress


@dataclass
class AdaptivePreset:
    base: TrainConfig
    sigmas: list[float]
    defense_methods: list[str]       # how each defended network was trained: "noise" (the paper), "sampled"
    eps: list[float]
    limit: int                       # test examples attacked
    samples: int                     # noisy passes per defended prediction
    attacks: list[list]              # [label, RANDOMIZED_ATTACKS name, options]
    undefended_attacks: list[list]   # [label, ATTACKS name, options]
    batch_size: int = 250


def preset(quick: bool, data_root: str | None, device: str) -> AdaptivePreset:
    chosen = _preset(quick, data_root, device)
    base, evaluation = apply_overrides(chosen.base, EvalSpec(eps=chosen.eps, limit=chosen.limit))
    return replace(chosen, base=base, limit=evaluation.limit, eps=evaluation.eps)


def _preset(quick: bool, data_root: str | None, device: str) -> AdaptivePreset:
    if quick:
        base = TrainConfig(dataset="mnist-embedded", model="demo-cnn", train_limit=4000, epochs=2, batch_size=64,
                           device=device, **COMMITTED_RECIPE)
        attacks = [["naive FGSM", "naive_fgsm", {}], ["EOT-FGSM k=8", "eot_fgsm", {"draws": 8}],
                   ["closed-form FGSM", "closed_form_fgsm", {}],
                   ["closed-form FGSM (prob. term)", "closed_form_fgsm", {"loss": "probability"}],
                   ["EOT-PGD k=1", "eot_pgd", {"draws": 1, "steps": 10}],
                   ["EOT-PGD k=8", "eot_pgd", {"draws": 8, "steps": 10}],
                   ["closed-form PGD", "closed_form_pgd", {"steps": 10}],
                   ["closed-form PGD (prob. term)", "closed_form_pgd", {"steps": 10, "loss": "probability"}]]
        undefended = [["FGSM", "fgsm", {}], ["PGD", "pgd", {"steps": 10}]]
        return AdaptivePreset(base, [0.6, 0.8], ["noise", "sampled"], [0.0, 0.1, 0.2, 0.3], 200, 64, attacks,
                              undefended)
    # Fig. 4's settings (so that its finished trainings of the same models stand in for this one's)
    base = mnist_preset(False, data_root, device).base
    attacks = [["naive FGSM", "naive_fgsm", {}], ["EOT-FGSM k=32", "eot_fgsm", {"draws": 32}],
               ["closed-form FGSM", "closed_form_fgsm", {}],
               ["closed-form FGSM (prob. term)", "closed_form_fgsm", {"loss": "probability"}]]
    attacks += [[f"EOT-PGD k={k}", "eot_pgd", {"draws": k, "steps": 40}] for k in (1, 2, 4, 8, 16, 32)]
    attacks += [["closed-form PGD", "closed_form_pgd", {"steps": 40}],
                ["closed-form PGD (prob. term)", "closed_form_pgd", {"steps": 40, "loss": "probability"}],
                ["closed-form PGD (prob., moment/clark)", "closed_form_pgd",
                 {"steps": 40, "loss": "probability", "relu": "moment", "pool": "clark"}]]
    undefended = [["FGSM", "fgsm", {}], ["PGD", "pgd", {"steps": 40}]]
    return AdaptivePreset(base, [0.6, 0.8], ["noise", "sampled"], [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3], 1000, 256,
                          attacks, undefended)


def attack_passes(name: str, options: dict) -> float:
    """Network passes (forward and backward counted together, per example) an attack spends.

    A closed-form step runs the moment network, whose mean and variance paths cost about two passes, plus its
    backward; a sampled step runs `draws` noisy passes and their backward."""
    steps = options.get("steps", 1) if name in ("eot_pgd", "closed_form_pgd", "pgd") else 1
    if name.startswith("closed_form"):
        return steps * 2 * 2
    draws = options.get("draws", 1) if name.startswith("eot") else 1
    return steps * draws * 2


def _models(preset_: AdaptivePreset) -> list[dict]:
    cells = [{"method": "vanilla"}]
    cells += [{"method": method, "sigma": sigma} for sigma in preset_.sigmas for method in preset_.defense_methods]
    return cells


def _row_key(label: str, attack: str, eps: float, seed: int = 0) -> str:
    return f"{label} | {attack} | {eps:g}" + (f" | seed {seed}" if seed else "")


def _stem(config: TrainConfig) -> str:
    """A model's checkpoint name in <out>/checkpoints/ (and in the exported weights' fig7/)."""
    return f"{config.method}-sigma{config.sigma:g}" + (f"-seed{config.seed}" if config.seed else "")


def _training_fingerprint(history: list[dict]) -> dict:
    """What tells one training of a model from another: its last epoch's step, loss and test accuracy (two runs of
    the same settings are not bit-identical across processes)."""
    last = history[-1] if history else {}
    return {key: last.get(key) for key in ("step", "loss", "test_accuracy")}


def _check_same_training(rows: list[dict], label: str, seed: int, fingerprint: dict, checkpoint: Path) -> None:
    """Refuse to add rows measured on a model other than the one the stored rows of (label, seed) were measured on:
    a checkpoint lost between runs and trained again would mix two models in one table."""
    for row in rows:
        if row["model"] != label or row.get("seed", 0) != seed:
            continue
        stored = row.get("training") or {"test_accuracy": row.get("expectation_accuracy")}
        if any(stored.get(key) != fingerprint.get(key) for key in stored):
            raise ValueError(
                f"the stored rows of {label} (seed {seed}) were measured on another training of it than {checkpoint} "
                f"(last epoch {stored} against {fingerprint}): put that training's checkpoint back, or delete "
                f"{label}'s rows from results.json to measure this one")
        return


def _check_same_scale(results: dict, preset_: AdaptivePreset, results_path: Path) -> None:
    """Refuse to add rows at another scale (test examples, votes) than the stored rows': one table, one scale."""
    stored = results.get("preset") or {}
    if not results.get("rows"):
        return
    for key in ("limit", "samples"):
        if key in stored and stored[key] != getattr(preset_, key):
            raise ValueError(
                f"{results_path} holds rows measured with {key} = {stored[key]}, this run's is {getattr(preset_, key)}:"
                f" run it at that scale (--test-limit), or give it another --out folder")


def _attack_models(name: str, preset_: AdaptivePreset, cells: list[dict], out: Path, device: str, progress,
                   on_train_progress, stop, adopt_from: Path | None = None) -> dict:
    """Train (or load) every cell's model and run the preset's attacks on it at every eps, one row each, written to
    <out>/results.json as they come: a stopped run keeps its rows and a rerun skips them. adopt_from: a sweep's
    folder (Fig. 4's) whose finished trainings of the same settings stand in for a cell's (sweep.adopt_training);
    their rows say so ("training_from")."""
    device_ = resolve_device(device)
    results_path = out / "results.json"
    results = read_json(results_path) or {"experiment": name, "rows": []}
    _check_same_scale(results, preset_, results_path)
    results.update({"preset": asdict(preset_), "environment": environment(device_)})
    adopted = {}
    if adopt_from is not None:
        seeded = [{**overrides, "seed": replace(preset_.base, **overrides).seed} for overrides in cells]
        targets = {cell_key(cell): out / "checkpoints" / f"{_stem(replace(preset_.base, **cell))}.pt"
                   for cell in seeded}
        adopted = adopt_training(adopt_from, out, preset_.base, seeded, target_of=targets.__getitem__)
    done = {_row_key(r["model"], r["attack"], r["eps"], r.get("seed", 0)) for r in results["rows"]}
    data = data_module.load(preset_.base.dataset, root=preset_.base.data_root, device=device_)
    x_all, y_all = data.tensors("test", limit=preset_.limit)
    x_all = data_module.to_float(x_all)

    for overrides in cells:
        config = replace(preset_.base, **overrides).validate()
        label, seed = cell_label(overrides), config.seed
        if stop is not None and stop.is_set():
            break
        defended = config.method != "vanilla"
        attacks = preset_.attacks if defended else preset_.undefended_attacks
        # the clean row once per model, then every attack at every eps > 0
        jobs = [("clean", attacks[0][1], {}, 0.0)] + [
            (attack_label, attack_name, options, eps) for attack_label, attack_name, options in attacks
            for eps in preset_.eps if eps > 0]
        if all(_row_key(label, job[0], job[3], seed) in done for job in jobs):
            # every row measured: its training is not needed again (nor retrained if its checkpoint is gone)
            progress(f"{name}: {label} (seed {seed}): every row already measured")
            continue
        progress(f"{name}: {label} (seed {seed}): training (or loading its checkpoint)")
        callback = (lambda p, o=overrides: on_train_progress(o, p)) if on_train_progress else None
        from_ = adopted.get(cell_key({**overrides, "seed": seed}))
        if from_:
            progress(f"{name}: {label} (seed {seed}): {from_}'s finished training of the same settings")
        trained = train(config, data=data, progress=callback, stop=stop, resume=True,
                        checkpoint=out / "checkpoints" / f"{_stem(config)}.pt")
        if trained.stopped:
            break
        fingerprint = _training_fingerprint(trained.history)
        _check_same_training(results["rows"], label, seed, fingerprint, out / "checkpoints" / f"{_stem(config)}.pt")
        model = trained.model.eval()
        for attack_label, attack_name, options, eps in jobs:
            if _row_key(label, attack_label, eps, seed) in done:
                continue
            if stop is not None and stop.is_set():
                break
            row = measure_attack(model, x_all, y_all, config.sigma if defended else None, attack_label, attack_name,
                                 options, eps, preset_.samples, preset_.batch_size, seed=seed)
            row.update({"model": label, "train_method": config.method, "sigma": config.sigma if defended else 0.0,
                        "seed": seed,
                        "expectation_accuracy": trained.history[-1]["test_accuracy"] if trained.history else None,
                        "training": fingerprint} | ({"training_from": from_} if from_ else {}))
            results["rows"].append(row)
            write_json(results_path, results)
            progress(f"{name}: {label} (seed {seed}) / {attack_label} / eps {eps:g}: accuracy {row['accuracy']:.3f}")
    write_json(results_path, results)
    return results


def fig7(out: Path, quick: bool = False, data_root: str | None = None, device: str = "auto",
         progress=print_progress, on_train_progress=None, stop=None) -> dict:
    """Run (or finish) Fig. 7 into `out`; progress(message), on_train_progress(overrides, TrainProgress) and a
    stop Event as in run_sweep: a stopped run keeps every row measured so far and resumes from there."""
    preset_ = preset(quick, data_root, device)
    results = _attack_models("fig7", preset_, _models(preset_), out, device, progress, on_train_progress, stop,
                             adopt_from=out.parent / "fig4")
    table = pd.DataFrame(results["rows"])
    table.to_csv(out / "fig7.csv", index=False)
    answers = summarize_adaptive(table)
    write_json(out / "summary.json", answers)
    files = save_chart(adaptive_chart(table, cost_eps=_cost_eps(preset_.eps)), out, "fig7")
    columns = ["model", "eps", "closed_form_attack", "closed_form_accuracy", "strongest_eot", "eot_accuracy",
               "cost_ratio_seconds", "matches_eot"]
    summary = pd.DataFrame(answers["closed_form_vs_eot"]).reindex(columns=columns)
    return {"results": results, "table": table, "summary": summary, "answers": answers, "files": files}


def _cost_eps(eps: list[float]) -> float:
    positive = [e for e in eps if e > 0]
    return positive[len(positive) // 2] if positive else 0.0


def measure_attack(model, x: Tensor, y: Tensor, sigma: float | None, attack_label: str, name: str, options: dict,
                   eps: float, samples: int = 256, batch_size: int = 250, seed: int = 0) -> dict:
    """Attack (x, y) with one attack at one eps and score it: one row of Fig. 7.

    sigma=None: the undefended network, attacked by ATTACKS[name] and scored by its deterministic prediction;
    else the randomized defense at sigma, attacked by RANDOMIZED_ATTACKS[name] and scored by a vote over
    `samples` noisy passes. The row carries the accuracy, its Wilson interval, the undecided fraction, and the
    attack's cost per example (network passes, and seconds on x's device)."""
    registry = RANDOMIZED_ATTACKS if sigma is not None else ATTACKS
    if name not in registry:
        raise ValueError(f"unknown attack {name!r}; choose one of {tuple(registry)}")
    attack = registry[name]
    takes_generator = "generator" in inspect.signature(attack).parameters
    adversarial = []
    if x.is_cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for start in range(0, x.shape[0], batch_size):
        chunk = slice(start, start + batch_size)
        kwargs = dict(options)
        if takes_generator:
            kwargs["generator"] = torch.Generator(device=x.device).manual_seed(seed + start)
        if sigma is not None:
            kwargs["sigma"] = sigma
        adversarial.append(attack(model, x[chunk], y[chunk], eps, **kwargs))
    if x.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    x_adv = torch.cat(adversarial)
    n = x.shape[0]
    if sigma is not None:
        estimate = randomized_accuracy(model, x_adv, y, sigma, samples=samples, seed=seed + 1)
        accuracy, low, high, undecided = estimate.accuracy, estimate.low, estimate.high, estimate.undecided
    else:
        hits = (predict(model, x_adv) == y).sum()
        low_t, high_t = wilson_interval(hits, n)
        accuracy, low, high, undecided = float(hits) / n, float(low_t), float(high_t), 0.0
    return {"attack": attack_label, "attack_name": name, "options": options, "eps": eps, "accuracy": accuracy,
            "low": low, "high": high, "undecided": undecided, "n": n, "samples": samples if sigma is not None else 1,
            "passes_per_example": attack_passes(name, options) if eps > 0 else 0.0,
            "seconds_per_example": seconds / n}


def summarize_adaptive(table: pd.DataFrame) -> dict:
    """The plain answers: per defended model and eps > 0, the closed-form attacks against the strongest EOT, with
    the cost ratio; and the paper's claim for sigma = 0.6 (the randomized model about as vulnerable as the
    undefended one under FGSM)."""
    answers = []
    undefended = table[table["train_method"] == "vanilla"]
    for model, rows in table[table["train_method"] != "vanilla"].groupby("model", sort=False):
        for eps, at_eps in rows[rows["eps"] > 0].groupby("eps"):
            eot = at_eps[at_eps["attack_name"] == "eot_pgd"]
            strongest = eot.loc[eot["accuracy"].idxmin()] if len(eot) else None
            for _, cf in at_eps[at_eps["attack_name"].str.startswith("closed_form")].iterrows():
                entry = {"model": model, "eps": float(eps), "closed_form_attack": cf["attack"],
                         "closed_form_accuracy": cf["accuracy"], "closed_form_interval": [cf["low"], cf["high"]],
                         "closed_form_seconds_per_example": cf["seconds_per_example"]}
                if strongest is not None:
                    overlap = cf["low"] <= strongest["high"] and strongest["low"] <= cf["high"]
                    entry.update({
                        "strongest_eot": strongest["attack"], "eot_accuracy": strongest["accuracy"],
                        "eot_interval": [strongest["low"], strongest["high"]],
                        "eot_seconds_per_example": strongest["seconds_per_example"],
                        "cost_ratio_seconds": cf["seconds_per_example"] / max(strongest["seconds_per_example"], 1e-12),
                        "matches_eot": bool(overlap or cf["accuracy"] <= strongest["accuracy"]),
                    })
                answers.append(entry)
    claim = []
    plain = undefended[undefended["attack_name"] == "fgsm"].set_index("eps")["accuracy"]
    for _, row in table[(table["attack_name"] == "closed_form_fgsm") & (table["eps"] > 0)].iterrows():
        if row["eps"] in plain.index:
            claim.append({"model": row["model"], "sigma": float(row["sigma"]), "eps": float(row["eps"]),
                          "randomized_under_closed_form_fgsm": row["accuracy"],
                          "undefended_under_fgsm": float(plain.loc[row["eps"]])})
    return {"closed_form_vs_eot": answers, "paper_claim_sigma_0.6": [c for c in claim if c["sigma"] == 0.6],
            "randomized_vs_undefended_fgsm": claim}


ATTACK_LOSS_SEEDS = 3
ATTACK_OBJECTIVES = ("stochastic", "probability", "mean_ce")  # noiselab.attacks.closed_form.LOSSES


def attack_loss_preset(quick: bool, data_root: str | None, device: str) -> AdaptivePreset:
    steps, draws = (5, 4) if quick else (40, 32)
    attacks = [[f"closed-form PGD ({loss})", "closed_form_pgd", {"steps": steps, "loss": loss}]
               for loss in ATTACK_OBJECTIVES]
    attacks.append([f"EOT-PGD k={draws}", "eot_pgd", {"draws": draws, "steps": steps}])
    fig7_preset = preset(quick, data_root, device)
    if quick:  # 3 seeds x 2 defenses on 2 CPU cores in about a minute: fewer digits, votes and budgets than fig7's
        return replace(fig7_preset, base=replace(fig7_preset.base, train_limit=overridden("train_limit", 2000)),
                       sigmas=[0.8], eps=[0.0, 0.1, 0.2], limit=overridden("test_limit", 100), samples=32,
                       attacks=attacks)
    return replace(fig7_preset, attacks=attacks)


def summarize_attack_losses(summary: pd.DataFrame) -> dict:
    """Per defended model and eps: the closed-form objective that leaves the lowest accuracy (mean over seeds),
    beside EOT; how often each objective was the strongest; and the pick: the objective with the lowest accuracy
    averaged over every model and eps, with its margin over the next one (a margin below the seeds' spread is a
    tie, and the write-up says so)."""
    closed = summary[summary["attack"].str.startswith("closed-form") & (summary["eps"] > 0)]
    eot = summary[summary["attack"].str.startswith("EOT") & (summary["eps"] > 0)]
    rows, wins = [], dict.fromkeys(closed["attack"].unique(), 0)
    for (model, eps), group in closed.groupby(["model", "eps"]):
        best = group.loc[group["mean"].idxmin()]
        tied = group[group["mean"] <= best["mean"] + 1e-12]["attack"].tolist()
        for attack in tied:
            wins[attack] += 1
        reference = eot[(eot["model"] == model) & (eot["eps"] == eps)]
        rows.append({"model": model, "eps": float(eps), "strongest_closed_form": tied,
                     "accuracy": float(best["mean"]), "std": float(best["std"]),
                     "eot_attack": reference["attack"].iloc[0] if len(reference) else None,
                     "eot_accuracy": float(reference["mean"].iloc[0]) if len(reference) else None})
    average = closed.groupby("attack")["mean"].mean().sort_values()
    spread = float(closed["std"].mean()) if len(closed) else 0.0
    return {"per_model_and_eps": rows, "strongest_counts": wins,
            "mean_accuracy": {attack: float(value) for attack, value in average.items()},
            "pick": average.index[0] if len(average) else None,
            "margin_over_next": float(average.iloc[1] - average.iloc[0]) if len(average) > 1 else None,
            "mean_seed_std": spread}


def attackloss(out: Path, quick: bool = False, data_root: str | None = None, device: str = "auto",
               progress=print_progress, on_train_progress=None, stop=None) -> dict:
    preset_ = attack_loss_preset(quick, data_root, device)
    cells = [{"method": method, "sigma": sigma, "seed": seed} for seed in range(ATTACK_LOSS_SEEDS)
             for sigma in preset_.sigmas for method in preset_.defense_methods]
    results = _attack_models("attackloss", preset_, cells, out, device, progress, on_train_progress, stop)
    table = pd.DataFrame(results["rows"])
    table.to_csv(out / "attackloss_rows.csv", index=False)
    summary = table.groupby(["model", "train_method", "sigma", "attack", "eps"], sort=False)["accuracy"].agg(
        mean="mean", std="std", seeds="count").reset_index().fillna({"std": 0.0})
    summary.to_csv(out / "attackloss.csv", index=False)
    answers = summarize_attack_losses(summary)
    write_json(out / "summary.json", answers)
    title = "Which objective makes the strongest closed-form attack?" + (" — quick mode" if quick else "")
    return {"results": results, "summary": summary, "answers": answers,
            "files": save_chart(attack_loss_chart(summary, title), out, "attackloss")}
