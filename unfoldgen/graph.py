"""Draw one layer of an unfolded network as a dataflow graph (graphviz), and the K-layer chain.

``draw(lowered, "ista.svg")`` renders the lowered IR of one unfold block
(``unfoldgen.compiler.compile_text(text).lowered[i]``): the iterates entering the layer, the
per-sample inputs and the data, every operation of the update rules (gradients already
expanded), proximal and projection blocks, nets, and the iterates leaving the layer; learned
quantities are highlighted with their shape, tying and number of learned scalars. Around the
layer, the chain ``initial state → layer 1 → … → layer K → outputs`` shows where it sits.

Needs the ``graphviz`` Python package and Graphviz's ``dot`` program for images; ``.dot``/``.gv``
output needs neither program (only the package). Missing pieces raise ``GraphvizMissingError`` with
the command that installs them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import sympy

from unfoldgen import ir
from unfoldgen.check import NetInfo
from unfoldgen.lower import LoweredUnfold
from unfoldgen.mathtext import MathPrinter
from unfoldgen.nets import NET_KINDS, numel
from unfoldgen.prox import PROX_TABLE, SET_TABLE

INSTALL_DOT = "install Graphviz: `apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS)"
INSTALL_PACKAGE = "install the Python package: `pip install graphviz`"
SOURCE_FORMATS = (".dot", ".gv")  # graphviz source: needs the Python package, not the dot program
IMAGE_FORMATS = (".svg", ".png", ".pdf")  # rendered by dot
FORMATS = SOURCE_FORMATS + IMAGE_FORMATS

# colours: one per kind of node, the same in every drawing
STYLE = {
    "state": {"shape": "ellipse", "style": "filled", "fillcolor": "#fff3c4"},
    "input": {"shape": "parallelogram", "style": "filled", "fillcolor": "#d7e9ff"},
    "data": {"shape": "cylinder", "style": "filled", "fillcolor": "#e8e8e8"},
    "fixed": {"shape": "box", "style": "rounded", "color": "#777777"},
    "learned": {"shape": "box", "style": "filled,bold", "fillcolor": "#ffb347", "penwidth": "2"},
    "op": {"shape": "circle", "width": "0.35", "fixedsize": "false", "fontsize": "11"},
    "const": {"shape": "plaintext", "fontsize": "10"},
    "prox": {"shape": "box", "style": "filled,rounded", "fillcolor": "#c8f0c8"},
    "proj": {"shape": "box", "style": "filled,rounded", "fillcolor": "#c8e6f0"},
    "net": {"shape": "box3d", "style": "filled", "fillcolor": "#f4c2e0"},
    "net_learned": {"shape": "box3d", "style": "filled,bold", "fillcolor": "#ffb347", "penwidth": "2"},
    "let": {"shape": "note", "style": "filled", "fillcolor": "#f5f5f5"},
    "out": {"shape": "doublecircle", "style": "filled", "fillcolor": "#fff3c4"},
    "chain": {"shape": "box", "style": "rounded", "fontsize": "11"},
}
OPERATORS = {"+": "+", "-": "−", "*": "·", "/": "÷", "@": "@"}


class DrawError(RuntimeError):
    """A drawing could not be made (see the message)."""


class GraphvizMissingError(DrawError):
    """The graphviz package or the dot program is not installed; ``missing`` says which."""

    def __init__(self, message: str, missing: str):
        super().__init__(message)
        self.missing = missing  # "package" or "dot"


def _graphviz():
    try:
        import graphviz
    except ImportError:
        raise GraphvizMissingError(
            f"drawing needs the graphviz Python package: {INSTALL_PACKAGE}", missing="package"
        ) from None
    return graphviz


def dot_available() -> bool:
    return shutil.which("dot") is not None


def fmt_shape(shape: ir.Shape) -> str:
    """A node's shape label: ``scalar``, ``n``, ``m×n``."""
    return "scalar" if ir.is_scalar(shape) else "×".join(map(str, ir.user_axes(shape)))


def _count_text(count: sympy.Expr) -> str:
    return str(sympy.expand(count)).replace("**", "^").replace("*", "·")


def net_parameter_count(net: NetInfo, options: dict[str, int]) -> sympy.Expr:
    """Learned scalars of one net, in the dims: its entry in unfoldgen.nets counts them (an
    external net's are those of the module passed in: the symbol ``params(NAME)``)."""
    kind = NET_KINDS[net.kind]
    if kind.parameter_count is None:
        return sympy.Symbol(f"params({net.name})")
    return kind.parameter_count(kind.resolved(options), net.arg_shapes)


def learned_counts(low: LoweredUnfold) -> dict[str, sympy.Expr]:
    """Learned scalars per learned name, over all layers, as expressions in the dims."""
    counts: dict[str, sympy.Expr] = {}
    for entry in low.plan.learned():
        name = entry.name
        copies = low.unfold.layers if entry.per_layer else 1
        if entry.role == "net":
            info = next(net for net in low.unfold.nets if net.name == name)
            counts[name] = sympy.expand(net_parameter_count(info, entry.net_options) * copies)
        else:
            counts[name] = sympy.expand(numel(low.symbol(name).shape) * copies)
    return counts


class _LayerDrawer:
    """Walks the rules of one layer and adds a node per distinct sub-expression."""

    def __init__(self, low: LoweredUnfold, graph, layer: str = "k"):
        self.low = low
        self.graph = graph
        self.layer = layer
        self.math = MathPrinter()
        self.nodes: dict[ir.Expr, str] = {}  # structurally equal sub-expressions share a node
        self.bound: dict[str, str] = {}  # name -> node holding its current value in this layer
        self.counter = 0
        self.learned_scalars: dict[str, str] = {}

    def node(self, label: str, kind: str, **extra) -> str:
        self.counter += 1
        name = f"n{self.counter}"
        self.graph.node(name, label, **(STYLE[kind] | extra))
        return name

    # -- leaves
    def leaf(self, name: str) -> str:
        if name in self.bound:
            return self.bound[name]
        symbol = self.low.symbol(name)
        shape = fmt_shape(symbol.shape)
        entry = self.low.plan[name]
        if symbol.role in ("var", "state"):
            node = self.node(f"{name}_{self.layer}\n{shape}", "state")
        elif symbol.role == "input":
            node = self.node(f"{name}\ninput, {shape}", "input")
        elif entry.learned:
            tying = "per layer" if entry.per_layer else "shared"
            count = learned_counts(self.low)[name]
            self.learned_scalars[name] = _count_text(count)
            label = f"{name}  (learned, {tying})\n{shape}, {_count_text(count)} scalars\nparadigm {entry.paradigm}"
            node = self.node(label, "learned")
        elif symbol.role == "data":
            node = self.node(f"{name}\ndata, {shape}", "data")
        elif symbol.role == "dim":
            node = self.node(name, "const")
        else:
            origin = "per sample" if symbol.depends_on_inputs else "fixed"
            node = self.node(f"{name}\n{symbol.role}, {shape}, {origin}", "fixed")
        self.bound[name] = node
        return node

    # -- expressions
    def expr(self, expr: ir.Expr) -> str:
        if isinstance(expr, ir.Ref):
            return self.leaf(expr.name)
        if expr in self.nodes:
            return self.nodes[expr]
        node = self._new(expr)
        self.nodes[expr] = node
        return node

    @staticmethod
    def _shape_label(expr: ir.Expr) -> dict[str, str]:
        """Tensor-valued operations carry their result's shape; scalars stay unlabelled."""
        return {} if ir.is_scalar(expr.shape) else {"xlabel": fmt_shape(expr.shape), "fontsize": "11"}

    def _edge(self, source: str, target: str, label: str | None = None) -> None:
        self.graph.edge(source, target, **({"label": label, "fontsize": "9"} if label else {}))

    def _new(self, expr: ir.Expr) -> str:
        shape = fmt_shape(expr.shape)
        match expr:
            case ir.Const(value=value):
                return self.node(f"{value:g}", "const")
            case ir.Ones() | ir.Eye():
                return self.node(self.math(expr), "const")
            case ir.Binary(op=op, left=left, right=right):
                symbol = OPERATORS[op]
                if op == "*" and not (ir.is_scalar(left.shape) or ir.is_scalar(right.shape)):
                    symbol = "⊙"
                node = self.node(symbol, "op", tooltip=f"{op} → {shape}", **self._shape_label(expr))
                self._edge(self.expr(left), node)
                self._edge(self.expr(right), node)
                return node
            case ir.Neg(operand=operand):
                node = self.node("−", "op", **self._shape_label(expr))
                self._edge(self.expr(operand), node)
                return node
            case ir.Transpose(operand=operand):
                node = self.node("ᵀ", "op", **self._shape_label(expr))
                self._edge(self.expr(operand), node)
                return node
            case ir.Power(base=base, exponent=exponent):
                node = self.node("^", "op", **self._shape_label(expr))
                self._edge(self.expr(base), node, "base")
                self._edge(self.expr(exponent), node, "exp")
                return node
            case ir.Apply(func=func, args=args):
                node = self.node(f"{func}\n→ {shape}", "op", shape="box", style="rounded")
                for arg in args:
                    self._edge(self.expr(arg), node)
                return node
            case ir.Prox(op=op, scale=scale, arg=arg, params=params):
                entry = PROX_TABLE[op]
                node = self.node(f"prox  {op.replace('+', ' + ')}\n{entry.math}\n→ {shape}", "prox")
                self._edge(self.expr(arg), node, "v")
                self._edge(self.expr(scale), node, "scale")
                for name, param in zip(entry.options, params, strict=True):
                    self._edge(self.expr(param), node, name)
                return node
            case ir.Proj(set=set_name, params=params, arg=arg):
                entry = SET_TABLE[set_name]
                node = self.node(f"proj  {set_name}\n{entry.math}\n→ {shape}", "proj")
                self._edge(self.expr(arg), node, "v")
                for name, param in zip(entry.params, params, strict=False):
                    self._edge(self.expr(param), node, name)
                return node
            case ir.NetCall(net=net, args=args):
                return self._net(net, args, shape)
            case ir.Lipschitz():
                return self.node(f"L_{','.join(expr.variables)}\n(Lipschitz constant)", "fixed")
            case ir.Grad(var=var):
                return self.node(f"∇{var} f", "op", shape="box")
        raise TypeError(f"cannot draw {type(expr).__name__}")

    def _net(self, net: str, args: tuple[ir.Expr, ...], shape: str) -> str:
        info = next(n for n in self.low.unfold.nets if n.name == net)
        options = self.low.plan[net].net_options
        option_text = ", ".join(f"{key} {value}" for key, value in options.items())
        kind = f"{info.kind}({option_text})" if option_text else info.kind  # external has no options
        entry = self.low.plan[net]
        role = "correction, starts at 0" if entry.starts_at_zero else "replaces a solver step, starts random"
        if NET_KINDS[info.kind].external:
            role = "the module passed in, starts as given"
        if entry.learned:
            tying = "per layer" if entry.per_layer else "shared"
            count = _count_text(learned_counts(self.low)[net])
            self.learned_scalars[net] = count
            label = f"net {net}: {kind}\n{role}\nlearned, {tying}: {count} scalars\n→ {shape}"
            node = self.node(label, "net_learned")
        else:
            node = self.node(f"net {net}: {kind}\n{role}, not learned\n→ {shape}", "net")
        for index, arg in enumerate(args):
            self._edge(self.expr(arg), node, f"arg {index + 1}" if len(args) > 1 else None)
        return node

    # -- the layer
    def rules(self) -> list[str]:
        carried = [s.name for s in self.low.problem.of_role("var")] + [
            s.name for s in self.low.unfold.symbols if s.role == "state"
        ]
        for rule in self.low.rules:
            value = self.expr(rule.value)
            if rule.is_let:
                node = self.node(f"let {rule.target}\n{fmt_shape(rule.value.shape)}", "let")
            else:
                node = self.node(f"{rule.target} ←\n{fmt_shape(rule.value.shape)}", "let")
            self._edge(value, node)
            self.bound[rule.target] = node
        outs = []
        for name in carried:
            node = self.node(f"{name}_{self._next()}", "out")
            self._edge(self.leaf(name), node)
            outs.append(node)
        return outs

    def _next(self) -> str:
        return "k+1" if self.layer == "k" else f"{self.layer}+1"


def to_graph(low: LoweredUnfold, layers_shown: int = 2):
    """The graphviz.Digraph of one layer (cluster) and the K-layer chain around it."""
    graphviz = _graphviz()
    unfold = low.unfold
    graph = graphviz.Digraph(name=low.name, graph_attr={"rankdir": "TB", "fontname": "Helvetica", "compound": "true"})
    graph.attr("node", fontname="Helvetica", fontsize="11")
    graph.attr("edge", fontname="Helvetica", arrowsize="0.6")
    depth = f"up to {unfold.layers} iterations" if low.plan.fixed_point else f"{unfold.layers} layers"
    title = f"{low.class_name}: {depth} of `{unfold.name}` for problem `{low.problem.name}`"
    graph.attr(label=title, labelloc="t", fontsize="14")

    with graph.subgraph(name="cluster_layer") as layer:
        layer.attr(label="layer k (one iteration)", style="rounded", color="#999999", fontsize="12")
        drawer = _LayerDrawer(low, layer)
        outs = drawer.rules()

    # the chain of K layers, with the drawn layer marked
    with graph.subgraph(name="cluster_chain") as chain:
        network = "the fixed-point iteration" if low.plan.fixed_point else "the network"
        chain.attr(label=f"{network}: {depth}", style="dashed", color="#bbbbbb", fontsize="12")
        carried = ", ".join(
            [s.name for s in low.problem.of_role("var")] + [s.name for s in unfold.symbols if s.role == "state"]
        )
        chain.node("chain_start", f"initial state\n{carried}", **STYLE["chain"])
        previous = "chain_start"
        steps = [1, "…", "k", "…", unfold.layers] if unfold.layers > 3 else list(range(1, unfold.layers + 1))
        for step in steps:
            name = f"chain_{step}" if step != "…" else f"chain_gap_{previous}"
            label = "⋯" if step == "…" else f"layer {step}"
            style = STYLE["chain"] | ({"style": "rounded,bold,filled", "fillcolor": "#eeeeee"} if step == "k" else {})
            chain.node(name, label, **style)
            chain.edge(previous, name)
            previous = name
        chain.node("chain_out", f"outputs\n{', '.join(unfold.outputs)}", **STYLE["chain"])
        chain.edge(previous, "chain_out")
    anchor = "chain_k" if unfold.layers > 3 else "chain_1"
    if outs:
        graph.edge(anchor, outs[0], style="dashed", lhead="cluster_layer", label="expanded", fontsize="9")

    learned = ", ".join(f"{name}: {count}" for name, count in drawer.learned_scalars.items()) or "nothing"
    graph.node("legend", f"learned scalars — {learned}", shape="plaintext", fontsize="10")
    return graph


def draw(lowered: LoweredUnfold, path: str | Path) -> Path:
    """Render the drawing to ``path``; the format follows the suffix (.svg, .png, .pdf, .dot, .gv)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"{path}: cannot tell the format from the suffix {suffix or '(none)'!r}; use one of {', '.join(FORMATS)}"
        )
    graph = to_graph(lowered)
    if suffix in SOURCE_FORMATS:
        path.write_text(graph.source, encoding="utf-8")
        return path
    missing_dot = GraphvizMissingError(
        f"cannot render {path.name}: Graphviz's `dot` program is not on PATH; {INSTALL_DOT}; "
        f"or write the graphviz source with a .dot suffix (needs no program)",
        missing="dot",
    )
    if not dot_available():
        raise missing_dot
    graphviz = _graphviz()
    try:
        rendered = graph.pipe(format=suffix[1:])
    except graphviz.ExecutableNotFound:
        raise missing_dot from None
    except graphviz.CalledProcessError as err:
        detail = (err.stderr or b"").decode("utf-8", "replace").strip()
        raise DrawError(f"Graphviz's dot failed to render {path.name}: {detail or err}") from None
    path.write_bytes(rendered)
    return path
