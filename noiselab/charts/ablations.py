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


def placement_chart(summary: pd.DataFrame, title: str) -> alt.FacetChart:
    """Robust against clean accuracy, one line per noise placement through its σ grid (±1 std bars over seeds),
    one panel per ε: at matched clean accuracy, the higher line is the more robust placement."""
    base = alt.Chart(summary).encode(
        x=alt.X("clean_mean:Q", title="clean accuracy", scale=alt.Scale(zero=False)),
        color=alt.Color("placement:N", title="noise placement"),
    )
    line = base.mark_line(point=True).encode(
        y=alt.Y("robust_mean:Q", title="robust accuracy", scale=alt.Scale(domain=[0, 1])),
        order="sigma:Q",
        tooltip=["placement:N", "sigma:Q", "eps:Q", alt.Tooltip("clean_mean:Q", format=".3f"),
                 alt.Tooltip("robust_mean:Q", format=".3f"), alt.Tooltip("robust_std:Q", format=".3f"), "seeds:Q"],
    )
    bars = base.transform_calculate(low="datum.robust_mean - datum.robust_std",
                                    high="datum.robust_mean + datum.robust_std").mark_rule().encode(
        y="low:Q", y2="high:Q")
    labels = base.transform_calculate(text="'σ=' + datum.sigma").mark_text(dx=4, dy=-8, fontSize=9).encode(
        y="robust_mean:Q", text="text:N")
    return (bars + line + labels).properties(width=220, height=200).facet(
        column=alt.Column("eps:Q", title="ε (L∞ attack budget)")).properties(title=title)
