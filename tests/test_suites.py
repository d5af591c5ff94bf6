"""The attack suites: the strong default held against an independent implementation (torchattacks) on a
noise-trained model, targeted APGD, the weak-attack check, and bad input for the new options."""

import os
import warnings

import pytest
import torch
from cli_support import run_cli

from noiselab import data as data_module
from noiselab.attacks import ATTACKS, SUITES, stage_name, suite
from noiselab.checkpoint import load_model
from noiselab.evaluate import (
    GradientMaskingWarning,
    adversarial_examples,
    masking_checks,
    predict,
    robust_accuracy,
    worst_case,
)
from noiselab.starter import starter_folder


@pytest.fixture(scope="module")
def embedded_digits():
    return data_module.load("mnist-embedded").tensors("test", limit=200)


@pytest.fixture(scope="module")
def noise_model():
    """The shipped noise-trained starter (σ = 0.8): the kind of model the cross-entropy attacks overstate."""
    model, _ = load_model(starter_folder() / "noise-0.8.pt")
    return model.eval()


def torchattacks_or_fail():
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        message = "torchattacks is missing: `make test` installs it (pip install --no-deps torchattacks==3.5.1)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def test_the_suites_are_plain_data_and_the_strong_one_is_aimed_and_restarted():
    strong = suite("strong")
    assert strong == suite()  # the default
    assert suite("strong") is not strong  # a fresh copy each call: nobody edits the registry through it
    losses = {a[1].get("loss", "ce") for a in strong if isinstance(a, list)}
    assert {"dlr", "margin"} <= losses  # scale-invariant objectives
    assert any(a[0] == "apgd" and a[1].get("targets") for a in strong if isinstance(a, list))
    assert any(a[1].get("restarts", 1) > 1 for a in strong if isinstance(a, list))
    assert SUITES["light"].light and "LIGHT" in SUITES["light"].description
    assert not SUITES["strong"].light


def test_unknown_suite_names_the_choices():
    choices = r"unknown attack suite 'strongest'.*'strong', 'strong-t3', 'light', 'thorough'"
    with pytest.raises(ValueError, match=choices):
        suite("strongest")
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="unknown attack suite"):
        robust_accuracy(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), x, y, attacks="wat")
    with pytest.raises(ValueError, match=r"'light' is a suite: pass attacks='light'"):
        robust_accuracy(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), x, y,
                        attacks=["light"])


def test_stage_names_say_which_attack_and_loss():
    assert stage_name("pgd", {"steps": 10}) == "pgd"
    assert stage_name("pgd", {"loss": "margin"}) == "pgd-margin"
    assert stage_name("apgd", {"loss": "dlr"}) == "apgd-dlr"
    assert stage_name("apgd", {"loss": "dlr", "targets": 3}) == "apgd-t-dlr"


def test_targeted_apgd_stays_in_the_ball_and_checks_its_targets(noise_model, embedded_digits):
    x, y = embedded_digits[0][:32], embedded_digits[1][:32]
    x_adv = ATTACKS["apgd"](noise_model, x, y, 0.2, steps=10, loss="dlr", targets=2)
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (predict(noise_model, x_adv) != y).float().mean() > (predict(noise_model, x) != y).float().mean()
    with pytest.raises(ValueError, match="targets must be at most 9"):
        ATTACKS["apgd"](noise_model, x, y, 0.2, steps=2, targets=10)
    with pytest.raises(ValueError, match="targets must be an integer >= 0"):
        ATTACKS["apgd"](noise_model, x, y, 0.2, steps=2, targets=-1)


def test_adversarial_examples_fool_where_the_pipeline_does(noise_model, embedded_digits):
    x, y = embedded_digits[0][:40], embedded_digits[1][:40]
    attacks = ["fgsm", ["pgd", {"steps": 10}]]
    table = robust_accuracy(noise_model, x, y, eps=[0.2], attacks=attacks)
    images = adversarial_examples(noise_model, x, y, 0.2, attacks=attacks)
    assert (images - x).abs().max() <= 0.2 + 1e-6
    fooled = predict(noise_model, images) != y
    # the pipeline's per-example record and the images agree: what survived every attack is still classified right
    survived = torch.tensor(table.attrs["robust"][0.2])
    assert torch.equal(~fooled, survived)


@pytest.mark.slow
def test_the_default_suite_is_within_a_point_of_torchattacks_on_a_noise_trained_model(noise_model, embedded_digits):
    """The test the issue asks for: on the same 200 points, noiselab's default (strong) robust accuracy must not
    exceed the independent reference's by more than 1 point; the light suite, on this model, does. At ε = 0.2,
    where the light suite overstated this model most (bench/independent_check.py measures 0.1 too)."""
    torchattacks_or_fail()
    from noiselab.experiments.independent import compare_to_independent

    x, y = embedded_digits
    frame = compare_to_independent(noise_model, x, y, eps=[0.2])
    assert frame["eps"].tolist() == [0.2] and frame["n"].tolist() == [200]
    assert (frame["excess"] <= 0.01 + 1e-9).all(), frame.to_string()
    light = worst_case(robust_accuracy(noise_model, x, y, eps=[0.2], attacks="light"))["accuracy"][0]
    reference = frame.loc[frame["eps"] == 0.2, "independent"].item()
    assert light > reference + 0.05  # why the default changed: the light suite overstates this model


@pytest.mark.slow
def test_the_weak_attack_check_flags_the_light_suite_on_a_noise_model(noise_model, embedded_digits):
    x, y = embedded_digits[0][:100], embedded_digits[1][:100]
    table = robust_accuracy(noise_model, x, y, eps=[0.0, 0.1, 0.2, 0.3, 0.4], attacks=[("pgd", {"steps": 10})])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientMaskingWarning)
        flags = {flag.name: flag for flag in masking_checks(noise_model, x, y, table, subset=100)}
    weak = flags["weaker_than_stronger_suite"]
    assert weak.flagged, weak.message
    assert "eps = 0.2" in weak.message and "thorough" in weak.message


def test_the_weak_attack_check_passes_when_nothing_survives(noise_model, embedded_digits):
    # at eps = 0.5 nothing survives PGD on this model: the stronger suite has nothing to find, and says so
    x, y = embedded_digits[0][:30], embedded_digits[1][:30]
    table = robust_accuracy(noise_model, x, y, eps=[0.0, 0.5, 0.5], attacks=[("pgd", {"steps": 20})])
    flags = {flag.name: flag for flag in masking_checks(noise_model, x, y, table, subset=30)}
    assert table.attrs["robust"][0.5] == [False] * 30
    assert not flags["weaker_than_stronger_suite"].flagged


@pytest.mark.slow
def test_cli_attack_defaults_to_the_strong_suite_and_rejects_unknown_suites():
    checkpoint = str(starter_folder() / "vanilla.pt")
    bad = run_cli("attack", checkpoint, "--suite", "strongest")
    assert bad.returncode == 2
    assert "unknown attack suite 'strongest'" in bad.stderr and "Traceback" not in bad.stderr
    done = run_cli("attack", checkpoint, "--eps", "0.1", "--limit", "20")
    assert done.returncode == 0, done.stderr
    stages = {line.split()[1] for line in done.stdout.splitlines()[1:]}
    assert {"apgd", "apgd-dlr", "apgd-t-dlr", "pgd-margin"} <= stages
    light = run_cli("attack", checkpoint, "--eps", "0.1", "--limit", "20", "--suite", "light", "--quiet")
    assert light.returncode == 0 and "LIGHT" in light.stderr


def test_reproduce_takes_a_suite_by_name_and_a_clean_only_evaluation_stays_clean():
    from noiselab.experiments.presets import mnist_preset, preset_overrides
    from noiselab.experiments.reproduce import sweep_grids

    assert mnist_preset(False, None, "cpu").evaluation.attacks == suite("strong")  # the full runs' default
    assert mnist_preset(True, None, "cpu").evaluation.attacks == suite("light")    # the quick modes say so
    with preset_overrides(suite="strong-t3"):
        assert mnist_preset(False, None, "cpu").evaluation.attacks == suite("strong-t3")
        assert sweep_grids(quick=True, device="cpu")["fig6"][2].attacks == ["fgsm"]  # eps = 0 only: nothing to attack
    with pytest.raises(ValueError, match="unknown attack suite 'nope'"):
        with preset_overrides(suite="nope"):
            pass
    bad = run_cli("reproduce", "fig4", "--quick", "--suite", "nope", "--out", "/nonexistent/never-written")
    assert bad.returncode == 2 and "unknown attack suite 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_the_new_evaluators_reject_bad_input_at_their_boundary(noise_model, embedded_digits):
    from noiselab.experiments.independent import independent_robust_accuracy

    x, y = embedded_digits[0][:4], embedded_digits[1][:4]
    with pytest.raises(ValueError, match=r"eps must be a number in \[0, 1\]"):
        adversarial_examples(noise_model, x, y, 1.5)
    with pytest.raises(ValueError, match=r"eps must be a number in \[0, 1\]"):
        independent_robust_accuracy(noise_model, x, y, [float("nan")])
    with pytest.raises(ValueError, match="y must be integer labels of shape"):
        adversarial_examples(noise_model, x, y[:2], 0.1)
    with pytest.raises(ValueError, match="unknown attack suite"):
        adversarial_examples(noise_model, x, y, 0.1, attacks="nope")
