"""Generated models refuse values that make the classical algorithm meaningless, at construction,
with one line naming the value and what was expected (``validate=False`` lets a user ask for them);
``model.layers`` is checked when it is set."""

from __future__ import annotations

import re

import pytest
import torch

from generated.admm import Admm
from generated.fista import Fista
from generated.ista import Ista
from generated.lista_cp import ListaCp
from generated.rpca_ista import RpcaIsta


def with_nan(matrix: torch.Tensor) -> torch.Tensor:
    matrix[0, 0] = torch.nan
    return matrix


def sensing(m: int = 6, n: int = 10, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(m, n, generator=torch.Generator().manual_seed(0), dtype=dtype)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Ista(A=torch.zeros(6, 10)), "mu = inf: expected a finite value"),
        (lambda: ListaCp(A=torch.zeros(6, 10)), "mu = inf: expected a finite value"),
        (lambda: Ista(A=sensing(), lam=float("nan")), "lam = nan: expected a finite value"),
        (lambda: Ista(A=sensing(), mu=float("inf")), "mu = inf: expected a finite value"),
        (lambda: Ista(A=sensing(), lam=-1.0), "the coefficient of norm1 = -1: expected >= 0"),
        (lambda: Ista(A=sensing(), mu=-0.1), "mu = -0.1: expected > 0"),
        (lambda: Ista(A=sensing(), mu=0.0), "mu = 0: expected > 0"),
        (lambda: RpcaIsta(mu=-0.5), "mu = -0.5: expected > 0"),
        (lambda: Admm(A=sensing(), lam=-0.1), "the coefficient of norm1 = -0.1: expected >= 0"),
        (lambda: Ista(A=sensing().to(torch.complex128)), "data A: expected real values, got torch.complex128"),
        (lambda: Ista(A=sensing(), lam=torch.tensor(0.1 + 1j)), "lam: expected real values"),
        (lambda: Ista(A=with_nan(sensing())), "data A: expected finite values, got nan"),
        (lambda: Ista(A=sensing(), lam=torch.ones(3)), "lam: expected shape () or one number, got (3,)"),
    ],
)
def test_meaningless_values_are_refused_at_construction(build, message):
    with pytest.raises(ValueError, match="^" + _escaped(message)) as error:
        build()
    assert "\n" not in str(error.value)


def _escaped(text: str) -> str:
    return re.escape(text)


def test_validate_false_accepts_what_the_user_asks_for():
    model = Ista(A=sensing(), lam=-1.0, mu=-0.1, validate=False)
    assert float(model.mu[0].detach()) == pytest.approx(-0.1) and float(model.lam[0].detach()) == pytest.approx(-1.0)
    assert Ista(A=torch.zeros(6, 10), validate=False).mu[0].isinf()


def test_float16_data_builds_with_a_finite_step():
    exact = Ista(A=sensing(dtype=torch.float32))
    half = Ista(A=sensing(dtype=torch.float32).half())
    assert half.A.dtype == torch.float16 and half.mu[0].dtype == torch.float16
    assert float(half.mu[0]) == pytest.approx(float(exact.mu[0]), rel=2e-3)


def test_layers_are_checked_when_set():
    model = Ista(A=sensing(), layers=5)
    y = torch.randn(2, 6, dtype=torch.float64)
    model.layers = 3
    assert len(model(y=y, return_iterates=True)) == 3
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=f"^layers must be a positive integer, got {bad!r}$"):
            model.layers = bad
    assert model.layers == 3
    model.layers = 7  # past the 5 built layers: the last built layer's values (see test_bounds)
    assert len(model(y=y, return_iterates=True)) == 7


def test_without_per_layer_parameters_any_depth_runs():
    """Nothing learned per layer (FISTA): a deeper network is the same iteration run longer."""
    model = Fista(A=sensing(), layers=2)
    model.layers = 4
    assert len(model(y=torch.randn(2, 6, dtype=torch.float64), return_iterates=True)) == 4
