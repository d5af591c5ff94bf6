"""A burst of page loads on the lab's server: most abandoned before they finish, as a room pressing reload does.

    python bench/burst_test.py [--loads 100] [--within 5] [--max-visitors N] [--finish 0.1]

Serves the lab as `make demo` does (apps/voila.json, the bounded kernel manager of noiselab-app with
--max-visitors), then makes `--loads` page requests from plain HTTP clients on localhost, spread over `--within`
seconds. A fraction `--finish` of them read their page to the end (visitors who stay but whose page never runs its
script, the worst case for the bound); the others hang up after a random 0.1-3 s, before their page is done. It
samples the server's kernel processes every 0.2 s, and its memory (the resident memory of the server and every
kernel, a sum that counts shared pages once per process) and the machine's memory in use, and reports: how the loads
ended (the lab, the "full" page, or hung up), the most kernel processes (the server's children running ipykernel)
alive at once (never above the bound; exited ones not yet reaped, and other processes - a kernel's helper such as
the `ldconfig` an import runs, a child between fork and exec - counted apart), how long until the kernels were gone
and the memory held on the machine (by processes and the kernel: `held_mb`) back within 100 MB of its idle level,
and whether a new visitor then gets the lab normally. The idle level is taken after one visitor has been served
and its kernel has gone (a server that has rendered the page once holds its templates and modules), and on an
otherwise idle machine: run it on one.
Writes bench/results/burst_test.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from browser_support import start_voila  # noqa: E402

MEMORY_SLACK_MB = 100.0


def tree(server) -> list:
    """The server's process and its kernels (psutil gives up when a child ends during the walk: walk again)."""
    import psutil

    for _ in range(20):
        try:
            root = psutil.Process(server.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            time.sleep(0.05)
    return []


def resident_mb(processes: list) -> float:
    import psutil

    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def ask(process, question: str, gone=None):
    """`process.<question>()`, or `gone` once the process has ended (or cannot be read)."""
    import psutil

    try:
        return getattr(process, question)()
    except psutil.Error:
        return gone


def system_used_mb() -> float:
    """The machine's memory in use (total - available): shared pages once, unlike a sum of resident sizes."""
    import psutil

    memory = psutil.virtual_memory()
    return (memory.total - memory.available) / 2**20


HELD = ("AnonPages", "Shmem", "SUnreclaim", "KernelStack", "PageTables")


def held_mb() -> float:
    """The memory the machine's processes and its kernel hold (/proc/meminfo: anonymous and shared-memory pages,
    page tables, kernel stacks, unreclaimable slab). Unlike total - available, it is back as soon as a process has
    ended: this virtual machine reports freed pages to its host (page_reporting on its kernel command line), and
    they come back into MemAvailable over tens of seconds (about 20 MB/s, measured 2026-12-07) though nothing holds
    them."""
    fields = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            name, value = line.split(":")
            fields[name] = int(value.split()[0]) / 1024  # kB
    return sum(fields.get(name, 0.0) for name in HELD)


class Sampler(threading.Thread):
    """Kernel processes, their and the server's resident memory, and the machine's memory in use, every `period`
    seconds until stopped."""

    def __init__(self, server, period: float = 0.2):
        super().__init__(daemon=True)
        self.server, self.period, self.samples = server, period, []
        self.done = threading.Event()
        self.other_processes: set[str] = set()

    def run(self):
        start = time.monotonic()
        while not self.done.is_set():
            processes = tree(self.server)
            live = self.server.kernels()
            exited = [process for process in processes[1:] if ask(process, "status") == "zombie"]
            for process in processes[1:]:
                if process not in live and process not in exited:  # a kernel's helper, a child not yet exec'd
                    self.other_processes.add(" ".join((ask(process, "cmdline") or [])[:3])[:80]
                                             or ask(process, "name", "gone"))
            self.samples.append((time.monotonic() - start, len(live), resident_mb(processes), system_used_mb(),
                                 len(live) + len(exited), held_mb()))
            time.sleep(self.period)


def page_load(url: str, hang_up_after: float | None) -> str:
    """One page request: 'lab' (the whole page), 'full' (the bound's 503 page), 'hung up' or 'error: ...'."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    try:
        if hang_up_after is None:
            with urllib.request.urlopen(url, timeout=300) as reply:
                page = reply.read().decode()
            return "lab" if "noiselab" in page else "other page"
        with socket.create_connection((host, int(port)), timeout=30) as client:
            client.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            client.settimeout(hang_up_after)
            try:
                first = client.recv(64)
            except TimeoutError:
                return "hung up"
            if first.startswith(b"HTTP/1.1 503"):
                return "full"
            time.sleep(max(0.0, hang_up_after - 0.05))
            return "hung up"
    except urllib.error.HTTPError as error:
        return "full" if error.code == 503 and "The lab is full" in error.read().decode() else f"error: {error}"
    except OSError as error:
        return f"error: {error}"


def burst(loads: int = 100, within: float = 5.0, max_visitors: int = 30, finish: float = 0.1, seed: int = 0,
          settle_timeout: float = 120.0, log_dir: Path | None = None, abandoned_after: float | None = None) -> dict:
    rng = random.Random(seed)
    load_at_start = os.getloadavg()
    log_dir = log_dir or REPO / "bench" / "results" / "burst_test-artifacts"
    log_dir.mkdir(parents=True, exist_ok=True)
    extra = () if abandoned_after is None else (f"--BoundedKernelManager.abandoned_after={abandoned_after:g}",)
    server = start_voila(log_dir, max_visitors=max_visitors, extra=extra)
    sampler = Sampler(server)
    try:
        warm_start = time.monotonic()
        first = page_load(server.url, None)  # one visitor alone; its page never connects, so its kernel goes
        first_s = time.monotonic() - warm_start
        while len(tree(server)) > 1 and time.monotonic() - warm_start < 120:
            time.sleep(0.5)
        time.sleep(2.0)
        idle_mb, idle_system_mb, idle_held_mb = resident_mb(tree(server)), system_used_mb(), held_mb()
        idle_server_mb = resident_mb(tree(server)[:1])
        sampler.start()
        plans = sorted((rng.uniform(0, within), None if rng.random() < finish else rng.uniform(0.1, 3.0))
                       for _ in range(loads))
        outcomes: list[str] = []
        start = time.monotonic()
        threads = []
        for at, hang_up_after in plans:
            time.sleep(max(0.0, at - (time.monotonic() - start)))
            thread = threading.Thread(target=lambda h=hang_up_after: outcomes.append(page_load(server.url, h)))
            thread.start()
            threads.append(thread)
        sent_s = time.monotonic() - start
        for thread in threads:
            thread.join(timeout=330)
        answered_s = time.monotonic() - start
        # settled: no kernel left and the memory held on the machine back within MEMORY_SLACK_MB of its idle level
        kernels_gone_s = None
        while time.monotonic() - start < answered_s + settle_timeout:
            if len(tree(server)) == 1:
                kernels_gone_s = kernels_gone_s or time.monotonic() - start
                if held_mb() <= idle_held_mb + MEMORY_SLACK_MB:
                    break
            else:
                kernels_gone_s = None
            time.sleep(0.5)
        settled_s = time.monotonic() - start
        final_processes = tree(server)
        memory_after, system_after, held_after = resident_mb(final_processes), system_used_mb(), held_mb()
        server_after = resident_mb(final_processes[:1])
        settled = len(final_processes) == 1 and held_after <= idle_held_mb + MEMORY_SLACK_MB
        sampler.done.set()
        sampler.join(timeout=5)
        visitor_start = time.monotonic()
        after = page_load(server.url, None)
        after_s = time.monotonic() - visitor_start
        log = server.log()
    finally:
        sampler.done.set()
        server.stop()
    counts = {name: outcomes.count(name) for name in sorted(set(outcomes))}
    return {
        "config": {"loads": loads, "within_s": within, "max_visitors": max_visitors, "finish": finish, "seed": seed,
                   "memory_slack_mb": MEMORY_SLACK_MB, "voila_settings": "apps/voila.json",
                   "abandoned_after_s": "apps/voila.json's" if abandoned_after is None else abandoned_after},
        "first_visitor_alone": first,
        "first_visitor_load_s": round(first_s, 1),
        "sent_s": round(sent_s, 2),
        "outcomes": counts,
        "most_kernels_at_once": max((sample[1] for sample in sampler.samples), default=0),  # live processes
        "most_kernel_processes_with_exited_ones": max((sample[4] for sample in sampler.samples), default=0),
        "kernels_child_processes_seen": sorted(sampler.other_processes),  # counted apart: not kernels
        "server_and_kernels_rss_mb": {"idle": round(idle_mb, 1),
                                      "peak": round(max((s[2] for s in sampler.samples), default=idle_mb), 1),
                                      "after": round(memory_after, 1)},
        "server_rss_mb": {"idle": round(idle_server_mb, 1), "after": round(server_after, 1)},
        "machine_memory_used_mb": {"idle": round(idle_system_mb, 1),
                                   "peak": round(max((s[3] for s in sampler.samples), default=idle_system_mb), 1),
                                   "after": round(system_after, 1)},
        "memory_held_mb": {"idle": round(idle_held_mb, 1),
                           "peak": round(max((s[5] for s in sampler.samples), default=idle_held_mb), 1),
                           "after": round(held_after, 1)},
        "all_answered_s": round(answered_s, 1),  # the slowest: a load that read its whole page
        "settled": settled,
        "kernels_gone_after_answered_s": None if kernels_gone_s is None else round(kernels_gone_s - answered_s, 1),
        "settled_after_answered_s": round(settled_s - answered_s, 1),
        "new_visitor_after": after,
        "new_visitor_load_s": round(after_s, 1),
        "tracebacks_in_server_log": log.count("Traceback"),
        "errors_in_server_log": log.count("ERROR"),
        # every second: seconds from the first load, live kernels, machine memory in use and memory held (MB)
        "timeline": [[round(t, 1), kernels, round(used), round(held)]
                     for t, kernels, _, used, _, held in sampler.samples[::5]],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                    "load_average_at_start": [round(x, 2) for x in load_at_start]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=100)
    parser.add_argument("--within", type=float, default=5.0, help="seconds over which the loads arrive")
    parser.add_argument("--max-visitors", type=int, default=None,
                        help="the server's bound (default: noiselab-app's for this machine's memory)")
    parser.add_argument("--finish", type=float, default=0.1, help="fraction of loads that read their page whole")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "burst_test.json"))
    args = parser.parse_args(argv)
    if args.max_visitors is None:
        from noiselab.apps_launch import default_max_visitors, memory_limit_bytes

        args.max_visitors = default_max_visitors(memory_limit_bytes())
    if not (1 <= args.loads <= 500) or args.within <= 0 or args.max_visitors < 1 or not 0 <= args.finish <= 1:
        parser.error("loads within [1, 500], within > 0, max-visitors >= 1, finish within [0, 1]")
    report = burst(args.loads, args.within, args.max_visitors, args.finish, args.seed)
    print(json.dumps(report, indent=2))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
