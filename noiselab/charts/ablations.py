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


def sigma_scale_chart(trajectories: pd.DataFrame, summary: pd.DataFrame, title: str) -> alt.VConcatChart:
    """Top: the first layer's weight norm and the noise's size relative to its pre-activation, per epoch (mean over
    seeds), one line per σ, one column per σ mode. Bottom: robust accuracy against σ per ε, one line per mode."""
    seeds = trajectories.groupby(["mode", "sigma", "epoch"], as_index=False)[
        ["weight_norm", "relative_noise", "preact_std"]].mean()

    def over_training(field: str, axis: str) -> alt.FacetChart:
        return alt.Chart(seeds).mark_line(point=True).encode(
            x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y(f"{field}:Q", title=axis),
            color=alt.Color("sigma:O", title="σ", scale=alt.Scale(scheme="viridis")),
            tooltip=["mode:N", "sigma:Q", "epoch:Q", alt.Tooltip("weight_norm:Q", format=".3f"),
                     alt.Tooltip("preact_std:Q", format=".3f"), alt.Tooltip("relative_noise:Q", format=".3f")],
        ).properties(width=200, height=150).facet(column=alt.Column("mode:N", title=None))

    robust = summary[summary["eps"] > 0]
    base = alt.Chart(robust).encode(x=alt.X("sigma:Q", title="σ"), color=alt.Color("mode:N", title="σ mode"))
    lines = base.mark_line(point=True).encode(
        y=alt.Y("mean:Q", title="robust accuracy", scale=alt.Scale(domain=[0, 1])),
        tooltip=["mode:N", "sigma:Q", "eps:Q", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("std:Q", format=".3f"),
                 "seeds:Q"])
    bars = base.transform_calculate(low="datum.mean - datum.std", high="datum.mean + datum.std").mark_rule().encode(
        y="low:Q", y2="high:Q")
    robustness = (bars + lines).properties(width=200, height=170).facet(
        column=alt.Column("eps:Q", title="robust accuracy at ε (L∞)"))
    return alt.vconcat(over_training("weight_norm", "first layer's weight norm"),
                       over_training("relative_noise", "noise std / pre-activation std"),
                       robustness).resolve_scale(color="independent").properties(title=title)


def recipe_chart(summary: pd.DataFrame, eps: tuple[float, ...], title: str) -> alt.HConcatChart:
    """Robust accuracy against training cost (× vanilla), one panel per ε, ±1 std bars over seeds; filled points are
    the noise-only variants that meet the constraints, the dashed line the cost limit."""
    panels = []
    for value in eps:
        column = f"robust_{value:g}"
        # plain field names: Vega-Lite reads a dot in a field name as a nested field
        frame = summary.assign(robust=summary[f"{column}_mean"], spread=summary[f"{column}_std"],
                               low=summary[f"{column}_mean"] - summary[f"{column}_std"],
                               high=summary[f"{column}_mean"] + summary[f"{column}_std"],
                               kind=summary["noise_only"].map({True: "noise only", False: "reference"}))
        frame = frame[["variant", "kind", "eligible", "cost_ratio", "clean_mean", "seeds", "robust", "spread", "low",
                       "high"]]
        base = alt.Chart(frame).encode(x=alt.X("cost_ratio:Q", title="training time × vanilla's",
                                               scale=alt.Scale(type="log")))
        points = base.mark_point(size=70, filled=True).encode(
            y=alt.Y("robust:Q", title=f"robust accuracy at ε = {value:g}", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("variant:N", title="variant", scale=alt.Scale(scheme="tableau20")),
            shape=alt.Shape("kind:N", title=None),
            opacity=alt.condition("datum.eligible", alt.value(1.0), alt.value(0.35)),
            tooltip=["variant:N", alt.Tooltip("robust:Q", format=".3f"), alt.Tooltip("spread:Q", format=".3f"),
                     alt.Tooltip("clean_mean:Q", format=".3f"), alt.Tooltip("cost_ratio:Q", format=".2f"),
                     "eligible:N", "seeds:Q"])
        bars = base.mark_rule().encode(y="low:Q", y2="high:Q", color=alt.Color("variant:N"))
        limit = alt.Chart(pd.DataFrame({"x": [2.0]})).mark_rule(strokeDash=[4, 3], color="gray").encode(x="x:Q")
        panels.append((bars + points + limit).properties(width=300, height=260, title=f"ε = {value:g}"))
    return alt.hconcat(*panels).properties(title=title)
