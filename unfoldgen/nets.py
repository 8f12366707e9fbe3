"""The table of net kinds a spec may declare: options, argument rules, and the torch class.

The classes themselves live in ``unfoldgen.nets_torch`` and are copied into generated modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from unfoldgen import ir


def _any_args(shapes: list[ir.Shape]) -> str | None:
    return None


def _same_shape_args(shapes: list[ir.Shape]) -> str | None:
    if any(shape != shapes[0] for shape in shapes):
        return "all arguments must have the same shape (they are stacked as channels)"
    return None


def _matrix_args(shapes: list[ir.Shape]) -> str | None:
    if shapes[0][1] == 1:
        return "conv2d needs matrix arguments (use conv1d or mlp for vectors)"
    return _same_shape_args(shapes)


@dataclass(frozen=True)
class NetKind:
    """``options``: name → (default, lowest, highest)."""

    name: str
    class_name: str
    options: dict[str, tuple[int, int, int]]
    check_args: Callable[[list[ir.Shape]], str | None]
    sizes_at_build: bool  # needs the argument sizes (dims) when the model is built


NET_KINDS: dict[str, NetKind] = {
    kind.name: kind
    for kind in [
        NetKind("mlp", "Mlp", {"hidden": (64, 1, 65536), "depth": (2, 1, 64)}, _any_args, True),
        NetKind(
            "conv1d",
            "Conv1dNet",
            {"hidden": (16, 1, 4096), "depth": (2, 1, 64), "kernel": (3, 1, 63)},
            _same_shape_args,
            False,
        ),
        NetKind(
            "conv2d",
            "Conv2dNet",
            {"hidden": (16, 1, 4096), "depth": (2, 1, 64), "kernel": (3, 1, 63)},
            _matrix_args,
            False,
        ),
    ]
}
