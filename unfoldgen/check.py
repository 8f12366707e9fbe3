"""Check a spec's AST and elaborate it into typed IR.

Names are resolved, shapes inferred and checked (symbolic dims), objective terms classified
as smooth or non-smooth, constraints matched to projection sets, iteration rules validated.
Every problem found is a SpecError at the span of the offending node.
"""

from __future__ import annotations

import builtins
import cmath
import difflib
import keyword
import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from fractions import Fraction

from unfoldgen import calculus, ir, spectral
from unfoldgen import syntax as s
from unfoldgen.errors import Span, SpecError
from unfoldgen.functions import FUNCTIONS, NONSMOOTH, SPECIAL_CALLS, ShapeError, user_function_names
from unfoldgen.names import GENERATED_PREFIXES, generated_names
from unfoldgen.nets import NET_KINDS
from unfoldgen.prox import PROX_FUNCTIONS, PROX_TABLE, SET_TABLE, prox_key

IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
MAX_IDENTIFIER = 64
MAX_LAYERS = 10_000
MAX_DIM = 10_000_000
LAYER_INDEX = "k"  # the layer index (0-based) in an unfold's hypers, weights and rules, unless a spec declares k
# `fixed point (tolerance T, iterations N)`: the options and their defaults
FIXED_POINT_DEFAULTS = {"tolerance": 1e-6, "iterations": 1000}
MAX_FIXED_POINT_ITERATIONS = 1_000_000

RESERVED = (
    frozenset(keyword.kwlist)
    | frozenset(keyword.softkwlist)
    | frozenset(dir(builtins))
    | generated_names()
    | user_function_names()
    | PROX_FUNCTIONS
    | frozenset(SET_TABLE)
    | frozenset({"real", "per", "shared", "from", "problem", "unfold", "subject", "minimize"})
)

ROLE_WORDS = {
    "data": "data",
    "input": "input",
    "var": "variable",
    "param": "parameter",
    "dim": "dimension",
    "hyper": "hyperparameter",
    "weight": "weight",
    "state": "state",
    "let": "temporary",
    "net": "net",
    "layer": "layer index",
}


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class Symbol:
    name: str
    role: str
    shape: ir.Shape
    init: ir.Expr | None
    span: Span
    depends_on_inputs: bool = False
    depends_on_layer: bool = False  # a hyper or weight computed from the layer index k: one value per layer
    complex: bool = False  # declared complex (a temporary: its value is complex)


@dataclass(frozen=True)
class NonsmoothTerm:
    coef: ir.Expr
    func: str
    arg: ir.Expr


@dataclass(frozen=True)
class VarSet:
    """The constraint set of one variable, resolved to an entry of SET_TABLE."""

    var: str
    set: str
    params: tuple[ir.Expr, ...]


@dataclass(frozen=True)
class DimSource:
    """Where a dim's size is read: ``tensor.shape[axis]`` in the internal layout."""

    dim: str
    tensor: str
    role: str
    axis: int
    factor: Fraction = Fraction(1)  # the axis holds factor · dim (``h/4``: 1/4)


@dataclass(frozen=True)
class CheckedProblem:
    name: str
    symbols: tuple[Symbol, ...]  # dims, data, inputs, vars, params in declaration order
    dim_sources: tuple[DimSource, ...]
    smooth: ir.Expr
    nonsmooth: tuple[NonsmoothTerm, ...]
    sets: tuple[VarSet, ...]
    span: Span

    def symbol(self, name: str) -> Symbol:
        return next(sym for sym in self.symbols if sym.name == name)

    def of_role(self, role: str) -> tuple[Symbol, ...]:
        return tuple(sym for sym in self.symbols if sym.role == role)

    def differentiated(self) -> tuple[str, ...]:
        """The variables the smooth part depends on: those with a gradient."""
        return tuple(s.name for s in self.of_role("var") if ir.depends_on(self.smooth, {s.name}))

    def hessian_product(self, var: str) -> ir.Expr | None:
        """The Hessian applied to ``var`` where ∇var f is affine (derived by unfoldgen.calculus
        once, for this check and for the middle stage)."""
        variables = frozenset(s.name for s in self.of_role("var"))
        return calculus.derivatives(self.smooth, var, self.symbol(var).shape, variables)[1]

    def lipschitz_terms(self, variables: tuple[str, ...]) -> tuple[spectral.LipschitzTerm, ...]:
        """How ``lipschitz(variables)`` bounds the gradient (unfoldgen.spectral; raises
        NoLipschitzError naming the term without a bound)."""
        shapes = tuple(self.symbol(var).shape for var in variables)
        every = frozenset(s.name for s in self.of_role("var"))
        return spectral.lipschitz_terms(self.smooth, variables, shapes, every)


@dataclass(frozen=True)
class NetInfo:
    name: str
    kind: str
    options: tuple[tuple[str, int | str], ...]
    arg_shapes: tuple[ir.Shape, ...]
    correction: bool  # every call is a term of a sum: starts with output zero (see _zero_start_nets)


@dataclass(frozen=True)
class Rule:
    target: str
    value: ir.Expr
    is_let: bool


@dataclass(frozen=True)
class LearnBounds:
    """The bounds of a learned value, fixed when the model is built (``low``/``high`` None: no side)."""

    low: ir.Expr | None
    high: ir.Expr | None
    low_closed: bool
    high_closed: bool
    span: Span


@dataclass(frozen=True)
class Learn:
    name: str
    role: str
    per_layer: bool
    bounds: LearnBounds | None = None


@dataclass(frozen=True)
class FixedPoint:
    """A fixed-point unfold: iterate until the relative change is at most ``tolerance`` or for
    ``iterations`` iterations (the cap)."""

    tolerance: float
    iterations: int


@dataclass(frozen=True)
class CheckedUnfold:
    name: str
    problem: CheckedProblem
    layers: int  # a fixed-point unfold: its iteration cap
    symbols: tuple[Symbol, ...]  # hypers, weights, states in declaration order
    nets: tuple[NetInfo, ...]
    rules: tuple[Rule, ...]
    learns: tuple[Learn, ...]
    outputs: tuple[str, ...]
    span: Span
    layer_index: Symbol | None = None  # k, where the unfold uses it
    fixed_point: FixedPoint | None = None

    def symbol(self, name: str) -> Symbol:
        return next(sym for sym in self.problem.symbols + self.symbols + self.layer_symbols if sym.name == name)

    @property
    def layer_symbols(self) -> tuple[Symbol, ...]:
        return (self.layer_index,) if self.layer_index is not None else ()


@dataclass(frozen=True)
class CheckedSpec:
    problems: tuple[CheckedProblem, ...]
    unfolds: tuple[CheckedUnfold, ...]


# ---------------------------------------------------------------------- helpers


def a_role(role: str) -> str:
    """'a variable', 'an input'."""
    word = ROLE_WORDS[role]
    return ("an " if word[0] in "aeiou" else "a ") + word


def fmt_shape(shape: ir.Shape) -> str:
    """A shape as the spec language writes it, for error messages: ``real[m, n]``."""
    return "a scalar" if ir.is_scalar(shape) else f"real[{', '.join(map(str, ir.user_axes(shape)))}]"


def check_identifier(name: s.Name, what: str) -> None:
    text = name.id
    if not text.isascii() or not IDENTIFIER.match(text):
        hint = " (only ASCII letters, digits and '_', starting with a letter)"
        if text.startswith("_"):
            hint = " (names may not start with '_'; those are kept for generated code)"
        raise SpecError(f"{what} name {text!r} is not allowed{hint}", name.span)
    if len(text) > MAX_IDENTIFIER:
        raise SpecError(f"{what} name is longer than {MAX_IDENTIFIER} characters", name.span)
    if text in RESERVED or text.startswith(GENERATED_PREFIXES):
        raise SpecError(f"{what} name {text!r} is reserved (a keyword, builtin, function or generated name)", name.span)


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _flatten_sum(expr: s.Expr, sign: float = 1.0) -> list[tuple[float, s.Expr]]:
    if isinstance(expr, s.BinOp) and expr.op in "+-":
        right_sign = sign if expr.op == "+" else -sign
        return _flatten_sum(expr.left, sign) + _flatten_sum(expr.right, right_sign)
    return [(sign, expr)]


@dataclass
class _Scope:
    """Names visible at one point, and what may be called there."""

    symbols: dict[str, Symbol]
    allow_iteration_calls: bool = False  # grad, prox, proj, nets
    allow_build_calls: bool = False  # lipschitz
    target: str | None = None  # the variable an assignment writes (for proj())
    nets: dict[str, s.NetDecl] = field(default_factory=dict)
    net_uses: dict[str, list[tuple[ir.Shape, ...]]] = field(default_factory=dict)
    grad_vars: set[str] = field(default_factory=set)
    problem: CheckedProblem | None = None
    lipschitz_vars: set[str] = field(default_factory=set)
    hidden: dict[str, str] = field(default_factory=dict)  # declared, but out of reach here: why
    # prox option values (`keep p`) with their spans: checked against the learned names later
    option_values: list[tuple[str, ir.Expr, Span]] = field(default_factory=list)


# ---------------------------------------------------------------------- expressions


class _Elaborator:
    def __init__(self, scope: _Scope):
        self.scope = scope

    def __call__(self, expr: s.Expr) -> ir.Expr:
        return self.expr(expr)

    def expr(self, expr: s.Expr) -> ir.Expr:
        match expr:
            case s.Number(value=value):
                return ir.Const(value)
            case s.Name(id=name, span=span):
                return self.name(name, span)
            case s.Neg(operand=operand):
                return ir.neg(self.expr(operand))
            case s.Transpose(operand=operand, conjugate=conjugate):
                value = self.expr(operand)
                written = ".H" if conjugate else ".T"
                if ir.is_stack(value.shape):
                    raise SpecError(
                        f"'{written}' transposes vectors and matrices, got {fmt_shape(value.shape)}; for the adjoint "
                        "of a linear map write adjoint[L(x)](r)",
                        expr.span,
                    )
                return ir.adjoint(value) if conjugate else ir.transpose(value)
            case s.BinOp():
                return self.binop(expr)
            case s.Call():
                return self.call(expr)
        raise SpecError("unsupported expression", getattr(expr, "span", None))

    def name(self, name: str, span: Span) -> ir.Expr:
        symbol = self.scope.symbols.get(name)
        if symbol is None and not name.isascii():
            odd = next(ch for ch in name if not ch.isascii())
            raise SpecError(
                f"name {name!r} contains the non-ASCII character {odd!r} (U+{ord(odd):04X}); "
                "names are ASCII letters, digits and '_'",
                span,
            )
        if symbol is None and name in self.scope.hidden:
            raise SpecError(f"{name!r} cannot be used here: {self.scope.hidden[name]}", span)
        if symbol is None and name == LAYER_INDEX:
            raise SpecError(
                f"{name!r} is the layer index, which exists only in an unfold's hypers, weights and rules "
                f"(declare {name} to use the name here)",
                span,
            )
        if symbol is None:
            if name in FUNCTIONS or name in SPECIAL_CALLS:
                raise SpecError(f"{name!r} is a function; call it with arguments, e.g. {name}(x)", span)
            if name in self.scope.nets:
                raise SpecError(f"net {name!r} must be called, e.g. {name}(x)", span)
            hint = _suggest(name, sorted(self.scope.symbols))
            raise SpecError(f"unknown name {name!r}{hint}", span)
        if symbol.role == "net":
            raise SpecError(f"net {name!r} must be called, e.g. {name}(x)", span)
        return ir.Ref(name, symbol.role, symbol.shape, symbol.complex)

    def binop(self, expr: s.BinOp) -> ir.Expr:
        result = self._binop(expr)
        if isinstance(result, ir.Const) and not cmath.isfinite(result.value):
            raise SpecError("this constant expression is too large to represent (it overflows)", expr.span)
        return result

    def _binop(self, expr: s.BinOp) -> ir.Expr:
        left, right = self.expr(expr.left), self.expr(expr.right)
        ls, rs = left.shape, right.shape
        match expr.op:
            case "@":
                if ir.is_scalar(ls) or ir.is_scalar(rs):
                    raise SpecError(
                        f"'@' multiplies matrices and vectors, got {fmt_shape(ls)} @ {fmt_shape(rs)}; "
                        "use '*' for scalars",
                        expr.span,
                    )
                if ir.is_stack(ls) or ir.is_stack(rs):
                    raise SpecError(
                        f"'@' multiplies matrices and vectors, got {fmt_shape(ls)} @ {fmt_shape(rs)}; "
                        "stacks of images are not matrices",
                        expr.span,
                    )
                if ls[1] != rs[0]:
                    raise SpecError(
                        f"'@' needs the left operand's columns ({ls[1]}) to equal the right operand's rows ({rs[0]}): "
                        f"{fmt_shape(ls)} @ {fmt_shape(rs)}",
                        expr.span,
                    )
                return ir.matmul(left, right)
            case "^":
                if not ir.is_scalar(rs):
                    raise SpecError("the exponent of '^' must be a scalar", expr.right.span)
                if ir.is_complex(right):
                    raise SpecError("the exponent of '^' must be real, got a complex value", expr.right.span)
                if ir.is_complex(left) and isinstance(left, ir.Const):
                    return (
                        ir.Const(complex(left.value) ** right.value)
                        if isinstance(right, ir.Const)
                        else ir.power(left, right)
                    )
                if isinstance(left, ir.Const) and isinstance(right, ir.Const):
                    return ir.Const(_constant_power(left.value, right.value, expr.span))
                return ir.power(left, right)
            case "/" if isinstance(right, ir.Const) and right.value == 0:
                raise SpecError("division by zero", expr.span)
            case op:
                if not (ir.is_scalar(ls) or ir.is_scalar(rs) or ls == rs):
                    verb = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide"}[op]
                    raise SpecError(
                        f"cannot {verb} {fmt_shape(ls)} and {fmt_shape(rs)} elementwise; shapes must match",
                        expr.span,
                    )
                return ir.binary(op, left, right)

    # -- calls

    def call(self, expr: s.Call) -> ir.Expr:
        name = expr.func.id
        if expr.options and name != "prox":
            option = expr.options[0]
            raise SpecError(
                f"only prox takes options after its function (prox[t * norm1, keep p]); {name}[...] does not",
                option.span,
            )
        if name in ("grad", "prox", "proj") or name in self.scope.nets:
            if not self.scope.allow_iteration_calls:
                raise SpecError(f"{name}() can only be used inside 'iterate'", expr.span)
        if name == "grad":
            return self.grad(expr)
        if name == "prox":
            return self.prox(expr)
        if name == "proj":
            return self.proj(expr)
        if name == "adjoint":
            return self.adjoint(expr)
        if name in self.scope.nets:
            return self.net_call(expr)
        if expr.bracket is not None:
            raise SpecError(f"only prox, proj and grad take a [bracket]; {name}[...] is not allowed", expr.span)
        if name == "lipschitz":
            return self.lipschitz(expr)
        if name == "eye":
            dim = self._dims_of(expr, exactly=1)[0]
            return ir.Eye(dim, (dim, dim))
        if name in ("zeros", "ones"):
            dims = self._dims_of(expr, exactly=None)
            shape: ir.Shape = (dims[0], 1) if len(dims) == 1 else (dims[0], dims[1])
            return ir.Ones(shape) if name == "ones" else ir.mul(ir.Const(0.0), ir.Ones(shape))
        entry = FUNCTIONS.get(name)
        if entry is None or not entry.user:
            if name in self.scope.symbols:
                raise SpecError(f"{name!r} is {a_role(self.scope.symbols[name].role)}, not a function", expr.span)
            known = sorted(user_function_names())
            hint = _suggest(name, sorted(user_function_names() | set(self.scope.nets)))
            raise SpecError(f"unknown function {name!r} (known: {', '.join(known)}){hint}", expr.func.span)
        low, high = entry.arity
        if not low <= len(expr.args) <= high:
            count = str(low) if low == high else f"{low} to {high}"
            raise SpecError(f"{name}() takes {count} argument(s), got {len(expr.args)}", expr.span)
        args = tuple(self.expr(arg) for arg in expr.args)
        for arg, node in zip(args, expr.args, strict=True):
            if ir.is_complex(arg) and (
                entry.on_complex == "refuse" or (entry.kind == "linear" and arg is not args[entry.linear_arg])
            ):
                raise SpecError(
                    f"{name}() takes real values here, got a complex one; take re(), im() or abs() of it first",
                    node.span,
                )
        for index in entry.integer_args:
            value = args[index]
            if not (isinstance(value, ir.Const) and _whole(value.value) and 1 <= value.value <= MAX_DIM):
                raise SpecError(f"{name}() needs a whole number from 1 to {MAX_DIM} here", expr.args[index].span)
        try:
            if entry.shape_of_args is not None:
                shape = entry.shape_of_args(args)
            else:
                shape = entry.shape([arg.shape for arg in args])
        except ShapeError as err:
            raise SpecError(f"{name}(): {err}", expr.span) from None
        if all(isinstance(arg, ir.Const) and not ir.is_complex(arg) for arg in args) and entry.foldable:
            # a function of numbers is a number: sqrt(2) must not reach torch
            try:
                return ir.Const(entry.evaluate(*(arg.value for arg in args)))
            except ValueError:
                raise SpecError(f"{name}() of these numbers is not a finite real number", expr.span) from None
        if entry.desugar is not None:
            return entry.desugar(args, shape)
        return ir.Apply(name, args, shape)

    def adjoint(self, expr: s.Call) -> ir.Expr:
        """``adjoint[L(x)](r)``: Lᵀr for an expression L linear in one of the problem's variables,
        derived by the same chain rule as the gradients (no matrix is formed)."""
        if expr.bracket is None or len(expr.args) != 1:
            raise SpecError(
                "adjoint takes a linear expression in brackets and one argument: adjoint[L(x)](r)", expr.span
            )
        problem = self.scope.problem
        assert problem is not None
        linear = self.expr(expr.bracket)
        variables = [symbol.name for symbol in problem.of_role("var") if ir.depends_on(linear, {symbol.name})]
        if len(variables) != 1:
            raise SpecError(
                "adjoint[L(x)] needs an expression of exactly one of the problem's variables "
                f"({', '.join(s.name for s in problem.of_role('var'))}), got "
                + (", ".join(variables) if variables else "none"),
                expr.bracket.span,
            )
        var = variables[0]
        if calculus.degree(linear, frozenset({var})) != 1 or calculus.linear_part(linear, var) != linear:
            raise SpecError(f"adjoint[...] needs an expression linear in {var} (no constant term)", expr.bracket.span)
        seed = self.expr(expr.args[0])
        if seed.shape != linear.shape:
            raise SpecError(
                f"adjoint[L(x)](r) needs r shaped like L(x), {fmt_shape(linear.shape)}; got {fmt_shape(seed.shape)}",
                expr.args[0].span,
            )
        return calculus.adjoint_apply(linear, var, seed, problem.symbol(var).shape)

    def _dims_of(self, expr: s.Call, exactly: int | None) -> list[ir.Dim]:
        if (exactly is not None and len(expr.args) != exactly) or not 1 <= len(expr.args) <= 2:
            raise SpecError(f"{expr.func.id}() takes {exactly or '1 or 2'} size argument(s)", expr.span)
        dims: list[ir.Dim] = []
        for arg in expr.args:
            if isinstance(arg, s.Number) and _whole(arg.value) and 1 <= arg.value <= MAX_DIM:
                dims.append(int(arg.value))
            elif isinstance(arg, s.Name) and arg.id in self.scope.symbols and self.scope.symbols[arg.id].role == "dim":
                dims.append(arg.id)
            else:
                raise SpecError(f"{expr.func.id}() sizes must be dims or whole numbers from 1 to {MAX_DIM}", arg.span)
        return dims

    def _var_name(self, node: s.Expr, what: str) -> str:
        if not isinstance(node, s.Name):
            raise SpecError(f"{what} needs a variable name", node.span)
        problem = self.scope.problem
        assert problem is not None
        variables = [sym.name for sym in problem.of_role("var")]
        if node.id not in variables:
            problem_vars = variables
            raise SpecError(
                f"{what} needs one of the problem's variables ({', '.join(problem_vars)}), got {node.id!r}", node.span
            )
        return node.id

    def grad(self, expr: s.Call) -> ir.Expr:
        problem = self.scope.problem
        assert problem is not None
        if expr.bracket is None:
            if len(expr.args) != 1:
                raise SpecError("grad(x) takes one variable", expr.span)
            var = self._var_name(expr.args[0], "grad(x)")
            substitutions: tuple[tuple[str, ir.Expr], ...] = ()
        else:
            var = self._var_name(expr.bracket, "grad[x](z)")
            if len(expr.args) != 1:
                raise SpecError("grad[x](z) takes one point z at which to evaluate the gradient", expr.span)
            point = self.expr(expr.args[0])
            if point.shape != problem.symbol(var).shape:
                raise SpecError(
                    f"grad[{var}](z) needs z of the variable's shape {fmt_shape(problem.symbol(var).shape)}, "
                    f"got {fmt_shape(point.shape)}",
                    expr.args[0].span,
                )
            if ir.is_complex(point) and not problem.symbol(var).complex:
                raise SpecError(f"grad[{var}](z) needs a real z: {var!r} is real", expr.args[0].span)
            substitutions = ((var, point),)
        if not ir.depends_on(problem.smooth, {var}):
            raise SpecError(
                f"the smooth part of the objective does not depend on {var!r}; grad({var}) is zero", expr.span
            )
        self.scope.grad_vars.add(var)
        symbol = problem.symbol(var)
        return ir.Grad(var, substitutions, symbol.shape, symbol.complex)

    def lipschitz(self, expr: s.Call) -> ir.Expr:
        if not self.scope.allow_build_calls:
            raise SpecError(
                "lipschitz(x) is computed when the model is built; use it in hyper, weight or state", expr.span
            )
        if not expr.args:
            raise SpecError("lipschitz(x) takes one variable, or several for a joint constant", expr.span)
        problem = self.scope.problem
        assert problem is not None
        variables: list[str] = []
        for arg in expr.args:
            var = self._var_name(arg, "lipschitz(x)")
            if var in variables:
                raise SpecError(f"lipschitz(...) names {var!r} twice; name each variable once", arg.span)
            if not ir.depends_on(problem.smooth, {var}):
                span = expr.span if len(expr.args) == 1 else arg.span
                raise SpecError(f"the smooth part of the objective does not depend on {var!r}", span)
            variables.append(var)
        complex_variables = [var for var in variables if problem.symbol(var).complex]
        if len(variables) > 1 and complex_variables:
            raise SpecError(
                f"a joint lipschitz(...) of the complex variable {complex_variables[0]!r} is not supported; "
                "give the step as an expression, or use one complex variable",
                expr.span,
            )
        try:
            problem.lipschitz_terms(tuple(variables))
        except spectral.NoLipschitzError as err:
            raise SpecError(
                f"no Lipschitz constant is known for grad({', '.join(variables)}): {err}; "
                "give the step size as a number or expression",
                expr.span,
            ) from None
        self.scope.lipschitz_vars.update(variables)
        return ir.Lipschitz(variables[0], others=tuple(variables[1:]))

    def _scaled_function(self, expr: s.Expr) -> tuple[str, ir.Expr | None, str | None, Span]:
        """Split a prox bracket into (function, scale, set)."""
        match expr:
            case s.Name(id=name, span=span) if name in PROX_FUNCTIONS or name in FUNCTIONS:
                return name, None, None, span
            case s.BinOp(op="+", left=left, right=s.Name(id=set_name, span=span)) if set_name in SET_TABLE:
                func, scale, inner_set, fspan = self._scaled_function(left)
                if inner_set is not None:
                    raise SpecError("prox[...] takes at most one set", span)
                return func, scale, set_name, fspan
            case s.BinOp(op="*", left=left, right=right):
                if _mentions_function(left):
                    func, scale, set_name, fspan = self._scaled_function(left)
                    factor = self._scalar(right, "a prox scale")
                else:
                    func, scale, set_name, fspan = self._scaled_function(right)
                    factor = self._scalar(left, "a prox scale")
                return func, factor if scale is None else ir.mul(factor, scale), set_name, fspan
            case s.BinOp(op="/", left=left, right=right):
                func, scale, set_name, fspan = self._scaled_function(left)
                divisor = self._scalar(right, "a prox scale")
                return func, ir.div(ir.Const(1.0) if scale is None else scale, divisor), set_name, fspan
        raise SpecError(
            f"prox[...] expects a scaled function such as prox[t * norm1] (known: {', '.join(sorted(PROX_TABLE))})",
            expr.span,
        )

    def _scalar(self, expr: s.Expr, what: str) -> ir.Expr:
        value = self.expr(expr)
        if not ir.is_scalar(value.shape):
            raise SpecError(f"{what} must be a scalar, got {fmt_shape(value.shape)}", expr.span)
        if ir.is_complex(value):
            raise SpecError(f"{what} must be real, got a complex value", expr.span)
        return value

    def prox(self, expr: s.Call) -> ir.Expr:
        if expr.bracket is None:
            raise SpecError("prox needs its function in brackets, e.g. prox[mu * lam * norm1](v)", expr.span)
        if len(expr.args) != 1:
            raise SpecError("prox[...](v) takes one argument", expr.span)
        func, scale, set_name, fspan = self._scaled_function(expr.bracket)
        key = prox_key(func, set_name)
        if key not in PROX_TABLE:
            known = ", ".join(sorted(k for k, entry in PROX_TABLE.items() if not entry.options))
            what = f"{func} + {set_name}" if set_name else func
            raise SpecError(f"no closed-form proximal operator is known for {what} (known: {known})", fspan)
        options = self._prox_options(expr, func, set_name)
        key = prox_key(func, set_name, tuple(options))
        arg = self.expr(expr.args[0])
        if ir.is_scalar(arg.shape):
            raise SpecError("prox[...](v) needs a vector or matrix argument", expr.args[0].span)
        params = tuple(options.values())
        if ir.is_complex(arg) and not PROX_TABLE[key].complex_args:
            accepting = ", ".join(sorted(k for k, entry in PROX_TABLE.items() if entry.complex_args))
            raise SpecError(
                f"the proximal operator of {key} takes real values, got a complex argument "
                f"(complex values: {accepting or 'none'})",
                expr.args[0].span,
            )
        return ir.Prox(key, scale if scale is not None else ir.Const(1.0), arg, arg.shape, params)

    def _prox_options(self, expr: s.Call, func: str, set_name: str | None) -> dict[str, ir.Expr]:
        """The options after a prox's function (``keep p``), checked against the entries of PROX_TABLE
        for that function, in the entry's order."""
        offered = {
            option: entry
            for entry in PROX_TABLE.values()
            if entry.func == func and entry.set == set_name
            for option in entry.options
        }
        what = f"{func} + {set_name}" if set_name else func
        given: dict[str, tuple[ir.Expr, Span]] = {}
        for option in expr.options:
            name = option.name.id
            if name not in offered:
                takes = f"takes the options {', '.join(sorted(offered))}" if offered else "takes no options"
                raise SpecError(f"prox[... {what}] has no option {name!r}; it {takes}", option.name.span)
            if name in given:
                raise SpecError(f"option {name!r} is given twice", option.name.span)
            value = self._scalar(option.value, f"the {name} option")
            if isinstance(value, ir.Const) and not 0 <= value.value <= 1:
                raise SpecError(f"{name} is a fraction of the entries, from 0 to 1; got {value.value:g}", option.span)
            varying = [n for n in ir.refs(value) if self.scope.symbols[n].role in ("input", "var", "state", "let")]
            varying += [n for n in ir.refs(value) if self.scope.symbols[n].depends_on_inputs]
            if varying:
                raise SpecError(
                    f"{name} must be the same for every sample; it depends on {varying[0]!r}", option.value.span
                )
            given[name] = (value, option.value.span)
            self.scope.option_values.append((name, value, option.value.span))
        if not given:
            return {}
        entry = offered[next(iter(given))]
        missing = [option for option in entry.options if option not in given]
        if missing:
            raise SpecError(f"prox[... {what}, ...] also needs the option {missing[0]!r}", expr.span)
        return {option: given[option][0] for option in entry.options}

    def proj(self, expr: s.Call) -> ir.Expr:
        if len(expr.args) != 1:
            raise SpecError("proj(v) takes one argument", expr.span)
        arg = self.expr(expr.args[0])
        if ir.is_scalar(arg.shape):
            raise SpecError("proj(v) needs a vector or matrix argument", expr.args[0].span)
        if expr.bracket is None:
            target = self.scope.target
            problem = self.scope.problem
            assert problem is not None
            sets = {vs.var: vs for vs in problem.sets}
            if target is None or target not in sets:
                where = f"variable {target!r}" if target else "this temporary"
                raise SpecError(
                    f"proj(v) projects onto the constraint set of the variable being assigned, but {where} has no "
                    "constraint; add 'subject to' to the problem or name a set, e.g. proj[box(-1, 1)](v)",
                    expr.span,
                )
            var_set = sets[target]
            if arg.shape != self.scope.symbols[target].shape:
                target_shape = fmt_shape(self.scope.symbols[target].shape)
                raise SpecError(
                    f"proj(v) for {target!r} needs v of shape {target_shape}, got {fmt_shape(arg.shape)}",
                    expr.args[0].span,
                )
            self._complex_projection(var_set.set, arg, expr.args[0].span)
            return ir.Proj(var_set.set, var_set.params, arg, arg.shape)
        bracket = expr.bracket
        match bracket:
            case s.Name(id=set_name):
                given: tuple[s.Expr, ...] = ()
            case s.Call(func=s.Name(id=set_name), args=given, bracket=None):
                pass
            case _:
                raise SpecError(f"proj[...] expects a set: {', '.join(sorted(SET_TABLE))}", bracket.span)
        entry = SET_TABLE.get(set_name)
        if entry is None:
            raise SpecError(
                f"unknown set {set_name!r} (known: {', '.join(sorted(SET_TABLE))})"
                + _suggest(set_name, list(SET_TABLE)),
                bracket.span,
            )
        self._complex_projection(set_name, arg, expr.args[0].span)
        return ir.Proj(set_name, self._set_params(entry, given, bracket.span), arg, arg.shape)

    def _complex_projection(self, set_name: str, arg: ir.Expr, span: Span) -> None:
        if ir.is_complex(arg) and not SET_TABLE[set_name].complex_args:
            accepting = ", ".join(sorted(k for k, entry in SET_TABLE.items() if entry.complex_args))
            raise SpecError(
                f"the projection onto {set_name} takes real values, got a complex argument "
                f"(complex values: {accepting or 'none'})",
                span,
            )

    def _set_params(self, entry, given: tuple[s.Expr, ...], span: Span) -> tuple[ir.Expr, ...]:
        required = sum(default is None for default in entry.defaults)
        if not required <= len(given) <= len(entry.params):
            names = ", ".join(entry.params) or "no parameters"
            raise SpecError(f"set {entry.name} takes {names}", span)
        params = [
            self._scalar(value, f"the {name} of {entry.name}")
            for value, name in zip(given, entry.params[: len(given)], strict=True)
        ]
        params += [ir.Const(default) for default in entry.defaults[len(given) :]]
        if entry.validate is not None:  # e.g. qam(M): M a perfect square known when the model is built
            problem = entry.validate(tuple(p.value if isinstance(p, ir.Const) else None for p in params))
            if problem:
                raise SpecError(problem, span)
        return tuple(params)

    def net_call(self, expr: s.Call) -> ir.Expr:
        name = expr.func.id
        if expr.bracket is not None:
            raise SpecError(f"net {name!r} is called as {name}(args), without brackets", expr.span)
        if not expr.args:
            raise SpecError(f"net {name!r} needs at least one argument", expr.span)
        args = tuple(self.expr(arg) for arg in expr.args)
        for arg, node in zip(args, expr.args, strict=False):
            if ir.is_scalar(arg.shape):
                raise SpecError(f"net {name!r} takes vectors or matrices, this argument is a scalar", node.span)
        kind = NET_KINDS[self.scope.nets[name].kind.id]
        # what the (real) net sees: a complex argument as its real and imaginary parts
        shapes = tuple(_real_view(arg) for arg in args)
        problem = kind.check_args(list(shapes))
        if problem:
            raise SpecError(f"net {name!r} ({kind.name}): {problem}", expr.span)
        if ir.is_complex(args[0]) != any(map(ir.is_complex, args)):
            raise SpecError(
                f"net {name!r} returns a value shaped like its first argument, which is real, but another argument "
                "is complex; put a complex argument first",
                expr.span,
            )
        uses = self.scope.net_uses.setdefault(name, [])
        if uses and uses[0] != shapes:
            raise SpecError(f"net {name!r} is called with differently shaped arguments than before", expr.span)
        uses.append(shapes)
        return ir.NetCall(name, args, args[0].shape)


def _whole(value: float | complex) -> bool:
    """A whole real number (an imaginary literal is not one)."""
    return isinstance(value, float) and value.is_integer()


def _real_view(value: ir.Expr) -> ir.Shape:
    """The shape a net sees for an argument: a complex vector (n) as 2n entries (real parts, then
    imaginary parts), a complex image (h, w) as two channels (2, h, w), a stack (c, h, w) as 2c."""
    if not ir.is_complex(value):
        return value.shape
    if ir.is_vector(value.shape):
        return (ir.scale_dim(value.shape[0], 2, 1), 1)
    if ir.is_stack(value.shape):
        return (ir.scale_dim(value.shape[0], 2, 1), *value.shape[1:])
    return (2, *value.shape)


def _constant_power(base: float, exponent: float, span: Span) -> float:
    """``base ^ exponent`` of two numbers, or a SpecError where it is not a finite real number."""
    try:
        value = complex(base**exponent)
    except OverflowError:
        value = complex(math.inf)
    except ZeroDivisionError:
        value = complex(math.nan)
    if math.isinf(value.real) or math.isinf(value.imag):
        raise SpecError("this constant expression is too large to represent (it overflows)", span)
    if value.imag != 0 or not math.isfinite(value.real):
        raise SpecError(f"{base:g} ^ {exponent:g} is not a finite real number", span)
    return value.real


def _mentions_function(expr: s.Expr) -> bool:
    match expr:
        case s.Name(id=name):
            return name in PROX_FUNCTIONS or name in FUNCTIONS
        case s.BinOp(left=left, right=right):
            return _mentions_function(left) or _mentions_function(right)
    return False


# ---------------------------------------------------------------------- problems


def _check_type(spec: s.TypeSpec, dims: dict[str, Symbol], span: Span) -> ir.Shape:
    if len(spec.dims) > 3:
        field_name = "complex" if spec.complex else "real"
        raise SpecError(
            f"types have at most three dimensions: {field_name}, {field_name}[n], {field_name}[m, n] or "
            f"{field_name}[c, h, w]",
            spec.span,
        )
    resolved: list[ir.Dim] = []
    for dim in spec.dims:
        if isinstance(dim, s.Number):
            if not 1 <= dim.value <= MAX_DIM:
                raise SpecError(f"a size must be between 1 and {MAX_DIM}", dim.span)
            resolved.append(int(dim.value))
            continue
        base, factor = ir.dim_factor(dim.id)
        if base not in dims:
            raise SpecError(f"unknown dim {base!r}; declare it with 'dim {base}'", dim.span)
        if factor == 0:
            raise SpecError(f"a dim cannot be scaled by zero: {dim.id}", dim.span)
        resolved.append(ir.derived_dim(base, factor))
    if not resolved:
        return ir.SCALAR
    if len(resolved) == 1:
        return (resolved[0], 1)
    return tuple(resolved)


def _declare(table: dict[str, Symbol], symbol: Symbol, name: s.Name) -> None:
    check_identifier(name, ROLE_WORDS[symbol.role])
    if symbol.name in table:
        previous = table[symbol.name]
        raise SpecError(
            f"{symbol.name!r} is already declared as {a_role(previous.role)} (line {previous.span.line})",
            name.span,
        )
    table[symbol.name] = symbol


def _uses_inputs(expr: ir.Expr | None, table: dict[str, Symbol], problem: CheckedProblem | None = None) -> bool:
    if expr is None:
        return False
    for node in ir.walk(expr):
        if isinstance(node, ir.Lipschitz) and problem is not None:
            # the Hessian's own direction (a variable) is not an input, whatever its start
            constants = {n: sym for n, sym in table.items() if sym.role != "var"}
            terms = problem.lipschitz_terms(node.variables)
            if any(_uses_inputs(e, constants) for term in terms for e in (*term.products, term.factor, term.value)):
                return True
    for name in ir.refs(expr):
        symbol = table.get(name)
        if symbol is not None and (symbol.role == "input" or symbol.depends_on_inputs):
            return True
    return False


def _check_init(decl: s.Decl, shape: ir.Shape, scope: _Scope, what: str) -> ir.Expr:
    assert decl.init is not None and decl.type is not None
    value = _Elaborator(scope)(decl.init)
    _check_field(value, decl.type.complex, f"{what} {decl.name.id!r}", decl.init.span)
    if value.shape != shape and not (
        ir.is_scalar(value.shape) and (ir.is_scalar(shape) or isinstance(value, ir.Const))
    ):
        raise SpecError(
            f"{what} {decl.name.id!r} is declared {fmt_shape(shape)} but its value is {fmt_shape(value.shape)}",
            decl.init.span,
        )
    return value


def _check_field(value: ir.Expr, declared_complex: bool, what: str, span: Span) -> None:
    """A complex value cannot go where a real one is declared (its imaginary part would be lost)."""
    if ir.is_complex(value) and not declared_complex:
        raise SpecError(
            f"{what} is declared real but its value is complex; declare it complex, or take re(), im() or abs()",
            span,
        )


def check_problem(problem: s.Problem) -> CheckedProblem:
    check_identifier(problem.name, "problem")
    table: dict[str, Symbol] = {}
    dims: dict[str, Symbol] = {}
    dim_sources: dict[str, DimSource] = {}
    pending: list[tuple[s.Decl, ir.Shape]] = []
    for decl in problem.decls:
        if decl.kind == "dim":
            symbol = Symbol(decl.name.id, "dim", ir.SCALAR, None, decl.span)
            _declare(table, symbol, decl.name)
            dims[decl.name.id] = symbol
            continue
        assert decl.type is not None
        shape = _check_type(decl.type, dims, decl.span)
        if decl.kind in ("data", "input"):
            symbol = Symbol(decl.name.id, decl.kind, shape, None, decl.span, complex=decl.type.complex)
            _declare(table, symbol, decl.name)
            for axis, dim in zip(range(-len(shape), 0), shape, strict=True):
                if isinstance(dim, str):
                    dim, factor = ir.dim_factor(dim)
                    source = DimSource(dim, decl.name.id, decl.kind, axis, factor)
                    current = dim_sources.get(dim)
                    if current is None or (current.role == "input" and decl.kind == "data"):
                        dim_sources[dim] = source
        else:
            pending.append((decl, shape))
    # vars and params may refer to data, inputs, dims and each other in order
    for decl, shape in pending:
        scope = _Scope(dict(table))
        if decl.kind == "var" and decl.init is None:
            init: ir.Expr = ir.Const(0.0)
        else:
            init = _check_init(decl, shape, scope, ROLE_WORDS[decl.kind])
        if decl.kind == "param" and ir.depends_on(init, {n for n, sym in table.items() if sym.role == "var"}):
            raise SpecError(f"parameter {decl.name.id!r} cannot depend on a variable", decl.init.span)
        if decl.kind == "param" and _uses_inputs(init, table):
            raise SpecError(f"parameter {decl.name.id!r} cannot depend on a per-sample input", decl.init.span)
        symbol = Symbol(
            decl.name.id, decl.kind, shape, init, decl.span, _uses_inputs(init, table), complex=decl.type.complex
        )
        _declare(table, symbol, decl.name)
    if not any(sym.role == "var" for sym in table.values()):
        raise SpecError(f"problem {problem.name.id!r} declares no variable ('var x : real[n]')", problem.name.span)
    if not any(sym.role == "input" for sym in table.values()):
        raise SpecError(
            f"problem {problem.name.id!r} declares no input; the network needs a per-sample 'input'", problem.name.span
        )
    if problem.objective is None:
        raise SpecError(f"problem {problem.name.id!r} has no 'minimize' statement", problem.name.span)
    variables = frozenset(n for n, sym in table.items() if sym.role == "var")
    smooth, nonsmooth = _split_objective(problem.objective, _Scope(dict(table)), variables)
    for var in sorted(variables, key=list(table).index):
        if ir.depends_on(smooth, {var}):
            try:  # the derivation itself belongs to the middle stage; here only: can it be done?
                calculus.derivatives(smooth, var, table[var].shape, variables)
            except calculus.NotDifferentiableError as err:
                raise SpecError(f"cannot differentiate the smooth part: {err}", problem.objective.span) from None
    sets = _check_constraints(problem.constraints, _Scope(dict(table)), variables, table)
    for dim, symbol in dims.items():
        if dim not in dim_sources and not any(dim in sym.shape for sym in table.values()):
            raise SpecError(f"dim {dim!r} is declared but never used", symbol.span)
    ordered_sources = tuple(dim_sources[d] for d in dims if d in dim_sources)
    return CheckedProblem(
        problem.name.id,
        tuple(table.values()),
        ordered_sources,
        smooth,
        tuple(nonsmooth),
        tuple(sets),
        problem.span,
    )


def _nonsmooth_in(expr: ir.Expr) -> list[str]:
    return [node.func for node in ir.walk(expr) if isinstance(node, ir.Apply) and not FUNCTIONS[node.func].smooth]


def _split_objective(
    objective: s.Expr, scope: _Scope, variables: frozenset[str]
) -> tuple[ir.Expr, list[NonsmoothTerm]]:
    elaborate = _Elaborator(scope)
    smooth: ir.Expr = ir.Const(0.0)
    nonsmooth: list[NonsmoothTerm] = []
    for sign, term in _flatten_sum(objective):
        value = elaborate(term)
        if not ir.is_scalar(value.shape):
            raise SpecError(f"each objective term must be a scalar, this one is {fmt_shape(value.shape)}", term.span)
        if ir.is_complex(value):
            raise SpecError(
                "the objective is minimized, so each term must be real; this one is complex "
                "(write sumsq(r) for ‖r‖², re(...) for a real part)",
                term.span,
            )
        if not ir.depends_on(value, variables) and not _nonsmooth_in(value):
            # a constant shifts the objective's value, not its minimiser or gradient
            smooth = ir.add(smooth, value) if sign > 0 else ir.sub(smooth, value)
            continue
        rough = _nonsmooth_in(value)
        if not rough:
            smooth = ir.add(smooth, value) if sign > 0 else ir.sub(smooth, value)
            continue
        coef, call = _coefficient_and_call(value)
        if call is None or call.func not in NONSMOOTH or _nonsmooth_in(coef) or _nonsmooth_in(call.args[0]):
            what = rough[0]
            raise SpecError(
                f"{what}() is not smooth: it may appear only as a term 'coefficient * {what}(...)' handled by its prox",
                term.span,
            )
        if ir.depends_on(coef, variables):
            raise SpecError(f"the coefficient of {call.func}() may not depend on a variable", term.span)
        if sign < 0 or _negative(coef):
            raise SpecError(
                f"a non-smooth term ({call.func}) must be added, not subtracted (its coefficient must be positive)",
                term.span,
            )
        defaults = {n: sym.init for n, sym in scope.symbols.items() if sym.role == "param" and sym.init is not None}
        with_defaults = ir.substitute(coef, defaults)
        if isinstance(with_defaults, ir.Const) and with_defaults.value < 0:
            raise SpecError(
                f"the coefficient of {call.func}() is {with_defaults.value:g} with the params' default values; "
                "a non-smooth term's coefficient must be positive",
                term.span,
            )
        nonsmooth.append(NonsmoothTerm(coef, call.func, call.args[0]))
    if not ir.depends_on(smooth, variables) and not nonsmooth:
        raise SpecError("the objective does not depend on any variable", objective.span)
    return smooth, nonsmooth


def _coefficient_and_call(value: ir.Expr) -> tuple[ir.Expr, ir.Apply | None]:
    """``c1 * (c2 * h(v)) / c3`` → (c1·c2/c3, h(v)); (value, None) if it is not of that form."""
    match value:
        case ir.Apply():
            return ir.Const(1.0), value
        case ir.Neg(operand=operand):
            coef, call = _coefficient_and_call(operand)
            return ir.neg(coef), call
        case ir.Binary(op="*", left=left, right=right):
            for inner, other in ((right, left), (left, right)):
                if _nonsmooth_in(inner) and not _nonsmooth_in(other):
                    coef, call = _coefficient_and_call(inner)
                    return ir.mul(other, coef), call
        case ir.Binary(op="/", left=left, right=right) if not _nonsmooth_in(right):
            coef, call = _coefficient_and_call(left)
            return ir.div(coef, right), call
    return value, None


def _negative(coef: ir.Expr) -> bool:
    factor, _ = ir.split_factor(coef)
    return factor < 0 or (isinstance(coef, ir.Const) and coef.value < 0)


def _check_constraints(
    constraints: tuple[s.Constraint, ...], scope: _Scope, variables: frozenset[str], table: dict[str, Symbol]
) -> list[VarSet]:
    elaborate = _Elaborator(scope)
    facts: dict[str, list[tuple[str, tuple[ir.Expr, ...], Span]]] = {}
    for statement in constraints:
        for comparison in statement.parts:
            for var, kind, params in _read_comparison(comparison, elaborate, variables):
                facts.setdefault(var, []).append((kind, params, comparison.span))
    sets = []
    for var in sorted(facts, key=list(table).index):
        sets.append(_combine(var, facts[var]))
    return sets


def _read_comparison(comparison: s.Comparison, elaborate: _Elaborator, variables: frozenset[str]):
    """Yield (var, kind, params) facts: kind in lower, upper, ball2, ball1, sum."""
    operands, ops = comparison.operands, comparison.ops
    if "==" in ops and len(ops) > 1:
        raise SpecError("an equality cannot be chained", comparison.span)
    values = [elaborate(op) for op in operands]
    for value, node in zip(values, operands, strict=True):
        if ir.is_complex(value):
            raise SpecError(
                "complex values have no order, so they cannot be bounded; constrain norm2(x), or project "
                "in the iterations (proj[box(lo, hi)] bounds real and imaginary parts)",
                node.span,
            )
    facts = []
    for index, op in enumerate(ops):
        left, right = values[index], values[index + 1]
        left_node, right_node = operands[index], operands[index + 1]
        if op == ">=":
            left, right, left_node, right_node = right, left, right_node, left_node
            op = "<="
        left_var = _constrained(left, variables)
        right_var = _constrained(right, variables)
        unrecognised = (left_var is None and ir.depends_on(left, variables)) or (
            right_var is None and ir.depends_on(right, variables)
        )
        if unrecognised or (left_var is None) == (right_var is None):
            raise SpecError(
                "a constraint compares one variable (or the sum or norm of one) with a bound that does not "
                "depend on variables",
                comparison.span,
            )
        var_expr, bound, bound_node = (left, right, right_node) if left_var else (right, left, left_node)
        var, func = left_var or right_var
        if not ir.is_scalar(bound.shape):
            raise SpecError("a constraint bound must be a scalar", bound_node.span)
        if op == "==":
            if func != "sum":
                raise SpecError(
                    "equality constraints are supported as 'sum(x) == s' (with x >= 0: the simplex)", comparison.span
                )
            facts.append((var, "sum", (bound,)))
        elif func is None:
            facts.append((var, "upper" if left_var else "lower", (bound,)))
        elif func in ("norm2", "norm1", "norminf") and left_var:
            facts.append((var, func, (bound,)))
        else:
            raise SpecError(
                "supported constraints: lo <= x <= hi, x >= lo, x <= hi, norm2(x) <= r, norm1(x) <= r, "
                "norminf(x) <= r, sum(x) == s with x >= 0",
                comparison.span,
            )
        del var_expr
    return facts


def _constrained(expr: ir.Expr, variables: frozenset[str]) -> tuple[str, str | None] | None:
    match expr:
        case ir.Ref(name=name) if name in variables:
            return name, None
        case ir.Apply(func=func, args=(ir.Ref(name=name),)) if name in variables and func in (
            "norm1",
            "norm2",
            "norminf",
            "sum",
        ):
            return name, func
    return None


def _combine(var: str, facts: list[tuple[str, tuple[ir.Expr, ...], Span]]) -> VarSet:
    kinds = sorted(kind for kind, _, _ in facts)
    params = {kind: p for kind, p, _ in facts}
    span = facts[-1][2]
    zero = ir.Const(0.0)
    if kinds == ["lower", "upper"]:
        return VarSet(var, "box", (params["lower"][0], params["upper"][0]))
    if kinds == ["lower"]:
        if params["lower"][0] == zero:
            return VarSet(var, "nonneg", ())
        return VarSet(var, "box", (params["lower"][0], ir.Const(float("inf"))))
    if kinds == ["upper"]:
        return VarSet(var, "box", (ir.Const(float("-inf")), params["upper"][0]))
    if kinds == ["norm2"]:
        return VarSet(var, "ball2", params["norm2"])
    if kinds == ["norm1"]:
        return VarSet(var, "ball1", params["norm1"])
    if kinds == ["norminf"]:
        radius = params["norminf"][0]
        return VarSet(var, "box", (ir.neg(radius), radius))
    if kinds == ["lower", "sum"] and params["lower"][0] == zero:
        return VarSet(var, "simplex", params["sum"])
    described = " and ".join(kinds)
    raise SpecError(
        f"no closed-form projection is known onto the intersection of the constraints on {var!r} ({described})", span
    )


# ---------------------------------------------------------------------- unfolds


def check_unfold(unfold: s.Unfold, problems: dict[str, CheckedProblem]) -> CheckedUnfold:
    check_identifier(unfold.name, "unfold")
    generated_class = "".join(part[:1].upper() + part[1:] for part in unfold.name.id.split("_") if part)
    if generated_class in RESERVED or keyword.iskeyword(generated_class):
        raise SpecError(
            f"unfold name {unfold.name.id!r} would generate the class {generated_class!r}, a name the generated code "
            "already uses",
            unfold.name.span,
        )
    problem = problems.get(unfold.problem.id)
    if problem is None:
        hint = _suggest(unfold.problem.id, list(problems))
        raise SpecError(f"unknown problem {unfold.problem.id!r}{hint}", unfold.problem.span)
    fixed_point = _check_fixed_point(unfold.fixed_point, unfold.layers) if unfold.fixed_point else None
    if fixed_point is not None:
        layers = fixed_point.iterations
    elif unfold.layers is None:
        raise SpecError(
            f"unfold {unfold.name.id!r} needs 'layers K' (the number of unfolded iterations)", unfold.name.span
        )
    else:
        layers, layers_span = unfold.layers
        if not 1 <= layers <= MAX_LAYERS:
            raise SpecError(f"layers must be between 1 and {MAX_LAYERS}, got {layers}", layers_span)
    if unfold.iterate is None:
        raise SpecError(f"unfold {unfold.name.id!r} needs an 'iterate {{ ... }}' block", unfold.name.span)
    if not unfold.iterate:
        raise SpecError("the 'iterate' block is empty", unfold.iterate_span)

    table: dict[str, Symbol] = {sym.name: sym for sym in problem.symbols}
    dims = {n: sym for n, sym in table.items() if sym.role == "dim"}
    nets: dict[str, s.NetDecl] = {}
    for net in unfold.nets:
        check_identifier(net.name, "net")
        if net.name.id in table or net.name.id in nets:
            raise SpecError(f"{net.name.id!r} is already declared", net.name.span)
        kind = NET_KINDS.get(net.kind.id)
        if kind is None:
            raise SpecError(f"unknown net kind {net.kind.id!r} (known: {', '.join(sorted(NET_KINDS))})", net.kind.span)
        seen = set()
        for option, value in net.options:
            if not kind.options:
                raise SpecError(f"{kind.name} takes no options (write 'net {net.name.id} : {kind.name}')", option.span)
            if option.id not in kind.options:
                raise SpecError(
                    f"{kind.name} has no option {option.id!r} (options: {', '.join(kind.options)})", option.span
                )
            if option.id in seen:
                raise SpecError(f"option {option.id!r} is given twice", option.span)
            seen.add(option.id)
            refusal = kind.options[option.id].problem(value)
            if refusal:
                raise SpecError(f"{kind.name} option {option.id} {refusal}", option.span)
        nets[net.name.id] = net

    declared = set(table) | set(nets) | {decl.name.id for decl in unfold.decls}
    declared |= {rule.target.id for rule in unfold.iterate if rule.is_let}
    layer_index = None
    if LAYER_INDEX not in declared:  # a spec that declares k keeps its own k
        layer_index = Symbol(LAYER_INDEX, "layer", ir.SCALAR, None, unfold.span)
        table[LAYER_INDEX] = layer_index

    lipschitz_vars: set[str] = set()
    symbols: list[Symbol] = []
    for decl in unfold.decls:
        assert decl.type is not None
        shape = _check_type(decl.type, dims, decl.span)
        scope = _Scope(dict(table), allow_build_calls=True, problem=problem, lipschitz_vars=lipschitz_vars)
        if decl.kind != "state":
            # hyperparameters and weights are fixed numbers: they cannot see the iterates
            scope.symbols = {n: sym for n, sym in table.items() if sym.role not in ("var", "state")}
            reason = f"{a_role(decl.kind)} is fixed before the iterations start, so it cannot depend on the iterates"
            scope.hidden = {n: reason for n, sym in table.items() if sym.role in ("var", "state")}
        else:
            before = "a state's start value is computed before the first layer"
            per_layer = {n for n, sym in table.items() if sym.role == "layer" or sym.depends_on_layer}
            scope.symbols = {n: sym for n, sym in table.items() if n not in per_layer}
            scope.hidden = {
                n: ("it is the layer index" if table[n].role == "layer" else "it depends on the layer index k")
                + f", and {before}"
                for n in per_layer
            }
        init = _check_init(decl, shape, scope, ROLE_WORDS[decl.kind])
        per_sample = _uses_inputs(init, table, problem)
        per_layer = any(table[name].role == "layer" or table[name].depends_on_layer for name in ir.refs(init))
        if per_sample and per_layer:
            raise SpecError(
                f"{ROLE_WORDS[decl.kind]} {decl.name.id!r} depends on a per-sample input and on the layer index k; "
                "it can depend on one of them",
                decl.init.span,
            )
        if per_layer and not ir.is_scalar(shape):
            raise SpecError(
                f"{ROLE_WORDS[decl.kind]} {decl.name.id!r} depends on the layer index k, so it must be a scalar "
                f"(a schedule); it is declared {fmt_shape(shape)}",
                decl.init.span,
            )
        symbol = Symbol(
            decl.name.id, decl.kind, shape, init, decl.span, per_sample, per_layer, complex=decl.type.complex
        )
        _declare(table, symbol, decl.name)
        symbols.append(symbol)
    for name, net in nets.items():
        table[name] = Symbol(name, "net", ir.SCALAR, None, net.span)

    rules: list[Rule] = []
    net_uses: dict[str, list[tuple[ir.Shape, ...]]] = {}
    grad_vars: set[str] = set()
    option_values: list[tuple[str, ir.Expr, Span]] = []
    for rule in unfold.iterate:
        target = rule.target.id
        existing = table.get(target)
        if rule.is_let:
            if existing is not None:
                raise SpecError(
                    f"'let {target}' would hide the {ROLE_WORDS[existing.role]} {target!r}; choose another name",
                    rule.target.span,
                )
            check_identifier(rule.target, "temporary")
        elif existing is None:
            hint = _suggest(target, sorted(n for n, sym in table.items() if sym.role in ("var", "state")))
            raise SpecError(
                f"cannot assign to undeclared {target!r}; declare it as a 'state' or use 'let {target} = ...'{hint}",
                rule.target.span,
            )
        elif existing.role not in ("var", "state"):
            raise SpecError(
                f"cannot assign to the {ROLE_WORDS[existing.role]} {target!r}; only variables and states change "
                "from one iteration to the next (use 'let' for a temporary)",
                rule.target.span,
            )
        scope = _Scope(
            dict(table),
            allow_iteration_calls=True,
            target=None if rule.is_let else target,
            nets=nets,
            net_uses=net_uses,
            grad_vars=grad_vars,
            problem=problem,
            option_values=option_values,
        )
        value = _Elaborator(scope)(rule.value)
        if rule.is_let:
            table[target] = Symbol(target, "let", value.shape, None, rule.span, complex=ir.is_complex(value))
        elif value.shape != existing.shape and not (ir.is_scalar(value.shape) and ir.is_scalar(existing.shape)):
            raise SpecError(
                f"{target!r} is {fmt_shape(existing.shape)} but the new value is {fmt_shape(value.shape)}",
                rule.value.span,
            )
        if not rule.is_let:
            _check_field(value, existing.complex, f"{ROLE_WORDS[existing.role]} {target!r}", rule.value.span)
        rules.append(Rule(target, value, rule.is_let))
    for name, net in nets.items():
        if name not in net_uses:
            raise SpecError(f"net {name!r} is declared but never called in 'iterate'", net.name.span)

    corrections = _zero_start_nets([rule.value for rule in rules])
    _check_residual_nets(nets, corrections)
    if fixed_point is not None and layer_index is not None:  # k is not the spec's own name
        _refuse_layer_index(unfold)
    learns = _check_learns(unfold.learns, table, nets, problem, lipschitz_vars)
    if fixed_point is not None:
        _check_fixed_point_learns(unfold.learns)
    learned = {learn.name for learn in learns}
    for option, value, span in option_values:
        if learned & set(ir.refs(value)):
            name = next(n for n in ir.refs(value) if n in learned)
            raise SpecError(
                f"{option} depends on the learned {name!r}, but it has no gradient (it chooses how many entries to "
                f"keep); fix {name} or give {option} its own hyper",
                span,
            )
    uses_layer = layer_index is not None and any(
        ir.depends_on(value, {LAYER_INDEX}) for value in [rule.value for rule in rules] + [s.init for s in symbols]
    )
    outputs = tuple(o.id for o in unfold.outputs) or tuple(sym.name for sym in problem.of_role("var"))
    for output in unfold.outputs:
        symbol = table.get(output.id)
        if symbol is None or symbol.role not in ("var", "state"):
            raise SpecError(f"output {output.id!r} must be a variable or state", output.span)
    net_infos = tuple(
        NetInfo(
            name,
            net.kind.id,
            tuple(sorted((o.id, v) for o, v in net.options)),
            net_uses[name][0],
            name in corrections,
        )
        for name, net in nets.items()
    )
    return CheckedUnfold(
        unfold.name.id,
        problem,
        layers,
        tuple(symbols),
        net_infos,
        tuple(rules),
        learns,
        outputs,
        unfold.span,
        layer_index if uses_layer else None,
        fixed_point,
    )


def _check_fixed_point(statement: s.FixedPoint, layers: tuple[int, Span] | None) -> FixedPoint:
    """The options of `fixed point (...)`, defaults filled in; a fixed-point unfold has no `layers`."""
    if layers is not None:
        raise SpecError(
            "a fixed-point unfold iterates until it converges, so it has no 'layers'; "
            "set the iteration cap with 'fixed point (iterations N)'",
            layers[1],
        )
    values: dict[str, float] = dict(FIXED_POINT_DEFAULTS)
    seen: set[str] = set()
    for option, number in statement.options:
        if option.id not in FIXED_POINT_DEFAULTS:
            raise SpecError(
                f"fixed point has no option {option.id!r} (options: {', '.join(FIXED_POINT_DEFAULTS)})", option.span
            )
        if option.id in seen:
            raise SpecError(f"option {option.id!r} is given twice", option.span)
        seen.add(option.id)
        if option.id == "tolerance" and not number.value < 1:
            raise SpecError(f"tolerance {number.text}: expected a relative change in [0, 1), e.g. 1e-6", number.span)
        whole = number.text.isdigit()  # no point, no exponent
        if option.id == "iterations" and not (whole and 1 <= number.value <= MAX_FIXED_POINT_ITERATIONS):
            raise SpecError(
                f"iterations {number.text}: expected a whole number between 1 and {MAX_FIXED_POINT_ITERATIONS}",
                number.span,
            )
        values[option.id] = number.value
    return FixedPoint(float(values["tolerance"]), int(values["iterations"]))


def _refuse_layer_index(unfold: s.Unfold) -> None:
    """A fixed-point unfold applies one layer at every iteration: there is no layer index k."""
    expressions = [decl.init for decl in unfold.decls] + [rule.value for rule in unfold.iterate or ()]
    span = next(_name_spans(tuple(expressions), LAYER_INDEX), None)
    if span is not None:
        raise SpecError(
            f"a fixed-point unfold applies the same layer at every iteration, so it has no layer index "
            f"{LAYER_INDEX} (declare {LAYER_INDEX} to use the name)",
            span,
        )


def _name_spans(node: object, name: str):
    """The spans of every use of ``name`` in a piece of the syntax tree (depth first)."""
    if isinstance(node, s.Name):
        if node.id == name:
            yield node.span
    elif isinstance(node, tuple):
        for item in node:
            yield from _name_spans(item, name)
    elif is_dataclass(node):
        for item in fields(node):
            yield from _name_spans(getattr(node, item.name), name)


def _check_fixed_point_learns(learns: tuple[s.Learn, ...]) -> None:
    """A fixed-point unfold applies one layer at every iteration: everything it learns is shared."""
    for statement in learns:
        if statement.per_layer:
            names = ", ".join(name.id for name in statement.names)
            raise SpecError(
                f"'learn {names}' is per layer (the default); a fixed-point unfold applies the same layer at "
                f"every iteration, so it learns shared values only: write 'learn {names} shared'",
                statement.span,
            )


def _zero_start_nets(values: list[ir.Expr]) -> set[str]:
    """Nets that start with output zero: those whose every call is a term of a sum (added or
    subtracted, perhaps scaled), wherever the sum stands — an update, a let, the argument of
    prox, proj, a function or another net. Such a net is a correction: at zero the classical
    step remains. A net called any other way (the whole argument or value: it replaces a step)
    starts random."""
    calls: dict[str, int] = {}
    as_terms: dict[str, int] = {}
    for value in values:
        for node in ir.walk(value):
            if isinstance(node, ir.NetCall):
                calls[node.net] = calls.get(node.net, 0) + 1
            elif isinstance(node, ir.Binary) and node.op in "+-":
                for side in (node.left, node.right):
                    net = _scaled_net(side)
                    if net is not None:
                        as_terms[net] = as_terms.get(net, 0) + 1
    return {net for net, count in calls.items() if as_terms.get(net) == count}


def _check_residual_nets(nets: dict[str, s.NetDecl], corrections: set[str]) -> None:
    """A correction starts at zero; a residual net starts at its first argument, so it replaces a step."""
    for name in corrections:
        for option, value in nets[name].options:
            if option.id == "residual" and value == "yes":
                raise SpecError(
                    f"net {name!r} is a correction term (every call is a term of a sum, so it starts at zero); "
                    "'residual yes' is for a net that replaces a step, e.g. x = denoise(v)",
                    option.span,
                )


def _scaled_net(term: ir.Expr) -> str | None:
    """The net of a term that is a net's output, perhaps negated or times or over a factor."""
    match term:
        case ir.NetCall(net=net):
            return net
        case ir.Neg(operand=operand):
            return _scaled_net(operand)
        case ir.Binary(op="*", left=left, right=right):
            return _scaled_net(left) or _scaled_net(right)
        case ir.Binary(op="/", left=left):
            return _scaled_net(left)
    return None


LEARNABLE_ROLES = ("data", "param", "hyper", "weight", "net")


def _check_learns(
    learns: tuple[s.Learn, ...],
    table: dict[str, Symbol],
    nets: dict[str, s.NetDecl],
    problem: CheckedProblem,
    lipschitz_vars: set[str],
) -> tuple[Learn, ...]:
    result: dict[str, Learn] = {}
    learned = {name.id for statement in learns for name in statement.names}
    for statement in learns:
        for name in statement.names:
            symbol = table.get(name.id)
            if symbol is None:
                hint = _suggest(name.id, sorted(n for n, sym in table.items() if sym.role in LEARNABLE_ROLES))
                raise SpecError(f"cannot learn unknown name {name.id!r}{hint}", name.span)
            if symbol.role not in LEARNABLE_ROLES:
                raise SpecError(
                    f"cannot learn the {ROLE_WORDS[symbol.role]} {name.id!r}; learnable are data, param, hyper, "
                    "weight and net",
                    name.span,
                )
            if name.id in result:
                raise SpecError(f"{name.id!r} is learned twice", name.span)
            if symbol.role == "net" and statement.per_layer and NET_KINDS[nets[name.id].kind.id].external:
                raise SpecError(
                    f"net {name.id!r} is external (one module passed to the constructor), so it is learned "
                    f"shared: write 'learn {name.id} shared'",
                    name.span,
                )
            if symbol.depends_on_layer and not statement.per_layer:
                raise SpecError(
                    f"{name.id!r} depends on the layer index k, so it has a value per layer: "
                    f"write 'learn {name.id} per layer'",
                    name.span,
                )
            if symbol.depends_on_inputs and not ir.is_scalar(symbol.shape):
                raise SpecError(
                    f"{name.id!r} depends on a per-sample input, so it cannot be learned as a tensor "
                    "(per-sample scalars are learned as a per-layer factor)",
                    name.span,
                )
            bounds = None
            if statement.bounds is not None:
                bounds = _check_bounds(statement.bounds, symbol, table, problem, lipschitz_vars, learned)
            result[name.id] = Learn(name.id, symbol.role, statement.per_layer, bounds)
    return tuple(result.values())


def _check_bounds(
    bounds: s.Bounds,
    symbol: Symbol,
    table: dict[str, Symbol],
    problem: CheckedProblem,
    lipschitz_vars: set[str],
    learned: set[str],
) -> LearnBounds:
    """Bounds are checked like a hyperparameter's value: fixed when the model is built, so they may use
    params, data, dims, lipschitz(...) and fixed hypers and weights, but not iterates, per-sample
    inputs or learned values; each side is a scalar or has the learned value's shape."""
    name = symbol.name
    if symbol.role == "net":
        raise SpecError(
            f"net {name!r} cannot have bounds: bounds keep a learned value (hyper, weight, param, data) inside a range",
            bounds.span,
        )
    if symbol.depends_on_inputs:
        raise SpecError(
            f"{name!r} depends on a per-sample input, so it is learned as a factor and cannot have bounds", bounds.span
        )
    if symbol.complex:
        raise SpecError(f"{name!r} is complex, and complex values have no order, so no bounds", bounds.span)
    visible = {
        n: sym
        for n, sym in table.items()
        if sym.role not in ("var", "state", "let", "net", "layer") and not sym.depends_on_layer and n not in learned
    }
    scope = _Scope(visible, allow_build_calls=True, problem=problem, lipschitz_vars=lipschitz_vars)
    reason = "bounds are fixed when the model is built, one range for every layer"
    scope.hidden = {
        n: f"{reason}, so they cannot use the {'learned ' if n in learned else ''}{ROLE_WORDS[sym.role]} {n!r}"
        for n, sym in table.items()
        if n not in visible
    }
    sides = []
    for side, expr in (("lower", bounds.low), ("upper", bounds.high)):
        if expr is None:
            sides.append(None)
            continue
        value = _Elaborator(scope)(expr)
        if _uses_inputs(value, table, problem):
            raise SpecError(f"the {side} bound of {name!r} depends on a per-sample input; {reason}", expr.span)
        if value.shape != symbol.shape and not ir.is_scalar(value.shape):
            raise SpecError(
                f"the {side} bound of {name!r} is {fmt_shape(value.shape)}; expected a scalar or "
                f"{fmt_shape(symbol.shape)} like {name!r}",
                expr.span,
            )
        sides.append(value)
    low, high = sides
    if isinstance(low, ir.Const) and isinstance(high, ir.Const) and low.value >= high.value:
        raise SpecError(
            f"the bounds of {name!r} are empty: lower {low.value:g} >= upper {high.value:g}; expected lower < upper",
            bounds.span,
        )
    return LearnBounds(low, high, bounds.low_closed, bounds.high_closed, bounds.span)


def check_spec(spec: s.SpecFile) -> CheckedSpec:
    """Check a parsed spec file; raises the first SpecError found."""
    problems: dict[str, CheckedProblem] = {}
    for problem in spec.problems:
        if problem.name.id in problems:
            raise SpecError(f"problem {problem.name.id!r} is defined twice", problem.name.span)
        problems[problem.name.id] = check_problem(problem)
    unfolds: dict[str, CheckedUnfold] = {}
    folded: dict[str, s.Unfold] = {}
    for unfold in spec.unfolds:
        key = unfold.name.id.lower().replace("_", "")
        if unfold.name.id in unfolds:
            raise SpecError(f"unfold {unfold.name.id!r} is defined twice", unfold.name.span)
        if key in folded:
            raise SpecError(
                f"unfold {unfold.name.id!r} would generate the same module as {folded[key].name.id!r}", unfold.name.span
            )
        folded[key] = unfold
        unfolds[unfold.name.id] = check_unfold(unfold, problems)
    if not spec.problems and not spec.unfolds:
        raise SpecError("the spec is empty: it needs a 'problem' block and an 'unfold' block", Span(1, 1, 1, 2))
    if not spec.unfolds:
        first = spec.problems[0].name
        raise SpecError(
            f"no 'unfold' block: nothing to compile for problem {first.id!r} "
            f"(add 'unfold NAME from {first.id} {{...}}')",
            first.span,
        )
    return CheckedSpec(tuple(problems.values()), tuple(unfolds.values()))
