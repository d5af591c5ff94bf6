"""Experiments built from core calls: sweeps over settings and the paper's reproductions, results as plain data.

The reproductions (noiselab.experiments.reproduce, and EXPERIMENTS here) also draw their charts, with Altair: they are
imported on first use, so that sweeps, records and the benchmarks run where only the core's dependencies are
installed (the GPU machine has PyTorch, NumPy and pandas, not the Jupyter stack). The sweep's names are imported on
first use too, so that noiselab.experiments.names (what the CLI parses its arguments with) costs nothing.
"""

from importlib import import_module

__all__ = ["EXPERIMENTS", "EvalSpec", "robust_table", "run_sweep", "summarize"]
_FROM = {"EXPERIMENTS": "reproduce", "EvalSpec": "sweep", "robust_table": "sweep", "run_sweep": "sweep",
         "summarize": "sweep"}


def __getattr__(name: str):
    if name in _FROM:
        return getattr(import_module(f"{__name__}.{_FROM[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
