"""A fixed-point network against its unrolled twin: lasso ISTA with a learned step and threshold
(shared by every iteration), in Study 1's data setting at reduced size.

- fixed point: ``specs/fixed_point.unf: ista_fixed_point``, iterated until every sample's relative
  change is at most the tolerance (or the cap), trained by implicit differentiation;
- unrolled twin: ``specs/sparse_paradigms.unf: ista_tied``, the same layer unrolled K = 16 times,
  trained by backpropagation through the layers.

Data: Study 1's generator (A with N(0, 1/m) entries and unit-norm columns, Bernoulli(p)-Gaussian
codes, SNR 40 dB) at m=100, n=200 (Study 1: 250, 500); one A; training, validation and a held-out
test set from disjoint streams. Each network starts from its classical solver at the best λ of a
grid on the validation set (ISTA run to convergence; ISTA-16), then trains end to end (supervised
NMSE, Adam, batch 64, the same number of steps for both, float32, one thread).

Measured: test NMSE (dB, ± a bootstrap standard error), training time, inference time on the test
set (median of repeats, no graph) with the fixed point's iteration count, and the peak memory of
one training step measured as ``benchmarks/bench_memory.py`` does (a fresh child process, VmHWM;
the fixed point there runs its full cap of iterations both ways).

    .venv/bin/python benchmarks/fixed_point.py             # about 5 min on one core
    .venv/bin/python benchmarks/fixed_point.py --quick     # m=40, n=80, under a minute

Writes ``benchmarks/results/fixed_point.json`` (``--quick``: ``fixed_point_quick.json``);
docs/studies/fixed_point.md presents it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from unfoldgen.data import bind, slots_from_problem, sparse_source  # noqa: E402
from unfoldgen.training import Config, build_model, fit, load_spec  # noqa: E402

TEST_STREAM = 3  # the data module uses 0 (A), 1 (training) and 2 (validation)
RESULTS = ROOT / "benchmarks" / "results"
NETWORKS = {
    # key: (label, spec, unfold)
    "fixed_point": ("fixed point (implicit)", "fixed_point.unf", "ista_fixed_point"),
    "unrolled": ("unrolled twin", "sparse_paradigms.unf", "ista_tied"),
}


@dataclasses.dataclass(frozen=True)
class Setting:
    m: int
    n: int
    p: float
    snr_db: float
    layers: int  # the unrolled twin's K
    tolerance: float  # the fixed point's
    iterations: int  # the fixed point's cap
    batch: int
    steps: int
    lr: float
    val_size: int
    test_size: int
    lam_grid: tuple[float, ...]


# The fixed point's tolerance 1e-3 on the relative change per iteration: with ISTA's linear rate
# near the solution (≈ 0.95 here) the distance left to the fixed point is ≈ 2 % of ‖x‖, −34 dB,
# far below the estimation error the study measures (−15 … −30 dB); smaller costs iterations.
SETTINGS = {
    "full": Setting(100, 200, 0.1, 40.0, 16, 1e-3, 1000, 64, 150, 3e-3, 500, 1000, (0.005, 0.01, 0.02, 0.05, 0.1)),
    "quick": Setting(40, 80, 0.1, 40.0, 8, 1e-3, 1000, 32, 30, 3e-3, 200, 200, (0.02, 0.05, 0.1)),
}


class Study:
    """One A, the compiled specs, the validation and test sets."""

    def __init__(self, setting: Setting, seed: int = 0):
        self.setting = setting
        self.source = sparse_source(setting.m, setting.n, setting.p, setting.snr_db, seed=seed)
        self.specs = {spec: load_spec(ROOT / "specs" / spec) for _, spec, _ in NETWORKS.values()}
        self.binding = bind(
            self.source, slots_from_problem(self.specs["fixed_point.unf"].unfold("ista_fixed_point").problem)
        )
        test = self.source.draw(setting.test_size, (seed, TEST_STREAM))
        validation = self.source.validation(setting.val_size)
        self.test_y, self.test_x = torch.as_tensor(test["y"], dtype=torch.float32), test["x"]
        self.val_y, self.val_x = torch.as_tensor(validation["y"], dtype=torch.float32), validation["x"]

    def build(self, key: str, lam: float) -> torch.nn.Module:
        _, spec, unfold = NETWORKS[key]
        fixed = key == "fixed_point"
        layers = self.setting.iterations if fixed else self.setting.layers
        model = build_model(
            self.specs[spec], unfold, self.binding, dtype=torch.float32, layers=layers, overrides={"lam": lam}
        )
        if fixed:
            model.tolerance = self.setting.tolerance
        return model


def squared_errors(model: torch.nn.Module, y: torch.Tensor, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        estimate = model(y=y).double().numpy()
    return ((estimate - x) ** 2).sum(axis=1)


def nmse_db(errors: np.ndarray, x: np.ndarray, bootstrap: int = 0, seed: int = 0) -> dict[str, float]:
    """10 log10(Σ errors / Σ ||x||²); with ``bootstrap``, the standard error over resampled test sets."""
    energy = (x**2).sum(axis=1)
    result = {"nmse_db": float(10 * np.log10(errors.sum() / energy.sum()))}
    if bootstrap:
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(errors), size=(bootstrap, len(errors)))
        resampled = 10 * np.log10(errors[picks].sum(axis=1) / energy[picks].sum(axis=1))
        result["se_db"] = float(resampled.std(ddof=1))
    return result


def classical(study: Study, key: str, log) -> dict[str, Any]:
    """The untrained network (ISTA to convergence, or ISTA-K) on the λ grid; the validation best."""
    grid = {}
    for lam in study.setting.lam_grid:
        grid[lam] = nmse_db(squared_errors(study.build(key, lam), study.val_y, study.val_x), study.val_x)["nmse_db"]
    best = min(grid, key=grid.get)
    model = study.build(key, best)
    test = nmse_db(squared_errors(model, study.test_y, study.test_x), study.test_x, bootstrap=200)
    log(f"{key}: classical start λ {best:g} (validation {grid[best]:.2f} dB), test {test['nmse_db']:.2f} dB")
    return {"lam_grid": list(grid), "val_nmse_db": list(grid.values()), "best_lam": best, "test": test}


def train(study: Study, key: str, lam: float, log) -> tuple[torch.nn.Module, dict[str, Any]]:
    setting = study.setting
    model = study.build(key, lam)
    config = Config(
        steps=setting.steps,
        batch=setting.batch,
        lr=setting.lr,
        val_size=setting.val_size,
        val_every=max(1, setting.steps // 5),
        checkpoint_every=10**9,
    )
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:  # count the forward passes that hit the cap
        warnings.simplefilter("always", RuntimeWarning)
        result = fit(model, study.binding, config, progress=False)
    seconds = time.perf_counter() - started
    record = {
        "steps": setting.steps,
        "train_seconds": round(seconds, 2),
        "ms_per_step": round(1e3 * seconds / setting.steps, 2),
        "val_nmse_db": result.nmse_db[-1],
        "learned": {name: float(value.detach()) for name, value in model.named_parameters()},
        "cap_warnings": sum("cap" in str(w.message) for w in caught),
    }
    log(f"{key}: {setting.steps} steps in {seconds:.1f} s, validation {record['val_nmse_db']:.2f} dB")
    return model, record


def inference(model: torch.nn.Module, y: torch.Tensor, repeats: int = 3) -> dict[str, Any]:
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            started = time.perf_counter()
            model(y=y)
            times.append(time.perf_counter() - started)
    result = {"seconds": round(statistics.median(times), 4), "samples": len(y)}
    if getattr(model, "FIXED_POINT", False):
        result |= {"iterations": model.last_iterations, "residual": model.last_residual}
    return result


def peak_memory(study: Study) -> dict[str, Any]:
    """One training step's peak, each network in a fresh child of benchmarks/bench_memory.py."""
    spec = importlib.util.spec_from_file_location("bench_memory", ROOT / "benchmarks" / "bench_memory.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    setting = study.setting
    sizes = {"m": setting.m, "n": setting.n, "batch": setting.batch, "device": "cpu", "checkpoint": False}
    runs = {
        "fixed_point": bench.run_child({"model": "ista_fixed_point", "layers": setting.iterations, **sizes}),
        "unrolled": bench.run_child({"model": "ista_tied", "layers": setting.layers, **sizes}),
    }
    result = {key: {"peak_mib": round(run["peak_bytes"] / 2**20, 2)} for key, run in runs.items()}
    result["fixed_point"]["iterations_each_way"] = runs["fixed_point"]["iterations"]
    result["method"] = runs["unrolled"]["method"] + " (benchmarks/bench_memory.py)"
    return result


def run(options: argparse.Namespace, log=print) -> dict[str, Any]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    setting = SETTINGS["quick" if options.quick else "full"]
    study = Study(setting)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "setting": dataclasses.asdict(setting),
        "networks": {
            key: {"label": label, "spec": f"{spec}: {unfold}"} for key, (label, spec, unfold) in NETWORKS.items()
        },
    }
    for key in NETWORKS:
        entry = results["networks"][key]
        entry["classical"] = classical(study, key, log)
        model, entry["training"] = train(study, key, entry["classical"]["best_lam"], log)
        entry["test"] = nmse_db(squared_errors(model, study.test_y, study.test_x), study.test_x, bootstrap=200)
        entry["inference"] = inference(model, study.test_y)
        log(
            f"{key}: test {entry['test']['nmse_db']:.2f} ± {entry['test']['se_db']:.2f} dB, "
            f"inference {entry['inference']}"
        )
    if options.memory:
        results["peak_memory"] = peak_memory(study)
        log(f"peak memory of one training step: {results['peak_memory']}")
    results["seconds"] = round(time.perf_counter() - started, 1)
    results |= {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    out = options.out or RESULTS / ("fixed_point_quick.json" if options.quick else "fixed_point.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {out}")
    return results


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few steps (the test's mode)")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory children")
    parser.add_argument("--out", type=Path, help="the results JSON (default: benchmarks/results/fixed_point*.json)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(arguments())
