"""Import-time work that noiselab's processes need not pay for.

Altair imports jsonschema, and jsonschema's format checkers import `rfc3987_syntax` wherever it is installed (it is
wherever Jupyter is: jupyter-events asks for jsonschema[format-nongpl]). rfc3987_syntax 1.1.0 compiles about 35
Earley parsers when it is imported: about 2 s of every process that draws a chart here (a CLI run, a notebook's
kernel, each Voila visitor's kernel), for the "iri" formats that no chart schema uses (jsonschema issues 1428 and
1521; no release of either package defers it yet).

`defer_rfc3987_syntax()`, called before Altair is imported, puts a stand-in under that module's name: its
`is_valid_syntax` (what jsonschema takes from it) imports the real module on its first call, and any other
attribute does the same. Validation of those formats stays exactly the real package's; it is paid for when asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

DEFERRED = "rfc3987_syntax"


class _DeferredModule(types.ModuleType):
    """Stands in for DEFERRED until something other than taking `is_valid_syntax` needs the real module."""

    def __getattr__(self, attribute: str):
        if attribute == "is_valid_syntax":
            def is_valid_syntax(term: str, value: str):
                return _real().is_valid_syntax(term, value)

            return is_valid_syntax
        if attribute.startswith("__"):  # dunder probes (copy, pickle, inspect) must not trigger the import
            raise AttributeError(attribute)
        return getattr(_real(), attribute)


def _real() -> types.ModuleType:
    """The real DEFERRED, imported now (once) in place of the stand-in."""
    module = sys.modules.get(DEFERRED)
    if isinstance(module, _DeferredModule):
        del sys.modules[DEFERRED]
        module = importlib.import_module(DEFERRED)
    return module


def defer_rfc3987_syntax() -> bool:
    """Install the stand-in if it can still help: the package is installed and neither it nor jsonschema's format
    module has been imported yet. Returns whether the stand-in is in place."""
    if DEFERRED in sys.modules:
        return isinstance(sys.modules[DEFERRED], _DeferredModule)
    if "jsonschema._format" in sys.modules or importlib.util.find_spec(DEFERRED) is None:
        return False
    sys.modules[DEFERRED] = _DeferredModule(DEFERRED, "a stand-in that imports the real module on first use "
                                                      "(noiselab._imports)")
    return True
