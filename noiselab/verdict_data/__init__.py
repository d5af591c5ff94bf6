"""Data the lab ships: the full-scale curves behind the verdict (noiselab.experiments.verdict writes them)."""
