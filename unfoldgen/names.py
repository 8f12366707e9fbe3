"""The names generated code uses, derived in one place: a spec may not take them.

Read from the sources generated code is made of — the templates (their Python text, the Jinja
parts left out), the helper modules copied into it, the function table's code forms — so a new
name in a template needs no edit here. Generated code keeps its own locals out of the user's
way with a leading ``_`` (``_k``, ``_dtype``, ``_batch``), which no spec name may have; what is
left is the generated modules' interface (methods, attributes, imports, helper functions) and
the names of ``nn.Module``.
"""

from __future__ import annotations

import ast
import functools
import re
from importlib import resources

TEMPLATES = ("model.py.j2", "kernels.py.j2", "__init__.py.j2")
HELPER_MODULES = (
    "runtime_torch",
    "runtime_numba",
    "ops_torch",
    "nets_torch",
    "ops_numba",
    "linops_torch",
    "linops_numba",
)
# Generated methods named after a variable (lipschitz_x): no spec name may start like them.
GENERATED_PREFIXES = ("lipschitz_",)
# The names generated code derives from a spec's name: the problem's own value of a learned
# tensor, the numba kernels' batch arrays, per-sample outputs, a fixed-point iteration's new
# values, per-sample values, and a net's weights.
DERIVED_FORMS = (
    "lipschitz_{}",
    "_problem_{}",
    "_{}_batch",
    "_out_{}",
    "_next_{}",
    "_sample_{}",
    "_{}_weights",
    "_{}_biases",
)

# The attributes of ``torch.nn.Module()`` (the compiler does not import torch;
# tests/test_hostile.py checks this list against the installed torch).
NN_MODULE_ATTRIBUTES = frozenset(
    """T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda
    double dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter
    get_submodule half ipu load_state_dict modules mtia named_buffers named_children named_modules
    named_parameters parameters register_backward_hook register_buffer register_forward_hook
    register_forward_pre_hook register_full_backward_hook register_full_backward_pre_hook
    register_load_state_dict_post_hook register_load_state_dict_pre_hook register_module
    register_parameter register_state_dict_post_hook register_state_dict_pre_hook requires_grad_
    set_extra_state set_submodule share_memory state_dict to to_empty train training type xpu
    zero_grad""".split()
)

_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
PLACEHOLDER = "_"  # what a Jinja expression becomes: where the user's names land


def _source(package_file: str) -> str:
    return resources.files("unfoldgen").joinpath(package_file).read_text(encoding="utf-8")


def _bound_at_top(body: list[ast.stmt]) -> set[str]:
    """Names a module or class body binds: imports, assignments, functions and classes."""
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def code_names(text: str) -> set[str]:
    """The names of Python code that a user's name could clash with: what the module and its
    classes define, every ``self.`` attribute, and every name and argument of the functions the
    user's names enter (those holding a placeholder)."""
    tree = ast.parse(text)
    names = _bound_at_top(tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            names |= _bound_at_top(node.body)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            names.add(node.attr)
        elif isinstance(node, ast.FunctionDef):
            inside = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            inside |= {n.arg for n in ast.walk(node) if isinstance(n, ast.arg)}
            if PLACEHOLDER in inside or node.name == PLACEHOLDER:
                names |= inside
    return names


def template_names(template: str) -> set[str]:
    """The names of a template's Python text, each Jinja expression replaced by a placeholder."""
    text = _JINJA.sub(lambda m: PLACEHOLDER if m.group().startswith("{{") else "", _source(f"templates/{template}"))
    return code_names(text)


@functools.cache
def generated_names() -> frozenset[str]:
    """Every name generated code uses that a spec could also write (none starts with ``_``)."""
    names = set(NN_MODULE_ATTRIBUTES)
    for template in TEMPLATES:
        names |= template_names(template)
    for module in HELPER_MODULES:  # copied into generated modules: their top-level names
        names |= _bound_at_top(ast.parse(_source(f"{module}.py")).body)
    return frozenset(name for name in names if not name.startswith("_"))


WORD = re.compile(r"[A-Za-z_]\w*")
EMITTER_MODULES = ("emit/base.py", "emit/model.py", "emit/kernels.py", "printers.py")


def _string_literals(text: str) -> list[str]:
    """The string constants of a module (f-string parts included), docstrings left out."""
    tree = ast.parse(text)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def _entry_strings(value: object) -> list[str]:
    """The strings of a library entry's fields (its code forms and helper names)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (tuple, list, frozenset)):
        return [text for item in value for text in _entry_strings(item)]
    if hasattr(value, "__dataclass_fields__"):
        return [text for name in value.__dataclass_fields__ for text in _entry_strings(getattr(value, name))]
    return []


@functools.cache
def compiler_words() -> frozenset[str]:
    """Every identifier the compiler itself can write into generated code: the words of the
    templates and helper modules, of the library tables' code forms and of the emitters' string
    literals. Anything else in generated code came from a spec (tests/test_hostile.py checks
    that this is only declared identifiers)."""
    from unfoldgen.functions import FUNCTIONS
    from unfoldgen.nets import NET_KINDS
    from unfoldgen.prox import PROX_TABLE, SET_TABLE

    texts = [_JINJA.sub(" ", _source(f"templates/{template}")) for template in TEMPLATES]
    texts += [_source(f"{module}.py") for module in HELPER_MODULES]
    for module in EMITTER_MODULES:
        texts += _string_literals(_source(module))
    for table in (FUNCTIONS, PROX_TABLE, SET_TABLE, NET_KINDS):
        texts += [text for entry in table.values() for text in _entry_strings(entry)]
    return frozenset(word for text in texts for word in WORD.findall(text))
