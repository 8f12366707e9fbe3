"""The corpus of bad command lines in tests/bad_cli/*.toml (format: tests/bad_cli/README.md): each
case exits with its code, says what is wrong in stderr, never shows a traceback, writes nothing."""

from __future__ import annotations

import contextlib
import os
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from unfoldgen import cli

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "bad_cli"
FIFO_GRACE_S = 60  # a command still blocked on a FIFO after this long gets EOF, and its case fails


def load_cases() -> list[Any]:
    cases = []
    for path in sorted(CORPUS.glob("*.toml")):
        entries = tomllib.loads(path.read_text(encoding="utf-8")).get("case", [])
        names = [entry["name"] for entry in entries]
        assert len(set(names)) == len(names), f"{path.name}: case names must be unique"
        cases.extend(pytest.param(entry, id=f"{path.stem}:{entry['name']}") for entry in entries)
    return cases


def fill(text: str, tmp: Path) -> str:
    return text.replace("{root}", str(ROOT)).replace("{tmp}", str(tmp))


def make(entry: dict[str, str], tmp: Path) -> Path | None:
    """One setup entry; the path of a FIFO it made (None otherwise)."""
    kind = next(key for key in ("file", "dir", "fifo", "symlink") if key in entry)
    path = Path(fill(entry[kind], tmp))
    path.parent.mkdir(parents=True, exist_ok=True)
    match kind:
        case "file":
            path.write_text(entry.get("text", ""), encoding="utf-8")
        case "dir":
            path.mkdir()
        case "fifo":
            os.mkfifo(path)
            return path
        case "symlink":
            path.symlink_to(fill(entry["to"], tmp))
    return None


@contextlib.contextmanager
def unblocking(fifos: list[Path]) -> Iterator[None]:
    """A reader left waiting on one of ``fifos`` is released after FIFO_GRACE_S (it reads EOF), so a
    regression fails the case instead of hanging the suite."""
    done = threading.Event()

    def release() -> None:
        if not done.wait(FIFO_GRACE_S):
            for fifo in fifos:
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    watchdog = threading.Thread(target=release, daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        done.set()
        watchdog.join()


def test_corpus_is_not_empty():
    assert len(load_cases()) >= 20


@pytest.mark.parametrize("case", load_cases())
def test_bad_command_line(
    case: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    fifos = [fifo for entry in case.get("setup", []) if (fifo := make(entry, tmp_path)) is not None]
    argv = [fill(arg, tmp_path) for arg in case["argv"]]
    with unblocking(fifos):
        code = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert code == case["exit"], f"exit {code}, expected {case['exit']}; stderr: {err}"
    for fragment in case["stderr"]:
        assert fill(fragment, tmp_path) in err, f"{fragment!r} not in stderr: {err}"
    for fragment in case.get("stdout", []):
        assert fill(fragment, tmp_path) in out, f"{fragment!r} not in stdout: {out}"
    for path in case.get("absent", []):
        assert not os.path.lexists(fill(path, tmp_path)), f"{path} was written"
