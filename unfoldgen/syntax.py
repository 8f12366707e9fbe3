"""The spec's abstract syntax tree: frozen dataclasses, every node with its source span."""

from __future__ import annotations

from dataclasses import dataclass

from unfoldgen.errors import Span

# ---------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Number:
    value: float | complex  # complex: an imaginary literal (``2j``)
    text: str
    span: Span


@dataclass(frozen=True)
class Name:
    id: str
    span: Span


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / @ ^
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True)
class Neg:
    operand: Expr
    span: Span


@dataclass(frozen=True)
class Transpose:
    operand: Expr
    span: Span
    conjugate: bool = False  # ``.H``: the conjugate transpose


@dataclass(frozen=True)
class Call:
    """`f(args)`, or `f[bracket](args)` for prox, proj and grad."""

    func: Name
    args: tuple[Expr, ...]
    bracket: Expr | None
    span: Span
    options: tuple[BracketOption, ...] = ()  # `, NAME value` after the bracket's function


@dataclass(frozen=True)
class BracketOption:
    """`keep p` in `prox[theta * norm1, keep p](v)`."""

    name: Name
    value: Expr
    span: Span


Expr = Number | Name | BinOp | Neg | Transpose | Call

# ---------------------------------------------------------------- declarations


@dataclass(frozen=True)
class TypeSpec:
    dims: tuple[Name | Number, ...]  # () for a scalar
    span: Span
    complex: bool = False


@dataclass(frozen=True)
class Decl:
    """`dim`, `data`, `input`, `var`, `param`, `hyper`, `weight` or `state`."""

    kind: str
    name: Name
    type: TypeSpec | None
    init: Expr | None
    span: Span


@dataclass(frozen=True)
class Comparison:
    operands: tuple[Expr, ...]
    ops: tuple[str, ...]
    span: Span


@dataclass(frozen=True)
class Constraint:
    parts: tuple[Comparison, ...]
    span: Span


@dataclass(frozen=True)
class Problem:
    name: Name
    decls: tuple[Decl, ...]
    objective: Expr | None
    constraints: tuple[Constraint, ...]
    span: Span


@dataclass(frozen=True)
class NetDecl:
    name: Name
    kind: Name
    options: tuple[tuple[Name, int | str], ...]  # a whole number or a word
    span: Span


@dataclass(frozen=True)
class Assign:
    target: Name
    value: Expr
    is_let: bool
    span: Span


@dataclass(frozen=True)
class Bounds:
    """`in (LO, HI)` (each side open or closed), or one side: `>= LO`, `> LO`, `<= HI`, `< HI`."""

    low: Expr | None
    high: Expr | None
    low_closed: bool
    high_closed: bool
    span: Span


@dataclass(frozen=True)
class Learn:
    names: tuple[Name, ...]
    per_layer: bool
    span: Span
    bounds: Bounds | None = None


@dataclass(frozen=True)
class FixedPoint:
    """`fixed point (tolerance T, iterations N)`: the options as written, checked later."""

    options: tuple[tuple[Name, Number], ...]
    span: Span


@dataclass(frozen=True)
class Unfold:
    name: Name
    problem: Name
    layers: tuple[int, Span] | None
    decls: tuple[Decl, ...]
    nets: tuple[NetDecl, ...]
    iterate: tuple[Assign, ...] | None
    iterate_span: Span | None
    learns: tuple[Learn, ...]
    outputs: tuple[Name, ...]
    span: Span
    fixed_point: FixedPoint | None = None


@dataclass(frozen=True)
class SpecFile:
    problems: tuple[Problem, ...]
    unfolds: tuple[Unfold, ...]
