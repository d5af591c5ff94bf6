"""Charts of the lab's training panel: the live loss and batch accuracy of a run, and σ when it is learnable.

    >>> training_chart(pd.DataFrame({"step": [1, 2], "loss": [2.3, 2.1], "accuracy": [0.1, 0.2],
    ...                              "sigma": [1.9, 1.88]}), learnable_sigma=True)

Pure functions: a table of per-batch progress rows in, an Altair chart out. A long run has more batches than a
chart should carry (Vega-Lite refuses more than 5,000 rows by default, and a browser redrawing twice a second
wants far fewer), so rows are thinned to at most `max_points`, keeping the first and last.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

COLUMNS = ("step", "loss", "accuracy", "sigma")


def thin(frame: pd.DataFrame, max_points: int = 600) -> pd.DataFrame:
    """At most `max_points` evenly spaced rows, the first and the last (the newest value) always among them."""
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points!r}")
    if len(frame) <= max_points:
        return frame
    # evenly spaced positions from the first row to the last, inclusive; rounding may merge a few
    positions = np.unique(np.linspace(0, len(frame) - 1, max_points).round().astype(int))
    return frame.iloc[positions]


def _panel(frame: pd.DataFrame, field: str, title: str, color: str, domain=None) -> alt.Chart:
    scale = alt.Scale(domain=domain) if domain is not None else alt.Scale(zero=False)
    return alt.Chart(frame).mark_line(color=color, clip=True).encode(
        x=alt.X("step:Q", title="training step (batch)"),
        y=alt.Y(f"{field}:Q", title=title, scale=scale),
        tooltip=["step:Q", alt.Tooltip(f"{field}:Q", format=".4f")],
    ).properties(width=260, height=180, title=title)


def training_chart(progress: pd.DataFrame, learnable_sigma: bool = False, max_points: int = 600) -> alt.HConcatChart:
    """Loss and batch accuracy against the training step, and σ beside them when it is learned (Table 1's decay).

    `progress` has columns step, loss, accuracy (of the prediction the method trains, on the batch) and sigma.
    """
    missing = [c for c in COLUMNS if c not in progress.columns]
    if missing:
        raise ValueError(f"progress lacks the columns {missing}; it needs {COLUMNS}")
    frame = thin(progress[list(COLUMNS)].reset_index(drop=True), max_points)
    panels = [
        _panel(frame, "loss", "loss", "#4c78a8"),
        _panel(frame, "accuracy", "batch accuracy", "#54a24b", domain=[0, 1]),
    ]
    if learnable_sigma:
        panels.append(_panel(frame, "sigma", "σ (learned)", "#e45756"))
    return alt.hconcat(*panels)
