"""The benchmarks' timer: wall time of one call, with the GPU's queue drained before and after; and the switch
that times the moment rules as torch ops beside noiselab.native's fused kernels."""

from __future__ import annotations

import contextlib
import os
import time

import torch


def timed(device: torch.device, function, *args, **kwargs) -> float:
    """Seconds one call of function(*args, **kwargs) takes on `device` (CUDA work included, not just launched)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    function(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


@contextlib.contextmanager
def fused_kernels(on: bool):
    """noiselab.native's fused moment kernels on (where they are built) or off (NOISELAB_NATIVE=0: torch ops)."""
    before = os.environ.get("NOISELAB_NATIVE")
    os.environ["NOISELAB_NATIVE"] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["NOISELAB_NATIVE"]
        else:
            os.environ["NOISELAB_NATIVE"] = before
