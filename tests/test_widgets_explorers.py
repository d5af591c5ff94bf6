"""The lab's explorers, headless: the censoring explorer, the propagation explorer, the loss-surface panel, and the
starter models. Widget state is driven as a user would (setting control values) and read back from the widgets
and the charts' live tables (JupyterChart.params), on the embedded data. Small untrained models keep this fast;
the starter models are loaded once for the tests that are about them."""

import json
import math
import shutil

import pytest
import torch

from noiselab import data as data_module
from noiselab.checkpoint import CheckpointError
from noiselab.models import CifarCNN, DemoCNN
from noiselab.starter import read_manifest, starter_folder
from noiselab.train import accuracy
from noiselab.widgets import load_starter_models
from noiselab.widgets.censoring import CensoringExplorer
from noiselab.widgets.models import LabModel, ModelList
from noiselab.widgets.propagation import PropagationExplorer
from noiselab.widgets.surface import LossSurfacePanel


@pytest.fixture(scope="module")
def data():
    return data_module.load()


def demo_model(name: str, seed: int, method: str = "vanilla", sigma: float = 0.0) -> LabModel:
    torch.manual_seed(seed)
    return LabModel(name, DemoCNN().eval(), {"method": method, "model": "demo-cnn"}, sigma=sigma)


@pytest.fixture(scope="module")
def starters():
    return load_starter_models()


# ---- censoring ---------------------------------------------------------------------------------------------------


def test_censoring_explorer_follows_mu_in_chart_and_numbers():
    explorer = CensoringExplorer(mu=0.0, sigma=1.0)
    before_curves = explorer.chart.params.curves
    before_numbers = explorer.numbers.value
    explorer.mu.value = -2.0
    curves, mass = explorer.chart.params.curves, explorer.chart.params.mass
    assert curves != before_curves and explorer.numbers.value != before_numbers
    assert curves["n"] > 100 and min(curves["xi"]) == pytest.approx(-6.0)   # mu - 4 sigma in view
    # Phi(-mu/sigma) = Phi(2) = 0.9772 censored, shown as the rule's height and its label
    assert mass["probability"][0] == pytest.approx(0.97725, abs=1e-4)
    assert "0.977" in mass["label"][0]
    # the paper's rule keeps variance 1 where the exact variance is 0.0057: its error is in the table
    assert "+0.9943" in explorer.numbers.value
    assert explorer.message.value == "" and explorer.last_update_ms > 0


def test_censoring_explorer_sigma_box_rejects_nonpositive_values_with_a_message():
    explorer = CensoringExplorer()
    explorer.sigma_text.value = -1.0
    assert "σ must be" in explorer.message.value and explorer.sigma.value == 1.0
    explorer.sigma_text.value = 0.0
    assert "σ must be" in explorer.message.value and explorer.sigma.value == 1.0
    explorer.sigma_text.value = 1.0  # valid, and the value σ already has: the message goes all the same
    assert explorer.message.value == ""
    explorer.sigma_text.value = float("nan")
    assert "σ must be" in explorer.message.value
    explorer.sigma_text.value = 0.5
    assert explorer.sigma.value == 0.5 and explorer.message.value == ""
    histogram = explorer.chart.params.histogram
    assert histogram["n"] == 60 and max(histogram["right"]) == pytest.approx(2.0)  # mu + 4 sigma
    explorer.sigma.value = 2.0  # the slider writes back into the box
    assert explorer.sigma_text.value == 2.0
    explorer.sigma.value = 0.1 + 1.05  # 1.1500000000000001 in floating point: the message shows what a person typed
    explorer.sigma_text.value = -2.0
    assert "σ stays 1.15." in explorer.message.value


def test_chart_data_set_before_display_survives_the_browser_drawing_the_chart():
    """A newly drawn view sends the spec's initial parameter values to the kernel; the kernel must send its own back
    (else a panel updated before display, e.g. from a link's σ, would show its first data)."""
    explorer = CensoringExplorer(mu=0.0)
    chart = explorer.chart
    sent = []
    chart.comm.kernel = object()  # headless: pretend a front-end is connected, and record what would go to it
    chart.comm.send = lambda data=None, buffers=None, **kwargs: sent.append(data)
    explorer.mu.value = -2.0
    ours = chart.params.curves
    initial = {param["name"]: param["value"] for param in chart.spec["params"] if "value" in param}
    assert initial["curves"] != ours
    sent.clear()
    chart.set_state({"_params": initial})  # what the browser sends when it draws the chart
    assert chart.params.curves == ours and chart._params["curves"] == ours
    updates = [message for message in sent if message["method"] == "update"]
    assert updates and updates[-1]["state"]["_params"]["curves"] == ours
    sent.clear()
    chart.set_state({"_params": dict(chart._params)})  # an echo of the kernel's own values: nothing to put back
    assert not [message for message in sent if message["method"] == "update"]


def test_censoring_explorer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sigma"):
        CensoringExplorer(sigma=0.0)
    with pytest.raises(ValueError, match="mu"):
        CensoringExplorer(mu=float("nan"))


# ---- propagation -------------------------------------------------------------------------------------------------


def test_propagation_explorer_errors_are_finite_and_follow_the_rules(data):
    models = ModelList([demo_model("a", 0)])
    explorer = PropagationExplorer(models, data, sigma=0.5, samples=200)
    layers = len(explorer.errors)
    assert layers == 10  # DemoCNN from conv1 on: conv, relu, pool, conv, relu, pool, flatten, linear, relu, linear
    errors = explorer.chart.params.errors
    assert errors["n"] == layers and all(math.isfinite(e) for e in errors["mean_error"] + errors["var_error"])
    paper = [e.var_error for e in explorer.errors]
    explorer.relu.value = "moment"
    moment = [e.var_error for e in explorer.errors]
    # the paper's ReLU keeps variance that the censoring removes: worse than moment matching right after the ReLU
    assert paper[1] > moment[1]
    assert explorer.chart.params.errors["var_error"] != errors["var_error"]
    wins = explorer.chart.params.wins
    assert wins["n"] == 100 and sum(wins["is_label"]) == 10 and all(0 <= p <= 1 for p in wins["p"])
    assert explorer.last_update_ms > 0 and explorer.message.value == ""


def test_propagation_explorer_covariance_toggle_brings_the_output_variance_to_sampling(starters, data):
    """The vanilla starter (a trained LeNet5), sigma = 0.5, 500 draws: its logits' variances are ~90% off sampling
    under the diagonal rules (their correlations dropped) and within 25% with the covariance carried (measured on
    image 0, the explorer's relative L1 error: 0.995 and 0.172); the win probabilities then use the logits'
    covariance."""
    models = ModelList([lab_model for lab_model in starters if lab_model.name == "vanilla"])
    explorer = PropagationExplorer(models, data, sigma=0.5, samples=500)
    explorer.relu.value, explorer.pool.value = "moment", "clark-prerelu"
    diagonal_error, diagonal_wins = explorer.errors[-1].var_error, list(explorer.chart.params.wins["p"])
    explorer.covariance.value = "full-linear"
    assert explorer.message.value == ""
    print(f"\noutput variance error: diagonal {diagonal_error:.3f}, full-linear {explorer.errors[-1].var_error:.3f}")
    assert diagonal_error > 0.6 and explorer.errors[-1].var_error < 0.25
    assert list(explorer.chart.params.wins["p"]) != diagonal_wins


def test_propagation_explorer_maps_follow_layer_and_channel(data):
    explorer = PropagationExplorer(ModelList([demo_model("a", 0)]), data, samples=100)
    assert explorer.chart.params.maps["n"] == 28 * 28  # conv1, 'same' padding
    explorer.layer.value = 2  # first max-pool: 14 x 14
    assert explorer.chart.params.maps["n"] == 14 * 14
    mean_over_channels = explorer.chart.params.maps["mean_closed"]
    explorer.channel.value = 3
    assert explorer.chart.params.maps["mean_closed"] != mean_over_channels
    explorer.layer.value = 7  # the 64-unit linear layer: no channels, wrapped into rows
    assert [value for _, value in explorer.channel.options] == [-1]
    assert explorer.chart.params.maps["n"] == 64  # 8 x 8


def test_propagation_dropdown_follows_the_model_list(data):
    models = ModelList([demo_model("a", 0)])
    explorer = PropagationExplorer(models, data, samples=100)
    first = explorer.chart.params.errors
    models.add(demo_model("b", 1))
    assert list(explorer.model.options) == ["a", "b"] and explorer.model.value == "a"
    explorer.model.value = "b"
    assert explorer.chart.params.errors != first
    models.add(demo_model("c", 2))
    assert list(explorer.model.options) == ["a", "b", "c"] and explorer.model.value == "b"


def test_propagation_explorer_shows_a_message_for_a_model_that_does_not_fit(data):
    models = ModelList([demo_model("a", 0)])
    explorer = PropagationExplorer(models, data, samples=100)
    models.add(LabModel("cifar", CifarCNN().eval(), {"method": "vanilla"}))
    explorer.model.value = "cifar"
    assert "shape" in explorer.message.value
    with pytest.raises(ValueError, match="sigma"):
        PropagationExplorer(models, data, sigma=-1.0)
    with pytest.raises(ValueError, match="model"):
        PropagationExplorer(models, data, model="nope")


def test_propagation_explorer_without_models_says_so(data):
    models = ModelList()
    explorer = PropagationExplorer(models, data, samples=100)
    assert "No model" in explorer.message.value and explorer.chart.params.errors["n"] == 0
    models.add(demo_model("late", 0))
    assert explorer.model.value == "late" and explorer.chart.params.errors["n"] == 10


# ---- loss surface ------------------------------------------------------------------------------------------------


def test_loss_surface_panel_redraws_when_sigma_eps_or_model_change(data):
    models = ModelList([demo_model("plain", 0), demo_model("noisy", 1, method="noise", sigma=0.5)])
    panel = LossSurfacePanel(models, data, sigma=0.0, eps=0.3, steps=15)  # 15 x 15 keeps the test quick
    assert (panel.model.value, panel.compare_model.value) == ("plain", "noisy")
    left = panel.chart.params.left
    assert left["n"] == 15 * 15 and min(left["a"]) == pytest.approx(-0.3)
    assert "cross-entropy" in panel.chart.params.titles["left"]
    panel.sigma.value = 0.8
    assert panel.chart.params.left["loss"] != left["loss"]
    assert "σ = 0.80" in panel.chart.params.titles["right"] and panel.surfaces[0].sigma == 0.8
    panel.eps.value = 0.1
    assert max(panel.chart.params.left["b"]) == pytest.approx(0.1)
    right = panel.chart.params.right
    panel.compare_model.value = "plain"
    assert panel.chart.params.right["loss"] != right["loss"]
    assert panel.chart.params.right["loss"] == panel.chart.params.left["loss"]
    assert "misclassified" in panel.summary.value and panel.last_update_ms > 0


def test_loss_surface_panel_follows_the_model_list_and_reports_misfits(data):
    models = ModelList()
    panel = LossSurfacePanel(models, data)
    assert "No model" in panel.message.value
    models.add(demo_model("first", 0))
    assert panel.model.value == "first" and panel.chart.params.left["n"] == 41 * 41  # the default grid
    models.add(LabModel("cifar", CifarCNN().eval(), {"method": "vanilla"}))
    panel.compare_model.value = "cifar"
    assert "shape" in panel.message.value
    with pytest.raises(ValueError, match="eps"):
        LossSurfacePanel(models, data, eps=0.0)


def test_loss_surface_panel_defaults_to_a_vanilla_and_a_noise_starter(starters, data):
    panel = LossSurfacePanel(ModelList(starters), data, steps=5)
    assert panel.model.value == "vanilla" and panel.compare_model.value.startswith("noise")


# ---- starter models ----------------------------------------------------------------------------------------------


def test_starter_models_have_the_accuracy_the_manifest_says(starters, data):
    manifest = read_manifest()
    assert [m.name for m in starters] == [entry["name"] for entry in manifest["models"]]
    names = {m.name for m in starters}
    assert {"vanilla", "PGD-AT ε=0.3"} <= names and sum(name.startswith("noise σ=") for name in names) >= 2
    images, labels = data.split("test")
    total_bytes = 0
    for model, entry in zip(starters, manifest["models"]):
        assert model.source == "starter" and model.command.startswith("noiselab train")
        assert model.sigma == entry["sigma"] and model.config["method"] == entry["method"]
        assert accuracy(model.model, images, labels) == pytest.approx(entry["test_accuracy"], abs=0.002)
        total_bytes += (starter_folder() / entry["file"]).stat().st_size
    assert total_bytes < 4_000_000
    # trained, not random: every starter is far above chance on digits it never saw
    assert min(entry["test_accuracy"] for entry in manifest["models"]) > 0.85


def test_a_missing_or_corrupt_starter_file_raises_a_clear_error(tmp_path):
    folder = tmp_path / "starter"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="manifest .* is missing"):
        load_starter_models(folder)
    manifest = read_manifest()
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    first = manifest["models"][0]
    with pytest.raises(CheckpointError, match=f"starter model '{first['name']}': no checkpoint at .*make_starter"):
        load_starter_models(folder)
    shutil.copy(starter_folder() / first["file"], folder / first["file"])
    assert [m.name for m in load_starter_models(folder, names=[first["name"]])] == [first["name"]]
    data = bytearray((folder / first["file"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / first["file"]).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 differs"):
        load_starter_models(folder, names=[first["name"]])
    del first["sha256"]  # without the checksum, torch's own reading of the damaged file still fails clearly
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (folder / first["file"]).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable noiselab checkpoint"):
        load_starter_models(folder, names=[first["name"]])
