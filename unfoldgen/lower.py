"""Lower a checked unfold to what the emitters need: gradients expanded into the rules,
learnables classified, hyperparameters split into build-time and per-sample ones."""

from __future__ import annotations

from dataclasses import dataclass

from unfoldgen import ir
from unfoldgen.check import CheckedProblem, CheckedUnfold, Learn, Rule, Symbol

# Which of the four design paradigms a learned quantity belongs to.
PARADIGM_BY_ROLE = {"hyper": 1, "data": 2, "param": 2, "weight": 2}


@dataclass(frozen=True)
class LoweredUnfold:
    name: str
    class_name: str
    unfold: CheckedUnfold
    problem: CheckedProblem
    rules: tuple[Rule, ...]  # grad(x) replaced by its derived expression
    learned: dict[str, Learn]
    static: tuple[Symbol, ...]  # hypers/weights fixed when the model is built
    dynamic: tuple[Symbol, ...]  # hypers/weights that depend on per-sample inputs
    lipschitz_vars: tuple[str, ...]
    paradigms: dict[str, int]

    @property
    def carried(self) -> tuple[Symbol, ...]:
        """What a layer carries to the next: the problem's variables, then the unfold's states."""
        return self.problem.of_role("var") + tuple(s for s in self.unfold.symbols if s.role == "state")

    @property
    def per_sample(self) -> frozenset[str]:
        """Names of the quantities that differ between the samples of a batch."""
        names = {s.name for s in self.problem.of_role("input") + self.carried}
        names |= {s.name for s in self.dynamic}
        for rule in self.rules:
            if rule.is_let and ir.depends_on(rule.value, names):
                names.add(rule.target)
        return frozenset(names)

    def symbol(self, name: str) -> Symbol:
        for symbol in self.problem.symbols + self.unfold.symbols:
            if symbol.name == name:
                return symbol
        raise KeyError(name)


def class_name(name: str) -> str:
    """``lista_cp`` → ``ListaCp``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def expand_gradients(expr: ir.Expr, problem: CheckedProblem) -> ir.Expr:
    """Replace every grad node by the derived gradient, evaluated at the requested point."""
    match expr:
        case ir.Grad(var=var, substitutions=subs):
            point = {name: expand_gradients(value, problem) for name, value in subs}
            return ir.substitute(problem.gradient(var), point)
        case ir.Binary(op=op, left=left, right=right):
            return ir.Binary(op, expand_gradients(left, problem), expand_gradients(right, problem), expr.shape)
        case ir.Neg(operand=operand):
            return ir.Neg(expand_gradients(operand, problem), expr.shape)
        case ir.Transpose(operand=operand):
            return ir.Transpose(expand_gradients(operand, problem), expr.shape)
        case ir.Power(base=base, exponent=exponent):
            return ir.Power(expand_gradients(base, problem), expand_gradients(exponent, problem), expr.shape)
        case ir.Apply(func=func, args=args):
            return ir.Apply(func, tuple(expand_gradients(a, problem) for a in args), expr.shape)
        case ir.Prox(op=op, scale=scale, arg=arg):
            return ir.Prox(op, expand_gradients(scale, problem), expand_gradients(arg, problem), expr.shape)
        case ir.Proj(set=set_name, params=params, arg=arg):
            params = tuple(expand_gradients(p, problem) for p in params)
            return ir.Proj(set_name, params, expand_gradients(arg, problem), expr.shape)
        case ir.NetCall(net=net, args=args):
            return ir.NetCall(net, tuple(expand_gradients(a, problem) for a in args), expr.shape)
    return expr


def lower(unfold: CheckedUnfold) -> LoweredUnfold:
    problem = unfold.problem
    rules = tuple(Rule(rule.target, expand_gradients(rule.value, problem), rule.is_let) for rule in unfold.rules)
    learned = {learn.name: learn for learn in unfold.learns}
    static = tuple(sym for sym in unfold.symbols if sym.role in ("hyper", "weight") and not sym.depends_on_inputs)
    dynamic = tuple(sym for sym in unfold.symbols if sym.role in ("hyper", "weight") and sym.depends_on_inputs)
    lipschitz_vars: list[str] = []
    for symbol in unfold.symbols:
        for node in ir.walk(symbol.init):
            if isinstance(node, ir.Lipschitz) and node.var not in lipschitz_vars:
                lipschitz_vars.append(node.var)
    paradigms = {}
    for learn in unfold.learns:
        if learn.role == "net":
            net = next(n for n in unfold.nets if n.name == learn.name)
            paradigms[learn.name] = 3 if net.correction else 4
        else:
            paradigms[learn.name] = PARADIGM_BY_ROLE[learn.role]
    return LoweredUnfold(
        unfold.name,
        class_name(unfold.name),
        unfold,
        problem,
        rules,
        learned,
        static,
        dynamic,
        tuple(lipschitz_vars),
        paradigms,
    )
