"""``unfoldgen certify``: which classical convergence conditions a trained network's learned values
satisfy, per layer, and what that implies (the generated ``model.certify()``; see docs/language.md,
"Bounded learning and certify").

Exit codes: 0 every condition holds, 1 some condition fails (the report says which), 2 a usage
error (a bad flag, a run folder or file that cannot be read, data errors)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from unfoldgen.training import config as settings
from unfoldgen.training.config import CertifySettings, ConfigError, parse_given

EXIT_OK, EXIT_VIOLATED, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``unfoldgen certify`` options: one per field of CertifySettings."""
    settings.add_arguments(parser, CertifySettings)


def certified_model(options: CertifySettings) -> Any:
    """The model the options name: a trained run's, or the spec's unfold built on --data."""
    from unfoldgen.training.checkpoints import CHECKPOINT, MODEL_FILE, load_state
    from unfoldgen.training.loading import load_trained, parse_overrides, prepare

    if (options.run is None) == (options.spec is None):
        raise ConfigError("unfoldgen certify needs RUN (a train output folder or file) or --spec SPEC --data SOURCE")
    if options.run is not None:
        path = Path(options.run)
        if path.is_file():
            which = {MODEL_FILE: "model", CHECKPOINT: "checkpoint"}.get(path.name)
            if which is None:
                raise ConfigError(f"{path}: expected a run folder, {MODEL_FILE} or {CHECKPOINT}")
            return load_trained(path.parent, which)
        return load_trained(path)
    if options.data is None:
        raise ConfigError("--spec needs --data SOURCE: the model's data (e.g. A) fixes its Lipschitz constants")
    import torch

    from unfoldgen.data import source_from_string

    model = prepare(
        options.spec,
        options.unfold,
        source_from_string(options.data, seed=0),
        dtype=torch.float64,
        overrides=parse_overrides(options.overrides),
        require_targets=False,
    ).model
    if options.params is not None:
        model.load_state_dict(load_state(Path(options.params))["model"])
    return model


def certify(options: CertifySettings) -> dict:
    """The certificate of the model the options name, for ``options.layers`` layers if given."""
    model = certified_model(options)
    if options.layers is not None:
        model.layers = options.layers
    return model.certify()


def main(args: argparse.Namespace) -> int:
    """Run ``unfoldgen certify``; print the readable report (or JSON)."""
    from unfoldgen.data import DataError
    from unfoldgen.training.checkpoints import CheckpointError

    try:
        given = {k: v for k, v in vars(args).items() if k != "command"}
        options = CertifySettings(**parse_given(given, CertifySettings))
        certificate = certify(options)
    except (ConfigError, DataError, CheckpointError) as err:
        print(f"unfoldgen: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(certificate, indent=2) if options.json else certificate["text"])
    return EXIT_OK if all(check["satisfied"] for check in certificate["checks"]) else EXIT_VIOLATED
