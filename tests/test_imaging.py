"""Operators and images in specs: gradients, step sizes and the imaging examples.

- the derived gradient of every linear operator (the adjoint applied to the residual, never a
  matrix) equals torch.autograd's on the generated objective;
- ``lipschitz(x)`` against the dense Hessian's largest eigenvalue on small images: exact forms to
  1e-10, finite-difference bounds above it, power iteration in [true, 1.10 true];
- every example of specs/deblur.unf and specs/imaging.unf, untrained, equals a hand-written
  numpy/scipy reference (tests/imaging_reference.py: scipy.ndimage, pywt, scipy.fft) in float64;
- numba = torch for these examples: tests/test_emitted_kernels.py runs every example with kernels.
"""

from __future__ import annotations

from pathlib import Path

import imaging_reference as ref
import numpy as np
import pytest
import torch
from helpers import load_class, stacked

ROOT = Path(__file__).resolve().parents[1]
DEBLUR = (ROOT / "specs" / "deblur.unf").read_text(encoding="utf-8")
IMAGING = (ROOT / "specs" / "imaging.unf").read_text(encoding="utf-8")
SIZE = 16
BATCH = 2


def gaussian(size: int, sigma: float) -> np.ndarray:
    axis = np.arange(size) - size // 2
    kernel = np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * sigma**2))
    return kernel / kernel.sum()


def images(seed: int, size: int = SIZE, batch: int = BATCH) -> np.ndarray:
    """Smooth random images: a blurred noise field plus a step, in [0, 1]-ish."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(batch, size, size))
    fields = np.stack([ref.conv(gaussian(5, 1.5), image) for image in noise])
    fields[:, size // 2 :, :] += 0.5
    return fields


def tensor(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(array, dtype=torch.float64)


# ------------------------------------------------------------------ gradients vs autograd

OPERATOR_PROBLEMS = {
    "conv": ("data k : real[3, 3]", "conv(k, x)", "real[h, w]"),
    "conv_adj": ("data k : real[3, 3]", "conv_adj(k, x)", "real[h, w]"),
    "conv_zero": ("data k : real[3, 3]", "conv_zero(k, x)", "real[h, w]"),
    "conv_zero_adj": ("data k : real[3, 3]", "conv_zero_adj(k, x)", "real[h, w]"),
    "conv_reflect": ("data k : real[4, 3]", "conv_reflect(k, x)", "real[h, w]"),
    "conv_reflect_adj": ("data k : real[4, 3]", "conv_reflect_adj(k, x)", "real[h, w]"),
    "grad2": ("", "grad2(x)", "real[2, h, w]"),
    "dct": ("", "dct(x)", "real[h, w]"),
    "idct": ("", "idct(x)", "real[h, w]"),
    "haar": ("", "haar(x, 2)", "real[h, w]"),
    "ihaar": ("", "ihaar(x, 2)", "real[h, w]"),
    "down": ("", "down(x, 2)", "real[h/2, w/2]"),
    "solve_conv": ("data k : real[3, 3]", "solve_conv(k, 0.3, x)", "real[h, w]"),
    "composition": ("data k : real[3, 3]", "dct(conv(k, x)) + 2 * haar(x, 1)", "real[h, w]"),
}
VECTOR_PROBLEMS = {
    "conv_1d": ("data k : real[3]", "conv(k, x)"),
    "conv_zero_1d": ("data k : real[3]", "conv_zero(k, x)"),
    "diff": ("", "diff(x)"),
    "diff_adj": ("", "diff_adj(x)"),
    "dct_1d": ("", "dct(x)"),
    "haar_1d": ("", "haar(x, 2)"),
    "up_1d": ("", "up(x, 2)"),
}


def gradient_spec(data: str, model: str, y_type: str, x_type: str = "real[h, w]", dims: str = "h, w") -> str:
    return f"""
problem p {{
    dim {dims}
    {data}
    input y : {y_type}
    var x : {x_type} = 0
    minimize 0.5 * sumsq({model} - y)
}}
unfold gd from p {{
    layers 2
    hyper mu : real = 1
    iterate {{ x = x - mu * grad(x) }}
}}
"""


def check_gradient(cls, data: dict, y: torch.Tensor) -> None:
    model = cls(**data, dtype=torch.float64)
    iterates = model(y, return_iterates=True)
    x1 = iterates[0].detach().requires_grad_(True)
    objective = model.objective(y, x1).sum()
    (autograd,) = torch.autograd.grad(objective, x1)
    np.testing.assert_allclose((x1 - autograd).detach().numpy(), iterates[1].detach().numpy(), atol=1e-12)


@pytest.mark.parametrize("name", list(OPERATOR_PROBLEMS))
def test_image_operator_gradient_equals_autograd(name):
    data_decl, model_expr, y_type = OPERATOR_PROBLEMS[name]
    cls = load_class(gradient_spec(data_decl, model_expr, y_type))
    rng = np.random.default_rng(1)
    data = {}
    if data_decl:
        shape = (4, 3) if "4, 3" in data_decl else (3, 3)
        data["k"] = tensor(rng.normal(size=shape))
    y_shape = {"real[h, w]": (SIZE, SIZE), "real[2, h, w]": (2, SIZE, SIZE), "real[h/2, w/2]": (SIZE // 2, SIZE // 2)}
    check_gradient(cls, data, tensor(rng.normal(size=(BATCH, *y_shape[y_type]))))


@pytest.mark.parametrize("name", list(VECTOR_PROBLEMS))
def test_vector_operator_gradient_equals_autograd(name):
    data_decl, model_expr = VECTOR_PROBLEMS[name]
    y_type = "real[2*n]" if model_expr.startswith("up") else "real[n]"
    cls = load_class(gradient_spec(data_decl, model_expr, y_type, "real[n]", "n"))
    rng = np.random.default_rng(2)
    data = {"k": tensor(rng.normal(size=3))} if data_decl else {}
    rows = 2 * SIZE if model_expr.startswith("up") else SIZE
    check_gradient(cls, data, tensor(rng.normal(size=(BATCH, rows))))


def test_adjoint_of_a_linear_expression_is_the_vector_jacobian_product():
    cls = load_class(
        """
problem p {
    dim h, w
    data k : real[3, 3]
    input y : real[h, w]
    input r : real[2, h, w]
    var x : real[h, w] = y
    minimize 0.5 * sumsq(x - y)
}
unfold u from p {
    layers 1
    iterate { x = adjoint[grad2(conv(k, x)) - 0.5 * grad2(dct(x))](r) }
}
"""
    )
    rng = np.random.default_rng(3)
    k = tensor(rng.normal(size=(3, 3)))
    model = cls(k=k, dtype=torch.float64)
    x = tensor(rng.normal(size=(BATCH, SIZE, SIZE))).requires_grad_(True)
    r = tensor(rng.normal(size=(BATCH, 2, SIZE, SIZE)))
    result = model(x.detach(), r)
    from unfoldgen import linops_torch as ops  # autograd through the forward operators

    forward = ops.grad2(ops.conv_circular(k, x)) - 0.5 * ops.grad2(ops.dct(x))
    (vjp,) = torch.autograd.grad(forward, x, r)
    np.testing.assert_allclose(result.detach().numpy(), vjp.numpy(), atol=1e-12)


# ------------------------------------------------------------------ step sizes

LIPSCHITZ_CASES = {
    # name: (data declarations, smooth part, expected method)
    "conv_circular": ("data k : real[5, 5]", "0.5 * sumsq(conv(k, x) - y)", "exact"),
    "scaled_conv": ("data k : real[5, 5]", "2 * sumsq(conv(k, x) - y)", "exact"),
    "dct": ("", "0.5 * sumsq(dct(x) - y)", "exact"),
    "haar_then_conv": ("data k : real[5, 5]", "0.5 * sumsq(conv(k, haar(x, 1)) - y)", "exact"),
    "down": ("", "0.5 * sumsq(down(x, 2) - z)", "exact"),
    "mask": ("input M : real[h, w]", "0.5 * sumsq(M * x - y)", "exact"),
    "grad2": ("", "0.5 * sumsq(grad2(x))", "bound"),
    "conv_zero": ("data k : real[5, 5]", "0.5 * sumsq(conv_zero(k, x) - y)", "power"),
    "superres": ("data k : real[5, 5]", "0.5 * sumsq(down(conv(k, x), 2) - z)", "power"),
    "sum_of_terms": ("data k : real[5, 5]", "0.5 * sumsq(conv(k, x) - y) + 0.3 * sumsq(grad2(x))", "power"),
}


def lipschitz_model(data_decl: str, smooth: str):
    text = f"""
problem p {{
    dim h, w
    {data_decl}
    input y : real[h, w]
    input z : real[h/2, w/2]
    var x : real[h, w] = 0
    minimize {smooth} + 0 * sum(z) + 0 * sum(y)
}}
unfold gd from p {{
    layers 1
    hyper mu : real = 1 / lipschitz(x)
    iterate {{ x = x - mu * grad(x) }}
}}
"""
    return load_class(text), text


@pytest.mark.parametrize("name", list(LIPSCHITZ_CASES))
def test_lipschitz_against_the_dense_eigenvalue(name):
    data_decl, smooth, method = LIPSCHITZ_CASES[name]
    cls, text = lipschitz_model(data_decl, smooth)
    rng = np.random.default_rng(4)
    size = 8
    data = {"k": tensor(gaussian(5, 1.0) + 0.05 * rng.normal(size=(5, 5)))} if "data k" in data_decl else {}
    model = cls(**data, h=size, w=size, dtype=torch.float64)  # the step depends on the image size
    mask = tensor(rng.integers(0, 2, size=(1, size, size)) * rng.uniform(0.5, 1.5, size=(1, size, size)))
    inputs = {"y": tensor(rng.normal(size=(1, size, size))), "z": tensor(rng.normal(size=(1, size // 2, size // 2)))}
    if "M" in data_decl:
        inputs["M"] = mask
    prepared = model.prepare_inputs(**inputs)
    computed = float(model.lipschitz_x(prepared).reshape(-1)[0])

    def objective(x):
        return model.objective(**inputs, x=x.reshape(1, size, size)).sum()

    hessian = torch.autograd.functional.hessian(objective, torch.zeros(size * size, dtype=torch.float64))
    true = float(torch.linalg.eigvalsh(hessian).max())
    assert f"lipschitz(x)  {method}" in _explain(text)
    if method == "exact":
        assert computed == pytest.approx(true, rel=1e-10)
    elif method == "bound":
        assert true <= computed <= 8.0 + 1e-12
    else:
        assert true <= computed <= 1.10 * true


def _explain(text: str) -> str:
    from unfoldgen.compiler import check_text
    from unfoldgen.explain import explain_lowered
    from unfoldgen.lower import lower

    return explain_lowered([lower(unfold) for unfold in check_text(text, "spec.unf").unfolds])


# ------------------------------------------------------------------ the examples, untrained


def deblur_inputs(seed: int):
    k = gaussian(9, 1.6)
    clean = images(seed)
    rng = np.random.default_rng(seed + 100)
    y = np.stack([ref.conv(k, image) for image in clean]) + 0.01 * rng.normal(size=clean.shape)
    return k, y


def run(cls, data: dict, **inputs) -> tuple[torch.nn.Module, np.ndarray]:
    """Build (every example image is SIZE×SIZE: the step sizes read h and w) and run, in float64."""
    sizes = {"h": SIZE, "w": SIZE}
    model = cls(**{name: tensor(value) for name, value in data.items()}, **sizes, dtype=torch.float64)
    with torch.no_grad():
        out = model(**{name: tensor(value) for name, value in inputs.items()})
    return model, out.numpy()


@pytest.mark.parametrize("unfold", ["deblur_ista", "deblur_fista"])
def test_deblur_haar_equals_reference(unfold):
    k, y = deblur_inputs(5)
    model, out = run(load_class(DEBLUR, unfold), {"k": k}, y=y)
    mu = float(stacked(model.mu).reshape(-1)[0])
    assert mu == pytest.approx(1 / np.max(np.abs(ref.kernel_spectrum(k, (SIZE, SIZE))) ** 2), rel=1e-12)
    reference = ref.deblur_ista if unfold == "deblur_ista" else ref.deblur_fista
    expected = np.stack([reference(k, image, 0.002, 8, mu) for image in y])
    np.testing.assert_allclose(out, expected, atol=1e-10)


@pytest.mark.parametrize("unfold", ["deblur_cp", "deblur_cp_kernels", "deblur_cp_corrected"])
def test_deblur_chambolle_pock_equals_reference(unfold):
    k, y = deblur_inputs(6)
    _, out = run(load_class(DEBLUR, unfold), {"k": k}, y=y)
    expected = np.stack([ref.deblur_cp(k, image, 0.002, 8) for image in y])
    np.testing.assert_allclose(out, expected, atol=1e-10)


def test_hqs_x_step_is_the_fourier_solve():
    k, y = deblur_inputs(7)
    model, _ = run(load_class(DEBLUR, "deblur_hqs"), {"k": k}, y=y)
    with torch.no_grad():
        first = model(tensor(y), return_iterates=True)[0].numpy()
    z = np.stack([ref.conv_adj(k, image) for image in y])
    expected = np.stack([ref.hqs_x_step(k, image, 0.01, start) for image, start in zip(y, z, strict=True)])
    np.testing.assert_allclose(first, expected, atol=1e-10)


def test_tv_denoising_equals_reference():
    y = images(8) + 0.1 * np.random.default_rng(8).normal(size=(BATCH, SIZE, SIZE))
    _, out = run(load_class(IMAGING, "tv_cp"), {}, y=y)
    np.testing.assert_allclose(out, np.stack([ref.tv_cp(image, 0.05, 10) for image in y]), atol=1e-10)


def test_inpainting_equals_reference():
    rng = np.random.default_rng(9)
    clean = images(9)
    mask = (rng.uniform(size=clean.shape) < 0.6).astype(float)
    _model, out = run(load_class(IMAGING, "inpaint_ista"), {}, M=mask, y=mask * clean)
    expected = np.stack([ref.inpaint_ista(m, image, 0.01, 12) for m, image in zip(mask, mask * clean, strict=True)])
    np.testing.assert_allclose(out, expected, atol=1e-10)


def test_superresolution_equals_reference():
    k = gaussian(5, 1.0)
    clean = images(10)
    y = np.stack([ref.conv(k, image)[::4, ::4] for image in clean])
    model, out = run(load_class(IMAGING, "superres_ista"), {"k": k}, y=y)
    assert out.shape == (BATCH, SIZE, SIZE)
    mu = float(stacked(model.mu).reshape(-1)[0])
    true = ref.lipschitz_dense(lambda v: ref.conv_adj(k, _up(ref.conv(k, v)[::4, ::4], 4)), (SIZE, SIZE))
    assert 1 / (1.10 * true) <= mu <= 1 / true
    expected = np.stack([ref.superres_ista(k, image, 0.001, 10, mu) for image in y])
    np.testing.assert_allclose(out, expected, atol=1e-10)


def _up(v: np.ndarray, factor: int) -> np.ndarray:
    out = np.zeros((v.shape[0] * factor, v.shape[1] * factor))
    out[::factor, ::factor] = v
    return out


def test_measure_is_the_forward_model():
    k, _y = deblur_inputs(11)
    cls = load_class(DEBLUR, "deblur_cp")
    assert cls.MEASURED == ("y",)
    model = cls(k=tensor(k), h=SIZE, w=SIZE, dtype=torch.float64)
    clean = images(11)
    measured = model.measure(x=tensor(clean))["y"].numpy()
    np.testing.assert_allclose(measured, np.stack([ref.conv(k, image) for image in clean]), atol=1e-12)
