"""What both emitters share: the template environment, the helper modules copied into generated
code (each definition with the helpers it uses), the header of every generated file, and the
final parse-and-format step. Output is deterministic (no sets, no hashes, no timestamps)."""

from __future__ import annotations

import ast
import functools
import subprocess
from importlib import resources

import jinja2

from unfoldgen import __version__, ir

# the built layer whose per-layer values layer _k reads: layers past the built ones reuse the last
STORED_LAYER = "_stored_k"


@functools.cache
def template_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("unfoldgen", "templates"),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


@functools.cache
def _definitions(module: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Top-level functions, classes and constants of a helper module: source text and the
    module-level names each one uses. Read as text, so the compiler never imports torch or numba."""
    text = resources.files("unfoldgen").joinpath(f"{module}.py").read_text(encoding="utf-8")
    tree = ast.parse(text)
    named = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            named[node.name] = node
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            named[node.targets[0].id] = node
    found = {}
    for name, node in named.items():
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in named} - {name}
        found[name] = (ast.get_source_segment(text, node) + "\n", frozenset(used))
    return found


def helper_closure(module: str, names: list[str]) -> list[str]:
    """``names`` and every helper they use, dependencies first, in a stable order."""
    definitions = _definitions(module)
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        for dependency in sorted(definitions[name][1]):
            visit(dependency)
        ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def helper_sources(module: str, names: list[str], decorator: str = "") -> list[str]:
    """The source of ``names`` and their dependencies; ``decorator`` goes before each function."""
    sources = []
    for name in helper_closure(module, names):
        source = _definitions(module)[name][0]
        sources.append(decorator + source if source.startswith("def ") else source)
    return sources


def header(low, spec_path: str) -> dict:
    """The context every generated file's header uses."""
    return {
        "version": __version__,
        "spec_path": spec_path,
        "unfold": low.name,
        "class_name": low.class_name,
        "layers": low.unfold.layers,
    }


def referenced_names(exprs: list[ir.Expr]) -> tuple[list[str], bool]:
    """Names referenced (first-use order, dims included) and whether dtype/device are needed."""
    names: dict[str, None] = {}
    tensors = False
    for expr in exprs:
        for node in ir.walk(expr):
            match node:
                case ir.Ref(name=name):
                    names.setdefault(name, None)
                case ir.Ones(shape=shape) | ir.Eye(shape=shape):
                    tensors = True
                    for dim in ir.base_dims(shape):
                        names.setdefault(dim, None)
    return list(names), tensors


def render(template: str, context: dict) -> str:
    return format_python(template_environment().get_template(template).render(**context))


def format_python(text: str) -> str:
    """Parse (a syntax error here is a compiler bug) and format with the pinned ruff."""
    ast.parse(text)
    from ruff.__main__ import find_ruff_bin

    command = [find_ruff_bin(), "format", "--isolated", "--line-length", "100", "--stdin-filename", "model.py", "-"]
    result = subprocess.run(command, input=text, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ruff could not format generated code: {result.stderr.strip()}")
    return result.stdout
