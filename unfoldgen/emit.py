"""Emit generated packages: the template context is computed here, the templates lay it out.

One package per unfold block: ``NAME/model.py`` (torch) and ``NAME/__init__.py``. Output is
deterministic (no sets, no hashes, no timestamps) and ``ast.parse``d before it is returned.
"""

from __future__ import annotations

import ast
import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

import jinja2

from unfoldgen import __version__, ir
from unfoldgen.check import Symbol, fmt_shape
from unfoldgen.functions import FUNCTIONS
from unfoldgen.lower import LoweredUnfold
from unfoldgen.nets import NET_KINDS
from unfoldgen.printers import MathPrinter, TorchPrinter, format_float
from unfoldgen.prox import PROX_TABLE, SET_TABLE

INDENT = "    "
# A module with neither data nor params keeps its dtype and device in this (unsaved) buffer.
DTYPE_ANCHOR = "_dtype_anchor"


@functools.cache
def template_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("unfoldgen", "templates"),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


@functools.cache
def _definitions(module: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Top-level functions and classes of a helper module: source text and the module-level
    names each one uses. Read as text, so the compiler never imports torch or numba."""
    text = (Path(__file__).parent / f"{module}.py").read_text()
    tree = ast.parse(text)
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in defined} - {node.name}
            found[node.name] = (ast.get_source_segment(text, node) + "\n", frozenset(used))
    return found


def helper_closure(module: str, names: list[str]) -> list[str]:
    """``names`` and every helper they use, dependencies first, in a stable order."""
    definitions = _definitions(module)
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        for dependency in sorted(definitions[name][1]):
            visit(dependency)
        ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def helper_sources(module: str, names: list[str], decorator: str = "") -> list[str]:
    """The source of ``names`` and their dependencies, optionally decorated."""
    return [decorator + _definitions(module)[name][0] for name in helper_closure(module, names)]


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
        low = self.lowered
        symbol = low.symbol(name)
        learned = low.learned.get(name)
        match symbol.role:
            case "input":
                return f'inputs["{name}"]'
            case "var" | "state":
                return f'state["{name}"]'
            case "dim":
                return _dim_binding(low, name, build=self.mode == "build" or self.without_inputs)
            case "data" | "param":
                if learned is None:
                    return f"self.{name}"
                if self.mode in ("problem", "prepare"):
                    return f"self._problem_{name}"
                return f"self.{name}[k]" if learned.per_layer else f"self.{name}"
            case "hyper" | "weight":
                if symbol.depends_on_inputs:
                    if learned is None:
                        return f'inputs["{name}"]'
                    factor = f"self.{name}[k]" if learned.per_layer else f"self.{name}"
                    return f'{factor} * inputs["{name}"]'
                if learned is not None and learned.per_layer:
                    return f"self.{name}[k]" if self.mode == "layer" else f"self.{name}[0]"
                return f"self.{name}"
        raise KeyError(name)


def _dim_binding(low: LoweredUnfold, dim: str, build: bool = False) -> str:
    for source in low.problem.dim_sources:
        if source.dim == dim and not (build and source.role == "input"):
            owner = (
                f'inputs["{source.tensor}"]' if source.role == "input" else f"self.{_problem_attr(low, source.tensor)}"
            )
            return f"{owner}.shape[{source.axis}]"
    return f'size_of("{dim}", self.sizes)'


def _problem_attr(low: LoweredUnfold, name: str) -> str:
    return f"_problem_{name}" if name in low.learned else name


def referenced_names(exprs: list[ir.Expr]) -> tuple[list[str], bool]:
    """Names referenced (first-use order, dims included) and whether dtype/device are needed."""
    names: dict[str, None] = {}
    tensors = False
    for expr in exprs:
        for node in ir.walk(expr):
            match node:
                case ir.Ref(name=name):
                    names.setdefault(name, None)
                case ir.Ones(shape=shape) | ir.Eye(shape=shape):
                    tensors = True
                    for dim in shape:
                        if isinstance(dim, str):
                            names.setdefault(dim, None)
    return list(names), tensors


class _MethodWriter:
    """Collects the lines of one method: bindings first, then the body."""

    def __init__(self, context: _Context, printer: TorchPrinter):
        self.context = context
        self.printer = printer
        self.bound: list[str] = []
        self.lines: list[str] = []
        self.dtype_bound = False

    def bind_for(self, exprs: list[ir.Expr], reference: str | None = None) -> None:
        names, tensors = referenced_names(exprs)
        low = self.context.lowered
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
        if tensors and not self.dtype_bound:
            ref = reference or self._reference()
            self.lines.append(f"dtype, device = {ref}.dtype, {ref}.device")
            self.dtype_bound = True

    def _bind(self, name: str) -> None:
        binding = self.context.binding(name)
        self.bound.append(name)
        if binding is not None:
            self.lines.append(f"{name} = {binding}")

    def _reference(self) -> str:
        low = self.context.lowered
        tensors = low.problem.of_role("data") + low.problem.of_role("param")
        if tensors:
            return f"self.{_problem_attr(low, tensors[0].name)}"
        if self.context.without_inputs:
            return f"self.{DTYPE_ANCHOR}"
        first_input = low.problem.of_role("input")[0].name
        return f'inputs["{first_input}"]'

    def assign(self, name: str, expr: ir.Expr) -> None:
        self.bind_for([expr])
        self.lines.append(f"{name} = {self.printer(expr)}")
        if name not in self.bound:
            self.bound.append(name)


# ------------------------------------------------------------ the model context


def _axes(symbol: Symbol) -> str:
    rows, cols = symbol.shape if symbol.shape else (None, None)
    if symbol.shape == ():
        return "()"
    parts = [rows] if cols == 1 else [rows, cols]
    return (
        "("
        + ", ".join(f'"{p}"' if isinstance(p, str) else str(p) for p in parts)
        + ("," if len(parts) == 1 else "")
        + ")"
    )


def _user_shape(symbol: Symbol, batched: bool) -> str:
    prefix = ["B"] if batched else []
    if symbol.shape == ():
        dims = []
    else:
        rows, cols = symbol.shape
        dims = [str(rows)] if cols == 1 else [str(rows), str(cols)]
    return "(" + ", ".join(prefix + dims) + ("," if len(prefix + dims) == 1 else "") + ")"


def _internal_shape(shape: ir.Shape) -> str:
    return ", ".join(str(d) for d in shape)


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
        self.printer = TorchPrinter(self.net_call, lambda var: f"self.lipschitz_{var}(inputs)", low.per_sample)
        self.build_printer = TorchPrinter(self.net_call, lambda var: f"self.lipschitz_{var}({{}})", low.per_sample)
        self.layer_lists = layer_lists(low)
        self.dtype_source = _dtype_source(low, self.layer_lists)
        self.net_classes: list[str] = []

    def net_call(self, name: str) -> str:
        learn = self.low.learned.get(name)
        return f"self.{name}[k]" if learn is not None and learn.per_layer else f"self.{name}"

    def constructor(self) -> list[str]:
        low, problem = self.low, self.problem
        lines: list[str] = [
            "if not isinstance(layers, int) or layers < 1:",
            f'{INDENT}raise ValueError(f"layers must be a positive integer, got {{layers!r}}")',
            "self.layers = layers",
            "checkpoint_segment(checkpoint_layers, layers)  # refuses a bad setting now, not in forward",
            "self.checkpoint_layers = checkpoint_layers",
            "sizes: dict = {}",
        ]
        for dim in (sym.name for sym in problem.of_role("dim")):
            lines += [f"if {dim} is not None:", f'{INDENT}sizes["{dim}"] = {dim}']
        for symbol in self.data:
            lines.append(f'{symbol.name} = as_data("{symbol.name}", {symbol.name}, {_axes(symbol)}, sizes, dtype)')
            lines += [f"dtype = {symbol.name}.dtype", f"device = {symbol.name}.device"]
        if not self.data:
            lines += ["dtype = dtype or torch.get_default_dtype()", 'device = torch.device("cpu")']
        if not (self.data or self.params) and low.lipschitz_vars:
            anchor = "torch.zeros((), dtype=dtype, device=device)"
            lines.append(f'self.register_buffer("{DTYPE_ANCHOR}", {anchor}, persistent=False)')
        lines.append("self.sizes = sizes")
        for symbol in self.data:
            lines.append(f'self.register_buffer("{_problem_attr(low, symbol.name)}", {symbol.name})')
        writer = _MethodWriter(
            _Context("build", low, frozenset(s.name for s in self.data + self.params)), self.build_printer
        )
        writer.lines = lines
        writer.bound = [s.name for s in self.data]
        writer.dtype_bound = True
        for symbol in self.params:
            for dim in symbol.shape:  # a shaped param is reshaped with the dims the data fixed
                if isinstance(dim, str) and dim not in writer.bound:
                    writer._bind(dim)
            if _computed_default(symbol):  # e.g. eye(m): computed when the caller passes nothing
                writer.bind_for([symbol.init])
                lines += [f"if {symbol.name} is None:", f"{INDENT}{symbol.name} = {self.build_printer(symbol.init)}"]
            if symbol.shape:
                shape = f"({_internal_shape(symbol.shape)})"
                lines.append(f"{symbol.name} = as_shaped({symbol.name}, {shape}, dtype, device)")
            else:
                value = f"torch.as_tensor({symbol.name}, dtype=dtype, device=device)"
                lines.append(f"{symbol.name} = {value}.reshape(())")
            writer.bound.append(symbol.name)
        for symbol in self.params:
            lines.append(f'self.register_buffer("{_problem_attr(low, symbol.name)}", {symbol.name})')
        for symbol in low.static:
            writer.bind_for([symbol.init])
            for dim in symbol.shape:
                if isinstance(dim, str) and dim not in writer.bound:
                    writer._bind(dim)
            shape = _internal_shape(symbol.shape) or "()"
            writer.lines += [
                f"if {symbol.name} is None:",
                f"{INDENT}{symbol.name} = {self.build_printer(symbol.init)}",
                f"{symbol.name} = torch.as_tensor({symbol.name}, dtype=dtype, device=device).reshape({shape})",
            ]
            writer.bound.append(symbol.name)
        for symbol in low.static:
            if symbol.name not in low.learned:
                writer.lines.append(f'self.register_buffer("{symbol.name}", {symbol.name})')
        for name, learn in low.learned.items():
            if learn.role == "net":
                continue
            symbol = low.symbol(name)
            start = name
            if symbol.depends_on_inputs:  # a learned factor on the per-sample value, one at start
                start = f"torch.ones(({_internal_shape(symbol.shape)}), dtype=dtype, device=device)"
            if learn.per_layer:
                make = f"nn.ParameterList([nn.Parameter({start}.clone()) for _ in range(layers)])"
                writer.lines.append(f"self.{name} = {make}")
            else:
                writer.lines.append(f"self.{name} = nn.Parameter({start}.clone())")
        for net in low.unfold.nets:
            writer.lines += self.net_lines(net, writer)
        return writer.lines

    def net_lines(self, net, writer: _MethodWriter) -> list[str]:
        kind = NET_KINDS[net.kind]
        options = kind.resolved(net.options)
        option_text = ", ".join(f"{key}={options[key]!r}" for key in kind.options)
        if kind.class_name not in self.net_classes:
            self.net_classes.append(kind.class_name)
        if kind.sizes_at_build:
            for shape in net.arg_shapes:
                for dim in shape:
                    if isinstance(dim, str) and dim not in writer.bound:
                        writer._bind(dim)
            in_features = " + ".join(" * ".join(str(d) for d in shape) for shape in net.arg_shapes)
            out_features = " * ".join(str(d) for d in net.arg_shapes[0])
            sizes = f"{in_features}, {out_features}"
        else:
            sizes = f"{len(net.arg_shapes)}"
        make = f"{kind.class_name}({sizes}, {option_text}, zero_init={net.correction}).to(dtype=dtype, device=device)"
        learn = self.low.learned.get(net.name)
        if learn is not None and learn.per_layer:
            lines = [f"self.{net.name} = nn.ModuleList([{make} for _ in range(layers)])"]
        else:
            lines = [f"self.{net.name} = {make}"]
        if learn is None:
            lines.append(f"self.{net.name}.requires_grad_(False)")
        return lines

    def prepare_inputs(self) -> list[str]:
        """Validation and per-sample hyperparameters."""
        writer = _MethodWriter(_Context("prepare", self.low, frozenset(s.name for s in self.inputs)), self.printer)
        for symbol in self.inputs:
            writer.lines.append(
                f'{symbol.name} = check_input("{symbol.name}", {symbol.name}, {_axes(symbol)}, sizes, '
                f"{self.dtype_source})"
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
        writer.lines.append(f'batch = inputs["{first}"].shape[0]')
        writer.lines.append(f'dtype, device = inputs["{first}"].dtype, inputs["{first}"].device')
        writer.dtype_bound = True
        for symbol in self.carried:
            writer.bind_for([symbol.init])
            for dim in symbol.shape:
                if isinstance(dim, str) and dim not in writer.bound:
                    writer._bind(dim)
            full = "batch" + (", " + _internal_shape(symbol.shape) if symbol.shape else ", 1, 1")
            if isinstance(symbol.init, ir.Const):
                value = format_float(symbol.init.value)
                writer.lines.append(f"{symbol.name} = torch.full(({full}), {value}, dtype=dtype, device=device)")
            else:
                value = self.printer(symbol.init)
                writer.lines.append(
                    f"{symbol.name} = torch.as_tensor({value}, dtype=dtype, device=device).expand({full})"
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
        return writer.lines

    def objective_value(self) -> ir.Expr:
        total: ir.Expr = self.problem.smooth
        for term in self.problem.nonsmooth:
            total = ir.add(total, ir.mul(term.coef, ir.Apply(term.func, (term.arg,), ir.SCALAR)))
        return total

    def objective(self) -> list[str]:
        writer = _MethodWriter(_Context("problem", self.low, frozenset(s.name for s in self.variables)), self.printer)
        arguments = ", ".join(f"{s.name}={s.name}" for s in self.inputs)
        writer.lines += ["sizes = {}", f"inputs = self.prepare_inputs({arguments}, sizes=sizes)"]
        for symbol in self.variables:
            writer.lines.append(
                f'{symbol.name} = check_input("{symbol.name}", {symbol.name}, {_axes(symbol)}, sizes, '
                f"{self.dtype_source})"
            )
        writer.bound = [s.name for s in self.variables]
        total = self.objective_value()
        writer.bind_for([total])
        writer.lines.append(f"value = {self.printer(total)}")
        writer.lines.append(f'batch = inputs["{self.inputs[0].name}"].shape[0]')
        writer.lines.append("return torch.as_tensor(value).expand(batch, 1, 1).reshape(batch)")
        return writer.lines

    def lipschitz_methods(self, math: MathPrinter) -> list[dict]:
        methods = []
        for var in self.low.lipschitz_vars:
            hessian = self.problem.hessian_product(var)
            symbol = self.low.symbol(var)
            static = not ir.depends_on(hessian, self.low.per_sample - set(s.name for s in self.carried))
            writer = _MethodWriter(_Context("problem", self.low, frozenset({var}), static), self.printer)
            writer.bound.append(var)
            writer.bind_for([hessian] + [ir.Eye(d, (d, d)) for d in symbol.shape if isinstance(d, str)])
            rows, cols = symbol.shape
            writer.lines.append(f"{var} = unit_basis({rows}, {cols}, dtype, device)")
            writer.lines.append(f"return largest_hessian_eigenvalue({self.printer(hessian)})")
            methods.append({"name": f"lipschitz_{var}", "var": var, "hessian": math(hessian), "lines": writer.lines})
        return methods

    def helper_sources(self) -> tuple[list[str], list[str], list[str]]:
        """Sources of the runtime helpers, operators and net classes the module uses (call it
        after every method is printed: the printers record the helpers they chose)."""
        low = self.low
        expressions = [rule.value for rule in low.rules] + [s.init for s in low.static + low.dynamic + self.carried]
        helpers: list[str] = ["as_data", "check_input", "size_of", "checkpoint_segment"]
        if any(symbol.shape for symbol in self.params):
            helpers.append("as_shaped")
        if low.lipschitz_vars:
            helpers += ["unit_basis", "largest_hessian_eigenvalue"]
        for printer in (self.printer, self.build_printer):
            helpers += [name for name in printer.helpers if name not in helpers]
        ops: list[str] = []
        for expr in [*expressions, self.objective_value()]:
            for node in ir.walk(expr):
                match node:
                    case ir.Apply(func=func):
                        helpers += [name for name in FUNCTIONS[func].torch_helpers if name not in helpers]
                    case ir.Prox(op=op) if PROX_TABLE[op].helper not in ops:
                        ops.append(PROX_TABLE[op].helper)
                    case ir.Proj(set=set_name) if SET_TABLE[set_name].helper not in ops:
                        ops.append(SET_TABLE[set_name].helper)
        return (
            helper_sources("runtime_torch", helpers),
            helper_sources("ops_torch", ops),
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
    }
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
    keyword_only += [f"layers: int = {unfold.layers}", "dtype: torch.dtype | None = None"]
    keyword_only += ["checkpoint_layers: bool | int = False"]
    forward_args = ", ".join(f"{s.name}: Tensor" for s in inputs)
    outputs = unfold.outputs
    output_shapes = ", ".join(f"{o}: {_user_shape(low.symbol(o), True)}" for o in outputs)

    rule_math = []
    for rule in unfold.rules:
        arrow = "=" if rule.is_let else "←"
        rule_math.append(f"{rule.target} {arrow} {math(rule.value)}")
    gradient_math = [f"∇{var} f = {math(grad)}" for var, grad in problem.gradients]
    smooth_math = math(problem.smooth)
    terms = [f"{math(t.coef)}·{math(ir.Apply(t.func, (t.arg,), ir.SCALAR))}" for t in problem.nonsmooth]
    objective_math = " + ".join([smooth_math, *terms])
    constraint_math = [f"{vs.var} ∈ {vs.set}({', '.join(math(p) for p in vs.params)})" for vs in problem.sets]
    learned_doc = [
        f"{name} ({'per layer' if learn.per_layer else 'shared'}, paradigm {low.paradigms[name]})"
        for name, learn in low.learned.items()
    ]
    return {
        "version": __version__,
        "spec_path": spec_path,
        "unfold": unfold.name,
        "problem": problem.name,
        "class_name": low.class_name,
        "layers": unfold.layers,
        "objective_math": objective_math,
        "constraint_math": constraint_math,
        "gradient_math": gradient_math,
        "rule_math": rule_math,
        "learned_doc": learned_doc,
        "helper_sources": runtime_sources,
        "op_sources": op_sources,
        "net_sources": net_sources,
        "constructor_args": required + optional + (["*"] if keyword_only else []) + keyword_only,
        "data_doc": [f"{s.name}: {_user_shape(s, False)}" for s in data],
        "input_names": [s.name for s in inputs],
        "input_doc": [f"{s.name}: {_user_shape(s, True)}" for s in inputs],
        "var_names": [s.name for s in variables],
        "var_doc": [f"{s.name}: {_user_shape(s, True)}" for s in variables],
        "forward_args": forward_args,
        "outputs": [{"name": o, "layout": _user_layout(low.symbol(o).shape)} for o in outputs],
        "output_doc": output_shapes,
        "single_output": len(outputs) == 1,
        **methods,
        "paradigms": low.paradigms,
        "layer_lists": emitter.layer_lists,
        "learned_names": list(low.learned),
        "shape_doc": {s.name: fmt_shape(s.shape) for s in unfold.symbols},
    }


def _computed_default(symbol: Symbol) -> bool:
    """A param whose default is an expression (``eye(m)``, ``2 * lam``), not a number."""
    return symbol.init is not None and not isinstance(symbol.init, ir.Const)


def _user_layout(shape: ir.Shape) -> str:
    """How an internal ``(B, r, c)`` value is returned: vectors ``(B, n)``, scalars ``(B,)``."""
    if shape == ():
        return "[..., 0, 0]"
    return ".squeeze(-1)" if shape[1] == 1 else ""


def layer_lists(low: LoweredUnfold) -> list[str]:
    """Per-layer learned tensors, kept as one parameter per layer (nn.ParameterList).

    Indexing one stacked (K, ...) parameter per layer would make every layer's backward write a
    zero-filled (K, ...) gradient (for matrices that tripled a LISTA-CP training step; for scalars
    it still costs a few small operations per layer, measured at 2-3% of the step).
    """
    return [name for name, learn in low.learned.items() if learn.role != "net" and learn.per_layer]


def _dtype_source(low: LoweredUnfold, lists: list[str]) -> str:
    tensors = [s for s in low.problem.symbols if s.role in ("data", "param")]
    if tensors:
        return f"self.{_problem_attr(low, tensors[0].name)}.dtype"
    if low.learned:
        name = next(iter(low.learned))
        if low.learned[name].role != "net":
            return f"self.{name}[0].dtype" if name in lists else f"self.{name}.dtype"
    return "None"


def format_python(text: str) -> str:
    """Parse (a syntax error here is a compiler bug) and format with the pinned ruff."""
    ast.parse(text)
    from ruff.__main__ import find_ruff_bin

    command = [find_ruff_bin(), "format", "--isolated", "--line-length", "100", "--stdin-filename", "model.py", "-"]
    result = subprocess.run(command, input=text, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ruff could not format generated code: {result.stderr.strip()}")
    return result.stdout


def render_model(low: LoweredUnfold, spec_path: str) -> str:
    context = model_context(low, spec_path)
    return format_python(template_environment().get_template("model.py.j2").render(**context))


def render_init(low: LoweredUnfold, spec_path: str) -> str:
    text = (
        template_environment()
        .get_template("__init__.py.j2")
        .render(version=__version__, spec_path=spec_path, class_name=low.class_name, unfold=low.name)
    )
    return format_python(text)
