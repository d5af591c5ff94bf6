"""The lab's launcher (noiselab-app, what `make demo` runs): finds the app, refuses a busy port, starts and stops."""

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from noiselab.apps_launch import APP_NAME, app_dir, free_port, main, port_is_free, voila_command


def test_the_app_and_its_settings_are_found():
    folder = app_dir()
    assert (folder / APP_NAME).is_file()
    settings = json.loads((folder / "voila.json").read_text())
    assert settings["VoilaConfiguration"]["strip_sources"] is True
    assert settings["VoilaConfiguration"]["show_tracebacks"] is False
    assert settings["MappingKernelManager"]["cull_idle_timeout"] > 0


def test_voila_command():
    command = voila_command(9999)
    assert command[:3] == [sys.executable, "-m", "voila"] and command[3].endswith(APP_NAME)
    assert "--port=9999" in command and "--no-browser" in command
    assert "--no-browser" not in voila_command(9999, open_browser=True)
    assert {"--preheat_kernel=True", "--pool_size=2"} <= set(voila_command(9999, pool_size=2))


def test_kernels_talk_over_unix_sockets_where_their_paths_fit(monkeypatch):
    import tempfile

    assert "--KernelManager.transport=ipc" in voila_command(9999)  # this machine: /tmp
    monkeypatch.setattr(tempfile, "tempdir", "/var/folders/zz/" + "x" * 40 + "/T")  # a macOS-like temp folder
    assert not any("transport" in part for part in voila_command(9999))  # too long a path: TCP, as Voilà's default


def test_a_busy_port_or_a_bad_one_is_refused(capsys):
    with socket.socket() as busy:
        busy.bind(("localhost", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert not port_is_free(port)
        with pytest.raises(SystemExit):
            main(["--port", str(port), "--no-browser"])
    assert "is in use" in capsys.readouterr().err
    for bad in (["--port", "0"], ["--port", "70000"], ["--pool-size", "-1"]):
        with pytest.raises(SystemExit):
            main(bad)


@pytest.mark.slow
def test_serves_prints_the_url_and_stops_with_its_kernels():
    psutil = pytest.importorskip("psutil")
    port = free_port()
    launcher = subprocess.Popen([sys.executable, "-m", "noiselab.apps_launch", "--port", str(port), "--no-browser"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline and not any("noiselab lab:" in line for line in lines):
            lines.append(launcher.stdout.readline())
        assert any(f"noiselab lab: http://localhost:{port}/" in line for line in lines), lines
        with socket.create_connection(("localhost", port), timeout=5):
            pass
        children = psutil.Process(launcher.pid).children(recursive=True)
        assert children, "Voilà runs as the launcher's child"
    finally:
        launcher.send_signal(signal.SIGTERM)  # as a process manager stops it
        launcher.wait(timeout=30)
    gone, alive = psutil.wait_procs(children, timeout=15)
    for process in alive:
        process.kill()
    assert not alive, "stopping the launcher stops Voilà"
    assert port_is_free(port)
