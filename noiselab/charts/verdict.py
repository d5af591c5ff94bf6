"""The verdict's chart: the committed full-scale robustness curves, noise-trained models beside PGD-AT and vanilla.

    >>> chart = verdict_chart(load_shipped_curves())   # noiselab.experiments.verdict

Pure: a table (label, method, eps, mean, min, max, seeds) in, an Altair chart out.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

# drawn first and in these colours, so the answer reads at a glance: the references in strong colours
REFERENCE_COLOURS = {"pgd_at": "#d62728", "fgsm_rs": "#ff9896", "vanilla": "#222222"}
NOISE_SCHEME = ["#9ecae1", "#6baed6", "#3182bd", "#08519c", "#08306b"]  # light to dark blue: small to large σ


def _noise_colours(count: int) -> list[str]:
    """`count` blues spread over NOISE_SCHEME from its second shade to its last, light (small σ) to dark."""
    if count == 1:
        return [NOISE_SCHEME[3]]
    last = len(NOISE_SCHEME) - 1
    return [NOISE_SCHEME[round(1 + i * (last - 1) / (count - 1))] for i in range(count)]


def verdict_chart(curves: pd.DataFrame, title: str | None = None) -> alt.LayerChart:
    """Mean robust accuracy against ε per model, a band from the worst to the best seed, seeds in the tooltip."""
    missing = {"label", "method", "eps", "mean", "min", "max", "seeds"} - set(curves.columns)
    if missing:
        raise ValueError(f"curves lacks the columns {sorted(missing)}")
    frame = curves.copy()
    frame["seeds_text"] = frame["seeds"].map(lambda n: f"{n} seed{'s' if n != 1 else ''}")
    if title is None:
        attacked = curves.attrs.get("attacked_with", "the strong suite")
        title = f"Full MNIST, LeNet5: robust accuracy under {attacked} (1,000 test digits)"
    labels = list(dict.fromkeys(frame["label"]))
    methods = {label: frame.loc[frame["label"] == label, "method"].iloc[0] for label in labels}
    noise = iter(_noise_colours(sum(m == "noise" for m in methods.values())))
    colours = [REFERENCE_COLOURS.get(methods[label]) or (next(noise) if methods[label] == "noise" else "#bbbbbb")
               for label in labels]
    scale = alt.Scale(domain=labels, range=colours)
    colour = alt.Color("label:N", title="model (training)", scale=scale,
                       legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=3, symbolOpacity=1))
    base = alt.Chart(frame).encode(x=alt.X("eps:Q", title="ε (L∞ attack budget)"))
    band = base.mark_area(opacity=0.15).encode(y="min:Q", y2="max:Q",
                                               color=colour)
    line = base.mark_line(point=True).encode(
        color=colour,
        y=alt.Y("mean:Q", title="robust accuracy (mean over seeds)", scale=alt.Scale(domain=[0, 1])),
        strokeDash=alt.condition(alt.datum.method == "sampled", alt.value([4, 3]), alt.value([1, 0])),
        tooltip=["label:N", "eps:Q", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("min:Q", format=".3f"),
                 alt.Tooltip("max:Q", format=".3f"), alt.Tooltip("seeds_text:N", title="seeds")],
    )
    return (band + line).properties(title=title, width=420, height=280)
