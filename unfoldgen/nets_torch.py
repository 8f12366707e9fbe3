"""Torch modules for the spec's nets; copied verbatim into generated model files.

Every net maps its arguments (each of shape ``(B, r, c)``, for conv2d also ``(B, c, h, w)``) to
a tensor shaped like the first argument. ``zero_init`` zeroes the last layer, so a net added as
a correction starts at zero and the untrained network is still the classical solver.
``activation`` names the nonlinearity between layers (``activation_layer``). ``external_net``
calls a module the caller passes (an ``external`` net) in the layout torch modules take.
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
    """A CNN on image arguments: DnCNN-like (residual yes) or CORONA-like blocks (residual no).

    The arguments are stacked as channels, u = [a_1; …; a_m]: an image (B, h, w) is one channel
    (``channels`` entry None), a channel stack (B, c, h, w) is c of them. Then
    h_0 = u, h_l = σ(W_l ⋆ h_{l-1} + b_l) for l = 1 … depth (``hidden`` channels each), and
    N(u) = W_{depth+1} ⋆ h_depth + b_{depth+1} with the first argument's channels, where ⋆ is
    torch's 2-D convolution (a cross-correlation) with kernel × kernel taps and zero padding
    kernel // 2, so (h, w) is kept. No batch norm: training and inference compute the same.
    The net returns N(u), or with ``residual`` "yes" a_1 − N(u) (the CNN estimates what to remove,
    as DnCNN estimates the noise). ``zero_init`` zeroes W_{depth+1} and b_{depth+1}: N(u) = 0.
    """

    def __init__(
        self,
        channels: tuple[int | None, ...],
        hidden: int,
        depth: int,
        kernel: int,
        activation: str,
        residual: str,
        zero_init: bool,
    ) -> None:
        super().__init__()
        if residual not in ("yes", "no"):
            raise ValueError(f"residual must be yes or no, got {residual!r}")
        self.channels = tuple(channels)
        self.residual = residual == "yes"
        layers: list[nn.Module] = []
        width = sum(1 if count is None else count for count in self.channels)
        for _ in range(depth):
            layers += [nn.Conv2d(width, hidden, kernel, padding=kernel // 2), activation_layer(activation)]
            width = hidden
        last = nn.Conv2d(width, self.channels[0] or 1, kernel, padding=kernel // 2)
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.body = nn.Sequential(*layers, last)

    def forward(self, *args: Tensor) -> Tensor:
        stacks = [a.unsqueeze(-3) if count is None else a for a, count in zip(args, self.channels, strict=True)]
        batch = torch.broadcast_shapes(*(s.shape[:-3] for s in stacks))
        stacks = [s.expand(*batch, *s.shape[-3:]) for s in stacks]
        stacked = torch.cat(stacks, dim=-3)
        out = self.body(stacked.reshape(-1, *stacked.shape[-3:])).view(*batch, *stacks[0].shape[-3:])
        if self.residual:
            out = stacks[0] - out
        return out.squeeze(-3) if self.channels[0] is None else out


def external_net(module: nn.Module, name: str, layouts: tuple[str, ...]):
    """Call the caller's ``module`` (an ``external`` net) on arguments in the model's layout.

    Each argument is passed with one batch axis in front, as torch modules take it: a vector
    (B, n, 1) as (B, n), an image (B, h, w) as (B, 1, h, w), a channel stack (B, c, h, w) as is
    (``layouts``: "vector", "image" or "channels" per argument; a value shared by the batch is
    expanded to it). The module must return the first argument's passed shape; the result comes
    back in the model's layout.
    """
    trailing = {"vector": 2, "image": 2, "channels": 3}

    def passed(value: Tensor, layout: str, batch: torch.Size) -> Tensor:
        value = value.expand(*batch, *value.shape[value.dim() - trailing[layout] :])
        value = value.reshape(-1, *value.shape[len(batch) :])
        if layout == "vector":
            return value.squeeze(-1)
        return value.unsqueeze(-3) if layout == "image" else value

    def call(*args: Tensor) -> Tensor:
        pairs = list(zip(args, layouts, strict=True))
        batch = torch.broadcast_shapes(*(a.shape[: a.dim() - trailing[kind]] for a, kind in pairs))
        values = [passed(a, kind, batch) for a, kind in pairs]
        out = module(*values)
        if not isinstance(out, Tensor) or out.shape != values[0].shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"external net {name!r} returned {got}; expected {tuple(values[0].shape)}")
        out = out.unsqueeze(-1) if layouts[0] == "vector" else out.squeeze(-3) if layouts[0] == "image" else out
        return out.reshape(*batch, *out.shape[1:])

    return call
