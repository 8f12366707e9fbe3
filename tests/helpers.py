"""Shared test helpers: compile spec text into a temporary folder and import what it generates.

``load_class(text)`` compiles a spec with ``unfoldgen.compiler.compile_text``, writes the
generated packages into a fresh temporary folder, imports each one under a unique module name
(so two specs that both define ``unfold step`` never clash in ``sys.modules``) and returns the
generated ``nn.Module`` class. Results are cached per spec text for the whole test session.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import itertools
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from unfoldgen.compiler import compile_text

_ROOT: Path | None = None
_COUNTER = itertools.count()
_CACHE: dict[tuple[str, str], dict[str, ModuleType]] = {}


def _root() -> Path:
    global _ROOT
    if _ROOT is None:
        _ROOT = Path(tempfile.mkdtemp(prefix="unfoldgen-tests-"))
        atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
    return _ROOT


def camel_case(name: str) -> str:
    """The generated class name of an unfold: ``grad_step`` → ``GradStep``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def compile_spec(text: str, filename: str = "spec.unf") -> dict[str, ModuleType]:
    """Compile ``text`` and import every generated package; ``{unfold name: package module}``."""
    key = (text, filename)
    if key in _CACHE:
        return _CACHE[key]
    files = compile_text(text, filename).files
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    folder = _root() / f"spec_{digest}_{next(_COUNTER)}"
    for relative, source in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    packages: dict[str, ModuleType] = {}
    for unfold in sorted({Path(relative).parts[0] for relative in files}):
        module_name = f"_unfoldgen_test_{digest}_{next(_COUNTER)}_{unfold}"
        init = folder / unfold / "__init__.py"
        spec = importlib.util.spec_from_file_location(module_name, init, submodule_search_locations=[str(init.parent)])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        packages[unfold] = module
    _CACHE[key] = packages
    return packages


def load_class(text: str, unfold: str | None = None, filename: str = "spec.unf") -> type:
    """The generated class of ``unfold`` (the only one when the spec has a single unfold block)."""
    packages = compile_spec(text, filename)
    if unfold is None:
        if len(packages) != 1:
            raise ValueError(f"the spec has several unfold blocks {sorted(packages)}; name one")
        unfold = next(iter(packages))
    return getattr(packages[unfold], camel_case(unfold))


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
