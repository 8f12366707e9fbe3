"""Hostile specs: names and numbers chosen to break out of the generated code.

(a) identifiers that are Python keywords or builtins, ``__import__``, names the generated code uses
    (torch, self, nn, forward, sizes, as_data, PARADIGMS, lipschitz_x, …), non-ASCII look-alikes
    and names that differ from a declared one only under NFKC normalisation (Python folds
    ``ｘ`` and ``𝐱`` to ``x``) are refused, in every role, at the name;
(b) every name the generated code uses is tried as a spec identifier in several roles: it is
    refused, or the model it gives builds and computes exactly what the same spec with neutral
    names computes (forward, iterates, objective, gradients, parameter counts, export);
(c) the only spec text in generated code is validated identifiers and numbers: every NAME token
    of each generated file is a declared identifier (or one derived from it: the class name,
    ``lipschitz_x``, ``_problem_A``, ``_y_batch`` …) or a word the compiler's own sources write
    (unfoldgen.names.compiler_words), and every NUMBER token is a number;
(d) generated files are ``ast.parse``d before anything is written: an emitter that produced
    broken Python fails the compile, and ``unfoldgen compile`` writes no file when any spec fails;
(e) output paths cannot leave the ``-o`` folder: an unfold or spec named ``../x`` is refused, a
    package path that would escape is refused, and so is a package folder that is a symlink out.
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import io
import itertools
import keyword
import os
import re
import tokenize
from pathlib import Path
from types import SimpleNamespace

import numpy
import pytest
import torch

from unfoldgen import cli
from unfoldgen.compiler import check_text, compile_text, read_spec
from unfoldgen.emit import base as emit
from unfoldgen.errors import SpecError
from unfoldgen.lower import class_name
from unfoldgen.names import DERIVED_FORMS, NN_MODULE_ATTRIBUTES, compiler_words, generated_names

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.unf"))

# One problem and one unfold that give every role a name: each placeholder is replaced as a word.
TEMPLATE = """\
problem PROB {
    dim DIMM, n
    data DATA : real[DIMM, n]
    input INPUT : real[DIMM]
    var VAR : real[n] = 0
    param PARAM : real = 0.1
    minimize 0.5 * sumsq(DATA @ VAR - INPUT) + PARAM * norm1(VAR)
}
unfold UNFOLD from PROB {
    layers 3
    hyper HYPER : real = 1 / lipschitz(VAR)
    weight WEIGHT : real[n, DIMM] = HYPER * DATA.T
    state STATE : real[n] = VAR
    net NET : mlp(hidden 4)
    iterate {
        let LET = VAR + WEIGHT @ (INPUT - DATA @ VAR)
        STATE = prox[HYPER * PARAM * norm1](LET) + NET(VAR)
        VAR = STATE
    }
    learn HYPER, WEIGHT, PARAM, NET per layer
    learn DATA shared
}
"""
NEUTRAL = {
    "PROB": "prob",
    "DIMM": "m",
    "DATA": "A",
    "INPUT": "y",
    "VAR": "x",
    "PARAM": "lam",
    "UNFOLD": "step",
    "HYPER": "mu",
    "WEIGHT": "W",
    "STATE": "z",
    "NET": "c",
    "LET": "g",
}
ROLES = list(NEUTRAL)
_PLACEHOLDER = re.compile(r"\b(" + "|".join(NEUTRAL) + r")\b")


def spec_with(role: str, name: str) -> tuple[str, dict[str, str]]:
    """The template with ``name`` in ``role`` and neutral names elsewhere."""
    names = dict(NEUTRAL)
    names[role] = name
    return _PLACEHOLDER.sub(lambda match: names[match.group(1)], TEMPLATE), names


def neutral(template: str = TEMPLATE) -> str:
    return _PLACEHOLDER.sub(lambda match: NEUTRAL[match.group(1)], template)


def position_of(role: str, names: dict[str, str]) -> tuple[int, int]:
    """1-based line and column where ``role``'s name first appears (its declaration)."""
    index = re.search(rf"\b{role}\b", TEMPLATE).start()
    line = TEMPLATE.count("\n", 0, index) + 1
    before = TEMPLATE[TEMPLATE.rfind("\n", 0, index) + 1 : index]
    return line, len(_PLACEHOLDER.sub(lambda match: names[match.group(1)], before)) + 1


# ---------------------------------------------------------------------- (a) refused names

HOSTILE = [
    # keywords, soft keywords, builtins, the import machinery
    *["class", "lambda", "def", "import", "return", "yield", "None", "True", "False", "async", "await"],
    *["match", "case", "type", "print", "exec", "eval", "open", "compile", "globals", "getattr", "object"],
    *["__import__", "__builtins__", "__class__", "__dict__", "_private", "_"],
    # what the generated module itself defines or imports
    *["torch", "nn", "Tensor", "self", "forward", "layer", "layers", "state", "inputs", "params", "dtype"],
    *["sizes", "as_data", "check_input", "soft_threshold", "checkpoint", "PARADIGMS", "lipschitz_x"],
    *["lipschitz_anything", "parameter_counts", "return_iterates", "export_npz", "Mlp", "register_buffer"],
    # language words
    *["grad", "prox", "proj", "norm1", "box", "real", "per", "shared", "problem", "let", "iterate"],
    # non-ASCII: look-alikes, NFKC variants of ASCII names, invisible and bidi characters
    "х",  # CYRILLIC SMALL LETTER HA
    "ο",  # GREEK SMALL LETTER OMICRON
    "ｘ",  # FULLWIDTH x, NFKC → x
    "𝐱",  # MATHEMATICAL BOLD SMALL X, NFKC → x
    "ℌ",  # BLACK-LETTER CAPITAL H, NFKC → H
    "ﬁ",  # LATIN SMALL LIGATURE FI, NFKC → fi
    "x\u0301",  # x + COMBINING ACUTE ACCENT
    "x\u200bx",  # ZERO WIDTH SPACE inside
    "x\u202ey",  # RIGHT-TO-LEFT OVERRIDE inside
    "l" * 65,
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", HOSTILE, ids=[ascii(n)[1:-1][:24] for n in HOSTILE])
def test_hostile_name_is_refused_at_the_name(role: str, name: str):
    text, names = spec_with(role, name)
    with pytest.raises(SpecError) as info:
        check_text(text, "hostile.unf")
    err = info.value
    line, column = position_of(role, names)
    assert err.line == line, f"{err.message!r} at {err.line}:{err.column}, name at {line}:{column}"
    assert column <= err.column <= column + len(name), f"{err.message!r} at column {err.column}, name at {column}"


NFKC_TWINS = [("q", "ｑ"), ("v", "𝐯"), ("H", "ℌ"), ("fi", "ﬁ"), ("rate", "ｒａｔｅ")]


@pytest.mark.parametrize(("ascii_name", "twin"), NFKC_TWINS)
def test_names_equal_under_nfkc_are_refused(ascii_name: str, twin: str):
    """Python folds identifiers with NFKC: ``ｑ`` would *be* ``q`` in the generated module."""
    twins = f"    param {ascii_name} : real = 1\n    param {twin} : real = 2\n    param PARAM"
    text = neutral(TEMPLATE.replace("    param PARAM", twins))
    with pytest.raises(SpecError) as info:
        check_text(text, "twins.unf")
    line = text[: text.index(f"param {twin}")].count("\n") + 1
    assert (info.value.line, info.value.column) == (line, len("    param ") + 1), info.value.message


@pytest.mark.parametrize("unfold", ["true", "false", "none", "tensor", "mlp", "conv1d_net", "conv2d_net"])
def test_unfold_whose_class_name_is_taken_is_refused(unfold: str):
    """``unfold tensor`` would define ``class Tensor`` over torch's; ``unfold true`` a ``class True``."""
    text, _ = spec_with("UNFOLD", unfold)
    with pytest.raises(SpecError, match=r"class|reserved"):
        check_text(text, "classes.unf")


# ---------------------------------------------------------------------- (b) every generated name, tried


def _tokens(source: str):
    return tokenize.generate_tokens(io.StringIO(source).readline)


@pytest.fixture(scope="module")
def example_outputs() -> dict[str, dict[str, str]]:
    """Fresh compiles of specs/*.unf: {spec name: {relative path: source}}."""
    return {path.name: compile_text(read_spec(path), path.name).files for path in SPECS}


def generated_vocabulary(example_outputs: dict[str, dict[str, str]]) -> list[str]:
    """Every name the generated torch modules use (less the examples' own identifiers), the
    snake_case spelling of each CamelCase one (an unfold of that name would generate that class),
    and nn.Module's attributes."""
    names, declared = set(), set()
    for spec, files in example_outputs.items():
        declared |= declared_names(read_spec(ROOT / "specs" / spec))
        for path, source in files.items():
            if path.endswith(("model.py", "__init__.py")):
                names |= {tok.string for tok in _tokens(source) if tok.type == tokenize.NAME}
    names -= declared
    names |= {name for name in dir(torch.nn.Module()) if not name.startswith("__")}
    names |= {re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower() for name in names if re.fullmatch(r"[A-Z]\w*", name)}
    return sorted(names)


def load_model(source: str, class_: str, tmp: Path):
    path = tmp / f"model_{next(_COUNTER)}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"_hostile_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, class_)


_COUNTER = itertools.count()


def behaviour(text: str, names: dict[str, str], tmp: Path) -> dict:
    """Build the model of a template spec and record everything it computes."""
    files = compile_text(text, "collide.unf").files
    model_class = load_model(files[f"{names['UNFOLD']}/model.py"], class_name(names["UNFOLD"]), tmp)
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(4, 3, dtype=torch.float64, generator=generator)
    y = torch.randn(2, 4, dtype=torch.float64, generator=generator)
    torch.manual_seed(0)
    model = model_class(**{names["DATA"]: data})
    out = model(**{names["INPUT"]: y})
    out.sum().backward()
    iterates = torch.stack(model(**{names["INPUT"]: y}, return_iterates=True))
    objective = model.objective(**{names["INPUT"]: y, names["VAR"]: out.detach()})
    roles = {spec_name: role for role, spec_name in names.items()}

    def by_role(key: str) -> str:  # a state-dict key with the model attribute named by its role
        head, dot, rest = key.partition(".")
        prefix = "_problem_" if head.startswith("_problem_") else ""
        head = head.removeprefix(prefix)
        return prefix + roles.get(head, head) + dot + rest

    grads = {by_role(key): p.grad.clone() for key, p in model.named_parameters()}
    export = tmp / f"export_{next(_COUNTER)}.npz"
    model.export_npz(str(export))
    with numpy.load(export) as saved:
        exported = sorted(by_role(key) for key in saved.files)
    return {
        "out": out.detach(),
        "iterates": iterates.detach(),
        "objective": objective.detach(),
        "grads": grads,
        "counts": model.parameter_counts(),
        "exported": exported,
    }


def assert_same(got: dict, want: dict, label: str) -> None:
    for key in ("out", "iterates", "objective"):
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-12, msg=f"{label}: {key} differs")
    assert got["counts"] == want["counts"], label
    assert got["exported"] == want["exported"], label
    assert sorted(got["grads"]) == sorted(want["grads"]), label
    for key, grad in want["grads"].items():
        torch.testing.assert_close(got["grads"][key], grad, rtol=0, atol=1e-12, msg=f"{label}: gradient of {key}")


# Each name in 3 of the 12 roles, rotating, so every role meets names of every kind (~20 s);
# UNFOLDGEN_HOSTILE_ALL_ROLES=1 tries every name in every role (~2 min).
ROLES_PER_NAME = len(ROLES) if os.environ.get("UNFOLDGEN_HOSTILE_ALL_ROLES") else 3


def _parse_only(text: str) -> str:
    ast.parse(text)
    return text


def test_every_generated_name_is_refused_or_harmless(example_outputs, tmp_path, monkeypatch):
    """A spec may not take a name the generated code uses, unless taking it changes nothing."""
    monkeypatch.setattr(emit, "format_python", _parse_only)  # ruff's layout changes no behaviour
    baseline = behaviour(*spec_with("PROB", "prob"), tmp_path)
    vocabulary = generated_vocabulary(example_outputs)
    assert len(vocabulary) > 150, "the vocabulary should hold every generated name"
    problems, accepted = [], []
    for index, name in enumerate(vocabulary):
        for role in (ROLES[(index + step * 4) % len(ROLES)] for step in range(ROLES_PER_NAME)):
            text, names = spec_with(role, name)
            if name in NEUTRAL.values():
                continue  # a duplicate declaration, refused elsewhere
            try:
                check_text(text, "collide.unf")
            except SpecError:
                continue
            accepted.append(f"{role}={name}")
            try:
                assert_same(behaviour(text, names, tmp_path), baseline, f"{role}={name}")
            except AssertionError as err:
                problems.append(f"{role}={name}: {str(err).splitlines()[0]}")
            except Exception as err:
                problems.append(f"{role}={name}: {type(err).__name__}: {str(err)[:160]}")
    assert not problems, f"{len(problems)} of {len(accepted)} accepted names break the model:\n" + "\n".join(problems)


# ---------------------------------------------------------------------- (c) only identifiers and numbers


def allowed_names() -> frozenset[str]:
    """What the compiler itself writes (derived from its sources, see unfoldgen.names)."""
    return compiler_words() | frozenset(keyword.kwlist)


def declared_names(text: str) -> set[str]:
    """The spec's identifiers and the names derived from them."""
    compiled = compile_text(text, "declared.unf")
    names: set[str] = set()
    for low in compiled.lowered:
        symbols = low.problem.symbols + low.unfold.symbols
        names |= {symbol.name for symbol in symbols} | {net.name for net in low.unfold.nets}
        names |= {rule.target for rule in low.unfold.rules} | {low.name, low.problem.name}
        names |= {low.class_name}
    return names | {form.format(name) for name in names for form in DERIVED_FORMS}


def foreign_tokens(source: str, declared: set[str], allowed: frozenset[str]) -> list[str]:
    """NAME tokens that are neither declared nor generated, and NUMBER tokens that are not numbers."""
    found = []
    for tok in _tokens(source):
        if tok.type == tokenize.NAME and tok.string not in declared and tok.string not in allowed:
            found.append(f"line {tok.start[0]}: name {tok.string!r}")
        elif tok.type == tokenize.NUMBER:
            try:
                complex(tok.string.replace("_", ""))  # 2j is a number too
            except ValueError:
                found.append(f"line {tok.start[0]}: number {tok.string!r}")
    return found


def test_foreign_token_check_can_fail():
    allowed = allowed_names()
    assert foreign_tokens("x = torch.exp(y)\n", {"x", "y"}, allowed) == []
    assert foreign_tokens("import os\nos.system('x')\n", set(), allowed) == [
        "line 1: name 'os'",
        "line 2: name 'os'",
        "line 2: name 'system'",
    ]
    assert foreign_tokens("x = __import__('os')\n", {"x"}, allowed) == ["line 1: name '__import__'"]
    assert "exec" not in allowed and "eval" not in allowed and "open" not in allowed


# identifiers that are unusual but valid, and hostile comments and numbers around them
ODD_BUT_VALID = _PLACEHOLDER.sub(
    lambda m: {"PROB": "os", "DATA": "system", "INPUT": "subprocess", "VAR": "x0", "PARAM": "eval0"}.get(
        m.group(1), NEUTRAL[m.group(1)]
    ),
    TEMPLATE,
).replace("0.1\n", "1e-300  # __import__('os').system('id')\n")


@pytest.mark.parametrize("spec", [p.name for p in SPECS] + ["odd_but_valid"])
def test_generated_code_holds_only_identifiers_and_numbers(spec: str, example_outputs):
    if spec == "odd_but_valid":
        text, files = ODD_BUT_VALID, compile_text(ODD_BUT_VALID, "odd.unf").files
    else:
        text, files = read_spec(ROOT / "specs" / spec), example_outputs[spec]
    declared, allowed = declared_names(text), allowed_names()
    problems = []
    for path, source in files.items():
        ast.parse(source, path)
        problems += [f"{path}: {found}" for found in foreign_tokens(source, declared, allowed)]
    assert not problems, "\n".join(problems)


def test_builtins_in_generated_code_are_harmless(example_outputs):
    dangerous = {"exec", "eval", "open", "compile", "__import__", "globals", "locals", "vars", "input", "breakpoint"}
    assert dangerous <= set(dir(builtins))
    for files in example_outputs.values():
        for path, source in files.items():
            used = {tok.string for tok in _tokens(source) if tok.type == tokenize.NAME}
            assert not used & dangerous, f"{path} uses {sorted(used & dangerous)}"


# ---------------------------------------------------------------------- (d) parsed before written


def test_emitted_text_is_parsed_before_it_is_returned():
    with pytest.raises(SyntaxError):
        emit.format_python("def broken(:\n    pass\n")


def test_compile_writes_nothing_when_a_spec_fails(tmp_path, capsys):
    good = tmp_path / "a_good.unf"
    good.write_text(neutral(), encoding="utf-8")
    bad = tmp_path / "b_bad.unf"
    bad.write_text(spec_with("VAR", "class")[0], encoding="utf-8")
    out = tmp_path / "out"
    assert cli.main(["compile", str(good), str(bad), "-o", str(out)]) == 1
    assert not out.exists() or not any(out.rglob("*")), "files were written although a spec failed"
    assert "b_bad.unf" in capsys.readouterr().err


def test_compile_writes_nothing_when_the_emitter_produces_broken_python(tmp_path, monkeypatch):
    """If a template produced invalid Python, ast.parse in the emitter stops the compile."""
    good = tmp_path / "good.unf"
    good.write_text(neutral(), encoding="utf-8")
    real = emit.format_python
    monkeypatch.setattr(emit, "format_python", lambda text: real(text + "\ndef broken(:\n"))
    out = tmp_path / "out"
    try:
        code = cli.main(["compile", str(good), "-o", str(out)])
    except SyntaxError:
        code = None  # an internal error: it may propagate, as long as nothing is written
    assert code != 0
    assert not out.exists()


# ---------------------------------------------------------------------- (e) output paths


@pytest.mark.parametrize("name", ["../x", "..", "/tmp/x", "a/b", "x\\y", "x.y", "~x", "$HOME"])
def test_unfold_names_that_are_paths_are_refused(name: str):
    text = neutral().replace("unfold step", f"unfold {name}")
    with pytest.raises(SpecError) as info:
        check_text(text, "paths.unf")
    assert info.value.line == text[: text.index(f"unfold {name}")].count("\n") + 1


def test_spec_file_named_like_a_path_stays_inside_the_output(tmp_path):
    spec = tmp_path / "..x.unf"
    spec.write_text(neutral(), encoding="utf-8")
    out = tmp_path / "deep" / "out"
    assert cli.main(["compile", str(spec), "-o", str(out)]) == 0
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".py")
    assert written and all(out.resolve() in p.resolve().parents for p in written), written


def test_package_path_that_would_escape_is_refused(tmp_path, monkeypatch, capsys):
    """Even if the compiler returned a path out of the folder, the CLI would not write it."""
    spec = tmp_path / "s.unf"
    spec.write_text(neutral(), encoding="utf-8")
    fake = SimpleNamespace(files={"../escaped/model.py": "x = 1\n"}, notes=(), lowered=())
    monkeypatch.setattr(cli, "compile_text", lambda *args, **kwargs: fake)
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["compile", str(spec), "-o", str(out)]) == 1
    assert not (tmp_path / "escaped").exists()
    assert "would leave" in capsys.readouterr().err


def test_symlinked_package_folder_is_not_followed(tmp_path):
    """A package folder inside -o that links elsewhere must not receive the generated files."""
    spec = tmp_path / "s.unf"
    spec.write_text(neutral(), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "step").symlink_to(elsewhere, target_is_directory=True)
    assert cli.main(["compile", str(spec), "-o", str(out)]) == 2  # an output that cannot be used
    assert list(elsewhere.iterdir()) == []


# ---------------------------------------------------------------------- (b′) names through both backends

# One sample per loop iteration in the numba kernels: a per-sample matrix input and a per-sample
# Lipschitz constant (the kernel's own Lipschitz function), learned as a factor per layer.
PER_SAMPLE_TEMPLATE = """\
problem PROB {
    dim DIMM, DIMN
    input INPUT : real[DIMM]
    input MAT : real[DIMM, DIMN]
    var VAR : real[DIMN] = 0
    param PARAM : real = 0.1
    minimize 0.5 * sumsq(MAT @ VAR - INPUT) + PARAM * norm1(VAR)
}
unfold UNFOLD from PROB {
    layers 3
    hyper HYPER : real = 1 / lipschitz(VAR)
    state STATE : real[DIMN] = VAR
    iterate {
        let LET = VAR - HYPER * grad(VAR)
        STATE = prox[HYPER * PARAM * norm1](LET)
        VAR = STATE
    }
    learn HYPER per layer
}
"""
PER_SAMPLE_NEUTRAL = {
    "PROB": "prob",
    "DIMM": "m",
    "DIMN": "n",
    "INPUT": "y",
    "MAT": "H",
    "VAR": "x",
    "PARAM": "lam",
    "UNFOLD": "step",
    "HYPER": "mu",
    "STATE": "z",
    "LET": "g",
}
# The names the kernels used as their own locals before they moved out of the user's way
# (issue 11: wrong results, garbage, TypingErrors, duplicate arguments), placed where they clashed.
KERNEL_CLASHES = [
    (PER_SAMPLE_TEMPLATE, {"PARAM": "count"}),
    (PER_SAMPLE_TEMPLATE, {"PARAM": "j"}),
    (PER_SAMPLE_TEMPLATE, {"INPUT": "hessian"}),
    (PER_SAMPLE_TEMPLATE, {"PARAM": "basis"}),
    (PER_SAMPLE_TEMPLATE, {"PARAM": "F"}),
    (PER_SAMPLE_TEMPLATE, {"STATE": "out_x"}),
    (PER_SAMPLE_TEMPLATE, {"PARAM": "sample_mu"}),
    (PER_SAMPLE_TEMPLATE, {"STATE": "H_batch"}),
    (PER_SAMPLE_TEMPLATE, {"LET": "y_batch"}),
    (PER_SAMPLE_TEMPLATE, {"DIMN": "k", "VAR": "b"}),
    (PER_SAMPLE_TEMPLATE, {"DIMM": "B", "LET": "batch"}),
    (TEMPLATE, {"VAR": "k", "DIMM": "B"}),
    (TEMPLATE, {"STATE": "F", "LET": "dtype_"}),
    (TEMPLATE, {"PARAM": "c_weights", "HYPER": "device"}),
    (TEMPLATE, {"INPUT": "value", "WEIGHT": "results"}),
]


def template_with(template: str, neutral_names: dict[str, str], chosen: dict[str, str]) -> tuple[str, dict]:
    names = neutral_names | chosen
    pattern = re.compile(r"\b(" + "|".join(neutral_names) + r")\b")
    return pattern.sub(lambda match: names[match.group(1)], template), names


@pytest.mark.parametrize(
    ("template", "chosen"), KERNEL_CLASHES, ids=[",".join(f"{k}={v}" for k, v in c.items()) for _, c in KERNEL_CLASHES]
)
def test_former_kernel_locals_are_user_names_in_both_backends(template: str, chosen: dict[str, str]):
    """Each name compiles, and the numba kernels compute what the torch module computes."""
    from test_emitted_kernels import both_backends

    neutral_names = NEUTRAL if template is TEMPLATE else PER_SAMPLE_NEUTRAL
    text, names = template_with(template, neutral_names, chosen)
    expected, got = both_backends(text, names["UNFOLD"])
    for out, ref in zip(got, expected, strict=True):
        numpy.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("template", [TEMPLATE, PER_SAMPLE_TEMPLATE], ids=["batched", "per_sample"])
def test_a_dim_named_B_is_not_the_batch_size(template: str, batch: int):
    """`dim B` is a size like any other (B = 3 here): batches of other sizes run, in both backends."""
    from test_emitted_kernels import both_backends

    neutral_names = NEUTRAL if template is TEMPLATE else PER_SAMPLE_NEUTRAL
    text, names = template_with(template, neutral_names, {"DIMM": "B"})
    expected, got = both_backends(text, names["UNFOLD"], batch=batch)
    for out, ref in zip(got, expected, strict=True):
        assert out.shape[0] == batch
        numpy.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-10)


def test_accepted_generated_names_run_in_both_backends():
    """Every bare name of the generated kernels that a spec may take (those not refused) runs
    the same in both backends: the kernels keep their own locals under ``_`` names. The names
    are tried several at a time, one per role, to keep the numba compiles few."""
    from test_emitted_kernels import both_backends

    kernels = {
        node.id if isinstance(node, ast.Name) else node.arg
        for files in (compile_text(read_spec(path), path.name).files for path in SPECS)
        for path, source in files.items()
        if path.endswith("kernels.py")
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Name, ast.arg))
    }
    declared = set().union(*(declared_names(read_spec(path)) for path in SPECS))
    candidates = sorted(name for name in kernels - declared - set(NEUTRAL.values()) if not name.startswith("_"))
    accepted = []
    for name in candidates:
        try:
            check_text(spec_with("PARAM", name)[0], "accepted.unf")
        except SpecError:
            continue
        accepted.append(name)
    assert not set(accepted) & {"np", "numba", "layer", "network", "run", "params", "PARAMETERS"}, accepted
    roles = [role for role in ROLES if role not in ("PROB", "UNFOLD")]
    for start in range(0, len(accepted), len(roles)):
        chosen = dict(zip(roles, accepted[start : start + len(roles)], strict=False))
        text, names = template_with(TEMPLATE, NEUTRAL, chosen)
        check_text(text, "accepted.unf")
        expected, got = both_backends(text, names["UNFOLD"])
        numpy.testing.assert_allclose(got[0], expected[0], rtol=1e-9, atol=1e-10, err_msg=str(chosen))


def test_the_compilers_list_of_module_attributes_is_torchs():
    """unfoldgen.names lists nn.Module's attributes without importing torch: it must stay whole."""
    attributes = {name for name in dir(torch.nn.Module()) if not name.startswith("_")}
    assert attributes <= NN_MODULE_ATTRIBUTES, sorted(attributes - NN_MODULE_ATTRIBUTES)


def test_derived_generated_names_follow_the_templates():
    """A name a template uses (here run's parameter ``params``) is refused with no list edited."""
    assert {"params", "run", "network", "layer", "state", "inputs", "sizes", "dtype"} <= generated_names()
    assert not {"k", "count", "j", "hessian", "basis", "F", "batch", "device", "value"} & generated_names()
    assert all(not name.startswith("_") for name in generated_names())
