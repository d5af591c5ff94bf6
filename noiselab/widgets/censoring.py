"""The ReLU censoring explorer: move μ and σ of Z ~ N(μ, σ²) and watch what a ReLU does to it.

    >>> explorer = CensoringExplorer(mu=-0.5, sigma=1.0)
    >>> explorer.widget            # display it (JupyterLab or Voilà)
    >>> explorer.mu.value = 1.0    # or drag the slider: the chart updates in place

One chart (noiselab.charts.censoring): Z's density, the part of it a ReLU keeps, the probability it censors to 0
(a rule at ξ = 0, exact and sampled), the paper's and the moment-matched Gaussian stand-ins for ReLU(Z), and a
Monte Carlo histogram. Below it, the mean and variance of each rule and of sampling, with their errors against the
exact moments. All the numbers come from noiselab.moments and noiselab.censoring; this module only arranges them.
"""

from __future__ import annotations

import html
import math
import time

import ipywidgets as widgets
import torch

from ..censoring import censoring_moments, relu_histogram
from ..charts.censoring import CURVE_CAPACITY, CURVES, HISTOGRAM_CAPACITY, censoring_explorer_chart
from ..charts.live import table_value
from ..moments import censoring_curves
from ._charts import jupyter_chart, set_params

MU_RANGE = (-3.0, 3.0)
SIGMA_RANGE = (0.05, 3.0)
GRID_POINTS = CURVE_CAPACITY  # points per curve
HISTOGRAM_BINS = 60
MC_SAMPLES = 20_000        # sampling error of the censored fraction about 0.35 percentage points at most


def _check(mu: float, sigma: float) -> None:
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not MU_RANGE[0] <= mu <= MU_RANGE[1]:
        raise ValueError(f"mu must be a number in [{MU_RANGE[0]}, {MU_RANGE[1]}], got {mu!r}")
    if (isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma)
            or not SIGMA_RANGE[0] <= sigma <= SIGMA_RANGE[1]):
        raise ValueError(f"sigma must be a number in [{SIGMA_RANGE[0]}, {SIGMA_RANGE[1]}] (> 0), got {sigma!r}")


def _view_range(mu: float, sigma: float) -> tuple[float, float]:
    # Z's bulk (μ ± 4σ), always with ξ = 0 and a little either side of it in view: the censoring happens there.
    return min(mu - 4.0 * sigma, -sigma), max(mu + 4.0 * sigma, sigma)


def explorer_tables(mu: float, sigma: float) -> dict:
    """The chart's tables (dicts of columns) and the moments for one (μ, σ): the explorer's state, from the core."""
    low, high = _view_range(mu, sigma)
    grid = torch.linspace(low, high, GRID_POINTS, dtype=torch.float64)
    curves = censoring_curves(mu, sigma, grid)
    curve_table = {"xi": grid.numpy(), **{key: curves[key].numpy() for key in CURVES}}
    sampled = relu_histogram(mu, sigma, samples=MC_SAMPLES, bins=HISTOGRAM_BINS, seed=0, upper=high)
    edges = sampled.edges.numpy()
    histogram = {"left": edges[:-1], "right": edges[1:], "density": sampled.density.numpy()}
    exact_mass = float(curves["mass_at_zero"])
    mass = {
        "xi": [0.0, 0.0],
        "probability": [exact_mass, sampled.mass_at_zero],
        "label": [f"P(ReLU(Z) = 0) = {exact_mass:.3f}", f"sampled: {sampled.mass_at_zero:.3f}"],
        "source": ["exact", "Monte Carlo"],
    }
    # Top of the y axis: Z's peak and the censored mass, with headroom; a taller moment-matched spike is clipped.
    ymax = 1.15 * max(float(curves["z"].max()), exact_mass, sampled.mass_at_zero, 0.1)
    return {"curves": curve_table, "histogram": histogram, "mass": mass, "ymax": ymax,
            "moments": censoring_moments(mu, sigma, sampled)}


def _moments_html(rows) -> str:
    cells = "".join(
        f"<tr><td style='text-align:left'>{html.escape(row.rule)}</td><td>{row.mean:.4f}</td><td>{row.var:.4f}</td>"
        f"<td>{row.mean_error:+.4f}</td><td>{row.var_error:+.4f}</td></tr>"
        for row in rows
    )
    return (
        "<table style='border-collapse:collapse;text-align:right' cellpadding='3'>"
        "<tr><th style='text-align:left'>ReLU(Z)</th><th>mean</th><th>variance</th>"
        "<th>mean error</th><th>variance error</th></tr>" + cells + "</table>"
        "<small>errors: rule − exact. The moment rule matches the exact moments by construction; "
        f"Monte Carlo: {MC_SAMPLES:,} draws.</small>"
    )


class CensoringExplorer:
    """Z ~ N(μ, σ²) through a ReLU: the censored mass, the paper's and the moment-matched Gaussian, sampling.

    Attributes: widget (display it), mu and sigma (FloatSliders, continuous updates), sigma_text (a box to
    type σ into; a value out of range shows a message), chart (the JupyterChart), numbers (HTML: the rules'
    moments and errors), message (HTML: errors), last_update_ms (kernel time of the last update).
    """

    def __init__(self, mu: float = 0.0, sigma: float = 1.0) -> None:
        _check(mu, sigma)
        slider = dict(continuous_update=True, readout_format=".2f", style={"description_width": "initial"},
                      layout=widgets.Layout(width="340px"))
        self.mu = widgets.FloatSlider(value=mu, min=MU_RANGE[0], max=MU_RANGE[1], step=0.05, description="μ",
                                      **slider)
        self.sigma = widgets.FloatSlider(value=sigma, min=SIGMA_RANGE[0], max=SIGMA_RANGE[1], step=0.05,
                                         description="σ", **slider)
        self.sigma_text = widgets.FloatText(value=sigma, description="type σ", layout=widgets.Layout(width="160px"),
                                            style={"description_width": "initial"})
        self.numbers = widgets.HTML()
        self.message = widgets.HTML()
        self.last_update_ms = float("nan")

        tables = explorer_tables(mu, sigma)
        self.chart = jupyter_chart(
            censoring_explorer_chart(tables["curves"], tables["histogram"], tables["mass"], tables["ymax"])
        )
        self.numbers.value = _moments_html(tables["moments"])
        self.mu.observe(self._update, names="value")
        self.sigma.observe(self._update, names="value")
        self.sigma_text.observe(self._typed_sigma, names="value")
        self.widget = widgets.VBox([
            widgets.HTML("<b>ReLU censoring</b>: Z ~ N(μ, σ²) is what one unit's pre-activation looks like under "
                         "the noise; ReLU(Z) puts mass at 0, which neither Gaussian stand-in has."),
            widgets.HBox([self.mu, self.sigma, self.sigma_text]),
            self.chart,
            self.numbers,
            self.message,
        ])

    def _typed_sigma(self, change) -> None:
        value = change["new"]
        low, high = SIGMA_RANGE
        if value is None or not math.isfinite(value) or not low <= value <= high:
            self.message.value = (f"<span style='color:#b00'>σ must be a number in [{low}, {high}] (a standard "
                                  f"deviation is > 0); got {html.escape(str(value))}. σ stays {self.sigma.value:g}."
                                  "</span>")
            return
        self.message.value = ""
        self.sigma.value = value  # the slider's observer redraws

    def _update(self, change=None) -> None:
        start = time.perf_counter()
        mu, sigma = self.mu.value, self.sigma.value
        try:
            _check(mu, sigma)
            tables = explorer_tables(mu, sigma)
        except ValueError as error:  # a slider cannot send a bad value, but the app sets values from URLs
            self.message.value = f"<span style='color:#b00'>{html.escape(str(error))}</span>"
            return
        set_params(self.chart, {
            "curves": table_value(tables["curves"], CURVE_CAPACITY),
            "histogram": table_value(tables["histogram"], HISTOGRAM_CAPACITY),
            "mass": table_value(tables["mass"]),
            "ymax": tables["ymax"],
        })
        self.numbers.value = _moments_html(tables["moments"])
        self.message.value = ""
        if self.sigma_text.value != sigma:
            self.sigma_text.value = sigma
        self.last_update_ms = (time.perf_counter() - start) * 1e3
