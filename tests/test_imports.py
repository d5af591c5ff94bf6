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


def test_the_offline_vega_bundle_is_made_once_and_read_by_the_next_kernel(tmp_path, monkeypatch):
    """enable_offline's bundle (about 1.3 s of a new kernel's first panel) goes to the cache folder; the next
    process (here: this one, its flags reset) reads the very same JavaScript from there without bundling. A cache
    that cannot be read or written is bundled around."""
    import altair as alt
    import vl_convert

    from noiselab.widgets import _charts

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(alt.JupyterChart, "_esm", alt.JupyterChart._esm)  # all three put back after the test
    monkeypatch.setattr(alt.JupyterChart, "_is_offline", False)
    monkeypatch.setattr(_charts, "_offline", False)
    _charts.enable_offline()  # bundled by vl-convert, as in a first kernel
    bundle = alt.JupyterChart._esm
    assert alt.JupyterChart._is_offline and "vega" in bundle and len(bundle) > 100_000
    files = sorted((tmp_path / "cache" / "noiselab").iterdir())
    assert [path.name for path in files] == [_charts.bundle_cache_path().name]  # no temporary left
    assert files[0].name.startswith("vega-bundle-") and files[0].read_text(encoding="utf-8") == bundle

    def bundle_again(*args, **kwargs):
        raise AssertionError("bundled again")

    monkeypatch.setattr(vl_convert, "javascript_bundle", bundle_again)  # the next kernel may only read it
    monkeypatch.setattr(alt.JupyterChart, "_esm", "online")
    monkeypatch.setattr(alt.JupyterChart, "_is_offline", False)
    monkeypatch.setattr(_charts, "_offline", False)
    _charts.enable_offline()
    assert alt.JupyterChart._is_offline and alt.JupyterChart._esm == bundle

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other"))
    assert _charts.bundle_cache_path() == tmp_path / "other" / "noiselab" / files[0].name
    blocker = tmp_path / "file"
    blocker.write_text("")
    _charts._write(blocker / "noiselab" / "bundle.js", "x")  # a folder that cannot be made: no error, nothing kept
    assert _charts._read(blocker / "noiselab" / "bundle.js") is None and _charts._read(blocker) is None  # empty
