"""The command line: `unfoldgen check | compile | explain | train`.

Exit codes: 0 ok, 1 spec errors (or training diverged), 2 usage (or data errors, or a drawing
that cannot be made: Graphviz missing)."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from unfoldgen import __version__
from unfoldgen.compiler import compile_text, read_spec, spec_files
from unfoldgen.errors import SpecError
from unfoldgen.explain import UnfoldChoiceError, choose_unfolds, explain_lowered
from unfoldgen.training.command import add_arguments as add_train_arguments

EXIT_OK, EXIT_SPEC, EXIT_USAGE = 0, 1, 2
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
    return parser


def _compile_all(paths: list[Path]) -> dict[str, str]:
    files: dict[str, str] = {}
    owners: dict[str, Path] = {}
    for path in spec_files(paths):
        compiled = compile_text(read_spec(path), str(path), spec_label=path.name)
        for relative, text in compiled.files.items():
            package = relative.split("/")[0]
            if package in owners and owners[package] != path:
                raise SpecError(
                    f"unfold {package!r} is defined in both {owners[package]} and {path}", None, "", str(path)
                )
            owners[package] = path
            files[relative] = text
        for note in compiled.notes:
            print(note, file=sys.stderr)
    return files


def _inside(root: Path, relative: str) -> Path:
    target = (root / relative).resolve()
    if root.resolve() not in target.parents:
        raise SpecError(f"output path {relative!r} would leave {root}", None)
    return target


def _run_compile(args: argparse.Namespace) -> int:
    files = _compile_all(args.specs)
    if args.check:
        differences = []
        for relative, text in sorted(files.items()):
            target = _inside(args.output, relative)
            current = target.read_text() if target.exists() else ""
            if current != text:
                differences.extend(
                    difflib.unified_diff(
                        current.splitlines(keepends=True),
                        text.splitlines(keepends=True),
                        fromfile=f"{args.output}/{relative} (committed)",
                        tofile=f"{args.output}/{relative} (fresh compile)",
                    )
                )
        stale = sorted(
            path.relative_to(args.output).as_posix()
            for path in args.output.glob("*/**/*")
            if path.is_file() and "__pycache__" not in path.parts
        )
        for relative in stale:
            if relative not in files:
                differences.append(f"only in {args.output} (stale, not produced by the specs): {relative}\n")
        if differences:
            sys.stdout.writelines(differences)
            print(f"unfoldgen: {args.output} differs from a fresh compile", file=sys.stderr)
            return EXIT_SPEC
        print(f"{args.output}: {len(files)} files match a fresh compile")
        return EXIT_OK
    for relative, text in sorted(files.items()):
        target = _inside(args.output, relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
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
                for path in spec_files(args.specs):
                    from unfoldgen.compiler import check_text

                    check_text(read_spec(path), str(path))
                return EXIT_OK
            case "compile":
                return _run_compile(args)
            case "explain":
                return _run_explain(args)
            case "train":
                from unfoldgen.training.command import main as train

                return train(args, argv)
    except SpecError as err:
        print(err, file=sys.stderr)
        return EXIT_SPEC
    except FileNotFoundError as err:
        print(f"unfoldgen: {err.filename}: no such file", file=sys.stderr)
        return EXIT_USAGE
    except IsADirectoryError as err:
        print(f"unfoldgen: {err.filename}: is a folder, expected a spec file", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
