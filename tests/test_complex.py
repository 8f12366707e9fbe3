"""Complex values (issue 14): Wirtinger gradients against torch.autograd, the exact Lipschitz
constant in the real view, the split-real workaround against the native spec, and the complex
examples of specs/ against hand-written numpy solvers (complex128, 1e-10).

The gradient convention: for a real objective f of a complex z, the compiler's grad(z) is
∂f/∂Re z + i ∂f/∂Im z = 2 ∂f/∂z̄. torch.autograd's ``.grad`` of a complex leaf under a real loss
is the conjugate Wirtinger derivative ∂f/∂z̄ scaled so that a step against it is steepest
descent — the same vector (checked below), so generated code and autograd agree exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import load_class

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"


def _random_complex(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / np.sqrt(2)


def _gradient_spec(objective: str) -> str:
    """One layer x ← x − grad(x) from the input x0: the generated gradient is x0 − output."""
    return f"""
problem p {{
    dim m, n
    data  A : complex[m, n]
    data  w : complex[n]
    input y : complex[m]
    input x0 : complex[n]
    var   x : complex[n] = x0
    minimize {objective}
}}
unfold step from p {{
    layers 1
    iterate {{ x = x - grad(x) }}
}}
"""


# each objective written in the spec language and, independently, as torch code
OBJECTIVES = {
    "least_squares": (
        "0.5 * sumsq(A @ x - y)",
        lambda x, A, w, y: 0.5 * (A @ x - y).abs().square().sum(),
    ),
    "conjugate_product_and_inner_product": (
        "sumsq(conj(x) * w) + re(dot(w, x))",
        lambda x, A, w, y: (x.conj() * w).abs().square().sum() + (w.conj() * x).sum().real,
    ),
    "imaginary_and_real_parts": (
        "im(sum(x * w)) + 0.25 * sumsq(re(x) - 1)",
        lambda x, A, w, y: (x * w).sum().imag + 0.25 * (x.real - 1).square().sum(),
    ),
    "holomorphic_function": (
        "re(sum(exp(x * w))) + 0.5 * sumsq(x.H @ x)",
        lambda x, A, w, y: torch.exp(x * w).sum().real + 0.5 * (x.conj() @ x).abs().square(),
    ),
    "hermitian_form": (
        "re(quad(x, A.H @ A)) - re(y.H @ A @ x)",
        lambda x, A, w, y: (x.conj() @ (A.conj().T @ A) @ x).real - (y.conj() @ A @ x).real,
    ),
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_gradient_equals_autograd(name: str, seed: int):
    text, reference = OBJECTIVES[name]
    cls = load_class(_gradient_spec(text))
    rng = np.random.default_rng(seed)
    m, n = 5, 4
    A, w, y, x0 = (
        torch.tensor(v)
        for v in (_random_complex(rng, m, n), _random_complex(rng, n), _random_complex(rng, m), _random_complex(rng, n))
    )
    model = cls(A, w, dtype=torch.float64)
    generated = x0 - model(y[None], x0[None])[0].detach()
    x = x0.clone().requires_grad_(True)
    reference(x, A, w, y).backward()
    np.testing.assert_allclose(generated.numpy(), x.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_autograd_convention_is_twice_the_conjugate_wirtinger_derivative():
    """f = |z|² has ∂f/∂z̄ = z; the descent direction (and torch's .grad) is 2z."""
    z = torch.tensor([1.5 - 0.5j], dtype=torch.complex128, requires_grad=True)
    (z.abs() ** 2).sum().backward()
    assert torch.allclose(z.grad, 2 * z.detach())


LASSO = (SPECS / "complex_lasso.unf").read_text()


def _lasso_data(seed: int, m: int = 12, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = _random_complex(rng, m, n) / np.sqrt(m)
    x = np.zeros(n, complex)
    x[rng.choice(n, 4, replace=False)] = _random_complex(rng, 4)
    return A, A @ x + 0.01 * _random_complex(rng, m)


def _shrink(v: np.ndarray, threshold: float) -> np.ndarray:
    """The complex soft threshold: moduli shrink by the threshold, phases stay."""
    modulus = np.abs(v)
    return v * np.maximum(0.0, 1.0 - threshold / np.maximum(modulus, 1e-300))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lipschitz_is_exact_in_both_views(seed: int):
    """λ_max of the Hermitian Hessian AᴴA equals λ_max of the real 2n × 2n Hessian of f(Re x, Im x)."""
    A, y = _lasso_data(seed)
    model = load_class(LASSO, "complex_ista")(torch.tensor(A), dtype=torch.float64)
    value = float(model.lipschitz_x({"y": torch.tensor(y)[None]}).reshape(()))
    hermitian = np.linalg.eigvalsh(A.conj().T @ A).max()
    real_view = np.block([[A.real, -A.imag], [A.imag, A.real]])
    assert value == pytest.approx(hermitian, rel=1e-12)
    assert value == pytest.approx(np.linalg.eigvalsh(real_view.T @ real_view).max(), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_complex_ista_and_fista_equal_numpy(seed: int):
    A, y = _lasso_data(seed)
    lam, step = 0.1, 1.0 / np.linalg.eigvalsh(A.conj().T @ A).max()
    ista = load_class(LASSO, "complex_ista")(torch.tensor(A), dtype=torch.float64)
    fista = load_class(LASSO, "complex_fista")(torch.tensor(A), dtype=torch.float64)
    x = np.zeros(A.shape[1], complex)
    z, t = x.copy(), 1.0
    xi = x.copy()
    for _ in range(16):
        xi = _shrink(xi - step * A.conj().T @ (A @ xi - y), step * lam)
        x_new = _shrink(z - step * A.conj().T @ (A @ z - y), step * lam)
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        z = x_new + (t - 1) / t_new * (x_new - x)
        x, t = x_new, t_new
    batch = torch.tensor(y)[None]
    np.testing.assert_allclose(ista(batch)[0].detach().numpy(), xi, atol=1e-10)
    np.testing.assert_allclose(fista(batch)[0].detach().numpy(), x, atol=1e-10)


def test_complex_lista_cp_untrained_is_ista():
    A, y = _lasso_data(3)
    ista = load_class(LASSO, "complex_ista")(torch.tensor(A), dtype=torch.float64)
    lista = load_class(LASSO, "complex_lista_cp")(torch.tensor(A), dtype=torch.float64)
    batch = torch.tensor(y)[None]
    assert lista.W[0].dtype == torch.complex128
    torch.testing.assert_close(lista(batch), ista(batch), atol=1e-12, rtol=0)


# The workaround a user wrote before complex types: real and imaginary parts as two real
# variables, the complex shrinkage by hand. With the joint constant lipschitz(xr, xi) its
# iterates are the native spec's; 1 / lipschitz(xr) alone is a larger, unsafe step.
SPLIT = """
problem split_lasso {
    dim m, n
    data  Ar : real[m, n]
    data  Ai : real[m, n]
    input yr : real[m]
    input yi : real[m]
    var   xr : real[n] = 0
    var   xi : real[n] = 0
    param lam : real = 0.1
    minimize 0.5 * sumsq(Ar @ xr - Ai @ xi - yr) + 0.5 * sumsq(Ai @ xr + Ar @ xi - yi)
}
unfold split_ista from split_lasso {
    layers 16
    hyper mu : real = 1 / lipschitz(xr, xi)
    iterate {
        let vr = xr - mu * grad(xr)
        let vi = xi - mu * grad(xi)
        let keep = max(1 - mu * lam / max(sqrt(vr^2 + vi^2), 1e-300), 0)
        xr = keep * vr
        xi = keep * vi
    }
}
"""


@pytest.mark.parametrize("seed", [0, 1])
def test_split_real_workaround_gives_the_native_iterates(seed: int):
    A, y = _lasso_data(seed)
    native = load_class(LASSO, "complex_ista")(torch.tensor(A), dtype=torch.float64)
    split = load_class(SPLIT)(torch.tensor(A.real), torch.tensor(A.imag), dtype=torch.float64)
    inputs = {"y": torch.tensor(y)[None]}
    joint = float(split.lipschitz_xr_xi({"yr": inputs["y"].real, "yi": inputs["y"].imag}).reshape(()))
    assert float(native.lipschitz_x(inputs).reshape(())) == pytest.approx(joint, rel=1e-10)
    xr, xi = split(inputs["y"].real.contiguous(), inputs["y"].imag.contiguous())
    x = native(inputs["y"])
    np.testing.assert_allclose(x[0].detach().numpy(), (xr + 1j * xi)[0].detach().numpy(), atol=1e-10)
    # the per-part constant of the split problem is below the joint one: its step would be too large
    alone = np.linalg.eigvalsh(A.real.T @ A.real + A.imag.T @ A.imag).max()
    assert alone <= joint + 1e-12


MIMO = (SPECS / "mimo.unf").read_text()


@pytest.mark.parametrize("seed", [0, 1])
def test_mimo_projected_gradient_equals_numpy(seed: int):
    """From the LMMSE estimate, projected gradient steps onto the QPSK hull (per sample 1/L)."""
    rng = np.random.default_rng(seed)
    batch, m, n, a = 3, 8, 4, 1 / np.sqrt(2)
    H = _random_complex(rng, batch, m, n) / np.sqrt(m)
    x = a * (rng.choice([-1, 1], (batch, n)) + 1j * rng.choice([-1, 1], (batch, n)))
    sigma2 = rng.uniform(0.01, 0.1, batch)
    y = np.einsum("bmn,bn->bm", H, x) + np.sqrt(sigma2)[:, None] * _random_complex(rng, batch, m)
    model = load_class(MIMO, "mimo_pgd")(dtype=torch.float64)
    out = model(torch.tensor(H), torch.tensor(y), torch.tensor(sigma2)).detach().numpy()
    for b in range(batch):
        gram = H[b].conj().T @ H[b]
        step = 1 / np.linalg.eigvalsh(gram).max()
        estimate = np.linalg.solve(gram + sigma2[b] * np.eye(n), H[b].conj().T @ y[b])
        for _ in range(10):
            v = estimate - step * H[b].conj().T @ (H[b] @ estimate - y[b])
            estimate = np.clip(v.real, -a, a) + 1j * np.clip(v.imag, -a, a)
        np.testing.assert_allclose(out[b], estimate, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_model_dtype_follows_its_data(dtype: torch.dtype):
    A, y = _lasso_data(0)
    model = load_class(LASSO, "complex_ista")(torch.tensor(A).to(dtype), dtype=None)
    complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    assert model.A.dtype == complex_dtype
    assert model(torch.tensor(y).to(complex_dtype)[None]).dtype == complex_dtype
    with pytest.raises(ValueError, match="expected dtype"):
        model(torch.tensor(y).to(torch.complex128 if dtype == torch.float32 else torch.complex64)[None])


def test_real_data_refuses_complex_values():
    cls = load_class(
        """
problem p {
    dim n
    data  D : real[n, n]
    input y : real[n]
    var   x : real[n] = 0
    minimize 0.5 * sumsq(D @ x - y)
}
unfold gd from p {
    layers 2
    iterate { x = x - 0.1 * grad(x) }
}
"""
    )
    with pytest.raises(ValueError, match="declare it complex"):
        cls(torch.eye(3, dtype=torch.complex128))
    model = cls(torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="declare it complex"):
        model(torch.ones(1, 3, dtype=torch.complex128))


def test_real_matrix_solved_against_complex_values_and_imaginary_literals():
    """solve(M, b) of a real M and a complex b (torch.linalg.solve takes one dtype), 0.5j in a rule."""
    cls = load_class(
        """
problem p {
    dim n
    data  M : real[n, n]
    input b : complex[n]
    var   x : complex[n] = solve(M, b)
    minimize 0.5 * sumsq(M @ x - b)
}
unfold s from p {
    layers 1
    iterate { x = x - 0.01 * grad(x) + 0.5j * solve(M, b) }
}
"""
    )
    rng = np.random.default_rng(0)
    M = rng.normal(size=(4, 4)) + 4 * np.eye(4)
    b = _random_complex(rng, 4)
    out = cls(torch.tensor(M), dtype=torch.float64)(torch.tensor(b)[None])[0].detach().numpy()
    x = np.linalg.solve(M, b)
    x = x - 0.01 * M.T @ (M @ x - b) + 0.5j * np.linalg.solve(M, b)
    np.testing.assert_allclose(out, x, atol=1e-12)


# (left shape, right shape, which side is complex): a shared matrix with a batch of vectors and of
# matrices, a per-sample matrix, a shared pair, a complex left side
MIXED_PRODUCTS = [
    ((6, 4), (3, 4, 1), "right"),
    ((6, 4), (3, 4, 5), "right"),
    ((3, 6, 4), (3, 4, 1), "right"),
    ((6, 4), (4, 2), "right"),
    ((3, 2, 6), (6, 4), "left"),
    ((2, 6), (6, 4), "left"),
]


@pytest.mark.parametrize("left_shape, right_shape, complex_side", MIXED_PRODUCTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_real_times_complex_by_parts_equals_the_promoted_product(left_shape, right_shape, complex_side, dtype):
    """mixed_matmul (torch) and mixed_dot (numba) multiply a real and a complex array by parts,
    never promoting the real one: equal to numpy's complex product, and (torch) the gradients
    equal autograd's through the promoted product."""
    from numba import njit

    from unfoldgen.ops_numba import mixed_dot
    from unfoldgen.runtime_torch import mixed_matmul

    rng = np.random.default_rng(len(left_shape) + len(right_shape))
    left = _random_complex(rng, *left_shape) if complex_side == "left" else rng.normal(size=left_shape)
    right = _random_complex(rng, *right_shape) if complex_side == "right" else rng.normal(size=right_shape)
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    tensors = [
        torch.tensor(value, dtype=complex_dtype if np.iscomplexobj(value) else dtype, requires_grad=True)
        for value in (left, right)
    ]
    ours = mixed_matmul(*tensors)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    assert ours.dtype == complex_dtype
    np.testing.assert_allclose(ours.detach().numpy(), left @ right, atol=tolerance)
    conjugated = mixed_matmul(*(t.conj() for t in tensors))  # a lazy conjugate (torch's conj bit), as .mH gives
    np.testing.assert_allclose(conjugated.detach().numpy(), np.conj(left) @ np.conj(right), atol=tolerance)
    seed = torch.tensor(_random_complex(rng, *ours.shape), dtype=complex_dtype)
    grads = torch.autograd.grad((ours * seed.conj()).real.sum(), tensors)
    promoted = [t.detach().to(complex_dtype).requires_grad_() for t in tensors]
    reference = torch.autograd.grad(((promoted[0] @ promoted[1]) * seed.conj()).real.sum(), promoted)
    for grad, expected, tensor in zip(grads, reference, tensors, strict=True):
        expected = expected if tensor.is_complex() else expected.real  # a real leaf's gradient is real
        np.testing.assert_allclose(grad.numpy(), expected.numpy(), atol=tolerance)
    if len(left_shape) == 2 and len(right_shape) == 2:  # numba's kernels: 2-D arrays, one dtype pair
        numpy_dtypes = {torch.float64: (np.float64, np.complex128), torch.float32: (np.float32, np.complex64)}
        real, complex_ = numpy_dtypes[dtype]
        arrays = [np.ascontiguousarray(v, complex_ if np.iscomplexobj(v) else real) for v in (left, right)]
        product = njit(mixed_dot)(*arrays)
        assert product.dtype == complex_
        np.testing.assert_allclose(product, left @ right, atol=tolerance)
        column = njit(mixed_dot)(arrays[0], np.ascontiguousarray(arrays[1][:, 0]))  # a 1-D right side
        np.testing.assert_allclose(column, left @ right[:, 0], atol=tolerance)


MRI = (SPECS / "mri.unf").read_text()


def _complex_soft(v: np.ndarray, threshold: float) -> np.ndarray:
    return _shrink(v, threshold)


@pytest.mark.parametrize("seed", [0, 1])
def test_mri_networks_untrained_equal_numpy_ista(seed: int):
    """ISTA on k-space with an ℓ1-Haar prior: x ← Wᴴ soft(W(x − μ Fᴴ M(M F x − y)), μλ), pywt's Haar
    and numpy's FFT; the ISTA-Net-style network starts as the same iteration (zero corrections)."""
    from tests import imaging_reference as reference

    rng = np.random.default_rng(seed)
    size, levels = 16, 3
    mask = (rng.uniform(size=(size, size)) < 0.4).astype(float)
    mask[0] = 1.0
    image = _random_complex(rng, size, size)
    y = mask * (np.fft.fft2(image, norm="ortho") + 0.01 * _random_complex(rng, size, size))
    ista = load_class(MRI, "mri_ista")(torch.tensor(mask), layers=4, dtype=torch.float64)
    net = load_class(MRI, "mri_istanet")(torch.tensor(mask), layers=4, dtype=torch.float64)
    step, threshold = float(ista.mu[0]), float(ista.theta[0])
    assert 1.0 <= 1 / step <= 1.1  # ‖M F‖ = 1: the power iteration's margin keeps 1/μ just above it
    x = np.zeros((size, size), complex)
    for _ in range(4):
        v = x - step * np.fft.ifft2(mask * (mask * np.fft.fft2(x, norm="ortho") - y), norm="ortho")
        x = reference.ihaar(_complex_soft(reference.haar(v, levels), threshold), levels, v.shape)
    batch = torch.tensor(y)[None]
    np.testing.assert_allclose(ista(batch)[0].detach().numpy(), x, atol=1e-10)
    np.testing.assert_allclose(net(batch)[0].detach().numpy(), x, atol=1e-10)


def test_mimo_corrected_untrained_is_projected_gradient():
    rng = np.random.default_rng(5)
    H = _random_complex(rng, 2, 8, 4) / np.sqrt(8)
    y = _random_complex(rng, 2, 8)
    sigma2 = np.array([0.05, 0.2])
    inputs = [torch.tensor(v) for v in (H, y, sigma2)]
    plain = load_class(MIMO, "mimo_pgd")(dtype=torch.float64)
    corrected = load_class(MIMO, "mimo_pgd_corrected")(n=4, dtype=torch.float64)  # n sizes the net
    torch.testing.assert_close(corrected(*inputs), plain(*inputs), atol=1e-12, rtol=0)
