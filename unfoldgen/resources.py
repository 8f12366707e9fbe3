"""Where the packaged grammar and templates live (top-level folders, shipped in the wheel)."""

from __future__ import annotations

import sys
from pathlib import Path


def resource_dir(name: str) -> Path:
    """`grammar/` or `templates/`: beside the package in a checkout, under the prefix when installed."""
    here = Path(__file__).resolve().parent
    candidates = [here.parent / name, Path(sys.prefix) / "share" / "unfoldgen" / name]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"unfoldgen's {name}/ folder is missing (looked in {candidates})")
