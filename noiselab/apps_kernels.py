"""The lab server's kernel manager: at most `max_kernels` kernels at once, a clear page for the visitor beyond.

Voilà starts one kernel per page load and nothing bounds them: a room of visitors pressing reload can start more
kernels than the machine has memory for (each holds torch and the lab, about 0.5-0.7 GB). `noiselab-app` serves
the lab with this manager (VoilaConfiguration.multi_kernel_manager_class) and `--max-visitors N`; a page load
beyond N gets HTTP 503 with Voilà's error page saying that the lab is full, and no kernel is started for it.
Kernels of the preheated pool count too (their memory is spent all the same).

A kernel whose visitor leaves is shut down by the page itself (Voilà's beforeunload call), or by the idle culling of
apps/voila.json after minutes. A page abandoned before it connected makes no such call. A visitor who hangs up
before the page is complete (a reload mid-load, a tab closed while loading) loses the kernel within a second or two:
the page's rendering is stopped and the kernel shut down (tornado sees the connection close). A page delivered whole
whose client then closed the connection without connecting to the kernel (a tab closed just after, a client that
never runs the page's script, a chat's link preview) loses it `abandoned_after` seconds (30) after. A kernel whose
page is still loading, however long a busy server takes, whose client is still connected (a browser loading the
page's scripts: 20 browser pages on 2 cores took over 30 s to connect), or that a page ever connected to is never
shut down by these rules. A kernel being shut down counts against the bound until its process has ended.

With Voilà's preheated pool (`--pool-size`), the pool's kernels count against the bound: a place of the pool the
bound refuses is taken out of the pool (a later visitor then gets the "full" page from the bound itself, or a
pool kernel if there is one), and the pool is filled again whenever a kernel ends. Pool kernels wait for visitors
without a request and are left to culling.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
import weakref

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from tornado.ioloop import PeriodicCallback
from traitlets import Float, Integer, TraitError, validate


def full_message(bound: int) -> str:
    """What a visitor beyond the bound reads (an HTTP reason phrase: one line, plain ASCII)."""
    return f"The lab is full - {bound} visitor{'s' if bound != 1 else ''}; try again in a minute"


def _requesting_handler() -> web.RequestHandler | None:
    """The request handler whose coroutine is calling (Voilà's page handler starting a kernel), from the stack: the
    awaiting coroutines' frames are on it while the innermost runs."""
    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, web.RequestHandler):
            return candidate
        frame = frame.f_back
    return None


def _hung_up(handler: web.RequestHandler | None) -> bool:
    """Whether the handler's client has closed its connection (tornado watches an idle connection for the close)."""
    if handler is None:
        return False
    stream = getattr(getattr(handler.request, "connection", None), "stream", None)
    return stream is not None and stream.closed()


def _stop_rendering(kernel_id: str) -> list[asyncio.Task]:
    """Cancel Voilà's rendering of the page whose kernel is `kernel_id` (its task executing the notebook in the
    kernel: nobody will read the page); that task and its executor's polling tasks. Found by Voilà 0.5's names
    (VoilaHandler's `put_html`, its renderer's `executor`); where they change nothing is found, the kernel is shut
    down all the same and Voilà logs the rendering's end as an error (the tests check the log for errors)."""
    cancelled, executors = [], []
    for task in asyncio.all_tasks():
        coroutine = task.get_coro()
        frame = getattr(coroutine, "cr_frame", None)
        if (frame is not None and getattr(coroutine, "__qualname__", "").endswith("put_html")
                and frame.f_locals.get("kernel_id") == kernel_id):
            task.cancel()
            cancelled.append(task)
            executors.append(getattr(frame.f_locals.get("gen"), "executor", None))
    for task in asyncio.all_tasks():  # the executor's own polling tasks (they log the kernel's end too)
        frame = getattr(task.get_coro(), "cr_frame", None)
        if frame is not None and any(frame.f_locals.get("self") is executor for executor in executors if executor):
            cancelled.append(task)
    return cancelled


class _StoppedRenderings(logging.Filter):
    """Drops the errors a rendering stopped on purpose logs (nbclient reports its cancellation as 'Kernel died',
    and Voilà logs that with a traceback): the shutdown was logged already, as what it is."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: weakref.WeakSet = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no event loop in this thread
            return True
        return not (task is not None and task in self.tasks and record.levelno >= logging.WARNING)

    def install(self, log: logging.Logger) -> None:
        """On the handlers that print `log`'s records (its own, else its ancestors')."""
        logger: logging.Logger | None = log
        while logger is not None:
            for handler in logger.handlers:
                if self not in handler.filters:
                    handler.addFilter(self)
            if logger.handlers or not logger.propagate:
                return
            logger = logger.parent


class BoundedKernelManager(AsyncMappingKernelManager):
    max_kernels = Integer(0, config=True, help="the most kernels running at once (0: no bound)")
    abandoned_after = Float(30.0, config=True, help="seconds a delivered page has to connect to its kernel before "
                                                    "the kernel is shut down (0: never; a visitor who hangs up "
                                                    "before the page is complete loses it at once)")
    process_end_wait = Float(60.0, config=True, help="seconds a kernel being shut down still counts against the "
                                                     "bound while its process has not ended")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._reserved: set[str] = set()  # ids of kernels being started: counted before the server lists them
        self._stopping: set[str] = set()  # ids of kernels being shut down: their memory is not free yet
        # kernel id -> [the page request's task, when it was first seen ended, its request handler]
        self._pages: dict[str, list] = {}
        self._ever_connected: set[str] = set()
        self._watchdog: PeriodicCallback | None = None
        self._stopped_renderings = _StoppedRenderings()
        self._closing = False

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
        """Remember the request now starting this kernel: the handler's task (it ends when the page's request does)
        and the handler (its connection closes when the visitor hangs up)."""
        task = asyncio.current_task()
        if self.abandoned_after <= 0 or task is None or self._preheating():
            return  # no rule, no request, or a preheating server (its pool kernels wait without a request)
        self._pages[kernel_id] = [task, None, _requesting_handler()]
        if self._watchdog is None:
            self._stopped_renderings.install(self.log)
            self._watchdog = PeriodicCallback(self.shut_down_abandoned, 1000 * min(1.0, self.abandoned_after / 3))
            self._watchdog.start()

    async def shut_down_abandoned(self) -> list[str]:
        """Shut down the kernels whose visitor hung up before the page was complete (at once), and those whose page
        was delivered and whose client closed its connection `abandoned_after` seconds ago without connecting to
        the kernel. A client still connected after the delivery (a browser loading the page's scripts, however
        slowly) keeps the kernel; culling remains for the rest."""
        now, abandoned = time.monotonic(), []
        for kernel_id, page in list(self._pages.items()):
            task, ended, handler = page
            if kernel_id not in self or kernel_id in self._ever_connected:
                self._pages.pop(kernel_id, None)
            elif not task.done() and _hung_up(handler):
                self._pages.pop(kernel_id, None)
                abandoned.append((kernel_id, "its visitor hung up before the page was complete"))
            elif task.done():
                if handler is not None and not _hung_up(handler):
                    page[1] = None  # delivered, its client still connected: a browser loading the page's scripts
                elif ended is None:
                    page[1] = now
                elif now - ended >= self.abandoned_after:
                    self._pages.pop(kernel_id, None)
                    why = (f"its page was delivered and its client left {self.abandoned_after:.0f} s ago without "
                           "connecting")
                    abandoned.append((kernel_id, why))
        for kernel_id, why in abandoned:
            self.log.info("shutting down kernel %s: %s", kernel_id, why)
            stopped = _stop_rendering(kernel_id)  # nobody will read the page: stop executing it, then the kernel
            self._stopped_renderings.tasks.update(stopped)
            try:
                await self.shutdown_kernel(kernel_id, now=bool(stopped))
            except Exception as error:  # gone meanwhile (the page's own shutdown call): nothing left to do
                self.log.warning("kernel %s: %s", kernel_id, error)
        return [kernel_id for kernel_id, _ in abandoned]

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
            if self._preheating() and not self._closing:
                self._refill_pools()  # a place is free: the preheated pool takes it back

    async def shutdown_all(self, *args, **kwargs):
        self._closing = True  # the server is stopping: refill nothing
        return await super().shutdown_all(*args, **kwargs)

    # ---- with Voilà's preheated pool (--preheat_kernel): its kernels are started by Voilà's pool, not by pages ----
    def _preheating(self) -> bool:
        return getattr(self, "_pools", None) is not None

    def _leave_pool(self, task: asyncio.Task | None) -> None:
        """Take a place of the pool whose kernel the bound refuses (`task`: the pool's task now starting it) out of
        the pool before it fails: Voilà would hand a failed place to a later visitor as 'full' even once there is
        room, never fill it again, and its own shutdown_kernel reads every done place's result, so that one failed
        place made a visitor's leaving fail with the same 503. The refusal is logged already; its exception, read
        here, is not logged again as never retrieved."""
        for pool in self._pools.values():
            if task in pool:
                pool.remove(task)
                task.add_done_callback(lambda done: done.cancelled() or done.exception())  # read: not logged

    def _refill_pools(self) -> None:
        for notebook_name in list(self._pools):
            self.fill_if_needed(notebook_name=notebook_name)

    async def start_kernel(self, *, kernel_id: str | None = None, **kwargs):
        if kernel_id is not None and kernel_id in self:  # an existing kernel: nothing new is started
            return await super().start_kernel(kernel_id=kernel_id, **kwargs)
        if self.max_kernels and self.kernels_counted() >= self.max_kernels:
            self.log.warning("refused a kernel: %d of %d running", self.kernels_counted(), self.max_kernels)
            if self._preheating():
                self._leave_pool(asyncio.current_task())
            raise web.HTTPError(503, reason=full_message(self.max_kernels))
        kernel_id = kernel_id or str(uuid.uuid4())
        self._reserved.add(kernel_id)  # before the first await: two requests at once cannot both take the last slot
        try:
            started = await super().start_kernel(kernel_id=kernel_id, **kwargs)
        finally:
            self._reserved.discard(kernel_id)
        self._watch_page(started)
        return started
