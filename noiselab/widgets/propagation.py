"""The noise propagation explorer: one test image, first-layer noise N(0, σ²), closed form beside Monte Carlo.

    >>> explorer = PropagationExplorer(models, data, sigma=0.5)     # models: a ModelList; data: noiselab.data.Dataset
    >>> explorer.widget

Per layer (picked in a dropdown), the mean and variance maps of the closed-form propagation (noiselab.propagate,
under the chosen ReLU and max-pool rules, with the units taken as independent or their covariance carried) beside
those of sampling the same noise (noiselab.layerwise.sample_layers, monte_carlo's draws for one image); for all
layers, the relative error of the closed form; at the output, P(Y_k > Y_i) for every pair of classes
(noiselab.loss.win_probabilities, with the outputs' covariance where it is carried). The numbers come from the core
(noiselab.layerwise arranges the comparison); this module only picks what to show.
"""

from __future__ import annotations

import html
import math
import threading
import time
from collections import OrderedDict

import ipywidgets as widgets
import numpy as np
import torch

from ..charts.live import table_value
from ..charts.propagation import ERROR_CAPACITY, IMAGE_CAPACITY, MAP_CAPACITY, WIN_CAPACITY, propagation_explorer_chart
from ..covariance import COVARIANCE_MODES
from ..data import Dataset
from ..layerwise import activation_map, layer_errors, sample_layers
from ..loss import win_probabilities
from ..moments import POOL_RULES, RELU_RULES
from ..propagate import propagate
from ._charts import jupyter_chart, set_params
from ._ui import Mutable
from .models import ModelList

SIGMA_RANGE = (0.0, 3.0)
MC_SAMPLES = 500      # ~sqrt(2/500) = 6% sampling error on a variance: enough to see the rules' errors, fast
MC_CACHE = 16         # sampled moments kept per (model, image, sigma): switching rules or layers reuses them
CHANNEL_MEAN = -1     # the channel dropdown's value for "mean over channels"


def _map_table(maps: dict[str, torch.Tensor]) -> dict:
    rows, cols = next(iter(maps.values())).shape
    row, col = np.divmod(np.arange(rows * cols), cols)
    return {"row": row, "col": col, **{name: grid.reshape(-1).numpy() for name, grid in maps.items()}}


def _empty_tables() -> dict:
    nothing = np.zeros(0)
    return {
        "image": {"row": nothing, "col": nothing, "value": nothing},
        "maps": {"row": nothing, "col": nothing, "mean_closed": nothing, "mean_sampled": nothing,
                 "var_closed": nothing, "var_sampled": nothing},
        "errors": {"index": nothing, "label": np.array([], dtype=str), "mean_error": nothing, "var_error": nothing},
        "wins": {"k": nothing, "i": nothing, "p": nothing, "is_label": np.zeros(0, dtype=bool)},
    }


class PropagationExplorer(Mutable):
    """Closed-form noise propagation against Monte Carlo, layer by layer, for one test image of `data`.

    Attributes: widget (display it), model (Dropdown over `models.names`, kept in sync), sigma (FloatSlider),
    image (index into the test split), relu and pool (the rules), covariance (noiselab.propagate's covariance mode:
    "full" takes seconds on LeNet5), layer and channel (what the maps show),
    chart (the JupyterChart), summary (HTML: label and predictions), message (HTML: errors), errors (the last
    list of noiselab.layerwise.LayerError), last_update_ms (kernel time of the last update).
    """

    def __init__(self, models: ModelList, data: Dataset, sigma: float = 0.5, model: str | None = None,
                 samples: int = MC_SAMPLES) -> None:
        if not isinstance(models, ModelList):
            raise ValueError(f"models must be a noiselab.widgets.ModelList, got {type(models).__name__}")
        if not isinstance(data, Dataset):
            raise ValueError(f"data must be a noiselab.data.Dataset, got {type(data).__name__}")
        if (isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma)
                or not SIGMA_RANGE[0] <= sigma <= SIGMA_RANGE[1]):
            raise ValueError(f"sigma must be a number in [{SIGMA_RANGE[0]}, {SIGMA_RANGE[1]}], got {sigma!r}")
        if model is not None and model not in models:
            raise ValueError(f"model {model!r} is not in the model list; it has {list(models.names)}")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
            raise ValueError(f"samples must be an integer >= 2, got {samples!r}")
        self.models, self.data, self.samples = models, data, samples
        self._images, self._labels = data.tensors("test")  # (N, C, H, W) float in [0, 1], (N,)
        self._lock = threading.RLock()  # the model list can change from a training thread
        self._sampled_cache: OrderedDict = OrderedDict()
        self._closed = self._sampled = self._shown = None
        self.errors: list = []
        self.last_update_ms = float("nan")

        names = list(models.names)
        self.model = widgets.Dropdown(options=names, value=model or (names[0] if names else None),
                                      description="model")
        self.sigma = widgets.FloatSlider(value=float(sigma), min=SIGMA_RANGE[0], max=SIGMA_RANGE[1], step=0.05,
                                         description="σ", continuous_update=False, readout_format=".2f")
        self.image = widgets.BoundedIntText(value=0, min=0, max=max(len(self._labels) - 1, 0),
                                            description="test image", layout=widgets.Layout(width="190px"))
        self.relu = widgets.ToggleButtons(options=list(RELU_RULES), value="paper", description="ReLU rule",
                                          style={"button_width": "70px"})
        self.pool = widgets.ToggleButtons(options=list(POOL_RULES), value="paper", description="pool rule",
                                          style={"button_width": "70px"})
        self.covariance = widgets.ToggleButtons(
            options=list(COVARIANCE_MODES), value="diagonal", description="covariance",
            tooltips=["the units entering each layer taken as independent (the paper's closed form)",
                      "every pair of units' covariance carried, the ReLU's cross-covariances to first order",
                      "every pair of units' covariance carried, exactly for Gaussians (slower: seconds on LeNet5)"],
            style={"button_width": "80px"})
        self.layer = widgets.Dropdown(options=[], description="layer")
        self.channel = widgets.Dropdown(options=[("mean over channels", CHANNEL_MEAN)], value=CHANNEL_MEAN,
                                        description="channel")
        self.summary = widgets.HTML()
        self.message = widgets.HTML()

        empty = _empty_tables()
        self.chart = jupyter_chart(propagation_explorer_chart(empty["image"], empty["maps"], empty["errors"],
                                                              empty["wins"]))
        self._update()
        for control in (self.model, self.sigma, self.image, self.relu, self.pool, self.covariance):
            control.observe(self._update, names="value")
        self.layer.observe(self._on_layer, names="value")
        self.channel.observe(self._redraw_maps, names="value")
        models.observe(self._on_models, names="names")

        self.widget = widgets.VBox([
            widgets.HTML("<b>Noise propagation</b>: N(0, σ²) added to the first layer's pre-activation, pushed "
                         f"through the network in closed form, beside {samples} Monte Carlo draws of the same noise."),
            widgets.HBox([self.model, self.sigma, self.image]),
            widgets.HBox([self.relu, self.pool]),
            self.covariance,
            widgets.HBox([self.layer, self.channel]),
            self.summary,
            self.chart,
            self.message,
        ])

    # ---- the model list -------------------------------------------------------------------------------------

    def _on_models(self, change) -> None:
        with self._lock:
            current = self.model.value
            names = list(change["new"])
            # Replacing the options resets the value: mute the observers so that this is one update, not two.
            with self._muted():
                self.model.options = names
                self.model.value = current if current in names else (names[0] if names else None)
            shown = self.model.value
            if shown is None or (shown, id(self.models.get(shown).model)) != self._shown:
                self._update()  # another model, or the shown one replaced under the same name (a retrain)

    # ---- computing ------------------------------------------------------------------------------------------

    def _sampled_moments(self, lab_model, index: int, x: torch.Tensor, sigma: float):
        # keyed by the model object too: a retrain under the same name must not reuse the old samples
        key = (lab_model.name, id(lab_model.model), index, sigma, self.samples)
        if key in self._sampled_cache:
            self._sampled_cache.move_to_end(key)
            return self._sampled_cache[key]
        _, layers = sample_layers(lab_model.model, x, sigma, samples=self.samples, seed=0)
        self._sampled_cache[key] = layers
        while len(self._sampled_cache) > MC_CACHE:
            self._sampled_cache.popitem(last=False)
        return layers

    def _update(self, change=None) -> None:
        if self._muting:
            return
        with self._lock:
            start = time.perf_counter()
            name = self.model.value
            if name is None or name not in self.models:
                self._closed = self._sampled = self._shown = None
                self.errors = []
                set_params(self.chart, {key: table_value(table) for key, table in _empty_tables().items()})
                self.summary.value = ""
                self.message.value = "No model to show yet: train one in the Training panel, or load the starters."
                return
            lab_model = self.models.get(name)
            index, sigma = int(self.image.value), float(self.sigma.value)
            x = self._images[index : index + 1]  # (1, C, H, W)
            try:
                with torch.no_grad():
                    output, closed = propagate(lab_model.model, x, sigma, relu=self.relu.value, pool=self.pool.value,
                                               return_layers=True, covariance=self.covariance.value)
                    sampled = self._sampled_moments(lab_model, index, x, sigma)
                    predicted = int(lab_model.model(x).argmax(1))
                wins = win_probabilities(output.mean, output.var, getattr(output, "cov", None))[0]  # (n, n)
                errors = layer_errors(closed, sampled)
            except ValueError as error:  # e.g. a model whose input shape does not fit this data set
                self.message.value = f"<span style='color:#b00'>{html.escape(str(error))}</span>"
                return
            self._closed, self._sampled, self.errors = closed, sampled, errors
            self._shown = (name, id(lab_model.model))
            label = int(self._labels[index])
            classes = wins.shape[0]
            k, i = np.divmod(np.arange(classes * classes), classes)
            tables = {
                "image": _map_table({"value": activation_map(x[0])}),
                "errors": {"index": np.array([e.index for e in errors]), "label": [e.label for e in errors],
                           "mean_error": np.array([e.mean_error for e in errors]),
                           "var_error": np.array([e.var_error for e in errors])},
                "wins": {"k": k, "i": i, "p": wins.reshape(-1).numpy(), "is_label": k == label},
            }
            self._set_layer_options(closed)
            tables["maps"] = self._maps_table()
            set_params(self.chart, {
                "image": table_value(tables["image"], IMAGE_CAPACITY),
                "maps": table_value(tables["maps"], MAP_CAPACITY),
                "errors": table_value(tables["errors"], ERROR_CAPACITY),
                "wins": table_value(tables["wins"], WIN_CAPACITY),
            })
            sampled_class = int(sampled[-1].mean[0].argmax())
            self.summary.value = (
                f"true class <b>{html.escape(self.data.classes[label])}</b>; the expectation model predicts "
                f"<b>{html.escape(self.data.classes[predicted])}</b>; the mean of the sampled outputs is highest for "
                f"<b>{html.escape(self.data.classes[sampled_class])}</b>. Output relative error: mean "
                f"{errors[-1].mean_error:.3f}, variance {errors[-1].var_error:.3f}."
            )
            self.message.value = ""
            self.last_update_ms = (time.perf_counter() - start) * 1e3

    # ---- what the maps show ---------------------------------------------------------------------------------

    def _set_layer_options(self, closed) -> None:
        options = [(f"{i} {layer.kind} ({layer.name})", i) for i, layer in enumerate(closed)]
        if list(self.layer.options) == options:
            return
        current = self.layer.value
        with self._muted():
            self.layer.options = options
            self.layer.value = current if current is not None and current < len(options) else 0
        self._set_channel_options()

    def _set_channel_options(self) -> None:
        if self._closed is None or self.layer.value is None:
            return
        activation = self._closed[self.layer.value].mean[0]
        channels = activation.shape[0] if activation.dim() == 3 else 0
        options = [("mean over channels" if channels else "all units", CHANNEL_MEAN)]
        options += [(f"channel {c}", c) for c in range(channels)]
        if list(self.channel.options) == options:
            return
        current = self.channel.value
        with self._muted():
            self.channel.options = options
            self.channel.value = current if current is not None and current < channels else CHANNEL_MEAN

    def _maps_table(self) -> dict:
        layer = self.layer.value or 0
        channel = None if self.channel.value in (None, CHANNEL_MEAN) else int(self.channel.value)
        closed, sampled = self._closed[layer], self._sampled[layer]
        return _map_table({
            "mean_closed": activation_map(closed.mean[0], channel),
            "mean_sampled": activation_map(sampled.mean[0], channel),
            "var_closed": activation_map(closed.var[0], channel),
            "var_sampled": activation_map(sampled.var[0], channel),
        })

    def _on_layer(self, change) -> None:
        if self._muting:
            return
        with self._lock:
            self._set_channel_options()
            self._redraw_maps()

    def _redraw_maps(self, change=None) -> None:
        if self._muting:
            return
        with self._lock:
            if self._closed is None:
                return
            set_params(self.chart, {"maps": table_value(self._maps_table(), MAP_CAPACITY)})
