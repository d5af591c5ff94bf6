"""Named attack suites: the lists of attacks that `robust_accuracy` runs as a shrinking pipeline.

    >>> robust_accuracy(model, x, y, eps=[0.1, 0.2], attacks=suite("strong"))

"strong" is the default everywhere (the CLI's attack and sweep, every reproduce experiment, the lab's attack
panel). Noise-trained models have small logits squashed by the stochastic loss's MSE term, and cross-entropy
gradients are a weak guide there: PGD with cross-entropy alone overstated their robust accuracy by up to 15
points against an independent evaluator. So the strong suite aims scale-invariant objectives (DLR, targeted
DLR, the margin) with APGD's adaptive step and several runs per point, AutoAttack's recipe cut to what a CPU
affords:

    fgsm                 one step: removes the easy points before the costly attacks (the pipeline only attacks
                         what is still robust)
    apgd      ce   100   APGD-CE, AutoAttack's first attack
    apgd      dlr  100   APGD-DLR, scale-invariant
    apgd-t    dlr  100   APGD-T: targeted DLR towards each of the 9 wrong classes in turn (9 runs per point, as
                         AutoAttack's standard version)
    pgd       margin 40  PGD on the margin from 2 random starts (a differently built attack, fixed step)

"strong-t3" is the same with APGD-T on the 3 likeliest wrong classes only: about half the cost on a robust model,
and measurably weaker (on the former noise σ=0.8 starter, 5 epochs on the embedded digits, at ε = 0.2 on 200
embedded digits: 0.055 where torchattacks found 0.040); the first full-scale CPU runs (docs/results/full-cpu,
2026-12-02) used it.
"light" (FGSM and PGD-10 with cross-entropy) is for quick looks in the lab; it overstates the robustness of
exactly the models whose robustness is in question, and says so wherever it is shown. "thorough" is the strong
suite with more restarts and longer PGD: the gradient-masking check that a stronger attack does not lower the
table's figure uses it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Suite:
    attacks: tuple
    description: str
    light: bool = False  # a quick look, not a number to quote


SUITES: dict[str, Suite] = {
    "strong": Suite(
        ("fgsm", ("apgd", {"steps": 100, "loss": "ce"}), ("apgd", {"steps": 100, "loss": "dlr"}),
         ("apgd", {"steps": 100, "loss": "dlr", "targets": 9}),
         ("pgd", {"steps": 40, "loss": "margin", "restarts": 2})),
        "FGSM, APGD-CE, APGD-DLR, APGD-T (DLR, 9 targets), PGD-40 margin x2: scale-invariant losses, restarts",
    ),
    "strong-t3": Suite(
        ("fgsm", ("apgd", {"steps": 100, "loss": "ce"}), ("apgd", {"steps": 100, "loss": "dlr"}),
         ("apgd", {"steps": 100, "loss": "dlr", "targets": 3}),
         ("pgd", {"steps": 40, "loss": "margin", "restarts": 2})),
        "the strong suite with APGD-T on 3 targets only: half the cost on robust models, measurably weaker",
    ),
    "light": Suite(
        ("fgsm", ("pgd", {"steps": 10})),
        "FGSM and PGD-10 with cross-entropy: a LIGHT quick look that overstates noise-trained models' robustness",
        light=True,
    ),
    "thorough": Suite(
        ("fgsm", ("apgd", {"steps": 100, "loss": "ce", "restarts": 2}),
         ("apgd", {"steps": 100, "loss": "dlr", "restarts": 2}),
         ("apgd", {"steps": 100, "loss": "dlr", "targets": 9, "restarts": 2}),
         ("pgd", {"steps": 100, "loss": "margin", "restarts": 4})),
        "the strong suite with 2 restarts of every APGD (APGD-T too) and PGD-100 margin x4",
    ),
}
DEFAULT_SUITE = "strong"


def check_suite(name) -> str:
    if name not in SUITES:
        raise ValueError(f"unknown attack suite {name!r}; choose one of {tuple(SUITES)} "
                         f"({DEFAULT_SUITE!r} is the default and the one to quote)")
    return name


def suite(name: str = DEFAULT_SUITE) -> list:
    """The attacks of suite `name` as robust_accuracy takes them: names and [name, options] pairs (plain data, so a
    results file records the whole definition)."""
    return [a if isinstance(a, str) else [a[0], copy.deepcopy(a[1])] for a in SUITES[check_suite(name)].attacks]


def suite_name(attacks) -> str | None:
    """The name of the suite whose attacks these are (as a results file stores them), or None."""
    normal = json.loads(json.dumps(list(attacks)))
    for name in SUITES:
        if json.loads(json.dumps(suite(name))) == normal:
            return name
    return None


def stage_name(name: str, options: dict) -> str:
    """The pipeline stage an attack is reported under: 'pgd', 'pgd-margin', 'apgd-dlr', 'apgd-t-dlr'."""
    label = name + ("-t" if options.get("targets") else "")
    loss = options.get("loss", "ce")
    return label + (f"-{loss}" if loss != "ce" or options.get("targets") else "")
