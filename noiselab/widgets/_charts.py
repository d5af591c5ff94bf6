"""Altair charts inside widgets: one place that makes a JupyterChart, offline, and updates its parameters.

Every panel shows its Altair charts through `jupyter_chart(chart)`, which switches JupyterChart to offline mode
once (Vega's JavaScript bundled by vl-convert instead of fetched from a CDN, so the lab works without internet)
and wraps the chart. `set_params(jchart, {...})` assigns several parameters with one message to the browser.
"""

from __future__ import annotations

import threading

import altair as alt

_offline_lock = threading.Lock()
_offline = False


def enable_offline() -> None:
    """alt.JupyterChart.enable_offline(), once per process (it bundles Vega's JavaScript: about a second)."""
    global _offline
    with _offline_lock:
        if not _offline:
            alt.JupyterChart.enable_offline()
            _offline = True


def jupyter_chart(chart: alt.TopLevelMixin, **kwargs) -> alt.JupyterChart:
    """A JupyterChart of `chart` that works offline; kwargs go to alt.JupyterChart (e.g. embed_options)."""
    enable_offline()
    kwargs.setdefault("embed_options", {"actions": False})  # no "open in the online editor" menu in the lab
    return alt.JupyterChart(chart, **kwargs)


def set_params(jchart: alt.JupyterChart, values: dict) -> None:
    """Assign several chart parameters; the browser gets them in one message and redraws once, in place."""
    # Each assignment rewrites the whole _params dict; hold_sync sends only the last state.
    with jchart.hold_sync():
        for name, value in values.items():
            setattr(jchart.params, name, value)
