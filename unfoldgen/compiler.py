"""The pipeline, stage by stage: parse → check → lower → emit."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from unfoldgen.check import CheckedSpec, check_spec
from unfoldgen.emit import kernels as emit_kernels
from unfoldgen.emit import model as emit_model
from unfoldgen.errors import SpecError, UsageError
from unfoldgen.lower import LoweredUnfold, lower
from unfoldgen.parse import decode_spec, parse_text
from unfoldgen.printers import NumbaUnsupportedError


@dataclass(frozen=True)
class CompiledSpec:
    checked: CheckedSpec
    lowered: tuple[LoweredUnfold, ...]
    files: dict[str, str]  # relative path → text
    notes: tuple[str, ...] = ()  # what was not emitted, and why


def check_text(text: str, filename: str = "<spec>") -> CheckedSpec:
    """Parse and check a spec; raises a located SpecError."""
    try:
        return check_spec(parse_text(text, filename))
    except SpecError as err:
        raise err.located(text, filename) from None


def compile_text(text: str, filename: str = "<spec>", spec_label: str | None = None) -> CompiledSpec:
    """Compile a spec's text to the files of one package per unfold block."""
    checked = check_text(text, filename)
    # the label lands in generated comments and docstrings: keep only safe characters
    label = re.sub(r"[^\w.\-]", "_", spec_label or Path(filename).name, flags=re.ASCII)
    lowered = tuple(lower(unfold) for unfold in checked.unfolds)
    files: dict[str, str] = {}
    notes: list[str] = []
    for low in lowered:
        files[f"{low.name}/__init__.py"] = emit_model.render_init(low, label)
        files[f"{low.name}/model.py"] = emit_model.render_model(low, label)
        try:
            files[f"{low.name}/kernels.py"] = emit_kernels.render_kernels(low, label)
        except NumbaUnsupportedError as err:
            notes.append(
                f"{filename}: note: no numba kernels for unfold {low.name!r}: {err}; the torch module is complete"
            )
    return CompiledSpec(checked, lowered, files, tuple(notes))


def read_spec(path: Path) -> str:
    """A spec's text. Anything but a readable regular file is a one-line UsageError; the file is opened
    without blocking and checked before it is read, so a FIFO given as a spec is refused, not waited on."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder, expected a spec file") from None
    except OSError as err:
        raise UsageError(f"{path}: cannot read the spec: {err.strerror}") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        if stat.S_ISDIR(mode):
            raise UsageError(f"{path}: is a folder, expected a spec file")
        raise UsageError(f"{path}: not a regular file (a pipe, device or socket), expected a spec file")
    with os.fdopen(descriptor, "rb") as file:
        try:
            data = file.read()
        except OSError as err:
            raise UsageError(f"{path}: cannot read the spec: {err.strerror}") from None
    return decode_spec(data, str(path))


def spec_files(paths: list[Path]) -> list[Path]:
    """Expand folders to the ``*.unf`` files inside them, sorted; a file named twice (also through
    a folder or a link) counts once. A folder without specs is a UsageError, not a silent success."""
    found: list[Path] = []
    seen: set[str] = set()
    for path in paths:
        if path.is_dir():
            inside = sorted(path.rglob("*.unf"))
            if not inside:
                raise UsageError(f"{path}: no *.unf spec files in this folder")
        else:
            inside = [path]
        for spec in inside:
            key = os.path.realpath(spec)
            if key not in seen:
                seen.add(key)
                found.append(spec)
    return found
