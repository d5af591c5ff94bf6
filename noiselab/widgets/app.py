"""The lab: every panel as a tab of one app, sharing one data set and one model list, with a link to the view.

    >>> lab = Lab.from_query()        # in Voilà: opens on the panel and settings of the page's ?query
    >>> lab.widget                    # display it (apps/noiselab.ipynb is this one line)
    >>> Lab(LabState(panel="attack", eps=0.2)).widget

The embedded MNIST subset is loaded once and the starter models fill the shared ModelList. A panel is built the
first time its tab is shown (the app opens in a second or two and a visitor who never looks at a tab does not
pay for it); a panel that fails to import or build shows the error in its tab, and the other tabs still work.

The link under the title follows the open tab and its σ, ε and model, as a relative href ("?panel=...") that the
browser resolves against the page's own URL: copy it to share the view (one link per exercise).
"""

from __future__ import annotations

import html
import importlib
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import ipywidgets as widgets
import traitlets

from .models import ModelList
from .urlstate import PANELS, LabState, format_query, parse_query


def _log_to_server(message: str) -> None:
    # The kernel's sys.stderr is shown in the page; its original stderr is the server's log (Voilà's terminal),
    # where a deployment's operator, not the visitor, should read tracebacks.
    print(f"noiselab lab: {message}", file=sys.__stderr__, flush=True)


@dataclass(frozen=True)
class PanelSpec:
    title: str        # the tab's title
    module: str       # the module that defines it, imported when the tab is first shown
    cls: str          # the panel's class in it
    build: Callable   # (panel_class, models, data) -> panel


def _alone(cls, models, data):
    return cls()


def _with_models_and_data(cls, models, data):
    return cls(models, data)


PANEL_SPECS: dict[str, PanelSpec] = {
    "censoring": PanelSpec("Censoring", "noiselab.widgets.censoring", "CensoringExplorer", _alone),
    "propagation": PanelSpec("Propagation", "noiselab.widgets.propagation", "PropagationExplorer",
                             _with_models_and_data),
    "training": PanelSpec("Training", "noiselab.widgets.training", "TrainingPanel", _with_models_and_data),
    "attack": PanelSpec("Attack", "noiselab.widgets.attack", "AttackPanel", _with_models_and_data),
    "surface": PanelSpec("Loss surface", "noiselab.widgets.surface", "LossSurfacePanel", _with_models_and_data),
    "adaptive": PanelSpec("Adaptive attack", "noiselab.widgets.adaptive", "AdaptivePanel", _with_models_and_data),
}
assert tuple(PANEL_SPECS) == PANELS, "the URL's panel names are the tabs, in order"

_BOX = "padding:6px 10px;border-radius:4px;margin:4px 0;"
_NOTICE_STYLE = _BOX + "background:#fff4ce;border:1px solid #e0c060;color:#5c4400;"
_ERROR_STYLE = _BOX + "background:#fde7e9;border:1px solid #d08080;color:#7a1010;"


def _box(style: str, title: str, lines: list[str]) -> str:
    items = "".join(f"<li>{html.escape(line, quote=False)}</li>" for line in lines)
    return f'<div style="{style}"><b>{html.escape(title, quote=False)}</b><ul style="margin:2px 0">{items}</ul></div>'


def _load_data():
    from .. import data

    return data.load()


def _load_starter_models() -> list:
    from .models import load_starter_models

    return load_starter_models()


class Lab:
    """The app. `panels` maps a tab name to its panel once built; `errors` to the message of one that failed."""

    def __init__(self, state: LabState | str | None = None, data=None, models: ModelList | None = None,
                 eager: bool = False) -> None:
        """`state`: a LabState, or a URL query string (validated against the lab's models, with notices)."""
        self.errors: dict[str, str] = {}
        self.panels: dict[str, object] = {}
        self.notices: list[str] = []
        self.data = data if data is not None else self._try("data", _load_data)
        if models is None:
            models = ModelList()
            for model in self._try("starter models", _load_starter_models) or []:
                models.add(model)
        self.models = models

        self._pages = {name: widgets.VBox(layout=widgets.Layout(min_height="200px")) for name in PANEL_SPECS}
        for name, page in self._pages.items():
            page.add_class(f"noiselab-page-{name}")  # for the browser tests, and for styling
        self.tabs = widgets.Tab(children=list(self._pages.values()),
                                titles=[spec.title for spec in PANEL_SPECS.values()])
        self.tabs.add_class("noiselab-tabs")
        self.link = widgets.HTML()
        self.link.add_class("noiselab-link")
        self.notice = widgets.HTML()
        self.notice.add_class("noiselab-notice")
        header = widgets.HTML(
            "<h2 style='margin:4px 0'>noiselab: noise-aware training, interactively</h2>"
            "<div style='color:#555'>Arous et al., <i>May the Noise be with you</i>. Each tab is one experiment; "
            "the link follows the open tab and its settings.</div>")
        self.widget = widgets.VBox([header, self.link, self.notice, self.tabs])
        self.widget.add_class("noiselab-lab")

        self.tabs.observe(self._on_tab, names="selected_index")
        if eager:
            for name in PANEL_SPECS:
                self.panel(name)
        if isinstance(state, str):
            self.open_query(state)
        else:
            self.apply_state(state or LabState())

    def open_query(self, query: str) -> None:
        """Open the view a URL query string names (validated against the lab's models; what cannot be opened
        becomes a notice)."""
        state, notices = parse_query(query, models=self.models.names)
        self.notices.extend(notices)
        self.apply_state(state)

    # ---- building panels -------------------------------------------------------------------------------------
    def _try(self, what: str, load: Callable):
        try:
            return load()
        except Exception as error:  # shown in the app, logged in full to the server's log
            _log_to_server(f"loading the {what} failed\n{traceback.format_exc()}")
            self.notices.append(f"loading the {what} failed: {type(error).__name__}: {error}")
            return None

    def panel(self, name: str):
        """The panel of tab `name`, built on first use; None if it could not be built (see `errors`)."""
        if name not in PANEL_SPECS:
            raise ValueError(f"panel must be one of {PANELS}, got {name!r}")
        if name in self.panels or name in self.errors:
            return self.panels.get(name)
        spec, page = PANEL_SPECS[name], self._pages[name]
        # sent to the browser at once, so the tab says something while the panel builds (seconds: imports, charts)
        page.children = [widgets.HTML(f"<i style='color:#777'>Loading the {spec.title.lower()} panel…</i>")]
        try:
            panel_class = getattr(importlib.import_module(spec.module), spec.cls)
            panel = spec.build(panel_class, self.models, self.data)
            content = panel.widget
        except Exception as error:
            _log_to_server(f"the {name} panel failed to build\n{traceback.format_exc()}")
            self.errors[name] = f"{type(error).__name__}: {error}"
            page.children = [widgets.HTML(_box(_ERROR_STYLE, f"The {spec.title.lower()} panel could not be "
                                               "loaded; the other tabs still work.", [self.errors[name]]))]
            page.children[0].add_class("noiselab-panel-error")
            return None
        self.panels[name] = panel
        page.children = [content]
        for attribute in ("sigma", "eps", "model"):
            control = getattr(panel, attribute, None)
            if isinstance(control, widgets.ValueWidget):
                control.observe(self._refresh_link, names="value")
        return panel

    def _on_tab(self, change) -> None:
        self.panel(self.current)
        self._refresh_link()

    @property
    def current(self) -> str:
        return PANELS[self.tabs.selected_index or 0]

    def select(self, name: str):
        """Open tab `name` (building its panel) and return the panel."""
        if name not in PANEL_SPECS:
            raise ValueError(f"panel must be one of {PANELS}, got {name!r}")
        self.tabs.selected_index = PANELS.index(name)
        return self.panel(name)  # a no-op when the observer has built it; builds it when the index was unchanged

    # ---- state and link ----------------------------------------------------------------------------------------
    def apply_state(self, state: LabState) -> None:
        """Open `state.panel` (default: the first) and set its σ, ε and model; what cannot be set becomes a notice."""
        name = state.panel or self.current
        panel = self.select(name)
        title = PANEL_SPECS[name].title.lower()
        requested = {"sigma": state.sigma, "eps": state.eps, "model": state.model}
        for attribute, value in requested.items():
            if value is None or panel is None:
                continue
            control = getattr(panel, attribute, None)
            symbol = {"sigma": "σ", "eps": "ε", "model": "model"}[attribute]
            if not isinstance(control, widgets.ValueWidget):
                self.notices.append(f"{attribute}={value} ignored: the {title} panel has no {symbol}")
                continue
            try:
                control.value = value
            except traitlets.TraitError:  # a Dropdown without that option
                self.notices.append(f"{attribute}={value!r} ignored: the {title} panel does not offer it")
                continue
            low, high = getattr(control, "min", None), getattr(control, "max", None)
            if low is not None and not low <= value <= high:
                self.notices.append(f"{symbol}={value:g} is outside the {title} panel's range "
                                    f"[{low:g}, {high:g}]; set to {control.value:g}")
        self._show_notices()
        self._refresh_link()

    def _show_notices(self) -> None:
        self.notice.value = _box(_NOTICE_STYLE, "Notices", self.notices) if self.notices else ""

    def state(self) -> LabState:
        """The open tab and its current σ, ε and model (those it has)."""
        panel = self.panels.get(self.current)

        def value(attribute: str):
            control = getattr(panel, attribute, None)
            return control.value if isinstance(control, widgets.ValueWidget) else None

        return LabState(panel=self.current, sigma=value("sigma"), eps=value("eps"), model=value("model"))

    def link_query(self) -> str:
        return format_query(self.state())

    def _refresh_link(self, change=None) -> None:
        query = html.escape(self.link_query(), quote=True)
        self.link.value = (f"Link to this view: <a href='?{query}' target='_blank' rel='noopener'>?{query}</a> "
                           "<span style='color:#777'>(right-click, copy link)</span>")

    # ---- from a visitor's URL ----------------------------------------------------------------------------------
    @classmethod
    def from_query(cls, query: str | None = None, **kwargs) -> Lab:
        """The lab opened as the page's query says: `query`, else $QUERY_STRING (set by Voilà for each visitor).

        With Voilà's preheated kernels (--preheat_kernel=True) the notebook runs before the visitor arrives: the
        data and models load, the first tab's panel is built with its defaults and every panel's module imported,
        then `voila.utils.get_query_string()` waits for the visitor's query, and what is left for the visitor is to
        open the view it names (a slider set, or another tab built). A class arriving at once then waits for
        little: the work is done while the pool fills, before they come.
        """
        if query is None and os.environ.get("VOILA_PREHEAT") == "True":
            from voila.utils import get_query_string

            lab = cls(LabState(), **kwargs)
            warm_up()
            lab.open_query(get_query_string() or "")
            return lab
        return cls(query if query is not None else os.environ.get("QUERY_STRING", ""), **kwargs)


def warm_up() -> None:
    """Import every panel's module and switch the charts to offline mode: the seconds a first panel costs."""
    from . import _charts

    for spec in PANEL_SPECS.values():
        try:
            importlib.import_module(spec.module)
        except Exception:  # the panel's tab will show the error when it is opened
            pass
    _charts.enable_offline()
