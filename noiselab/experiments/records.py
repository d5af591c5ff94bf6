"""Result files: plain JSON with the config, library versions, device and seeds that made them, written atomically."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

import torch


def environment(device: str | torch.device | None = None) -> dict:
    import numpy

    from .. import __version__

    info = {
        "noiselab": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(), "cuda": torch.version.cuda,
    }
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        info["device"] = torch.cuda.get_device_name(device)
    else:
        info["device"] = f"cpu ({platform.processor() or platform.machine()})"
    return info


def check_output_folder(folder: str | Path) -> Path:
    """Create the folder and prove it writable now, before any work goes into it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OSError(f"cannot write results in {folder}: {error.strerror}; choose a writable folder") from None
    return folder


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(payload, stream, indent=1, default=float)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_json(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable results file ({error}); move it away to start afresh") from None
