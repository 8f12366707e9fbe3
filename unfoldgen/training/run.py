"""The training run: ``fit(model, data, config)`` trains a generated module with Adam, a step
schedule, gradient clipping, a validation split and early stopping, writing resumable checkpoints.

Every batch is a function of (seed, step), and the checkpoint holds the parameters, the optimizer,
the schedule position (``TrainState``) and the RNG state, so a resumed run continues exactly. A
NaN/Inf loss or gradient stops the run with a message naming the step and the last good checkpoint
(a state with non-finite parameters is never written). SIGINT/SIGTERM stop it after the current
step with a checkpoint.

Under ``torch.distributed`` the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on
CUDA), each rank trains on its shard of the global batch, and rank 0 writes checkpoints and metrics.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from unfoldgen.data import Binding, Source, bind
from unfoldgen.training.checkpoints import (
    CHECKPOINT,
    FORMAT,
    METRICS,
    MODEL_FILE,
    atomic_save,
    atomic_write_text,
    check_output,
    load_checkpoint,
)
from unfoldgen.training.config import Config, ConfigError, resumable, validate
from unfoldgen.training.loading import ModelInfo, slots_for_model
from unfoldgen.training.report import PLOTS, learned_values, postfix, progress_bar_for, write_plots
from unfoldgen.training.task import Task, layer_weights, scheme_loss, validation_score


class TrainingDivergedError(RuntimeError):
    """The loss or the gradient became NaN/Inf; the last good state is in the checkpoint."""

    def __init__(self, message: str, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


# ---------------------------------------------------------------------- phases


@dataclass(frozen=True)
class Phase:
    name: str
    steps: int
    layers: int  # active layers (model.layers during the phase)
    train: str  # "all" or "new" (only layer `layers`' own parameters; shared ones too)
    lr: float
    milestones: tuple[int, ...] = ()  # relative to the phase's start


def plan(config: Config, layers: int) -> list[Phase]:
    """The training phases: one for the end-to-end schemes; 2K for layer-wise."""
    if config.scheme != "layerwise":
        milestones = config.milestones
        if milestones is None:
            milestones = [config.steps // 2, (3 * config.steps) // 4]
        return [Phase(config.scheme, config.steps, layers, "all", config.lr, tuple(milestones))]
    per_stage = config.steps // (2 * layers)
    if per_stage < 1:
        raise ConfigError(
            f"steps={config.steps}: layerwise training of {layers} layers needs at least {2 * layers} steps"
        )
    phases = []
    for k in range(1, layers + 1):
        phases.append(Phase(f"layer {k}", per_stage, k, "new", config.lr))
        extra = config.steps - 2 * layers * per_stage if k == layers else 0
        phases.append(Phase(f"fine-tune 1..{k}", per_stage + extra, k, "all", config.lr * config.finetune_factor))
    return phases


def _lr_at(phase: Phase, step_in_phase: int, config: Config) -> float:
    warm = min(1.0, (step_in_phase + 1) / config.warmup) if config.warmup else 1.0
    return warm * phase.lr * config.gamma ** sum(step_in_phase >= m for m in phase.milestones)


# ---------------------------------------------------------------------- distributed helpers


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _all_finite(value: float, world: int, device: torch.device) -> bool:
    finite = torch.tensor([1.0 if math.isfinite(value) else 0.0], device=device)
    if world > 1:
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item() == 1.0)


def _flat_parameters(model: nn.Module) -> Tensor:
    values = [p.detach().reshape(-1) for p in model.parameters()]
    return torch.cat(values) if values else torch.zeros(0)


def _rank_difference(model: nn.Module, world: int) -> float:
    """Largest difference between any rank's parameters and rank 0's (0 for one process)."""
    if world == 1:
        return 0.0
    flat = _flat_parameters(model).to(torch.float64).cpu()
    gathered = [torch.zeros_like(flat) for _ in range(world)]
    torch.distributed.all_gather(gathered, flat)
    return max(float((g - gathered[0]).abs().max()) if g.numel() else 0.0 for g in gathered)


# ---------------------------------------------------------------------- the result and the state


@dataclass
class FitResult:
    model: nn.Module
    metrics: dict[str, Any]
    stopped: str  # completed | early stopping | interrupted
    steps: int
    out: Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    signal: int | None = None  # the signal (SIGINT, SIGTERM) that interrupted the run
    restarts: list[dict[str, Any]] = field(default_factory=list)  # fit_restarting: the runs that diverged

    @property
    def nmse_db(self) -> list[float]:
        """Validation NMSE (dB) per layer of the trained model."""
        return self.metrics["validation"]["trained"]["nmse_db"]


@dataclass
class TrainState:
    """Where a run is; every field but ``stopped`` goes into the checkpoint."""

    step: int = 0
    phase: int = 0
    phase_start: int = 0  # the step the current phase started at
    best_score: float = math.inf  # of this phase's validations, lower is better
    best_model: dict[str, Tensor] | None = None
    best_step: int | None = None
    bad_evaluations: int = 0  # validations since the best one
    history: list[dict[str, Any]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    stopped: str | None = None

    def saved(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stopped"}

    @classmethod
    def restored(cls, checkpoint: Mapping[str, Any]) -> TrainState:
        return cls(**{f.name: checkpoint[f.name] for f in fields(cls) if f.name != "stopped"})

    def validated(self, model: nn.Module, score: float, patience: int | None) -> bool:
        """Record a validation of the current parameters; whether the run should stop early."""
        if score < self.best_score:
            self.best_score, self.best_step, self.bad_evaluations = score, self.step, 0
            self.best_model = copy.deepcopy(model.state_dict())
            return False
        self.bad_evaluations += 1
        return patience is not None and self.bad_evaluations >= patience

    def finish_phase(self, model: nn.Module, restore_best: bool) -> None:
        """End of a phase: keep its best parameters, reset the early-stopping record."""
        if restore_best and self.best_model is not None:
            model.load_state_dict(self.best_model)
        self.phase += 1
        self.phase_start = self.step
        self.best_score, self.best_model, self.best_step, self.bad_evaluations = math.inf, None, None, 0


class _StopRequests:
    """SIGINT and SIGTERM during ``fit`` ask the run to stop after the current step and save a
    checkpoint; a second one stops at once (KeyboardInterrupt). Only the main thread can own
    signal handlers: elsewhere the signals keep theirs."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self.previous[number] = signal.signal(number, self._handle)

    def _handle(self, number: int, frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = number

    def restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


# ---------------------------------------------------------------------- fit


def fit(
    model: nn.Module,
    data: Source | Binding,
    config: Config | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    baselines: Mapping[str, nn.Module] | None = None,
    progress: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train a generated module on ``data`` (a source from ``unfoldgen.data`` or a binding) as
    ``config`` says (``Config()``: its defaults; every setting is documented on its field).

    ``out``: folder for checkpoints, metrics and plots; ``resume=True`` continues the run in
    ``out`` (the settings ``Config`` marks resumable may differ from the checkpoint's, the others
    may not). ``stop_after``: stop (as if interrupted) once this many steps are done. SIGINT or
    SIGTERM stops the run after the current step with a checkpoint (``stopped='interrupted'``).
    ``baselines``: untrained models (e.g. ISTA, FISTA) whose validation NMSE per layer is reported
    alongside. ``extra``: plain data stored with the checkpoints and metrics. Under
    ``torch.distributed`` each rank trains on its shard of the global batch.
    """
    config = copy.deepcopy(config) if config is not None else Config()  # fit fills in the milestones
    validate(config)
    rank, world = _world()
    if config.batch % world:
        raise ConfigError(f"batch={config.batch}: expected a multiple of the number of processes, {world}")
    if isinstance(data, Binding):
        binding = data
    else:
        binding = bind(data, slots_for_model(model), require_targets=config.scheme != "unsupervised")
    binding.source.check_trainable()
    parameter = next(iter(model.parameters()), None)
    reference = parameter if parameter is not None else next(iter(model.buffers()))
    device, dtype = reference.device, reference.dtype
    full_layers = model.layers
    if getattr(model, "FIXED_POINT", False) and config.scheme in ("layerwise", "deep-supervision"):
        raise ConfigError(
            f"scheme={config.scheme}: {type(model).__name__} is a fixed-point network (one layer iterated to "
            "convergence, `layers` its iteration cap): it has no layers to train one by one or to supervise; "
            "use supervised or unsupervised"
        )
    task = Task(model, binding, config, device, dtype)
    info = task.info
    learned_parameters = _learned_parameters(model, info)
    if not learned_parameters:
        raise ConfigError(f"{type(model).__name__} learns nothing: add a `learn` statement to the unfold")
    if config.scheme == "deep-supervision" and not isinstance(config.layer_weights, str):
        layer_weights(config.layer_weights, full_layers)  # the count is checked before any step
    out_dir = Path(out) if out is not None else None
    writer = rank == 0 and out_dir is not None
    if writer:
        check_output(out_dir, WRITES)
        out_dir.mkdir(parents=True, exist_ok=True)

    state = TrainState()
    optimizer_state = None
    if resume:
        if out_dir is None:
            raise ConfigError("resume=True needs the run's folder: out=...")
        checkpoint = load_checkpoint(out_dir)
        _check_resume(config, checkpoint["config"])
        if config.milestones is None:
            config.milestones = checkpoint["config"]["milestones"]
        model.load_state_dict(checkpoint["model"])
        optimizer_state = checkpoint["optimizer"]
        state = TrainState.restored(checkpoint)
        initial = checkpoint["initial"]
        torch.set_rng_state(checkpoint["torch_rng"])
    phases = plan(config, full_layers)
    if not resume:
        if config.milestones is None and config.scheme != "layerwise":
            config.milestones = list(phases[0].milestones)
        initial = {"learned": learned_values(model), "evaluation": task.evaluate(model)}
    total_steps = sum(p.steps for p in phases)
    if resume and config.scheme != "layerwise" and state.phase >= len(phases) and state.step < total_steps:
        state.phase, state.phase_start = 0, 0  # more steps for a finished run: go on, fresh optimizer
    baseline_results = {name: task.evaluate(other) for name, other in (baselines or {}).items()}
    last_saved = state.step if resume else None  # the step of the checkpoint on disk

    def save_checkpoint(optimizer: torch.optim.Optimizer | None, status: str = "running") -> None:
        """Rank 0 writes the resume state (``optimizer`` None at a phase boundary: the next phase
        starts a fresh one). A state with NaN/Inf parameters is never written: the last finite
        checkpoint stays."""
        nonlocal last_saved
        if not writer or not _finite_parameters(model):
            return
        payload = {
            "format": FORMAT,
            "status": status,
            "config": asdict(config),
            "model": model.state_dict(),
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            **state.saved(),
            "initial": initial,
            "torch_rng": torch.get_rng_state(),
            "world": world,
            "extra": dict(extra or {}),
        }
        atomic_save(payload, out_dir / CHECKPOINT)
        last_saved = state.step

    def diverged(what: str, step: int) -> None:
        progress_bar.close()
        where = f"; the last good state (after {last_saved} steps) is in {out_dir / CHECKPOINT}" if writer else ""
        raise TrainingDivergedError(f"training stopped at step {step + 1}: {what}{where}", step, last_saved)

    if not resume:
        save_checkpoint(None)  # a run that diverges at once still has a good state to resume from
    progress_bar = progress_bar_for(total_steps, state.step, config.scheme, progress and rank == 0)
    started = time.perf_counter()
    shown = {"val_" + k: v[-1] for k, v in initial["evaluation"].items() if k in ("nmse_db", "objective")}
    if state.history:
        shown = state.history[-1]
    requests = _StopRequests()
    requests.install()
    try:
        while state.phase < len(phases) and state.stopped is None:
            phase = phases[state.phase]
            model.layers = phase.layers
            masks = _configure_phase(model, info, learned_parameters, phase, full_layers)
            trainable = [p for p in learned_parameters if p.requires_grad]
            optimizer = torch.optim.Adam(trainable, lr=phase.lr)
            if optimizer_state is not None:
                optimizer.load_state_dict(optimizer_state)
                optimizer_state = None
            network = _wrap(model, world, device)
            weights = layer_weights(config.layer_weights, phase.layers) if config.scheme == "deep-supervision" else None
            if len(phases) > 1:
                progress_bar.set_description(f"{config.scheme} ({phase.name})")
            while True:
                step = state.step
                if step - state.phase_start >= phase.steps:
                    state.finish_phase(model, config.restore_best)
                    save_checkpoint(None)
                    break
                if (stop_after is not None and step >= stop_after) or _any_rank(requests.signal, world, device):
                    state.stopped = "interrupted"
                    save_checkpoint(optimizer)
                    break
                for group in optimizer.param_groups:
                    group["lr"] = _lr_at(phase, step - state.phase_start, config)
                inputs, targets = task.batch(step, rank, world)
                loss_value = scheme_loss(task, network, inputs, targets, config.scheme, weights)
                value = float(loss_value.detach())
                if not _all_finite(value, world, device):
                    diverged(f"the loss is {value}{_blame(inputs, targets)}", step)
                optimizer.zero_grad(set_to_none=True)
                loss_value.backward()
                for parameter, mask in masks:
                    if parameter.grad is not None:
                        parameter.grad.mul_(mask)
                norm = _gradient_norm(trainable, config.clip)
                if not math.isfinite(norm):
                    diverged(f"the gradient norm is {norm}. {LOWER_LR}", step)
                optimizer.step()
                state.step = step = step + 1
                state.losses.append(value)
                early_stop = False
                if step % config.val_every == 0 or step - state.phase_start == phase.steps:
                    evaluation = task.evaluate(model)
                    shown = {"step": step, "phase": phase.name, "loss": value, "lr": optimizer.param_groups[0]["lr"]}
                    shown |= {"val_" + k: v[-1] for k, v in evaluation.items() if k in ("nmse_db", "objective")}
                    state.history.append(shown)
                    early_stop = state.validated(model, validation_score(evaluation, config.scheme), config.patience)
                progress_bar.update(1)
                progress_bar.set_postfix(postfix(value, shown, config.scheme), refresh=False)
                if early_stop:
                    if state.phase == len(phases) - 1:
                        state.stopped = "early stopping"
                    state.finish_phase(model, config.restore_best)
                    save_checkpoint(None)
                    break
                if step % config.checkpoint_every == 0:
                    save_checkpoint(optimizer)
        if state.stopped is None:
            state.stopped = "completed"
    finally:
        requests.restore()
        model.layers = full_layers
        _configure_phase(model, info, learned_parameters, None, full_layers)
        progress_bar.close()
    seconds = time.perf_counter() - started

    final = task.evaluate(model)
    metrics = _metrics(model, task, config, state, initial, final, baseline_results, total_steps, world, extra, phases)
    metrics["seconds"] = seconds
    if getattr(model, "FIXED_POINT", False):  # how the final validation's fixed-point iteration went
        metrics["fixed_point"] = {
            "tolerance": model.tolerance,
            "iterations": model.last_iterations,
            "residual": model.last_residual,
        }
    metrics["rank_max_parameter_difference"] = _rank_difference(model, world)
    if writer:
        atomic_save(
            {"model": model.state_dict(), "config": asdict(config), "extra": dict(extra or {})}, out_dir / MODEL_FILE
        )
        atomic_write_text(json.dumps(metrics, indent=2, allow_nan=True) + "\n", out_dir / METRICS)
        if state.stopped != "interrupted":
            write_plots(metrics, out_dir)
    return FitResult(model, metrics, state.stopped, state.step, out_dir, state.history, requests.signal)


# ---------------------------------------------------------------------- fit's pieces

WRITES = (CHECKPOINT, MODEL_FILE, METRICS, *PLOTS)
LOWER_LR = "Try a lower learning rate (--lr; --resume takes a new one) or gradient clipping (--clip)"


def fit_restarting(
    model: nn.Module,
    data: Source | Binding,
    config: Config | None = None,
    *,
    attempts: int = 3,
    lr_factor: float = 1 / 3,
    **options: Any,
) -> FitResult:
    """``fit``, started again from the model's initial state each time the run diverges (a NaN/Inf
    loss or gradient), at ``lr_factor`` times the last learning rate and the next seed, at most
    ``attempts`` runs in all; ``options`` go to ``fit``. The result's ``restarts`` lists each
    diverged run's learning rate and step; when every run diverges, the last error is raised."""
    if attempts < 1:
        raise ConfigError(f"attempts={attempts}: expected at least 1")
    if not 0 < lr_factor < 1:
        raise ConfigError(f"lr_factor={lr_factor}: expected a number in (0, 1) (each restart lowers the rate)")
    config = config if config is not None else Config()
    initial = {name: value.detach().clone() for name, value in model.state_dict().items()}
    restarts: list[dict[str, Any]] = []
    while True:
        trial = replace(config, lr=config.lr * lr_factor ** len(restarts), seed=config.seed + len(restarts))
        try:
            result = fit(model, data, trial, **options)
        except TrainingDivergedError as err:
            restarts.append({"lr": trial.lr, "diverged_at_step": err.step})
            if len(restarts) == attempts:
                raise TrainingDivergedError(
                    f"{err} (every one of {attempts} runs diverged, down to lr {trial.lr:g})", err.step, err.checkpoint
                ) from err
            model.load_state_dict(initial)
            continue
        result.restarts = restarts
        return result


def _blame(inputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> str:
    """Why the loss is not finite: the batch itself, or (a finite batch) the training."""
    bad = [name for name, value in {**inputs, **targets}.items() if not bool(torch.isfinite(value).all())]
    if bad:
        return f": the training batch holds NaN/Inf values in {', '.join(map(repr, bad))}; fix the data"
    return f". {LOWER_LR}"


def _finite_parameters(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _any_rank(requested: int | None, world: int, device: torch.device) -> bool:
    """Whether any rank was asked to stop (all ranks stop at the same step)."""
    if world == 1:
        return requested is not None
    flag = torch.tensor([0.0 if requested is None else 1.0], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item() > 0)


def _check_resume(config: Config, stored: Mapping[str, Any]) -> None:
    """Settings the checkpoint fixes must match (layerwise: its steps, which shape the phases)."""
    fixed = [f for f in fields(Config) if f.name not in resumable(Config) or f.name == "steps"]
    if config.scheme != "layerwise":
        fixed = [f for f in fixed if f.name != "steps"]
    # a setting added after the checkpoint was written: the checkpoint's run had its default
    before = {f.name: stored.get(f.name, f.default) for f in fixed}
    differ = [
        f"{name}: {value!r} in the checkpoint, {getattr(config, name)!r} now"
        for name, value in before.items()
        if value != getattr(config, name)
    ]
    if differ:
        raise ConfigError("cannot resume with different settings: " + "; ".join(differ))


def _learned_parameters(model: nn.Module, info: ModelInfo) -> list[nn.Parameter]:
    found = []
    for name in info.learned:
        value = getattr(model, name)
        if isinstance(value, nn.Module):
            found.extend(value.parameters())
        elif isinstance(value, nn.Parameter):
            found.append(value)
    return found


def _configure_phase(
    model: nn.Module, info: ModelInfo, learned: list[nn.Parameter], phase: Phase | None, full_layers: int
) -> list[tuple[nn.Parameter, Tensor]]:
    """Set requires_grad for the phase and return gradient masks for per-layer tensors.

    A ``new`` phase trains only the newest layer's own parameters (and shared ones); an ``all``
    phase with fewer than K layers trains layers 1..k. ``phase`` None makes everything trainable.
    """
    for parameter in learned:
        parameter.requires_grad_(True)
    if phase is None or (phase.train == "all" and phase.layers == full_layers):
        return []
    masks = []
    newest = phase.layers - 1  # 0-based
    for name, (_, per_layer) in info.learned.items():
        if not per_layer:
            continue
        value = getattr(model, name)
        if name in getattr(model, "BOUNDED", {}):  # a Bounded module: its raw tensors, one per layer
            value = value.raw
        if isinstance(value, (nn.ModuleList, nn.ParameterList)):
            for index, entry in enumerate(value):
                keep = index == newest if phase.train == "new" else index <= newest
                for parameter in entry.parameters() if isinstance(entry, nn.Module) else [entry]:
                    parameter.requires_grad_(keep)
        else:
            mask = torch.zeros_like(value)
            if phase.train == "new":
                mask[newest] = 1
            else:
                mask[: newest + 1] = 1
            masks.append((value, mask))
    return masks


def _wrap(model: nn.Module, world: int, device: torch.device) -> nn.Module:
    """DDP over the parameters trainable in this phase (frozen layers are left out, so every
    wrapped parameter takes part in the forward pass)."""
    if world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _gradient_norm(parameters: list[nn.Parameter], clip: float | None) -> float:
    """The gradient's norm, clipped to ``clip`` (None or 0: not clipped)."""
    grads = [p for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    if clip:
        return float(torch.nn.utils.clip_grad_norm_(grads, clip))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in grads])))


def _metrics(
    model: nn.Module,
    task: Task,
    config: Config,
    state: TrainState,
    initial: dict,
    final: dict,
    baselines: dict,
    total_steps: int,
    world: int,
    extra: Mapping[str, Any] | None,
    phases: list[Phase],
) -> dict[str, Any]:
    info = task.info
    replaced = any(paradigm == 4 for paradigm, _ in info.learned.values())
    initial_label = "untrained" if replaced else "classical"
    validation = {"trained": final, initial_label: initial["evaluation"]}
    validation.update(baselines)
    learned = learned_values(model)
    for name, entry in learned.items():
        before = initial["learned"].get(name, {})
        for key in ("value", "norm", "parameter_norm"):
            if key in before:
                entry["initial_" + key] = before[key]
    return {
        "format": FORMAT,
        "model": type(model).__name__,
        "scheme": config.scheme,
        "config": asdict(config),
        "phases": [asdict(p) for p in phases],
        "stopped": state.stopped,
        "steps_done": state.step,
        "steps_planned": total_steps,
        "processes": world,
        "data": task.binding.source.description,
        "layers": model.layers,
        "parameter_counts": {str(k): v for k, v in model.parameter_counts().items()},
        "loss": state.losses,
        "history": state.history,
        "validation_size": task.validation_size,
        "validation": validation,
        "initial_label": initial_label,
        "learned": learned,
        **({"extra": dict(extra)} if extra else {}),
    }
