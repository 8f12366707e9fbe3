"""IR as readable math, for `unfoldgen explain`, docstrings and messages.

It reads only the IR and the library tables, so every stage may use it (the checker and the
Lipschitz planner word their messages with it).
"""

from __future__ import annotations

from unfoldgen import ir
from unfoldgen.functions import FUNCTIONS
from unfoldgen.prox import PROX_TABLE, prox_key

ATOM, POWER, UNARY, PRODUCT, SUM = 100, 90, 80, 70, 60  # operator precedences, shared with the code printers


def dims_code(shape: ir.Shape) -> str:
    """A shape's dims as the inside of a Python tuple: ``m, n``."""
    return ", ".join(ir.dim_code(d) for d in shape)


class MathPrinter:
    """IR → readable math for `unfoldgen explain` and docstrings."""

    def __call__(self, expr: ir.Expr) -> str:
        return self.print(expr)[0]

    def print(self, expr: ir.Expr) -> tuple[str, int]:
        match expr:
            case ir.Const(value=value):
                text = repr(value) if isinstance(value, complex) else f"{value:g}"
                return text, (UNARY if text.startswith("-") else ATOM)
            case ir.Ref(name=name):
                return name, ATOM
            case ir.Ones(shape=shape):
                return f"1[{dims_code(shape)}]", ATOM
            case ir.Eye(size=size):
                return f"I[{size}]", ATOM
            case ir.Binary(op=op, left=left, right=right):
                prec = SUM if op in "+-" else PRODUCT
                symbol = {"@": " ", "*": "·", "/": "/", "+": " + ", "-": " − "}[op]
                if op in "*/" and ir.is_scalar(left.shape) and ir.is_scalar(right.shape):
                    symbol = "·" if op == "*" else "/"
                if op == "*" and not (ir.is_scalar(left.shape) or ir.is_scalar(right.shape)):
                    symbol = " ⊙ "
                return f"{self.wrap(left, prec)}{symbol}{self.wrap(right, prec + 1)}", prec
            case ir.Neg(operand=operand):
                return f"−{self.wrap(operand, UNARY)}", UNARY
            case ir.Power(base=base, exponent=exponent):
                return f"{self.wrap(base, ATOM)}^{self.wrap(exponent, ATOM)}", POWER
            case ir.Transpose(operand=operand):
                return f"{self.wrap(operand, ATOM)}ᵀ", ATOM
            case ir.Apply(func="conj", args=(ir.Transpose(operand=operand),)):
                return f"{self.wrap(operand, ATOM)}ᴴ", ATOM
            case ir.Apply(func=func, args=args) if FUNCTIONS[func].kind == "linear":
                return FUNCTIONS[func].math.format(*(self.wrap(a, ATOM) for a in args)), PRODUCT
            case ir.Apply(func=func, args=args):
                return FUNCTIONS[func].math.format(*(self(a) for a in args)), ATOM
            case ir.Prox(op=op, scale=scale, arg=arg, params=params):
                entry = PROX_TABLE[op]
                options = "".join(f", {name} {self(value)}" for name, value in zip(entry.options, params, strict=True))
                function = prox_key(entry.func, entry.set)
                return f"prox[{self(scale)}·{function}{options}]({self(arg)})", ATOM
            case ir.Proj(set=set_name, params=params, arg=arg):
                inner = f"({', '.join(self(p) for p in params)})" if params else ""
                return f"proj[{set_name}{inner}]({self(arg)})", ATOM
            case ir.Grad(var=var, substitutions=subs):
                at = f" at {', '.join(f'{n}={self(v)}' for n, v in subs)}" if subs else ""
                return f"∇{var} f{at}", ATOM
            case ir.Lipschitz():
                return f"L_{','.join(expr.variables)}", ATOM
            case ir.NetCall(net=net, args=args):
                return f"{net}({', '.join(self(a) for a in args)})", ATOM
        raise TypeError(f"cannot print {type(expr).__name__}")

    def wrap(self, expr: ir.Expr, needed: int) -> str:
        text, prec = self.print(expr)
        return text if prec >= needed else f"({text})"
