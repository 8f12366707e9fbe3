"""How generated modules hold per-layer parameters, run shared products and checkpoint layers.

- per-layer tensors are one ``nn.Parameter`` per layer (``nn.ParameterList``); ``export_npz`` and
  the kernels' loader stack them back to ``(K, ...)``;
- a shared matrix times a batch prints as ``shared_matmul`` (one GEMM) and equals ``@``;
- ``checkpoint_layers`` (True: segments of √K layers, or a segment length) keeps outputs,
  iterates and gradients exactly; bad settings are refused when the model is built;
- the build-time Lipschitz constant of a spec without data tensors takes its dims from the
  constructor and its dtype from the module (it used to read the inputs it was not given).
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest
import torch
from helpers import load_class

from unfoldgen.runtime_torch import checkpoint_segment, shared_matmul

lista_cp = importlib.import_module("generated.lista_cp.model")
lista_cp_kernels = importlib.import_module("generated.lista_cp.kernels")
alista = importlib.import_module("generated.alista.model")


def lasso_problem(m: int = 12, n: int = 20, batch: int = 5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=generator, dtype=torch.float64) / m**0.5
    y = torch.randn(batch, m, generator=generator, dtype=torch.float64)
    return A, y


def test_per_layer_matrices_are_one_parameter_per_layer():
    A, _ = lasso_problem()
    model = lista_cp.ListaCp(A, layers=6)
    assert isinstance(model.W, torch.nn.ParameterList) and len(model.W) == 6
    assert model.LAYER_LISTS == ("W", "theta")
    assert isinstance(model.theta, torch.nn.ParameterList) and model.theta[0].shape == ()
    keys = [key for key in model.state_dict() if key.startswith("W.")]
    assert keys == [f"W.{k}" for k in range(6)]
    # every layer starts from the same classical weight but trains on its own
    assert all(torch.equal(model.W[k], model.W[0]) for k in range(6))
    assert len({id(p) for p in model.W}) == 6
    assert model.parameter_counts()[2] == 6 * A.shape[0] * A.shape[1]


def test_layer_k_gradient_reaches_only_its_own_weight():
    A, y = lasso_problem()
    model = lista_cp.ListaCp(A, layers=4)
    state = model.initial_state(model.prepare_inputs(y))
    inputs = model.prepare_inputs(y)
    model.layer(2, state, inputs)["x"].sum().backward()
    assert [p.grad is not None for p in model.W] == [False, False, True, False]


def test_export_npz_and_state_dict_stack_per_layer_tensors(tmp_path):
    A, y = lasso_problem()
    model = lista_cp.ListaCp(A, layers=5)
    with torch.no_grad():
        for k, weight in enumerate(model.W):
            weight.add_(0.01 * (k + 1))
    model.export_npz(tmp_path / "params.npz")
    with np.load(tmp_path / "params.npz") as archive:
        assert archive["W"].shape == (5, A.shape[1], A.shape[0])
        assert not any(name.startswith("W.") for name in archive.files)
    from_file = lista_cp_kernels.load_params(str(tmp_path / "params.npz"))
    from_state = lista_cp_kernels.params_from_state_dict(
        {name: value.numpy() for name, value in model.state_dict().items()}
    )
    np.testing.assert_array_equal(from_file["W"], from_state["W"])
    expected = model(y).detach().numpy()
    got = lista_cp_kernels.run(from_state, y=y.numpy())
    np.testing.assert_allclose(got[0] if isinstance(got, tuple) else got, expected, atol=1e-10)


@pytest.mark.parametrize(
    "matrix_shape, batch_shape",
    [((7, 5), (3, 5, 1)), ((7, 5), (3, 5, 4)), ((5, 5), (6, 1, 5, 1)), ((2, 7, 5), (2, 5, 3))],
)
def test_shared_matmul_equals_matmul(matrix_shape, batch_shape):
    generator = torch.Generator().manual_seed(1)
    matrix = torch.randn(matrix_shape, generator=generator, dtype=torch.float64)
    batch = torch.randn(batch_shape, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(shared_matmul(matrix, batch), matrix @ batch, rtol=0, atol=1e-12)


def test_shared_products_print_as_one_gemm():
    layer = inspect.getsource(lista_cp.ListaCp.layer)
    assert "shared_matmul(W, y - shared_matmul(A, x))" in layer
    # a product of two shared matrices stays a plain product (the build-time weight)
    assert "@" not in layer


@pytest.mark.parametrize(
    "setting, layers, expected",
    [(False, 9, 0), (True, 9, 3), (True, 100, 10), (True, 2, 1), (4, 9, 4), (50, 9, 9), (0, 9, 0)],
)
def test_checkpoint_segment(setting, layers, expected):
    assert checkpoint_segment(setting, layers) == expected


@pytest.mark.parametrize("setting", [-1, 1.5, "yes", None])
def test_bad_checkpoint_settings_are_refused_when_built(setting):
    A, _ = lasso_problem()
    with pytest.raises(ValueError, match="checkpoint_layers must be"):
        lista_cp.ListaCp(A, layers=4, checkpoint_layers=setting)


def gradients_and_iterates(module, setting, layers, y, **build):
    model = module(**build, layers=layers, checkpoint_layers=setting)
    with torch.no_grad():  # leave the classical start, so every layer's parameters matter
        for parameter in model.parameters():
            parameter.mul_(1.1)
    iterates = model(y, return_iterates=True)
    loss = sum((k + 1) * (x**2).sum() for k, x in enumerate(iterates))
    loss.backward()
    return [x.detach() for x in iterates], [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("setting", [True, 1, 3, 4, 10])
@pytest.mark.parametrize("module", [lista_cp.ListaCp, alista.Alista], ids=["lista_cp", "alista"])
def test_checkpointing_keeps_iterates_and_gradients(module, setting):
    A, y = lasso_problem()
    plain_iterates, plain_grads = gradients_and_iterates(module, False, 10, y, A=A)
    iterates, grads = gradients_and_iterates(module, setting, 10, y, A=A)
    assert len(iterates) == 10
    for got, expected in zip(iterates + grads, plain_iterates + plain_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


NO_DATA = """
problem denoise {
    dim n
    input y : real[n]
    var x : real[n] = 0
    minimize 0.5 * sumsq(x - y) + 0.1 * norm1(x)
}
unfold steps from denoise {
    layers 3
    hyper mu : real = 0.5 / lipschitz(x)
    iterate { x = prox[mu * 0.1 * norm1](x - mu * grad(x)) }
    learn mu per layer
}
"""


def test_build_time_lipschitz_without_data_uses_constructor_dims():
    steps = load_class(NO_DATA)
    model = steps(n=4, dtype=torch.float64)
    torch.testing.assert_close(torch.stack(list(model.mu)), torch.full((3,), 0.5, dtype=torch.float64))
    assert "_dtype_anchor" not in model.state_dict()
    y = torch.tensor([[1.0, -0.02, 0.5, 0.0]], dtype=torch.float64)
    x = torch.zeros_like(y)
    for _ in range(3):  # ISTA with step 1/2 on 0.5||x - y||² + 0.1||x||₁
        v = x - 0.5 * (x - y)
        x = torch.sign(v) * torch.relu(v.abs() - 0.05)
    torch.testing.assert_close(model(y), x)
    with pytest.raises(ValueError, match=r"pass n=\.\.\. to the constructor"):
        steps()


HUBER_START = """
problem lasso {
    dim m, n
    data A : real[m, n]
    input y : real[m]
    var x : real[n] = 0
    minimize 0.5 * sumsq(A @ x - y) + 0.1 * norm1(x)
}
unfold scaled from lasso {
    layers 3
    state t : real = huber(y, 1)
    iterate { x = prox[0.001 * norm1](x - 0.01 * t * grad(x)) }
}
"""


def test_a_function_used_only_in_a_start_value_carries_its_helper():
    scaled = load_class(HUBER_START)
    A, y = lasso_problem()
    model = scaled(A)
    state = model.initial_state(model.prepare_inputs(y))
    magnitude = y.abs()
    expected = torch.where(magnitude <= 1, 0.5 * y**2, magnitude - 0.5).sum(dim=1)
    torch.testing.assert_close(state["t"].reshape(-1), expected)


SHAPED_PARAMS = """
problem mixed {
    dim m, n
    input D : real[m, n]
    var L : real[m, n] = 0
    param H : real[m, m] = eye(m)
    param w : real[n] = 1
    param lam : real = 0.1
    param rho : real = 2 * lam
    minimize 0.5 * sumsq(D - H @ L) + 0.5 * rho * sumsq(L @ w)
}
unfold steps from mixed {
    layers 2
    hyper mu : real = 0.1
    iterate { L = L - mu * grad(L) }
}
"""


def test_params_with_computed_defaults_are_optional_and_shaped():
    """A shaped param or one whose default is an expression (eye(m), 2 * lam) is optional: its
    default is computed from the dims the constructor is given (it used to be a required argument,
    reshaped with an unbound dim)."""
    steps = load_class(SHAPED_PARAMS)
    model = steps(m=3, n=4, dtype=torch.float64)
    torch.testing.assert_close(model.H, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(model.w, torch.ones(4, 1, dtype=torch.float64))
    torch.testing.assert_close(model.rho, torch.tensor(0.2, dtype=torch.float64))
    H = 2 * torch.eye(3, dtype=torch.float64)
    assert torch.equal(steps(m=3, n=4, H=H, dtype=torch.float64).H, H)
    D = torch.randn(2, 3, 4, dtype=torch.float64)
    L = torch.zeros_like(D)
    for _ in range(2):  # gradient of the objective with the defaults: Hᵀ(HL − D) + ρ (L w) wᵀ
        L = L - 0.1 * (
            (L - D) + 0.2 * (L @ torch.ones(4, 1, dtype=torch.float64)) @ torch.ones(1, 4, dtype=torch.float64)
        )
    torch.testing.assert_close(model(D), L)
    with pytest.raises(ValueError, match=r"pass m=\.\.\. to the constructor"):
        steps(n=4)
