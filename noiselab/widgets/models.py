"""The shared list of models the panels pick from: starter models shipped with noiselab, and models trained here.

    >>> models = ModelList()
    >>> models.add(LabModel("vanilla", model, config={"method": "vanilla", ...}, sigma=0.0))
    >>> models.observe(lambda change: print(change.new), names="names")   # panels refresh their dropdowns

`names` is a traitlets List, so panels observe it (or link a Dropdown's options to it) and see every addition.
Adding a model under an existing name replaces it (a retrain): `names` stays the same then, so `revision`, which
counts every add, is what a panel observes to notice a retrain.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import traitlets
from torch import nn


@dataclass
class LabModel:
    name: str                  # unique, shown in dropdowns and chart legends, e.g. "noise σ=0.5"
    model: nn.Module           # the expectation model, eval mode, on the CPU
    config: dict               # the TrainConfig it was trained with, as a dict
    sigma: float = 0.0         # the noise it was trained with (final value when learnable); 0 for no noise
    source: str = "trained here"  # or "starter"
    history: list[dict] = field(default_factory=list)  # train()'s per-epoch rows
    command: str = ""          # how to make it again (starter models: the noiselab CLI command)


def load_starter_models(folder=None, names: list[str] | None = None) -> list[LabModel]:
    """The shipped starter models (noiselab.starter.load_starters, same arguments and errors) as LabModel entries."""
    from ..starter import load_starters

    return [LabModel(name=s.name, model=s.model, config=s.config, sigma=s.sigma, source="starter",
                     history=s.history, command=s.command) for s in load_starters(folder, names)]


class ModelList(traitlets.HasTraits):
    names = traitlets.List(traitlets.Unicode())
    revision = traitlets.Int(0)  # +1 on every add, a replacement included

    def __init__(self, models: list[LabModel] | None = None) -> None:
        super().__init__()
        self._models: dict[str, LabModel] = {}
        self._lock = threading.Lock()  # training adds from a worker thread
        for model in models or []:
            self.add(model)

    def add(self, model: LabModel) -> None:
        if not isinstance(model, LabModel):
            raise TypeError(f"ModelList holds LabModel entries, got {type(model).__name__}")
        with self._lock:
            self._models[model.name] = model
            names = list(self._models)
        self.names = names
        self.revision += 1

    def get(self, name: str) -> LabModel:
        try:
            return self._models[name]
        except KeyError:
            raise KeyError(f"no model named {name!r}; the lab has {list(self._models)}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._models

    def __iter__(self):
        return iter(list(self._models.values()))

    def __len__(self) -> int:
        return len(self._models)
