"""The table of the language's functions: one entry per function, nothing about them elsewhere.

Each entry says how many arguments it takes, what shape it returns, whether the smooth part
of an objective may use it (and so how it is differentiated), how it prints as torch, numba
and readable math (or that it has no numba form), how it folds when its arguments are numbers,
and how it desugars into other entries. Elementwise functions are defined once as sympy
expressions; their derivatives come from ``sympy.diff`` and are rebuilt as IR by looking the
functions up in this table, never in a hand-written second one. docs/contributing.md walks
through adding a function.
"""

from __future__ import annotations

import math
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
    """One function of the language, with everything every stage needs to know about it.

    kind: ``elementwise`` (maps each entry), ``reduction`` (a tensor to a per-sample scalar:
    in kernels it acts on each column), ``nonsmooth`` (a reduction handled by its prox, never
    differentiated), or ``helper`` (build-time or in-iteration utility).

    torch: format string over the printed arguments; ``torch_helpers`` names the functions of
    ``runtime_torch`` it calls. numba: the numpy format string printed into kernels, or None:
    then a spec using it compiles without kernels (``compile`` prints a note); ``numba_helpers``
    names the functions of ``ops_numba`` it calls. Both are None for a function that ``desugar``
    rewrites into others before any backend sees it.

    Kernels hold a batch of vector samples as the columns of one array, and one per-sample
    matrix as itself. whole_sample: the numba form combines all entries of each column (every
    reduction, and softmax), so a matrix sample reaches it as one column. per_column: the numba
    form treats each column of a per-sample argument as its own sample; False (opnorm treats its
    argument as one matrix) keeps per-sample arguments out of the batched layout.

    sympy: the single symbolic definition of an elementwise function; its derivative comes from
    ``sympy.diff`` and is rebuilt as IR through this table (see ``from_sympy``). fold: its value
    at numbers (constant folding) where sympy cannot evaluate it; otherwise sympy does.
    """

    name: str
    arity: tuple[int, int]
    kind: str
    shape: Callable[[list[Shape]], Shape]
    math: str
    torch: str | None
    numba: str | None
    sympy: Callable[..., sympy.Expr] | None = None
    fold: Callable[..., float] | None = None
    desugar: Callable[[tuple[ir.Expr, ...], Shape], ir.Expr] | None = None
    smooth: bool = True
    user: bool = True  # callable from specs (internal entries are produced by desugaring)
    whole_sample: bool = False
    per_column: bool = True
    torch_helpers: tuple[str, ...] = ()
    numba_helpers: tuple[str, ...] = ()

    @property
    def over_samples(self) -> bool:
        """Combines all entries of a sample: reductions always, elementwise-shaped ones if marked."""
        return self.whole_sample or self.kind in ("reduction", "nonsmooth")

    @property
    def foldable(self) -> bool:
        return self.fold is not None or self.sympy is not None

    def evaluate(self, *numbers: float) -> float:
        """The value at ``numbers``; ValueError where it is not a finite real number."""
        try:
            if self.fold is not None:
                value = complex(self.fold(*numbers))
            elif self.sympy is not None:
                value = complex(self.sympy(*(sympy.Float(number) for number in numbers)).evalf())
            else:
                raise ValueError(f"{self.name}() has no value at build time")
        except (TypeError, OverflowError, ZeroDivisionError):
            value = complex(math.nan)
        if value.imag != 0 or not math.isfinite(value.real):
            raise ValueError(f"{self.name}{tuple(numbers)} is not a finite real number")
        return value.real


def _sigmoid(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t)) if t >= 0 else math.exp(t) / (1.0 + math.exp(t))


def _huber(t: float, delta: float) -> float:
    return 0.5 * t * t if abs(t) <= delta else delta * (abs(t) - delta / 2)


def reduce_sum(value: ir.Expr) -> ir.Expr:
    """``sum(value)``; a scalar is its own sum (0-dim tensors have no dims to sum over)."""
    return value if ir.is_scalar(value.shape) else ir.Apply("sum", (value,), ir.SCALAR)


def _scalar_is_itself(name: str) -> Callable[[tuple[ir.Expr, ...], Shape], ir.Expr]:
    """A reduction of one number is the number itself."""

    def desugar(args: tuple[ir.Expr, ...], shape: Shape) -> ir.Expr:
        return args[0] if ir.is_scalar(args[0].shape) else ir.Apply(name, args, shape)

    return desugar


def _tensor_first(name: str) -> Callable[[tuple[ir.Expr, ...], Shape], ir.Expr]:
    """Symmetric in its arguments; the tensor goes first, as in ``torch.maximum(t, c)``."""

    def desugar(args: tuple[ir.Expr, ...], shape: Shape) -> ir.Expr:
        if isinstance(args[0], ir.Const) and not isinstance(args[1], ir.Const):
            args = (args[1], args[0])
        return ir.Apply(name, args, shape)

    return desugar


_SUM = "{0}.sum(dim=(-2, -1), keepdim=True)"

FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in [
        # elementwise, smooth
        Function("exp", (1, 1), "elementwise", _same, "exp({0})", "torch.exp({0})", "np.exp({0})", sympy.exp),
        Function("log", (1, 1), "elementwise", _same, "log({0})", "torch.log({0})", "np.log({0})", sympy.log),
        Function("sqrt", (1, 1), "elementwise", _same, "√({0})", "torch.sqrt({0})", "np.sqrt({0})", sympy.sqrt),
        Function("tanh", (1, 1), "elementwise", _same, "tanh({0})", "torch.tanh({0})", "np.tanh({0})", sympy.tanh),
        Function(
            "sigmoid",
            (1, 1),
            "elementwise",
            _same,
            "σ({0})",
            torch="torch.sigmoid({0})",
            numba="sigmoid({0})",
            sympy=Sigmoid,
            fold=_sigmoid,
            numba_helpers=("sigmoid",),
        ),
        Function(
            "softplus",
            (1, 1),
            "elementwise",
            _same,
            "softplus({0})",
            torch="torch.nn.functional.softplus({0})",
            numba="softplus({0})",
            sympy=Softplus,
            fold=lambda t: max(t, 0.0) + math.log1p(math.exp(-abs(t))),
            numba_helpers=("softplus",),
        ),
        Function(
            "huber_elem",
            (2, 2),
            "elementwise",
            _scalar_params,
            "h_{1}({0})",
            torch="huber_elementwise({0}, {1})",
            numba="huber_elementwise({0}, {1})",
            sympy=HuberElem,
            fold=_huber,
            user=False,
            torch_helpers=("huber_elementwise",),
            numba_helpers=("huber_elementwise",),
        ),
        Function(
            "clip",
            (3, 3),
            "elementwise",
            _scalar_params,
            "clip({0}, {1}, {2})",
            torch="torch.clamp({0}, {1}, {2})",
            numba="np.minimum(np.maximum({0}, {1}), {2})",
            sympy=Clip,
            fold=lambda t, lo, hi: min(max(t, lo), hi),
            smooth=False,
        ),
        # elementwise, not differentiable: in iterations only
        Function("abs", (1, 1), "elementwise", _same, "|{0}|", "torch.abs({0})", "np.abs({0})", fold=abs, smooth=False),
        Function(
            "sign",
            (1, 1),
            "elementwise",
            _same,
            "sign({0})",
            torch="torch.sign({0})",
            numba="np.sign({0})",
            fold=lambda t: float((t > 0) - (t < 0)),
            smooth=False,
        ),
        Function(
            "max",
            (2, 2),
            "elementwise",
            _broadcast_all,
            "max({0}, {1})",
            torch="torch.maximum({0}, torch.as_tensor({1}, dtype={0}.dtype, device={0}.device))",
            numba="np.maximum({0}, {1})",
            fold=max,
            desugar=_tensor_first("max"),
            smooth=False,
        ),
        Function(
            "min",
            (2, 2),
            "elementwise",
            _broadcast_all,
            "min({0}, {1})",
            torch="torch.minimum({0}, torch.as_tensor({1}, dtype={0}.dtype, device={0}.device))",
            numba="np.minimum({0}, {1})",
            fold=min,
            desugar=_tensor_first("min"),
            smooth=False,
        ),
        # reductions to a per-sample scalar
        Function(
            "sum",
            (1, 1),
            "reduction",
            _scalar,
            "Σ({0})",
            torch=_SUM,
            numba="colsum({0})",
            fold=lambda t: t,
            desugar=_scalar_is_itself("sum"),
            numba_helpers=("colsum",),
        ),
        Function(
            "logsumexp",
            (1, 1),
            "reduction",
            _scalar,
            "logsumexp({0})",
            torch="torch.logsumexp({0}.flatten(-2), dim=-1)[..., None, None]",
            numba="logsumexp({0})",
            fold=lambda t: t,
            desugar=_scalar_is_itself("logsumexp"),
            numba_helpers=("logsumexp",),
        ),
        Function(
            "softmax",
            (1, 1),
            "elementwise",
            _same,
            "softmax({0})",
            torch="torch.softmax({0}.flatten(-2), dim=-1).view_as({0})",
            numba="softmax({0})",
            user=False,
            whole_sample=True,
            numba_helpers=("softmax",),
        ),
        # rewritten into the functions above when the checker meets them
        Function(
            "sumsq",
            (1, 1),
            "reduction",
            _scalar,
            "‖{0}‖²",
            torch=None,
            numba=None,
            fold=lambda t: t * t,
            desugar=lambda args, shape: reduce_sum(ir.power(args[0], ir.Const(2.0))),
        ),
        Function(
            "dot",
            (2, 2),
            "reduction",
            _pair_same,
            "⟨{0}, {1}⟩",
            torch=None,
            numba=None,
            fold=lambda u, v: u * v,
            desugar=lambda args, shape: reduce_sum(ir.mul(args[0], args[1])),
        ),
        Function(
            "quad",
            (2, 2),
            "reduction",
            _quad,
            "{0}ᵀ {1} {0}",
            torch=None,
            numba=None,
            desugar=lambda args, shape: ir.matmul(ir.matmul(ir.transpose(args[0]), args[1]), args[0]),
        ),
        Function(
            "huber",
            (2, 2),
            "reduction",
            _scalar_params,
            "Σ h_{1}({0})",
            torch=None,
            numba=None,
            fold=_huber,
            desugar=lambda args, shape: reduce_sum(ir.Apply("huber_elem", args, args[0].shape)),
        ),
        # non-smooth reductions (their prox is in unfoldgen.prox)
        Function(
            "norm1",
            (1, 1),
            "nonsmooth",
            _matrix,
            "‖{0}‖₁",
            torch="{0}.abs().sum(dim=(-2, -1), keepdim=True)",
            numba="colsum(np.abs({0}))",
            smooth=False,
            numba_helpers=("colsum",),
        ),
        Function(
            "norm2",
            (1, 1),
            "nonsmooth",
            _matrix,
            "‖{0}‖₂",
            torch="torch.linalg.vector_norm({0}, dim=(-2, -1), keepdim=True)",
            numba="np.sqrt(colsum({0} * {0}))",
            smooth=False,
            numba_helpers=("colsum",),
        ),
        Function(
            "norminf",
            (1, 1),
            "nonsmooth",
            _matrix,
            "‖{0}‖∞",
            torch="{0}.abs().amax(dim=(-2, -1), keepdim=True)",
            numba="colmax(np.abs({0}))",
            smooth=False,
            numba_helpers=("colmax",),
        ),
        Function(
            "norm0",
            (1, 1),
            "nonsmooth",
            _matrix,
            "‖{0}‖₀",
            torch="({0} != 0).to({0}.dtype).sum(dim=(-2, -1), keepdim=True)",
            numba="colsum((np.abs({0}) > 0) * np.ones_like({0}))",
            smooth=False,
            numba_helpers=("colsum",),
        ),
        Function(
            "nuclear",
            (1, 1),
            "nonsmooth",
            _matrix,
            "‖{0}‖_*",
            torch="torch.linalg.matrix_norm({0}, ord='nuc', keepdim=True)",
            numba=None,
            smooth=False,
        ),
        # helpers
        Function(
            "opnorm",
            (1, 1),
            "helper",
            _matrix,
            "‖{0}‖₂,op",
            torch="torch.linalg.matrix_norm({0}, ord=2, keepdim=True)",
            numba="np.linalg.norm({0}, 2)",
            smooth=False,
            per_column=False,
        ),
        Function(
            "solve",
            (2, 2),
            "helper",
            _solve,
            "({0})⁻¹ {1}",
            torch="torch.linalg.solve({0}, {1})",
            numba="np.linalg.solve({0}, {1})",
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
    """φ′(a) for an elementwise φ, derived by sympy and rebuilt as IR over the arguments.

    The simplified derivative is preferred; where sympy simplifies into a function this table
    does not have (tanh′ = 1 − tanh² becomes 1/cosh²), the derivative as differentiated is used.
    """
    entry = FUNCTIONS[func]
    if entry.sympy is None or not entry.smooth:
        raise ValueError(f"{func} is not differentiable")
    symbols = sympy.symbols(f"a0:{len(args)}", real=True)
    derivative = sympy.diff(entry.sympy(*symbols), symbols[0])
    bound = dict(zip(symbols, args, strict=True))
    try:
        return from_sympy(sympy.simplify(derivative), bound, args[0].shape)
    except ValueError:
        return from_sympy(derivative, bound, args[0].shape)


def _function_named(expr: sympy.Expr) -> str | None:
    """The entry whose symbolic definition ``expr`` applies (sqrt is a power, not a function)."""
    for name, entry in FUNCTIONS.items():
        if entry.sympy is not None and expr.func == entry.sympy:
            return name
    return None


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
    name = _function_named(expr)
    if name is not None:
        args = tuple(from_sympy(arg, symbols, shape) for arg in expr.args)
        return ir.Apply(name, args, shape)
    raise ValueError(f"cannot rebuild the derivative {expr} as tensor code (no entry of FUNCTIONS defines {expr.func})")
