"""`unfoldgen explain SPEC --graph FILE`: the drawing from the command line (unfoldgen.graph).

The format follows the suffix (.svg/.png/.pdf rendered by Graphviz's ``dot``; .dot/.gv the source,
which needs only the Python package). One unfold is drawn: ``--unfold NAME``, or the spec's only
one; several and no choice is a usage error (exit 2) that lists them. Graphviz missing — the
``dot`` program or the Python package — is a clear message and exit 2, tested here by hiding them
(an empty PATH, a blocked import), so those paths run on every machine. Rendering tests skip where
``dot`` is not installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unfoldgen import cli

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
LASSO = SPECS / "lasso.unf"
BOX_LS = SPECS / "box_ls.unf"  # one unfold
BAD_SPEC = ROOT / "tests" / "specs" / "bad" / "syntax_missing_colon.unf"

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


@pytest.fixture(autouse=True)
def _graphviz_package():
    pytest.importorskip("graphviz", reason="the graphviz Python package is not installed (pip install graphviz)")


def main(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = cli.main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def svg_text(path: Path) -> str:
    """The text an SVG shows (graphviz writes one <text> element per label line)."""
    svg = path.read_text(encoding="utf-8")
    lines = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    return "\n".join(line.replace("&#160;", " ").replace("&#45;", "-") for line in lines)


@needs_dot
def test_graph_svg_shows_the_learned_parameters_with_shapes_and_counts(tmp_path, capsys):
    out_file = tmp_path / "lista_cp.svg"
    code, out, err = main(capsys, "explain", LASSO, "--unfold", "lista_cp", "--graph", out_file)
    assert code == 0, err
    data = out_file.read_bytes()
    assert b"<svg" in data[:2000] and data.rstrip().endswith(b"</svg>")
    text = svg_text(out_file)
    # the learned quantities, highlighted with shape, tying and count (K = 16, W is n×m per layer)
    assert "W  (learned, per layer)" in text
    assert "n×m, 16·m·n scalars" in text
    assert "theta  (learned, per layer)" in text
    assert "scalar, 16 scalars" in text
    # the inputs, the data, the prox block, the iterates and the K-layer chain
    assert "input, m" in text and "data, m×n" in text
    assert "prox  norm1" in text
    assert "x_k" in text and "x_k+1" in text
    assert "layer 16" in text and "the network: 16 layers" in text
    # the explanation is still printed, and the command says what it wrote
    assert "unfold lista_cp from lasso" in out
    assert f"wrote {out_file}" in out


@needs_dot
@pytest.mark.parametrize(("suffix", "magic"), [(".png", b"\x89PNG"), (".pdf", b"%PDF")])
def test_graph_format_follows_the_suffix(tmp_path, capsys, suffix: str, magic: bytes):
    out_file = tmp_path / f"box_ls{suffix}"
    code, _, err = main(capsys, "explain", BOX_LS, "--graph", out_file)  # the spec's only unfold
    assert code == 0, err
    assert out_file.read_bytes().startswith(magic)


@needs_dot
def test_graph_as_a_process(tmp_path):
    out_file = tmp_path / "ista.svg"
    result = subprocess.run(
        [sys.executable, "-m", "unfoldgen", "explain", str(LASSO), "--unfold", "ista", "--graph", str(out_file)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "mu  (learned, per layer)" in svg_text(out_file)


def test_graph_dot_source_needs_no_dot_program(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no `dot` anywhere
    out_file = tmp_path / "lista_cp.dot"
    code, _, err = main(capsys, "explain", LASSO, "--unfold", "lista_cp", "--graph", out_file)
    assert code == 0, err
    source = out_file.read_text(encoding="utf-8")
    assert source.startswith("digraph lista_cp")
    assert "W  (learned, per layer)" in source and "16·m·n scalars" in source


def test_graph_without_dot_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out_file = tmp_path / "ista.svg"
    code, out, err = main(capsys, "explain", LASSO, "--unfold", "ista", "--graph", out_file)
    assert code == 2
    assert "Traceback" not in err
    assert err.startswith("unfoldgen: cannot render ista.svg: Graphviz's `dot` program is not on PATH")
    assert "apt-get install graphviz" in err and ".dot suffix" in err
    assert "pip install" not in err, "the package is there: only the program is missing"
    assert not out_file.exists() and out == ""


def test_graph_dot_vanishing_while_rendering_is_the_same_message(tmp_path, capsys, monkeypatch):
    """`dot` found by the check but gone when graphviz runs it: the same message, not a traceback."""
    from unfoldgen import graph

    monkeypatch.setattr(graph, "dot_available", lambda: True)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, _, err = main(capsys, "explain", BOX_LS, "--graph", tmp_path / "box_ls.svg")
    assert code == 2
    assert "`dot` program is not on PATH" in err and "Traceback" not in err


def test_graph_without_the_python_package_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)  # `import graphviz` raises ImportError
    for suffix in (".svg", ".dot"):  # both need the package
        out_file = tmp_path / f"ista{suffix}"
        code, _, err = main(capsys, "explain", LASSO, "--unfold", "ista", "--graph", out_file)
        assert code == 2
        assert err.startswith("unfoldgen: drawing needs the graphviz Python package")
        assert "pip install graphviz" in err and "Traceback" not in err
        assert not out_file.exists()


def test_graph_of_a_spec_with_several_unfolds_needs_a_choice(tmp_path, capsys):
    out_file = tmp_path / "lasso.svg"
    code, out, err = main(capsys, "explain", LASSO, "--graph", out_file)
    assert code == 2
    assert "7 unfolds" in err and "--unfold NAME" in err
    for name in ("ista", "fista", "lista_cp", "admm", "ista_corrected", "ista_learned_prox"):
        assert name in err
    assert not out_file.exists() and out == ""


def test_graph_of_an_unknown_unfold_names_the_known_ones(tmp_path, capsys):
    code, _, err = main(capsys, "explain", LASSO, "--unfold", "nosuch", "--graph", tmp_path / "x.svg")
    assert code == 2
    assert "'nosuch'" in err and "lista_cp" in err
    assert not (tmp_path / "x.svg").exists()


@pytest.mark.parametrize("name", ["lasso.jpg", "lasso", "lasso.svg.txt"])
def test_graph_suffix_must_name_a_format(tmp_path, capsys, name: str):
    code, _, err = main(capsys, "explain", LASSO, "--unfold", "ista", "--graph", tmp_path / name)
    assert code == 2
    assert "suffix chooses the format" in err and ".svg" in err
    assert list(tmp_path.iterdir()) == []


def test_graph_of_a_bad_spec_is_the_usual_spec_error(tmp_path, capsys):
    code, out, err = main(capsys, "explain", BAD_SPEC, "--graph", tmp_path / "bad.svg")
    assert code == 1
    assert re.match(rf"{re.escape(str(BAD_SPEC))}:\d+:\d+: error: expected ':'", err)
    assert out == "" and list(tmp_path.iterdir()) == []


def test_graph_into_a_missing_folder_is_a_usage_error(tmp_path, capsys):
    code, _, err = main(capsys, "explain", BOX_LS, "--graph", tmp_path / "no" / "such" / "box_ls.dot")
    assert code == 2
    assert "no such file" in err and "Traceback" not in err
