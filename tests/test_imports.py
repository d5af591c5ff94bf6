"""What a process that draws a chart does not pay for at import (noiselab/_imports.py), and what it still gets."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a fresh interpreter importing Altair each: ~6 s

CHECK = """
import sys
import noiselab.charts, jsonschema
print("deferred", "lark" not in sys.modules)
checker = jsonschema.Draft7Validator.FORMAT_CHECKER
print("iri", checker.conforms("http://example.com/ä", "iri"), checker.conforms("http://exa mple.com/", "iri"))
print("loaded", "lark" in sys.modules, type(sys.modules["rfc3987_syntax"]).__name__)
from rfc3987_syntax import is_valid_syntax_iri_reference
print("other", bool(is_valid_syntax_iri_reference("../a?b#c")))
"""


def test_charts_defer_the_iri_parsers_and_jsonschema_still_checks_iris_exactly():
    pytest.importorskip("rfc3987_syntax", reason="the package whose import is deferred is not installed here")
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:4] == ["deferred True", "iri True False", "loaded True module", "other True"]


def test_the_stand_in_steps_aside_where_it_cannot_help():
    code = ("import sys, jsonschema, noiselab._imports as i; "
            "print(i.defer_rfc3987_syntax(), type(sys.modules.get('rfc3987_syntax')).__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() in (["False", "module"], ["False", "NoneType"])  # jsonschema was first: left alone
