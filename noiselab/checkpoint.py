"""Checkpoints: written atomically, read as weights only (no pickled code runs), carrying their config.

A checkpoint is a dict saved with torch.save: {"format": "noiselab-checkpoint", "version": 1, "config": {...},
"model": state_dict, ...}. It is written to a temporary file in the same folder, flushed to disk, then renamed
over the target, so an interruption leaves either the old file or the new one, never half of one. It is read
with torch.load(weights_only=True): tensors, numbers, strings, lists and dicts only.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from . import _files

FORMAT = "noiselab-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable noiselab checkpoint; the message says what to do."""


def check_writable(path: str | Path) -> None:
    """Fail now, before any training, if the checkpoint's folder cannot be written."""
    _files.check_writable(path, "a checkpoint")


def save_checkpoint(path: str | Path, state: dict) -> Path:
    payload = {"format": FORMAT, "version": VERSION, **state}
    return _files.atomic_write(path, lambda stream: torch.save(payload, stream), "a checkpoint")


WEIGHTS_ONLY_KEYS = ("config", "model", "history", "step", "sigma")


def save_weights_only(path: str | Path, state: dict) -> Path:
    """A training checkpoint's state without the optimizer's (a third of the size): enough to load, evaluate and
    attack the model, not to resume its training. Readable by everyone (0644): these files are shared."""
    written = save_checkpoint(path, {key: state[key] for key in WEIGHTS_ONLY_KEYS if key in state})
    written.chmod(0o644)  # written through a private temporary file (0600)
    return written


def load_checkpoint(path: str | Path, map_location=None) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as error:
        # torch's own message for a refused pickle advises weights_only=False, i.e. running the file's code:
        # noiselab never does that, so the message is not passed on.
        reason = "holds objects other than tensors and plain data, or is not a torch file" \
            if isinstance(error, pickle.UnpicklingError) else f"{type(error).__name__}: {str(error)[:160]}"
        raise CheckpointError(
            f"{path} is not a readable noiselab checkpoint (corrupt, truncated, or foreign: {reason}); "
            "retrain, or point at a checkpoint file that noiselab wrote"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a noiselab checkpoint (no '{FORMAT}' marker)")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}; this noiselab reads {VERSION}")
    for key in ("config", "model"):
        if key not in state:
            raise CheckpointError(f"{path} lacks its '{key}' entry; it is incomplete")
    return state


def load_model(path: str | Path, map_location="cpu"):
    """The expectation model stored in a checkpoint (in eval mode), and the checkpoint's dict."""
    from .models import build

    state = load_checkpoint(path, map_location=map_location)
    model = build(state["config"]["model"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: its weights do not fit a {state['config']['model']}: {error}") from None
    return model.to(map_location).eval(), state
