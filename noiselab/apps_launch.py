"""Serve the lab (apps/noiselab.ipynb) with Voilà, with the deployment settings of apps/voila.json.

    noiselab-app [--port 8866] [--no-browser] [--host localhost] [--pool-size 0 [--fill-delay 1]] [--max-visitors N]
    python -m noiselab.apps_launch --port 8866 --no-browser

Voilà runs in apps/ so that it reads apps/voila.json: sources stripped and tracebacks hidden (Voilà's defaults,
kept), no template or theme switching from the URL, and idle kernels of visitors who left culled after 2 minutes
(checked every minute). `--pool-size N` keeps N kernels preheated (the lab loaded before a visitor arrives; each
costs a kernel's memory while it waits; `--fill-delay S`: seconds before a kernel taken from it is replaced).
`--max-visitors N` bounds the kernels running at once (the pool's included): a page load beyond them gets a page
saying that the lab is full, not a kernel the machine has no memory for. Its default fits the memory this server may
use (`default_max_visitors`), and is printed at start. The URL is printed once the server answers.

The notebook is found beside the package in a source checkout (`pip install -e .`, as the README does) or in
the current directory's apps/.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

APP_NAME = "noiselab.ipynb"
DEFAULT_PORT = 8866
GB = 1e9
KERNEL_GB = 0.8      # a visitor's kernel holding torch and the lab after some use: 0.5-0.7 GB resident, measured
SERVER_GB = 0.5      # kept for the server itself and the system
BOUNDED_MANAGER = "noiselab.apps_kernels.BoundedKernelManager"


def memory_limit_bytes() -> int | None:
    """The memory this process may use: the machine's, or less where a container's cgroup or Binder's MEM_LIMIT
    says so; None where none of them can be read."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    if os.environ.get("MEM_LIMIT", "").isdigit() and int(os.environ["MEM_LIMIT"]) > 0:
        limits.append(int(os.environ["MEM_LIMIT"]))
    return min(limits) if limits else None


def default_max_visitors(memory_bytes: int | None) -> int:
    """As many visitors' kernels as the memory holds beside the server (at least 1; 4 where it is unknown)."""
    if memory_bytes is None:
        return 4
    return max(1, int((memory_bytes / GB - SERVER_GB) // KERNEL_GB))


def app_dir() -> Path:
    """The apps/ folder holding noiselab.ipynb and voila.json."""
    candidates = [Path(__file__).resolve().parents[1] / "apps", Path.cwd() / "apps"]
    for folder in candidates:
        if (folder / APP_NAME).is_file():
            return folder
    raise FileNotFoundError(f"{APP_NAME} not found in {' or '.join(str(c) for c in candidates)}: the lab is served "
                            "from a source checkout (git clone, then pip install -e .)")


def ipc_transport_fits() -> bool:
    """Whether the server talks to its kernels over Unix sockets rather than TCP ports on localhost.

    With TCP, each kernel gets five ports that the server picks free and the kernel then binds: with many kernels
    starting at once (a preheated pool of 20 here) a port picked free may be taken meanwhile by one of the
    server's own connections to another kernel, and that kernel fails to start (measured: one kernel of a pool of
    20, its five restarts on the same port refused). Unix sockets, files in Voilà's connection folder, cannot
    collide, and no other local user can connect to them. Only on POSIX systems, and where the socket's path (the
    temporary folder, Voilà's folder, the kernel's id) fits the system's 104-108 characters."""
    import tempfile

    return os.name == "posix" and len(tempfile.gettempdir()) + len("/voila_12345678/kernel--ipc-5") + 36 < 100


def voila_command(port: int, host: str = "localhost", open_browser: bool = False, pool_size: int = 0,
                  max_visitors: int | None = None, fill_delay: float | None = None,
                  extra: list[str] | tuple = ()) -> list[str]:
    """The Voilà command line serving the lab; run it with cwd=app_dir() so that apps/voila.json applies.
    max_visitors: the most kernels at once (None: no bound); fill_delay: seconds before the pool replaces a kernel
    a visitor took (None: Voilà's 1 s)."""
    if max_visitors is not None and (isinstance(max_visitors, bool) or not isinstance(max_visitors, int)
                                     or max_visitors < 1):
        raise ValueError(f"max_visitors is an integer >= 1 (or None: no bound), got {max_visitors!r}")
    if max_visitors is not None and pool_size > max_visitors:
        raise ValueError(f"a pool of {pool_size} preheated kernels does not fit a bound of {max_visitors} "
                         "visitors: the pool's kernels count against it (lower --pool-size or raise --max-visitors)")
    command = [sys.executable, "-m", "voila", str(app_dir() / APP_NAME), f"--port={port}", f"--Voila.ip={host}"]
    if ipc_transport_fits():
        command.append("--KernelManager.transport=ipc")
    if not open_browser:
        command.append("--no-browser")
    if pool_size > 0:
        command += ["--preheat_kernel=True", f"--pool_size={pool_size}"]
    if fill_delay is not None:
        if pool_size <= 0 or not 0 <= fill_delay < float("inf"):
            raise ValueError(f"fill_delay is seconds >= 0 for a preheated pool (pool_size > 0), got {fill_delay!r} "
                             f"with pool_size {pool_size}")
        command.append(f"--VoilaKernelManager.fill_delay={fill_delay:g}")
    if max_visitors is not None:
        command += [f"--VoilaConfiguration.multi_kernel_manager_class={BOUNDED_MANAGER}",
                    f"--BoundedKernelManager.max_kernels={max_visitors}"]
    return command + list(extra)


def port_is_free(port: int, host: str = "localhost") -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "localhost") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_until_serving(host: str, port: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Return once the server accepts connections; raise if it exits first or `timeout` seconds pass.

    A TCP connection, not a page request: requesting the page would start a kernel nobody looks at."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Voilà exited with code {process.returncode} before serving on port {port}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"Voilà did not answer on {host}:{port} within {timeout:.0f} s")


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is within [1, 65535], got {port}")
    return port


def _number(kind: type, minimum: float, what: str, too_low: str):
    """An argparse type: `text` as `kind`, finite and at least `minimum`; `too_low` is formatted with the text."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not minimum <= value < float("inf"):
            raise argparse.ArgumentTypeError(too_low.format(text))
        return value
    return parse


_pool_size = _number(int, 0, "an integer", "the pool size is >= 0, got {}")
_max_visitors = _number(int, 1, "an integer", "at least 1 visitor, got {}")
_seconds = _number(float, 0, "a number of seconds", "seconds are >= 0, got {}")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="noiselab-app", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument("--host", default="localhost", help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.add_argument("--pool-size", type=_pool_size, default=0, help="kernels kept preheated (default 0)")
    parser.add_argument("--fill-delay", type=_seconds, default=None,
                        help="with --pool-size: seconds before a kernel taken from the pool is replaced (Voilà's "
                             "default 1; a class arriving at once: longer, so that the refills wait for the rush)")
    parser.add_argument("--max-visitors", type=_max_visitors, default=None,
                        help="the most visitors' kernels at once, the pool's included (default: as many as the "
                             f"memory holds at ~{KERNEL_GB} GB each)")
    args = parser.parse_args(argv)

    memory = memory_limit_bytes()
    max_visitors = args.max_visitors or default_max_visitors(memory)
    if args.pool_size > max_visitors:
        parser.error(f"--pool-size {args.pool_size} is larger than the bound of {max_visitors} visitors (the pool's "
                     "kernels count against it): lower --pool-size or raise --max-visitors")
    if args.fill_delay is not None and not args.pool_size:
        parser.error("--fill-delay is the preheated pool's: give --pool-size too")
    if not port_is_free(args.port, args.host):
        parser.error(f"port {args.port} is in use (another lab?): pass --port with a free one")
    folder = app_dir()
    command = voila_command(args.port, args.host, open_browser=not args.no_browser, pool_size=args.pool_size,
                            max_visitors=max_visitors, fill_delay=args.fill_delay)
    url = f"http://{args.host}:{args.port}/"
    print(f"starting Voilà on {folder / APP_NAME} with {folder / 'voila.json'} ...", flush=True)
    if args.max_visitors:
        print(f"at most {max_visitors} visitors at once (--max-visitors)", flush=True)
    else:
        known = f"{memory / GB:.1f} GB of memory" if memory else "the memory could not be read"
        print(f"at most {max_visitors} visitors at once ({known}, ~{KERNEL_GB} GB each; --max-visitors to change)",
              flush=True)
    process = subprocess.Popen(command, cwd=folder)
    # Ctrl-C, and a SIGTERM from a process manager, stop Voilà (which shuts its kernels down) rather than orphan it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        wait_until_serving(args.host, args.port, process)
        print(f"\n    noiselab lab: {url}\n    (Ctrl-C stops the server)\n", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        try:
            return process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()
    except (RuntimeError, TimeoutError) as error:
        print(f"noiselab-app: {error}", file=sys.stderr)
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
        return 1


if __name__ == "__main__":
    sys.exit(main())
