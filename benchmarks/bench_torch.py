"""Does generation cost speed? Generated LISTA-CP against hand-written PyTorch LISTA-CP.

    .venv/bin/python benchmarks/bench_torch.py                  # 16 layers, m=250, n=500, batch 64
    .venv/bin/python benchmarks/bench_torch.py --repeats 21 --no-compile

One training step each — forward, MSE loss, backward — on the same problem with the same float32
weights (copied from the generated model's initial values; all outputs are checked equal before
any timing). The contestants run interleaved, in an order that rotates every repeat, so that load
from other jobs falls on all of them alike; each is summarised by the median of its repeats, and
the ratio generated / hand must be at most 1.05. Then the same under torch.compile (inductor).

Contestants:

- ``generated``: ``generated/lista_cp`` as committed;
- ``hand``: LISTA-CP as one writes it in PyTorch — per-layer weights in an ``nn.ParameterList``,
  samples as rows (``x @ A.T``); this is the reference;
- ``hand_stacked``: the same, but with the generated code's layout of parameters (one ``(K, n, m)``
  tensor indexed per layer), to separate the cost of that layout from everything else;
- ``generated_patched``: the generated module with the two emitter changes this benchmark argues
  for, applied to its text (see ``patched_source``): shared-matrix products as one GEMM, and
  per-layer parameters in an ``nn.ParameterList``.

Single-threaded by default (``--threads``): on a shared 2-core machine a second OpenMP thread
waits for a time slice whenever another job runs, and step times jump by ~16 ms at random.

Writes benchmarks/results/bench_torch.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import generated.lista_cp.model as generated_module  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
LIMIT = 1.05


class HandListaCp(nn.Module):
    """LISTA-CP (Chen et al., 2018) written directly: x ← soft(x + W_k (y − A x), θ_k)."""

    def __init__(self, A: Tensor, W: Tensor, theta: Tensor):
        super().__init__()
        self.register_buffer("A", A)
        self.W = nn.ParameterList([nn.Parameter(w.clone()) for w in W])  # K × (n, m)
        self.theta = nn.ParameterList([nn.Parameter(t.clone()) for t in theta])  # K × ()

    def forward(self, y: Tensor) -> Tensor:  # y: (B, m) -> x: (B, n)
        x = y.new_zeros(y.shape[0], self.A.shape[1])
        for W, theta in zip(self.W, self.theta, strict=True):
            v = x + (y - x @ self.A.T) @ W.T
            x = torch.sign(v) * torch.relu(v.abs() - theta)
        return x


class HandListaCpStacked(nn.Module):
    """The same network with the generated code's parameter layout: (K, n, m) and (K,) tensors."""

    def __init__(self, A: Tensor, W: Tensor, theta: Tensor):
        super().__init__()
        self.register_buffer("A", A)
        self.W = nn.Parameter(W.clone())
        self.theta = nn.Parameter(theta.clone())

    def forward(self, y: Tensor) -> Tensor:
        x = y.new_zeros(y.shape[0], self.A.shape[1])
        for k in range(self.W.shape[0]):
            v = x + (y - x @ self.A.T) @ self.W[k].T
            x = torch.sign(v) * torch.relu(v.abs() - self.theta[k])
        return x


# ---------------------------------------------------------------------- the proposed emitter changes

SHARED_MATMUL = '''

def shared_matmul(a: Tensor, x: Tensor) -> Tensor:
    """a @ x for a matrix a shared by the batch and a batch x (B, n, c): one GEMM, not B products."""
    rows = x.mT.reshape(-1, x.shape[-2]) @ a.mT
    return rows.reshape(x.shape[0], x.shape[-1], a.shape[-2]).mT

'''
PATCHES = [
    # 1. `A @ x` with A shared (m, n) and x batched (B, n, 1): torch.matmul expands A to (B, m, n)
    #    and runs B matrix-vector products (bmm); fold the batch into one GEMM instead.
    (
        "x = soft_threshold(x + W @ (y - A @ x), theta)",
        "x = soft_threshold(x + shared_matmul(W, y - shared_matmul(A, x)), theta)",
    ),
    ("\n\nclass ListaCp(", SHARED_MATMUL + "\nclass ListaCp("),
    # 2. per-layer tensors as a ParameterList: self.W[k] on a stacked (K, n, m) parameter makes
    #    backward allocate and zero-fill a whole (K, n, m) gradient for every layer.
    (
        "self.W = nn.Parameter(W.expand(layers, n, m).clone())",
        "self.W = nn.ParameterList([nn.Parameter(W.clone()) for _ in range(layers)])",
    ),
    (
        "self.theta = nn.Parameter(theta.expand(layers).clone())",
        "self.theta = nn.ParameterList([nn.Parameter(theta.clone()) for _ in range(layers)])",
    ),
]


def patched_source() -> str | None:
    """The committed generated module with PATCHES applied; None if it no longer matches them."""
    source = inspect.getsource(generated_module)
    for old, new in PATCHES:
        if source.count(old) != 1:
            return None
        source = source.replace(old, new)
    return source


def load_patched():
    source = patched_source()
    if source is None:
        return None
    folder = Path(tempfile.mkdtemp(prefix="bench_torch_"))
    (folder / "lista_cp_patched.py").write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("lista_cp_patched", folder / "lista_cp_patched.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ListaCp


# ---------------------------------------------------------------------- the race


def build(layers: int, m: int, n: int, batch: int, seed: int = 0) -> tuple[dict[str, nn.Module], Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=generator) / m**0.5
    x_true = torch.randn(batch, n, generator=generator) * (torch.rand(batch, n, generator=generator) < 0.1)
    y = x_true @ A.T + 0.01 * torch.randn(batch, m, generator=generator)
    generated = generated_module.ListaCp(A=A, lam=0.1, layers=layers)
    W, theta = generated.W.detach(), generated.theta.detach()
    models = {
        "generated": generated,
        "hand": HandListaCp(A, W, theta),
        "hand_stacked": HandListaCpStacked(A, W, theta),
    }
    patched = load_patched()
    if patched is not None:
        models["generated_patched"] = patched(A=A, lam=0.1, layers=layers)
    return models, y, x_true


def step(model: nn.Module, y: Tensor, x_true: Tensor) -> None:
    """One training step's compute: forward, MSE loss, backward."""
    model.zero_grad(set_to_none=True)
    loss = torch.nn.functional.mse_loss(model(y=y), x_true)
    loss.backward()


def race(models: dict[str, nn.Module], y: Tensor, x_true: Tensor, repeats: int, warmup: int) -> dict:
    names = list(models)
    for _ in range(warmup):
        for name in names:
            step(models[name], y, x_true)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(repeats):
        order = names[index % len(names) :] + names[: index % len(names)]  # rotate who goes first
        for name in order:
            start = time.perf_counter()
            step(models[name], y, x_true)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "median_ms": {name: round(1e3 * value, 3) for name, value in medians.items()},
        "iqr_ms": {name: _iqr_ms(values) for name, values in times.items()},
        "ratio_to_hand": {name: round(value / medians["hand"], 4) for name, value in medians.items()},
        # the median over repeats of each repeat's own ratio: robust to slow drifts in load
        "pairwise_ratio_to_hand": {
            name: round(statistics.median(a / b for a, b in zip(values, times["hand"], strict=True)), 4)
            for name, values in times.items()
        },
    }
    return result


def _iqr_ms(times: list[float]) -> list[float]:
    quartiles = statistics.quantiles(times, n=4)
    return [round(1e3 * quartiles[0], 3), round(1e3 * quartiles[2], 3)]


def check_equal(models: dict[str, nn.Module], y: Tensor) -> float:
    with torch.no_grad():
        reference = models["hand"](y=y)
        difference = max((model(y=y) - reference).abs().max().item() for model in models.values())
    assert difference < 1e-4, f"the networks disagree by {difference}: the race would be unfair"
    return difference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--m", type=int, default=250)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS / "bench_torch.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    models, y, x_true = build(args.layers, args.m, args.n, args.batch)
    difference = check_equal(models, y)
    report: dict = {
        "config": {k: getattr(args, k) for k in ("layers", "m", "n", "batch", "repeats", "warmup", "threads")},
        "dtype": "float32",
        "step": "forward + MSE loss + backward",
        "contestants": list(models),
        "patches_applied": "generated_patched" in models,
        "max_output_difference": difference,
        "limit": LIMIT,
        "load_average_before": os.getloadavg(),
    }
    report["eager"] = race(models, y, x_true, args.repeats, args.warmup)
    _print("eager", report["eager"])
    if not args.no_compile:
        compiled = {name: torch.compile(model) for name, model in models.items() if name != "hand_stacked"}
        started = time.perf_counter()
        for model in compiled.values():
            step(model, y, x_true)
        report["compile_seconds"] = round(time.perf_counter() - started, 1)
        report["compiled"] = race(compiled, y, x_true, args.repeats, args.warmup)
        _print("torch.compile", report["compiled"])
    ratios = [report["eager"]["ratio_to_hand"]["generated"]]
    if "compiled" in report:
        ratios.append(report["compiled"]["ratio_to_hand"]["generated"])
    report["pass"] = all(ratio <= LIMIT for ratio in ratios)
    report |= {
        "load_average_after": os.getloadavg(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"generated / hand <= {LIMIT}: {'pass' if report['pass'] else 'FAIL'}; wrote {args.output}")
    return 0 if report["pass"] else 1


def _print(label: str, result: dict) -> None:
    print(f"\n{label}: median ms per step (ratio to hand; pairwise)")
    for name, median in result["median_ms"].items():
        print(
            f"  {name:18s} {median:9.2f}  {result['ratio_to_hand'][name]:6.3f}  "
            f"{result['pairwise_ratio_to_hand'][name]:6.3f}"
        )


if __name__ == "__main__":
    sys.exit(main())
