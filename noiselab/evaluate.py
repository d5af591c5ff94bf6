"""Robust accuracy as a shrinking pipeline, and the sanity checks that flag gradient masking.

    >>> table = robust_accuracy(model, x, y, eps=[0.1, 0.2, 0.3])      # the strong suite (attacks/suites.py)
    >>> table = robust_accuracy(model, x, y, eps=0.1, attacks=["fgsm", ("pgd", {"restarts": 2})])
    >>> flags = masking_checks(model, x, y, table, reference=vanilla_model)

robust_accuracy attacks, for each eps, only the points still robust (AutoAttack's pipeline): a point counts as
robust only if every attack in the list failed on it, so each row's accuracy is the worst case over the attacks
so far, per example. The table (a pandas DataFrame, long form) has one row per (eps, stage), stage being
"clean" or an attack's stage name (attacks.stage_name: "apgd-dlr", "pgd-margin", ...), with the cumulative
accuracy after that stage. `table.attrs["robust"]` keeps, per eps, which examples survived every attack (a list
of booleans), for the checks that attack the same points again.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from .attacks import ATTACKS, DEFAULT_SUITE, SUITES, check_attack_inputs, check_eps, check_suite, stage_name, suite


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
        hint = f" ({name!r} is a suite: pass attacks={name!r})" if name in SUITES else ""
        raise ValueError(f"unknown attack {name!r}; choose from {tuple(ATTACKS)} or pass a callable{hint}")
    return stage_name(name, options), ATTACKS[name], dict(options)


def _with_generator(attack, options: dict, device, seed: int) -> dict:
    """The attack's options plus a generator seeded with `seed` where the attack draws random numbers."""
    kwargs = dict(options)
    if "generator" in inspect.signature(attack).parameters and "generator" not in kwargs:
        kwargs["generator"] = torch.Generator(device=device).manual_seed(seed)
    return kwargs


def resolve_attacks(attacks) -> list:
    """A suite's name (a str) as its list of attacks; a list or tuple of attacks as is."""
    if isinstance(attacks, str):
        return suite(check_suite(attacks))
    return list(attacks)


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)])


def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps=(0.1, 0.2, 0.3),
    attacks=DEFAULT_SUITE,
    batch_size: int = 1000,
    seed: int = 0,
    progress=None,
) -> pd.DataFrame:
    """Per eps, the worst case per example over `attacks`: a suite's name ("strong", the default; "light";
    "thorough") or a list of attack names, (name, options) pairs and callables.

    progress(eps, stage) is called after each attack stage, for long evaluations."""
    epsilons = [check_eps(e) for e in ([eps] if isinstance(eps, (int, float)) else eps)]
    check_attack_inputs(x, y, 0.0)
    specs = [_attack_spec(a) for a in resolve_attacks(attacks)]
    if not specs:
        raise ValueError("attacks must name at least one attack")
    model.eval()
    correct = predict(model, x, batch_size) == y
    n = x.shape[0]
    rows = []
    survivors = {}
    for e in epsilons:
        robust = correct.clone()
        rows.append({"eps": e, "stage": "clean", "accuracy": float(correct.float().mean()), "n": n})
        for name, attack, options in specs:
            index = robust.nonzero().squeeze(1)
            for start in range(0, index.numel(), batch_size):
                chunk = index[start : start + batch_size]
                x_adv = attack(model, x[chunk], y[chunk], e, **_with_generator(attack, options, x.device, seed + start))
                robust[chunk] &= predict(model, x_adv, batch_size) == y[chunk]
            rows.append({"eps": e, "stage": name, "accuracy": float(robust.float().mean()), "n": n})
            if progress is not None:
                progress(e, name)
        survivors[e] = robust.tolist()
    table = pd.DataFrame(rows)
    table.attrs["robust"] = survivors
    return table


def adversarial_examples(model: nn.Module, x: Tensor, y: Tensor, eps: float, attacks=DEFAULT_SUITE,
                         seed: int = 0) -> Tensor:
    """The pipeline's adversarial image per example at one eps: the first attack's image that fools the model,
    else the last attack's (what a picture of "the attack" shows for a suite)."""
    eps = check_eps(eps)
    check_attack_inputs(x, y, eps)
    model.eval()
    adversarial = x.detach().clone()
    open_ = predict(model, x) == y  # correct so far: still to attack
    for _, attack, options in [_attack_spec(a) for a in resolve_attacks(attacks)]:
        index = open_.nonzero().squeeze(1)
        if index.numel() == 0:
            break
        adversarial[index] = attack(model, x[index], y[index], eps, **_with_generator(attack, options, x.device, seed))
        open_[index] &= predict(model, adversarial[index]) == y[index]
    return adversarial


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
    stronger="thorough",
    weak_tolerance: float = 0.01,
) -> list[Flag]:
    """The checks of Carlini et al. (2019) that catch gradient masking; each flagged one also warns.

    - accuracy_rises_with_eps: the worst-case accuracy must not rise as eps grows.
    - not_near_chance_at_large_eps: at a large eps (0.5 on [0, 1] images) an attack must reach about chance.
    - stronger_attack_raises_accuracy: 4x the PGD steps and 4 restarts must not raise accuracy.
    - transfer_beats_white_box: PGD transferred from `reference` (say a vanilla model) must not beat white-box PGD.
    - weaker_than_stronger_suite: the points the table still counts robust at its middle eps, attacked again by
      `stronger` (a suite name or a list of attacks; default the "thorough" suite), must not lose more than
      `weak_tolerance` (a point) of accuracy: a weak attack behind the table is caught here, whatever it was.
      None skips it.
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

    if middle > 0 and stronger is not None:
        _weak_attack_check(flags, model, xs, ys, table, middle, stronger, weak_tolerance)

    inputs = xs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(model(inputs), ys, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, inputs)
    per_example = gradient.flatten(1).abs().sum(1)
    bad = bool(torch.isnan(gradient).any()) or float((per_example == 0).float().mean()) > 0.01
    _flag(flags, "zero_or_nan_gradients", bad,
          "input gradients are zero or NaN for some examples, so gradient attacks cannot move them")
    return flags


def _weak_attack_check(flags: list[Flag], model: nn.Module, xs: Tensor, ys: Tensor, table: pd.DataFrame,
                       eps: float, stronger, tolerance: float) -> None:
    """Attack again, with `stronger`, the points of xs the table counts robust at eps; flag a drop > tolerance."""
    survived = table.attrs.get("robust", {}).get(eps)
    if survived is not None and len(survived) >= xs.shape[0]:
        still = torch.tensor(survived[: xs.shape[0]], dtype=torch.bool, device=xs.device)
        reported = float(still.float().mean())
        index = still.nonzero().squeeze(1)
        broken = 0
        if index.numel():
            again = robust_accuracy(model, xs[index], ys[index], eps=[eps], attacks=stronger, seed=1)
            broken = index.numel() - sum(again.attrs["robust"][eps])
        found = reported - broken / xs.shape[0]
        where = f"on the same {xs.shape[0]} examples"
    else:  # a table read back from a file: no per-example record, so the stronger suite attacks from scratch
        reported = float(table.loc[table["eps"] == eps, "accuracy"].iloc[-1])
        found = float(worst_case(robust_accuracy(model, xs, ys, eps=[eps], attacks=stronger, seed=1))["accuracy"][0])
        where = f"on the first {xs.shape[0]} examples (the table's own points are not recorded)"
    name = stronger if isinstance(stronger, str) else "the stronger attacks"
    _flag(flags, "weaker_than_stronger_suite", reported - found > tolerance + 1e-9,  # 1e-9: 0.04 - 0.03 > 0.01
          f"at eps = {eps} the table reports {reported:.1%} but the {name} suite finds {found:.1%} {where}: "
          "the attacks behind the table are too weak for this model; use the strong suite")
