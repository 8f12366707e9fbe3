"""The command line: `unfoldgen check | compile | explain | train | certify`.

Exit codes: 0 ok; 1 spec errors or a run that failed (training diverged, a write that failed:
nothing replaced); 2 usage: a bad flag, a spec or output path that cannot be used (missing, a pipe,
a planted link, a folder without specs), data errors, a drawing that cannot be made (Graphviz
missing). Every error is one line (a spec error adds its source line and caret), never a traceback."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from unfoldgen import __version__
from unfoldgen.compiler import check_text, compile_text, read_spec, spec_files
from unfoldgen.errors import SpecError, UsageError, WriteError
from unfoldgen.explain import UnfoldChoiceError, choose_unfolds, explain_lowered
from unfoldgen.outputs import check_targets, write_files
from unfoldgen.training.certify import add_arguments as add_certify_arguments
from unfoldgen.training.command import add_arguments as add_train_arguments

EXIT_OK, EXIT_SPEC, EXIT_USAGE = 0, 1, 2
# an OSError of these kinds means a path given on the command line cannot be used: a usage error
BAD_PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
# the same as unfoldgen.graph.FORMATS (not imported here, for the same reason)
GRAPH_FORMATS = (".svg", ".png", ".pdf", ".dot", ".gv")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unfoldgen", description=__doc__)
    parser.add_argument("--version", action="version", version=f"unfoldgen {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check specs and report errors only")
    check.add_argument("specs", nargs="+", type=Path)
    compile_ = commands.add_parser("compile", help="compile specs to generated packages")
    compile_.add_argument("specs", nargs="+", type=Path, help="spec files or folders of *.unf files")
    compile_.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    compile_.add_argument("--check", action="store_true", help="exit 1 with a diff if OUTPUT differs")
    explain_ = commands.add_parser("explain", help="show derived gradients, prox operators and one layer")
    explain_.add_argument("spec", type=Path)
    explain_.add_argument("--unfold", help="only this unfold block (needed with --graph when the spec has several)")
    explain_.add_argument(
        "--graph",
        type=Path,
        metavar="FILE",
        help="also draw one layer's dataflow and the K-layer chain; the suffix picks the format: "
        ".svg, .png, .pdf (need Graphviz's dot) or .dot (the graphviz source)",
    )
    train = commands.add_parser("train", help="train an unfolded network (see unfoldgen.training)")
    add_train_arguments(train)
    certify = commands.add_parser(
        "certify", help="report which classical convergence conditions a trained network satisfies, per layer"
    )
    add_certify_arguments(certify)
    return parser


def _report(err: SpecError | UsageError) -> int:
    """Print one spec's error; its exit code (a spec error 1, a spec path that cannot be used 2)."""
    if isinstance(err, UsageError):
        print(f"unfoldgen: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(err, file=sys.stderr)
    return EXIT_SPEC


def _compile_all(paths: list[Path]) -> tuple[dict[str, str], int]:
    """Every spec compiled (relative path → text) and the exit code: every failing spec is reported,
    so one run shows them all; a bad path outranks a spec error."""
    files: dict[str, str] = {}
    owners: dict[str, Path] = {}
    code = EXIT_OK
    for path in spec_files(paths):
        try:
            compiled = compile_text(read_spec(path), str(path), spec_label=path.name)
            for relative in compiled.files:
                package = relative.split("/")[0]
                if owners.get(package, path) != path:
                    raise SpecError(
                        f"unfold {package!r} is defined in both {owners[package]} and {path}", None, "", str(path)
                    )
        except (SpecError, UsageError) as err:
            code = max(code, _report(err))
            continue
        for relative, text in compiled.files.items():
            owners[relative.split("/")[0]] = path
            files[relative] = text
        for note in compiled.notes:
            print(note, file=sys.stderr)
    return files, code


def _run_check(args: argparse.Namespace) -> int:
    """Check every spec and report every one that fails."""
    paths = spec_files(args.specs)
    code, failed = EXIT_OK, 0
    for path in paths:
        try:
            check_text(read_spec(path), str(path))
        except (SpecError, UsageError) as err:
            code = max(code, _report(err))
            failed += 1
    if failed and len(paths) > 1:
        print(f"unfoldgen: {failed} of {len(paths)} specs failed", file=sys.stderr)
    return code


def _check_output(output: Path, files: dict[str, str]) -> int:
    """``compile --check``: a unified diff of every file that differs from a fresh compile."""
    targets = check_targets(output, sorted(files), writing=False)
    differences = []
    for (relative, text), target in zip(sorted(files.items()), targets, strict=True):
        current = target.read_text(encoding="utf-8", errors="replace") if target.exists() else ""
        if current != text:
            differences.extend(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    fromfile=f"{output}/{relative} (committed)",
                    tofile=f"{output}/{relative} (fresh compile)",
                )
            )
    stale = sorted(
        path.relative_to(output).as_posix()
        for path in output.glob("*/**/*")
        if path.is_file() and "__pycache__" not in path.parts
    )
    for relative in stale:
        if relative not in files:
            differences.append(f"only in {output} (stale, not produced by the specs): {relative}\n")
    if differences:
        sys.stdout.writelines(differences)
        print(f"unfoldgen: {output} differs from a fresh compile", file=sys.stderr)
        return EXIT_SPEC
    print(f"{output}: {len(files)} files match a fresh compile")
    return EXIT_OK


def _run_compile(args: argparse.Namespace) -> int:
    files, code = _compile_all(args.specs)
    if code != EXIT_OK:
        return code
    if args.check:
        return _check_output(args.output, files)
    write_files(args.output, files)
    print(f"wrote {len(files)} files to {args.output}")
    return EXIT_OK


def _run_explain(args: argparse.Namespace) -> int:
    graph_path: Path | None = args.graph
    if graph_path is not None and graph_path.suffix.lower() not in GRAPH_FORMATS:
        shown = graph_path.suffix or "no suffix"
        print(
            f"unfoldgen: --graph {graph_path}: the suffix chooses the format ({shown} is not one of "
            f"{', '.join(GRAPH_FORMATS)})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    text = read_spec(args.spec)
    compiled = compile_text(text, str(args.spec))
    try:
        chosen = choose_unfolds(compiled.lowered, str(args.spec), args.unfold, single=graph_path is not None)
    except UnfoldChoiceError as err:
        print(f"unfoldgen: {err}", file=sys.stderr)
        return EXIT_USAGE
    if graph_path is not None:
        from unfoldgen.graph import DrawError, draw

        try:
            draw(chosen[0], graph_path)
        except DrawError as err:
            print(f"unfoldgen: {err}", file=sys.stderr)
            return EXIT_USAGE
    print(explain_lowered(chosen))
    if graph_path is not None:
        low = chosen[0]
        print(f"wrote {graph_path}: one layer of {low.name} and its {low.unfold.layers}-layer chain")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_USAGE if exit_.code not in (0, None) else EXIT_OK
    try:
        match args.command:
            case "check":
                return _run_check(args)
            case "compile":
                return _run_compile(args)
            case "explain":
                return _run_explain(args)
            case "train":
                from unfoldgen.training.command import main as train

                return train(args, argv)
            case "certify":
                from unfoldgen.training.certify import main as certify

                return certify(args)
    except SpecError as err:
        print(err, file=sys.stderr)
        return EXIT_SPEC
    except UsageError as err:
        print(f"unfoldgen: {err}", file=sys.stderr)
        return EXIT_USAGE
    except WriteError as err:
        print(f"unfoldgen: {err}", file=sys.stderr)
        return EXIT_SPEC
    except FileNotFoundError as err:
        print(f"unfoldgen: {err.filename}: no such file", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # e.g. --graph into a folder (a bad path: exit 2) or onto a full disk (exit 1)
        print(f"unfoldgen: {err.filename}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, BAD_PATH_ERRORS) else EXIT_SPEC
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
