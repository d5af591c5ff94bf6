"""The benchmarks' timer: wall time of one call, with the GPU's queue drained before and after."""

from __future__ import annotations

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
