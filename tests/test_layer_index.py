"""The layer index ``k`` and support selection (``prox[t * norm1, keep p]``): the generated torch
modules and numba kernels against hand-written numpy references, float64 and float32."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import LASSO_PROBLEM, load_package

from unfoldgen import ops_torch
from unfoldgen.compiler import compile_text, read_spec
from unfoldgen.explain import explain_lowered

ROOT = Path(__file__).resolve().parents[1]
M, N, LAYERS = 12, 24, 16


def problem(seed: int, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """A column-normalised Gaussian A and measurements of Bernoulli(0.2)-Gaussian codes."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(M, N)) / np.sqrt(M)
    a /= np.linalg.norm(a, axis=0)
    codes = rng.normal(size=(5, N)) * (rng.random((5, N)) < 0.2)
    return a.astype(dtype), (codes @ a.T).astype(dtype)


def keep_reference(v: np.ndarray, t: float, fraction: float) -> np.ndarray:
    """Support selection per sample (rows of v): the round(p·N) largest magnitudes pass where |v| > t."""
    out = np.sign(v) * np.maximum(np.abs(v) - t, 0)
    count = int(np.floor(fraction * v.shape[1] + 0.5))
    for row, sample in enumerate(v):
        kept = np.argsort(-np.abs(sample), kind="stable")[:count]
        kept = kept[np.abs(sample[kept]) > t]
        out[row, kept] = sample[kept]
    return out


def ista_with_support_selection(a: np.ndarray, y: np.ndarray, lam: float, weight: np.ndarray) -> np.ndarray:
    """ALISTA-SS / LISTA-CPSS untrained: x ← keep(x − μ Wᵀ(Ax − y); μλ, p_k), p_k = min(0.012(k+1), 0.13)."""
    mu = 1 / np.linalg.eigvalsh(a.T @ a).max()
    x = np.zeros((y.shape[0], a.shape[1]))
    for k in range(LAYERS):
        x = keep_reference(x - mu * (x @ a.T - y) @ weight, mu * lam, min(0.012 * (k + 1), 0.13))
    return x


def kernels_run(package, model, y: np.ndarray, tmp_path: Path) -> np.ndarray:
    kernels = importlib.import_module(f"{package.__name__}.kernels")
    path = tmp_path / "params.npz"
    model.export_npz(str(path))
    return np.asarray(kernels.run(kernels.load_params(str(path)), y))


@pytest.mark.parametrize("spec, unfold", [("alista.unf", "alista_ss"), ("lasso.unf", "lista_cpss")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_support_selection_networks_start_as_ista_with_support_selection(spec, unfold, seed, tmp_path):
    text = read_spec(ROOT / "specs" / spec)
    package = load_package(text, unfold, spec)
    a, y = problem(seed)
    model = getattr(package, package.__all__[0])(torch.tensor(a), 0.05)
    ours = model(torch.tensor(y)).detach().numpy()
    expected = ista_with_support_selection(a, y, 0.05, a)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    assert np.count_nonzero(ours) > 0
    np.testing.assert_allclose(kernels_run(package, model, y, tmp_path), ours, rtol=0, atol=1e-12)
    assert model.p.shape == (LAYERS,) and float(model.p[0]) == pytest.approx(0.012) and float(model.p[-1]) == 0.13


def test_support_selection_in_float32_follows_float64(tmp_path):
    text = read_spec(ROOT / "specs" / "alista.unf")
    package = load_package(text, "alista_ss", "alista.unf")
    a, y = problem(3, np.float32)
    model = package.AlistaSs(torch.tensor(a), 0.05)
    ours = model(torch.tensor(y)).detach().numpy()
    assert ours.dtype == np.float32
    expected = ista_with_support_selection(a.astype(np.float64), y.astype(np.float64), 0.05, a.astype(np.float64))
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    np.testing.assert_allclose(kernels_run(package, model, y, tmp_path), ours, atol=1e-5)


def test_support_selection_gradients_match_finite_differences():
    """Away from ties and kinks the selection is locally constant: gradcheck in v and t."""
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(4, 30, 1, dtype=torch.float64, generator=generator, requires_grad=True)
    t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, t: ops_torch.soft_threshold_keep(v, t, 0.2), (v, t))
    out = ops_torch.soft_threshold_keep(v, t, 0.2)
    (gradient,) = torch.autograd.grad(out.sum(), t)
    shrunk = (out != v) & (out != 0)  # soft-thresholded and nonzero: d out / d t = −sign(v)
    assert float(gradient) == pytest.approx(-float(torch.sign(v.detach())[shrunk].sum()))


@pytest.mark.parametrize("fraction, kept", [(0.0, 0), (0.1, 3), (0.5, 15), (1.0, 30)])
def test_the_kept_count_rounds_p_times_n(fraction, kept):
    v = torch.linspace(1, 30, 30, dtype=torch.float64).reshape(1, 30, 1)
    out = ops_torch.soft_threshold_keep(v, 0.5, fraction)
    assert int((out == v).sum()) == kept
    assert torch.equal(out[out != v], v[out != v] - 0.5)


SCHEDULES = (
    LASSO_PROBLEM.replace("lam : real = 0.1", "lam : real = 0.05")
    + """

unfold decaying from lasso {    # a threshold schedule and a step that reads k in the rule
    layers 6
    hyper mu : real = 1 / lipschitz(x)
    hyper t : real = mu * lam / (k + 1)
    iterate { x = prox[t * norm1, keep min(0.05 * k, 0.2)](x - mu * (1 - 0.1 * sqrt(k)) * grad(x)) }
    learn t per layer
}

unfold fixed_schedule from lasso {
    layers 6
    hyper mu : real = 1 / lipschitz(x)
    hyper t : real = mu * lam * 0.5 ^ k
    hyper s : real = mu + t    # depends on a schedule, so it is one too
    iterate { x = prox[t * norm1](x - s * grad(x)) }
}
"""
)


def decaying_reference(a, y, lam, thresholds=None):
    mu = 1 / np.linalg.eigvalsh(a.T @ a).max()
    x = np.zeros((y.shape[0], a.shape[1]))
    for k in range(6):
        t = mu * lam / (k + 1) if thresholds is None else thresholds[k]
        step = mu * (1 - 0.1 * np.sqrt(k))
        x = keep_reference(x - step * (x @ a.T - y) @ a, t, min(0.05 * k, 0.2))
    return x


@pytest.mark.parametrize("seed", [0, 1])
def test_the_layer_index_in_hypers_and_rules(seed, tmp_path):
    package = load_package(SCHEDULES, "decaying")
    a, y = problem(seed)
    model = package.Decaying(torch.tensor(a))
    ours = model(torch.tensor(y)).detach().numpy()
    np.testing.assert_allclose(ours, decaying_reference(a, y, 0.05), rtol=0, atol=1e-12)
    mu = 1 / np.linalg.eigvalsh(a.T @ a).max()
    starts = [float(t) for t in model.t]
    np.testing.assert_allclose(starts, [mu * 0.05 / (k + 1) for k in range(6)], rtol=1e-14)
    np.testing.assert_allclose(kernels_run(package, model, y, tmp_path), ours, rtol=0, atol=1e-12)
    model(torch.tensor(y)).sum().backward()
    assert all(t.grad is not None for t in model.t)


def test_a_schedule_is_overridden_by_one_number_or_one_per_layer():
    package = load_package(SCHEDULES, "decaying")
    a, y = problem(4)
    one = package.Decaying(torch.tensor(a), t=0.01)
    assert [float(t) for t in one.t] == [0.01] * 6
    thresholds = [0.02, 0.015, 0.01, 0.008, 0.006, 0.004]
    each = package.Decaying(torch.tensor(a), t=thresholds)
    ours = each(torch.tensor(y)).detach().numpy()
    np.testing.assert_allclose(ours, decaying_reference(a, y, 0.05, thresholds), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"t: expected shape \(6,\) or one number"):
        package.Decaying(torch.tensor(a), t=[0.1, 0.2])


def test_a_fixed_schedule_is_a_buffer_per_layer(tmp_path):
    package = load_package(SCHEDULES, "fixed_schedule")
    a, y = problem(5)
    model = package.FixedSchedule(torch.tensor(a))
    mu = 1 / np.linalg.eigvalsh(a.T @ a).max()
    np.testing.assert_allclose(model.t.numpy(), mu * 0.05 * 0.5 ** np.arange(6), rtol=1e-14)
    assert model.s.shape == (6,) and not list(model.parameters())
    x = np.zeros((5, N))
    for k in range(6):
        threshold = mu * 0.05 * 0.5**k
        v = x - (mu + threshold) * (x @ a.T - y) @ a
        x = np.sign(v) * np.maximum(np.abs(v) - threshold, 0)
    ours = model(torch.tensor(y)).detach().numpy()
    np.testing.assert_allclose(ours, x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(kernels_run(package, model, y, tmp_path), ours, rtol=0, atol=1e-12)


def test_explain_shows_the_kept_fraction_and_the_schedule():
    low = next(low for low in compile_text(SCHEDULES, "s.unf").lowered if low.name == "decaying")
    text = explain_lowered([low])
    assert "keep min(0.05·k, 0.2)" in text
    assert low.plan["t"].layer_values and low.plan["k"].storage == "layer"


@pytest.mark.parametrize("fraction", [0.0, 0.13, 0.5, torch.tensor(0.25)])
def test_the_export_path_of_support_selection_equals_the_eager_one(fraction, monkeypatch):
    """Under torch.compile / export the count is a tensor and the kept set comes from a sort; eagerly
    from topk: both keep the same entries."""
    generator = torch.Generator().manual_seed(1)
    v = torch.randn(3, 2, 40, 1, dtype=torch.float64, generator=generator)
    t = torch.rand(3, 2, 1, 1, dtype=torch.float64, generator=generator)
    eager = ops_torch.soft_threshold_keep(v, t, fraction)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert torch.equal(ops_torch.soft_threshold_keep(v, t, fraction), eager)
