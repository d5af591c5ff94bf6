"""Experiments built from core calls: sweeps over settings and the paper's reproductions, results as plain data.

The reproductions (noiselab.experiments.reproduce, and EXPERIMENTS here) also draw their charts, with Altair: they are
imported on first use, so that sweeps, records and the benchmarks run where only the core's dependencies are
installed (the GPU machine has PyTorch, NumPy and pandas, not the Jupyter stack).
"""

from .sweep import EvalSpec, robust_table, run_sweep, summarize

__all__ = ["EXPERIMENTS", "EvalSpec", "robust_table", "run_sweep", "summarize"]


def __getattr__(name: str):
    if name == "EXPERIMENTS":
        from importlib import import_module

        return import_module(f"{__name__}.reproduce").EXPERIMENTS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
