"""The lab server's kernel manager: at most `max_kernels` kernels at once, a clear page for the visitor beyond.

Voilà starts one kernel per page load and nothing bounds them: a room of visitors pressing reload can start more
kernels than the machine has memory for (each holds torch and the lab, about 0.5-0.7 GB). `noiselab-app` serves
the lab with this manager (VoilaConfiguration.multi_kernel_manager_class) and `--max-visitors N`; a page load
beyond N gets HTTP 503 with Voilà's error page saying that the lab is full, and no kernel is started for it.
Kernels of the preheated pool count too (their memory is spent all the same).

A kernel whose visitor leaves is shut down by the page itself (Voilà's beforeunload call), or by the idle culling
of apps/voila.json after minutes. A page abandoned before it connected (a reload mid-load, a closed tab, a client
that never runs the page's script) makes no such call: its kernel is shut down `abandoned_after` seconds after the
page's request ended without the page connecting to it. A kernel whose page is still loading (its request still
open, however long a busy server takes) or that a page ever connected to is never shut down by this rule. Kernels
of the preheated pool wait for visitors without a request and are left to culling.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from tornado.ioloop import PeriodicCallback
from traitlets import Float, Integer, TraitError, validate


def full_message(bound: int) -> str:
    """What a visitor beyond the bound reads (an HTTP reason phrase: one line, plain ASCII)."""
    return f"The lab is full - {bound} visitor{'s' if bound != 1 else ''}; try again in a minute"


class BoundedKernelManager(AsyncMappingKernelManager):
    max_kernels = Integer(0, config=True, help="the most kernels running at once (0: no bound)")
    abandoned_after = Float(15.0, config=True, help="seconds after a page's request ended without the page "
                                                    "connecting before its kernel is shut down (0: never)")
    process_end_wait = Float(60.0, config=True, help="seconds a kernel being shut down still counts against the "
                                                     "bound while its process has not ended")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._reserved: set[str] = set()  # ids of kernels being started: counted before the server lists them
        self._stopping: set[str] = set()  # ids of kernels being shut down: their memory is not free yet
        self._pages: dict[str, list] = {}  # kernel id -> [the page request's task, when it was first seen ended]
        self._ever_connected: set[str] = set()
        self._watchdog: PeriodicCallback | None = None

    @validate("max_kernels")
    def _check_bound(self, proposal):
        if proposal["value"] < 0:
            raise TraitError(f"max_kernels is >= 0 (0: no bound), got {proposal['value']}")
        return proposal["value"]

    @validate("abandoned_after", "process_end_wait")
    def _check_seconds(self, proposal):
        if not proposal["value"] >= 0:  # NaN too
            raise TraitError(f"{proposal['trait'].name} is >= 0 seconds, got {proposal['value']}")
        return proposal["value"]

    def notify_connect(self, kernel_id):
        self._ever_connected.add(kernel_id)
        self._pages.pop(kernel_id, None)  # a visitor is there: never shut down by the abandoned-page rule
        super().notify_connect(kernel_id)

    def _watch_page(self, kernel_id: str) -> None:
        """Remember the request now starting this kernel (the handler's task: it ends when the page's request does)."""
        task = asyncio.current_task()
        if self.abandoned_after <= 0 or task is None or getattr(self, "_pools", None) is not None:
            return  # no rule, no request, or a preheating server (its pool kernels wait without a request)
        self._pages[kernel_id] = [task, None]
        if self._watchdog is None:
            self._watchdog = PeriodicCallback(self.shut_down_abandoned, 1000 * min(2.0, self.abandoned_after / 3))
            self._watchdog.start()

    async def shut_down_abandoned(self) -> list[str]:
        """Shut down the kernels whose page's request ended `abandoned_after` seconds ago without a connection."""
        now, abandoned = time.monotonic(), []
        for kernel_id, page in list(self._pages.items()):
            task, ended = page
            if kernel_id not in self or kernel_id in self._ever_connected:
                self._pages.pop(kernel_id, None)
            elif task.done():
                if ended is None:
                    page[1] = now
                elif now - ended >= self.abandoned_after:
                    self._pages.pop(kernel_id, None)
                    abandoned.append(kernel_id)
        for kernel_id in abandoned:
            self.log.info("shutting down kernel %s: its page ended %.0f s ago and never connected", kernel_id,
                          self.abandoned_after)
            try:
                await self.shutdown_kernel(kernel_id)
            except Exception as error:  # gone meanwhile (the page's own shutdown call): nothing left to do
                self.log.warning("kernel %s: %s", kernel_id, error)
        return abandoned

    def kernels_counted(self) -> int:
        """Running kernels, those being started and those being shut down (until their process has ended), each
        once."""
        return len(set(self.list_kernel_ids()) | self._reserved | self._stopping)

    def _os_process(self, kernel_id: str):
        """The kernel's process (a Popen of the local provisioner), or None where there is none to watch."""
        try:
            provisioner = getattr(self.get_kernel(kernel_id), "provisioner", None)
        except KeyError:
            return None
        process = getattr(provisioner, "process", None)
        return process if callable(getattr(process, "poll", None)) else None

    async def _until_ended(self, kernel_id: str, process) -> None:
        """Wait until the kernel's process has ended (jupyter_client stops waiting for a killed kernel after 5 s,
        and a busy machine can take longer to end a process that holds most of a gigabyte)."""
        deadline = time.monotonic() + self.process_end_wait
        while process is not None and process.poll() is None:
            if time.monotonic() >= deadline:
                self.log.warning("kernel %s: its process %s has not ended %.0f s after its shutdown; no longer "
                                 "counted", kernel_id, process.pid, self.process_end_wait)
                return
            await asyncio.sleep(0.1)

    async def shutdown_kernel(self, kernel_id: str, *args, **kwargs):
        self._stopping.add(kernel_id)
        process = self._os_process(kernel_id)
        try:
            return await super().shutdown_kernel(kernel_id, *args, **kwargs)
        finally:
            await self._until_ended(kernel_id, process)
            self._stopping.discard(kernel_id)

    async def start_kernel(self, *, kernel_id: str | None = None, **kwargs):
        if kernel_id is not None and kernel_id in self:  # an existing kernel: nothing new is started
            return await super().start_kernel(kernel_id=kernel_id, **kwargs)
        if self.max_kernels and self.kernels_counted() >= self.max_kernels:
            self.log.warning("refused a kernel: %d of %d running", self.kernels_counted(), self.max_kernels)
            raise web.HTTPError(503, reason=full_message(self.max_kernels))
        kernel_id = kernel_id or str(uuid.uuid4())
        self._reserved.add(kernel_id)  # before the first await: two requests at once cannot both take the last slot
        try:
            started = await super().start_kernel(kernel_id=kernel_id, **kwargs)
        finally:
            self._reserved.discard(kernel_id)
        self._watch_page(started)
        return started
