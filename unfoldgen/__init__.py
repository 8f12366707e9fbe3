"""unfoldgen: compile iterative-solver specs into trainable deep-unfolded PyTorch networks."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path


def _version() -> str:
    """The installed distribution's version; in a checkout never installed, pyproject.toml's (one source)."""
    try:
        return metadata.version("unfoldgen")
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
        except (OSError, tomllib.TOMLDecodeError, KeyError):
            return "0+unknown"


__version__ = _version()
