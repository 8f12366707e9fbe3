"""Emit ``kernels.py``: numba CPU kernels for the per-layer update and whole-network inference.

The same lowered IR and plan (``unfoldgen.lower``: where each name lives, per layer or shared,
state-dict keys) as the torch module, printed by ``NumbaPrinter``; the checks of parameters and
inputs (``runtime_numba.py``) are copied in. Two layouts:

- **batched** (every per-sample quantity is a vector or scalar): the batch is the columns of
  ``(n, B)`` arrays, so ``A @ x`` is one GEMM for the whole batch and elementwise work runs
  over contiguous memory, fused by numba's array-expression pass;
- **per-sample** (per-sample matrices, e.g. a channel ``H`` or the matrices of robust PCA):
  a ``prange`` loop over samples, each one a small dense problem.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from unfoldgen import ir
from unfoldgen.check import Symbol
from unfoldgen.emit import base
from unfoldgen.emit.base import STORED_LAYER, header, helper_sources, referenced_names
from unfoldgen.functions import FUNCTIONS
from unfoldgen.lower import LoweredUnfold
from unfoldgen.nets import NET_KINDS
from unfoldgen.printers import NumbaPrinter, NumbaUnsupportedError, format_float
from unfoldgen.prox import PROX_TABLE, SET_TABLE


def _derived(dim: ir.Dim) -> bool:
    return isinstance(dim, str) and ir.dim_factor(dim)[1] != 1


def _uses_lipschitz(expr: ir.Expr, variables: tuple[str, ...]) -> bool:
    return any(isinstance(node, ir.Lipschitz) and node.variables == variables for node in ir.walk(expr))


@dataclass(frozen=True)
class KernelLayout:
    batched: bool
    reason: str  # why per-sample, for the docstring


def choose_layout(low: LoweredUnfold) -> KernelLayout:
    """Choose the layout, or raise NumbaUnsupportedError naming what has no numba form."""
    for net in low.unfold.nets:
        if NET_KINDS[net.kind].numba is None:
            raise NumbaUnsupportedError(f"{net.kind} nets have no numba implementation")
    derived = [s.name for s in low.problem.symbols + low.unfold.symbols if any(_derived(d) for d in s.shape)]
    if derived:
        raise NumbaUnsupportedError(f"sizes derived from a dim ({', '.join(derived)}: e.g. h/4) in kernels")
    for plan in low.lipschitz:
        dynamic = any(_uses_lipschitz(s.init, plan.variables) for s in low.dynamic)
        # a per-sample constant comes from the Hessian's matrix in kernels: fine without operators
        # (a diagonal Hessian: the same value as torch's max |D|), an n²×n² matrix for an image
        operators = any(
            isinstance(n, ir.Apply) and FUNCTIONS[n.func].kind == "linear"
            for e in plan.expressions()
            for n in ir.walk(e)
        )
        if dynamic and operators:
            raise NumbaUnsupportedError(f"a per-sample {plan.label} of an operator problem in kernels")
    per_sample_matrices = [s.name for s in low.problem.of_role("input") + low.carried if ir.is_matrix(s.shape)]
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
            if entry is not None and entry.per_column and ir.is_matrix(node.shape):
                raise NumbaUnsupportedError(f"{entry.numba} of a matrix")
    if per_sample_matrices:
        return KernelLayout(False, f"per-sample matrices ({', '.join(per_sample_matrices)})")
    if low.dynamic:
        return KernelLayout(False, "per-sample hyperparameters")
    printer = NumbaPrinter(low.per_sample, net_call=lambda net, columns: _net_call(low, net, columns))
    for rule in low.rules:
        printer(rule.value)  # raises on what the batched layout cannot express
    return KernelLayout(True, "")


def _param_key(low: LoweredUnfold, name: str, problem_value: bool = False) -> str:
    """The state-dict key holding ``name`` (the problem's own value when that differs)."""
    entry = low.plan[name]
    return entry.attribute if problem_value else entry.state_key


def _dense_layers(net) -> tuple[str, ...]:
    """State-dict prefixes of the dense layers the net's numba function reads."""
    kind = NET_KINDS[net.kind]
    return kind.numba.dense_layers(kind.resolved(net.options))


def _net_call(low: LoweredUnfold, name: str, columns: str) -> str:
    """The net's numba function on ``columns``; its weights are stacked (K, out, in) per layer,
    or (1, out, in) when shared."""
    net = next(net for net in low.unfold.nets if net.name == name)
    kind = NET_KINDS[net.kind]
    options = low.plan[name].net_options
    layer = "_k" if low.plan[name].per_layer else "0"
    extra = "".join(f", {options[option]!r}" for option in kind.numba.options)
    return f"{kind.numba.forward}(_{name}_weights, _{name}_biases, {layer}, {columns}{extra})"


def kernels_context(low: LoweredUnfold, spec_path: str) -> dict:
    layout = choose_layout(low)
    batched = layout.batched
    problem = low.problem
    printer = NumbaPrinter(low.per_sample, batched, net_call=lambda net, columns: _net_call(low, net, columns))
    inputs = problem.of_role("input")
    states = low.carried
    state_names = [s.name for s in states]

    # -- the layer function: free names (params, inputs, dims), then the carried states
    lets = {r.target for r in low.rules if r.is_let}
    used, _ = referenced_names([r.value for r in low.rules])
    free = [n for n in used if n not in lets and n not in state_names and low.symbol(n).role != "dim"]
    dims = [n for n in used if n not in lets and low.symbol(n).role == "dim"]
    nets = [net.name for net in low.unfold.nets]
    net_args = [f"_{net}_{part}" for net in nets for part in ("weights", "biases")]
    layer_index = ["_k"] if any(low.plan[net].per_layer for net in nets) else []
    layer_args = free + net_args + layer_index + dims + state_names
    body = [f"{rule.target} = {printer(rule.value)}" for rule in low.rules]
    layer_lines = _typing_lines(state_names[0], states[0].complex, body) + body
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
        elif symbol.role == "layer":  # the layer index, a number of the kernel's float type
            value_at_layer[name] = "_dtype.type(_k)"
        elif symbol.depends_on_inputs:
            factor = ""
            if low.plan[name].learned:
                key = param_arg(name)
                factor = f"{key}[{STORED_LAYER}] * " if low.plan[name].per_layer else f"{key} * "
            value_at_layer[name] = f"{factor}_sample_{name}"
        else:
            key = param_arg(name)
            value_at_layer[name] = f"{key}[{STORED_LAYER}]" if _one_per_layer(low.plan[name]) else key

    # dynamic (per-sample) hyperparameters: only in the per-sample layout
    lipschitz_functions = []
    dynamic_lines = []
    for symbol in low.dynamic:
        for node in ir.walk(symbol.init):
            if isinstance(node, ir.Lipschitz) and node.variables not in [f["variables"] for f in lipschitz_functions]:
                lipschitz_functions.append(_lipschitz_function(low, node.variables, printer, param_arg))
        dynamic_lines.append(f"_sample_{symbol.name} = {_print_dynamic(symbol.init, printer, low)}")

    # the states' start: data and params at the problem's own values, learned hypers at layer 0
    init_refs, _ = referenced_names([s.init for s in states])
    at_start: dict[str, ir.Expr] = {}
    for name in init_refs:
        entry = low.plan[name]
        if entry.storage in ("per_sample", "per_sample_factor"):
            factor = ""
            if entry.storage == "per_sample_factor":  # the first layer's factor
                factor = f"{param_arg(name)}[0] * " if entry.per_layer else f"{param_arg(name)} * "
            at_start[name] = ir.Ref(f"{factor}_sample_{name}", entry.role, entry.shape, entry.complex)
        elif entry.role in ("data", "param", "hyper", "weight"):
            key = param_arg(name, problem_value=True)
            value = f"{key}[0]" if _one_per_layer(entry) and entry.problem_key is None else key
            if value != name:
                at_start[name] = ir.Ref(value, entry.role, entry.shape, entry.complex)
    init_lines = []
    for symbol in states:
        axes = list(_axes(symbol.shape))
        if not ir.is_matrix(symbol.shape):
            axes[1] = "_batch" if batched else "1"
        dtype = _dtype_of(symbol)
        if isinstance(symbol.init, ir.Const):
            value = format_float(symbol.init.value)
            init_lines.append(f"{symbol.name} = np.full(({', '.join(axes)}), {value}, {dtype})")
        else:
            start = printer(ir.substitute(symbol.init, at_start))
            init_lines.append(f"{symbol.name} = {start} + np.zeros(({', '.join(axes)}), {dtype})")
    stored_index = [STORED_LAYER] if layer_index else []  # a per-layer net reads the stored layer's weights
    call_args = [value_at_layer.get(n, n) for n in free] + net_args + stored_index + dims + state_names
    # the dims the network itself uses, each read off an array it is given
    used_dims = set(dims) | {d for s in states for d in s.shape if isinstance(d, str)}
    used_dims |= set(referenced_names([s.init for s in states + low.dynamic])[0])
    used_dims |= {arg for function in lipschitz_functions for arg in function["args"]}
    dim_lines = [
        f"{d.name} = {_dim_source(low, d.name, param_arg, array_args, batch_arrays=not batched)}"
        for d in problem.of_role("dim")
        if d.name in used_dims
    ]
    reference = inputs[0].name if batched else f"_{inputs[0].name}_batch"
    reference_complex = inputs[0].complex
    setup = [f"_batch = {reference}.shape[{1 if batched else 0}]", *dim_lines]
    if not batched:  # one output array per state, filled sample by sample
        shapes = {s.name: ", ".join(_axes(s.shape)) for s in states}
        setup += [f"_out_{s.name} = np.empty((_batch, {shapes[s.name]}), {_dtype_of(s)})" for s in states]
    loop_call = f"layer({', '.join(call_args)})"
    setup = _typing_lines(reference, reference_complex, setup + dynamic_lines + init_lines + [loop_call]) + setup
    # layers past the stored ones reuse the last stored layer's values: one clamped index
    stored = [f"{key}.shape[0]" for key in array_args if _param_axes(low, key)[:1] == ("layers",)]
    stored += [f"_{net}_weights[0].shape[0]" for net in nets if low.plan[net].per_layer]
    if stored:
        setup.append(f"_stored_layers = {stored[0] if len(stored) == 1 else 'min(' + ', '.join(stored) + ')'}")
    return {
        **header(low, spec_path),
        "batched": batched,
        "reason": layout.reason,
        "layer_args": layer_args,
        "layer_lines": layer_lines,
        "layer_returns": returns,
        "network_args": ["_layers", *(["_tolerance", "_tiny"] if low.plan.fixed_point else []), *array_args, *net_args]
        + [s.name if batched else f"_{s.name}_batch" for s in inputs],
        "input_names": [s.name for s in inputs],
        "scalar_inputs": [s.name for s in inputs if ir.is_scalar(s.shape)],
        "input_axes": {s.name: ir.user_axes(s.shape) for s in inputs},
        "complex_literal": _complex_literal(low, array_args, inputs),
        "complex_states": [s.name for s in states if s.complex],
        "network_setup": setup,
        "dynamic_lines": dynamic_lines,
        "init_lines": init_lines,
        "call_args": call_args,
        "stored_index": STORED_LAYER if stored else None,
        "state_names": state_names,
        "next_names": [f"_next_{name}" for name in state_names],  # a fixed-point iteration's new values
        "fixed_point": low.plan.fixed_point,
        "outputs": list(low.unfold.outputs),
        "outputs_literal": repr(tuple(low.unfold.outputs)),
        "nets_literal": repr({net.name: _net_entry(low, net) for net in low.unfold.nets}),
        "has_nets": bool(low.unfold.nets),
        "states_literal": repr(tuple(state_names)),
        "output_exprs": [_output_expr(low, name) for name in low.unfold.outputs],
        "lipschitz_functions": lipschitz_functions,
        "param_axes": {key: _param_axes(low, key) for key in array_args},
        "helper_sources": _helpers(low, lipschitz_functions, printer.helpers),
        "runtime_sources": helper_sources(
            "runtime_numba",
            ["collect_params", "checked_params", "checked_inputs"]
            + (["checked_tolerance"] if low.plan.fixed_point else []),
        ),
    }


def _typing_lines(reference: str, reference_complex: bool, lines: list[str]) -> list[str]:
    """``_dtype`` and ``_F`` (the kernel's real float type), ``_complex`` and ``_C`` (its complex
    counterpart) bound from the array ``reference`` (complex when ``reference_complex``), where
    ``lines`` use them (``_F`` needs ``_dtype``, ``_C`` needs ``_complex``, which needs ``_dtype``
    unless the reference is complex)."""
    text = "\n".join(lines)
    uses_complex_type = re.search(r"\b_C\(", text) is not None
    uses_complex = uses_complex_type or re.search(r"\b_complex\b", text) is not None
    uses_float = re.search(r"\b_F\(", text) is not None
    found = []
    if uses_float or (uses_complex and not reference_complex) or re.search(r"\b_dtype\b", text):
        found.append(f"_dtype = {reference}.real.dtype" if reference_complex else f"_dtype = {reference}.dtype")
    if uses_float:
        found.append("_F = _dtype.type")
    if uses_complex:
        found.append(f"_complex = {reference}.dtype" if reference_complex else _COMPLEX_OF_DTYPE)
    if uses_complex_type:
        found.append("_C = _complex.type")
    return found


# numpy's promotion gives the counterpart: float32 with complex64 is complex64, float64 with it complex128
_COMPLEX_OF_DTYPE = "_complex = (np.zeros(1, _dtype) + np.complex64(0)).dtype"


def _dtype_of(symbol: Symbol) -> str:
    """The kernel's dtype of a symbol's values: the real ``_dtype`` or its complex counterpart."""
    return "_complex" if symbol.complex else "_dtype"


def _complex_literal(low: LoweredUnfold, array_args: list[str], inputs: list) -> str:
    """COMPLEX: the parameter arrays (state-dict keys) and inputs holding complex values."""
    names = [key for key in array_args if low.plan[key.removeprefix("_problem_")].complex]
    names += [s.name for s in inputs if s.complex]
    return f"frozenset({{{', '.join(repr(name) for name in sorted(names))}}})" if names else "frozenset()"


def _net_entry(low: LoweredUnfold, net) -> tuple:
    """NETS[net]: (weights per layer?, its dense layers' state-dict prefixes, arguments' shapes, output's shape)."""
    shapes = tuple(ir.user_axes(shape) for shape in net.arg_shapes)
    return (low.plan[net.name].per_layer, _dense_layers(net), shapes, shapes[:1])


def _dim_source(low: LoweredUnfold, dim: str, param_arg, array_args: list[str], batch_arrays: bool = False) -> str:
    """``dim`` read off an array: one sample's input, (``batch_arrays``) the per-sample layout's
    ``(B, r, c)`` input arrays, or a data tensor — its learned copy when the network is given that
    (a leading per-layer axis) or another array it is given, else the problem's own value, added
    to the network's arguments."""
    source = low.plan[dim].dim_source
    if source is None:
        raise NumbaUnsupportedError(f"dim {dim} is not fixed by any data or input")
    axis = 0 if source.axis == -2 else 1
    if source.role == "input":
        if batch_arrays:
            return f"_{source.tensor}_batch.shape[{axis + 1}]"
        return f"{source.tensor}.shape[{axis}]"
    entry = low.plan[source.tensor]
    if entry.state_key in array_args:
        return f"{entry.state_key}.shape[{axis + (1 if entry.per_layer else 0)}]"
    for key in array_args:  # another array the network is given (run checks that they agree)
        axes = _param_axes(low, key)
        if dim in axes:
            return f"{key}.shape[{axes.index(dim)}]"
    return f"{param_arg(source.tensor, problem_value=True)}.shape[{axis}]"


def _output_expr(low: LoweredUnfold, name: str) -> str:
    """The caller's layout: vectors (B, n), scalars (B,), matrices (B, m, n)."""
    shape = low.symbol(name).shape
    if shape == ():
        return f'_results["{name}"].reshape(_batch)'
    if ir.is_vector(shape):
        return f'_results["{name}"].reshape(_batch, -1)'
    return f'_results["{name}"]'


def _axes(shape: ir.Shape) -> tuple[str, ...]:
    """A sample's array axes: scalars (1, 1), vectors (n, 1), images (h, w), stacks (c, h, w)."""
    if shape == ():
        return ("1", "1")
    return tuple(str(d) for d in shape)


def _param_axes(low: LoweredUnfold, key: str) -> tuple:
    """A parameter array's axes: the internal layout (vectors are columns), after a leading
    per-layer axis for the learned copy; a learned factor on a per-sample value is a scalar."""
    entry = low.plan[key.removeprefix("_problem_")]
    if key == entry.problem_key:
        return tuple(entry.shape)
    axes = () if entry.storage == "per_sample_factor" else tuple(entry.shape)
    return ("layers", *axes) if _one_per_layer(entry) else axes


def _one_per_layer(entry) -> bool:
    """A parameter array with a leading per-layer axis: learned per layer, or computed from k."""
    return entry.per_layer or entry.storage == "layer_buffer"


def _print_dynamic(expr: ir.Expr, printer: NumbaPrinter, low: LoweredUnfold) -> str:
    lipschitz = {
        node.variables: f"{low.lipschitz_plan(node.variables).name}({', '.join(_lipschitz_args(low, node.variables))})"
        for node in ir.walk(expr)
        if isinstance(node, ir.Lipschitz)
    }

    class _DynamicPrinter(NumbaPrinter):
        def print(self, node: ir.Expr) -> tuple[str, int]:
            if isinstance(node, ir.Lipschitz):
                return lipschitz[node.variables], 100
            return super().print(node)

    dynamic = _DynamicPrinter(printer.per_sample, batched=False)
    dynamic.helpers = printer.helpers  # its helpers are the kernels' too
    return dynamic(expr)


def _lipschitz_args(low: LoweredUnfold, variables: tuple[str, ...]) -> list[str]:
    """The arrays the constant reads, then the dims it and the variables' shapes need (the
    network binds every dim before the sample loop)."""
    names, _ = referenced_names(low.lipschitz_plan(variables).expressions())
    args = [n for n in names if n not in variables and low.symbol(n).role != "dim"]
    # a Hessian of numbers alone still needs an array for its dtype: one sample's first input
    # (numba passes a 0-d array as a number: no dtype)
    if not any(not ir.is_scalar(low.symbol(n).shape) for n in args):
        args.append(low.problem.of_role("input")[0].name)
    dims = [n for n in names if low.symbol(n).role == "dim"]
    for var in variables:
        for dim in low.symbol(var).shape:
            if isinstance(dim, str) and dim not in dims:
                dims.append(dim)
    return args + dims


def _lipschitz_function(low: LoweredUnfold, variables: tuple[str, ...], printer: NumbaPrinter, param_arg) -> dict:
    plan = low.lipschitz_plan(variables)
    args = _lipschitz_args(low, variables)
    for name in args:
        if low.symbol(name).role in ("data", "param"):
            param_arg(name, problem_value=True)
    common = {"var": ", ".join(variables), "variables": variables, "name": plan.name, "args": args, "terms": None}
    reference = next(n for n in args if not ir.is_scalar(low.symbol(n).shape))
    complex_variable = any(low.symbol(var).complex for var in variables)

    def typing(printed: list[str]) -> list[str]:
        """The typing lines the function's body needs: always ``_dtype``, ``_complex`` for the real
        view's basis of a complex variable."""
        used = [*printed, "_dtype", "_complex" if complex_variable else ""]
        return _typing_lines(reference, low.symbol(reference).complex, used)

    term = plan.terms[0]
    if len(plan.terms) == 1 and len(variables) == 1 and term.bound is None:
        rows, cols = _axes(low.symbol(variables[0]).shape)
        if term.method == "exact" and isinstance(term.value, ir.Apply) and term.value.func == "max_abs":
            diagonal = printer(term.value.args[0])  # the Hessian's diagonal D: no n×n matrix
            return {**common, "diagonal": diagonal, "typing": typing([diagonal])}
        expression = printer(term.products[0])
        return {
            **common,
            "rows": rows,
            "cols": cols,
            "expression": expression,
            "diagonal": None,
            "complex": complex_variable,
            "typing": typing([expression]),
        }
    if complex_variable:
        raise NumbaUnsupportedError(f"a per-sample {plan.label} of several terms or variables, one complex")
    # a sum of bounds (curvature terms, joint Hessians): each term's matrix over the stacked basis
    blocks, offset = [], 0
    for var in variables:
        rows, cols = _axes(low.symbol(var).shape)
        size = f"{rows} * {cols}"
        blocks.append({"var": var, "rows": rows, "cols": cols, "start": offset, "stop": f"{offset} + {size}"})
        offset = f"{offset} + {size}" if offset else size
    terms = []
    for term in plan.terms:
        factor = printer(term.factor)
        if term.method == "exact" and isinstance(term.value, ir.Apply) and term.value.func == "max_abs":
            terms.append({"factor": factor, "diagonal": printer(term.value.args[0])})
        else:
            products = [printer(product) for product in term.products]
            terms.append({"factor": factor, "diagonal": None, "products": list(zip(blocks, products, strict=True))})
    return {**common, "terms": terms, "blocks": blocks, "count": offset, "typing": typing([repr(terms)])}


def _helpers(low: LoweredUnfold, lipschitz_functions: list, printed: list[str]) -> list[str]:
    """The ops_numba and linops_numba sources the kernels call: the table entries' own, and
    ``printed``, the helpers the printer chose."""
    names = ["colsum", *printed]
    operators: list[str] = []
    for rule in low.rules:
        for node in ir.walk(rule.value):
            if isinstance(node, ir.Prox):
                names.append(PROX_TABLE[node.op].numba)
            elif isinstance(node, ir.Proj):
                names.append(SET_TABLE[node.set].numba)
            elif isinstance(node, ir.Apply) and FUNCTIONS[node.func].kind == "linear":
                operators.extend(FUNCTIONS[node.func].numba_helpers)
            elif isinstance(node, ir.Apply):
                names.extend(FUNCTIONS[node.func].numba_helpers)
                if FUNCTIONS[node.func].over_samples and not ir.is_vector(node.args[0].shape):
                    names.append("as_column")
            elif isinstance(node, ir.NetCall):
                kind = next(net.kind for net in low.unfold.nets if net.name == node.net)
                names.append(NET_KINDS[kind].numba.forward)
                if not all(ir.is_vector(arg.shape) for arg in node.args):
                    names.append("as_column")
    if lipschitz_functions:
        names.append("largest_abs_eigenvalue")
    unique = list(dict.fromkeys(names))
    sources = helper_sources("ops_numba", unique, "@_kernel()\n")
    if operators:
        sources += helper_sources("linops_numba", list(dict.fromkeys(operators)), "@_kernel()\n")
    return sources


CACHE_KEY_PLACEHOLDER = "CACHEKEY"


def render_kernels(low: LoweredUnfold, spec_path: str) -> str:
    """The kernels module; its numba cache is filed under a name derived from its own text, so two
    different kernel files never share cache entries and every copy of one file does."""
    text = base.render("kernels.py.j2", {**kernels_context(low, spec_path), "cache_key": CACHE_KEY_PLACEHOLDER})
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    return text.replace(f"_unfoldgen_kernels_{CACHE_KEY_PLACEHOLDER}", f"_unfoldgen_kernels_{key}")
