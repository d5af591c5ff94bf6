"""The adaptive-attack panel (the paper's Fig. 7): a randomized defense at σ under the closed-form attack, EOT
and the naive attack, with what each attack costs.

    >>> panel = AdaptivePanel(models)            # models: the lab's shared ModelList
    >>> panel.run_button.click(); panel.wait(300)
    >>> panel.table                              # one row per attack and ε: accuracy, interval, cost
    >>> panel.eps.value = 0.2                    # moves the rule and the cost points in the browser, no recompute

The defense is the chosen network with its first-layer noise N(0, σ²) kept at inference, predicting by a
majority vote over `samples` noisy passes (noiselab.defenses). "Run" measures every attack of ATTACK_SET at every
ε of the grid through noiselab.experiments.adaptive.measure_attack in a worker thread (Stop takes effect
between measurements), and caches the table per (model, σ, settings).
"""

from __future__ import annotations

import html
import threading
import time

import ipywidgets as widgets
import pandas as pd

from .. import data as data_module
from ..charts.adaptive import adaptive_panel_chart
from ..experiments.adaptive import measure_attack
from ._charts import jupyter_chart
from ._ui import ERROR, NOTE, OK, html_text
from .models import ModelList

EPS_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
SIGMA_MAX = 3.0



def attack_set(steps: int, draws: int) -> list[tuple[str, str, dict]]:
    """(label, RANDOMIZED_ATTACKS name, options): the naive attack, EOT, and the closed-form attack."""
    return [
        ("naive FGSM", "naive_fgsm", {}),
        (f"EOT-FGSM k={draws}", "eot_fgsm", {"draws": draws}),
        ("closed-form FGSM", "closed_form_fgsm", {}),
        ("closed-form FGSM (prob. term)", "closed_form_fgsm", {"loss": "probability"}),
        (f"EOT-PGD k=1, {steps} steps", "eot_pgd", {"draws": 1, "steps": steps}),
        (f"EOT-PGD k={draws}, {steps} steps", "eot_pgd", {"draws": draws, "steps": steps}),
        (f"closed-form PGD, {steps} steps", "closed_form_pgd", {"steps": steps, "loss": "probability"}),
    ]



class AdaptivePanel:
    """The randomized defense built from one of `models`, attacked three ways; see the module docstring."""

    def __init__(self, models: ModelList, data: data_module.Dataset | None = None, sigma: float = 0.6,
                 eps: float = 0.1) -> None:
        self.models = models
        self.data = data if data is not None else data_module.load()
        self._cache: dict[tuple, pd.DataFrame] = {}
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self.table = pd.DataFrame()

        style = {"description_width": "120px"}
        names = list(models.names)
        self.model = widgets.Dropdown(options=names, value=self._default_model(names), description="network",
                                      style=style, layout=widgets.Layout(width="420px"))
        self.sigma = widgets.BoundedFloatText(value=min(max(float(sigma), 0.0), SIGMA_MAX), min=-10.0, max=10.0,
                                              step=0.1, description="defender's σ", style=style)
        self.eps = widgets.FloatSlider(value=self._on_grid(eps), min=0.0, max=EPS_GRID[-1], step=0.05,
                                       readout_format=".2f", description="ε", style=style,
                                       layout=widgets.Layout(width="420px"))
        self.samples = widgets.BoundedIntText(value=64, min=1, max=4096, description="votes per prediction",
                                              style=style)
        self.examples = widgets.BoundedIntText(value=100, min=10, max=int(self.data.test_images.shape[0]),
                                               description="test examples", style=style)
        self.draws = widgets.BoundedIntText(value=8, min=1, max=64, description="EOT draws k", style=style)
        self.steps = widgets.BoundedIntText(value=10, min=1, max=200, description="PGD steps", style=style)
        self.run_button = widgets.Button(description="Run attacks", button_style="primary", icon="play")
        self.stop_button = widgets.Button(description="Stop", button_style="warning", icon="stop", disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="progress")
        self.status = widgets.HTML(html_text("pick a network and σ, then press Run attacks", NOTE))
        self.message = widgets.HTML("")
        self.costs = widgets.HTML("")
        self.chart = jupyter_chart(adaptive_panel_chart(pd.DataFrame(), self.eps.value, EPS_GRID[-1]))

        self.run_button.on_click(self._on_run)
        self.stop_button.on_click(self._on_stop)
        self.eps.observe(self._on_eps, names="value")
        self.model.observe(self._on_model, names="value")
        self.sigma.observe(self._on_settings, names="value")
        models.observe(self._on_models, names="names")
        models.observe(self._on_settings, names="revision")  # a retrain: its old results no longer apply
        self.widget = widgets.VBox([
            widgets.HTML("<h3 style='margin:4px 0'>Adaptive attacks on a randomized defense</h3>"
                         "<p style='margin:2px 0;color:#555'>The network keeps its first-layer noise at inference "
                         "and predicts by a vote. The closed-form attack follows the gradient of the propagated "
                         "(noise-free) loss; EOT averages gradients over k noise draws; the naive attack uses one."
                         "</p>"),
            widgets.HBox([widgets.VBox([self.model, self.sigma, self.samples]),
                          widgets.VBox([self.examples, self.draws, self.steps])]),
            widgets.HBox([self.run_button, self.stop_button, self.progress]),
            self.status, self.message, self.chart, self.eps, self.costs,
        ])
        self._on_settings()  # the σ asked for stands; picking another network later adopts its trained σ

    # ---- settings -------------------------------------------------------------------------------------------------
    @staticmethod
    def _default_model(names: list[str]) -> str | None:
        noise = [n for n in names if n.startswith("noise") or n.startswith("sampled")]
        return noise[0] if noise else (names[0] if names else None)

    def _settings(self) -> tuple:
        # id() of the network: a retrain stored under the same name is a different network, not a cache hit
        network = id(self.models.get(self.model.value).model) if self.model.value in self.models else None
        return (self.model.value, network, float(self.sigma.value), int(self.samples.value),
                int(self.examples.value), int(self.draws.value), int(self.steps.value))

    def _on_models(self, change) -> None:
        current = self.model.value
        self.model.options = list(change.new)
        self.model.value = current if current in change.new else self._default_model(list(change.new))

    def _on_model(self, change=None) -> None:
        # start from the σ the network was trained with, when it was trained with noise
        if self.model.value in self.models:
            trained = self.models.get(self.model.value).sigma
            if trained and trained > 0:
                self.sigma.value = float(trained)
        self._on_settings()

    def _on_settings(self, change=None) -> None:
        sigma = self.sigma.value
        if not (0 < sigma <= SIGMA_MAX):
            self.message.value = html_text(f"σ must lie in (0, {SIGMA_MAX:g}]: a randomized defense needs noise "
                                           f"(got {sigma:g})", ERROR)
        else:
            self.message.value = ""
        self._show(self._cache.get(self._settings()))

    @staticmethod
    def _on_grid(eps: float) -> float:
        return min(EPS_GRID, key=lambda e: abs(e - float(eps)))

    def _on_eps(self, change) -> None:
        snapped = self._on_grid(change.new)
        if snapped != change.new:  # results exist on the grid only (a value typed in, or read from a link)
            self.eps.value = snapped
            return
        self.chart.params.eps = snapped  # the rule and the cost points move in the browser
        self._show_costs()

    # ---- results --------------------------------------------------------------------------------------------------
    def _show(self, table: pd.DataFrame | None) -> None:
        self.table = table if table is not None else pd.DataFrame()
        self.chart.chart = adaptive_panel_chart(self.table, self.eps.value, EPS_GRID[-1])
        self._show_costs()

    def _show_costs(self) -> None:
        if self.table.empty:
            self.costs.value = ""
            return
        rows = self.table[(self.table["eps"] == self.eps.value) & (self.table["attack"] != "clean")]
        clean = self.table[self.table["attack"] == "clean"]
        cells = "".join(
            f"<tr><td>{html.escape(r.attack)}</td><td>{r.accuracy:.3f} [{r.low:.3f}, {r.high:.3f}]</td>"
            f"<td>{r.passes_per_example:g}</td><td>{1000 * r.seconds_per_example:.2f}</td></tr>"
            for r in rows.itertuples())
        header = (f"<b>At ε = {self.eps.value:g}</b> (clean accuracy "
                  f"{float(clean['accuracy'].iloc[0]):.3f} on {int(clean['n'].iloc[0])} examples)" if len(clean)
                  else f"<b>At ε = {self.eps.value:g}</b>")
        self.costs.value = (f"{header}<table><tr><th>attack</th><th>accuracy [95% interval]</th>"
                            f"<th>passes per example</th><th>ms per example</th></tr>{cells}</table>")

    # ---- the measurement ------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        if self._worker is not None:
            self._worker.join(timeout)
        return not self.running

    def _on_stop(self, button=None) -> None:
        if self.running:
            self._stop.set()
            self.status.value = html_text("stopping after this measurement…", NOTE)

    def _on_run(self, button=None) -> None:
        with self._lock:
            if self.running:
                self.message.value = html_text("Attacks are already running: wait for them or press Stop.", ERROR)
                return
            settings = self._settings()
            name, sigma = settings[0], settings[2]
            if name is None or name not in self.models:
                self.message.value = html_text("No network to defend: train one or load the starter models.", ERROR)
                return
            if not (0 < sigma <= SIGMA_MAX):
                self.message.value = html_text(f"σ must lie in (0, {SIGMA_MAX:g}] for a randomized defense.", ERROR)
                return
            entry = self.models.get(name)
            if tuple(getattr(entry.model, "input_shape", self.data.input_shape)) != tuple(self.data.input_shape):
                self.message.value = html_text(f"{name} does not take {self.data.name} images.", ERROR)
                return
            self.message.value = ""
            self._stop = threading.Event()
            self.run_button.disabled, self.stop_button.disabled = True, False
            self._worker = threading.Thread(target=self._run, args=(entry.model, settings, self._stop), daemon=True,
                                            name="noiselab-adaptive")
            self._worker.start()

    def _run(self, model, settings: tuple, stop: threading.Event) -> None:
        _, _, sigma, samples, examples, draws, steps = settings
        x, y = self.data.tensors("test", limit=examples)
        jobs = [("clean", "naive_fgsm", {}, 0.0)] + [
            (label, name, options, eps) for label, name, options in attack_set(steps, draws)
            for eps in EPS_GRID if eps > 0]
        self.progress.max, self.progress.value, self.progress.bar_style = len(jobs), 0, ""
        rows = []
        started = time.perf_counter()
        try:
            for label, name, options, eps in jobs:
                if stop.is_set():
                    break
                self.status.value = html_text(f"{label} at ε = {eps:g}…", NOTE)
                rows.append(measure_attack(model, x, y, sigma, label, name, options, eps, samples=samples))
                self.progress.value += 1
                if len(rows) % len(EPS_GRID[1:]) == 1:  # redraw as each attack's curve starts to fill in
                    self._show(pd.DataFrame(rows))
        except Exception as error:  # shown in the panel; the kernel and the panel stay usable
            self.message.value = html_text(f"Attacks failed: {type(error).__name__}: {error}", ERROR)
            self.progress.bar_style = "danger"
        finally:
            self.run_button.disabled, self.stop_button.disabled = False, True
        seconds = time.perf_counter() - started
        table = pd.DataFrame(rows)
        if stop.is_set() or self.progress.bar_style == "danger":
            self.progress.bar_style = self.progress.bar_style or "warning"
            self.status.value = html_text(f"stopped after {len(rows)} of {len(jobs)} measurements ({seconds:.1f} s); "
                                          "partial results shown, not kept", NOTE)
            self._show(table)
            return
        self._cache[settings] = table
        self.progress.bar_style = "success"
        self.status.value = html_text(f"done: {len(jobs)} measurements on {examples} examples, {samples} votes each, "
                                      f"in {seconds:.1f} s", OK)
        self._show(table)
