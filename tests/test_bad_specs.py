"""The malformed-spec corpus: every bad spec is one located, readable SpecError, never a crash.

Each file in tests/specs/bad/ starts with a header ``# expect: LINE:COL: SUBSTRING``: the 1-based
location of the error (the header itself is line 1) and a distinctive part of its message.
Byte-level cases (non-UTF-8, NUL bytes) are written to tmp_path here rather than kept in git.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from unfoldgen import cli
from unfoldgen.compiler import check_text, read_spec
from unfoldgen.errors import SpecError

ROOT = Path(__file__).resolve().parent.parent
BAD = ROOT / "tests" / "specs" / "bad"
LASSO = (ROOT / "specs" / "lasso.unf").read_text(encoding="utf-8")
HEADER = re.compile(r"# expect: (\d+):(\d+): (\S.*)\n")
CORPUS = sorted(BAD.glob("*.unf"))
MAX_SHOWN_LINE = 200  # SpecError leaves out source lines longer than this
MIN_CORPUS = 40


def _ids(paths: list[Path]) -> list[str]:
    return [path.stem for path in paths]


def expectation(path: Path) -> tuple[int, int, str]:
    text = path.read_text(encoding="utf-8")
    match = HEADER.match(text)
    assert match, f"{path.name}: the first line must be '# expect: LINE:COL: SUBSTRING'"
    return int(match[1]), int(match[2]), match[3].rstrip()


def source_line(text: str, line: int) -> str:
    """Line ``line`` as the parser counts lines: only '\\n' ends one."""
    return text.split("\n")[line - 1].removesuffix("\r")


def raised(text: str, filename: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        check_text(text, filename)
    return info.value


def assert_diagnostic(err: SpecError, filename: str, text: str) -> None:
    """``file:line:col: error: message``, then the offending line, then a caret under the column."""
    head, *shown = str(err).split("\n")
    assert head == f"{filename}:{err.line}:{err.column}: error: {err.message}"
    line = source_line(text, err.line).expandtabs(1)
    if len(line) > MAX_SHOWN_LINE:
        assert shown == [], "over-long source lines are left out"
        return
    assert len(shown) == 2, f"expected the source line and a caret line, got {shown!r}"
    assert shown[0] == "    " + line, "the diagnostic shows a different line than the one the error is on"
    caret = shown[1]
    assert caret.startswith("    " + " " * (err.column - 1) + "^"), f"caret not under column {err.column}: {caret!r}"
    assert set(caret[4 + err.column - 1 :]) == {"^"}, f"caret line has more than carets: {caret!r}"
    assert len(caret) - 4 <= max(len(line), err.column), "carets run past the end of the line"


# ---------------------------------------------------------------------- the corpus


def test_corpus_is_large_and_well_formed():
    assert len(CORPUS) >= MIN_CORPUS, f"only {len(CORPUS)} bad specs in {BAD}"
    for path in CORPUS:
        expectation(path)  # a malformed header would silently weaken the test


@pytest.mark.parametrize("path", CORPUS, ids=_ids(CORPUS))
def test_bad_spec_error_location_and_message(path: Path):
    line, column, substring = expectation(path)
    text = path.read_text(encoding="utf-8")
    err = raised(text, path.name)
    assert (err.line, err.column) == (line, column), f"{err.message!r} at {err.line}:{err.column}"
    assert substring in err.message


@pytest.mark.parametrize("path", CORPUS, ids=_ids(CORPUS))
def test_bad_spec_diagnostic_shows_line_and_caret(path: Path):
    text = path.read_text(encoding="utf-8")
    err = raised(text, str(path))
    assert_diagnostic(err, str(path), text)


@pytest.mark.parametrize("path", CORPUS, ids=_ids(CORPUS))
def test_cli_check_bad_spec_exits_1(path: Path, capsys: pytest.CaptureFixture[str]):
    line, column, _ = expectation(path)
    try:
        code = cli.main(["check", str(path)])
    except Exception as exc:
        pytest.fail(f"unfoldgen check crashed: {type(exc).__name__}: {exc}")
    _, err = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in err
    assert err.startswith(f"{path}:{line}:{column}: error: ")


# ---------------------------------------------------------------------- bytes that are not spec text

ELF_HEADER = b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00>\x00"
PNG_HEADER = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"

# name, bytes, line, column, message substring
BYTE_CASES = [
    ("latin1", b"problem p {\n    dim n, \xe9t\xe9\n}\n", 2, 12, "not valid UTF-8"),
    ("utf16", "problem p {\n}\n".encode("utf-16"), 1, 1, "not valid UTF-8"),
    ("png", PNG_HEADER, 1, 1, "not valid UTF-8"),
    ("truncated_utf8", LASSO.encode() + b"\n# caf\xc3", LASSO.count("\n") + 2, 6, "not valid UTF-8"),
    ("nul_in_text", b"problem p {\x00}\n", 1, 12, "NUL"),
    ("elf", ELF_HEADER, 1, 8, "NUL"),
]
BYTE_IDS = [case[0] for case in BYTE_CASES]


@pytest.mark.parametrize(("name", "data", "line", "column", "substring"), BYTE_CASES, ids=BYTE_IDS)
def test_bytes_that_are_not_spec_text(tmp_path: Path, name: str, data: bytes, line: int, column: int, substring: str):
    path = tmp_path / f"{name}.unf"
    path.write_bytes(data)
    with pytest.raises(SpecError) as info:
        check_text(read_spec(path), str(path))
    err = info.value
    assert substring in err.message
    assert (err.line, err.column) == (line, column), f"{err.message!r} at {err.line}:{err.column}"
    assert str(err).startswith(f"{path}:{line}:{column}: error: ")


@pytest.mark.parametrize(("name", "data", "line", "column", "substring"), BYTE_CASES, ids=BYTE_IDS)
def test_cli_check_bytes_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, data: bytes, line: int, column: int, substring: str
):
    path = tmp_path / f"{name}.unf"
    path.write_bytes(data)
    try:
        code = cli.main(["check", str(path)])
    except Exception as exc:
        pytest.fail(f"unfoldgen check crashed: {type(exc).__name__}: {exc}")
    _, err = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in err
    assert substring in err


SUBPROCESS_CASES = ["syntax_missing_colon", "limit_empty_file", "constraint_affine_in_variable"]


def test_cli_check_subprocess(tmp_path: Path):
    """The real command line, on a few corpus files and on bytes: exit 1, a located error, no traceback."""
    cases: list[tuple[Path, str]] = []
    for name in SUBPROCESS_CASES:
        path = BAD / f"{name}.unf"
        assert path in CORPUS
        line, column, _ = expectation(path)
        cases.append((path, f"{path}:{line}:{column}: error: "))
    for name, data, line, column, _ in BYTE_CASES[:1] + BYTE_CASES[-1:]:
        path = tmp_path / f"{name}.unf"
        path.write_bytes(data)
        cases.append((path, f"{path}:{line}:{column}: error: "))
    command = [sys.executable, "-m", "unfoldgen", "check"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "encoding": "utf-8"}
    running = [(path, prefix, subprocess.Popen([*command, str(path)], **pipes)) for path, prefix in cases]
    failures = []
    for path, prefix, process in running:
        _, stderr = process.communicate(timeout=120)
        if process.returncode != 1 or "Traceback" in stderr or not stderr.startswith(prefix):
            failures.append(f"{path.name}: exit {process.returncode}, stderr:\n{stderr}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------- near misses: valid, must be accepted


def _lasso(*pairs: tuple[str, str]) -> str:
    text = LASSO
    for old, new in pairs:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


NEAR_MISSES = {
    # limits sit exactly at their documented bounds
    "nesting_200_deep": _lasso(("param lam : real = 0.1", "param lam : real = " + "(" * 200 + "0.1" + ")" * 200)),
    "number_40_digits": _lasso(("param lam : real = 0.1", "param lam : real = 0." + "1" * 39)),
    "layers_10000": _lasso(("layers 20", "layers 10000")),
    "identifier_64_chars": LASSO.replace("lam", "l" * 64),
    # brackets in comments are not expression nesting
    "brackets_in_comment": _lasso(("# Sparse recovery", "# " + "(" * 250 + " Sparse recovery")),
    "sad_smileys_in_comments": "# :-(\n" * 250 + LASSO,
    "layers_leading_zeros": _lasso(("layers 20", "layers 00000020")),
    # line endings and whitespace
    "crlf": LASSO.replace("\n", "\r\n"),
    "tabs": LASSO.replace("    ", "\t"),
    # 'coefficient * norm1(...)', the documented form of a non-smooth term, in other spellings
    "nonsmooth_coefficient_product": _lasso(("+ lam * norm1(x)\n", "+ lam * 2 * norm1(x)\n")),
    "nonsmooth_coefficient_parenthesised": _lasso(("+ lam * norm1(x)\n", "+ 2 * (lam * norm1(x))\n")),
    "nonsmooth_coefficient_divided": _lasso(("+ lam * norm1(x)\n", "+ lam * norm1(x) / 2\n")),
    # k is the layer index only where a spec does not declare k itself
    "k_as_a_dim_and_a_variable": """problem p {
    dim m, k
    data A : real[m, k]
    input y : real[m]
    var k2 : real[k] = 0
    minimize 0.5 * sumsq(A @ k2 - y)
}
unfold gd from p {
    layers 3
    hyper mu : real = 1 / lipschitz(k2)
    iterate { k2 = k2 - mu * grad(k2) }
}
problem q {
    dim n
    input y : real[n]
    var k : real[n] = 0
    minimize 0.5 * sumsq(k - y)
}
unfold gd2 from q {
    layers 3
    iterate { k = k - 0.5 * grad(k) }
}
""",
    "k_as_a_let": LASSO
    + "unfold with_k from lasso {\n    layers 3\n    hyper mu : real = 1 / lipschitz(x)\n"
    + "    iterate {\n        let k = x - mu * grad(x)\n        x = prox[mu * lam * norm1](k)\n    }\n}\n",
}


@pytest.mark.parametrize("text", list(NEAR_MISSES.values()), ids=list(NEAR_MISSES))
def test_near_miss_is_accepted(text: str):
    try:
        check_text(text, "near_miss.unf")
    except SpecError as err:
        pytest.fail(f"a valid spec was rejected:\n{err}")


# ---------------------------------------------------------------------- pathological input: an error, not a crash

PATHOLOGICAL = {
    "unary_minus_3000_deep": _lasso(("param lam : real = 0.1", "param lam : real = " + "- " * 3000 + "0.1")),
    "sum_of_5000_terms": _lasso(("param lam : real = 0.1", "param lam : real = " + " + ".join(["0.1"] * 5000))),
    "transpose_chain_4000": _lasso(("var   x : real[n] = 0", "var   x : real[n] = A.T @ y" + ".T.T" * 2000)),
    "power_chain_3000": _lasso(("param lam : real = 0.1", "param lam : real = " + " ^ ".join(["1"] * 3000))),
    "scaled_variable_constraint": _lasso(("+ lam * norm1(x)\n", "+ lam * norm1(x)\n    subject to 2 * x <= 1\n")),
    "norm_of_shifted_variable": _lasso(("+ lam * norm1(x)\n", "+ lam * norm1(x)\n    subject to norm2(x - 1) <= 1\n")),
    "shifted_sum_equality": _lasso(("+ lam * norm1(x)\n", "+ lam * norm1(x)\n    subject to sum(x) + 1 == 1\n")),
    "power_overflow": _lasso(("param lam : real = 0.1", "param lam : real = 10 ^ 400")),
    "spec_over_1mb": LASSO + "#" * 1_000_001 + "\n",
}


@pytest.mark.parametrize("text", list(PATHOLOGICAL.values()), ids=list(PATHOLOGICAL))
def test_pathological_spec_is_not_a_crash(text: str):
    try:
        check_text(text, "pathological.unf")
    except SpecError as err:
        assert err.message
        str(err)  # formatting the diagnostic must not fail either
    except Exception as exc:
        pytest.fail(f"the checker crashed instead of reporting a SpecError: {type(exc).__name__}: {exc}")
