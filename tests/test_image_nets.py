"""Nets on images (docs/language.md, "Nets"): conv2d on image arguments (B, h, w) and channel
stacks (B, c, h, w) — a residual denoiser that replaces a step (paradigm 4), a zero-started
correction (paradigm 3) — and the external slot, which calls a module the caller passes in."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import generated_source, load_class
from scipy import signal

from unfoldgen import graph, nets_torch
from unfoldgen.compiler import compile_text
from unfoldgen.data import npz_source
from unfoldgen.explain import explain
from unfoldgen.nets import NET_KINDS
from unfoldgen.training import Config, fit

PROBLEM = """\
problem denoise {
    dim h, w
    input y : real[h, w]
    var x : real[h, w] = y
    param lam : real = 0.1
    minimize 0.5 * sumsq(x - y) + lam * norm1(x)
}
"""

UNFOLDS = """
unfold ista from denoise {
    layers 4
    hyper mu : real = 0.5
    iterate { x = prox[mu * lam * norm1](x - mu * grad(x)) }
}
unfold hqs_cnn from denoise {
    layers 3
    hyper mu : real = 0.5
    net D : conv2d(hidden 6, depth 3, residual yes)
    iterate { x = D(x - mu * grad(x)) }
    learn mu per layer
    learn D shared
}
unfold ista_conv from denoise {
    layers 4
    hyper mu : real = 0.5
    net c : conv2d(hidden 4, depth 2, kernel 5)
    iterate { x = prox[mu * lam * norm1](x - mu * grad(x)) + c(x, y) }
    learn c per layer
}
unfold pnp from denoise {
    layers 3
    hyper mu : real = 0.5
    net D : external
    iterate { x = D(x - mu * grad(x)) }
    learn D shared
}
unfold pnp_frozen from denoise {
    layers 3
    hyper mu : real = 0.5
    net D : external()
    iterate { x = D(x - mu * grad(x)) }
    learn mu per layer
}
"""
SPEC = PROBLEM + UNFOLDS
BATCH, H, W = 3, 6, 7


def images(seed: int = 0, shape: tuple[int, ...] = (BATCH, H, W)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def ista_reference(y: np.ndarray, layers: int, mu: float = 0.5, lam: float = 0.1) -> np.ndarray:
    """ISTA on ½‖x − y‖² + λ‖x‖₁ from x = y, in numpy."""
    x = y.copy()
    for _ in range(layers):
        v = x - mu * (x - y)
        x = np.sign(v) * np.maximum(np.abs(v) - mu * lam, 0.0)
    return x


class Recorder(torch.nn.Module):
    """A tiny user denoiser that records the shapes it is called with."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(v.shape))
        return v - self.conv(v)


# ------------------------------------------------------------------------------ conv2d


def test_residual_denoiser_replaces_a_step_and_trains():
    model = load_class(SPEC, "hqs_cnn")(dtype=torch.float64)
    y = images()
    x = model(y)
    assert x.shape == y.shape and torch.isfinite(x).all()
    x.square().sum().backward()
    grads = [p.grad for p in model.D.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    kind = NET_KINDS["conv2d"]
    count = kind.parameter_count(kind.resolved({"hidden": 6, "depth": 3}), (("h", "w"),))
    assert int(count) == sum(p.numel() for p in model.D.parameters())
    assert model.PARADIGMS == {"mu": 1, "D": 4}
    assert model.parameter_counts()[4] == sum(p.numel() for p in model.D.parameters())


def test_residual_denoiser_is_first_argument_minus_the_cnn():
    """residual yes: D(v) = v − N(v); with its last layer zeroed, D is the identity."""
    net = nets_torch.Conv2dNet((None,), hidden=4, depth=2, kernel=3, activation="relu", residual="yes", zero_init=True)
    v = images().float()
    torch.testing.assert_close(net(v), v, rtol=0, atol=0)


def test_zero_started_conv_correction_is_the_classical_solver():
    y = images()
    with torch.no_grad():
        classical = load_class(SPEC, "ista")(dtype=torch.float64)(y)
        corrected = load_class(SPEC, "ista_conv")(dtype=torch.float64)(y)
    np.testing.assert_allclose(corrected.numpy(), ista_reference(y.numpy(), 4), rtol=0, atol=1e-12)
    np.testing.assert_allclose(classical.numpy(), corrected.numpy(), rtol=0, atol=1e-12)


def test_where_image_nets_start_is_explained():
    text = explain(SPEC, "spec.unf")
    assert "net           D starts random (it replaces a step)" in text
    assert "net           c starts at zero (a correction term)" in text
    assert "net           D is external: the nn.Module passed as D=" in text


def correlate_same(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """torch's conv2d with zero padding kernel // 2 (a cross-correlation), by scipy."""
    return signal.correlate2d(image, taps, mode="same", boundary="fill")


@pytest.mark.parametrize("residual", ["no", "yes"])
def test_conv2d_is_the_network_its_docstring_describes(residual):
    """Images and a channel stack stacked as channels, convolutions with zero padding, the
    activation between, the first argument's channels out; checked with scipy."""
    torch.manual_seed(0)
    net = nets_torch.Conv2dNet(
        (2, None), hidden=3, depth=1, kernel=3, activation="tanh", residual=residual, zero_init=False
    ).double()
    stack, image = images(1, (BATCH, 2, H, W)), images(2)
    with torch.no_grad():
        ours = net(stack, image).numpy()
    assert ours.shape == (BATCH, 2, H, W)
    state = {key: value.numpy() for key, value in net.state_dict().items()}
    for b in range(BATCH):
        channels = [stack[b, 0].numpy(), stack[b, 1].numpy(), image[b].numpy()]
        for layer, activate in [("body.0", np.tanh), ("body.2", None)]:
            taps, offsets = state[f"{layer}.weight"], state[f"{layer}.bias"]
            out = [
                sum(correlate_same(c, row[i]) for i, c in enumerate(channels)) + offset
                for row, offset in zip(taps, offsets, strict=True)
            ]
            channels = [activate(c) for c in out] if activate else out
        expected = np.stack(channels)
        if residual == "yes":
            expected = stack[b].numpy() - expected
        np.testing.assert_allclose(ours[b], expected, rtol=1e-12, atol=1e-12)


def test_conv2d_channels_shapes_and_parameter_count():
    """A channel stack first gives its channels out; a shared image (no batch axis) is broadcast."""
    torch.manual_seed(0)
    net = nets_torch.Conv2dNet(
        (3, None, None), hidden=5, depth=2, kernel=3, activation="relu", residual="no", zero_init=False
    ).double()
    out = net(images(1, (BATCH, 3, H, W)), images(2), images(3, (H, W)))
    assert out.shape == (BATCH, 3, H, W)
    count = NET_KINDS["conv2d"].parameter_count(
        NET_KINDS["conv2d"].resolved({"hidden": 5, "depth": 2}), (("c", "h", "w"), ("h", "w"), ("h", "w"))
    )
    assert int(count.subs({"c": 3})) == sum(p.numel() for p in net.parameters())
    assert str(count.free_symbols) == "{c}"


def test_conv2d_arguments_channel_stacks_and_refusals():
    """The entry's argument rule and size text for stacks (c, h, w), which the model binds c for."""
    kind = NET_KINDS["conv2d"]
    assert kind.check_args([("c", "h", "w"), ("h", "w")]) is None
    assert kind.sizes((("c", "h", "w"), ("h", "w"))) == "(c, None)"
    assert kind.sizes((("h", "w"),)) == "(None,)"
    assert "argument 2 is a vector (n)" in kind.check_args([("h", "w"), ("n", 1)])
    assert "argument 2 is w×h but argument 1 is h×w" in kind.check_args([("c", "h", "w"), ("c", "w", "h")])


# ---------------------------------------------------------------------------- external


def test_external_net_is_called_as_documented_and_trained_when_learned():
    recorder = Recorder().float()
    model = load_class(SPEC, "pnp")(D=recorder, dtype=torch.float64)
    assert model.D is recorder and recorder.conv.weight.dtype == torch.float64  # moved in place
    y = images()
    x = model(y)
    assert recorder.shapes == [(BATCH, 1, H, W)] * 3
    expected = y
    for _ in range(3):
        v = (expected - 0.5 * (expected - y)).unsqueeze(1)
        expected = (v - torch.nn.functional.conv2d(v, recorder.conv.weight, recorder.conv.bias, padding=1)).squeeze(1)
    torch.testing.assert_close(x, expected.detach(), rtol=0, atol=1e-12)
    assert sorted(model.state_dict()) == ["D.conv.bias", "D.conv.weight", "lam", "mu"]
    assert all(p.requires_grad for p in recorder.parameters())
    assert model.PARADIGMS == {"D": 4} and model.parameter_counts()[4] == 10


def test_external_net_not_learned_is_frozen_but_saved():
    recorder = Recorder()
    model = load_class(SPEC, "pnp_frozen")(D=recorder, dtype=torch.float64)
    assert not any(p.requires_grad for p in recorder.parameters())
    assert {"D.conv.weight", "D.conv.bias"} <= set(model.state_dict())
    assert model.PARADIGMS == {"mu": 1}
    model(images()).sum().backward()
    assert all(p.grad is not None for p in model.mu)


def test_external_net_is_drawn_with_the_modules_count():
    low = next(low for low in compile_text(SPEC, "spec.unf").lowered if low.name == "pnp")
    assert str(graph.learned_counts(low)["D"]) == "params(D)"
    assert "net D: external\nthe module passed in, starts as given" in graph.to_graph(low).source


def test_external_net_is_a_required_module():
    cls = load_class(SPEC, "pnp")
    with pytest.raises(TypeError, match="'D'"):
        cls()
    with pytest.raises(TypeError, match=r"D must be a torch\.nn\.Module"):
        cls(D=lambda v: v)


def test_external_net_returning_another_shape_is_refused():
    model = load_class(SPEC, "pnp")(D=torch.nn.Conv2d(1, 2, 3, padding=1), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"external net 'D' returned \(3, 2, 6, 7\); expected \(3, 1, 6, 7\)"):
        model(images())


def test_external_net_takes_vectors_as_rows():
    """A vector batch (B, n, 1) reaches the module as (B, n)."""
    spec = """\
problem lasso {
    dim m, n
    data  A : real[m, n]
    input y : real[m]
    var   x : real[n] = 0
    minimize 0.5 * sumsq(A @ x - y)
}
unfold pnp_vector from lasso {
    layers 2
    hyper mu : real = 1 / lipschitz(x)
    net D : external
    iterate { x = D(x - mu * grad(x), y) }
    learn D shared
}
"""

    class Concat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(9, 5)
            self.shapes: list[tuple[tuple[int, ...], ...]] = []

        def forward(self, v, y):
            self.shapes.append((tuple(v.shape), tuple(y.shape)))
            return self.linear(torch.cat([v, y], dim=-1))

    module = Concat()
    A = torch.randn(4, 5, dtype=torch.float64)
    model = load_class(spec)(A, D=module, dtype=torch.float64)
    x = model(torch.randn(BATCH, 4, dtype=torch.float64))
    assert x.shape == (BATCH, 5)
    assert module.shapes == [((BATCH, 5), (BATCH, 4))] * 2


def test_image_nets_have_no_kernels_and_an_external_net_trains_through_fit(tmp_path):
    compiled = compile_text(SPEC, "spec.unf")
    assert any("'pnp'" in note and "external nets have no numba implementation" in note for note in compiled.notes)
    assert any("'hqs_cnn'" in note and "conv2d nets have no numba implementation" in note for note in compiled.notes)
    assert "pnp/kernels.py" not in compiled.files
    assert "D: nn.Module," in generated_source(SPEC, "pnp")
    clean = images(4, (40, H, W)).numpy()
    np.savez(tmp_path / "pairs.npz", y=clean + 0.1 * images(5, (40, H, W)).numpy(), x=clean)
    recorder = Recorder()
    before = recorder.conv.weight.detach().clone()
    model = load_class(SPEC, "pnp")(D=recorder, dtype=torch.float64)
    result = fit(model, npz_source(tmp_path / "pairs.npz"), Config(steps=3, batch=8, lr=1e-2), progress=False)
    assert result.steps == 3
    assert not torch.equal(recorder.conv.weight.detach(), before)
