"""The lab's shareable state: a URL query string <-> {panel, sigma, eps, model}, validated. Pure: no widgets here.

    >>> state, notices = parse_query("?panel=attack&eps=0.2", models=["vanilla"])
    >>> state
    LabState(panel='attack', sigma=None, eps=0.2, model=None)
    >>> format_query(state)
    'panel=attack&eps=0.2'

The query comes from a visitor's URL (Voilà puts it in the kernel's QUERY_STRING), so nothing in it is trusted:
an unknown key, a value that is not a number, a number out of range or a model the lab does not have is left
out of the state, with a notice saying what was ignored and why. Parsing never raises.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode

PANELS = ("censoring", "propagation", "training", "attack", "surface", "adaptive")  # the lab's tabs, in order
SIGMA_RANGE = (0.0, 3.0)   # noise std at the first pre-activation
EPS_RANGE = (0.0, 1.0)     # L-infinity budget on images in [0, 1]
KEYS = ("panel", "sigma", "eps", "model")
MAX_QUERY_LENGTH = 2000    # longer queries are ignored whole: no real link is that long
_SHOWN = 40                # characters of a rejected value repeated in a notice


@dataclass(frozen=True)
class LabState:
    """What a link sets; None leaves the panel's own default."""

    panel: str | None = None
    sigma: float | None = None
    eps: float | None = None
    model: str | None = None


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def _number(key: str, text: str, bounds: tuple[float, float], notices: list[str]) -> float | None:
    symbol = {"sigma": "σ", "eps": "ε"}[key]
    try:
        value = float(text)
    except ValueError:
        notices.append(f"{key}={_shown(text)} ignored: {symbol} must be a number in [{bounds[0]:g}, {bounds[1]:g}]")
        return None
    if not math.isfinite(value) or not bounds[0] <= value <= bounds[1]:
        notices.append(f"{key}={_shown(text)} ignored: {symbol} must be within [{bounds[0]:g}, {bounds[1]:g}]")
        return None
    return value


def parse_query(
    query: str | None, models: Iterable[str] | None = (), panels: Iterable[str] = PANELS
) -> tuple[LabState, list[str]]:
    """The validated state in `query` (with or without a leading '?') and a notice per value ignored.

    `models` are the names a link may pick; `panels` the tab names. A key given twice keeps its last value.
    """
    notices: list[str] = []
    query = (query or "").strip()
    if query.startswith("?"):
        query = query[1:]
    if not query:
        return LabState(), notices
    if len(query) > MAX_QUERY_LENGTH:
        return LabState(), [f"the link's settings ({len(query)} characters) are too long and were ignored"]
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=20)
    except ValueError:
        return LabState(), ["the link's settings could not be read and were ignored"]

    values: dict[str, str] = {}
    for key, text in pairs:
        if key in KEYS:
            values[key] = text.strip()
        else:
            notices.append(f"unknown setting {_shown(key)} ignored; a link may set {', '.join(KEYS)}")

    panels, models = tuple(panels), tuple(models or ())
    panel = values.get("panel")
    if panel is not None and panel not in panels:
        notices.append(f"panel={_shown(panel)} ignored: the panels are {', '.join(panels)}")
        panel = None
    model = values.get("model")
    if model is not None and model not in models:
        known = ", ".join(repr(name) for name in models) or "none yet"
        notices.append(f"model={_shown(model)} ignored: the lab's models are {known}")
        model = None
    sigma = _number("sigma", values["sigma"], SIGMA_RANGE, notices) if "sigma" in values else None
    eps = _number("eps", values["eps"], EPS_RANGE, notices) if "eps" in values else None
    return LabState(panel=panel, sigma=sigma, eps=eps, model=model), notices


def _format_number(value: float) -> str:
    # slider values carry float noise (0.30000000000000004): four decimals are more than any slider step
    return f"{round(float(value), 4):g}"


def format_query(state: LabState) -> str:
    """The query string (without '?') that `parse_query` reads back as `state`; unset fields are left out."""
    pairs = []
    if state.panel is not None:
        pairs.append(("panel", state.panel))
    if state.sigma is not None:
        pairs.append(("sigma", _format_number(state.sigma)))
    if state.eps is not None:
        pairs.append(("eps", _format_number(state.eps)))
    if state.model is not None:
        pairs.append(("model", state.model))
    return urlencode(pairs, quote_via=quote)  # spaces as %20, '=' and 'σ' in model names percent-encoded
