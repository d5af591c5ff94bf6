"""The propagation explorer's chart: one layer's mean and variance maps, closed form beside Monte Carlo, the
per-layer relative errors, and the output's pairwise win probabilities P(Y_k > Y_i).

Pure: tables in, one Altair chart out. The tables are live (noiselab.charts.live), so the explorer swaps them in
the running view. Tables (column: meaning):

image   row, col, value: the input image (mean over its channels), one row per pixel.
maps    row, col, mean_closed, mean_sampled, var_closed, var_sampled: the chosen layer's maps (a channel, or the mean
        over channels; a fully connected layer wrapped into rows), one row per cell; NaN cells are not drawn.
errors  index, label, mean_error, var_error: per layer, the relative error of the closed form against sampling.
wins    k, i, p, is_label: P(Y_k > Y_i) under the closed-form output Gaussian; is_label marks row k = true class.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from .live import RESIZE, live_table

IMAGE_CAPACITY = 32 * 32      # CIFAR-sized inputs
MAP_CAPACITY = 32 * 32        # the largest map: a 'same'-padded conv on 32x32 inputs
ERROR_CAPACITY = 64           # layers
WIN_CAPACITY = 20 * 20        # up to 20 classes
MAP_SIZE = 150                # pixels per map


def _heatmap(base: alt.Chart, field: str, title: str, scheme: str) -> alt.Chart:
    return base.transform_calculate(value=f"datum.{field}").mark_rect().encode(
        x=alt.X("col:O", axis=None),
        y=alt.Y("row:O", axis=None),
        color=alt.Color("value:Q", scale=alt.Scale(scheme=scheme), legend=alt.Legend(title=None, gradientLength=120)),
        tooltip=["row:O", "col:O", alt.Tooltip("value:Q", format=".4g")],
    ).properties(width=MAP_SIZE, height=MAP_SIZE, title=title)


def propagation_explorer_chart(
    image: pd.DataFrame | dict, maps: pd.DataFrame | dict, errors: pd.DataFrame | dict, wins: pd.DataFrame | dict
) -> alt.VConcatChart:
    """The explorer's whole chart. Parameters it declares: "image", "maps", "errors", "wins" (the live tables)."""
    image_param, image_base = live_table("image", image, IMAGE_CAPACITY)
    maps_param, maps_base = live_table("maps", maps, MAP_CAPACITY)
    errors_param, errors_base = live_table("errors", errors, ERROR_CAPACITY)
    wins_param, wins_base = live_table("wins", wins, WIN_CAPACITY)

    picture = image_base.mark_rect().encode(
        x=alt.X("col:O", axis=None), y=alt.Y("row:O", axis=None),
        color=alt.Color("value:Q", scale=alt.Scale(scheme="greys", domain=[0, 1]), legend=None),
    ).properties(width=MAP_SIZE * 0.7, height=MAP_SIZE * 0.7, title="input")
    # Closed form and sampling share one colour scale per quantity, so equal colours mean equal numbers.
    means = alt.hconcat(
        _heatmap(maps_base, "mean_closed", "mean, closed form", "viridis"),
        _heatmap(maps_base, "mean_sampled", "mean, Monte Carlo", "viridis"),
    ).resolve_scale(color="shared")
    variances = alt.hconcat(
        _heatmap(maps_base, "var_closed", "variance, closed form", "inferno"),
        _heatmap(maps_base, "var_sampled", "variance, Monte Carlo", "inferno"),
    ).resolve_scale(color="shared")
    maps_row = alt.hconcat(picture, means, variances).resolve_scale(color="independent")

    bars = errors_base.transform_fold(["mean_error", "var_error"], as_=["quantity", "error"]).transform_calculate(
        moment="datum.quantity == 'mean_error' ? 'mean' : 'variance'"
    ).mark_bar().encode(
        x=alt.X("label:N", sort=alt.EncodingSortField("index"), title="layer (from the noise entry)",
                axis=alt.Axis(labelAngle=-90)),  # straight down: a slanted first label ran off the left edge
        xOffset=alt.XOffset("moment:N"),
        y=alt.Y("error:Q", scale=alt.Scale(type="log"), stack=None,  # stacking from 0 breaks a log scale
                title="relative error vs Monte Carlo (log)"),
        color=alt.Color("moment:N", title=None, scale=alt.Scale(domain=["mean", "variance"],
                                                                range=["#1f77b4", "#d62728"])),
        tooltip=["label:N", "moment:N", alt.Tooltip("error:Q", format=".3f")],
    ).properties(width=380, height=200, title="closed form against sampling, per layer")

    win_base = wins_base.encode(x=alt.X("i:O", title="class i"), y=alt.Y("k:O", title="class k"))
    win_cells = win_base.mark_rect().encode(
        color=alt.Color("p:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), title="P(Y_k > Y_i)"),
        tooltip=["k:O", "i:O", alt.Tooltip("p:Q", format=".3f", title="P(Y_k > Y_i)")],
    )
    win_label = win_base.transform_filter("datum.is_label").mark_rect(fill=None, stroke="#ff7f0e", strokeWidth=2)
    win_chart = (win_cells + win_label).properties(
        width=220, height=220, title="output: P(Y_k > Y_i), closed form (orange: true class)")

    return alt.vconcat(maps_row, alt.hconcat(bars, win_chart).resolve_scale(color="independent")).add_params(
        image_param, maps_param, errors_param, wins_param
    ).resolve_scale(color="independent").properties(autosize=RESIZE)
