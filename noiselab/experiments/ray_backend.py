"""A sweep's cells as Ray tasks: one task per cell (train, then attack), retried by Ray when its worker dies.

    noiselab sweep ... --backend ray                       # a local Ray on this machine
    noiselab sweep ... --backend ray --address auto        # join the cluster this machine belongs to

What Ray does here is what it exists for: scheduling each cell where its resources are (one GPU per cell where
the cluster has GPUs, else `cpus_per_cell` CPUs), retrying a cell whose worker process or node died
(`max_retries`), and carrying each finished cell's record back to the driver. What noiselab keeps is its
files: the driver (the process that called run_sweep) is the only writer of results.json and status.json,
and stores each record once, keyed by the cell's settings, so a retried cell is never counted twice. A retry
resumes from the cell's checkpoint in <out>/checkpoints/ where the last attempt left one (a shared
filesystem on a cluster; elsewhere the retry starts the cell afresh), and training resumes exactly, so a
retried cell gives the numbers an unbroken one gives.

Tasks report their state and training step to a small actor (StatusBoard), which the driver reads into
status.json; the same actor carries a Ctrl-C on the driver to every running cell, which then stops within a
batch and checkpoints, as an in-process sweep does.
"""

from __future__ import annotations

import os
import platform
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

INSTALL = 'pip install "noiselab[ray]"'


@dataclass
class RayOptions:
    address: str | None = None    # None: start a local Ray here; "auto", "HOST:6379" or "ray://HOST:10001": join one
    num_cpus: int | None = None   # a local Ray's CPUs (None: all of this machine's)
    cpus_per_cell: float = 1.0    # CPUs each cell holds; also its torch thread count
    gpus_per_cell: float = 1.0    # GPUs each cell holds where the cluster has GPUs (0.25: four cells share one)
    max_retries: int = 3          # times Ray reruns a cell whose worker died; an error raised by the cell is final
    report_interval: float = 1.0  # seconds between a running cell's reports of its step

    def validate(self) -> RayOptions:
        if self.num_cpus is not None and (not isinstance(self.num_cpus, int) or self.num_cpus < 1):
            raise ValueError(f"num_cpus must be None or an integer >= 1, got {self.num_cpus!r}")
        if not self.cpus_per_cell > 0:
            raise ValueError(f"cpus_per_cell must be > 0, got {self.cpus_per_cell!r}")
        if not 0 < self.gpus_per_cell <= 1:
            raise ValueError(f"gpus_per_cell must lie in (0, 1] (a cell trains on one GPU), got {self.gpus_per_cell!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        if not self.report_interval > 0:
            raise ValueError(f"report_interval must be > 0 seconds, got {self.report_interval!r}")
        return self


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A HOST:PORT or ray://HOST:PORT address that nothing answers at: a clear error now, not Ray's minutes of
    retries. "auto" and None (a local Ray) are left to Ray."""
    if address is None or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--address {address!r} is not auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise OSError(f"nothing answers at {address} ({error.strerror or error}): is the Ray head running there "
                      "(ray start --head)? Or leave out --address to start a Ray on this machine") from None


def import_ray():
    """Ray, or a clear error naming the install command: it is an optional extra, imported only when asked for."""
    try:
        import ray
    except ImportError:
        raise ImportError(f"--backend ray needs Ray, which is not installed here; install it with: {INSTALL}") from None
    return ray


class StatusBoard:
    """A Ray actor: each cell's latest report (state, attempt, step, pid, node, the wall times it started and
    finished), and whether the driver said stop."""

    def __init__(self):
        self.cells: dict[str, dict] = {}
        self.stopping = False

    def start(self, key: str, pid: int, node: str) -> bool:
        cell = self.cells.setdefault(key, {"attempt": 0})
        cell.update(state="training", attempt=cell["attempt"] + 1, pid=pid, node=node, started=time.time())
        cell.pop("step", None)
        cell.pop("finished", None)
        return self.stopping

    def finish(self, key: str) -> None:
        self.cells[key]["finished"] = time.time()

    def report(self, key: str, fields: dict) -> bool:
        self.cells[key].update(fields)
        return self.stopping

    def snapshot(self) -> dict:
        return self.cells

    def stop(self) -> None:
        self.stopping = True


def _cell_task(config: dict, overrides: dict, evaluation: dict, out: str, key: str, board, threads: int,
               interval: float) -> dict | None:
    """One cell, on a Ray worker: the same run_cell an in-process sweep calls."""
    import ray
    import torch

    from ..train import TrainConfig
    from .cells import EvalSpec, run_cell

    torch.set_num_threads(threads)  # as many threads as CPUs held, whatever the worker inherited
    stop = threading.Event()
    if ray.get(board.start.remote(key, os.getpid(), platform.node())):
        stop.set()
    last_report = 0.0

    def on_step(progress) -> None:
        nonlocal last_report
        now = time.monotonic()
        if now - last_report >= interval or progress.step == progress.total_steps:
            last_report = now
            if ray.get(board.report.remote(key, {"step": progress.step, "total_steps": progress.total_steps})):
                stop.set()

    def on_phase(phase: str) -> None:
        ray.get(board.report.remote(key, {"state": phase}))

    try:
        return run_cell(TrainConfig.from_dict(config), overrides, EvalSpec(**evaluation), Path(out),
                        on_phase=on_phase, on_train_progress=on_step, stop=stop)
    finally:
        ray.get(board.finish.remote(key))


def cell_resources(cluster: dict, device: str, options: RayOptions) -> dict:
    """What one cell asks Ray for: a GPU (share) where the cluster has GPUs and the device allows one, else CPUs."""
    gpus = cluster.get("GPU", 0)
    if device == "cpu" or (device == "auto" and gpus == 0):
        return {"num_cpus": options.cpus_per_cell, "num_gpus": 0}
    if gpus == 0:
        raise ValueError(f"device {device!r} asks for a GPU but the Ray cluster has none; use --device auto or cpu")
    return {"num_cpus": options.cpus_per_cell, "num_gpus": options.gpus_per_cell}


def cells_at_once(cluster: dict, resources: dict) -> int:
    """How many cells asking for `resources` the cluster holds at once (at least one).

    The driver submits no more than this: a task blocked in ray.get (as a cell is each time it reports) lends
    its CPUs back to Ray, which would otherwise start more cells than there are CPUs."""
    fits = [int(cluster.get("CPU", 0) // resources["num_cpus"] + 1e-9)]
    if resources.get("num_gpus"):
        fits.append(int(cluster.get("GPU", 0) // resources["num_gpus"] + 1e-9))
    return max(1, min(fits))


def run_on_ray(pending: list, evaluation, out: Path, options: RayOptions, status, store: Callable[[str, dict], None],
               stop=None, progress: Callable[[str], None] | None = None, on_status=None) -> dict[str, str]:
    """Run the pending (key, overrides, config) cells as Ray tasks; store(key, record) each as it finishes.

    Returns {key: error} for the cells that failed (an error the cell raised, or a worker that died more than
    max_retries times); the other cells are stored whatever happens to those."""
    options.validate()
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if options.address is None:
                ray.init(address="local", num_cpus=options.num_cpus, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=options.address, log_to_driver=False)
        except Exception as error:  # Ray raises a bare Exception when its processes do not come up in time
            where = "a local Ray did not start" if options.address is None else \
                f"could not join the Ray cluster at {options.address}"
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise OSError(f"{where} ({first}); on a busy machine run the same command again, or run the cells in "
                          "this process with --backend local (either way the sweep resumes where it stopped)") \
                from error
    try:
        return _drive(ray, pending, evaluation, out, options, status, store, stop, progress, on_status)
    finally:
        if started_here:
            ray.shutdown()  # a local Ray ends with the sweep; a joined cluster is only left


def _drive(ray, pending, evaluation, out, options, status, store, stop, progress, on_status) -> dict[str, str]:
    devices = {config.device for _, _, config in pending}
    cluster = ray.cluster_resources()
    resources = {device: cell_resources(cluster, device, options) for device in devices}
    board = ray.remote(StatusBoard).options(num_cpus=0).remote()
    task = ray.remote(_cell_task)
    threads = max(1, int(options.cpus_per_cell))
    waiting = list(pending)
    running = {}

    def submit() -> None:  # as many cells as the cluster (which may have grown) holds at once, not all of them
        cluster = ray.cluster_resources()
        while waiting:
            key, overrides, config = waiting[0]
            in_flight = sum(1 for _, device in running.values() if device == config.device)
            if in_flight >= cells_at_once(cluster, resources[config.device]):
                return
            waiting.pop(0)
            ref = task.options(max_retries=options.max_retries, retry_exceptions=False,
                               **resources[config.device]).remote(
                asdict(config), overrides, asdict(evaluation), str(out), key, board, threads, options.report_interval)
            running[ref] = (key, config.device)

    failures: dict[str, str] = {}
    told_to_stop = False
    submit()
    while running:
        ready, _ = ray.wait(list(running), num_returns=len(running), timeout=options.report_interval)
        reports = ray.get(board.snapshot.remote())
        for key, _ in running.values():  # what the cells said last (attempt, pid, step), finished ones included
            if key in reports:
                status.update(key, **reports[key])
        for ref in ready:
            key, _ = running.pop(ref)
            title = status.payload["cells"][key]["label"]
            try:
                record = ray.get(ref)
            except ray.exceptions.RayTaskError as error:  # the cell itself raised: retrying would raise again
                failures[key] = f"{type(error.cause).__name__}: {error.cause}" if error.cause else str(error)
            except ray.exceptions.RayError as error:  # its worker or node died more often than max_retries
                failures[key] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
            else:
                if record is None:
                    status.update(key, state="stopped")
                else:
                    store(key, record)
                if progress:
                    progress(f"{title}: {'stopped' if record is None else 'done'}")
                continue
            status.update(key, state="failed", error=failures[key])
            if progress:
                progress(f"{title}: failed ({failures[key]})")
        status.flush()
        if on_status:
            on_status(status)
        if stop is not None and stop.is_set() and not told_to_stop:
            board.stop.remote()  # running cells stop within a batch and checkpoint; the others return at once
            told_to_stop = True
            for key, _, _ in waiting:  # not yet submitted: stopped before they started
                status.update(key, state="stopped")
            waiting.clear()
            status.flush()
        submit()
    return failures
