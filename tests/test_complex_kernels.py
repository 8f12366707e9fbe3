"""Numba kernels on complex values (issue 14) equal the torch modules — the complex examples of
specs/ (mri_ista's np.fft through rocket-fft) and specs written here: complex64 with float32,
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
# columns and ‖x‖₂ of a complex x. The second problem takes its matrix per sample (and adds ‖x‖₀).
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
        let shift = 0.01j * (g.H @ x) + 0.001 * norm2(x) + 0.0001 * norm0(x)
        x = x - mu * g + shift * x
    }
}

unfold mixed_fixed_point from mixed {
    fixed point (tolerance 1e-4, iterations 500)
    hyper mu : real = 1 / lipschitz(x)
    iterate { x = x - mu * grad(x) }
    learn mu shared
}

unfold mixed_per_sample_fixed_point from mixed_per_sample {
    fixed point (tolerance 1e-4, iterations 500)
    hyper mu : real = 1 / lipschitz(x)
    iterate { x = x - mu * grad(x) }
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


@pytest.mark.parametrize("unfold", ["mixed_fixed_point", "mixed_per_sample_fixed_point"])
def test_fixed_point_of_complex_iterates(unfold: str, tmp_path):
    """The stopping rule measures complex changes by their moduli, as the torch module does."""
    package, kernels = _kernels(MIXED, unfold)
    rng = np.random.default_rng(5)
    inputs = {"y": torch.tensor(_random_complex(rng, 3, 12))}
    if unfold == "mixed_fixed_point":
        model = package.MixedFixedPoint(torch.tensor(rng.normal(size=(12, 4))))
    else:
        inputs["A"] = torch.tensor(rng.normal(size=(3, 12, 4)))
        model = package.MixedPerSampleFixedPoint(dtype=torch.float64)
    got, expected = _run_both(model, kernels, inputs, tmp_path)
    assert model.last_iterations < 500  # the tolerance stopped it, not the cap
    _assert_close(got, expected, torch.float64)


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


# the examples of specs/: package → (class, family); generated/ holds them (numba's cache of its
# kernels survives between runs)
EXAMPLES = {
    "complex_ista": ("ComplexIsta", "lasso"),
    "complex_fista": ("ComplexFista", "lasso"),
    "complex_lista_cp": ("ComplexListaCp", "lasso"),
    "mimo_pgd": ("MimoPgd", "mimo"),
    "mimo_pgd_corrected": ("MimoPgdCorrected", "mimo"),
    "mri_ista": ("MriIsta", "mri"),
}


def _example(package: str, dtype: torch.dtype, seed: int, batch: int):
    """The generated module built on random data, its kernels, and its inputs."""
    cls = getattr(importlib.import_module(f"generated.{package}.model"), EXAMPLES[package][0])
    kernels = importlib.import_module(f"generated.{package}.kernels")
    rng = np.random.default_rng(seed)
    if EXAMPLES[package][1] == "lasso":
        m, n = 10, 16
        model = cls(torch.tensor(_random_complex(rng, m, n) / np.sqrt(m), dtype=COMPLEX_OF[dtype]), dtype=dtype)
        return model, kernels, {"y": torch.tensor(_random_complex(rng, batch, m), dtype=COMPLEX_OF[dtype])}
    if EXAMPLES[package][1] == "mri":  # a mask of sampled k-space lines, 16 × 16 images (3 Haar levels)
        mask = np.zeros((16, 16))
        mask[rng.choice(16, 6, replace=False)] = 1
        model = cls(torch.tensor(mask, dtype=dtype), dtype=dtype)
        return model, kernels, {"y": torch.tensor(mask * _random_complex(rng, batch, 16, 16), dtype=COMPLEX_OF[dtype])}
    m, n = 8, 4
    channel = _random_complex(rng, batch, m, n) / np.sqrt(m)
    symbols = (rng.choice([-1, 1], (batch, n)) + 1j * rng.choice([-1, 1], (batch, n))) / np.sqrt(2)
    received = np.einsum("bmn,bn->bm", channel, symbols) + 0.1 * _random_complex(rng, batch, m)
    inputs = {
        "H": torch.tensor(channel, dtype=COMPLEX_OF[dtype]),
        "y": torch.tensor(received, dtype=COMPLEX_OF[dtype]),
        "sigma2": torch.tensor(rng.uniform(0.005, 0.05, batch), dtype=dtype),  # the LMMSE start's noise variance
    }
    return cls(m=m, n=n, dtype=dtype), kernels, inputs  # the dims size the corrected detector's net


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Every learned value scaled by a factor in [0.8, 1.2], complex ones by a complex factor; a
    net's zero-initialised layer drawn at random (else the net would stay zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
                continue
            real = parameter.real.dtype
            factor = 0.8 + 0.4 * torch.rand(parameter.shape, generator=generator, dtype=real)
            if parameter.is_complex():
                angle = 0.3 * torch.rand(parameter.shape, generator=generator, dtype=real)
                factor = torch.polar(factor, angle)
            parameter.mul_(factor)


@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("perturbed", [False, True], ids=["classical", "perturbed"])
@pytest.mark.parametrize("package", list(EXAMPLES))
def test_examples_equal_torch_float64(package: str, perturbed: bool, seed: int, batch: int, tmp_path):
    model, kernels, inputs = _example(package, torch.float64, seed, batch)
    if perturbed:
        _perturb(model, seed)
    got, expected = _run_both(model, kernels, inputs, tmp_path)
    assert np.abs(expected).max() > 1e-3  # not all shrunk to zero: the comparison means something
    _assert_close(got, expected, torch.float64)


# float32 on one example per layout and family of ops (numba compiles each dtype anew: mri_ista's
# per-sample FFT kernels alone take 85 s; complex64 FFTs are covered by tests/test_linops.py)
@pytest.mark.parametrize("package", ["complex_ista", "complex_lista_cp", "mimo_pgd"])
def test_examples_equal_torch_float32(package: str, tmp_path):
    model, kernels, inputs = _example(package, torch.float32, 3, 5)
    _perturb(model, 3)
    got, expected = _run_both(model, kernels, inputs, tmp_path)
    _assert_close(got, expected, torch.float32)


def test_layouts_and_complex_tables_of_the_examples():
    for package in ("complex_ista", "complex_fista", "complex_lista_cp"):
        kernels = importlib.import_module(f"generated.{package}.kernels")
        assert "Layout: batched" in kernels.__doc__
    assert importlib.import_module("generated.complex_lista_cp.kernels").COMPLEX == frozenset({"A", "W", "y"})
    mimo = importlib.import_module("generated.mimo_pgd.kernels")
    assert "Layout: per-sample" in mimo.__doc__ and mimo.COMPLEX == frozenset({"H", "y"})
    assert importlib.import_module("generated.mri_ista.kernels").COMPLEX == frozenset({"y"})


def test_a_learned_complex_weight_round_trips_through_export_npz(tmp_path):
    model, kernels, inputs = _example("complex_lista_cp", torch.float64, 5, 3)
    _perturb(model, 5)
    model.export_npz(tmp_path / "params.npz")
    params = kernels.load_params(tmp_path / "params.npz")
    weights = torch.stack(list(model.W)).detach().numpy()
    assert params["W"].dtype == np.complex128 and np.abs(weights.imag).max() > 0
    np.testing.assert_array_equal(params["W"], weights)
    with pytest.raises(ValueError, match="parameter 'W': dtype complex64, expected complex128 like the other arrays"):
        kernels.run({**params, "W": params["W"].astype(np.complex64)}, **{k: v.numpy() for k, v in inputs.items()})


def test_dtypes_are_checked_per_entry(tmp_path):
    model, kernels, inputs = _example("complex_ista", torch.float64, 4, 3)
    model.export_npz(tmp_path / "params.npz")
    params = kernels.load_params(tmp_path / "params.npz")
    assert kernels.COMPLEX == frozenset({"A", "y"})
    y = inputs["y"].numpy()
    with pytest.raises(ValueError, match=r"parameter 'mu': expected real values, got complex128 \(declare it complex"):
        kernels.run({**params, "mu": params["mu"].astype(complex)}, y=y)
    with pytest.raises(ValueError, match="input y: dtype complex64, expected complex128 like the other arrays"):
        kernels.run(params, y=y.astype(np.complex64))
    with pytest.raises(ValueError, match="input y: dtype int64, expected complex64 or complex128"):
        kernels.run(params, y=np.ones(y.shape, np.int64))
    with pytest.raises(ValueError, match="input y: dtype float32, expected complex128 like the other arrays"):
        kernels.run(params, y=y.real.astype(np.float32))
    # real values for a complex entry are complex values with no imaginary part (as in torch)
    real_matrix = params["A"].real.copy()
    model.A = torch.tensor(real_matrix, dtype=torch.complex128)
    with torch.no_grad():
        expected = model(y=torch.tensor(y.real, dtype=torch.complex128)).numpy()
    got = kernels.run({**params, "A": real_matrix}, y=y.real)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


SOLVE = """
problem solve_mixed {
    dim n
    input M : real[n, n]
    input y : complex[n]
    var   x : complex[n] = 0
    minimize 0.5 * sumsq(x - y)
}

unfold solved from solve_mixed {
    layers 1
    iterate { x = solve(M, y) }
}
"""


def test_a_real_matrix_solved_against_a_complex_vector():
    """np.linalg.solve takes one dtype: the real matrix is made complex (numpy as the reference)."""
    _, kernels = _kernels(SOLVE, "solved")
    rng = np.random.default_rng(6)
    matrices = rng.normal(size=(3, 4, 4)) + 4 * np.eye(4)
    vectors = _random_complex(rng, 3, 4)
    got = kernels.run(kernels.params_from_state_dict({"layers": 1}), M=matrices, y=vectors)
    np.testing.assert_allclose(got, np.linalg.solve(matrices, vectors[..., None])[..., 0], rtol=0, atol=1e-12)


def test_a_net_on_complex_vectors_equals_torch_and_on_complex_images_stays_torch_only(tmp_path):
    """The net sees real parts, then imaginary parts, in both backends (batched layout here; the
    per-sample one in mimo_pgd_corrected above); an MLP on a complex image has no kernel."""
    text = MIXED.replace(
        "x = x - mu * g + (0.01j * (g.H @ x) + 0.001 * norm2(x)) * x\n    }\n    learn mu per layer",
        "x = x - mu * g + c(x, g)\n    }\n    net c : mlp(hidden 8, depth 2)\n    learn mu per layer",
        1,
    )
    package, kernels = _kernels(text, "mixed_steps")
    assert "Layout: batched" in kernels.__doc__
    rng = np.random.default_rng(4)
    model = package.MixedSteps(torch.tensor(rng.normal(size=(6, 4)) / np.sqrt(6)))
    _perturb(model, 4)
    got, expected = _run_both(model, kernels, {"y": torch.tensor(_random_complex(rng, 5, 6))}, tmp_path)
    _assert_close(got, expected, torch.float64)
    matrix = """
problem images {
    dim h, w
    input Y : complex[h, w]
    var   X : complex[h, w] = 0
    minimize 0.5 * sumsq(X - Y)
}
unfold corrected_images from images {
    layers 2
    net c : mlp(hidden 8, depth 1)
    iterate { X = X - 0.5 * grad(X) + c(X) }
}
"""
    compiled = compile_text(matrix, "images.unf")
    assert "corrected_images/kernels.py" not in compiled.files
    assert any("a net on a complex image" in note for note in compiled.notes), compiled.notes
