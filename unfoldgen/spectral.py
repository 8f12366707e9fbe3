"""Lipschitz constants of an affine gradient without forming a matrix.

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
"""

from __future__ import annotations

from dataclasses import dataclass

from unfoldgen import ir
from unfoldgen.functions import FUNCTIONS

# AᵀA of each gram class, as a norm: ‖A‖² (None: not known in closed form)
_UNIT_NORM = frozenset({"unitary", "isometry", "coisometry"})


@dataclass(frozen=True)
class LipschitzPlan:
    var: str
    method: str  # dense | exact | bound | power
    hessian: ir.Expr  # the Hessian applied to var
    value: ir.Expr | None  # exact and bound: the constant, an expression of data and inputs
    reason: str  # one line for `explain` and the method's docstring


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


def plan_lipschitz(var: str, hessian: ir.Expr, shape: ir.Shape) -> LipschitzPlan:
    """How ``lipschitz(var)`` is computed for the Hessian product ``hessian`` (linear in var)."""
    if _diagonal(hessian, var):
        diagonal = ir.substitute(hessian, {var: ir.Ones(shape)})
        value = ir.Apply("max_abs", (diagonal,), ir.SCALAR)
        return LipschitzPlan(var, "exact", hessian, value, "the Hessian is diagonal: max |D|")
    if not _linear_ops(hessian) and not ir.is_stack(shape):
        return LipschitzPlan(var, "dense", hessian, None, "the Hessian's largest eigenvalue (dense)")
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
                return LipschitzPlan(var, method, hessian, scaled, reason)
            return LipschitzPlan(var, "power", hessian, None, reason + ": power iteration")
    return LipschitzPlan(var, "power", hessian, None, "no closed form: power iteration")
