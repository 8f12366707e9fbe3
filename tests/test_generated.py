"""The generated packages: standalone, torch-only, deterministic, free of spec text, labelled.

(a) every package in ``generated/`` imports and runs in a fresh interpreter where ``unfoldgen``
    cannot be imported, from a copy of the tree outside the repository;
(b) the generated files import nothing but torch (checked on the syntax tree);
(c) ``python -m unfoldgen compile`` gives the same bytes under different hash seeds and working
    folders, equal to the committed ``generated/`` tree, and ``--check`` agrees (and catches a
    changed file);
(d) comments in a spec never reach the generated code, however hostile, nor does a hostile
    file name;
(e) every generated file starts with a header naming its spec file and the unfoldgen version.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import unfoldgen
from unfoldgen.compiler import compile_text

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "generated"
SPECS = ROOT / "specs"

# How to build and call each example: (class, constructor, call, expected output shapes).
# In the subprocess A is (6, 10), y is (3, 6), H is (3, 6, 10) and D is (3, 5, 4).
EXAMPLES = {
    "ista": ("Ista", "Ista(A=A, lam=0.1)", "model(y=y)", [[3, 10]]),
    "fista": ("Fista", "Fista(A=A, lam=0.1)", "model(y=y)", [[3, 10]]),
    "lista_cp": ("ListaCp", "ListaCp(A=A, lam=0.1)", "model(y=y)", [[3, 10]]),
    "admm": ("Admm", "Admm(A=A, lam=0.1)", "model(y=y)", [[3, 10]]),
    "ista_corrected": ("IstaCorrected", "IstaCorrected(A=A)", "model(y=y)", [[3, 10]]),
    "ista_learned_prox": ("IstaLearnedProx", "IstaLearnedProx(A=A)", "model(y=y)", [[3, 10]]),
    "pgd": ("Pgd", "Pgd(dtype=torch.float64)", "model(H=H, y=y)", [[3, 10]]),
    "rpca_ista": ("RpcaIsta", "RpcaIsta(dtype=torch.float64)", "model(D=D)", [[3, 5, 4], [3, 5, 4]]),
    "alista": ("Alista", "Alista(A=A)", "model(y=y)", [[3, 10]]),
    "alista_ss": ("AlistaSs", "AlistaSs(A=A)", "model(y=y)", [[3, 10]]),
    "lista_cpss": ("ListaCpss", "ListaCpss(A=A, lam=0.1)", "model(y=y)", [[3, 10]]),
    "logistic_gd": ("LogisticGd", "LogisticGd(X=A)", "model(b=y)", [[3, 10]]),
    "lista": ("Lista", "Lista(A=A)", "model(y=y)", [[3, 10]]),
    "lista_tied": ("ListaTied", "ListaTied(A=A)", "model(y=y)", [[3, 10]]),
    "ista_tied": ("IstaTied", "IstaTied(A=A)", "model(y=y)", [[3, 10]]),
    "ista_safe": ("IstaSafe", "IstaSafe(A=A)", "model(y=y)", [[3, 10]]),
    "alista_safe": ("AlistaSafe", "AlistaSafe(A=A)", "model(y=y)", [[3, 10]]),
    "ista_learned_operator": ("IstaLearnedOperator", "IstaLearnedOperator(A=A)", "model(y=y)", [[3, 10]]),
    "ista_conv_corrected": ("IstaConvCorrected", "IstaConvCorrected(A=A)", "model(y=y)", [[3, 10]]),
    "ista_learned_shrink": ("IstaLearnedShrink", "IstaLearnedShrink(A=A)", "model(y=y)", [[3, 10]]),
    "rpca_tied": ("RpcaTied", "RpcaTied(dtype=torch.float64)", "model(D=D)", [[3, 5, 4], [3, 5, 4]]),
    "rpca_corrected": ("RpcaCorrected", "RpcaCorrected(dtype=torch.float64)", "model(D=D)", [[3, 5, 4], [3, 5, 4]]),
    "rpca_learned_prox": (
        "RpcaLearnedProx",
        "RpcaLearnedProx(dtype=torch.float64)",
        "model(D=D)",
        [[3, 5, 4], [3, 5, 4]],
    ),
    "pgd_corrected": ("PgdCorrected", "PgdCorrected(n=10, dtype=torch.float64)", "model(H=H, y=y)", [[3, 10]]),
    "rpca_steps": ("RpcaSteps", "RpcaSteps(dtype=torch.float64)", "model(D=D)", [[3, 5, 4], [3, 5, 4]]),
    "rpca_precond": ("RpcaPrecond", "RpcaPrecond(m=5, dtype=torch.float64)", "model(D=D)", [[3, 5, 4], [3, 5, 4]]),
    "rpca_corona": ("RpcaCorona", "RpcaCorona(dtype=torch.float64)", "model(D=D)", [[3, 5, 4], [3, 5, 4]]),
    "deblur_ista": ("DeblurIsta", "DeblurIsta(k=K9, h=16, w=16)", "model(y=Y)", [[2, 16, 16]]),
    "deblur_fista": ("DeblurFista", "DeblurFista(k=K9, h=16, w=16)", "model(y=Y)", [[2, 16, 16]]),
    "deblur_cp": ("DeblurCp", "DeblurCp(k=K9)", "model(y=Y)", [[2, 16, 16]]),
    "deblur_cp_kernels": ("DeblurCpKernels", "DeblurCpKernels(k=K9)", "model(y=Y)", [[2, 16, 16]]),
    "deblur_cp_corrected": ("DeblurCpCorrected", "DeblurCpCorrected(k=K9)", "model(y=Y)", [[2, 16, 16]]),
    "deblur_hqs": ("DeblurHqs", "DeblurHqs(k=K9)", "model(y=Y)", [[2, 16, 16]]),
    "tv_cp": ("TvCp", "TvCp(dtype=torch.float64)", "model(y=Y)", [[2, 16, 16]]),
    "inpaint_ista": ("InpaintIsta", "InpaintIsta(dtype=torch.float64)", "model(M=M, y=Y)", [[2, 16, 16]]),
    "superres_ista": ("SuperresIsta", "SuperresIsta(k=K5, h=16, w=16)", "model(y=Ylow)", [[2, 16, 16]]),
    "ista_fixed_point": ("IstaFixedPoint", "IstaFixedPoint(A=A, lam=0.1)", "model(y=y)", [[3, 10]]),
    "pgd_fixed_point": ("PgdFixedPoint", "PgdFixedPoint(dtype=torch.float64)", "model(H=H, y=y)", [[3, 10]]),
    # complex examples: CA, Cy, CH are A, y, H with imaginary parts; CY a complex k-space (2, 16, 16)
    "complex_ista": ("ComplexIsta", "ComplexIsta(A=CA)", "model(y=Cy)", [[3, 10]]),
    "complex_fista": ("ComplexFista", "ComplexFista(A=CA)", "model(y=Cy)", [[3, 10]]),
    "complex_lista_cp": ("ComplexListaCp", "ComplexListaCp(A=CA)", "model(y=Cy)", [[3, 10]]),
    "mimo_pgd": ("MimoPgd", "MimoPgd(dtype=torch.float64)", "model(H=CH, y=Cy, sigma2=S2)", [[3, 10]]),
    "mimo_pgd_corrected": (
        "MimoPgdCorrected",
        "MimoPgdCorrected(n=10, dtype=torch.float64)",
        "model(H=CH, y=Cy, sigma2=S2)",
        [[3, 10]],
    ),
    "mri_ista": ("MriIsta", "MriIsta(M=M[0])", "model(y=CY)", [[2, 16, 16]]),
    "mri_istanet": ("MriIstanet", "MriIstanet(M=M[0])", "model(y=CY)", [[2, 16, 16]]),
}
COMPLEX_EXAMPLES = frozenset(name for name in EXAMPLES if name.startswith(("complex_", "mimo_", "mri_")))

STANDALONE = textwrap.dedent(
    """
    import importlib, json, sys, traceback

    sys.modules["unfoldgen"] = None  # from here on any `import unfoldgen...` raises ImportError
    root, cases = sys.argv[1], json.loads(sys.argv[2])
    sys.path.insert(0, root)
    import torch

    try:
        import unfoldgen  # noqa: F401
        blocked = False
    except ImportError:
        blocked = True
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 10, generator=g, dtype=torch.float64)
    y = torch.randn(3, 6, generator=g, dtype=torch.float64)
    H = torch.randn(3, 6, 10, generator=g, dtype=torch.float64)
    D = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    K9 = torch.full((9, 9), 1 / 81, dtype=torch.float64)
    K5 = torch.full((5, 5), 1 / 25, dtype=torch.float64)
    Y = torch.rand(2, 16, 16, generator=g, dtype=torch.float64)
    Ylow = torch.rand(2, 4, 4, generator=g, dtype=torch.float64)
    M = (torch.rand(2, 16, 16, generator=g) < 0.6).to(torch.float64)
    CA = torch.complex(A, torch.randn(6, 10, generator=g, dtype=torch.float64))
    Cy = torch.complex(y, torch.randn(3, 6, generator=g, dtype=torch.float64))
    CH = torch.complex(H, torch.randn(3, 6, 10, generator=g, dtype=torch.float64))
    CY = torch.complex(Y, torch.rand(2, 16, 16, generator=g, dtype=torch.float64))
    S2 = torch.full((3,), 0.1, dtype=torch.float64)
    images = {"K9": K9, "K5": K5, "Y": Y, "Ylow": Ylow, "M": M, "CA": CA, "Cy": Cy, "CH": CH, "CY": CY, "S2": S2}
    results = {"blocked": blocked}
    for package, (cls, build, call, _) in cases.items():
        try:
            module = importlib.import_module(package)
            namespace = {"torch": torch, "A": A, "y": y, "H": H, "D": D, **images, cls: getattr(module, cls)}
            namespace["model"] = eval(build, namespace)
            with torch.no_grad():
                out = eval(call, namespace)
                iterates = eval(call[:-1] + ", return_iterates=True)", namespace)
            outs = list(out) if isinstance(out, tuple) else [out]
            results[package] = {
                "file": module.__file__,
                "model_file": sys.modules[package + ".model"].__file__,
                "shapes": [list(o.shape) for o in outs],
                "dtypes": [str(o.dtype) for o in outs],
                "finite": all(bool(torch.isfinite(o).all()) for o in outs),
                "iterates": len(iterates),
                "layers": namespace["model"].layers,
                "fixed_point": getattr(namespace["model"], "FIXED_POINT", False),
                "certified_layers": len(namespace["model"].certify()["checks"][0]["per_layer"])
                if namespace["model"].CERTIFY
                else namespace["model"].layers,
            }
        except BaseException:
            results[package] = {"error": traceback.format_exc()}
    results["unfoldgen_modules"] = sorted(
        name for name, mod in sys.modules.items() if name.split(".")[0] == "unfoldgen" and mod is not None
    )
    print(json.dumps(results))
    """
)


def generated_packages() -> list[str]:
    return sorted(p.parent.name for p in GENERATED.glob("*/__init__.py"))


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root (caches aside) as {relative posix path: bytes}."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def spec_of(package: str) -> str:
    """The spec file in specs/ that defines `unfold <package>`."""
    owners = [
        p.name for p in SPECS.glob("*.unf") if re.search(rf"^\s*unfold\s+{package}\s+from\b", p.read_text(), re.M)
    ]
    assert len(owners) == 1, f"unfold {package} defined in {owners}"
    return owners[0]


def cli(*args: str, cwd: Path = ROOT, hashseed: str = "0") -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    return subprocess.Popen(
        [sys.executable, "-m", "unfoldgen", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=240)
    return process.returncode, out, err


# ------------------------------------------------------------------ (a) standalone


def test_examples_table_covers_every_generated_package():
    assert generated_packages() == sorted(EXAMPLES)


@pytest.fixture(scope="module")
def standalone_run(tmp_path_factory):
    """Run every example once, in a subprocess that cannot import unfoldgen, from a copy of generated/."""
    root = tmp_path_factory.mktemp("standalone")
    shutil.copytree(GENERATED, root / "pkgs", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    result = subprocess.run(
        [sys.executable, "-I", "-c", STANDALONE, str(root / "pkgs"), json.dumps(EXAMPLES)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    return root / "pkgs", json.loads(result.stdout.strip().splitlines()[-1])


def test_standalone_interpreter_cannot_import_unfoldgen(standalone_run):
    _, results = standalone_run
    assert results["blocked"], "the subprocess could import unfoldgen: the standalone check would be vacuous"
    assert results["unfoldgen_modules"] == []


@pytest.mark.parametrize("package", sorted(EXAMPLES))
def test_package_runs_without_unfoldgen(standalone_run, package):
    root, results = standalone_run
    result = results[package]
    assert "error" not in result, result.get("error")
    # it ran from the copy, not from the repository
    assert Path(result["file"]).resolve() == (root / package / "__init__.py").resolve()
    assert Path(result["model_file"]).resolve() == (root / package / "model.py").resolve()
    assert result["shapes"] == EXAMPLES[package][3]
    assert set(result["dtypes"]) == {"torch.complex128" if package in COMPLEX_EXAMPLES else "torch.float64"}
    assert result["finite"]
    # a fixed-point network returns its final outputs only; `layers` is its iteration cap
    assert result["iterates"] == (1 if result["fixed_point"] else result["layers"]) > 0
    assert result["certified_layers"] == result["layers"]  # certify() runs without unfoldgen


# ------------------------------------------------------------------ (b) imports

ALLOWED_MODULES = {
    "model.py": {"torch", "__future__", "warnings"},  # warnings: a fixed-point network that hits its cap
    "__init__.py": {"__future__"},  # plus the relative `from .model import ...`
    # the numba kernels; sys and types register the one module name numba's cache files them under
    "kernels.py": {"numpy", "numba", "math", "__future__", "sys", "types"},
}
# Names no generated file may use, but where a file's own imports allow them (kernels.py: sys).
FORBIDDEN_NAMES = {"__import__", "__builtins__", "importlib", "sys", "os"}
# Imported inside a method only (export_npz), so importing the module needs torch alone.
LAZY_MODULES = {"model.py": {"numpy"}}
FORBIDDEN_CALLS = {"__import__", "exec", "eval", "compile", "globals", "locals", "vars", "open", "breakpoint"}


def import_violations(source: str, filename: str) -> list[str]:
    allowed = ALLOWED_MODULES.get(filename)
    if allowed is None:
        return [f"unexpected generated file {filename}"]
    problems = []
    tree = ast.parse(source)
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            lazy = LAZY_MODULES.get(filename, set()) if id(node) not in top_level else set()
            for alias in node.names:
                if alias.name.split(".")[0] not in allowed | lazy:
                    problems.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if not (filename == "__init__.py" and node.level == 1 and node.module == "model"):
                    problems.append(f"line {node.lineno}: relative import {'.' * node.level}{node.module or ''}")
            elif (node.module or "").split(".")[0] not in allowed:
                problems.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            problems.append(f"line {node.lineno}: call to {node.func.id}()")
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES - allowed:
            problems.append(f"line {node.lineno}: name {node.id}")
    return problems


def test_import_checker_catches_violations():
    assert import_violations("import sys\nsys.modules\n", "model.py")  # only kernels.py may use sys
    assert import_violations("import os\n", "kernels.py")
    assert (
        import_violations("import torch\nfrom torch import nn\nfrom __future__ import annotations\n", "model.py") == []
    )
    for bad in (
        "import os",
        "import numpy as np",
        "from os import path",
        "from . import x",
        "from .model import y",
        "__import__('os')",
        "import torch, subprocess",
        "exec('1')",
    ):
        assert import_violations(bad, "model.py"), bad
    assert import_violations("def export():\n    import numpy\n", "model.py") == []
    assert import_violations("import numpy\n", "model.py")
    assert import_violations("from .model import Ista\n", "__init__.py") == []
    assert import_violations("from ..model import Ista\n", "__init__.py")
    assert import_violations("import torch\n", "__init__.py")


@pytest.mark.parametrize("package", generated_packages())
def test_generated_files_import_only_torch(package):
    files = sorted((GENERATED / package).glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "model.py"}
    for path in files:
        assert import_violations(path.read_text(encoding="utf-8"), path.name) == [], path
    tree = ast.parse((GENERATED / package / "model.py").read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "torch" in imported


# ------------------------------------------------------------------ (c) determinism and --check


@pytest.fixture(scope="module")
def compiles(tmp_path_factory):
    """Four CLI runs at once: two fresh compiles (other hash seeds, the second from another working
    folder with absolute paths), --check against generated/, and --check against a changed copy."""
    root = tmp_path_factory.mktemp("compile")
    tampered = root / "tampered"
    shutil.copytree(GENERATED, tampered, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    model = tampered / "ista" / "model.py"
    model.write_text(model.read_text(encoding="utf-8").replace("soft_threshold(", "soft_threshold (", 1))
    runs = {
        "first": cli("compile", "specs/", "-o", str(root / "first"), hashseed="1"),
        "second": cli("compile", str(SPECS), "-o", str(root / "second"), cwd=root, hashseed="4242"),
        "check": cli("compile", "specs/", "-o", "generated/", "--check", hashseed="77"),
        "tampered": cli("compile", "specs/", "-o", str(tampered), "--check", hashseed="random"),
    }
    results = {name: finish(process) for name, process in runs.items()}
    return root, results


def test_compile_succeeds(compiles):
    _, results = compiles
    for name in ("first", "second"):
        rc, out, err = results[name]
        assert rc == 0, f"{name}: {err}"
        assert out.startswith("wrote "), out


def test_compile_is_deterministic(compiles):
    root, _ = compiles
    first, second = tree_bytes(root / "first"), tree_bytes(root / "second")
    assert first, "nothing was written"
    assert sorted(first) == sorted(second)
    different = [path for path in first if first[path] != second[path]]
    assert different == [], f"different bytes under other PYTHONHASHSEED/working folder: {different}"


def test_committed_tree_equals_fresh_compile(compiles):
    root, _ = compiles
    fresh, committed = tree_bytes(root / "first"), tree_bytes(GENERATED)
    assert sorted(committed) == sorted(fresh), "generated/ has missing or stale files"
    different = [path for path in fresh if fresh[path] != committed[path]]
    assert different == [], f"generated/ is out of date: {different}"


def test_check_mode_passes_on_committed_tree(compiles):
    _, results = compiles
    rc, out, err = results["check"]
    assert rc == 0, out + err


def test_check_mode_catches_a_changed_file(compiles):
    _, results = compiles
    rc, out, err = results["tampered"]
    assert rc == 1, out + err
    assert "ista/model.py" in out and "soft_threshold (" in out
    assert "differs" in err


def test_check_mode_catches_a_stale_package(tmp_path, capsys):
    from unfoldgen.cli import main

    stale = tmp_path / "generated"
    shutil.copytree(GENERATED, stale, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (stale / "old_unfold").mkdir()
    (stale / "old_unfold" / "__init__.py").write_text("import os\n")
    rc = main(["compile", str(SPECS), "-o", str(stale), "--check"])
    out, err = capsys.readouterr()
    assert rc == 1, out + err
    assert "old_unfold" in out + err


# ------------------------------------------------------------------ (d) no spec text in the output

MARKER = "EVIL_MARKER_123"
HOSTILE_COMMENTS = [
    f"# {MARKER} import os",
    f'# """; import os; os.system("echo {MARKER}"); """',
    f"# '''\\n import os\\n{MARKER}'''",
    f"# }}}} {{{{ {MARKER} }}}} {{% import os %}} {{{{ __import__('os') }}}}",  # template syntax
    f"#\timport os  # {MARKER} \\",
]


def strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0].rstrip() for line in text.splitlines()) + "\n"


def with_trailing_comments(text: str) -> str:
    """The same lines (so the same line numbers) with a hostile comment at the end of each."""
    lines = strip_comments(text).splitlines()
    return "\n".join(f"{line}  {HOSTILE_COMMENTS[i % len(HOSTILE_COMMENTS)]}" for i, line in enumerate(lines)) + "\n"


def with_comment_lines(text: str) -> str:
    """Hostile comment-only lines before and after every line."""
    out = [*HOSTILE_COMMENTS]
    for line in text.splitlines():
        out += [line, *HOSTILE_COMMENTS[:2]]
    return "\n".join(out) + "\n"


def assert_clean(files: dict[str, str]) -> None:
    assert files
    for path, text in files.items():
        for needle in (MARKER, "import os", "os.system", "__import__"):
            assert needle not in text, f"{path} contains {needle!r}"


@pytest.mark.parametrize("spec", sorted(p.name for p in SPECS.glob("*.unf")))
def test_comments_do_not_reach_generated_code(spec):
    text = (SPECS / spec).read_text(encoding="utf-8")
    clean = compile_text(strip_comments(text), spec).files
    trailing = compile_text(with_trailing_comments(text), spec).files
    assert_clean(clean)
    assert_clean(trailing)
    # same lines and positions, only comments added: the output must not change at all
    assert trailing == clean
    assert_clean(compile_text(with_comment_lines(text), spec).files)


def test_hostile_file_name_is_not_copied():
    """The file name lands in comments and docstrings: it must not be able to break out of them."""
    text = (SPECS / "box_ls.unf").read_text(encoding="utf-8")
    name = "x\"\"\"\nimport os\n'''\r\\ {{ y }} {% z %}.unf"
    files = compile_text(text, name).files
    assert files
    for path, source in files.items():
        assert import_violations(source, Path(path).name) == [], path
        for needle in ("import os", '"""\nimport', "'''", "\r", "\\ ", "{{ y }}", "{% z %}"):
            assert needle not in source, f"{path} contains {needle!r}"


# ------------------------------------------------------------------ (e) headers


def test_version_is_the_installed_one():
    assert unfoldgen.__version__ == importlib.metadata.version("unfoldgen")


@pytest.mark.parametrize("package", generated_packages())
def test_header_names_spec_and_version(package):
    spec = spec_of(package)
    others = {p.name for p in SPECS.glob("*.unf")} - {spec}
    for filename in ("model.py", "__init__.py"):
        lines = (GENERATED / package / filename).read_text(encoding="utf-8").splitlines()
        header = "\n".join(line for line in lines[:3] if line.startswith("#"))
        assert lines[0].startswith("# Generated by unfoldgen"), f"{package}/{filename}: {lines[0]!r}"
        assert f"unfoldgen {unfoldgen.__version__} " in header, f"{package}/{filename}: {header!r}"
        assert re.search(rf"\b{re.escape(spec)}\b", header), f"{package}/{filename} does not name {spec}"
        assert not any(re.search(rf"\b{re.escape(other)}\b", header) for other in others)
        assert re.search(rf"\bunfold {package}\b", header)
