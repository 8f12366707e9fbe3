"""``unfoldgen train``: its options come from the fields of ``Config`` and ``Launch``; it builds
the model from the spec and the data source, then runs ``fit``.

Exit codes: 0 done (or stopped early), 1 the run failed (diverged), 2 a usage error (a bad flag,
data string, data file, checkpoint or output folder), 128 + N when signal N stopped it (a
checkpoint was written first). Every error is one line.

``--nproc N`` starts ``torch.distributed.run``: it and the ranks stop with this process (Linux:
each child asks the kernel for SIGTERM when its parent dies, so even SIGKILL of this process
stops them); SIGINT/SIGTERM here are passed to the ranks, which save a checkpoint and exit.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from unfoldgen.training import config as settings
from unfoldgen.training.config import (
    Config,
    ConfigError,
    Launch,
    known,
    parse_given,
    refused_on_resume,
    resumable,
    resume_flags,
    split,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
LAUNCHER = "UNFOLDGEN_LAUNCHER"  # set for ranks started by --nproc: the folder where each writes its pid
PR_SET_PDEATHSIG = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``unfoldgen train`` options: one per field of Config and Launch."""
    settings.add_arguments(parser, Launch, Config)


def main(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run ``unfoldgen train`` with parsed ``args`` (``argv``: the command line, for --nproc)."""
    from unfoldgen.data import DataError
    from unfoldgen.training.checkpoints import CheckpointError, OutputError
    from unfoldgen.training.run import TrainingDivergedError

    try:
        launch, config, stored = _settings({k: v for k, v in vars(args).items() if k != "command"})
        if launch.nproc > 1 and "WORLD_SIZE" not in os.environ:
            return _launch(launch, argv)
        return _run(launch, config, stored)
    except (ConfigError, DataError, CheckpointError, OutputError) as err:
        print(f"unfoldgen: {err}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDivergedError as err:
        if _rank() == 0:
            print(f"unfoldgen: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training started
        print("unfoldgen: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except (FileNotFoundError, IsADirectoryError):
        raise  # a spec that is not there: the command line's own message
    except OSError as err:  # the output folder cannot be made, the disk is full ...
        where = f"{err.filename}: " if err.filename else ""
        print(f"unfoldgen: {where}{err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, (PermissionError, NotADirectoryError)) else EXIT_FAILED


def _settings(given: dict[str, Any]) -> tuple[Launch, Config, dict | None]:
    """Launch and Config from what the user gave; with --resume, from the checkpoint's record
    with the resumable settings the user gave on top (the others are refused by name)."""
    values = parse_given(given, Launch, Config)
    config_values, launch_values = split(values)
    if "resume" not in values:
        launch, config = Launch(**launch_values), Config(**config_values)
        if launch.spec is None or launch.data is None:
            raise ConfigError("unfoldgen train needs SPEC and --data SOURCE (or --resume DIR)")
        return launch, config, None
    refused = refused_on_resume(values)
    if refused:
        raise ConfigError(
            f"--resume {values['resume']}: {', '.join(refused)} cannot change when resuming (the checkpoint "
            f"fixes them); it takes {', '.join(resume_flags())}"
        )
    from unfoldgen.training.checkpoints import load_checkpoint

    folder = values["resume"]
    stored = load_checkpoint(folder)
    run = stored.get("extra", {}).get("run")
    if run is None or "launch" not in run:
        raise ConfigError(f"--resume {folder}: the checkpoint has no `unfoldgen train` record; resume it with fit()")
    launch = Launch(**{**known(Launch, run["launch"]), **launch_values, "out": folder})
    config = Config(**{**known(Config, stored["config"]), **config_values})
    return launch, config, run


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _run(launch: Launch, config: Config, stored: dict | None) -> int:
    import torch

    if LAUNCHER in os.environ:
        _die_with_parent()
        Path(os.environ[LAUNCHER], f"rank{_rank()}.pid").write_text(str(os.getpid()))
    torch.set_num_threads(launch.threads)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not torch.distributed.is_initialized():
        device = _device(launch.device, int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    else:
        device = _device(launch.device, 0)
    try:
        return _train(launch, config, stored, device)
    finally:
        if distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _device(name: str, local_rank: int) -> Any:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available; expected cpu or auto")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def _train(launch: Launch, config: Config, stored: dict | None, device: Any) -> int:
    import torch

    from unfoldgen.compiler import read_spec
    from unfoldgen.data import source_from_string
    from unfoldgen.training.checkpoints import OutputError, atomic_write_text, check_output
    from unfoldgen.training.loading import parse_overrides, prepare
    from unfoldgen.training.report import summary
    from unfoldgen.training.run import WRITES, fit
    from unfoldgen.training.task import measured_inputs

    spec_text = stored["spec_text"] if stored else read_spec(Path(launch.spec))
    source = source_from_string(launch.data, seed=config.seed)
    source.check_trainable()
    prepared = prepare(
        launch.spec,
        launch.unfold,
        source,
        baselines=launch.baselines,
        dtype=getattr(torch, launch.dtype),
        layers=launch.layers,
        overrides=parse_overrides(launch.overrides),
        seed=config.seed,
        device=device,
        require_targets=config.scheme != "unsupervised",
        text=spec_text,
    )
    binding = prepared.binding
    if binding.measured is None:  # checked before anything is written: the model must measure its inputs
        binding = binding.with_measured(measured_inputs(prepared.model, binding))
    unfold = prepared.loaded.unfold(launch.unfold)
    launch.unfold = unfold.name
    out = Path(launch.out) if launch.out else Path("runs") / unfold.name
    generated = {
        "generated/" + relative: text
        for relative, text in prepared.loaded.compiled.files.items()
        if relative.split("/")[0] == unfold.name
    }
    rank = _rank()
    if rank == 0:
        check_output(out, [*WRITES, *generated])
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{out}: cannot be made ({err.strerror}); expected a folder for the run") from None
        for relative, text in generated.items():
            atomic_write_text(text, out / relative)
    # what fixes the run; how it runs (threads, stop-after ...) is the resuming command's to say
    fixed = {k: v for k, v in asdict(launch).items() if k not in (*resumable(Launch), "out", "resume")}
    record = {"launch": fixed, "spec_text": spec_text}
    result = fit(
        prepared.model,
        binding,
        config,
        out=out,
        resume=stored is not None,
        stop_after=launch.stop_after,
        baselines=prepared.baselines,
        progress=launch.progress,
        extra={"run": record},
    )
    if result.signal is not None:
        if LAUNCHER in os.environ:
            return EXIT_OK  # a clean exit for torch's launcher; ours reports the signal
        if rank == 0:
            name = signal.Signals(result.signal).name
            print(
                f"unfoldgen: {name}: stopped after {result.steps} steps; continue with --resume {out}", file=sys.stderr
            )
        return 128 + result.signal
    if rank == 0:
        print(summary(result.metrics))
        print(f"\n{result.stopped} after {result.steps} steps; results in {out}/")
    return EXIT_OK


# ---------------------------------------------------------------------- --nproc


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent process dies (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent or parent == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _launch(launch: Launch, argv: Sequence[str]) -> int:
    """Start ``nproc`` ranks with torch's own launcher, each running this command without --nproc.

    The launcher runs in its own session (a Ctrl-C in the terminal reaches only this process) and
    dies with this process; SIGINT/SIGTERM here are sent to the ranks (which write a checkpoint
    and exit), and the launcher then ends on its own."""
    rest: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            rest.append(item)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc-per-node={launch.nproc}",
        "-m",
        "unfoldgen",
        *rest,
    ]
    with tempfile.TemporaryDirectory(prefix="unfoldgen-ranks-") as pids:
        environment = dict(os.environ, OMP_NUM_THREADS=str(launch.threads), **{LAUNCHER: pids})
        process = subprocess.Popen(command, env=environment, start_new_session=True, preexec_fn=_die_with_parent)
        received: list[int] = []

        def forward(number: int, frame: Any) -> None:
            received.append(number)
            for path in Path(pids).glob("rank*.pid"):
                with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                    os.kill(int(path.read_text()), signal.SIGTERM)
            if len(received) > 1:  # asked twice: stop everything now
                process.kill()

        previous = {number: signal.signal(number, forward) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            code = process.wait()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
    if received:
        name = signal.Signals(received[0]).name
        folder = launch.out or "runs/UNFOLD"
        print(
            f"unfoldgen: {name}: the ranks stopped with a checkpoint; continue with --resume {folder}", file=sys.stderr
        )
        return 128 + received[0]
    return code
