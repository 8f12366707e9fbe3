"""User-facing errors: every one names file:line:col, shows the line and a caret."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A region of a spec file, 1-based lines and columns (end exclusive)."""

    line: int
    column: int
    end_line: int
    end_column: int


class SpecError(Exception):
    """An error in a spec, located at a span, formatted like a compiler diagnostic."""

    def __init__(self, message: str, span: Span | None, source: str = "", filename: str = "<spec>"):
        super().__init__(message)
        self.message = message
        self.span = span
        self.source = source
        self.filename = filename

    def located(self, source: str, filename: str) -> SpecError:
        """The same error, attached to the text and file it was found in."""
        return SpecError(self.message, self.span, source, filename)

    @property
    def line(self) -> int:
        return self.span.line if self.span else 0

    @property
    def column(self) -> int:
        return self.span.column if self.span else 0

    def __str__(self) -> str:
        if self.span is None:
            return f"{self.filename}: error: {self.message}"
        head = f"{self.filename}:{self.span.line}:{self.span.column}: error: {self.message}"
        lines = self.source.split("\n")  # lark counts lines by \n only
        if not 1 <= self.span.line <= len(lines):
            return head
        text = lines[self.span.line - 1].rstrip("\r").expandtabs(1)
        text = "".join(ch if ch.isprintable() else " " for ch in text)
        if len(text) > 200:
            return head
        width = 1
        if self.span.end_line == self.span.line:
            width = max(1, self.span.end_column - self.span.column)
        caret = " " * (self.span.column - 1) + "^" * min(width, max(1, len(text) - self.span.column + 1))
        return f"{head}\n    {text}\n    {caret}"


class UsageError(Exception):
    """A path on the command line that cannot be used (a spec that is missing, unreadable or not a
    regular file, a folder without specs, an output folder that cannot be written): one line, exit 2.
    Raised before anything is written."""


class WriteError(Exception):
    """Writing the output failed (a full disk, an I/O error, a generated path that would leave the
    output folder): one line, exit 1. No target was replaced: every file is still the old one or absent."""
