"""Convergence-safe learning: learned-step ISTA and ALISTA trained with and without bounds, run past
their trained depth, and what ``certify`` says about each.

Setting: Study 1's (``benchmarks/sparse_recovery.py``, whose data, training and evaluation helpers
this imports): m=250, n=500, Bernoulli(0.1)-Gaussian codes, A with unit-norm columns, noiseless,
K=16 layers, float32, one thread, batch 64, a held-out test set of 1000 samples. Four networks,
each trained end to end for the same time budget (2.5 min by default) from classical ISTA-K at its
best λ:

- learned-step ISTA (``lasso.unf: ista``: raw per-layer μ_k and λ_k) and its bounded twin
  (``safe.unf: ista_safe``: μ_k ∈ (0, 2/L), λ_k ≥ 0);
- ALISTA with the analytic weight (``alista.unf: alista``: raw γ_k, θ_k) and its bounded twin
  (``safe.unf: alista_safe``: γ_k ∈ (0, 2/L), θ_k ≥ 0).

Each trained network then runs for K, 2K, 4K and 10K layers (layers past K repeat layer K's values)
and the test NMSE at each depth is reported with ``model.certify()``'s verdict. Classical ISTA at its
best λ, run to the same depths, is the reference.

    .venv/bin/python benchmarks/safe_learning.py            # full run, ≈ 12 min on one thread
    .venv/bin/python benchmarks/safe_learning.py --quick    # m=40, n=80, K=8, fixed steps: ≈ a minute

Writes ``benchmarks/results/safe_learning.json`` (``safe_learning_quick.json`` with --quick).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import sparse_recovery as study1  # noqa: E402

from unfoldgen.training import load_spec  # noqa: E402

DEPTH_FACTORS = (1, 2, 4, 10)
NETWORKS = (
    study1.Network("ista_learned", "learned-step ISTA", "1", "lasso.unf", "ista", 1e-2, 2.5, 150, 1),
    study1.Network("ista_bounded", "learned-step ISTA, bounded", "1", "safe.unf", "ista_safe", 1e-2, 2.5, 150, 1),
    study1.Network("alista", "ALISTA", "1+2", "alista.unf", "alista", 1e-2, 2.5, 150, 1, (("W", "analytic"),)),
    study1.Network(
        "alista_bounded", "ALISTA, bounded", "1+2", "safe.unf", "alista_safe", 1e-2, 2.5, 150, 1, (("W", "analytic"),)
    ),
)


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (m=40, n=80, K=8), fixed steps")
    parser.add_argument("--minutes", type=float, default=2.5, help="training time budget per network")
    parser.add_argument(
        "--networks", default=None, help="comma-separated subset of: " + ", ".join(n.key for n in NETWORKS)
    )
    parser.add_argument(
        "--out", default=None, help="results JSON (default benchmarks/results/safe_learning[_quick].json)"
    )
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args(argv)
    options.argv = list(sys.argv[1:] if argv is None else argv)
    return options


def study1_options(options: argparse.Namespace) -> argparse.Namespace:
    """The options Study 1's training helper reads: a time budget (fixed steps with --quick), one segment."""
    return argparse.Namespace(
        quick=options.quick,
        steps={},
        budget={"*": options.minutes},
        budget_scale=1.0,
        scheme="supervised",
        segment=0,
        progress=False,
    )


def nmse_past_depth(study: Any, model: torch.nn.Module, layers: int) -> dict[str, float]:
    """Test NMSE (dB) after K, 2K, 4K and 10K layers (one run of 10K layers, iterates read off)."""
    trained = model.layers
    model.layers = DEPTH_FACTORS[-1] * layers
    try:
        errors = study1.squared_errors(model, study.test_y, study.test_x, chunk=250)
    finally:
        model.layers = trained
    with np.errstate(invalid="ignore", over="ignore"):  # a diverged network's errors overflow
        curve = study1.curve(errors, study.test_x, bootstrap=1)["nmse_db"]
    # None: diverged (the iterates overflowed to inf or NaN), kept strict-JSON
    return {
        str(factor * layers): curve[factor * layers - 1] if math.isfinite(curve[factor * layers - 1]) else None
        for factor in DEPTH_FACTORS
    }


def certificate_summary(model: torch.nn.Module, layers: int) -> dict[str, Any]:
    """What certify says, for a run of 10K layers: satisfied, the violated checks, the implications."""
    trained = model.layers
    model.layers = DEPTH_FACTORS[-1] * layers
    try:
        certificate = model.certify()
    finally:
        model.layers = trained
    return {
        "satisfied": certificate["satisfied"],
        "violated": [
            {"condition": check["condition"], "what": check["what"], "layers": check["violated_layers"]}
            for check in certificate["checks"]
            if not check["satisfied"]
        ],
        "implications": certificate["implications"],
        "text": certificate["text"],
    }


def learned_range(model: torch.nn.Module) -> dict[str, list[float]]:
    """[min, max] over the layers of every learned scalar schedule (the constrained values)."""
    ranges = {}
    for name in model.PARADIGMS:
        value = getattr(model, name)
        values = (value.values() if name in model.BOUNDED else torch.stack(list(value))).detach()
        ranges[name] = [float(values.min()), float(values.max())]
    return ranges


def run(options: argparse.Namespace, log=print) -> dict[str, Any]:
    torch.set_num_threads(options.threads)
    started = time.perf_counter()
    setting = study1.QUICK if options.quick else study1.FULL
    study = study1.Study(setting, None, 0, torch.device("cpu"))
    study.specs["safe.unf"] = load_spec(study1.SPECS / "safe.unf")
    classical = study1.tune_classical(study, log)
    lam = classical["ista"]["best_lam"]
    reference = study.build("lasso.unf", "ista", setting.layers, {"lam": lam})
    results: dict[str, Any] = {
        "study": "safe_learning",
        "mode": "quick" if options.quick else "full",
        "command": "benchmarks/safe_learning.py " + " ".join(options.argv),
        "setting": {**dataclasses.asdict(setting), "minutes_per_network": None if options.quick else options.minutes},
        "machine": {"cpu": study1.cpu_name(), "threads": options.threads, "torch": torch.__version__},
        "ista_best_lam": lam,
        "classical_ista": {
            "nmse_db": nmse_past_depth(study, reference, setting.layers),
            "certify": certificate_summary(reference, setting.layers),
        },
        "networks": {},
    }
    chosen = set(options.networks.split(",")) if options.networks else {n.key for n in NETWORKS}
    for net in (n for n in NETWORKS if n.key in chosen):
        model = study.build(net.spec, net.unfold, setting.layers, {"lam": lam, **dict(net.overrides)})
        record = study1.fit_network(study, net, 0, study1_options(options), model, log)
        depths = nmse_past_depth(study, model, setting.layers)
        certificate = certificate_summary(model, setting.layers)
        results["networks"][net.key] = {
            "label": net.label,
            "spec": f"{net.spec}: {net.unfold}",
            "steps": record["steps"],
            "train_minutes": record["train_minutes"],
            "diverged": record["diverged"],
            "nmse_db": depths,
            "learned_range": learned_range(model),
            "certify": certificate,
        }
        log(f"  {net.key}: " + ", ".join(f"{k} layers {v:.2f} dB" for k, v in depths.items()))
        log(f"  {net.key}: certify {'satisfied' if certificate['satisfied'] else 'violated'}")
    results["total_minutes"] = (time.perf_counter() - started) / 60
    out = (
        Path(options.out)
        if options.out
        else ROOT / "benchmarks" / "results" / ("safe_learning_quick.json" if options.quick else "safe_learning.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    log(markdown_table(results))
    return results


def markdown_table(results: dict[str, Any]) -> str:
    """The study table: test NMSE per depth and certify's verdict."""
    depths = list(results["classical_ista"]["nmse_db"])
    lines = [
        "| network | " + " | ".join(f"{depth} layers" for depth in depths) + " | certify |",
        "|---" * (len(depths) + 2) + "|",
    ]
    rows = [("ISTA at its best λ (classical)", results["classical_ista"])]
    rows += [(entry["label"], entry) for entry in results["networks"].values()]
    for label, entry in rows:
        verdict = (
            "all conditions hold"
            if entry["certify"]["satisfied"]
            else "; ".join(f"{v['what']} fails in {len(v['layers'])} layers" for v in entry["certify"]["violated"])
        )
        cells = " | ".join(
            "diverged" if entry["nmse_db"][depth] is None else f"{entry['nmse_db'][depth]:.2f} dB" for depth in depths
        )
        lines.append(f"| {label} | {cells} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    run(arguments(argv))


if __name__ == "__main__":
    main()
