"""The compiler's layering, read from the sources (ast): no stage imports a later one
(parse → check → lower → emit → the pipeline), the numba emitter does not import the torch
emitter (they are siblings over emit.base), and the modules copied into generated code import
nothing of unfoldgen."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "unfoldgen"

# Stage of each compiler module; a module may import only modules of its own or earlier stages.
STAGES = {
    # the foundation every stage shares: the IR, errors, the syntax tree, the library of entries
    **dict.fromkeys(
        [
            "ir",
            "errors",
            "syntax",
            "resources",
            "functions",
            "prox",
            "nets",
            "bounds",
            "calculus",
            "mathtext",
            "spectral",
            "names",
            "__init__",
        ],
        0,
    ),
    "parse": 1,
    "check": 2,
    "lower": 3,
    **dict.fromkeys(["printers", "emit", "emit.base", "emit.model", "emit.kernels"], 4),
    "compiler": 5,
}
COPIED_INTO_GENERATED_CODE = [
    "runtime_torch",
    "runtime_numba",
    "ops_torch",
    "ops_numba",
    "nets_torch",
    "linops_torch",
    "linops_numba",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" and len(parts) > 1 else ".".join(parts)


def is_module(name: str) -> bool:
    path = PACKAGE / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def unfoldgen_imports(path: Path) -> set[str]:
    """The unfoldgen modules ``path`` imports (``from unfoldgen.emit import base`` → emit.base)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {
                alias.name.removeprefix("unfoldgen.") for alias in node.names if alias.name.startswith("unfoldgen")
            }
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("unfoldgen"):
            base = node.module.removeprefix("unfoldgen").removeprefix(".")
            for alias in node.names:
                submodule = f"{base}.{alias.name}" if base else alias.name
                found.add(submodule if is_module(submodule) else base)
    return {name for name in found if name}


def stage_of(module: str) -> int | None:
    return STAGES.get(module)


SOURCES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_stage_is_known():
    assert set(STAGES) <= set(SOURCES), sorted(set(STAGES) - set(SOURCES))


@pytest.mark.parametrize("module", [m for m in STAGES if m in SOURCES])
def test_no_stage_imports_a_later_one(module: str):
    later = {
        imported: stage_of(imported)
        for imported in unfoldgen_imports(SOURCES[module])
        if stage_of(imported) is None or stage_of(imported) > STAGES[module]
    }
    assert not later, f"{module} (stage {STAGES[module]}) imports later or non-compiler modules: {later}"


def test_the_numba_emitter_does_not_import_the_torch_emitter():
    assert "emit.model" not in unfoldgen_imports(SOURCES["emit.kernels"])
    assert "emit.kernels" not in unfoldgen_imports(SOURCES["emit.model"])
    assert unfoldgen_imports(SOURCES["emit"]) <= {"emit.base"}, "importing emit.kernels must not load emit.model"


@pytest.mark.parametrize("module", COPIED_INTO_GENERATED_CODE)
def test_modules_copied_into_generated_code_import_nothing_of_unfoldgen(module: str):
    assert not unfoldgen_imports(SOURCES[module])


def test_the_import_reader_sees_every_form(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text(
        "import unfoldgen.lower\nfrom unfoldgen import ir, emit\nfrom unfoldgen.emit import base\n"
        "from unfoldgen.check import Symbol\nimport os\n",
        encoding="utf-8",
    )
    assert unfoldgen_imports(source) == {"lower", "ir", "emit", "emit.base", "check"}
