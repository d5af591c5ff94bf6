"""Fig. 7 charts: the randomized defense's accuracy against eps per attack, and accuracy against attack cost."""

from __future__ import annotations

import altair as alt
import pandas as pd


def _with_clean_start(table: pd.DataFrame) -> pd.DataFrame:
    # every attack's line starts at the model's clean accuracy (measured once, as the "clean" row)
    clean = table[table["attack"] == "clean"]
    attacked = table[table["attack"] != "clean"]
    starts = []
    for (model, attack), _ in attacked.groupby(["model", "attack"], sort=False):
        start = clean[clean["model"] == model].assign(attack=attack)
        starts.append(start)
    return pd.concat([*starts, attacked], ignore_index=True) if starts else table


def adaptive_chart(table: pd.DataFrame, cost_eps: float) -> alt.VConcatChart:
    """Top: accuracy (95% interval band) against eps, one panel per model, one line per attack.
    Bottom: accuracy at cost_eps against seconds per example (log), per attack: strength against cost."""
    columns = ["model", "attack", "eps", "accuracy", "low", "high", "undecided", "seconds_per_example",
               "passes_per_example"]
    lines = _with_clean_start(table)[columns]
    order = list(dict.fromkeys(table["model"]))
    base = alt.Chart(lines).encode(
        x=alt.X("eps:Q", title="ε (L∞ attack budget)"),
        color=alt.Color("attack:N", title="attack"),
    )
    line = base.mark_line(point=True).encode(
        y=alt.Y("accuracy:Q", title="accuracy of the randomized defense", scale=alt.Scale(domain=[0, 1])),
        tooltip=["model:N", "attack:N", "eps:Q", alt.Tooltip("accuracy:Q", format=".3f"),
                 alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f"),
                 alt.Tooltip("undecided:Q", format=".3f", title="votes that could flip")],
    )
    band = base.mark_area(opacity=0.12).encode(y="low:Q", y2="high:Q")
    curves = (band + line).properties(width=260, height=220).facet(
        column=alt.Column("model:N", sort=order, title=None))
    at_eps = table[(table["eps"] == cost_eps) & (table["attack"] != "clean")][columns]
    cost = alt.Chart(at_eps).mark_point(filled=True, size=70).encode(
        x=alt.X("seconds_per_example:Q", title="attack cost: seconds per example (this device)",
                scale=alt.Scale(type="log")),
        y=alt.Y("accuracy:Q", title=f"accuracy at ε = {cost_eps:g}", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("attack:N"),
        shape=alt.Shape("model:N", sort=order),
        tooltip=["model:N", "attack:N", alt.Tooltip("seconds_per_example:Q", format=".2e"),
                 "passes_per_example:Q", alt.Tooltip("accuracy:Q", format=".3f")],
    ).properties(width=420, height=240, title="strength against cost (lower left is a cheaper, stronger attack)")
    return alt.vconcat(curves, cost).properties(
        title="Randomized defense (noise kept at inference) under the closed-form attack, EOT and the naive attack")
