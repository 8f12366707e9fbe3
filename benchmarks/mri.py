"""Study 4 of issue 14: compressed-sensing MRI, classical ℓ1-Haar solvers against unfolded networks.

y = M ⊙ (F x + n): 128×128 complex images (the held-out test images camera, astronaut, chelsea, in
magnitude, times a smooth random phase), F the orthonormal unshifted 2-D DFT, M a Cartesian mask
of whole phase-encode lines (acceleration 4: 32 of 128 lines, the 10 of lowest frequency always
kept, the rest uniform at random), complex Gaussian noise of σ = 0.01 (the ``mri:`` data source,
``unfoldgen.kspace``). Scores: PSNR and SSIM (skimage.metrics, data range 1) of the magnitudes,
the estimate's clipped to [0, 1].

Rows, every classical one a numpy reference written here (complex128) for
min_x ½‖M ⊙ F x − y‖² + λ‖W x‖₁, W the orthonormal Haar transform with 3 levels (every
coefficient, the approximation's too, as ``haar`` does in the specs), ‖M F‖ = 1 so the step is 1:

- zero-filled: Fᴴ y;
- ISTA, FISTA and ADMM (the splitting z = W x, penalty ρ) at K iterations, each with its own λ
  (and ρ) tuned on training images over a grid;
- the problem's minimiser (FISTA until the relative change of x is below a tolerance), λ tuned on
  training images at convergence, and ADMM run to the same tolerance with that λ (the same
  minimiser: a check of both solvers);
- the unfolded networks of ``specs/mri.unf``, compiled in-process and trained with
  ``unfoldgen.training.fit`` (MSE to the complex image) on the ``mri:`` source's training split,
  each starting as classical ISTA at K layers with its tuned λ: ``mri_ista`` learns the step μ and
  the threshold θ of every layer; ``mri_istanet`` (ISTA-Net style) learns them and two conv2d
  corrections per layer, F of the analysis transform (haar(v) + F(v)) and G of the synthesis
  (ihaar(z) + G(z)), both zero at the start.

It writes ``mri.json`` (``--out``, default benchmarks/results), two plots (``--img``, default
docs/img: ``mri_examples.png``, ``mri_per_layer.png``) and keeps each training run's folder under
``--runs`` (default runs/mri, ignored by git). ``--quick`` is the small variant the test suite
runs (32×32 images, K = 8, a few steps per network).

    .venv/bin/python benchmarks/mri.py                   # full study (2 networks × --minutes)
    .venv/bin/python benchmarks/mri.py --quick           # smoke-sized variant, well under a minute
    .venv/bin/python benchmarks/mri.py --networks none   # the classical rows only
    .venv/bin/python benchmarks/mri.py --device cuda --steps 3000   # the networks on a GPU

On one CPU thread a training step at 128×128, batch 8, K = 10 took 0.7 s for ``mri_ista`` and
6 s for ``mri_istanet`` (its 20 conv nets; measured on a loaded 2-core machine): ten minutes buy
ISTA-Net about a hundred steps, so it is the GPU run that trains it.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.study_training import train_supervised  # noqa: E402
from unfoldgen import images, kspace  # noqa: E402
from unfoldgen.data import bind, mri_source, slots_from_problem  # noqa: E402
from unfoldgen.training import load_spec  # noqa: E402

SPEC = ROOT / "specs" / "mri.unf"
TUNE_STREAM = 4  # the data sources use 0 (fixed), 1 (training), 2 (validation) and 3 (measurement noise)
PROBE_STREAM = 5  # the batch the step time is measured on
HAAR_LEVELS = 3  # as in specs/mri.unf


# ---------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Network:
    key: str
    label: str
    unfold: str
    lr: float
    classical: str  # the row it starts from and is compared with at equal depth


@dataclass(frozen=True)
class Study:
    mode: str
    size: int
    acceleration: float
    center: float
    noise: float
    layers: int
    batch: int
    minutes: float  # training budget per network
    max_steps: int  # cap on the steps the budget buys
    val_size: int
    val_every: int
    tune_size: int  # training images the classical λ (and ρ) are tuned on
    tune_converged_size: int  # the first of them, for the (costly) converged solver
    lam_grid: tuple[float, ...]
    rho_grid: tuple[float, ...]
    max_iterations: int  # the converged solvers' cap
    tolerance: float  # relative change of x below which a solver has converged
    networks: tuple[Network, ...]
    steps: int | None = None  # a fixed number of Adam steps per network instead of the time budget
    device: str = "cpu"  # where the networks train and run (fit follows the model); the references: numpy


NETWORKS = (
    Network("ista_learned", "ISTA ℓ1-Haar, learned μ, θ per layer", "mri_ista", 1e-3, "ista_layers"),
    Network("istanet", "ISTA-Net-style, learned transform corrections", "mri_istanet", 1e-3, "ista_layers"),
)


def lam_grid(low: float, factor: float, count: int) -> tuple[float, ...]:
    return tuple(low * factor**k for k in range(count))


FULL = Study(
    mode="full",
    size=128,
    acceleration=4.0,
    center=0.08,
    noise=0.01,
    layers=10,
    batch=8,
    minutes=10.0,
    max_steps=20_000,
    val_size=16,
    val_every=100,
    tune_size=16,
    tune_converged_size=8,
    lam_grid=lam_grid(1e-3, math.sqrt(2), 13),  # 0.001 … 0.064
    rho_grid=(0.1, 0.3, 1.0, 3.0),
    max_iterations=3000,
    tolerance=1e-6,
    networks=NETWORKS,
)

QUICK = Study(
    mode="quick",
    size=32,
    acceleration=4.0,
    center=0.08,
    noise=0.01,
    layers=8,
    batch=4,
    minutes=0.05,
    max_steps=30,
    val_size=4,
    val_every=10,
    tune_size=4,
    tune_converged_size=4,
    lam_grid=lam_grid(1e-3, 2.0, 8),  # 0.001 … 0.128
    rho_grid=(0.3, 1.0, 3.0),
    max_iterations=300,
    tolerance=1e-4,
    networks=NETWORKS,
)


# ---------------------------------------------------------------------- metrics


def magnitude(x: np.ndarray | Tensor) -> np.ndarray:
    """|x| as float64 numpy, whatever x is (a complex tensor of a model, a complex array)."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().to(torch.complex128).numpy()
    return np.abs(np.asarray(x))


def psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(truth, np.clip(estimate, 0.0, 1.0), data_range=1.0))


def ssim(estimate: np.ndarray, truth: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(truth, np.clip(estimate, 0.0, 1.0), data_range=1.0))


def mean_psnr(estimates: np.ndarray | Tensor, truth: np.ndarray) -> float:
    """Mean PSNR of the magnitudes over a batch (the tuning criterion)."""
    return statistics.fmean(psnr(e, t) for e, t in zip(magnitude(estimates), magnitude(truth), strict=True))


def scores(estimates: np.ndarray | Tensor, truth: np.ndarray) -> dict[str, Any]:
    """PSNR and SSIM of the magnitudes per test image and their means."""
    estimated, clean = magnitude(estimates), magnitude(truth)
    per_psnr = [psnr(e, t) for e, t in zip(estimated, clean, strict=True)]
    per_ssim = [ssim(e, t) for e, t in zip(estimated, clean, strict=True)]
    return {
        "psnr": statistics.fmean(per_psnr),
        "ssim": statistics.fmean(per_ssim),
        "psnr_per_image": dict(zip(images.TEST_IMAGES, per_psnr, strict=True)),
        "ssim_per_image": dict(zip(images.TEST_IMAGES, per_ssim, strict=True)),
    }


# ---------------------------------------------------------------------- classical references (numpy)


class Haar:
    """The orthonormal Haar transform of batches (B, size, size) with ``levels`` levels, laid out
    as ``pywt.coeffs_to_array`` does (the layout of the specs' ``haar``); complex arrays are
    transformed in their real and imaginary parts."""

    def __init__(self, size: int, levels: int = HAAR_LEVELS) -> None:
        import pywt

        self.pywt, self.levels = pywt, levels
        _, slices = pywt.coeffs_to_array(self._decompose(np.zeros((1, size, size))), axes=(-2, -1))
        # the layout of one image; the batch axis is taken whole whatever its length
        self.slices = [(slice(None), *slices[0][1:])] + [
            {key: (slice(None), *where[1:]) for key, where in level.items()} for level in slices[1:]
        ]

    def _decompose(self, x: np.ndarray) -> list[Any]:
        return self.pywt.wavedec2(x, "haar", mode="periodization", level=self.levels, axes=(-2, -1))

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.pywt.coeffs_to_array(self._decompose(x), axes=(-2, -1))[0]

    def inverse(self, c: np.ndarray) -> np.ndarray:
        coefficients = self.pywt.array_to_coeffs(c, self.slices, output_format="wavedec2")
        return self.pywt.waverec2(coefficients, "haar", mode="periodization", axes=(-2, -1))


def soft(c: np.ndarray, threshold: float) -> np.ndarray:
    """Complex soft thresholding: shrink the modulus by ``threshold``, keep the phase."""
    modulus = np.abs(c)
    return c * np.maximum(0.0, 1.0 - threshold / np.maximum(modulus, np.finfo(np.float64).tiny))


def _prox_step(v: np.ndarray, lam: float, haar: Haar) -> np.ndarray:
    """The prox of λ‖W·‖₁ (step 1) for the orthonormal W: Wᴴ soft(W v, λ)."""
    return haar.inverse(soft(haar.forward(v), lam))


def _gradient(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The gradient of ½‖M ⊙ F x − y‖² with respect to complex x (2 ∂f/∂x̄): Fᴴ(M ⊙ F x − y)."""
    return kspace.ifft2(mask * kspace.fft2(x) - y)


def ista(y: np.ndarray, mask: np.ndarray, lam: float, haar: Haar) -> Iterator[np.ndarray]:
    """ISTA from x = 0 with the step 1/L = 1: the iterates x₁, x₂, …"""
    x = np.zeros_like(y)
    while True:
        x = _prox_step(x - _gradient(x, y, mask), lam, haar)
        yield x


def fista(y: np.ndarray, mask: np.ndarray, lam: float, haar: Haar) -> Iterator[np.ndarray]:
    """FISTA (Beck and Teboulle) from x = 0 with the step 1."""
    x = z = np.zeros_like(y)
    t = 1.0
    while True:
        x_new = _prox_step(z - _gradient(z, y, mask), lam, haar)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
        yield x


def admm(y: np.ndarray, mask: np.ndarray, lam: float, rho: float, haar: Haar) -> Iterator[np.ndarray]:
    """Scaled ADMM on the splitting z = W x from x = z = u = 0. The x-step solves
    (Fᴴ M F + ρ I) x = Fᴴ y + ρ Wᴴ(z − u) (WᴴW = I), diagonal in k-space; z = soft(W x + u, λ/ρ)."""
    z = u = np.zeros_like(y)
    while True:
        x = kspace.ifft2((y + rho * kspace.fft2(haar.inverse(z - u))) / (mask + rho))
        c = haar.forward(x)
        z = soft(c + u, lam / rho)
        u = u + c - z
        yield x


def layers_of(iterates: Iterator[np.ndarray], count: int) -> list[np.ndarray]:
    return [next(iterates) for _ in range(count)]


def converge(iterates: Iterator[np.ndarray], max_iterations: int, tolerance: float) -> tuple[np.ndarray, int, bool]:
    """Iterate until the relative change of x of every image is below ``tolerance``, or
    ``max_iterations``: (x, iterations, converged)."""
    x = next(iterates)
    for iteration in range(2, max_iterations + 1):
        new = next(iterates)
        change = np.linalg.norm(new - x, axis=(-2, -1)) / np.maximum(np.linalg.norm(new, axis=(-2, -1)), 1e-300)
        x = new
        if change.max() < tolerance:
            return x, iteration, True
    return x, max_iterations, False


# ---------------------------------------------------------------------- data and models


class Setup:
    """The mask, the test and tuning data (the ``mri:`` source's), the Haar transform, and the
    spec compiled once, in-process, when a network is built."""

    def __init__(self, study: Study, seed: int) -> None:
        self.study, self.seed = study, seed
        options = {"size": study.size, "acceleration": study.acceleration, "center": study.center}
        self.options = options | {"noise": study.noise, "seed": seed}
        test = mri_source(split="test", **self.options).validation(len(images.TEST_IMAGES))
        self.test_y, self.test_x = test["y"], test["x"]
        tuning = mri_source(split="train", **self.options).draw(study.tune_size, (seed, TUNE_STREAM))
        self.tune_y, self.tune_x = tuning["y"], tuning["x"]
        self.mask = mri_source(**self.options).fixed["M"]
        self.haar = Haar(study.size)
        self.bindings: dict[str, Any] = {}

    @cached_property
    def loaded(self) -> Any:
        return load_spec(SPEC)

    def binding(self, unfold: str) -> Any:
        problem = self.loaded.unfold(unfold).problem
        if problem.name not in self.bindings:
            self.bindings[problem.name] = bind(mri_source(split="train", **self.options), slots_from_problem(problem))
        return self.bindings[problem.name]

    def build(self, unfold: str, overrides: Mapping[str, Any], dtype: torch.dtype = torch.float32) -> nn.Module:
        """The generated module of ``unfold`` at K layers with the mask as its data (float32 data:
        complex64 values), overrides of its initial values, nets initialised from the seed."""
        torch.manual_seed(self.seed)
        cls = self.loaded.model_class(unfold)
        mask = torch.as_tensor(self.mask, dtype=dtype)
        return cls(M=mask, dtype=dtype, layers=self.study.layers, **overrides).to(self.study.device)

    def test_input(self) -> Tensor:
        return torch.as_tensor(self.test_y, dtype=torch.complex64, device=self.study.device)


@torch.no_grad()
def evaluate(model: nn.Module, setup: Setup) -> tuple[dict[str, Any], list[float], np.ndarray]:
    iterates = model(setup.test_input(), return_iterates=True)
    curve = [mean_psnr(x, setup.test_x) for x in iterates]
    return scores(iterates[-1], setup.test_x), curve, magnitude(iterates[-1])


# ---------------------------------------------------------------------- tuning the classical solvers


def grid_search(grid: Sequence[dict[str, float]], score: Callable[[dict[str, float]], float]) -> dict[str, Any]:
    """The grid point of the highest score; every score is kept (and whether the best lies on the
    grid's edge in λ, where a wider grid could do better)."""
    started = time.perf_counter()
    results = [score(point) for point in grid]
    best = int(np.argmax(results))
    lams = sorted({point["lam"] for point in grid})
    return {
        "values": dict(grid[best]),
        "tune_psnr": results[best],
        "grid": [dict(point, psnr=value) for point, value in zip(grid, results, strict=True)],
        "lam_at_grid_edge": grid[best]["lam"] in (lams[0], lams[-1]),
        "seconds": time.perf_counter() - started,
    }


def tune_classical(setup: Setup, study: Study) -> dict[str, Any]:
    """λ of ISTA and FISTA at K iterations, λ and ρ of ADMM at K, and λ of the minimiser (FISTA to
    convergence on the first ``tune_converged_size`` images), each maximising the mean PSNR on
    training images (the ``mri:`` source's training split, a stream of their own)."""
    y, x, mask, haar, K = setup.tune_y, setup.tune_x, setup.mask, setup.haar, study.layers
    y_converged, x_converged = y[: study.tune_converged_size], x[: study.tune_converged_size]
    lams = [{"lam": lam} for lam in study.lam_grid]
    pairs = [{"lam": lam, "rho": rho} for lam in study.lam_grid for rho in study.rho_grid]

    def at_depth(solver: Callable[..., Iterator[np.ndarray]]) -> Callable[[dict[str, float]], float]:
        return lambda p: mean_psnr(layers_of(solver(y, mask, **p, haar=haar), K)[-1], x)

    def converged(p: dict[str, float]) -> float:
        solution, _, _ = converge(fista(y_converged, mask, p["lam"], haar), study.max_iterations, study.tolerance)
        return mean_psnr(solution, x_converged)

    return {
        "images": len(x),
        "images_converged": len(x_converged),
        "ista_layers": grid_search(lams, at_depth(ista)),
        "fista_layers": grid_search(lams, at_depth(fista)),
        "admm_layers": grid_search(pairs, at_depth(admm)),
        "converged": grid_search(lams, converged),
    }


# ---------------------------------------------------------------------- the unfolded networks


def initial_values(network: Network, tuned: Mapping[str, Any]) -> dict[str, float]:
    """Every network starts as its classical algorithm at K layers: the λ tuned for it, the step
    μ = 1/L = 1 (‖M F‖ = 1 for a 0/1 mask; the spec's power iteration gives a safe value a little
    below it), the threshold θ at its default μλ, and ISTA-Net's transform corrections at zero."""
    return {"lam": tuned[network.classical]["values"]["lam"], "mu": 1.0}


def step_seconds(model: nn.Module, setup: Setup, study: Study, repeats: int = 3) -> float:
    """Seconds of one Adam step (forward, MSE loss, backward, update) at the training batch size,
    on a copy of the model, after one warm-up step."""
    model = copy.deepcopy(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)
    sample = mri_source(split="train", **setup.options).draw(study.batch, (setup.seed, PROBE_STREAM))
    y, x = (torch.as_tensor(sample[name], dtype=torch.complex64, device=study.device) for name in ("y", "x"))
    synchronize = torch.cuda.synchronize if torch.device(study.device).type == "cuda" else (lambda: None)
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        loss = (model(y) - x).abs().pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def train(setup: Setup, network: Network, model: nn.Module, study: Study, runs: Path) -> dict[str, Any]:
    """Train ``model`` (the compiled ``network.unfold``, built at its initial values) in place
    with ``fit``, supervised by the MSE to the complex image, for ``study.steps`` Adam steps or else
    the steps ``study.minutes`` buy at the measured step time (90 % of the budget: validation and
    data take the rest); on a divergence start again from the initial state at a third of the
    learning rate (``fit_restarting``)."""
    seconds = step_seconds(model, setup, study)
    steps = study.steps or max(1, min(study.max_steps, int(0.9 * study.minutes * 60 / seconds)))
    binding = setup.binding(network.unfold)
    summary = train_supervised(
        model, binding, study, steps=steps, lr=network.lr, seed=setup.seed, out=runs / network.unfold
    )
    return {**summary, "step_seconds_probe": seconds}


def learned_count(model: nn.Module) -> int:
    return int(sum(model.parameter_counts().values()))


def learned_scalars(model: nn.Module) -> dict[str, list[float]]:
    """The learned scalars per layer (μ, θ)."""
    out = {}
    for name in ("mu", "theta"):
        value = getattr(model, name, None)
        if isinstance(value, nn.ParameterList):
            out[name] = [float(v.detach()) for v in value]
    return out


# ---------------------------------------------------------------------- the study


@dataclass
class Row:
    key: str
    label: str
    kind: str  # "input", "classical" or "unfolded"
    test: dict[str, Any]
    per_layer: list[float] = field(default_factory=list)  # mean test PSNR after every layer
    values: dict[str, float] = field(default_factory=dict)  # the tuned λ (and ρ)
    iterations: int | None = None
    spec: str | None = None
    parameters: int | None = None
    untrained: dict[str, Any] | None = None  # the network before training (its classical algorithm)
    classical: str | None = None
    training_seconds: float | None = None
    steps: int | None = None
    lr: float | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    loss_first_quarter: float | None = None
    loss_last_quarter: float | None = None
    learned: dict[str, list[float]] = field(default_factory=dict)


def classical_rows(setup: Setup, tuned: Mapping[str, Any], study: Study) -> tuple[list[Row], dict[str, np.ndarray]]:
    y, x, mask, haar, K = setup.test_y, setup.test_x, setup.mask, setup.haar, study.layers
    reconstructions = {"truth": magnitude(x)}
    zero_filled = kspace.zero_filled(y)
    reconstructions["zero_filled"] = magnitude(zero_filled)
    rows = [Row("zero_filled", "zero-filled Fᴴy", "input", scores(zero_filled, x))]
    solvers = {"ista_layers": ("ISTA", ista), "fista_layers": ("FISTA", fista), "admm_layers": ("ADMM", admm)}
    for key, (name, solver) in solvers.items():
        values = tuned[key]["values"]
        iterates = layers_of(solver(y, mask, **values, haar=haar), K)
        reconstructions[key] = magnitude(iterates[-1])
        curve = [mean_psnr(iterate, x) for iterate in iterates]
        shown = ", ".join(f"{'λ' if n == 'lam' else 'ρ'} = {v:.3g}" for n, v in values.items())
        rows.append(Row(key, f"{name}, K = {K} ({shown})", "classical", scores(iterates[-1], x), curve, values, K))
    lam = tuned["converged"]["values"]["lam"]
    rho = tuned["admm_layers"]["values"]["rho"]
    for key, name, iterates in (
        ("fista_converged", "ℓ1-Haar minimiser (FISTA", fista(y, mask, lam, haar)),
        ("admm_converged", f"ADMM to convergence (ρ = {rho:.3g}", admm(y, mask, lam, rho, haar)),
    ):
        solution, iterations, done = converge(iterates, study.max_iterations, study.tolerance)
        reconstructions[key] = magnitude(solution)
        label = f"{name}, {iterations} it.{'' if done else ', cap'}, λ = {lam:.3g})"
        values = {"lam": lam} if key == "fista_converged" else {"lam": lam, "rho": rho}
        rows.append(Row(key, label, "classical", scores(solution, x), values=values, iterations=iterations))
    return rows, reconstructions


def network_row(setup: Setup, network: Network, tuned: Mapping[str, Any], study: Study, runs: Path) -> tuple[Row, Any]:
    overrides = initial_values(network, tuned)
    model = setup.build(network.unfold, overrides)
    untrained, _, _ = evaluate(model, setup)
    trained = train(setup, network, model, study, runs)
    test, curve, out = evaluate(model, setup)
    row = Row(
        network.key,
        network.label,
        "unfolded",
        test,
        curve,
        values=overrides,
        iterations=study.layers,
        spec=f"mri.unf: {network.unfold}",
        parameters=learned_count(model),
        untrained=untrained,
        classical=network.classical,
        training_seconds=trained["seconds"],
        steps=trained["steps"],
        lr=trained["attempts"][-1]["lr"],
        attempts=trained["attempts"],
        loss_first_quarter=trained["loss_first_quarter"],
        loss_last_quarter=trained["loss_last_quarter"],
        learned=learned_scalars(model),
    )
    return row, out


def run_study(study: Study, seed: int, runs: Path, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    setup = Setup(study, seed)
    lines = int(setup.mask[:, 0].sum())
    log(f"data: {study.size}×{study.size}, {lines} of {study.size} lines, noise σ {study.noise}")
    tuned = tune_classical(setup, study)
    log(
        "tuned: "
        + "; ".join(
            f"{key} " + " ".join(f"{name}={value:.3g}" for name, value in tuned[key]["values"].items())
            for key in ("ista_layers", "fista_layers", "admm_layers", "converged")
        )
    )
    rows, reconstructions = classical_rows(setup, tuned, study)
    log(" ".join(f"{row.key} {row.test['psnr']:.2f}" for row in rows) + " dB")
    for network in study.networks:
        row, out = network_row(setup, network, tuned, study, runs)
        rows.append(row)
        reconstructions[network.key] = out
        log(
            f"{network.unfold}: {row.test['psnr']:.2f} dB (untrained {row.untrained['psnr']:.2f}) after "
            f"{row.steps} steps, {row.training_seconds:.0f} s, {row.parameters} learned"
        )
    results = {
        "study": "compressed-sensing MRI (issue 14, study 4)",
        "mode": study.mode,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "config": _config_json(study),
        "setting": {
            "test_images": list(images.TEST_IMAGES),
            "train_images": list(images.TRAIN_IMAGES),
            "data": "mri:" + ",".join(f"{k}={v}" for k, v in setup.options.items()),
            "lines": lines,
            "mask_rows": [int(r) for r in np.flatnonzero(setup.mask[:, 0])],
            "transform": "orthonormal unshifted 2-D DFT (DC at (0, 0)); lines are rows",
            "prior": f"λ‖W x‖₁, W orthonormal Haar, {HAAR_LEVELS} levels, every coefficient",
            "scores": "PSNR and SSIM (skimage.metrics, data_range=1) of magnitudes, estimates clipped to [0, 1]",
            "classical_dtype": "complex128 (numpy)",
            "network_dtype": "complex64",
        },
        "classical": tuned,
        "rows": [asdict(r) for r in rows],
        "seconds_total": time.perf_counter() - started,
    }
    results["conclusions"] = conclusions(results)
    results["_reconstructions"] = reconstructions  # for the plots; not written to the JSON
    return results


def conclusions(results: Mapping[str, Any]) -> dict[str, Any]:
    """What the numbers say: gains over zero-filled, equal-depth comparisons, the minimiser check."""
    rows = {row["key"]: row for row in results["rows"]}
    psnr_of = {key: row["test"]["psnr"] for key, row in rows.items()}
    out: dict[str, Any] = {
        "gain_over_zero_filled_db": {
            key: value - psnr_of["zero_filled"] for key, value in psnr_of.items() if key != "zero_filled"
        },
        "converged_minus_ista_layers_db": psnr_of["fista_converged"] - psnr_of["ista_layers"],
        # the same minimiser by two solvers: their PSNR must agree
        "admm_minus_fista_converged_db": psnr_of["admm_converged"] - psnr_of["fista_converged"],
    }
    unfolded = [row for row in results["rows"] if row["kind"] == "unfolded"]
    if unfolded:
        best = max(unfolded, key=lambda row: row["test"]["psnr"])
        out["networks_minus_classical_at_equal_depth_db"] = {
            row["key"]: row["test"]["psnr"] - psnr_of[row["classical"]] for row in unfolded
        }
        out["best_network"] = best["key"]
        out["best_network_minus_converged_db"] = best["test"]["psnr"] - psnr_of["fista_converged"]
    return out


def _config_json(study: Study) -> dict[str, Any]:
    config = asdict(study)
    config["networks"] = [asdict(n) for n in study.networks]
    return config


# ---------------------------------------------------------------------- report


def table(results: Mapping[str, Any]) -> str:
    """The markdown table of the study."""
    names = results["setting"]["test_images"]
    lines = [
        "| method | learned | PSNR dB | SSIM | " + " / ".join(names) + " | iterations | training |",
        "|---|---|---|---|---|---|---|",
    ]
    best = max(row["test"]["psnr"] for row in results["rows"])
    for row in results["rows"]:
        value = f"{row['test']['psnr']:.2f}"
        value = f"**{value}**" if row["test"]["psnr"] == best else value
        per_image = " / ".join(f"{row['test']['psnr_per_image'][n]:.2f}" for n in names)
        learned = "—" if row["parameters"] is None else f"{row['parameters']:,}"
        training = "—"
        if row["training_seconds"] is not None:
            training = f"{row['training_seconds'] / 60:.1f} min ({row['steps']:,} steps)"
        iterations = "—" if row["iterations"] is None else str(row["iterations"])
        lines.append(
            f"| {row['label']} | {learned} | {value} | {row['test']['ssim']:.4f} | {per_image} | "
            f"{iterations} | {training} |"
        )
    return "\n".join(lines)


COLORS = {
    "zero_filled": "silver",
    "ista_layers": "tab:cyan",
    "fista_layers": "tab:purple",
    "admm_layers": "tab:brown",
    "fista_converged": "black",
    "admm_converged": "gray",
    "ista_learned": "tab:blue",
    "istanet": "tab:red",
}


def plots(results: Mapping[str, Any], folder: Path, image: int = 0) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    rows = {row["key"]: row for row in results["rows"]}
    reconstructions = results["_reconstructions"]
    name = results["setting"]["test_images"][image]
    K = results["config"]["layers"]
    written = []

    # magnitudes of one test image, the mask (k-space rows, fftshifted: low frequencies in the middle)
    panels = ["truth", *rows]
    columns = 4
    grid_rows = math.ceil((len(panels) + 1) / columns)
    figure, grid = plt.subplots(grid_rows, columns, figsize=(3.1 * columns, 3.7 * grid_rows), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    size = results["config"]["size"]
    mask = np.zeros((size, size))
    mask[results["setting"]["mask_rows"]] = 1
    first = grid.flat[0]
    first.imshow(np.fft.fftshift(mask), cmap="gray", vmin=0, vmax=1)
    first.set_title(f"mask, {results['setting']['lines']} of {size} lines\n(fftshifted)", fontsize=8)
    for axes, key in zip(list(grid.flat)[1:], panels, strict=False):
        axes.imshow(np.clip(reconstructions[key][image], 0, 1), cmap="gray", vmin=0, vmax=1)
        title = (
            f"{name} (|x|)"
            if key == "truth"
            else f"{rows[key]['label']}\n{rows[key]['test']['psnr_per_image'][name]:.2f} dB"
        )
        axes.set_title(title, fontsize=7)
    figure.tight_layout()
    path = folder / "mri_examples.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written.append(path)

    # PSNR per layer
    figure, axes = plt.subplots(figsize=(9, 4.4))
    layers = range(1, K + 1)
    for row in results["rows"]:
        if row["per_layer"]:
            style = "-o" if row["kind"] == "unfolded" else "--o"
            axes.plot(layers, row["per_layer"], style, ms=3, color=COLORS.get(row["key"]), label=row["label"])
    for key, style in (("fista_converged", ":"), ("zero_filled", "--")):
        axes.axhline(rows[key]["test"]["psnr"], color=COLORS[key], linestyle=style, label=rows[key]["label"])
    axes.set_ylim(bottom=rows["zero_filled"]["test"]["psnr"] - 1.0)  # ADMM's first iterates lie far below
    axes.set_xlabel("layer (iteration)")
    axes.set_ylabel("mean test PSNR of |x| (dB)")
    axes.set_title(f"CS-MRI, acceleration {results['config']['acceleration']:g}: PSNR per layer")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    path = folder / "mri_per_layer.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    written.append(path)
    return written


# ---------------------------------------------------------------------- entry point


def chosen_networks(text: str | None) -> tuple[Network, ...]:
    if text is None:
        return NETWORKS
    if text == "none":
        return ()
    known = {network.key: network for network in NETWORKS}
    keys = [key.strip() for key in text.split(",") if key.strip()]
    unknown = [key for key in keys if key not in known]
    if unknown:
        raise SystemExit(
            f"--networks {text}: unknown {', '.join(unknown)}; expected none or some of {', '.join(known)}"
        )
    return tuple(known[key] for key in keys)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (32×32 images, K=8), well under a minute")
    parser.add_argument("--minutes", type=float, help="training budget per network (default 10; --quick 0.05)")
    parser.add_argument("--steps", type=int, help="a fixed number of Adam steps per network instead of --minutes")
    parser.add_argument("--device", default="cpu", help="where the networks train and run: cpu (default), cuda")
    parser.add_argument("--networks", help="comma-separated keys of the networks to train (default all; none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="folder for the JSON (benchmarks/results; --quick: build/mri_quick)")
    parser.add_argument("--img", type=Path, help="folder for the PNG plots (docs/img; --quick: none unless given)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "mri", help="training runs (checkpoints)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    study = replace(QUICK if args.quick else FULL, networks=chosen_networks(args.networks))
    if args.minutes is not None:
        study = replace(study, minutes=args.minutes)
    if args.steps is not None:
        study = replace(study, steps=args.steps)
    study = replace(study, device=args.device)
    out = args.out or (ROOT / "benchmarks" / "results" if study.mode == "full" else ROOT / "build" / "mri_quick")

    def log(text: str) -> None:
        if not args.quiet:
            print(text, flush=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the study's budget is one CPU thread per network
    try:
        results = run_study(study, args.seed, args.runs / study.mode, log)
    finally:
        torch.set_num_threads(threads)
    reconstructions = results.pop("_reconstructions")
    out.mkdir(parents=True, exist_ok=True)
    name = "mri.json" if study.mode == "full" else f"mri_{study.mode}.json"
    (out / name).write_text(json.dumps(results, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    img = args.img or (ROOT / "docs" / "img" if study.mode == "full" else None)
    written = plots(results | {"_reconstructions": reconstructions}, img) if img is not None else []
    log("")
    log(table(results))
    log("")
    log(json.dumps(results["conclusions"], indent=2))
    log(f"\n{out / name}; plots: {', '.join(str(p) for p in written) or 'none (quick run)'}")
    log(f"total {results['seconds_total'] / 60:.1f} min")
    return results


if __name__ == "__main__":
    main()
