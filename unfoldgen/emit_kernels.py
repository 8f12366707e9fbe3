"""Emit ``kernels.py``: numba CPU kernels for the per-layer update and whole-network inference.

The same lowered IR as the torch module, printed by ``NumbaPrinter``. Two layouts:

- **batched** (every per-sample quantity is a vector or scalar): the batch is the columns of
  ``(n, B)`` arrays, so ``A @ x`` is one GEMM for the whole batch and elementwise work runs
  over contiguous memory, fused by numba's array-expression pass;
- **per-sample** (per-sample matrices, e.g. a channel ``H`` or the matrices of robust PCA):
  a ``prange`` loop over samples, each one a small dense problem.
"""

from __future__ import annotations

from dataclasses import dataclass

from unfoldgen import __version__, ir
from unfoldgen.emit import format_python, helper_sources, referenced_names, template_environment
from unfoldgen.functions import FUNCTIONS
from unfoldgen.lower import LoweredUnfold
from unfoldgen.nets import NET_KINDS
from unfoldgen.printers import NumbaPrinter, NumbaUnsupportedError, format_float
from unfoldgen.prox import PROX_TABLE, SET_TABLE


@dataclass(frozen=True)
class KernelPlan:
    batched: bool
    reason: str  # why per-sample, for the docstring


def plan(low: LoweredUnfold) -> KernelPlan:
    """Choose the layout, or raise NumbaUnsupportedError naming what has no numba form."""
    for net in low.unfold.nets:
        if NET_KINDS[net.kind].numba is None:
            raise NumbaUnsupportedError(f"{net.kind} nets have no numba implementation")
    per_sample_matrices = [
        s.name for s in low.problem.of_role("input") + low.carried if not ir.is_scalar(s.shape) and s.shape[1] != 1
    ]
    for rule in low.rules:
        for node in ir.walk(rule.value):
            entry = None
            if isinstance(node, ir.Prox):
                entry = PROX_TABLE[node.op]
            elif isinstance(node, ir.Proj):
                entry = SET_TABLE[node.set]
            if entry is not None and entry.numba is None:
                raise NumbaUnsupportedError(f"{entry.key} has no numba implementation")
            # a per-column operator is only valid on vectors (a per-sample matrix is one block)
            if entry is not None and entry.per_column and not ir.is_scalar(node.shape) and node.shape[1] != 1:
                raise NumbaUnsupportedError(f"{entry.numba} of a matrix")
    if per_sample_matrices:
        return KernelPlan(False, f"per-sample matrices ({', '.join(per_sample_matrices)})")
    if low.dynamic:
        return KernelPlan(False, "per-sample hyperparameters")
    printer = NumbaPrinter(low.per_sample, net_call=lambda net, columns: _net_call(low, net, columns))
    for rule in low.rules:
        printer(rule.value)  # raises on what the batched layout cannot express
    return KernelPlan(True, "")


def _param_key(low: LoweredUnfold, name: str, problem_value: bool = False) -> str:
    """The state-dict key holding ``name`` (the problem's own value when that differs)."""
    if problem_value and name in low.learned and low.symbol(name).role in ("data", "param"):
        return f"_problem_{name}"
    return name


def _dense_layers(net) -> tuple[str, ...]:
    """State-dict prefixes of the dense layers the net's numba function reads."""
    kind = NET_KINDS[net.kind]
    return kind.numba.dense_layers(kind.resolved(net.options))


def _net_call(low: LoweredUnfold, name: str, columns: str) -> str:
    """The net's numba function on ``columns``; its weights are stacked (K, out, in) per layer,
    or (1, out, in) when shared."""
    net = next(net for net in low.unfold.nets if net.name == name)
    kind = NET_KINDS[net.kind]
    options = kind.resolved(net.options)
    layer = "k" if _per_layer(low, name) else "0"
    extra = "".join(f", {options[option]!r}" for option in kind.numba.options)
    return f"{kind.numba.forward}({name}_weights, {name}_biases, {layer}, {columns}{extra})"


def _per_layer(low: LoweredUnfold, name: str) -> bool:
    learn = low.learned.get(name)
    return learn is not None and learn.per_layer


def kernels_context(low: LoweredUnfold, spec_path: str) -> dict:
    kernel_plan = plan(low)
    batched = kernel_plan.batched
    problem = low.problem
    printer = NumbaPrinter(low.per_sample, batched, net_call=lambda net, columns: _net_call(low, net, columns))
    inputs = problem.of_role("input")
    states = low.carried
    state_names = [s.name for s in states]

    # -- the layer function: free names (params, inputs, dims), then the carried states
    lets = {r.target for r in low.rules if r.is_let}
    used, needs_dtype = referenced_names([r.value for r in low.rules])
    free = [n for n in used if n not in lets and n not in state_names and low.symbol(n).role != "dim"]
    dims = [n for n in used if n not in lets and low.symbol(n).role == "dim"]
    nets = [net.name for net in low.unfold.nets]
    net_args = [f"{net}_{part}" for net in nets for part in ("weights", "biases")]
    layer_index = ["k"] if any(_per_layer(low, net) for net in nets) else []
    layer_args = free + net_args + layer_index + dims + state_names
    layer_lines = []
    if needs_dtype:
        layer_lines.append(f"dtype = {state_names[0]}.dtype")
    layer_lines.append(f"F = {state_names[0]}.dtype.type")
    for rule in low.rules:
        layer_lines.append(f"{rule.target} = {printer(rule.value)}")
    returns = ", ".join(state_names) + ("," if len(state_names) == 1 else "")

    # -- the network: parameter arrays from the state dict, inputs, the layer loop
    array_args: list[str] = []  # network arguments that are parameter arrays (state-dict keys)

    def param_arg(name: str, problem_value: bool = False) -> str:
        key = _param_key(low, name, problem_value)
        if key not in array_args:
            array_args.append(key)
        return key

    value_at_layer: dict[str, str] = {}
    for name in free:
        symbol = low.symbol(name)
        if symbol.role == "input":
            value_at_layer[name] = name
        elif symbol.depends_on_inputs:
            factor = ""
            if name in low.learned:
                key = param_arg(name)
                factor = f"{key}[k] * " if _per_layer(low, name) else f"{key} * "
            value_at_layer[name] = f"{factor}sample_{name}"
        else:
            key = param_arg(name)
            value_at_layer[name] = f"{key}[k]" if _per_layer(low, name) else key
    dim_lines = [f"{d.name} = {_dim_source(low, d.name, batch_arrays=not batched)}" for d in problem.of_role("dim")]

    # dynamic (per-sample) hyperparameters: only in the per-sample layout
    lipschitz_functions = []
    dynamic_lines = []
    for symbol in low.dynamic:
        for node in ir.walk(symbol.init):
            if isinstance(node, ir.Lipschitz) and node.var not in [f["var"] for f in lipschitz_functions]:
                lipschitz_functions.append(_lipschitz_function(low, node.var, printer, param_arg))
        dynamic_lines.append(f"sample_{symbol.name} = {_print_dynamic(symbol.init, printer, low)}")

    init_lines = []
    for symbol in states:
        rows, cols = _rows_cols(symbol.shape)
        if ir.is_scalar(symbol.shape) or symbol.shape[1] == 1:
            cols = "batch" if batched else "1"
        if isinstance(symbol.init, ir.Const):
            init_lines.append(f"{symbol.name} = np.full(({rows}, {cols}), F({format_float(symbol.init.value)}), dtype)")
        else:
            init_lines.append(f"{symbol.name} = {printer(symbol.init)} + np.zeros(({rows}, {cols}), dtype)")
    init_refs, _ = referenced_names([s.init for s in states])
    for name in init_refs:
        symbol = low.symbol(name)
        if symbol.role in ("data", "param", "hyper", "weight") and name not in value_at_layer:
            key = param_arg(name, problem_value=symbol.role in ("data", "param"))
            value_at_layer[name] = key
    call_args = [value_at_layer.get(n, n) for n in free] + net_args + layer_index + dims + state_names
    return {
        "version": __version__,
        "spec_path": spec_path,
        "unfold": low.name,
        "class_name": low.class_name,
        "batched": batched,
        "reason": kernel_plan.reason,
        "layer_args": layer_args,
        "layer_lines": layer_lines,
        "layer_returns": returns,
        "network_args": ["layers", *array_args, *net_args] + [s.name if batched else f"{s.name}_batch" for s in inputs],
        "input_names": [s.name for s in inputs],
        "input_axes": {s.name: _axes(s.shape) for s in inputs},
        "reference": inputs[0].name,
        "dynamic_lines": dynamic_lines,
        "init_lines": init_lines,
        "init_bindings": [
            (name, value_at_layer[name])
            for name in init_refs
            if name in value_at_layer and value_at_layer[name] != name
        ],
        "call_args": call_args,
        "state_names": state_names,
        "outputs": list(low.unfold.outputs),
        "outputs_literal": repr(tuple(low.unfold.outputs)),
        "nets_literal": repr({net.name: (_per_layer(low, net.name), _dense_layers(net)) for net in low.unfold.nets}),
        "states_literal": repr(tuple(state_names)),
        "output_exprs": [_output_expr(low, name) for name in low.unfold.outputs],
        "state_shapes": {s.name: _rows_cols(s.shape) for s in states},
        "dim_lines": dim_lines,
        "lipschitz_functions": lipschitz_functions,
        "param_axes": {key: _param_axes(low, key) for key in array_args},
        "layers": low.unfold.layers,
        "helper_sources": _helpers(low, lipschitz_functions),
    }


def _dim_source(low: LoweredUnfold, dim: str, batch_arrays: bool = False) -> str:
    """``dim`` read off an array: data (a leading K when learned per layer), one sample's input,
    or (``batch_arrays``) the per-sample layout's ``(B, r, c)`` input arrays."""
    for source in low.problem.dim_sources:
        if source.dim == dim:
            axis = 0 if source.axis == -2 else 1
            if source.role == "input":
                if batch_arrays:
                    return f"{source.tensor}_batch.shape[{axis + 1}]"
                return f"{source.tensor}.shape[{axis}]"
            per_layer = 1 if _per_layer(low, source.tensor) else 0
            return f"{source.tensor}.shape[{axis + per_layer}]"
    raise NumbaUnsupportedError(f"dim {dim} is not fixed by any data or input")


def _output_expr(low: LoweredUnfold, name: str) -> str:
    """The caller's layout: vectors (B, n), scalars (B,), matrices (B, m, n)."""
    shape = low.symbol(name).shape
    if shape == ():
        return f'results["{name}"].reshape(batch)'
    if shape[1] == 1:
        return f'results["{name}"].reshape(batch, -1)'
    return f'results["{name}"]'


def _rows_cols(shape: ir.Shape) -> tuple[str, str]:
    if shape == ():
        return ("1", "1")
    return (str(shape[0]), str(shape[1]))


def _axes(shape: ir.Shape) -> tuple:
    if shape == ():
        return ()
    return (shape[0],) if shape[1] == 1 else tuple(shape)


def _param_axes(low: LoweredUnfold, key: str) -> tuple:
    name = key.removeprefix("_problem_")
    symbol = low.symbol(name)
    axes = _axes(symbol.shape)
    if symbol.shape != () and symbol.shape[1] == 1:
        axes = (*axes, 1)
    if key == name and symbol.depends_on_inputs:
        axes = ()  # a learned factor on a per-sample value
    if key == name and _per_layer(low, name):
        axes = ("K", *axes)
    return axes


def _print_dynamic(expr: ir.Expr, printer: NumbaPrinter, low: LoweredUnfold) -> str:
    lipschitz = {
        node.var: f"lipschitz_{node.var}({', '.join(_lipschitz_args(low, node.var))})"
        for node in ir.walk(expr)
        if isinstance(node, ir.Lipschitz)
    }

    class _DynamicPrinter(NumbaPrinter):
        def print(self, node: ir.Expr) -> tuple[str, int]:
            if isinstance(node, ir.Lipschitz):
                return lipschitz[node.var], 100
            return super().print(node)

    return _DynamicPrinter(printer.per_sample, batched=False)(expr)


def _lipschitz_args(low: LoweredUnfold, var: str) -> list[str]:
    hessian = low.problem.hessian_product(var)
    names, _ = referenced_names([hessian])
    args = [n for n in names if n != var and low.symbol(n).role != "dim"]
    # a Hessian of numbers alone still needs an array for its dtype: one sample's first input
    return args or [low.problem.of_role("input")[0].name]


def _lipschitz_function(low: LoweredUnfold, var: str, printer: NumbaPrinter, param_arg) -> dict:
    hessian = low.problem.hessian_product(var)
    args = _lipschitz_args(low, var)
    for name in args:
        if low.symbol(name).role in ("data", "param"):
            param_arg(name, problem_value=True)
    rows, cols = _rows_cols(low.symbol(var).shape)
    names, _ = referenced_names([hessian])
    dims = [n for n in names if low.symbol(n).role == "dim"]
    for dim in (rows, cols):
        if dim in [d.name for d in low.problem.of_role("dim")] and dim not in dims:
            dims.append(dim)
    dim_lines = [f"{d} = {_dim_source(low, d)}" for d in dims]
    return {
        "var": var,
        "name": f"lipschitz_{var}",
        "args": args,
        "reference": args[0],
        "dim_lines": dim_lines,
        "rows": rows,
        "cols": cols,
        "expression": printer(hessian),
    }


def _helpers(low: LoweredUnfold, lipschitz_functions: list) -> list[str]:
    names = ["colsum"]
    for rule in low.rules:
        for node in ir.walk(rule.value):
            if isinstance(node, ir.Prox):
                names.append(PROX_TABLE[node.op].numba)
            elif isinstance(node, ir.Proj):
                names.append(SET_TABLE[node.set].numba)
            elif isinstance(node, ir.Apply):
                names.extend(FUNCTIONS[node.func].numba_helpers)
                if FUNCTIONS[node.func].over_samples and node.args[0].shape[1:] != (1,):
                    names.append("as_column")
            elif isinstance(node, ir.NetCall):
                kind = next(net.kind for net in low.unfold.nets if net.name == node.net)
                names.append(NET_KINDS[kind].numba.forward)
                if any(arg.shape[1:] != (1,) for arg in node.args):
                    names.append("as_column")
    if lipschitz_functions:
        names.append("largest_abs_eigenvalue")
    unique = list(dict.fromkeys(names))
    return helper_sources("ops_numba", unique, "@numba.njit(cache=True)\n")


def render_kernels(low: LoweredUnfold, spec_path: str) -> str:
    context = kernels_context(low, spec_path)
    return format_python(template_environment().get_template("kernels.py.j2").render(**context))
