"""The table of the language's functions: one entry per function, nothing about them elsewhere.

Each entry says how many arguments it takes, what shape it returns, whether the smooth part
of an objective may use it (and so how it is differentiated), and how it prints as torch,
numpy and readable math. Elementwise functions are defined once as sympy expressions; their
derivatives come from ``sympy.diff``, never from a hand-written second table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy

from unfoldgen import ir
from unfoldgen.ir import Shape


class ShapeError(Exception):
    """An argument's shape does not fit; the checker adds the span."""


# ------------------------------------------------------------ sympy scalar functions


class Sigmoid(sympy.Function):
    """σ(t) = 1 / (1 + e^-t)."""

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return Sigmoid(self.args[0]) * (1 - Sigmoid(self.args[0]))


class Softplus(sympy.Function):
    """softplus(t) = log(1 + e^t), with derivative σ(t)."""

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return Sigmoid(self.args[0])


class Clip(sympy.Function):
    """clip(t, lo, hi) = min(max(t, lo), hi); differentiated only where it is smooth."""


class HuberElem(sympy.Function):
    """h_δ(t) = t²/2 for |t| ≤ δ, δ(|t| − δ/2) otherwise; h_δ'(t) = clip(t, −δ, δ)."""

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        if argindex != 1:
            raise sympy.ArgumentIndexError(self, argindex)
        t, delta = self.args
        return Clip(t, -delta, delta)


# ------------------------------------------------------------------- shape rules


def _same(shapes: list[Shape]) -> Shape:
    return shapes[0]


def _scalar(shapes: list[Shape]) -> Shape:
    return ir.SCALAR


def _broadcast_all(shapes: list[Shape]) -> Shape:
    result: Shape = ()
    for shape in shapes:
        if not ir.is_scalar(shape) and not ir.is_scalar(result) and shape != result:
            raise ShapeError(f"arguments have different shapes {_fmt(result)} and {_fmt(shape)}")
        result = ir.broadcast(result, shape)
    return result


def _scalar_params(shapes: list[Shape]) -> Shape:
    for shape in shapes[1:]:
        if not ir.is_scalar(shape):
            raise ShapeError(f"expected a scalar parameter, got shape {_fmt(shape)}")
    return shapes[0]


def _pair_same(shapes: list[Shape]) -> Shape:
    if shapes[0] != shapes[1]:
        raise ShapeError(f"arguments have different shapes {_fmt(shapes[0])} and {_fmt(shapes[1])}")
    return ir.SCALAR


def _quad(shapes: list[Shape]) -> Shape:
    x, q = shapes
    if ir.is_scalar(x) or x[1] != 1:
        raise ShapeError(f"quad(x, Q) needs a vector x, got shape {_fmt(x)}")
    if q != (x[0], x[0]):
        raise ShapeError(f"quad(x, Q) needs Q of shape {_fmt((x[0], x[0]))}, got {_fmt(q)}")
    return ir.SCALAR


def _square(shapes: list[Shape]) -> Shape:
    shape = shapes[0]
    if ir.is_scalar(shape) or shape[0] != shape[1]:
        raise ShapeError(f"expected a square matrix, got shape {_fmt(shape)}")
    return shape


def _matrix(shapes: list[Shape]) -> Shape:
    if ir.is_scalar(shapes[0]):
        raise ShapeError("expected a vector or matrix, got a scalar")
    return ir.SCALAR


def _solve(shapes: list[Shape]) -> Shape:
    m, b = shapes
    if ir.is_scalar(m) or m[0] != m[1]:
        raise ShapeError(f"solve(M, b) needs a square M, got shape {_fmt(m)}")
    if ir.is_scalar(b) or b[0] != m[1]:
        raise ShapeError(f"solve(M, b) needs b with {m[1]} rows, got shape {_fmt(b)}")
    return b


def _fmt(shape: Shape) -> str:
    if shape == ():
        return "scalar"
    rows, cols = shape
    return f"[{rows}]" if cols == 1 else f"[{rows}, {cols}]"


# ---------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Function:
    """One function of the language.

    kind: ``elementwise`` (maps each entry; ``sympy`` defines it, derivative by sympy),
    ``reduction`` (a tensor to a per-sample scalar), ``nonsmooth`` (a reduction handled by its
    prox, never differentiated), or ``helper`` (build-time or in-iteration utility).
    ``torch``/``numpy``/``math``: format strings over the printed arguments.
    """

    name: str
    arity: tuple[int, int]
    kind: str
    shape: Callable[[list[Shape]], Shape]
    torch: str
    numpy: str
    math: str
    sympy: Callable[..., sympy.Expr] | None = None
    smooth: bool = True
    user: bool = True  # callable from specs (internal entries are produced by desugaring)
    torch_helpers: tuple[str, ...] = ()  # functions of runtime_torch the torch form calls
    numba_helpers: tuple[str, ...] = ()  # functions of ops_numba the numpy form calls


_SUM = "{0}.sum(dim=(-2, -1), keepdim=True)"

FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in [
        # elementwise, smooth
        Function("exp", (1, 1), "elementwise", _same, "torch.exp({0})", "np.exp({0})", "exp({0})", sympy.exp),
        Function("log", (1, 1), "elementwise", _same, "torch.log({0})", "np.log({0})", "log({0})", sympy.log),
        Function("sqrt", (1, 1), "elementwise", _same, "torch.sqrt({0})", "np.sqrt({0})", "√({0})", sympy.sqrt),
        Function(
            "sigmoid",
            (1, 1),
            "elementwise",
            _same,
            "torch.sigmoid({0})",
            "sigmoid({0})",
            "σ({0})",
            Sigmoid,
            numba_helpers=("sigmoid",),
        ),
        Function(
            "softplus",
            (1, 1),
            "elementwise",
            _same,
            "torch.nn.functional.softplus({0})",
            "softplus({0})",
            "softplus({0})",
            Softplus,
            numba_helpers=("softplus",),
        ),
        Function(
            "huber_elem",
            (2, 2),
            "elementwise",
            _scalar_params,
            "huber_elementwise({0}, {1})",
            "huber_elementwise({0}, {1})",
            "h_{1}({0})",
            HuberElem,
            user=False,
            torch_helpers=("huber_elementwise",),
            numba_helpers=("huber_elementwise",),
        ),
        Function(
            "clip",
            (3, 3),
            "elementwise",
            _scalar_params,
            "torch.clamp({0}, {1}, {2})",
            "np.minimum(np.maximum({0}, {1}), {2})",
            "clip({0}, {1}, {2})",
            Clip,
            smooth=False,
        ),
        # elementwise, not differentiable: in iterations only
        Function("abs", (1, 1), "elementwise", _same, "torch.abs({0})", "np.abs({0})", "|{0}|", smooth=False),
        Function("sign", (1, 1), "elementwise", _same, "torch.sign({0})", "np.sign({0})", "sign({0})", smooth=False),
        Function(
            "max",
            (2, 2),
            "elementwise",
            _broadcast_all,
            "torch.maximum({0}, torch.as_tensor({1}).to({0}))",
            "np.maximum({0}, {1})",
            "max({0}, {1})",
            smooth=False,
        ),
        Function(
            "min",
            (2, 2),
            "elementwise",
            _broadcast_all,
            "torch.minimum({0}, torch.as_tensor({1}).to({0}))",
            "np.minimum({0}, {1})",
            "min({0}, {1})",
            smooth=False,
        ),
        # reductions to a per-sample scalar
        Function("sum", (1, 1), "reduction", _scalar, _SUM, "colsum({0})", "Σ({0})", numba_helpers=("colsum",)),
        Function(
            "logsumexp",
            (1, 1),
            "reduction",
            _scalar,
            "torch.logsumexp({0}.flatten(-2), dim=-1)[..., None, None]",
            "logsumexp({0})",
            "logsumexp({0})",
            numba_helpers=("logsumexp",),
        ),
        Function(
            "softmax",
            (1, 1),
            "elementwise",
            _same,
            "torch.softmax({0}.flatten(-2), dim=-1).view_as({0})",
            "softmax({0})",
            "softmax({0})",
            user=False,
            numba_helpers=("softmax",),
        ),
        # desugared on sight (see unfoldgen.check): sumsq, dot, quad, huber
        Function("sumsq", (1, 1), "reduction", _scalar, "", "", ""),
        Function("dot", (2, 2), "reduction", _pair_same, "", "", ""),
        Function("quad", (2, 2), "reduction", _quad, "", "", ""),
        Function("huber", (2, 2), "reduction", _scalar_params, "", "", ""),
        # non-smooth reductions (their prox is in unfoldgen.prox)
        Function(
            "norm1",
            (1, 1),
            "nonsmooth",
            _matrix,
            "{0}.abs().sum(dim=(-2, -1), keepdim=True)",
            "colsum(np.abs({0}))",
            "‖{0}‖₁",
            smooth=False,
            numba_helpers=("colsum",),
        ),
        Function(
            "norm2",
            (1, 1),
            "nonsmooth",
            _matrix,
            "torch.linalg.vector_norm({0}, dim=(-2, -1), keepdim=True)",
            "np.sqrt(colsum({0} * {0}))",
            "‖{0}‖₂",
            smooth=False,
            numba_helpers=("colsum",),
        ),
        Function(
            "norminf",
            (1, 1),
            "nonsmooth",
            _matrix,
            "{0}.abs().amax(dim=(-2, -1), keepdim=True)",
            "np.max(np.abs({0}), axis=0).reshape(1, -1)",
            "‖{0}‖∞",
            smooth=False,
        ),
        Function(
            "norm0",
            (1, 1),
            "nonsmooth",
            _matrix,
            "({0} != 0).to({0}.dtype).sum(dim=(-2, -1), keepdim=True)",
            "colsum((np.abs({0}) > 0) * np.ones_like({0}))",
            "‖{0}‖₀",
            smooth=False,
            numba_helpers=("colsum",),
        ),
        Function(
            "nuclear",
            (1, 1),
            "nonsmooth",
            _matrix,
            "torch.linalg.matrix_norm({0}, ord='nuc', keepdim=True)",
            "",
            "‖{0}‖_*",
            smooth=False,
        ),
        # helpers
        Function(
            "opnorm",
            (1, 1),
            "helper",
            _matrix,
            "torch.linalg.matrix_norm({0}, ord=2, keepdim=True)",
            "np.linalg.norm({0}, 2)",
            "‖{0}‖₂,op",
            smooth=False,
        ),
        Function(
            "solve",
            (2, 2),
            "helper",
            _solve,
            "torch.linalg.solve({0}, {1})",
            "np.linalg.solve({0}, {1})",
            "({0})⁻¹ {1}",
            smooth=False,
        ),
    ]
}

# Functions whose value is a per-sample scalar of their argument's entries; their
# (sub)gradients are known, so the smooth part may contain the smooth ones.
NONSMOOTH = frozenset(name for name, f in FUNCTIONS.items() if f.kind == "nonsmooth")

# Names a spec may call that are not in FUNCTIONS: they are syntax, resolved by the checker.
SPECIAL_CALLS = frozenset({"grad", "prox", "proj", "lipschitz", "eye", "zeros", "ones"})


def user_function_names() -> frozenset[str]:
    return frozenset(name for name, f in FUNCTIONS.items() if f.user) | SPECIAL_CALLS


# ------------------------------------------------------- sympy derivative → IR


def elementwise_derivative(func: str, args: tuple[ir.Expr, ...]) -> ir.Expr:
    """φ′(a) for an elementwise φ, derived by sympy and rebuilt as IR over the arguments."""
    entry = FUNCTIONS[func]
    if entry.sympy is None or not entry.smooth:
        raise ValueError(f"{func} is not differentiable")
    symbols = sympy.symbols(f"a0:{len(args)}", real=True)
    derivative = sympy.simplify(sympy.diff(entry.sympy(*symbols), symbols[0]))
    return from_sympy(derivative, dict(zip(symbols, args, strict=True)), args[0].shape)


_SYMPY_FUNCTIONS: dict[type, str] = {
    sympy.exp: "exp",
    sympy.log: "log",
    Sigmoid: "sigmoid",
    Softplus: "softplus",
    Clip: "clip",
    HuberElem: "huber_elem",
}


def from_sympy(expr: sympy.Expr, symbols: dict[sympy.Symbol, ir.Expr], shape: Shape) -> ir.Expr:
    """Rebuild a sympy scalar expression over IR arguments (elementwise)."""
    if expr.is_Number:
        return ir.Const(float(expr))
    if expr.is_Symbol:
        return symbols[expr]
    if expr.is_Add:
        terms = [from_sympy(arg, symbols, shape) for arg in expr.as_ordered_terms()]
        result = terms[0]
        for term in terms[1:]:
            result = ir.add(result, term)
        return result
    if expr.is_Mul:
        numerator, denominator = expr.as_numer_denom()
        if denominator != 1:
            return ir.div(from_sympy(numerator, symbols, shape), from_sympy(denominator, symbols, shape))
        factors = [from_sympy(arg, symbols, shape) for arg in expr.as_ordered_factors()]
        result = factors[0]
        for factor in factors[1:]:
            result = ir.mul(result, factor)
        return result
    if expr.is_Pow:
        base, exponent = expr.args
        if exponent == sympy.Rational(1, 2):
            return ir.Apply("sqrt", (from_sympy(base, symbols, shape),), shape)
        if exponent.is_negative:
            return ir.div(ir.Const(1.0), from_sympy(base ** (-exponent), symbols, shape))
        return ir.power(from_sympy(base, symbols, shape), from_sympy(exponent, symbols, shape))
    for sympy_func, name in _SYMPY_FUNCTIONS.items():
        if expr.func == sympy_func:
            args = tuple(from_sympy(arg, symbols, shape) for arg in expr.args)
            return ir.Apply(name, args, shape)
    raise ValueError(f"cannot rebuild the derivative {expr} as tensor code")
