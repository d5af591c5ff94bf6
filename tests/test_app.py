"""The lab app (noiselab.widgets.app.Lab) without a browser: tabs, lazy panels, errors in tabs, state from a URL.

Most tests swap the panels for small stand-ins (the panels have their own tests); the last ones build the real
panels on the real embedded data and starter models.
"""

import importlib.util
import sys
import types

import ipywidgets as widgets
import pytest

from noiselab.widgets import app as app_module
from noiselab.widgets.app import PANEL_SPECS, Lab, PanelSpec
from noiselab.widgets.models import LabModel, ModelList
from noiselab.widgets.urlstate import PANELS, LabState


class StandIn:
    built: list = []

    def __init__(self, models=None, data=None):
        StandIn.built.append(type(self).__name__)
        self.sigma = widgets.FloatSlider(value=0.5, min=0, max=2, step=0.05)
        self.eps = widgets.FloatSlider(value=0.1, min=0, max=0.5, step=0.01)
        self.model = widgets.Dropdown(options=list(models.names) if models is not None else [])
        self.widget = widgets.VBox([self.sigma, self.eps, self.model])


class SigmaOnly:
    def __init__(self, models=None, data=None):
        self.sigma = widgets.FloatSlider(value=1.0, min=0, max=3)
        self.widget = widgets.VBox([self.sigma])


class Broken:
    def __init__(self, models=None, data=None):
        raise RuntimeError("no weights for this panel")


@pytest.fixture
def stand_ins(monkeypatch):
    module = types.ModuleType("noiselab_test_panels")
    module.StandIn, module.SigmaOnly, module.Broken = StandIn, SigmaOnly, Broken
    monkeypatch.setitem(sys.modules, "noiselab_test_panels", module)
    StandIn.built = []
    for name in PANELS:
        cls = "SigmaOnly" if name == "censoring" else "StandIn"
        monkeypatch.setitem(PANEL_SPECS, name, PanelSpec(PANEL_SPECS[name].title, "noiselab_test_panels", cls,
                                                         app_module._with_models_and_data))
    return module


@pytest.fixture
def models():
    from torch import nn

    return ModelList([LabModel("vanilla", nn.Identity(), {}), LabModel("noise σ=0.5", nn.Identity(), {}, 0.5)])


def test_opens_on_the_first_tab_and_builds_panels_lazily(stand_ins, models):
    lab = Lab(data=object(), models=models)
    assert lab.tabs.selected_index == 0 and lab.current == "censoring"
    assert list(lab.panels) == ["censoring"] and StandIn.built == []
    assert [lab.tabs.get_title(i) for i in range(len(PANELS))] == [s.title for s in PANEL_SPECS.values()]
    lab.tabs.selected_index = PANELS.index("attack")
    assert list(lab.panels) == ["censoring", "attack"]
    assert lab.tabs.children[PANELS.index("attack")].children == (lab.panels["attack"].widget,)


def test_eager_builds_everything(stand_ins, models):
    lab = Lab(data=object(), models=models, eager=True)
    assert list(lab.panels) == list(PANELS) and lab.errors == {}


def test_query_opens_that_panel_with_those_settings(stand_ins, models):
    lab = Lab.from_query("panel=attack&eps=0.2&sigma=1.5&model=noise%20%CF%83%3D0.5", data=object(), models=models)
    attack = lab.panels["attack"]
    assert lab.current == "attack" and lab.tabs.selected_index == PANELS.index("attack")
    assert (attack.eps.value, attack.sigma.value, attack.model.value) == (0.2, 1.5, "noise σ=0.5")
    assert lab.notices == [] and lab.notice.value == ""
    assert "censoring" not in lab.panels  # the first tab was never built


def test_query_string_comes_from_the_environment(stand_ins, models, monkeypatch):
    monkeypatch.delenv("VOILA_PREHEAT", raising=False)
    monkeypatch.setenv("QUERY_STRING", "panel=surface&sigma=0.25")
    lab = Lab.from_query(data=object(), models=models)
    assert lab.current == "surface" and lab.panels["surface"].sigma.value == 0.25


def test_a_preheated_kernel_builds_the_first_panel_before_its_visitor_arrives(stand_ins, models, monkeypatch):
    import voila.utils

    built_before_the_query = []

    def visitor_arrives():
        built_before_the_query.append(sorted(lab_so_far.panels))  # what was ready when the query came
        return "panel=attack&eps=0.2&sigma=9"

    lab_so_far = None
    original_init = Lab.__init__

    def init(self, *args, **kwargs):
        nonlocal lab_so_far
        lab_so_far = self
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(Lab, "__init__", init)
    monkeypatch.setenv("VOILA_PREHEAT", "True")
    monkeypatch.setattr(voila.utils, "get_query_string", visitor_arrives)
    lab = Lab.from_query(data=object(), models=models)
    assert built_before_the_query == [["censoring"]]
    assert lab.current == "attack" and lab.panels["attack"].eps.value == 0.2  # then the visitor's view opened
    assert len(lab.notices) == 1 and "σ" in lab.notices[0]  # its bad value said, as without preheating


def test_link_follows_the_tab_and_the_sliders(stand_ins, models):
    lab = Lab(data=object(), models=models)
    assert "href='?panel=censoring&amp;sigma=1'" in lab.link.value
    panel = lab.select("attack")
    panel.eps.value = 0.3
    panel.model.value = "noise σ=0.5"
    assert lab.state() == LabState("attack", 0.5, 0.3, "noise σ=0.5")
    assert lab.link_query() == "panel=attack&sigma=0.5&eps=0.3&model=noise%20%CF%83%3D0.5"
    assert "href='?panel=attack&amp;sigma=0.5&amp;eps=0.3&amp;model=noise%20%CF%83%3D0.5'" in lab.link.value
    lab.tabs.selected_index = 0
    assert "?panel=censoring&amp;sigma=1'" in lab.link.value


def test_bad_values_in_the_link_become_visible_notices(stand_ins, models):
    lab = Lab.from_query("panel=attack&sigma=-1&eps=0.4&model=<script>&x=1", data=object(), models=models)
    assert lab.current == "attack"
    assert lab.panels["attack"].sigma.value == 0.5 and lab.panels["attack"].eps.value == 0.4
    assert len(lab.notices) == 3
    assert "σ must be within [0, 3]" in lab.notice.value
    assert "<script>" not in lab.notice.value and "&lt;script&gt;" in lab.notice.value


def test_values_beyond_a_panels_own_range_or_controls_are_said(stand_ins, models):
    lab = Lab(LabState(panel="attack", eps=0.8), data=object(), models=models)
    assert lab.panels["attack"].eps.value == 0.5
    assert "outside the attack panel's range [0, 0.5]; set to 0.5" in lab.notice.value
    lab = Lab(LabState(panel="censoring", eps=0.2, model="vanilla"), data=object(), models=models)
    assert "the censoring panel has no ε" in lab.notice.value and "has no model" in lab.notice.value


def test_a_broken_or_missing_panel_shows_its_error_in_its_tab(stand_ins, models, monkeypatch):
    monkeypatch.setitem(PANEL_SPECS, "training", PanelSpec("Training", "noiselab_test_panels", "Broken",
                                                           app_module._with_models_and_data))
    monkeypatch.setitem(PANEL_SPECS, "surface", PanelSpec("Loss surface", "noiselab_no_such_module", "X",
                                                          app_module._with_models_and_data))
    lab = Lab(LabState(panel="training", sigma=0.3), data=object(), models=models)
    page = lab.tabs.children[PANELS.index("training")]
    assert lab.panels.get("training") is None
    assert "RuntimeError: no weights for this panel" in page.children[0].value
    assert "the other tabs still work" in page.children[0].value
    assert lab.select("surface") is None and "ModuleNotFoundError" in lab.errors["surface"]
    assert lab.select("attack") is not None
    assert "panel=attack" in lab.link.value


def test_failing_data_or_models_are_notices_not_exceptions(stand_ins, monkeypatch):
    def fail():
        raise OSError("disk on fire")

    monkeypatch.setattr(app_module, "_load_data", fail)
    monkeypatch.setattr(app_module, "_load_starter_models", fail)
    lab = Lab()
    assert lab.data is None and len(lab.models) == 0
    assert "loading the data failed: OSError: disk on fire" in lab.notice.value
    assert "loading the starter models failed" in lab.notice.value


# ---- the real panels, data and starter models ------------------------------------------------------------------
def _panel_file_exists(name: str) -> bool:
    return importlib.util.find_spec(PANEL_SPECS[name].module) is not None


@pytest.fixture(scope="module")
def real_lab():
    return Lab()


@pytest.mark.slow
@pytest.mark.parametrize("name", PANELS)
def test_every_real_panel_builds(real_lab, name):
    if not _panel_file_exists(name):
        pytest.skip(f"{PANEL_SPECS[name].module} is not written yet")
    assert real_lab.notices == [], real_lab.notices
    panel = real_lab.select(name)
    assert real_lab.errors.get(name) is None and panel is not None
    assert real_lab.current == name and f"panel={name}" in real_lab.link.value
