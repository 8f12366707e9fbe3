"""Emit the torch side of a generated package: ``NAME/model.py`` and ``NAME/__init__.py``.

The template context is computed here, the templates lay it out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from unfoldgen import ir
from unfoldgen.bounds import bound_form
from unfoldgen.check import Symbol
from unfoldgen.emit import base
from unfoldgen.emit.base import STORED_LAYER, header, helper_sources, referenced_names
from unfoldgen.functions import FUNCTIONS
from unfoldgen.lower import LoweredUnfold, UnfoldPlan
from unfoldgen.nets import NET_KINDS
from unfoldgen.printers import ATOM, MathPrinter, TorchPrinter, dims_code, format_float, image_layout
from unfoldgen.prox import PROX_TABLE, SET_TABLE

INDENT = "    "
DTYPE_ANCHOR = "_dtype_anchor"


# ------------------------------------------------------------ binding of names


@dataclass(frozen=True)
class _Context:
    """How references print in one generated method.

    mode: ``layer`` (layer k: learned values of layer k), ``problem`` (the problem's own
    values: objective, Lipschitz constants, initial variables), ``prepare`` (per-sample
    hyperparameters), ``build`` (the constructor, where everything is a local).
    """

    mode: str
    lowered: LoweredUnfold
    locals: frozenset[str] = frozenset()
    without_inputs: bool = False  # called when the model is built: dims and dtype cannot come from inputs

    def binding(self, name: str) -> str | None:
        """The right-hand side that binds local ``name``, or None if it is already local."""
        if name in self.locals:
            return None
        plan = self.lowered.plan
        entry = plan[name]
        match entry.storage:
            case "input" | "per_sample":
                return f'inputs["{name}"]'
            case "carried":
                return f'state["{name}"]'
            case "dim":
                return _dim_binding(plan, name, build=self.mode == "build" or self.without_inputs)
            case "buffer":
                return f"self.{entry.attribute}"
            case "layer":  # in the constructor: every layer's index at once, for the per-layer values
                if self.mode == "build":
                    return "torch.arange(layers, dtype=_dtype, device=_device)"
                return "torch.as_tensor(float(_k), dtype=_dtype, device=_device)"
            case "layer_buffer":  # outside a layer (a start value): the first layer's value
                return f"self.{name}{self.layer_index()}"
            case "per_sample_factor":  # outside a layer (a start value): the first layer's factor
                factor = f"self.{name}" + (self.layer_index() if entry.per_layer else "")
                return f'{factor} * inputs["{name}"]'
            case "parameter" | "parameter_list":
                if entry.problem_key is not None and self.mode in ("problem", "prepare"):
                    return f"self.{entry.problem_key}"
                if entry.per_layer:
                    return f"self.{name}{self.layer_index()}"
                return f"self.{name}.value()" if entry.bounds is not None else f"self.{name}"
        raise KeyError(name)

    def layer_index(self) -> str:
        """How a per-layer value is indexed: by the stored layer in a layer, else the first layer's."""
        return f"[{STORED_LAYER}]" if self.mode == "layer" else "[0]"


def _dim_binding(plan: UnfoldPlan, dim: str, build: bool = False) -> str:
    source = plan[dim].dim_source
    if source is not None and not (build and source.role == "input"):
        owner = f'inputs["{source.tensor}"]' if source.role == "input" else f"self.{plan[source.tensor].attribute}"
        size = f"{owner}.shape[{source.axis}]"
        if source.factor.denominator != 1:
            size = f"{size} * {source.factor.denominator}"
        return size if source.factor.numerator == 1 else f"{size} // {source.factor.numerator}"
    return f'size_of("{dim}", self.sizes)'


class _MethodWriter:
    """Collects the lines of one method: bindings first, then the body."""

    def __init__(self, context: _Context, printer: TorchPrinter):
        self.context = context
        self.printer = printer
        self.bound: list[str] = []
        self.lines: list[str] = []
        self.dtype_bound = False

    def bind_for(self, exprs: list[ir.Expr], reference: DtypeReference | None = None) -> None:
        names, tensors = referenced_names(exprs)
        low = self.context.lowered
        if any(low.plan[name].storage == "layer" for name in names if name not in self.bound):
            self._bind_dtype(reference)  # the layer index is a tensor of the model's dtype
        for name in names:
            if name in self.bound:
                continue
            symbol = low.symbol(name)
            if symbol.role == "dim":
                continue
            self._bind(name)
        for name in names:
            if name not in self.bound and low.symbol(name).role == "dim":
                self._bind(name)
        if tensors:
            self._bind_dtype(reference)

    def _bind_dtype(self, reference: DtypeReference | None) -> None:
        if not self.dtype_bound:
            self.lines.append((reference or self._reference()).binding)
            self.dtype_bound = True

    def _bind(self, name: str) -> None:
        binding = self.context.binding(name)
        self.bound.append(name)
        if binding is not None:
            self.lines.append(f"{name} = {binding}")

    def _reference(self) -> DtypeReference:
        low = self.context.lowered
        tensors = low.problem.of_role("data") + low.problem.of_role("param")
        if tensors:
            return DtypeReference(f"self.{low.plan[tensors[0].name].attribute}", tensors[0].complex)
        if self.context.without_inputs:
            return DtypeReference(f"self.{DTYPE_ANCHOR}", False)
        first_input = low.problem.of_role("input")[0]
        return DtypeReference(f'inputs["{first_input.name}"]', first_input.complex)

    def assign(self, name: str, expr: ir.Expr) -> None:
        self.bind_for([expr])
        self.lines.append(f"{name} = {self.printer(expr)}")
        if name not in self.bound:
            self.bound.append(name)


# ------------------------------------------------------------ the model context


class DtypeReference(NamedTuple):
    """The tensor a method reads the model's dtype and device from, and whether it is complex."""

    text: str
    complex: bool

    @property
    def dtype(self) -> str:
        """The model's real dtype: ``.real.dtype`` of a complex tensor (complex128 → float64)."""
        return f"{self.text}.real.dtype" if self.complex else f"{self.text}.dtype"

    @property
    def binding(self) -> str:
        return f"_dtype, _device = {self.dtype}, {self.text}.device"


def _complex_flag(symbol: Symbol) -> str:
    """The keyword that makes a runtime check accept (and expect) complex values."""
    return ", complex_values=True" if symbol.complex else ""


def dtype_code(symbol: Symbol) -> str:
    """The dtype of a named quantity in generated code: the model's, or its complex counterpart."""
    return "complex_of(_dtype)" if symbol.complex else "_dtype"


def _axes(symbol: Symbol) -> str:
    """The user's axes as a Python literal, for the runtime checks."""
    return repr(ir.user_axes(symbol.shape))


def _user_shape(symbol: Symbol, batched: bool) -> str:
    return ir.axes_text(ir.user_axes(symbol.shape), batched)


def _term_doc(term, variables: tuple[str, ...], math: MathPrinter) -> str:
    """One line of a bounded ``lipschitz`` method's docstring: which bound, how it is computed."""
    source = term.bound or "the quadratic part's Hessian"
    products = "; ".join(f"{var}-row {math(p)}" for var, p in zip(variables, term.products, strict=True))
    applied = products if len(variables) > 1 else math(term.products[0])
    return f"{source}: {term.method}, {term.reason}; the map applied to ({', '.join(variables)}) is {applied}"


class _ModelEmitter:
    """Builds model.py's template context, one method per generated method."""

    def __init__(self, low: LoweredUnfold):
        self.low = low
        self.problem = low.problem
        self.data = low.problem.of_role("data")
        self.inputs = low.problem.of_role("input")
        self.variables = low.problem.of_role("var")
        self.params = low.problem.of_role("param")
        self.carried = low.carried
        self.printer = TorchPrinter(
            self.net_call, lambda variables: f"self.{low.lipschitz_plan(variables).name}(inputs)", low.per_sample
        )
        self.build_printer = TorchPrinter(
            self.net_call, lambda variables: f"self.{low.lipschitz_plan(variables).name}({{}})", low.per_sample
        )
        self.dtype_source = _dtype_source(low)
        self.net_classes: list[str] = []

    def net_call(self, name: str) -> str:
        info = next(net for net in self.low.unfold.nets if net.name == name)
        if NET_KINDS[info.kind].external:
            layouts = tuple(image_layout(shape) for shape in info.arg_shapes)
            return f'external_net(self.{name}, "{name}", {layouts!r})'
        return f"self.{name}[{STORED_LAYER}]" if self.low.plan[name].per_layer else f"self.{name}"

    def constructor(self) -> list[str]:
        """The constructor after what the template writes itself (layers, the dims passed, the
        data and dtype): params, fixed hyperparameters and weights, learned tensors, nets."""
        low = self.low
        writer = _MethodWriter(
            _Context("build", low, frozenset(s.name for s in self.data + self.params)), self.build_printer
        )
        writer.bound = [s.name for s in self.data]
        writer.dtype_bound = True
        for symbol in self.params:
            self.param_lines(symbol, writer)
        for symbol in self.params:
            writer.lines.append(f'self.register_buffer("{low.plan[symbol.name].attribute}", {symbol.name})')
        for symbol in low.static:
            self.static_lines(symbol, writer)
        writer.lines += self.sign_checks(writer)
        for symbol in low.static:
            if low.plan[symbol.name].storage in ("buffer", "layer_buffer"):
                writer.lines.append(f'self.register_buffer("{symbol.name}", {symbol.name})')
        for entry in low.plan.learned():
            if entry.bounds is not None:
                writer.lines += self.bounded_lines(entry, writer)
            elif entry.role != "net":
                writer.lines.append(self.learned_line(entry))
        for net in low.unfold.nets:
            writer.lines += self.net_lines(net, writer)
        return writer.lines

    def param_lines(self, symbol: Symbol, writer: _MethodWriter) -> None:
        """A param: its computed default, as a tensor of its shape."""
        for dim in ir.base_dims(symbol.shape):  # a shaped param is reshaped with the dims the data fixed
            if dim not in writer.bound:
                writer._bind(dim)
        if _computed_default(symbol):  # e.g. eye(m): computed when the caller passes nothing
            writer.bind_for([symbol.init])
            writer.lines += [f"if {symbol.name} is None:", f"{INDENT}{symbol.name} = {self.build_printer(symbol.init)}"]
        writer.lines.append(self.value_line(symbol))
        writer.bound.append(symbol.name)

    @staticmethod
    def value_line(symbol: Symbol) -> str:
        """``NAME`` as a real tensor of its shape (one number fills it), finite unless validate=False;
        a value per layer (it depends on the layer index k) as ``(layers,)``."""
        shape = "(layers,)" if symbol.depends_on_layer else f"({dims_code(symbol.shape)})"
        dtype = dtype_code(symbol)
        return f'{symbol.name} = as_value("{symbol.name}", {symbol.name}, {shape}, {dtype}, _device, validate)'

    def sign_checks(self, writer: _MethodWriter) -> list[str]:
        """With validate: fixed gradient steps positive, thresholds (non-smooth coefficients) nonnegative."""
        plan = self.low.plan
        checks = [f'require_sign("{name}", {name}, positive=True)' for name in plan.gradient_steps]
        for func, coef in plan.thresholds:
            writer.bind_for([coef])
            value = self.build_printer(coef)
            checks.append(f'require_sign("the coefficient of {func}", {value}, positive=False)')
        return ["if validate:", *(INDENT + check for check in checks)] if checks else []

    def static_lines(self, symbol: Symbol, writer: _MethodWriter) -> None:
        """A hyperparameter or weight fixed when the model is built: given, or its classical value."""
        writer.bind_for([symbol.init])
        for dim in ir.base_dims(symbol.shape):
            if dim not in writer.bound:
                writer._bind(dim)
        writer.lines += [
            f"if {symbol.name} is None:",
            f"{INDENT}{symbol.name} = {self.build_printer(symbol.init)}",
            self.value_line(symbol),
        ]
        writer.bound.append(symbol.name)

    @staticmethod
    def learned_line(entry) -> str:
        """A learned tensor, starting at its classical value (a factor on a per-sample value: one)."""
        start = entry.name
        if entry.storage == "per_sample_factor":
            start = f"torch.ones(({dims_code(entry.shape)}), dtype=_dtype, device=_device)"
        if entry.per_layer and entry.layer_values:
            return f"self.{entry.name} = nn.ParameterList([nn.Parameter({start}[_k].clone()) for _k in range(layers)])"
        if entry.per_layer:
            return f"self.{entry.name} = nn.ParameterList([nn.Parameter({start}.clone()) for _ in range(layers)])"
        return f"self.{entry.name} = nn.Parameter({start}.clone())"

    def bounded_lines(self, entry, writer: _MethodWriter) -> list[str]:
        """A bounded learned value: its bounds computed like a hyperparameter, then a Bounded module
        (the raw tensor of the form's map, starting exactly at the classical value)."""
        bounds = entry.bounds
        form = bound_form(bounds.low is not None, bounds.high is not None, bounds.low_closed, bounds.high_closed)
        lines, sides = [], []
        for side, local, expr in (("lower", "_lower", bounds.low), ("upper", "_upper", bounds.high)):
            if expr is None:
                sides.append("None")
                continue
            writer.bind_for([expr])
            shape = f"({dims_code(entry.shape)})" if not ir.is_scalar(expr.shape) else "()"
            what = f"the {side} bound of {entry.name}"
            lines.append(f'{local} = as_value("{what}", {self.build_printer(expr)}, {shape}, _dtype, _device, True)')
            sides.append(local)
        math = MathPrinter()
        text = form.notation(*(None if expr is None else math(expr) for expr in (bounds.low, bounds.high)))
        closed = (bounds.low_closed, bounds.high_closed)
        layers = "layers" if entry.per_layer else "None"
        varying = ", starts_per_layer=True" if entry.per_layer and entry.layer_values else ""
        lines.append(
            f'self.{entry.name} = Bounded("{entry.name}", {form.helper}, {entry.name}, {sides[0]}, {sides[1]}, '
            f"{closed}, {layers}, {text!r}{varying})"
        )
        return lines

    def net_lines(self, net, writer: _MethodWriter) -> list[str]:
        kind = NET_KINDS[net.kind]
        entry = self.low.plan[net.name]
        if kind.external:
            return self.external_net_lines(net.name, entry.learned)
        options = entry.net_options
        option_text = ", ".join(f"{key}={options[key]!r}" for key in kind.options)
        if kind.class_name not in self.net_classes:
            self.net_classes.append(kind.class_name)
        sizes = kind.sizes(net.arg_shapes)
        named = set(re.findall(r"\w+", sizes))
        for shape in net.arg_shapes:
            for dim in ir.base_dims(shape):
                if dim in named and dim not in writer.bound:
                    writer._bind(dim)
        start = f"zero_init={entry.starts_at_zero}"
        make = f"{kind.class_name}({sizes}, {option_text}, {start}).to(dtype=_dtype, device=_device)"
        if entry.per_layer:
            lines = [f"self.{net.name} = nn.ModuleList([{make} for _ in range(layers)])"]
        else:
            lines = [f"self.{net.name} = {make}"]
        if not entry.learned:
            lines.append(f"self.{net.name}.requires_grad_(False)")
        return lines

    def external_net_lines(self, name: str, learned: bool) -> list[str]:
        """The caller's module: checked, moved to the model's dtype and device (in place, as
        nn.Module.to does) and registered as a submodule (state-dict keys NAME.*); frozen unless learned."""
        if "external_net" not in self.net_classes:
            self.net_classes.append("external_net")
        lines = [
            f"if not isinstance({name}, nn.Module):",
            f'{INDENT}raise TypeError(f"{name} must be a torch.nn.Module (an external net), '
            f'got {{type({name}).__name__}}")',
            f"self.{name} = {name}.to(dtype=_dtype, device=_device)",
        ]
        if not learned:
            lines.append(f"self.{name}.requires_grad_(False)")
        return lines

    def prepare_inputs(self) -> list[str]:
        """Validation and per-sample hyperparameters."""
        writer = _MethodWriter(_Context("prepare", self.low, frozenset(s.name for s in self.inputs)), self.printer)
        for symbol in self.inputs:
            writer.lines.append(
                f'{symbol.name} = check_input("{symbol.name}", {symbol.name}, {_axes(symbol)}, sizes, '
                f"{self.dtype_source}{_complex_flag(symbol)})"
            )
        writer.bound = [s.name for s in self.inputs]
        writer.lines.append("inputs = {" + ", ".join(f'"{s.name}": {s.name}' for s in self.inputs) + "}")
        for symbol in self.low.dynamic:
            writer.bind_for([symbol.init])
            writer.lines.append(f'inputs["{symbol.name}"] = {symbol.name} = {self.printer(symbol.init)}')
            writer.bound.append(symbol.name)
        writer.lines.append("return inputs")
        return writer.lines

    def initial_state(self) -> list[str]:
        first = self.inputs[0].name
        writer = _MethodWriter(_Context("problem", self.low), self.printer)
        writer.lines.append(f'_batch = inputs["{first}"].shape[0]')
        writer.lines.append(DtypeReference(f'inputs["{first}"]', self.low.symbol(first).complex).binding)
        writer.dtype_bound = True
        for symbol in self.carried:
            writer.bind_for([symbol.init])
            for dim in ir.base_dims(symbol.shape):
                if dim not in writer.bound:
                    writer._bind(dim)
            full = "_batch" + (", " + dims_code(symbol.shape) if symbol.shape else ", 1, 1")
            if isinstance(symbol.init, ir.Const):
                value = format_float(symbol.init.value)
                writer.lines.append(
                    f"{symbol.name} = torch.full(({full}), {value}, dtype={dtype_code(symbol)}, device=_device)"
                )
            else:
                value = self.printer(symbol.init)
                writer.lines.append(
                    f"{symbol.name} = torch.as_tensor({value}, dtype={dtype_code(symbol)}, device=_device)"
                    f".expand({full})"
                )
            writer.bound.append(symbol.name)
        writer.lines.append(self.state_dict_line())
        return writer.lines

    def state_dict_line(self) -> str:
        return "return {" + ", ".join(f'"{s.name}": {s.name}' for s in self.carried) + "}"

    def layer(self) -> list[str]:
        writer = _MethodWriter(_Context("layer", self.low), self.printer)
        for rule in self.low.rules:
            writer.assign(rule.target, rule.value)
        for symbol in self.carried:
            if symbol.name not in writer.bound:
                writer._bind(symbol.name)
        writer.lines.append(self.state_dict_line())
        if any(f"[{STORED_LAYER}]" in line for line in writer.lines):  # one clamped index for every per-layer read
            writer.lines.insert(0, f"{STORED_LAYER} = min(_k, self._built_layers - 1)")
        return writer.lines

    def certified_values(self) -> list[str]:
        """``certified_values(_k)``: the values certify checks, as layer _k reads them."""
        writer = _MethodWriter(_Context("layer", self.low), self.printer)
        values = [certificate.value for certificate in self.low.plan.certificates]
        writer.bind_for(values)
        writer.lines.append("return [" + ", ".join(self.printer(value) for value in values) + "]")
        if any(f"[{STORED_LAYER}]" in line for line in writer.lines):
            writer.lines.insert(0, f"{STORED_LAYER} = min(_k, self._built_layers - 1)")
        return writer.lines

    def certify_checks(self) -> tuple[tuple, list[str]]:
        """The checks certify runs (kind, what, variable) and the variables whose Lipschitz constant
        it computes when the model is built (a step on any other is checked for its sign only)."""
        low = self.low
        carried = {s.name for s in self.carried}
        varying = low.per_sample - carried
        static = [
            plan.var
            for plan in low.lipschitz
            if len(plan.variables) == 1 and not any(ir.depends_on(e, varying) for e in plan.expressions())
        ]
        math = MathPrinter()
        what = {
            "step_size": "step",
            "positive_step": "step",
            "nonnegative_scale": "prox scale",
            "coupled_weight": "weight product",
        }
        checks = []
        for certificate in low.plan.certificates:
            kind = certificate.kind
            if kind == "step_size" and certificate.var not in static:  # L needs the inputs: only the sign
                kind = "positive_step"
            var = certificate.var if kind == "step_size" else None
            checks.append((kind, f"{what[kind]} {math(certificate.value)}", var))
        return tuple(checks), [var for var in static if any(check[2] == var for check in checks)]

    def certify_context(self) -> dict:
        """certify's checks, the constants it computes, and the learned names no check covers."""
        checks, constants = self.certify_checks()
        checked = {name for certificate in self.low.plan.certificates for name in ir.refs(certificate.value)}
        return {
            "certify_checks": checks,
            "certify_lipschitz": constants,
            "certify_unchecked": tuple(name for name in self.low.plan.paradigms if name not in checked),
            "certify_memoryless": len(self.carried) == len(self.variables),
            "certified_lines": self.certified_values(),
        }

    def objective_value(self) -> ir.Expr:
        total: ir.Expr = self.problem.smooth
        for term in self.problem.nonsmooth:
            total = ir.add(total, ir.mul(term.coef, ir.Apply(term.func, (term.arg,), ir.SCALAR)))
        return total

    def objective(self) -> list[str]:
        writer = _MethodWriter(_Context("problem", self.low, frozenset(s.name for s in self.variables)), self.printer)
        arguments = ", ".join(f"{s.name}={s.name}" for s in self.inputs)
        writer.lines += ["_sizes = {}", f"inputs = self.prepare_inputs({arguments}, sizes=_sizes)"]
        for symbol in self.variables:
            writer.lines.append(
                f'{symbol.name} = check_input("{symbol.name}", {symbol.name}, {_axes(symbol)}, _sizes, '
                f"{self.dtype_source}{_complex_flag(symbol)})"
            )
        writer.bound = [s.name for s in self.variables]
        total = self.objective_value()
        writer.bind_for([total])
        writer.lines.append(f"_value = {self.printer(total)}")
        writer.lines.append(f'_batch = inputs["{self.inputs[0].name}"].shape[0]')
        writer.lines.append("return torch.as_tensor(_value).expand(_batch, 1, 1).reshape(_batch)")
        return writer.lines

    def lipschitz_methods(self, math: MathPrinter) -> list[dict]:
        methods = []
        for plan in self.low.lipschitz:
            variables = plan.variables
            expressions = plan.expressions()
            static = not any(
                ir.depends_on(e, self.low.per_sample - set(s.name for s in self.carried)) for e in expressions
            )
            writer = _MethodWriter(_Context("problem", self.low, frozenset(variables), static), self.printer)
            writer.bound += list(variables)
            term = plan.terms[0]
            if len(plan.terms) == 1 and len(variables) == 1 and term.bound is None:
                self._hessian_lipschitz(writer, plan.var, term, static)
                hessian = math(term.products[0])
            else:
                self._bounded_lipschitz(writer, plan, static)
                hessian = None
            methods.append(
                {
                    "name": plan.name,
                    "var": ", ".join(variables),
                    "hessian": hessian,
                    "terms": [_term_doc(term, variables, math) for term in plan.terms],
                    "method": term.method,
                    "power": any(term.method == "power" for term in plan.terms),
                    "reason": term.reason,
                    "lines": writer.lines,
                }
            )
        return methods

    def _hessian_lipschitz(self, writer: _MethodWriter, var: str, term, static: bool) -> None:
        """λ_max of the Hessian of a quadratic smooth part in one variable."""
        hessian, symbol = term.products[0], self.low.symbol(var)
        if term.method == "dense":
            writer.bind_for([hessian] + [ir.Eye(d, (d, d)) for d in ir.base_dims(symbol.shape)])
            rows, cols = symbol.shape
            writer.lines.append(f"{var} = unit_basis({rows}, {cols}, {dtype_code(symbol)}, _device)")
            writer.lines.append(f"return largest_hessian_eigenvalue({self.printer(hessian)})")
        elif term.value is not None:
            value = term.value
            writer.bind_for([value, ir.Ones(symbol.shape)])
            if isinstance(value, ir.Const):
                writer.lines.append(
                    f"return torch.full((1, 1), {format_float(value.value)}, dtype=_dtype, device=_device)"
                )
            else:
                writer.lines.append(f"return {self.printer(value)}")
        else:
            writer.bind_for([hessian, ir.Ones(symbol.shape)])
            batch = "" if static else f'inputs["{self.inputs[0].name}"].shape[0], '
            writer.lines += [
                f"def _hessian({var}):",
                f"{INDENT}return {self.printer(hessian)}",
                "",
                f"_start = torch.zeros(({batch}{dims_code(symbol.shape)}), dtype={dtype_code(symbol)}, device=_device)",
                "return power_norm2(_hessian, _start)",
            ]

    def _bounded_lipschitz(self, writer: _MethodWriter, plan, static: bool) -> None:
        """Σ factor · λ_max(M) over the plan's terms (curvature bounds, joint Hessians)."""
        variables = plan.variables
        symbols = [self.low.symbol(var) for var in variables]
        shapes = [symbol.shape for symbol in symbols]
        dims = [ir.Eye(d, (d, d)) for shape in shapes for d in ir.base_dims(shape)]
        writer.bind_for(plan.expressions() + [ir.Ones(shape) for shape in shapes] + dims)
        batch = "" if static else f'inputs["{self.inputs[0].name}"].shape[0], '
        starts = ", ".join(
            f"torch.zeros(({batch}{dims_code(symbol.shape)}), dtype={dtype_code(symbol)}, device=_device)"
            for symbol in symbols
        )
        names = ", ".join(variables)
        sizes = ", ".join(f"({dims_code(shape)})" for shape in shapes)
        basis_bound = False
        for index, term in enumerate(plan.terms):
            if term.method == "dense":
                if not basis_bound:
                    if len(variables) == 1:
                        rows, cols = shapes[0]
                        dtype = dtype_code(symbols[0])
                        writer.lines.append(f"{names} = unit_basis({rows}, {cols}, {dtype}, _device)")
                    else:
                        writer.lines.append(f"{names} = unit_basis_blocks(({sizes},), _dtype, _device)")
                    basis_bound = True
                if len(variables) == 1:
                    columns = self.printer(term.products[0])
                else:
                    columns = f"stacked_columns(({', '.join(self.printer(p) for p in term.products)},))"
                writer.lines.append(f"_norm = largest_hessian_eigenvalue({columns})")
            elif term.value is not None:
                if isinstance(term.value, ir.Const):
                    value = f"torch.full((1, 1), {format_float(term.value.value)}, dtype=_dtype, device=_device)"
                else:
                    value = self.printer(term.value)
                writer.lines.append(f"_norm = {value}")
            else:
                products = ", ".join(self.printer(p) for p in term.products)
                writer.lines += [f"def _map({names}):", f"{INDENT}return {products}", ""]
                if len(variables) == 1:
                    writer.lines.append(f"_norm = power_norm2(_map, {starts})")
                else:
                    writer.lines.append(f"_norm = power_norm2_stacked(_map, ({starts},))")
            scaled = "_norm" if term.factor == ir.Const(1.0) else f"{self.printer.wrap(term.factor, ATOM)} * _norm"
            writer.lines.append(f"_bound = {scaled}" if index == 0 else f"_bound = _bound + {scaled}")
        writer.lines.append("return _bound")

    def measure(self) -> tuple[list[str], list[Symbol]]:
        """``measure``: the forward model's noise-free measurements, and the arguments it takes."""
        low = self.low
        models = [model for _, model in low.measurements]
        needed = {name for model in models for name in ir.refs(model)}
        arguments = [s for s in self.variables + self.inputs if s.name in needed]
        writer = _MethodWriter(_Context("problem", low, frozenset(s.name for s in arguments)), self.printer)
        writer.lines.append("_sizes = dict(self.sizes)")
        for symbol in arguments:
            writer.lines.append(
                f'{symbol.name} = check_input("{symbol.name}", {symbol.name}, {_axes(symbol)}, _sizes, '
                f"{self.dtype_source}{_complex_flag(symbol)})"
            )
        writer.bound = [s.name for s in arguments]
        names, _ = referenced_names(models)
        for dim in (name for name in names if low.symbol(name).role == "dim"):
            writer.lines.append(f'{dim} = size_of("{dim}", _sizes)')
            writer.bound.append(dim)
        writer.bind_for(
            models, reference=DtypeReference(arguments[0].name, arguments[0].complex) if arguments else None
        )
        values = ", ".join(
            f'"{name}": {_user_layout(self.printer.wrap(model, ATOM), low.symbol(name))}'
            if not ir.is_matrix(model.shape)
            else f'"{name}": {self.printer(model)}'
            for name, model in low.measurements
        )
        writer.lines.append("return {" + values + "}")
        return writer.lines, arguments

    @property
    def lipschitz_expressions(self) -> list[ir.Expr]:
        return [e for plan in self.low.lipschitz for e in plan.expressions()]

    @property
    def lipschitz_helpers(self) -> list[str]:
        helpers = []
        for plan in self.low.lipschitz:
            if any(term.method == "power" for term in plan.terms):
                helpers += ["power_norm2"] + (["power_norm2_stacked"] if len(plan.variables) > 1 else [])
        return list(dict.fromkeys(helpers))

    def helper_sources(self) -> tuple[list[str], list[str], list[str]]:
        """Sources of the runtime helpers, operators and net classes the module uses (call it
        after every method is printed: the printers record the helpers they chose)."""
        low = self.low
        expressions = [rule.value for rule in low.rules] + [s.init for s in low.static + low.dynamic + self.carried]
        # a fixed-point network iterates one layer; an unrolled one may checkpoint its layers
        layering = ["fixed_point_iteration", "implicit_layer"] if low.plan.fixed_point else ["checkpoint_segment"]
        helpers: list[str] = ["as_data", "check_input", "size_of", *layering, "as_value", "certify_layers"]
        if self.certify_checks()[1]:
            helpers.append("build_time_constants")
        if low.plan.gradient_steps or low.plan.thresholds:
            helpers.append("require_sign")
        for entry in low.plan.learned():
            if entry.bounds is not None:
                bounds = entry.bounds
                form = bound_form(
                    bounds.low is not None, bounds.high is not None, bounds.low_closed, bounds.high_closed
                )
                helpers += [name for name in ("Bounded", form.helper) if name not in helpers]
        for plan in low.lipschitz:
            if any(term.method == "dense" for term in plan.terms):
                joint = ["unit_basis_blocks", "stacked_columns"] if len(plan.variables) > 1 else ["unit_basis"]
                helpers += [name for name in [*joint, "largest_hessian_eigenvalue"] if name not in helpers]
        for printer in (self.printer, self.build_printer):
            helpers += [name for name in printer.helpers if name not in helpers]
        if any(entry.complex for entry in low.plan.names.values()):
            helpers.append("complex_of")
        ops: list[str] = []
        linops: list[str] = list(self.lipschitz_helpers)
        for expr in [*expressions, self.objective_value(), *self.lipschitz_expressions]:
            for node in ir.walk(expr):
                match node:
                    case ir.Apply(func=func) if FUNCTIONS[func].torch_module == "linops_torch":
                        linops += [name for name in FUNCTIONS[func].torch_helpers if name not in linops]
                    case ir.Apply(func=func):
                        helpers += [name for name in FUNCTIONS[func].torch_helpers if name not in helpers]
                    case ir.Prox(op=op) if PROX_TABLE[op].helper not in ops:
                        ops.append(PROX_TABLE[op].helper)
                    case ir.Proj(set=set_name) if SET_TABLE[set_name].helper not in ops:
                        ops.append(SET_TABLE[set_name].helper)
        return (
            helper_sources("runtime_torch", helpers),
            helper_sources("ops_torch", ops) + (helper_sources("linops_torch", linops) if linops else []),
            helper_sources("nets_torch", self.net_classes),
        )


def model_context(low: LoweredUnfold, spec_path: str) -> dict:
    problem = low.problem
    unfold = low.unfold
    math = MathPrinter()
    emitter = _ModelEmitter(low)
    data, inputs, variables, params = emitter.data, emitter.inputs, emitter.variables, emitter.params
    methods = {
        "constructor_lines": emitter.constructor(),
        "prepare_lines": emitter.prepare_inputs(),
        "initial_lines": emitter.initial_state(),
        "layer_lines": emitter.layer(),
        "objective_lines": emitter.objective(),
        "lipschitz_methods": emitter.lipschitz_methods(math),
        **emitter.certify_context(),
    }
    measure_lines, measure_arguments = emitter.measure() if low.measurements else ([], [])
    runtime_sources, op_sources, net_sources = emitter.helper_sources()

    # -- signatures and docs
    def data_param(symbol: Symbol) -> str:
        if symbol.role == "param":
            return (
                f"{symbol.name}: float | Tensor = {format_float(symbol.init.value)}"
                if isinstance(symbol.init, ir.Const)
                else f"{symbol.name}: float | Tensor"
            )
        return f"{symbol.name}: Tensor"

    required = [data_param(s) for s in data] + [data_param(s) for s in params if s.init is None]
    optional = [data_param(s) for s in params if isinstance(s.init, ir.Const)]
    keyword_only = [f"{s.name}: float | Tensor | None = None" for s in params if _computed_default(s)]
    keyword_only += [f"{s.name}: float | Tensor | None = None" for s in low.static]
    keyword_only += [f"{d.name}: int | None = None" for d in problem.of_role("dim")]
    keyword_only += [f"{net.name}: nn.Module" for net in unfold.nets if NET_KINDS[net.kind].external]
    forward_args = ", ".join(f"{s.name}: Tensor" for s in inputs)
    outputs = unfold.outputs
    output_shapes = ", ".join(f"{o}: {_user_shape(low.symbol(o), True)}" for o in outputs)

    rule_math = []
    for rule in unfold.rules:
        arrow = "=" if rule.is_let else "←"
        rule_math.append(f"{rule.target} {arrow} {math(rule.value)}")
    gradient_math = [f"∇{var} f = {math(grad)}" for var, grad in low.gradients]
    smooth_math = math(problem.smooth)
    terms = [f"{math(t.coef)}·{math(ir.Apply(t.func, (t.arg,), ir.SCALAR))}" for t in problem.nonsmooth]
    objective_math = " + ".join([smooth_math, *terms])
    constraint_math = [f"{vs.var} ∈ {vs.set}({', '.join(math(p) for p in vs.params)})" for vs in problem.sets]
    learned_doc = [
        f"{entry.name} ({'per layer' if entry.per_layer else 'shared'}, paradigm {entry.paradigm})"
        for entry in low.plan.learned()
    ]
    nets = low.plan.of_storage("net", "net_list")
    kinds = {net.name: NET_KINDS[net.kind] for net in unfold.nets}
    net_doc = [_net_start(entry, kinds[entry.name].external) for entry in nets]
    return {
        **header(low, spec_path),
        "problem": problem.name,
        "net_doc": net_doc,
        "classical_start": all(entry.starts_at_zero for entry in nets),
        "objective_math": objective_math,
        "constraint_math": constraint_math,
        "gradient_math": gradient_math,
        "rule_math": rule_math,
        "learned_doc": learned_doc,
        "helper_sources": runtime_sources,
        "op_sources": op_sources,
        "measured": [name for name, _ in low.measurements],
        "measure_args": ", ".join(f"{s.name}: Tensor" for s in measure_arguments),
        "measure_math": [f"{name} = {math(model)}" for name, model in low.measurements],
        "measure_lines": measure_lines,
        "net_sources": net_sources,
        "constructor_args": required + optional,  # then *, the keyword-only ones, layers, dtype …
        "keyword_args": keyword_only,
        "data_doc": [f"{s.name}: {_user_shape(s, False)}" for s in data],
        "input_names": [s.name for s in inputs],
        "input_doc": [f"{s.name}: {_user_shape(s, True)}" for s in inputs],
        "var_names": [s.name for s in variables],
        "var_doc": [f"{s.name}: {_user_shape(s, True)}" for s in variables],
        "forward_args": forward_args,
        "outputs": [{"name": o, "value": _output_value(low.symbol(o))} for o in outputs],
        "output_doc": output_shapes,
        "single_output": len(outputs) == 1,
        **methods,
        "paradigms": low.plan.paradigms,
        "layer_lists": low.plan.layer_lists,
        "fixed_point": low.plan.fixed_point,
        "bounded": {entry.name: entry.per_layer for entry in low.plan.learned() if entry.bounds is not None},
        "has_per_layer": any(entry.per_layer for entry in low.plan.learned()),
        "dim_names": [d.name for d in problem.of_role("dim")],
        # a module with neither data nor params keeps its dtype and device in an unsaved buffer
        "dtype_anchor": DTYPE_ANCHOR if not (data or params) and low.lipschitz_vars else None,
        "data": [
            {"name": s.name, "axes": _axes(s), "attribute": low.plan[s.name].attribute, "complex": s.complex}
            for s in data
        ],
    }


def _net_start(entry, external: bool) -> str:
    """Where a net starts, for the generated docstring."""
    if external:
        return f"{entry.name} is the nn.Module passed as {entry.name}= (external: it starts as given)"
    if entry.starts_at_zero:
        return f"{entry.name} starts at zero (a correction term)"
    return f"{entry.name} starts random (it replaces a step)"


def _computed_default(symbol: Symbol) -> bool:
    """A param whose default is an expression (``eye(m)``, ``2 * lam``), not a number."""
    return symbol.init is not None and not isinstance(symbol.init, ir.Const)


def _output_value(symbol: Symbol) -> str:
    """An output in the caller's layout: internal ``(B, r, c)`` values become vectors ``(B, n)``
    and scalars ``(B,)``."""
    return _user_layout(f'state["{symbol.name}"]', symbol)


def _user_layout(value: str, symbol: Symbol) -> str:
    if symbol.shape == ():
        return f"{value}[..., 0, 0]"
    return f"{value}.squeeze(-1)" if ir.is_vector(symbol.shape) else value


def _dtype_source(low: LoweredUnfold) -> str:
    """The model's real dtype, read from its first data or param tensor, else its first learned one."""
    plan = low.plan
    tensors = [s for s in low.problem.symbols if s.role in ("data", "param")]
    if tensors:
        return DtypeReference(f"self.{plan[tensors[0].name].attribute}", tensors[0].complex).dtype
    learned = plan.learned()
    if learned and learned[0].role != "net":
        first = learned[0]
        tensor = f"self.{first.name}" + ("[0]" if first.per_layer else ".value()" if first.bounds is not None else "")
        return DtypeReference(tensor, first.complex).dtype
    return "None"


def render_model(low: LoweredUnfold, spec_path: str) -> str:
    return base.render("model.py.j2", model_context(low, spec_path))


def render_init(low: LoweredUnfold, spec_path: str) -> str:
    return base.render("__init__.py.j2", header(low, spec_path))
