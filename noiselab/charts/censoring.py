"""The censoring explorer's chart: Z's density, what ReLU does to it, the two Gaussian rules, and sampling.

Pure functions from tables to an Altair chart; the tables are live (noiselab.charts.live), so the explorer
replaces them in the running view as μ and σ move, without re-rendering. Tables (column: meaning):

curves     xi, z, relu, paper, moment: one row per grid point ξ; the densities (per unit of ξ) of Z, of ReLU(Z)
           above 0 (Z's density for ξ > 0, 0 below), of the paper's and of the moment-matched Gaussian.
histogram  left, right, density: Monte Carlo draws of ReLU(Z) above 0, as a density per unit of ξ.
mass       xi, probability, label, source: the probability ReLU(Z) puts at exactly 0 (exact, and sampled),
           drawn as a rule of that height at ξ = 0; it is a probability, not a density.
"""

from __future__ import annotations

import json

import altair as alt
import pandas as pd

from .live import RESIZE, live_table

CURVES = {"z": "density of Z", "relu": "ReLU(Z) above 0", "paper": "paper's Gaussian",
          "moment": "moment-matched Gaussian"}
CURVE_ORDER = list(CURVES.values())
CURVE_COLORS = ["#9e9e9e", "#1f77b4", "#d62728", "#2ca02c"]
# Sizes of the live tables: the explorer's grid and bins must fit (it checks them against these).
CURVE_CAPACITY = 401
HISTOGRAM_CAPACITY = 200
MASS_CAPACITY = 2


def censoring_explorer_chart(
    curves: pd.DataFrame | dict, histogram: pd.DataFrame | dict, mass: pd.DataFrame | dict, ymax: float = 1.0
) -> alt.LayerChart:
    """A layered chart of the censoring of Z ~ N(μ, σ²) by a ReLU, fed by three live tables (DataFrames, or dicts of
    columns, as in the module's docstring).

    Parameters it declares (update them through JupyterChart.params): "curves", "histogram", "mass" (the live
    tables) and "ymax" (the top of the y axis: a nearly censored unit's moment-matched Gaussian is a tall spike,
    so the explorer clips the axis instead of letting the spike flatten everything else).
    """
    curves_param, curves_base = live_table("curves", curves, CURVE_CAPACITY)
    hist_param, hist_base = live_table("histogram", histogram, HISTOGRAM_CAPACITY)
    mass_param, mass_base = live_table("mass", mass, MASS_CAPACITY)
    ymax_param = alt.param(name="ymax", value=float(ymax))
    y_scale = alt.Scale(domainMin=0, domainMax=alt.ExprRef("ymax"), clamp=False)
    x = alt.X("xi:Q", title="ξ", scale=alt.Scale(nice=False))

    bars = hist_base.mark_bar(opacity=0.55, color="#74a9cf", clip=True).encode(
        x=alt.X("left:Q", title="ξ", scale=alt.Scale(nice=False)),
        x2="right:Q",
        y=alt.Y("density:Q", scale=y_scale, title="density  (the rule at ξ = 0: probability)"),
        tooltip=[alt.Tooltip("left:Q", format=".3f"), alt.Tooltip("right:Q", format=".3f"),
                 alt.Tooltip("density:Q", format=".4f", title="Monte Carlo density")],
    )
    # wide to long in the browser: one table of 401 rows goes over the wire instead of 4 x 401 with labels
    lines = curves_base.transform_fold(list(CURVES), as_=["key", "density"]).transform_calculate(
        curve=f"{json.dumps(CURVES)}[datum.key]"  # an object literal looked up by key: the legend's labels
    ).mark_line(clip=True).encode(
        x=x,
        y=alt.Y("density:Q", scale=y_scale),
        color=alt.Color("curve:N", title=None, scale=alt.Scale(domain=CURVE_ORDER, range=CURVE_COLORS),
                        legend=alt.Legend(orient="top", columns=2)),
        strokeDash=alt.StrokeDash("curve:N", legend=None,
                                  scale=alt.Scale(domain=CURVE_ORDER, range=[[4, 3], [1, 0], [6, 3], [1, 0]])),
        strokeWidth=alt.StrokeWidth("curve:N", legend=None,
                                    scale=alt.Scale(domain=CURVE_ORDER, range=[1.5, 2.5, 2, 2])),
    )
    mass_rule = mass_base.mark_rule(strokeWidth=6, clip=True).encode(
        x=x,
        y=alt.Y("probability:Q", scale=y_scale),
        y2=alt.datum(0),
        color=alt.value("#ff7f0e"),
        opacity=alt.Opacity("source:N", legend=None, scale=alt.Scale(domain=["exact", "Monte Carlo"],
                                                                      range=[0.9, 0.35])),
        tooltip=["source:N", alt.Tooltip("probability:Q", format=".4f", title="P(ReLU(Z) = 0)")],
    )
    mass_text = mass_base.transform_filter("datum.source == 'exact'").mark_text(
        align="left", dx=6, dy=-6, color="#ff7f0e", fontWeight="bold"
    ).encode(x=x, y=alt.Y("probability:Q", scale=y_scale), text="label:N")
    return (
        alt.layer(bars, lines, mass_rule, mass_text)
        .add_params(curves_param, hist_param, mass_param, ymax_param)
        .properties(width=520, height=300, title="ReLU(Z), Z ~ N(μ, σ²): censoring and its Gaussian approximations",
                    autosize=RESIZE)
    )
