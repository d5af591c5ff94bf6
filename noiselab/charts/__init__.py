"""Charts: pure functions from result tables (pandas DataFrames) to Altair charts, and saving them offline.

No training or attacking happens here. `save_chart` writes a self-contained HTML file (Vega's JavaScript inlined,
so it opens offline) and a PNG through vl-convert.
"""

from __future__ import annotations

from pathlib import Path

from .._imports import defer_rfc3987_syntax

defer_rfc3987_syntax()  # ~2 s of every process that draws a chart, for a format no chart uses (noiselab/_imports.py)

import altair as alt  # noqa: E402
import pandas as pd  # noqa: E402


def save_chart(chart: alt.TopLevelMixin, folder: str | Path, stem: str) -> list[Path]:
    folder = Path(folder)
    html, png = folder / f"{stem}.html", folder / f"{stem}.png"
    chart.save(str(html), inline=True)
    chart.save(str(png), scale_factor=2)
    return [html, png]


def robustness_chart(summary: pd.DataFrame, title: str, eps_title: str = "ε (L∞ attack budget)") -> alt.Chart:
    """Robust accuracy (worst case over the attacks) against eps, one line per model, a band of ±1 std over seeds."""
    base = alt.Chart(summary).encode(
        x=alt.X("eps:Q", title=eps_title),
        color=alt.Color("label:N", title="model", legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=3,
                                                                    symbolOpacity=1)),
    )
    line = base.mark_line(point=True).encode(
        y=alt.Y("mean:Q", title="robust accuracy", scale=alt.Scale(domain=[0, 1])),
        tooltip=["label:N", "eps:Q", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("std:Q", format=".3f"),
                 "seeds:Q"],
    )
    # the band keeps the line's colour encoding: a second encoding with legend=None would hide the merged legend
    band = base.transform_calculate(low="datum.mean - datum.std", high="datum.mean + datum.std").mark_area(
        opacity=0.15).encode(y="low:Q", y2="high:Q")
    return (band + line).properties(title=title, width=420, height=300)


def clean_accuracy_chart(noise: pd.DataFrame, adversarial: pd.DataFrame, title: str) -> alt.HConcatChart:
    """Fig. 6: clean accuracy against sigma (noise training) beside clean accuracy against eps (PGD-AT)."""
    def panel(frame: pd.DataFrame, field: str, axis: str, name: str) -> alt.Chart:
        return alt.Chart(frame).mark_line(point=True).encode(
            x=alt.X(f"{field}:Q", title=axis),
            y=alt.Y("mean:Q", title="clean accuracy", scale=alt.Scale(zero=False)),
            tooltip=[f"{field}:Q", alt.Tooltip("mean:Q", format=".4f"), alt.Tooltip("std:Q", format=".4f")],
        ).properties(title=name, width=300, height=250)

    return alt.hconcat(panel(noise, "sigma", "σ (training noise)", "noise training"),
                       panel(adversarial, "train_eps", "ε (training budget)", "PGD adversarial training")
                       ).properties(title=title)


def censoring_chart(curves: pd.DataFrame) -> alt.Chart:
    """Fig. 3: the density of Z, the censored part, and the two Gaussian approximations of ReLU(Z), per mu."""
    return alt.Chart(curves).mark_line(clip=True).encode(
        x=alt.X("xi:Q", title="ξ"),
        # a nearly censored unit's moment-matched Gaussian is a tall spike: clip it so the others stay readable
        y=alt.Y("density:Q", title="density (clipped at 1)", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("curve:N", title="curve"),
        strokeDash=alt.StrokeDash("curve:N"),
    ).properties(width=180, height=150).facet(
        facet=alt.Facet("panel:N", title=None, sort=alt.EncodingSortField("mu")), columns=3
    ).properties(title="ReLU censoring of Z ~ N(μ, σ²) (the paper's Fig. 3)")


def sigma_trajectory_chart(trajectory: pd.DataFrame, gradients: pd.DataFrame | None = None) -> alt.VConcatChart:
    """Table 1: learnable sigma and the first layer's weight norm against training step, per variant and seed
    (one line per seed): σ alone cannot say whether the noise grew or shrank relative to what it is added to.
    With `gradients` (table1_sigma_gradient.csv), a third panel: the trained weights' d(loss)/dσ against σ beside
    the Bimodel's pull 2ασ; σ settles where they cross (Model: where d(loss)/dσ = 0)."""
    def panel(field: str, axis: str) -> alt.Chart:
        return alt.Chart(trajectory).mark_line().encode(
            x=alt.X("step:Q", title="training step"),
            y=alt.Y(f"{field}:Q", title=axis, scale=alt.Scale(zero=False)),
            color=alt.Color("variant:N"),
            detail="seed:N",
            tooltip=["variant:N", "seed:N", "step:Q", alt.Tooltip(f"{field}:Q", format=".4f")],
        ).properties(width=420, height=200)

    panels = [panel("sigma", "σ"), panel("weight_norm", "first layer's weight norm")]
    if gradients is not None and len(gradients):
        base = alt.Chart(gradients).encode(x=alt.X("sigma:Q", title="σ (final weights held fixed)"),
                                           color=alt.Color("variant:N"), detail="seed:N")
        slope = base.mark_line(point=True).encode(
            # symlog: the Bimodel's pull is often orders of magnitude above the loss's own slope
            y=alt.Y("dloss_dsigma:Q", title="d(loss)/dσ  (dashed: 2ασ; symlog)",
                    scale=alt.Scale(type="symlog", constant=1e-3)),
            tooltip=["variant:N", "seed:N", "sigma:Q", alt.Tooltip("dloss_dsigma:Q", format=".4f")])
        pull = base.transform_filter("datum.bimodel_pull > 0").mark_line(strokeDash=[4, 3]).encode(
            y="bimodel_pull:Q")
        zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="gray").encode(y="y:Q")
        panels.append((slope + pull + zero).properties(width=420, height=200))
    return alt.vconcat(*panels).properties(
        title="Learnable σ from σ₀ = 1.9 (the paper's Table 1), beside the first layer's scale")
