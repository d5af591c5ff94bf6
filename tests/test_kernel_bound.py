"""The bound on visitors' kernels (issue 17): noiselab-app --max-visitors, the lab-is-full page, bad settings."""

import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from noiselab.apps_launch import GB, app_dir, default_max_visitors, free_port, main, memory_limit_bytes, voila_command

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


def test_the_manager_refuses_a_negative_bound():
    from traitlets import TraitError

    from noiselab.apps_kernels import BoundedKernelManager

    with pytest.raises(TraitError, match="max_kernels is >= 0"):
        BoundedKernelManager(max_kernels=-1)


def visit(url: str) -> tuple[int, str]:
    """A page load as a browser makes it: the status and the page (the lab, or the error page)."""
    try:
        with urllib.request.urlopen(url, timeout=180) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.slow
def test_a_server_bounded_at_two_turns_the_others_away_until_one_leaves(tmp_path):
    from browser_support import Server

    port = free_port()
    server = Server(voila_command(port, max_visitors=2), cwd=app_dir(), port=port, log=tmp_path / "voila.log")
    try:
        with ThreadPoolExecutor(4) as pool:  # four visitors arrive at once
            visits = list(pool.map(visit, [server.url] * 4))
        admitted = [page for status, page in visits if status == 200]
        refused = [page for status, page in visits if status != 200]
        assert len(admitted) == 2, [status for status, _ in visits]
        assert [status for status, _ in visits].count(503) == 2
        for page in refused:
            assert "The lab is full - 2 visitors; try again in a minute" in page and "Traceback" not in page
        assert len(server.kernels()) <= 2
        kernels = [KERNEL_ID.search(page).group(0) for page in admitted]
        for kernel in kernels:  # the two admitted visitors' kernels still run
            assert visit(f"{server.url}api/kernels/{kernel}")[0] == 200

        # one visitor leaves (the page's own call on unload): the next visitor gets in, the other keeps working
        leave = urllib.request.Request(f"{server.url}voila/api/shutdown/{kernels[0]}", method="POST", data=b"")
        with urllib.request.urlopen(leave, timeout=60) as reply:
            assert reply.status == 204
        status, page = visit(server.url)
        assert status == 200 and "noiselab" in page, page[-2000:]
        assert visit(f"{server.url}api/kernels/{kernels[1]}")[0] == 200
        assert visit(server.url)[0] == 503  # and the server is full again
        assert "Traceback" not in server.log()
    finally:
        server.stop()
