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
- ``hand_stacked``: the same, but with per-layer weights stacked in one ``(K, n, m)`` tensor
  indexed per layer — the layout the generator used to emit, kept to show what it cost (each
  layer's backward zero-fills a whole ``(K, n, m)`` gradient).

The generated module prints a shared matrix times the batch as ``shared_matmul`` (one GEMM over
all samples, instead of B matrix-vector products) and keeps per-layer matrices in an
``nn.ParameterList``; before both, the generated step was 12.3× the hand-written one.

Single-threaded by default (``--threads``): on a shared 2-core machine a second OpenMP thread
waits for a time slice whenever another job runs, and step times jump by ~16 ms at random.

Writes benchmarks/results/bench_torch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
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


# ---------------------------------------------------------------------- the race


def build(layers: int, m: int, n: int, batch: int, seed: int = 0) -> tuple[dict[str, nn.Module], Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=generator) / m**0.5
    x_true = torch.randn(batch, n, generator=generator) * (torch.rand(batch, n, generator=generator) < 0.1)
    y = x_true @ A.T + 0.01 * torch.randn(batch, m, generator=generator)
    generated = generated_module.ListaCp(A=A, lam=0.1, layers=layers)
    W, theta = torch.stack(list(generated.W)).detach(), torch.stack(list(generated.theta)).detach()
    models = {
        "generated": generated,
        "hand": HandListaCp(A, W, theta),
        "hand_stacked": HandListaCpStacked(A, W, theta),
    }
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
