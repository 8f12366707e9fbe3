"""Study 2 of issue 6: robust PCA, the four design paradigms side by side.

D = L + S + noise (L of low rank, S sparse outliers). Classical ISTA-RPCA, tuned on validation
data at K layers and run to convergence, against one trained network per paradigm, all compiled
from specs in-process:

1. ``rpca_study.unf: rpca_steps``     learned step and threshold per variable and layer
2. ``rpca_study.unf: rpca_precond``   learned objective weights and an m×m operator on the
                                      gradient, per variable and layer
3. ``rpca_paradigms.unf: rpca_corrected``  classical update + a conv2d correction per layer
4. ``rpca_study.unf: rpca_corona``    CORONA-style: conv2d blocks in place of the linear maps

It writes ``rpca.json`` (``--out``, default benchmarks/results), three plots (``--img``, default
docs/img: ``rpca_accuracy.png``, ``rpca_robustness.png``, ``rpca_thresholds.png``) and keeps
each training run's folder (checkpoints, metrics) under ``--runs`` (default runs/rpca, ignored by
git). ``--quick`` is the small variant the test suite runs (12×12, K=5, well under a minute).

    .venv/bin/python benchmarks/rpca.py              # full study (~22 min on 2 shared cores)
    .venv/bin/python benchmarks/rpca.py --quick      # smoke-sized variant
    .venv/bin/python benchmarks/rpca.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from unfoldgen.data import bind, rpca_source, slots_from_problem  # noqa: E402
from unfoldgen.training import Config, build_model, fit_restarting, load_spec  # noqa: E402

SPECS = ROOT / "specs"
TEST_STREAM = 3  # the data sources use 0 (fixed), 1 (training) and 2 (validation)


# ---------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Network:
    key: str
    paradigm: int
    label: str
    spec: str
    unfold: str
    scheme: str
    steps: int
    lr: float
    threshold_scale: float = 1.0  # initial thresholds relative to the tuned classical ones


@dataclass(frozen=True)
class Study:
    mode: str
    m: int
    n: int
    rank: int
    outliers: float
    noise: float
    layers: int
    batch: int
    networks: tuple[Network, ...]
    val_size: int  # validation set of fit (early model selection) and classical tuning
    tune_size: int  # samples the K-layer classical solver is tuned on
    tune_converged_size: int  # samples the converged solver is tuned on
    test_size: int
    test_converged_size: int
    max_iterations: int  # the converged solver's cap
    tolerance: float  # relative change of L and S below which it has converged
    shifts: dict[str, tuple[float, ...]]
    robust_size: int
    robust_converged_size: int
    latency_repeats: tuple[int, int]  # (batch 1, batch 64)
    latency_batch: int = 64
    val_every: int = 50


def networks(steps: Mapping[int, int], lr: float = 2e-2) -> tuple[Network, ...]:
    """The four networks; every one trained with Adam at ``lr``, batch ``Study.batch``."""
    return (
        Network("steps", 1, "1 learned steps/thresholds", "rpca_study.unf", "rpca_steps", "supervised", steps[1], lr),
        Network(
            "operators",
            2,
            "2 learned weights + operators",
            "rpca_study.unf",
            "rpca_precond",
            "supervised",
            steps[2],
            lr,
        ),
        Network(
            "correction",
            3,
            "3 classical + conv correction",
            "rpca_paradigms.unf",
            "rpca_corrected",
            "supervised",
            steps[3],
            lr,
        ),
        # random nets: more steps, a loss on every layer, and small initial thresholds
        Network(
            "corona",
            4,
            "4 conv blocks (CORONA-style)",
            "rpca_study.unf",
            "rpca_corona",
            "deep-supervision",
            steps[4],
            lr,
            threshold_scale=0.1,
        ),
    )


FULL = Study(
    mode="full",
    m=40,
    n=40,
    rank=3,
    outliers=0.05,
    noise=0.05,
    layers=10,
    batch=32,
    networks=networks({1: 600, 2: 600, 3: 600, 4: 1000}),
    val_size=200,
    tune_size=100,
    tune_converged_size=16,
    test_size=500,
    test_converged_size=100,
    max_iterations=2000,
    tolerance=1e-5,
    shifts={"rank": (1, 2, 4, 6, 8), "outliers": (0.02, 0.1, 0.15, 0.2), "noise": (0.0, 0.02, 0.1, 0.2)},
    robust_size=200,
    robust_converged_size=50,
    latency_repeats=(50, 7),
)

QUICK = Study(
    mode="quick",
    m=12,
    n=12,
    rank=2,
    outliers=0.1,
    noise=0.05,
    layers=5,
    batch=16,
    networks=networks({1: 40, 2: 40, 3: 40, 4: 150}),
    val_size=64,
    tune_size=32,
    tune_converged_size=8,
    test_size=64,
    test_converged_size=16,
    max_iterations=500,
    tolerance=1e-4,
    shifts={"rank": (4,), "outliers": (0.2,), "noise": (0.15,)},
    robust_size=32,
    robust_converged_size=8,
    latency_repeats=(3, 2),
    latency_batch=16,
    val_every=20,
)


# ---------------------------------------------------------------------- data and metrics


def draw(study: Study, seed: int, count: int, **shift: float) -> dict[str, np.ndarray]:
    """``count`` test samples (a stream disjoint from training and validation), possibly shifted."""
    settings = {"rank": study.rank, "outliers": study.outliers, "noise": study.noise} | shift
    source = rpca_source(study.m, study.n, int(settings["rank"]), settings["outliers"], settings["noise"], seed=seed)
    return source.draw(count, (seed, TEST_STREAM))


def as_tensors(arrays: Mapping[str, np.ndarray], device: torch.device) -> dict[str, Tensor]:
    return {k: torch.as_tensor(v, dtype=torch.float32, device=device) for k, v in arrays.items()}


def nmse(estimate: Tensor, truth: Tensor) -> float:
    """Σ‖x̂ − x‖² / Σ‖x‖² over the batch (linear, not dB)."""
    return float(((estimate - truth) ** 2).sum().cpu() / (truth**2).sum().cpu())


def db(ratio: float) -> float:
    return float(10 * math.log10(ratio)) if ratio > 0 and math.isfinite(ratio) else float("nan")


def scores(L: Tensor, S: Tensor, data: Mapping[str, Tensor]) -> dict[str, float]:
    """NMSE (dB) of L, of S, and of (L, S) together."""
    eL = float(((L - data["L"]) ** 2).sum().cpu())
    eS = float(((S - data["S"]) ** 2).sum().cpu())
    tL, tS = float((data["L"] ** 2).sum().cpu()), float((data["S"] ** 2).sum().cpu())
    return {"L": db(eL / tL), "S": db(eS / tS), "joint": db((eL + eS) / (tL + tS))}


# ---------------------------------------------------------------------- models


class Specs:
    """Each spec compiled once, in-process; models built from it as needed."""

    def __init__(self, study: Study, seed: int, device: torch.device) -> None:
        self.study, self.seed, self.device = study, seed, device
        self.source = rpca_source(study.m, study.n, study.rank, study.outliers, study.noise, seed=seed)
        self.loaded: dict[str, Any] = {}
        self.bindings: dict[str, Any] = {}

    def spec(self, name: str) -> Any:
        if name not in self.loaded:
            loaded = load_spec(SPECS / name)
            problem = loaded.compiled.checked.unfolds[0].problem
            self.loaded[name] = loaded
            self.bindings[name] = bind(self.source, slots_from_problem(problem))
        return self.loaded[name]

    def build(self, spec: str, unfold: str, overrides: Mapping[str, Any], layers: int | None = None) -> nn.Module:
        loaded = self.spec(spec)
        return build_model(
            loaded,
            unfold,
            self.bindings[spec],
            layers=layers or self.study.layers,
            overrides=dict(overrides),
            seed=self.seed,
            device=self.device,
        )

    def classical(self, mu: float, lam1: float, lam2: float, layers: int | None = None) -> nn.Module:
        return self.build("rpca.unf", "rpca_ista", {"mu": mu, "lam1": lam1, "lam2": lam2}, layers)


@torch.no_grad()
def per_layer(model: nn.Module, data: Mapping[str, Tensor], chunk: int = 100) -> list[dict[str, float]]:
    """Scores after every layer, the batch processed in chunks."""
    count = len(data["D"])
    errors = None
    for start in range(0, count, chunk):
        part = slice(start, start + chunk)
        iterates = model(D=data["D"][part], return_iterates=True)
        rows = [
            (float(((L - data["L"][part]) ** 2).sum().cpu()), float(((S - data["S"][part]) ** 2).sum().cpu()))
            for L, S in iterates
        ]
        errors = rows if errors is None else [(a + c, b + d) for (a, b), (c, d) in zip(errors, rows, strict=True)]
    tL, tS = float((data["L"] ** 2).sum().cpu()), float((data["S"] ** 2).sum().cpu())
    return [{"L": db(eL / tL), "S": db(eS / tS), "joint": db((eL + eS) / (tL + tS))} for eL, eS in errors]


@torch.no_grad()
def converge(model: nn.Module, D: Tensor, max_iterations: int, tolerance: float) -> tuple[Tensor, Tensor, int, bool]:
    """Run one classical layer (``model.layer(0, ...)``) until the relative change of L and S of
    every sample is below ``tolerance``, or ``max_iterations``."""
    inputs = model.prepare_inputs(D=D)
    state = model.initial_state(inputs)
    tiny = torch.finfo(D.dtype).tiny
    iterations = 0
    done = False
    while iterations < max_iterations and not done:
        new = model.layer(0, state, inputs)
        iterations += 1
        change = max(
            float(((new[v] - state[v]).flatten(1).norm(dim=1) / new[v].flatten(1).norm(dim=1).clamp_min(tiny)).max())
            for v in ("L", "S")
        )
        state = new
        done = change < tolerance
    L, S = model.outputs(state)
    return L, S, iterations, done


def converged_scores(
    specs: Specs, params: Mapping[str, float], data: Mapping[str, Tensor], study: Study
) -> dict[str, Any]:
    model = specs.classical(params["mu"], params["lam1"], params["lam2"], layers=1)
    L, S, iterations, done = converge(model, data["D"], study.max_iterations, study.tolerance)
    return scores(L, S, data) | {"iterations": iterations, "converged": done, "samples": len(data["D"])}


# ---------------------------------------------------------------------- tuning the classical solver


def pattern_search(
    start: Mapping[str, float],
    score: Callable[[dict[str, float]], float],
    bounds: Mapping[str, tuple[float, float]],
    factors: Sequence[float] = (2.0, math.sqrt(2.0), 2**0.25),
) -> tuple[dict[str, float], float, int]:
    """Coordinate search on a log scale: multiply or divide one parameter at a time by the
    factor while the score (lower is better) improves, then refine the factor."""
    best = dict(start)
    best_score = score(best)
    evaluations = 1
    for factor in factors:
        improved = True
        while improved:
            improved = False
            for name in best:
                for direction in (factor, 1 / factor):
                    low, high = bounds[name]
                    value = min(max(best[name] * direction, low), high)
                    if value == best[name]:
                        continue
                    trial = best | {name: value}
                    result = score(trial)
                    evaluations += 1
                    if result < best_score:
                        best, best_score, improved = trial, result, True
                        break
    return best, best_score, evaluations


def tune_classical(specs: Specs, study: Study) -> dict[str, Any]:
    """lam1, lam2 and mu of ISTA-RPCA at K layers, and lam1, lam2 at convergence (mu = 1/2 =
    1/Lipschitz), each minimising NMSE(L) + NMSE(S) on validation samples."""
    val = as_tensors(specs.source.validation(max(study.tune_size, study.tune_converged_size)), specs.device)
    tune = {k: v[: study.tune_size] for k, v in val.items()}
    tune_conv = {k: v[: study.tune_converged_size] for k, v in val.items()}

    def at_k(p: dict[str, float]) -> float:
        with torch.no_grad():
            L, S = specs.classical(p["mu"], p["lam1"], p["lam2"])(D=tune["D"])
        return nmse(L, tune["L"]) + nmse(S, tune["S"])

    def at_convergence(p: dict[str, float]) -> float:
        model = specs.classical(0.5, p["lam1"], p["lam2"], layers=1)
        L, S, _, _ = converge(model, tune_conv["D"], study.max_iterations, study.tolerance)
        return nmse(L, tune_conv["L"]) + nmse(S, tune_conv["S"])

    started = time.perf_counter()
    bounds = {"mu": (0.1, 1.0), "lam1": (1e-3, 1e3), "lam2": (1e-4, 1e2)}
    k_params, k_score, k_evals = pattern_search({"mu": 0.5, "lam1": 1.0, "lam2": 0.2}, at_k, bounds)
    k_seconds = time.perf_counter() - started
    started = time.perf_counter()
    c_params, c_score, c_evals = pattern_search(
        {"lam1": 0.5, "lam2": 0.1}, at_convergence, bounds, factors=(2.0, math.sqrt(2.0))
    )
    c_seconds = time.perf_counter() - started
    return {
        "layers": {
            "params": k_params,
            "validation_nmse_sum": k_score,
            "evaluations": k_evals,
            "samples": len(tune["D"]),
            "seconds": k_seconds,
        },
        "converged": {
            "params": {"mu": 0.5} | c_params,
            "validation_nmse_sum": c_score,
            "evaluations": c_evals,
            "samples": len(tune_conv["D"]),
            "seconds": c_seconds,
        },
    }


# ---------------------------------------------------------------------- training


def overrides_for(network: Network, classical: Mapping[str, float]) -> dict[str, float]:
    """Start every network from the tuned K-layer classical solver (paradigm 4's nets are random;
    its thresholds start at ``threshold_scale`` times the classical ones, since thresholds that
    large would zero the small outputs of the random convolutions and leave no gradient)."""
    mu, lam1, lam2 = classical["mu"], classical["lam1"], classical["lam2"]
    scale = network.threshold_scale
    return {
        "rpca_steps": {"muL": mu, "muS": mu, "tL": mu * lam1, "tS": mu * lam2},
        "rpca_precond": {"mu": mu, "lam1": lam1, "lam2": lam2},
        "rpca_corrected": {"mu": mu, "lam1": lam1, "lam2": lam2},
        "rpca_corona": {"tL": scale * mu * lam1, "tS": scale * mu * lam2},
    }[network.unfold]


def train(specs: Specs, network: Network, classical: Mapping[str, float], study: Study, runs: Path) -> dict[str, Any]:
    """Build from the spec and train with ``unfoldgen.training.fit``; on a NaN (SVD gradients are
    undefined at repeated singular values) start again at a third of the learning rate
    (``fit_restarting``)."""
    overrides = overrides_for(network, classical)
    model = specs.build(network.spec, network.unfold, overrides)
    result = fit_restarting(
        model,
        specs.bindings[network.spec],
        Config(
            scheme=network.scheme,
            steps=network.steps,
            batch=study.batch,
            lr=network.lr,
            val_size=study.val_size,
            val_every=study.val_every,
            seed=specs.seed,
        ),
        out=runs / network.unfold,
        progress=False,
    )
    return {
        "model": model,
        "seconds": result.metrics["seconds"],
        "attempts": [
            *result.restarts,
            {"lr": result.metrics["config"]["lr"], "steps": result.steps, "stopped": result.stopped},
        ],
        "validation_nmse_db": result.nmse_db,
        "best_step": _best_step(result.history),
    }


def _best_step(history: Sequence[Mapping[str, Any]]) -> int | None:
    scored = [h for h in history if "val_nmse_db" in h]
    return min(scored, key=lambda h: h["val_nmse_db"])["step"] if scored else None


def learned_count(model: nn.Module) -> int:
    return int(sum(model.parameter_counts().values()))


# ---------------------------------------------------------------------- latency


@torch.no_grad()
def latencies(
    runners: Mapping[str, Callable[[Tensor], Any]], data: Mapping[str, Tensor], study: Study
) -> dict[str, dict[str, float]]:
    """Per-sample latency (µs) of every runner at batch 1 and at the larger batch: medians over
    rounds in which every runner is called once in turn (interleaved, so that the load of a
    shared machine drifting during the measurement falls on all of them alike), after a warm-up."""
    device = data["D"].device

    def timed(run: Callable[[Tensor], Any], D: Tensor) -> float:
        started = time.perf_counter()
        run(D)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    B = study.latency_batch
    result: dict[str, dict[str, float]] = {key: {} for key in runners}
    for label, D, rounds in (
        ("batch_1_us", data["D"][:1], study.latency_repeats[0]),
        (f"batch_{B}_us_per_sample", data["D"][:B], study.latency_repeats[1]),
    ):
        for run in runners.values():
            timed(run, D)
        times: dict[str, list[float]] = {key: [] for key in runners}
        for _ in range(rounds):
            for key, run in runners.items():
                times[key].append(timed(run, D))
        for key, values in times.items():
            result[key][label] = statistics.median(values) * 1e6 / len(D)
    return result


# ---------------------------------------------------------------------- learned values


def scalar_per_layer(model: nn.Module, name: str) -> list[float]:
    """A scalar per layer as floats: ``value[k]`` whether it is a (K,) parameter, a ParameterList
    of K scalars, or (not learned, or shared) one scalar for every layer."""
    value = getattr(model, name)
    if isinstance(value, Tensor) and value.dim() == 0:
        return [float(value.detach().cpu())] * model.layers
    return [float(value[k].detach().cpu()) for k in range(model.layers)]


def interpret(model: nn.Module, unfold: str) -> dict[str, Any]:
    """Steps and thresholds per layer in the classical solver's terms: the step on the gradient
    and the threshold of each prox. For the learned operators P: the effective scalar step
    mu·tr(P)/m, and how much of P is not a multiple of the identity."""
    if unfold == "rpca_steps":
        return {
            "step_L": scalar_per_layer(model, "muL"),
            "step_S": scalar_per_layer(model, "muS"),
            "threshold_L": scalar_per_layer(model, "tL"),
            "threshold_S": scalar_per_layer(model, "tS"),
        }
    if unfold in ("rpca_precond", "rpca_corrected"):
        mus = scalar_per_layer(model, "mu")
        lam1, lam2 = scalar_per_layer(model, "lam1"), scalar_per_layer(model, "lam2")
        out: dict[str, Any] = {
            "threshold_L": [a * b for a, b in zip(mus, lam1, strict=True)],
            "threshold_S": [a * b for a, b in zip(mus, lam2, strict=True)],
        }
        if unfold == "rpca_corrected":
            out["step_L"] = out["step_S"] = mus
            return out
        for variable, name in (("L", "PL"), ("S", "PS")):
            steps, off = [], []
            for k in range(model.layers):
                P = getattr(model, name)[k].detach().double().cpu()
                scale = float(torch.trace(P)) / P.shape[0]
                steps.append(mus[k] * scale)
                off.append(float((P - scale * torch.eye(P.shape[0], dtype=P.dtype)).norm() / P.norm()))
            out[f"step_{variable}"] = steps
            out[f"operator_{variable}_off_identity"] = off
        return out
    if unfold == "rpca_corona":
        return {"threshold_L": scalar_per_layer(model, "tL"), "threshold_S": scalar_per_layer(model, "tS")}
    return {}


# ---------------------------------------------------------------------- the study


@dataclass
class Row:
    key: str
    paradigm: int | None  # None: a classical solver
    label: str
    spec: str
    parameters: int
    parameter_counts: dict[str, int]
    test: dict[str, float]
    per_layer: list[dict[str, float]] = field(default_factory=list)
    latency: dict[str, float] = field(default_factory=dict)
    training_seconds: float | None = None
    steps: int | None = None
    scheme: str | None = None
    lr: float | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)


def run_study(study: Study, seed: int, device: torch.device, runs: Path, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    specs = Specs(study, seed, device)
    for name in ("rpca.unf", "rpca_study.unf", "rpca_paradigms.unf"):
        specs.spec(name)
    log(f"compiled the specs in {time.perf_counter() - started:.1f} s")

    tuned = tune_classical(specs, study)
    k_params, c_params = tuned["layers"]["params"], tuned["converged"]["params"]
    log(
        f"classical K={study.layers}: mu={k_params['mu']:.3g} lam1={k_params['lam1']:.3g} lam2={k_params['lam2']:.3g} "
        f"({tuned['layers']['seconds']:.0f} s); converged: lam1={c_params['lam1']:.3g} lam2={c_params['lam2']:.3g} "
        f"({tuned['converged']['seconds']:.0f} s)"
    )
    test = as_tensors(draw(study, seed, study.test_size), device)
    test_conv = {k: v[: study.test_converged_size] for k, v in test.items()}

    rows: list[Row] = []
    classical = specs.classical(k_params["mu"], k_params["lam1"], k_params["lam2"])
    curve = per_layer(classical, test)
    rows.append(
        Row(
            f"classical_{study.layers}",
            None,
            f"ISTA-RPCA, K={study.layers} (tuned)",
            "rpca.unf: rpca_ista",
            0,
            {},
            curve[-1],
            curve,
        )
    )
    conv_model = specs.classical(c_params["mu"], c_params["lam1"], c_params["lam2"], layers=1)
    conv = converged_scores(specs, c_params, test_conv, study)

    rows.append(
        Row(
            "classical_converged",
            None,
            f"ISTA-RPCA to convergence ({conv['iterations']} it.)",
            "rpca.unf: rpca_ista",
            0,
            {},
            {k: conv[k] for k in ("L", "S", "joint")},
        )
    )
    log(f"classical: K={study.layers} {curve[-1]['joint']:.2f} dB, converged {conv['joint']:.2f} dB")

    models: dict[str, nn.Module] = {}
    for network in study.networks:
        trained = train(specs, network, k_params, study, runs)
        model = trained["model"]
        models[network.key] = model
        curve = per_layer(model, test)
        rows.append(
            Row(
                network.key,
                network.paradigm,
                network.label,
                f"{network.spec}: {network.unfold}",
                learned_count(model),
                {str(k): int(v) for k, v in model.parameter_counts().items()},
                curve[-1],
                curve,
                {},
                trained["seconds"],
                network.steps,
                network.scheme,
                network.lr,
                trained["attempts"],
            )
        )
        log(
            f"{network.unfold}: {curve[-1]['joint']:.2f} dB after {network.steps} steps "
            f"({trained['seconds']:.0f} s, {learned_count(model)} learned)"
        )

    runners: dict[str, Callable[[Tensor], Any]] = {
        rows[0].key: lambda D: classical(D=D),
        rows[1].key: lambda D: converge(conv_model, D, study.max_iterations, study.tolerance),
    }
    runners |= {key: (lambda D, model=model: model(D=D)) for key, model in models.items()}
    timings = latencies(runners, test, study)
    for row in rows:
        row.latency = timings[row.key]
    log("latency measured")
    robustness = robustness_study(specs, study, seed, c_params, classical, models, test)
    learned = {n.key: interpret(models[n.key], n.unfold) for n in study.networks}
    return {
        "study": "robust PCA, four paradigms (issue 6, study 2)",
        "mode": study.mode,
        "seed": seed,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "torch": torch.__version__,
        "machine": platform.machine(),
        "config": _config_json(study),
        "classical": tuned,
        "converged_test": conv,
        "rows": [asdict(r) for r in rows],
        "robustness": robustness,
        "learned": learned,
        "seconds_total": time.perf_counter() - started,
    }


def _config_json(study: Study) -> dict[str, Any]:
    config = asdict(study)
    config["networks"] = [asdict(n) for n in study.networks]
    return config


def robustness_study(
    specs: Specs,
    study: Study,
    seed: int,
    c_params: Mapping[str, float],
    classical: nn.Module,
    models: Mapping[str, nn.Module],
    test: Mapping[str, Tensor],
) -> dict[str, Any]:
    """Every trained network, and the classical solvers tuned on the training distribution,
    on test data with one of rank, outlier fraction and noise level changed."""
    nominal = {"rank": study.rank, "outliers": study.outliers, "noise": study.noise}
    results: dict[str, Any] = {"nominal": nominal, "axes": {}}
    for axis, values in study.shifts.items():
        points = sorted(set(values) | {nominal[axis]})
        entries = []
        for value in points:
            if value == nominal[axis]:
                data = {k: v[: study.robust_size] for k, v in test.items()}
            else:
                data = as_tensors(draw(study, seed, study.robust_size, **{axis: value}), specs.device)
            entry: dict[str, Any] = {"value": value, "samples": len(data["D"])}
            entry["classical"] = per_layer(classical, data)[-1]
            conv_data = {k: v[: study.robust_converged_size] for k, v in data.items()}
            entry["converged"] = converged_scores(specs, c_params, conv_data, study)
            for key, model in models.items():
                entry[key] = per_layer(model, data)[-1]
            entries.append(entry)
        results["axes"][axis] = entries
    return results


# ---------------------------------------------------------------------- report


def table(results: Mapping[str, Any]) -> str:
    """The markdown table of the study."""
    rows = results["rows"]
    B = results["config"]["latency_batch"]
    lines = [
        f"| network | spec | learned | NMSE(L) dB | NMSE(S) dB | latency B=1 | latency B={B} (per sample) | training |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lat = row["latency"]
        training = "—" if row["training_seconds"] is None else f"{row['training_seconds'] / 60:.1f} min"
        lines.append(
            f"| {row['label']} | `{row['spec']}` | {row['parameters']:,} | {row['test']['L']:.2f} | "
            f"{row['test']['S']:.2f} | {_time(lat['batch_1_us'])} | {_time(lat[f'batch_{B}_us_per_sample'])} | "
            f"{training} |"
        )
    return "\n".join(lines)


def robustness_table(results: Mapping[str, Any]) -> str:
    keys = ["classical", "converged"] + [r["key"] for r in results["rows"] if r["training_seconds"] is not None]
    labels = {"classical": f"ISTA K={results['config']['layers']}", "converged": "ISTA conv."} | {
        r["key"]: f"P{r['paradigm']}" for r in results["rows"] if r["training_seconds"] is not None
    }
    lines = ["| shift | " + " | ".join(labels[k] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    nominal = results["robustness"]["nominal"]
    for axis, entries in results["robustness"]["axes"].items():
        for entry in entries:
            mark = " (train)" if entry["value"] == nominal[axis] else ""
            cells = " | ".join(f"{entry[k]['L']:.1f}" for k in keys)
            lines.append(f"| {axis} = {entry['value']:g}{mark} | {cells} |")
    return "\n".join(lines)


def _time(us: float) -> str:
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    if us >= 1e3:
        return f"{us / 1e3:.2f} ms"
    return f"{us:.0f} µs"


COLORS = {
    "classical": "gray",
    "converged": "black",
    "steps": "tab:blue",
    "operators": "tab:orange",
    "correction": "tab:green",
    "corona": "tab:red",
}


def plots(results: Mapping[str, Any], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    rows = {r["key"]: r for r in results["rows"]}
    K = results["config"]["layers"]
    trained = [r for r in results["rows"] if r["training_seconds"] is not None]

    # accuracy: NMSE per layer, and learned parameters against NMSE(L) at layer K
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    classical = rows[f"classical_{K}"]
    layers = range(1, K + 1)
    left.plot(layers, [p["joint"] for p in classical["per_layer"]], "--o", ms=3, color="gray", label=classical["label"])
    left.axhline(
        rows["classical_converged"]["test"]["joint"], color="black", linestyle=":", label="ISTA-RPCA converged"
    )
    for row in trained:
        left.plot(
            layers, [p["joint"] for p in row["per_layer"]], "-o", ms=3, color=COLORS[row["key"]], label=row["label"]
        )
    left.set_xlabel("layer")
    left.set_ylabel("test NMSE of (L, S) (dB)")
    left.set_title("NMSE per layer")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    for row in trained:
        right.scatter(row["parameters"], row["test"]["L"], color=COLORS[row["key"]], s=40, label=row["label"])
        right.annotate(
            f"P{row['paradigm']}",
            (row["parameters"], row["test"]["L"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    right.axhline(classical["test"]["L"], color="gray", linestyle="--", label=classical["label"])
    right.axhline(rows["classical_converged"]["test"]["L"], color="black", linestyle=":", label="converged")
    right.set_xscale("log")
    right.set_xlabel("learned parameters")
    right.set_ylabel(f"test NMSE(L) at layer {K} (dB)")
    right.set_title("parameters vs accuracy")
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    figure.tight_layout()
    path = folder / "rpca_accuracy.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    written.append(path)

    # robustness: NMSE(L) at layer K along each shifted axis
    axes_data = results["robustness"]["axes"]
    figure, axes_list = plt.subplots(1, len(axes_data), figsize=(4.2 * len(axes_data), 3.8), squeeze=False)
    nominal = results["robustness"]["nominal"]
    names = {"rank": "rank of L", "outliers": "outlier fraction", "noise": "noise level (std)"}
    for axes, (axis, entries) in zip(axes_list[0], axes_data.items(), strict=True):
        xs = [e["value"] for e in entries]
        axes.plot(xs, [e["classical"]["L"] for e in entries], "--o", ms=3, color="gray", label=f"ISTA K={K}")
        axes.plot(xs, [e["converged"]["L"] for e in entries], ":s", ms=3, color="black", label="ISTA converged")
        for row in trained:
            axes.plot(
                xs, [e[row["key"]]["L"] for e in entries], "-o", ms=3, color=COLORS[row["key"]], label=row["label"]
            )
        axes.axvline(nominal[axis], color="gray", alpha=0.4, linewidth=4)
        axes.set_xlabel(names.get(axis, axis) + " (bar: training)")
        axes.set_ylabel(f"test NMSE(L) at layer {K} (dB)")
        axes.grid(alpha=0.3)
    axes_list[0][0].legend(fontsize=7)
    figure.tight_layout()
    path = folder / "rpca_robustness.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    written.append(path)

    # learned steps and thresholds per layer against the classical values
    learned = results["learned"]
    k_params = results["classical"]["layers"]["params"]
    c_params = results["classical"]["converged"]["params"]
    reference = {
        "step_L": (k_params["mu"], c_params["mu"]),
        "step_S": (k_params["mu"], c_params["mu"]),
        "threshold_L": (k_params["mu"] * k_params["lam1"], c_params["mu"] * c_params["lam1"]),
        "threshold_S": (k_params["mu"] * k_params["lam2"], c_params["mu"] * c_params["lam2"]),
    }
    titles = {
        "step_L": "step on ∇L (μ, or μ·tr(P_L)/m)",
        "step_S": "step on ∇S (μ, or μ·tr(P_S)/m)",
        "threshold_L": "SVT threshold of L (μ·λ₁)",
        "threshold_S": "soft threshold of S (μ·λ₂)",
    }
    shown = [k for k in ("steps", "operators", "correction") if k in learned]
    figure, axes_list = plt.subplots(1, 4, figsize=(16, 3.8), squeeze=False)
    for axes, quantity in zip(axes_list[0], titles, strict=True):
        for key in shown:
            if quantity in learned[key]:
                axes.plot(layers, learned[key][quantity], "-o", ms=3, color=COLORS[key], label=rows[key]["label"])
        axes.axhline(reference[quantity][0], color="gray", linestyle="--", label=f"classical, tuned for K={K}")
        axes.axhline(reference[quantity][1], color="black", linestyle=":", label="classical, tuned at convergence")
        axes.set_title(titles[quantity], fontsize=9)
        axes.set_xlabel("layer")
        axes.grid(alpha=0.3)
        if quantity.startswith("threshold"):
            axes.set_yscale("log")
    handles, labels = axes_list[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    path = folder / "rpca_thresholds.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    written.append(path)
    return written


# ---------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (12x12, K=5), under a minute")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="folder for the JSON (benchmarks/results; --quick: build/rpca_quick)")
    parser.add_argument("--img", type=Path, help="folder for the PNG plots (docs/img; --quick: none unless given)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "rpca", help="training runs (checkpoints)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    torch.set_num_threads(args.threads)
    study = QUICK if args.quick else FULL
    device = torch.device(args.device)
    runs = args.runs / study.mode

    def log(text: str) -> None:
        if not args.quiet:
            print(text, flush=True)

    results = run_study(study, args.seed, device, runs, log)
    out = args.out or (ROOT / "benchmarks" / "results" if study.mode == "full" else ROOT / "build" / "rpca_quick")
    out.mkdir(parents=True, exist_ok=True)
    name = "rpca.json" if study.mode == "full" else f"rpca_{study.mode}.json"
    (out / name).write_text(json.dumps(results, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    img = args.img or (ROOT / "docs" / "img" if study.mode == "full" else None)
    written = plots(results, img) if img is not None else []
    log("")
    log(table(results))
    log("")
    log("test NMSE(L) (dB) at layer K under distribution shift:")
    log(robustness_table(results))
    log(f"\n{out / name}; plots: {', '.join(str(p) for p in written) or 'none (quick run)'}")
    log(f"total {results['seconds_total'] / 60:.1f} min")
    return results


if __name__ == "__main__":
    main()
