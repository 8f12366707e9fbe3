"""Fuzz the compiler with 10,000 cases and report what happened.

    .venv/bin/python benchmarks/fuzz.py                # 10,000 cases: 6,000 generated specs, 4,000 mutated examples
    .venv/bin/python benchmarks/fuzz.py --cases 500 --seed 7
    .venv/bin/python benchmarks/fuzz.py --run 300      # also build and run the first 300 specs that compile

The generators and the invariant are the ones of tests/test_fuzz.py (a grammar- and type-aware
spec writer, byte-level mutations of specs/*.unf): every case must end in success or one located
SpecError, within one CPU second. Here a violation is counted and saved, not raised, so one run
shows all of them: counts (success / SpecError / other exception / over the time limit), the
slowest case, the most common error messages, and every failing input under
``build/fuzz_failures/`` (ignored by git) for replay with ``run_case``.

``--run N`` goes one step further than the tests: it imports the generated model of the first N
specs that compile, builds it on random float64 data (dims 4, 3, 5, …; batch 2) and runs forward
and backward. An exception there is a compiler bug the static checks cannot see.

Writes benchmarks/results/fuzz.json.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import platform
import random
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from test_fuzz import TIME_LIMIT_S, generated_case, mutated_case, run_case, warm_up  # noqa: E402

from unfoldgen import ir  # noqa: E402
from unfoldgen.compiler import compile_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FAILURES = ROOT / "build" / "fuzz_failures"
GENERATED_SHARE = 0.6


def one_case(index: int, seed: int) -> tuple[str, str | bytes, bool]:
    """The index-th case of a run: (source, input, compile?)."""
    rng = random.Random(f"{seed}:{index}")
    if rng.random() < GENERATED_SHARE:
        return "generated", generated_case(rng), True
    return "mutated", mutated_case(rng), rng.random() < 0.3


def classify(data: str | bytes, compile_: bool) -> dict:
    try:
        outcome = run_case(data, compile_=compile_)
        return {"kind": outcome.kind, "cpu": outcome.seconds, "wall": outcome.wall, "message": outcome.message}
    except AssertionError as err:
        kind = "slow" if "limit" in str(err) else "unlocated"
        return {"kind": kind, "cpu": None, "wall": None, "message": str(err).splitlines()[0]}
    except Exception as err:  # the point of the run: count them all
        return {
            "kind": "other",
            "cpu": None,
            "wall": None,
            "message": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(limit=-4),
        }


# ---------------------------------------------------------------------- building and running


def user_shape(symbol, sizes: dict[str, int]) -> tuple[int, ...]:
    """The shape a caller passes (vectors 1-D), with dims replaced by sizes."""
    shape = tuple(sizes[d] if isinstance(d, str) else d for d in symbol.shape)
    return shape[:1] if len(shape) == 2 and symbol.shape[1] == 1 else shape


def run_generated(text: str, folder: Path) -> str | None:
    """Import every generated model of a spec, build it on random data and run forward + backward.
    None if all ran; otherwise the first exception, as text."""
    import torch

    compiled = compile_text(text, "fuzz.unf")
    for low in compiled.lowered:
        package = folder / f"case_{len(list(folder.iterdir()))}"
        package.mkdir()
        (package / "model.py").write_text(compiled.files[f"{low.name}/model.py"], encoding="utf-8")
        spec = importlib.util.spec_from_file_location(f"fuzz_model_{package.name}", package / "model.py")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
            dims = [symbol.name for symbol in low.problem.symbols if symbol.role == "dim"]
            sizes = dict(zip(dims, (4, 3, 5, 6, 7, 8, 9), strict=False))  # distinct: mixed-up axes show

            generator = torch.Generator().manual_seed(0)
            kwargs = {}
            for symbol in low.problem.symbols:
                if symbol.role == "data":
                    shape = user_shape(symbol, sizes)
                    kwargs[symbol.name] = torch.randn(shape, dtype=torch.float64, generator=generator)
                elif symbol.role == "param" and not isinstance(symbol.init, ir.Const):
                    kwargs[symbol.name] = 0.1  # a param whose default is an expression must be given
            kwargs.update({d: size for d, size in sizes.items()})
            kwargs["layers"] = min(low.unfold.layers, 5)
            model = getattr(module, low.class_name)(**kwargs, dtype=torch.float64)
            inputs = {
                symbol.name: torch.randn((2, *user_shape(symbol, sizes)), dtype=torch.float64, generator=generator)
                for symbol in low.problem.symbols
                if symbol.role == "input"
            }
            out = model(**inputs)
            outs = out if isinstance(out, tuple) else (out,)
            loss = sum(o.double().sum() for o in outs)
            if loss.requires_grad:
                loss.backward()
        except torch.linalg.LinAlgError:
            continue  # random data through log/sqrt gave NaNs an SVD or solve refuses: not a compiler bug
        except Exception as err:
            where = "".join(traceback.format_exception(err, limit=-2)).strip().splitlines()[-3:]
            return f"{low.name}: {type(err).__name__}: {str(err)[:200]} | " + " / ".join(line.strip() for line in where)
    return None


# ---------------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", type=int, default=0, help="build and run the first N specs that compile")
    parser.add_argument("--output", type=Path, default=RESULTS / "fuzz.json")
    parser.add_argument("--failures", type=Path, default=FAILURES, help="where failing inputs are saved")
    args = parser.parse_args(argv)

    warm_up()
    counts: collections.Counter[str] = collections.Counter()
    by_source: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    messages: collections.Counter[str] = collections.Counter()
    failures: list[dict] = []
    slowest = {"cpu": -1.0}
    started = time.perf_counter()
    runnable: list[tuple[int, str]] = []
    for index in range(args.cases):
        source, data, compile_ = one_case(index, args.seed)
        result = classify(data, compile_)
        counts[result["kind"]] += 1
        by_source[source][result["kind"]] += 1
        if result["kind"] == "spec_error":
            messages[_message_kind(result["message"])] += 1
        elif result["kind"] not in ("ok",):
            failures.append({"index": index, "source": source, "compile": compile_, **result, "input": data})
        elif compile_ and isinstance(data, str) and len(runnable) < args.run:
            runnable.append((index, data))
        if result["cpu"] is not None and result["cpu"] > slowest["cpu"]:
            slowest = {"index": index, "source": source, "compile": compile_, **result, "input": _show(data)}
        if (index + 1) % 1000 == 0:
            print(f"  {index + 1} cases, {dict(counts)}", file=sys.stderr)
    elapsed = time.perf_counter() - started

    run_failures = []
    if runnable:
        with tempfile.TemporaryDirectory() as folder:
            for index, text in runnable:
                problem = run_generated(text, Path(folder))
                if problem is not None:
                    run_failures.append({"index": index, "error": problem, "input": text})

    saved = _save_failures(failures + [{**f, "kind": "run"} for f in run_failures], args.failures)
    report = {
        "cases": args.cases,
        "seed": args.seed,
        "time_limit_cpu_s": TIME_LIMIT_S,
        "seconds": round(elapsed, 1),
        "counts": {"success": counts["ok"], "spec_error": counts["spec_error"], "other": counts["other"]}
        | {"slow": counts["slow"], "unlocated": counts["unlocated"]},
        "by_source": {source: dict(c) for source, c in sorted(by_source.items())},
        "slowest": {k: v for k, v in slowest.items() if k != "message" or v},
        "top_spec_errors": messages.most_common(15),
        "failures": [{k: v for k, v in f.items() if k != "input"} for f in failures[:50]],
        "run": {"built_and_ran": len(runnable), "failed": len(run_failures), "failures": run_failures[:50]},
        "failure_files": saved,
        "python": platform.python_version(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    _print(report)
    return 0 if not failures and not run_failures else 1


def _message_kind(message: str) -> str:
    """An error message without its particulars (names, numbers), to group them."""
    message = re.sub(r"'[^']*'", "'…'", message)
    return re.sub(r"(?<![\w-])\d+(\.\d+)?", "N", message)[:90]


def _show(data: str | bytes) -> str:
    text = data if isinstance(data, str) else repr(data)
    return text if len(text) <= 2000 else text[:2000] + f"… ({len(text)} characters)"


def _save_failures(failures: list[dict], folder: Path) -> list[str]:
    if not failures:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for failure in failures[:200]:
        data = failure["input"]
        path = folder / f"case_{failure['index']}_{failure['kind']}.unf"
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        names.append(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
    return names


def _print(report: dict) -> None:
    counts = report["counts"]
    print(f"\n{report['cases']} cases in {report['seconds']} s (seed {report['seed']})")
    print("| outcome | cases |\n|---|---|")
    for name, count in counts.items():
        print(f"| {name} | {count} |")
    for source, c in report["by_source"].items():
        print(f"  {source}: {c}")
    slowest = report["slowest"]
    print(
        f"slowest: case {slowest.get('index')} ({slowest.get('source')}, "
        f"{'compile' if slowest.get('compile') else 'check'}): {slowest.get('cpu'):.3f} CPU s, "
        f"{slowest.get('wall'):.3f} wall s, {slowest.get('kind')}"
    )
    print("most common errors:")
    for message, count in report["top_spec_errors"][:10]:
        print(f"  {count:5d}  {message}")
    for failure in report["failures"][:20]:
        print(f"FAILURE case {failure['index']} ({failure['source']}): {failure['kind']}: {failure['message'][:300]}")
    run = report["run"]
    if run["built_and_ran"]:
        print(f"built and ran {run['built_and_ran']} compiled specs: {run['failed']} failed")
        for failure in run["failures"][:20]:
            print(f"RUN FAILURE case {failure['index']}: {failure['error'][:400]}")
    if report["failure_files"]:
        print(f"failing inputs saved under {Path(report['failure_files'][0]).parent}/")


if __name__ == "__main__":
    sys.exit(main())
