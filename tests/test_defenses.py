"""The randomized defense and the attacks on it (closed form, EOT, naive), and Fig. 7 in quick mode."""

import pytest
import torch
from scipy import stats

from noiselab import monte_carlo
from noiselab.attacks import RANDOMIZED_ATTACKS, closed_form_fgsm, eot_pgd
from noiselab.attacks.closed_form import LOSSES as CLOSED_FORM_LOSSES
from noiselab.defenses import (
    closed_form_predict,
    noisy_logits,
    randomized_accuracy,
    randomized_predict,
    wilson_interval,
)
from noiselab.experiments.adaptive import attack_passes
from noiselab.loss import stochastic_loss
from noiselab.models import build
from noiselab.propagate import propagate


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = build("demo-cnn").eval()
    x = torch.rand(6, 1, 28, 28)
    y = torch.arange(6) % 10
    return model, x, y


def test_noisy_logits_without_noise_are_the_expectation_model(small):
    model, x, _ = small
    logits = noisy_logits(model, x, 0.0, draws=3)
    assert logits.shape == (3, 6, 10)
    torch.testing.assert_close(logits, model(x).expand(3, -1, -1))


def test_noisy_logits_average_to_the_monte_carlo_mean(small):
    model, x, _ = small
    # an independent reference: monte_carlo draws the same kind of noise with its own loop (other seed)
    model64 = build("demo-cnn").double().eval()
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    with torch.no_grad():
        sampled = noisy_logits(model64, x[:3].double(), 0.7, draws=1000, generator=torch.Generator().manual_seed(1))
    reference = monte_carlo(model64, x[:3].double(), 0.7, samples=1000, seed=2)
    difference_std = (2 * reference.var / 1000).sqrt()  # two independent means of 1,000 draws
    assert ((sampled.mean(0) - reference.mean).abs() < 6 * difference_std + 1e-9).all()


def test_wilson_interval_matches_scipy():
    for successes, trials in [(0, 10), (3, 10), (97, 100), (500, 1000)]:
        low, high = wilson_interval(torch.tensor(successes), trials)
        reference = stats.binomtest(successes, trials).proportion_ci(0.95, method="wilson")
        assert float(low) == pytest.approx(reference.low, abs=1e-9)
        assert float(high) == pytest.approx(reference.high, abs=1e-9)


def test_wilson_interval_rejects_impossible_counts():
    for successes, trials in [(1, 0), (-1, 10), (11, 10)]:
        with pytest.raises(ValueError, match="trials >= 1 and 0 <= successes <= trials"):
            wilson_interval(torch.tensor(successes), trials)
    with pytest.raises(ValueError, match="confidence must lie in"):
        wilson_interval(torch.tensor(3), 10, confidence=1.0)


def test_without_noise_the_vote_is_unanimous(small):
    model, x, _ = small
    prediction = randomized_predict(model, x, 0.0, samples=16, seed=0)
    assert torch.equal(prediction.labels, model(x).argmax(1))
    assert (prediction.counts.max(1).values == 16).all()
    assert not prediction.undecided().any()


def test_the_vote_is_seeded_and_its_interval_shrinks_with_samples(small):
    model, x, _ = small
    first = randomized_predict(model, x, 1.0, samples=64, seed=3)
    again = randomized_predict(model, x, 1.0, samples=64, seed=3)
    assert torch.equal(first.counts, again.counts)
    widths = []
    for samples in (16, 256, 4096):
        low, high = randomized_predict(model, x, 1.0, samples=samples, seed=0).top_interval()
        widths.append(float((high - low).mean()))
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < widths[0] / 8  # about 1/sqrt(samples): 16x the samples, a quarter of the width twice over


def test_mean_softmax_vote_and_chunking_agree_with_one_big_batch(small, monkeypatch):
    model, x, _ = small
    whole = randomized_predict(model, x, 0.5, samples=32, vote="mean_softmax", seed=5)
    import noiselab.defenses as defenses

    monkeypatch.setattr(defenses, "MC_CHUNK_ELEMENTS", 1)  # one draw per chunk: the same generator stream
    chunked = randomized_predict(model, x, 0.5, samples=32, vote="mean_softmax", seed=5)
    assert torch.equal(whole.counts, chunked.counts)
    torch.testing.assert_close(whole.scores, chunked.scores)
    assert torch.allclose(whole.scores.sum(1), torch.ones(6, dtype=torch.float64))


def test_randomized_accuracy_reports_an_interval(small):
    model, x, y = small
    estimate = randomized_accuracy(model, x, y, 0.5, samples=32, seed=0)
    assert estimate.n == 6 and estimate.samples == 32
    assert 0 <= estimate.low <= estimate.accuracy <= estimate.high <= 1
    assert 0 <= estimate.undecided <= 1


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: randomized_predict(m, x, 0.5, samples=0), "samples must be an integer >= 1"),
    (lambda m, x, y: randomized_predict(m, x, -0.1), "sigma must be a finite number >= 0"),
    (lambda m, x, y: randomized_predict(m, x, float("nan")), "sigma must be a finite number >= 0"),
    (lambda m, x, y: randomized_predict(m, x, 0.5, vote="mode"), "vote must be one of"),
    (lambda m, x, y: randomized_predict(m, x[0], 0.5), "add a batch dimension"),
    (lambda m, x, y: randomized_accuracy(m, x, y[:2], 0.5), "y must be a tensor of 6 class indices"),
    (lambda m, x, y: randomized_accuracy(m, x[:0], y[:0], 0.5), "x must be a non-empty batch"),
    (lambda m, x, y: closed_form_fgsm(m, x, y, eps=0.1, sigma=-1.0), "sigma must be a finite number >= 0"),
    (lambda m, x, y: closed_form_fgsm(m, x, y, eps=1.5, sigma=0.5), "eps must be a number in [0, 1]"),
    (lambda m, x, y: closed_form_fgsm(m, x, y, eps=0.1, sigma=0.5, loss="hinge"), "loss must be one of"),
    (lambda m, x, y: eot_pgd(m, x, y, eps=0.1, sigma=0.5, draws=0), "draws must be an integer >= 1"),
])
def test_bad_input_gets_a_clear_error(small, call, message):
    model, x, y = small
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        call(model, x, y)


@pytest.mark.parametrize("name", sorted(RANDOMIZED_ATTACKS))
def test_every_randomized_attack_stays_in_the_ball(small, name):
    model, x, y = small
    x_adv = RANDOMIZED_ATTACKS[name](model, x, y, eps=0.1, sigma=0.5, generator=torch.Generator().manual_seed(0))
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad
    zero = RANDOMIZED_ATTACKS[name](model, x, y, eps=0.0, sigma=0.5)
    assert torch.equal(zero, x)


def test_closed_form_fgsm_steps_along_the_sign_of_the_closed_form_gradient(small):
    model, x, y = small
    x = x * 0.8 + 0.1  # inside (0, 1), so the step is not clipped
    x_grad = x.clone().requires_grad_(True)
    output = propagate(model, x_grad, 0.6)
    stochastic_loss(output.mean, output.var, y, reduction="sum").backward()
    expected = (x + 0.05 * x_grad.grad.sign()).clamp(0, 1)
    torch.testing.assert_close(closed_form_fgsm(model, x, y, eps=0.05, sigma=0.6), expected)


def test_closed_form_objectives_raise_the_loss_they_ascend(small):
    model, x, y = small
    for loss, objective in CLOSED_FORM_LOSSES.items():
        x_adv = closed_form_fgsm(model, x, y, eps=0.03, sigma=0.6, loss=loss)
        before = propagate(model, x, 0.6)
        after = propagate(model, x_adv, 0.6)
        assert objective(after.mean, after.var, y).sum() > objective(before.mean, before.var, y).sum(), loss


def test_closed_form_prediction_moves_with_sigma_only_under_the_moment_rules(small):
    model, x, _ = small
    expectation = model(x).argmax(1)
    assert torch.equal(closed_form_predict(model, x, 2.0, relu="paper", pool="paper"), expectation)
    means = [propagate(model, x, s, relu="moment", pool="clark").mean for s in (0.0, 2.0)]
    assert not torch.allclose(means[0], means[1])


def test_attack_costs_count_passes():
    assert attack_passes("naive_fgsm", {}) == 2
    assert attack_passes("eot_fgsm", {"draws": 8}) == 16
    assert attack_passes("eot_pgd", {"draws": 4, "steps": 10}) == 80
    assert attack_passes("closed_form_fgsm", {}) == 4
    assert attack_passes("closed_form_pgd", {"steps": 10}) == 40


def test_fig7_writes_rows_answers_and_a_chart_and_resumes(tmp_path, monkeypatch):
    import json

    import pandas as pd

    from noiselab.experiments import adaptive
    from noiselab.experiments.reproduce import reproduce
    from noiselab.train import TrainConfig

    def tiny(quick, data_root, device):  # the quick preset's shape, small enough for a unit test
        base = TrainConfig(dataset="mnist-embedded", model="demo-cnn", train_limit=300, epochs=1, device="cpu")
        attacks = [["naive FGSM", "naive_fgsm", {}], ["closed-form FGSM", "closed_form_fgsm", {}],
                   ["EOT-PGD k=2", "eot_pgd", {"draws": 2, "steps": 2}]]
        return adaptive.AdaptivePreset(base, [0.6], ["sampled"], [0.0, 0.2], 30, 8, attacks, [["FGSM", "fgsm", {}]])

    monkeypatch.setattr(adaptive, "preset", tiny)
    messages = []
    output = reproduce("fig7", tmp_path, quick=True, device="cpu", progress=messages.append)
    folder = tmp_path / "fig7"
    for name in ("results.json", "fig7.csv", "summary.json", "fig7.html", "fig7.png"):
        assert (folder / name).stat().st_size > 0, name
    table = pd.read_csv(folder / "fig7.csv")
    assert set(table["model"]) == {"vanilla", "sampled σ=0.6"}
    defended = table[table["model"] == "sampled σ=0.6"]
    assert list(defended["attack"]) == ["clean", "naive FGSM", "closed-form FGSM", "EOT-PGD k=2"]
    assert (defended["samples"] == 8).all() and (defended["n"] == 30).all()
    assert (defended[defended.eps > 0]["seconds_per_example"] > 0).all()
    answers = json.loads((folder / "summary.json").read_text())
    row = answers["closed_form_vs_eot"][0]
    assert row["strongest_eot"] == "EOT-PGD k=2" and row["eps"] == 0.2
    assert row["cost_ratio_seconds"] > 0
    assert answers["randomized_vs_undefended_fgsm"][0]["undefended_under_fgsm"] == pytest.approx(
        table[(table.model == "vanilla") & (table.attack == "FGSM")]["accuracy"].item())
    assert not output["summary"].empty
    assert "cdn.jsdelivr" not in (folder / "fig7.html").read_text()

    messages.clear()
    again = reproduce("fig7", tmp_path, quick=True, device="cpu", progress=messages.append)
    assert len(again["results"]["rows"]) == len(table)  # nothing measured twice
    assert not any("accuracy" in m for m in messages)
    # a model whose rows are all measured is not trained again, even with its checkpoint gone
    (folder / "checkpoints" / "sampled-sigma0.6.pt").unlink()
    messages.clear()
    reproduce("fig7", tmp_path, quick=True, device="cpu", progress=messages.append)
    assert "fig7: sampled σ=0.6 (seed 0): every row already measured" in messages
    assert not (folder / "checkpoints" / "sampled-sigma0.6.pt").exists()
    # rows measured on another training of a model (its checkpoint lost and trained again) are not mixed in
    stored = json.loads((folder / "results.json").read_text())
    for row in stored["rows"]:
        if row["model"] == "vanilla":
            row["training"]["loss"] += 0.01
    stored["rows"] = [row for row in stored["rows"] if (row["model"], row["eps"]) != ("vanilla", 0.2)]
    (folder / "results.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=r"the stored rows of vanilla \(seed 0\) were measured on another training"):
        reproduce("fig7", tmp_path, quick=True, device="cpu")


def test_fig7_adopts_fig4s_finished_trainings_and_keeps_one_scale_per_table(tmp_path, monkeypatch):
    import json

    from noiselab.experiments import EvalSpec, adaptive, run_sweep
    from noiselab.experiments.reproduce import reproduce
    from noiselab.train import TrainConfig

    base = TrainConfig(dataset="mnist-embedded", model="demo-cnn", train_limit=300, epochs=1, device="cpu")
    attacks = [["naive FGSM", "naive_fgsm", {}], ["closed-form FGSM", "closed_form_fgsm", {}]]

    def tiny(quick, data_root, device, limit=20):
        return adaptive.AdaptivePreset(base, [0.6], ["sampled"], [0.0, 0.2], limit, 4, attacks, [["FGSM", "fgsm", {}]])

    # Fig. 4's sweep (beside fig7/, as reproduce lays them out) finished the sampled model's training
    run_sweep("fig4", base, [{"method": "sampled", "sigma": 0.6, "seed": 0}], EvalSpec([0.0], ["fgsm"], 20),
              tmp_path / "fig4")
    monkeypatch.setattr(adaptive, "preset", tiny)
    messages = []
    output = reproduce("fig7", tmp_path, quick=True, device="cpu", progress=messages.append)
    rows = output["results"]["rows"]
    adopted = [row for row in rows if row["model"] == "sampled σ=0.6"]
    assert adopted and all(row["training_from"] == "fig4" for row in adopted)
    assert all("training_from" not in row for row in rows if row["model"] == "vanilla")  # fig4 never trained it
    assert any("fig4's finished training of the same settings" in m for m in messages)
    fig4 = json.loads((tmp_path / "fig4" / "results.json").read_text())
    assert adopted[0]["training"]["test_accuracy"] == next(iter(fig4["cells"].values()))["history"][-1][
        "test_accuracy"]
    # the same table at another scale (more test digits) is refused, naming the way out; nothing is written
    before = (tmp_path / "fig7" / "results.json").read_bytes()
    monkeypatch.setattr(adaptive, "preset", lambda quick, data_root, device: tiny(quick, data_root, device, 30))
    with pytest.raises(ValueError, match=r"limit = 20, this run's is 30.*another --out folder"):
        reproduce("fig7", tmp_path, quick=True, device="cpu")
    assert (tmp_path / "fig7" / "results.json").read_bytes() == before


def test_fig7s_preset_takes_the_eval_eps_and_test_limit_overrides():
    from noiselab.experiments import adaptive
    from noiselab.experiments.presets import preset_overrides

    with preset_overrides(test_limit=200, eval_eps=[0.2, 0.05, 0.1]):
        scaled = adaptive.preset(False, "../shared/data/mnist", "cpu")
    assert scaled.limit == 200 and scaled.eps == [0.0, 0.05, 0.1, 0.2]
    full = adaptive.preset(False, "../shared/data/mnist", "cpu")
    assert full.limit == 1000 and full.eps[-1] == 0.3
    # the full preset trains Fig. 4's models, so that Fig. 4's finished trainings can stand in
    from noiselab.experiments.presets import mnist_preset
    assert full.base == mnist_preset(False, "../shared/data/mnist", "cpu").base
    for bad in ([float("nan")], [1.5], [], ["x"]):
        with pytest.raises(ValueError, match="eval_eps"):
            with preset_overrides(eval_eps=bad):
                pass
