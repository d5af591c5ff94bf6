"""The lab server's kernel manager: at most `max_kernels` kernels at once, a clear page for the visitor beyond.

Voilà starts one kernel per page load and nothing bounds them: a room of visitors pressing reload can start more
kernels than the machine has memory for (each holds torch and the lab, about 0.5-0.7 GB). `noiselab-app` serves
the lab with this manager (VoilaConfiguration.multi_kernel_manager_class) and `--max-visitors N`; a page load
beyond N gets HTTP 503 with Voilà's error page saying that the lab is full, and no kernel is started for it.
Kernels of the preheated pool count too (their memory is spent all the same). A kernel whose visitor leaves is
shut down by the page itself (Voilà's beforeunload call), or by the idle culling of apps/voila.json.
"""

from __future__ import annotations

import uuid

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from traitlets import Integer, TraitError, validate


def full_message(bound: int) -> str:
    """What a visitor beyond the bound reads (an HTTP reason phrase: one line, plain ASCII)."""
    return f"The lab is full - {bound} visitor{'s' if bound != 1 else ''}; try again in a minute"


class BoundedKernelManager(AsyncMappingKernelManager):
    max_kernels = Integer(0, config=True, help="the most kernels running at once (0: no bound)")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._reserved: set[str] = set()  # ids of kernels being started: counted before the server lists them

    @validate("max_kernels")
    def _check_bound(self, proposal):
        if proposal["value"] < 0:
            raise TraitError(f"max_kernels is >= 0 (0: no bound), got {proposal['value']}")
        return proposal["value"]

    def kernels_counted(self) -> int:
        """Running kernels and those being started, each once."""
        return len(set(self.list_kernel_ids()) | self._reserved)

    async def start_kernel(self, *, kernel_id: str | None = None, **kwargs):
        if kernel_id is not None and kernel_id in self:  # an existing kernel: nothing new is started
            return await super().start_kernel(kernel_id=kernel_id, **kwargs)
        if self.max_kernels and self.kernels_counted() >= self.max_kernels:
            self.log.warning("refused a kernel: %d of %d running", self.kernels_counted(), self.max_kernels)
            raise web.HTTPError(503, reason=full_message(self.max_kernels))
        kernel_id = kernel_id or str(uuid.uuid4())
        self._reserved.add(kernel_id)  # before the first await: two requests at once cannot both take the last slot
        try:
            return await super().start_kernel(kernel_id=kernel_id, **kwargs)
        finally:
            self._reserved.discard(kernel_id)
