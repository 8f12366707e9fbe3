"""Train generated unfolded networks: ``fit(model, data, scheme=...)`` and ``unfoldgen train``.

Schemes
- ``supervised``: end to end, NMSE (or MSE) of the last layer's outputs to the ground truth;
- ``unsupervised``: the problem's objective at the last layer (``model.objective``), no ground truth;
- ``deep-supervision``: a weighted sum of every layer's supervised loss (weights configurable);
- ``layerwise``: greedy, as LISTA-CPSS / ALISTA train: for k = 1..K, train layer k alone with
  ``model.layers = k`` (earlier layers frozen), then fine-tune layers 1..k at a lower rate.

The loss is a mean over samples (NMSE normalises by the validation set's mean energy, a constant),
so data-parallel training over R ranks with R shards of a global batch takes the same steps as one
process with the whole batch.

Training is Adam with a step schedule, gradient clipping, a validation split, early stopping (the
best parameters are kept), and stops on a NaN/Inf loss or gradient with a message naming the step
and the last good checkpoint. Every batch is a function of (seed, step), and the checkpoint holds
the parameters, the optimizer, the schedule position and the RNG state, so a resumed run continues
exactly. Checkpoints are written atomically (temporary file, fsync, rename).

The output folder holds ``checkpoint.pt`` (resume state), ``model.pt`` (trained parameters),
``metrics.json`` (losses, validation NMSE per layer against the classical solver and baselines,
learned hyperparameters per layer), ``nmse_per_layer.png``, ``hyperparameters.png`` and, for
``unfoldgen train``, the generated package the model was built from.

Beyond one process: under ``torch.distributed`` (``unfoldgen train --nproc N`` starts
``torch.distributed.run``) the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on
CUDA), each rank trains on its shard of the global batch, and rank 0 writes checkpoints and metrics.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import errno
import hashlib
import importlib.util
import inspect
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from unfoldgen.data import Binding, DataError, Slot, Source, analytic_weight, bind, slots_from_problem

SCHEMES = ("supervised", "unsupervised", "deep-supervision", "layerwise")
LOSSES = ("nmse", "mse")
CHECKPOINT = "checkpoint.pt"
MODEL_FILE = "model.pt"
METRICS = "metrics.json"
FORMAT = 1


class TrainingDivergedError(RuntimeError):
    """The loss or the gradient became NaN/Inf; the last good state is in the checkpoint."""

    def __init__(self, message: str, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


# ---------------------------------------------------------------------- what a model looks like


@dataclass(frozen=True)
class ModelInfo:
    """The interface of a generated module, as the trainer needs it.

    ``targets`` maps each output to the problem variable it estimates; ``learned`` maps each
    learned name to (paradigm, per layer).
    """

    inputs: tuple[str, ...]
    variables: tuple[str, ...]
    outputs: tuple[str, ...]
    targets: dict[str, str]
    learned: dict[str, tuple[int, bool]]


def _match_outputs(outputs: Sequence[str], variables: Sequence[str]) -> dict[str, str]:
    """Output → variable: same name, else (as many outputs as variables) declaration order."""
    if all(name in variables for name in outputs):
        return {name: name for name in outputs}
    if len(outputs) == len(variables):
        return dict(zip(outputs, variables, strict=True))
    return {name: name for name in outputs if name in variables}


def info_from_unfold(unfold: Any) -> ModelInfo:
    """Exact interface from a checked unfold (``compile_text(...).checked.unfolds[i]``)."""
    slots = slots_from_problem(unfold.problem)
    inputs = tuple(s.name for s in slots if s.role == "input")
    variables = tuple(s.name for s in slots if s.role == "var")
    outputs = tuple(unfold.outputs)
    learned = {}
    for learn in unfold.learns:
        if learn.role == "net":
            net = next(n for n in unfold.nets if n.name == learn.name)
            paradigm = 3 if net.correction else 4
        else:
            paradigm = 1 if learn.role == "hyper" else 2
        learned[learn.name] = (paradigm, learn.per_layer)
    return ModelInfo(inputs, variables, outputs, _match_outputs(outputs, variables), learned)


def describe(model: nn.Module) -> ModelInfo:
    """The interface of a generated module.

    Built by ``build_model``: exact (from the spec). Otherwise read from the module: its
    ``INPUTS``, ``VARIABLES`` and ``OUTPUTS`` (modules generated before those existed: inputs from
    ``forward``'s signature, variables from ``objective``'s, outputs assumed to be the variables),
    learned names from ``PARADIGMS``; a learned tensor counts as per layer when it is a
    ParameterList or its first axis has ``model.layers`` entries (a net: when it is a ModuleList).
    """
    info = getattr(model, "unfoldgen_info", None)
    if isinstance(info, ModelInfo):
        return info
    if not hasattr(model, "PARADIGMS") or not hasattr(model, "objective"):
        raise TypeError(f"{type(model).__name__} is not a module generated by unfoldgen")
    forward = [
        p.name
        for p in inspect.signature(model.forward).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY)
    ]
    objective = [p.name for p in inspect.signature(model.objective).parameters.values()]
    variables = tuple(name for name in objective if name not in forward)
    if hasattr(model, "OUTPUTS"):  # generated modules name their interface
        inputs, variables, outputs = tuple(model.INPUTS), tuple(model.VARIABLES), tuple(model.OUTPUTS)
    else:  # older generated modules: outputs assumed to be the variables
        inputs, outputs = tuple(forward), variables
    learned = {}
    for name, paradigm in model.PARADIGMS.items():
        value = getattr(model, name)
        if isinstance(value, (nn.ModuleList, nn.ParameterList)):
            per_layer = True
        elif isinstance(value, nn.Module):
            per_layer = False
        else:
            per_layer = value.dim() >= 1 and value.shape[0] == model.layers
        learned[name] = (paradigm, per_layer)
    return ModelInfo(inputs, variables, outputs, _match_outputs(outputs, variables), learned)


# ---------------------------------------------------------------------- models from specs


@dataclass
class LoadedSpec:
    """A compiled spec with its generated packages imported."""

    text: str
    filename: str
    compiled: Any
    modules: dict[str, ModuleType]

    def unfold(self, name: str | None) -> Any:
        names = [u.name for u in self.compiled.checked.unfolds]
        if name is None:
            if len(names) != 1:
                raise DataError(f"{self.filename} holds {len(names)} unfold blocks ({', '.join(names)}): pass --unfold")
            name = names[0]
        for unfold in self.compiled.checked.unfolds:
            if unfold.name == name:
                return unfold
        raise DataError(f"{self.filename} has no unfold {name!r}; it defines {', '.join(names)}")

    def model_class(self, name: str) -> type[nn.Module]:
        module = self.modules[name]
        return getattr(module, module.__all__[0])


def load_spec(spec: str | Path, text: str | None = None, folder: Path | None = None) -> LoadedSpec:
    """Compile a spec in-process, write its packages into ``folder`` (a private temporary folder
    by default) and import them under names unique to the spec's text."""
    from unfoldgen.compiler import compile_text, read_spec

    path = Path(spec)
    if text is None:
        text = read_spec(path)
    compiled = compile_text(text, str(path), spec_label=path.name)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="unfoldgen-train-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    modules = {}
    for relative, source in compiled.files.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source, encoding="utf-8")
    for unfold in compiled.checked.unfolds:
        module_name = f"_unfoldgen_{digest}_{unfold.name}"
        if module_name not in sys.modules:
            package = folder / unfold.name
            spec_ = importlib.util.spec_from_file_location(
                module_name, package / "__init__.py", submodule_search_locations=[str(package)]
            )
            module = importlib.util.module_from_spec(spec_)
            sys.modules[module_name] = module
            spec_.loader.exec_module(module)
        modules[unfold.name] = sys.modules[module_name]
    return LoadedSpec(text, str(path), compiled, modules)


def _constructor_value(name: str, value: Any, binding: Binding, unfold: Any) -> Any:
    """Override values: numbers, tensors, or ``'analytic'`` for an ALISTA-style weight computed
    from the spec's data matrix (transposed when the weight is declared the other way round)."""
    if not isinstance(value, str):
        return value
    if value == "analytic":
        matrices = [s for s in binding.slots if s.role == "data" and s.axes is not None and len(s.axes) == 2]
        if len(matrices) != 1:
            raise DataError(f"{name}=analytic needs exactly one data matrix in the spec, found {len(matrices)}")
        weight = analytic_weight(binding.data[matrices[0].name])
        symbol = next((s for s in unfold.symbols if s.name == name), None)
        if symbol is not None and tuple(symbol.shape) == tuple(reversed(matrices[0].axes)):
            weight = weight.T
        return torch.as_tensor(weight)
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{name}={value}: expected a number or 'analytic'") from None


def build_model(
    loaded: LoadedSpec,
    unfold: str | None,
    binding: Binding,
    *,
    dtype: torch.dtype = torch.float32,
    layers: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The generated module of ``unfold``, built from the binding's data arrays (e.g. A), the dims
    it fixes, and ``overrides`` of params/hypers/weights (numbers, tensors or ``'analytic'``).

    Nets are initialised from ``torch.manual_seed(seed)``, so every rank builds the same model.
    """
    checked = loaded.unfold(unfold)
    cls = loaded.model_class(checked.name)
    accepted = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {name: torch.as_tensor(value, dtype=dtype) for name, value in binding.data.items()}
    for dim, size in binding.dims.items():
        if dim in accepted:
            kwargs[dim] = size
    for name, value in (overrides or {}).items():
        if name not in accepted or name in ("dtype", "layers"):
            names = ", ".join(n for n in accepted if n not in ("dtype", "layers", "checkpoint_layers"))
            raise DataError(f"{checked.name} has no constructor argument {name!r}; it takes {names}")
        value = _constructor_value(name, value, binding, checked)
        kwargs[name] = value.to(dtype) if isinstance(value, Tensor) else value
    if layers is not None:
        kwargs["layers"] = layers
    if "dtype" in accepted:
        kwargs["dtype"] = dtype
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(**kwargs)
    model = model.to(device)
    model.unfoldgen_info = info_from_unfold(checked)
    return model


def slots_for_model(model: nn.Module) -> tuple[Slot, ...]:
    """Slots when only a model is given (no spec): names from the model; shapes are not known
    here (the model checks them itself and names the offending input)."""
    info = describe(model)
    return tuple(Slot(n, "input", None) for n in info.inputs) + tuple(Slot(v, "var", None) for v in info.variables)


@dataclass
class Prepared:
    """A model built from a spec and a data source, ready for ``fit``."""

    model: nn.Module
    binding: Binding
    baselines: dict[str, nn.Module]
    loaded: LoadedSpec


def prepare(
    spec: str | Path,
    unfold: str | None,
    data: Source,
    *,
    baselines: Sequence[str] = (),
    dtype: torch.dtype = torch.float32,
    layers: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    require_targets: bool = True,
    text: str | None = None,
) -> Prepared:
    """Compile ``spec``, bind ``data`` to its problem, build ``unfold`` (and untrained
    ``baselines``, other unfolds of the same problem, with as many layers)."""
    loaded = load_spec(spec, text=text)
    checked = loaded.unfold(unfold)
    binding = bind(data, slots_from_problem(checked.problem), require_targets=require_targets)
    model = build_model(
        loaded, checked.name, binding, dtype=dtype, layers=layers, overrides=overrides, seed=seed, device=device
    )
    others = {}
    for name in baselines:
        other = loaded.unfold(name)
        if other.problem.name != checked.problem.name:
            raise DataError(f"baseline {name!r} solves problem {other.problem.name!r}, not {checked.problem.name!r}")
        params = {k: v for k, v in (overrides or {}).items() if any(s.name == k for s in other.problem.symbols)}
        others[name] = build_model(
            loaded, name, binding, dtype=dtype, layers=model.layers, overrides=params, seed=seed, device=device
        )
    return Prepared(model, binding, others, loaded)


# ---------------------------------------------------------------------- configuration and phases


@dataclass
class Config:
    scheme: str = "supervised"
    steps: int = 300
    batch: int = 64
    lr: float = 1e-2
    milestones: list[int] | None = None  # absolute steps where lr *= gamma (default: 50 %, 75 %)
    gamma: float = 0.3
    loss: str = "nmse"
    layer_weights: str | list[float] = "uniform"  # deep supervision: uniform | linear | last | list
    finetune_factor: float = 0.2  # layerwise: fine-tuning lr = lr * finetune_factor
    clip: float | None = 10.0
    val_size: int = 1000
    val_every: int = 25
    patience: int | None = None  # validations without improvement before stopping; None: never
    checkpoint_every: int = 50
    restore_best: bool = True
    seed: int = 0


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
        raise ValueError(f"layerwise training of {layers} layers needs at least {2 * layers} steps, got {config.steps}")
    phases = []
    for k in range(1, layers + 1):
        phases.append(Phase(f"layer {k}", per_stage, k, "new", config.lr))
        extra = config.steps - 2 * layers * per_stage if k == layers else 0
        phases.append(Phase(f"fine-tune 1..{k}", per_stage + extra, k, "all", config.lr * config.finetune_factor))
    return phases


def _lr_at(phase: Phase, step_in_phase: int, gamma: float) -> float:
    return phase.lr * gamma ** sum(step_in_phase >= m for m in phase.milestones)


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


# ---------------------------------------------------------------------- checkpoints


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``:
    a crash mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomic_write_text(text: str, path: Path) -> None:
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def load_checkpoint(folder: str | Path) -> dict:
    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "no checkpoint to resume from", str(path))
    return torch.load(path, map_location="cpu", weights_only=False)


# ---------------------------------------------------------------------- losses and evaluation


def _as_tuple(output: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return output if isinstance(output, tuple) else (output,)


def _layer_weights(spec: str | Sequence[float], layers: int) -> list[float]:
    if isinstance(spec, str):
        if spec == "uniform":
            return [1.0] * layers
        if spec == "linear":
            return [float(k + 1) for k in range(layers)]
        if spec == "last":
            return [0.0] * (layers - 1) + [1.0]
        raise ValueError(f"layer weights: expected uniform, linear, last or a list of {layers} numbers, got {spec!r}")
    weights = [float(w) for w in spec]
    if len(weights) != layers or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"layer weights: expected {layers} non-negative numbers with a positive sum, got {weights}")
    return weights


class _Task:
    """The model's interface, the data as tensors, and the losses and metrics of a run."""

    def __init__(self, model: nn.Module, binding: Binding, config: Config, device: torch.device, dtype: torch.dtype):
        self.model = model
        self.info = describe(model)
        self.binding = binding
        self.config = config
        self.device = device
        self.dtype = dtype
        val_inputs, val_targets = binding.validation(config.val_size)
        self.val_inputs = self.tensors(val_inputs)
        self.val_targets = self.tensors(val_targets)
        missing = [v for v in self.info.targets.values() if v not in self.val_targets]
        self.has_targets = bool(self.info.targets) and not missing
        if config.scheme != "unsupervised" and not self.has_targets:
            wanted = ", ".join(missing) or "a variable the network outputs"
            raise DataError(f"the {config.scheme} scheme needs ground truth for {wanted}; the data has none")
        if config.scheme == "unsupervised" and set(self.info.targets.values()) != set(self.info.variables):
            raise DataError(
                f"unsupervised training evaluates the objective at the outputs, but the outputs "
                f"({', '.join(self.info.outputs)}) do not cover the variables ({', '.join(self.info.variables)})"
            )
        # NMSE normaliser: the validation set's mean energy per sample, a constant for the run
        self.energy = {
            name: float(value.pow(2).flatten(1).sum(1).mean()) if self.has_targets else 1.0
            for name, value in self.val_targets.items()
        }
        for name, energy in self.energy.items():
            if energy <= 0:
                raise DataError(f"the validation targets for {name!r} are all zero: NMSE is undefined")

    def tensors(self, arrays: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
        return {name: torch.as_tensor(value, dtype=self.dtype, device=self.device) for name, value in arrays.items()}

    def batch(self, step: int, rank: int, world: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """This rank's shard of the global batch of ``step``."""
        inputs, targets = self.binding.train_batch(step, self.config.batch)
        share = self.config.batch // world
        part = slice(rank * share, (rank + 1) * share)
        return (
            self.tensors({k: v[part] for k, v in inputs.items()}),
            self.tensors({k: v[part] for k, v in targets.items()}),
        )

    def supervised(self, outputs: tuple[Tensor, ...], targets: Mapping[str, Tensor]) -> Tensor:
        """Σ over outputs of mean_i ||x̂_i − x_i||² / E||x||² (nmse) or / entries (mse)."""
        total = outputs[0].new_zeros(())
        for name, estimate in zip(self.info.outputs, outputs, strict=True):
            variable = self.info.targets.get(name)
            if variable is None:
                continue
            error = (estimate - targets[variable]).pow(2).flatten(1).sum(1).mean()
            scale = self.energy[variable] if self.config.loss == "nmse" else estimate[0].numel()
            total = total + error / scale
        return total

    def objective(self, inputs: Mapping[str, Tensor], outputs: tuple[Tensor, ...]) -> Tensor:
        variables = {self.info.targets[name]: value for name, value in zip(self.info.outputs, outputs, strict=True)}
        return self.model.objective(**inputs, **variables)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, layers: int | None = None) -> dict[str, Any]:
        """Validation NMSE (dB) and mean objective after every layer (of this model or a baseline)."""
        info = describe(model)
        saved = model.layers
        if layers is not None:
            model.layers = layers
        try:
            iterates = [_as_tuple(o) for o in model(**self.val_inputs, return_iterates=True)]
        finally:
            model.layers = saved
        result: dict[str, Any] = {}
        if self.has_targets:
            per_layer, per_variable = [], {v: [] for v in info.targets.values() if v in self.val_targets}
            for outputs in iterates:
                error = energy = 0.0
                for name, estimate in zip(info.outputs, outputs, strict=True):
                    variable = info.targets.get(name)
                    if variable not in self.val_targets:
                        continue
                    e = float((estimate - self.val_targets[variable]).pow(2).sum())
                    t = float(self.val_targets[variable].pow(2).sum())
                    per_variable[variable].append(_db(e / t))
                    error, energy = error + e, energy + t
                per_layer.append(_db(error / energy))
            result["nmse_db"] = per_layer
            if len(per_variable) > 1:
                result["nmse_db_per_variable"] = per_variable
        if set(info.targets.values()) == set(info.variables):
            result["objective"] = [
                float(
                    model.objective(
                        **self.val_inputs,
                        **{info.targets[n]: v for n, v in zip(info.outputs, outputs, strict=True)},
                    ).mean()
                )
                for outputs in iterates
            ]
        return result


def _db(ratio: float) -> float:
    return float(10 * math.log10(ratio)) if ratio > 0 and math.isfinite(ratio) else float("nan")


def _score(evaluation: Mapping[str, Any], scheme: str) -> float:
    """Lower is better: the last layer's objective for unsupervised training (it never looks at
    the ground truth), else its NMSE."""
    if scheme == "unsupervised" or "nmse_db" not in evaluation:
        return evaluation["objective"][-1]
    return evaluation["nmse_db"][-1]


# ---------------------------------------------------------------------- learned values for reports


def learned_values(model: nn.Module) -> dict[str, Any]:
    """Every learned quantity per layer: scalars as values, tensors and nets as norms."""
    info = describe(model)
    report = {}
    for name, (paradigm, per_layer) in info.learned.items():
        value = getattr(model, name)
        entry: dict[str, Any] = {"paradigm": paradigm, "per_layer": per_layer}
        if isinstance(value, nn.ParameterList) and all(p.dim() == 0 for p in value):
            entry["kind"] = "scalar"
            entry["value"] = [float(p.detach()) for p in value]
        elif isinstance(value, nn.ParameterList):
            entry["kind"] = "tensor"
            entry["norm"] = [float(p.detach().double().norm()) for p in value]
        elif isinstance(value, nn.Module):
            modules = list(value) if isinstance(value, nn.ModuleList) else [value]
            norms = [float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in m.parameters()))) for m in modules]
            entry["kind"] = "net"
            entry["parameter_norm"] = norms if per_layer else norms[0]
        else:
            tensor = value.detach().double().cpu()
            if tensor.dim() == (1 if per_layer else 0):
                entry["kind"] = "scalar"
                entry["value"] = tensor.tolist()
            else:
                entry["kind"] = "tensor"
                entry["norm"] = [float(t.norm()) for t in tensor] if per_layer else float(tensor.norm())
        report[name] = entry
    return report


# ---------------------------------------------------------------------- the result


@dataclass
class FitResult:
    model: nn.Module
    metrics: dict[str, Any]
    stopped: str  # completed | early stopping | interrupted
    steps: int
    out: Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def nmse_db(self) -> list[float]:
        """Validation NMSE (dB) per layer of the trained model."""
        return self.metrics["validation"]["trained"]["nmse_db"]


# ---------------------------------------------------------------------- fit


def fit(
    model: nn.Module,
    data: Source | Binding,
    scheme: str = "supervised",
    *,
    steps: int = 300,
    batch: int = 64,
    lr: float = 1e-2,
    milestones: Sequence[int] | None = None,
    gamma: float = 0.3,
    loss: str = "nmse",
    layer_weights: str | Sequence[float] = "uniform",
    finetune_factor: float = 0.2,
    clip: float | None = 10.0,
    val_size: int = 1000,
    val_every: int = 25,
    patience: int | None = None,
    checkpoint_every: int = 50,
    restore_best: bool = True,
    seed: int = 0,
    out: str | Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    baselines: Mapping[str, nn.Module] | None = None,
    progress: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train a generated module on ``data`` (a source from ``unfoldgen.data`` or a binding).

    ``scheme``: supervised | unsupervised | deep-supervision | layerwise. ``steps`` Adam steps with
    global batch ``batch`` and learning rate ``lr``, multiplied by ``gamma`` at ``milestones``
    (absolute steps; default half and three quarters of the way). ``clip``: gradient-norm clipping.
    ``val_every`` steps the validation set (``val_size`` samples, disjoint from training) is
    evaluated; with ``patience`` the run stops after that many validations without improvement,
    and with ``restore_best`` the best parameters are kept. ``out``: folder for checkpoints
    (every ``checkpoint_every`` steps), metrics and plots; ``resume=True`` continues the run in
    ``out``. ``stop_after``: stop (as if interrupted) once this many steps are done.
    ``baselines``: untrained models (e.g. ISTA, FISTA) whose validation NMSE per layer is reported
    alongside. Under ``torch.distributed`` each rank trains on its shard of the global batch.
    """
    config = Config(
        scheme=scheme,
        steps=steps,
        batch=batch,
        lr=lr,
        milestones=list(milestones) if milestones is not None else None,
        gamma=gamma,
        loss=loss,
        layer_weights=layer_weights if isinstance(layer_weights, str) else list(layer_weights),
        finetune_factor=finetune_factor,
        clip=clip,
        val_size=val_size,
        val_every=val_every,
        patience=patience,
        checkpoint_every=checkpoint_every,
        restore_best=restore_best,
        seed=seed,
    )
    _validate(config)
    rank, world = _world()
    if config.batch % world:
        raise ValueError(f"the global batch {config.batch} must be divisible by the number of processes {world}")
    if isinstance(data, Binding):
        binding = data
    else:
        binding = bind(data, slots_for_model(model), require_targets=scheme != "unsupervised")
    parameter = next(iter(model.parameters()), None)
    reference = parameter if parameter is not None else next(iter(model.buffers()))
    device, dtype = reference.device, reference.dtype
    full_layers = model.layers
    task = _Task(model, binding, config, device, dtype)
    info = task.info
    learned_parameters = _learned_parameters(model, info)
    if not learned_parameters:
        raise ValueError(f"{type(model).__name__} learns nothing: add a `learn` statement to the unfold")
    phases = plan(config, full_layers)
    total_steps = sum(p.steps for p in phases)
    out_dir = Path(out) if out is not None else None
    writer = rank == 0 and out_dir is not None
    if writer:
        out_dir.mkdir(parents=True, exist_ok=True)

    state: dict[str, Any] = {
        "step": 0,
        "phase": 0,
        "phase_start": 0,
        "best_score": math.inf,
        "best_model": None,
        "best_step": None,
        "bad_evaluations": 0,
        "history": [],
        "losses": [],
        "stopped": None,
    }
    optimizer_state = None
    if resume:
        if out_dir is None:
            raise ValueError("resume=True needs the run's folder: out=...")
        checkpoint = load_checkpoint(out_dir)
        _check_resume(config, checkpoint["config"])
        if config.milestones is None:
            config.milestones = checkpoint["config"]["milestones"]
            phases = plan(config, full_layers)
            total_steps = sum(p.steps for p in phases)
        model.load_state_dict(checkpoint["model"])
        optimizer_state = checkpoint["optimizer"]
        for key in STATE_KEYS:
            state[key] = checkpoint[key]
        initial = checkpoint["initial"]
        torch.set_rng_state(checkpoint["torch_rng"])
        if config.scheme != "layerwise" and state["phase"] >= len(phases) and state["step"] < total_steps:
            state["phase"], state["phase_start"] = 0, 0  # more steps for a finished run: go on, fresh optimizer
    else:
        if config.milestones is None and config.scheme != "layerwise":
            config.milestones = list(phases[0].milestones)
        initial = {
            "learned": learned_values(model),
            "evaluation": task.evaluate(model),
        }
    baseline_results = {name: task.evaluate(other) for name, other in (baselines or {}).items()}
    start_step = state["step"]

    def save_checkpoint(optimizer: torch.optim.Optimizer | None, status: str = "running") -> Path | None:
        """Rank 0 writes the resume state; ``optimizer`` None at a phase boundary (the next phase
        starts a fresh optimizer)."""
        if not writer:
            return None
        payload = {
            "format": FORMAT,
            "status": status,
            "config": asdict(config),
            "model": model.state_dict(),
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            **{key: state[key] for key in STATE_KEYS},
            "initial": initial,
            "torch_rng": torch.get_rng_state(),
            "world": world,
            "extra": dict(extra or {}),
        }
        path = out_dir / CHECKPOINT
        atomic_save(payload, path)
        return path

    progress_bar = _progress(total_steps, start_step, config.scheme, progress and rank == 0)
    started = time.perf_counter()
    shown = {"val_" + k: v[-1] for k, v in initial["evaluation"].items() if k in ("nmse_db", "objective")}
    if state["history"]:
        shown = state["history"][-1]
    try:
        while state["phase"] < len(phases) and state["stopped"] is None:
            phase = phases[state["phase"]]
            model.layers = phase.layers
            masks = _configure_phase(model, info, learned_parameters, phase, full_layers)
            trainable = [p for p in learned_parameters if p.requires_grad]
            optimizer = torch.optim.Adam(trainable, lr=phase.lr)
            if optimizer_state is not None:
                optimizer.load_state_dict(optimizer_state)
                optimizer_state = None
            network = _wrap(model, world, device)
            weights = (
                _layer_weights(config.layer_weights, phase.layers) if config.scheme == "deep-supervision" else None
            )
            if len(phases) > 1:
                progress_bar.set_description(f"{config.scheme} ({phase.name})")
            while True:
                step = state["step"]
                if step - state["phase_start"] >= phase.steps:
                    _finish_phase(model, config, state)
                    save_checkpoint(None)
                    break
                if stop_after is not None and step >= stop_after:
                    state["stopped"] = "interrupted"
                    save_checkpoint(optimizer)
                    break
                for group in optimizer.param_groups:
                    group["lr"] = _lr_at(phase, step - state["phase_start"], config.gamma)
                inputs, targets = task.batch(step, rank, world)
                loss_value = _loss(task, network, inputs, targets, config.scheme, weights)
                value = float(loss_value.detach())
                if not _all_finite(value, world, device):
                    progress_bar.close()
                    _diverged(f"the loss is {value}", step, save_checkpoint(optimizer, "diverged"))
                optimizer.zero_grad(set_to_none=True)
                loss_value.backward()
                for parameter, mask in masks:
                    if parameter.grad is not None:
                        parameter.grad.mul_(mask)
                norm = _gradient_norm(trainable, config.clip)
                if not math.isfinite(norm):
                    progress_bar.close()
                    _diverged(f"the gradient norm is {norm}", step, save_checkpoint(optimizer, "diverged"))
                optimizer.step()
                state["step"] = step = step + 1
                state["losses"].append(value)
                early_stop = False
                if step % config.val_every == 0 or step - state["phase_start"] == phase.steps:
                    evaluation = task.evaluate(model)
                    score = _score(evaluation, config.scheme)
                    record = {"step": step, "phase": phase.name, "loss": value, "lr": optimizer.param_groups[0]["lr"]}
                    record |= {"val_" + k: v[-1] for k, v in evaluation.items() if k in ("nmse_db", "objective")}
                    state["history"].append(record)
                    shown = record
                    if score < state["best_score"]:
                        state["best_score"] = score
                        state["best_model"] = copy.deepcopy(model.state_dict())
                        state["best_step"] = step
                        state["bad_evaluations"] = 0
                    else:
                        state["bad_evaluations"] += 1
                        early_stop = config.patience is not None and state["bad_evaluations"] >= config.patience
                progress_bar.update(1)
                progress_bar.set_postfix(_postfix(value, shown, config.scheme), refresh=False)
                if early_stop:
                    if state["phase"] == len(phases) - 1:
                        state["stopped"] = "early stopping"
                    _finish_phase(model, config, state)
                    save_checkpoint(None)
                    break
                if step % config.checkpoint_every == 0:
                    save_checkpoint(optimizer)
        if state["stopped"] is None:
            state["stopped"] = "completed"
    finally:
        model.layers = full_layers
        _configure_phase(model, info, learned_parameters, None, full_layers)
        progress_bar.close()
    seconds = time.perf_counter() - started

    final = task.evaluate(model)
    metrics = _metrics(model, task, config, state, initial, final, baseline_results, total_steps, world, extra, phases)
    metrics["seconds"] = seconds
    metrics["rank_max_parameter_difference"] = _rank_difference(model, world)
    if writer:
        atomic_save(
            {"model": model.state_dict(), "config": asdict(config), "extra": dict(extra or {})}, out_dir / MODEL_FILE
        )
        atomic_write_text(json.dumps(metrics, indent=2, allow_nan=True) + "\n", out_dir / METRICS)
        if state["stopped"] != "interrupted":
            write_plots(metrics, out_dir)
    return FitResult(model, metrics, state["stopped"], state["step"], out_dir, state["history"])


# ---------------------------------------------------------------------- fit's pieces


def _validate(config: Config) -> None:
    if config.scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {config.scheme!r}; expected one of {', '.join(SCHEMES)}")
    if config.loss not in LOSSES:
        raise ValueError(f"unknown loss {config.loss!r}; expected one of {', '.join(LOSSES)}")
    for name in ("steps", "batch", "val_size", "val_every", "checkpoint_every"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")
    if not config.lr > 0:
        raise ValueError(f"lr must be positive, got {config.lr}")


STATE_KEYS = (
    "step",
    "phase",
    "phase_start",
    "best_score",
    "best_model",
    "best_step",
    "bad_evaluations",
    "history",
    "losses",
)

RESUME_KEYS = (
    "scheme",
    "batch",
    "lr",
    "gamma",
    "loss",
    "layer_weights",
    "finetune_factor",
    "clip",
    "val_size",
    "val_every",
    "patience",
    "restore_best",
    "seed",
)


def _check_resume(config: Config, stored: Mapping[str, Any]) -> None:
    keys = RESUME_KEYS + (("steps",) if config.scheme == "layerwise" else ())
    differ = [
        f"{k}: {stored.get(k)!r} in the checkpoint, {getattr(config, k)!r} now"
        for k in keys
        if stored.get(k) != getattr(config, k)
    ]
    if config.milestones is not None and stored.get("milestones") != config.milestones:
        differ.append(f"milestones: {stored.get('milestones')!r} in the checkpoint, {config.milestones!r} now")
    if differ:
        raise ValueError("cannot resume with different settings: " + "; ".join(differ))


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


def _loss(
    task: _Task,
    network: nn.Module,
    inputs: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    scheme: str,
    weights: list[float] | None,
) -> Tensor:
    if scheme == "deep-supervision":
        iterates = network(**inputs, return_iterates=True)
        total = sum(w * task.supervised(_as_tuple(o), targets) for w, o in zip(weights, iterates, strict=True) if w)
        return total / sum(weights)
    outputs = _as_tuple(network(**inputs))
    if scheme == "unsupervised":
        return task.objective(inputs, outputs).mean()
    return task.supervised(outputs, targets)


def _gradient_norm(parameters: list[nn.Parameter], clip: float | None) -> float:
    grads = [p for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    if clip is not None:
        return float(torch.nn.utils.clip_grad_norm_(grads, clip))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in grads])))


def _diverged(what: str, step: int, checkpoint: Path | None) -> None:
    where = f"; the last good state (after {step} steps) is in {checkpoint}" if checkpoint else ""
    raise TrainingDivergedError(
        f"training stopped at step {step + 1}: {what}{where}. Try a lower learning rate (--lr) or gradient "
        f"clipping (--clip)",
        step,
        checkpoint,
    )


def _finish_phase(model: nn.Module, config: Config, state: dict) -> None:
    """End of a phase: keep its best parameters, reset the early-stopping record."""
    if config.restore_best and state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    state["phase"] += 1
    state["phase_start"] = state["step"]
    state["best_score"] = math.inf
    state["best_model"] = None
    state["best_step"] = None
    state["bad_evaluations"] = 0


def _postfix(loss: float, record: Mapping[str, Any], scheme: str) -> dict[str, str]:
    shown = {"loss": f"{loss:.4g}"}
    if "val_nmse_db" in record:
        shown["val_nmse_db"] = f"{record['val_nmse_db']:.2f}"
    if "val_objective" in record and (scheme == "unsupervised" or "val_nmse_db" not in record):
        shown["val_objective"] = f"{record['val_objective']:.4g}"
    return shown


class _NoProgress:
    def update(self, *args: Any) -> None: ...
    def set_postfix(self, *args: Any, **kwargs: Any) -> None: ...
    def set_description(self, *args: Any) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, initial: int, description: str, enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=initial,
        desc=description,
        unit="step",
        dynamic_ncols=True,
        mininterval=0.1 if interactive else 10.0,  # a log file gets a line every 10 s, not every step
    )


def _metrics(
    model: nn.Module,
    task: _Task,
    config: Config,
    state: dict,
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
        "stopped": state["stopped"],
        "steps_done": state["step"],
        "steps_planned": total_steps,
        "processes": world,
        "data": task.binding.source.description,
        "layers": model.layers,
        "parameter_counts": {str(k): v for k, v in model.parameter_counts().items()},
        "loss": state["losses"],
        "history": state["history"],
        "validation_size": config.val_size,
        "validation": validation,
        "initial_label": initial_label,
        "learned": learned,
        **({"extra": dict(extra)} if extra else {}),
    }


# ---------------------------------------------------------------------- plots


def write_plots(metrics: Mapping[str, Any], folder: Path) -> list[Path]:
    """``nmse_per_layer.png`` (or ``objective_per_layer.png`` without ground truth) and
    ``hyperparameters.png`` (learned scalars per layer against their classical values)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    curves = metrics["validation"]
    key = "nmse_db" if "nmse_db" in curves["trained"] else "objective"
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, evaluation in curves.items():
        values = evaluation.get(key)
        if not values:
            continue
        style: dict[str, Any] = {"marker": "o", "markersize": 3, "label": label}
        if label == "trained":
            style["label"] = f"{metrics['model']} (trained, {metrics['scheme']})"
            style["linewidth"] = 2
        elif label == metrics["initial_label"]:
            style |= {"label": f"{metrics['model']} ({label}, untrained)", "linestyle": "--", "color": "gray"}
        axes.plot(range(1, len(values) + 1), values, **style)
    axes.set_xlabel("layer / iteration")
    axes.set_ylabel("validation NMSE (dB)" if key == "nmse_db" else "validation objective")
    if key == "objective":
        axes.set_yscale("log")
    axes.set_title(f"{metrics['model']}: validation {'NMSE' if key == 'nmse_db' else 'objective'} per layer")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = folder / ("nmse_per_layer.png" if key == "nmse_db" else "objective_per_layer.png")
    figure.savefig(path, dpi=120)
    plt.close(figure)
    written.append(path)

    learned = metrics["learned"]
    shown = [(name, entry) for name, entry in learned.items() if entry["kind"] in ("scalar", "tensor")]
    if shown:
        figure, axes_list = plt.subplots(1, len(shown), figsize=(3.2 * len(shown) + 0.8, 3.2), squeeze=False)
        for axes, (name, entry) in zip(axes_list[0], shown, strict=True):
            key = "value" if entry["kind"] == "scalar" else "norm"
            values, start = entry[key], entry.get("initial_" + key)
            values = values if isinstance(values, list) else [values] * metrics["layers"]
            axes.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label="learned")
            if start is not None:
                start = start if isinstance(start, list) else [start] * len(values)
                axes.plot(range(1, len(start) + 1), start, linestyle="--", color="gray", label="initial")
            axes.set_title(f"{name}{'' if key == 'value' else ' (norm)'}{'' if entry['per_layer'] else ' (shared)'}")
            axes.set_xlabel("layer")
            axes.grid(alpha=0.3)
        axes_list[0][0].legend(fontsize=8)
        figure.tight_layout()
        path = folder / "hyperparameters.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        written.append(path)
    return written


# ---------------------------------------------------------------------- loading a trained run


def load_trained(folder: str | Path, which: str = "model") -> nn.Module:
    """Rebuild the model of a ``unfoldgen train`` run and load its trained parameters
    (``which='checkpoint'``: the last checkpoint's)."""
    from unfoldgen.data import source_from_string

    folder = Path(folder)
    state = torch.load(
        folder / (MODEL_FILE if which == "model" else CHECKPOINT), map_location="cpu", weights_only=False
    )
    run = state.get("extra", {}).get("run")
    if run is None:
        raise ValueError(f"{folder} was not written by `unfoldgen train` (no run record); rebuild the model yourself")
    source = source_from_string(run["data"], seed=run["data_seed"])
    model = prepare(
        run["spec"],
        run["unfold"],
        source,
        dtype=getattr(torch, run["dtype"]),
        layers=run["layers"],
        overrides=run["overrides"],
        seed=run["seed"],
        require_targets=False,
        text=run["spec_text"],
    ).model
    model.load_state_dict(state["model"])
    return model


# ---------------------------------------------------------------------- the command line


def _parse_overrides(items: Sequence[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise DataError(f"--set expects NAME=VALUE, got {item!r}")
        overrides[name.strip()] = value.strip()
    return overrides


def _parse_weights(text: str | None) -> str | list[float]:
    if text is None:
        return "uniform"
    if text in ("uniform", "linear", "last"):
        return text
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise DataError(f"--weights: expected uniform, linear, last or comma-separated numbers, got {text!r}") from None


def run_from_args(args: Any, argv: Sequence[str]) -> int:
    """``unfoldgen train``: build the model from the spec and the data source, then ``fit``."""
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch(args.nproc, argv, args.threads)
    torch.set_num_threads(args.threads)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not torch.distributed.is_initialized():
        device = _device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    else:
        device = _device(args.device, 0)
    try:
        return _train(args, device)
    finally:
        if distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DataError("--device cuda: no CUDA device is available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def _launch(nproc: int, argv: Sequence[str], threads: int) -> int:
    """Start ``nproc`` ranks with torch's own launcher, each running this command without --nproc."""
    import subprocess

    rest: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--nproc":
            skip = True
            continue
        if item.startswith("--nproc="):
            continue
        rest.append(item)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc-per-node={nproc}",
        "-m",
        "unfoldgen",
        *rest,
    ]
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads))
    return subprocess.run(command, env=environment, check=False).returncode


RUN_KEYS = (
    "scheme",
    "steps",
    "batch",
    "lr",
    "milestones",
    "gamma",
    "loss",
    "weights",
    "finetune_factor",
    "clip",
    "val_size",
    "val_every",
    "patience",
    "checkpoint_every",
    "seed",
)


def _train(args: Any, device: torch.device) -> int:
    from unfoldgen.data import source_from_string

    rank, _ = _world()
    if args.resume is not None:
        out = Path(args.resume)
        stored = load_checkpoint(out).get("extra", {}).get("run")
        if stored is None:
            raise DataError(f"{out}: the checkpoint has no `unfoldgen train` record; resume it with fit(resume=True)")
        run = dict(stored)
        if args.steps is not None:
            run["steps"] = args.steps
        spec_text = run["spec_text"]
    else:
        if args.spec is None or args.data is None:
            raise DataError("unfoldgen train needs SPEC and --data SOURCE (or --resume DIR)")
        from unfoldgen.compiler import read_spec

        spec_text = read_spec(Path(args.spec))
        run = {
            "spec": str(args.spec),
            "spec_text": spec_text,
            "unfold": args.unfold,
            "data": args.data,
            "data_seed": args.seed,
            "dtype": args.dtype,
            "layers": args.layers,
            "overrides": _parse_overrides(args.set or []),
            "baselines": list(args.baseline or []),
            **{key: getattr(args, key) for key in RUN_KEYS},
        }
        run["steps"] = run["steps"] or 300
        out = Path(args.out) if args.out else None
    source = source_from_string(run["data"], seed=run["data_seed"])
    prepared = prepare(
        run["spec"],
        run["unfold"],
        source,
        baselines=run["baselines"],
        dtype=getattr(torch, run["dtype"]),
        layers=run["layers"],
        overrides=run["overrides"],
        seed=run["seed"],
        device=device,
        require_targets=run["scheme"] != "unsupervised",
        text=spec_text,
    )
    model, binding, baselines, loaded = prepared.model, prepared.binding, prepared.baselines, prepared.loaded
    unfold = loaded.unfold(run["unfold"])
    run["unfold"] = unfold.name
    if out is None:
        out = Path("runs") / unfold.name
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for relative, text in loaded.compiled.files.items():
            if relative.split("/")[0] == unfold.name:
                target = out / "generated" / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
    try:
        result = fit(
            model,
            binding,
            run["scheme"],
            steps=run["steps"],
            batch=run["batch"],
            lr=run["lr"],
            milestones=run["milestones"],
            gamma=run["gamma"],
            loss=run["loss"],
            layer_weights=_parse_weights(run["weights"]),
            finetune_factor=run["finetune_factor"],
            clip=None if run["clip"] is not None and run["clip"] <= 0 else run["clip"],
            val_size=run["val_size"],
            val_every=run["val_every"],
            patience=run["patience"],
            checkpoint_every=run["checkpoint_every"],
            seed=run["seed"],
            out=out,
            resume=args.resume is not None,
            stop_after=args.stop_after,
            baselines=baselines,
            progress=not args.no_progress,
            extra={"run": run},
        )
    except TrainingDivergedError as err:
        if rank == 0:
            print(f"unfoldgen: {err}", file=sys.stderr)
        return 1
    if rank == 0:
        print(summary(result.metrics))
        print(f"\n{result.stopped} after {result.steps} steps; results in {out}/")
    return 0


def summary(metrics: Mapping[str, Any]) -> str:
    """The validation table: NMSE (dB) per layer of the trained model and each comparison."""
    curves = metrics["validation"]
    key = "nmse_db" if "nmse_db" in curves["trained"] else "objective"
    columns = {("trained" if name == "trained" else name): e[key] for name, e in curves.items() if e.get(key)}
    width = max(12, *(len(n) + 2 for n in columns))
    unit = "NMSE (dB)" if key == "nmse_db" else "objective"
    lines = [f"validation {unit} per layer ({metrics['validation_size']} samples, {metrics['data']})"]
    lines.append(f"{'layer':>5} " + "".join(f"{name:>{width}}" for name in columns))
    lines.append("-" * len(lines[-1]))
    for k in range(max(len(v) for v in columns.values())):
        cells = "".join(f"{v[k]:>{width}.2f}" if k < len(v) else " " * width for v in columns.values())
        lines.append(f"{k + 1:>5} " + cells)
    return "\n".join(lines)


__all__ = [
    "SCHEMES",
    "Config",
    "DataError",
    "FitResult",
    "LoadedSpec",
    "ModelInfo",
    "TrainingDivergedError",
    "atomic_save",
    "build_model",
    "describe",
    "fit",
    "learned_values",
    "load_checkpoint",
    "load_spec",
    "load_trained",
    "summary",
    "write_plots",
]
