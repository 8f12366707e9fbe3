"""The table of proximal operators and projections: one entry each.

An entry names, explicitly, the function of ``unfoldgen.ops_torch`` that implements it (copied
verbatim into generated modules), the function of ``unfoldgen.ops_numba`` that implements it in
kernels or None (then a spec using it compiles without kernels and ``compile`` prints a note),
and whether that numba function treats each column as its own block. Its definition is the
math it computes; tests/test_library.py checks every entry, in every backend it names, against
a numerical argmin of that definition. docs/contributing.md walks through adding one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProxOp:
    """prox of ``t * func`` (+ the indicator of ``set``): argmin_u t·func(u) + ι_set(u) + ½‖u − v‖².

    per_column: the numba function treats each column of its argument as one block, which is
    right for a batch of vectors (one sample per column) but wrong for one sample's matrix.
    options: names of the bracket options it takes (``keep`` in ``prox[t * norm1, keep p]``), each a
    scalar passed to both implementations after ``t``, in this order.
    complex_args: both implementations accept a complex argument, with the same definition
    (|·| the modulus: the soft threshold shrinks moduli and keeps phases); otherwise the checker
    refuses the entry on complex values.
    """

    func: str
    set: str | None
    torch: str
    numba: str | None
    per_column: bool
    math: str
    options: tuple[str, ...] = ()
    complex_args: bool = False

    @property
    def key(self) -> str:
        return prox_key(self.func, self.set, self.options)

    @property
    def helper(self) -> str:
        """The torch function (the name generated modules define)."""
        return self.torch


@dataclass(frozen=True)
class SetOp:
    """Projection onto a set with named scalar parameters (defaults where one is natural):
    argmin_{u ∈ set} ‖u − v‖². ``per_column`` and ``complex_args`` as for ProxOp (a set of
    complex values is given by its definition on them: ``box`` bounds real and imaginary parts
    separately).

    validate: None, or a plain function of the parameter values (defaults filled in; None for a
    value not known at build time) returning an error message naming the value, or None when the
    values are valid; the checker calls it and reports the message at the set's bracket.
    """

    name: str
    params: tuple[str, ...]
    defaults: tuple[float | None, ...]
    torch: str
    numba: str | None
    per_column: bool
    math: str
    complex_args: bool = False
    validate: Callable[[tuple[float | None, ...]], str | None] | None = None

    @property
    def key(self) -> str:
        return self.name

    @property
    def helper(self) -> str:
        """The torch function (the name generated modules define)."""
        return self.torch


def prox_key(func: str, set_name: str | None, options: tuple[str, ...] = ()) -> str:
    """``norm1``, ``norm1+nonneg``, ``norm1 keep``: the function, its set, its options."""
    return func + (f"+{set_name}" if set_name else "") + "".join(f" {option}" for option in options)


def qam_order_error(values: tuple[float | None, ...]) -> str | None:
    """qam(M): M must be a number known at build time, a whole perfect square ≥ 4 (4, 16, 64, ...)."""
    (order,) = values
    if order is None:
        return "qam(M) needs M as a number known at build time (4, 16, 64, ...)"
    if not (math.isfinite(order) and order == int(order) and order >= 4 and math.isqrt(int(order)) ** 2 == order):
        return f"qam(M) needs M a whole perfect square ≥ 4 (4, 16, 64, ...), got {order:g}"
    return None


PROX_TABLE: dict[str, ProxOp] = {
    op.key: op
    for op in [
        ProxOp("norm1", None, "soft_threshold", "soft_threshold", False, "soft threshold", complex_args=True),
        ProxOp(
            "norm1",
            None,
            "soft_threshold_keep",
            "soft_threshold_keep",
            True,
            "soft threshold, except the largest p fraction of entries per sample (support selection)",
            ("keep",),
            complex_args=True,
        ),
        ProxOp("norm1", "nonneg", "soft_threshold_nonneg", "soft_threshold_nonneg", False, "one-sided soft threshold"),
        ProxOp(
            "norm2",
            None,
            "block_soft_threshold",
            "block_soft_threshold",
            True,
            "block soft threshold",
            complex_args=True,
        ),
        ProxOp(
            "norm2",
            "nonneg",
            "block_soft_threshold_nonneg",
            "block_soft_threshold_nonneg",
            True,
            "block soft threshold of max(v, 0)",
        ),
        ProxOp("norminf", None, "prox_norminf", "prox_norminf", True, "v − proj onto the ℓ1 ball (Moreau)"),
        ProxOp("nuclear", None, "svt", "svt", False, "singular value threshold", complex_args=True),
        ProxOp("norm0", None, "hard_threshold", "hard_threshold", False, "hard threshold at √(2t)", complex_args=True),
        ProxOp(
            "norm21",
            None,
            "prox_norm21",
            "prox_norm21",
            False,
            "group soft threshold (groups: the first axis)",
            complex_args=True,
        ),
    ]
}

SET_TABLE: dict[str, SetOp] = {
    op.name: op
    for op in [
        SetOp("box", ("lo", "hi"), (None, None), "proj_box", "proj_box", False, "clip to [lo, hi]", complex_args=True),
        SetOp("nonneg", (), (), "proj_nonneg", "proj_nonneg", False, "max(v, 0)"),
        SetOp("ball2", ("r",), (None,), "proj_ball2", "proj_ball2", True, "onto {‖u‖₂ ≤ r}", complex_args=True),
        SetOp("ball1", ("r",), (None,), "proj_ball1", "proj_ball1", True, "onto {‖u‖₁ ≤ r}"),
        SetOp("simplex", ("s",), (1.0,), "proj_simplex", "proj_simplex", True, "onto {u ≥ 0, Σu = s}"),
        SetOp(
            "ball21",
            ("r",),
            (None,),
            "proj_ball21",
            "proj_ball21",
            False,
            "each group onto {‖u_g‖₂ ≤ r}",
            complex_args=True,
        ),
        SetOp(
            "qam",
            ("M",),
            (None,),
            "proj_qam",
            "proj_qam",
            False,
            "onto the hull of unit-energy square M-QAM: Re and Im clipped to ±(√M − 1)√(3/(2(M − 1)))",
            complex_args=True,
            validate=qam_order_error,
        ),
    ]
}

PROX_FUNCTIONS = frozenset(op.func for op in PROX_TABLE.values())
