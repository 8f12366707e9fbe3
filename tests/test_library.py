"""Every entry of the library, in every backend it names, against an independent reference.

The entries are the functions (unfoldgen.functions), the proximal operators and projection sets
(unfoldgen.prox) and the net kinds (unfoldgen.nets). Each is run the way generated code runs it:
functions printed by the torch and numba printers (after the entry's own desugaring), operators
and nets from the sources the compiler copies. References are numpy/scipy definitions, numerical
argmins (tests/argmin.py) and torch.autograd. A backend an entry says it lacks (None) is skipped
with that reason; a new entry without a reference here fails ``test_every_entry_has_a_reference``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
from pathlib import Path

import imaging_reference
import numba
import numpy as np
import pytest
import pywt
import scipy.fft
import scipy.ndimage
import scipy.special
import torch
from argmin import (
    qam_constellation,
    ref_block_soft_threshold,
    ref_block_soft_threshold_nonneg,
    ref_complex_block_soft_threshold,
    ref_complex_proj_ball2,
    ref_complex_proj_ball21,
    ref_complex_proj_box,
    ref_complex_prox_norm21,
    ref_complex_soft_threshold,
    ref_complex_svt,
    ref_hard_threshold,
    ref_proj_ball1,
    ref_proj_ball2,
    ref_proj_box,
    ref_proj_nonneg,
    ref_proj_qam,
    ref_proj_simplex,
    ref_prox_norm21,
    ref_prox_norminf,
    ref_soft_threshold,
    ref_soft_threshold_nonneg,
    ref_svt,
)
from helpers import load_package

from unfoldgen import ir, nets_torch, ops_torch
from unfoldgen.emit import helper_sources
from unfoldgen.functions import FUNCTIONS, elementwise_derivative
from unfoldgen.nets import NET_KINDS
from unfoldgen.printers import NumbaPrinter, NumbaUnsupportedError, TorchPrinter
from unfoldgen.prox import PROX_TABLE, SET_TABLE, SetOp

BATCH = 3
SCALES = (0.15, 0.6, 1.0, 2.5)  # small: everything thresholded / inside; large: barely touched


@functools.cache
def numba_helpers(names: tuple[str, ...]) -> dict:
    """Functions of ops_numba (and what they call), compiled as kernels compile them."""
    namespace = {"np": np, "numba": numba}
    for source in helper_sources("ops_numba", list(names), "@numba.njit\n"):
        exec(source, namespace)  # the compiler's own helper source, as kernels.py holds it
    return namespace


@functools.cache
def linops_numba_helpers() -> dict:
    """Every function of linops_numba, compiled once for the session, as kernels compile them."""
    namespace = {"np": np, "numba": numba}
    for source in helper_sources("linops_numba", sorted(defined("linops_numba")), "@numba.njit\n"):
        exec(source, namespace)
    return namespace


def defined(module: str) -> set[str]:
    """Top-level functions and classes of a module of the package (what the compiler copies)."""
    loaded = importlib.import_module(f"unfoldgen.{module}")
    return {
        name
        for name, value in vars(loaded).items()
        if (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == loaded.__name__
    }


# ------------------------------------------------------------------------ functions

# per sample: references take numpy blocks (r, c) and numbers
HUBER_DELTA = 0.7


def _huber(v: np.ndarray, delta: float) -> np.ndarray:
    return np.where(np.abs(v) <= delta, 0.5 * v * v, delta * (np.abs(v) - 0.5 * delta))


# name -> (reference on one sample, kinds of the arguments). Kinds: v a per-sample block, pos a
# positive one, sparse one with zeros, z a complex one, s/lo/hi a number, Q a data matrix, M a
# per-sample square matrix
FUNCTION_REFERENCES = {
    "exp": (np.exp, ("v",)),
    "log": (np.log, ("pos",)),
    "sqrt": (np.sqrt, ("pos",)),
    "tanh": (np.tanh, ("v",)),
    "sigmoid": (scipy.special.expit, ("v",)),
    "softplus": (lambda v: np.logaddexp(0.0, v), ("v",)),
    "huber_elem": (_huber, ("v", "s")),
    "clip": (np.clip, ("v", "lo", "hi")),
    "abs": (np.abs, ("v",)),
    "sign": (np.sign, ("v",)),
    "max": (np.maximum, ("v", "s")),
    "min": (np.minimum, ("v", "s")),
    "sum": (np.sum, ("v",)),
    "logsumexp": (scipy.special.logsumexp, ("v",)),
    "softmax": (lambda v: scipy.special.softmax(v.ravel()).reshape(v.shape), ("v",)),
    "sumsq": (lambda v: np.sum(v * v), ("v",)),
    "dot": (lambda u, v: np.sum(u * v), ("v", "v")),
    "quad": (lambda v, q: (v.T @ q @ v).item(), ("v", "Q")),
    "huber": (lambda v, delta: _huber(v, delta).sum(), ("v", "s")),
    "norm1": (lambda v: np.abs(v).sum(), ("v",)),
    "norm2": (np.linalg.norm, ("v",)),
    "norminf": (lambda v: np.abs(v).max(), ("v",)),
    "norm0": (np.count_nonzero, ("sparse",)),
    "nuclear": (lambda v: np.linalg.svd(v, compute_uv=False).sum(), ("v",)),
    "opnorm": (lambda v: np.linalg.norm(v, 2), ("v",)),
    "solve": (np.linalg.solve, ("M", "v")),
    "conj": (np.conj, ("z",)),
    "re": (np.real, ("z",)),
    "im": (np.imag, ("z",)),
    "angle": (np.angle, ("z",)),
    "abs2": (lambda z: np.abs(z) ** 2, ("z",)),
}
FUNCTION_REFERENCES["norm21"] = (lambda v: np.sqrt((v * v).sum(axis=0)).sum(), ("v",))
FUNCTION_REFERENCES["max_abs"] = (lambda v: np.abs(v).max(), ("v",))
NUMBERS = {"v": 0.8, "pos": 1.3, "sparse": -0.4, "s": HUBER_DELTA, "lo": -0.4, "hi": 0.6}
SAMPLE_SHAPES = [(4, 1), (2, 3)]  # a vector and a matrix per sample


def function_arguments(name: str, shape: tuple[int, int], seed: int) -> list:
    """(B, r, c) arrays for per-sample kinds, numbers and data matrices as they are."""
    rng = np.random.default_rng([seed, *shape])
    args = []
    for kind in FUNCTION_REFERENCES[name][1]:
        match kind:
            case "v":
                args.append(rng.normal(size=(BATCH, *shape)) * 1.5)
            case "z":
                args.append(rng.normal(size=(BATCH, *shape)) + 1j * rng.normal(size=(BATCH, *shape)))
            case "pos":
                args.append(np.exp(rng.normal(size=(BATCH, *shape))))
            case "sparse":
                args.append(rng.normal(size=(BATCH, *shape)) * (rng.uniform(size=(BATCH, *shape)) < 0.5))
            case "Q":
                half = rng.normal(size=(shape[0], shape[0]))
                args.append(half @ half.T)
            case "M":
                args.append(rng.normal(size=(BATCH, shape[0], shape[0])) + 3 * np.eye(shape[0]))
            case _:
                args.append(NUMBERS[kind])
    return args


def function_shapes(name: str) -> list[tuple[int, int]]:
    if name in ("quad", "solve"):  # a vector x (and its square matrix)
        return [(4, 1)]
    return SAMPLE_SHAPES


def arg_shape(value, shape: tuple[int, int]) -> ir.Shape:
    if isinstance(value, float):
        return ir.SCALAR
    return tuple(value.shape[-2:])


def call_ir(name: str, args: list, shape: tuple[int, int]) -> ir.Expr:
    """The IR a spec's call becomes: the entry's own desugaring, if it has one."""
    refs = tuple(
        ir.Ref(f"a{i}", "input", arg_shape(value, shape), complex=bool(np.iscomplexobj(value)))
        for i, value in enumerate(args)
    )
    entry = FUNCTIONS[name]
    result_shape = entry.shape([ref.shape for ref in refs])
    if entry.desugar is not None:
        return entry.desugar(refs, result_shape)
    return ir.Apply(name, refs, result_shape)


def reference_values(name: str, args: list) -> np.ndarray:
    """The reference per sample, stacked: (B, ...) arrays for per-sample arguments."""
    reference = FUNCTION_REFERENCES[name][0]
    per_sample = [isinstance(a, np.ndarray) and a.ndim == 3 for a in args]
    return np.stack(
        [
            np.asarray(reference(*(a[b] if p else a for a, p in zip(args, per_sample, strict=True))))
            for b in range(BATCH)
        ]
    )


def run_torch(expr: ir.Expr, args: list) -> torch.Tensor:
    """The torch code the compiler prints for ``expr``, run with only the helpers the entries name."""
    printer = TorchPrinter(net_call=str, lipschitz_call=str, per_sample=frozenset({"a0", "a1", "a2"}))
    code = printer(expr)
    helpers = [*printer.helpers]
    for node in ir.walk(expr):
        if isinstance(node, ir.Apply):
            helpers += FUNCTIONS[node.func].torch_helpers
    # the compiler's own helper sources, as generated modules hold them
    namespace = {"torch": torch, "Tensor": torch.Tensor, "dtype": torch.float64, "device": torch.device("cpu")}
    for module in ("runtime_torch", "linops_torch"):
        names = [h for h in dict.fromkeys(helpers) if h in defined(module)]
        for source in helper_sources(module, names) if names else []:
            exec(source, namespace)
    for i, value in enumerate(args):
        namespace[f"a{i}"] = torch.tensor(value) if isinstance(value, np.ndarray) else value
    return eval(code, namespace)


def run_numba(expr: ir.Expr, args: list, batched: bool) -> np.ndarray:
    """Batched: samples are the columns of one array; per-sample: one call per sample."""
    per_sample = frozenset(f"a{i}" for i, value in enumerate(args) if isinstance(value, np.ndarray) and value.ndim == 3)
    code = NumbaPrinter(per_sample, batched)(expr)
    helpers = tuple(
        dict.fromkeys(
            name
            for node in ir.walk(expr)
            if isinstance(node, ir.Apply) and node.func in FUNCTIONS
            for name in (*FUNCTIONS[node.func].numba_helpers, "as_column")
        )
    )
    namespace = dict(numba_helpers(helpers))
    params = ", ".join(f"a{i}" for i in range(len(args)))
    first = next(f"a{i}" for i, value in enumerate(args) if isinstance(value, np.ndarray))
    # the names the emitted kernels give the real dtype and its scalar type
    source = f"def kernel({params}):\n    _dtype = {first}.dtype\n    _F = _dtype.type\n    return {code}\n"
    exec(source, namespace)
    kernel = numba.njit(namespace["kernel"])
    if batched:
        columns = [a.reshape(BATCH, -1).T.copy() if a.ndim == 3 else a for a in map(np.asarray, args)]
        out = np.asarray(kernel(*[c if c.ndim else float(c) for c in columns]))
        return out.T
    outs = []
    for b in range(BATCH):
        sample = [a[b] if isinstance(a, np.ndarray) and a.ndim == 3 else a for a in args]
        outs.append(np.asarray(kernel(*sample)))
    return np.stack(outs)


def function_cases():
    for name in FUNCTIONS:
        if FUNCTIONS[name].kind == "linear" or name == "conv_norm2":
            continue  # tested below with their own shapes
        for shape in function_shapes(name):
            yield pytest.param(name, shape, id=f"{name}-{shape[0]}x{shape[1]}")


def test_every_entry_has_a_reference():
    assert set(FUNCTION_REFERENCES) | set(LINEAR_REFERENCES) | {"conv_norm2"} == set(FUNCTIONS)
    assert set(PROX_REFERENCES) == set(PROX_TABLE)
    assert set(SET_REFERENCES) == set(SET_TABLE)


def test_every_named_implementation_exists():
    """Each entry's torch and numba names are functions of the modules the compiler copies."""
    torch_ops, numba_ops = defined("ops_torch"), defined("ops_numba")
    runtime, net_classes = defined("runtime_torch"), defined("nets_torch")
    linops_torch, linops_numba = defined("linops_torch"), defined("linops_numba")
    for entry in FUNCTIONS.values():
        assert set(entry.torch_helpers) <= (linops_torch if entry.torch_module == "linops_torch" else runtime), (
            entry.name
        )
        assert set(entry.numba_helpers) <= (linops_numba if entry.kind == "linear" else numba_ops), entry.name
    for entry in [*PROX_TABLE.values(), *SET_TABLE.values()]:
        assert entry.torch in torch_ops, entry.key
        assert entry.numba is None or entry.numba in numba_ops, entry.key
    for kind in NET_KINDS.values():
        assert kind.external or kind.torch in net_classes, kind.name
        assert kind.numba is None or kind.numba.forward in numba_ops, kind.name


@pytest.mark.parametrize("name, shape", list(function_cases()))
def test_function_torch(name, shape):
    entry = FUNCTIONS[name]
    args = function_arguments(name, shape, seed=0)
    expr = call_ir(name, args, shape)
    if entry.torch is None:
        assert entry.desugar is not None, f"{name}: no torch form and no desugaring"
    ours = run_torch(expr, args).resolve_conj().numpy()  # torch.conj is a lazy view
    expected = reference_values(name, args)
    np.testing.assert_allclose(ours.reshape(expected.shape), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, shape", list(function_cases()))
def test_function_numba(name, shape):
    """Vectors in the batched layout (samples are columns), matrices per sample."""
    entry = FUNCTIONS[name]
    if entry.numba is None and entry.desugar is None:
        pytest.skip(f"{name}: the entry has no numba form (compile notes it and emits no kernel)")
    batched = shape[1] == 1 and "M" not in FUNCTION_REFERENCES[name][1]
    args = function_arguments(name, shape, seed=1)
    expr = call_ir(name, args, shape)
    try:
        ours = run_numba(expr, args, batched)
    except NumbaUnsupportedError as err:
        pytest.skip(f"{name}: the numba printer refuses this layout ({err}); compile notes it")
    expected = reference_values(name, args)
    np.testing.assert_allclose(ours.reshape(expected.shape), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_function_folds_numbers(name):
    entry = FUNCTIONS[name]
    if not entry.foldable:
        pytest.skip(f"{name}: the entry has no value at build time (neither fold nor sympy)")
    kinds = FUNCTION_REFERENCES[name][1]
    numbers = [NUMBERS[kind] for kind in kinds]
    blocks = [np.array([[n]]) if kind in ("v", "pos", "sparse") else n for n, kind in zip(numbers, kinds, strict=True)]
    expected = FUNCTION_REFERENCES[name][0](*blocks)
    assert entry.evaluate(*numbers) == pytest.approx(float(np.asarray(expected).ravel()[0]), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", [name for name, entry in FUNCTIONS.items() if entry.kind == "elementwise"])
def test_function_derivative(name):
    """φ′ built from the entry's symbolic definition, printed as torch, equals autograd of φ."""
    entry = FUNCTIONS[name]
    if entry.sympy is None or not entry.smooth:
        pytest.skip(f"{name}: not differentiable (the smooth part of an objective refuses it)")
    args = function_arguments(name, (4, 1), seed=2)
    refs = tuple(ir.Ref(f"a{i}", "input", arg_shape(value, (4, 1))) for i, value in enumerate(args))
    derivative = run_torch(elementwise_derivative(name, refs), args).numpy()
    x = torch.tensor(args[0], requires_grad=True)
    value = run_torch(ir.Apply(name, refs, refs[0].shape), [x, *args[1:]])
    (grad,) = torch.autograd.grad(value.sum(), x)
    np.testing.assert_allclose(np.broadcast_to(derivative, grad.shape), grad.numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ linear operators


def _dense(forward, shape):
    """The matrix of a linear map on arrays of ``shape``, column by column."""
    size = int(np.prod(shape))
    return np.stack([np.ravel(forward(np.eye(size)[j].reshape(shape))) for j in range(size)], axis=1)


def _transposed(forward, in_shape):
    """The exact adjoint of a reference map: its dense matrix, transposed."""

    def adjoint(r):
        return (_dense(forward, in_shape).T @ r.ravel()).reshape(in_shape)

    return adjoint


def _haar(v, levels):
    if v.shape[1] == 1:  # a column: the 1-D transform along it
        return np.concatenate(pywt.wavedec(v[:, 0], "haar", level=levels, mode="periodization"))[:, None]
    return imaging_reference.haar(v, levels)


def _up(v, s):
    out = np.zeros((v.shape[0] * s, v.shape[1] if v.shape[1] == 1 else v.shape[1] * s))
    out[::s, :: (1 if v.shape[1] == 1 else s)] = v
    return out


def _diff(v):
    out = np.zeros_like(v)
    out[:-1] = np.diff(v, axis=0)
    return out


# name -> (reference on one sample and the other arguments, per-sample input shapes to try)
KERNEL = {
    "image": np.array([[0.1, 0.2, 0.0], [0.3, 1.0, -0.2], [0.05, 0.1, 0.4]]),
    "column": np.array([[0.2], [1.0], [-0.3]]),
}
IMAGE, COLUMN, LEVELS, FACTOR = (4, 6), (8, 1), 1, 2
LINEAR_REFERENCES = {
    "conv": (lambda k, v: scipy.ndimage.convolve(v, k, mode="wrap"), "kernel", [IMAGE, COLUMN]),
    "conv_adj": (lambda k, v: scipy.ndimage.correlate(v, k, mode="wrap"), "kernel", [IMAGE, COLUMN]),
    "conv_zero": (lambda k, v: scipy.ndimage.convolve(v, k, mode="constant"), "kernel", [IMAGE, COLUMN]),
    "conv_zero_adj": (lambda k, v: scipy.ndimage.correlate(v, k, mode="constant"), "kernel", [IMAGE, COLUMN]),
    "conv_reflect": (lambda k, v: scipy.ndimage.convolve(v, k, mode="reflect"), "kernel", [IMAGE, COLUMN]),
    "conv_reflect_adj": (
        lambda k, v: _transposed(lambda u: scipy.ndimage.convolve(u, k, mode="reflect"), v.shape)(v),
        "kernel",
        [IMAGE, COLUMN],
    ),
    "diff": (_diff, None, [COLUMN]),
    "diff_adj": (lambda v: _transposed(_diff, v.shape)(v), None, [COLUMN]),
    "grad2": (imaging_reference.grad2, None, [IMAGE]),
    "div2": (imaging_reference.div2, None, [(2, *IMAGE)]),
    "down": (lambda v, s: v[::s, :: (1 if v.shape[1] == 1 else s)], "factor", [IMAGE, COLUMN]),
    "up": (_up, "factor", [IMAGE, COLUMN]),
    "dct": (lambda v: scipy.fft.dctn(v, norm="ortho"), None, [IMAGE, COLUMN]),
    "idct": (lambda v: scipy.fft.idctn(v, norm="ortho"), None, [IMAGE, COLUMN]),
    "fft": (lambda v: np.fft.fft2(v, norm="ortho"), None, [IMAGE, COLUMN]),
    "ifft": (lambda v: np.fft.ifft2(v, norm="ortho"), None, [IMAGE, COLUMN]),
    "haar": (_haar, "levels", [IMAGE, COLUMN]),
    "ihaar": (lambda v, levels: _transposed(lambda u: _haar(u, levels), v.shape)(v), "levels", [IMAGE, COLUMN]),
    "solve_conv": (lambda k, mu, v: imaging_reference.solve_conv(k, mu, v), "kernel+weight", [IMAGE]),
}


def linear_cases():
    """torch for every shape; numba once per entry (tests/test_linops.py runs every numba operator
    against torch on images, stacks and columns: compiling them all again here doubled the time)."""
    for name, (_, _, shapes) in LINEAR_REFERENCES.items():
        for shape in shapes:
            yield pytest.param(name, "torch", shape, id=f"{name}-torch-{'x'.join(map(str, shape))}")
        yield pytest.param(name, "numba", shapes[0], id=f"{name}-numba-{'x'.join(map(str, shapes[0]))}")


def linear_call(name: str, shape: tuple[int, ...]) -> tuple[ir.Expr, list, list]:
    """The IR of ``name`` on a per-sample argument of ``shape``: (expr, runtime values, reference args)."""
    rng = np.random.default_rng([7, *shape])
    v = rng.normal(size=(BATCH, *shape))
    entry = FUNCTIONS[name]
    sample = ir.Ref("a0", "input", shape)
    _, extra, _ = LINEAR_REFERENCES[name]
    if extra is None:
        return ir.Apply(name, (sample,), entry.shape([shape])), [v], []
    if extra in ("factor", "levels"):
        number = FACTOR if extra == "factor" else LEVELS
        args = (sample, ir.Const(float(number)))
        return ir.Apply(name, args, entry.shape_of_args(args) if entry.shape_of_args else shape), [v], [number]
    kernel = KERNEL["column" if shape[1] == 1 else "image"]
    refs = (ir.Ref("a1", "data", kernel.shape), sample)
    values, reference = [v, kernel], [kernel]
    if extra == "kernel+weight":
        refs = (ir.Ref("a1", "data", kernel.shape), ir.Const(0.3), sample)
        reference = [kernel, 0.3]
    return ir.Apply(name, refs, entry.shape([r.shape for r in refs])), values, reference


@pytest.mark.parametrize("name, backend, shape", list(linear_cases()))
def test_linear_operator(name, backend, shape):
    """Printed by the backend's printer, run on a batch (numba: one sample at a time, a column as
    one (n, 1) sample), against scipy / numpy / pywt; adjoint entries against the transposed matrix."""
    expr, values, reference_args = linear_call(name, shape)
    reference, _, _ = LINEAR_REFERENCES[name]
    if name in ("conv", "conv_adj", "conv_zero", "conv_zero_adj", "conv_reflect", "conv_reflect_adj", "solve_conv"):
        expected = np.stack([reference(*reference_args, sample) for sample in values[0]])
    else:
        expected = np.stack([reference(sample, *reference_args) for sample in values[0]])
    entry = FUNCTIONS[name]
    if backend == "torch":
        ours = run_torch(expr, values).numpy()
    else:
        template = entry.numba_column if shape[1] == 1 and len(shape) == 2 else entry.numba
        if template is None:
            pytest.skip(f"{name}: no numba form for this shape (compile notes it and emits no kernel)")
        try:
            code = NumbaPrinter(frozenset({"a0"}), batched=False)(expr)
        except NumbaUnsupportedError as err:
            pytest.skip(f"{name}: the numba printer refuses it ({err}); compile notes it")
        namespace = dict(linops_numba_helpers())
        params = ", ".join(f"a{i}" for i in range(len(values)))
        exec(f"def kernel({params}):\n    _F = a0.dtype.type\n    return {code}\n", namespace)
        kernel = numba.njit(namespace["kernel"])
        ours = np.stack([kernel(sample, *values[1:]) for sample in values[0]])
    np.testing.assert_allclose(ours.reshape(expected.shape), expected, rtol=1e-12, atol=1e-12)


def adjoint_entry_cases():
    """Every operator on real values; those that take complex ones (on_complex) on complex x and y too."""
    for name in LINEAR_REFERENCES:
        yield pytest.param(name, "real", id=f"{name}-real")
        if FUNCTIONS[name].on_complex in ("follow", "complex"):
            yield pytest.param(name, "complex", id=f"{name}-complex")


@pytest.mark.parametrize("name, values_kind", list(adjoint_entry_cases()))
def test_linear_operator_adjoint_entry(name, values_kind):
    """The entry's adjoint, applied by the chain rule, is the adjoint: ⟨A x, y⟩ = ⟨x, Aᴴ y⟩ with
    ⟨u, w⟩ = Σ conj(u) w (the transpose on real values)."""
    shape = LINEAR_REFERENCES[name][2][0]
    expr, values, _ = linear_call(name, shape)
    entry = FUNCTIONS[name]
    seed = ir.Ref("a2", "input", expr.shape)
    adjoint = entry.adjoint(expr.args, seed)
    rng = np.random.default_rng(11)
    y = rng.normal(size=(BATCH, *expr.shape))
    if values_kind == "complex":
        values[0] = values[0] + 1j * rng.normal(size=values[0].shape)
        y = y + 1j * rng.normal(size=y.shape)
    forward = run_torch(expr, values).numpy()
    extra = [values[1]] if len(values) > 1 else [0.0]
    backward = run_torch(adjoint, [values[0], *extra, y]).numpy()
    left = (forward.reshape(BATCH, -1).conj() * y.reshape(BATCH, -1)).sum(axis=1)
    right = (values[0].reshape(BATCH, -1).conj() * backward.reshape(BATCH, -1)).sum(axis=1)
    np.testing.assert_allclose(left, right, rtol=1e-12)


def test_conv_norm2_is_the_squared_operator_norm():
    kernel = KERNEL["image"]
    expr = ir.Apply("conv_norm2", (ir.Ref("a0", "data", (3, 3)), ir.Ref("a1", "data", (8, 8))), ir.SCALAR)
    ours = float(run_torch(expr, [kernel, np.zeros((8, 8))]))
    matrix = _dense(lambda u: scipy.ndimage.convolve(u, kernel, mode="wrap"), (8, 8))
    assert ours == pytest.approx(np.linalg.norm(matrix, 2) ** 2, rel=1e-12)


# ---------------------------------------------------------------- prox and projections

PROX_REFERENCES = {
    "norm1": ref_soft_threshold,
    "norm1+nonneg": ref_soft_threshold_nonneg,
    "norm2": ref_block_soft_threshold,
    "norm2+nonneg": ref_block_soft_threshold_nonneg,
    "norminf": ref_prox_norminf,
    "nuclear": ref_svt,  # takes the matrix itself
    "norm0": ref_hard_threshold,
    "norm21": lambda v, t: ref_prox_norm21(v if v.ndim == 2 else v[:, None], t).reshape(v.shape),  # the block
    "norm1 keep": lambda v, t, fraction: _soft_threshold_keep(v, t, fraction),  # the block
}
OPTION_VALUES = {"keep": 0.4}  # the value a test gives each prox option


def _soft_threshold_keep(v: np.ndarray, t: float, fraction: float, shrink=ref_soft_threshold) -> np.ndarray:
    """Support selection: the ⌊p·N + ½⌋ entries of largest magnitude, ranked by np.argsort (not by the
    implementations' count-th-magnitude rule), pass unchanged where |v| > t; the rest go through the
    argmin of t|u| + ½(u − v)² (``shrink``: over R^2n for complex v)."""
    flat = v.ravel()
    kept = np.zeros(flat.size, dtype=bool)
    kept[np.argsort(-np.abs(flat), kind="stable")[: int(np.floor(fraction * flat.size + 0.5))]] = True
    kept &= np.abs(flat) > t
    out = shrink(flat, t)
    out[kept] = flat[kept]
    return out.reshape(v.shape)


# set -> (reference projection, its parameters from a positive number p)
SET_REFERENCES = {
    "box": (ref_proj_box, lambda p: (-p, 2 * p)),
    "nonneg": (ref_proj_nonneg, lambda p: ()),
    "ball2": (ref_proj_ball2, lambda p: (p,)),
    "ball1": (ref_proj_ball1, lambda p: (p,)),
    "simplex": (ref_proj_simplex, lambda p: (p,)),
    "ball21": (lambda v, r: _proj_ball21(v, r), lambda p: (p,)),
    "qam": (ref_proj_qam, lambda p: (4.0 if p < 0.75 else 16.0,)),
}
GROUPED = ("nuclear", "norm21", "ball21", "norm1 keep")  # references that take the whole block, not its entries


def _proj_ball21(v: np.ndarray, r: float) -> np.ndarray:
    """Each column (a vector: the whole vector) scaled into the ball of radius r."""
    block = v if v.ndim == 2 else v[:, None]
    norms = np.sqrt((block * block).sum(axis=0, keepdims=True))
    return (block * np.minimum(1.0, r / np.maximum(norms, 1e-300))).reshape(v.shape)


BLOCKS = [(3, 1), (5, 1), (2, 3)]


def draw(shape, seed):
    """A random block v and a positive scalar parameter."""
    rng = np.random.default_rng([seed, *shape])
    return rng.normal(size=shape) * SCALES[seed], float(rng.uniform(0.3, 1.2))


def operator_cases(table: dict):
    for key in table:
        blocks = BLOCKS + ([(3, 2), (3, 3)] if key == "nuclear" else [])
        for backend, shape, seed in itertools.product(("torch", "numba"), blocks, range(len(SCALES))):
            yield pytest.param(key, backend, shape, seed, id=f"{key}-{backend}-{shape[0]}x{shape[1]}-{seed}")


def run_operator(entry, backend: str, v: np.ndarray, params: tuple[float, ...], real=np.float64) -> np.ndarray:
    """The entry on v, its scalar parameters of the ``real`` dtype (as kernels pass them)."""
    if backend == "torch":
        tensors = [torch.tensor(p, dtype=getattr(torch, np.dtype(real).name)) for p in params]
        return getattr(ops_torch, entry.torch)(torch.tensor(v), *tensors).numpy()
    if entry.numba is None:
        pytest.skip(f"{entry.key}: the entry has no numba function (compile notes it and emits no kernel)")
    if entry.per_column and v.shape[1] != 1:
        pytest.skip(f"{entry.key}: its numba function acts per column, so kernels use it on vectors only")
    function = numba_helpers((entry.numba,))[entry.numba]
    return function(np.ascontiguousarray(v), *map(real, params))


@pytest.mark.parametrize("key, backend, shape, seed", list(operator_cases(PROX_TABLE)))
def test_prox(key, backend, shape, seed):
    entry = PROX_TABLE[key]
    v, t = draw(shape, seed)
    options = tuple(OPTION_VALUES[option] for option in entry.options)
    ours = run_operator(entry, backend, v, (t, *options))
    reference = PROX_REFERENCES[key]
    expected = reference(v, t, *options) if key in GROUPED else reference(v.ravel(), t).reshape(shape)
    # the references are good to ~2e-8, so 1e-6 still catches a 1e-5 relative slip in t
    np.testing.assert_allclose(ours, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("key, backend, shape, seed", list(operator_cases(SET_TABLE)))
def test_projection(key, backend, shape, seed):
    entry = SET_TABLE[key]
    v, p = draw(shape, seed)
    reference, params = SET_REFERENCES[key]
    assert len(params(p)) == len(entry.params)
    ours = run_operator(entry, backend, v, params(p))
    given = v if key in GROUPED else v.ravel()
    np.testing.assert_allclose(ours, reference(given, *params(p)).reshape(shape), atol=1e-6, rtol=0)


# --------------------------------------------------- prox and projections of complex blocks

# key -> reference on the whole complex block (argmin over R^2n, tests/argmin.py)
COMPLEX_PROX_REFERENCES = {
    "norm1": ref_complex_soft_threshold,
    "norm1 keep": lambda v, t, fraction: _soft_threshold_keep(v, t, fraction, ref_complex_soft_threshold),
    "norm2": ref_complex_block_soft_threshold,
    "nuclear": ref_complex_svt,
    "norm0": lambda v, t: ref_hard_threshold(v.ravel(), t).reshape(v.shape),
    "norm21": lambda v, t: ref_complex_prox_norm21(v, t),
}
COMPLEX_SET_REFERENCES = {
    "box": (ref_complex_proj_box, lambda p: (-p, 2 * p)),
    "ball2": (ref_complex_proj_ball2, lambda p: (p,)),
    "ball21": (ref_complex_proj_ball21, lambda p: (p,)),
    "qam": (ref_proj_qam, lambda p: (4.0 if p < 0.75 else 16.0,)),
}
# tolerance against the references (good to ~2e-8) by precision: complex64 rounds at ~6e-8 relative
COMPLEX_TOLERANCES = {np.complex128: 1e-6, np.complex64: 1e-5}
COMPLEX_BLOCKS = [(3, 1), (2, 3)]


def test_complex_args_entries_have_complex_references():
    assert set(COMPLEX_PROX_REFERENCES) == {key for key, entry in PROX_TABLE.items() if entry.complex_args}
    assert set(COMPLEX_SET_REFERENCES) == {key for key, entry in SET_TABLE.items() if entry.complex_args}


def complex_draw(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, float]:
    """A random complex block (entries of modulus ~ SCALES[seed]) and a positive scalar parameter."""
    rng = np.random.default_rng([seed, *shape, 1])
    v = (rng.normal(size=shape) + 1j * rng.normal(size=shape)) * SCALES[seed] / np.sqrt(2)
    return v, float(rng.uniform(0.3, 1.2))


@functools.cache
def complex_expected(table: str, key: str, shape: tuple[int, int], seed: int) -> np.ndarray:
    """The reference result for ``complex_draw(shape, seed)``, shared by the backends and dtypes."""
    v, p = complex_draw(shape, seed)
    if table == "prox":
        options = tuple(OPTION_VALUES[option] for option in PROX_TABLE[key].options)
        return COMPLEX_PROX_REFERENCES[key](v, p, *options)
    reference, params = COMPLEX_SET_REFERENCES[key]
    return reference(v, *params(p))


def complex_cases(table: dict):
    for key, entry in table.items():
        if not entry.complex_args:
            continue
        blocks = COMPLEX_BLOCKS + ([(3, 2)] if key == "nuclear" else [])
        for backend, dtype, shape, seed in itertools.product(
            ("torch", "numba"), COMPLEX_TOLERANCES, blocks, range(len(SCALES))
        ):
            label = f"{key}-{backend}-{dtype.__name__}-{shape[0]}x{shape[1]}-{seed}"
            marks = pytest.mark.slow if backend == "numba" else ()  # numba compiles per entry and dtype
            yield pytest.param(key, backend, dtype, shape, seed, id=label, marks=marks)


def run_complex(entry, backend: str, v: np.ndarray, params: tuple[float, ...], dtype) -> np.ndarray:
    """The entry on v cast to ``dtype`` (parameters of its real dtype), its result of that dtype."""
    real = np.float32 if dtype == np.complex64 else np.float64
    ours = np.asarray(run_operator(entry, backend, v.astype(dtype), params, real))
    assert ours.dtype == dtype, f"{entry.key}: {ours.dtype} from a {np.dtype(dtype)} argument"
    return ours


@pytest.mark.parametrize("key, backend, dtype, shape, seed", list(complex_cases(PROX_TABLE)))
def test_prox_complex(key, backend, dtype, shape, seed):
    entry = PROX_TABLE[key]
    v, t = complex_draw(shape, seed)
    options = tuple(OPTION_VALUES[option] for option in entry.options)
    ours = run_complex(entry, backend, v, (t, *options), dtype)
    expected = complex_expected("prox", key, shape, seed)
    np.testing.assert_allclose(ours, expected, atol=COMPLEX_TOLERANCES[dtype], rtol=0)


@pytest.mark.parametrize("key, backend, dtype, shape, seed", list(complex_cases(SET_TABLE)))
def test_projection_complex(key, backend, dtype, shape, seed):
    entry = SET_TABLE[key]
    v, p = complex_draw(shape, seed)
    ours = run_complex(entry, backend, v, COMPLEX_SET_REFERENCES[key][1](p), dtype)
    expected = complex_expected("set", key, shape, seed)
    np.testing.assert_allclose(ours, expected, atol=COMPLEX_TOLERANCES[dtype], rtol=0)


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize(
    "entry",
    [entry for entry in [*PROX_TABLE.values(), *SET_TABLE.values()] if entry.complex_args],
    ids=lambda entry: entry.key,
)
def test_complex_entry_on_real_values_is_the_real_entry(entry, backend):
    """A real block passed as complex (imaginary parts 0) gives the real entry's result, and the real
    entry's results are those of the real definition's sign form to the bit where it has one."""
    v, p = draw((2, 3), 2)
    if isinstance(entry, SetOp):
        params = SET_REFERENCES[entry.name][1](p)
    else:
        params = (p, *(OPTION_VALUES[option] for option in entry.options))
    real = run_operator(entry, backend, v, params)
    assert real.dtype == np.float64
    as_complex = run_operator(entry, backend, v.astype(np.complex128), params)
    np.testing.assert_allclose(as_complex.real, real, rtol=1e-15, atol=1e-15)
    np.testing.assert_array_equal(as_complex.imag, 0.0)


def test_real_soft_threshold_is_the_sign_form_to_the_bit():
    scales = np.array([0.0, 0.1, 1.0, 3.0, -2.0]).reshape(1, 5, 1)  # exact zeros, all shrunk, a few kept
    v = torch.tensor(np.random.default_rng(3).normal(size=(4, 5, 1)) * scales)
    assert torch.equal(ops_torch.soft_threshold(v, 0.5), torch.sign(v) * torch.relu(v.abs() - 0.5))
    numba_function = numba_helpers(("soft_threshold",))["soft_threshold"]
    column = v[0].numpy().copy()
    np.testing.assert_array_equal(numba_function(column, 0.5), np.sign(column) * np.maximum(np.abs(column) - 0.5, 0))


@pytest.mark.parametrize(
    "key",
    [key for key, entry in [*PROX_TABLE.items(), *SET_TABLE.items()] if entry.complex_args and key != "nuclear"],
)
def test_complex_torch_gradient_is_finite_at_zero(key):
    """At entries (and blocks) equal to 0 the torch forms and their gradients stay finite (nuclear is
    excluded: torch's SVD backward is undefined at repeated singular values, as its docstring says)."""
    entry = PROX_TABLE.get(key) or SET_TABLE[key]
    block = np.zeros((2, 3, 2), dtype=np.complex128)
    block[1, 0, 0] = 0.8 - 0.3j  # the second sample has one nonzero entry
    v = torch.tensor(block, requires_grad=True)
    if key in SET_TABLE:
        params = COMPLEX_SET_REFERENCES[key][1](0.5)
    else:
        params = (0.5, *(OPTION_VALUES[option] for option in entry.options))
    out = getattr(ops_torch, entry.torch)(v, *params)
    (grad,) = torch.autograd.grad((out.real * 1.3 + out.imag * 0.7).sum(), v)
    assert torch.isfinite(torch.view_as_real(out)).all() and torch.isfinite(torch.view_as_real(grad)).all()


@pytest.mark.parametrize("order", [4, 16, 64, 256])
def test_qam_hull_is_the_box_of_the_unit_energy_constellation(order):
    points = qam_constellation(order)
    assert np.mean(np.abs(points) ** 2) == pytest.approx(1.0, rel=1e-14)
    expected = np.sqrt(3 / (2 * (order - 1)))  # half the spacing of adjacent levels
    assert np.diff(np.unique(points.real)) == pytest.approx(2 * expected, rel=1e-12)
    bound = float(ops_torch.qam_bound(float(order)))
    assert bound == pytest.approx(points.real.max(), rel=1e-14)
    # every point projects onto itself, and a far point onto the nearest corner
    on = ops_torch.proj_qam(torch.tensor(points.reshape(-1, 1)), float(order)).numpy().ravel()
    np.testing.assert_allclose(on, points, rtol=0, atol=1e-15)
    corner = ops_torch.proj_qam(torch.tensor([[5.0 - 7.0j]], dtype=torch.complex128), float(order)).numpy()
    np.testing.assert_allclose(corner, [[bound - 1j * bound]], rtol=0, atol=1e-15)


@pytest.mark.parametrize("order", [4.0, 16.0, 64.0, 1024.0])
def test_qam_accepts_whole_perfect_squares(order):
    assert SET_TABLE["qam"].validate((order,)) is None


@pytest.mark.parametrize(
    "order, message",
    [
        (8.0, "got 8"),
        (1.0, "got 1"),
        (0.0, "got 0"),
        (-4.0, "got -4"),
        (16.5, "got 16.5"),
        (float("inf"), "got inf"),
        (float("nan"), "got nan"),
        (None, "known at build time"),
    ],
)
def test_qam_refuses_other_orders(order, message):
    error = SET_TABLE["qam"].validate((order,))
    assert error is not None and message in error


# ---------------------------------------------------------------------------- nets

NET_ARGS = {"mlp": [(5, 1), (3, 1)], "conv1d": [(6, 1), (6, 1)], "conv2d": [(3, 4), (3, 4)]}
# the size arguments each class is built with for NET_ARGS (the entry's ``sizes`` writes them for the model)
NET_SIZES = {"mlp": (8, 5), "conv1d": (2,), "conv2d": ((None, None),)}
SMALL = {"hidden": 4, "depth": 2, "kernel": 3}


def net_cases(backends: tuple[str, ...] = ("torch", "numba")):
    """Every kind with every combination of its word options, per backend (``spec``: no backend).
    External nets (the caller's module) are tested in tests/test_image_nets.py."""
    for name, kind in NET_KINDS.items():
        if kind.external:
            continue
        words = {key: option.choices for key, option in kind.options.items() if option.choices}
        for choice in itertools.product(*words.values()):
            chosen = dict(zip(words, choice, strict=True))
            label = "-".join([name, *choice])
            for backend in backends:
                if backend == "spec":
                    yield pytest.param(name, chosen, id=label)
                else:
                    yield pytest.param(name, chosen, backend, id=f"{label}-{backend}")


def build_net(name: str, chosen: dict, zero_init: bool = False) -> tuple[torch.nn.Module, dict]:
    kind = NET_KINDS[name]
    options = kind.resolved({key: value for key, value in SMALL.items() if key in kind.options} | chosen)
    torch.manual_seed(0)
    net = getattr(nets_torch, kind.torch)(*NET_SIZES[name], **options, zero_init=zero_init).double()
    return net, options


def net_inputs(name: str) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(BATCH, *shape, generator=generator, dtype=torch.float64) for shape in NET_ARGS[name]]


@pytest.mark.parametrize("name, chosen, backend", list(net_cases()))
def test_net(name, chosen, backend):
    kind = NET_KINDS[name]
    net, options = build_net(name, chosen)
    args = net_inputs(name)
    with torch.no_grad():
        expected = net(*args)
    assert expected.shape == args[0].shape
    if backend == "torch":
        count = kind.parameter_count(options, tuple(NET_ARGS[name]))
        assert int(count) == sum(p.numel() for p in net.parameters())
        zero, _ = build_net(name, chosen, zero_init=True)
        with torch.no_grad():
            if options.get("residual") == "yes":  # first argument minus a zero CNN (specs keep it off corrections)
                assert torch.equal(zero(*args), args[0])
            else:
                assert torch.count_nonzero(zero(*args)) == 0  # a correction starts at zero
        return
    if kind.numba is None:
        pytest.skip(f"{name}: the entry has no numba form (compile notes it and emits no kernel)")
    state = net.state_dict()
    weights = tuple(state[f"{prefix}.weight"].numpy()[None] for prefix in kind.numba.dense_layers(options))
    biases = tuple(state[f"{prefix}.bias"].numpy()[None] for prefix in kind.numba.dense_layers(options))
    forward = numba_helpers((kind.numba.forward,))[kind.numba.forward]
    columns = np.concatenate([a.reshape(BATCH, -1).numpy().T for a in args], axis=0)
    extra = [options[option] for option in kind.numba.options]
    ours = forward(weights, biases, 0, np.ascontiguousarray(columns), *extra)
    np.testing.assert_allclose(ours.T.reshape(expected.shape), expected.numpy(), rtol=1e-12, atol=1e-12)


ACTIVATION_REFERENCES = {
    "relu": lambda h: np.maximum(h, 0.0),
    "tanh": np.tanh,
    # gelu in its tanh approximation (Hendrycks & Gimpel 2016)
    "gelu": lambda h: 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3))),
}


@pytest.mark.parametrize("activation", ACTIVATION_REFERENCES)
def test_mlp_matches_a_numpy_forward(activation):
    """The torch Mlp is the network its docstring describes: dense layers, the activation between."""
    net, options = build_net("mlp", {"activation": activation})
    args = net_inputs("mlp")
    state = {key: value.numpy() for key, value in net.state_dict().items()}
    prefixes = NET_KINDS["mlp"].numba.dense_layers(options)
    h = np.concatenate([a.reshape(BATCH, -1).numpy() for a in args], axis=1)
    for index, prefix in enumerate(prefixes):
        h = h @ state[f"{prefix}.weight"].T + state[f"{prefix}.bias"]
        if index < len(prefixes) - 1:
            h = ACTIVATION_REFERENCES[activation](h)
    with torch.no_grad():
        expected = net(*args).numpy()
    np.testing.assert_allclose(h.reshape(expected.shape), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATION_REFERENCES)
@pytest.mark.parametrize("name", ["conv1d", "conv2d"])
def test_conv_net_activation_is_the_chosen_one(name, activation):
    net, _ = build_net(name, {"activation": activation})
    between = [module for module in net.body if not isinstance(module, torch.nn.Conv1d | torch.nn.Conv2d)]
    assert len(between) == SMALL["depth"]
    h = np.linspace(-3.0, 3.0, 13)
    for module in between:
        np.testing.assert_allclose(module(torch.tensor(h)).numpy(), ACTIVATION_REFERENCES[activation](h), rtol=1e-12)


def test_every_activation_has_a_reference():
    for kind in NET_KINDS.values():
        if "activation" in kind.options:
            assert set(kind.options["activation"].choices) == set(ACTIVATION_REFERENCES), kind.name


# ------------------------------------------------------ each entry in a compiled spec

SPEC = """problem p {{
    dim {dims}
    input y : real[{shape}]
    var x : real[{shape}] = {start}
    minimize 0.5 * sumsq(x - y){penalty}
}}

unfold step from p {{
    layers {layers}
    hyper mu : real = 0.25
{extra}    iterate {{ x = {update} }}
{learn}}}
"""
SPEC_LAYERS = 2
SPEC_BATCH = 2


def spec(update: str, shape: str = "n", start: str = "0", penalty: str = "", extra: str = "", learn: str = "") -> str:
    return SPEC.format(
        dims=shape,
        shape=shape,
        start=start,
        penalty=penalty,
        layers=SPEC_LAYERS,
        extra=extra,
        update=update,
        learn=learn,
    )


def run_spec(text: str, inputs: np.ndarray, perturb: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """The compiled module's output and the kernels' (None, with the compile note, where there are none)."""
    package = load_package(text, "step")
    sizes = dict(zip(("m", "n") if inputs.ndim == 3 else ("n",), inputs.shape[1:], strict=True))
    model = package.Step(**sizes, dtype=torch.float64)
    if perturb:  # a net starts at zero output: move its weights so both backends have work to do
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    with torch.no_grad():
        ours = model(y=torch.tensor(inputs)).numpy()
    if not Path(package.__file__).with_name("kernels.py").exists():
        return ours, None
    kernels = importlib.import_module(f"{package.__name__}.kernels")
    state = {name: value.detach().numpy() for name, value in model.state_dict().items()}
    params = kernels.params_from_state_dict({**state, "layers": model.layers})
    return ours, kernels.run(params, y=inputs)


def spec_inputs(shape: tuple[int, ...], positive: bool = False) -> np.ndarray:
    values = np.random.default_rng(7).normal(size=(SPEC_BATCH, *shape))
    return np.exp(values) if positive else values


def smooth_user_functions() -> list[str]:
    return [
        name
        for name, entry in FUNCTIONS.items()
        if entry.user and entry.kind == "elementwise" and entry.smooth and entry.sympy is not None
    ]


@pytest.mark.slow  # compiles kernels: numba takes seconds per spec
@pytest.mark.parametrize("name", smooth_user_functions())
def test_smooth_function_in_a_spec(name):
    """Gradient steps on sum(f(x)) + ½‖x − y‖², against the reference's central differences."""
    inputs = spec_inputs((4,), positive=True)
    text = spec("x - mu * grad(x)", start="y", penalty=f" + 0.1 * sum({name}(x))")
    ours, kernels = run_spec(text, inputs)
    reference = FUNCTION_REFERENCES[name][0]
    x = inputs.copy()
    for _ in range(SPEC_LAYERS):
        step = 1e-6
        derivative = (reference(x + step) - reference(x - step)) / (2 * step)
        x = x - 0.25 * (0.1 * derivative + x - inputs)
    np.testing.assert_allclose(ours, x, rtol=1e-7, atol=1e-8)
    assert kernels is not None, f"{name}: compile emitted no kernels"
    np.testing.assert_allclose(kernels, ours, rtol=1e-10, atol=1e-12)


def prox_bracket(entry) -> str:
    options = "".join(f", {option} {OPTION_VALUES[option]}" for option in entry.options)
    return f"mu * 0.4 * {entry.func}" + (f" + {entry.set}" if entry.set else "") + options


@pytest.mark.slow  # compiles kernels: numba takes seconds per spec
@pytest.mark.parametrize("key", list(PROX_TABLE))
def test_prox_in_a_spec(key):
    """Proximal gradient steps, against the numerical argmin of each step's prox."""
    entry = PROX_TABLE[key]
    matrix = key == "nuclear"
    shape, dims = ((3, 2), "m, n") if matrix else ((4,), "n")
    inputs = spec_inputs(shape)
    ours, kernels = run_spec(spec(f"prox[{prox_bracket(entry)}](x - mu * grad(x))", shape=dims), inputs)
    x = np.zeros_like(inputs)
    for _ in range(SPEC_LAYERS):
        v = x - 0.25 * (x - inputs)
        options = [OPTION_VALUES[option] for option in entry.options]
        x = np.stack([PROX_REFERENCES[key](sample, 0.1, *options) for sample in v])
    np.testing.assert_allclose(ours, x, atol=1e-6, rtol=0)
    if entry.numba is None:
        assert kernels is None, f"{key}: kernels emitted for an entry without a numba function"
        return
    assert kernels is not None, f"{key}: compile emitted no kernels"
    np.testing.assert_allclose(kernels, ours, rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # compiles kernels: numba takes seconds per spec
@pytest.mark.parametrize("key", list(SET_TABLE))
def test_projection_in_a_spec(key):
    """Projected gradient steps, against the numerical projection of each step."""
    entry = SET_TABLE[key]
    reference, params = SET_REFERENCES[key]
    values = params(0.6)
    bracket = f"{key}({', '.join(map(str, values))})" if values else key
    inputs = spec_inputs((4,))
    ours, kernels = run_spec(spec(f"proj[{bracket}](x - mu * grad(x))"), inputs)
    x = np.zeros_like(inputs)
    for _ in range(SPEC_LAYERS):
        x = np.stack([reference(sample, *values) for sample in x - 0.25 * (x - inputs)])
    np.testing.assert_allclose(ours, x, atol=1e-6, rtol=0)
    if entry.numba is None:
        assert kernels is None, f"{key}: kernels emitted for an entry without a numba function"
        return
    assert kernels is not None, f"{key}: compile emitted no kernels"
    np.testing.assert_allclose(kernels, ours, rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # compiles kernels: numba takes seconds per spec
@pytest.mark.parametrize("name, chosen", [case for case in net_cases(backends=("spec",))])
def test_net_in_a_spec(name, chosen):
    """A learned correction by each net kind (and word option; a residual net replaces the
    gradient step instead): runs, and the kernels agree."""
    kind = NET_KINDS[name]
    shape, dims = ((3, 4), "m, n") if name == "conv2d" else ((6,), "n")
    given = {key: value for key, value in SMALL.items() if key in kind.options} | chosen
    options = ", ".join(f"{key} {value}" for key, value in given.items())
    net = f"    net c : {name}({options})\n"
    update = "c(x - mu * grad(x), y)" if chosen.get("residual") == "yes" else "x - mu * grad(x) + c(x, y)"
    text = spec(update, shape=dims, extra=net, learn="    learn c per layer\n")
    inputs = spec_inputs(shape)
    ours, kernels = run_spec(text, inputs, perturb=True)
    assert ours.shape == inputs.shape and np.isfinite(ours).all()
    if kind.numba is None:
        assert kernels is None, f"{name}: kernels emitted for a net kind without a numba form"
        return
    assert kernels is not None, f"{name}: compile emitted no kernels"
    np.testing.assert_allclose(kernels, ours, rtol=1e-10, atol=1e-12)
