"""The linear imaging operators (unfoldgen.linops_torch, unfoldgen.linops_numba) against independent
references: scipy.ndimage convolution and correlation, np.diff, scipy.fft's DCT, numpy's FFT,
pywavelets, dense matrices built by applying an operator to unit vectors, and scipy's eigsh. Every
operator's adjoint is checked by <A x, y> = <x, A^T y> (alone and in random compositions) and
against torch.autograd's vector-Jacobian product, which is what the compiler relies on; the numba
kernels equal torch. On complex values (complex64, complex128) every operator acts on real and
imaginary parts alike, with <u, w> = sum conj(u) w in the adjoint identities; fft and ifft are
unitary and each other's adjoint.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect

import numba
import numpy as np
import pytest
import pywt
import scipy.fft
import scipy.ndimage
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import Tensor

from unfoldgen import linops_torch as lt
from unfoldgen import ops_torch
from unfoldgen.emit import helper_sources

MODES = {"circular": "wrap", "zero": "constant", "reflect": "reflect"}
# Odd, even and mixed sizes; 9x9 and 30x1 have more taps than conv2d is used for (the FFT path).
IMAGE_KERNELS = [(3, 3), (4, 4), (2, 5), (9, 9)]
COLUMN_KERNELS = [(3, 1), (4, 1), (30, 1)]
# Batch shapes (), (2,) and (2, 3) (a batch of channel stacks); columns with and without a batch.
IMAGE_SHAPES = [(10, 12), (2, 9, 11), (2, 3, 12, 10)]
COLUMN_SHAPES = [(32, 1), (3, 32, 1)]
DTYPES = [torch.float64, torch.float32]


def draw(shape, seed, dtype=torch.float64) -> Tensor:
    rng = np.random.default_rng([seed, *shape])
    return torch.tensor(rng.normal(size=shape), dtype=dtype)


def gaussian(size: int = 9, sigma: float = 1.6) -> Tensor:
    offsets = np.arange(size) - size // 2
    profile = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel = np.outer(profile, profile)
    return torch.tensor(kernel / kernel.sum())


def per_image(fn, x: np.ndarray) -> np.ndarray:
    """fn applied to each trailing (h, w) image of x."""
    images = x.reshape(-1, *x.shape[-2:])
    return np.stack([fn(image) for image in images]).reshape(*x.shape[:-2], *np.shape(fn(images[0])))


def dense(fn, shape) -> np.ndarray:
    """The matrix of a linear map on arrays of ``shape`` (columns: its values on unit vectors)."""
    size = int(np.prod(shape))
    return np.stack([np.ravel(fn(np.eye(size)[i].reshape(shape))) for i in range(size)], axis=1)


def tolerance(dtype):
    return {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}


def conv_cases():
    for mode in MODES:
        for kernel_shape in IMAGE_KERNELS:
            for shape in IMAGE_SHAPES:
                yield mode, kernel_shape, shape
        for kernel_shape in COLUMN_KERNELS:
            for shape in COLUMN_SHAPES:
                yield mode, kernel_shape, shape


def scipy_convolution(kernel: np.ndarray, x: np.ndarray, mode: str, correlate: bool = False) -> np.ndarray:
    """scipy.ndimage per image; convolve1d / correlate1d along axis -2 for columns."""
    if kernel.shape[1] == 1 and x.shape[-1] == 1:
        fn = scipy.ndimage.correlate1d if correlate else scipy.ndimage.convolve1d
        return fn(x, kernel[:, 0], axis=-2, mode=MODES[mode])
    fn = scipy.ndimage.correlate if correlate else scipy.ndimage.convolve
    return per_image(lambda image: fn(image, kernel, mode=MODES[mode]), x)


# ------------------------------------------------------------------ each operator vs its reference


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode, kernel_shape, shape", list(conv_cases()))
def test_convolution_matches_scipy(mode, kernel_shape, shape, dtype):
    if mode == "circular" and (kernel_shape[0] > shape[-2] or kernel_shape[1] > shape[-1]):
        pytest.skip("a circular kernel larger than the image is refused (test_errors)")
    kernel, x = draw(kernel_shape, 1), draw(shape, 2)
    ours = getattr(lt, f"conv_{mode}")(kernel, x.to(dtype))
    assert ours.dtype == dtype and ours.shape == x.shape
    np.testing.assert_allclose(ours.double(), scipy_convolution(kernel.numpy(), x.numpy(), mode), **tolerance(dtype))
    adjoint = getattr(lt, f"conv_{mode}_adjoint")(kernel, x.to(dtype))
    assert adjoint.dtype == dtype and adjoint.shape == x.shape
    if mode != "reflect":  # reflect's adjoint is no correlation: test_adjoint_is_the_dense_transpose
        reference = scipy_convolution(kernel.numpy(), x.numpy(), mode, correlate=True)
        np.testing.assert_allclose(adjoint.double(), reference, **tolerance(dtype))


@pytest.mark.parametrize("kernel_shape", [(3, 3), (4, 2), (9, 9), (7, 1)])
@pytest.mark.parametrize("mode", MODES)
def test_adjoint_is_the_dense_transpose(mode, kernel_shape):
    """On a small image (smaller than a 9x9 kernel, for zero and reflect), the adjoint is M^T."""
    shape = (5, 4) if kernel_shape[1] > 1 else (9, 1)
    if mode == "circular" and kernel_shape[0] > shape[0]:
        shape = kernel_shape
    kernel = draw(kernel_shape, 3)
    matrix = dense(lambda e: scipy_convolution(kernel.numpy(), e, mode), shape)
    r = draw(shape, 4)
    ours = getattr(lt, f"conv_{mode}_adjoint")(kernel, r).numpy().ravel()
    np.testing.assert_allclose(ours, matrix.T @ r.numpy().ravel(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", COLUMN_SHAPES)
def test_diff_matches_numpy(shape):
    x = draw(shape, 5)
    d = lt.diff(x).numpy()
    np.testing.assert_array_equal(d[..., :-1, :], np.diff(x.numpy(), axis=-2))
    np.testing.assert_array_equal(d[..., -1, :], 0.0)
    matrix = dense(lambda e: lt.diff(torch.tensor(e)).numpy(), shape[-2:])
    r = draw(shape, 6)
    expected = (r.numpy()[..., 0] @ matrix)[..., None]  # each column's D^T r
    np.testing.assert_allclose(lt.diff_adjoint(r).numpy(), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_grad2_and_div2(shape):
    x = draw(shape, 7).numpy()
    p = lt.grad2(torch.tensor(x)).numpy()
    assert p.shape == (*shape[:-2], 2, *shape[-2:])
    np.testing.assert_array_equal(p[..., 0, :-1, :], np.diff(x, axis=-2))
    np.testing.assert_array_equal(p[..., 1, :, :-1], np.diff(x, axis=-1))
    np.testing.assert_array_equal(p[..., 0, -1, :], 0.0)
    np.testing.assert_array_equal(p[..., 1, :, -1], 0.0)
    # div2 = -grad2^T, on one (h, w) image.
    small = (4, 5)
    matrix = dense(lambda e: lt.grad2(torch.tensor(e)).numpy(), small)
    field = draw((2, *small), 8)
    np.testing.assert_allclose(lt.div2(field).numpy().ravel(), -matrix.T @ field.numpy().ravel(), atol=1e-15)


@pytest.mark.parametrize("s", [1, 2, 3])
def test_down_and_up(s):
    x = draw((2, 3, 6, 12), 9)
    np.testing.assert_array_equal(lt.down(x, s), x[..., ::s, ::s])
    column = draw((2, 12, 1), 10)
    np.testing.assert_array_equal(lt.down(column, s), column[..., ::s, :])
    small = lt.down(x, s)
    big = lt.up(small, s)
    expected = torch.zeros_like(x)
    expected[..., ::s, ::s] = small
    np.testing.assert_array_equal(big, expected)
    expected = torch.zeros_like(column)
    expected[..., ::s, :] = lt.down(column, s)
    np.testing.assert_array_equal(lt.up(lt.down(column, s), s), expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [*IMAGE_SHAPES, *COLUMN_SHAPES, (1, 1)])
def test_dct_matches_scipy(shape, dtype):
    x = draw(shape, 11)
    axes = (-2,) if shape[-1] == 1 else (-2, -1)
    forward = scipy.fft.dctn(x.numpy(), norm="ortho", axes=axes)
    ours = lt.dct(x.to(dtype))
    assert ours.dtype == dtype
    np.testing.assert_allclose(ours.double(), forward, **tolerance(dtype))
    inverse = scipy.fft.idctn(x.numpy(), norm="ortho", axes=axes)
    np.testing.assert_allclose(lt.idct(x.to(dtype)).double(), inverse, **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("shape", [(16, 8), (2, 3, 8, 24), (32, 1), (2, 16, 1)])
def test_haar_matches_pywt(shape, levels, dtype):
    x = draw(shape, 12)
    if shape[-1] == 1:

        def reference(column):
            return np.concatenate(pywt.wavedec(column[:, 0], "haar", level=levels, mode="periodization"))[:, None]

        expected = np.stack([reference(c) for c in x.numpy().reshape(-1, shape[-2], 1)]).reshape(shape)
    else:
        expected = per_image(
            lambda image: pywt.coeffs_to_array(pywt.wavedec2(image, "haar", level=levels, mode="periodization"))[0],
            x.numpy(),
        )
    ours = lt.haar(x.to(dtype), levels)
    assert ours.dtype == dtype and ours.shape == x.shape
    np.testing.assert_allclose(ours.double(), expected, **tolerance(dtype))
    np.testing.assert_allclose(lt.ihaar(ours, levels).double(), x, **tolerance(dtype))


def test_dct_after_inference_mode_still_trains():
    """A DCT used under inference_mode leaves nothing behind that breaks a later call with autograd."""
    shape = (3, 13, 11)  # sizes no other test uses, so this call builds them
    with torch.inference_mode():
        lt.dct(torch.ones(shape, dtype=torch.float64))
    x = draw(shape, 13).requires_grad_(True)
    lt.idct(lt.dct(x)).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_errors():
    image = torch.zeros(6, 8)
    with pytest.raises(ValueError, match=r"kernel of shape \(7, 3\) is larger than the \(6, 8\) grid"):
        lt.conv_circular(torch.ones(7, 3), image)
    with pytest.raises(ValueError, match=r"must be 2-D"):
        lt.conv_zero(torch.ones(3), image)
    with pytest.raises(ValueError, match=r"factor 4 must be a positive integer dividing \(6, 8\)"):
        lt.down(image, 4)
    with pytest.raises(ValueError, match=r"factor 0 must be a positive integer"):
        lt.up(image, 0)
    with pytest.raises(ValueError, match=r"levels 2 must be a positive integer with 2\*\*levels dividing \(6, 8\)"):
        lt.haar(image, 2)
    with pytest.raises(ValueError, match=r"dividing \(6,\)"):
        lt.ihaar(torch.zeros(6, 1), 2)


# ----------------------------------------------------------------------------------- adjoints


def adjoint_pairs():
    """(id, forward, adjoint, input shape) for every operator, on images and columns."""
    for mode in MODES:
        for kernel_shape in [(3, 3), (4, 4), (9, 9)]:
            kernel = draw(kernel_shape, 13)
            yield (
                f"conv_{mode}-{kernel_shape}",
                functools.partial(getattr(lt, f"conv_{mode}"), kernel),
                functools.partial(getattr(lt, f"conv_{mode}_adjoint"), kernel),
                (2, 10, 12),
            )
        for kernel_shape in [(4, 1), (30, 1)]:
            kernel = draw(kernel_shape, 14)
            yield (
                f"conv_{mode}-{kernel_shape}",
                functools.partial(getattr(lt, f"conv_{mode}"), kernel),
                functools.partial(getattr(lt, f"conv_{mode}_adjoint"), kernel),
                (2, 32, 1),
            )
    yield "diff", lt.diff, lt.diff_adjoint, (3, 9, 1)
    yield "grad2", lt.grad2, lambda p: -lt.div2(p), (2, 7, 6)
    yield "div2", lt.div2, lambda x: -lt.grad2(x), (2, 2, 7, 6)
    for s in (2, 3):
        yield f"down{s}", functools.partial(lt.down, s=s), functools.partial(lt.up, s=s), (2, 12, 6)
        yield f"up{s}", functools.partial(lt.up, s=s), functools.partial(lt.down, s=s), (2, 4, 5)
        yield f"down{s}-column", functools.partial(lt.down, s=s), functools.partial(lt.up, s=s), (2, 12, 1)
        yield f"up{s}-column", functools.partial(lt.up, s=s), functools.partial(lt.down, s=s), (2, 5, 1)
    yield "dct", lt.dct, lt.idct, (2, 6, 5)
    yield "idct", lt.idct, lt.dct, (2, 6, 5)
    yield "dct-column", lt.dct, lt.idct, (2, 7, 1)
    yield "haar", functools.partial(lt.haar, levels=2), functools.partial(lt.ihaar, levels=2), (2, 8, 12)
    yield "ihaar", functools.partial(lt.ihaar, levels=2), functools.partial(lt.haar, levels=2), (2, 8, 12)
    yield "haar-column", functools.partial(lt.haar, levels=3), functools.partial(lt.ihaar, levels=3), (2, 16, 1)
    mu = torch.tensor([0.05, 2.0], dtype=torch.float64).reshape(2, 1, 1)
    solve = functools.partial(lt.solve_conv_circular, draw((4, 3), 15), mu)
    yield "solve_conv_circular", solve, solve, (2, 8, 7)


PAIRS = {name: (forward, adjoint, shape) for name, forward, adjoint, shape in adjoint_pairs()}


def assert_adjoint(forward, adjoint, x: Tensor, seed: int):
    out = forward(x)
    y = draw(tuple(out.shape), seed)
    back = adjoint(y)
    assert back.shape == x.shape
    lhs, rhs = torch.sum(out * y), torch.sum(x * back)
    scale = max(out.norm() * y.norm(), x.norm() * back.norm())
    assert abs(lhs - rhs) <= 1e-12 * scale, (lhs.item(), rhs.item())


@pytest.mark.parametrize("name", PAIRS)
def test_adjoint_identity(name):
    forward, adjoint, shape = PAIRS[name]
    assert_adjoint(forward, adjoint, draw(shape, 16), 17)


@pytest.mark.parametrize("name", PAIRS)
def test_adjoint_is_the_vector_jacobian_product(name):
    forward, adjoint, shape = PAIRS[name]
    x = draw(shape, 18).requires_grad_(True)
    out = forward(x)
    r = draw(tuple(out.shape), 19)
    (vjp,) = torch.autograd.grad(out, x, r)
    torch.testing.assert_close(vjp, adjoint(r), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", PAIRS)
def test_float32_agrees_and_keeps_dtype(name, dtype):
    forward, adjoint, shape = PAIRS[name]
    x = draw(shape, 20)
    out = forward(x.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), forward(x), rtol=1e-4, atol=1e-4)
    back = adjoint(out)
    assert back.dtype == dtype
    torch.testing.assert_close(back.double(), adjoint(forward(x)), rtol=1e-4, atol=1e-4)


def operator_choices(shape, seed):
    """(label, forward, adjoint) for the operators that accept an input of ``shape``."""
    h, w = shape[-2:]
    choices = []
    for mode in MODES:
        kernel_shape = (1 + seed % 4, 1 + (seed // 4) % 5)
        if mode != "circular" or (kernel_shape[0] <= h and kernel_shape[1] <= w):
            kernel = draw(kernel_shape, seed)
            choices.append(
                (
                    f"conv_{mode}{kernel_shape}",
                    functools.partial(getattr(lt, f"conv_{mode}"), kernel),
                    functools.partial(getattr(lt, f"conv_{mode}_adjoint"), kernel),
                )
            )
    if len(shape) < 4:
        choices.append(("grad2", lt.grad2, lambda p: -lt.div2(p)))
    if len(shape) >= 3 and shape[-3] == 2:
        choices.append(("div2", lt.div2, lambda x: -lt.grad2(x)))
    if h % 2 == 0 and w % 2 == 0 and min(h, w) >= 4:
        choices.append(("down2", functools.partial(lt.down, s=2), functools.partial(lt.up, s=2)))
        choices.append(("haar1", functools.partial(lt.haar, levels=1), functools.partial(lt.ihaar, levels=1)))
        choices.append(("ihaar1", functools.partial(lt.ihaar, levels=1), functools.partial(lt.haar, levels=1)))
    if max(h, w) <= 12:
        choices.append(("up2", functools.partial(lt.up, s=2), functools.partial(lt.down, s=2)))
    choices.append(("dct", lt.dct, lt.idct))
    choices.append(("idct", lt.idct, lt.dct))
    if h >= 3 and w >= 2:  # a circular kernel must fit in the grid
        kernel = draw((3, 2), seed)
        solve = functools.partial(lt.solve_conv_circular, kernel, 0.1 + seed % 3)
        choices.append(("solve_conv_circular", solve, solve))
    return choices


@settings(max_examples=60, deadline=None)
@given(data=st.data(), h=st.sampled_from([4, 6, 8, 12]), w=st.sampled_from([4, 6, 8, 12]))
def test_random_compositions_have_exact_adjoints(data, h, w):
    """forward = f1(f2(... fk(x))), adjoint = fk^T(... f1^T(y)), for 2 to 4 random operators."""
    shape = (2, h, w)
    x = draw(shape, h * w)
    forwards, adjoints = [], []
    value_shape = shape
    for step in range(data.draw(st.integers(2, 4), label="length")):
        choices = operator_choices(value_shape, seed=step + 7 * h + w)
        _, forward, adjoint = data.draw(st.sampled_from(choices), label=f"op{step}")
        forwards.append(forward)
        adjoints.append(adjoint)
        value_shape = tuple(forward(torch.zeros(value_shape, dtype=torch.float64)).shape)

    def composed(v):
        for forward in forwards:
            v = forward(v)
        return v

    def composed_adjoint(v):
        for adjoint in reversed(adjoints):
            v = adjoint(v)
        return v

    assert_adjoint(composed, composed_adjoint, x, seed=h + w)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kernel_shape", [(3, 2), (6, 5)])
def test_kernel_gradients(mode, kernel_shape):
    """A learned kernel: gradcheck in the kernel and the image together, both convolution paths."""
    shape = (6, 7)
    kernel = draw(kernel_shape, 21).requires_grad_(True)
    x = draw(shape, 22).requires_grad_(True)
    for name in (f"conv_{mode}", f"conv_{mode}_adjoint"):
        assert torch.autograd.gradcheck(getattr(lt, name), (kernel, x))
    if mode == "circular":
        mu = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lt.solve_conv_circular, (kernel, mu, x))


# ------------------------------------------------------------------- solves and operator norms


@pytest.mark.parametrize("kernel_shape", [(3, 3), (4, 2)])
@pytest.mark.parametrize("mu_kind", ["float", "0-d", "per-sample"])
def test_solve_conv_circular_matches_a_dense_solve(kernel_shape, mu_kind):
    shape = (6, 5)
    kernel = draw(kernel_shape, 23)
    b = draw((3, *shape), 24)
    values = [0.05, 0.7, 3.0]
    mu = {
        "float": 0.7,
        "0-d": torch.tensor(0.7, dtype=torch.float64),
        "per-sample": torch.tensor(values, dtype=torch.float64).reshape(3, 1, 1),
    }[mu_kind]
    matrix = dense(lambda e: lt.conv_circular(kernel, torch.tensor(e)).numpy(), shape)
    ours = lt.solve_conv_circular(kernel, mu, b)
    for i in range(3):
        m = values[i] if mu_kind == "per-sample" else 0.7
        expected = np.linalg.solve(matrix.T @ matrix + m * np.eye(matrix.shape[0]), b[i].numpy().ravel())
        np.testing.assert_allclose(ours[i].numpy().ravel(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "kernel_shape, size", [((3, 3), (8, 8)), ((4, 4), (8, 8)), ((2, 5), (8, 7)), ((8, 8), (8, 8)), ((3, 1), (8,))]
)
def test_conv_circular_norm2_is_the_largest_singular_value_squared(kernel_shape, size):
    kernel = draw(kernel_shape, 25)
    grid = (size[0], 1) if len(size) == 1 else size
    matrix = dense(lambda e: lt.conv_circular(kernel, torch.tensor(e)).numpy(), grid)
    value = lt.conv_circular_norm2(kernel, size)
    assert value.shape == ()
    np.testing.assert_allclose(value.item(), np.linalg.norm(matrix, 2) ** 2, rtol=1e-12)


def largest_eigenvalue(apply, shape) -> float:
    size = int(np.prod(shape))

    def matvec(v):
        return apply(torch.tensor(v.reshape(shape))).numpy().ravel()

    operator = LinearOperator((size, size), matvec=matvec, dtype=np.float64)
    return float(eigsh(operator, k=1, which="LA", tol=1e-10)[0][0])


def neumann_laplacian_top(h: int, w: int) -> float:
    """The largest eigenvalue of grad2^T grad2 (Neumann): 4 cos^2(pi / 2h) + 4 cos^2(pi / 2w)."""
    return 4 * np.cos(np.pi / (2 * h)) ** 2 + 4 * np.cos(np.pi / (2 * w)) ** 2


BLUR = gaussian()


def power_cases():
    for size in (64, 128, 256):
        yield f"blur-circular-{size}", (lambda v: lt.conv_circular_adjoint(BLUR, lt.conv_circular(BLUR, v))), size
        yield f"grad2-{size}", (lambda v: -lt.div2(lt.grad2(v))), size
    for size in (64, 96):
        yield f"blur-zero-{size}", (lambda v: lt.conv_zero_adjoint(BLUR, lt.conv_zero(BLUR, v))), size


@pytest.mark.parametrize("name, apply, size", list(power_cases()))
def test_power_norm2_bounds_the_largest_eigenvalue(name, apply, size):
    if name.startswith("blur-circular"):
        true = lt.conv_circular_norm2(BLUR, (size, size)).item()
    elif name.startswith("grad2"):
        true = neumann_laplacian_top(size, size)
    else:
        true = largest_eigenvalue(apply, (size, size))
    example = torch.zeros(size, size, dtype=torch.float64)
    value = lt.power_norm2(apply, example)
    assert value.shape == () and value.dtype == torch.float64
    assert true <= value.item() <= 1.10 * true, value.item() / true


def test_power_norm2_float32_and_edge_cases():
    example = torch.zeros(3, 32, 32, dtype=torch.float32)  # channels: one block-diagonal map

    def blur(v):
        return lt.conv_reflect_adjoint(BLUR, lt.conv_reflect(BLUR, v))

    value = lt.power_norm2(blur, example)
    assert value.dtype == torch.float32
    true = largest_eigenvalue(blur, (32, 32))
    assert true <= value.item() <= 1.10 * true
    # Deterministic (fixed seed and count), and a zero map gives 0 rather than NaN.
    assert lt.power_norm2(blur, example).item() == value.item()
    assert lt.power_norm2(torch.zeros_like, example).item() == 0.0


def test_power_iteration_over_several_tensors_is_the_joint_norm():
    """A block-diagonal map diag(2 I, 3 I) on (x, z): the joint constant is 3, times the margin."""
    blocks = (draw((4, 1), 0), draw((3, 2), 1))
    value = lt.power_norm2_stacked(lambda x, z: (2 * x, 3 * z), blocks)
    assert value.item() == pytest.approx(3 * 1.05, rel=1e-9)


# ------------------------------------------------------------------------------- copyability


def public_functions(module) -> list[str]:
    return [
        name
        for name, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__ == module.__name__ and not name.startswith("_")
    ]


def test_module_layout_and_docstrings():
    """Only torch imports, and every public function documents its math and its adjoint."""
    tree = ast.parse(inspect.getsource(lt))
    imports = [ast.unparse(node) for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert imports == ["import torch", "from torch import Tensor"]
    for name in public_functions(lt):
        doc = inspect.getdoc(getattr(lt, name))
        assert doc, name
        if name not in ("conv_circular_norm2", "power_norm2", "power_norm2_stacked"):  # norms, not operators
            assert "djoint" in doc, name  # "Adjoint: ..." or "adjoint of ..."


COPY_CALLS = {
    "conv_circular": lambda f: f(BLUR[:3, :3].contiguous(), draw((2, 6, 5), 0)),
    "conv_circular_adjoint": lambda f: f(BLUR[:3, :3].contiguous(), draw((2, 6, 5), 0)),
    "conv_zero": lambda f: f(BLUR, draw((2, 6, 5), 0)),
    "conv_zero_adjoint": lambda f: f(BLUR, draw((2, 6, 5), 0)),
    "conv_reflect": lambda f: f(BLUR, draw((2, 6, 5), 0)),
    "conv_reflect_adjoint": lambda f: f(BLUR, draw((2, 6, 5), 0)),
    "diff": lambda f: f(draw((2, 6, 1), 0)),
    "diff_adjoint": lambda f: f(draw((2, 6, 1), 0)),
    "grad2": lambda f: f(draw((2, 6, 5), 0)),
    "div2": lambda f: f(draw((2, 2, 6, 5), 0)),
    "down": lambda f: f(draw((2, 6, 4), 0), 2),
    "up": lambda f: f(draw((2, 6, 4), 0), 2),
    "dct": lambda f: f(draw((2, 6, 5), 0)),
    "idct": lambda f: f(draw((2, 6, 5), 0)),
    "haar": lambda f: f(draw((2, 8, 4), 0), 2),
    "ihaar": lambda f: f(draw((2, 8, 4), 0), 2),
    "solve_conv_circular": lambda f: f(BLUR[:3, :3].contiguous(), 0.5, draw((2, 6, 5), 0)),
    "fft": lambda f: f(draw((2, 6, 5), 0)),
    "ifft": lambda f: f(draw((2, 6, 5), 0)),
    "conv_circular_norm2": lambda f: f(BLUR, (16, 16)),
    "power_norm2": lambda f: f(lambda v: 2 * v, draw((4, 4), 0)),
    "power_norm2_stacked": lambda f: f(lambda x, z: (2 * x, 3 * z), (draw((4, 1), 0), draw((3, 2), 1))),
}


def test_every_public_function_is_covered():
    assert set(public_functions(lt)) == set(COPY_CALLS)


@pytest.mark.parametrize("name", COPY_CALLS)
def test_function_runs_when_copied_alone(name):
    """The compiler copies a function and the helpers and constants it uses, as text; nothing else."""
    namespace = {"torch": torch, "Tensor": Tensor}
    for source in helper_sources("linops_torch", [name]):
        exec(source, namespace)  # exactly what the generated module holds
    torch.testing.assert_close(COPY_CALLS[name](namespace[name]), COPY_CALLS[name](getattr(lt, name)), rtol=0, atol=0)


# ----------------------------------------------------------------------------- numba = torch


@functools.cache
def numba_functions(module: str) -> dict:
    """Every public function of a numba helper module, compiled as generated kernels compile them."""
    tree = ast.parse(inspect.getsource(importlib.import_module(f"unfoldgen.{module}")))
    names = [node.name for node in tree.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")]
    namespace = {"np": np, "numba": numba}
    for source in helper_sources(module, names, "@numba.njit\n"):
        exec(source, namespace)  # the compiler's own helper source, as kernels.py holds it
    return namespace


def as_columns(x: Tensor) -> np.ndarray:
    """A batch of torch columns (B, n, 1) as the numba layout (n, B)."""
    return x[..., 0].T.numpy()


def numba_cases(sample=draw):
    """(numba name, numba arguments, the torch value in numba's layout); ``sample`` draws the
    operators' arguments (kernels stay real)."""
    image, stack, columns = sample((10, 8), 30), sample((3, 8, 6), 31), sample((4, 16, 1), 32)
    for mode in MODES:
        for kernel_shape in [(3, 3), (4, 5)]:
            kernel = draw(kernel_shape, 33)
            for suffix in ("", "_adjoint"):
                torch_fn = getattr(lt, f"conv_{mode}{suffix}")
                for x in (image, stack):
                    yield f"conv_{mode}{suffix}_2d", (kernel.numpy(), x.numpy()), torch_fn(kernel, x).numpy()
        kernel = draw((5, 1), 34)
        for suffix in ("", "_adjoint"):
            torch_fn = getattr(lt, f"conv_{mode}{suffix}")
            yield (  # the 2-D functions serve columns with a (kn, 1) kernel
                f"conv_{mode}{suffix}_2d",
                (kernel.numpy(), as_columns(columns)),
                as_columns(torch_fn(kernel, columns)),
            )
    yield "diff_1d", (as_columns(columns),), as_columns(lt.diff(columns))
    yield "diff_adjoint_1d", (as_columns(columns),), as_columns(lt.diff_adjoint(columns))
    yield "grad2_2d", (image.numpy(),), lt.grad2(image).numpy()
    field = lt.grad2(image)
    yield "div2_2d", (field.numpy(),), lt.div2(field).numpy()
    for x in (image, stack):
        yield "down_2d", (x.numpy(), 2), lt.down(x, 2).numpy()
        yield "up_2d", (x.numpy(), 3), lt.up(x, 3).numpy()
        yield "dct_2d", (x.numpy(),), lt.dct(x).numpy()
        yield "idct_2d", (x.numpy(),), lt.idct(x).numpy()
        yield "haar_2d", (x.numpy(), 1), lt.haar(x, 1).numpy()
        yield "ihaar_2d", (x.numpy(), 1), lt.ihaar(x, 1).numpy()
        kernel = draw((3, 4), 35)
        yield "solve_conv_circular_2d", (kernel.numpy(), 0.3, x.numpy()), lt.solve_conv_circular(kernel, 0.3, x).numpy()
    yield "down_1d", (as_columns(columns), 4), as_columns(lt.down(columns, 4))
    yield "up_1d", (as_columns(columns), 2), as_columns(lt.up(columns, 2))
    yield "dct_1d", (as_columns(columns),), as_columns(lt.dct(columns))
    yield "idct_1d", (as_columns(columns),), as_columns(lt.idct(columns))
    yield "haar_1d", (as_columns(columns), 3), as_columns(lt.haar(columns, 3))
    kernel = draw((5, 1), 39)
    solved = lt.solve_conv_circular(kernel, 0.3, columns)
    yield "solve_conv_circular_1d", (kernel.numpy(), 0.3, as_columns(columns)), as_columns(solved)
    yield "ihaar_1d", (as_columns(columns), 3), as_columns(lt.ihaar(columns, 3))
    for x in (image, stack):  # a real argument: the result is complex
        yield "fft_2d", (x.numpy(),), lt.fft(x).numpy()
        yield "ifft_2d", (x.numpy(),), lt.ifft(x).numpy()
    yield "fft_1d", (as_columns(columns),), as_columns(lt.fft(columns))
    yield "ifft_1d", (as_columns(columns),), as_columns(lt.ifft(columns))


NUMBA_CASES = list(numba_cases())
# A float32 run of every kernel would double the compile time; these cover the convolution loops
# and the FFT solve with float32 data and a float64 kernel, and the DFT (complex64 from float32).
FLOAT32_CHECKED = {
    "conv_reflect_adjoint_2d",
    "conv_zero_2d",
    "solve_conv_circular_2d",
    "solve_conv_circular_1d",
    "fft_2d",
    "ifft_1d",
}


def test_every_numba_function_is_tested():
    tree = ast.parse(inspect.getsource(importlib.import_module("unfoldgen.linops_numba")))
    public = {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")}
    assert public == {name for name, _, _ in NUMBA_CASES}


@pytest.mark.slow  # numba compiles every operator (about a minute on one core)
@pytest.mark.parametrize("index", range(len(NUMBA_CASES)), ids=[f"{case[0]}-{i}" for i, case in enumerate(NUMBA_CASES)])
def test_numba_equals_torch(index):
    name, args, expected = NUMBA_CASES[index]
    ours = numba_functions("linops_numba")[name](*args)
    assert ours.dtype == expected.dtype and ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)
    if name in FLOAT32_CHECKED:
        # float32 data; a kernel (the first argument of conv and solve) stays float64, as a data kernel may.
        kernel_first = name.startswith(("conv_", "solve_"))
        as_float32 = tuple(
            a.astype(np.float32) if isinstance(a, np.ndarray) and (i > 0 or not kernel_first) else a
            for i, a in enumerate(args)
        )
        result32 = numba_functions("linops_numba")[name](*as_float32)
        assert result32.dtype == (np.complex64 if np.iscomplexobj(expected) else np.float32)
        np.testing.assert_allclose(result32, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # numba compiles the operators
@pytest.mark.parametrize("name", ["prox_norm21", "proj_ball21"])
def test_norm21_numba_equals_torch(name):
    """Numba takes one sample with the groups along axis 0: a TV field (2, h, w), a matrix, a vector."""
    kernels = numba_functions("ops_numba")
    field = draw((2, 5, 4), 36)
    field[:, 1:3, 2:] = 0.0  # zero groups
    ours = kernels[name](field.numpy(), 0.6)
    expected = getattr(ops_torch, name)(field.flatten(-2), 0.6).reshape(field.shape)
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-12, atol=1e-12)
    for shape in [(3, 4), (6, 1)]:
        v = draw(shape, 37)
        expected = getattr(ops_torch, name)(v, 0.6).numpy()
        np.testing.assert_allclose(kernels[name](v.numpy(), 0.6), expected, rtol=1e-12, atol=1e-12)
    # The batched layout of vectors, (n, B) with one parameter per sample as a (1, B) row.
    batch = draw((3, 5, 1), 38)
    t = torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64).reshape(3, 1, 1)
    expected = as_columns(getattr(ops_torch, name)(batch, t))
    ours = kernels[name](as_columns(batch), t.reshape(1, 3).numpy())
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- complex values

COMPLEX_DTYPES = [torch.complex128, torch.complex64]


def complex_tolerance(dtype) -> float:
    return 1e-12 if dtype == torch.complex128 else 1e-5


def draw_complex(shape, seed, dtype=torch.complex128) -> Tensor:
    rng = np.random.default_rng([seed, *shape, 2])
    return torch.tensor(rng.normal(size=shape) + 1j * rng.normal(size=shape)).to(dtype)


def fft_pairs():
    """(id, forward, adjoint, input shape) of the DFT on images, stacks and columns."""
    for label, shape in [("image", (2, 6, 5)), ("stack", (2, 3, 4, 6)), ("column", (3, 8, 1))]:
        yield f"fft-{label}", lt.fft, lt.ifft, shape
        yield f"ifft-{label}", lt.ifft, lt.fft, shape


COMPLEX_PAIRS = {**PAIRS, **{name: (forward, adjoint, shape) for name, forward, adjoint, shape in fft_pairs()}}


@pytest.mark.parametrize("dtype", COMPLEX_DTYPES, ids=str)
@pytest.mark.parametrize("name", COMPLEX_PAIRS)
def test_complex_adjoint_identity(name, dtype):
    """<A x, y> = <x, A^H y> with complex x and y; the dtype is kept."""
    forward, adjoint, shape = COMPLEX_PAIRS[name]
    x = draw_complex(shape, 40, dtype)
    out = forward(x)
    assert out.dtype == dtype
    y = draw_complex(tuple(out.shape), 41, dtype)
    back = adjoint(y)
    assert back.dtype == dtype and back.shape == x.shape
    lhs, rhs = torch.vdot(out.flatten(), y.flatten()), torch.vdot(x.flatten(), back.flatten())
    scale = max(out.norm() * y.norm(), x.norm() * back.norm())
    assert abs(lhs - rhs) <= complex_tolerance(dtype) * scale, (lhs.item(), rhs.item())


@pytest.mark.parametrize("name", PAIRS)
def test_real_operators_act_on_real_and_imaginary_parts(name):
    forward, _, shape = PAIRS[name]
    x = draw_complex(shape, 42)
    expected = torch.complex(forward(x.real), forward(x.imag))
    torch.testing.assert_close(forward(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", COMPLEX_PAIRS)
def test_complex_adjoint_is_the_vector_jacobian_product(name):
    """torch.autograd's vjp of a complex-linear map with cotangent r is A^H r: what the compiler emits."""
    forward, adjoint, shape = COMPLEX_PAIRS[name]
    x = draw_complex(shape, 43).requires_grad_(True)
    out = forward(x)
    r = draw_complex(tuple(out.shape), 44)
    (vjp,) = torch.autograd.grad(out, x, r)
    torch.testing.assert_close(vjp, adjoint(r), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [*DTYPES, *COMPLEX_DTYPES], ids=str)
@pytest.mark.parametrize("shape", [*IMAGE_SHAPES, *COLUMN_SHAPES, (1, 1)])
def test_fft_matches_numpy(shape, dtype):
    """fft2 over an image's axes, the 1-D DFT along a column, norm="ortho"; complex for real x too."""
    x = draw_complex(shape, 45) if dtype.is_complex else draw(shape, 45)
    x = x.to(dtype)
    values = x.numpy().astype(np.complex128)
    if shape[-1] == 1:
        forward, inverse = np.fft.fft(values, axis=-2, norm="ortho"), np.fft.ifft(values, axis=-2, norm="ortho")
    else:
        forward, inverse = np.fft.fft2(values, norm="ortho"), np.fft.ifft2(values, norm="ortho")
    expected_dtype = torch.complex128 if dtype in (torch.float64, torch.complex128) else torch.complex64
    tol = 1e-12 if expected_dtype == torch.complex128 else 1e-5
    ours, back = lt.fft(x), lt.ifft(x)
    assert ours.dtype == expected_dtype and back.dtype == expected_dtype and ours.shape == x.shape
    np.testing.assert_allclose(ours.numpy(), forward, rtol=tol, atol=tol)
    np.testing.assert_allclose(back.numpy(), inverse, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", COMPLEX_DTYPES, ids=str)
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shape", [(2, 6, 5), (2, 3, 4, 6), (3, 8, 1)])
def test_fft_is_unitary(shape, seed, dtype):
    x = draw_complex(shape, seed, dtype)
    tol = complex_tolerance(dtype)
    spectrum = lt.fft(x)
    torch.testing.assert_close(
        torch.linalg.vector_norm(spectrum, dim=(-2, -1)), torch.linalg.vector_norm(x, dim=(-2, -1)), rtol=tol, atol=0
    )
    torch.testing.assert_close(lt.ifft(spectrum), x, rtol=tol, atol=tol)
    torch.testing.assert_close(lt.fft(lt.ifft(x)), x, rtol=tol, atol=tol)


COMPLEX_NUMBA_CASES = list(numba_cases(draw_complex))
# complex64 for a few (as float32 above): the convolution loops, the FFT solve and the DFT
COMPLEX64_CHECKED = {"conv_zero_2d", "solve_conv_circular_2d", "fft_1d", "ifft_2d", "dct_2d", "haar_1d"}


@pytest.mark.slow  # numba compiles every operator again for complex arguments
@pytest.mark.parametrize(
    "index", range(len(COMPLEX_NUMBA_CASES)), ids=[f"{case[0]}-{i}" for i, case in enumerate(COMPLEX_NUMBA_CASES)]
)
def test_numba_equals_torch_on_complex(index):
    name, args, expected = COMPLEX_NUMBA_CASES[index]
    ours = numba_functions("linops_numba")[name](*args)
    assert ours.dtype == np.complex128 and ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)
    if name in COMPLEX64_CHECKED:
        as_complex64 = tuple(a.astype(np.complex64) if np.iscomplexobj(a) else a for a in args)
        result64 = numba_functions("linops_numba")[name](*as_complex64)
        assert result64.dtype == np.complex64
        np.testing.assert_allclose(result64, expected, rtol=1e-4, atol=1e-4)


COMPLEX_COPY_CALLS = {
    "conv_circular": lambda f: f(BLUR[:3, :3].contiguous(), draw_complex((2, 6, 5), 0)),
    "conv_zero_adjoint": lambda f: f(BLUR, draw_complex((2, 6, 5), 0)),
    "conv_reflect": lambda f: f(BLUR, draw_complex((2, 6, 5), 0)),
    "solve_conv_circular": lambda f: f(BLUR[:3, :3].contiguous(), 0.5, draw_complex((2, 6, 5), 0)),
    "fft": lambda f: f(draw_complex((2, 6, 5), 0)),
}


@pytest.mark.parametrize("name", COMPLEX_COPY_CALLS)
def test_complex_path_runs_when_copied_alone(name):
    """The complex branch's helpers (``_by_parts``) travel with the copied function."""
    namespace = {"torch": torch, "Tensor": Tensor}
    for source in helper_sources("linops_torch", [name]):
        exec(source, namespace)
    ours, expected = COMPLEX_COPY_CALLS[name](namespace[name]), COMPLEX_COPY_CALLS[name](getattr(lt, name))
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
