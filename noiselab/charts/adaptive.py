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


def adaptive_panel_chart(table: pd.DataFrame, eps: float, eps_max: float) -> alt.HConcatChart:
    """The lab's Fig. 7 panel for one defended model: accuracy against eps per attack (a rule at the parameter
    `eps`), beside each attack's accuracy at that eps against its cost. Moving the `eps` parameter (JupyterChart
    params) moves the rule and refilters the right-hand points in the browser, with no new data."""
    columns = ["attack", "eps", "accuracy", "low", "high", "seconds_per_example", "passes_per_example"]
    lines = _with_clean_start(table.assign(model="m"))[columns] if len(table) else pd.DataFrame(columns=columns)
    lines = lines.astype({"eps": float, "accuracy": float, "low": float, "high": float})
    selected = alt.param(name="eps", value=float(eps))
    x = alt.X("eps:Q", title="ε (L∞ attack budget)", scale=alt.Scale(domain=[0, eps_max]))
    base = alt.Chart(lines).encode(x=x, color=alt.Color("attack:N", title="attack"))
    line = base.mark_line(point=True).encode(
        y=alt.Y("accuracy:Q", title="accuracy of the randomized defense", scale=alt.Scale(domain=[0, 1])),
        tooltip=["attack:N", "eps:Q", alt.Tooltip("accuracy:Q", format=".3f"), alt.Tooltip("low:Q", format=".3f"),
                 alt.Tooltip("high:Q", format=".3f")])
    band = base.mark_area(opacity=0.12).encode(y="low:Q", y2="high:Q")
    rule = alt.Chart(pd.DataFrame({"zero": [0]})).mark_rule(color="#888", strokeDash=[4, 3]).encode(
        x=alt.datum(selected, type="quantitative"))
    curves = (band + line + rule).properties(width=330, height=250)
    cost = alt.Chart(lines[lines["attack"] != "clean"] if len(lines) else lines).transform_filter(
        "abs(datum.eps - eps) < 1e-6").mark_point(filled=True, size=90).encode(
        x=alt.X("seconds_per_example:Q", title="seconds per example (this machine)", scale=alt.Scale(type="log")),
        y=alt.Y("accuracy:Q", title="accuracy at the chosen ε", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("attack:N"),
        tooltip=["attack:N", "passes_per_example:Q", alt.Tooltip("seconds_per_example:Q", format=".2e"),
                 alt.Tooltip("accuracy:Q", format=".3f")],
    ).properties(width=250, height=250, title="strength against cost at the chosen ε")
    return alt.hconcat(curves, cost).add_params(selected)  # top level: JupyterChart sees it as params.eps


def attack_loss_chart(summary: pd.DataFrame, title: str) -> alt.FacetChart:
    """Accuracy of each randomized defense (vote over noisy passes) against eps under each attack, mean ± std over
    seeds, one panel per defended model: the lowest line is the strongest attack."""
    table = _with_clean_start(summary.rename(columns={"mean": "accuracy"}))
    table["kind"] = table["attack"].map(lambda a: "sampling (EOT)" if a.startswith("EOT") else "closed form")
    base = alt.Chart(table).encode(
        x=alt.X("eps:Q", title="ε (L∞ attack budget)"),
        color=alt.Color("attack:N", title="attack", legend=alt.Legend(symbolOpacity=1, symbolType="stroke")),
    )
    line = base.mark_line(point=True).encode(
        y=alt.Y("accuracy:Q", title="accuracy of the randomized defense", scale=alt.Scale(domain=[0, 1])),
        strokeDash=alt.StrokeDash("kind:N", title="gradient",
                                  legend=alt.Legend(symbolType="stroke", symbolStrokeColor="gray")),
        tooltip=["model:N", "attack:N", "eps:Q", alt.Tooltip("accuracy:Q", format=".3f"),
                 alt.Tooltip("std:Q", format=".3f"), "seeds:Q"],
    )
    band = base.transform_calculate(low="datum.accuracy - datum.std", high="datum.accuracy + datum.std").mark_area(
        opacity=0.12).encode(y="low:Q", y2="high:Q")
    return (band + line).properties(width=260, height=220).facet(
        column=alt.Column("model:N", title=None)).properties(title=title)
