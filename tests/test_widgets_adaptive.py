"""The adaptive-attack panel, driven through its widget state (no browser)."""

import threading

import pytest
import torch

from noiselab import data as data_module
from noiselab.models import build
from noiselab.widgets import LabModel, ModelList
from noiselab.widgets import adaptive as adaptive_module
from noiselab.widgets.adaptive import AdaptivePanel


@pytest.fixture(scope="module")
def embedded():
    return data_module.load()


@pytest.fixture
def panel(embedded, monkeypatch):
    monkeypatch.setattr(adaptive_module, "EPS_GRID", (0.0, 0.1, 0.2))  # a short grid keeps the runs quick
    torch.manual_seed(0)
    models = ModelList([LabModel("vanilla", build("demo-cnn").eval(), {"method": "vanilla"}),
                        LabModel("noise σ=0.5", build("demo-cnn").eval(), {"method": "noise"}, sigma=0.5)])
    panel = AdaptivePanel(models, embedded, sigma=0.8, eps=0.12)
    panel.examples.value, panel.samples.value, panel.draws.value, panel.steps.value = 10, 8, 2, 2
    return panel


def test_opens_on_the_asked_sigma_and_a_noisy_network(panel):
    assert panel.model.value == "noise σ=0.5"
    assert panel.sigma.value == 0.8        # the link's σ stands
    assert panel.eps.value == 0.1          # snapped onto the grid the results live on
    panel.model.value = "vanilla"
    panel.model.value = "noise σ=0.5"
    assert panel.sigma.value == 0.5        # picking a network adopts the σ it was trained with


def test_run_measures_every_attack_at_every_eps_and_the_slider_only_moves_the_view(panel):
    panel.run_button.click()
    assert panel.wait(240)
    table = panel.table
    assert panel.progress.value == panel.progress.max == 1 + 7 * 2
    assert "done" in panel.status.value
    assert set(table["attack"]) >= {"clean", "naive FGSM", "closed-form FGSM", "EOT-FGSM k=2"}
    assert sorted(table[table.attack != "clean"]["eps"].unique()) == [0.1, 0.2]
    assert ((table["low"] <= table["accuracy"]) & (table["accuracy"] <= table["high"])).all()
    eot = table[table.attack_name == "eot_pgd"].set_index(["attack", "eps"])["passes_per_example"]
    assert eot[("EOT-PGD k=2, 2 steps", 0.1)] == 2 * eot[("EOT-PGD k=1, 2 steps", 0.1)]
    chart_data = panel.chart.chart.to_dict()
    assert chart_data["hconcat"]  # drawn from the table

    calls = []
    original = adaptive_module.measure_attack
    adaptive_module.measure_attack = lambda *a, **k: calls.append(a) or original(*a, **k)
    try:
        panel.eps.value = 0.2
        assert panel.chart.params.eps == 0.2
        assert "At ε = 0.2" in panel.costs.value
        assert calls == []  # nothing recomputed
    finally:
        adaptive_module.measure_attack = original


def test_bad_sigma_gets_a_message_and_no_run(panel):
    panel.sigma.value = -0.5
    assert "σ must lie in" in panel.message.value
    panel.run_button.click()
    assert not panel.running
    assert "σ must lie in" in panel.message.value
    panel.sigma.value = 0.5
    assert panel.message.value == ""


def test_a_second_run_is_refused_and_stop_stops(panel, monkeypatch):
    release = threading.Event()
    original = adaptive_module.measure_attack

    def slow(*args, **kwargs):
        release.wait(10)
        return original(*args, **kwargs)

    monkeypatch.setattr(adaptive_module, "measure_attack", slow)
    panel.run_button.click()
    assert panel.running
    panel.run_button.click()
    assert "already running" in panel.message.value
    panel.stop_button.click()
    release.set()
    assert panel.wait(30)
    assert "stopped" in panel.status.value
    assert panel.progress.value < panel.progress.max
    assert not panel.run_button.disabled


def test_a_retrain_under_the_same_name_drops_the_old_results(panel):
    panel.examples.value, panel.steps.value = 10, 1
    panel.run_button.click()
    assert panel.wait(240)
    assert not panel.table.empty
    revision = panel.models.revision
    panel.models.add(LabModel("noise σ=0.5", build("demo-cnn").eval(), {"method": "noise"}, sigma=0.5))
    assert panel.models.revision == revision + 1 and len(panel.models) == 2
    assert panel.table.empty  # the cached table belonged to the network that was replaced
