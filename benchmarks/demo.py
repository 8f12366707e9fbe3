"""`make demo`: classical ISTA and FISTA against a briefly trained LISTA-CP, all generated.

Compiles specs/lasso.unf in-process, trains LISTA-CP with `unfoldgen.training.fit` (Adam, step
schedule, validation split) on synthetic sparse recovery, prints the validation NMSE per layer
against ISTA and FISTA, and writes demo_out/nmse_per_layer.png (plus the run's metrics.json,
checkpoint and hyperparameters.png).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from unfoldgen.data import sparse_source  # noqa: E402
from unfoldgen.training import Config, fit, prepare, summary  # noqa: E402

M, N, P, SNR_DB, LAYERS, LAM = 50, 100, 0.1, 40.0, 16, 0.05
STEPS, BATCH, LR = 300, 64, 1e-2


def main() -> None:
    torch.set_num_threads(1)  # tiny networks: threads only add overhead
    source = sparse_source(M, N, P, SNR_DB, seed=0)
    prepared = prepare(
        ROOT / "specs" / "lasso.unf",
        "lista_cp",
        source,
        baselines=["ista", "fista"],
        layers=LAYERS,
        overrides={"lam": LAM},
    )
    out = ROOT / "demo_out"
    result = fit(
        prepared.model,
        prepared.binding,
        Config(scheme="supervised", steps=STEPS, batch=BATCH, lr=LR),
        baselines={"ISTA": prepared.baselines["ista"], "FISTA": prepared.baselines["fista"]},
        out=out,
    )
    print()
    print(summary(result.metrics))
    print(f"\nLISTA-CP: {result.steps} Adam steps of batch {BATCH} in {result.metrics['seconds']:.1f} s, lam = {LAM}")
    print(f"plot: {out / 'nmse_per_layer.png'}")


if __name__ == "__main__":
    main()
