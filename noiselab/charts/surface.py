"""The loss-surface panel's chart: two models' loss over the same plane around one input, side by side.

Pure: tables in, one Altair chart out. Each table (noiselab.surface.LossSurface.to_table()) has columns a (the step
along the sign of the input gradient), b (the step along a random +-1 direction), loss, and wrong (the model's
class there is not the true one). The tables are live (noiselab.charts.live), so the panel swaps surfaces in the
running view; the panel titles are a parameter too.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from .live import RESIZE, live_table

SURFACE_CAPACITY = 61 * 61    # up to 61 x 61 points per surface (the panel uses 41 x 41)
PANEL_SIZE = 260


def _surface(name: str, table, title_key: str, titles: alt.Parameter, steps: int) -> tuple[alt.Parameter, alt.Chart]:
    param, base = live_table(name, table, SURFACE_CAPACITY)
    cell = PANEL_SIZE / max(steps - 1, 1)  # pixels between grid points: each point's rect fills its cell
    heat = base.mark_rect(width=cell + 0.5, height=cell + 0.5, clip=True).encode(  # +0.5: no hairline gaps
        x=alt.X("b:Q", title="step along a random ±1 direction", scale=alt.Scale(nice=False)),
        y=alt.Y("a:Q", title="step along the sign of the input gradient", scale=alt.Scale(nice=False)),
        color=alt.Color("loss:Q", scale=alt.Scale(scheme="viridis"), legend=alt.Legend(title="loss")),
        tooltip=[alt.Tooltip("a:Q", format=".3f"), alt.Tooltip("b:Q", format=".3f"),
                 alt.Tooltip("loss:Q", format=".4f"), "wrong:N"],
    )
    wrong = base.transform_filter("datum.wrong").mark_point(shape="cross", size=12, color="white", opacity=0.6,
                                                            filled=True).encode(x="b:Q", y="a:Q")
    origin = alt.Chart().mark_point(shape="circle", size=60, color="#ff7f0e", filled=True).encode(
        x=alt.datum(0), y=alt.datum(0))
    chart = alt.layer(heat, wrong, origin).properties(
        width=PANEL_SIZE, height=PANEL_SIZE,
        title=alt.TitleParams(text=alt.ExprRef(f"{titles.name}.{title_key}")),
    )
    return param, chart


def loss_surface_chart(left: pd.DataFrame | dict, right: pd.DataFrame | dict, left_title: str = "",
                       right_title: str = "", steps: int = 41) -> alt.HConcatChart:
    """Two loss surfaces side by side, each with its own colour scale (their losses need not share a range).

    White crosses mark points where the model's class is wrong; the orange dot is the unperturbed input.
    `steps` is the grid's points per axis (it sizes the cells). Parameters it declares: "left" and "right" (the
    live tables) and "titles" ({"left": ..., "right": ...}).
    """
    titles = alt.param(name="titles", value={"left": left_title, "right": right_title})
    left_param, left_chart = _surface("left", left, "left", titles, steps)
    right_param, right_chart = _surface("right", right, "right", titles, steps)
    return alt.hconcat(left_chart, right_chart).resolve_scale(color="independent").add_params(
        titles, left_param, right_param).properties(autosize=RESIZE)
