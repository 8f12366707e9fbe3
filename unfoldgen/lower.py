"""The middle stage: lower a checked unfold to what every backend reads.

Gradients are expanded into the rules, and one typed plan (``UnfoldPlan``) says for every name
where it lives, its axes, its state-dict keys, whether it is learned per layer or shared, its
design paradigm, and which library entries the unfold uses. The torch and numba emitters,
``explain``, the graph drawing and the trainer read the plan; none of them re-derives it.
"""

from __future__ import annotations

from dataclasses import dataclass

from unfoldgen import calculus, ir
from unfoldgen.check import CheckedProblem, CheckedUnfold, DimSource, Learn, LearnBounds, NetInfo, Rule, Symbol
from unfoldgen.nets import NET_KINDS
from unfoldgen.spectral import LipschitzPlan

# Which of the four design paradigms a learned quantity belongs to (nets: 3 or 4, by their start).
PARADIGM_BY_ROLE = {"hyper": 1, "data": 2, "param": 2, "weight": 2}

# Where a name lives in the generated module:
STORAGES = {
    "dim": "a size, read off a data tensor or an input (dim_source) or passed to the constructor",
    "input": "a per-sample input: an argument of forward and run, with a leading batch axis",
    "carried": "a variable or state, carried from one layer to the next",
    "buffer": "a fixed tensor (a buffer of the module; not learned)",
    "layer_buffer": "a fixed tensor per layer (it depends on the layer index k): a buffer of shape (K, …)",
    "layer": "the layer index k (0-based), a number of the model's dtype",
    "per_sample": "a value computed per sample from the inputs (not learned)",
    "parameter": "one learned tensor shared by all layers (nn.Parameter; bounded: a Bounded module, keys "
    "NAME.raw, NAME.low, NAME.high)",
    "parameter_list": "one learned tensor per layer (nn.ParameterList: keys NAME.0 … NAME.{K-1}; bounded: a "
    "Bounded module, keys NAME.raw.0 …, NAME.low, NAME.high)",
    "per_sample_factor": "a learned factor (shared or per layer) on a value computed per sample",
    "net": "a net shared by all layers (nn.Module)",
    "net_list": "a net per layer (nn.ModuleList: keys NAME.0. … NAME.{K-1}.)",
    "let": "a temporary of one layer",
}


@dataclass(frozen=True)
class NamePlan:
    """One name of an unfold: where it lives and how it is stored."""

    name: str
    role: str  # dim, data, input, var, param, hyper, weight, state, net, let
    storage: str  # a key of STORAGES
    shape: ir.Shape  # the internal layout: (rows, cols); vectors are (n, 1) columns, scalars ()
    axes: tuple[ir.Dim, ...]  # the user's axes, without the batch: (), (n,), (m, n)
    learned: bool
    per_layer: bool  # learned with one copy per layer
    paradigm: int | None  # 1 hyper, 2 objective, 3 correction net, 4 replacing net; None if fixed
    state_key: str | None  # its state-dict key (the prefix NAME.k… when per layer); None if not stored
    problem_key: str | None  # a learned data/param: the buffer keeping the problem's own value
    per_sample: bool  # differs between the samples of a batch
    dim_source: DimSource | None = None  # dims: where the size is read
    starts_at_zero: bool | None = None  # nets: output zero at the start (a correction term)
    net_options: dict[str, int | str] | None = None  # nets: every option of the kind, defaults filled in
    bounds: LearnBounds | None = None  # a bounded learned value: learned through a reparametrisation
    layer_values: bool = False  # computed from the layer index k: its start differs per layer
    complex: bool = False  # complex values (the model's dtype's complex counterpart)

    @property
    def attribute(self) -> str:
        """The module attribute holding the problem's own value (a learned data/param keeps it
        apart from the learned copy)."""
        return self.problem_key or self.name


@dataclass(frozen=True)
class FixedPointPlan:
    """A fixed-point unfold: forward iterates its one layer without a graph until every sample's
    relative change ‖z_{k+1} − z_k‖ / max(‖z_k‖, tiny) is at most ``tolerance`` (or for ``iterations``,
    the cap, which the generated module calls ``layers``), then applies it once more with gradients;
    backward solves the adjoint fixed-point equation with the same tolerance and cap."""

    tolerance: float
    iterations: int


@dataclass(frozen=True)
class Certificate:
    """A classical convergence condition that ``certify`` checks in every layer.

    kind: ``step_size`` (a gradient step s on the smooth part: 0 < s < 2/L, L = lipschitz(var)),
    ``positive_step`` (a step whose bound is not known: s > 0), ``nonnegative_scale`` (a prox
    scale, e.g. a threshold: ≥ 0) or ``coupled_weight`` (LISTA-CP/ALISTA: ``value`` is the
    matrix W A the weight meets the data with, normalised diag = 1 with generalized coherence < 1).
    """

    kind: str
    value: ir.Expr  # evaluated per layer
    var: str | None = None  # step_size: the variable whose Lipschitz constant bounds the step


@dataclass(frozen=True)
class UnfoldPlan:
    """The typed plan of one unfold; ``names`` in declaration order (problem, unfold, nets, lets)."""

    names: dict[str, NamePlan]
    inputs: tuple[str, ...]
    variables: tuple[str, ...]
    outputs: tuple[str, ...]
    carried: tuple[str, ...]  # what a layer carries to the next: variables, then states
    paradigms: dict[str, int]  # learned name → paradigm
    layer_lists: tuple[str, ...]  # learned tensors held one per layer (nn.ParameterList), factors included
    functions: tuple[str, ...]  # library entries used: FUNCTIONS keys
    prox_ops: tuple[str, ...]  # PROX_TABLE keys
    sets: tuple[str, ...]  # SET_TABLE keys
    net_kinds: tuple[str, ...]  # NET_KINDS keys
    # checked when the model is built (unless validate=False): fixed hypers that multiply a gradient
    # must be positive, and a non-smooth term's coefficient, a threshold, nonnegative
    gradient_steps: tuple[str, ...] = ()
    thresholds: tuple[tuple[str, ir.Expr], ...] = ()  # (the non-smooth function, its coefficient)
    fixed_point: FixedPointPlan | None = None  # None: an unrolled network of `layers` layers
    certificates: tuple[Certificate, ...] = ()  # the conditions certify checks per layer

    def __getitem__(self, name: str) -> NamePlan:
        return self.names[name]

    def learned(self) -> tuple[NamePlan, ...]:
        """The learned names, in the order of the learn statements."""
        return tuple(self.names[name] for name in self.paradigms)

    def of_storage(self, *storages: str) -> tuple[NamePlan, ...]:
        return tuple(entry for entry in self.names.values() if entry.storage in storages)


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
    lipschitz_vars: tuple[tuple[str, ...], ...]  # the variables of each lipschitz(...) used
    paradigms: dict[str, int]
    plan: UnfoldPlan
    gradients: tuple[tuple[str, ir.Expr], ...]  # ∇var f of the smooth part, simplified
    hessians: tuple[tuple[str, ir.Expr], ...]  # the Hessian applied to var, where ∇var f is affine
    lipschitz: tuple[LipschitzPlan, ...] = ()  # how each lipschitz(var) the unfold uses is computed
    # the forward model: inputs the smooth part compares with an affine map of the variables,
    # sumsq(F(x) − y), as (y, F(x)); the generated measure() evaluates F (data sources use it)
    measurements: tuple[tuple[str, ir.Expr], ...] = ()

    def gradient(self, var: str) -> ir.Expr:
        return dict(self.gradients)[var]

    def hessian_product(self, var: str) -> ir.Expr | None:
        return dict(self.hessians).get(var)

    def lipschitz_plan(self, variables: tuple[str, ...]) -> LipschitzPlan:
        return next(plan for plan in self.lipschitz if plan.variables == variables)

    @property
    def carried(self) -> tuple[Symbol, ...]:
        """What a layer carries to the next: the problem's variables, then the unfold's states."""
        return self.problem.of_role("var") + tuple(s for s in self.unfold.symbols if s.role == "state")

    @property
    def per_sample(self) -> frozenset[str]:
        """Names of the quantities that differ between the samples of a batch."""
        return frozenset(entry.name for entry in self.plan.names.values() if entry.per_sample)

    def symbol(self, name: str) -> Symbol:
        for symbol in self.problem.symbols + self.unfold.symbols + self.unfold.layer_symbols:
            if symbol.name == name:
                return symbol
        raise KeyError(name)


def class_name(name: str) -> str:
    """``lista_cp`` → ``ListaCp``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def derive(problem: CheckedProblem) -> tuple[tuple, tuple]:
    """The gradients of the smooth part, and the Hessian products where a gradient is affine."""
    variables = frozenset(s.name for s in problem.of_role("var"))
    gradients, hessians = [], []
    for var in problem.differentiated():
        gradient, hessian = calculus.derivatives(problem.smooth, var, problem.symbol(var).shape, variables)
        gradients.append((var, gradient))
        if hessian is not None:
            hessians.append((var, hessian))
    return tuple(gradients), tuple(hessians)


def expand_gradients(expr: ir.Expr, gradients: dict[str, ir.Expr]) -> ir.Expr:
    """Replace every grad node by the derived gradient, evaluated at the requested point."""
    match expr:
        case ir.Grad(var=var, substitutions=subs):
            point = {name: expand_gradients(value, gradients) for name, value in subs}
            return ir.substitute(gradients[var], point)
        case ir.Binary(op=op, left=left, right=right):
            return ir.Binary(op, expand_gradients(left, gradients), expand_gradients(right, gradients), expr.shape)
        case ir.Neg(operand=operand):
            return ir.Neg(expand_gradients(operand, gradients), expr.shape)
        case ir.Transpose(operand=operand):
            return ir.Transpose(expand_gradients(operand, gradients), expr.shape)
        case ir.Power(base=base, exponent=exponent):
            return ir.Power(expand_gradients(base, gradients), expand_gradients(exponent, gradients), expr.shape)
        case ir.Apply(func=func, args=args):
            return ir.Apply(func, tuple(expand_gradients(a, gradients) for a in args), expr.shape)
        case ir.Prox(op=op, scale=scale, arg=arg, params=params):
            params = tuple(expand_gradients(p, gradients) for p in params)
            scale, arg = expand_gradients(scale, gradients), expand_gradients(arg, gradients)
            return ir.Prox(op, scale, arg, expr.shape, params)
        case ir.Proj(set=set_name, params=params, arg=arg):
            params = tuple(expand_gradients(p, gradients) for p in params)
            return ir.Proj(set_name, params, expand_gradients(arg, gradients), expr.shape)
        case ir.NetCall(net=net, args=args):
            return ir.NetCall(net, tuple(expand_gradients(a, gradients) for a in args), expr.shape)
    return expr


def _storage(symbol: Symbol, learn: Learn | None, dynamic: bool) -> str:
    if symbol.role in ("dim", "input", "let", "layer"):
        return symbol.role
    if symbol.role in ("var", "state"):
        return "carried"
    if symbol.role == "net":
        return "net" if learn is None or not learn.per_layer else "net_list"
    if dynamic:
        return "per_sample" if learn is None else "per_sample_factor"
    if learn is None:
        return "layer_buffer" if symbol.depends_on_layer else "buffer"
    return "parameter_list" if learn.per_layer else "parameter"


def _net_options(net: NetInfo) -> dict[str, int | str]:
    return NET_KINDS[net.kind].resolved(net.options)


def _library_entries(exprs: list[ir.Expr]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"functions": [], "prox_ops": [], "sets": []}
    for expr in exprs:
        for node in ir.walk(expr):
            match node:
                case ir.Apply(func=func):
                    key, value = "functions", func
                case ir.Prox(op=op):
                    key, value = "prox_ops", op
                case ir.Proj(set=set_name):
                    key, value = "sets", set_name
                case _:
                    continue
            if value not in found[key]:
                found[key].append(value)
    return found


def make_plan(
    unfold: CheckedUnfold, rules: tuple[Rule, ...], dynamic: tuple[Symbol, ...], per_sample: frozenset[str]
) -> UnfoldPlan:
    problem = unfold.problem
    learned = {learn.name: learn for learn in unfold.learns}
    nets = {net.name: net for net in unfold.nets}
    sources = {source.dim: source for source in problem.dim_sources}
    dynamic_names = {symbol.name for symbol in dynamic}
    symbols = list(problem.symbols + unfold.symbols + unfold.layer_symbols)
    symbols += [Symbol(net.name, "net", ir.SCALAR, None, unfold.span) for net in unfold.nets]
    symbols += [Symbol(rule.target, "let", rule.value.shape, None, unfold.span) for rule in rules if rule.is_let]
    names: dict[str, NamePlan] = {}
    for symbol in symbols:
        learn = learned.get(symbol.name)
        storage = _storage(symbol, learn, symbol.name in dynamic_names)
        net = nets.get(symbol.name)
        if learn is None:
            paradigm = None
        elif net is not None:
            paradigm = 3 if net.correction else 4
        else:
            paradigm = PARADIGM_BY_ROLE[learn.role]
        stored = storage not in ("dim", "input", "carried", "per_sample", "let", "layer")
        names[symbol.name] = NamePlan(
            name=symbol.name,
            role=symbol.role,
            storage=storage,
            shape=symbol.shape,
            axes=ir.user_axes(symbol.shape),
            learned=learn is not None,
            per_layer=learn is not None and learn.per_layer,
            paradigm=paradigm,
            state_key=symbol.name if stored else None,
            problem_key=f"_problem_{symbol.name}" if learn is not None and symbol.role in ("data", "param") else None,
            per_sample=symbol.name in per_sample,
            dim_source=sources.get(symbol.name),
            # an external net is the caller's module: it starts as given, even as a correction
            starts_at_zero=net.correction and not NET_KINDS[net.kind].external if net is not None else None,
            net_options=_net_options(net) if net is not None else None,
            bounds=learn.bounds if learn is not None else None,
            layer_values=symbol.depends_on_layer,
            complex=symbol.complex,
        )
    expressions = [rule.value for rule in rules] + [s.init for s in symbols if s.init is not None]
    expressions += [side for learn in unfold.learns if learn.bounds for side in _sides(learn.bounds)]
    expressions.append(problem.smooth)
    expressions += [ir.Apply(term.func, (term.arg,), ir.SCALAR) for term in problem.nonsmooth]
    entries = _library_entries(expressions)
    return UnfoldPlan(
        names=names,
        inputs=tuple(s.name for s in problem.of_role("input")),
        variables=tuple(s.name for s in problem.of_role("var")),
        outputs=tuple(unfold.outputs),
        carried=tuple(s.name for s in problem.of_role("var") + tuple(s for s in unfold.symbols if s.role == "state")),
        # in the order of the learn statements, as the generated PARADIGMS and LAYER_LISTS list them
        paradigms={name: names[name].paradigm for name in learned},
        # one parameter per layer, not one stacked (K, ...) parameter indexed per layer: that made
        # every layer's backward write a zero-filled (K, ...) gradient (for matrices it tripled a
        # LISTA-CP training step; for scalars it cost 2-3% of the step)
        # a bounded value is a Bounded module (its raw tensors are NAME.raw.k), not a list
        layer_lists=tuple(
            name
            for name in learned
            if names[name].per_layer and names[name].role != "net" and names[name].bounds is None
        ),
        functions=tuple(entries["functions"]),
        prox_ops=tuple(entries["prox_ops"]),
        sets=tuple(entries["sets"]),
        net_kinds=tuple(dict.fromkeys(net.kind for net in unfold.nets)),
        gradient_steps=_gradient_steps(unfold, names),
        certificates=_certificates(unfold, names, per_sample),
        thresholds=tuple(
            (term.func, term.coef)
            for term in problem.nonsmooth
            if ir.refs(term.coef) and all(names[ref].role in ("param", "dim") for ref in ir.refs(term.coef))
        ),
        fixed_point=(
            FixedPointPlan(unfold.fixed_point.tolerance, unfold.fixed_point.iterations) if unfold.fixed_point else None
        ),
    )


def _sides(bounds: LearnBounds) -> list[ir.Expr]:
    """The bound expressions given (one or two)."""
    return [side for side in (bounds.low, bounds.high) if side is not None]


def _gradient_steps(unfold: CheckedUnfold, names: dict[str, NamePlan]) -> tuple[str, ...]:
    """Hypers fixed at build time that multiply a gradient in a rule (``x - mu * grad(x)``, or a
    ``let g = grad(x)`` then ``x - mu * g``)."""
    return tuple(dict.fromkeys(name for name, _ in _gradient_step_vars(unfold, names)))


def _gradient_step_vars(unfold: CheckedUnfold, names: dict[str, NamePlan]) -> list[tuple[str, str]]:
    """(step, variable) for every hyper fixed at build time that multiplies the gradient of a variable."""
    steps: list[tuple[str, str]] = []
    gradient_lets: dict[str, str] = {}  # let g = grad(x): g → x
    for rule in unfold.rules:
        if rule.is_let and isinstance(rule.value, ir.Grad):
            gradient_lets[rule.target] = rule.value.var
        for node in ir.walk(rule.value):
            if isinstance(node, ir.Binary) and node.op == "*":
                for factor, other in ((node.left, node.right), (node.right, node.left)):
                    var = other.var if isinstance(other, ir.Grad) else None
                    if isinstance(other, ir.Ref):
                        var = gradient_lets.get(other.name)
                    if (
                        isinstance(factor, ir.Ref)
                        and var is not None
                        and names[factor.name].role == "hyper"
                        and names[factor.name].storage in ("buffer", "layer_buffer", "parameter", "parameter_list")
                        and (factor.name, var) not in steps
                    ):
                        steps.append((factor.name, var))
    return steps


def _certificates(unfold: CheckedUnfold, names: dict[str, NamePlan], per_sample: frozenset[str]) -> tuple:
    """The conditions certify checks: gradient steps, prox scales that are fixed numbers per layer, and
    weights coupled with the data in a residual (``W.T @ (A @ x - y)``, ``W @ (y - A @ x)``)."""
    found: list[Certificate] = []

    def add(certificate: Certificate) -> None:
        if certificate not in found:
            found.append(certificate)

    for name, var in _gradient_step_vars(unfold, names):
        add(Certificate("step_size", ir.Ref(name, "hyper", names[name].shape), var))
    for rule in unfold.rules:
        for node in ir.walk(rule.value):
            if isinstance(node, ir.Prox) and not ir.depends_on(node.scale, per_sample):
                add(Certificate("nonnegative_scale", node.scale))
            if isinstance(node, ir.Binary) and node.op == "@":
                coupled = _coupled_weight(node, names)
                if coupled is not None:
                    factor, product = coupled
                    if factor is not None:
                        add(Certificate("positive_step", factor))
                    add(Certificate("coupled_weight", product))
    return tuple(found)


def _coupled_weight(node: ir.Binary, names: dict[str, NamePlan]) -> tuple[ir.Expr | None, ir.Expr] | None:
    """``[s *] W[.T] @ (A @ x - y)`` (or ``y - A @ x``) with W a weight, A fixed, x a variable, y an
    input: the factor s (or None) and the product W[.T] @ A the theory of LISTA-CP/ALISTA constrains."""
    factor, weight = None, node.left
    if isinstance(weight, ir.Binary) and weight.op == "*" and ir.is_scalar(weight.left.shape):
        factor, weight = weight.left, weight.right
    base = weight.operand if isinstance(weight, ir.Transpose) else weight
    residual = node.right
    if not (isinstance(base, ir.Ref) and names[base.name].role == "weight"):
        return None
    if not (isinstance(residual, ir.Binary) and residual.op == "-"):
        return None
    for model, measured in ((residual.left, residual.right), (residual.right, residual.left)):
        if (
            isinstance(measured, ir.Ref)
            and names[measured.name].role == "input"
            and isinstance(model, ir.Binary)
            and model.op == "@"
            and isinstance(model.left, ir.Ref)
            and names[model.left.name].role in ("data", "param", "weight")
            and model.left.name != base.name
            and isinstance(model.right, ir.Ref)
            and names[model.right.name].role == "var"
        ):
            shape = (weight.shape[0], model.left.shape[1])
            return factor, ir.Binary("@", weight, model.left, shape)
    return None


def lower(unfold: CheckedUnfold) -> LoweredUnfold:
    problem = unfold.problem
    gradients, hessians = derive(problem)
    rules = tuple(Rule(r.target, expand_gradients(r.value, dict(gradients)), r.is_let) for r in unfold.rules)
    static = tuple(sym for sym in unfold.symbols if sym.role in ("hyper", "weight") and not sym.depends_on_inputs)
    dynamic = tuple(sym for sym in unfold.symbols if sym.role in ("hyper", "weight") and sym.depends_on_inputs)
    lipschitz_vars: list[tuple[str, ...]] = []
    bound_exprs = [side for learn in unfold.learns if learn.bounds for side in _sides(learn.bounds)]
    for expr in [symbol.init for symbol in unfold.symbols] + bound_exprs:
        for node in ir.walk(expr):
            if isinstance(node, ir.Lipschitz) and node.variables not in lipschitz_vars:
                lipschitz_vars.append(node.variables)
    plan = make_plan(unfold, rules, dynamic, _per_sample(unfold, rules, dynamic))
    # certify bounds each gradient step by 2/L: the constant of every such variable with an affine gradient
    for certificate in plan.certificates:
        wanted = (certificate.var,)
        if certificate.var is not None and certificate.var in dict(hessians) and wanted not in lipschitz_vars:
            lipschitz_vars.append(wanted)
    return LoweredUnfold(
        unfold.name,
        class_name(unfold.name),
        unfold,
        problem,
        rules,
        {learn.name: learn for learn in unfold.learns},
        static,
        dynamic,
        tuple(lipschitz_vars),
        plan.paradigms,
        plan,
        gradients,
        hessians,
        lipschitz_plans(problem, lipschitz_vars),
        measurements(problem),
    )


def lipschitz_plans(problem: CheckedProblem, wanted: list[tuple[str, ...]]) -> tuple[LipschitzPlan, ...]:
    """A plan per ``lipschitz(...)``, each with its own method name: ``lipschitz_x`` for one
    variable, ``lipschitz_x_z`` for a joint constant (numbered on a clash, e.g. with a variable x_z)."""
    names: set[str] = set()
    plans = []
    for variables in sorted(wanted, key=len):  # single variables keep lipschitz_<var>
        base = "lipschitz_" + "_".join(variables)
        name, number = base, 2
        while name in names:
            name, number = f"{base}_{number}", number + 1
        names.add(name)
        plans.append(LipschitzPlan(variables, name, problem.lipschitz_terms(variables)))
    return tuple(sorted(plans, key=lambda plan: wanted.index(plan.variables)))


def measurements(problem: CheckedProblem) -> tuple[tuple[str, ir.Expr], ...]:
    """``(y, F)`` for every least-squares term ``Σ (F(x) − y)²`` (or ``(y − F(x))²``) of the smooth part
    with y an input and F affine in the variables and free of y."""
    variables = frozenset(s.name for s in problem.of_role("var"))
    inputs = {s.name for s in problem.of_role("input")}
    found: dict[str, ir.Expr] = {}
    for node in ir.walk(problem.smooth):
        if not (
            isinstance(node, ir.Apply)
            and node.func == "sum"
            and isinstance(node.args[0], ir.Power)
            and node.args[0].exponent == ir.Const(2.0)
            and isinstance(node.args[0].base, ir.Binary)
            and node.args[0].base.op == "-"
        ):
            continue
        difference = node.args[0].base
        for model, measured in ((difference.left, difference.right), (difference.right, difference.left)):
            if (
                isinstance(measured, ir.Ref)
                and measured.name in inputs
                and measured.name not in found
                and not ir.depends_on(model, {measured.name})
                and calculus.degree(model, variables) == 1
            ):
                found[measured.name] = model
    return tuple(found.items())


def _per_sample(unfold: CheckedUnfold, rules: tuple[Rule, ...], dynamic: tuple[Symbol, ...]) -> frozenset[str]:
    """Names of the quantities that differ between the samples of a batch."""
    carried = unfold.problem.of_role("var") + tuple(s for s in unfold.symbols if s.role == "state")
    names = {s.name for s in unfold.problem.of_role("input") + carried} | {s.name for s in dynamic}
    for rule in rules:
        if rule.is_let and ir.depends_on(rule.value, names):
            names.add(rule.target)
    return frozenset(names)
