"""Shared test helpers: compile spec text and import what it generates.

``load_class(text)`` compiles a spec with the trainer's own loader (``unfoldgen.training.load_spec``:
the generated packages go into a private temporary folder and are imported under names unique to
the spec's text, so two specs that both define ``unfold step`` never clash in ``sys.modules``) and
returns the generated ``nn.Module`` class. Results are cached per spec text for the whole session.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from unfoldgen.compiler import compile_text
from unfoldgen.training.loading import LoadedSpec, load_spec

# The lasso of specs/lasso.unf, for tests that write their own unfold blocks after it.
LASSO_PROBLEM = """\
problem lasso {
    dim m, n
    data  A : real[m, n]
    input y : real[m]
    var   x : real[n] = 0
    param lam : real = 0.1
    minimize 0.5 * sumsq(A @ x - y) + lam * norm1(x)
}
"""


@functools.cache
def _loaded(text: str, filename: str) -> LoadedSpec:
    return load_spec(filename, text=text)


def load_class(text: str, unfold: str | None = None, filename: str = "spec.unf") -> type:
    """The generated class of ``unfold`` (the only one when the spec has a single unfold block)."""
    loaded = _loaded(text, filename)
    if unfold is None:
        if len(loaded.modules) != 1:
            raise ValueError(f"the spec has several unfold blocks {sorted(loaded.modules)}; name one")
        unfold = next(iter(loaded.modules))
    return loaded.model_class(unfold)


def load_package(text: str, unfold: str, filename: str = "spec.unf") -> ModuleType:
    """The generated package of ``unfold`` (its ``kernels`` submodule imports as ``PACKAGE.kernels``)."""
    return _loaded(text, filename).modules[unfold]


def generated_source(text: str, unfold: str, filename: str = "spec.unf") -> str:
    """The text of the generated ``model.py`` of ``unfold`` (no import)."""
    return compile_text(text, filename).files[f"{unfold}/model.py"]


def stacked(value):
    """A learned tensor as one tensor: per-layer parameters (an ``nn.ParameterList``) stacked."""
    import torch

    return torch.stack(list(value)) if isinstance(value, torch.nn.ParameterList) else value


def set_layers(value, values) -> None:
    """Overwrite a learned tensor; per-layer parameters take ``values[k]`` in layer k."""
    import torch

    if isinstance(value, torch.nn.ParameterList):
        for parameter, layer_value in zip(value, values, strict=True):
            parameter.data = torch.as_tensor(layer_value, dtype=parameter.dtype).reshape(parameter.shape)
    else:
        value.data = values


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/NAME.py`` (a script, not a package) as a module."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
