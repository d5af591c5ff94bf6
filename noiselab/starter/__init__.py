"""Starter models shipped with noiselab: small trained LeNet5s so the lab has models to explore the moment it opens.

    >>> from noiselab.starter import load_starters
    >>> starters = load_starters()          # list[Starter]: vanilla, noise σ=0.3, noise σ=0.8, PGD-AT ε=0.3
    >>> [(s.name, s.command) for s in starters]

manifest.json lists each file with the exact `noiselab train` command that made it, its sigma, and its accuracy on
the embedded test split; make_starter.py remakes them all (see README.md here). The starters are plain checkpoints
(the model, its config and training history, and the manifest's name, sigma and command): the widgets wrap them as
their LabModel entries (noiselab.widgets.load_starter_models), and nothing here imports the widgets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from torch import nn

from .._files import read_json_document
from ..checkpoint import CheckpointError, load_model

MANIFEST = "manifest.json"
REMAKE = "remake them with `python -m noiselab.starter.make_starter` (a few minutes on a CPU), or reinstall noiselab"


def starter_folder() -> Path:
    """The folder holding the shipped starter files (inside the installed package)."""
    return Path(str(resources.files("noiselab.starter")))


def read_manifest(folder: str | Path | None = None) -> dict:
    """The starter manifest as a dict; a missing or unreadable one raises a CheckpointError that says what to do."""
    path = Path(folder if folder is not None else starter_folder()) / MANIFEST
    manifest = read_json_document(path, "the starter models' manifest", REMAKE, CheckpointError)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), list):
        raise CheckpointError(f"{path} is not a noiselab starter manifest (no 'models' list); {REMAKE}")
    return manifest


@dataclass
class Starter:
    """One shipped starter model: the checkpoint's model (eval mode, CPU), config and history, and its manifest entry's
    name, sigma and the command that made it."""

    name: str
    model: nn.Module
    config: dict
    sigma: float = 0.0
    history: list[dict] = field(default_factory=list)
    command: str = ""


def load_starters(folder: str | Path | None = None, names: list[str] | None = None) -> list[Starter]:
    """The starter models, in the manifest's order.

    `names` picks some by name. A file that is missing, corrupt or not the one the manifest lists (its sha256
    differs) raises noiselab.checkpoint.CheckpointError naming the model and how to remake it.
    """
    folder = Path(folder if folder is not None else starter_folder())
    entries = read_manifest(folder)["models"]
    if names is not None:
        known = [entry.get("name") for entry in entries]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"no starter model named {unknown}; the starters are {known}")
        entries = [entry for entry in entries if entry.get("name") in names]
    models = []
    for entry in entries:
        name, file = entry.get("name"), entry.get("file")
        if not isinstance(name, str) or not isinstance(file, str) or Path(file).name != file:
            raise CheckpointError(f"the starter manifest in {folder} has a malformed entry {entry!r}; {REMAKE}")
        path = folder / file
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            if digest is not None and "sha256" in entry and digest != entry["sha256"]:
                raise CheckpointError(f"{path} is not the file the manifest lists (its sha256 differs): corrupt or "
                                      "replaced")
            model, state = load_model(path)
        except CheckpointError as error:
            raise CheckpointError(f"starter model {name!r}: {error}; {REMAKE}") from None
        models.append(Starter(name=name, model=model, config=dict(state["config"]),
                              sigma=float(entry.get("sigma", 0.0)), history=list(state.get("history", [])),
                              command=str(entry.get("command", ""))))
    return models


__all__ = ["Starter", "load_starters", "read_manifest", "starter_folder"]
