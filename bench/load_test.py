"""Load test of the lab on localhost: how many visitors at once keep the censoring σ slider under 1 s?

    .venv/bin/python bench/load_test.py                       # N = 1, 2, 4, 8; table on stdout, JSON in bench/results/
    .venv/bin/python bench/load_test.py --visitors 1 2 --presses 5 --out /tmp/load.json

One Voilà server (apps/noiselab.ipynb with apps/voila.json, as `make demo` serves it) and one Chromium; for each
N, N browser contexts (N visitors, N kernels) open the lab at once, then each presses the right arrow on the
censoring explorer's σ slider handle `--presses` times, all visitors together, a press every `--interval` s.

Measured, per N:
- load: from the page request to the censoring chart drawn (each visitor's own kernel starts, imports torch,
  loads the data and builds the panel);
- response: from the key press (a keydown listener in the page) to the chart's next redraw (Vega draws on a
  canvas: every 2D-context draw call notes its time; an SVG chart is watched with a MutationObserver);
- kernel memory: of each kernel process the server started, once the pages are open (psutil): RSS, which
  counts shared libraries in full, and USS/PSS, what a visitor really adds.

The result is the largest N whose p95 response stays under 1 s, with every press answered, on this machine. A
press not answered within --timeout counts as a response of that length, and the visitor's page is saved as a
screenshot beside the JSON (what did the visitor see?). Visitors' contexts are closed
between rounds and the server's kernels are waited for (Voilà shuts a kernel down when its page closes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from browser_support import CHROMIUM, CHROMIUM_ARGS, start_voila  # noqa: E402

RESPONSE_LIMIT_S = 1.0
LOAD_TIMEOUT_MS = 300_000

# Installed before any page script: notes the time of every canvas draw and of every change in a Vega SVG.
DRAW_PROBE = """
(() => {
  window.__lastDraw = 0;
  const note = () => { window.__lastDraw = performance.now(); };
  for (const name of ['clearRect', 'fillRect', 'drawImage', 'fill', 'stroke', 'fillText']) {
    const original = CanvasRenderingContext2D.prototype[name];
    CanvasRenderingContext2D.prototype[name] = function (...args) { note(); return original.apply(this, args); };
  }
  new MutationObserver(records => {
    if (records.some(r => r.target.closest && r.target.closest('.vega-embed svg'))) note();
  }).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
  window.__armPress = handle => {
    window.__pressedAt = null;
    handle.addEventListener('keydown', () => { window.__pressedAt = performance.now(); }, {once: true, capture: true});
  };
})();
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def open_visitor(browser, url: str) -> tuple[object, object, float]:
    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
    await context.add_init_script(DRAW_PROBE)
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text[:300]) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)[:300]))
    page.__dict__["_noiselab_errors"] = errors
    start = time.perf_counter()
    await page.goto(url, timeout=LOAD_TIMEOUT_MS)
    panel = page.locator(".noiselab-page-censoring")
    await panel.locator(".vega-embed").first.wait_for(state="visible", timeout=LOAD_TIMEOUT_MS)
    await page.wait_for_function("window.__lastDraw > 0", timeout=LOAD_TIMEOUT_MS)
    return context, page, time.perf_counter() - start


SIGMA_SLIDER = ".noiselab-page-censoring .widget-slider"
# anywidget gives a widget's JavaScript 2 s to initialize; past that the chart is drawn but never updated again
ANYWIDGET_TIMEOUT = "[anywidget] Failed to initialize model"


async def press_and_time(page, timeout_s: float) -> float | None:
    """Seconds from the σ handle's keydown to the chart's next draw; None if no draw came within timeout_s."""
    handle = page.locator(SIGMA_SLIDER, has_text="σ").locator(".noUi-handle").first
    await handle.evaluate("h => window.__armPress(h)")
    await handle.press("ArrowRight")
    try:
        await page.wait_for_function("window.__pressedAt !== null && window.__lastDraw > window.__pressedAt",
                                     timeout=timeout_s * 1000, polling=10)
    except Exception:
        return None
    return await page.evaluate("(window.__lastDraw - window.__pressedAt) / 1000")


async def visitor_presses(page, presses: int, interval: float, timeout_s: float, name: str,
                          folder: Path) -> dict:
    responses, missed = [], 0
    readout = page.locator(SIGMA_SLIDER, has_text="σ").locator(".widget-readout").first
    first_value = await readout.inner_text()
    for _ in range(presses):
        began = time.perf_counter()
        response = await press_and_time(page, timeout_s)
        if response is None:
            missed += 1
        else:
            responses.append(response)
        await asyncio.sleep(max(0.0, interval - (time.perf_counter() - began)))
    errors = page.__dict__.get("_noiselab_errors", [])
    result = {"responses": responses, "missed": missed, "sigma_readout": [first_value, await readout.inner_text()],
              "chart_init_failed": any(ANYWIDGET_TIMEOUT in error for error in errors),
              "console_errors": sorted(set(errors))}
    if missed:  # what the visitor saw: a dead widget connection, or a slider that did not move?
        shot = folder / f"missed-{name}.png"
        await page.screenshot(path=str(shot), full_page=True)
        result["screenshot"] = str(shot)
    return result


def kernel_memory_mb(server) -> list[dict]:
    """Per kernel: RSS (counts the shared libraries, torch's ~0.4 GB among them, in full), USS (its own pages,
    freed when it ends) and PSS (its own plus its share of the shared ones: sums to the machine's total)."""
    import psutil

    sizes = []
    for process in server.kernels():
        try:
            info = process.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        sizes.append({"rss": info.rss / 2**20, "uss": info.uss / 2**20, "pss": getattr(info, "pss", 0) / 2**20})
    return sizes


async def wait_for_kernels(server, count: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = len(server.kernels())
        if alive <= count:
            return alive
        await asyncio.sleep(0.5)
    return len(server.kernels())


def used(process) -> float:
    """A process's CPU seconds so far (user + system); 0 once it has ended."""
    import psutil

    try:
        times = process.cpu_times()
        return times.user + times.system
    except psutil.Error:
        return 0.0


def cpu_seconds(server) -> dict:
    """CPU seconds (user + system) so far of the server, its kernels and every Chromium process on the machine.
    A kernel or a browser process that ends between two readings takes its seconds with it: a lower bound."""
    import psutil

    totals = {"server": used(psutil.Process(server.process.pid)), "kernels": sum(map(used, server.kernels())),
              "browser": 0.0}
    for process in psutil.process_iter(["name"]):
        if "chrom" in (process.info["name"] or ""):
            totals["browser"] += used(process)
    return totals


async def wait_for_pool(server, size: int, timeout: float = 900.0, quiet_s: float = 5.0) -> float:
    """Seconds until `size` kernels are up and have been quiet for `quiet_s` (under 5% of one core all together): a
    preheated pool that has run the lab up to the visitor's query, as before a class arrives."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        kernels = server.kernels()
        if len(kernels) >= size:
            busy = sum(map(used, kernels))
            await asyncio.sleep(quiet_s)
            if len(server.kernels()) >= size and sum(map(used, kernels)) - busy < 0.05 * quiet_s:
                return time.monotonic() - start
        else:
            await asyncio.sleep(1.0)
    raise TimeoutError(f"the pool of {size} kernels was not ready within {timeout:.0f} s")


async def round_of(browser, server, visitors: int, presses: int, interval: float, timeout_s: float,
                   folder: Path) -> dict:
    before = cpu_seconds(server)
    opened = await asyncio.gather(*(open_visitor(browser, server.url) for _ in range(visitors)))
    loads = [seconds for _, _, seconds in opened]
    after = cpu_seconds(server)
    load_cpu = {who: round(after[who] - before.get(who, 0.0), 1) for who in after}
    memory = kernel_memory_mb(server)
    await asyncio.sleep(1.0)  # let the last loads' work settle before timing the slider
    per_visitor = await asyncio.gather(*(visitor_presses(page, presses, interval, timeout_s,
                                                         f"N{visitors}-visitor{index}", folder)
                                         for index, (_, page, _) in enumerate(opened)))
    responses = [r for visitor in per_visitor for r in visitor["responses"]]
    missed = sum(visitor["missed"] for visitor in per_visitor)
    # a press with no redraw within timeout_s counts as a response of timeout_s in the percentiles
    timed = responses + [timeout_s] * missed
    initialized = [r for visitor in per_visitor if not visitor["chart_init_failed"] for r in visitor["responses"]]
    # leaving the page fires its beforeunload, on which Voilà's page asks the server to shut its kernel down
    await asyncio.gather(*(page.goto("about:blank") for _, page, _ in opened))
    for context, _, _ in opened:
        await context.close()
    left = await wait_for_kernels(server, 0)
    return {
        "visitors": visitors,
        "load_s": {"p50": statistics.median(loads), "p95": percentile(loads, 0.95), "max": max(loads)},
        # CPU seconds spent while the pages opened, by who spent them (the browser shares this machine's cores)
        "load_cpu_s": load_cpu,
        "response_s": {"p50": percentile(timed, 0.5), "p95": percentile(timed, 0.95), "max": max(timed),
                       "n": len(timed), "missed": missed},
        # the same over the visitors whose chart initialized: what the server side alone delivers
        "response_initialized_s": {"p50": percentile(initialized, 0.5), "p95": percentile(initialized, 0.95),
                                   "n": len(initialized)},
        "charts_failed_to_initialize": sum(visitor["chart_init_failed"] for visitor in per_visitor),
        "kernel_memory_mb": {
            "kernels": len(memory),
            **{f"{kind}_mean": statistics.fmean(m[kind] for m in memory) if memory else None
               for kind in ("rss", "uss", "pss")},
            "pss_total": sum(m["pss"] for m in memory),
        },
        "kernels_left_after_close": left,
        "visitors_detail": [{**{k: v for k, v in visitor.items() if k != "responses"},
                             "responses_s": [round(r, 4) for r in visitor["responses"]]} for visitor in per_visitor],
    }


def versions() -> dict:
    from importlib.metadata import version

    names = ("torch", "voila", "ipywidgets", "ipykernel", "altair", "anywidget", "playwright", "jupyter_server")
    found = {name: version(name) for name in names}
    found["python"] = platform.python_version()
    return found


def machine() -> dict:
    import psutil

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total
                                                                                        / 2**30, 1),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


async def main_async(args) -> dict:
    from playwright.async_api import async_playwright

    log_dir = Path(args.out).parent / "load_test-artifacts"  # the server's log, screenshots of missed presses
    log_dir.mkdir(parents=True, exist_ok=True)
    # bounded as noiselab-app bounds it (--max-visitors: default, room for every round and the pool at once)
    bound = args.max_visitors or sum(args.visitors) + args.pool_size
    server = start_voila(log_dir, max_visitors=bound, pool_size=args.pool_size, fill_delay=args.fill_delay)
    rounds = []
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            chromium_version = browser.version
            for visitors in args.visitors:
                if args.pool_size:
                    print(f"waiting for the pool of {args.pool_size} preheated kernels…", flush=True)
                    ready_s = await wait_for_pool(server, args.pool_size)
                    print(f"    ready after {ready_s:.0f} s", flush=True)
                print(f"N = {visitors}: opening {visitors} page(s)…", flush=True)
                result = await round_of(browser, server, visitors, args.presses, args.interval, args.timeout,
                                        log_dir)
                rounds.append(result)
                print(f"    load p50 {result['load_s']['p50']:.1f} s, response p50 "
                      f"{result['response_s']['p50'] * 1000:.0f} ms p95 {result['response_s']['p95'] * 1000:.0f} ms, "
                      f"{result['response_s']['missed']} presses without a redraw", flush=True)
            await browser.close()
    finally:
        server.stop()
    passing = [r["visitors"] for r in rounds
               if r["response_s"]["p95"] < RESPONSE_LIMIT_S and r["response_s"]["missed"] == 0]
    return {
        "config": {"visitors": args.visitors, "presses": args.presses, "interval_s": args.interval,
                   "response_limit_s": RESPONSE_LIMIT_S, "press_timeout_s": args.timeout,
                   "voila_settings": "apps/voila.json", "pool_size": args.pool_size, "max_visitors": bound,
                   "fill_delay_s": args.fill_delay,
                   "slider": "censoring explorer σ, ArrowRight on the handle"},
        "versions": {**versions(), "chromium": chromium_version},
        "machine": machine(),
        "rounds": rounds,
        "largest_n_under_limit": max(passing) if passing else 0,
    }


def print_table(report: dict) -> None:
    print(f"\n{'N':>3} {'load p50':>9} {'load p95':>9} {'load max':>9} {'resp p50':>9} {'resp p95':>9} {'missed':>7} "
          f"{'dead charts':>11} {'p95 live':>9} {'kernel RSS':>11} {'kernel USS':>11} {'PSS total':>10}")
    for r in report["rounds"]:
        memory, live = r["kernel_memory_mb"], r["response_initialized_s"]["p95"]
        print(f"{r['visitors']:>3} {r['load_s']['p50']:>8.1f}s {r['load_s'].get('p95', float('nan')):>8.1f}s "
              f"{r['load_s']['max']:>8.1f}s "
              f"{r['response_s']['p50'] * 1000:>7.0f}ms {r['response_s']['p95'] * 1000:>7.0f}ms "
              f"{r['response_s']['missed']:>7} {r['charts_failed_to_initialize']:>11} {live * 1000:>7.0f}ms "
              f"{memory['rss_mean'] or 0:>8.0f} MB {memory['uss_mean'] or 0:>8.0f} MB {memory['pss_total']:>7.0f} MB")
    print("missed: presses with no redraw within the timeout (counted as the timeout in the percentiles); dead "
          "charts: visitors whose chart never initialized (anywidget's 2 s limit); p95 live: over the others")
    print(f"\nlargest N with p95 slider response under {RESPONSE_LIMIT_S:g} s: {report['largest_n_under_limit']} "
          f"({report['machine']['cpus']} CPUs, load average at start {report['machine']['load_average_at_start']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visitors", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--presses", type=int, default=10, help="key presses per visitor per round")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between one visitor's presses")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds a press may wait for its redraw")
    parser.add_argument("--pool-size", type=int, default=0,
                        help="kernels preheated before each round, as noiselab-app --pool-size (default 0)")
    parser.add_argument("--fill-delay", type=float, default=None,
                        help="seconds before Voilà refills the pool after a visitor took a kernel (Voilà: 1)")
    parser.add_argument("--max-visitors", type=int, default=None,
                        help="the server's bound on kernels (default: every round's visitors and the pool at once)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "load_test.json"))
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.visitors) or args.presses < 1 or args.interval < 0 or args.pool_size < 0 \
            or (args.max_visitors is not None and args.max_visitors < max(max(args.visitors), args.pool_size, 1)):
        parser.error("visitors and presses must be >= 1, interval >= 0, pool size >= 0, and max-visitors at least "
                     "the largest round and the pool")
    report = asyncio.run(main_async(args))
    print_table(report)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
