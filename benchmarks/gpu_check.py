"""Every generated example on the GPU: float32 on CUDA against float64 on the CPU, and timings.

    .venv/bin/python benchmarks/gpu_check.py                 # needs a CUDA device; otherwise says so, exits 0
    .venv/bin/python benchmarks/gpu_check.py --device cpu    # the same code path on the CPU (a dry run)

For each package in generated/ (built from what its spec declares):

1. accuracy — the model is built once on the CPU in float64 (its classical initial values, and
   random nets) and copied to the device in float32; both run the same batch of 16; the largest
   difference, relative to the largest reference value, must stay under ``--tolerance`` (1e-3);
2. speed — forward + backward (sum of squared outputs) at batch 1024 on the device: median of
   ``--repeats`` after ``--warmup`` steps, synchronised, plus the step's peak device memory.

Sizes: dims (250, 500) when every per-sample input is a vector (the sparse-recovery family),
(32, 16) when a per-sample input is a matrix (a channel H, an image D: batch 1024 of them).
A deadline (``--budget``, 270 s) keeps the whole run under five minutes: examples left when it is
reached are reported as skipped, never silently dropped. Exit status 1 if any example fails.

Writes benchmarks/results/gpu_check.json (only when it ran: the CPU-only message writes nothing).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import platform
import re
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unfoldgen import ir  # noqa: E402
from unfoldgen.compiler import compile_text, read_spec  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
VECTOR_SIZES = (250, 500)
MATRIX_SIZES = (32, 16)


def examples() -> list[str]:
    return sorted(path.parent.name for path in (ROOT / "generated").glob("*/model.py"))


def lowered_of(package: str):
    for spec in sorted((ROOT / "specs").glob("*.unf")):
        if re.search(rf"^\s*unfold\s+{package}\s+from\b", spec.read_text(encoding="utf-8"), re.M):
            return next(low for low in compile_text(read_spec(spec), spec.name).lowered if low.name == package)
    raise LookupError(f"no spec in specs/ defines unfold {package}")


class Setup:
    """How to build one example and feed it: sizes, constructor arguments, input shapes."""

    def __init__(self, package: str):
        self.package = package
        self.low = lowered_of(package)
        symbols = self.low.problem.symbols
        matrix_input = any(s.role == "input" and s.shape and s.shape[1] != 1 for s in symbols)
        dims = [s.name for s in symbols if s.role == "dim"]
        self.sizes = dict(zip(dims, MATRIX_SIZES if matrix_input else VECTOR_SIZES, strict=False))
        for extra, dim in enumerate(dims[2:]):
            self.sizes[dim] = 8 + extra
        self.model_class = getattr(importlib.import_module(f"generated.{package}.model"), self.low.class_name)

    def shape(self, symbol) -> tuple[int, ...]:
        full = tuple(self.sizes[d] if isinstance(d, str) else d for d in symbol.shape)
        return full[:1] if len(full) == 2 and symbol.shape[1] == 1 else full

    def reference_model(self) -> torch.nn.Module:
        """Built on the CPU in float64, with nets (which start at zero output) nudged to matter."""
        generator = torch.Generator().manual_seed(0)
        arguments: dict = dict(self.sizes)
        for symbol in self.low.problem.symbols:
            if symbol.role == "data":
                arguments[symbol.name] = torch.randn(self.shape(symbol), dtype=torch.float64, generator=generator)
                arguments[symbol.name] /= self.shape(symbol)[0] ** 0.5
            elif symbol.role == "param" and not isinstance(symbol.init, ir.Const):
                arguments[symbol.name] = 0.1
        torch.manual_seed(0)
        model = self.model_class(**arguments, dtype=torch.float64)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(1 + 0.01 * torch.randn(parameter.shape, dtype=parameter.dtype, generator=generator))
        return model

    def inputs(self, batch: int, dtype: torch.dtype, device: torch.device, seed: int = 1) -> dict:
        generator = torch.Generator().manual_seed(seed)
        return {
            symbol.name: torch.randn((batch, *self.shape(symbol)), dtype=torch.float64, generator=generator).to(
                device=device, dtype=dtype
            )
            for symbol in self.low.problem.symbols
            if symbol.role == "input"
        }


def outputs_of(result) -> tuple[torch.Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_one(package: str, device: torch.device, args: argparse.Namespace) -> dict:
    setup = Setup(package)
    reference = setup.reference_model()
    on_device = copy.deepcopy(reference).to(device=device, dtype=torch.float32)
    result: dict = {"sizes": setup.sizes, "layers": reference.layers}

    # 1. accuracy: float32 on the device against float64 on the CPU
    cpu_inputs = setup.inputs(16, torch.float64, torch.device("cpu"))
    device_inputs = {name: value.to(device=device, dtype=torch.float32) for name, value in cpu_inputs.items()}
    with torch.no_grad():
        want = outputs_of(reference(**cpu_inputs))
        got = outputs_of(on_device(**device_inputs))
    scale = max(w.abs().max().item() for w in want) or 1.0
    error = max((g.double().cpu() - w).abs().max().item() for g, w in zip(got, want, strict=True)) / scale
    result["relative_error"] = error
    result["accurate"] = bool(error <= args.tolerance)

    # 2. speed: forward + backward at the large batch
    inputs = setup.inputs(args.batch, torch.float32, device)
    inputs = {name: value.requires_grad_(True) for name, value in inputs.items()}  # backward even if nothing is learned

    def step():
        on_device.zero_grad(set_to_none=True)
        for value in inputs.values():
            value.grad = None
        loss = sum((out.float() ** 2).sum() for out in outputs_of(on_device(**inputs)))
        loss.backward()

    for _ in range(args.warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    result["step_ms"] = round(1e3 * statistics.median(times), 3)
    result["samples_per_second"] = round(args.batch / statistics.median(times))
    if device.type == "cuda":
        result["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--budget", type=float, default=270.0, help="seconds; examples left after it are skipped")
    parser.add_argument("--only", help="comma-separated example names")
    parser.add_argument("--output", type=Path, default=RESULTS / "gpu_check.json")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}); nothing to check on a GPU.")
        print("gpu_check: run it on a machine with one, or `--device cpu` to dry-run the same code path.")
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32: TF32 would cost ~1e-3
        torch.backends.cudnn.allow_tf32 = False
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or "cpu"
    packages = args.only.split(",") if args.only else examples()
    report: dict = {
        "device": name,
        "torch": torch.__version__,
        "batch": args.batch,
        "tolerance": args.tolerance,
        "examples": {},
    }
    print(f"gpu_check on {name}: {len(packages)} examples, batch {args.batch}, float32 vs CPU float64")
    print(f"| example | rel. error vs CPU float64 | fwd+bwd ms (batch {args.batch}) | samples/s | peak MiB |")
    print("|---|---|---|---|---|")
    failed = []
    for package in packages:
        if time.perf_counter() - started > args.budget:
            report["examples"][package] = {"skipped": f"time budget of {args.budget:.0f} s reached"}
            print(f"| {package} | skipped: time budget reached | | | |")
            continue
        try:
            result = check_one(package, device, args)
        except Exception as err:  # report every example, then fail
            result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=-3)}
        report["examples"][package] = result
        if "error" in result or not result["accurate"]:
            failed.append(package)
        if "error" in result:
            print(f"| {package} | ERROR {result['error'][:80]} | | | |")
        else:
            mark = "" if result["accurate"] else " (too large)"
            print(
                f"| {package} | {result['relative_error']:.1e}{mark} | {result['step_ms']:.2f} | "
                f"{result['samples_per_second']} | {result.get('peak_memory_mib', '-')} |"
            )
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["failed"] = failed
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"{len(packages) - len(failed)}/{len(packages)} passed in {report['seconds']} s; wrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
