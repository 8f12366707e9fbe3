"""Parse spec text (lark, LALR) and build the AST; syntax errors become SpecErrors."""

from __future__ import annotations

import functools
import math
import re

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.tree import Meta, Tree

from unfoldgen import syntax as s
from unfoldgen.errors import Span, SpecError
from unfoldgen.resources import read_resource

MAX_SPEC_BYTES = 256_000  # lexing whitespace-only text costs ~0.8 µs a character: a quarter second at most
MAX_TOKENS = 10_000  # ~50 µs each to parse and check: keeps any spec under a second (lasso.unf has 564)
MAX_NUMBER_DIGITS = 40
MAX_DEPTH = 200
MAX_LAYERS = 10_000

# Plain words for the grammar's named terminals; literal terminals are shown quoted.
TERMINAL_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "INT": "a whole number",
    "_NL": "a new line",
    "RBRACE": "'}'",
    "COMPARE": "a comparison ('<=', '>=' or '==')",
    "PER_LAYER": "'per layer'",
    "FIXED_POINT": "'fixed point'",
    "ONE_SIDED": "a bound ('>=', '>', '<=' or '<')",
    "REAL": "'real'",
    "COMPLEX": "'complex'",
    "IMAGINARY": "an imaginary number",
    "$END": "the end of the file",
}


@functools.cache
def _parser() -> Lark:
    grammar = read_resource("grammar", "unfold.lark")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _span(meta: Meta | Token) -> Span:
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _name(token: Token) -> s.Name:
    return s.Name(str(token), _span(token))


def _check_number(text: str, span: Span) -> float:
    digits = sum(ch.isdigit() for ch in text)
    if digits > MAX_NUMBER_DIGITS:
        raise SpecError(f"number literal with {digits} digits is too long (at most {MAX_NUMBER_DIGITS})", span)
    value = float(text)
    if not math.isfinite(value):
        raise SpecError(f"number {text} is too large to represent", span)
    return value


@v_args(meta=True)
class _Builder(Transformer):
    """Parse tree → AST; every node keeps its span."""

    # expressions
    def number(self, meta: Meta, children: list) -> s.Number:
        text = str(children[0])
        span = _span(meta)
        return s.Number(_check_number(text, span), text, span)

    def imaginary(self, meta: Meta, children: list) -> s.Number:
        text = str(children[0])
        span = _span(meta)
        return s.Number(complex(0.0, _check_number(text[:-1], span)), text, span)

    def name(self, meta: Meta, children: list) -> s.Name:
        return _name(children[0])

    def _binop(op: str):  # noqa: N805 - a method factory, used in the class body only
        def build(self, meta: Meta, children: list) -> s.BinOp:
            return s.BinOp(op, children[0], children[1], _span(meta))

        return build

    add = _binop("+")
    sub = _binop("-")
    mul = _binop("*")
    div = _binop("/")
    matmul = _binop("@")
    pow = _binop("^")

    def neg(self, meta: Meta, children: list) -> s.Neg:
        return s.Neg(children[0], _span(meta))

    def transpose(self, meta: Meta, children: list) -> s.Transpose:
        return s.Transpose(children[0], _span(meta))

    def conjugate_transpose(self, meta: Meta, children: list) -> s.Transpose:
        return s.Transpose(children[0], _span(meta), conjugate=True)

    def call(self, meta: Meta, children: list) -> s.Call:
        args = tuple(c for c in children[1:] if c is not None)
        return s.Call(_name(children[0]), args, None, _span(meta))

    def bracket_call(self, meta: Meta, children: list) -> s.Call:
        options = tuple(c for c in children[2:] if isinstance(c, s.BracketOption))
        args = tuple(c for c in children[2:] if c is not None and not isinstance(c, s.BracketOption))
        return s.Call(_name(children[0]), args, children[1], _span(meta), options)

    def bracket_option(self, meta: Meta, children: list) -> s.BracketOption:
        return s.BracketOption(_name(children[0]), children[1], _span(meta))

    # types and declarations
    def type(self, meta: Meta, children: list) -> s.TypeSpec:
        dims = []
        for child in children[1:]:
            if child is None:
                continue
            if isinstance(child, s.Name):  # a derived dim, h/4 or 4*h
                dims.append(child)
            elif child.type == "INT":
                dims.append(s.Number(_check_number(str(child), _span(child)), str(child), _span(child)))
            else:
                dims.append(_name(child))
        return s.TypeSpec(tuple(dims), _span(meta), complex=children[0].type == "COMPLEX")

    def dim_over(self, meta: Meta, children: list) -> s.Name:
        """``h/4``: a dim a whole factor smaller (the output of down-sampling)."""
        name, divisor = children
        _check_number(str(divisor), _span(divisor))
        return s.Name(f"{name}/{int(str(divisor))}", _span(meta))

    def dim_times(self, meta: Meta, children: list) -> s.Name:
        """``4*h``: a dim a whole factor larger (the output of up-sampling)."""
        factor, name = children
        _check_number(str(factor), _span(factor))
        return s.Name(f"{int(str(factor))}*{name}", _span(meta))

    def _decl(kind: str):  # noqa: N805 - a method factory, used in the class body only
        def build(self, meta: Meta, children: list) -> s.Decl:
            type_spec = children[1] if len(children) > 1 else None
            init = children[2] if len(children) > 2 else None
            return s.Decl(kind, _name(children[0]), type_spec, init, _span(meta))

        return build

    data_decl = _decl("data")
    input_decl = _decl("input")
    var_decl = _decl("var")
    param_decl = _decl("param")
    hyper_decl = _decl("hyper")
    weight_decl = _decl("weight")
    state_decl = _decl("state")

    def dim_decl(self, meta: Meta, children: list) -> list[s.Decl]:
        return [s.Decl("dim", _name(tok), None, None, _span(tok)) for tok in children]

    def minimize(self, meta: Meta, children: list) -> tuple[str, s.Expr]:
        return ("minimize", children[0], _span(meta))

    def constraint(self, meta: Meta, children: list) -> s.Comparison:
        operands = tuple(children[0::2])
        ops = tuple(str(tok) for tok in children[1::2])
        return s.Comparison(operands, ops, _span(meta))

    def subject_to(self, meta: Meta, children: list) -> s.Constraint:
        return s.Constraint(tuple(children), _span(meta))

    def problem(self, meta: Meta, children: list) -> s.Problem:
        decls: list[s.Decl] = []
        objectives = []
        constraints = []
        for stmt in children[1:]:
            match stmt:
                case list():
                    decls.extend(stmt)
                case s.Decl():
                    decls.append(stmt)
                case ("minimize", expr, span):
                    objectives.append((expr, span))
                case s.Constraint():
                    constraints.append(stmt)
        if len(objectives) > 1:
            raise SpecError("a problem has one 'minimize' statement; join the terms with '+'", objectives[1][1])
        objective = objectives[0][0] if objectives else None
        return s.Problem(_name(children[0]), tuple(decls), objective, tuple(constraints), _span(meta))

    # unfold blocks
    def layers(self, meta: Meta, children: list) -> tuple[str, int, Span]:
        span = _span(children[0])
        digits = str(children[0]).lstrip("0") or "0"
        count = int(digits) if len(digits) <= 7 else MAX_LAYERS + 1
        if not 1 <= count <= MAX_LAYERS:
            raise SpecError(f"layers must be between 1 and {MAX_LAYERS}, got {children[0]}", span)
        return ("layers", count, span)

    def fixed_point_option(self, meta: Meta, children: list) -> tuple[s.Name, s.Number]:
        text, span = str(children[1]), _span(children[1])
        return (_name(children[0]), s.Number(_check_number(text, span), text, span))

    def fixed_point(self, meta: Meta, children: list) -> s.FixedPoint:
        return s.FixedPoint(tuple(c for c in children[1:] if c is not None), _span(meta))

    def net_option(self, meta: Meta, children: list) -> tuple[s.Name, int | str]:
        text = str(children[1])
        if children[1].type == "NAME":
            return (_name(children[0]), text)  # a word option (activation relu)
        if len(text) > 7:
            raise SpecError(f"net option value {text} is too large", _span(children[1]))
        return (_name(children[0]), int(text))

    def net_decl(self, meta: Meta, children: list) -> s.NetDecl:
        options = tuple(c for c in children[2:] if c is not None)
        return s.NetDecl(_name(children[0]), _name(children[1]), options, _span(meta))

    def assign(self, meta: Meta, children: list) -> s.Assign:
        return s.Assign(_name(children[0]), children[1], False, _span(meta))

    def let(self, meta: Meta, children: list) -> s.Assign:
        return s.Assign(_name(children[0]), children[1], True, _span(meta))

    def iterate(self, meta: Meta, children: list) -> tuple[str, tuple[s.Assign, ...], Span]:
        return ("iterate", tuple(children), _span(meta))

    def tying(self, meta: Meta, children: list) -> bool:
        return children[0].type == "PER_LAYER"

    def interval(self, meta: Meta, children: list) -> s.Bounds:
        low_bracket, low, high, high_bracket = children
        low_closed, high_closed = str(low_bracket.children[0]) == "[", str(high_bracket.children[0]) == "]"
        return s.Bounds(low, high, low_closed, high_closed, _span(meta))

    def one_sided(self, meta: Meta, children: list) -> s.Bounds:
        side, value = str(children[0]), children[1]
        closed = side.endswith("=")
        if side.startswith(">"):
            return s.Bounds(value, None, closed, False, _span(meta))
        return s.Bounds(None, value, False, closed, _span(meta))

    def learn(self, meta: Meta, children: list) -> s.Learn:
        per_layer = True
        names = []
        bounds = None
        for child in children:
            if isinstance(child, bool):
                per_layer = child
            elif isinstance(child, s.Bounds):
                bounds = child
            elif child is not None:
                names.append(_name(child))
        return s.Learn(tuple(names), per_layer, _span(meta), bounds)

    def output(self, meta: Meta, children: list) -> tuple[str, tuple[s.Name, ...], Span]:
        return ("output", tuple(_name(tok) for tok in children), _span(meta))

    def unfold(self, meta: Meta, children: list) -> s.Unfold:
        layers = None
        decls: list[s.Decl] = []
        nets: list[s.NetDecl] = []
        iterate = None
        iterate_span = None
        learns: list[s.Learn] = []
        outputs: list[s.Name] = []
        fixed_point = None
        for stmt in children[2:]:
            match stmt:
                case ("layers", count, span):
                    if layers is not None:
                        raise SpecError("'layers' is given twice", span)
                    layers = (count, span)
                case s.Decl():
                    decls.append(stmt)
                case s.NetDecl():
                    nets.append(stmt)
                case ("iterate", rules, span):
                    if iterate is not None:
                        raise SpecError("an unfold block has one 'iterate' block", span)
                    iterate, iterate_span = rules, span
                case s.Learn():
                    learns.append(stmt)
                case s.FixedPoint():
                    if fixed_point is not None:
                        raise SpecError("'fixed point' is given twice", stmt.span)
                    fixed_point = stmt
                case ("output", names, span):
                    if outputs:
                        raise SpecError("'output' is given twice; list all outputs in one statement", span)
                    outputs.extend(names)
        return s.Unfold(
            _name(children[0]),
            _name(children[1]),
            layers,
            tuple(decls),
            tuple(nets),
            iterate,
            iterate_span,
            tuple(learns),
            tuple(outputs),
            _span(meta),
            fixed_point,
        )

    def start(self, meta: Meta, children: list) -> s.SpecFile:
        problems = tuple(c for c in children if isinstance(c, s.Problem))
        unfolds = tuple(c for c in children if isinstance(c, s.Unfold))
        return s.SpecFile(problems, unfolds)


def _describe_terminal(name: str) -> str:
    if name in TERMINAL_WORDS:
        return TERMINAL_WORDS[name]
    for terminal in _parser().terminals:
        if terminal.name == name and terminal.pattern.type == "str":
            return repr(terminal.pattern.value)
    return name.lower()


def _describe_token(token: Token) -> str:
    if token.type == "$END":
        return "the end of the file"
    if token.type == "_NL":
        return "the end of the line"
    text = str(token)
    return repr(text if len(text) <= 30 else text[:27] + "...")


OPERATOR_SYMBOLS = frozenset({"+", "-", "*", "/", "@", "^", ".T"})


@functools.cache
def _operator_terminals() -> frozenset[str]:
    names = {t.name for t in _parser().terminals if t.pattern.type == "str" and t.pattern.value in OPERATOR_SYMBOLS}
    return frozenset(names | {"COMPARE"})


@functools.cache
def _statement_keywords() -> frozenset[str]:
    statements = {"dim", "data", "input", "var", "param", "minimize", "subject", "layers", "hyper", "weight"}
    statements |= {"state", "net", "iterate", "learn", "output", "let", "problem", "unfold"}
    keywords = {t.name for t in _parser().terminals if t.pattern.type == "str" and t.pattern.value in statements}
    return frozenset(keywords | {"FIXED_POINT"})


def _expected_words(expected: set[str]) -> str:
    names = set(expected)
    words = []
    if len(names & _operator_terminals()) >= 3:
        names -= _operator_terminals()
        names -= {"LSQB", "LPAR"}  # calls and brackets after a name: part of "an operator" here
        words.append("an operator")
    keywords = names & _statement_keywords()
    if len(keywords) >= 3:
        names -= keywords
        words.append("a statement")
    words += sorted({_describe_terminal(name) for name in names})
    if len(words) > 5:
        return "an expression or a statement"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _previous_token(text: str, pos: int) -> Token | None:
    previous = None
    try:
        for token in _parser().lex(text[:pos]):
            if token.type != "_NL":
                previous = token
    except UnexpectedInput:
        pass
    return previous


def _syntax_error(err: UnexpectedInput, text: str) -> SpecError:
    line, column = max(err.line, 1), max(err.column, 1)
    span = Span(line, column, line, column + 1)
    match err:
        case UnexpectedCharacters():
            char = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
            what = repr(char) if char.isprintable() else f"character U+{ord(char):04X}"
            return SpecError(f"unexpected {what}; it is not part of the spec language here", span)
        case UnexpectedToken() | UnexpectedEOF():
            token = err.token
            if token.type != "$END":
                span = Span(token.line, token.column, token.end_line or token.line, token.end_column or column + 1)
            expected = set(err.expected) if err.expected else set()
            if isinstance(err, UnexpectedToken) and err.interactive_parser is not None:
                # LALR merges lookaheads of similar states; ask which tokens really fit here
                expected = set(err.interactive_parser.accepts()) or expected
            previous = _previous_token(text, token.start_pos if token.type != "$END" else len(text))
            after = f" after {_describe_token(previous)}" if previous is not None else ""
            found = _describe_token(token)
            return SpecError(f"expected {_expected_words(expected)}{after}, found {found}", span)
    return SpecError(str(err), span)


def _position(text: str, index: int) -> Span:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return Span(line, column, line, column + 1)


# One scan over the text at C speed: comments (skipped), brackets (nesting), and tokens (counted).
_SCAN = re.compile(r"(#[^\n]*)|([(\[])|([)\]])|(\d*\.?\d+(?:[eE][+-]?\d+)?|\w+|\.T\b|[^\s\w])")


def _check_input(text: str) -> None:
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(
            f"spec is too large ({len(text)} characters; at most {MAX_SPEC_BYTES})", _position(text, MAX_SPEC_BYTES)
        )
    if "\x00" in text:
        raise SpecError("spec contains a NUL byte; is it a binary file?", _position(text, text.index("\x00")))
    depth = 0
    tokens = 0
    for match in _SCAN.finditer(text):
        comment, opening, closing, _ = match.groups()
        if comment is not None:
            continue
        tokens += 1
        if tokens > MAX_TOKENS:
            raise SpecError(
                f"spec has more than {MAX_TOKENS} tokens; split it into several files", _position(text, match.start())
            )
        if opening is not None:
            depth += 1
            if depth > MAX_DEPTH:
                raise SpecError(f"brackets nested more than {MAX_DEPTH} deep", _position(text, match.start()))
        elif closing is not None:
            depth = max(0, depth - 1)


def _check_depth(tree: Tree) -> None:
    """Reject expressions nested deeper than MAX_DEPTH before any recursive pass sees them."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            meta = node.meta
            span = Span(meta.line, meta.column, meta.line, meta.column + 1) if not meta.empty else None
            raise SpecError(
                f"expression nested more than {MAX_DEPTH} levels deep; split it with 'let' or shorter terms", span
            )
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))


def normalise_newlines(text: str) -> str:
    """Accept \\r\\n and lone \\r line endings and a leading byte-order mark."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def parse_text(text: str, filename: str = "<spec>") -> s.SpecFile:
    """Parse a spec's text into its AST, or raise a located SpecError."""
    text = normalise_newlines(text)
    try:
        _check_input(text)
        try:
            tree = _parser().parse(text)
        except UnexpectedInput as err:
            raise _syntax_error(err, text) from None
        _check_depth(tree)
        try:
            return _Builder().transform(tree)
        except VisitError as err:
            if isinstance(err.orig_exc, SpecError):
                raise err.orig_exc from None
            raise
    except SpecError as err:
        raise err.located(text, filename) from None


def decode_spec(data: bytes, filename: str) -> str:
    """Spec files are UTF-8 text; anything else is a located SpecError."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        prefix = data[: err.start]
        line = prefix.count(b"\n") + 1
        column = err.start - (prefix.rfind(b"\n") + 1) + 1
        span = Span(line, column, line, column + 1)
        raise SpecError("spec is not valid UTF-8 text", span, "", filename) from None
