"""Experiments built from core calls: sweeps over settings and the paper's reproductions, results as plain data."""

from .reproduce import EXPERIMENTS, reproduce
from .sweep import EvalSpec, robust_table, run_sweep, summarize

__all__ = ["EXPERIMENTS", "EvalSpec", "reproduce", "robust_table", "run_sweep", "summarize"]
