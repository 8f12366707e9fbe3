"""Torch modules for the spec's nets; copied verbatim into generated model files.

Every net maps its arguments (each of shape ``(B, r, c)``) to a tensor shaped like the first
argument. ``zero_init`` zeroes the last layer, so a net added as a correction starts at zero
and the untrained network is still the classical solver. ``activation`` names the nonlinearity
between layers (``activation_layer``).
"""

import torch
from torch import Tensor, nn


def activation_layer(name: str) -> nn.Module:
    """relu, tanh, or gelu in its tanh approximation (which numba kernels compute exactly)."""
    layers = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": lambda: nn.GELU(approximate="tanh")}
    if name not in layers:
        raise ValueError(f"activation must be one of {', '.join(layers)}, got {name!r}")
    return layers[name]()


class Mlp(nn.Module):
    """Flatten and concatenate the arguments, ``depth`` hidden layers of width ``hidden``."""

    def __init__(
        self, in_features: int, out_features: int, hidden: int, depth: int, activation: str, zero_init: bool
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), activation_layer(activation)]
            width = hidden
        last = nn.Linear(width, out_features)
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.body = nn.Sequential(*layers, last)

    def forward(self, *args: Tensor) -> Tensor:
        first = args[0]
        batch = torch.broadcast_shapes(*(a.shape[:-2] for a in args))
        flat = [a.expand(*batch, *a.shape[-2:]).flatten(-2) for a in args]
        return self.body(torch.cat(flat, dim=-1)).view(*batch, *first.shape[-2:])


class Conv1dNet(nn.Module):
    """Arguments flattened to sequences and stacked as channels; ``depth`` conv layers."""

    def __init__(self, channels: int, hidden: int, depth: int, kernel: int, activation: str, zero_init: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = channels
        for _ in range(depth):
            layers += [nn.Conv1d(width, hidden, kernel, padding=kernel // 2), activation_layer(activation)]
            width = hidden
        last = nn.Conv1d(width, 1, kernel, padding=kernel // 2)
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.body = nn.Sequential(*layers, last)

    def forward(self, *args: Tensor) -> Tensor:
        first = args[0]
        batch = torch.broadcast_shapes(*(a.shape[:-2] for a in args))
        stacked = torch.stack([a.expand(*batch, *a.shape[-2:]).flatten(-2) for a in args], dim=-2)
        out = self.body(stacked.reshape(-1, *stacked.shape[-2:]))
        return out.view(*batch, *first.shape[-2:])


class Conv2dNet(nn.Module):
    """Matrix arguments stacked as image channels; ``depth`` conv layers (CORONA-style)."""

    def __init__(self, channels: int, hidden: int, depth: int, kernel: int, activation: str, zero_init: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = channels
        for _ in range(depth):
            layers += [nn.Conv2d(width, hidden, kernel, padding=kernel // 2), activation_layer(activation)]
            width = hidden
        last = nn.Conv2d(width, 1, kernel, padding=kernel // 2)
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.body = nn.Sequential(*layers, last)

    def forward(self, *args: Tensor) -> Tensor:
        first = args[0]
        batch = torch.broadcast_shapes(*(a.shape[:-2] for a in args))
        stacked = torch.stack([a.expand(*batch, *a.shape[-2:]) for a in args], dim=-3)
        out = self.body(stacked.reshape(-1, *stacked.shape[-3:]))
        return out.view(*batch, *first.shape[-2:])
