"""Issue 7's controls: the mean path under each rule set, the loss ablation and the noise placement (core,
training, and the reproduce experiments through the real CLI)."""

import copy
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from torch import nn

from noiselab import monte_carlo, propagate
from noiselab.layerwise import mean_path, mean_path_gaps
from noiselab.loss import stochastic_loss_terms
from noiselab.models import DemoCNN
from noiselab.propagate import Rules, preactivation_scale, propagate_unchecked, sequential_layers
from noiselab.train import NOISE_LOSSES, TrainConfig, _Context, _noise, _sampled, train


@pytest.fixture(scope="module")
def small_model_and_digits():
    torch.manual_seed(0)
    return DemoCNN().eval(), torch.rand(6, 1, 28, 28)


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5])
def test_under_the_paper_rules_the_propagated_mean_is_the_network_whatever_sigma(small_model_and_digits, sigma):
    model, x = small_model_and_digits
    path = mean_path(model, x, sigma, relu="paper", pool="paper")
    gaps = mean_path_gaps(model, x, sigma, relu="paper", pool="paper")
    assert gaps == path.gaps and path.agreement == 1.0
    assert len(gaps) == len(list(model)) and [g.kind for g in gaps][:2] == ["Conv2d", "ReLU"]
    assert all(g.gap == 0.0 for g in gaps)  # exactly: the same ops on the same numbers


def test_under_the_moment_rules_the_mean_moves_with_sigma(small_model_and_digits):
    model, x = small_model_and_digits
    at = {s: mean_path_gaps(model, x, s, relu="moment", pool="clark") for s in (0.0, 0.3, 1.0)}
    assert at[0.3][0].gap == 0.0  # the noise's mean is 0: the first pre-activation's mean is the network's
    assert max(g.gap for g in at[0.0]) < 1e-5  # no noise: only the variance floor's trace
    output = {s: gaps[-1].gap for s, gaps in at.items()}
    assert 0.01 < output[0.3] < output[1.0], output


def test_mean_path_rejects_bad_input(small_model_and_digits):
    model, x = small_model_and_digits
    with pytest.raises(ValueError, match="sigma"):
        mean_path_gaps(model, x, -0.5)
    with pytest.raises(ValueError, match="relu"):
        mean_path_gaps(model, x, 0.5, relu="laplace")


@pytest.mark.slow
def test_reproduce_meanpath_quick_writes_data_and_chart(tmp_path):
    # 20 test digits, not the quick preset's 100: the same grid of models, rules and sigmas, 5x fewer images
    result = subprocess.run([sys.executable, "-m", "noiselab.cli", "reproduce", "meanpath", "--quick", "--out",
                             str(tmp_path), "--device", "cpu", "--test-limit", "20"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "meanpath"
    assert json.loads((folder / "results.json").read_text())["images"] == 20
    table = pd.read_csv(folder / "meanpath.csv")
    output = table[table["is_output"]]
    assert set(output["rules"]) == {"paper/paper", "moment/paper", "paper/clark", "moment/clark"}
    assert (output[output.rules == "paper/paper"]["gap"] == 0).all()
    assert (output[output.rules == "paper/paper"]["agreement"] == 1).all()
    moment = output[(output.rules == "moment/clark") & (output.sigma == 1.0)]
    assert len(moment) == 4 and (moment["gap"] > 0.05).all()  # the four starter models
    assert json.loads((folder / "results.json").read_text())["environment"]["torch"]
    assert (folder / "meanpath.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cdn.jsdelivr" not in (folder / "meanpath.html").read_text()


# ---- noise placement: the closed form with the noise on the input ------------------------------------------------

def test_input_noise_through_linear_layers_follows_the_diagonal_closed_form():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.Linear(7, 3)).double()
    x = torch.rand(5, 1, 3, 4, dtype=torch.float64)
    w1, w2 = model[1].weight, model[2].weight
    # after the first layer the noise is N(0, 0.16 * W1 W1^T): the first layer's variance is exact
    _, layers = propagate(model, x, 0.4, noise_at="input", return_layers=True)
    torch.testing.assert_close(layers[1].var, (0.16 * w1.square().sum(1)).expand(5, 7))
    # the second treats its inputs as independent (the diagonal Gaussian the whole closed form carries) ...
    out = propagate(model, x, 0.4, noise_at="input")
    torch.testing.assert_close(out.mean, model(x))
    torch.testing.assert_close(out.var, (0.16 * w2.square() @ w1.square().sum(1)).expand(5, 3))
    # ... while sampling sees the correlations: x + nu's output variance is 0.16 * diag((W2 W1)(W2 W1)^T)
    sampled = monte_carlo(model, x, 0.4, samples=40_000, seed=0, noise_at="input")
    torch.testing.assert_close(sampled.var, (0.16 * (w2 @ w1).square().sum(1)).expand(5, 3), rtol=0.03, atol=0)
    # at the pre-activation the same sigma is another noise: its variance skips W1
    preact = propagate(model, x, 0.4, noise_at="preact")
    torch.testing.assert_close(preact.var, (0.16 * w2.square().sum(1)).expand(5, 3))


@pytest.mark.slow
def test_input_noise_enters_a_convolution_with_its_squared_weights(small_model_and_digits):
    model, x = small_model_and_digits
    _, layers = propagate(model, x, 0.3, relu="moment", pool="clark", return_layers=True, noise_at="input")
    _, sampled = monte_carlo(model, x, 0.3, samples=4000, seed=0, return_layers=True, noise_at="input")
    assert [layer.name for layer in layers] == [layer.name for layer in sampled]
    conv = model[0]
    expected = conv._conv_forward(torch.full_like(x, 0.09), conv.weight.square(), None)
    torch.testing.assert_close(layers[0].var, expected)
    relative = (layers[0].var - sampled[0].var).abs().sum() / sampled[0].var.sum()
    assert relative < 0.05, float(relative)


def test_a_bad_noise_placement_is_named():
    model = DemoCNN()
    with pytest.raises(ValueError, match="noise_at must be one of"):
        propagate(model, torch.rand(2, 1, 28, 28), 0.5, noise_at="weights")
    with pytest.raises(ValueError, match="noise_at"):
        TrainConfig(method="noise", noise_at="output").validate()
    with pytest.raises(ValueError, match="applies to the methods"):
        TrainConfig(method="pgd_at", noise_at="input").validate()


# ---- the loss ablation's training objectives ---------------------------------------------------------------------

def _context(model, **settings):
    config = TrainConfig(method="noise", **settings)
    return _Context(model, sequential_layers(model), config.sigma, config, torch.Generator().manual_seed(0), 0.0)


@pytest.mark.parametrize("loss", sorted(NOISE_LOSSES))
def test_each_training_loss_is_the_term_it_names(small_model_and_digits, loss):
    model, x = small_model_and_digits
    y = torch.arange(6) % 10
    value, logits = _noise(_context(model, loss=loss, sigma=0.7, relu="moment", pool="clark"), x, y)
    out = propagate(model, x, 0.7, relu="moment", pool="clark")
    mse, prob = stochastic_loss_terms(out.mean, out.var, y)
    expected = {"stochastic": (mse - prob).mean(), "mse": mse.mean(), "prob": -prob.mean(),
                "ce_mean": torch.nn.functional.cross_entropy(out.mean, y)}[loss]
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(logits, out.mean)


@pytest.mark.slow
def test_under_the_paper_rules_cross_entropy_on_the_means_is_vanilla_training():
    # the mean path of the paper's rules is the network itself (test above), so this 'noise' training is vanilla
    quick = dict(model="demo-cnn", train_limit=256, batch_size=64, epochs=1, device="cpu")
    vanilla = train(TrainConfig(method="vanilla", **quick)).model.state_dict()
    noise = train(TrainConfig(method="noise", loss="ce_mean", sigma=1.0, **quick)).model.state_dict()
    for key in vanilla:
        torch.testing.assert_close(noise[key], vanilla[key])
    # ... while under the moment rules the noise reaches the means, and the weights differ
    moment = train(TrainConfig(method="noise", loss="ce_mean", sigma=1.0, relu="moment", **quick)).model
    assert not torch.allclose(moment.state_dict()["0.weight"], vanilla["0.weight"])


@pytest.mark.slow
def test_under_the_paper_rules_the_mse_term_alone_does_not_see_sigma():
    # its MSE term compares the propagated mean, which is the network's output, with the label: no σ in it
    quick = dict(model="demo-cnn", train_limit=256, batch_size=64, epochs=1, device="cpu", loss="mse")
    low = train(TrainConfig(method="noise", sigma=0.1, **quick)).model.state_dict()
    high = train(TrainConfig(method="noise", sigma=2.5, **quick)).model.state_dict()
    for key in low:
        torch.testing.assert_close(high[key], low[key])
    # the full loss does see it, through the variances in its probability term
    full = train(TrainConfig(method="noise", sigma=2.5, **{**quick, "loss": "stochastic"})).model.state_dict()
    assert not torch.allclose(full["0.weight"], low["0.weight"])


def test_a_loss_other_than_the_stochastic_one_is_for_the_noise_method_only():
    with pytest.raises(ValueError, match="unknown loss"):
        TrainConfig(method="noise", loss="hinge").validate()
    with pytest.raises(ValueError, match="noise method only"):
        TrainConfig(method="sampled", loss="mse").validate()


def test_sampled_input_noise_is_added_to_the_input(small_model_and_digits):
    model, x = small_model_and_digits
    y = torch.zeros(6, dtype=torch.long)
    ctx = _context(model, sigma=0.5, noise_at="input")
    ctx.config.method = "sampled"
    _, logits = _sampled(ctx, x, y)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits, model(x + 0.5 * noise))


def test_a_checkpoint_written_before_the_new_settings_resumes(tmp_path):
    from noiselab.checkpoint import load_checkpoint, save_checkpoint

    config = TrainConfig(method="vanilla", model="demo-cnn", train_limit=128, batch_size=64, epochs=2, device="cpu")
    checkpoint = tmp_path / "old.pt"
    stop = type("StopAfterOne", (), {"calls": 0, "is_set": lambda self: (setattr(self, "calls", self.calls + 1)
                                                                         or self.calls > 2)})()
    assert train(config, checkpoint=checkpoint, stop=stop).stopped
    state = load_checkpoint(checkpoint)
    for key in ("loss", "noise_at"):  # as written by noiselab before the ablations
        del state["config"][key]
    save_checkpoint(checkpoint, state)
    resumed = train(config, checkpoint=checkpoint, resume=True)
    assert not resumed.stopped and [row["epoch"] for row in resumed.history] == [1, 2]


# ---- the two experiments through the CLI -------------------------------------------------------------------------

# the quick presets' grids (every cell, every seed) at a smaller scale: the same code paths, in seconds rather than a
# minute each (`reproduce --quick` itself is run whole by tests/test_experiments.py)
SMALL = ("--train-limit", "640", "--epochs", "1", "--test-limit", "100")


def _reproduce(name, out, scale=SMALL):
    result = subprocess.run([sys.executable, "-m", "noiselab.cli", "reproduce", name, "--quick", "--out", str(out),
                             "--device", "cpu", *scale], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = out / name
    assert (folder / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cdn.jsdelivr" not in (folder / f"{name}.html").read_text()
    return folder, json.loads((folder / "results.json").read_text())


@pytest.mark.slow
def test_reproduce_losses_quick_runs_every_loss_with_three_seeds(tmp_path):
    folder, results = _reproduce("losses", tmp_path)
    summary = pd.read_csv(folder / "losses.csv")
    assert set(summary["label"]) == {"vanilla", "noise σ=0.5", "noise σ=0.5 loss=mse", "noise σ=0.5 loss=prob",
                                     "noise σ=0.5 loss=ce_mean"}
    assert (summary["seeds"] == 3).all() and set(summary["eps"]) == {0.0, 0.1, 0.2, 0.3}
    assert len(results["cells"]) == 15 and results["evaluation"]["attacks"]
    # the paper's rules: cross-entropy on the propagated means trains the very same network as vanilla
    by_label = summary.set_index(["label", "eps"])["mean"]
    for eps in (0.0, 0.1, 0.2, 0.3):
        assert by_label[("noise σ=0.5 loss=ce_mean", eps)] == by_label[("vanilla", eps)]
    # ... and the other losses train other networks
    assert by_label[("noise σ=0.5 loss=mse", 0.1)] != by_label[("vanilla", 0.1)]


@pytest.mark.slow
def test_reproduce_placement_quick_puts_both_placements_on_one_clean_accuracy_axis(tmp_path):
    folder, results = _reproduce("placement", tmp_path)
    summary = pd.read_csv(folder / "placement.csv")
    assert set(summary["placement"]) == {"preact", "input", "none (vanilla)"}
    assert (summary["seeds"] == 3).all() and 0.0 not in set(summary["eps"])
    assert len(results["cells"]) == 3 * (1 + 3 + 3)
    assert summary["clean_mean"].between(0.1, 1).all() and summary["robust_mean"].between(0, 1).all()
    # robust accuracy never exceeds clean accuracy for the same models
    assert (summary["robust_mean"] <= summary["clean_mean"] + 1e-9).all()
    assert {c["config"]["noise_at"] for c in results["cells"].values() if c["config"]["method"] == "noise"} == \
        {"preact", "input"}


# ---- the scale of sigma ------------------------------------------------------------------------------------------

def test_preactivation_scale_is_each_channels_std_over_batch_and_positions():
    pre = torch.randn(8, 3, 5, 5) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)
    scale = preactivation_scale(pre)
    assert scale.shape == (1, 3, 1, 1) and not scale.requires_grad
    torch.testing.assert_close(scale.flatten(), pre.transpose(0, 1).reshape(3, -1).std(1))
    assert preactivation_scale(torch.randn(16, 4)).shape == (1, 4)


@pytest.mark.parametrize("relu", ["paper", "moment"])
def test_relative_sigma_cannot_be_outgrown_by_rescaling_the_first_layer(relu):
    # k * first layer, then the next layer / k: the same network (ReLU is positively homogeneous) ...
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    rescaled = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        rescaled[0].weight.copy_(model[0].weight * 10)
        rescaled[0].bias.copy_(model[0].bias * 10)
        rescaled[2].weight.copy_(model[2].weight / 10)
        rescaled[2].bias.copy_(model[2].bias)
    x = torch.rand(9, 6, dtype=torch.float64)
    torch.testing.assert_close(rescaled(x), model(x))

    def out(net, relative):
        return propagate_unchecked(sequential_layers(net), x, 0.5, Rules(relu, "paper"), relative=relative)[0]

    # ... for which the absolute sigma is 10 times smaller relative to the signal: another output variance
    assert not torch.allclose(out(rescaled, False).var, out(model, False).var, rtol=0.1)
    # while the relative sigma is the same noise for both: the same output Gaussian
    torch.testing.assert_close(out(rescaled, True).mean, out(model, True).mean)
    torch.testing.assert_close(out(rescaled, True).var, out(model, True).var)


def test_a_bad_sigma_mode_is_named():
    with pytest.raises(ValueError, match="sigma_mode must be one of"):
        TrainConfig(method="noise", sigma_mode="per-pixel").validate()
    with pytest.raises(ValueError, match="applies to the methods"):
        TrainConfig(method="vanilla", sigma_mode="relative").validate()


@pytest.mark.parametrize("method", ["noise", "sampled"])
def test_relative_training_records_the_first_layers_scale(method):
    progress = []
    result = train(TrainConfig(method=method, sigma_mode="relative", sigma=0.5, model="demo-cnn", train_limit=256,
                               batch_size=64, epochs=2, device="cpu"), progress=progress.append)
    rows = result.history
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["weight_norm"] > 0 and r["preact_std"] > 0 for r in rows)
    assert rows[-1]["weight_norm"] == pytest.approx(float(result.model[0].weight.detach().norm()))
    assert progress[-1].weight_norm == pytest.approx(rows[-1]["weight_norm"])
    assert progress[0].weight_norm != progress[-1].weight_norm


@pytest.mark.slow
def test_reproduce_sigmascale_quick_tracks_the_first_layer_and_both_sigma_modes(tmp_path):
    folder, results = _reproduce("sigmascale", tmp_path, SMALL[:2] + ("--epochs", "2") + SMALL[4:])
    assert len(results["cells"]) == 3 * (1 + 3 + 3)
    training = pd.read_csv(folder / "sigmascale_training.csv")
    assert set(training["mode"]) == {"absolute", "relative", "none (vanilla)"}
    assert set(training["epoch"]) == {1, 2}  # over training: the first layer's scale per epoch
    relative = training[training["mode"] == "relative"]
    assert (relative["relative_noise"] == relative["sigma"]).all()
    absolute = training[training["mode"] == "absolute"]
    torch.testing.assert_close(torch.tensor(absolute["relative_noise"].values),
                               torch.tensor((absolute["sigma"] / absolute["preact_std"]).values))
    summary = pd.read_csv(folder / "sigmascale.csv")
    assert (summary["seeds"] == 3).all() and set(summary["mode"]) == set(training["mode"])


@pytest.mark.slow
def test_reproduce_attackloss_quick_compares_the_objectives_beside_eot(tmp_path):
    # 40 test digits, not SMALL's 100: every objective, model and seed still attacked (each attack is the cost here)
    folder, results = _reproduce("attackloss", tmp_path, SMALL[:4] + ("--test-limit", "40"))
    summary = pd.read_csv(folder / "attackloss.csv")
    assert set(summary["model"]) == {"noise σ=0.8", "sampled σ=0.8"}
    attacked = summary[summary["eps"] > 0]
    assert set(attacked["attack"]) == {"closed-form PGD (stochastic)", "closed-form PGD (probability)",
                                       "closed-form PGD (mean_ce)", "EOT-PGD k=4"}
    assert (summary["seeds"] == 3).all()
    assert {row["seed"] for row in results["rows"]} == {0, 1, 2}
    answers = json.loads((folder / "summary.json").read_text())
    assert sum(answers["strongest_counts"].values()) >= 4
    # the pick: the closed-form objective with the lowest accuracy averaged over the defenses and budgets
    closed_only = attacked[attacked["attack"].str.startswith("closed-form")]
    averages = closed_only.groupby("attack")["mean"].mean()
    assert answers["pick"] == averages.idxmin()
    assert answers["margin_over_next"] == pytest.approx(sorted(averages)[1] - sorted(averages)[0])
    # the pick is where the strongest objective's accuracy is reported: the lowest closed-form mean per cell
    for row in answers["per_model_and_eps"]:
        closed = attacked[(attacked["model"] == row["model"]) & (attacked["eps"] == row["eps"])
                          & attacked["attack"].str.startswith("closed-form")]
        assert row["accuracy"] == pytest.approx(closed["mean"].min())


def test_the_losss_sigma_gradient_matches_a_finite_difference(small_model_and_digits):
    from noiselab.layerwise import loss_sigma_gradient
    from noiselab.loss import stochastic_loss

    model, x = small_model_and_digits
    model, x = copy.deepcopy(model).double(), x.double()  # a copy: the fixture's model stays float32
    y = torch.arange(6) % 10

    @torch.no_grad()
    def loss(sigma):
        out = propagate(model, x, sigma, relu="moment", pool="clark")
        return float(stochastic_loss(out.mean, out.var, y))

    for sigma, gradient in loss_sigma_gradient(model, x, y, [0.3, 1.9], "moment", "clark"):
        h = 1e-5
        assert gradient == pytest.approx((loss(sigma + h) - loss(sigma - h)) / (2 * h), rel=1e-4, abs=1e-9)


@pytest.mark.slow
def test_reproduce_recipe_quick_ranks_noise_only_variants_under_the_constraints(tmp_path):
    from noiselab.experiments.ablations import RECIPE_REFERENCES, RECIPE_VARIANTS

    folder, results = _reproduce("recipe", tmp_path)
    summary = pd.read_csv(folder / "recipe.csv")
    assert len(results["cells"]) == 3 * (len(RECIPE_VARIANTS) + len(RECIPE_REFERENCES))
    assert (summary["seeds"] == 3).all() and set(results["evaluation"]["eps"]) == {0.0, 0.1, 0.3}
    assert summary.set_index("variant").loc["vanilla", "cost_ratio"] == pytest.approx(1.0)
    answers = json.loads((folder / "summary.json").read_text())
    vanilla_clean = summary.set_index("variant").loc["vanilla", "clean_mean"]
    assert answers["clean_floor"] == pytest.approx(vanilla_clean - 0.02)
    # eligibility is exactly the constraints, and only noise-only variants compete
    expected = summary["noise_only"] & (summary["clean_mean"] >= answers["clean_floor"]) & (summary["cost_ratio"] <= 2)
    assert (summary["eligible"] == expected).all()
    for eps in ("0.1", "0.3"):
        best = answers["best"][eps]
        eligible = summary[summary["eligible"]]
        if len(eligible):
            assert best["robust"] == pytest.approx(eligible[f"robust_{eps}_mean"].max())
        pgd = summary.set_index("variant").loc["PGD-AT ε=0.3"]
        assert best["pgd_at"] == pytest.approx(pgd[f"robust_{eps}_mean"])


def test_presets_scale_between_quick_and_full_when_asked():
    from noiselab.experiments.adaptive import attack_loss_preset
    from noiselab.experiments.presets import preset_overrides
    from noiselab.experiments.reproduce import sweep_grids

    with preset_overrides(epochs=3, train_limit=500, test_limit=20):
        grids = sweep_grids(quick=True, device="cpu")
        adaptive = attack_loss_preset(True, None, "cpu")
    # every grid, those that pick their own epochs (table1, sigmascale) included
    for name, (base, _, evaluation) in grids.items():
        assert (base.epochs, base.train_limit, evaluation.limit) == (3, 500, 20), name
    assert (adaptive.base.epochs, adaptive.base.train_limit, adaptive.limit) == (3, 500, 20)
    # outside the block the presets are their own again
    assert sweep_grids(quick=True)["sigmascale"][0].epochs == 4 and attack_loss_preset(True, None, "cpu").limit == 100
    with pytest.raises(ValueError, match="integer >= 1"):
        with preset_overrides(epochs=0):
            pass


@pytest.mark.slow
def test_reproduce_with_a_scale_records_it_and_a_changed_scale_needs_its_own_folder(tmp_path):
    def run(*scale):
        return subprocess.run([sys.executable, "-m", "noiselab.cli", "reproduce", "losses", "--quick", "--out",
                               str(tmp_path), "--device", "cpu", *scale], capture_output=True, text=True, timeout=600)

    result = run("--epochs", "1", "--train-limit", "200", "--test-limit", "30")
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "losses" / "results.json").read_text())
    assert (results["base_config"]["epochs"], results["base_config"]["train_limit"]) == (1, 200)
    assert results["evaluation"]["limit"] == 30
    again = run("--epochs", "2", "--train-limit", "200", "--test-limit", "30")
    assert again.returncode == 2 and "other settings (epochs)" in again.stderr and "Traceback" not in again.stderr


def test_the_scale_and_sigma_gradient_helpers_name_bad_input(small_model_and_digits):
    from noiselab.layerwise import loss_sigma_gradient

    with pytest.raises(ValueError, match="at least 2 values per channel"):
        preactivation_scale(torch.randn(1, 4))  # one example of a Linear layer: no spread to take
    with pytest.raises(ValueError, match="batch of activations"):
        preactivation_scale(torch.randn(7))
    assert preactivation_scale(torch.randn(1, 3, 4, 4)).shape == (1, 3, 1, 1)  # one image still has positions
    model, x = small_model_and_digits
    y = torch.arange(6) % 10
    with pytest.raises(ValueError, match="sigma"):
        loss_sigma_gradient(model, x, y, [0.5, float("nan")])
    with pytest.raises(ValueError, match="sigma"):
        loss_sigma_gradient(model, x, y, [-0.1])
    with pytest.raises(ValueError, match="relu"):
        loss_sigma_gradient(model, x, y, [0.5], relu="laplace")
    with pytest.raises(ValueError):
        loss_sigma_gradient(model, x, torch.arange(3), [0.5])  # labels for another batch
    with pytest.raises(ValueError):
        loss_sigma_gradient(model, torch.rand(6, 3, 32, 32), y, [0.5])  # images of another shape
