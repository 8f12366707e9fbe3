"""The command line: exit codes (0 ok, 1 spec errors, 2 usage), compile, compile --check, explain."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from unfoldgen import cli
from unfoldgen.compiler import compile_text

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
SPEC_FILES = sorted(SPECS.glob("*.unf"))
LASSO = SPECS / "lasso.unf"
BOX_LS = SPECS / "box_ls.unf"  # one unfold, pgd
BAD_SPEC = ROOT / "tests" / "specs" / "bad" / "syntax_missing_colon.unf"
UNFOLD = re.compile(r"^unfold\s+(\w+)\s+from\s", re.MULTILINE)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "unfoldgen", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        timeout=120,
    )


def main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command line in-process (fast): exit code, stdout, stderr."""
    code = cli.main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def unfold_names(paths: list[Path]) -> set[str]:
    """The unfold blocks of the specs, read straight from their text."""
    return {name for path in paths for name in UNFOLD.findall(path.read_text(encoding="utf-8"))}


# ---------------------------------------------------------------------- exit codes


def test_check_valid_specs_exits_0():
    result = run_cli("check", *(str(path) for path in SPEC_FILES))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_check_folder_exits_0(capsys: pytest.CaptureFixture[str]):
    code, _, err = main(capsys, "check", SPECS)
    assert code == 0, err


def test_check_bad_spec_exits_1():
    result = run_cli("check", str(BAD_SPEC))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    head, source, caret = result.stderr.splitlines()[:3]
    assert re.match(rf"{re.escape(str(BAD_SPEC))}:\d+:\d+: error: expected ':'", head)
    assert source.strip() == "data  A real[m, n]"
    assert caret.strip() == "^^^^"


def test_check_reports_every_failing_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    second_bad = tmp_path / "second.unf"
    second_bad.write_text(BAD_SPEC.read_text(encoding="utf-8"), encoding="utf-8")
    code, _, err = main(capsys, "check", LASSO, BAD_SPEC, SPECS / "rpca.unf", second_bad)
    assert code == 1
    assert err.startswith(f"{BAD_SPEC}:")
    assert f"\n{second_bad}:4:13: error: expected ':'" in err, "checking goes on after the first failure"
    assert err.rstrip().endswith("unfoldgen: 2 of 4 specs failed")


def test_check_a_spec_named_twice_is_checked_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    spec = tmp_path / "bad.unf"
    spec.write_text(BAD_SPEC.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "link.unf").symlink_to(spec)
    code, _, err = main(capsys, "check", spec, tmp_path, f"{tmp_path}/./bad.unf")
    assert code == 1
    assert err.count(": error: expected ':'") == 1, err


USAGE_ERRORS = {
    "no_subcommand": [],
    "unknown_subcommand": ["frobnicate", "specs/lasso.unf"],
    "check_without_spec": ["check"],
    "unknown_flag": ["check", "--bogus", "specs/lasso.unf"],
    "missing_file": ["check", "no/such/spec.unf"],
    "compile_without_output": ["compile", "specs/lasso.unf"],
    "compile_missing_file": ["compile", "no/such/spec.unf", "-o", "{tmp}"],
    "explain_without_spec": ["explain"],
    "explain_missing_file": ["explain", "no/such/spec.unf"],
    "explain_a_folder": ["explain", "specs"],
}


@pytest.mark.parametrize("argv", list(USAGE_ERRORS.values()), ids=list(USAGE_ERRORS))
def test_usage_error_exits_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(ROOT)
    argv = [arg.replace("{tmp}", str(tmp_path / "out")) for arg in argv]
    code, _, err = main(capsys, *argv)
    assert code == 2
    assert err.strip(), "a usage error says what is wrong"
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_usage_errors_exit_2_as_a_process():
    for argv in ([], ["check", "--bogus", "specs/lasso.unf"], ["check", "no/such/spec.unf"]):
        result = run_cli(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert "Traceback" not in result.stderr


def test_version_without_installed_metadata_is_pyprojects(monkeypatch: pytest.MonkeyPatch):
    """A checkout that was never installed still knows its version (generated headers carry it)."""
    import importlib.metadata
    import tomllib

    import unfoldgen

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert unfoldgen._version() == declared


def test_version_and_help_exit_0(capsys: pytest.CaptureFixture[str]):
    code, out, _ = main(capsys, "--version")
    assert code == 0
    assert out.startswith("unfoldgen ")
    code, out, _ = main(capsys, "--help")
    assert code == 0
    assert "check" in out and "compile" in out and "explain" in out


# ---------------------------------------------------------------------- compile


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """specs/ compiled once into a fresh folder, as `unfoldgen compile specs/ -o OUT`."""
    out = tmp_path_factory.mktemp("compiled") / "out"
    assert cli.main(["compile", f"{SPECS}/", "-o", str(out)]) == 0
    return out


def test_compile_writes_one_package_per_unfold(compiled: Path):
    expected = unfold_names(SPEC_FILES)
    assert {"ista", "fista", "lista_cp", "admm", "pgd", "rpca_ista"} <= expected
    packages = {path.name for path in compiled.iterdir() if path.is_dir()}
    assert packages == expected
    files = set(tree(compiled))
    for name in expected:
        assert {f"{name}/__init__.py", f"{name}/model.py"} <= files
    assert files - {f"{name}/{file}" for name in expected for file in ("__init__.py", "model.py")} == {
        f"{name}/kernels.py" for name in expected if f"{name}/kernels.py" in files
    }
    assert {"ista/kernels.py", "pgd/kernels.py", "rpca_ista/kernels.py"} <= files


def test_compiled_modules_are_python(compiled: Path):
    for path in sorted(compiled.rglob("*.py")):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")  # a SyntaxError fails the test
    assert "class Ista" in (compiled / "ista" / "model.py").read_text(encoding="utf-8")


def test_compile_is_deterministic(compiled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code, out, _ = main(capsys, "compile", *SPEC_FILES, "-o", tmp_path / "again")
    assert code == 0
    assert out.startswith("wrote ")
    assert tree(tmp_path / "again") == tree(compiled)


def test_compile_check_fresh_output_exits_0(compiled: Path, capsys: pytest.CaptureFixture[str]):
    before = tree(compiled)
    code, out, err = main(capsys, "compile", SPECS, "-o", compiled, "--check")
    assert code == 0, out + err
    assert "match a fresh compile" in out
    assert tree(compiled) == before, "--check must not write"


def test_compile_check_edited_output_exits_1_with_a_diff(
    compiled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out_dir = tmp_path / "out"
    assert main(capsys, "compile", SPECS, "-o", out_dir)[0] == 0
    model = out_dir / "ista" / "model.py"
    text = model.read_text(encoding="utf-8")
    model.write_text(text.replace("\n", "\n# hand edit\n", 1), encoding="utf-8")
    edited = tree(out_dir)
    code, out, err = main(capsys, "compile", SPECS, "-o", out_dir, "--check")
    assert code == 1
    assert f"--- {out_dir}/ista/model.py" in out
    assert f"+++ {out_dir}/ista/model.py" in out
    assert "\n@@ " in out
    assert "\n-# hand edit\n" in out
    assert "fista/model.py" not in out, "only the edited file differs"
    assert "differs" in err
    assert tree(out_dir) == edited, "--check must not repair the output"


def test_compile_check_missing_output_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code, out, _ = main(capsys, "compile", LASSO, "-o", tmp_path / "never_written", "--check")
    assert code == 1
    assert "ista/model.py" in out
    assert not (tmp_path / "never_written").exists()


def test_compile_with_a_bad_spec_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out_dir = tmp_path / "out"
    code, _, err = main(capsys, "compile", LASSO, BAD_SPEC, "-o", out_dir)
    assert code == 1
    assert err.startswith(f"{BAD_SPEC}:")
    assert not out_dir.exists()


def test_compile_same_unfold_in_two_files_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    for name in ("a.unf", "b.unf"):
        (tmp_path / name).write_text(LASSO.read_text(encoding="utf-8"), encoding="utf-8")
    code, _, err = main(capsys, "compile", tmp_path / "a.unf", tmp_path / "b.unf", "-o", tmp_path / "out")
    assert code == 1
    assert "defined in both" in err
    assert not (tmp_path / "out").exists()


ESCAPING_NAMES = ["..", "../escape", "a/b", "/tmp/abs", "x..y", ".hidden", "__init__", "_private"]


@pytest.mark.parametrize("name", ESCAPING_NAMES)
def test_unfold_name_cannot_leave_the_output_folder(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    text = LASSO.read_text(encoding="utf-8")
    assert text.count("unfold ista from") == 1
    spec = tmp_path / "spec" / "evil.unf"
    spec.parent.mkdir()
    spec.write_text(text.replace("unfold ista from", f"unfold {name} from"), encoding="utf-8")
    out_dir = tmp_path / "work" / "out"
    out_dir.parent.mkdir()
    code, _, err = main(capsys, "compile", spec, "-o", out_dir)
    assert code == 1
    line = 1 + text[: text.index("unfold ista from")].count("\n")
    assert err.startswith(f"{spec}:{line}:"), err
    assert "Traceback" not in err
    assert tree(tmp_path) == {"spec/evil.unf": spec.read_bytes()}, "nothing may be written anywhere"
    assert main(capsys, "check", spec)[0] == 1


# ---------------------------------------------------------------------- explain


def test_explain_shows_the_derived_gradient():
    result = run_cli("explain", "specs/lasso.unf", "--unfold", "ista")
    assert result.returncode == 0, result.stderr
    assert "Aᵀ (A x − y)" in result.stdout
    assert "unfold ista from lasso" in result.stdout
    assert "soft threshold" in result.stdout
    assert "fista" not in result.stdout, "--unfold shows only that block"


def test_explain_every_unfold(capsys: pytest.CaptureFixture[str]):
    code, out, _ = main(capsys, "explain", LASSO)
    assert code == 0
    for name in unfold_names([LASSO]):
        assert f"unfold {name} from lasso" in out


def test_explain_unknown_unfold_names_the_known_ones(capsys: pytest.CaptureFixture[str]):
    code, _, err = main(capsys, "explain", LASSO, "--unfold", "nosuch")
    assert code != 0
    assert "'nosuch'" in err
    assert "ista" in err and "admm" in err


def test_explain_bad_spec_exits_1(capsys: pytest.CaptureFixture[str]):
    code, _, err = main(capsys, "explain", BAD_SPEC)
    assert code == 1
    assert err.startswith(f"{BAD_SPEC}:")


# ---------------------------------------------------------------------- writing the output


def test_compile_refuses_a_planted_symlink_before_writing_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out_dir = tmp_path / "out"
    assert main(capsys, "compile", LASSO, "-o", out_dir)[0] == 0
    first = out_dir / "admm" / "__init__.py"  # written first, in sorted order
    first.write_text("# the user's edit\n", encoding="utf-8")
    victim = tmp_path / "victim.py"
    victim.write_text("precious\n", encoding="utf-8")
    last = out_dir / "lista_cp" / "model.py"  # written last
    last.unlink()
    last.symlink_to(victim)
    code, out, err = main(capsys, "compile", LASSO, "-o", out_dir)
    assert code == 2
    assert err == f"unfoldgen: {last}: is a symbolic link; refusing to follow it (remove it first)\n"
    assert out == ""
    assert first.read_text(encoding="utf-8") == "# the user's edit\n", "nothing may be written before the check"
    assert victim.read_text(encoding="utf-8") == "precious\n"


def test_compile_replaces_files_without_temporaries_left(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out_dir = tmp_path / "out"
    assert main(capsys, "compile", BOX_LS, "-o", out_dir)[0] == 0
    model = out_dir / "pgd" / "model.py"
    fresh = model.read_bytes()
    model.write_text("stale\n", encoding="utf-8")
    assert main(capsys, "compile", BOX_LS, "-o", out_dir)[0] == 0
    assert model.read_bytes() == fresh
    assert sorted(path.name for path in model.parent.iterdir()) == ["__init__.py", "kernels.py", "model.py"]


def test_compile_into_a_linked_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """The folder given with -o may be a link (the user named it); links below it are refused."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert main(capsys, "compile", BOX_LS, "-o", tmp_path / "link")[0] == 0
    assert (tmp_path / "real" / "pgd" / "model.py").is_file()


def test_compile_into_an_unwritable_folder_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    """Tests run as root, which chmod does not stop: the permission check itself is what is tested."""
    from unfoldgen import outputs

    (tmp_path / "locked").mkdir()
    monkeypatch.setattr(outputs.os, "access", lambda path, mode: Path(path) != tmp_path / "locked")
    code, _, err = main(capsys, "compile", BOX_LS, "-o", tmp_path / "locked" / "out")
    assert code == 2
    assert err == f"unfoldgen: {tmp_path / 'locked'}: cannot write into this folder (permission denied or read-only)\n"
    assert list((tmp_path / "locked").iterdir()) == []


@pytest.mark.parametrize("fresh", [True, False], ids=["new_output", "existing_output"])
def test_compile_onto_a_full_disk_replaces_nothing(
    fresh: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    from unfoldgen import outputs

    out_dir = tmp_path / "deep" / "out"
    if not fresh:
        assert main(capsys, "compile", LASSO, "-o", out_dir)[0] == 0
        (out_dir / "ista" / "model.py").write_text("old\n", encoding="utf-8")
        (out_dir / "lista_cp").rename(tmp_path / "moved")  # a package the next compile has to create
    before = tree(tmp_path)
    write_temporary = outputs._write_temporary
    written = []

    def fills_up(folder: int, name: str, data: bytes) -> str:
        if len(written) == 7:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(name)
        return write_temporary(folder, name, data)

    monkeypatch.setattr(outputs, "_write_temporary", fills_up)
    code, out, err = main(capsys, "compile", LASSO, "-o", out_dir)
    assert code == 1
    assert err == f"unfoldgen: cannot write {out_dir}/ista/kernels.py: No space left on device; nothing was replaced\n"
    assert out == ""
    assert tree(tmp_path) == before, "no file replaced, no temporary left"
    if fresh:
        assert list(tmp_path.iterdir()) == [], "the folders it made are gone again"
    else:
        assert not (out_dir / "lista_cp").exists()


@pytest.mark.parametrize("command", ["check", "compile", "explain", "train"])
def test_unreadable_spec_is_a_usage_error(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    """Tests run as root, which chmod 000 does not stop: the open is made to fail as it would."""
    from unfoldgen import compiler

    real_open = os.open

    def denied(path, flags, *args, **kwargs):
        if Path(path) == BOX_LS:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(compiler.os, "open", denied)
    argv = [command, BOX_LS] + (["-o", tmp_path / "out"] if command in ("compile", "train") else [])
    if command == "train":
        argv += ["--data", "sparse:m=20,n=40"]
    code, out, err = main(capsys, *argv)
    assert code == 2
    assert err == f"unfoldgen: {BOX_LS}: cannot read the spec: Permission denied\n"
    assert out == "" and not (tmp_path / "out").exists()


WRITER = """
import sys
from unfoldgen import cli
from unfoldgen.compiler import compile_text
spec, out, rounds = sys.argv[1:]
for _ in range(int(rounds)):
    assert cli.main(["compile", spec, "-o", out]) == 0
"""


def test_concurrent_compiles_never_tear_a_file(tmp_path: Path):
    """Two processes compile two versions of a spec into one folder, over and over, while this one
    reads: every file it ever reads, and every file left at the end, is one of the two versions."""
    text = BOX_LS.read_text(encoding="utf-8")
    other = tmp_path / "box_ls_other.unf"
    other.write_text(re.sub(r"layers \d+", "layers 3", text) + "\n# the other version\n", encoding="utf-8")
    versions: dict[str, set[bytes]] = {}
    for spec in (BOX_LS, other):
        for relative, source in compile_text(spec.read_text(encoding="utf-8"), str(spec), spec.name).files.items():
            versions.setdefault(relative, set()).add(source.encode("utf-8"))
    assert all(len(both) == 2 for both in versions.values()), "the two versions must differ in every file"
    out_dir = tmp_path / "out"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(spec), str(out_dir), "25"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for spec in (BOX_LS, other)
    ]
    reads = 0
    try:
        while any(writer.poll() is None for writer in writers):
            for relative, valid in versions.items():
                try:
                    data = (out_dir / relative).read_bytes()
                except FileNotFoundError:
                    continue
                reads += 1
                assert data in valid, f"{relative} torn while compiles ran ({len(data)} bytes)"
    finally:
        for writer in writers:
            _, errors = writer.communicate(timeout=300)
            assert writer.returncode == 0, errors
    assert reads > 0
    for relative, valid in versions.items():
        assert (out_dir / relative).read_bytes() in valid, f"{relative} torn"
    assert sorted(path.name for path in (out_dir / "pgd").iterdir()) == ["__init__.py", "kernels.py", "model.py"]


def test_compile_check_against_a_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out_dir = tmp_path / "out"
    assert main(capsys, "compile", BOX_LS, "-o", out_dir)[0] == 0
    (out_dir / "pgd" / "model.py").write_bytes(b"# caf\xe9\n")
    code, out, err = main(capsys, "compile", BOX_LS, "-o", out_dir, "--check")
    assert code == 1
    assert "-# caf\ufffd\n" in out and "differs from a fresh compile" in err


def test_compile_says_how_many_files_a_failed_rename_left_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    from unfoldgen import outputs

    real_replace = os.replace
    calls = []

    def fails_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_replace(*args, **kwargs)

    monkeypatch.setattr(outputs.os, "replace", fails_second)
    out_dir = tmp_path / "out"
    code, _, err = main(capsys, "compile", BOX_LS, "-o", out_dir)
    assert code == 1
    assert (
        err == f"unfoldgen: cannot replace {out_dir}/pgd/kernels.py: Input/output error; 1 of 3 files were replaced\n"
    )
    assert sorted(path.name for path in (out_dir / "pgd").iterdir()) == ["__init__.py"], "no temporary left"
