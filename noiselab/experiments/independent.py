"""An independent evaluator: robust accuracy from torchattacks' implementations, to hold noiselab's suites against.

    >>> reference = independent_robust_accuracy(model, x, y, eps=[0.1, 0.2])   # eps, accuracy, n
    >>> compare_to_independent(model, x, y, eps=[0.1, 0.2])                   # noiselab's strong suite beside it

The reference is the worst case per example over torchattacks' APGD-CE and APGD-DLR (100 steps), APGD-T (100
steps towards each of the 9 wrong classes) and PGD-100 with cross-entropy (step eps / 40, random start): code
written by other people, run on every point (no shrinking pipeline), so that a bug or a weakness in noiselab's
attacks shows as noiselab reporting more robustness than this does.

torchattacks is not a dependency of noiselab: `pip install --no-deps torchattacks==3.5.1 scipy` (its metadata pins
requests~=2.25.1, which conflicts with JupyterLab's; --no-deps keeps the newer requests, which it works with).
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor, nn

from ..attacks import check_attack_inputs, check_eps
from ..evaluate import predict, robust_accuracy, worst_case

INSTALL_HINT = "pip install --no-deps torchattacks==3.5.1 scipy"


def import_torchattacks():
    try:
        import torchattacks
    except ImportError as error:
        raise ImportError(f"the independent evaluator needs torchattacks (and scipy): {INSTALL_HINT}") from error
    return torchattacks


def reference_attacks(model: nn.Module, eps: float, classes: int = 10) -> dict:
    """torchattacks' attacks at budget eps, by name."""
    torchattacks = import_torchattacks()
    return {
        "ta-apgd-ce": torchattacks.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=0),
        "ta-apgd-dlr": torchattacks.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="dlr", seed=0),
        "ta-apgd-t": torchattacks.APGDT(model, norm="Linf", eps=eps, steps=100, n_restarts=1, seed=0,
                                        n_classes=classes),
        "ta-pgd-ce": torchattacks.PGD(model, eps=eps, alpha=eps / 40, steps=100, random_start=True),
    }


def independent_robust_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps, classes: int = 10,
                                batch_size: int = 500) -> pd.DataFrame:
    """Per eps: the fraction of examples that every torchattacks attack leaves correctly classified."""
    epsilons = [check_eps(e) for e in ([eps] if isinstance(eps, (int, float)) else eps)]
    check_attack_inputs(x, y, 0.0)
    was_training = model.training
    model.eval()
    torch.manual_seed(0)
    rows = []
    try:
        clean = predict(model, x) == y
        for e in epsilons:
            robust = clean.clone()
            if e > 0:
                for attack in reference_attacks(model, e, classes).values():
                    for start in range(0, x.shape[0], batch_size):
                        part = slice(start, start + batch_size)
                        adversarial = attack(x[part], y[part])
                        robust[part] &= predict(model, adversarial) == y[part]
            rows.append({"eps": e, "accuracy": float(robust.float().mean()), "n": int(x.shape[0])})
    finally:
        model.train(was_training)
    return pd.DataFrame(rows)


def compare_to_independent(model: nn.Module, x: Tensor, y: Tensor, eps, attacks="strong",
                           classes: int = 10) -> pd.DataFrame:
    """noiselab's robust accuracy under `attacks` beside the independent reference on the same points:
    eps, noiselab, independent, excess (noiselab - independent: > 0 means noiselab reports more robustness)."""
    ours = worst_case(robust_accuracy(model, x, y, eps=eps, attacks=attacks)).rename(columns={"accuracy": "noiselab"})
    theirs = independent_robust_accuracy(model, x, y, eps, classes).rename(columns={"accuracy": "independent"})
    frame = ours.merge(theirs[["eps", "independent", "n"]], on="eps")
    frame["excess"] = frame["noiselab"] - frame["independent"]
    return frame
