"""Attacks: the eps-ball and [0, 1] constraints, their order of strength, and the gradient-masking checks."""

import warnings

import pytest
import torch
from torch import nn

from noiselab.attacks import ATTACKS
from noiselab.attacks.apgd import checkpoints
from noiselab.evaluate import GradientMaskingWarning, masking_checks, robust_accuracy, worst_case


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_adversarial_inputs_stay_in_the_ball_and_in_range(name, loss, vanilla_demo_model, mnist_test):
    x, y = mnist_test[0][:64], mnist_test[1][:64]
    options = {"steps": 5} if name != "fgsm" else {}
    x_adv = ATTACKS[name](vanilla_demo_model, x, y, 0.1, loss=loss, **options)
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv != x).any()


def test_vanilla_model_on_real_mnist_falls_below_ten_percent_at_eps_03(vanilla_demo_model, mnist_test):
    x, y = mnist_test
    table = robust_accuracy(vanilla_demo_model, x, y, eps=[0.3], attacks=[("pgd", {"steps": 20})])
    clean = table.loc[table.stage == "clean", "accuracy"].item()
    robust = table.loc[table.stage == "pgd", "accuracy"].item()
    assert clean > 0.75
    assert robust < 0.10


def test_pgd_is_at_least_as_strong_as_fgsm_which_is_below_clean(vanilla_demo_model, mnist_test):
    x, y = mnist_test
    accuracies = {}
    for name, options in (("fgsm", {}), ("pgd", {"steps": 20}), ("apgd", {"steps": 20})):
        table = robust_accuracy(vanilla_demo_model, x, y, eps=[0.1], attacks=[(name, options)])
        accuracies[name] = table.loc[table.stage == name, "accuracy"].item()
        accuracies["clean"] = table.loc[table.stage == "clean", "accuracy"].item()
    assert accuracies["pgd"] <= accuracies["fgsm"] < accuracies["clean"]
    assert accuracies["apgd"] <= accuracies["fgsm"]


def test_pipeline_is_the_worst_case_per_example(vanilla_demo_model, mnist_test):
    x, y = mnist_test
    table = robust_accuracy(vanilla_demo_model, x, y, eps=[0.0, 0.1, 0.2], attacks=["fgsm", ("pgd", {"steps": 10})])
    assert list(table.columns) == ["eps", "stage", "accuracy", "n"]
    for _, group in table.groupby("eps"):
        assert group["accuracy"].is_monotonic_decreasing  # each stage only removes points
    worst = worst_case(table)
    assert worst["eps"].tolist() == [0.0, 0.1, 0.2]
    assert worst["accuracy"].iloc[0] == table.loc[table.stage == "clean", "accuracy"].iloc[0]
    assert worst["accuracy"].is_monotonic_decreasing


def test_apgd_checkpoints_follow_the_paper():
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (rounded up, times 100 steps)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


@pytest.mark.parametrize("eps", [-0.1, 1.5, float("nan"), "0.3"])
def test_eps_out_of_range_is_named(eps, mnist_test):
    x, y = mnist_test[0][:2], mnist_test[1][:2]
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    for attack in ATTACKS.values():
        with pytest.raises(ValueError, match=r"eps must be a number in \[0, 1\]"):
            attack(model, x, y, eps)


def test_images_outside_unit_range_and_bad_labels_are_named(mnist_test):
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    x, y = mnist_test[0][:2], mnist_test[1][:2]
    with pytest.raises(ValueError, match=r"images in \[0, 1\]"):
        ATTACKS["pgd"](model, x * 255, y, 0.1)
    with pytest.raises(ValueError, match="y must be integer labels"):
        ATTACKS["fgsm"](model, x, y[:1], 0.1)
    with pytest.raises(ValueError, match="unknown attack"):
        robust_accuracy(model, x, y, attacks=["carlini"])


@pytest.mark.slow
def test_masking_checks_pass_on_a_plain_model(vanilla_demo_model, mnist_test):
    x, y = mnist_test[0][:100], mnist_test[1][:100]
    table = robust_accuracy(vanilla_demo_model, x, y, eps=[0.1, 0.2, 0.3])  # the strong suite
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)
        flags = masking_checks(vanilla_demo_model, x, y, table, reference=vanilla_demo_model, subset=100)
    assert [f.name for f in flags] == ["accuracy_rises_with_eps", "not_near_chance_at_large_eps",
                                       "stronger_attack_raises_accuracy", "transfer_beats_white_box",
                                       "weaker_than_stronger_suite", "zero_or_nan_gradients"]
    assert not any(f.flagged for f in flags)


class Quantized(nn.Module):
    """A classic masked defense: rounding the input to {0, 1} zeroes every input gradient."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x))


@pytest.mark.slow
def test_masking_checks_flag_a_shattered_gradient_defense(vanilla_demo_model, mnist_test):
    x, y = mnist_test[0][:100], mnist_test[1][:100]  # a masked model flags on any 100 digits
    masked = Quantized(vanilla_demo_model)
    table = robust_accuracy(masked, x, y, eps=[0.1, 0.3], attacks=[("pgd", {"steps": 10})])
    with pytest.warns(GradientMaskingWarning, match="zero_or_nan_gradients"):
        # stronger=None: the thorough suite's second look (the plain model's test runs it) would attack all 100
        # points the masked model "keeps", ~90% of this test's time, for a flag this test does not ask about
        flags = {f.name: f for f in masking_checks(masked, x, y, table, reference=vanilla_demo_model, subset=100,
                                                   stronger=None)}
    assert "weaker_than_stronger_suite" not in flags  # skipped when asked to be
    assert flags["zero_or_nan_gradients"].flagged
    assert flags["not_near_chance_at_large_eps"].flagged  # PGD cannot move a model with zero gradients
    assert flags["transfer_beats_white_box"].flagged      # but attacks from the unmasked model do
