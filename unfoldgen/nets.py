"""The table of net kinds a spec may declare: one entry per kind.

An entry names its options, its argument rule, the torch class of ``unfoldgen.nets_torch``
(copied verbatim into generated modules) or None for ``external`` (the caller passes the
module), how many scalars it learns, and its numba form or None (then a spec using it compiles
without kernels and ``compile`` prints a note): the function of ``unfoldgen.ops_numba`` that
runs it on columns and where the torch module's state dict keeps the dense layers that function
reads. docs/contributing.md walks through adding one.
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
    odd: bool = False  # a kernel size: "same" padding keeps the size only for odd ones

    def problem(self, value: int | str) -> str | None:
        """Why ``value`` is not allowed (completes "mlp option NAME ..."), or None."""
        if self.choices:
            return None if value in self.choices else f"must be one of {', '.join(self.choices)}, got {value}"
        odd = "an odd number " if self.odd else ""
        if isinstance(value, str) or not self.low <= value <= self.high or (self.odd and value % 2 == 0):
            return f"must be {odd}between {self.low} and {self.high}, got {value}"
        return None


def numel(shape: ir.Shape) -> sympy.Expr:
    """Number of entries of ``shape``, as an expression in the dims."""
    if shape == ():
        return sympy.Integer(1)
    return sympy.Mul(*(_dim_size(d) for d in shape))


def _dim_size(dim: ir.Dim) -> sympy.Expr:
    """A dim as an expression in its base dim: ``2*n`` (a complex vector's real view) is 2·n."""
    if isinstance(dim, int):
        return sympy.Integer(dim)
    name, factor = ir.dim_factor(dim)
    return sympy.Rational(factor.numerator, factor.denominator) * sympy.Symbol(name)


def _any_args(shapes: list[ir.Shape]) -> str | None:
    return None


def _same_shape_args(shapes: list[ir.Shape]) -> str | None:
    if any(shape != shapes[0] for shape in shapes):
        return "all arguments must have the same shape (they are stacked as channels)"
    return None


def image_axes(shape: ir.Shape) -> tuple[ir.Dim | None, ir.Dim, ir.Dim] | None:
    """(channels, h, w) of an image-shaped value: channels None for an image (h, w) (one channel,
    without an axis of its own), c for a channel stack (c, h, w); None for scalars and vectors."""
    if len(shape) == 3:
        return (shape[0], shape[1], shape[2])
    if ir.is_matrix(shape):
        return (None, shape[0], shape[1])
    return None


def _image_args(shapes: list[ir.Shape]) -> str | None:
    first = image_axes(shapes[0])
    for index, shape in enumerate(shapes, start=1):
        axes = image_axes(shape)
        if axes is None:
            return (
                f"argument {index} is a vector ({ir.user_axes(shape)[0]}); conv2d takes images (h, w) "
                "or channel stacks (c, h, w) (use conv1d or mlp for vectors)"
            )
        if axes[1:] != first[1:]:
            size, first_size = "×".join(map(str, axes[1:])), "×".join(map(str, first[1:]))
            return f"argument {index} is {size} but argument 1 is {first_size}; all arguments need the same (h, w)"
    return None


def _channels(shape: ir.Shape) -> sympy.Expr:
    channels = image_axes(shape)[0]
    return sympy.Integer(1) if channels is None else numel((channels,))


def _conv2d_sizes(arg_shapes: tuple[ir.Shape, ...]) -> str:
    """Each argument's channel count, None for an image without a channel axis."""
    counts = [str(image_axes(shape)[0]) for shape in arg_shapes]
    return f"({counts[0]},)" if len(counts) == 1 else f"({', '.join(counts)})"


def _flat_sizes(arg_shapes: tuple[ir.Shape, ...]) -> str:
    in_features = " + ".join(" * ".join(str(d) for d in shape) for shape in arg_shapes)
    return f"{in_features}, {' * '.join(str(d) for d in arg_shapes[0])}"


def _mlp_count(options: Options, arg_shapes: tuple[ir.Shape, ...]) -> sympy.Expr:
    """Dense layers in → hidden (depth times) → out, each with a bias."""
    width, out = sum(numel(shape) for shape in arg_shapes), numel(arg_shapes[0])
    total = sympy.Integer(0)
    for _ in range(options["depth"]):
        total += width * options["hidden"] + options["hidden"]
        width = sympy.Integer(options["hidden"])
    return total + width * out + out


def _conv_count(
    taps_power: int, channels: Callable[[ir.Shape], sympy.Expr]
) -> Callable[[Options, tuple[ir.Shape, ...]], sympy.Expr]:
    """Convolutions in → hidden (depth times) → out channels, kernel^taps_power taps each, with
    biases; ``channels(shape)`` is an argument's channel count (in: their sum, out: the first's)."""

    def count(options: Options, arg_shapes: tuple[ir.Shape, ...]) -> sympy.Expr:
        taps = options["kernel"] ** taps_power
        width, total = sum(channels(shape) for shape in arg_shapes), sympy.Integer(0)
        for _ in range(options["depth"]):
            total += width * options["hidden"] * taps + options["hidden"]
            width = sympy.Integer(options["hidden"])
        out = channels(arg_shapes[0])
        return total + width * out * taps + out

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
    """``options``: name → its Option. ``torch``: the class of nets_torch, built as
    ``Class(sizes..., **options, zero_init=...)``, or None: the caller passes the module
    (``external``). ``sizes``: the source text of those sizes for the argument shapes, written
    with the dims' names (the model binds the dims it names when it is built). ``parameter_count``:
    learned scalars for resolved options and argument shapes (None: counted on the module)."""

    name: str
    torch: str | None
    options: dict[str, Option]
    check_args: Callable[[list[ir.Shape]], str | None]
    sizes: Callable[[tuple[ir.Shape, ...]], str]
    parameter_count: Callable[[Options, tuple[ir.Shape, ...]], sympy.Expr] | None
    numba: NumbaNet | None

    @property
    def class_name(self) -> str | None:
        return self.torch

    @property
    def external(self) -> bool:
        """The module is passed to the generated constructor, not built from the spec."""
        return self.torch is None

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
            sizes=_flat_sizes,
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
                "kernel": Option(3, 1, 63, odd=True),
                "activation": Option("relu", choices=ACTIVATIONS),
            },
            _same_shape_args,
            sizes=lambda arg_shapes: str(len(arg_shapes)),
            parameter_count=_conv_count(1, lambda shape: sympy.Integer(1)),
            numba=None,
        ),
        NetKind(
            "conv2d",
            "Conv2dNet",
            {
                "hidden": Option(16, 1, 4096),
                "depth": Option(2, 1, 64),
                "kernel": Option(3, 1, 63, odd=True),
                "activation": Option("relu", choices=ACTIVATIONS),
                # yes: first argument minus the CNN (DnCNN's residual denoiser); not for corrections
                "residual": Option("no", choices=("no", "yes")),
            },
            _image_args,
            sizes=_conv2d_sizes,
            parameter_count=_conv_count(2, _channels),
            numba=None,
        ),
        # the caller's nn.Module (e.g. a pretrained denoiser), passed to the constructor
        NetKind("external", None, {}, _any_args, sizes=lambda arg_shapes: "", parameter_count=None, numba=None),
    ]
}
