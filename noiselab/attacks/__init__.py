"""Adversarial attacks under one calling convention, and a registry that tests and sweeps iterate over.

    x_adv = ATTACKS["pgd"](model, x, y, eps=0.3, steps=40, restarts=2, loss="margin")

Every attack takes a model returning logits, images x in [0, 1] (B, C, H, W), labels y (B,), an L-infinity
budget eps in [0, 1], and returns adversarial images within eps of x and clipped to [0, 1]. Attacks take
gradients with respect to the input only; the model's parameters and mode are left as they were.
"""

from ._common import LOSSES, check_attack_inputs, check_eps
from .apgd import apgd
from .fgsm import fgsm
from .pgd import pgd

ATTACKS = {"fgsm": fgsm, "pgd": pgd, "apgd": apgd}

__all__ = ["ATTACKS", "LOSSES", "apgd", "check_attack_inputs", "check_eps", "fgsm", "pgd"]
