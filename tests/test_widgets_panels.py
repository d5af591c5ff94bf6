"""The lab's training and attack panels, driven headless through their widgets (clicks and values), on CPU.

Tiny sizes: the training runs see a few hundred digits, the attacks 50 test examples.
"""

from __future__ import annotations

import time

import altair as alt
import numpy as np
import pandas as pd
import pytest

from noiselab import data as data_module
from noiselab.charts.lab_attack import EPS_PARAM, example_grid_png, robust_accuracy_chart
from noiselab.charts.lab_training import thin, training_chart
from noiselab.evaluate import predict
from noiselab.train import TrainConfig, train
from noiselab.widgets.attack import AttackPanel
from noiselab.widgets.models import LabModel, ModelList
from noiselab.widgets.training import BUSY_MESSAGE, TrainingPanel, cli_command, model_name


@pytest.fixture(scope="module")
def digits():
    """The embedded digits with a 300-example test split, so that each epoch's test accuracy is quick."""
    return data_module.load().subset(test=300)


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _long_run(panel: TrainingPanel) -> None:
    """Start a run far longer than any test waits (every digit, many epochs) and wait for its first batch."""
    panel.train_limit.value, panel.epochs.value = 0, 50
    panel.train_button.click()
    assert _wait_for(lambda: panel.progress.value >= 1, 60), "the run did not report a batch"


# ---- training panel -----------------------------------------------------------------------------------------------

def test_a_tiny_run_reaches_100_percent_and_adds_a_model(digits):
    models = ModelList()
    panel = TrainingPanel(models, digits)
    assert panel.architecture.value == "demo-cnn" and panel.dataset.value == "mnist-embedded"
    panel.method.value, panel.sigma.value = "noise", 0.5
    panel.train_limit.value, panel.epochs.value = 300, 1
    panel.train_button.click()
    assert panel.wait(60), "training did not finish"
    assert panel.message.value == ""
    assert panel.progress.max == 3 and panel.progress.value == 3  # 300 examples in batches of 128
    assert models.names == ["noise σ=0.5 (demo-cnn, 1 ep, n=300)"]
    added = models.get(models.names[0])
    accuracy = added.history[-1]["test_accuracy"]
    assert 0 <= accuracy <= 1 and added.sigma == 0.5 and added.config["method"] == "noise"
    assert f"done: test accuracy {accuracy:.3f}" in panel.status.value
    assert not added.model.training and next(added.model.parameters()).device.type == "cpu"
    # the live chart got every batch of the run
    assert list(panel.chart.chart.data["step"]) == [1, 2, 3]  # the panels share one table: Altair lifts it up
    # the same settings again: a second, distinct name
    panel.train_button.click()
    assert panel.wait(60)
    assert models.names[1] == "noise σ=0.5 (demo-cnn, 1 ep, n=300) #2"


def test_stop_ends_a_long_run_within_a_batch_and_the_panel_stays_usable(digits):
    models = ModelList()
    panel = TrainingPanel(models, digits)
    panel.method.value = "vanilla"
    _long_run(panel)
    assert panel.running and panel.train_button.disabled
    # what the Train button showed when each status line was written
    seen = []
    panel.status.observe(lambda change: seen.append((change["new"], panel.train_button.disabled)), "value")
    clicked = time.perf_counter()
    panel.stop_button.click()
    assert panel.wait(10), "Stop did not end the run"
    latency = time.perf_counter() - clicked
    assert latency < 5, f"stopping took {latency:.1f} s"
    assert "stopped" in panel.status.value and len(models) == 0  # a stopped run is not added
    assert not panel.train_button.disabled and panel.stop_button.disabled
    assert panel.progress.value < panel.progress.max
    # the outcome is announced once the panel is usable: a browser never sees "stopped" beside a disabled Train
    assert "stopped after" in seen[-1][0] and seen[-1][1] is False
    # usable afterwards: a tiny run completes
    panel.train_limit.value, panel.epochs.value = 200, 1
    panel.train_button.click()
    assert panel.wait(60) and len(models) == 1


def test_a_second_train_click_while_running_is_refused_with_a_message(digits):
    models = ModelList()
    panel = TrainingPanel(models, digits)
    panel.method.value = "vanilla"
    _long_run(panel)
    first_worker = panel._worker
    panel.train_button.click()
    assert BUSY_MESSAGE in panel.message.value
    assert panel._worker is first_worker  # no second thread
    panel.stop_button.click()
    assert panel.wait(10)
    assert BUSY_MESSAGE not in panel.message.value


def test_learnable_sigma_reports_its_trajectory(digits):
    models = ModelList()
    panel = TrainingPanel(models, digits)
    panel.method.value, panel.sigma.value, panel.learnable.value = "noise", 1.9, True
    panel.train_limit.value, panel.epochs.value = 256, 1
    panel.train_button.click()
    assert panel.wait(60)
    sigmas = [row[3] for row in panel._rows]
    assert len(sigmas) == 2 and sigmas[0] != sigmas[1] and all(s > 0 for s in sigmas)  # σ moved: it is learned
    (name,) = models.names
    assert name.startswith("noise σ₀=1.9→") and models.get(name).sigma == pytest.approx(sigmas[-1])
    assert "σ (learned)" in str(panel.chart.chart.to_dict())


def test_the_ablation_options_reach_the_training_config_and_the_model_name(digits):
    models = ModelList()
    panel = TrainingPanel(models, digits)
    panel.method.value = "noise"
    panel.loss.value, panel.noise_at.value, panel.sigma_mode.value = "mse", "input", "relative"
    config = panel.config()
    assert (config.loss, config.noise_at, config.sigma_mode) == ("mse", "input", "relative")
    # sampled trains with cross-entropy: the loss is the closed form's option only, placement and unit are both's
    panel.method.value = "sampled"
    assert panel.loss.disabled and not panel.noise_at.disabled and not panel.sigma_mode.disabled
    config = panel.config()
    assert (config.loss, config.noise_at, config.sigma_mode) == ("stochastic", "input", "relative")
    panel.method.value = "vanilla"
    assert panel.noise_at.disabled and panel.sigma_mode.disabled
    assert panel.config().noise_at == "preact" and not panel.message.value  # ignored settings keep their defaults
    panel.method.value = "noise"
    panel.train_limit.value, panel.epochs.value = 128, 1
    panel.train_button.click()
    assert panel.wait(60)
    (name,) = models.names
    assert name.startswith("noise σ=0.5 loss=mse at input (relative)"), name
    assert "--loss mse --noise-at input --sigma-mode relative" in models.get(name).command


def test_the_covariance_option_reaches_the_config_name_and_command_and_a_batch_too_large_is_named(digits,
                                                                                                    monkeypatch):
    import noiselab.train as train_module

    panel = TrainingPanel(ModelList(), digits)
    panel.method.value = "vanilla"
    assert panel.covariance.disabled and panel.config().covariance == "diagonal"
    panel.method.value = "noise"
    panel.relu.value, panel.pool.value, panel.covariance.value = "moment", "clark-prerelu", "full-linear"
    config = panel.config()
    assert config.covariance == "full-linear" and not panel.message.value
    assert "cov=full-linear" in model_name(config) and "--covariance full-linear" in cli_command(config)
    # LeNet5 at the panel's batch of 128 with 2 GiB free: refused at the click, in the status, with a batch that fits
    monkeypatch.setattr(train_module, "_available_memory", lambda device: 2 << 30)
    panel.architecture.value = "lenet5"
    panel.train_button.click()
    assert panel.wait(60)
    assert "use --batch-size 3 or less" in panel.status.value + panel.message.value


def test_negative_sigma_and_worker_errors_show_messages(digits):
    models = ModelList()
    panel = TrainingPanel(models, digits)
    panel.method.value = "noise"
    panel.sigma.value = -0.5
    assert "sigma must be a finite number >= 0" in panel.message.value.replace("&gt;", ">")
    panel.train_button.click()
    assert panel._worker is None and "Cannot train" in panel.message.value
    panel.sigma.value = 0.5
    assert panel.message.value == ""
    # an error inside the worker (a CIFAR model on MNIST digits) is shown, and the panel recovers
    panel.architecture.value = "cifar-cnn"
    panel.train_button.click()
    assert panel.wait(30)
    assert "Training failed: ValueError" in panel.message.value and "cifar-cnn" in panel.message.value
    assert len(models) == 0 and not panel.train_button.disabled


def test_a_missing_data_set_says_where_to_put_it(digits, tmp_path):
    panel = TrainingPanel(ModelList(), digits)
    panel.data_root.value = str(tmp_path)   # an empty folder
    panel.dataset.value = "fashion-mnist"
    assert _wait_for(lambda: "not available" in panel.data_info.value, 10)
    assert "IDX" in panel.data_info.value
    panel.train_button.click()
    assert panel.wait(10)
    assert "DataNotFoundError" in panel.message.value


# ---- attack panel -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_models(digits):
    """Two DemoCNNs, one epoch on 1,000 digits in batches of 32 (~70% test accuracy each, seconds on a CPU)."""
    quick = {"model": "demo-cnn", "epochs": 1, "batch_size": 32, "lr": 3e-3, "train_limit": 1000, "device": "cpu"}
    vanilla = train(TrainConfig(method="vanilla", **quick), data=digits).model
    noise = train(TrainConfig(method="noise", sigma=0.5, **quick), data=digits).model
    return ModelList([
        LabModel("vanilla", vanilla, {"method": "vanilla", "model": "demo-cnn"}),
        LabModel("noise σ=0.5", noise, {"method": "noise", "model": "demo-cnn"}, sigma=0.5),
    ])


def test_attack_panel_opens_on_the_full_scale_answer_and_the_strong_suite(two_models, digits):
    panel = AttackPanel(two_models, digits, eps=0.1)
    assert panel.attack.value == "suite:strong" and panel.steps.disabled
    assert "APGD-DLR" in panel.light_note.value
    assert panel.verdict_curves is not None and {"vanilla", "pgd_at"} <= set(panel.verdict_curves["method"])
    assert "What the full-scale run found" in panel.verdict.children[0].value
    panel.attack.value = "suite:light"
    assert "LIGHT" in panel.light_note.value and "numbers to quote" in panel.light_note.value
    panel.attack.value = "pgd"
    assert not panel.steps.disabled and "pgd alone is a LIGHT quick look" in panel.light_note.value
    panel.wait(5)


@pytest.mark.slow
def test_attack_panel_curves_flags_and_the_eps_rule(two_models, digits):
    panel = AttackPanel(two_models, digits, eps=0.1)
    panel.attack.value, panel.steps.value, panel.examples.value = "pgd", 10, 50
    assert panel.selection.value == ("vanilla", "noise σ=0.5")
    panel.run_button.click()
    assert panel.wait(120), "the attacks did not finish"
    assert panel.message.value == "" and "done" in panel.status.value
    curves = panel.curves
    assert set(curves["model"]) == {"vanilla", "noise σ=0.5"} and len(curves) == 2 * len(panel.grid)
    x, y = digits.tensors("test", limit=50)
    for name in ("vanilla", "noise σ=0.5"):
        curve = curves[curves["model"] == name].sort_values("eps")["accuracy"].to_numpy()
        clean = float((predict(two_models.get(name).model, x) == y).float().mean())
        assert curve[0] == pytest.approx(clean)
        assert clean > 0.5 and curve[-1] < 0.15                 # PGD at ε = 0.4 takes nearly all of it
        assert np.all(np.diff(curve) <= 0.04)                  # and accuracy only falls with ε
        flags = panel.sweep(name).flags
        assert flags and {f.name for f in flags} >= {"accuracy_rises_with_eps", "zero_or_nan_gradients"}
        assert name in panel.flags.value
    assert "✔" in panel.flags.value or "⚠" in panel.flags.value
    assert "transfer from “vanilla”" in panel.flags.value   # the noise model is checked against the vanilla one

    # the ε slider moves the chart's rule through its parameter: no new spec, no new sweep
    spec, sweeps = panel.chart.spec, panel.sweeps_run
    panel.eps.value = 0.25
    assert panel.chart.params.eps == 0.25 and panel.chart.spec is spec and panel.sweeps_run == sweeps
    # re-selecting and re-running come from the cache
    panel.selection.value = ("vanilla",)
    assert set(panel.curves["model"]) == {"vanilla"}
    panel.selection.value = ("vanilla", "noise σ=0.5")
    assert len(panel.curves) == 2 * len(panel.grid)
    panel.run_button.click()
    assert panel.wait(30) and panel.sweeps_run == sweeps

    # the examples grid at the slider's ε
    panel.model.value = "vanilla"
    panel.show_examples()
    assert panel.images.value[:8] == b"\x89PNG\r\n\x1a\n" and "ε = 0.250" in panel.images_caption.value
    panel.wait(5)


def test_attack_panel_follows_the_model_list_and_stops(two_models, digits):
    models = ModelList([two_models.get("vanilla")])
    panel = AttackPanel(models, digits)
    models.add(two_models.get("noise σ=0.5"))       # e.g. the training panel finished a run
    assert panel.selection.options == ("vanilla", "noise σ=0.5") and "noise σ=0.5" in panel.selection.value
    assert "noise σ=0.5" in panel.model.options
    panel.attack.value, panel.steps.value, panel.examples.value = "apgd", 100, 50
    panel.checks.value = False
    panel.run_button.click()
    assert _wait_for(lambda: panel.progress.value >= 1, 60)
    panel.run_button.click()
    assert "already running" in panel.message.value
    panel.stop_button.click()
    assert panel.wait(30) and "stopped" in panel.status.value
    assert panel.sweeps_run == 0 and len(panel.curves) == 0    # nothing half-computed is kept
    panel.wait(5)


def test_attack_panel_skips_a_model_trained_on_other_images(two_models, digits):
    fashion = LabModel("fashion vanilla", two_models.get("vanilla").model, {"method": "vanilla",
                                                                            "dataset": "fashion-mnist"})
    panel = AttackPanel(ModelList([fashion]), digits)
    panel.run_button.click()
    assert panel.wait(30)
    assert "Skipped: fashion vanilla was trained on other images (fashion-mnist)" in panel.message.value
    assert panel.sweeps_run == 0 and len(panel.curves) == 0
    panel.wait(5)


# ---- the charts the panels draw ---------------------------------------------------------------------------------

def test_lab_charts():
    rows = pd.DataFrame({"step": range(1, 5001), "loss": 1.0, "accuracy": 0.5, "sigma": 1.9})
    thinned = thin(rows, 600)
    assert len(thinned) <= 600 and thinned["step"].iloc[0] == 1 and thinned["step"].iloc[-1] == 5000
    assert len(training_chart(rows, learnable_sigma=True).hconcat) == 3
    chart = robust_accuracy_chart(pd.DataFrame({"model": ["a", "a"], "eps": [0.0, 0.1], "accuracy": [0.9, 0.2]}),
                                  eps=0.05, eps_max=0.4)
    assert isinstance(chart, alt.LayerChart)
    assert [p.name for p in chart.params] == [EPS_PARAM] and chart.params[0].value == 0.05
    images = np.zeros((2, 1, 28, 28), dtype=np.float32)
    with pytest.raises(ValueError, match="one entry per image"):
        example_grid_png(images, images, [1], [1, 2], [1, 2], [str(i) for i in range(10)])
