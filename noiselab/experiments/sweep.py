"""A sweep: a grid of training runs ("cells"), each trained and then attacked, results in one JSON file.

Each cell is a set of TrainConfig overrides ({"method": "noise", "sigma": 0.5, "seed": 1}) on a base config.
Finished cells are recorded in <out>/results.json after each cell; a sweep run again with the same out folder
skips them, and a cell interrupted mid-training resumes from its checkpoint in <out>/checkpoints/.
<out>/status.json says where every cell stands while the sweep runs (see status.py).

The cells run in this process (backend "local", the default) or as Ray tasks (backend "ray", ray_backend.py,
an optional extra); the records, the files and the resuming are the same either way.
"""

from __future__ import annotations

import filecmp
import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from .. import data as data_module
from .._files import copy_atomically
from ..checkpoint import load_checkpoint
from ..train import TrainConfig, TrainProgress, changed_settings, resolve_device
from .cells import EvalSpec, cell_key, cell_label, checkpoint_path, format_eps, run_cell
from .records import check_output_folder, environment, read_json, write_json
from .status import SweepStatus

# one cell's pieces live in cells.py (which the Ray backend builds on too); they are named here as before
__all__ = ["BACKENDS", "CellsFailed", "EvalSpec", "adopt_results", "adopt_training", "cell_key", "cell_label",
           "checkpoint_path", "format_eps", "print_progress", "robust_table", "run_cell", "run_sweep", "summarize"]


BACKENDS = ("local", "ray")


class CellsFailed(RuntimeError):
    """Some cells of a sweep raised or lost their workers too often; the others are saved."""


def _as_json(value):
    """What `value` reads back as from a results file (tuples become lists)."""
    return json.loads(json.dumps(value))


def _same_cell(finished: dict, config: TrainConfig) -> tuple[str, dict] | None:
    """The (key, record) of the finished cell in `finished` trained under the very settings of `config` (whatever
    overrides named them: {"loss": "stochastic"} is the default spelled out), with every epoch done; None if none."""
    wanted = asdict(config)
    for key, record in finished.items():
        stored = TrainConfig.with_defaults(record.get("config", {}))
        if not changed_settings(stored, wanted) and len(record.get("history", [])) == config.epochs:
            return key, record
    return None


def adopt_results(source: str | Path, out: Path, base: TrainConfig, evaluation: EvalSpec,
                  cells: list[dict]) -> dict[str, dict]:
    """Records for the cells that the sweep in `source` finished under the very same settings and attacked the same
    way (the same attacks, on the same test examples, at every eps of `evaluation` among its own): the source's
    numbers at this evaluation's eps, taken as they are. Nothing is measured again, and nothing would change if it
    were: robust_accuracy attacks each eps afresh, seeded by the cell's seed. A cell with a training of its own in
    `out` (a checkpoint other than a copy of the source's) is left to be evaluated here. Returns {key: record}; each
    record says so ("results_from", and "training_from" where the model was trained)."""
    source = Path(source)
    results = read_json(source / "results.json") or {}
    spec = results.get("evaluation")
    if not spec or spec.get("attacks") != _as_json(evaluation.attacks) or spec.get("limit") != evaluation.limit:
        return {}
    if not set(evaluation.eps) <= set(spec.get("eps", [])):
        return {}
    adopted = {}
    for cell in cells:
        found = _same_cell(results.get("cells", {}), replace(base, **cell))
        if found is None:
            continue
        key, record = found
        own, origin = checkpoint_path(out, cell_key(cell)), checkpoint_path(source, key)
        if own.exists() and not (origin.is_file() and filecmp.cmp(own, origin, shallow=False)):
            continue  # a training of its own: evaluated here
        robust = [row for row in record["robust"] if row["eps"] in evaluation.eps]
        adopted[cell_key(cell)] = record | {"overrides": cell, "label": cell_label(asdict(replace(base, **cell))),
                                            "robust": robust, "results_from": source.name,
                                            "training_from": record.get("training_from", source.name)}
    return adopted


def adopt_training(source: str | Path, out: Path, base: TrainConfig, cells: list[dict],
                   target_of: Callable[[str], Path] | None = None) -> dict[str, str]:
    """Let the sweep in `out` evaluate, without training them again, the cells that the sweep in `source` finished
    training under the very same settings (the grids of Figs. 4 and 6 share cells; the cells are matched by their
    settings, not by how their overrides spell them): their checkpoints are copied to <out>/checkpoints/ (or to
    target_of(key)), where run_cell's resume finds a finished training. A cell that has its own checkpoint in `out`
    keeps it (and is not adopted); one holding the very file copied by an earlier run of this sweep is. Returns
    {key: source folder's name} for the cells adopted."""
    source = Path(source)
    finished = (read_json(source / "results.json") or {}).get("cells", {})
    target_of = target_of or (lambda key: checkpoint_path(out, key))
    adopted = {}
    for cell in cells:
        key = cell_key(cell)
        config = replace(base, **cell)
        found = _same_cell(finished, config)
        if found is None:
            continue
        origin, target = checkpoint_path(source, found[0]), target_of(key)
        if not origin.is_file():
            continue
        if target.exists():  # adopted by an earlier run of this sweep (the very file), or its own training
            if filecmp.cmp(origin, target, shallow=False):
                adopted[key] = source.name
            continue
        state = load_checkpoint(origin)
        stored = TrainConfig.with_defaults(state["config"])
        if not changed_settings(stored, asdict(config)) and len(state.get("history", [])) == config.epochs:
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_atomically(origin, target, "a checkpoint")
            adopted[key] = source.name
    return adopted


def run_sweep(
    name: str,
    base: TrainConfig,
    cells: list[dict],
    evaluation: EvalSpec,
    out: str | Path,
    progress: Callable[[str], None] | None = None,
    on_train_progress: Callable[[dict, TrainProgress], None] | None = None,
    stop=None,
    backend: str = "local",
    ray_options=None,
    on_status: Callable[[SweepStatus], None] | None = None,
    adopt_from: str | Path | list[str | Path] | None = None,
) -> dict:
    """Train and attack every cell not yet in <out>/results.json; return the results dict.

    adopt_from: another sweep's folder (or several, the first that has a cell wins) whose finished cells stand in
    for this grid's identical ones: their results where they were attacked the same way (see adopt_results: the
    records say "results_from"), else their trainings (see adopt_training: this sweep attacks them; the records say
    "training_from" and keep the training's own history and time).

    backend "local" runs the cells one after another in this process; "ray" runs each as a Ray task
    (`ray_options`: a noiselab.experiments.ray_backend.RayOptions). Either way this process alone writes
    results.json (after every finished cell) and status.json; `on_status(status)` is called as they change."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "ray":
        from .ray_backend import RayOptions, check_reachable, import_ray

        import_ray()  # before anything is written: without Ray, a clear error naming the install command
        ray_options = (ray_options or RayOptions()).validate()
        check_reachable(ray_options.address)  # and a cluster address that nothing answers at
    out = check_output_folder(out)
    evaluation.validate()
    configs = [replace(base, **cell).validate() for cell in cells]  # every cell's settings checked up front
    keys = [cell_key(cell) for cell in cells]
    if len(set(keys)) != len(keys):
        raise ValueError("the grid names a cell twice; every cell's settings must differ")
    results_path = out / "results.json"
    results = read_json(results_path) or {"experiment": name, "cells": {}}
    if results.get("experiment") != name:
        raise ValueError(f"{results_path} holds results of {results.get('experiment')!r}, not {name!r}; "
                         "use another output folder")
    if results["cells"] and "base_config" in results:
        # finished cells are only reused under the same settings (those added since read as their defaults)
        # (where the data lies and which device trains do not change what a cell is)
        stored, now = TrainConfig.with_defaults(results["base_config"]), _as_json(asdict(base))
        changed = changed_settings(stored, now)
        stored_eval = results.get("evaluation")
        if stored_eval is not None and stored_eval != _as_json(asdict(evaluation)):
            changed.append("evaluation")
        if changed:
            raise ValueError(f"{results_path} holds cells made with other settings ({', '.join(changed)}); "
                             "use another output folder, or delete it to start again")
    if backend == "local":
        driver = environment(resolve_device(base.device))
    else:  # the cells run on the cluster's workers: each record names its own device
        driver = environment() | {"device": "each cell's own (see its 'device')"}
    results.update({"base_config": asdict(base), "evaluation": asdict(evaluation), "environment": driver,
                    "backend": backend})
    titles = {key: f"{cell_label(asdict(config))} (seed {config.seed})" for key, config in zip(keys, configs)}
    status = SweepStatus(out, titles, set(results["cells"]), backend)
    pending = [(key, cell, config) for key, cell, config in zip(keys, cells, configs) if key not in results["cells"]]
    sources = [adopt_from] if isinstance(adopt_from, (str, Path)) else adopt_from or []
    for source in sources:  # finished elsewhere and attacked the same way: recorded as they are
        records = adopt_results(source, out, base, evaluation, [cell for _, cell, _ in pending])
        for key, record in records.items():
            results["cells"][key] = record
            status.update(key, state="done")
            if progress:
                progress(f"{titles[key]}: {Path(source).name}'s results of the same cell, attacked the same way")
        if records:
            write_json(results_path, results)
            pending = [item for item in pending if item[0] not in records]
    adopted: dict[str, str] = {}
    for source in sources:
        adopted |= adopt_training(source, out, base, [cell for key, cell, _ in pending if key not in adopted])

    def store(key: str, record: dict) -> None:
        if key in results["cells"]:  # a cell is recorded once, whatever happened to the process that ran it
            return
        if key in adopted:
            record = record | {"training_from": adopted[key]}
        results["cells"][key] = record
        write_json(results_path, results)  # after every cell: an interruption loses at most the cells in progress
        status.update(key, state="done")
        if on_status:
            on_status(status)

    if on_status:
        on_status(status)
    if backend == "ray" and pending:
        from .ray_backend import run_on_ray

        failures = run_on_ray(pending, evaluation, out, ray_options, status, store, stop, progress, on_status)
        if failures:
            by_error: dict[str, list[str]] = {}
            for key in titles:  # in the grid's order, not the order the failures came in
                if key in failures:
                    by_error.setdefault(failures[key], []).append(titles[key])
            raise CellsFailed(f"{len(failures)} cell(s) failed: " + "; ".join(
                f"{', '.join(names)}: {error}" for error, names in by_error.items())
                + f"\nThe other cells are saved in {results_path} (noiselab status {out} shows each cell); "
                "fix the cause and run the same command again")
    elif pending:
        _run_locally(pending, evaluation, out, status, store, titles, progress, on_train_progress, stop, on_status)
    write_json(results_path, results)
    return results


def _run_locally(pending, evaluation, out, status, store, titles, progress, on_train_progress, stop, on_status):
    data = None
    for key, overrides, config in pending:
        if stop is not None and stop.is_set():
            break
        if data is None:
            data = data_module.load(config.dataset, root=config.data_root, device=resolve_device(config.device))

        def on_phase(phase: str, key=key) -> None:
            status.update(key, state=phase, pid=os.getpid(), node=platform.node(), attempt=1)
            if progress:
                progress(f"{titles[key]}: {phase}")
            if on_status:
                on_status(status)

        def on_step(p: TrainProgress, key=key, overrides=overrides) -> None:
            status.update(key, step=p.step, total_steps=p.total_steps)
            if on_train_progress:
                on_train_progress(overrides, p)

        def on_attack_stage(eps: float, attack: str, key=key) -> None:
            status.update(key, attacked=f"ε {format_eps(eps)}: {attack}")
            if progress:
                progress(f"{titles[key]}: attacked at ε {format_eps(eps)} with {attack}")

        record = run_cell(config, overrides, evaluation, out, data, on_phase, on_step, stop, on_attack_stage)
        if record is None:
            status.update(key, state="stopped")
            break
        store(key, record)


def robust_table(results: dict) -> pd.DataFrame:
    """Worst-case robust accuracy per (cell, eps), long form, from a sweep's results."""
    rows = []
    for cell in results["cells"].values():
        by_eps: dict[float, float] = {}
        for row in cell["robust"]:
            by_eps[row["eps"]] = row["accuracy"]  # the last stage per eps is the worst case
        for eps, accuracy in by_eps.items():
            config = TrainConfig.with_defaults(cell["config"])
            rows.append({"label": cell["label"], "method": config["method"], "sigma": config["sigma"],
                         "train_eps": config["eps"], "seed": config["seed"], "eps": eps, "accuracy": accuracy,
                         "loss": config["loss"], "noise_at": config["noise_at"], "sigma_mode": config["sigma_mode"]})
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, spread (std) and seed count of accuracy per (label, eps)."""
    grouped = table.groupby(["label", "method", "eps"], sort=False)["accuracy"]
    return grouped.agg(mean="mean", std="std", seeds="count").reset_index().fillna({"std": 0.0})


def print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


