"""Write a set of files into an output folder so that no reader and no second writer sees a torn file.

Every target is checked before anything is written (a planted symbolic link, a folder or pipe where a
file goes, an output path that is a file, a folder that cannot be written: UsageError). Then each
file is written to a temporary in its own folder and, once all are written, renamed over its target;
a failed write (a full disk) removes the temporaries and the folders it made, and replaces nothing
(WriteError). Folders are opened without following links, so a link planted after the check is
replaced, never written through."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from unfoldgen.errors import UsageError, WriteError

TEMPORARY_SUFFIX = ".unfoldgen-tmp"  # `.NAME.<random>.unfoldgen-tmp` next to NAME while it is written


def _parts(relative: str) -> list[str]:
    parts = relative.split("/")
    if relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise WriteError(f"output path {relative!r} would leave the output folder; nothing was written")
    return parts


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (the folder a mkdir would start in)."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _check_writable(folder: Path, writing: bool) -> None:
    if writing and not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{folder}: cannot write into this folder (permission denied or read-only)")


def check_targets(root: Path, relatives: list[str], writing: bool = True) -> list[Path]:
    """The targets ``root/relative``, after checking every one can be written (``writing``) or read as
    a regular file.

    ``root`` may be a link to a folder (the user named it); below it, no folder or file may be a
    link, a folder where a file goes, or anything but a folder or a regular file."""
    ancestor = _existing_ancestor(root)
    if not ancestor.is_dir():
        what = "exists and is not a folder" if ancestor == root else "is not a folder"
        raise UsageError(f"{ancestor}: {what}; the output (-o) must be a folder")
    _check_writable(ancestor, writing)
    targets = []
    for relative in relatives:
        parts = _parts(relative)
        current = root
        for index, part in enumerate(parts):
            current = current / part
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                _check_writable(_existing_ancestor(current), writing)
                break
            last = index == len(parts) - 1
            if stat.S_ISLNK(mode):
                raise UsageError(f"{current}: is a symbolic link; refusing to follow it (remove it first)")
            if not last and not stat.S_ISDIR(mode):
                raise UsageError(f"{current}: is not a folder, but {relative} goes inside it")
            if last and not stat.S_ISREG(mode):
                kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
                raise UsageError(f"{current}: is {kind}; expected the file {relative} there")
            if last:
                _check_writable(current.parent, writing)
        targets.append(root.joinpath(*parts))
    return targets


def _open_folder(name: str, parent: int, created: list[tuple[int, str]]) -> int:
    """A sub-folder's descriptor, made when missing (recorded in ``created``), never through a link."""
    try:
        os.mkdir(name, dir_fd=parent)
        created.append((parent, name))
    except FileExistsError:
        pass
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)


def _write_temporary(folder: int, name: str, data: bytes) -> str:
    temporary = f".{name}.{secrets.token_hex(6)}{TEMPORARY_SUFFIX}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    descriptor = os.open(temporary, flags, 0o666, dir_fd=folder)  # the umask decides, as for any new file
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())  # the rename must not publish a file whose bytes a crash can lose
    except BaseException:
        os.unlink(temporary, dir_fd=folder)
        raise
    return temporary


def write_files(root: Path, files: Mapping[str, str]) -> None:
    """Write ``files`` (relative path → text, UTF-8) under ``root``: all checked, then all replaced."""
    relatives = sorted(files)
    check_targets(root, relatives)
    made_roots = []  # root and the ancestors a mkdir -p makes, deepest first
    missing = root
    while not os.path.lexists(missing):
        made_roots.append(missing)
        missing = missing.parent
    created: list[tuple[int, str]] = []
    descriptors: dict[tuple[str, ...], int] = {}
    pending: list[tuple[int, str, str]] = []  # folder descriptor, temporary, relative path of the target
    target = root
    try:
        try:
            root.mkdir(parents=True, exist_ok=True)
            descriptors[()] = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
            for relative in relatives:
                target = root / relative
                *dirs, name = relative.split("/")
                for depth in range(1, len(dirs) + 1):
                    key = tuple(dirs[:depth])
                    if key not in descriptors:
                        descriptors[key] = _open_folder(dirs[depth - 1], descriptors[key[:-1]], created)
                folder = descriptors[tuple(dirs)]
                pending.append((folder, _write_temporary(folder, name, files[relative].encode("utf-8")), relative))
        except BaseException as err:
            for folder, temporary, _ in pending:
                with contextlib.suppress(OSError):
                    os.unlink(temporary, dir_fd=folder)
            for parent, name in reversed(created):
                with contextlib.suppress(OSError):
                    os.rmdir(name, dir_fd=parent)
            for made in made_roots:
                with contextlib.suppress(OSError):
                    made.rmdir()
            if isinstance(err, OSError):
                raise WriteError(f"cannot write {target}: {err.strerror or err}; nothing was replaced") from None
            raise
        for index, (folder, temporary, relative) in enumerate(pending):
            try:
                os.replace(temporary, relative.rsplit("/", 1)[-1], src_dir_fd=folder, dst_dir_fd=folder)
            except OSError as err:
                for other_folder, other, _ in pending[index:]:
                    with contextlib.suppress(OSError):
                        os.unlink(other, dir_fd=other_folder)
                raise WriteError(
                    f"cannot replace {root / relative}: {err.strerror}; {index} of {len(pending)} files were replaced"
                ) from None
    finally:
        for descriptor in descriptors.values():
            os.close(descriptor)
