"""The typed intermediate representation: tensor expressions with shapes.

Every quantity is a matrix in the IR (a vector of length n is an n×1 column, an image of
h×w pixels an h×w matrix), a stack of matrices ``(c, h, w)`` (image channels, the two
components of an image gradient) or a scalar (shape ``()``); shapes hold symbolic dims
(names, or names scaled by a whole factor: ``h/4``, ``4*h``) or integers. Constructors
simplify as they build (constant folding, scalar factors pulled out of products and
transposes), so derived gradients come out in the form a person would write:
``A.T @ (A @ x - y)``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, fields
from fractions import Fraction

Dim = str | int
Shape = tuple[()] | tuple[Dim, Dim] | tuple[Dim, Dim, Dim]

SCALAR: Shape = ()


def is_scalar(shape: Shape) -> bool:
    """Scalars and 1×1 results (``x.T @ x``) both act as scalars."""
    return shape == () or shape == (1, 1)


def is_vector(shape: Shape) -> bool:
    """An ``(n, 1)`` column: the user writes and sees it as ``(n,)``."""
    return len(shape) == 2 and shape[1] == 1


def is_stack(shape: Shape) -> bool:
    """A stack of matrices ``(c, h, w)``: image channels, or the components of an image gradient."""
    return len(shape) == 3


def is_matrix(shape: Shape) -> bool:
    """Neither a scalar nor a vector: each sample's value is a whole matrix (or a stack of them)."""
    return not is_scalar(shape) and not is_vector(shape)


def user_axes(shape: Shape) -> tuple[Dim, ...]:
    """The axes the user writes and sees: scalars ``()``, vectors ``(n,)``, matrices ``(m, n)``."""
    if shape == ():
        return ()
    return shape[:1] if is_vector(shape) else shape


_DERIVED_DIM = re.compile(r"^(?:(\d+)\*)?([A-Za-z]\w*)(?:/(\d+))?$")


def dim_factor(dim: str) -> tuple[str, Fraction]:
    """A dim as (its base name, the factor on it): ``h/4`` → (h, 1/4), ``2*h`` → (h, 2)."""
    match = _DERIVED_DIM.match(dim)
    if match is None:
        raise ValueError(f"{dim!r} is not a dim")
    numerator, name, denominator = match.groups()
    return name, Fraction(int(numerator or 1), int(denominator or 1))


def derived_dim(name: str, factor: Fraction) -> str:
    """The canonical text of ``factor · name``: ``h``, ``h/4``, ``2*h``, ``3*h/4``."""
    scaled = name if factor.numerator == 1 else f"{factor.numerator}*{name}"
    return scaled if factor.denominator == 1 else f"{scaled}/{factor.denominator}"


def scale_dim(dim: Dim, numerator: int, denominator: int) -> Dim:
    """``dim · numerator / denominator``: a number when the dim is one (it must divide), else a
    derived dim such as ``h/4`` (down-sampling) or ``4*h`` (up-sampling)."""
    if isinstance(dim, int):
        if (dim * numerator) % denominator:
            raise ValueError(f"a size of {dim} is not divisible by {denominator}")
        return dim * numerator // denominator
    name, factor = dim_factor(dim)
    return derived_dim(name, factor * Fraction(numerator, denominator))


def dim_code(dim: Dim) -> str:
    """A dim as Python code over its base dim: ``h``, ``h // 4``, ``4 * h``."""
    if isinstance(dim, int):
        return str(dim)
    name, factor = dim_factor(dim)
    scaled = name if factor.numerator == 1 else f"{factor.numerator} * {name}"
    return scaled if factor.denominator == 1 else f"{scaled} // {factor.denominator}"


def base_dims(shape: Shape) -> list[str]:
    """The named dims a shape's sizes are computed from (``h`` for ``h/4``), without repeats."""
    return list(dict.fromkeys(dim_factor(dim)[0] for dim in shape if isinstance(dim, str)))


def axes_text(axes: tuple, batch: bool = False) -> str:
    """``(B, m, n)``: a shape as documentation and error messages write it (B: the batch)."""
    parts = (["B"] if batch else []) + [str(axis) for axis in axes]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


@dataclass(frozen=True)
class Const:
    value: float | complex  # complex only with a nonzero imaginary part (``2j``)
    shape: Shape = SCALAR


@dataclass(frozen=True)
class Ref:
    """A named quantity; ``role`` is data, input, var, param, hyper, weight, state, let or dim;
    ``complex``: declared ``complex`` (or a temporary computed as a complex value)."""

    name: str
    role: str
    shape: Shape
    complex: bool = False


@dataclass(frozen=True)
class Ones:
    """A tensor of ones (materialised where broadcasting cannot stand in for it)."""

    shape: Shape


@dataclass(frozen=True)
class Eye:
    size: Dim
    shape: Shape


@dataclass(frozen=True)
class Binary:
    """Elementwise ``+ - * /`` with scalar broadcasting, and ``@`` (matrix product)."""

    op: str
    left: Expr
    right: Expr
    shape: Shape


@dataclass(frozen=True)
class Neg:
    operand: Expr
    shape: Shape


@dataclass(frozen=True)
class Power:
    base: Expr
    exponent: Expr
    shape: Shape


@dataclass(frozen=True)
class Transpose:
    operand: Expr
    shape: Shape


@dataclass(frozen=True)
class Apply:
    """A function of the language's table (``unfoldgen.functions``)."""

    func: str
    args: tuple[Expr, ...]
    shape: Shape


@dataclass(frozen=True)
class Prox:
    """``prox[scale * func (+ set), option value …](arg)``, resolved against the operator table;
    ``params`` are the option values, in the order of the entry's ``options``."""

    op: str  # key of unfoldgen.prox.PROX_TABLE
    scale: Expr
    arg: Expr
    shape: Shape
    params: tuple[Expr, ...] = ()


@dataclass(frozen=True)
class Proj:
    """Projection onto a set of unfoldgen.prox.SET_TABLE with its parameters."""

    set: str
    params: tuple[Expr, ...]
    arg: Expr
    shape: Shape


@dataclass(frozen=True)
class Grad:
    """∇ of the smooth part w.r.t. ``var``, with variables substituted; expanded by lowering."""

    var: str
    substitutions: tuple[tuple[str, Expr], ...]
    shape: Shape
    complex: bool = False  # the variable is complex (so is its gradient)


@dataclass(frozen=True)
class Lipschitz:
    """The Lipschitz constant of ∇_var of the smooth part (largest Hessian eigenvalue); with
    ``others``, of the gradient with respect to (var, *others) jointly."""

    var: str
    shape: Shape = SCALAR
    others: tuple[str, ...] = ()

    @property
    def variables(self) -> tuple[str, ...]:
        return (self.var, *self.others)


@dataclass(frozen=True)
class NetCall:
    net: str
    args: tuple[Expr, ...]
    shape: Shape


Expr = Const | Ref | Ones | Eye | Binary | Neg | Power | Transpose | Apply | Prox | Proj | Grad | Lipschitz | NetCall


@functools.lru_cache(maxsize=4096)
def is_complex(expr: Expr) -> bool:
    """Whether an expression's values are complex: a complex name or literal, or an operation on
    one that keeps it complex (``re``, ``abs``, the norms and ``lipschitz`` are real; what each
    function does is its table entry's ``on_complex``)."""
    from unfoldgen.functions import FUNCTIONS  # the table builds IR: imported when first needed

    match expr:
        case Const(value=value):
            return isinstance(value, complex)
        case Ref(complex=flag) | Grad(complex=flag):
            return flag
        case Ones() | Eye() | Lipschitz():
            return False
        case Apply(func=func, args=args):
            rule = FUNCTIONS[func].on_complex
            return rule == "complex" or (rule == "follow" and any(is_complex(arg) for arg in args))
        case Prox(arg=arg) | Proj(arg=arg):
            return is_complex(arg)
        case NetCall(args=args):
            return is_complex(args[0])
    return any(is_complex(child) for child in children(expr))


def children(expr: Expr) -> tuple[Expr, ...]:
    """The sub-expressions of a node, in order."""
    out: list[Expr] = []
    for field in fields(expr):
        value = getattr(expr, field.name)
        if isinstance(value, tuple):
            for item in value:
                if isinstance(item, tuple):  # Grad substitutions
                    out.append(item[1])
                elif not isinstance(item, (str, int)):
                    out.append(item)
        elif hasattr(value, "__dataclass_fields__"):
            out.append(value)
    return tuple(out)


def walk(expr: Expr):
    """Every node of an expression, parents before children."""
    yield expr
    for child in children(expr):
        yield from walk(child)


def depends_on(expr: Expr, names: set[str] | frozenset[str]) -> bool:
    return any(isinstance(node, Ref) and node.name in names for node in walk(expr))


def refs(expr: Expr) -> list[str]:
    """Names referenced, in first-use order, without repeats."""
    seen: dict[str, None] = {}
    for node in walk(expr):
        if isinstance(node, Ref):
            seen.setdefault(node.name, None)
    return list(seen)


def substitute(expr: Expr, mapping: dict[str, Expr]) -> Expr:
    """Replace references by expressions, rebuilding (and re-simplifying) the tree."""
    match expr:
        case Ref(name=name) if name in mapping:
            return mapping[name]
        case Binary(op=op, left=left, right=right):
            return binary(op, substitute(left, mapping), substitute(right, mapping))
        case Neg(operand=operand):
            return neg(substitute(operand, mapping))
        case Power(base=base, exponent=exponent):
            return power(substitute(base, mapping), substitute(exponent, mapping))
        case Transpose(operand=operand):
            return transpose(substitute(operand, mapping))
        case Apply(func=func, args=args, shape=shape):
            return Apply(func, tuple(substitute(a, mapping) for a in args), shape)
        case Prox(op=op, scale=scale, arg=arg, shape=shape, params=params):
            params = tuple(substitute(p, mapping) for p in params)
            return Prox(op, substitute(scale, mapping), substitute(arg, mapping), shape, params)
        case Proj(set=set_name, params=params, arg=arg, shape=shape):
            return Proj(set_name, tuple(substitute(p, mapping) for p in params), substitute(arg, mapping), shape)
        case Grad(var=var, substitutions=subs, shape=shape):
            return Grad(var, tuple((n, substitute(e, mapping)) for n, e in subs), shape)
        case NetCall(net=net, args=args, shape=shape):
            return NetCall(net, tuple(substitute(a, mapping) for a in args), shape)
    return expr


# ------------------------------------------------------------------ simplifying constructors


def broadcast(left: Shape, right: Shape) -> Shape:
    if left == ():
        return right
    if right == ():
        return left
    if left == (1, 1):
        return right
    if right == (1, 1):
        return left
    return left


def _const(expr: Expr) -> float | complex | None:
    return expr.value if isinstance(expr, Const) else None


def split_factor(expr: Expr) -> tuple[float | complex, Expr]:
    """``c * e`` → (c, e) for a constant factor c; else (1, expr)."""
    if isinstance(expr, Binary) and expr.op == "*" and isinstance(expr.left, Const):
        return expr.left.value, expr.right
    if isinstance(expr, Neg):
        factor, rest = split_factor(expr.operand)
        return -factor, rest
    return 1.0, expr


def scale(factor: float | complex, expr: Expr) -> Expr:
    """``factor * expr`` in simplest form."""
    inner, rest = split_factor(expr)
    factor *= inner
    if isinstance(rest, Const) and rest.shape == ():
        return Const(_number(factor * rest.value))
    if factor == 1.0:
        return rest
    if factor == -1.0:
        return Neg(rest, rest.shape)
    if factor == 0.0 and rest.shape == ():
        return Const(0.0)
    return Binary("*", Const(factor), rest, rest.shape)


def add(left: Expr, right: Expr) -> Expr:
    if _const(left) == 0.0 and left.shape == () and right.shape != ():
        return right
    if _const(right) == 0.0 and right.shape == () and left.shape != ():
        return left
    if isinstance(left, Const) and isinstance(right, Const):
        return Const(_number(left.value + right.value))
    if _const(left) == 0.0:
        return right
    if _const(right) == 0.0:
        return left
    if isinstance(right, Neg):
        return sub(left, right.operand)
    return Binary("+", left, right, broadcast(left.shape, right.shape))


def sub(left: Expr, right: Expr) -> Expr:
    if isinstance(left, Const) and isinstance(right, Const):
        return Const(_number(left.value - right.value))
    if _const(right) == 0.0:
        return left
    if _const(left) == 0.0:
        return neg(right)
    if isinstance(right, Neg):
        return add(left, right.operand)
    return Binary("-", left, right, broadcast(left.shape, right.shape))


def neg(operand: Expr) -> Expr:
    if isinstance(operand, Const):
        return Const(-operand.value, operand.shape)
    if isinstance(operand, Neg):
        return operand.operand
    if isinstance(operand, Binary) and operand.op == "-":
        return sub(operand.right, operand.left)
    return scale(-1.0, operand)


def mul(left: Expr, right: Expr) -> Expr:
    if isinstance(left, Const) and left.shape == ():
        return scale(left.value, right)
    if isinstance(right, Const) and right.shape == ():
        return scale(right.value, left)
    if isinstance(left, Ones) and left.shape == broadcast(left.shape, right.shape):
        return right if right.shape == left.shape else Binary("*", left, right, left.shape)
    if isinstance(right, Ones) and right.shape == left.shape:
        return left
    lf, lrest = split_factor(left)
    rf, rrest = split_factor(right)
    if lf * rf != 1.0:
        return scale(lf * rf, mul(lrest, rrest))
    return Binary("*", left, right, broadcast(left.shape, right.shape))


def div(left: Expr, right: Expr) -> Expr:
    if isinstance(left, Const) and isinstance(right, Const) and right.value != 0:
        return Const(_number(left.value / right.value))
    if _const(right) == 1.0:
        return left
    return Binary("/", left, right, broadcast(left.shape, right.shape))


def matmul(left: Expr, right: Expr) -> Expr:
    shape = (left.shape[0], right.shape[1])
    lf, lrest = split_factor(left)
    rf, rrest = split_factor(right)
    if lf * rf != 1.0:
        return scale(lf * rf, Binary("@", lrest, rrest, shape))
    return Binary("@", left, right, shape)


def conj(operand: Expr) -> Expr:
    """The complex conjugate: the operand itself when it is real."""
    if not is_complex(operand):
        return operand
    if isinstance(operand, Const):
        return Const(_number(operand.value.conjugate()), operand.shape)
    if isinstance(operand, Apply) and operand.func == "conj":
        return operand.args[0]
    factor, rest = split_factor(operand)
    if factor != 1.0:
        return scale(factor.conjugate(), conj(rest))
    return Apply("conj", (operand,), operand.shape)


def adjoint(operand: Expr) -> Expr:
    """The conjugate transpose ``operand.H`` (the transpose of a real operand)."""
    return conj(transpose(operand))


def _number(value: complex) -> float | complex:
    """A complex number with no imaginary part is a real one (so ``1j * 1j`` folds to -1.0)."""
    return value.real if isinstance(value, complex) and value.imag == 0 else value


def transpose(operand: Expr) -> Expr:
    if isinstance(operand, Transpose):
        return operand.operand
    if isinstance(operand, Apply) and operand.func == "conj" and isinstance(operand.args[0], Transpose):
        return conj(operand.args[0].operand)
    if operand.shape == ():
        return operand
    factor, rest = split_factor(operand)
    if factor != 1.0:
        return scale(factor, transpose(rest))
    return Transpose(operand, (operand.shape[1], operand.shape[0]))


def _real_positive_power(base: float | complex, exponent: float | complex) -> bool:
    """A power of real numbers with a positive base: folded (complex powers stay unevaluated)."""
    return not isinstance(base, complex) and not isinstance(exponent, complex) and base > 0


def power(base: Expr, exponent: Expr) -> Expr:
    if _const(exponent) == 1.0:
        return base
    if _const(exponent) == 0.0:
        return Const(1.0) if base.shape == () else Ones(base.shape)
    if isinstance(base, Const) and isinstance(exponent, Const) and _real_positive_power(base.value, exponent.value):
        try:
            return Const(base.value**exponent.value)
        except OverflowError:
            return Const(float("inf"))
    return Power(base, exponent, base.shape)


def binary(op: str, left: Expr, right: Expr) -> Expr:
    return {"+": add, "-": sub, "*": mul, "/": div, "@": matmul}[op](left, right)
