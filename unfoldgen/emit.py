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
from unfoldgen.resources import resource_dir

INDENT = "    "


@functools.cache
def template_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
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
                return _dim_binding(low, name, build=self.mode == "build")
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
        data = low.problem.of_role("data")
        if data:
            return f"self.{_problem_attr(low, data[0].name)}"
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


def model_context(low: LoweredUnfold, spec_path: str) -> dict:
    problem = low.problem
    unfold = low.unfold
    math = MathPrinter()

    def net_call(name: str) -> str:
        learn = low.learned.get(name)
        return f"self.{name}[k]" if learn is not None and learn.per_layer else f"self.{name}"

    printer = TorchPrinter(net_call, lambda var: f"self.lipschitz_{var}(inputs)")
    build_printer = TorchPrinter(net_call, lambda var: f"self.lipschitz_{var}({{}})")
    data = problem.of_role("data")
    inputs = problem.of_role("input")
    variables = problem.of_role("var")
    params = problem.of_role("param")
    states = tuple(sym for sym in unfold.symbols if sym.role == "state")

    # -- constructor
    init_lines: list[str] = [
        "if not isinstance(layers, int) or layers < 1:",
        f'{INDENT}raise ValueError(f"layers must be a positive integer, got {{layers!r}}")',
        "self.layers = layers",
        "self.checkpoint_layers = checkpoint_layers",
        "sizes: dict = {}",
    ]
    for dim in (sym.name for sym in problem.of_role("dim")):
        init_lines.append(f"if {dim} is not None:")
        init_lines.append(f'{INDENT}sizes["{dim}"] = {dim}')
    for symbol in data:
        init_lines.append(f'{symbol.name} = as_data("{symbol.name}", {symbol.name}, {_axes(symbol)}, sizes, dtype)')
        init_lines.append(f"dtype = {symbol.name}.dtype")
        init_lines.append(f"device = {symbol.name}.device")
    if not data:
        init_lines.append("dtype = dtype or torch.get_default_dtype()")
    if not data:
        init_lines.append('device = torch.device("cpu")')
    init_lines.append("self.sizes = sizes")
    for symbol in params:
        value = f"torch.as_tensor({symbol.name}, dtype=dtype, device=device)"
        init_lines.append(f"{symbol.name} = {value}.reshape({_internal_shape(symbol.shape) or '()'})")
    for symbol in data + params:
        init_lines.append(f'self.register_buffer("{_problem_attr(low, symbol.name)}", {symbol.name})')
    static_writer = _MethodWriter(_Context("build", low, frozenset(s.name for s in data + params)), build_printer)
    static_writer.lines = init_lines
    static_writer.bound = [s.name for s in data + params]
    static_writer.dtype_bound = True
    for symbol in low.static:
        static_writer.bind_for([symbol.init])
        for dim in symbol.shape:
            if isinstance(dim, str) and dim not in static_writer.bound:
                static_writer._bind(dim)
        value = build_printer(symbol.init)
        shape = _internal_shape(symbol.shape) or "()"
        static_writer.lines.append(f"if {symbol.name} is None:")
        static_writer.lines.append(f"{INDENT}{symbol.name} = {value}")
        static_writer.lines.append(
            f"{symbol.name} = torch.as_tensor({symbol.name}, dtype=dtype, device=device).reshape({shape})"
        )
        static_writer.bound.append(symbol.name)
    for symbol in low.static:
        if symbol.name not in low.learned:
            static_writer.lines.append(f'self.register_buffer("{symbol.name}", {symbol.name})')
    # learned tensors
    for name, learn in low.learned.items():
        if learn.role == "net":
            continue
        symbol = low.symbol(name)
        if symbol.depends_on_inputs:
            start = "torch.ones((), dtype=dtype, device=device)"
        else:
            start = name
        if learn.per_layer:
            shape = _internal_shape(symbol.shape)
            expand = f"{start}.expand(layers{', ' + shape if shape else ''}).clone()"
        else:
            expand = f"{start}.clone()"
        static_writer.lines.append(f"self.{name} = nn.Parameter({expand})")
    # nets
    net_classes: list[str] = []
    for net in unfold.nets:
        kind = NET_KINDS[net.kind]
        options = {key: default for key, (default, _, _) in kind.options.items()} | dict(net.options)
        if kind.class_name not in net_classes:
            net_classes.append(kind.class_name)
        if kind.sizes_at_build:
            for shape in net.arg_shapes:
                for dim in shape:
                    if isinstance(dim, str) and dim not in static_writer.bound:
                        static_writer._bind(dim)
            in_features = " + ".join(" * ".join(str(d) for d in shape) for shape in net.arg_shapes)
            out_features = " * ".join(str(d) for d in net.arg_shapes[0])
            option_text = ", ".join(f"{key}={options[key]}" for key in kind.options)
            make = f"{kind.class_name}({in_features}, {out_features}, {option_text}, zero_init={net.correction})"
            make += ".to(dtype=dtype, device=device)"
        else:
            option_text = ", ".join(f"{key}={options[key]}" for key in kind.options)
            make = f"{kind.class_name}({len(net.arg_shapes)}, {option_text}, zero_init={net.correction})"
            make += ".to(dtype=dtype, device=device)"
        learn = low.learned.get(net.name)
        if learn is not None and learn.per_layer:
            static_writer.lines.append(f"self.{net.name} = nn.ModuleList([{make} for _ in range(layers)])")
        else:
            static_writer.lines.append(f"self.{net.name} = {make}")
        if learn is None:
            static_writer.lines.append(f"self.{net.name}.requires_grad_(False)")
    constructor_lines = static_writer.lines

    # -- prepare_inputs: validation and per-sample hyperparameters
    prepare = _MethodWriter(_Context("prepare", low, frozenset(s.name for s in inputs)), printer)
    dtype_source = _dtype_source(low)
    prepare.lines.append("sizes = dict(self.sizes)")
    for symbol in inputs:
        prepare.lines.append(
            f'{symbol.name} = check_input("{symbol.name}", {symbol.name}, {_axes(symbol)}, sizes, {dtype_source})'
        )
    prepare.bound = [s.name for s in inputs]
    prepare.lines.append("inputs = {" + ", ".join(f'"{s.name}": {s.name}' for s in inputs) + "}")
    for symbol in low.dynamic:
        prepare.bind_for([symbol.init])
        prepare.lines.append(f'inputs["{symbol.name}"] = {symbol.name} = {printer(symbol.init)}')
        prepare.bound.append(symbol.name)
    prepare.lines.append("return inputs")

    # -- initial_state
    first_input = inputs[0].name
    start = _MethodWriter(_Context("problem", low), printer)
    start.lines.append(f'batch = inputs["{first_input}"].shape[0]')
    start.lines.append(f'dtype, device = inputs["{first_input}"].dtype, inputs["{first_input}"].device')
    start.dtype_bound = True
    for symbol in variables + states:
        start.bind_for([symbol.init])
        for dim in symbol.shape:
            if isinstance(dim, str) and dim not in start.bound:
                start._bind(dim)
        full = "batch" + (", " + _internal_shape(symbol.shape) if symbol.shape else ", 1, 1")
        if isinstance(symbol.init, ir.Const):
            start.lines.append(
                f"{symbol.name} = torch.full(({full}), {format_float(symbol.init.value)}, dtype=dtype, device=device)"
            )
        else:
            value = printer(symbol.init)
            start.lines.append(f"{symbol.name} = torch.as_tensor({value}, dtype=dtype, device=device).expand({full})")
        start.bound.append(symbol.name)
    carried = variables + states
    start.lines.append("return {" + ", ".join(f'"{s.name}": {s.name}' for s in carried) + "}")

    # -- layer
    layer = _MethodWriter(_Context("layer", low), printer)
    for rule in low.rules:
        layer.assign(rule.target, rule.value)
    for symbol in carried:
        if symbol.name not in layer.bound:
            layer._bind(symbol.name)
    layer.lines.append("return {" + ", ".join(f'"{s.name}": {s.name}' for s in carried) + "}")

    # -- objective
    objective = _MethodWriter(_Context("problem", low, frozenset(s.name for s in variables)), printer)
    objective.lines.append("sizes = {}")
    objective.lines.append(
        "inputs = self.prepare_inputs(" + ", ".join(f"{s.name}={s.name}" for s in inputs) + ", sizes=sizes)"
    )
    for symbol in variables:
        objective.lines.append(
            f'{symbol.name} = check_input("{symbol.name}", {symbol.name}, {_axes(symbol)}, sizes, {dtype_source})'
        )
    objective.bound = [s.name for s in variables]
    total: ir.Expr = problem.smooth
    for term in problem.nonsmooth:
        total = ir.add(total, ir.mul(term.coef, ir.Apply(term.func, (term.arg,), ir.SCALAR)))
    objective.bind_for([total])
    objective.lines.append(f"value = {printer(total)}")
    objective.lines.append(f'batch = inputs["{first_input}"].shape[0]')
    objective.lines.append("return torch.as_tensor(value).expand(batch, 1, 1).reshape(batch)")

    # -- Lipschitz constants
    lipschitz_methods = []
    for var in low.lipschitz_vars:
        hessian = problem.hessian_product(var)
        symbol = low.symbol(var)
        writer = _MethodWriter(_Context("problem", low, frozenset({var})), printer)
        writer.bound.append(var)
        writer.bind_for([hessian] + [ir.Eye(d, (d, d)) for d in symbol.shape if isinstance(d, str)])
        rows, cols = symbol.shape
        writer.lines.append(f"{var} = unit_basis({rows}, {cols}, dtype, device)")
        writer.lines.append(f"return largest_hessian_eigenvalue({printer(hessian)})")
        lipschitz_methods.append(
            {
                "name": f"lipschitz_{var}",
                "var": var,
                "hessian": math(hessian),
                "lines": writer.lines,
            }
        )

    # -- helpers used
    helpers: list[str] = ["as_data", "check_input", "size_of"]
    if low.lipschitz_vars:
        helpers += ["unit_basis", "largest_hessian_eigenvalue"]
    used_functions = [rule.value for rule in low.rules] + [s.init for s in low.static + low.dynamic] + [total]
    for expr in used_functions:
        for node in ir.walk(expr):
            if isinstance(node, ir.Apply):
                helpers += [name for name in FUNCTIONS[node.func].torch_helpers if name not in helpers]
    runtime_sources = helper_sources("runtime_torch", helpers)
    op_names: list[str] = []
    all_exprs = [rule.value for rule in low.rules] + [s.init for s in low.static + low.dynamic]
    for expr in all_exprs:
        for node in ir.walk(expr):
            name = None
            if isinstance(node, ir.Prox):
                name = PROX_TABLE[node.op].helper
            elif isinstance(node, ir.Proj):
                name = SET_TABLE[node.set].helper
            if name is not None and name not in op_names:
                op_names.append(name)
    op_sources = helper_sources("ops_torch", op_names)
    net_sources = helper_sources("nets_torch", net_classes)

    # -- signatures and docs
    def data_param(symbol: Symbol) -> str:
        if symbol.role == "param":
            return (
                f"{symbol.name}: float | Tensor = {format_float(symbol.init.value)}"
                if isinstance(symbol.init, ir.Const)
                else f"{symbol.name}: float | Tensor"
            )
        return f"{symbol.name}: Tensor"

    required = [data_param(s) for s in data] + [data_param(s) for s in params if not isinstance(s.init, ir.Const)]
    optional = [data_param(s) for s in params if isinstance(s.init, ir.Const)]
    keyword_only = [f"{s.name}: float | Tensor | None = None" for s in low.static]
    keyword_only += [f"{d.name}: int | None = None" for d in problem.of_role("dim")]
    keyword_only += [f"layers: int = {unfold.layers}", "dtype: torch.dtype | None = None"]
    keyword_only += ["checkpoint_layers: bool = False"]
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
        "constructor_lines": constructor_lines,
        "data_doc": [f"{s.name}: {_user_shape(s, False)}" for s in data],
        "input_names": [s.name for s in inputs],
        "input_doc": [f"{s.name}: {_user_shape(s, True)}" for s in inputs],
        "var_names": [s.name for s in variables],
        "var_doc": [f"{s.name}: {_user_shape(s, True)}" for s in variables],
        "forward_args": forward_args,
        "outputs": [{"name": o, "layout": _user_layout(low.symbol(o).shape)} for o in outputs],
        "output_doc": output_shapes,
        "single_output": len(outputs) == 1,
        "prepare_lines": prepare.lines,
        "initial_lines": start.lines,
        "layer_lines": layer.lines,
        "objective_lines": objective.lines,
        "lipschitz_methods": lipschitz_methods,
        "paradigms": low.paradigms,
        "learned_names": list(low.learned),
        "shape_doc": {s.name: fmt_shape(s.shape) for s in unfold.symbols},
    }


def _user_layout(shape: ir.Shape) -> str:
    """How an internal ``(B, r, c)`` value is returned: vectors ``(B, n)``, scalars ``(B,)``."""
    if shape == ():
        return "[..., 0, 0]"
    return ".squeeze(-1)" if shape[1] == 1 else ""


def _dtype_source(low: LoweredUnfold) -> str:
    tensors = [s for s in low.problem.symbols if s.role in ("data", "param")]
    if tensors:
        return f"self.{_problem_attr(low, tensors[0].name)}.dtype"
    if low.learned:
        name = next(iter(low.learned))
        if low.learned[name].role != "net":
            return f"self.{name}.dtype"
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
