"""The loss-surface panel: two models' loss around the same test image, side by side, at a chosen σ and ε.

    >>> panel = LossSurfacePanel(models, data, sigma=0.0, eps=0.3)   # models: a ModelList; data: a Dataset
    >>> panel.widget

Each surface is noiselab.surface.loss_surface on a 41 x 41 grid: the plane spanned by the sign of the expectation
model's input gradient and a random +-1 direction, each scaled to ±ε. With σ = 0 the loss is the expectation
model's cross-entropy (what an attacker climbs); with σ > 0 the closed-form stochastic loss under that noise (what
noise training minimises). A smooth surface rising along the gradient axis means gradients are informative; a flat
centre with cliffs nearby is what gradient masking looks like. This module only picks what to compute and show.
"""

from __future__ import annotations

import html
import math
import threading
import time
from collections import OrderedDict

import ipywidgets as widgets
import numpy as np

from ..charts.live import table_value
from ..charts.surface import SURFACE_CAPACITY, loss_surface_chart
from ..data import Dataset
from ..moments import CLARK_POOLS, POOL_RULES, RELU_RULES
from ..surface import loss_surface
from ._charts import jupyter_chart, set_params
from ._ui import Mutable
from .models import ModelList

SIGMA_RANGE = (0.0, 3.0)
EPS_RANGE = (0.01, 0.5)
STEPS = 41             # 1,681 points per surface: one batched forward, under a second for LeNet5 on a CPU
SURFACE_CACHE = 12     # surfaces kept per (model, image, eps, sigma, rules): flipping back is instant


def _empty_table() -> dict:
    nothing = np.zeros(0)
    return {"a": nothing, "b": nothing, "loss": nothing, "wrong": np.zeros(0, dtype=bool)}


def _default_names(models: ModelList) -> tuple[str | None, str | None]:
    """A vanilla model on the left and a noise-trained one on the right, when the list has them."""
    entries = list(models)
    if not entries:
        return None, None

    def first(method: str, avoid: str | None = None) -> str | None:
        return next((m.name for m in entries if m.config.get("method") == method and m.name != avoid), None)

    left = first("vanilla") or entries[0].name
    right = first("noise", avoid=left) or next((m.name for m in entries if m.name != left), left)
    return left, right


class LossSurfacePanel(Mutable):
    """Loss surfaces of two models around one test image of `data`.

    `steps` is the grid's points per axis (41 by default). Attributes: widget (display it), model and
    compare_model (Dropdowns over `models.names`, left and right), sigma and eps (FloatSliders, applied on
    release), image (index into the test split), relu and pool (the rules for σ > 0), chart (the JupyterChart),
    surfaces (the last pair of noiselab.surface.LossSurface), summary (HTML), message (HTML: errors and
    warnings), last_update_ms (kernel time of the last redraw).
    """

    def __init__(self, models: ModelList, data: Dataset, sigma: float = 0.0, eps: float = 0.3,
                 steps: int = STEPS) -> None:
        if not isinstance(models, ModelList):
            raise ValueError(f"models must be a noiselab.widgets.ModelList, got {type(models).__name__}")
        if not isinstance(data, Dataset):
            raise ValueError(f"data must be a noiselab.data.Dataset, got {type(data).__name__}")
        for name, value, (low, high) in (("sigma", sigma, SIGMA_RANGE), ("eps", eps, EPS_RANGE)):
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                    or not low <= value <= high):
                raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps * steps <= SURFACE_CAPACITY:
            raise ValueError(f"steps must be an integer from 2 to {math.isqrt(SURFACE_CAPACITY)}, got {steps!r}")
        self.models, self.data, self.steps = models, data, steps
        self._images, self._labels = data.tensors("test")
        self._lock = threading.RLock()
        self._cache: OrderedDict = OrderedDict()
        self.surfaces: tuple = (None, None)
        self.last_update_ms = float("nan")

        left, right = _default_names(models)
        names = list(models.names)
        self.model = widgets.Dropdown(options=names, value=left, description="left")
        self.compare_model = widgets.Dropdown(options=names, value=right, description="right")
        self.sigma = widgets.FloatSlider(value=float(sigma), min=SIGMA_RANGE[0], max=SIGMA_RANGE[1], step=0.05,
                                         description="σ", continuous_update=False, readout_format=".2f")
        self.eps = widgets.FloatSlider(value=float(eps), min=EPS_RANGE[0], max=EPS_RANGE[1], step=0.01,
                                       description="ε", continuous_update=False, readout_format=".2f")
        self.image = widgets.BoundedIntText(value=0, min=0, max=max(len(self._labels) - 1, 0),
                                            description="test image", layout=widgets.Layout(width="190px"))
        self.relu = widgets.ToggleButtons(options=list(RELU_RULES), value="paper", description="ReLU rule",
                                          style={"button_width": "70px"}, tooltip="used when σ > 0")
        self.pool = widgets.ToggleButtons(options=list(POOL_RULES), value="paper", description="pool rule",
                                          style={"button_width": "70px"}, tooltip="used when σ > 0")
        self.summary = widgets.HTML()
        self.message = widgets.HTML()
        self.chart = jupyter_chart(loss_surface_chart(_empty_table(), _empty_table(), steps=steps))
        self._update()
        for control in (self.model, self.compare_model, self.sigma, self.eps, self.image, self.relu, self.pool):
            control.observe(self._update, names="value")
        models.observe(self._on_models, names="names")

        self.widget = widgets.VBox([
            widgets.HTML("<b>Loss surface</b> around one test image: x + a·sign(∇ₓ loss) + b·(random ±1), a and b "
                         "in [−ε, ε], clipped to [0, 1]. σ = 0: cross-entropy of the expectation model; σ > 0: the "
                         "closed-form stochastic loss under that noise."),
            widgets.HBox([self.model, self.compare_model]),
            widgets.HBox([self.sigma, self.eps, self.image]),
            widgets.HBox([self.relu, self.pool]),
            self.chart,
            self.summary,
            self.message,
        ])

    def _on_models(self, change) -> None:
        with self._lock:
            names = list(change["new"])
            before = (self.model.value, self.compare_model.value)
            left, right = _default_names(self.models)
            with self._muted():
                for dropdown, default in ((self.model, left), (self.compare_model, right)):
                    current = dropdown.value
                    dropdown.options = names
                    dropdown.value = current if current in names else default
            after = (self.model.value, self.compare_model.value)
            # a retrain under a shown name is a new model object: the cache key (its id) changes, so redraw too
            if after != before or any(name in names for name in after if name is not None):
                self._update()

    def _surface(self, name: str, index: int, eps: float, sigma: float):
        lab_model = self.models.get(name)
        key = (name, id(lab_model.model), index, eps, sigma, self.relu.value, self.pool.value, self.steps)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        x, y = self._images[index], int(self._labels[index])
        surface = loss_surface(lab_model.model, x, y, eps, steps=self.steps, sigma=sigma, relu=self.relu.value,
                               pool=self.pool.value)
        self._cache[key] = surface
        while len(self._cache) > SURFACE_CACHE:
            self._cache.popitem(last=False)
        return surface

    def _update(self, change=None) -> None:
        if self._muting:
            return
        with self._lock:
            start = time.perf_counter()
            names = (self.model.value, self.compare_model.value)
            if any(name is None or name not in self.models for name in names):
                self.surfaces = (None, None)
                set_params(self.chart, {"left": table_value(_empty_table()), "right": table_value(_empty_table()),
                                        "titles": {"left": "", "right": ""}})
                self.summary.value = ""
                self.message.value = "No model to show yet: train one in the Training panel, or load the starters."
                return
            index, eps, sigma = int(self.image.value), float(self.eps.value), float(self.sigma.value)
            if sigma > 0 and self.pool.value in CLARK_POOLS:
                # sent to the browser at once: Clark's pooling over 1,681 points takes seconds (about 5 s a surface
                # for LeNet5 on 2 cores, against 0.7 s under the paper's rules)
                self.message.value = "computing the surfaces (Clark's max-pool rule: a few seconds)…"
            try:
                surfaces = tuple(self._surface(name, index, eps, sigma) for name in names)
            except ValueError as error:  # e.g. a model whose input shape does not fit this data set
                self.message.value = f"<span style='color:#b00'>{html.escape(str(error))}</span>"
                return
            self.surfaces = surfaces
            what = "cross-entropy" if sigma == 0 else f"stochastic loss, σ = {sigma:.2f}"
            set_params(self.chart, {
                "left": table_value(surfaces[0].to_table(), SURFACE_CAPACITY),
                "right": table_value(surfaces[1].to_table(), SURFACE_CAPACITY),
                "titles": {"left": f"{names[0]}: {what}", "right": f"{names[1]}: {what}"},
            })
            label = self.data.classes[int(self._labels[index])]
            lines = [
                f"<b>{html.escape(name)}</b>: loss at the image {s.loss_at_input:.4f}, "
                f"from {float(s.loss.min()):.4f} to {float(s.loss.max()):.4f} over the plane; "
                f"misclassified on {s.wrong_fraction:.0%} of it"
                for name, s in zip(names, surfaces)
            ]
            self.summary.value = f"true class <b>{html.escape(label)}</b> (white crosses: misclassified)<br>" + \
                "<br>".join(lines)
            flat = [name for name, s in zip(names, surfaces) if s.gradient_zero]
            self.message.value = (
                f"<span style='color:#a60'>The input gradient of {html.escape(', '.join(flat))} is exactly zero at "
                "this image: its gradient axis is degenerate (saturated softmax, or gradient masking).</span>"
                if flat else ""
            )
            self.last_update_ms = (time.perf_counter() - start) * 1e3
