"""``lipschitz`` beyond quadratic smooth parts, and joint constants ``lipschitz(x, z)``.

- specs/logistic.unf: the step is the textbook 1 / (‖X‖²/4 + μ) (float64, against numpy's largest
  singular value) and gradient descent with it decreases the objective at every layer;
- each curvature bound of the function table is sup |φ''| (sampled on a fine grid: above it, and
  within 1 % of it), and the bounds add and scale as documented;
- a joint constant equals the dense joint Hessian's largest eigenvalue for quadratics (1e-10),
  lies within the power iteration's margin above it with operators, and is ‖[A B]‖² · sup|φ''|
  for a curvature term;
- the numba kernels compute the same per-sample constants as torch.

The refusals (a function without a curvature bound, a variable named twice, …) are in
tests/specs/bad/lipschitz_*.unf.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import load_class
from test_emitted_kernels import assert_backends_agree

from unfoldgen.compiler import compile_text
from unfoldgen.explain import explain
from unfoldgen.functions import FUNCTIONS, curvature_bound
from unfoldgen.linops_torch import conv_circular

ROOT = Path(__file__).resolve().parents[1]
LOGISTIC = (ROOT / "specs" / "logistic.unf").read_text(encoding="utf-8")


def logistic_problem(seed: int, m: int = 40, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Features X (m × n) and a batch of three ±1 label vectors from a noisy linear model."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, n))
    truth = rng.normal(size=(3, n))
    labels = np.sign(truth @ X.T + 0.5 * rng.normal(size=(3, m)))
    return torch.as_tensor(X), torch.as_tensor(labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logistic_step_is_the_textbook_bound(seed: int):
    X, b = logistic_problem(seed)
    mu = 0.05
    model = load_class(LOGISTIC)(X=X, mu=mu, dtype=torch.float64)
    textbook = np.linalg.norm(X.numpy(), 2) ** 2 / 4 + mu
    step = model.prepare_inputs(b)["s"].reshape(-1).numpy()
    np.testing.assert_allclose(step, np.full(3, 1 / textbook), rtol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_gradient_descent_with_the_bound_decreases_the_objective_at_every_layer(seed: int):
    X, b = logistic_problem(seed, m=60, n=10)
    model = load_class(LOGISTIC)(X=X, mu=0.01, layers=20, dtype=torch.float64)
    with torch.no_grad():
        iterates = [torch.zeros(3, 10, dtype=torch.float64), *model(b, return_iterates=True)]
        values = torch.stack([model.objective(b, w) for w in iterates]).numpy()
    assert len(values) == 21
    steps = np.diff(values, axis=0)
    assert (steps < 0).all(), f"the objective rose at layers {np.argwhere(steps >= 0)[:, 0]}"
    assert (values[-1] < 0.8 * values[0]).all()  # and it went somewhere


def test_explain_shows_the_curvature_bound():
    text = explain(LOGISTIC, "logistic.unf")
    assert "lipschitz(w)  the sum of 2 terms' bounds:" in text
    assert "curvature bound 1/4 · ‖A‖² (softplus: sup|φ''| = 1/4)" in text
    assert "dense: AᵀA's largest eigenvalue (dense)" in text
    assert "the quadratic part: λ_max of its Hessian; exact" in text


# ------------------------------------------------------------- the curvature table

# numpy definitions of the entries with a curvature bound (the test below checks they are the entries)
ELEMENTWISE = {
    "softplus": lambda t: np.logaddexp(0.0, t),
    "sigmoid": lambda t: 0.5 * (1 + np.tanh(t / 2)),
    "tanh": np.tanh,
    "huber_elem": lambda t, delta: np.where(np.abs(t) <= delta, 0.5 * t**2, delta * (np.abs(t) - delta / 2)),
}
HUBER_DELTAS = (0.3, 1.0, 2.5)


def test_every_bounded_entry_is_sampled_here():
    bounded = {name for name, entry in FUNCTIONS.items() if entry.curvature is not None}
    assert bounded == set(ELEMENTWISE) | {"logsumexp"}
    for name in ("exp", "log", "sqrt"):  # unbounded second derivatives
        assert FUNCTIONS[name].curvature is None


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_curvature_bound_is_the_sampled_supremum(name: str):
    grid = np.arange(-12.0, 12.0, 1e-3)
    step = 1e-3
    for params in [(delta,) for delta in HUBER_DELTAS] if name == "huber_elem" else [()]:
        phi = ELEMENTWISE[name]
        for t in (-1.7, 0.2, 3.0):  # the reference is the entry
            assert phi(t, *params) == pytest.approx(FUNCTIONS[name].evaluate(t, *params), rel=1e-12)
        second = (phi(grid + step, *params) - 2 * phi(grid, *params) + phi(grid - step, *params)) / step**2
        sampled = np.abs(second).max()
        bound = curvature_bound(name)
        assert sampled <= bound * (1 + 1e-5), (name, params, sampled, bound)
        assert sampled >= bound * 0.99, (name, params, sampled, bound)


def test_logsumexp_bound_is_the_largest_hessian_norm():
    """∇² logsumexp = diag(p) − ppᵀ (autograd), whose norm never exceeds 1/2 and reaches it at p = (½, ½)."""
    rng = np.random.default_rng(0)
    norms = []
    for size in (2, 3, 5, 8):
        for scale in (0.0, 0.5, 2.0, 6.0):
            logits = torch.as_tensor(scale * rng.normal(size=size))
            hessian = torch.autograd.functional.hessian(lambda v: torch.logsumexp(v, 0), logits)
            norms.append(torch.linalg.eigvalsh(hessian).abs().max().item())
    bound = curvature_bound("logsumexp")
    assert max(norms) <= bound * (1 + 1e-12)
    assert max(norms) >= bound * (1 - 1e-12)  # two equal logits: p = (½, ½)


BOUND_SPEC = """
problem bounded {{
    dim m, n
    data  A : real[m, n]
    input y : real[m]
    var   x : real[n] = 0
    minimize {objective}
}}
unfold gd from bounded {{
    layers 2
    hyper s : real = 1 / lipschitz(x)
    iterate {{ x = x - s * grad(x) }}
}}
"""
ROOT3 = math.sqrt(3)
BOUNDS = [  # objective, L / ‖A‖², what is added
    ("sum(softplus(A @ x - y))", 1 / 4, 0.0),
    ("2 * sum(sigmoid(A @ x)) + dot(y, A @ x)", 2 / (6 * ROOT3), 0.0),
    ("sum(tanh(A @ x - y)) / 4", 4 / (3 * ROOT3) / 4, 0.0),
    ("huber(A @ x - y, 0.5) + 0.5 * sumsq(x)", 1.0, 1.0),
    ("logsumexp(A @ x) - dot(y, A @ x)", 1 / 2, 0.0),
    ("0.5 * sumsq(A @ x - y) - sum(softplus(3 * (A @ x)))", 1 + 9 / 4, 0.0),
]


@pytest.mark.parametrize(("objective", "per_norm", "added"), BOUNDS, ids=[b[0] for b in BOUNDS])
def test_bounds_scale_and_add(objective: str, per_norm: float, added: float):
    A = torch.as_tensor(np.random.default_rng(1).normal(size=(7, 4)))
    model = load_class(BOUND_SPEC.format(objective=objective))(A=A, dtype=torch.float64)
    expected = per_norm * np.linalg.norm(A.numpy(), 2) ** 2 + added
    got = model.lipschitz_x({}).reshape(()).item()
    assert got == pytest.approx(expected, rel=1e-10)


# ------------------------------------------------------------------ joint constants

JOINT = """
problem pair {
    dim m, n, p
    data  A : real[m, n]
    data  B : real[m, p]
    input y : real[m]
    var   x : real[n] = 0
    var   z : real[p] = 0
    param lam : real = 0.3
    minimize OBJECTIVE
}
unfold joint_gd from pair {
    layers 3
    hyper s : real = 1 / lipschitz(x, z)
    iterate {
        let gx = grad(x)
        z = z - s * grad(z)
        x = x - s * gx
    }
}
"""


def joint_data(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.normal(size=(6, 4))), torch.as_tensor(rng.normal(size=(6, 3)))


def test_joint_constant_of_a_quadratic_is_the_joint_hessians_eigenvalue():
    text = JOINT.replace("OBJECTIVE", "0.5 * sumsq(A @ x + B @ z - y) + 0.5 * lam * sumsq(z)")
    A, B = joint_data()
    model = load_class(text)(A=A, B=B, dtype=torch.float64)
    stacked = torch.cat([A, B], dim=1).numpy()
    hessian = stacked.T @ stacked + np.diag([0.0] * 4 + [0.3] * 3)
    got = model.lipschitz_x_z({}).reshape(()).item()
    assert got == pytest.approx(np.linalg.eigvalsh(hessian).max(), rel=1e-10)
    assert "lipschitz(x, z)  dense: the joint Hessian's largest eigenvalue" in explain(text, "pair.unf")


def test_joint_curvature_bound_is_the_stacked_norm():
    text = JOINT.replace("OBJECTIVE", "sum(softplus(A @ x - B @ z)) + dot(y, B @ z) + lam * norm1(x)")
    A, B = joint_data()
    model = load_class(text)(A=A, B=B, dtype=torch.float64)
    expected = np.linalg.norm(torch.cat([A, -B], dim=1).numpy(), 2) ** 2 / 4
    assert model.lipschitz_x_z({}).reshape(()).item() == pytest.approx(expected, rel=1e-10)


def test_joint_constant_with_operators_is_a_power_iteration_above_the_eigenvalue():
    text = """
problem split {
    dim h, w
    data  k : real[3, 3]
    input y : real[h, w]
    var   x : real[h, w] = 0
    var   z : real[h, w] = 0
    minimize 0.5 * sumsq(conv(k, x) + z - y) + 0.5 * sumsq(z)
}
unfold joint_gd from split {
    layers 2
    hyper s : real = 1 / lipschitz(x, z)
    iterate {
        let gx = grad(x)
        z = z - s * grad(z)
        x = x - s * gx
    }
}
"""
    k = torch.as_tensor(np.random.default_rng(3).uniform(0, 1, size=(3, 3)))
    model = load_class(text)(k=k, h=6, w=5, dtype=torch.float64)
    basis = torch.eye(30, dtype=torch.float64).reshape(30, 6, 5)
    K = conv_circular(k, basis).reshape(30, 30).T.numpy()  # column j: the blur of basis image j
    hessian = np.block([[K.T @ K, K.T], [K, 2 * np.eye(30)]])
    true = np.linalg.eigvalsh(hessian).max()
    got = model.lipschitz_x_z({}).reshape(()).item()
    assert true <= got <= 1.10 * true
    assert "lipschitz(x, z)  power" in explain(text, "split.unf")


def test_joint_and_single_constants_get_their_own_methods():
    text = JOINT.replace("OBJECTIVE", "0.5 * sumsq(A @ x + B @ z - y)").replace(
        "hyper s : real = 1 / lipschitz(x, z)", "hyper s : real = 1 / lipschitz(x, z) + 1 / lipschitz(x)"
    )
    source = compile_text(text, "pair.unf").files["joint_gd/model.py"]
    assert "def lipschitz_x(" in source and "def lipschitz_x_z(" in source


# ----------------------------------------------------------------------- kernels

PER_SAMPLE_JOINT = """
problem channel {
    dim m, n
    input H : real[m, n]
    input y : real[m]
    var   x : real[n] = 0
    var   z : real[m] = 0
    param mu : real = 0.2
    minimize sum(softplus(H @ x - z)) + 0.5 * mu * sumsq(z - y)
}
unfold joint_gd from channel {
    layers 3
    hyper s : real = 1 / lipschitz(x, z)
    iterate {
        let gx = grad(x)
        z = z - s * grad(z)
        x = x - s * gx
    }
    learn s per layer
}
"""


def test_kernels_compute_the_per_sample_joint_bound_as_torch():
    assert_backends_agree(PER_SAMPLE_JOINT, "joint_gd")


def test_per_sample_joint_bound_is_the_stacked_norm():
    rng = np.random.default_rng(4)
    H = torch.as_tensor(rng.normal(size=(2, 5, 3)))
    model = load_class(PER_SAMPLE_JOINT)(m=5, n=3, dtype=torch.float64)
    got = model.lipschitz_x_z({"H": H}).reshape(-1).numpy()
    expected = [np.linalg.norm(np.hstack([h, -np.eye(5)]), 2) ** 2 / 4 + 0.2 for h in H.numpy()]
    np.testing.assert_allclose(got, expected, rtol=1e-10)


SCALAR_VARIABLE = """\
problem p {
    input y : real
    var t : real = 0
    param c : real = 3
    minimize 0.5 * c * (t - y) ^ 2
}
unfold gd from p {
    layers 2
    hyper mu : real = 1 / lipschitz(t)
    iterate { t = t - 0.5 * mu * grad(t) }
}
"""


def test_the_constant_of_a_scalar_variable():
    """A scalar variable's Hessian is the number c: lipschitz(t) = c (its ones are (1, 1), not ())."""
    model = load_class(SCALAR_VARIABLE)(dtype=torch.float64)
    assert float(model.mu) == pytest.approx(1 / 3, rel=1e-14)
    y = torch.tensor([1.0, -2.0], dtype=torch.float64)
    torch.testing.assert_close(model(y=y), 0.75 * y, rtol=1e-14, atol=0)  # half the way, twice
