"""Small pieces every panel shares: the status-text styles, escaped HTML for a message, and muting observers."""

from __future__ import annotations

import contextlib
import html

ERROR = "color:#a61b1b"
NOTE = "color:#555"
OK = "color:#1a7f37"


def html_text(text: str, style: str) -> str:
    """`text` escaped, in a span of `style` (ERROR, NOTE, OK): for an HTML widget's value."""
    return f"<span style='{style}'>{html.escape(text, quote=False)}</span>"


class Mutable:
    """A panel whose own programmatic control changes (new options, a kept value) must not trigger its observers:
    they check `self._muting`, and code that sets controls does so inside `with self._muted():`, so that one change
    of state makes one update, not several."""

    _muting = 0

    @contextlib.contextmanager
    def _muted(self):
        self._muting += 1
        try:
            yield
        finally:
            self._muting -= 1
