"""Every kernel the compiler emits imports and runs, and computes what the torch module computes:
over the specs/ examples, a sample of the fuzz generator's specs, and specs written the way users
write them (a per-sample ``lipschitz`` of a matrix variable with a mask input)."""

from __future__ import annotations

import importlib
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import load_package
from test_fuzz import SpecWriter

from unfoldgen.compiler import compile_text, read_spec
from unfoldgen.errors import SpecError
from unfoldgen.functions import FUNCTIONS

ROOT = Path(__file__).resolve().parents[1]
BATCH = 3


def user_axes(shape: tuple) -> tuple:
    """A value's axes as the user passes it: vectors (n,), matrices (m, n), scalars ()."""
    if shape == ():
        return ()
    return shape[:1] if shape[1] == 1 else shape


def both_backends(
    text: str, unfold: str, seed: int = 0, generated: bool = False, batch: int = BATCH
) -> tuple[tuple, tuple]:
    """The torch module's and the numba kernels' outputs of ``unfold`` on the same random data
    (values in [0.5, 1.5], so logs and roots stay real; dims 3, 4, … in declaration order, ``batch``
    samples), learned parameters perturbed.
    ``generated``: import the committed package of generated/ (it equals a fresh compile, and
    numba's cache of it survives between runs)."""
    compiled = compile_text(text, "both.unf")
    assert f"{unfold}/kernels.py" in compiled.files, compiled.notes
    low = next(low for low in compiled.lowered if low.name == unfold)
    package = importlib.import_module(f"generated.{unfold}") if generated else load_package(text, unfold, "both.unf")
    kernels = importlib.import_module(f"{package.__name__}.kernels")
    rng = np.random.default_rng(seed)
    # images need room for their kernels and wavelet levels: 16, 24, … pixels
    images = any(FUNCTIONS[name].kind == "linear" for name in low.plan.functions)
    dims = low.problem.of_role("dim")
    sizes = {dim.name: (16 + 8 * index if images else 3 + index) for index, dim in enumerate(dims)}

    def sample(shape: tuple, batch: tuple = ()) -> torch.Tensor:
        axes = [sizes.get(axis, axis) for axis in user_axes(shape)]
        return torch.as_tensor(rng.uniform(0.5, 1.5, (*batch, *axes)))

    data = {s.name: sample(s.shape) for s in low.problem.of_role("data")}
    # validate=False: a random spec may declare a zero step; the backends must agree all the same
    model = getattr(package, package.__all__[0])(**data, **sizes, dtype=torch.float64, validate=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(0.9 + 0.2 * torch.rand(parameter.shape, generator=generator, dtype=parameter.dtype))
    inputs = {s.name: sample(s.shape, (batch,)) for s in low.problem.of_role("input")}
    with torch.no_grad():
        expected = model(**inputs)
    state = {name: value.detach().numpy() for name, value in model.state_dict().items()}
    for name in model.BOUNDED:  # a bounded value reaches the kernels as its values (as export_npz writes them)
        state = {key: value for key, value in state.items() if not key.startswith(f"{name}.")}
        state[name] = getattr(model, name).values().detach().numpy()
    params = kernels.params_from_state_dict({**state, "layers": model.layers})
    got = kernels.run(params, **{name: value.numpy() for name, value in inputs.items()})
    as_tuple = lambda value: value if isinstance(value, tuple) else (value,)  # noqa: E731
    return tuple(t.numpy() for t in as_tuple(expected)), as_tuple(got)


def assert_backends_agree(text: str, unfold: str, generated: bool = False) -> None:
    expected, got = both_backends(text, unfold, generated=generated)
    assert len(got) == len(expected)
    for out, ref in zip(got, expected, strict=True):
        assert out.shape == ref.shape, (out.shape, ref.shape)
        np.testing.assert_allclose(out, ref, rtol=1e-7, atol=1e-9, equal_nan=True, err_msg=unfold)


def emitted_kernels(text: str) -> list[str]:
    return sorted(path.split("/")[0] for path in compile_text(text, "emitted.unf").files if path.endswith("kernels.py"))


EXAMPLE_UNFOLDS = [
    (path.name, unfold)
    for path in sorted((ROOT / "specs").glob("*.unf"))
    for unfold in emitted_kernels(read_spec(path))
]


@pytest.mark.parametrize(("spec", "unfold"), EXAMPLE_UNFOLDS, ids=[f"{s}:{u}" for s, u in EXAMPLE_UNFOLDS])
def test_example_kernels_run_and_equal_torch(spec: str, unfold: str):
    assert_backends_agree(read_spec(ROOT / "specs" / spec), unfold, generated=True)


def fuzz_sample(count: int) -> list[tuple[str, str]]:
    """The first ``count`` valid specs of the fuzz generator (no deliberate slips) with kernels."""
    found = []
    for seed in range(400):
        text = SpecWriter(random.Random(seed), slip=0.0).spec()
        try:
            unfolds = emitted_kernels(text)
        except SpecError:
            continue
        found += [(text, unfold) for unfold in unfolds]
        if len(found) >= count:
            return found[:count]
    return found


FUZZ = fuzz_sample(4)


def test_the_fuzz_sample_is_large_enough():
    assert len(FUZZ) == 4


@pytest.mark.parametrize(("text", "unfold"), FUZZ, ids=[f"fuzz{i}" for i in range(len(FUZZ))])
def test_fuzz_kernels_run_and_equal_torch(text: str, unfold: str):
    assert_backends_agree(text, unfold)


COMPLETION = """
problem completion {
    dim m, n
    input Y : real[m, n]
    input M : real[m, n]
    var X : real[m, n] = 0
    param lam : real = 0.1
    minimize 0.5 * sumsq(M * (X - Y)) + lam * nuclear(X)
}
unfold complete from completion {
    layers 4
    hyper mu : real = 1 / lipschitz(X)
    iterate {
        X = prox[mu * lam * nuclear](X - mu * grad(X))
    }
}
"""


@pytest.mark.parametrize("mask_first", [False, True])
def test_per_sample_lipschitz_of_a_matrix_variable_runs(mask_first: bool):
    """The Lipschitz kernel used to read its dims off the first input, which it was not given."""
    text = COMPLETION
    if mask_first:
        inputs = "    input Y : real[m, n]\n    input M : real[m, n]\n"
        text = text.replace(inputs, "    input M : real[m, n]\n    input Y : real[m, n]\n")
    assert_backends_agree(text, "complete")


LEARNED_START = """
problem least_squares {
    dim m, n
    input H : real[m, n]
    input y : real[m]
    var x : real[n] = 0
    minimize sumsq(H @ x - y)
}
unfold gd from least_squares {
    layers 3
    hyper mu : real = 1 / lipschitz(x)
    state z : real[n] = mu * (H.T @ y)
    iterate {
        x = z - mu * grad(x)
        z = x
    }
    learn mu per layer
}
"""


def test_a_start_value_uses_the_first_layers_learned_factor():
    """A state that starts from a per-sample value learned per layer uses layer 0's factor (the
    generated code used to index it with the layer variable, undefined before the first layer)."""
    assert_backends_agree(LEARNED_START, "gd")
