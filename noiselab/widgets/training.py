"""The training panel: train a model with any method, watch its loss (and learnable σ) live, add it to the lab.

    >>> panel = TrainingPanel(models)            # models: the lab's shared ModelList
    >>> panel.widget                             # display; or drive it: panel.method.value = "noise"; ...
    >>> panel.train_button.click(); panel.wait(60); panel.status.value
    'done: test accuracy 0.912 ...'

Training runs `noiselab.train.train` in a daemon worker thread, so the kernel keeps answering the browser: the
Stop button sets a threading.Event that train() checks before every batch. The worker updates widget values
only (the progress bar, labels, the chart's spec), which ipywidgets allows from a thread. A finished run is
added to the ModelList under a descriptive unique name; a stopped or failed one is not (a half-trained model
in the attack panel's curves would mislead). Every setting is checked by TrainConfig.validate(), the same check
the CLI uses, and its message is shown as soon as a control holds a bad value.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict

import ipywidgets as widgets
import pandas as pd
import torch

from .. import data as data_module
from ..charts.lab_training import COLUMNS, training_chart
from ..loss import LearnableSigma
from ..models import MODELS
from ..moments import POOL_RULES, RELU_RULES
from ..train import METHODS, NOISE_LOSSES, NOISE_METHODS, TrainConfig, TrainProgress, TrainResult, train
from ._charts import jupyter_chart
from ._ui import ERROR, NOTE, OK, html_text
from .models import LabModel, ModelList

CHART_INTERVAL_S = 0.5      # at most two chart redraws a second: each sends the whole spec to the browser,
CHART_BUDGET = 0.1          # and at most this fraction of the run (a redraw costs ~0.1 s of the worker's time)
PROGRESS_INTERVAL_S = 0.1   # the progress bar's updates are tiny, but one message per batch is still wasteful
ADVERSARIAL_METHODS = ("pgd_at", "fgsm_rs")
BUSY_MESSAGE = "A training run is already going: wait for it to finish or press Stop."
ARCHITECTURES = ("demo-cnn", "lenet5", "cifar-cnn")  # the fast one first: a CPU demo trains it in seconds




def model_name(config: TrainConfig, final_sigma: float | None = None) -> str:
    """A short descriptive name, e.g. "noise σ=0.5 (demo-cnn, 2 ep)"; learnable σ shows σ₀→final."""
    if config.method in NOISE_METHODS:
        if config.learnable_sigma:  # the final σ is known once trained
            final = f"→{final_sigma:.2f}" if final_sigma is not None else " learnable"
            head = f"{config.method} σ₀={config.sigma:g}{final}"
        else:
            head = f"{config.method} σ={config.sigma:g}"
        if config.bimodel_alpha > 0:
            head += f" Bimodel α={config.bimodel_alpha:g}"
        if config.method == "noise" and (config.relu, config.pool) != ("paper", "paper"):
            head += f" {config.relu}/{config.pool}"
        if config.covariance != "diagonal":
            head += f" cov={config.covariance}"
        if config.loss != "stochastic":
            head += f" loss={config.loss}"
        if config.noise_at != "preact":
            head += f" at {config.noise_at}"
        if config.sigma_mode != "absolute":
            head += f" ({config.sigma_mode})"
    elif config.method in ADVERSARIAL_METHODS:
        head = f"{config.method} ε={config.eps:g}"
    else:
        head = config.method
    details = [config.model, f"{config.epochs} ep"]
    if config.train_limit is not None:
        details.append(f"n={config.train_limit}")
    if config.dataset != data_module.DEFAULT_DATASET:
        details.append(config.dataset)
    if config.seed != 0:
        details.append(f"seed {config.seed}")
    return f"{head} ({', '.join(details)})"


def cli_command(config: TrainConfig) -> str:
    """The `noiselab train` command that trains the same model again (settings that differ from the defaults)."""
    defaults = asdict(TrainConfig())
    parts = ["noiselab train"]
    for key, value in asdict(config).items():
        if value == defaults[key] or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        parts.append(flag if value is True else f"{flag} {value}")
    return " ".join(parts + ["--out", "runs/model.pt"])


class TrainingPanel:
    """Controls for one training run, Train/Stop, a progress bar and a live chart; results go to `models`."""

    def __init__(self, models: ModelList, data: data_module.Dataset | None = None) -> None:
        self.models = models
        self._given_data = data
        self._datasets: dict[tuple[str, str | None], data_module.Dataset] = {}
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._rows: list[tuple[int, float, float, float]] = []
        self._config_error = ""
        self.result: TrainResult | None = None
        self.steps_per_second: float | None = None

        wide = {"style": {"description_width": "110px"}, "layout": widgets.Layout(width="300px")}
        first = data.name if data is not None else data_module.DEFAULT_DATASET
        self.dataset = widgets.Dropdown(options=list(data_module.DATASETS), value=first, description="dataset", **wide)
        self.data_root = widgets.Text(value="", placeholder="default location", description="data folder",
                                      continuous_update=False, **wide)
        self.data_info = widgets.HTML()
        self.architecture = widgets.Dropdown(options=[a for a in ARCHITECTURES if a in MODELS], value="demo-cnn",
                                             description="model", **wide)
        self.method = widgets.Dropdown(options=list(METHODS), value="noise", description="method", **wide)
        # a FloatText, not a bounded one: a bounded widget would silently clamp a typed -0.5 to 0
        self.sigma = widgets.FloatText(value=0.5, step=0.1, description="σ (noise std)", **wide)
        self.learnable = widgets.Checkbox(value=False, description="learnable σ (Table 1: σ₀ = 1.9)", indent=False)
        self.bimodel = widgets.Checkbox(value=False, description="Bimodel term −α σ²", indent=False)
        self.alpha = widgets.FloatText(value=0.25, step=0.05, description="α", **wide)
        self.relu = widgets.Dropdown(options=list(RELU_RULES), value="paper", description="ReLU rule", **wide)
        self.pool = widgets.Dropdown(options=list(POOL_RULES), value="paper", description="pool rule", **wide)
        self.covariance = widgets.Dropdown(
            options=[("diagonal (paper)", "diagonal"), ("full-linear (100s× slower)", "full-linear"),
                     ("full (1000s× slower)", "full")], value="diagonal", description="covariance",
            tooltip="the closed form's units taken as independent, or their covariance carried (far closer to "
                    "sampling, far dearer: docs/propagation.md)", **wide)
        # the ablations' options (docs/results.md): what the closed-form training minimises, where σ enters, its unit
        self.loss = widgets.Dropdown(options=[(f"{name}: {text}", name) for name, text in NOISE_LOSSES.items()],
                                     value="stochastic", description="loss", **wide)
        self.noise_at = widgets.Dropdown(options=[("first pre-activation (paper)", "preact"), ("input", "input")],
                                         value="preact", description="noise at", **wide)
        self.sigma_mode = widgets.Dropdown(options=[("absolute (paper)", "absolute"),
                                                    ("× each channel's std", "relative")],
                                           value="absolute", description="σ unit", **wide)
        self.eps = widgets.FloatSlider(value=0.3, min=0.0, max=0.5, step=0.005, readout_format=".3f",
                                       description="ε (AT budget)", continuous_update=False, **wide)
        self.eps_warmup = widgets.FloatSlider(value=0.3, min=0.0, max=1.0, step=0.05, description="ε warm-up",
                                              continuous_update=False, **wide)
        self.epochs = widgets.BoundedIntText(value=2, min=1, max=100, description="epochs", **wide)
        self.train_limit = widgets.BoundedIntText(value=0, min=0, max=10_000_000, description="train limit",
                                                  tooltip="use only the first N training examples; 0 = all", **wide)
        self.seed = widgets.BoundedIntText(value=0, min=0, max=2**31 - 1, description="seed", **wide)
        devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        self.device = widgets.Dropdown(options=devices, value="auto", description="device", **wide)

        self.train_button = widgets.Button(description="Train", button_style="primary", icon="play")
        self.stop_button = widgets.Button(description="Stop", button_style="warning", icon="stop", disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="progress",
                                            layout=widgets.Layout(width="420px"))
        self.status = widgets.HTML(html_text("ready", NOTE))
        self.message = widgets.HTML("")
        self.chart = jupyter_chart(training_chart(self._frame(), learnable_sigma=False))

        self.train_button.on_click(self._on_train)
        self.stop_button.on_click(self._on_stop)
        for control in (self.method, self.sigma, self.learnable, self.bimodel, self.alpha, self.relu, self.pool,
                        self.covariance, self.loss, self.noise_at, self.sigma_mode, self.eps, self.eps_warmup,
                        self.epochs, self.train_limit, self.seed, self.architecture, self.device, self.dataset,
                        self.data_root):
            control.observe(self._on_setting, names="value")
        self.dataset.observe(self._on_dataset, names="value")
        self.data_root.observe(self._on_dataset, names="value")

        noise_box = widgets.VBox([self.sigma, self.learnable, self.bimodel, self.alpha, self.relu,
                                  self.pool, self.covariance, self.loss, self.noise_at, self.sigma_mode])
        settings = widgets.HBox([
            widgets.VBox([self.dataset, self.data_root, self.architecture, self.method, self.epochs,
                          self.train_limit, self.seed, self.device]),
            widgets.VBox([widgets.HTML("<b>noise</b>"), noise_box, widgets.HTML("<b>adversarial training</b>"),
                          self.eps, self.eps_warmup]),
        ])
        self.widget = widgets.VBox([
            widgets.HTML("<h3 style='margin:4px 0'>Train a model</h3>"),
            settings, self.data_info,
            widgets.HBox([self.train_button, self.stop_button, self.progress]),
            self.status, self.message, self.chart,
        ])
        self._enable_controls()
        self._on_setting()
        self._on_dataset()

    # ---- settings -----------------------------------------------------------------------------------------------
    def config(self) -> TrainConfig:
        """The TrainConfig the controls describe, validated (raises ValueError naming the bad setting)."""
        method = self.method.value
        noisy, adversarial = method in NOISE_METHODS, method in ADVERSARIAL_METHODS
        learnable = bool(self.learnable.value) and noisy
        # a setting the method ignores keeps its default, so that it neither fails validation nor names the model
        return TrainConfig(
            dataset=self.dataset.value, data_root=self.data_root.value.strip() or None,
            model=self.architecture.value, method=method, epochs=int(self.epochs.value),
            sigma=float(self.sigma.value) if noisy else TrainConfig.sigma,
            learnable_sigma=learnable,
            bimodel_alpha=float(self.alpha.value) if (method == "noise" and learnable and self.bimodel.value) else 0.0,
            relu=self.relu.value if method == "noise" else TrainConfig.relu,
            pool=self.pool.value if method == "noise" else TrainConfig.pool,
            covariance=self.covariance.value if method == "noise" else TrainConfig.covariance,
            loss=self.loss.value if method == "noise" else TrainConfig.loss,
            noise_at=self.noise_at.value if noisy else TrainConfig.noise_at,
            sigma_mode=self.sigma_mode.value if noisy else TrainConfig.sigma_mode,
            eps=float(self.eps.value) if adversarial else TrainConfig.eps,
            eps_warmup=float(self.eps_warmup.value) if adversarial else 0.0,
            seed=int(self.seed.value), train_limit=int(self.train_limit.value) or None, device=self.device.value,
        ).validate()

    def _enable_controls(self) -> None:
        method = self.method.value
        self.sigma.disabled = method not in NOISE_METHODS
        self.learnable.disabled = method not in NOISE_METHODS
        # train() adds the Bimodel term in the closed-form method only
        self.bimodel.disabled = method != "noise" or not self.learnable.value
        self.alpha.disabled = self.bimodel.disabled or not self.bimodel.value
        self.relu.disabled = self.pool.disabled = self.covariance.disabled = self.loss.disabled = method != "noise"
        self.noise_at.disabled = self.sigma_mode.disabled = method not in NOISE_METHODS
        self.eps.disabled = self.eps_warmup.disabled = method not in ADVERSARIAL_METHODS

    def _on_setting(self, change=None) -> None:
        self._enable_controls()
        try:
            self.config()
        except ValueError as error:
            self._config_error = str(error)
            self.message.value = html_text(f"Cannot train with these settings: {error}", ERROR)
            return
        if self._config_error:  # the bad value was corrected: clear its message, keep any other
            self._config_error = ""
            self.message.value = ""

    # ---- data -----------------------------------------------------------------------------------------------------
    def _dataset(self, name: str, root: str | None) -> data_module.Dataset:
        """The data set, loaded once (on the CPU; train() moves it to the device); raises DataNotFoundError."""
        if self._given_data is not None and self._given_data.name == name and root is None:
            return self._given_data
        with self._load_lock:
            key = (name, root)
            if key not in self._datasets:
                self._datasets[key] = data_module.load(name, root=root)
            return self._datasets[key]

    def _on_dataset(self, change=None) -> None:
        name, root = self.dataset.value, self.data_root.value.strip() or None
        if name == data_module.DEFAULT_DATASET or (self._given_data is not None and self._given_data.name == name
                                                   and root is None):
            self.data_info.value = html_text(f"{name}: ready", NOTE)
            return
        self.data_info.value = html_text(f"{name}: looking for its files…", NOTE)
        # reading (or for cifar10 decoding) a data set takes seconds: not on the kernel's main thread
        threading.Thread(target=self._check_dataset, args=(name, root), daemon=True).start()

    def _check_dataset(self, name: str, root: str | None) -> None:
        try:
            found = self._dataset(name, root)
        except Exception as error:  # DataNotFoundError, or a corrupt file (ValueError)
            text, style = f"{name} is not available: {error}", ERROR
        else:
            text, style = (f"{name}: {found.train_images.shape[0]:,} training and {found.test_images.shape[0]:,} "
                           f"test images from {found.source}"), NOTE
        if (self.dataset.value, self.data_root.value.strip() or None) == (name, root):  # still the one selected
            self.data_info.value = html_text(text, style)

    # ---- running --------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def _on_train(self, button=None) -> None:
        with self._run_lock:
            if self.running:
                self.message.value = html_text(BUSY_MESSAGE, ERROR)
                return
            try:
                config = self.config()
            except ValueError as error:
                self._config_error = str(error)
                self.message.value = html_text(f"Cannot train with these settings: {error}", ERROR)
                return
            self._config_error = ""
            self.message.value = ""
            self._stop = threading.Event()
            self._rows = []
            self.result, self.steps_per_second = None, None
            self.progress.value, self.progress.max = 0, 1
            self.progress.bar_style = ""
            self.chart.chart = training_chart(self._frame(), learnable_sigma=config.learnable_sigma)
            self.status.value = html_text(f"training {model_name(config)}…", NOTE)
            self.train_button.disabled, self.stop_button.disabled = True, False
            self._worker = threading.Thread(target=self._run, args=(config, self._stop), daemon=True,
                                            name="noiselab-training")
            self._worker.start()

    def _on_stop(self, button=None) -> None:
        if self.running:
            self._stop.set()
            self.status.value = html_text("stopping after this batch…", NOTE)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running training (if any) to end; True when none is running afterwards."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        return not self.running

    def _frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self._rows), columns=list(COLUMNS))

    def _run(self, config: TrainConfig, stop: threading.Event) -> None:
        clocks = {"chart": 0.0, "bar": 0.0, "chart_cost": 0.0}
        start = time.perf_counter()

        def progress(update: TrainProgress) -> None:
            self._rows.append((update.step, update.loss, update.accuracy, update.sigma))
            now = time.perf_counter()
            if now - clocks["bar"] >= PROGRESS_INTERVAL_S:
                clocks["bar"] = now
                self.progress.max, self.progress.value = update.total_steps, update.step
            if now - clocks["chart"] >= max(CHART_INTERVAL_S, clocks["chart_cost"] / CHART_BUDGET):
                self.chart.chart = training_chart(self._frame(), learnable_sigma=config.learnable_sigma)
                clocks["chart"] = time.perf_counter()
                clocks["chart_cost"] = clocks["chart"] - now

        final_status = html_text("failed", ERROR)
        try:
            self.status.value = html_text(f"loading {config.dataset}…", NOTE)
            dataset = self._dataset(config.dataset, config.data_root)
            self.status.value = html_text(f"training {model_name(config)}…", NOTE)
            result = train(config, data=dataset, progress=progress, stop=stop)
        except Exception as error:  # shown in the panel; the kernel and the panel stay usable
            self.message.value = html_text(f"Training failed: {type(error).__name__}: {error}", ERROR)
            self.progress.bar_style = "danger"
        else:
            final_status = self._finish(config, result, time.perf_counter() - start)
        finally:
            if self._rows:
                self.chart.chart = training_chart(self._frame(), learnable_sigma=config.learnable_sigma)
            if BUSY_MESSAGE in self.message.value:  # the refused click's message is stale once the run is over
                self.message.value = ""
            self.train_button.disabled, self.stop_button.disabled = False, True
            # the outcome is announced last, once the panel is usable again
            self.status.value = final_status

    def _finish(self, config: TrainConfig, result: TrainResult, seconds: float) -> str:
        """Keep a finished run's model; return the status line that announces the outcome."""
        self.result = result
        if self._rows:
            self.progress.max, self.progress.value = max(self.progress.max, self._rows[-1][0]), self._rows[-1][0]
        self.steps_per_second = result.steps / seconds if seconds > 0 else None
        if result.stopped:
            self.progress.bar_style = "warning"
            return html_text(f"stopped after {result.steps} of {self.progress.max} steps; a stopped run "
                             "is not added to the models", NOTE)
        final_sigma = float(result.sigma().detach()) if isinstance(result.sigma, LearnableSigma) \
            else float(result.sigma)
        name = self._unique(model_name(config, final_sigma))
        accuracy = result.history[-1]["test_accuracy"] if result.history else float("nan")
        self.models.add(LabModel(
            name=name, model=result.model.cpu().eval(), config=asdict(config),
            sigma=final_sigma if config.method in NOISE_METHODS else 0.0, source="trained here",
            history=list(result.history), command=cli_command(config),
        ))
        self.progress.bar_style = "success"
        rate = f", {self.steps_per_second:.1f} steps/s" if self.steps_per_second else ""
        return html_text(f"done: test accuracy {accuracy:.3f} — added “{name}” to the models "
                         f"({result.steps} steps in {seconds:.1f} s{rate})", OK)

    def _unique(self, name: str) -> str:
        candidate, number = name, 2
        while candidate in self.models:
            candidate, number = f"{name} #{number}", number + 1
        return candidate
