"""Peak memory of training a deep unfolding (K = 100) with and without ``checkpoint_layers``, and
of a fixed-point network against its unrolled twin at 10, 100 and 1000 iterations.

    .venv/bin/python benchmarks/bench_memory.py                       # ISTA and LISTA-CP, K=100; fixed point
    .venv/bin/python benchmarks/bench_memory.py --layers 50 --batch 128 --models ista
    .venv/bin/python benchmarks/bench_memory.py --part fixed-point    # only the fixed-point part

How the peak is measured (CPU): each configuration runs in a fresh subprocess, so nothing one run
allocated can hide in another's heap. The child builds the model and its data, runs one small
warm-up step (libraries allocate their buffers once), then resets the kernel's resident-set
high-water mark (``echo 5 > /proc/self/clear_refs`` resets VmHWM to the current VmRSS), runs one
training step (forward, MSE loss, backward) and reads VmHWM: the peak increase over the resident
set before the step. glibc's dynamic mmap threshold is pinned (``MALLOC_MMAP_THRESHOLD_``) so that
every large tensor is its own mapping, returned to the kernel when freed: the resident set then
follows the live tensors instead of malloc's free lists. tracemalloc would not see torch's
allocations at all (they are made in C++), and ``ru_maxrss`` cannot be reset, so it would include
building the model.

On CUDA (``--device cuda``) the same protocol uses ``torch.cuda.reset_peak_memory_stats`` and
``max_memory_allocated`` in each child.

Reported per model: peak increase with and without checkpointing, their ratio, the share that is
the parameters' gradients (the same in both), step times (recomputation costs one extra forward),
and whether the gradients agree (float64, to 1e-10).

Fixed point (``--part fixed-point``): ``ista_fixed_point`` (specs/fixed_point.unf) with tolerance
0, so that forward and backward each run exactly their cap of N iterations, against ``ista_tied``
(the same layer, shared step and threshold) unrolled N layers, N = 10, 100, 1000, measured as
above (the unrolled twin at N = 1000 holds about 2.4 GB at the default sizes). The fixed-point peak
is a few MiB, where the allocator's and the garbage collector's timing move a single measurement
by up to ±0.3 MiB: it is the median of three children. The target: the fixed-point peak at 1000
iterations within 10 % of the peak at 10.

Writes benchmarks/results/bench_memory.json (a single part replaces only its own entry).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGET = 5.0
MODELS = {
    "ista": ("generated.ista", "Ista"),
    "lista_cp": ("generated.lista_cp", "ListaCp"),
    "ista_tied": ("generated.ista_tied", "IstaTied"),
    "ista_fixed_point": ("generated.ista_fixed_point", "IstaFixedPoint"),
}
FIXED_POINT_COUNTS = (10, 100, 1000)
FIXED_POINT_TARGET = 0.10  # peak at 1000 iterations at most 10 % above (or below) the peak at 10
FIXED_POINT_REPEATS = 3  # children per fixed-point count: the median peak


# ---------------------------------------------------------------------- the child: one configuration


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _problem(model_name: str, layers: int, m: int, n: int, batch: int, dtype, device, checkpoint, seed=0):
    import importlib

    import torch

    module, class_name = MODELS[model_name]
    generator = torch.Generator().manual_seed(seed)
    A = (torch.randn(m, n, generator=generator, dtype=dtype) / m**0.5).to(device)
    mask = torch.rand(batch, n, generator=generator) < 0.1
    x_true = (torch.randn(batch, n, generator=generator, dtype=dtype) * mask).to(device)
    y = x_true @ A.T + 0.01 * torch.randn(batch, m, generator=generator, dtype=dtype).to(device)
    model_class = getattr(importlib.import_module(module), class_name)
    if getattr(model_class, "FIXED_POINT", False):  # tolerance 0: exactly `layers` iterations each way
        model = model_class(A=A, lam=0.1, layers=layers, tolerance=0.0)
    else:
        model = model_class(A=A, lam=0.1, layers=layers, checkpoint_layers=checkpoint)
    return model, model, y, x_true


def child(config: dict) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(1)
    device = torch.device(config["device"])
    model, forward, y, x_true = _problem(
        config["model"],
        config["layers"],
        config["m"],
        config["n"],
        config["batch"],
        torch.float32,
        device,
        config["checkpoint"],
    )

    def train_step(y_batch, x_batch):
        model.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(forward(y=y_batch), x_batch).backward()

    train_step(y[:2], x_true[:2])  # warm-up: library buffers, autograd engine
    model.zero_grad(set_to_none=True)
    gradient_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        train_step(y, x_true)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() - before
        method = "torch.cuda.max_memory_allocated - memory_allocated before the step"
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current VmRSS
        before = _status_kb("VmRSS")
        start = time.perf_counter()
        train_step(y, x_true)
        seconds = time.perf_counter() - start
        peak = (_status_kb("VmHWM") - before) * 1024
        method = "VmHWM after the step - VmRSS before it (VmHWM reset through /proc/self/clear_refs)"
    result = {"peak_bytes": peak, "gradient_bytes": gradient_bytes, "step_seconds": seconds, "method": method}
    if getattr(model, "FIXED_POINT", False):  # the iterations the step really ran
        result |= {"iterations": model.last_iterations, "backward_iterations": model.last_backward_iterations}
    return result


def run_child(config: dict) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=1200,
    )
    if result.returncode != 0:
        raise RuntimeError(f"child {config} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- gradients agree


def gradients_agree(model_name: str, layers: int, checkpoint) -> float:
    """Largest difference between the gradients without and with checkpointing (float64)."""
    import torch

    sys.path.insert(0, str(ROOT))
    grads = []
    for mode in (False, checkpoint):
        cpu = torch.device("cpu")
        model, forward, y, x_true = _problem(model_name, layers, 20, 40, 8, torch.float64, cpu, mode)
        y = y.clone().requires_grad_(True)
        torch.nn.functional.mse_loss(forward(y=y), x_true).backward()
        by_name: dict[str, list] = {"input y": [y.grad]}
        for key, parameter in model.named_parameters():  # W or W.0, W.1, ... (a ParameterList)
            by_name.setdefault(key.split(".")[0], []).append(parameter.grad)
        grads.append({key: torch.stack(values) if len(values) > 1 else values[0] for key, values in by_name.items()})
    assert grads[0].keys() == grads[1].keys()
    return max((grads[0][key] - grads[1][key]).abs().max().item() for key in grads[0])


# ---------------------------------------------------------------------- the parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--models", default="ista,lista_cp")
    parser.add_argument("--layers", type=int, default=100)
    parser.add_argument("--m", type=int, default=250)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, default=RESULTS / "bench_memory.json")
    parser.add_argument("--part", choices=("all", "checkpoint", "fixed-point"), default="all")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if args.device == "cpu" and not Path("/proc/self/clear_refs").exists():
        print("bench_memory: needs Linux (/proc/self/clear_refs) to measure CPU peaks", file=sys.stderr)
        return 2

    report: dict = {}
    if args.part != "all" and args.output.exists():  # keep the other part's results
        report = json.loads(args.output.read_text(encoding="utf-8"))
    if args.part != "fixed-point":
        report |= checkpoint_part(args)
    if args.part != "checkpoint":
        report["fixed_point"] = fixed_point_part(args)
    report |= {"python": platform.python_version(), "torch": __import__("torch").__version__}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


def checkpoint_part(args: argparse.Namespace) -> dict:
    """With and without checkpoint_layers, per model (the report's config, models, target_ratio)."""
    report: dict = {
        "config": {k: getattr(args, k) for k in ("layers", "m", "n", "batch", "device")},
        "dtype": "float32",
        "step": "forward + MSE loss + backward",
        "target_ratio": TARGET,
        "models": {},
    }
    segment = max(1, round(args.layers**0.5))
    # checkpoint_layers=1 recomputes every layer alone; True takes segments of √K layers
    modes = {"plain": False, "checkpoint_layers=1": 1, f"checkpoint_layers=True ({segment} layers)": True}
    for name in args.models.split(","):
        base = {"model": name, **report["config"]}
        runs = {label: run_child({**base, "checkpoint": mode}) for label, mode in modes.items()}
        plain = runs["plain"]
        entry: dict = {"gradients_mib": _mib(plain["gradient_bytes"]), "method": plain["method"], "modes": {}}
        for label, run in runs.items():
            # the parameters' gradients are the same in every mode: the rest is what the layers
            # keep for backward (activations) and the temporaries of one backward step
            rest = run["peak_bytes"] - run["gradient_bytes"]
            entry["modes"][label] = {
                "peak_mib": _mib(run["peak_bytes"]),
                "ratio": round(plain["peak_bytes"] / max(run["peak_bytes"], 1), 2),
                "peak_without_gradients_mib": _mib(rest),
                "ratio_without_gradients": round((plain["peak_bytes"] - plain["gradient_bytes"]) / max(rest, 1), 2),
                "step_seconds": round(run["step_seconds"], 3),
                "max_gradient_difference_float64": gradients_agree(name, args.layers, modes[label]),
            }
            entry["modes"][label]["meets_target"] = entry["modes"][label]["ratio"] >= TARGET
            mode = entry["modes"][label]
            print(
                f"{name:9s} K={args.layers} {label:32s} peak {mode['peak_mib']:8.1f} MiB ({mode['ratio']:5.2f}x less; "
                f"without the {entry['gradients_mib']:.1f} MiB of gradients {mode['ratio_without_gradients']:5.2f}x), "
                f"step {mode['step_seconds']:6.2f} s, gradients differ by {mode['max_gradient_difference_float64']:.1e}"
            )
        report["models"][name] = entry
    return report


def fixed_point_part(args: argparse.Namespace) -> dict:
    """The fixed-point network and its unrolled twin at each iteration count, one fresh child each."""
    config = {"m": args.m, "n": args.n, "batch": args.batch, "device": args.device}
    part: dict = {
        "config": config,
        "dtype": "float32",
        "step": "forward + MSE loss + backward",
        "models": {"fixed point": "ista_fixed_point (tolerance 0)", "unrolled": "ista_tied"},
        "counts": {},
    }
    median_bytes = {}
    for count in FIXED_POINT_COUNTS:
        fixed = [
            run_child({"model": "ista_fixed_point", "layers": count, "checkpoint": False, **config})
            for _ in range(FIXED_POINT_REPEATS)
        ]
        median = sorted(fixed, key=lambda run: run["peak_bytes"])[FIXED_POINT_REPEATS // 2]
        median_bytes[count] = median["peak_bytes"]
        runs = {
            "fixed point": median,
            "unrolled": run_child({"model": "ista_tied", "layers": count, "checkpoint": False, **config}),
        }
        entry = {
            kind: {"peak_mib": _mib(run["peak_bytes"]), "step_seconds": round(run["step_seconds"], 3)}
            for kind, run in runs.items()
        }
        entry["fixed point"] |= {k: median[k] for k in ("iterations", "backward_iterations")}
        entry["fixed point"]["peaks_mib"] = [_mib(run["peak_bytes"]) for run in fixed]
        entry["method"] = runs["unrolled"]["method"]
        part["counts"][str(count)] = entry
        print(
            f"N={count:5d} fixed point {entry['fixed point']['peak_mib']:8.1f} MiB "
            f"({entry['fixed point']['iterations']} + {entry['fixed point']['backward_iterations']} iterations, "
            f"{entry['fixed point']['step_seconds']:6.2f} s); unrolled {entry['unrolled']['peak_mib']:8.1f} MiB "
            f"({entry['unrolled']['step_seconds']:6.2f} s)"
        )
    first, last = FIXED_POINT_COUNTS[0], FIXED_POINT_COUNTS[-1]
    part["peak_change_last_vs_first"] = round(median_bytes[last] / max(median_bytes[first], 1) - 1, 4)
    part["target"] = f"fixed-point peak at {last} iterations within {FIXED_POINT_TARGET:.0%} of that at {first}"
    part["meets_target"] = abs(part["peak_change_last_vs_first"]) <= FIXED_POINT_TARGET
    print(f"fixed point: peak at {last} vs {first} iterations {part['peak_change_last_vs_first']:+.1%} (target ±10%)")
    return part


def _mib(value: float) -> float:
    return round(value / 2**20, 1)


if __name__ == "__main__":
    sys.exit(main())
