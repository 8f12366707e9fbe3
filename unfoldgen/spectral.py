"""Lipschitz constants of the smooth part's gradient without forming a matrix.

``lipschitz(x)`` is λ_max of the Hessian H of the smooth part (∇f is affine, so H is the linear
map ``linear_part(∇f)``). The middle stage picks how each unfold computes it; the torch emitter
and ``explain`` read the choice:

- **dense** — only matrices and elementwise maps: the Hessian's columns at the unit basis and
  their largest eigenvalue (exact; fine for a few thousand unknowns);
- **exact** — H is diagonal (``D ⊙ v``: identities, masks): max |D|; or H = AᵀA for one operator
  whose AᵀA is diagonal in a known basis: circular convolution (max |k̂|² over the frequencies),
  orthonormal transforms, resampling (1), after dropping the factors that do not change a norm
  (unitary transforms on the inside, isometries on the outside);
- **bound** — H = AᵀA for finite differences: 4 per dimension (‖D‖² < 4, ‖∇‖² < 8), a step
  below 1/L but close to it on images;
- **power** — anything else (sums of terms, zero/reflect boundaries, down-sampling after a blur):
  a power iteration at build time with a fixed count, a fixed seed and a safety margin
  (``power_norm2`` in linops_torch.py documents both), so the step is never above 1/L.

A smooth part that is not quadratic is split into terms (``lipschitz_terms``): the quadratic
ones keep their exact Hessian; each other term must read ``c · Σ φ(a(x))`` (or ``c · φ(a)``,
``c · logsumexp(a)``) with a affine in the variables and φ an entry of the function table with a
curvature bound (``Function.curvature``, sup |φ''|). Its Hessian is c · Aᵀ diag(φ''(a)) A for A the
linear part of a, so its norm is at most |c| · sup|φ''| · ‖A‖², and ‖A‖² = λ_max(AᵀA) is planned
like a Hessian (dense, exact, bound, power). The terms' bounds add (the triangle inequality).

``lipschitz(x, z)`` is the constant of the gradient with respect to (x, z) jointly: λ_max of the
joint Hessian, a map given by one block row per variable (the map applied to the variables,
which stand for the directions). Dense without operators (the columns at the stacked unit
basis), power iteration otherwise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy

from unfoldgen import calculus, ir
from unfoldgen.functions import FUNCTIONS, curvature_bound
from unfoldgen.mathtext import MathPrinter

# AᵀA of each gram class, as a norm: ‖A‖² (None: not known in closed form)
_UNIT_NORM = frozenset({"unitary", "isometry", "coisometry"})


class NoLipschitzError(Exception):
    """No Lipschitz constant is known for the gradient; the message names the term that is why."""


@dataclass(frozen=True)
class LipschitzTerm:
    """``factor · λ_max(M)`` for a symmetric linear map M: the Hessian of the quadratic part
    (factor 1), or AᵀA for a curvature term (factor |c| · sup|φ''|)."""

    factor: ir.Expr
    method: str  # dense | exact | bound | power
    products: tuple[ir.Expr, ...]  # M applied to the variables (as directions), one block per variable
    value: ir.Expr | None  # exact and bound: λ_max(M), an expression of data and inputs
    reason: str  # how λ_max(M) is computed, one line
    bound: str | None = None  # a curvature term: which bound, e.g. "softplus: sup|φ''| = 1/4"


@dataclass(frozen=True)
class LipschitzPlan:
    """How one ``lipschitz(...)`` is computed: the sum of its terms' bounds (one term, the exact
    largest Hessian eigenvalue, for a quadratic smooth part)."""

    variables: tuple[str, ...]
    name: str  # the generated method and kernel function
    terms: tuple[LipschitzTerm, ...]

    @property
    def var(self) -> str:
        return self.variables[0]

    @property
    def label(self) -> str:
        return f"lipschitz({', '.join(self.variables)})"

    def expressions(self) -> list[ir.Expr]:
        """Every expression the constant reads (products, closed-form values, factors)."""
        out: list[ir.Expr] = []
        for term in self.terms:
            out += [*term.products, term.factor] + ([term.value] if term.value is not None else [])
        return out


def _linear_ops(expr: ir.Expr) -> bool:
    return any(isinstance(n, ir.Apply) and FUNCTIONS[n.func].kind == "linear" for n in ir.walk(expr))


def _diagonal(expr: ir.Expr, var: str) -> bool:
    """``expr`` is D ⊙ var: only sums, negations and products/quotients by var-free factors."""
    match expr:
        case ir.Ref(name=name):
            return name == var
        case ir.Binary(op="+" | "-", left=left, right=right):
            return all(_diagonal(side, var) or not ir.depends_on(side, {var}) for side in (left, right))
        case ir.Binary(op="*", left=left, right=right):
            inner, outer = (left, right) if ir.depends_on(left, {var}) else (right, left)
            return not ir.depends_on(outer, {var}) and _diagonal(inner, var)
        case ir.Binary(op="/", left=left, right=right):
            return not ir.depends_on(right, {var}) and _diagonal(left, var)
        case ir.Neg(operand=operand):
            return _diagonal(operand, var)
    return False


def _chain(expr: ir.Expr, var: str) -> tuple[float | ir.Expr, list[ir.Apply]] | None:
    """``c · O1(O2(… On(var)))`` → (c, [O1, …, On]); None for any other form."""
    factor: ir.Expr = ir.Const(1.0)
    ops: list[ir.Apply] = []
    node = expr
    while not (isinstance(node, ir.Ref) and node.name == var):
        match node:
            case ir.Binary(op="*", left=left, right=right) if ir.is_scalar(left.shape) and not ir.depends_on(
                left, {var}
            ):
                factor, node = ir.mul(factor, left), right
            case ir.Neg(operand=operand):
                factor, node = ir.neg(factor), operand
            case ir.Apply(func=func, args=args) if FUNCTIONS[func].kind == "linear":
                index = FUNCTIONS[func].linear_arg
                if any(ir.depends_on(arg, {var}) for i, arg in enumerate(args) if i != index):
                    return None
                ops.append(node)
                node = args[index]
            case _:
                return None
    return factor, ops


def _is_adjoint_of(outer: ir.Apply, inner: ir.Apply) -> bool:
    """``outer`` applies the adjoint of ``inner`` (same kernel, factor, …), up to a sign."""
    entry = FUNCTIONS[inner.func]
    seed = ir.Ref("_seed", "let", inner.shape)
    adjoint = entry.adjoint(inner.args, seed)
    _, bare = ir.split_factor(adjoint)
    if not isinstance(bare, ir.Apply) or bare.func != outer.func:
        return False
    index = FUNCTIONS[outer.func].linear_arg
    return all(a == b for i, (a, b) in enumerate(zip(bare.args, outer.args, strict=True)) if i != index)


def _gram_norm(ops: list[ir.Apply], shape: ir.Shape) -> tuple[str, ir.Expr | None, str]:
    """‖A‖² of A = ops[0] ∘ … ∘ ops[-1]: (method, value, reason)."""
    ops = list(ops)
    while ops and FUNCTIONS[ops[0].func].gram in ("unitary", "isometry"):  # ‖Q B‖ = ‖B‖
        ops.pop(0)
    while ops and FUNCTIONS[ops[-1].func].gram == "unitary":  # ‖B Q‖ = ‖B‖ for an invertible Q
        ops.pop()
    if not ops:
        return "exact", ir.Const(1.0), "AᵀA = I (orthonormal transforms)"
    if len(ops) > 1:
        names = " ∘ ".join(op.func for op in ops)
        return "power", None, f"AᵀA for A = {names} is not diagonal in a known basis"
    op = ops[0]
    gram = FUNCTIONS[op.func].gram
    if gram in _UNIT_NORM:
        return "exact", ir.Const(1.0), f"‖{op.func}‖ = 1"
    if gram == "fourier":
        like = ir.Ones(op.args[FUNCTIONS[op.func].linear_arg].shape)
        value = ir.Apply("conv_norm2", (op.args[0], like), ir.SCALAR)
        return "exact", value, f"{op.func} is diagonal in the Fourier basis: max |k̂|²"
    if gram is not None and gram.startswith("bound:"):
        bound = float(gram.split(":")[1])
        return "bound", ir.Const(bound), f"‖{op.func}‖² < {bound:g} (finite differences)"
    return "power", None, f"{op.func} is not diagonal in a known basis"


def plan_lipschitz(var: str, hessian: ir.Expr, shape: ir.Shape) -> tuple[str, ir.Expr | None, str]:
    """How λ_max of the map ``hessian`` (linear in var) is computed: (method, value, reason)."""
    if _diagonal(hessian, var):
        diagonal = ir.substitute(hessian, {var: ir.Ones(shape)})
        value = ir.Apply("max_abs", (diagonal,), ir.SCALAR)
        return "exact", value, "the Hessian is diagonal: max |D|"
    if not _linear_ops(hessian) and not ir.is_stack(shape):
        return "dense", None, "the Hessian's largest eigenvalue (dense)"
    chain = _chain(hessian, var)
    if chain is not None and chain[1] and len(chain[1]) % 2 == 0:
        factor, ops = chain
        half = len(ops) // 2
        outer, inner = ops[:half], ops[half:]
        if all(_is_adjoint_of(o, i) for o, i in zip(outer, reversed(inner), strict=True)):
            method, value, reason = _gram_norm(inner, shape)
            if value is not None:
                size = (
                    ir.Const(abs(factor.value))
                    if isinstance(factor, ir.Const)
                    else ir.Apply("abs", (factor,), ir.SCALAR)
                )
                scaled = ir.mul(size, value)
                return method, scaled, reason
            return "power", None, reason + ": power iteration"
    return "power", None, "no closed form: power iteration"


def _plan_joint(products: tuple[ir.Expr, ...], shapes: tuple[ir.Shape, ...]) -> tuple[str, ir.Expr | None, str]:
    """λ_max of a map over several variables: dense without operators, else power iteration."""
    if not any(_linear_ops(product) for product in products) and not any(map(ir.is_stack, shapes)):
        return "dense", None, "the joint Hessian's largest eigenvalue (dense, over the stacked unit basis)"
    return "power", None, "a joint map with operators: power iteration"


# ------------------------------------------------------------- non-quadratic smooth parts


def _zero(shape: ir.Shape) -> ir.Expr:
    return ir.mul(ir.Const(0.0), ir.Ones(shape))


def _fixed_scalar(expr: ir.Expr, variables: frozenset[str]) -> bool:
    return ir.is_scalar(expr.shape) and not ir.depends_on(expr, variables)


def _split(expr: ir.Expr, coef: ir.Expr, wanted: frozenset[str], variables: frozenset[str]) -> list:
    """``expr`` as Σ coef_i · term_i over its terms that depend on ``wanted``, with the scalar
    factors free of every variable pulled out (also out of a ``sum``)."""
    if not ir.depends_on(expr, wanted):
        return []
    match expr:
        case ir.Binary(op="+" | "-" as op, left=left, right=right) if left.shape == right.shape:
            return _split(left, coef, wanted, variables) + _split(
                right, coef if op == "+" else ir.neg(coef), wanted, variables
            )
        case ir.Neg(operand=operand):
            return _split(operand, ir.neg(coef), wanted, variables)
        case ir.Binary(op="*", left=left, right=right) if _fixed_scalar(left, variables):
            return _split(right, ir.mul(coef, left), wanted, variables)
        case ir.Binary(op="*", left=left, right=right) if _fixed_scalar(right, variables):
            return _split(left, ir.mul(coef, right), wanted, variables)
        case ir.Binary(op="/", left=left, right=right) if _fixed_scalar(right, variables):
            return _split(left, ir.div(coef, right), wanted, variables)
        case ir.Apply(func="sum", args=(inner,)):
            return [(c, ir.Apply("sum", (term,), ir.SCALAR)) for c, term in _split(inner, coef, wanted, variables)]
    return [(coef, expr)]


def _hessian_rows(
    expr: ir.Expr, variables: tuple[str, ...], shapes: tuple[ir.Shape, ...], all_variables: frozenset[str]
) -> tuple[ir.Expr, ...] | None:
    """The Hessian of ``expr`` over ``variables`` applied to them, one block row per variable
    (None where a gradient is not affine in all the problem's variables)."""
    rows = []
    for var, shape in zip(variables, shapes, strict=True):
        gradient, hessian = calculus.derivatives(expr, var, shape, all_variables)
        if calculus.degree(gradient, all_variables) is None:
            return None
        parts = [hessian] + [calculus.linear_part(gradient, other) for other in variables if other != var]
        parts = [part for part in parts if part is not None]
        if not parts:
            rows.append(_zero(shape))
            continue
        row = parts[0]
        for part in parts[1:]:
            row = ir.add(row, part)
        rows.append(row)
    return tuple(rows)


def _curvature_form(term: ir.Expr, variables: frozenset[str]) -> tuple[str, ir.Expr]:
    """``Σ φ(a)``, ``φ(a)`` (a scalar) or ``logsumexp(a)`` with a bound on φ'' and a affine: (φ, a)."""
    math = MathPrinter()
    match term:
        case ir.Apply(func="sum", args=(ir.Apply(func=func, args=args),)) if FUNCTIONS[func].kind == "elementwise":
            pass
        case ir.Apply(func=func, args=args) if func == "logsumexp" or FUNCTIONS[func].kind == "elementwise":
            pass
        case _:
            raise NoLipschitzError(
                f"its term {math(term)} is neither quadratic nor c·Σ φ(a) with a affine and a bound on φ''"
            )
    if FUNCTIONS[func].curvature is None:
        raise NoLipschitzError(f"{func}'' is unbounded, so {func} has no curvature bound (in {math(term)})")
    if calculus.degree(args[0], variables) is None:
        raise NoLipschitzError(f"the argument of {func} is not affine in the variables: {math(args[0])}")
    return func, args[0]


def _curvature_term(
    coef: ir.Expr, func: str, arg: ir.Expr, variables: tuple[str, ...], shapes: tuple[ir.Shape, ...]
) -> LipschitzTerm:
    """|coef| · sup|φ''| · ‖A‖² for A the linear part of ``arg`` in the variables (jointly)."""
    parts = {var: calculus.linear_part(arg, var) for var in variables}
    seed: ir.Expr | None = None
    for part in parts.values():
        if part is not None:
            seed = part if seed is None else ir.add(seed, part)
    assert seed is not None
    # AᵀA v = Aᵀ(A v): the adjoint of the whole linear part applied to itself (the chain rule
    # sums a broadcast scalar part back down)
    products = tuple(
        _zero(shape) if parts[var] is None else calculus.adjoint_apply(seed, var, seed, shape)
        for var, shape in zip(variables, shapes, strict=True)
    )
    curvature = FUNCTIONS[func].curvature
    assert curvature is not None
    size = curvature_bound(func)
    factor = (
        ir.Const(abs(coef.value) * size)
        if isinstance(coef, ir.Const)
        else ir.mul(ir.Const(size), ir.Apply("abs", (coef,), ir.SCALAR))
    )
    method, value, reason = _plan_map(variables, products, shapes)
    kind = "‖∇²‖ ≤" if FUNCTIONS[func].kind == "reduction" else "sup|φ''| ="
    text = sympy.sstr(sympy.sympify(curvature))
    math = MathPrinter()
    scale = text if coef == ir.Const(1.0) else f"|{math(coef)}|·{text}"
    bound = f"curvature bound {scale} · ‖A‖² ({func}: {kind} {text}), A the linear part of {math(arg)}"
    for hessian, gram in (("the joint Hessian's", "AᵀA's"), ("the Hessian's", "AᵀA's"), ("the Hessian is", "AᵀA is")):
        reason = reason.replace(hessian, gram)
    return LipschitzTerm(factor, method, products, value, reason, bound)


def _plan_map(
    variables: tuple[str, ...], products: tuple[ir.Expr, ...], shapes: tuple[ir.Shape, ...]
) -> tuple[str, ir.Expr | None, str]:
    if len(variables) == 1:
        return plan_lipschitz(variables[0], products[0], shapes[0])
    return _plan_joint(products, shapes)


@functools.lru_cache(maxsize=256)
def lipschitz_terms(
    smooth: ir.Expr, variables: tuple[str, ...], shapes: tuple[ir.Shape, ...], all_variables: frozenset[str]
) -> tuple[LipschitzTerm, ...]:
    """The terms whose bounds add up to the Lipschitz constant of ∇f over ``variables``; raises
    NoLipschitzError naming the term without a bound. Cached: the checker and the middle stage ask."""
    wanted = frozenset(variables)
    rows = _hessian_rows(smooth, variables, shapes, all_variables)
    curved: list[tuple[ir.Expr, str, ir.Expr]] = []
    if rows is None:  # not quadratic: the quadratic terms together, a bound for each other term
        quadratic: ir.Expr | None = None
        for coef, term in _split(smooth, ir.Const(1.0), wanted, all_variables):
            if _hessian_rows(term, variables, shapes, all_variables) is not None:
                scaled = ir.mul(coef, term)
                quadratic = scaled if quadratic is None else ir.add(quadratic, scaled)
            else:
                curved.append((coef, *_curvature_form(term, all_variables)))
        rows = None if quadratic is None else _hessian_rows(quadratic, variables, shapes, all_variables)
    terms: list[LipschitzTerm] = []
    if rows is not None and any(ir.depends_on(row, wanted) for row in rows):
        method, value, reason = _plan_map(variables, rows, shapes)
        terms.append(LipschitzTerm(ir.Const(1.0), method, rows, value, reason))
    terms += [_curvature_term(coef, func, arg, variables, shapes) for coef, func, arg in curved]
    if not terms:
        raise NoLipschitzError("the gradient does not change with the variables (the smooth part is linear in them)")
    return tuple(terms)
