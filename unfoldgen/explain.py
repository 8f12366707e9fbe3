"""`unfoldgen explain`: the derived gradients, the prox operators and one layer, as math; with
``--graph FILE`` also a drawing of one layer's dataflow and the K-layer chain (``unfoldgen.graph``)."""

from __future__ import annotations

from collections.abc import Sequence

from unfoldgen import ir
from unfoldgen.compiler import compile_text
from unfoldgen.lower import LoweredUnfold
from unfoldgen.mathtext import MathPrinter
from unfoldgen.nets import NET_KINDS
from unfoldgen.prox import PROX_TABLE, SET_TABLE


class UnfoldChoiceError(KeyError):
    """``--unfold`` names no unfold of the spec, or one unfold is needed and the spec has several."""

    def __str__(self) -> str:
        return str(self.args[0])


def choose_unfolds(
    lowered: Sequence[LoweredUnfold], filename: str, unfold_name: str | None, single: bool = False
) -> list[LoweredUnfold]:
    """The unfolds ``unfold_name`` selects (all of them when it is None); ``single``: exactly one."""
    names = ", ".join(low.name for low in lowered)
    if unfold_name is not None:
        chosen = [low for low in lowered if low.name == unfold_name]
        if not chosen:
            raise UnfoldChoiceError(f"no unfold named {unfold_name!r} in {filename} (have: {names})")
        return chosen
    if single and len(lowered) > 1:
        raise UnfoldChoiceError(f"{filename} has {len(lowered)} unfolds ({names}); choose one with --unfold NAME")
    return list(lowered)


def explain(text: str, filename: str, unfold_name: str | None = None) -> str:
    compiled = compile_text(text, filename)
    return explain_lowered(choose_unfolds(compiled.lowered, filename, unfold_name))


def explain_lowered(lowered: Sequence[LoweredUnfold]) -> str:
    math = MathPrinter()
    out: list[str] = []
    for low in lowered:
        problem = low.problem
        fixed = low.plan.fixed_point
        depth = (
            f"fixed point (relative change ≤ {fixed.tolerance:g}, at most {fixed.iterations} iterations)"
            if fixed
            else f"{low.unfold.layers} layers"
        )
        out.append(f"unfold {low.name} from {problem.name}: {depth} → class {low.class_name}")
        out.append(f"  smooth part   f = {math(problem.smooth)}")
        for term in problem.nonsmooth:
            out.append(f"  non-smooth    {math(term.coef)}·{term.func}({math(term.arg)})")
        for var_set in problem.sets:
            params = ", ".join(math(p) for p in var_set.params)
            out.append(f"  constraint    {var_set.var} ∈ {var_set.set}({params})")
        for var, grad in low.gradients:
            out.append(f"  gradient      ∇{var} f = {math(grad)}")
        for var, product in low.hessians:
            out.append(f"  Hessian·{var}    {math(product)}  (affine gradient)")
        for plan in low.lipschitz:
            terms = plan.terms
            if len(terms) == 1 and terms[0].bound is None:
                value = f" = {math(terms[0].value)}" if terms[0].value is not None else ""
                out.append(f"  {plan.label}  {terms[0].method}{value}: {terms[0].reason}")
                continue
            count = "the bound of one term" if len(terms) == 1 else f"the sum of {len(terms)} terms' bounds"
            out.append(f"  {plan.label}  {count}:")
            for term in terms:
                value = f" = {math(term.value)}" if term.value is not None else ""
                what = term.bound or "the quadratic part: λ_max of its Hessian"
                out.append(f"      {what}; {term.method}{value}: {term.reason}")
        for rule in low.unfold.rules:
            for node in ir.walk(rule.value):
                if isinstance(node, ir.Prox):
                    entry = PROX_TABLE[node.op]
                    options = "".join(
                        f", {name} {math(value)}" for name, value in zip(entry.options, node.params, strict=True)
                    )
                    scaled = f"scaled by {math(node.scale)}{options}"
                    out.append(f"  prox          {node.op} {scaled}: {entry.math} ({entry.helper})")
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
        for entry in low.plan.learned():
            tying = "per layer" if entry.per_layer else "shared"
            out.append(f"  learned       {entry.name} ({entry.role}, {tying}, paradigm {entry.paradigm})")
        external = {net.name for net in low.unfold.nets if NET_KINDS[net.kind].external}
        for entry in low.plan.of_storage("net", "net_list"):
            if entry.name in external:
                out.append(f"  net           {entry.name} is external: the nn.Module passed as {entry.name}=, as given")
                continue
            start = "at zero (a correction term)" if entry.starts_at_zero else "random (it replaces a step)"
            out.append(f"  net           {entry.name} starts {start}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
