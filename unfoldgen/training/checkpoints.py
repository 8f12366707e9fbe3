"""What a run writes, and how: atomically (a temporary file in the same folder, fsync, rename),
never through a symbolic link, and read back with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors and plain data (numbers, strings, lists, dicts), so loading one
never runs code: a file that needs more (a crafted pickle) is refused, not loaded.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import torch

CHECKPOINT = "checkpoint.pt"
MODEL_FILE = "model.pt"
METRICS = "metrics.json"
FORMAT = 2  # 2: the run record holds the command's settings by field (format 1: a flat dict)


class CheckpointError(ValueError):
    """A checkpoint or model file is missing, unreadable or not one unfoldgen wrote."""


class OutputError(ValueError):
    """The output folder cannot be written safely (a symbolic link in it, a file in its place)."""


def check_output(folder: Path, relatives: Iterable[str] = ()) -> None:
    """Refuse an output folder that is a file, or that holds a symbolic link on the way to any
    file the run writes (``relatives``): writing would follow it out of the folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder; expected an output folder")
    for relative in relatives:
        path = folder
        for part in Path(relative).parts:
            path = path / part
            if path.is_symlink():
                raise OutputError(
                    f"{path}: is a symbolic link; the run writes only real files inside {folder} (remove the link)"
                )


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """``write`` into a fresh temporary file next to ``path``, fsync, then rename over ``path``:
    a crash mid-write leaves the previous file intact, and a link at ``path`` is refused."""
    path = Path(path)
    if path.is_symlink():
        raise OutputError(f"{path}: is a symbolic link; the run writes only real files (remove the link)")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(err, OSError) and err.filename is None:
            # a write that fails (a full disk) names no file: name the one that was not replaced
            raise OSError(err.errno, f"{err.strerror or err}; the previous file is kept", str(path)) from err
        raise


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` atomically."""
    _atomic_write(path, lambda stream: torch.save(obj, stream))


def atomic_write_text(text: str, path: Path) -> None:
    _atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))


def atomic_write_bytes(data: bytes, path: Path) -> None:
    _atomic_write(path, lambda stream: stream.write(data))


def load_state(path: Path) -> dict:
    """A checkpoint or model file: tensors and plain data only (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; expected a checkpoint written by unfoldgen train")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise CheckpointError(
                f"{path}: refused, not loaded: it holds objects other than tensors and plain data "
                f"(a checkpoint unfoldgen writes holds only those)"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(err)})") from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(err)})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a checkpoint written by unfoldgen (no model parameters)")
    return state


def load_checkpoint(folder: str | Path) -> dict:
    """The resume state in ``folder``."""
    return load_state(Path(folder) / CHECKPOINT)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def figure_bytes(figure: Any) -> bytes:
    """A matplotlib figure as PNG bytes (written atomically like every other file)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()
