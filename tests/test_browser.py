"""The lab in a real browser: Voilà serving apps/noiselab.ipynb, Debian's Chromium driven by Playwright.

One Voilà server for the module (each page is a visitor with its own kernel); screenshots of every panel go to
tests/artifacts/ (and to docs/screenshots/ with NOISELAB_SCREENSHOTS=1). Timings are printed (pytest -s) and
written to tests/artifacts/browser-timings.json.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from browser_support import ARTIFACTS, launch_chromium, require_browser, save_screenshot, start_voila

# one pytest-xdist worker runs this module (make test hands out whole files), with one Voilà server for all its tests
pytestmark = pytest.mark.slow

LOAD_TIMEOUT_MS = 120_000   # a fresh kernel imports torch and builds the first panel: ~10 s, more on a busy machine
RESPONSE_LIMIT_S = 1.0      # slider -> chart
TABS = {"censoring": "Censoring", "propagation": "Propagation", "training": "Training", "attack": "Attack",
        "surface": "Loss surface", "adaptive": "Adaptive attack"}
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def playwright_api():
    sync_api = require_browser()
    with sync_api.sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright_api):
    browser = launch_chromium(playwright_api)
    yield browser
    browser.close()


@pytest.fixture(scope="module", autouse=True)
def timings():
    yield TIMINGS
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "browser-timings.json").write_text(json.dumps(TIMINGS, indent=2))


@pytest.fixture(scope="module")
def voila(tmp_path_factory):
    server = start_voila(tmp_path_factory.mktemp("voila"))
    yield server
    server.stop()


def open_lab(browser, voila, query: str = "", panel: str | None = None):
    """A new visitor's page on the lab, once the open panel has built; records the load time."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    start = time.perf_counter()
    page.goto(voila.url + query, timeout=LOAD_TIMEOUT_MS)
    page.wait_for_selector(".noiselab-tabs .lm-TabBar-tab", timeout=LOAD_TIMEOUT_MS)
    if panel is not None:
        wait_for_panel(page, panel)
    TIMINGS.setdefault("load_s", []).append(round(time.perf_counter() - start, 2))
    return page


def wait_for_panel(page, name: str, timeout: float = LOAD_TIMEOUT_MS):
    """The panel's page once built (its placeholder replaced by the panel or by an error box)."""
    locator = page.locator(f".noiselab-page-{name}")
    locator.locator(":scope > .lm-Widget").first.wait_for(state="visible", timeout=timeout)
    page.wait_for_function(
        "name => { const p = document.querySelector(`.noiselab-page-${name}`);"
        " return p && !p.innerText.includes('panel…'); }", arg=name, timeout=timeout)
    errors = locator.locator(".noiselab-panel-error")
    assert errors.count() == 0, errors.first.inner_text()
    return locator


def open_tab(page, title: str, name: str):
    page.locator(".noiselab-tabs > .widget-tab-bar").get_by_role("tab", name=title, exact=True).click()
    return wait_for_panel(page, name)


def chart_signature(locator) -> str:
    """What a chart shows: its SVG markup or canvas pixels, for every Vega view inside `locator`."""
    return locator.evaluate(
        "root => Array.from(root.querySelectorAll('.vega-embed svg, .vega-embed canvas')).map("
        "  el => el.tagName === 'CANVAS' ? el.toDataURL() : el.outerHTML).join('|')")


def wait_for_chart(locator, timeout: float = 60_000) -> str:
    locator.locator(".vega-embed").first.wait_for(state="visible", timeout=timeout)
    return chart_signature(locator)


def wait_for_new_chart(page, locator, before: str, timeout_s: float) -> float:
    """Seconds until the chart inside `locator` differs from `before`; fails after `timeout_s`."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if chart_signature(locator) != before:
            return time.perf_counter() - start
        page.wait_for_timeout(20)
    raise AssertionError(f"the chart did not change within {timeout_s} s")


def link_query(page) -> str:
    return page.locator(".noiselab-link a").get_attribute("href")


def wait_for_link(page, prefix: str, timeout: float = 30_000) -> str:
    """The share link once it starts with `prefix` (it follows the open tab a moment after the panel builds)."""
    page.wait_for_function(
        "prefix => { const a = document.querySelector('.noiselab-link a');"
        " return a && (a.getAttribute('href') || '').startsWith(prefix); }", arg=prefix, timeout=timeout)
    return link_query(page)


# ---- the tests -----------------------------------------------------------------------------------------------
def test_app_loads_and_every_tab_builds_its_panel(browser, voila):
    page = open_lab(browser, voila, panel="censoring")
    titles = page.locator(".noiselab-tabs > .widget-tab-bar .lm-TabBar-tab").all_inner_texts()
    assert titles == list(TABS.values())
    assert wait_for_link(page, "?panel=censoring").startswith("?panel=censoring")
    assert page.locator(".noiselab-notice").inner_text().strip() == "", "no notice on a plain visit"
    # no source code and no traceback in the page (Voilà's defaults, kept in apps/voila.json)
    content = page.content()
    assert "from noiselab" not in content and "Traceback" not in content
    for name, title in TABS.items():
        start = time.perf_counter()
        panel = open_tab(page, title, name)
        TIMINGS.setdefault("tab_build_s", {})[name] = round(time.perf_counter() - start, 2)
        assert wait_for_link(page, f"?panel={name}").startswith(f"?panel={name}")
        page.wait_for_timeout(1500)  # let the first chart draw
        save_screenshot(page, f"lab-{name}", f".noiselab-page-{name}")
        assert panel.is_visible()
    page.goto("about:blank")  # leaving shuts the kernel down (apps/voila.json lets Voilà's page ask for it)
    page.context.close()


def test_censoring_link_notices_slider_response_and_typed_sigma(browser, voila):
    # a link with a negative σ and a non-numeric ε: the lab opens anyway, saying what it ignored
    page = open_lab(browser, voila, query="?panel=censoring&sigma=-1&eps=abc", panel="censoring")
    notice = page.locator(".noiselab-notice").inner_text()
    assert "σ must be within [0, 3]" in notice and "eps='abc' ignored" in notice, notice

    # each press of → on the σ handle redraws the chart within a second
    panel = page.locator(".noiselab-page-censoring")
    before = wait_for_chart(panel)
    handle = panel.locator(".widget-slider", has_text="σ").locator(".noUi-handle").first
    handle.focus()
    link_before = link_query(page)
    responses = []
    for _ in range(3):
        handle.press("ArrowRight")
        responses.append(wait_for_new_chart(page, panel, before, timeout_s=5))
        before = chart_signature(panel)
        page.wait_for_timeout(200)
    TIMINGS["censoring_slider_response_s"] = [round(r, 3) for r in responses]
    print(f"censoring σ slider -> chart: {', '.join(f'{r * 1000:.0f} ms' for r in responses)}")
    assert max(responses) < RESPONSE_LIMIT_S, responses
    page.wait_for_function("before => document.querySelector('.noiselab-link a').getAttribute('href') !== before",
                           arg=link_before, timeout=5_000)
    assert re.search(r"sigma=1\.15", link_query(page)), link_query(page)  # 1.0 + 3 steps of 0.05

    # a negative σ typed into the explorer's box: a visible message, σ unchanged
    typed = panel.get_by_label("type σ")
    typed.fill("-0.5")
    typed.press("Enter")
    panel.locator(".widget-html", has_text="σ must be").wait_for(state="visible", timeout=10_000)
    assert "sigma=1.15" in link_query(page)
    save_screenshot(page, "lab-censoring-messages", ".noiselab-lab")
    page.goto("about:blank")
    page.context.close()


def test_training_negative_sigma_tiny_run_and_stop(browser, voila):
    from playwright.sync_api import expect

    page = open_lab(browser, voila, query="?panel=training", panel="training")
    panel = page.locator(".noiselab-page-training")
    message = panel.locator(".widget-html", has_text="Cannot train")

    # a negative σ typed in gives a visible message, and a valid one clears it
    sigma = panel.get_by_label("σ (noise std)")
    sigma.fill("-0.5")
    sigma.press("Enter")
    message.wait_for(state="visible", timeout=10_000)
    assert "sigma" in message.inner_text()
    save_screenshot(page, "lab-training-negative-sigma", ".noiselab-page-training")
    sigma.fill("0.5")
    sigma.press("Enter")
    message.wait_for(state="detached", timeout=10_000)

    # a tiny run through the UI: 256 examples, 1 epoch
    for label, value in (("train limit", "256"), ("epochs", "1")):
        field = panel.get_by_label(label)
        field.fill(value)
        field.press("Enter")
    start = time.perf_counter()
    panel.get_by_role("button", name="Train").click()
    status = panel.locator(".widget-html", has_text="test accuracy")
    status.wait_for(state="visible", timeout=120_000)
    TIMINGS["tiny_training_s"] = round(time.perf_counter() - start, 2)
    accuracy = float(re.search(r"test accuracy (\d\.\d+)", status.inner_text()).group(1))
    assert 0 <= accuracy <= 1
    width = panel.locator(".progress-bar").first.evaluate("el => el.style.width")
    assert width == "100%", width
    save_screenshot(page, "lab-training", ".noiselab-page-training")

    # Stop ends a longer run (all 10,000 examples, 20 epochs) within moments
    for label, value in (("train limit", "0"), ("epochs", "20")):
        field = panel.get_by_label(label)
        field.fill(value)
        field.press("Enter")
    panel.get_by_role("button", name="Train").click()
    stop = panel.get_by_role("button", name="Stop")
    expect(stop).to_be_enabled(timeout=30_000)
    page.wait_for_timeout(1500)
    stop.click()
    stopped = panel.locator(".widget-html", has_text="stopped after")
    stopped.wait_for(state="visible", timeout=30_000)
    steps = int(re.search(r"stopped after (\d+) of", stopped.inner_text()).group(1))
    assert steps < 79 * 20
    # the outcome is announced after the panel is usable again: Train is enabled by then
    expect(panel.get_by_role("button", name="Train")).to_be_enabled(timeout=2_000)
    page.goto("about:blank")
    page.context.close()


def test_tutorial_notebook_runs_in_jupyterlab(browser, tmp_path):
    """JupyterLab (no token, settings in a temporary folder) opens a tutorial; Run All shows a slider and a chart."""
    import shutil

    from browser_support import REPO, start_jupyterlab

    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / "01_censoring.ipynb", root)  # a copy: JupyterLab autosaves what it runs
    server = start_jupyterlab(root, tmp_path)
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        start = time.perf_counter()
        page.goto(server.url + "lab/tree/01_censoring.ipynb", timeout=LOAD_TIMEOUT_MS)
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(state="visible", timeout=LOAD_TIMEOUT_MS)
        # the kernel is up once the status bar says so; Run All before that would only queue the cells
        page.locator(".jp-StatusBar-Widget", has_text="Idle").first.wait_for(state="visible",
                                                                            timeout=LOAD_TIMEOUT_MS)
        page.locator(".jp-Notebook .jp-Cell").first.click()
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        notebook = page.locator(".jp-Notebook")
        notebook.locator(".widget-slider").first.wait_for(state="visible", timeout=LOAD_TIMEOUT_MS)
        notebook.locator(".vega-embed canvas, .vega-embed svg").first.wait_for(state="visible",
                                                                                timeout=LOAD_TIMEOUT_MS)
        TIMINGS["jupyterlab_run_all_s"] = round(time.perf_counter() - start, 2)
        assert notebook.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() \
            == 0 or "Traceback" not in notebook.inner_text()
        save_screenshot(page, "jupyterlab-01-censoring")
        context.close()
    finally:
        server.stop()


def test_link_opens_the_attack_panel_at_that_eps_and_the_attack_draws_a_curve(browser, voila):
    from playwright.sync_api import expect

    page = open_lab(browser, voila, query="?panel=attack&eps=0.2", panel="attack")
    panel = page.locator(".noiselab-page-attack")
    assert page.locator(".noiselab-tabs > .widget-tab-bar .lm-mod-current").inner_text() == "Attack"
    eps = panel.locator(".widget-slider", has_text="ε")
    expect(eps.locator(".widget-readout")).to_have_text("0.200")
    assert link_query(page).startswith("?panel=attack&eps=0.2")
    assert page.locator(".noiselab-notice").inner_text().strip() == ""
    # the answer before anything is attacked: the committed full-scale curves, drawn offline
    expect(panel.get_by_text("What the full-scale run found")).to_be_visible()
    verdict_chart = panel.locator(".vega-embed").first
    expect(verdict_chart.locator("canvas")).to_be_visible(timeout=30_000)
    assert "cannot be read" not in panel.inner_text() and "is missing" not in panel.inner_text()

    # a small sweep through the UI: 10 examples, FGSM, no masking checks, the models the lab opened with
    options = panel.locator("select[multiple] option")
    assert options.count() >= 1, "the lab opens with starter models to attack"
    attack = panel.get_by_label("attack", exact=True)
    labels = attack.evaluate("el => Array.from(el.options).map(o => o.text.replace(/\u00a0/g, ' '))")
    assert labels[attack.evaluate("el => el.selectedIndex")] == "strong suite"  # the default
    attack.select_option(index=labels.index("fgsm only (light)"))
    examples = panel.get_by_label("test examples", exact=True)
    examples.fill("10")
    examples.press("Enter")
    checks = panel.get_by_label("gradient-masking checks")
    if checks.is_checked():
        checks.uncheck()
    before = wait_for_chart(panel)
    start = time.perf_counter()
    panel.get_by_role("button", name="Run attacks").click()
    wait_for_new_chart(page, panel, before, timeout_s=120)
    expect(panel.get_by_role("button", name="Run attacks")).to_be_enabled(timeout=120_000)
    TIMINGS["attack_sweep_s"] = round(time.perf_counter() - start, 2)
    assert "failed" not in panel.inner_text().lower()
    save_screenshot(page, "lab-attack-curve", ".noiselab-page-attack")
    page.goto("about:blank")
    page.context.close()



def test_closing_the_page_mid_training_leaves_the_server_serving(browser, voila):
    page = open_lab(browser, voila, query="?panel=training", panel="training")
    panel = page.locator(".noiselab-page-training")
    field = panel.get_by_label("epochs")
    field.fill("20")
    field.press("Enter")
    panel.get_by_role("button", name="Train").click()
    panel.get_by_role("button", name="Stop").wait_for(state="visible", timeout=30_000)
    page.wait_for_timeout(1000)
    page.context.close()  # the visitor leaves while the worker thread trains

    # the next visitor gets a working lab from the same server, and can train
    page = open_lab(browser, voila, query="?panel=training", panel="training")
    panel = page.locator(".noiselab-page-training")
    for label, value in (("train limit", "128"), ("epochs", "1")):
        field = panel.get_by_label(label)
        field.fill(value)
        field.press("Enter")
    panel.get_by_role("button", name="Train").click()
    panel.locator(".widget-html", has_text="test accuracy").wait_for(state="visible", timeout=120_000)
    assert voila.process.poll() is None
    page.context.close()
