"""Symbolic gradients of the smooth part, by the project's own reverse-mode chain rule.

sympy 1.14's matrix calculus cannot differentiate elementwise maps of matrix expressions,
so the tensor layer is ours: each node's vector-Jacobian product is written once below, and
the scalar derivative φ′ of every elementwise function comes from sympy (see functions.py).

Complex variables (Wirtinger calculus). The objective is real; its gradient with respect to a
complex z is ∇f = ∂f/∂Re z + i ∂f/∂Im z = 2 ∂f/∂z̄, the direction of steepest ascent in the real
view (so ``z − μ ∇f`` is gradient descent, with the same Lipschitz step). Seeds are gradients
in this sense, and each rule is the adjoint under the real inner product Re⟨a, b⟩ = Re(aᴴb):
a product passes ``seed · conj(other)``, ``@`` passes ``seed @ Bᴴ`` and ``Aᴴ @ seed``, a
holomorphic φ passes ``seed · conj(φ′(z))``, ``conj`` passes ``conj(seed)``; where a real value
meets a complex seed (``re(z)`` inside, a real matrix times z) it takes the seed's real part.
On real programs every conj is the identity, so the rules are the real ones. torch.autograd
computes the same vector for a real loss (its ``.grad`` of a complex leaf is the conjugate
Wirtinger derivative ∂L/∂z̄ times 2: see tests/test_complex.py).
"""

from __future__ import annotations

import functools

from unfoldgen import ir
from unfoldgen.functions import FUNCTIONS, elementwise_derivative


class NotDifferentiableError(Exception):
    """The expression contains something with no gradient rule; the message says what."""


def _materialise(seed: ir.Expr, shape: ir.Shape) -> ir.Expr:
    """A seed that stands for a broadcast scalar, as a full tensor of ``shape``."""
    if ir.is_scalar(seed.shape) and not ir.is_scalar(shape):
        return ir.mul(seed, ir.Ones(shape))
    return seed


def _unbroadcast(adjoint: ir.Expr, operand_shape: ir.Shape) -> ir.Expr:
    """Sum an adjoint back down to a scalar operand that was broadcast."""
    if ir.is_scalar(operand_shape) and not ir.is_scalar(adjoint.shape):
        return ir.Apply("sum", (adjoint,), ir.SCALAR)
    return adjoint


def _adjoints(node: ir.Expr, seed: ir.Expr, var: str, out: list[ir.Expr]) -> None:
    """Append to ``out`` the contributions of ``node`` to ∂/∂var, given ∂/∂node = seed."""
    if not ir.depends_on(node, {var}):
        return
    if ir.is_complex(seed) and not ir.is_complex(node):
        seed = ir.Apply("re", (seed,), seed.shape)  # a real value's gradient is real
    match node:
        case ir.Ref():
            out.append(seed)
        case ir.Binary(op="+", left=left, right=right):
            _adjoints(left, _unbroadcast(seed, left.shape), var, out)
            _adjoints(right, _unbroadcast(seed, right.shape), var, out)
        case ir.Binary(op="-", left=left, right=right):
            _adjoints(left, _unbroadcast(seed, left.shape), var, out)
            _adjoints(right, ir.neg(_unbroadcast(seed, right.shape)), var, out)
        case ir.Binary(op="*", left=left, right=right):
            _adjoints(left, _unbroadcast(ir.mul(seed, ir.conj(right)), left.shape), var, out)
            _adjoints(right, _unbroadcast(ir.mul(seed, ir.conj(left)), right.shape), var, out)
        case ir.Binary(op="/", left=left, right=right):
            _adjoints(left, _unbroadcast(ir.div(seed, ir.conj(right)), left.shape), var, out)
            quotient = ir.mul(seed, ir.conj(ir.div(left, ir.power(right, ir.Const(2.0)))))
            _adjoints(right, _unbroadcast(ir.neg(quotient), right.shape), var, out)
        case ir.Binary(op="@", left=left, right=right):
            if ir.is_scalar(node.shape) and ir.is_scalar(seed.shape):
                # a 1×1 product: the seed is a scalar factor
                _adjoints(left, ir.mul(seed, ir.adjoint(right)), var, out)
                _adjoints(right, ir.mul(seed, ir.adjoint(left)), var, out)
            else:
                full = _materialise(seed, node.shape)
                _adjoints(left, ir.matmul(full, ir.adjoint(right)), var, out)
                _adjoints(right, ir.matmul(ir.adjoint(left), full), var, out)
        case ir.Neg(operand=operand):
            _adjoints(operand, ir.neg(seed), var, out)
        case ir.Transpose(operand=operand):
            _adjoints(operand, ir.transpose(seed), var, out)
        case ir.Power(base=base, exponent=exponent):
            if ir.depends_on(exponent, {var}):
                raise NotDifferentiableError("a power whose exponent depends on the variable")
            factor = ir.mul(exponent, ir.power(base, ir.sub(exponent, ir.Const(1.0))))
            _adjoints(base, ir.mul(seed, ir.conj(factor)), var, out)
        case ir.Apply(func="conj", args=(arg,)):
            _adjoints(arg, ir.conj(seed), var, out)
        case ir.Apply(func="re", args=(arg,)):
            _adjoints(arg, seed, var, out)
        case ir.Apply(func="im", args=(arg,)):
            _adjoints(arg, ir.mul(ir.Const(1j), seed), var, out)  # Im z = Re(conj(i) z)
        case ir.Apply(func="abs2", args=(arg,)):
            _adjoints(arg, ir.mul(ir.mul(ir.Const(2.0), seed), arg), var, out)
        case ir.Apply(func="sum", args=(arg,)):
            _adjoints(arg, seed, var, out)
        case ir.Apply(func="logsumexp", args=(arg,)):
            _adjoints(arg, ir.mul(seed, ir.Apply("softmax", (arg,), arg.shape)), var, out)
        case ir.Apply(func=func, args=args) if FUNCTIONS[func].kind == "linear":
            entry = FUNCTIONS[func]
            for index, extra in enumerate(args):
                if index != entry.linear_arg and ir.depends_on(extra, {var}):
                    raise NotDifferentiableError(
                        f"an argument of {func}() other than its input depends on the variable"
                    )
            adjoint = entry.adjoint(args, _materialise(seed, node.shape))
            _adjoints(args[entry.linear_arg], adjoint, var, out)
        case ir.Apply(func=func, args=args) if FUNCTIONS[func].kind == "elementwise" and FUNCTIONS[func].smooth:
            for extra in args[1:]:
                if ir.depends_on(extra, {var}):
                    raise NotDifferentiableError(f"a parameter of {func}() that depends on the variable")
            _adjoints(args[0], ir.mul(seed, ir.conj(elementwise_derivative(func, args))), var, out)
        case ir.Apply(func=func):
            raise NotDifferentiableError(f"{func}() is not differentiable")
        case _:
            raise NotDifferentiableError(f"{type(node).__name__.lower()} is not differentiable")


def gradient(expr: ir.Expr, var: str, shape: ir.Shape) -> ir.Expr:
    """∇_var of the scalar ``expr``, simplified, with the variable's shape."""
    contributions: list[ir.Expr] = []
    _adjoints(expr, ir.Const(1.0), var, contributions)
    if not contributions:
        return ir.mul(ir.Const(0.0), ir.Ones(shape))
    total = contributions[0]
    for term in contributions[1:]:
        total = ir.add(total, term)
    return _materialise(total, shape)


def adjoint_apply(linear: ir.Expr, var: str, seed: ir.Expr, shape: ir.Shape) -> ir.Expr:
    """Lᵀ seed for an expression L linear in ``var``: the gradient of ⟨L(var), seed⟩."""
    contributions: list[ir.Expr] = []
    _adjoints(linear, seed, var, contributions)
    total = contributions[0]
    for term in contributions[1:]:
        total = ir.add(total, term)
    return _materialise(total, shape)


def _linear_operator(expr: ir.Expr, variables: frozenset[str]) -> bool:
    """A linear operator applied to an argument, none of its other arguments depending on ``variables``."""
    if not (isinstance(expr, ir.Apply) and FUNCTIONS[expr.func].kind == "linear"):
        return False
    index = FUNCTIONS[expr.func].linear_arg
    return not any(ir.depends_on(arg, variables) for i, arg in enumerate(expr.args) if i != index)


def degree(expr: ir.Expr, variables: frozenset[str]) -> int | None:
    """0 if ``expr`` does not depend on ``variables``, 1 if affine in them, None otherwise."""
    if not ir.depends_on(expr, variables):
        return 0
    match expr:
        case ir.Ref():
            return 1
        case ir.Binary(op="+" | "-", left=left, right=right):
            parts = [degree(left, variables), degree(right, variables)]
            return None if None in parts else max(parts)
        case ir.Binary(op="*" | "@", left=left, right=right):
            parts = [degree(left, variables), degree(right, variables)]
            if None in parts or sum(parts) > 1:
                return None
            return sum(parts)
        case ir.Binary(op="/", left=left, right=right):
            return degree(left, variables) if degree(right, variables) == 0 else None
        case ir.Neg(operand=operand) | ir.Transpose(operand=operand):
            return degree(operand, variables)
        case ir.Apply(func="sum" | "conj" | "re" | "im", args=(arg,)):  # (real-)linear
            return degree(arg, variables)
        case ir.Apply(func=func, args=args) if _linear_operator(expr, variables):
            return degree(args[FUNCTIONS[func].linear_arg], variables)
    return None


def linear_part(expr: ir.Expr, var: str) -> ir.Expr | None:
    """The part of an affine ``expr`` that is linear in ``var`` (None where it is zero).

    For an affine gradient g(x) = Hx + c this is Hx: the Hessian applied to x.
    """
    if not ir.depends_on(expr, {var}):
        return None
    match expr:
        case ir.Ref():
            return expr
        case ir.Binary(op="+" | "-" as op, left=left, right=right):
            lp, rp = linear_part(left, var), linear_part(right, var)
            if rp is None:
                return lp
            if lp is None:
                return rp if op == "+" else ir.neg(rp)
            return ir.binary(op, lp, rp)
        case ir.Binary(op="*" | "@" as op, left=left, right=right):
            if ir.depends_on(left, {var}):
                return ir.binary(op, linear_part(left, var), right)
            return ir.binary(op, left, linear_part(right, var))
        case ir.Binary(op="/", left=left, right=right):
            return ir.div(linear_part(left, var), right)
        case ir.Neg(operand=operand):
            return ir.neg(linear_part(operand, var))
        case ir.Transpose(operand=operand):
            return ir.transpose(linear_part(operand, var))
        case ir.Apply(func="sum" | "conj" | "re" | "im" as func, args=(arg,)):
            return FUNCTIONS[func].desugar((linear_part(arg, var),), expr.shape)
        case ir.Apply(func=func, args=args) if _linear_operator(expr, frozenset({var})):
            index = FUNCTIONS[func].linear_arg
            inner = linear_part(args[index], var)
            return ir.Apply(func, (*args[:index], inner, *args[index + 1 :]), expr.shape)
    raise NotDifferentiableError("the gradient is not affine in the variable")


@functools.lru_cache(maxsize=256)
def derivatives(
    smooth: ir.Expr, var: str, shape: ir.Shape, variables: frozenset[str]
) -> tuple[ir.Expr, ir.Expr | None]:
    """∇var of the smooth part and, where that gradient is affine in the variables, the Hessian
    applied to ``var`` (None otherwise). Cached: the checker asks to validate a spec, the middle
    stage (unfoldgen.lower) to build the network, and the derivation runs once."""
    grad = gradient(smooth, var, shape)
    return grad, (linear_part(grad, var) if degree(grad, variables) is not None else None)
