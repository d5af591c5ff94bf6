"""Charts of the ablations and controls (issue 7): pure functions from result tables to Altair charts."""

from __future__ import annotations

import altair as alt
import pandas as pd


def mean_path_chart(table: pd.DataFrame, title: str) -> alt.Chart:
    """The output layer's mean-path gap against sigma, one line per rule set, one panel per model."""
    output = table[table["is_output"]]
    return alt.Chart(output).mark_line(point=True).encode(
        x=alt.X("sigma:Q", title="σ (first-layer noise std)"),
        y=alt.Y("gap:Q", title="relative gap: propagated mean vs output"),
        color=alt.Color("rules:N", title="rules (ReLU/pool)"),
        tooltip=["model:N", "rules:N", "sigma:Q", alt.Tooltip("gap:Q", format=".4f"),
                 alt.Tooltip("agreement:Q", format=".3f", title="same class as the network")],
    ).properties(width=180, height=160).facet(column=alt.Column("model:N", title=None)).properties(title=title)
