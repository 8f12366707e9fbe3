"""The numba kernels equal the torch modules: classical and perturbed parameters, float64 and
float32, batch sizes 1, 7 and 256; parameters round-trip through export_npz; no silent float64."""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest
import reference as ref_solvers
import torch

EXAMPLES = {
    # package: (class, build(rng, batch, dtype) -> (constructor kwargs, inputs))
    "ista": ("Ista", "lasso"),
    "fista": ("Fista", "lasso"),
    "lista_cp": ("ListaCp", "lasso"),
    "admm": ("Admm", "lasso"),
    "pgd": ("Pgd", "box"),
    "rpca_ista": ("RpcaIsta", "rpca"),
    "ista_corrected": ("IstaCorrected", "lasso"),  # paradigm 3: an mlp per layer
    "ista_learned_prox": ("IstaLearnedProx", "lasso"),  # paradigm 4: one shared mlp
}
BATCHES = (1, 7, 256)


def problem(family: str, batch: int, dtype: torch.dtype, seed: int):
    if family == "lasso":
        A, Y, _ = ref_solvers.sparse_problem(15, 30, batch, seed=seed)
        return {"A": torch.tensor(A, dtype=dtype)}, {"y": torch.tensor(Y, dtype=dtype)}
    if family == "box":
        H, Y, _ = ref_solvers.box_problem(12, 6, batch, seed=seed)
        return {"dtype": dtype}, {"H": torch.tensor(H, dtype=dtype), "y": torch.tensor(Y, dtype=dtype)}
    D = ref_solvers.rpca_problem(8, 6, batch, seed=seed)[0]
    return {"dtype": dtype}, {"D": torch.tensor(D, dtype=dtype)}


def load(package: str):
    model = importlib.import_module(f"generated.{package}.model")
    kernels = importlib.import_module(f"generated.{package}.kernels")
    return getattr(model, EXAMPLES[package][0]), kernels


def perturb(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.rand(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.mul_(0.8 + 0.4 * noise)


def as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


def compare(package: str, dtype: torch.dtype, batch: int, perturbed: bool, seed: int = 0):
    cls, kernels = load(package)
    kwargs, inputs = problem(EXAMPLES[package][1], batch, dtype, seed)
    model = cls(**kwargs)
    if perturbed:
        perturb(model, seed)
    state = {name: value.detach().numpy() for name, value in model.state_dict().items()}
    params = kernels.params_from_state_dict({**state, "layers": model.layers})
    outputs = as_tuple(kernels.run(params, **{name: value.numpy() for name, value in inputs.items()}))
    with torch.no_grad():
        expected = as_tuple(model(**inputs))
    assert len(outputs) == len(expected)
    for out, ref in zip(outputs, expected, strict=True):
        ref = ref.numpy()
        assert out.shape == ref.shape and out.dtype == ref.dtype
        if dtype == torch.float64:
            np.testing.assert_allclose(out, ref, rtol=0, atol=1e-10)
        else:
            scale = np.abs(ref).max() + 1e-12
            assert np.abs(out - ref).max() / scale < 1e-4


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("perturbed", [False, True], ids=["classical", "perturbed"])
@pytest.mark.parametrize("package", list(EXAMPLES))
def test_kernels_equal_torch_float64(package, perturbed, batch):
    compare(package, torch.float64, batch, perturbed, seed=batch)


@pytest.mark.parametrize("package", ["ista", "lista_cp", "rpca_ista"])
def test_kernels_equal_torch_float32(package):
    compare(package, torch.float32, 7, perturbed=True, seed=3)


def test_float32_kernels_never_promote():
    _, kernels = load("lista_cp")
    compare("lista_cp", torch.float32, 7, perturbed=False)
    signatures = [str(sig) for sig in kernels.layer.nopython_signatures + kernels.network.nopython_signatures]
    float32 = [sig for sig in signatures if "float32" in sig]
    assert float32, signatures
    for sig in float32:
        assert "float64" not in sig, sig
    for sig in kernels.layer.nopython_signatures:
        if "float32" in str(sig):
            assert "float64" not in str(sig.return_type)


def test_export_npz_round_trip(tmp_path):
    cls, kernels = load("lista_cp")
    kwargs, inputs = problem("lasso", 5, torch.float64, 1)
    model = cls(**kwargs, layers=6)
    perturb(model, 7)
    model.export_npz(tmp_path / "params.npz")
    params = kernels.load_params(tmp_path / "params.npz")
    assert params["layers"] == 6
    out = kernels.run(params, y=inputs["y"].numpy())
    np.testing.assert_allclose(out, model(**inputs).detach().numpy(), rtol=0, atol=1e-10)


def test_params_are_checked():
    cls, kernels = load("ista")
    kwargs, inputs = problem("lasso", 3, torch.float64, 0)
    state = {name: value.detach().numpy() for name, value in cls(**kwargs).state_dict().items()}
    missing = dict(state)
    del missing["A"]
    with pytest.raises(ValueError, match="'A' is missing"):
        kernels.params_from_state_dict(missing)
    steps = np.stack([state.pop(f"mu.{k}") for k in range(16)])  # one entry per layer, or stacked
    with pytest.raises(ValueError, match="parameter 'mu'"):
        kernels.params_from_state_dict({**state, "mu": steps[:, None]})
    torn = {**state, **{f"mu.{k}": steps[k] for k in range(16) if k != 3}}
    with pytest.raises(ValueError, match=r"entry mu\.3 is missing \(layers \[3\] of 16\)"):
        kernels.params_from_state_dict(torn)
    np.testing.assert_array_equal(kernels.params_from_state_dict({**state, "mu": steps})["mu"], steps)
    state |= {f"mu.{k}": steps[k] for k in range(16)}
    with pytest.raises(ValueError, match="dtype"):
        kernels.params_from_state_dict({**state, "A": state["A"].astype(np.float32)})
    params = kernels.params_from_state_dict(state)
    with pytest.raises(ValueError, match="input y"):
        kernels.run(params, y=inputs["y"].numpy()[0])
    with pytest.raises(ValueError, match="input y: dtype"):
        kernels.run(params, y=inputs["y"].numpy().astype(np.float32))


def test_conv_nets_are_reported_not_emitted():
    from unfoldgen.compiler import compile_text

    spec = open("specs/lasso.unf").read().replace("net c : mlp(hidden 64, depth 2)", "net c : conv1d(hidden 4)")
    compiled = compile_text(spec, "lasso_conv.unf")
    assert "ista_corrected/kernels.py" not in compiled.files
    assert any("ista_corrected" in note and "conv1d" in note for note in compiled.notes)
    assert "ista/kernels.py" in compiled.files and "ista_corrected/model.py" in compiled.files


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (0, "layers must be a positive integer, got 0"),
        (-2, "layers must be a positive integer, got -2"),
        (2.7, "layers must be a positive integer, got 2.7"),
        (True, "layers must be a positive integer, got True"),
        (np.array(3.0), "layers must be a positive integer, got 3.0"),
    ],
)
def test_layer_count_is_checked(layers, message):
    """numba does not check bounds: the count is checked before a kernel runs (a count past the
    stored layers reuses the last stored layer, see test_bounds)."""
    cls, kernels = load("lista_cp")
    kwargs, inputs = problem("lasso", 3, torch.float64, 0)
    state = {name: value.detach().numpy() for name, value in cls(**kwargs).state_dict().items()}
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        kernels.params_from_state_dict({**state, "layers": layers})
    params = kernels.params_from_state_dict(state)
    params["layers"] = layers  # changed after loading: run checks again
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        kernels.run(params, y=inputs["y"].numpy())


def test_fewer_layers_than_stored_run_the_first_ones():
    cls, kernels = load("lista_cp")
    kwargs, inputs = problem("lasso", 3, torch.float64, 0)
    model = cls(**kwargs)
    state = {name: value.detach().numpy() for name, value in model.state_dict().items()}
    params = kernels.params_from_state_dict({**state, "layers": 5})
    model.layers = 5
    expected = model(**inputs).detach().numpy()
    np.testing.assert_allclose(kernels.run(params, y=inputs["y"].numpy()), expected, rtol=0, atol=1e-10)


def test_run_refuses_inconsistent_shapes_by_name():
    cls, kernels = load("lista_cp")
    kwargs, inputs = problem("lasso", 3, torch.float64, 0)
    state = {name: value.detach().numpy() for name, value in cls(**kwargs).state_dict().items()}
    params = kernels.params_from_state_dict(state)
    y = inputs["y"].numpy()
    with pytest.raises(ValueError, match=r"^input y: expected shape \(B, m\) with m = 15, got \(3, 14\)$"):
        kernels.run(params, y=y[:, :14])
    with pytest.raises(ValueError, match=r"^input y: expected shape \(B, m\), got \(15,\)$"):
        kernels.run(params, y=y[0])
    with pytest.raises(ValueError, match=r"^parameter 'A': expected shape \(m, n\) with m = 15, got \(14, 30\)$"):
        kernels.run({**params, "A": params["A"][:14]}, y=y)
    with pytest.raises(ValueError, match=r"^parameter 'theta' is missing"):
        kernels.run({k: v for k, v in params.items() if k != "theta"}, y=y)


def test_net_weights_are_checked():
    cls, kernels = load("ista_corrected")
    kwargs, inputs = problem("lasso", 3, torch.float64, 0)
    model = cls(**kwargs)
    state = {name: value.detach().numpy() for name, value in model.state_dict().items()}
    params = kernels.params_from_state_dict(state)
    y = inputs["y"].numpy()
    first, *rest = params["c.weights"]
    taken = first.shape[2]
    with pytest.raises(ValueError, match=rf"^net c: its weights take {taken - 1} inputs, expected {taken}$"):
        kernels.run({**params, "c.weights": (first[:, :, :-1], *rest)}, y=y)
    with pytest.raises(ValueError, match=r"^net c layer 1 weights: expected shape \(layers, out, in\) with in = 64"):
        kernels.run({**params, "c.weights": (first, rest[0][:, :, :63], *rest[1:])}, y=y)
    with pytest.raises(ValueError, match=r"^net c: expected a tuple of 3 stacked weights$"):
        kernels.run({**params, "c.weights": params["c.weights"][:2]}, y=y)
