"""The table of proximal operators and projections: one entry each.

Each entry names the helper that implements it (``unfoldgen.ops_torch``; copied verbatim into
generated modules) and how it reads in math. Adding an operator is one entry here, one
function in ops_torch.py, and its test against a numerical argmin.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProxOp:
    """prox of ``scale * func`` (+ the indicator of ``set``)."""

    func: str
    set: str | None
    helper: str
    math: str


@dataclass(frozen=True)
class SetOp:
    """Projection onto a set with named scalar parameters (defaults where one is natural)."""

    name: str
    params: tuple[str, ...]
    defaults: tuple[float | None, ...]
    helper: str
    math: str


PROX_TABLE: dict[str, ProxOp] = {
    op.func + (f"+{op.set}" if op.set else ""): op
    for op in [
        ProxOp("norm1", None, "soft_threshold", "soft threshold"),
        ProxOp("norm1", "nonneg", "soft_threshold_nonneg", "one-sided soft threshold"),
        ProxOp("norm2", None, "block_soft_threshold", "block soft threshold"),
        ProxOp("norminf", None, "prox_norminf", "v − proj onto the ℓ1 ball (Moreau)"),
        ProxOp("nuclear", None, "svt", "singular value threshold"),
        ProxOp("norm0", None, "hard_threshold", "hard threshold at √(2t)"),
    ]
}

SET_TABLE: dict[str, SetOp] = {
    op.name: op
    for op in [
        SetOp("box", ("lo", "hi"), (None, None), "proj_box", "clip to [lo, hi]"),
        SetOp("nonneg", (), (), "proj_nonneg", "max(v, 0)"),
        SetOp("ball2", ("r",), (None,), "proj_ball2", "onto {‖u‖₂ ≤ r}"),
        SetOp("ball1", ("r",), (None,), "proj_ball1", "onto {‖u‖₁ ≤ r}"),
        SetOp("simplex", ("s",), (1.0,), "proj_simplex", "onto {u ≥ 0, Σu = s}"),
    ]
}

PROX_FUNCTIONS = frozenset(op.func for op in PROX_TABLE.values())


def prox_key(func: str, set_name: str | None) -> str:
    return func + (f"+{set_name}" if set_name else "")
