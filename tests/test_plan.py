"""The middle stage's plan (unfoldgen.lower.UnfoldPlan) says what the generated module holds:
every storage kind, the state-dict keys, paradigms and per-layer lists, checked against the
built torch module and the numba kernels' tables."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from helpers import load_class

from unfoldgen.compiler import compile_text, read_spec
from unfoldgen.lower import STORAGES

ROOT = Path(__file__).resolve().parents[1]

# One unfold that has every storage kind.
EVERY_STORAGE = """\
problem p {
    dim m, n
    data A : real[m, n]
    input y : real[m]
    input H : real[m, n]
    var x : real[n] = 0
    param lam : real = 0.1
    minimize 0.5 * sumsq(H @ x - y) + lam * norm1(x)
}
unfold step from p {
    layers 3
    hyper mu : real = 1 / lipschitz(x)
    hyper nu : real = 1 / lipschitz(x)
    hyper t : real = 0.5
    hyper s : real = 0.1 / (k + 1)
    weight W : real[n, m] = 0.1 * A.T
    state z : real[n] = x
    net c : mlp(hidden 4)
    net d : mlp(hidden 4)
    iterate {
        let g = x - mu * grad(x) + W @ (y - A @ x)
        z = prox[t * lam * norm1, keep s](g) + c(x)
        x = d(z + 0 * nu)
    }
    learn mu, W per layer
    learn t, A, c shared
    learn d per layer
}
"""


def plan_of(text: str, unfold: str = "step"):
    return next(low for low in compile_text(text, "plan.unf").lowered if low.name == unfold).plan


def test_every_storage_kind_is_planned():
    plan = plan_of(EVERY_STORAGE)
    storage = {name: entry.storage for name, entry in plan.names.items()}
    assert storage == {
        "m": "dim",
        "n": "dim",
        "A": "parameter",
        "y": "input",
        "H": "input",
        "x": "carried",
        "lam": "buffer",
        "mu": "per_sample_factor",
        "nu": "per_sample",
        "t": "parameter",
        "W": "parameter_list",
        "z": "carried",
        "c": "net",
        "d": "net_list",
        "g": "let",
        "s": "layer_buffer",
        "k": "layer",
    }
    assert set(storage.values()) == set(STORAGES)
    assert plan["A"].problem_key == "_problem_A" and plan["A"].attribute == "_problem_A"
    assert plan["m"].dim_source.tensor == "A" and plan["y"].axes == ("m",) and plan["H"].axes == ("m", "n")
    assert plan["c"].starts_at_zero and not plan["d"].starts_at_zero
    assert plan.paradigms == {"mu": 1, "W": 2, "t": 1, "A": 2, "c": 3, "d": 4}
    assert plan.layer_lists == ("mu", "W")
    assert {name for name, entry in plan.names.items() if entry.per_sample} == {"y", "H", "x", "z", "mu", "nu", "g"}
    assert plan.prox_ops == ("norm1 keep",) and plan.net_kinds == ("mlp",)
    assert plan["s"].layer_values and not plan["t"].layer_values


def state_keys(plan, layers: int) -> set[str]:
    """The tensor state-dict keys the plan promises (nets: their key prefix)."""
    keys = set()
    for entry in plan.names.values():
        if entry.problem_key:
            keys.add(entry.problem_key)
        if entry.state_key is None:
            continue
        per_layer = [f"{entry.state_key}.{k}" for k in range(layers)] if entry.per_layer else [entry.state_key]
        keys |= {f"{key}." if entry.role == "net" else key for key in per_layer}
    return keys


@pytest.mark.parametrize("spec", ["lasso.unf", "alista.unf", "box_ls.unf", "rpca.unf", "detection_paradigms.unf"])
def test_the_plan_names_the_state_dict_the_module_has(spec: str):
    text = read_spec(ROOT / "specs" / spec)
    for low in compile_text(text, spec).lowered:
        module = load_class(text, low.name, spec)
        sizes = {d.name: 5 + i for i, d in enumerate(low.problem.of_role("dim"))}
        data = {
            s.name: torch.rand(*[sizes.get(axis, axis) for axis in low.plan[s.name].axes])
            for s in low.problem.of_role("data")
        }
        model = module(**data, **sizes)
        plan = low.plan
        promised = state_keys(plan, model.layers)
        actual = set(model.state_dict())
        tensors = {key for key in promised if not key.endswith(".")}
        assert tensors == {key for key in actual if not any(key.startswith(p) for p in promised - tensors)}
        assert model.PARADIGMS == plan.paradigms and model.LAYER_LISTS == plan.layer_lists
        assert (model.INPUTS, model.VARIABLES, model.OUTPUTS) == (plan.inputs, plan.variables, plan.outputs)


def test_the_kernels_tables_follow_the_plan():
    kernels = importlib.import_module("generated.lista_cp.kernels")
    plan = plan_of(read_spec(ROOT / "specs" / "lasso.unf"), "lista_cp")
    for name, axes in kernels.PARAMETERS.items():
        entry = plan[name.removeprefix("_problem_")]
        if name == entry.problem_key:
            assert axes == tuple(entry.shape)
        else:
            shape = () if entry.storage == "per_sample_factor" else tuple(entry.shape)
            assert axes == (("layers",) if entry.per_layer else ()) + shape
    assert kernels.INPUTS == {name: plan[name].axes for name in plan.inputs}
    assert kernels.OUTPUTS == plan.outputs
