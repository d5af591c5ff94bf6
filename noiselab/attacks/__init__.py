"""Adversarial attacks under one calling convention, and a registry that tests and sweeps iterate over.

    x_adv = ATTACKS["pgd"](model, x, y, eps=0.3, steps=40, restarts=2, loss="margin")

Every attack takes a model returning logits, images x in [0, 1] (B, C, H, W), labels y (B,), an L-infinity
budget eps in [0, 1], and returns adversarial images within eps of x and clipped to [0, 1]. Attacks take
gradients with respect to the input only; the model's parameters and mode are left as they were.
"""

from ._common import LOSSES, check_attack_inputs, check_eps
from .apgd import apgd
from .closed_form import closed_form_fgsm, closed_form_pgd
from .eot import eot_fgsm, eot_pgd, naive_fgsm
from .fgsm import fgsm
from .pgd import pgd
from .suites import DEFAULT_SUITE, SUITES, check_suite, stage_name, suite, suite_name

ATTACKS = {"fgsm": fgsm, "pgd": pgd, "apgd": apgd}

# Attacks on the randomized defense (noiselab.defenses): the same convention plus the defender's sigma,
# attack(model, x, y, eps=..., sigma=..., **options).
RANDOMIZED_ATTACKS = {
    "naive_fgsm": naive_fgsm,
    "eot_fgsm": eot_fgsm,
    "eot_pgd": eot_pgd,
    "closed_form_fgsm": closed_form_fgsm,
    "closed_form_pgd": closed_form_pgd,
}

__all__ = ["ATTACKS", "DEFAULT_SUITE", "LOSSES", "RANDOMIZED_ATTACKS", "SUITES", "apgd", "check_suite",
           "check_attack_inputs", "check_eps", "closed_form_fgsm",
           "closed_form_pgd", "eot_fgsm", "eot_pgd", "fgsm", "naive_fgsm", "pgd", "stage_name", "suite", "suite_name"]
