"""Train generated unfolded networks: ``fit(model, data, Config(...))`` and ``unfoldgen train``.

Schemes
- ``supervised``: end to end, NMSE (or MSE) of the last layer's outputs to the ground truth;
- ``unsupervised``: the problem's objective at the last layer (``model.objective``), no ground truth;
- ``deep-supervision``: a weighted sum of every layer's supervised loss (weights configurable);
- ``layerwise``: greedy, as LISTA-CPSS / ALISTA train: for k = 1..K, train layer k alone with
  ``model.layers = k`` (earlier layers frozen), then fine-tune layers 1..k at a lower rate.

The loss is a mean over samples (NMSE normalises by the validation set's mean energy, a constant),
so data-parallel training over R ranks with R shards of a global batch takes the same steps as one
process with the whole batch.

The output folder holds ``checkpoint.pt`` (resume state), ``model.pt`` (trained parameters),
``metrics.json`` (losses, validation NMSE per layer against the classical solver and baselines,
learned hyperparameters per layer), ``nmse_per_layer.png``, ``hyperparameters.png`` and, for
``unfoldgen train``, the generated package the model was built from.

Modules: ``config`` (every setting, once), ``loading`` (specs and models), ``task`` (losses and
validation metrics), ``run`` (``fit``), ``checkpoints`` (what a run writes and reads back),
``report`` (tables, plots, progress) and ``command`` (``unfoldgen train``). Names are imported
from here on first use, so the command line can read the settings without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "Config": "config",
    "ConfigError": "config",
    "LOSSES": "config",
    "SCHEMES": "config",
    "CHECKPOINT": "checkpoints",
    "METRICS": "checkpoints",
    "MODEL_FILE": "checkpoints",
    "CheckpointError": "checkpoints",
    "OutputError": "checkpoints",
    "atomic_save": "checkpoints",
    "load_checkpoint": "checkpoints",
    "LoadedSpec": "loading",
    "ModelInfo": "loading",
    "Prepared": "loading",
    "build_model": "loading",
    "describe": "loading",
    "load_spec": "loading",
    "load_trained": "loading",
    "prepare": "loading",
    "FitResult": "run",
    "TrainingDivergedError": "run",
    "fit": "run",
    "fit_restarting": "run",
    "plan": "run",
    "learned_values": "report",
    "summary": "report",
    "write_plots": "report",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'unfoldgen.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"unfoldgen.training.{_HOMES[name]}"), name)
