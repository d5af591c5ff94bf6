"""The attack panel: robust accuracy against ε for the lab's models, one chart, the gradient-masking flags, and
clean versus attacked images at the ε of a slider.

    >>> panel = AttackPanel(models)              # models: the lab's shared ModelList
    >>> panel.run_button.click(); panel.wait(120)
    >>> panel.curves                             # model, eps, accuracy: what the chart shows
    >>> panel.eps.value = 0.2                    # moves the chart's ε rule in the browser, recomputes nothing

The attack defaults to the strong suite (noiselab.attacks.suites: APGD-CE, APGD-DLR, APGD-T, PGD on the margin);
the light suite and single attacks stay in the list for quick looks, and say that they are light.
"Run attacks" sweeps a fixed ε grid (EPS_GRIDS: 0 to 0.4 in steps of 0.05 on MNIST-like data) with
noiselab.evaluate.robust_accuracy (worst case per example, only the points still robust are attacked) and,
optionally, noiselab.evaluate.masking_checks, in a daemon worker thread that checks a Stop event between ε
values. Results are cached per (model, attack, steps, examples), so re-selecting a model or an attack setting
already computed redraws at once. The ε slider sets the chart's Vega parameter (the rule moves without new
data) and, once it rests, recomputes the small grid of attacked examples for the model picked in `.model`.
"""

from __future__ import annotations

import html
import threading
import time
import warnings
from dataclasses import dataclass

import ipywidgets as widgets
import pandas as pd

from .. import data as data_module
from ..attacks import ATTACKS, DEFAULT_SUITE, SUITES
from ..charts.lab_attack import CURVE_COLUMNS, example_grid_png, robust_accuracy_chart
from ..charts.verdict import verdict_chart
from ..evaluate import (
    Flag,
    GradientMaskingWarning,
    adversarial_examples,
    masking_checks,
    predict,
    robust_accuracy,
    worst_case,
)
from ..experiments.verdict import load_shipped_curves
from ._charts import jupyter_chart
from ._ui import ERROR, NOTE, OK, html_text
from .models import LabModel, ModelList

# the ε grid per image channel count: [0, 1]-scaled MNIST budgets up to 0.4; CIFAR's in steps of 2/255
EPS_GRIDS = {1: tuple(round(0.05 * i, 2) for i in range(9)), 3: tuple(round(2 * i / 255, 5) for i in range(9))}
STEPPED_ATTACKS = ("pgd", "apgd")  # fgsm is one step
SUITE_PREFIX = "suite:"            # the dropdown's values for named suites: "suite:strong"
# the attack dropdown: the suites first (the strong one the default), then single attacks for quick looks
ATTACK_CHOICES = [(f"{name} suite" + (" (light)" if SUITES[name].light else ""), SUITE_PREFIX + name)
                  for name in SUITES] + [(f"{name} only (light)", name) for name in ATTACKS]
GRID_EXAMPLES = 8                  # images in the clean/attacked grid
CHECK_EXAMPLES = 100               # the masking checks run PGD-80 with 4 restarts: ~5x the sweep, so on fewer points
DEBOUNCE_S = 0.3                   # the grid is recomputed once the slider has rested this long (its "release")

_DATA_KIND = {"mnist-embedded": "mnist"}  # the embedded set is a subset of MNIST: its models fit both


def _data_kind(name: str) -> str:
    return _DATA_KIND.get(name, name)



@dataclass
class Sweep:
    """One model's results under one attack setting: the worst-case table per ε, and the masking flags."""

    table: pd.DataFrame          # robust_accuracy's rows (eps, stage, accuracy, n) for every ε of the grid
    curve: pd.DataFrame          # worst_case(table): eps, accuracy
    flags: list[Flag] | None     # None when the checks were not run
    reference: str | None        # the model the transfer check attacked from
    seconds: float


class AttackPanel:
    """Robust accuracy against ε for the models selected from `models`, on the first test examples of `data`."""

    def __init__(self, models: ModelList, data: data_module.Dataset | None = None, eps: float = 0.1) -> None:
        self.models = models
        self.data = data if data is not None else data_module.load()
        self.grid = EPS_GRIDS.get(self.data.input_shape[0], EPS_GRIDS[1])
        self._cache: dict[tuple, Sweep] = {}
        self._run_lock = threading.Lock()
        self._image_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._timer: threading.Timer | None = None
        self._image_request = 0
        self.sweeps_run = 0  # model sweeps actually computed (cache misses): lets tests see that nothing reran

        wide = {"style": {"description_width": "110px"}, "layout": widgets.Layout(width="300px")}
        names = list(models.names)
        self.selection = widgets.SelectMultiple(options=names, value=tuple(names), description="compare",
                                                rows=6, style={"description_width": "110px"},
                                                layout=widgets.Layout(width="420px"))
        self.attack = widgets.Dropdown(options=ATTACK_CHOICES, value=SUITE_PREFIX + DEFAULT_SUITE, description="attack",
                                       **wide)
        self.steps = widgets.BoundedIntText(value=10, min=1, max=500, description="steps", **wide)
        test_count = int(self.data.test_images.shape[0])
        self.examples = widgets.BoundedIntText(value=min(200, test_count), min=min(10, test_count), max=test_count,
                                               description="test examples", **wide)
        self.checks = widgets.Checkbox(value=True, description="gradient-masking checks", indent=False)
        self.run_button = widgets.Button(description="Run attacks", button_style="primary", icon="play")
        self.stop_button = widgets.Button(description="Stop", button_style="warning", icon="stop", disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="progress",
                                            layout=widgets.Layout(width="420px"))
        self.status = widgets.HTML(html_text("select models and press Run attacks", NOTE))
        self.message = widgets.HTML("")
        self.light_note = widgets.HTML("", layout=widgets.Layout(max_width="720px"))  # what the chosen attack is
        step = self.grid[1] - self.grid[0]
        self.eps = widgets.FloatSlider(value=min(max(eps, 0.0), self.grid[-1]), min=0.0, max=self.grid[-1],
                                       step=round(step / 5, 6), readout_format=".3f", description="ε",
                                       continuous_update=True, **wide)
        self.model = widgets.Dropdown(options=names, value=names[0] if names else None, description="examples of",
                                      style={"description_width": "110px"}, layout=widgets.Layout(width="420px"))
        self.chart = jupyter_chart(robust_accuracy_chart(self._curves([]), self.eps.value, self.grid[-1]))
        self.flags = widgets.HTML("", layout=widgets.Layout(max_width="460px"))
        self.images = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.images_caption = widgets.HTML("")

        self.run_button.on_click(self._on_run)
        self.stop_button.on_click(self._on_stop)
        models.observe(self._on_models, names="names")
        models.observe(self._redraw, names="revision")  # a retrain under the same name shows as not yet attacked
        self.selection.observe(self._redraw, names="value")
        for control in (self.attack, self.steps, self.examples):
            control.observe(self._redraw, names="value")
        self.attack.observe(self._on_attack, names="value")
        self.eps.observe(self._on_eps, names="value")
        self.model.observe(self._schedule_examples, names="value")
        self.attack.observe(self._schedule_examples, names="value")
        self.steps.observe(self._schedule_examples, names="value")

        settings = widgets.VBox([self.selection, widgets.HBox([self.attack, self.steps]),
                                 widgets.HBox([self.examples, self.checks]), self.light_note])
        self.verdict = self._verdict_view()
        self.widget = widgets.VBox([
            self.verdict,
            widgets.HTML("<h3 style='margin:4px 0'>Attack the models</h3>"),
            settings,
            widgets.HBox([self.run_button, self.stop_button, self.progress]),
            self.status, self.message,
            widgets.HBox([self.chart, self.flags]),
            self.eps,
            self.model, self.images_caption, self.images,
        ])
        self._on_attack()
        self._redraw()
        self._schedule_examples()

    # ---- the answer first: the committed full-scale curves -------------------------------------------------------
    def _verdict_view(self) -> widgets.VBox:
        """The full-scale curves shipped with noiselab (offline), drawn before anything is trained or attacked."""
        heading = widgets.HTML("<h3 style='margin:4px 0'>What the full-scale run found</h3>")
        try:
            self.verdict_curves = load_shipped_curves()
        except ValueError as error:  # a missing or foreign file: say so, the rest of the panel works
            self.verdict_curves = None
            return widgets.VBox([heading, widgets.HTML(html_text(str(error), ERROR))])
        caption = widgets.HTML(html_text(
            "LeNet5s trained on all 60,000 MNIST digits (10 epochs), attacked on 1,000 test digits with "
            f"{self.verdict_curves.attrs.get('attacked_with', 'the strong suite')}; bands span the seeds. "
            "See docs/results.md for the verdict on each "
            "of the paper's claims. Below, attack the lab's own models.", NOTE),
            layout=widgets.Layout(max_width="720px"))
        return widgets.VBox([heading, jupyter_chart(verdict_chart(self.verdict_curves)), caption],
                            layout=widgets.Layout(border_bottom="1px solid #ddd", margin="0 0 8px 0"))

    # ---- keys, cache, chart ---------------------------------------------------------------------------------------
    def _options(self) -> dict:
        return {"steps": int(self.steps.value)} if self.attack.value in STEPPED_ATTACKS else {}

    def _suite(self) -> str | None:
        value = self.attack.value
        return value[len(SUITE_PREFIX):] if value.startswith(SUITE_PREFIX) else None

    def _attacks(self):
        """What robust_accuracy runs for the current choice: a suite's name, or one attack with its steps."""
        return self._suite() or [(self.attack.value, dict(self._options()))]

    def _attack_label(self) -> str:
        if self._suite():
            return f"the {self._suite()} suite"
        steps = self._options().get("steps")
        return f"{self.attack.value}-{steps}" if steps else self.attack.value

    def _settings(self) -> tuple:
        """The attack settings a sweep depends on, read once so that a run is not affected by later edits."""
        return (self.attack.value, tuple(sorted(self._options().items())), int(self.examples.value))

    def _key(self, entry: LabModel, settings: tuple | None = None) -> tuple:
        # id(entry.model): a retrain stored under the same name is a different model, not a cache hit
        return (entry.name, id(entry.model), settings or self._settings(), self.grid, self.data.name)

    def _cached(self, name: str) -> Sweep | None:
        if name not in self.models:
            return None
        return self._cache.get(self._key(self.models.get(name)))

    def _curves(self, names) -> pd.DataFrame:
        frames = []
        for name in names:
            sweep = self._cached(name)
            if sweep is not None:
                frames.append(sweep.curve.assign(model=name))
        if not frames:
            return pd.DataFrame(columns=list(CURVE_COLUMNS)).astype({"eps": float, "accuracy": float})
        return pd.concat(frames, ignore_index=True)[list(CURVE_COLUMNS)]

    @property
    def curves(self) -> pd.DataFrame:
        """The chart's data: robust accuracy per (model, eps) for the selected models already computed."""
        return self._curves(self.selection.value)

    def sweep(self, name: str) -> Sweep | None:
        """The cached results of model `name` under the current attack settings (None if not computed)."""
        return self._cached(name)

    def _redraw(self, change=None) -> None:
        selected = list(self.selection.value)
        self.chart.chart = robust_accuracy_chart(self._curves(selected), self.eps.value, self.grid[-1])
        self._show_flags(selected)
        missing = [name for name in selected if self._cached(name) is None]
        if not self.running:
            if not selected:
                self.status.value = html_text("select one or more models to compare", NOTE)
            elif missing:
                self.status.value = html_text(f"{len(missing)} of {len(selected)} selected models not yet attacked "
                                              f"with {self._attack_label()} on {self.examples.value} examples: "
                                              "press Run attacks", NOTE)

    def _show_flags(self, names) -> None:
        blocks = []
        for name in names:
            sweep = self._cached(name)
            if sweep is None or sweep.flags is None:
                continue
            lines = []
            for flag in sweep.flags:
                label = html.escape(flag.name.replace("_", " "))
                if flag.flagged:
                    lines.append(f"<div style='{ERROR}'>⚠ <b>{label}</b>: {html.escape(flag.message)}</div>")
                else:
                    # a passed check is named after the symptom it looks for: say that it was not seen
                    lines.append(f"<div style='{OK}' title='{html.escape(flag.message, quote=True)}'>✔ {label}: "
                                 "not seen</div>")
            warned = sum(flag.flagged for flag in sweep.flags)
            verdict = f"{warned} warning{'s' if warned != 1 else ''}" if warned else "all checks pass"
            source = f" (transfer from “{html.escape(sweep.reference)}”)" if sweep.reference else ""
            blocks.append(f"<div style='margin-bottom:8px'><b>{html.escape(name)}</b>: {verdict}{source}"
                          f"{''.join(lines)}</div>")
        title = "<b>Gradient-masking checks</b> (Carlini et al. 2019)<br>"
        self.flags.value = title + "".join(blocks) if blocks else ""

    # ---- controls -------------------------------------------------------------------------------------------------
    def _on_attack(self, change=None) -> None:
        self.steps.disabled = self.attack.value not in STEPPED_ATTACKS
        suite = self._suite()
        if suite is None or SUITES[suite].light:
            what = SUITES[suite].description if suite else f"{self.attack.value} alone is a LIGHT quick look"
            self.light_note.value = html_text(f"{what}: noise-trained models look more robust under it than they "
                                              f"are; the {DEFAULT_SUITE} suite gives the numbers to quote", ERROR)
        else:
            self.light_note.value = html_text(SUITES[suite].description, NOTE)

    def _on_models(self, change) -> None:
        old, names = set(change.old or ()), list(change.new)
        # new models (a training just finished) join the comparison; removed ones leave it
        selected = tuple(n for n in names if n in self.selection.value or n not in old)
        current = self.model.value
        self.selection.options = names
        self.selection.value = selected
        self.model.options = names
        self.model.value = current if current in names else (names[0] if names else None)

    def _on_eps(self, change) -> None:
        self.chart.params.eps = float(change.new)  # the rule moves in the browser; no data is sent
        self._schedule_examples()

    # ---- the sweep ------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a running sweep and a pending example grid; True when nothing runs afterwards."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in (self._worker, self._timer):
            if thread is not None:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.running

    def _on_run(self, button=None) -> None:
        with self._run_lock:
            if self.running:
                self.message.value = html_text("Attacks are already running: wait for them or press Stop.", ERROR)
                return
            selected = list(self.selection.value)
            if not selected:
                self.message.value = html_text("Select at least one model to attack.", ERROR)
                return
            self.message.value = ""
            self._stop = threading.Event()
            self.run_button.disabled, self.stop_button.disabled = True, False
            self.progress.bar_style = ""
            self._worker = threading.Thread(target=self._run, args=(selected, self._stop), daemon=True,
                                            name="noiselab-attacks")
            self._worker.start()

    def _on_stop(self, button=None) -> None:
        if self.running:
            self._stop.set()
            self.status.value = html_text("stopping after this ε…", NOTE)

    def _reference(self, name: str) -> LabModel | None:
        """A vanilla model other than `name`, for the transfer check (None if the lab has none)."""
        for entry in self.models:
            if entry.name != name and entry.config.get("method") == "vanilla" and self._fits(entry):
                return entry
        return None

    def _fits(self, entry: LabModel) -> bool:
        """Whether `entry` classifies this panel's images: same input shape, and the same kind of data (a
        Fashion-MNIST model takes 28x28 digits too, but its accuracy on them means nothing)."""
        shape = getattr(entry.model, "input_shape", None)
        trained_on = entry.config.get("dataset")
        same_kind = trained_on is None or _data_kind(trained_on) == _data_kind(self.data.name)
        return same_kind and (shape is None or tuple(shape) == tuple(self.data.input_shape))

    def _run(self, names: list[str], stop: threading.Event) -> None:
        started = time.perf_counter()
        checks = bool(self.checks.value)
        settings, label = self._settings(), self._attack_label()
        examples = settings[2]
        todo, skipped = [], []
        for name in names:
            if name not in self.models:
                continue
            entry = self.models.get(name)
            if not self._fits(entry):
                skipped.append(f"{name} was trained on other images ({entry.config.get('dataset', 'unknown')}) than "
                               f"the panel's {self.data.name}")
                continue
            key = self._key(entry, settings)
            cached = self._cache.get(key)
            if cached is None or (checks and cached.flags is None):
                todo.append((entry, key, cached))
        units = sum((len(self.grid) if cached is None else 0) + (1 if checks else 0) for _, _, cached in todo)
        self.progress.max, self.progress.value = max(units, 1), 0
        x, y = self.data.tensors("test", limit=examples)
        attack = self._attacks()
        done = 0
        try:
            for entry, key, cached in todo:
                if stop.is_set():
                    break
                self.status.value = html_text(f"attacking “{entry.name}” with {label}…", NOTE)
                start = time.perf_counter()
                table = cached.table if cached is not None else None
                if table is None:
                    tables = []
                    for eps in self.grid:
                        if stop.is_set():
                            break
                        tables.append(robust_accuracy(entry.model, x, y, eps=[eps], attacks=attack))
                        self.progress.value += 1
                    if stop.is_set():
                        break
                    table = pd.concat(tables, ignore_index=True)
                    # the per-example survivors of every ε, for the check that attacks the same points again
                    table.attrs["robust"] = {e: r for t in tables for e, r in t.attrs["robust"].items()}
                flags, reference = None, None
                if checks:
                    self.status.value = html_text(f"gradient-masking checks on “{entry.name}”…", NOTE)
                    reference_entry = self._reference(entry.name)
                    reference = reference_entry.name if reference_entry is not None else None
                    with warnings.catch_warnings():  # the panel shows the flags; no duplicate warnings in the log
                        warnings.simplefilter("ignore", GradientMaskingWarning)
                        flags = masking_checks(entry.model, x, y, table,
                                               reference=reference_entry.model if reference_entry else None,
                                               classes=len(self.data.classes), subset=CHECK_EXAMPLES)
                    self.progress.value += 1
                self._cache[key] = Sweep(table, worst_case(table), flags, reference,
                                         time.perf_counter() - start + (cached.seconds if cached else 0.0))
                self.sweeps_run += 1
                done += 1
                self._redraw()
        except Exception as error:  # shown in the panel; the kernel and the panel stay usable
            self.message.value = html_text(f"Attacks failed: {type(error).__name__}: {error}", ERROR)
            self.status.value = html_text(f"failed after {done} of {len(todo)} models", ERROR)
            self.progress.bar_style = "danger"
        finally:
            self.run_button.disabled, self.stop_button.disabled = False, True
        seconds = time.perf_counter() - started
        if skipped:
            self.message.value = html_text("Skipped: " + "; ".join(skipped), ERROR)
        if stop.is_set():
            self.progress.bar_style = "warning"
            self.status.value = html_text(f"stopped: {done} of {len(todo)} models finished ({seconds:.1f} s); the "
                                          "unfinished one is not kept", NOTE)
        elif self.progress.bar_style != "danger":
            self.progress.bar_style = "success"
            swept = sum(cached is None for _, _, cached in todo)
            reused = len(names) - len(skipped) - swept
            checked = f"; checks on the first {min(CHECK_EXAMPLES, x.shape[0])}" if checks else ""
            self.status.value = html_text(f"done: {swept} model{'s' if swept != 1 else ''} attacked with {label} on "
                                          f"{x.shape[0]} examples in {seconds:.1f} s, {reused} from the cache{checked}",
                                      OK)
        self._redraw()  # the settings may have changed during the run: show what they now select

    # ---- the clean / attacked examples ----------------------------------------------------------------------------
    def _schedule_examples(self, change=None) -> None:
        """Recompute the example grid once the controls rest for DEBOUNCE_S (a slider drag is many changes)."""
        if self._timer is not None:
            self._timer.cancel()
        self._image_request += 1
        self._timer = threading.Timer(DEBOUNCE_S, self.show_examples, kwargs={"request": self._image_request})
        self._timer.daemon = True
        self._timer.start()

    def show_examples(self, request: int | None = None) -> None:
        """Attack the first GRID_EXAMPLES test images of `.model` at the slider's ε and show them with predictions."""
        with self._image_lock:
            if request is not None and request != self._image_request:
                return  # a newer request is pending: this one is stale
            name = self.model.value
            if name is None or name not in self.models:
                self.images_caption.value = html_text("no model to show", NOTE)
                return
            entry = self.models.get(name)
            if not self._fits(entry):
                self.images_caption.value = html_text(f"{name} was trained on other images than {self.data.name}",
                                                      ERROR)
                return
            eps = float(self.eps.value)
            try:
                x, y = self.data.tensors("test", limit=GRID_EXAMPLES)
                # seeded: the same picture for the same ε
                adversarial = adversarial_examples(entry.model, x, y, eps, attacks=self._attacks(), seed=0)
                clean_predictions, adversarial_predictions = predict(entry.model, x), predict(entry.model, adversarial)
                png = example_grid_png(x.numpy(), adversarial.numpy(), y.tolist(), clean_predictions.tolist(),
                                       adversarial_predictions.tolist(), self.data.classes)
            except Exception as error:
                self.images_caption.value = html_text(f"examples failed: {type(error).__name__}: {error}", ERROR)
                return
            self.images.value = png
            self.images_caption.value = html_text(f"“{name}” attacked with {self._attack_label()} at ε = {eps:.3f}: "
                                                  "green captions are right, red wrong; the clean row gives (label)",
                                              NOTE)
