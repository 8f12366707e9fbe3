"""Where a net starts (docs/language.md, "Where a net starts"): at zero when every call of it is a
term of a sum — wherever the sum stands, an update, a let, or inside prox, proj, a function or
another net — so the untrained network is the classical solver; random when it replaces a step."""

from __future__ import annotations

import pytest
import torch
from helpers import load_class

from unfoldgen.compiler import compile_text
from unfoldgen.explain import explain

PROBLEM = """\
problem box_ls {
    dim m, n
    data A : real[m, n]
    input y : real[m]
    var x : real[n] = 0
    param lam : real = 0.1
    minimize 0.5 * sumsq(A @ x - y) + lam * norm1(x)
    subject to -1 <= x <= 1
}
"""


def unfold(iterate: str, problem: str = PROBLEM) -> str:
    return (
        problem
        + f"""
unfold step from box_ls {{
    layers 3
    hyper mu : real = 1 / lipschitz(x)
    net c : mlp(hidden 8)
    iterate {{ {iterate} }}
    learn c
}}
"""
    )


CLASSICAL = (
    PROBLEM
    + """
unfold step from box_ls {
    layers 3
    hyper mu : real = 1 / lipschitz(x)
    iterate { x = proj(x - mu * grad(x)) }
}
"""
)
BOX_PROX = PROBLEM.replace("    subject to -1 <= x <= 1\n", "")
CLASSICAL_PROX = (
    BOX_PROX
    + """
unfold step from box_ls {
    layers 3
    hyper mu : real = 1 / lipschitz(x)
    iterate { x = prox[mu * lam * norm1](x - mu * grad(x)) }
}
"""
)

# (iterate block, problem, the classical spec it equals when the net starts at zero, or None)
CASES = {
    "term of an update": ("x = proj(x - mu * grad(x)) + c(x)", PROBLEM, CLASSICAL),
    "term inside proj": ("x = proj(x - mu * grad(x) + c(x))", PROBLEM, CLASSICAL),
    "the same sum through a let": ("let v = x - mu * grad(x) + c(x)\n x = proj(v)", PROBLEM, CLASSICAL),
    "scaled term inside proj": ("x = proj(x - mu * grad(x) - mu * c(x, y))", PROBLEM, CLASSICAL),
    "term inside prox": ("x = prox[mu * lam * norm1](x - mu * grad(x) + c(x) / 2)", BOX_PROX, CLASSICAL_PROX),
    "replaces the step": ("x = c(x - mu * grad(x))", PROBLEM, None),
    "argument of proj": ("x = proj(c(x - mu * grad(x)))", PROBLEM, None),
    "a term and a step": ("let v = c(x) + x\n x = proj(c(v))", PROBLEM, None),
}


def spec_of(case: str) -> str:
    iterate, problem, _ = CASES[case]
    return unfold(iterate.replace("\n", "\n       "), problem)


@pytest.mark.parametrize("case", list(CASES))
def test_the_plan_and_the_trainer_see_one_start(case: str):
    low = compile_text(spec_of(case), "start.unf").lowered[0]
    zero = CASES[case][2] is not None
    assert low.plan["c"].starts_at_zero is zero
    assert low.plan.paradigms["c"] == (3 if zero else 4)
    assert low.unfold.nets[0].correction is zero  # what unfoldgen.train reads


@pytest.mark.parametrize("case", [case for case, (_, _, classical) in CASES.items() if classical is not None])
def test_a_net_that_starts_at_zero_leaves_the_classical_solver(case: str):
    generator = torch.Generator().manual_seed(0)
    A = torch.randn(6, 4, dtype=torch.float64, generator=generator)
    y = torch.randn(5, 6, dtype=torch.float64, generator=generator)
    torch.manual_seed(0)
    with_net = load_class(spec_of(case), filename="start.unf")(A=A)
    classical = load_class(CASES[case][2], filename="classical.unf")(A=A)
    torch.testing.assert_close(with_net(y=y), classical(y=y), rtol=0, atol=1e-12)


def test_explain_and_the_generated_docstring_say_where_nets_start():
    zero = explain(spec_of("term inside proj"), "start.unf")
    assert "net           c starts at zero (a correction term)" in zero
    random_start = compile_text(spec_of("argument of proj"), "start.unf")
    assert "net           c starts random (it replaces a step)" in explain(spec_of("argument of proj"), "start.unf")
    model = random_start.files["step/model.py"]
    assert "Net c starts random (it replaces a step)" in model and "zero_init=False" in model
