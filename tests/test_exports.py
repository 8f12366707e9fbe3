"""Every generated example under the ways PyTorch exports and compiles models.

- ``torch.compile`` (CPU, inductor): output and parameter gradients equal eager to 1e-6 (float64);
- ``torch.export``: the exported program's output equals eager to 1e-10;
- ONNX (``torch.onnx.export``, the dynamo exporter, run with onnxruntime): works and matches eager
  to 1e-5 (float32) exactly when the network's forward pass uses no op ONNX lacks — a linear solve
  (``solve``: ADMM), a symmetric eigendecomposition (per-sample ``lipschitz``: PGD with a
  per-sample channel) or an SVD (``nuclear`` prox, per-sample ``opnorm``: robust PCA); the blockers
  are read from the compiler's IR, so a new example is classified without editing this file;
- ``torch.jit.script``: not supported (see ``SCRIPT_BLOCKERS``); the test fails if that changes,
  so that the README's table is updated;
- ``checkpoint_layers=True`` (recompute each layer in backward) gives the same gradients to 1e-10;
- drawings (``unfoldgen.graph``): the learned-scalar counts they print equal the model's, every
  prox/projection/net and iterate is drawn; rendering is skipped where Graphviz's ``dot`` is
  missing, and then ``draw`` says how to install it.

Sizes are small (dims 6, 4, 5; batch 2; 3 layers): these tests are about the code paths, not speed.
The examples are the packages in ``generated/``; each is built from what its spec declares.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sympy
import torch
from torch import nn

from unfoldgen import ir
from unfoldgen.compiler import compile_text, read_spec
from unfoldgen.functions import FUNCTIONS
from unfoldgen.lower import LoweredUnfold

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "generated"
EXAMPLES = sorted(path.parent.name for path in GENERATED.glob("*/model.py"))
SIZES = (6, 4, 5, 3)  # the spec's dims in declaration order: distinct, so mixed-up axes show
IMAGE_SIZES = (16, 24)  # images: room for a 9x9 kernel and three Haar levels


def spec_of(package: str) -> Path:
    owners = [
        path
        for path in sorted((ROOT / "specs").glob("*.unf"))
        if re.search(rf"^\s*unfold\s+{package}\s+from\b", path.read_text(encoding="utf-8"), re.M)
    ]
    assert len(owners) == 1, f"unfold {package} is defined in {owners}"
    return owners[0]


@dataclass
class Example:
    package: str
    lowered: LoweredUnfold
    model: nn.Module
    inputs: dict[str, torch.Tensor]


def lowered_of(package: str) -> LoweredUnfold:
    spec = spec_of(package)
    return next(low for low in compile_text(read_spec(spec), spec.name).lowered if low.name == package)


def build(package: str, dtype: torch.dtype = torch.float64, layers: int = 3, **options) -> Example:
    """The committed generated module of ``package``, built on random data of the declared shapes."""
    low = lowered_of(package)
    model_class = getattr(importlib.import_module(f"generated.{package}.model"), low.class_name)
    dims = [symbol.name for symbol in low.problem.symbols if symbol.role == "dim"]
    images = any(FUNCTIONS[name].kind == "linear" for name in low.plan.functions)
    sizes = dict(zip(dims, IMAGE_SIZES if images else SIZES, strict=False))

    def size(dim: ir.Dim) -> int:
        if isinstance(dim, int):
            return dim
        base, factor = ir.dim_factor(dim)
        return int(sizes[base] * factor)

    def shape(symbol) -> tuple[int, ...]:
        full = tuple(size(d) for d in symbol.shape)
        return full[:1] if len(full) == 2 and symbol.shape[1] == 1 else full

    generator = torch.Generator().manual_seed(0)
    complex_dtype = {torch.float32: torch.complex64, torch.float64: torch.complex128}[dtype]

    def random(shape: tuple[int, ...], symbol) -> torch.Tensor:
        return torch.randn(shape, dtype=complex_dtype if symbol.complex else dtype, generator=generator)

    arguments: dict = dict(sizes)
    for symbol in low.problem.symbols:
        if symbol.role == "data":
            arguments[symbol.name] = random(shape(symbol), symbol)
        elif symbol.role == "param" and not isinstance(symbol.init, ir.Const):
            arguments[symbol.name] = 0.1
    torch.manual_seed(0)
    model = model_class(**arguments, layers=layers, dtype=dtype, **options)
    inputs = {
        symbol.name: random((2, *shape(symbol)), symbol) for symbol in low.problem.symbols if symbol.role == "input"
    }
    _give_nets_nonzero_outputs(model)
    return Example(package, low, model, inputs)


def _give_nets_nonzero_outputs(model: nn.Module) -> None:
    """Correction nets start at zero output; perturb every parameter a little so that they count."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, dtype=parameter.dtype, generator=generator))


def outputs_of(result) -> tuple[torch.Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def loss_of(result) -> torch.Tensor:
    return sum((out.abs() ** 2).sum() for out in outputs_of(result))


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_examples_found():
    assert len(EXAMPLES) >= 8, EXAMPLES


# ---------------------------------------------------------------------- torch.compile


def with_grad(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fresh leaf copies of the inputs that want gradients (so backward runs even with nothing learned)."""
    return {name: value.detach().clone().requires_grad_(True) for name, value in inputs.items()}


def all_gradients(model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return gradients(model) | {f"input {name}": value.grad.clone() for name, value in inputs.items()}


# One example per family of ops runs by default; inductor needs 5-30 s for each of the others
# (the whole set takes ~4 min on 2 cores), so those are marked slow: deselect with -m "not slow".
COMPILE_ALWAYS = ("ista", "admm", "pgd", "rpca_ista", "ista_conv_corrected")
# the complex examples share their ops: one each of the lasso, MIMO and MRI families is compiled
COMPILE_SKIPPED = ("complex_fista", "complex_lista_cp", "mimo_pgd_corrected", "mri_istanet")
COMPILE_CASES = [
    package if package in COMPILE_ALWAYS else pytest.param(package, marks=pytest.mark.slow)
    for package in EXAMPLES
    if package not in COMPILE_SKIPPED
]


@pytest.mark.parametrize("package", COMPILE_CASES)
def test_torch_compile_matches_eager(package: str):
    example = build(package)
    model = example.model
    inputs = with_grad(example.inputs)
    eager = model(**inputs)
    loss_of(eager).backward()
    eager_grads = all_gradients(model, inputs)
    model.zero_grad(set_to_none=True)
    inputs = with_grad(example.inputs)
    torch._dynamo.reset()
    compiled = torch.compile(model)
    result = compiled(**inputs)
    loss_of(result).backward()
    for got, want in zip(outputs_of(result), outputs_of(eager), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    compiled_grads = all_gradients(model, inputs)
    assert sorted(compiled_grads) == sorted(eager_grads)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=0, atol=1e-6, msg=f"gradient of {name}")


# ---------------------------------------------------------------------- torch.export


@pytest.mark.parametrize("package", EXAMPLES)
def test_torch_export_matches_eager(package: str):
    example = build(package)
    if example.lowered.plan.fixed_point:  # it iterates until a test on the data holds: no static graph
        with torch.no_grad(), pytest.raises(Exception, match="data-dependent"):
            torch.export.export(example.model, (), kwargs=example.inputs)
        return
    with torch.no_grad():
        eager = example.model(**example.inputs)
        program = torch.export.export(example.model, (), kwargs=example.inputs)
        exported = program.module()(**example.inputs)
    for got, want in zip(outputs_of(exported), outputs_of(eager), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------- ONNX


def onnx_blockers(low: LoweredUnfold) -> list[str]:
    """Ops in the forward pass that ONNX cannot express (no op for them up to opset 20, torch 2.13's default)."""
    found: list[str] = []
    methods = {plan.variables: {t.method for t in plan.terms} for plan in low.lipschitz}  # dense ones take eigenvalues
    per_sample = [symbol.init for symbol in low.dynamic]  # computed in forward, not in __init__
    for expr in [rule.value for rule in low.rules] + per_sample:
        for node in ir.walk(expr):
            blocker = None
            if isinstance(node, ir.Prox) and node.op.startswith("nuclear"):
                blocker = "linalg_svd (nuclear-norm prox)"
            elif isinstance(node, ir.Apply) and node.func == "solve":
                blocker = "linalg_solve (solve)"
            elif isinstance(node, ir.Apply) and node.func == "opnorm":
                blocker = "linalg_svd (opnorm per sample)"
            elif isinstance(node, ir.Lipschitz) and "dense" in methods[node.variables]:
                blocker = "linalg_eigh (lipschitz per sample)"
            if blocker and blocker not in found:
                found.append(blocker)
    if low.plan.fixed_point:
        found.append("data-dependent loop (a fixed-point network iterates until its change is small)")
    if any(entry.complex for entry in low.plan.names.values()):
        found.append(COMPLEX_BLOCKER)
    return found


# torch 2.13's ONNX exporter fails to translate the first op on a complex tensor (linear, alias, …),
# with a ConversionError that names the op, not the dtype
COMPLEX_BLOCKER = "complex tensors (no complex op is translated)"


def test_onnx_blockers_are_read_from_the_ir():
    assert onnx_blockers(lowered_of("ista")) == []
    assert onnx_blockers(lowered_of("admm")) == ["linalg_solve (solve)"]
    assert onnx_blockers(lowered_of("rpca_ista")) == ["linalg_svd (nuclear-norm prox)"]
    assert onnx_blockers(lowered_of("pgd")) == ["linalg_eigh (lipschitz per sample)"]
    assert onnx_blockers(lowered_of("complex_ista")) == [COMPLEX_BLOCKER]


def _onnx_modules():
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx onnxscript onnxruntime)")
    pytest.importorskip("onnxscript", reason="onnxscript is not installed: torch's ONNX exporter needs it")
    return onnx


@pytest.mark.parametrize("package", EXAMPLES)
def test_onnx_export_where_the_ops_allow(package: str):
    onnx = _onnx_modules()
    example = build(package, dtype=torch.float32)  # onnxruntime has no float64 Conv
    blockers = onnx_blockers(example.lowered)
    chatter = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(example.model, (), kwargs=example.inputs, dynamo=True)
        except Exception as err:
            if not blockers:
                raise
            if COMPLEX_BLOCKER in blockers:
                assert type(err).__name__ == "ConversionError", str(err)[-500:]
                return
            assert any(op.split()[0] in str(err) for op in blockers), str(err)[-500:]
            return
    assert not blockers, f"{package} exported although it uses {blockers}: update onnx_blockers and the README"
    onnx.checker.check_model(program.model_proto)
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: exported but not run")
    session = ort.InferenceSession(program.model_proto.SerializeToString())
    # the exporter lower-cases input names (an inpainting mask M arrives as m)
    by_name = {**{name.lower(): value for name, value in example.inputs.items()}, **example.inputs}
    feeds = {node.name: by_name[node.name].numpy() for node in session.get_inputs()}
    with torch.no_grad():
        eager = outputs_of(example.model(**example.inputs))
    # FFTs (circular convolutions, the Fourier-domain solve) round differently in onnxruntime
    fourier = {"conv", "conv_adj", "solve_conv"} & set(example.lowered.plan.functions)
    for got, want in zip(session.run(None, feeds), eager, strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4 if fourier else 0, atol=1e-5)


# ---------------------------------------------------------------------- TorchScript

# Why torch.jit.script does not work on generated modules (the first is what it reports):
SCRIPT_BLOCKERS = (
    "forward takes a keyword-only argument with a default (return_iterates)",
    "untyped and mixed-type containers: sizes holds ints and a dtype, helpers take `object`",
    "forward returns a Tensor or a list depending on return_iterates",
    "torch.utils.checkpoint is not scriptable",
)


@pytest.mark.parametrize("package", EXAMPLES)
def test_jit_script_is_not_supported(package: str):
    """TorchScript is in maintenance mode upstream; torch.compile and torch.export are the supported
    paths. If scripting starts to work, this fails so that the README's table is updated."""
    example = build(package)
    with pytest.raises(torch.jit.frontend.NotSupportedError, match="keyword-only arguments with defaults"):
        torch.jit.script(example.model)


# ---------------------------------------------------------------------- checkpoint_layers


CHECKPOINT_CASES = [(package, 4) for package in EXAMPLES] + [("ista", 100), ("lista_cp", 100)]


@pytest.mark.parametrize(("package", "layers"), CHECKPOINT_CASES)
def test_checkpoint_layers_gives_the_same_gradients(package: str, layers: int):
    if lowered_of(package).plan.fixed_point:  # one layer's graph: nothing to recompute
        with pytest.raises(TypeError, match="checkpoint_layers"):
            build(package, layers=layers, checkpoint_layers=True)
        return
    plain = build(package, layers=layers)
    recomputed = build(package, layers=layers, checkpoint_layers=True)
    recomputed.model.load_state_dict(plain.model.state_dict())
    grads = []
    for example in (plain, recomputed):
        inputs = with_grad(example.inputs)
        loss_of(example.model(**inputs)).backward()
        grads.append(all_gradients(example.model, inputs))
    want, got = grads
    assert want and sorted(got) == sorted(want)
    if layers == 100:  # the deep cases learn something besides the input's gradient
        assert len(want) >= 2
    for name, grad in want.items():
        torch.testing.assert_close(got[name], grad, rtol=0, atol=1e-10, msg=f"gradient of {name}")


# ---------------------------------------------------------------------- drawings (unfoldgen.graph)

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz's dot is not installed (apt-get install graphviz)"
)


def _graph_module():
    pytest.importorskip("graphviz", reason="the graphviz Python package is not installed (pip install graphviz)")
    from unfoldgen import graph

    return graph


@pytest.mark.parametrize("package", EXAMPLES)
def test_drawing_counts_the_learned_scalars_of_the_model(package: str):
    """The counts the drawing prints are the model's own parameter counts, for every learned name."""
    graph = _graph_module()
    low = lowered_of(package)
    example = build(package, layers=low.unfold.layers)
    dims = [symbol.name for symbol in low.problem.symbols if symbol.role == "dim"]
    sizes = {sympy.Symbol(dim): size for dim, size in zip(dims, SIZES, strict=False)}
    counts = {name: int(count.subs(sizes)) for name, count in graph.learned_counts(low).items()}
    actual = {}
    for name in low.learned:
        value = getattr(example.model, name)
        actual[name] = sum(p.numel() for p in value.parameters()) if isinstance(value, nn.Module) else value.numel()
    assert counts == actual
    source = graph.to_graph(low).source
    for name in low.learned:
        assert f"{name}" in source and "learned" in source


@pytest.mark.parametrize("package", EXAMPLES)
def test_drawing_shows_every_operator_and_iterate(package: str):
    graph = _graph_module()
    low = lowered_of(package)
    source = graph.to_graph(low).source
    kinds = {type(node).__name__ for rule in low.rules for node in ir.walk(rule.value)}
    if "Prox" in kinds:
        assert "prox " in source
    if "Proj" in kinds:
        assert "proj " in source
    if "NetCall" in kinds:
        assert "net " in source
    carried = [s.name for s in low.problem.of_role("var")] + [s.name for s in low.unfold.symbols if s.role == "state"]
    for name in carried:
        assert f"{name}_k" in source and f"{name}_k+1" in source
    assert f"layer {low.unfold.layers}" in source, "the K-layer chain"


@needs_dot
@pytest.mark.parametrize("suffix", [".svg", ".png"])
def test_draw_renders_an_image(tmp_path, suffix: str):
    graph = _graph_module()
    path = graph.draw(lowered_of("ista_corrected"), tmp_path / f"ista_corrected{suffix}")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in data[:2000]
    if suffix == ".svg":
        text = data.decode()
        assert "prox" in text and "net c" in text and "learned" in text


def test_draw_without_dot_says_how_to_install_it(tmp_path, monkeypatch):
    graph = _graph_module()
    monkeypatch.setattr(graph, "dot_available", lambda: False)
    with pytest.raises(graph.GraphvizMissingError, match="apt-get install graphviz"):
        graph.draw(lowered_of("ista"), tmp_path / "ista.svg")
    source = graph.draw(lowered_of("ista"), tmp_path / "ista.dot")  # the source needs no dot program
    assert source.read_text(encoding="utf-8").startswith("digraph")
