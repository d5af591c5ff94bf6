"""Real servers and a real browser for the UI tests: Voilà / JupyterLab subprocesses and Debian's Chromium.

Playwright drives /usr/bin/chromium (its own browser download cannot work here). Missing Playwright or Chromium
fails the tests when $CI is set and skips them, with the reason, elsewhere (as tests/conftest.py does for data).
Teardown stops each server with SIGTERM and then kills whatever of its kernels is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from noiselab.apps_launch import app_dir, free_port, voila_command, wait_until_serving

CHROMIUM = os.environ.get("NOISELAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"       # screenshots of this run (git-ignored)
SCREENSHOTS = REPO / "docs" / "screenshots"    # the README's (committed); refreshed by NOISELAB_SCREENSHOTS=1


def require_browser():
    """The sync Playwright module, or fail (CI) / skip (elsewhere) saying what is missing."""
    problem = None
    try:
        from playwright import sync_api
    except ImportError:
        problem = "the playwright Python package is missing (pip install -e '.[test]')"
    if problem is None and not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        problem = f"{CHROMIUM} is missing: install Debian's chromium (make browser) or set NOISELAB_CHROMIUM"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    return sync_api


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class Server:
    """A server subprocess in its own process group, logging to a file; `url` once it accepts connections."""

    def __init__(self, command: list[str], cwd: Path, port: int, log: Path, env: dict | None = None,
                 timeout: float = 120.0) -> None:
        self.port, self.log_path = port, log
        self.url = f"http://localhost:{port}/"
        self._log = open(log, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(command, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until_serving("localhost", port, self.process, timeout=timeout)
        except Exception:
            self.stop()
            raise RuntimeError(f"{command[:3]} did not start; its log:\n{self.log()}") from None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def descendants(self) -> list:
        """Every process the server started, and theirs, as psutil.Process objects."""
        import psutil

        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.process.pid).children(recursive=True)
        return []

    def kernels(self) -> list:
        """The server's kernels: its children running ipykernel (not a kernel's own helper process, such as the
        `ldconfig` an import runs for a moment, nor a child between fork and exec, nor one exited)."""
        import psutil

        kernels = []
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.process.pid).children():
                with contextlib.suppress(psutil.Error):
                    if any("ipykernel" in part for part in child.cmdline()):
                        kernels.append(child)
        return kernels

    def stop(self) -> None:
        import psutil

        children = self.descendants()  # kernels run in sessions of their own: collect them before the server goes
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # Voilà and Jupyter shut their kernels down on SIGTERM
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        _, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        self._log.close()


def start_voila(log_dir: Path, extra: tuple = (), max_visitors: int = 6, pool_size: int = 0,
                fill_delay: float | None = None) -> Server:
    """`voila apps/noiselab.ipynb --no-browser --port=<free>` with apps/voila.json and the bounded kernel manager
    (a page beyond max_visitors is turned away, a page that never connects loses its kernel), as `make demo`
    serves it; pool_size kernels preheated as `noiselab-app --pool-size` keeps them, replaced after fill_delay."""
    port = free_port()
    command = voila_command(port, max_visitors=max_visitors, pool_size=pool_size, fill_delay=fill_delay, extra=extra)
    return Server(command, cwd=app_dir(), port=port, log=log_dir / "voila.log")


def start_jupyterlab(root: Path, log_dir: Path) -> Server:
    """JupyterLab on `root` with no token, its settings, workspaces and runtime files kept under log_dir."""
    port = free_port()
    settings = log_dir / "jupyter"
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(settings / "config"), JUPYTER_RUNTIME_DIR=str(settings / "run"),
               JUPYTERLAB_SETTINGS_DIR=str(settings / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(settings / "workspaces"))
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--IdentityProvider.token=",
               "--ServerApp.password=", f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly"]
    if os.geteuid() == 0:  # CI containers run as root
        command.append("--allow-root")
    return Server(command, cwd=root, port=port, log=log_dir / "jupyterlab.log", env=env)


def save_screenshot(page, name: str, selector: str | None = None) -> Path:
    """A PNG in tests/artifacts/; also in docs/screenshots/ when NOISELAB_SCREENSHOTS=1 (to refresh the README's)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    target = page.locator(selector).first if selector else page
    target.screenshot(path=str(path))
    if os.environ.get("NOISELAB_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / f"{name}.png")
    return path


def timed(function, *args, **kwargs) -> tuple[object, float]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start
