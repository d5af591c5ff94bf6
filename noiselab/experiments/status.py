"""<out>/status.json: where each cell of a running sweep stands, readable by anyone while the sweep runs.

    noiselab status results/sweep          # or read the JSON: {"cells": {key: {"label", "state", ...}}}

The sweep's driver is its only writer, and writes it atomically (at most once per `interval` seconds, and at
every change of state), so a reader never sees half a file. results.json stays the record of what finished;
this file only says what is happening: a cell's state, its attempt (a retried cell's second attempt is 2),
its training step, and the process and node that run it.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from .records import read_json, write_json

STATES = ("pending", "training", "attacking", "done", "stopped", "failed")


class SweepStatus:
    def __init__(self, out: Path, labels: dict[str, str], done: set[str], backend: str, interval: float = 1.0):
        self.path = Path(out) / "status.json"
        self.interval = interval
        self._written = 0.0
        self.payload = {
            "backend": backend, "started": time.time(), "updated": time.time(),
            "cells": {key: {"label": label, "state": "done" if key in done else "pending"}
                      for key, label in labels.items()},
        }
        self.flush(force=True)

    def update(self, key: str, **fields) -> None:
        """Merge `fields` into the cell's entry; a change of state is written at once, step counts at most every
        `interval` seconds."""
        cell = self.payload["cells"][key]
        changed_state = "state" in fields and fields["state"] != cell.get("state")
        cell.update(fields)
        self.flush(force=changed_state)

    def flush(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self._written >= self.interval:
            self.payload["updated"] = now
            write_json(self.path, self.payload)
            self._written = now

    def counts(self) -> Counter:
        return state_counts(self.payload)


def state_counts(status: dict) -> Counter:
    """How many cells are in each state, in a status payload (live or read back from status.json)."""
    return Counter(cell["state"] for cell in status["cells"].values())


def read_status(out: str | Path) -> dict:
    """The status of the sweep in `out`, as its driver last wrote it."""
    status = read_json(Path(out) / "status.json")
    if status is None:
        raise FileNotFoundError(f"no sweep status in {out} (status.json is written when a sweep starts there)")
    return status


def format_status(status: dict) -> str:
    """A table a person reads: one line per cell, then the count per state."""
    lines = [f"{'cell':<28} {'state':<10} {'attempt':>7} {'step':>13}  where"]
    for cell in status["cells"].values():
        step = f"{cell['step']}/{cell['total_steps']}" if "step" in cell else ""
        if cell.get("state") == "attacking" and cell.get("attacked"):
            step = cell["attacked"]  # the attack stage last finished, where the training steps were
        where = f"pid {cell['pid']} on {cell.get('node', '?')}" if "pid" in cell else ""
        if cell.get("error"):
            where = f"{where}: {cell['error']}" if where else cell["error"]
        lines.append(f"{cell['label'][:28]:<28} {cell['state']:<10} {cell.get('attempt', ''):>7} {step:>13}  {where}")
    counts = state_counts(status)
    age = time.time() - status["updated"]
    lines.append(", ".join(f"{counts[s]} {s}" for s in STATES if counts[s])
                 + f" ({status['backend']} backend; written {age:.0f} s ago)")
    return "\n".join(lines)
