"""Robust accuracy as a shrinking pipeline, and the sanity checks that flag gradient masking.

    >>> table = robust_accuracy(model, x, y, eps=[0.1, 0.2, 0.3], attacks=["fgsm", ("pgd", {"restarts": 2})])
    >>> flags = masking_checks(model, x, y, table, reference=vanilla_model)

robust_accuracy attacks, for each eps, only the points still robust (AutoAttack's pipeline): a point counts as
robust only if every attack in the list failed on it, so each row's accuracy is the worst case over the attacks
so far, per example. The table (a pandas DataFrame, long form) has one row per (eps, stage), stage being
"clean" or an attack's name, with the cumulative accuracy after that stage.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from .attacks import ATTACKS, check_attack_inputs, check_eps


class GradientMaskingWarning(UserWarning):
    """A robustness number that looks like gradient masking rather than robustness."""


def _attack_spec(spec) -> tuple[str, callable, dict]:
    if isinstance(spec, str):
        spec = (spec, {})
    if callable(spec):
        return getattr(spec, "__name__", "attack"), spec, {}
    name, options = spec
    if callable(name):
        return getattr(name, "__name__", "attack"), name, dict(options)
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose from {tuple(ATTACKS)} or pass a callable")
    return name, ATTACKS[name], dict(options)


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)])


def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps=(0.1, 0.2, 0.3),
    attacks=("fgsm", "pgd"),
    batch_size: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per eps, the worst case per example over `attacks` (names, (name, options) pairs, or callables)."""
    epsilons = [check_eps(e) for e in ([eps] if isinstance(eps, (int, float)) else eps)]
    check_attack_inputs(x, y, 0.0)
    specs = [_attack_spec(a) for a in attacks]
    seeded = [("generator" in inspect.signature(attack).parameters) for _, attack, _ in specs]
    if not specs:
        raise ValueError("attacks must name at least one attack")
    model.eval()
    correct = predict(model, x, batch_size) == y
    n = x.shape[0]
    rows = []
    for e in epsilons:
        robust = correct.clone()
        rows.append({"eps": e, "stage": "clean", "accuracy": float(correct.float().mean()), "n": n})
        for (name, attack, options), takes_generator in zip(specs, seeded):
            index = robust.nonzero().squeeze(1)
            for start in range(0, index.numel(), batch_size):
                chunk = index[start : start + batch_size]
                kwargs = dict(options)
                if takes_generator and "generator" not in kwargs:
                    kwargs["generator"] = torch.Generator(device=x.device).manual_seed(seed + start)
                x_adv = attack(model, x[chunk], y[chunk], e, **kwargs)
                robust[chunk] &= predict(model, x_adv, batch_size) == y[chunk]
            rows.append({"eps": e, "stage": name, "accuracy": float(robust.float().mean()), "n": n})
    return pd.DataFrame(rows)


def worst_case(table: pd.DataFrame) -> pd.DataFrame:
    """One row per eps: the accuracy after the last attack."""
    return table.groupby("eps", sort=True).tail(1)[["eps", "accuracy"]].reset_index(drop=True)


@dataclass
class Flag:
    name: str
    flagged: bool
    message: str


def _flag(flags: list[Flag], name: str, flagged: bool, message: str) -> None:
    flags.append(Flag(name, flagged, message))
    if flagged:
        warnings.warn(GradientMaskingWarning(f"{name}: {message}"), stacklevel=3)


def masking_checks(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    table: pd.DataFrame,
    reference: nn.Module | None = None,
    large_eps: float = 0.5,
    classes: int = 10,
    subset: int = 500,
    tolerance: float = 0.02,
) -> list[Flag]:
    """The checks of Carlini et al. (2019) that catch gradient masking; each flagged one also warns.

    - accuracy_rises_with_eps: the worst-case accuracy must not rise as eps grows.
    - not_near_chance_at_large_eps: at a large eps (0.5 on [0, 1] images) an attack must reach about chance.
    - stronger_attack_raises_accuracy: 4x the PGD steps and 4 restarts must not raise accuracy.
    - transfer_beats_white_box: PGD transferred from `reference` (say a vanilla model) must not beat white-box PGD.
    - zero_or_nan_gradients: input gradients must not vanish or be NaN.
    Checks that run attacks use the first `subset` examples.
    """
    flags: list[Flag] = []
    model.eval()
    worst = worst_case(table)
    rises = worst["accuracy"].diff().fillna(0)
    _flag(flags, "accuracy_rises_with_eps", bool((rises > tolerance).any()),
          "robust accuracy rose with eps, which a working attack cannot allow: the attack is failing, "
          "not the model succeeding")

    xs, ys = x[:subset], y[:subset]
    generator = torch.Generator(device=x.device).manual_seed(0)
    large = ATTACKS["pgd"](model, xs, ys, large_eps, steps=40, generator=generator)
    large_accuracy = float((predict(model, large) == ys).float().mean())
    _flag(flags, "not_near_chance_at_large_eps", large_accuracy > 1.0 / classes + 0.1,
          f"at eps = {large_eps} PGD leaves {large_accuracy:.1%} accuracy; any image can be made ambiguous there, "
          "so this points at gradients that do not lead the attack")

    middle = float(sorted(table["eps"].unique())[len(table["eps"].unique()) // 2])
    if middle > 0:
        base = ATTACKS["pgd"](model, xs, ys, middle, steps=20, generator=generator)
        strong = ATTACKS["pgd"](model, xs, ys, middle, steps=80, restarts=4, generator=generator)
        base_accuracy = float((predict(model, base) == ys).float().mean())
        strong_accuracy = float((predict(model, strong) == ys).float().mean())
        _flag(flags, "stronger_attack_raises_accuracy", strong_accuracy > base_accuracy + tolerance,
              f"at eps = {middle} PGD-80x4 gives {strong_accuracy:.1%} but PGD-20 {base_accuracy:.1%}; "
              "more steps must not help the model")
        if reference is not None:
            reference.eval()
            transferred = ATTACKS["pgd"](reference, xs, ys, middle, steps=20, generator=generator)
            transfer_accuracy = float((predict(model, transferred) == ys).float().mean())
            _flag(flags, "transfer_beats_white_box", transfer_accuracy < base_accuracy - tolerance,
                  f"at eps = {middle} PGD from another model leaves {transfer_accuracy:.1%}, white-box PGD "
                  f"{base_accuracy:.1%}: the model's own gradients mislead its attacker")

    inputs = xs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(model(inputs), ys, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, inputs)
    per_example = gradient.flatten(1).abs().sum(1)
    bad = bool(torch.isnan(gradient).any()) or float((per_example == 0).float().mean()) > 0.01
    _flag(flags, "zero_or_nan_gradients", bad,
          "input gradients are zero or NaN for some examples, so gradient attacks cannot move them")
    return flags
