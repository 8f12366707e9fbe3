"""The table of net kinds a spec may declare: one entry per kind.

An entry names its options, its argument rule, the torch class of ``unfoldgen.nets_torch``
(copied verbatim into generated modules), how many scalars it learns, and its numba form or
None (then a spec using it compiles without kernels and ``compile`` prints a note): the
function of ``unfoldgen.ops_numba`` that runs it on columns and where the torch module's state
dict keeps the dense layers that function reads. docs/contributing.md walks through adding one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy

from unfoldgen import ir

Options = dict[str, int | str]


@dataclass(frozen=True)
class Option:
    """A net option: a whole number in [low, high], or, with ``choices``, one of those words."""

    default: int | str
    low: int = 1
    high: int = 1
    choices: tuple[str, ...] = ()

    def problem(self, value: int | str) -> str | None:
        """Why ``value`` is not allowed (completes "mlp option NAME ..."), or None."""
        if self.choices:
            return None if value in self.choices else f"must be one of {', '.join(self.choices)}, got {value}"
        if isinstance(value, str) or not self.low <= value <= self.high:
            return f"must be between {self.low} and {self.high}, got {value}"
        return None


def numel(shape: ir.Shape) -> sympy.Expr:
    """Number of entries of ``shape``, as an expression in the dims."""
    if shape == ():
        return sympy.Integer(1)
    return sympy.Mul(*(sympy.Symbol(d) if isinstance(d, str) else sympy.Integer(d) for d in shape))


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


def _mlp_count(options: Options, arg_shapes: tuple[ir.Shape, ...]) -> sympy.Expr:
    """Dense layers in → hidden (depth times) → out, each with a bias."""
    width, out = sum(numel(shape) for shape in arg_shapes), numel(arg_shapes[0])
    total = sympy.Integer(0)
    for _ in range(options["depth"]):
        total += width * options["hidden"] + options["hidden"]
        width = sympy.Integer(options["hidden"])
    return total + width * out + out


def _conv_count(taps_power: int) -> Callable[[Options, tuple[ir.Shape, ...]], sympy.Expr]:
    """Convolutions channels → hidden (depth times) → 1, kernel^taps_power taps each, with biases."""

    def count(options: Options, arg_shapes: tuple[ir.Shape, ...]) -> sympy.Expr:
        taps = options["kernel"] ** taps_power
        width, total = len(arg_shapes), 0
        for _ in range(options["depth"]):
            total += width * options["hidden"] * taps + options["hidden"]
            width = options["hidden"]
        return sympy.Integer(total + width * taps + 1)

    return count


ACTIVATIONS = ("relu", "tanh", "gelu")


@dataclass(frozen=True)
class NumbaNet:
    """How kernels run a net: ``forward(weights, biases, layer, h, *options)`` of ops_numba on
    columns ``h``, with each dense layer's weight and bias read from the state-dict entries
    ``PREFIX.weight`` / ``PREFIX.bias`` for the prefixes ``dense_layers(options)`` gives."""

    forward: str
    options: tuple[str, ...]
    dense_layers: Callable[[Options], tuple[str, ...]]


@dataclass(frozen=True)
class NetKind:
    """``options``: name → its Option. ``torch``: the class of nets_torch,
    built as ``Class(sizes..., **options, zero_init=...)``; ``sizes_at_build``: the sizes are the
    flattened argument and output sizes (dims known when the model is built), else the number
    of arguments. ``parameter_count``: learned scalars for resolved options and argument shapes."""

    name: str
    torch: str
    options: dict[str, Option]
    check_args: Callable[[list[ir.Shape]], str | None]
    sizes_at_build: bool
    parameter_count: Callable[[Options, tuple[ir.Shape, ...]], sympy.Expr]
    numba: NumbaNet | None

    @property
    def class_name(self) -> str:
        return self.torch

    def resolved(self, given: Options | tuple[tuple[str, int | str], ...]) -> Options:
        """Every option's value: the ones given, defaults for the rest."""
        return {key: option.default for key, option in self.options.items()} | dict(given)


NET_KINDS: dict[str, NetKind] = {
    kind.name: kind
    for kind in [
        NetKind(
            "mlp",
            "Mlp",
            {
                "hidden": Option(64, 1, 65536),
                "depth": Option(2, 1, 64),
                "activation": Option("relu", choices=ACTIVATIONS),
            },
            _any_args,
            sizes_at_build=True,
            parameter_count=_mlp_count,
            # the dense layers sit at even positions of the nn.Sequential (activations between)
            numba=NumbaNet(
                "mlp_forward",
                ("activation",),
                lambda options: tuple(f"body.{2 * i}" for i in range(options["depth"] + 1)),
            ),
        ),
        NetKind(
            "conv1d",
            "Conv1dNet",
            {
                "hidden": Option(16, 1, 4096),
                "depth": Option(2, 1, 64),
                "kernel": Option(3, 1, 63),
                "activation": Option("relu", choices=ACTIVATIONS),
            },
            _same_shape_args,
            sizes_at_build=False,
            parameter_count=_conv_count(1),
            numba=None,
        ),
        NetKind(
            "conv2d",
            "Conv2dNet",
            {
                "hidden": Option(16, 1, 4096),
                "depth": Option(2, 1, 64),
                "kernel": Option(3, 1, 63),
                "activation": Option("relu", choices=ACTIVATIONS),
            },
            _matrix_args,
            sizes_at_build=False,
            parameter_count=_conv_count(2),
            numba=None,
        ),
    ]
}
