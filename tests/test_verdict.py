"""The verdict table and the shipped curves come from the committed full-scale results, and cannot drift from them."""

import json
from pathlib import Path

import pandas as pd
import pytest

from noiselab.experiments import verdict

REPO = Path(__file__).resolve().parents[1]
FULL = REPO / "docs" / "results" / "full-cpu"


def test_the_verdict_table_in_results_md_is_computed_from_the_committed_results():
    doc = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    assert verdict.doc_block(doc) == verdict.verdict_markdown(FULL), (
        "docs/results.md's verdict differs from what the results files give: run "
        "`python -m noiselab.experiments.verdict docs/results/full-cpu --write`")


def test_the_independent_check_in_results_md_is_its_results_file():
    doc = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    assert verdict.doc_block(doc, "independent") == verdict.independent_markdown(FULL)
    report = json.loads((FULL / "independent_check.json").read_text())
    assert {"strong", "strong-t3"} <= set(report["models"][0]["suites"])


def test_fig7s_table_in_results_md_is_its_results_file():
    doc = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    assert verdict.doc_block(doc, "adaptive") == verdict.adaptive_markdown(FULL)


@pytest.mark.parametrize("block", ["losses", "fig5-reduced", "fig5-reduced-independent", "recipe",
                                   "recipe-independent"])
def test_the_ablations_and_reduced_fig5s_tables_in_results_md_are_their_results_files(block):
    doc = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    assert verdict.doc_block(doc, block) == verdict.BLOCKS[block](FULL)
    assert "(not yet run)" not in verdict.doc_block(doc, block)


def test_a_sweeps_table_gives_each_models_mean_and_spread_over_seeds_at_each_eps(tmp_path):
    def cell(label, seed, accuracies, origin=None):
        robust = [{"eps": 0.0, "stage": "clean", "accuracy": 0.9, "n": 200}]
        robust += [{"eps": eps, "stage": "fgsm", "accuracy": a, "n": 200} for eps, a in accuracies.items()]
        return {"label": label, "config": {"method": "noise", "sigma": 0.5, "seed": seed}, "robust": robust,
                "train_seconds": 120.0 * (seed + 1)} | ({"training_from": origin} if origin else {})

    cells = {"a0": cell("noise σ=0.5", 0, {8 / 255: 0.5}, "fig4"), "a1": cell("noise σ=0.5", 1, {8 / 255: 0.7})}
    results = {"experiment": "sweep", "cells": cells, "evaluation": {"attacks": ["fgsm"], "limit": 200},
               "base_config": {"dataset": "cifar10", "model": "cifar-cnn", "epochs": 5, "train_limit": 10_000}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    table = verdict.sweep_markdown(tmp_path / "results.json")
    assert "| noise σ=0.5 | 90.0 ± 0.0 (2 seeds) | 60.0 ± 14.1 (2 seeds) | 3.0 | fig4, this sweep |" in table
    # without eps = 0 among the budgets, the clean accuracy comes from each budget's first stage
    for record in cells.values():
        record["robust"] = [row for row in record["robust"] if row["eps"] > 0]
        record["robust"].insert(0, {"eps": 8 / 255, "stage": "clean", "accuracy": 0.9, "n": 200})
    (tmp_path / "results.json").write_text(json.dumps(results))
    table = verdict.sweep_markdown(tmp_path / "results.json")
    assert "| noise σ=0.5 | 90.0 ± 0.0 (2 seeds) | 60.0 ± 14.1 (2 seeds) | 3.0 | fig4, this sweep |" in table
    assert "ε = 8/255" in table and "5 epochs on 10,000 training images" in table and "first 200 test" in table
    assert verdict.sweep_markdown(tmp_path / "nothing.json") == "(not yet run)"


def test_every_number_in_the_robustness_rows_is_in_the_results_files():
    table = verdict.fig4_table(FULL)
    assert table is not None, "the full-scale Fig. 4 results are committed"
    curves = verdict.summarize_curves(table)
    rows = verdict.verdict_rows(FULL)
    measured = {f"{100 * value:.1f}" for value in pd.concat([curves["mean"], curves["std"]])}
    measured |= {f"{100 * value:.1f}" for value in verdict.clean_accuracies(table)[["mean", "std"]].to_numpy().ravel()}
    robustness = [row for row in rows if row["claim"].startswith(("Noise training is as robust", "Robustness grows"))]
    assert robustness
    for row in robustness:
        if row["word"] == "not yet run":
            continue
        numbers = [token for token in row["evidence"].replace(";", " ").replace("(", " ").split()
                   if token.replace(".", "", 1).isdigit() and "." in token]
        assert numbers and set(numbers) <= measured, (row, sorted(set(numbers) - measured))


def test_the_shipped_curves_are_the_committed_results():
    shipped = verdict.load_shipped_curves()
    fresh = pd.DataFrame(verdict.curves_payload(FULL)["curves"])
    pd.testing.assert_frame_equal(shipped.reset_index(drop=True), fresh.reset_index(drop=True), check_dtype=False)
    assert {"vanilla", "noise", "pgd_at"} <= set(shipped["method"])


def test_the_words_follow_the_stated_rules():
    def row(mean, std=0.0, seeds=3, n=1000):
        return pd.Series({"mean": mean, "std": std, "seeds": seeds, "n": n})

    assert verdict.clearly_above(row(0.90), row(0.60))
    assert not verdict.clearly_above(row(0.673, seeds=1), row(0.647, seeds=1))  # 2.6 points, binomial error 2.1
    assert not verdict.clearly_above(row(0.615), row(0.60))                      # under 2 points: never clear
    assert not verdict.clearly_above(row(0.70, std=0.08), row(0.64, std=0.08))   # seeds too spread


@pytest.mark.parametrize("payload, message", [
    (None, "is missing"),
    ("not json {", "cannot be read"),
    ({"format": "something-else", "version": 1, "curves": []}, "is not a noiselab curves file"),
    ({"format": verdict.CURVES_FORMAT, "version": 99, "curves": []}, "is version 99 .* reads version 1"),
    ({"format": verdict.CURVES_FORMAT, "version": 1, "curves": [{"label": "x"}]}, "lacks the columns"),
])
def test_a_missing_or_foreign_curves_file_names_the_fix(tmp_path, payload, message):
    path = tmp_path / "curves.json"
    if payload is not None:
        path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    with pytest.raises(ValueError, match=message) as error:
        verdict.load_shipped_curves(path)
    assert "python -m noiselab.experiments.verdict" in str(error.value)


def test_the_verdict_chart_draws_the_shipped_curves():
    from noiselab.charts.verdict import verdict_chart

    spec = verdict_chart(verdict.load_shipped_curves()).to_dict()
    values = next(iter(spec["datasets"].values()))
    assert {v["method"] for v in values} >= {"vanilla", "noise", "pgd_at"}
    with pytest.raises(ValueError, match="lacks the columns"):
        verdict_chart(pd.DataFrame({"label": ["a"]}))


def test_the_committed_weights_go_back_where_the_sweep_keeps_its_checkpoints(tmp_path):
    from noiselab.checkpoint import load_checkpoint
    from noiselab.experiments.sweep import cell_key, checkpoint_path

    (tmp_path / "fig4").mkdir()
    (tmp_path / "fig4" / "results.json").write_bytes((FULL / "fig4" / "results.json").read_bytes())
    weights = REPO / "docs" / "results" / "weights"
    restored = verdict.restore_weights(weights, tmp_path)
    assert len([path for path in restored if (tmp_path / "fig4") in path.parents]) == len(list(weights.glob("*.pt")))
    assert {path.name for path in restored if (tmp_path / "fig7") in path.parents} == {
        path.name for path in (weights / "fig7").glob("*.pt")}
    cells = json.loads((FULL / "fig4" / "results.json").read_text())["cells"]
    for cell in cells.values():
        target = checkpoint_path(tmp_path / "fig4", cell_key(cell["overrides"]))
        name = verdict.weights_name(cell["label"], cell["config"]["seed"])
        assert target.is_file() == (weights / name).is_file()
        if target.is_file():
            state = load_checkpoint(target)
            assert state["config"]["method"] == cell["config"]["method"] and "optimizer" not in state
    assert verdict.restore_weights(weights, tmp_path) == []  # what is there is kept


def test_restoring_a_model_under_another_cells_name_is_refused(tmp_path):
    (tmp_path / "fig4").mkdir()
    (tmp_path / "fig4" / "results.json").write_bytes((FULL / "fig4" / "results.json").read_bytes())
    foreign = tmp_path / "weights"
    foreign.mkdir()
    source = REPO / "docs" / "results" / "weights" / "vanilla-seed0.pt"
    (foreign / "noise-sigma0.3-seed0.pt").write_bytes(source.read_bytes())
    with pytest.raises(ValueError, match=r"noise-sigma0.3-seed0.pt was trained with other settings .*method"):
        verdict.restore_weights(foreign, tmp_path)


def _write_sweep(folder, name, cells):
    (folder / name).mkdir(parents=True)
    (folder / name / "results.json").write_text(json.dumps({"experiment": name, "cells": cells}))


def _clean_cell(method, knob, seed, accuracy):
    config = {"method": method, "seed": seed, **({"sigma": knob} if method == "noise" else {"eps": knob})}
    return {"label": f"{method} {knob}", "config": config,
            "robust": [{"eps": 0.0, "stage": "clean", "accuracy": accuracy, "n": 10_000}]}


@pytest.mark.parametrize("noise, adversarial, word", [
    ({0.1: 0.99, 0.8: 0.95}, {0.05: 0.99, 0.4: 0.93}, "holds"),
    ({0.1: 0.99, 0.8: 0.95}, {0.05: 0.99, 0.4: 0.985}, "partly"),
    ({0.1: 0.99, 0.8: 0.99}, {0.05: 0.99, 0.4: 0.93}, "does not hold"),
    ({0.1: 0.99, 0.8: 0.95}, {0.3: 0.98}, "not yet run"),
])
def test_the_clean_accuracy_row_follows_its_rule_on_fig6s_grid(tmp_path, noise, adversarial, word):
    cells = {}
    for seed in range(3):
        for sigma, accuracy in {0.0: 0.2, **noise}.items():
            cells[f"noise {sigma} {seed}"] = _clean_cell("noise", sigma, seed, accuracy)
        for eps, accuracy in adversarial.items():
            cells[f"at {eps} {seed}"] = _clean_cell("pgd_at", eps, seed, accuracy)
    _write_sweep(tmp_path, "fig6", cells)
    row = next(r for r in verdict.verdict_rows(tmp_path) if r["claim"].startswith("Clean accuracy"))
    assert row["word"] == word, row
    assert "σ = 0 20.0 ± 0.0 (3 seeds)" in row["evidence"]  # reported beside the trend, not in it


@pytest.mark.parametrize("model, bimodel, word", [
    ([1.9, 1.0, 0.72, 0.71], [1.9, 1.0, 0.80, 0.80], "holds"),
    ([1.9, 1.0, 0.72, 0.71], [2.0, 4.0, 6.0, 8.0], "partly"),
    ([1.9, 1.0, 0.50, 0.25], [2.0, 4.0, 6.0, 8.0], "does not hold"),
    ([1.9, 1.5, 1.50, 1.50], [1.9, 1.5, 1.50, 1.50], "does not hold"),  # settled, but far from σ*
])
def test_the_learnable_sigma_row_follows_its_rule(tmp_path, model, bimodel, word):
    def cell(alpha, seed, sigmas):
        return {"config": {"bimodel_alpha": alpha, "sigma": 1.9, "seed": seed},
                "history": [{"sigma": s, "test_accuracy": 0.99} for s in sigmas]}

    _write_sweep(tmp_path, "table1", {f"{alpha} {seed}": cell(alpha, seed, sigmas) for seed in range(3)
                                      for alpha, sigmas in ((0.0, model), (0.25, bimodel))})
    row = next(r for r in verdict.verdict_rows(tmp_path) if r["claim"].startswith("Learnable σ"))
    assert row["word"] == word, row


def test_fig7s_models_go_back_under_their_own_names(tmp_path):
    (tmp_path / "fig4").mkdir()
    (tmp_path / "fig4" / "results.json").write_text(json.dumps({"experiment": "fig4", "cells": {}}))
    weights = tmp_path / "weights"
    (weights / "fig7").mkdir(parents=True)
    source = REPO / "docs" / "results" / "weights" / "noise-sigma0.8-seed0.pt"
    (weights / "fig7" / "noise-sigma0.8.pt").write_bytes(source.read_bytes())
    restored = verdict.restore_weights(weights, tmp_path)
    assert restored == [tmp_path / "fig7" / "checkpoints" / "noise-sigma0.8.pt"]
    assert restored[0].read_bytes() == source.read_bytes()
    assert verdict.restore_weights(weights, tmp_path) == []


@pytest.mark.parametrize("closed_form, word", [
    ({0.1: 0.40, 0.2: 0.05}, "holds"),          # at or below EOT
    ({0.1: 0.43, 0.2: 0.06}, "holds"),          # above, but not clearly (under 2 standard errors at n = 200)
    ({0.1: 0.60, 0.2: 0.06}, "partly"),         # clearly above at ε = 0.1 only
    ({0.1: 0.60, 0.2: 0.30}, "does not hold"),
])
def test_the_adaptive_attack_row_follows_its_rule(tmp_path, closed_form, word):
    eot = {0.1: 0.42, 0.2: 0.05}

    def row(attack, name, eps, accuracy, seconds):
        return {"model": "noise σ=0.8", "train_method": "noise", "sigma": 0.8, "seed": 0, "attack": attack,
                "attack_name": name, "eps": eps, "accuracy": accuracy, "n": 200, "seconds_per_example": seconds}

    rows = [row("clean", "naive_fgsm", 0.0, 0.99, 0.0)]
    for eps in eot:
        rows += [row("EOT-PGD k=1", "eot_pgd", eps, eot[eps] + 0.2, 0.01),
                 row("EOT-PGD k=32", "eot_pgd", eps, eot[eps], 1.0),
                 row("closed-form FGSM", "closed_form_fgsm", eps, 0.9, 0.001),
                 row("closed-form PGD", "closed_form_pgd", eps, closed_form[eps], 0.2)]
    rows.append({**row("PGD", "pgd", 0.1, 0.0, 0.1), "model": "vanilla", "train_method": "vanilla"})
    preset = {"samples": 256, "eps": [0.0, 0.1, 0.2], "sigmas": [0.8], "defense_methods": ["noise"],
              "attacks": [["x", "y", {}]] * 4, "undefended_attacks": [["PGD", "pgd", {}]] * 2}
    (tmp_path / "fig7").mkdir()
    (tmp_path / "fig7" / "results.json").write_text(json.dumps({"rows": rows[:-1], "preset": preset}))
    partial = next(r for r in verdict.verdict_rows(tmp_path) if r["claim"].startswith("The closed-form"))
    assert partial["word"] == "not yet run", partial  # a grid part-way through is not judged
    assert "running: 9 of its 14 rows" in partial["evidence"]
    rows += [{**rows[-1], "eps": 0.0}, {**rows[-1], "eps": 0.2}, {**rows[-1], "attack": "FGSM", "eps": 0.2},
             {**rows[-1], "attack": "FGSM"}]
    (tmp_path / "fig7" / "results.json").write_text(json.dumps({"rows": rows, "preset": preset}))
    verdict_row = next(r for r in verdict.verdict_rows(tmp_path) if r["claim"].startswith("The closed-form"))
    assert verdict_row["word"] == word, verdict_row
    matched = {"holds": 2, "partly": 1, "does not hold": 0}[word]
    assert f"at {matched} of 2 (model, ε) pairs (200 test digits, 256 votes a prediction, 1 seed)" in verdict_row[
        "evidence"]
    # the strongest of each kind is the one compared, and its cost beside: 0.2 s against EOT-PGD k=32's 1 s
    assert "closed-form PGD" in verdict_row["evidence"] and "EOT-PGD k=32 42.0" in verdict_row["evidence"]
    assert "0.2× the seconds" in verdict_row["evidence"]


def test_the_loss_ablations_own_trainings_are_kept_as_weights_and_go_back(tmp_path):
    import torch

    from noiselab.checkpoint import load_checkpoint
    from noiselab.experiments.sweep import cell_key, checkpoint_path

    source = REPO / "docs" / "results" / "weights" / "noise-sigma0.3-seed0.pt"
    config = load_checkpoint(source)["config"]
    own = {"overrides": {"method": "noise", "sigma": 0.3, "loss": "stochastic", "seed": 0},
           "label": "noise σ=0.3 loss=stochastic", "config": config}
    adopted = {"overrides": {"method": "vanilla", "seed": 0}, "label": "vanilla", "config": config,
               "training_from": "fig4"}
    results = json.dumps({"experiment": "losses", "cells": {"a": own, "b": adopted}})
    for run in ("made", "fresh"):
        (tmp_path / run / "losses").mkdir(parents=True)
        (tmp_path / run / "losses" / "results.json").write_text(results)
    for cell in (own, adopted):
        target = checkpoint_path(tmp_path / "made" / "losses", cell_key(cell["overrides"]))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())

    # Fig. 7's checkpoints: one a copy of a Fig. 4 checkpoint (adopted), one its own training
    other = REPO / "docs" / "results" / "weights" / "vanilla-seed0.pt"
    for folder, name, origin in [("fig4", "abc.pt", source), ("fig7", "noise-sigma0.8.pt", source),
                                 ("fig7", "sampled-sigma0.8.pt", other)]:
        (tmp_path / "made" / folder / "checkpoints").mkdir(parents=True, exist_ok=True)
        (tmp_path / "made" / folder / "checkpoints" / name).write_bytes(origin.read_bytes())

    written = verdict.export_weights(tmp_path / "made", tmp_path / "weights")
    # an adopted training is kept once, with the weights of the sweep that trained it: only each sweep's own
    assert written == [tmp_path / "weights" / "losses" / "noise-sigma0.3-loss-stochastic-seed0.pt",
                       tmp_path / "weights" / "fig7" / "sampled-sigma0.8.pt"]
    restored = verdict.restore_weights(tmp_path / "weights", tmp_path / "fresh")
    assert restored == [checkpoint_path(tmp_path / "fresh" / "losses", cell_key(own["overrides"])),
                        tmp_path / "fresh" / "fig7" / "checkpoints" / "sampled-sigma0.8.pt"]
    for key, tensor in load_checkpoint(source)["model"].items():
        assert torch.equal(load_checkpoint(restored[0])["model"][key], tensor)


def test_each_recipe_cell_has_its_own_weights_file_and_they_go_back_to_their_cells(tmp_path):
    cells = json.loads((FULL / "recipe" / "results.json").read_text())["cells"]
    names = [verdict.overrides_weights_name(cell["overrides"]) for cell in cells.values()]
    assert len(set(names)) == len(names)  # the labels alone repeat ('noise σ=0.5' is two rules' cells)
    assert verdict.overrides_weights_name({"method": "noise", "sigma": 0.6, "noise_at": "input", "seed": 2}) == \
        "noise-noise-at-input-sigma-0.6-seed2.pt"
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "results.json").write_bytes((FULL / "recipe" / "results.json").read_bytes())
    weights = REPO / "docs" / "results" / "weights"
    restored = verdict.restore_weights(weights, tmp_path)
    own = [cell for cell in cells.values() if not cell.get("training_from")]
    kept = [cell for cell in own if (weights / "recipe" / verdict.overrides_weights_name(cell["overrides"])).is_file()]
    assert {cell["overrides"]["seed"] for cell in kept} == {0} and len(kept) == 5  # seed 0 of each own variant
    restored = [path for path in restored if (tmp_path / "recipe") in path.parents]
    assert len(restored) == len(kept) == len(list((weights / "recipe").glob("*.pt")))
    from noiselab.checkpoint import load_checkpoint
    from noiselab.experiments.sweep import cell_key, checkpoint_path
    for cell in kept:
        state = load_checkpoint(checkpoint_path(tmp_path / "recipe", cell_key(cell["overrides"])))
        assert {k: state["config"].get(k) for k in cell["overrides"]} == cell["overrides"]


@pytest.mark.parametrize("sweep", ["fig4", "losses", "recipe"])
def test_the_full_preset_still_trains_as_the_committed_sweeps_were_trained(sweep):
    """`noiselab reproduce` continues the committed full-scale sweeps only while the full preset's training settings
    are theirs (a sweep refuses cells made under other settings): the presets keep the recipe those were trained with
    (Adam at a constant 1e-3), not TrainConfig's newer one-cycle default."""
    from dataclasses import asdict

    from noiselab.experiments.presets import COMMITTED_RECIPE, mnist_preset
    from noiselab.train import TrainConfig, changed_settings

    results = json.loads((FULL / sweep / "results.json").read_text())
    preset = mnist_preset(False, "../shared/data/mnist", "cpu").base
    assert changed_settings(TrainConfig.with_defaults(results["base_config"]), asdict(preset)) == []
    assert {key: getattr(preset, key) for key in COMMITTED_RECIPE} == COMMITTED_RECIPE != {
        key: getattr(TrainConfig(), key) for key in COMMITTED_RECIPE}
