"""Ablations and controls a careful reader of the paper asks for (issue 7), as reproduce-style experiments.

    noiselab reproduce meanpath --quick --out results/     # seconds on a CPU: the starter LeNet5s, 100 digits

meanpath: is the propagated mean the deterministic network's output? For each starter model (LeNet5 trained on the
embedded digits: vanilla, noise σ = 0.3 and 0.8, PGD-AT), each rule set and a grid of σ, the relative gap between
the closed-form mean and the noise-free activation at every layer (noiselab.layerwise.mean_path), and how
often the propagated mean picks the network's class. No randomness is involved (closed forms on fixed weights):
the one seed is the one the starter models were trained with.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import data as data_module
from ..charts import save_chart
from ..charts.ablations import mean_path_chart
from ..layerwise import mean_path
from ..starter import load_starter_models
from ..train import resolve_device
from .records import environment, write_json

RULE_SETS = (("paper", "paper"), ("moment", "paper"), ("paper", "clark"), ("moment", "clark"))


def meanpath(out: Path, quick: bool = False, device: str = "auto", **_) -> dict:
    device_ = resolve_device(device)
    sigmas = [0.0, 0.25, 0.5, 1.0, 2.0] if quick else [0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]
    limit = 100 if quick else 2000
    x, _ = data_module.load(device=device_).tensors("test", limit=limit)
    rows = []
    for lab_model in load_starter_models():
        model = lab_model.model.to(device_).eval()
        for relu, pool in RULE_SETS:
            for sigma in sigmas:
                path = mean_path(model, x, sigma, relu, pool)
                for gap in path.gaps:
                    rows.append({"model": lab_model.name, "rules": f"{relu}/{pool}", "sigma": sigma,
                                 "layer": gap.index, "name": gap.name, "kind": gap.kind, "gap": gap.gap,
                                 "is_output": gap.index == len(path.gaps) - 1, "agreement": path.agreement})
    table = pd.DataFrame(rows)
    table.to_csv(out / "meanpath.csv", index=False)
    write_json(out / "results.json", {"experiment": "meanpath", "quick": quick, "sigmas": sigmas, "images": limit,
                                      "models": "noiselab starter LeNet5s (seed 0)", "environment":
                                      environment(device_)})
    title = "Is the propagated mean the network's output?" + (" — quick mode" if quick else "")
    summary = table[table["is_output"]][["model", "rules", "sigma", "gap", "agreement"]].reset_index(drop=True)
    return {"summary": summary, "files": save_chart(mean_path_chart(table, title), out, "meanpath")}
