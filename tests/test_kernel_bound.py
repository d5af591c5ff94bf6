"""The bound on visitors' kernels (issue 17): noiselab-app --max-visitors, the lab-is-full page, bad settings."""

import asyncio
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from noiselab.apps_launch import GB, app_dir, default_max_visitors, free_port, main, memory_limit_bytes, voila_command

REPO = Path(__file__).resolve().parents[1]
KERNEL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_the_default_bound_fits_the_memory():
    assert default_max_visitors(int(24 * 2**30)) == 31   # this 24 GiB machine: (25.8 - 0.5) / 0.8
    assert default_max_visitors(int(2 * GB)) == 1        # a Binder of 2 GB: one visitor
    assert default_max_visitors(int(0.3 * GB)) == 1      # never none
    assert default_max_visitors(None) == 4               # memory unknown: a small bound, not none


def test_binders_memory_limit_is_read(monkeypatch):
    monkeypatch.setenv("MEM_LIMIT", str(2 * 10**9))
    assert memory_limit_bytes() == 2 * 10**9
    monkeypatch.setenv("MEM_LIMIT", "")
    assert memory_limit_bytes() > 2 * 10**9  # this machine's own


def test_the_bound_reaches_voila_as_the_bounded_kernel_manager():
    command = voila_command(9999, max_visitors=3)
    assert "--VoilaConfiguration.multi_kernel_manager_class=noiselab.apps_kernels.BoundedKernelManager" in command
    assert "--BoundedKernelManager.max_kernels=3" in command
    assert not any("max_kernels" in part for part in voila_command(9999))  # None: no bound (the test servers')


@pytest.mark.parametrize("args, message", [
    (["--max-visitors", "0"], "at least 1 visitor, got 0"),
    (["--max-visitors", "-2"], "at least 1 visitor, got -2"),
    (["--max-visitors", "many"], "'many' is not an integer"),
    (["--max-visitors", "2", "--pool-size", "3"], "--pool-size 3 is larger than the bound of 2 visitors"),
    (["--fill-delay", "30"], "--fill-delay is the preheated pool's: give --pool-size too"),
    (["--pool-size", "2", "--fill-delay", "-1"], "seconds are >= 0, got -1"),
    (["--pool-size", "2", "--fill-delay", "nan"], "seconds are >= 0, got nan"),
    (["--pool-size", "2", "--fill-delay", "soon"], "'soon' is not a number of seconds"),
])
def test_bad_bounds_are_refused_at_start(args, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--port", str(free_port()), "--no-browser", *args])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_voila_command_names_bad_bounds():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_visitors is an integer >= 1"):
            voila_command(9999, max_visitors=bad)
    with pytest.raises(ValueError, match="pool of 3 preheated kernels does not fit a bound of 2"):
        voila_command(9999, pool_size=3, max_visitors=2)
    assert "--VoilaKernelManager.fill_delay=120" in voila_command(9999, pool_size=2, fill_delay=120.0)
    for pool_size, bad in ((0, 10.0), (2, -1.0), (2, float("nan"))):
        with pytest.raises(ValueError, match="fill_delay is seconds >= 0 for a preheated pool"):
            voila_command(9999, pool_size=pool_size, fill_delay=bad)


def test_the_manager_refuses_a_negative_bound():
    from traitlets import TraitError

    from noiselab.apps_kernels import BoundedKernelManager

    with pytest.raises(TraitError, match="max_kernels is >= 0"):
        BoundedKernelManager(max_kernels=-1)
    for name in ("abandoned_after", "process_end_wait"):
        with pytest.raises(TraitError, match=f"{name} is >= 0 seconds"):
            BoundedKernelManager(**{name: float("nan")})


def test_a_kernel_being_shut_down_counts_until_its_process_has_ended():
    """jupyter_client stops waiting for a killed kernel after 5 s; the bound waits for the process itself."""
    import subprocess
    import sys

    from noiselab.apps_kernels import BoundedKernelManager

    manager = BoundedKernelManager(max_kernels=1, process_end_wait=30.0)
    ending = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    start = time.monotonic()
    asyncio.run(manager._until_ended("k", ending))
    assert ending.poll() == 0 and time.monotonic() - start >= 1.0  # waited for the end, not less
    lasting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        manager.process_end_wait = 0.5
        start = time.monotonic()
        asyncio.run(manager._until_ended("k", lasting))
        assert lasting.poll() is None and time.monotonic() - start < 5  # gave up after process_end_wait
    finally:
        lasting.kill()
        lasting.wait()


class Connection:
    """What a visitor's page does once loaded: a websocket to its kernel (tornado's client, on a thread of its own),
    held until close()."""

    def __init__(self, server_url: str, kernel_id: str):
        from tornado.websocket import websocket_connect

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        url = server_url.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"

        async def connect():
            return await websocket_connect(url)

        self.socket = asyncio.run_coroutine_threadsafe(connect(), self.loop).result(timeout=60)

    def close(self):
        self.loop.call_soon_threadsafe(self.socket.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


def wait_until(condition, seconds: float) -> float:
    """Seconds until condition() held; fails after `seconds`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, f"not within {seconds} s"
        time.sleep(0.5)
    return time.monotonic() - start


def kernel_count(server) -> int:
    """The server's kernel processes."""
    return len(server.kernels())


def alive(server, kernel_id: str) -> bool:
    return visit(f"{server.url}api/kernels/{kernel_id}")[0] == 200


def visit(url: str) -> tuple[int, str]:
    """A page load as a browser makes it: the status and the page (the lab, or the error page)."""
    try:
        with urllib.request.urlopen(url, timeout=180) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def bounded_server(tmp_path, abandoned_after: float = 10.0, **bounds):
    """The lab's server as noiselab-app starts it (bounds: voila_command's max_visitors, pool_size), a delivered
    page's wait for its connection shortened to `abandoned_after` seconds; its port and the Server."""
    from browser_support import Server

    port = free_port()
    command = voila_command(port, **bounds, extra=[f"--BoundedKernelManager.abandoned_after={abandoned_after:g}"])
    return port, Server(command, cwd=app_dir(), port=port, log=tmp_path / "voila.log")


@pytest.mark.slow
def test_a_server_bounded_at_two_turns_the_others_away_until_one_leaves(tmp_path):
    port, server = bounded_server(tmp_path, abandoned_after=3.0, max_visitors=2)

    def arrive(url):  # a page load, and its page's connection to the kernel as soon as it is there, as in a browser
        status, page = visit(url)
        return status, page, Connection(url, KERNEL_ID.search(page).group(0)) if status == 200 else None

    try:
        with ThreadPoolExecutor(4) as pool:  # four visitors arrive at once
            visits = list(pool.map(arrive, [server.url] * 4))
        admitted = [page for status, page, _ in visits if status == 200]
        refused = [page for status, page, _ in visits if status != 200]
        assert len(admitted) == 2, [status for status, _, _ in visits]
        assert [status for status, _, _ in visits].count(503) == 2
        for page in refused:
            assert "The lab is full - 2 visitors; try again in a minute" in page and "Traceback" not in page
        assert kernel_count(server) <= 2
        kernels = [KERNEL_ID.search(page).group(0) for page in admitted]
        connections = [connection for _, _, connection in visits if connection]
        for kernel in kernels:  # the two admitted visitors' kernels still run
            assert alive(server, kernel)

        # one visitor leaves (the page's own call on unload): the next visitor gets in, the other keeps working
        leave = urllib.request.Request(f"{server.url}voila/api/shutdown/{kernels[0]}", method="POST", data=b"")
        with urllib.request.urlopen(leave, timeout=60) as reply:
            assert reply.status == 204
        connections[0].close()
        status, page = visit(server.url)
        assert status == 200 and "noiselab" in page, page[-2000:]
        connections.append(Connection(server.url, KERNEL_ID.search(page).group(0)))
        assert visit(server.url)[0] == 503  # and the server is full again
        time.sleep(5)  # longer than abandoned_after: connected visitors' kernels stay however long they stay
        assert alive(server, kernels[1]) and visit(server.url)[0] == 503
        assert "Traceback" not in server.log()
        for connection in connections[1:]:
            connection.close()
    finally:
        server.stop()


@pytest.mark.slow
def test_a_preheated_pool_within_the_bound_serves_who_fits_and_fills_again_when_one_leaves(tmp_path):
    """noiselab-app --pool-size 2 --max-visitors 3: the pool's kernels count against the bound, a place the bound
    refuses leaves the pool (no visitor is handed a refusal while there is room), and the pool fills again."""
    _, server = bounded_server(tmp_path, pool_size=2, max_visitors=3)
    try:
        wait_until(lambda: kernel_count(server) == 2, 120)  # the pool, filled before anyone comes
        kernels = []
        for _ in range(3):  # three visitors one after the other: two from the pool, one started as the pool refills
            status, page = visit(server.url)
            assert status == 200 and "noiselab" in page, page[-2000:]
            kernels.append(KERNEL_ID.search(page).group(0))
        assert len(set(kernels)) == 3 and kernel_count(server) <= 3
        status, page = visit(server.url)  # the fourth: full (the pool's refills were refused, not queued)
        assert status == 503 and "The lab is full - 3 visitors" in page
        assert kernel_count(server) <= 3

        leave = urllib.request.Request(f"{server.url}voila/api/shutdown/{kernels[0]}", method="POST", data=b"")
        with urllib.request.urlopen(leave, timeout=60) as reply:
            assert reply.status == 204
        wait_until(lambda: kernel_count(server) == 3, 120)  # the freed place went back to the pool
        status, page = visit(server.url)
        assert status == 200 and KERNEL_ID.search(page).group(0) not in kernels
        assert "Traceback" not in server.log()
    finally:
        server.stop()


@pytest.mark.slow
def test_a_page_abandoned_before_it_connected_frees_its_kernel_in_seconds(tmp_path):
    port, server = bounded_server(tmp_path, abandoned_after=4.0, max_visitors=2)
    try:
        # a reload mid-load: the request is dropped once the page has started to arrive (its kernel is starting)
        with socket.create_connection(("localhost", port), timeout=60) as client:
            client.sendall(f"GET / HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
            assert client.recv(1024).startswith(b"HTTP/1.1 200")
            wait_until(lambda: kernel_count(server) == 1, 60)
        seconds = wait_until(lambda: kernel_count(server) == 0, 30)
        print(f"the hung-up page's kernel gone {seconds:.1f} s after the hang-up")
        assert seconds <= 10  # at the watchdog's next look (1 s), plus the shutdown
        assert "its visitor hung up before the page was complete" in server.log()

        # a page loaded whole by a client that stays connected (a browser still loading the page's scripts, however
        # slowly) keeps its kernel past abandoned_after; once it closes the connection without ever connecting to
        # the kernel (a tab closed, a client that never runs the page's script) the kernel goes
        with socket.create_connection(("localhost", port), timeout=120) as client:
            client.sendall(f"GET / HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
            page = b""
            while not page.endswith(b"\r\n0\r\n\r\n"):  # the chunked page's last chunk
                chunk = client.recv(65536)
                assert chunk, page[-500:]
                page += chunk
            loaded = KERNEL_ID.search(page.decode(errors="replace")).group(0)
            time.sleep(6)  # past abandoned_after
            assert alive(server, loaded)
        seconds = wait_until(lambda: not alive(server, loaded) and kernel_count(server) == 0, 30)
        print(f"the unconnected page's kernel gone {seconds:.1f} s after its client closed the connection")
        assert 4 <= seconds <= 14
        log = server.log()
        assert "its page was delivered and its client left 4 s ago without connecting" in log
        assert "Traceback" not in log and "ERROR" not in log  # stopping the hung-up page's rendering is no error
        assert visit(server.url)[0] == 200  # the places are free again
    finally:
        server.stop()


@pytest.mark.slow
def test_a_burst_of_abandoned_page_loads_never_passes_the_bound_and_leaves_the_server_as_it_was(tmp_path):
    """bench/burst_test.py scaled down: 20 page loads within 3 s on a server bounded at 3, most hung up early, a
    delivered page's wait for its connection shortened to 4 s (the first visitor's kernel goes sooner)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("burst_test", REPO / "bench" / "burst_test.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.burst(loads=20, within=3.0, max_visitors=3, finish=0.2, seed=1, settle_timeout=90,
                         log_dir=tmp_path, abandoned_after=4.0)
    assert sum(report["outcomes"].values()) == 20 and not any(o.startswith("error") for o in report["outcomes"])
    assert report["outcomes"].get("full", 0) >= 1  # the burst did reach the bound
    assert 1 <= report["most_kernels_at_once"] <= 3
    assert report["settled"] and report["settled_after_answered_s"] <= 60, report  # kernels gone, memory back
    assert report["first_visitor_alone"] == "lab" and report["new_visitor_after"] == "lab"
    assert report["tracebacks_in_server_log"] == 0
