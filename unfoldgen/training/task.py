"""What a run optimises and measures: the model's interface, the data as tensors, the losses of
the four schemes and the validation metrics per layer (NMSE in dB, the objective)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from unfoldgen.data import Binding, DataError
from unfoldgen.training.config import Config, ConfigError
from unfoldgen.training.loading import as_tensor, describe


def as_tuple(output: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return output if isinstance(output, tuple) else (output,)


def layer_weights(spec: str | Sequence[float], layers: int) -> list[float]:
    if isinstance(spec, str):
        if spec == "uniform":
            return [1.0] * layers
        if spec == "linear":
            return [float(k + 1) for k in range(layers)]
        if spec == "last":
            return [0.0] * (layers - 1) + [1.0]
        raise ConfigError(f"layer_weights={spec!r}: expected uniform, linear, last or a list of {layers} numbers")
    weights = [float(w) for w in spec]
    if len(weights) != layers or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"layer_weights={weights}: expected {layers} non-negative numbers with a positive sum")
    return weights


def squared_magnitude(value: Tensor) -> Tensor:
    """|v|² entrywise: v² for real values, the squared modulus for complex ones."""
    return value.abs().square() if value.is_complex() else value.pow(2)


class Task:
    """The model's interface, the data as tensors, and the losses and metrics of a run."""

    def __init__(self, model: nn.Module, binding: Binding, config: Config, device: torch.device, dtype: torch.dtype):
        self.model = model
        self.info = describe(model)
        if binding.measured is None:  # the source degrades its data with the model's forward model
            binding = binding.with_measured(measured_inputs(model, binding))
        self.binding = binding
        self.config = config
        self.device = device
        self.dtype = dtype
        val_inputs, val_targets = binding.validation(config.val_size)
        for name, value in {**val_inputs, **val_targets}.items():
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            if bad:
                raise DataError(f"the validation array {name!r} holds {bad} NaN/Inf values; expected finite numbers")
        self.val_targets = self.tensors(val_targets)
        count = len(next(iter({**val_inputs, **val_targets}.values()))) if val_inputs or val_targets else 0
        self.val_inputs = self.tensors(val_inputs)
        self.val_inputs |= self.measure(self.val_inputs, self.val_targets, None, slice(None), count)
        self.validation_size = count or config.val_size
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
            name: float(squared_magnitude(value).flatten(1).sum(1).mean()) if self.has_targets else 1.0
            for name, value in self.val_targets.items()
        }
        for name, energy in self.energy.items():
            if energy <= 0:
                raise DataError(f"the validation targets for {name!r} are all zero: NMSE is undefined")

    def tensors(self, arrays: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
        return {name: as_tensor(value, self.dtype, self.device) for name, value in arrays.items()}

    def batch(self, step: int, rank: int, world: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """This rank's shard of the global batch of ``step``."""
        inputs, targets = self.binding.train_batch(step, self.config.batch)
        share = self.config.batch // world
        part = slice(rank * share, (rank + 1) * share)
        inputs = self.tensors({k: v[part] for k, v in inputs.items()})
        targets = self.tensors({k: v[part] for k, v in targets.items()})
        return inputs | self.measure(inputs, targets, step, part, self.config.batch), targets

    @torch.no_grad()
    def measure(
        self, inputs: Mapping[str, Tensor], targets: Mapping[str, Tensor], step: int | None, part: slice, total: int
    ) -> dict[str, Tensor]:
        """The measured inputs of a batch (none unless the source asks for them): the model's
        noise-free forward model ``model.measure(**variables, **other_inputs)`` at the clean
        variables plus the binding's noise for the whole batch of ``total`` samples (rows ``part``
        of it are this shard's), so every batch stays a function of (seed, step)."""
        if not self.binding.measured:
            return {}
        # measure() takes the values its forward model reads (the variables, masks, …), by name
        wanted = inspect.signature(self.model.measure).parameters
        given = {**{name: targets[name] for name in self.info.variables}, **inputs}
        clean = self.model.measure(**{name: value for name, value in given.items() if name in wanted})
        measured = {}
        for name in sorted(self.binding.measured):
            if name not in clean:
                raise DataError(
                    f"{type(self.model).__name__}.measure() returned {', '.join(clean) or 'nothing'}; expected {name!r}"
                )
            value = clean[name].detach()
            noise = self.binding.noise(name, (total, *value.shape[1:]), step)[part]
            measured[name] = value + torch.as_tensor(noise, dtype=value.dtype, device=value.device)
        return measured

    def supervised(self, outputs: tuple[Tensor, ...], targets: Mapping[str, Tensor]) -> Tensor:
        """Σ over outputs of mean_i ||x̂_i − x_i||² / E||x||² (nmse) or / entries (mse)."""
        total = outputs[0].real.new_zeros(())  # a real loss, also for complex outputs
        for name, estimate in zip(self.info.outputs, outputs, strict=True):
            variable = self.info.targets.get(name)
            if variable is None:
                continue
            error = squared_magnitude(estimate - targets[variable]).flatten(1).sum(1).mean()
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
            iterates = [as_tuple(o) for o in model(**self.val_inputs, return_iterates=True)]
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
                    e = float(squared_magnitude(estimate - self.val_targets[variable]).sum())
                    t = float(squared_magnitude(self.val_targets[variable]).sum())
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


def measured_inputs(model: nn.Module, binding: Binding) -> tuple[str, ...]:
    """The inputs the model's forward model produces (``type(model).MEASURED``), for a source that
    degrades its data with it; a DataError when the model has no ``measure``."""
    measured = getattr(type(model), "MEASURED", None)
    if not callable(getattr(model, "measure", None)) or measured is None:
        raise DataError(
            f"the {binding.source.name} source degrades its data with the spec's forward model, but "
            f"{type(model).__name__} has no measure() method and MEASURED names; recompile the spec with this unfoldgen"
        )
    return tuple(measured)


def _db(ratio: float) -> float:
    return float(10 * math.log10(ratio)) if ratio > 0 and math.isfinite(ratio) else float("nan")


def validation_score(evaluation: Mapping[str, Any], scheme: str) -> float:
    """Lower is better: the last layer's objective for unsupervised training (it never looks at
    the ground truth), else its NMSE."""
    if scheme == "unsupervised" or "nmse_db" not in evaluation:
        return evaluation["objective"][-1]
    return evaluation["nmse_db"][-1]


def scheme_loss(
    task: Task,
    network: nn.Module,
    inputs: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    scheme: str,
    weights: list[float] | None,
) -> Tensor:
    if scheme == "deep-supervision":
        iterates = network(**inputs, return_iterates=True)
        total = sum(w * task.supervised(as_tuple(o), targets) for w, o in zip(weights, iterates, strict=True) if w)
        return total / sum(weights)
    outputs = as_tuple(network(**inputs))
    if scheme == "unsupervised":
        return task.objective(inputs, outputs).mean()
    return task.supervised(outputs, targets)
