"""Printers from IR to code (readable math: unfoldgen.mathtext).

The torch printer follows the batched convention of the generated code: every quantity is a
batch of matrices ``(B, r, c)`` (vectors are columns), data broadcasts, scalars are ``()`` or
``(B, 1, 1)``. Transpose prints as ``.mT`` (a batched transpose), a linear solve as
``torch.linalg.solve`` (never an inverse).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from unfoldgen import ir
from unfoldgen.functions import FUNCTIONS
from unfoldgen.mathtext import ATOM, POWER, PRODUCT, SUM, UNARY, MathPrinter, dims_code
from unfoldgen.prox import PROX_TABLE, SET_TABLE, ProxOp, SetOp

__all__ = ["ATOM", "MathPrinter", "NumbaPrinter", "TorchPrinter", "dims_code", "format_float"]

_PLACEHOLDER = re.compile(r"\{(\d+)\}")


def _mixed(args: tuple[ir.Expr, ...]) -> bool:
    """Real and complex arguments together."""
    return len({ir.is_complex(arg) for arg in args}) > 1


def image_layout(shape: ir.Shape) -> str:
    """How a value is laid out for a net: "vector" (n, 1), "image" (h, w) or "channels" (c, h, w)."""
    if ir.is_stack(shape):
        return "channels"
    return "image" if ir.is_matrix(shape) else "vector"


def format_float(value: float | complex) -> str:
    if isinstance(value, complex):
        return repr(value)  # Python's own literal: 2j, (1+2j)
    if value == float("inf"):
        return 'float("inf")'
    if value == float("-inf"):
        return '-float("inf")'
    if value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    return repr(value)


class _PythonPrinter:
    """What the torch and numba printers share: names, arithmetic, powers, the operator table."""

    per_sample: frozenset[str] = frozenset()  # names of quantities that vary by sample
    helpers: list[str]  # the runtime helpers the printed code calls, in first-use order

    def _use(self, helper: str) -> None:
        if helper not in self.helpers:
            self.helpers.append(helper)

    def varies(self, expr: ir.Expr) -> bool:
        return ir.depends_on(expr, self.per_sample)

    def __call__(self, expr: ir.Expr) -> str:
        return self.print(expr)[0]

    def print(self, expr: ir.Expr) -> tuple[str, int]:
        raise NotImplementedError

    def wrap(self, expr: ir.Expr, needed: int) -> str:
        text, prec = self.print(expr)
        return text if prec >= needed else f"({text})"

    def common(self, expr: ir.Expr) -> tuple[str, int]:
        match expr:
            case ir.Ref(name=name):
                return name, ATOM
            case ir.Binary(op=op, left=left, right=right):
                prec = SUM if op in "+-" else PRODUCT
                return f"{self.wrap(left, prec)} {op} {self.wrap(right, prec + 1)}", prec
            case ir.Neg(operand=operand):
                return f"-{self.wrap(operand, UNARY)}", UNARY
            case ir.Power(base=base, exponent=ir.Const(value=value)) if value.is_integer():
                return f"{self.wrap(base, ATOM)} ** {int(value)}", POWER
            case ir.Power(base=base, exponent=exponent):
                return f"{self.wrap(base, ATOM)} ** {self.wrap(exponent, UNARY)}", POWER
            case ir.Prox(op=op, scale=scale, arg=arg, params=params):
                printed = ", ".join(self(value) for value in (arg, scale, *params))
                return f"{self.operator(PROX_TABLE[op])}({printed})", ATOM
            case ir.Proj(set=set_name, params=params, arg=arg):
                printed = ", ".join([self(arg)] + [self(p) for p in params])
                return f"{self.operator(SET_TABLE[set_name])}({printed})", ATOM
        raise TypeError(f"cannot print {type(expr).__name__} as code")

    def operator(self, entry: ProxOp | SetOp) -> str:
        """The function implementing a prox or projection entry in this backend."""
        raise NotImplementedError


class TorchPrinter(_PythonPrinter):
    """IR → torch source.

    ``per_sample`` names the quantities with a batch axis: a product of a shared matrix with one
    of them prints as ``shared_matmul`` (one GEMM), and ``helpers`` records that it was used.
    """

    def __init__(
        self,
        net_call: Callable[[str], str],
        lipschitz_call: Callable[[tuple[str, ...]], str],
        per_sample: frozenset[str] = frozenset(),
    ):
        self.net_call = net_call
        self.lipschitz_call = lipschitz_call
        self.per_sample = per_sample
        self.helpers: list[str] = []

    def print(self, expr: ir.Expr) -> tuple[str, int]:
        match expr:
            case ir.Binary(op="@", left=left, right=right) if ir.is_complex(left) != ir.is_complex(right):
                return self._mixed_matmul(left, right), ATOM
            case ir.Apply(func=func, args=args) if FUNCTIONS[func].one_dtype and _mixed(args):
                self._use("as_complex")  # e.g. torch.linalg.solve takes one dtype
                promoted = [self(arg) if ir.is_complex(arg) else f"as_complex({self(arg)})" for arg in args]
                return _PLACEHOLDER.sub(lambda m: promoted[int(m.group(1))], FUNCTIONS[func].torch), ATOM
            case ir.Binary(op="@", left=left, right=right) if self.varies(right) and not self.varies(left):
                self._use("shared_matmul")
                return f"shared_matmul({self(left)}, {self(right)})", ATOM
            case ir.Const(value=value):
                text = format_float(value)
                return text, (UNARY if text.startswith("-") else ATOM)
            case ir.Ones(shape=shape):  # a scalar's ones is (1, 1), like a per-sample scalar's (B, 1, 1)
                return f"torch.ones({dims_code(shape) or '1, 1'}, dtype=_dtype, device=_device)", ATOM
            case ir.Eye(size=size):
                return f"torch.eye({size}, dtype=_dtype, device=_device)", ATOM
            case ir.Transpose(operand=operand):
                return f"{self.wrap(operand, ATOM)}.mT", ATOM
            case ir.Apply(func="conj", args=(ir.Transpose(operand=operand),)):
                return f"{self.wrap(operand, ATOM)}.mH", ATOM
            case ir.Binary(op=op, left=left, right=right) if op in "+-*/" and self._per_sample_scalar_on_stack(
                left, right
            ):
                # a per-sample scalar is (B, 1, 1): one more axis before it broadcasts over (B, c, h, w)
                prec = SUM if op in "+-" else PRODUCT
                left_text = self._lifted(left, prec)
                right_text = self._lifted(right, prec + 1)
                return f"{left_text} {op} {right_text}", prec
            case ir.Prox(op=op, scale=scale, arg=arg, params=params) if ir.is_stack(arg.shape):
                return self._on_stack(PROX_TABLE[op].torch, arg, (scale, *params)), ATOM
            case ir.Proj(set=set_name, params=params, arg=arg) if ir.is_stack(arg.shape):
                return self._on_stack(SET_TABLE[set_name].torch, arg, params), ATOM
            case ir.Apply(func=func, args=args):
                entry = FUNCTIONS[func]
                if "{sample_axes}" in entry.torch:  # the entry reads the sample's axes itself
                    template = entry.torch.replace("{sample_axes}", str(len(args[0].shape)))
                    return self.apply(template, args, entry.integer_args), ATOM
                # a reduction over (B, c, h, w) reduces it as (B, c·h, w), like every per-sample matrix
                flatten_first = entry.over_samples and ir.is_stack(args[0].shape)
                return self.apply(entry.torch, args, entry.integer_args, flatten_first), ATOM
            case ir.NetCall(net=net, args=args) if ir.is_complex(args[0]):
                self._use("complex_net")
                layouts = tuple(image_layout(arg.shape) for arg in args)
                return f"complex_net({self.net_call(net)}, {layouts!r}, {', '.join(self(a) for a in args)})", ATOM
            case ir.NetCall(net=net, args=args):
                return f"{self.net_call(net)}({', '.join(self(a) for a in args)})", ATOM
            case ir.Lipschitz():
                return self.lipschitz_call(expr.variables), ATOM
        return self.common(expr)

    def operator(self, entry: ProxOp | SetOp) -> str:
        return entry.torch

    def _mixed_matmul(self, left: ir.Expr, right: ir.Expr) -> str:
        """A real matrix times a complex one: by parts (``mixed_matmul``), since torch multiplies
        matrices of one dtype only and a promoted copy of the real side would cost a copy and
        twice the flops."""
        self._use("mixed_matmul")
        self._use("shared_matmul")  # mixed_matmul calls it
        return f"mixed_matmul({self(left)}, {self(right)})"

    def _on_stack(self, operator: str, arg: ir.Expr, params: tuple[ir.Expr, ...]) -> str:
        """A prox or projection of matrices on a stack (B, c, h, w), run as (B, c, h·w): groups over
        the first axis (norm21, ball21) are then the pixels."""
        self._use("flat_stack")
        return f"flat_stack({operator}, {', '.join(self(a) for a in (arg, *params))})"

    def _per_sample_scalar_on_stack(self, left: ir.Expr, right: ir.Expr) -> bool:
        return any(
            ir.is_stack(other.shape) and ir.is_scalar(scalar.shape) and self.varies(scalar)
            for scalar, other in ((left, right), (right, left))
        )

    def _lifted(self, expr: ir.Expr, needed: int) -> str:
        if ir.is_scalar(expr.shape) and self.varies(expr):
            return f"{self.wrap(expr, ATOM)}.unsqueeze(-1)"
        return self.wrap(expr, needed)

    def apply(
        self, template: str, args: tuple[ir.Expr, ...], integer_args: tuple[int, ...] = (), flatten_first: bool = False
    ) -> str:
        """An entry's torch form: whole numbers printed as ints, the first argument flattened from
        (B, c, h, w) to (B, c·h, w) when asked."""

        def fill(match: re.Match) -> str:
            index = int(match.group(1))
            if index in integer_args:
                return str(int(args[index].value))
            arg = args[index]
            if index == 0 and flatten_first:
                return f"{self.wrap(arg, ATOM)}.flatten(-3, -2)"
            follows = template[match.end() : match.end() + 1]
            return self.wrap(arg, ATOM) if follows == "." else self(arg)

        return _PLACEHOLDER.sub(fill, template)


class NumbaUnsupportedError(Exception):
    """A construct with no numba form yet; the message says which."""


class NumbaPrinter(_PythonPrinter):
    """IR → numpy code for numba kernels.

    Layout: per-sample vectors are columns (a batch is ``(n, B)``), per-sample scalars ``(1, B)``
    rows, a single sample's matrix ``(m, n)``. ``per_sample`` names the quantities that vary
    by sample, so ``uᵀ v`` of two per-sample columns prints as a column-wise dot product.
    Constants are cast with ``_F`` (the kernel's float type) so float32 stays float32, complex
    ones with ``_C`` (its complex counterpart: complex64 with float32); ``_complex`` is that
    complex dtype. ``uᴴ v`` of two per-sample columns is ``colsum(conj(u) * v)``.
    """

    def __init__(
        self, per_sample: frozenset[str], batched: bool = True, net_call: Callable[[str, str], str] | None = None
    ):
        self.per_sample = per_sample if batched else frozenset()
        self.net_call = net_call  # (net, its input columns) → the call running the net
        self.helpers: list[str] = []

    def print(self, expr: ir.Expr) -> tuple[str, int]:
        match expr:
            case ir.Const(value=complex() as value):
                return f"_C({format_float(value)})", ATOM
            case ir.Const(value=value):
                return f"_F({format_float(value)})", ATOM
            case ir.Ones(shape=shape):
                return f"np.ones(({dims_code(shape) or '1, 1'}), _dtype)", ATOM
            case ir.Eye(size=size):
                return f"np.eye({size}, dtype=_dtype)", ATOM
            case ir.Binary(op="@", left=ir.Transpose(operand=row), right=right) if (
                ir.is_scalar(expr.shape) and self.varies(row) and self.varies(right)
            ):
                return f"colsum({self.wrap(row, PRODUCT)} * {self.wrap(right, PRODUCT + 1)})", ATOM
            case ir.Binary(op="@", left=ir.Apply(func="conj", args=(ir.Transpose(operand=row),)), right=right) if (
                ir.is_scalar(expr.shape) and self.varies(row) and self.varies(right)
            ):
                return f"colsum(np.conj({self(row)}) * {self.wrap(right, PRODUCT + 1)})", ATOM
            case ir.Binary(op="@", left=ir.Apply(func="conj", args=(ir.Transpose(operand=matrix),)), right=right) if (
                ir.is_complex(matrix) and ir.is_complex(right) and not self.varies(matrix)
            ):
                # Aᴴr = conj(Aᵀ conj(r)): conjugates the vectors, not a copy of the matrix per layer
                return f"np.conj(np.dot({self.wrap(matrix, ATOM)}.T, np.conj({self(right)})))", ATOM
            case ir.Binary(op="@", left=left, right=right) if ir.is_complex(left) != ir.is_complex(right):
                self._use("mixed_dot")  # by parts: no complex copy of the real side
                return f"mixed_dot({self(left)}, {self(right)})", ATOM
            case ir.Binary(op="@", left=left, right=right):
                return f"np.dot({self(left)}, {self(right)})", ATOM
            case ir.Transpose(operand=operand):
                if self.varies(operand):
                    raise NumbaUnsupportedError("a transposed per-sample quantity outside uᵀv")
                return f"{self.wrap(operand, ATOM)}.T", ATOM
            case ir.Apply(func=func, args=args) if FUNCTIONS[func].kind == "linear":
                entry = FUNCTIONS[func]
                template = entry.numba_column if ir.is_vector(args[entry.linear_arg].shape) else entry.numba
                if template is None:
                    raise NumbaUnsupportedError(f"{func}() of this shape in a kernel")
                if not ir.is_vector(args[entry.linear_arg].shape) and self.per_sample:
                    raise NumbaUnsupportedError(f"{func}() of an image in the batched layout")

                def fill(match: re.Match) -> str:
                    index = int(match.group(1))
                    return str(int(args[index].value)) if index in entry.integer_args else self(args[index])

                return _PLACEHOLDER.sub(fill, template), ATOM
            case ir.Apply(func=func, args=args):
                entry = FUNCTIONS[func]
                if entry.numba is None:
                    raise NumbaUnsupportedError(f"{func}() in a kernel")
                if ir.is_stack(args[0].shape) and entry.over_samples:
                    raise NumbaUnsupportedError(f"{func}() of a stack of images in a kernel")
                if not entry.per_column and any(self.varies(arg) for arg in args):
                    raise NumbaUnsupportedError(f"{func}() of a per-sample quantity in the batched layout")
                template = entry.numba
                if entry.over_samples and not ir.is_vector(args[0].shape):
                    if not ir.is_scalar(expr.shape):  # its numba form would act on each column alone
                        raise NumbaUnsupportedError(f"{func}() of a matrix")
                    args = (ir.Apply("as_column", (args[0],), (args[0].shape[0], 1)), *args[1:])
                    return _PLACEHOLDER.sub(lambda m: self._as_column(args, int(m.group(1))), template), ATOM
                if entry.one_dtype and _mixed(args):
                    return _PLACEHOLDER.sub(lambda m: self._as_complex(args[int(m.group(1))]), template), ATOM
                return _PLACEHOLDER.sub(lambda m: self(args[int(m.group(1))]), template), ATOM
            case ir.NetCall(net=net, args=args):
                if self.net_call is None:
                    raise NumbaUnsupportedError("nets in numba kernels")
                if any(ir.is_complex(arg) and not ir.is_vector(arg.shape) for arg in args):
                    raise NumbaUnsupportedError("a net on a complex image in a kernel (torch only)")
                columns = ", ".join(self._net_column(a) for a in args)
                stacked = f"np.concatenate(({columns}), axis=0)" if len(args) > 1 else columns
                call = self.net_call(net, stacked)
                first = args[0]
                if ir.is_complex(first):  # the output's rows: real parts, then imaginary parts
                    self._use("from_complex_parts")
                    return f"from_complex_parts({call}, _complex)", ATOM
                if not ir.is_vector(first.shape):
                    return f"{call}.reshape({dims_code(first.shape)})", ATOM
                return call, ATOM
            case ir.Lipschitz():
                raise NumbaUnsupportedError(f"lipschitz({', '.join(expr.variables)}) inside a rule")
        if isinstance(expr, (ir.Grad, ir.Lipschitz)):
            raise NumbaUnsupportedError(f"{type(expr).__name__} in a kernel")
        return self.common(expr)

    def operator(self, entry: ProxOp | SetOp) -> str:
        if entry.numba is None:
            raise NumbaUnsupportedError(f"{entry.key} has no numba implementation")
        return entry.numba

    def _net_column(self, arg: ir.Expr) -> str:
        """A net argument as the rows it feeds: a vector as it is, a matrix as one column, a
        complex vector as its real parts, then its imaginary parts (as torch's ``complex_net``)."""
        if ir.is_complex(arg):
            self._use("complex_parts")
            return f"complex_parts({self(arg)})"
        return self(arg) if ir.is_vector(arg.shape) else f"as_column({self(arg)})"

    def _as_complex(self, expr: ir.Expr) -> str:
        """``expr`` in the kernel's complex dtype, for the entries that take arguments of one dtype
        (``one_dtype``: np.linalg.solve); products go by parts instead (``mixed_dot``)."""
        return self(expr) if ir.is_complex(expr) else f"{self.wrap(expr, ATOM)}.astype(_complex)"

    def _as_column(self, args: tuple[ir.Expr, ...], index: int) -> str:
        arg = args[index]
        if isinstance(arg, ir.Apply) and arg.func == "as_column":
            return f"as_column({self(arg.args[0])})"
        return self(arg)
