"""Numba kernels on complex values (issue 14) equal the torch modules: complex64 with float32,
complex128 with float64; a real matrix times a complex vector, complex constants, uᴴv per sample,
the per-sample Lipschitz constant in the real view, in the batched and per-sample layouts.
The parameter and input checks take each complex entry in the complex counterpart of the
kernels' dtype, convert real values given for one, and refuse complex values for a real entry."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from helpers import load_package

from unfoldgen.compiler import compile_text

# A real matrix with complex iterates; the rule adds a complex constant, uᴴv of two per-sample
# columns and ‖x‖₂ of a complex x. The second problem takes its matrix per sample.
MIXED = """
problem mixed {
    dim m, n
    data  A : real[m, n]
    input y : complex[m]
    var   x : complex[n] = 0
    minimize 0.5 * sumsq(A @ x - y)
}

unfold mixed_steps from mixed {
    layers 5
    hyper mu : real = 1 / lipschitz(x)
    iterate {
        let g = grad(x)
        x = x - mu * g + (0.01j * (g.H @ x) + 0.001 * norm2(x)) * x
    }
    learn mu per layer
}

problem mixed_per_sample {
    dim m, n
    input A : real[m, n]
    input y : complex[m]
    var   x : complex[n] = 0
    minimize 0.5 * sumsq(A @ x - y)
}

unfold mixed_per_sample_steps from mixed_per_sample {
    layers 5
    hyper mu : real = 1 / lipschitz(x)
    iterate {
        let g = grad(x)
        x = x - mu * g + (0.01j * (g.H @ x) + 0.001 * norm2(x)) * x
    }
}
"""
COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def _random_complex(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / np.sqrt(2)


def _kernels(text: str, unfold: str):
    package = load_package(text, unfold, "complex_kernels.unf")
    return package, importlib.import_module(f"{package.__name__}.kernels")


def _assert_close(got: np.ndarray, expected: np.ndarray, dtype: torch.dtype) -> None:
    assert got.shape == expected.shape and got.dtype == expected.dtype, (got.shape, got.dtype, expected.dtype)
    if dtype == torch.float64:
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    else:
        assert np.abs(got - expected).max() / (np.abs(expected).max() + 1e-12) < 1e-4


def _run_both(model: torch.nn.Module, kernels, inputs: dict, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """The torch module's output and the kernels' on parameters exported through export_npz."""
    with torch.no_grad():
        expected = model(**inputs).numpy()
    model.export_npz(tmp_path / "params.npz")
    params = kernels.load_params(tmp_path / "params.npz")
    return kernels.run(params, **{name: value.numpy() for name, value in inputs.items()}), expected


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_real_matrix_with_complex_iterates_batched(seed: int, dtype: torch.dtype, tmp_path):
    package, kernels = _kernels(MIXED, "mixed_steps")
    assert "Layout: batched" in kernels.__doc__
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(6, 4)) / np.sqrt(6)
    model = package.MixedSteps(torch.tensor(A, dtype=dtype))
    with torch.no_grad():  # learned steps that differ per layer
        for step in model.mu:
            step.mul_(0.5 + rng.uniform())
    y = torch.tensor(_random_complex(rng, 5, 6), dtype=COMPLEX_OF[dtype])
    got, expected = _run_both(model, kernels, {"y": y}, tmp_path)
    _assert_close(got, expected, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", [0, 1])
def test_per_sample_lipschitz_of_a_complex_variable(seed: int, dtype: torch.dtype, tmp_path):
    """The step 1 / λ_max of the real view's Hessian, built per sample inside the kernel."""
    package, kernels = _kernels(MIXED, "mixed_per_sample_steps")
    assert "Layout: per-sample" in kernels.__doc__
    rng = np.random.default_rng(seed)
    inputs = {
        "A": torch.tensor(rng.normal(size=(4, 7, 5)) / np.sqrt(7), dtype=dtype),
        "y": torch.tensor(_random_complex(rng, 4, 7), dtype=COMPLEX_OF[dtype]),
    }
    got, expected = _run_both(package.MixedPerSampleSteps(dtype=dtype), kernels, inputs, tmp_path)
    _assert_close(got, expected, dtype)


def test_complex64_kernels_never_promote(tmp_path):
    package, kernels = _kernels(MIXED, "mixed_steps")
    rng = np.random.default_rng(3)
    model = package.MixedSteps(torch.tensor(rng.normal(size=(6, 4)), dtype=torch.float32))
    y = torch.tensor(_random_complex(rng, 2, 6), dtype=torch.complex64)
    got, _ = _run_both(model, kernels, {"y": y}, tmp_path)
    assert got.dtype == np.complex64
    signatures = [str(sig) for sig in kernels.layer.nopython_signatures + kernels.network.nopython_signatures]
    single = [sig for sig in signatures if "float32" in sig]
    assert single, signatures
    for sig in single:
        assert "float64" not in sig and "complex128" not in sig, sig


def test_dtypes_are_checked_per_entry(tmp_path):
    package, kernels = _kernels(MIXED, "mixed_steps")
    rng = np.random.default_rng(4)
    A = rng.normal(size=(6, 4))
    model = package.MixedSteps(torch.tensor(A))
    model.export_npz(tmp_path / "params.npz")
    params = kernels.load_params(tmp_path / "params.npz")
    assert kernels.COMPLEX == frozenset({"y"})
    y = _random_complex(rng, 3, 6)
    with pytest.raises(ValueError, match=r"parameter 'A': expected real values, got complex128 \(declare it complex"):
        kernels.run({**params, "A": A.astype(complex)}, y=y)
    with pytest.raises(ValueError, match="input y: dtype complex64, expected complex128 like the other arrays"):
        kernels.run(params, y=y.astype(np.complex64))
    with pytest.raises(ValueError, match="input y: dtype int64, expected complex64 or complex128"):
        kernels.run(params, y=np.ones((3, 6), np.int64))
    # real values for a complex input are complex values with no imaginary part (as in torch)
    with torch.no_grad():
        expected = model(y=torch.tensor(y.real, dtype=torch.complex128)).numpy()
    np.testing.assert_allclose(kernels.run(params, y=y.real), expected, rtol=0, atol=1e-10)


def test_nets_on_complex_values_stay_torch_only():
    text = MIXED.replace(
        "x = x - mu * g + (0.01j * (g.H @ x) + 0.001 * norm2(x)) * x\n    }\n    learn mu per layer",
        "x = x - mu * g + c(x)\n    }\n    net c : mlp(hidden 8, depth 1)\n    learn mu per layer",
        1,
    )
    compiled = compile_text(text, "nets.unf")
    assert "mixed_steps/kernels.py" not in compiled.files
    assert any("mixed_steps" in note and "nets on complex values" in note for note in compiled.notes), compiled.notes
