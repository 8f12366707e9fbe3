"""The grammar and templates ship inside the package; importlib.resources finds them in any install layout."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable


def resource(folder: str, name: str) -> Traversable:
    """``unfoldgen/<folder>/<name>`` as a package resource (a checkout, a wheel, a zip)."""
    return resources.files("unfoldgen").joinpath(folder, name)


def read_resource(folder: str, name: str) -> str:
    return resource(folder, name).read_text(encoding="utf-8")
