"""`unfoldgen explain`: the derived gradients, the prox operators and one layer, as math."""

from __future__ import annotations

from unfoldgen import ir
from unfoldgen.compiler import compile_text
from unfoldgen.printers import MathPrinter
from unfoldgen.prox import PROX_TABLE, SET_TABLE


def explain(text: str, filename: str, unfold_name: str | None = None) -> str:
    compiled = compile_text(text, filename)
    math = MathPrinter()
    lowered = [low for low in compiled.lowered if unfold_name in (None, low.name)]
    if unfold_name is not None and not lowered:
        names = ", ".join(low.name for low in compiled.lowered)
        raise KeyError(f"no unfold named {unfold_name!r} in {filename} (have: {names})")
    out: list[str] = []
    for low in lowered:
        problem = low.problem
        out.append(f"unfold {low.name} from {problem.name}: {low.unfold.layers} layers → class {low.class_name}")
        out.append(f"  smooth part   f = {math(problem.smooth)}")
        for term in problem.nonsmooth:
            out.append(f"  non-smooth    {math(term.coef)}·{term.func}({math(term.arg)})")
        for var_set in problem.sets:
            params = ", ".join(math(p) for p in var_set.params)
            out.append(f"  constraint    {var_set.var} ∈ {var_set.set}({params})")
        for var, grad in problem.gradients:
            out.append(f"  gradient      ∇{var} f = {math(grad)}")
        for var, product in problem.hessians:
            out.append(f"  Hessian·{var}    {math(product)}  (affine gradient: exact Lipschitz constant)")
        for rule in low.unfold.rules:
            for node in ir.walk(rule.value):
                if isinstance(node, ir.Prox):
                    entry = PROX_TABLE[node.op]
                    out.append(f"  prox          {node.op} scaled by {math(node.scale)}: {entry.math} ({entry.helper})")
                elif isinstance(node, ir.Proj):
                    entry = SET_TABLE[node.set]
                    out.append(f"  projection    {node.set}: {entry.math} ({entry.helper})")
        out.append("  one layer:")
        for rule in low.unfold.rules:
            arrow = "=" if rule.is_let else "←"
            out.append(f"    {rule.target} {arrow} {math(rule.value)}")
        out.append("  expanded:")
        for rule in low.rules:
            arrow = "=" if rule.is_let else "←"
            out.append(f"    {rule.target} {arrow} {math(rule.value)}")
        for name, learn in low.learned.items():
            tying = "per layer" if learn.per_layer else "shared"
            out.append(f"  learned       {name} ({learn.role}, {tying}, paradigm {low.paradigms[name]})")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
