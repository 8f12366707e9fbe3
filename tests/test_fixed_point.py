"""Fixed-point networks (`fixed point` in an unfold): one layer iterated to convergence, trained by
implicit differentiation.

- gradients (learned values and the input) equal backpropagation through the unrolled twin run
  past convergence, float64, to 1e-6 relative: ISTA on a strongly convex lasso (learned shared step
  and threshold) and projected gradient on box-constrained least squares (a learned factor on the
  per-sample step);
- untrained, forward is the classical solver run to convergence (tests/reference.py);
- each sample converges on its own (its result does not depend on the rest of the batch);
  last_iterations, last_residual, last_converged, the backward's count, the warning at the cap;
- return_iterates gives the final outputs only; `layers` is the iteration cap, `tolerance` checked;
- the numba kernels equal the torch forward to 1e-10 (float64);
- the trainer trains one and refuses the layer-wise and deep-supervision schemes.
The spec errors are in tests/specs/bad/fixed_point_*.unf (tests/test_bad_specs.py).
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import torch
from helpers import LASSO_PROBLEM, load_class
from reference import ista, pgd_box

from unfoldgen.compiler import compile_text
from unfoldgen.data import sparse_source
from unfoldgen.training import Config, ConfigError, fit, prepare

LASSO = (
    LASSO_PROBLEM
    + """

unfold ista_fixed from lasso {
    fixed point (tolerance 1e-13, iterations 20000)
    hyper mu : real = 1 / lipschitz(x)
    iterate { x = prox[mu * lam * norm1](x - mu * grad(x)) }
    learn mu, lam shared
}

unfold ista_unrolled from lasso {
    layers 10
    hyper mu : real = 1 / lipschitz(x)
    iterate { x = prox[mu * lam * norm1](x - mu * grad(x)) }
    learn mu, lam shared
}
"""
)

BOX = """
problem box_ls {
    dim m, n
    input H : real[m, n]
    input y : real[m]
    var x : real[n] = 0
    minimize sumsq(H @ x - y)
    subject to -1 <= x <= 1
}

unfold pgd_fixed from box_ls {
    fixed point (tolerance 1e-13, iterations 20000)
    hyper mu : real = 1 / lipschitz(x)
    iterate { x = proj(x - mu * grad(x)) }
    learn mu shared
}

unfold pgd_unrolled from box_ls {
    layers 10
    hyper mu : real = 1 / lipschitz(x)
    iterate { x = proj(x - mu * grad(x)) }
    learn mu shared
}
"""


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small problems: intra-op threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def lasso_case(batch: int = 4):
    """A strongly convex lasso (m > n: ISTA converges linearly) with a sparse truth and noise."""
    generator = torch.Generator().manual_seed(0)
    m, n = 48, 16
    A = torch.randn(m, n, dtype=torch.float64, generator=generator) / m**0.5
    truth = torch.randn(batch, n, dtype=torch.float64, generator=generator)
    truth *= torch.rand(batch, n, dtype=torch.float64, generator=generator) < 0.4
    y = truth @ A.T + 0.05 * torch.randn(batch, m, dtype=torch.float64, generator=generator)
    return A, y


def box_case(batch: int = 4):
    """Box-constrained least squares with a per-sample channel and a truth partly outside the box."""
    generator = torch.Generator().manual_seed(1)
    m, n = 30, 10
    H = torch.randn(batch, m, n, dtype=torch.float64, generator=generator) / m**0.5
    truth = 1.6 * torch.rand(batch, n, dtype=torch.float64, generator=generator) * 2 - 1.6
    y = (H @ truth.unsqueeze(-1)).squeeze(-1) + 0.05 * torch.randn(batch, m, dtype=torch.float64, generator=generator)
    return H, y


def loss_of(x: torch.Tensor) -> torch.Tensor:
    """A loss that weighs every entry differently, so no gradient is accidentally symmetric."""
    weights = torch.linspace(-1.0, 2.0, x.shape[-1], dtype=x.dtype)
    return (x.pow(2) * weights).sum() + (x * weights.flip(0)).sum()


def gradients(model: torch.nn.Module, inputs: dict[str, torch.Tensor], wrt_input: str) -> torch.Tensor:
    """The gradient of loss_of(model(inputs)) in every learned value and in one input, as one vector."""
    model.zero_grad(set_to_none=True)
    inputs = {name: value.clone().requires_grad_(name == wrt_input) for name, value in inputs.items()}
    loss_of(model(**inputs)).backward()
    parts = [parameter.grad.flatten() for parameter in model.parameters()]
    return torch.cat([*parts, inputs[wrt_input].grad.flatten()])


CASES = {
    # name: (spec text, fixed-point unfold, unrolled twin, problem, the learned values' change from classical)
    "ista on a lasso": (LASSO, "ista_fixed", "ista_unrolled", lasso_case, {"mu": 1.3, "lam": 0.7}),
    "projected gradient on box least squares": (BOX, "pgd_fixed", "pgd_unrolled", box_case, {"mu": 1.4}),
}


def build_pair(case: str):
    text, fixed_name, unrolled_name, problem, scale = CASES[case]
    data = problem()
    data_args = {"A": data[0]} if fixed_name.startswith("ista") else {}
    inputs = {"y": data[1]} if data_args else {"H": data[0], "y": data[1]}
    fixed_class = load_class(text, fixed_name)
    fixed = fixed_class(**data_args, lam=0.05) if data_args else fixed_class(dtype=torch.float64)
    with torch.no_grad():
        for name, factor in scale.items():
            getattr(fixed, name).mul_(factor)
    return text, unrolled_name, fixed, data_args, inputs


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_equal_unrolled_backpropagation_at_convergence(case: str):
    text, unrolled_name, fixed, data_args, inputs = build_pair(case)
    wrt = "y"
    got = gradients(fixed, inputs, wrt)
    assert fixed.last_converged and fixed.last_iterations > 20
    assert 0 < fixed.last_backward_iterations < fixed.layers
    assert fixed.last_backward_residual <= fixed.tolerance
    # the unrolled twin with the same learned values, run well past the forward's convergence
    layers = 3 * fixed.last_iterations
    unrolled_class = load_class(text, unrolled_name)
    if data_args:
        unrolled = unrolled_class(**data_args, lam=0.05, layers=layers)
    else:
        unrolled = unrolled_class(layers=layers, dtype=torch.float64)
    unrolled.load_state_dict(fixed.state_dict())
    want = gradients(unrolled, inputs, wrt)
    assert want.abs().min() > 0 or want.norm() > 0
    relative = float((got - want).norm() / want.norm())
    assert relative <= 1e-6, f"{case}: implicit and unrolled gradients differ by {relative:.2e} (relative)"
    # every learned value gets its gradient (not just the input)
    for (name, parameter), other in zip(fixed.named_parameters(), unrolled.parameters(), strict=True):
        scale = float(want.norm())
        assert float((parameter.grad - other.grad).abs().max()) <= 1e-6 * scale, name


def test_untrained_forward_is_the_classical_solver_run_to_convergence():
    A, y = lasso_case(batch=5)
    model = load_class(LASSO, "ista_fixed")(A, lam=0.05)
    with torch.no_grad():
        x = model(y)
    expected = ista(A.numpy(), y.numpy(), 0.05, 4000)
    np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=1e-10)

    H, y = box_case(batch=5)
    model = load_class(BOX, "pgd_fixed")(dtype=torch.float64)
    with torch.no_grad():
        x = model(H=H, y=y)
    expected = pgd_box(H.numpy(), y.numpy(), 4000)
    np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=1e-10)


def test_each_sample_converges_on_its_own():
    """A sample's result does not depend on the others (to rounding: a batch is one matrix product):
    converged samples are held while the others go on."""
    A, y = lasso_case(batch=6)
    model = load_class(LASSO, "ista_fixed")(A, lam=0.05, tolerance=1e-6)
    alone, counts = [], []
    with torch.no_grad():
        for b in range(6):
            alone.append(model(y[b : b + 1]))
            counts.append(model.last_iterations)
        together = model(y)
    assert model.last_iterations == max(counts) and len(set(counts)) > 1
    torch.testing.assert_close(together, torch.cat(alone), rtol=0, atol=1e-14)


def test_what_the_iteration_did_is_exposed_and_the_cap_warns():
    A, y = lasso_case()
    model = load_class(LASSO, "ista_fixed")(A, lam=0.05, tolerance=1e-6)
    with torch.no_grad():
        model(y)
    assert model.last_converged and model.last_residual <= 1e-6 and 1 < model.last_iterations < model.layers
    model.layers = 3  # far too few
    with pytest.warns(RuntimeWarning, match="cap of 3 iterations"):
        x = model(y)
    assert model.last_iterations == 3 and not model.last_converged and model.last_residual > 1e-6
    with pytest.warns(RuntimeWarning, match="implicit backward reached its cap of 3"):
        loss_of(x).backward()
    assert model.last_backward_iterations == 3 and model.last_backward_residual > 1e-6


def test_return_iterates_gives_the_final_outputs_only():
    A, y = lasso_case()
    model = load_class(LASSO, "ista_fixed")(A, lam=0.05, tolerance=1e-8)
    with torch.no_grad():
        iterates = model(y, return_iterates=True)
        final = model(y)
    assert isinstance(iterates, list) and len(iterates) == 1
    torch.testing.assert_close(iterates[0], final, rtol=0, atol=0)


def test_layers_is_the_iteration_cap_and_tolerance_is_checked():
    A, _ = lasso_case()
    model_class = load_class(LASSO, "ista_fixed")
    assert model_class.FIXED_POINT
    model = model_class(A, layers=50000, tolerance=0)  # no per-layer parameters: any cap
    assert (model.layers, model.tolerance) == (50000, 0.0)
    default = model_class(A)
    assert (default.layers, default.tolerance) == (20000, 1e-13)  # the spec's options
    for bad in (-1e-3, 1.0, float("nan"), "1e-6", True):
        with pytest.raises(ValueError, match="tolerance must be a relative change in"):
            model_class(A, tolerance=bad)
    with pytest.raises(TypeError):
        model_class(A, checkpoint_layers=True)  # one layer's graph: nothing to checkpoint


def test_defaults_and_the_plan():
    text = LASSO.replace("fixed point (tolerance 1e-13, iterations 20000)", "fixed point")
    lowered = {low.name: low for low in compile_text(text, "spec.unf").lowered}
    plan = lowered["ista_fixed"].plan.fixed_point
    assert (plan.tolerance, plan.iterations) == (1e-6, 1000)
    assert lowered["ista_fixed"].unfold.layers == 1000
    assert lowered["ista_unrolled"].plan.fixed_point is None


def test_a_spec_that_declares_k_uses_it_in_a_fixed_point_unfold():
    """The layer index is refused (tests/specs/bad/fixed_point_layer_index.unf), the spec's own k is not."""
    text = LASSO.replace(
        "hyper mu : real = 1 / lipschitz(x)\n    iterate",
        "hyper k : real = 2\n    hyper mu : real = 1 / (k * lipschitz(x))\n    iterate",
        1,
    )
    assert "hyper k" in text
    A, _ = lasso_case()
    model = load_class(text, "ista_fixed")(A, lam=0.05)
    torch.testing.assert_close(model.mu, 1 / (2 * torch.linalg.matrix_norm(A, 2) ** 2))


@pytest.mark.parametrize("package", ["ista_fixed_point", "pgd_fixed_point"])
def test_numba_kernels_equal_torch(package: str, tmp_path):
    """The committed examples of specs/fixed_point.unf (their kernels are in the numba cache)."""
    model_module = importlib.import_module(f"generated.{package}.model")
    kernels = importlib.import_module(f"generated.{package}.kernels")
    if package == "ista_fixed_point":
        A, y = lasso_case(batch=5)
        model, inputs, scale = model_module.IstaFixedPoint(A, lam=0.05), {"y": y}, {"mu": 1.3, "lam": 0.7}
    else:
        H, y = box_case(batch=5)
        model, inputs, scale = model_module.PgdFixedPoint(dtype=torch.float64), {"H": H, "y": y}, {"mu": 1.4}
    with torch.no_grad():
        for name, factor in scale.items():
            getattr(model, name).mul_(factor)
        expected = model(**inputs)  # the spec's tolerance 1e-6: samples stop at different iterations
        assert model.last_converged
    arrays = {name: value.numpy() for name, value in inputs.items()}
    # without the exported counts: the spec's own tolerance and cap
    params = kernels.params_from_state_dict({name: value.numpy() for name, value in model.state_dict().items()})
    assert (params["layers"], params["tolerance"]) == (1000, 1e-6)
    np.testing.assert_allclose(kernels.run(params, **arrays), expected.numpy(), rtol=0, atol=1e-10)
    # the cap and tolerance export_npz writes
    model.tolerance = 1e-9
    with torch.no_grad():
        expected = model(**inputs)
    path = tmp_path / "params.npz"
    model.export_npz(str(path))
    params = kernels.load_params(str(path))
    assert float(params["tolerance"]) == 1e-9 and int(params["layers"]) == model.layers
    np.testing.assert_allclose(kernels.run(params, **arrays), expected.numpy(), rtol=0, atol=1e-10)


def test_the_trainer_trains_a_fixed_point_network_and_refuses_layer_schemes():
    source = sparse_source(m=40, n=20, p=0.2, snr_db=30.0, seed=0)
    text = LASSO.replace("tolerance 1e-13, iterations 20000", "tolerance 1e-5, iterations 500")
    prepared = prepare("spec.unf", "ista_fixed", source, text=text, dtype=torch.float64)
    model = prepared.model
    for scheme in ("layerwise", "deep-supervision"):
        with pytest.raises(ConfigError, match=f"scheme={scheme}: IstaFixed is a fixed-point network"):
            fit(model, prepared.binding, Config(scheme=scheme, steps=40), progress=False)
    start = {name: value.detach().clone() for name, value in model.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every forward and backward converges
        config = Config(steps=30, lr=1e-2, batch=16, val_every=10, val_size=64)
        result = fit(model, prepared.binding, config, progress=False)
    trained = result.metrics["validation"]["trained"]["nmse_db"]
    initial = result.metrics["validation"]["classical"]["nmse_db"]
    assert len(trained) == 1 and trained[-1] < initial[-1]
    assert result.metrics["fixed_point"]["iterations"] >= 1
    assert any(not torch.equal(start[name], value) for name, value in model.named_parameters())
