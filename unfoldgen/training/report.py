"""What a run reports: learned values per layer, the validation table, the plots and the
progress bar.

Plots need matplotlib, an optional extra (``pip install 'unfoldgen[plot]'``): without it a run
writes everything else and says so in one line."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unfoldgen.training.checkpoints import atomic_write_bytes, figure_bytes
from unfoldgen.training.loading import describe

PLOT_EXTRA = "pip install 'unfoldgen[plot]'"
PLOTS = ("nmse_per_layer.png", "objective_per_layer.png", "hyperparameters.png")


def learned_values(model: nn.Module) -> dict[str, Any]:
    """Every learned quantity per layer: scalars as values, tensors and nets as norms."""
    info = describe(model)
    report = {}
    bounded = getattr(model, "BOUNDED", {})
    for name, (paradigm, per_layer) in info.learned.items():
        value = getattr(model, name)
        entry: dict[str, Any] = {"paradigm": paradigm, "per_layer": per_layer}
        if name in bounded:  # a Bounded module: report its constrained values, not the raw ones
            entry["bounds"] = value.text
            value = value.values()
        if isinstance(value, nn.ParameterList) and all(p.dim() == 0 for p in value):
            entry["kind"] = "scalar"
            entry["value"] = [float(p.detach()) for p in value]
        elif isinstance(value, nn.ParameterList):
            entry["kind"] = "tensor"
            entry["norm"] = [float(_magnitude(p).norm()) for p in value]
        elif isinstance(value, nn.Module):
            modules = list(value) if isinstance(value, nn.ModuleList) else [value]
            norms = [float(torch.sqrt(sum((_magnitude(p) ** 2).sum() for p in m.parameters()))) for m in modules]
            entry["kind"] = "net"
            entry["parameter_norm"] = norms if per_layer else norms[0]
        else:
            tensor = _magnitude(value).cpu()
            if tensor.dim() == (1 if per_layer else 0):
                entry["kind"] = "scalar"
                entry["value"] = tensor.tolist()
            else:
                entry["kind"] = "tensor"
                entry["norm"] = [float(t.norm()) for t in tensor] if per_layer else float(tensor.norm())
        report[name] = entry
    return report


def _magnitude(value: torch.Tensor) -> torch.Tensor:
    """A learned tensor as float64 for the report: a complex one by its moduli."""
    value = value.detach()
    return (value.abs() if value.is_complex() else value).double()


def postfix(loss: float, record: Mapping[str, Any], scheme: str) -> dict[str, str]:
    shown = {"loss": f"{loss:.4g}"}
    if "val_nmse_db" in record:
        shown["val_nmse_db"] = f"{record['val_nmse_db']:.2f}"
    if "val_objective" in record and (scheme == "unsupervised" or "val_nmse_db" not in record):
        shown["val_objective"] = f"{record['val_objective']:.4g}"
    return shown


class NoProgress:
    def update(self, *args: Any) -> None: ...
    def set_postfix(self, *args: Any, **kwargs: Any) -> None: ...
    def set_description(self, *args: Any) -> None: ...
    def close(self) -> None: ...


def progress_bar_for(total: int, initial: int, description: str, enabled: bool) -> Any:
    if not enabled:
        return NoProgress()
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


def write_plots(metrics: Mapping[str, Any], folder: Path) -> list[Path]:
    """``nmse_per_layer.png`` (or ``objective_per_layer.png`` without ground truth) and
    ``hyperparameters.png`` (learned scalars per layer against their classical values).

    Without matplotlib: nothing is drawn, and one line on stderr names the extra that draws."""
    try:
        import matplotlib
    except ImportError:
        print(f"unfoldgen: note: no plots written: matplotlib is not installed ({PLOT_EXTRA})", file=sys.stderr)
        return []
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
    atomic_write_bytes(figure_bytes(figure), path)
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
        atomic_write_bytes(figure_bytes(figure), path)
        plt.close(figure)
        written.append(path)
    return written


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
