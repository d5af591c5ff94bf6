"""Writing files so that an interruption leaves the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def cache_folder() -> Path:
    """The user's cache folder for noiselab: $XDG_CACHE_HOME/noiselab, else ~/.cache/noiselab (not created here).
    Raises RuntimeError where there is no home folder to put it in."""
    try:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "noiselab"
    except RuntimeError as problem:  # Path.home() without HOME or a password entry
        raise RuntimeError(f"no cache folder: {problem}") from None


def read_json_document(path: Path, what: str, fix: str, error: type[ValueError] = ValueError):
    """The parsed JSON of a shipped document; a missing or unreadable one raises `error` saying `fix`."""
    if not path.is_file():
        raise error(f"{what} {path} is missing; {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise error(f"{what} {path} cannot be read ({problem}); {fix}") from None


def _temporary_beside(path: Path, what: str) -> tuple[int, str]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise OSError(f"cannot write {what} in {path.parent}: {error.strerror}; choose a writable folder") from None


def check_writable(path: str | Path, what: str) -> None:
    """Fail now, before any work goes into it, if the folder that will hold `path` cannot be written."""
    handle, temporary = _temporary_beside(Path(path), what)
    os.close(handle)
    os.unlink(temporary)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], what: str) -> Path:
    """Write through `write(stream)` into a temporary file beside `path`, flush it to disk, rename it over `path`."""
    path = Path(path)
    handle, temporary = _temporary_beside(path, what)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def copy_atomically(source: str | Path, target: str | Path, what: str) -> Path:
    """Copy `source` to `target` through atomic_write: a reader never sees half a file."""
    source = Path(source)
    return atomic_write(target, lambda stream: stream.write(source.read_bytes()), what)
