"""Altair charts inside widgets: one place that makes a JupyterChart, offline, and updates its parameters.

Every panel shows its Altair charts through `jupyter_chart(chart)`, which switches JupyterChart to offline mode
once (Vega's JavaScript bundled by vl-convert instead of fetched from a CDN, so the lab works without internet)
and wraps the chart. `set_params(jchart, {...})` assigns several parameters with one message to the browser.

Parameters set from Python survive the chart being (re-)drawn. JupyterChart's JavaScript, each time it draws a
view (the first display, a second display of the same chart, a reload), reads the parameters' values from the
spec and sends them to the kernel, overwriting what Python has set since the chart was built: a panel that sets
its data (or the app that sets σ from a link) before it is displayed would show the chart's initial data. The
JupyterChart made here remembers the values Python set last and sends them back when the browser reports others.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import altair as alt

from .._files import atomic_write, cache_folder

_offline_lock = threading.Lock()
_offline = False


def enable_offline() -> None:
    """alt.JupyterChart.enable_offline(), once per process. Bundling Vega's JavaScript takes vl-convert about 1.3 s
    of CPU (half of the lab's first panel in a new kernel, on the 2-core machine), so the bundle is kept in the
    user's cache folder (bundle_cache_path) and read from there by the next kernel."""
    global _offline
    with _offline_lock:
        if _offline:
            return
        path = bundle_cache_path()
        cached = _read(path) if path is not None else None
        if cached is not None and hasattr(alt.JupyterChart, "_is_offline"):
            alt.JupyterChart._esm = cached  # what enable_offline() sets, bundled by an earlier process
            alt.JupyterChart._is_offline = True
        else:
            alt.JupyterChart.enable_offline()
            if path is not None and isinstance(getattr(alt.JupyterChart, "_esm", None), str):
                _write(path, alt.JupyterChart._esm)
        _offline = True


def bundle_cache_path() -> Path | None:
    """Where the offline bundle is kept: $XDG_CACHE_HOME/noiselab (~/.cache/noiselab), under a name that changes
    with JupyterChart's JavaScript, altair's and vl-convert's versions and the Vega-Lite version bundled (any of
    them new: bundled anew). None where that cannot be told."""
    try:
        import vl_convert
        from altair.jupyter.jupyter_chart import load_js_src
        from altair.utils._importers import vl_version_for_vl_convert

        key = "\n".join([alt.__version__, vl_convert.__version__, vl_version_for_vl_convert(), load_js_src()])
        root = cache_folder()
    except Exception:  # another altair's layout, or no home folder: bundle every time, as altair does
        return None
    return root / f"vega-bundle-{hashlib.sha256(key.encode()).hexdigest()[:20]}.js"


def _read(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # none yet, or unreadable: bundle it
        return None
    return text or None


def _write(path: Path, text: str) -> None:
    """Written whole or not at all (noiselab._files.atomic_write: kernels starting at once each write their own
    temporary file, then rename it)."""
    try:
        atomic_write(path, lambda stream: stream.write(text.encode("utf-8")), "Vega's offline bundle")
    except OSError:  # a read-only home, a file where the folder would be: the next process bundles again
        pass


class LiveJupyterChart(alt.JupyterChart):
    """An alt.JupyterChart whose parameter values set from Python win over those a newly drawn view reports."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Registered after JupyterChart's own _params observer (which copies _params into .params), so it runs
        # after it and has the last word.
        self._python_params: dict = dict(self._params)
        self.observe(self._keep_python_params, names="_params")

    def _keep_python_params(self, change: dict) -> None:
        if "_params" not in self._property_lock:  # set in the kernel (a panel's update, a new chart): remember it
            self._python_params = dict(change["new"])
            return
        # From the browser: a new view's initial values, or an echo of ours. Put back what differs from ours.
        stale = {name: value for name, value in self._python_params.items()
                 if name in change["new"] and change["new"][name] != value}
        if stale:
            with self.hold_sync():
                for name, value in stale.items():
                    setattr(self.params, name, value)


def jupyter_chart(chart: alt.TopLevelMixin, **kwargs) -> alt.JupyterChart:
    """A LiveJupyterChart of `chart` that works offline; kwargs go to alt.JupyterChart (e.g. embed_options)."""
    enable_offline()
    # No "open in the online editor" menu in the lab. Canvas, not SVG: in one page, SVG views share one id space
    # for their gradients, and a second chart's colour legend showed the first chart's gradient (seen in Chromium
    # with the propagation and loss-surface panels side by side); canvas also draws thousands of cells faster.
    kwargs.setdefault("embed_options", {"actions": False, "renderer": "canvas"})
    return LiveJupyterChart(chart, **kwargs)


def set_params(jchart: alt.JupyterChart, values: dict) -> None:
    """Assign several chart parameters; the browser gets them in one message and redraws once, in place."""
    # Each assignment rewrites the whole _params dict; hold_sync sends only the last state.
    with jchart.hold_sync():
        for name, value in values.items():
            setattr(jchart.params, name, value)
