"""Bounded learning (``learn mu per layer in (0, 2 / lipschitz(x))``): a learned value is a raw tensor
mapped into its bounds, starting exactly at the classical value.

- every bound form: untrained = the unbounded twin = a hand-written ISTA, to 1e-10 in float64;
- values stay inside their bounds after huge raw perturbations and huge-lr optimiser steps;
- the gradient with respect to a raw tensor is the chain rule through the form's formula;
- a start outside the bounds (or on an open side) is refused, validate=False included;
- running past the built layers reuses the last built layer's values, in torch and numba;
- export_npz writes the constrained values, so the numba kernels equal torch;
- the trainer's readers (describe, learned_values, phases) see the constrained values.
"""

from __future__ import annotations

import importlib
import math
import re

import numpy as np
import pytest
import torch
from helpers import LASSO_PROBLEM, load_class

from unfoldgen import runtime_torch
from unfoldgen.bounds import BOUND_FORMS, bound_form
from unfoldgen.training.loading import describe
from unfoldgen.training.report import learned_values

ista_safe = importlib.import_module("generated.ista_safe.model")
ista_safe_kernels = importlib.import_module("generated.ista_safe.kernels")
ista = importlib.import_module("generated.ista.model")

LASSO = (
    LASSO_PROBLEM
    + """

unfold ista from lasso {
    layers 6
    hyper mu : real = 1 / lipschitz(x)
    hyper t : real = mu * lam
    weight W : real[n, m] = mu * A.T
    iterate { x = prox[t * norm1](x - W @ (A @ x - y)) }
    LEARN
}
"""
)

# every bound form on the step-like weight scale mu (start 1/L) and the threshold t (start mu*lam)
BOUNDED_LEARNS = {
    "open_interval": "learn t per layer in (0, 2 * lam / lipschitz(x))",
    "closed_interval": "learn t per layer in [lam / lipschitz(x), 1]",  # starts on the closed side
    "low_closed_interval": "learn t per layer in [0, 2 * lam / lipschitz(x))",
    "high_closed_interval": "learn t per layer in (0, lam / lipschitz(x)]",  # starts on the closed side
    "above": "learn t per layer > -1",
    "at_least": "learn t per layer >= lam / lipschitz(x)",  # starts on the closed side
    "below": "learn t per layer < 2 * lam / lipschitz(x)",
    "at_most": "learn t per layer <= 1",
}


def lasso_problem(m: int = 12, n: int = 20, batch: int = 5, seed: int = 0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=generator, dtype=dtype) / m**0.5
    x = torch.randn(batch, n, generator=generator, dtype=dtype) * (torch.rand(batch, n, generator=generator) < 0.2)
    y = x @ A.T + 0.01 * torch.randn(batch, m, generator=generator, dtype=dtype)
    return A, y


def soft(v, t):
    return torch.sign(v) * torch.clamp(v.abs() - t, min=0)


def hand_ista(A, y, steps, thresholds, layers):
    """ISTA written out, layer k with step steps[min(k, K-1)] and threshold thresholds[min(k, K-1)]."""
    x = torch.zeros(y.shape[0], A.shape[1], dtype=A.dtype)
    for k in range(layers):
        kept = min(k, len(steps) - 1)
        x = soft(x - steps[kept] * (x @ A.T - y) @ A, thresholds[kept])
    return x


def lipschitz(A):
    return float(torch.linalg.matrix_norm(A, ord=2) ** 2)


def test_the_table_has_one_form_per_combination_of_sides():
    keys = {
        bound_form(low, high, lc, hc).key
        for low in (True, False)
        for high in (True, False)
        if low or high
        for lc in (True, False)
        for hc in (True, False)
    }
    assert keys == set(BOUND_FORMS)
    for form in BOUND_FORMS.values():
        helper = getattr(runtime_torch, form.helper)
        assert "value" in helper.__doc__ and "raw₀" in helper.__doc__  # the formula, in one place


@pytest.mark.parametrize("form", list(BOUNDED_LEARNS))
def test_every_bound_form_starts_classical(form):
    A, y = lasso_problem()
    bounded = load_class(LASSO.replace("LEARN", BOUNDED_LEARNS[form]))(A)
    twin = load_class(LASSO.replace("LEARN", "learn t per layer"))(A)
    assert bounded.BOUNDED == {"t": True} and type(bounded.t).__name__ == "Bounded"
    assert bounded.t.form.__name__ == BOUND_FORMS[form].helper
    mu = 1 / lipschitz(A)
    expected = hand_ista(A, y, [mu] * 6, [mu * 0.1] * 6, 6)
    with torch.no_grad():
        assert float((bounded(y) - twin(y)).abs().max()) <= 1e-10
        assert float((bounded(y) - expected).abs().max()) <= 1e-10
        assert float((bounded.t.values() - mu * 0.1).abs().max()) <= 1e-15


def test_shared_and_tensor_bounds_start_classical():
    A, y = lasso_problem()
    model = load_class(
        LASSO.replace("LEARN", "learn t shared > 0\n    learn W per layer in (mu * A.T - 1, mu * A.T + 1)")
    )(A)
    twin = load_class(LASSO.replace("LEARN", "learn t shared\n    learn W per layer"))(A)
    assert model.BOUNDED == {"t": False, "W": True} and model.W.low.shape == (20, 12)
    with torch.no_grad():
        assert float((model(y) - twin(y)).abs().max()) <= 1e-10
        assert float((model.W.values() - twin.W[0]).abs().max()) <= 1e-15


def inside(values, low, high, closed):
    """Within the bounds: strictly on an open side, except where it is reached in floating point."""
    ok = torch.ones_like(values, dtype=torch.bool)
    if low is not None:
        ok &= values >= low
    if high is not None:
        ok &= values <= high
    return bool(ok.all()) and bool(torch.isfinite(values).all())


@pytest.mark.parametrize("form", list(BOUNDED_LEARNS))
def test_values_stay_inside_after_huge_perturbations_and_steps(form):
    A, y = lasso_problem()
    model = load_class(LASSO.replace("LEARN", BOUNDED_LEARNS[form]))(A)
    low, high = model.t.low, model.t.high
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for raw in model.t.raw:
            raw.add_(10 * torch.randn((), generator=generator, dtype=raw.dtype))
    values = model.t.values()
    assert inside(values, low, high, model.t.closed)
    # moderate raw values: strictly inside an open side
    if low is not None and not model.t.closed[0]:
        assert bool((values > low).all())
    if high is not None and not model.t.closed[1]:
        assert bool((values < high).all())
    optimiser = torch.optim.SGD(model.parameters(), lr=1e6)
    for _ in range(3):
        optimiser.zero_grad()
        (model(y) - 5).square().sum().backward()
        optimiser.step()
        assert inside(model.t.values(), low, high, model.t.closed)
    for extreme in (1e4, -1e4):
        with torch.no_grad():
            for raw in model.t.raw:
                raw.fill_(extreme)
        assert inside(model.t.values(), low, high, model.t.closed)
        if form == "open_interval":  # the margin: strictly inside even where the sigmoid saturates
            assert bool((model.t.values() > low).all() and (model.t.values() < high).all())


def derivative(form_key: str, raw, low, high):
    """d value / d raw of each form, written out by hand."""
    sigmoid = torch.sigmoid(raw)
    if form_key == "open_interval":
        scaled = torch.sigmoid(4 * raw / (high - low))
        return (1 - 2 * runtime_torch.OpenInterval.MARGIN) * 4 * scaled * (1 - scaled)
    return {
        "closed_interval": ((raw > low) & (raw < high)).to(raw.dtype) if low is not None and high is not None else None,
        "low_closed_interval": -sigmoid * (high - torch.nn.functional.softplus(raw) > low)
        if low is not None and high is not None
        else None,
        "high_closed_interval": sigmoid * (low + torch.nn.functional.softplus(raw) < high)
        if low is not None and high is not None
        else None,
        "above": sigmoid,
        "at_least": (raw > low).to(raw.dtype) if low is not None else None,
        "below": -sigmoid,
        "at_most": (raw < high).to(raw.dtype) if high is not None else None,
    }[form_key]


@pytest.mark.parametrize("form", list(BOUNDED_LEARNS))
def test_gradient_is_the_chain_rule_through_the_formula(form):
    A, y = lasso_problem()
    model = load_class(LASSO.replace("LEARN", BOUNDED_LEARNS[form]))(A)
    twin = load_class(LASSO.replace("LEARN", "learn t per layer"))(A)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for raw in model.t.raw:
            raw.add_(0.3 * torch.randn((), generator=generator, dtype=raw.dtype))
        for k, value in enumerate(model.t.values()):
            twin.t[k].copy_(value)
    (model(y) ** 2).sum().backward()
    (twin(y) ** 2).sum().backward()
    for k in range(6):
        raw = model.t.raw[k].detach()
        chain = twin.t[k].grad * derivative(form, raw, model.t.low, model.t.high)
        torch.testing.assert_close(model.t.raw[k].grad, chain, rtol=1e-10, atol=1e-14)
    low, high = torch.tensor(-0.5, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    for key in BOUND_FORMS:  # each map's own autograd against finite differences
        helper = getattr(runtime_torch, BOUND_FORMS[key].helper)
        raw = torch.tensor([-1.3, 0.2, 2.1], dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda r, helper=helper: helper.value(r, low, high), (raw,))


def test_a_start_outside_its_bound_is_refused_even_without_validation():
    A, _ = lasso_problem()
    L = lipschitz(A)
    for validate in (True, False):
        message = f"mu = {3 / L:g} is not inside its bound (0, 2/L_x) (low = 0, high = {2 / L:g})"
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            ista_safe.IstaSafe(A, mu=3 / L, validate=validate)
    on_open_side = load_class(LASSO.replace("LEARN", "learn t per layer in (0, lam / lipschitz(x))"))
    with pytest.raises(ValueError, match=r"^t = 0\.\d+ is not inside its bound \(0, lam/L_x\)"):
        on_open_side(A)
    within_margin = load_class(LASSO.replace("LEARN", "learn t per layer in (0, 1.0001 * lam / lipschitz(x))"))
    with pytest.raises(ValueError, match=r"^t = 0\.\d+ is too close to a side of its bound"):
        within_margin(A)
    on_closed_side = load_class(LASSO.replace("LEARN", "learn t per layer in (0, lam / lipschitz(x)]"))
    assert float(on_closed_side(A).t[0].detach()) == pytest.approx(0.1 / L, rel=1e-15)


def perturbed_safe_model(A, layers=16):
    model = ista_safe.IstaSafe(A, layers=layers)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for bounded in (model.mu, model.lam):
            for raw in bounded.raw:
                raw.add_(0.5 * torch.randn((), generator=generator, dtype=raw.dtype))
    return model


def test_layers_past_the_built_ones_reuse_the_last_layer():
    A, y = lasso_problem()
    model = perturbed_safe_model(A, layers=4)
    steps, lams = model.mu.values().detach(), model.lam.values().detach()
    with torch.no_grad():
        built = model(y)
        assert float((built - hand_ista(A, y, steps, steps * lams, 4)).abs().max()) <= 1e-12
        model.layers = 11
        iterates = model(y, return_iterates=True)
    assert len(iterates) == 11
    assert float((iterates[3] - built).abs().max()) == 0
    assert float((iterates[-1] - hand_ista(A, y, steps, steps * lams, 11)).abs().max()) <= 1e-12
    # an unbounded per-layer model, too: its last layer's values
    plain = ista.Ista(A, layers=3)
    with torch.no_grad():
        for k in range(3):
            plain.mu[k].fill_(0.5 / lipschitz(A) * (k + 1))
        plain.layers = 7
        mus = [float(plain.mu[k]) for k in range(3)]
        expected = hand_ista(A, y, mus, [mu * 0.1 for mu in mus], 7)
        assert float((plain(y) - expected).abs().max()) <= 1e-12


def test_numba_equals_torch_on_a_perturbed_bounded_model_and_past_its_depth(tmp_path):
    A, y = lasso_problem()
    model = perturbed_safe_model(A, layers=5)
    model.export_npz(str(tmp_path / "params.npz"))
    with np.load(tmp_path / "params.npz") as archive:
        assert not [key for key in archive.files if ".raw" in key or key.endswith((".low", ".high"))]
        np.testing.assert_array_equal(archive["mu"], model.mu.values().detach().numpy())
    params = ista_safe_kernels.load_params(str(tmp_path / "params.npz"))
    with torch.no_grad():
        np.testing.assert_allclose(ista_safe_kernels.run(params, y.numpy()), model(y).numpy(), rtol=0, atol=1e-12)
        model.layers = 13
        deeper = model(y).numpy()
    np.testing.assert_allclose(ista_safe_kernels.run(params, y.numpy(), layers=13), deeper, rtol=0, atol=1e-12)


def test_state_dict_round_trip_and_trainer_readers():
    A, y = lasso_problem()
    model = perturbed_safe_model(A, layers=4)
    keys = list(model.state_dict())
    assert "mu.raw.0" in keys and "mu.low" in keys and "mu.high" in keys and "lam.low" in keys
    fresh = ista_safe.IstaSafe(A, layers=4)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(y), model(y))
    info = describe(model)
    assert info.learned == {"mu": (1, True), "lam": (2, True)}
    report = learned_values(model)
    assert report["mu"]["kind"] == "scalar" and report["mu"]["bounds"] == "(0, 2/L_x)"
    assert report["mu"]["value"] == pytest.approx(model.mu.values().tolist(), rel=1e-15)
    assert model.parameter_counts() == {1: 4, 2: 4, 3: 0, 4: 0}
    assert math.isclose(float(model._problem_lam), 0.1)


def k_schedule_model():
    """ISTA whose threshold scale c = 1/(k + 1) is computed from the layer index: a (K,) buffer, K = 3."""
    from helpers import load_package

    spec = LASSO.replace("layers 6", "layers 3").replace(
        "hyper t : real = mu * lam", "hyper c : real = 1 / (k + 1)\n    hyper t : real = mu * lam"
    )
    spec = spec.replace("prox[t * norm1]", "prox[c * t * norm1]").replace("LEARN", "learn t per layer >= 0")
    package = load_package(spec, "ista")
    A, y = lasso_problem()
    model = package.Ista(A)
    model.layers = 7
    return package, model, A, y


def test_per_layer_buffers_from_k_past_the_built_layers_reuse_the_last():
    """Past K, the last entry of a buffer computed from k is read (the rules' own k keeps counting)."""
    _, model, A, y = k_schedule_model()
    mu = 1 / lipschitz(A)
    scales = [mu * 0.1 / (min(k, 2) + 1) for k in range(3)]
    with torch.no_grad():
        assert float((model(y) - hand_ista(A, y, [mu] * 3, scales, 7)).abs().max()) <= 1e-12


def test_per_layer_buffers_from_k_past_the_built_layers_in_numba(tmp_path):
    package, model, _, y = k_schedule_model()
    model.export_npz(str(tmp_path / "params.npz"))
    kernels = importlib.import_module(package.__name__ + ".kernels")
    params = kernels.load_params(str(tmp_path / "params.npz"))
    with torch.no_grad():
        expected = model(y).numpy()
    np.testing.assert_allclose(kernels.run(params, y.numpy()), expected, rtol=0, atol=1e-12)
