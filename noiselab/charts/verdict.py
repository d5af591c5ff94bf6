"""The verdict's chart: the committed full-scale robustness curves, noise-trained models beside PGD-AT and vanilla.

    >>> chart = verdict_chart(load_shipped_curves())   # noiselab.experiments.verdict

Pure: a table (label, method, eps, mean, min, max, seeds) in, an Altair chart out.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

# drawn first and in these colours, so the answer reads at a glance: the references in strong colours
REFERENCE_COLOURS = {"pgd_at": "#d62728", "fgsm_rs": "#ff9896", "vanilla": "#222222"}
NOISE_SCHEME = ["#9ecae1", "#6baed6", "#3182bd", "#08519c"]


def verdict_chart(curves: pd.DataFrame, title: str = "Full MNIST, LeNet5: noise training against PGD-AT "
                  "(strong suite, 1,000 test digits)") -> alt.LayerChart:
    """Mean robust accuracy against ε per model, a band from the worst to the best seed, seeds in the tooltip."""
    missing = {"label", "method", "eps", "mean", "min", "max", "seeds"} - set(curves.columns)
    if missing:
        raise ValueError(f"curves lacks the columns {sorted(missing)}")
    frame = curves.copy()
    frame["seeds_text"] = frame["seeds"].map(lambda n: f"{n} seed{'s' if n != 1 else ''}")
    labels = list(dict.fromkeys(frame["label"]))
    colours, noise = [], iter(NOISE_SCHEME * 4)
    for label in labels:
        method = frame.loc[frame["label"] == label, "method"].iloc[0]
        colours.append(REFERENCE_COLOURS.get(method) or (next(noise) if method == "noise" else "#bbbbbb"))
    colour = alt.Color("label:N", title="model (training)", scale=alt.Scale(domain=labels, range=colours))
    base = alt.Chart(frame).encode(x=alt.X("eps:Q", title="ε (L∞ attack budget)"), color=colour)
    band = base.mark_area(opacity=0.18).encode(y="min:Q", y2="max:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("mean:Q", title="robust accuracy (mean over seeds)", scale=alt.Scale(domain=[0, 1])),
        strokeDash=alt.condition(alt.datum.method == "sampled", alt.value([4, 3]), alt.value([1, 0])),
        tooltip=["label:N", "eps:Q", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("min:Q", format=".3f"),
                 alt.Tooltip("max:Q", format=".3f"), alt.Tooltip("seeds_text:N", title="seeds")],
    )
    return (band + line).properties(title=title, width=420, height=280)
