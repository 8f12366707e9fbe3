"""Training a study's network: supervised by the MSE to the ground truth for a fixed number of Adam
steps, started again at a third of the rate when a run diverges (``fit_restarting``), and summed up
for the results JSON (the runs, the time, the loss over the first and the last quarter)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from torch import nn

from unfoldgen.data import Binding
from unfoldgen.training import Config, fit_restarting


def train_supervised(
    model: nn.Module, binding: Binding, study: Any, *, steps: int, lr: float, seed: int, out: Path
) -> dict[str, Any]:
    """Train ``model`` in place at the study's ``batch``, ``val_size`` and ``val_every``; the
    summary of the run."""
    config = Config(
        scheme="supervised",
        loss="mse",
        steps=steps,
        batch=study.batch,
        lr=lr,
        val_size=study.val_size,
        val_every=study.val_every,
        checkpoint_every=steps,
        seed=seed,
    )
    result = fit_restarting(model, binding, config, out=out, progress=False)
    losses = result.metrics["loss"]
    quarter = max(1, len(losses) // 4)
    final = {"lr": result.metrics["config"]["lr"], "steps": result.steps, "stopped": result.stopped}
    return {
        "seconds": result.metrics["seconds"],
        "steps": result.steps,
        "attempts": [*result.restarts, final],
        "loss_first_quarter": statistics.fmean(losses[:quarter]),
        "loss_last_quarter": statistics.fmean(losses[-quarter:]),
    }
