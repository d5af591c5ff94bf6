"""Result files: plain JSON with the config, library versions, device and seeds that made them, written atomically."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from .. import _files


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
        from .. import native

        info["device"] = f"cpu ({platform.processor() or platform.machine()})"
        info["fused_cpu_kernels"] = native.enabled()  # the moment rules' (noiselab.native)
    return info


def check_output_folder(folder: str | Path) -> Path:
    """Create the folder and prove it writable now, before any work goes into it."""
    folder = Path(folder)
    _files.check_writable(folder / "results.json", "results")
    return folder


def write_json(path: str | Path, payload: dict) -> Path:
    text = json.dumps(payload, indent=1, default=float).encode()
    return _files.atomic_write(path, lambda stream: stream.write(text), "results")


def read_json(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable results file ({error}); move it away to start afresh") from None
