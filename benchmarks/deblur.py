"""Study 3 of issue 12: image deblurring, the four design paradigms side by side.

y = k ⊛ x + noise: 256×256 grayscale test images (camera, astronaut, chelsea, held out), a 9×9
Gaussian blur with σ = 1.6 pixels, noise σ = 0.01, a CIRCULAR boundary for both the degradation and
every solver (the degradation is the spec's own forward model, ``model.measure``). Classical
solvers, with their one free scalar tuned on training patches, against one trained network per
paradigm, all compiled from ``specs/deblur.unf`` in-process and trained with
``unfoldgen.training.fit`` on 64×64 patches of the training images (``unfoldgen.images``):

1. ``deblur_cp``            Chambolle–Pock TV, learned τ, σ, λ per layer
2. ``deblur_cp_kernels``    the same, plus the solver's blur kernel learned per layer
3. ``deblur_cp_corrected``  the same as 1, plus a zero-initialised conv2d correction (shared)
4. ``deblur_hqs``           half-quadratic splitting, a residual CNN as the z-step, μ per layer

Reference rows: the blurred input, a Wiener-type one-step solve (KᵀK + μI)⁻¹Kᵀy, Chambolle–Pock TV
at K layers and run to convergence (each with its own tuned λ), and HQS whose net is still zero
(K proximal-point steps on the data term, the untrained paradigm-4 network). Each network gets the
same wall-clock budget (``--minutes``, one CPU thread); the number of Adam steps is that budget
divided by a measured step time. Also measured: latency per 256×256 image, peak memory of one
training step at 256×256 and batch 4 with and without ``checkpoint_layers`` (each in a fresh
subprocess), the compile and build times of the spec, and deepinv's own unfolded networks on the
same data (``benchmarks/deepinv_side.py``, in its own venv; skipped cleanly where it cannot run).

It writes ``deblur.json`` (``--out``, default benchmarks/results), two plots (``--img``, default
docs/img: ``deblur_examples.png``, ``deblur_per_layer.png``) and keeps each training run's folder
under ``--runs`` (default runs/deblur, ignored by git). ``--quick`` is the small variant the test
suite runs (32×32 patches, 64×64 test images, K = 4, a few steps per network, no deepinv).

    .venv/bin/python benchmarks/deblur.py                  # full study (~60 min: 4 × 8 min + deepinv)
    .venv/bin/python benchmarks/deblur.py --quick          # smoke-sized variant
    .venv/bin/python benchmarks/deblur.py --no-deepinv --minutes 4
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.study_training import train_supervised  # noqa: E402
from unfoldgen import images  # noqa: E402
from unfoldgen.compiler import compile_text  # noqa: E402
from unfoldgen.data import bind, image_source, slots_from_problem  # noqa: E402
from unfoldgen.training import load_spec  # noqa: E402

SPEC = ROOT / "specs" / "deblur.unf"
TEST_STREAM = 3  # the data sources use 0 (fixed), 1 (training) and 2 (validation)
TUNE_STREAM = 4
DEEPINV_SKIP = 3  # deepinv_side.py's exit code when deepinv cannot run here


# ---------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Network:
    key: str
    paradigm: int
    label: str
    unfold: str
    lr: float
    classical: str  # the key of the row it is compared with at equal depth


@dataclass(frozen=True)
class Study:
    mode: str
    test_size: int  # side of the held-out test images
    patch: int  # side of the training patches
    blur: float
    kernel: int
    noise: float
    layers: int
    batch: int
    minutes: float  # training budget per network
    max_steps: int  # cap on the steps the budget buys
    val_size: int
    val_every: int
    tune_size: int  # training patches the classical values are tuned on
    tune_converged_size: int  # the first of them, for the (costly) converged solver
    max_iterations: int  # the converged solver's cap
    tolerance: float  # relative change of x below which it has converged
    latency_repeats: int
    memory_size: int  # side of the images of the memory probe
    memory_batch: int
    deepinv: bool
    deepinv_patches: int  # training patches written to the deepinv .npz
    networks: tuple[Network, ...]


NETWORKS = (
    Network("steps", 1, "1 CP-TV, learned τ, σ, λ", "deblur_cp", 1e-3, "cp_layers"),
    Network("kernels", 2, "2 CP-TV + learned kernels", "deblur_cp_kernels", 1e-3, "cp_layers"),
    Network("correction", 3, "3 CP-TV + conv correction", "deblur_cp_corrected", 1e-3, "cp_layers"),
    Network("hqs", 4, "4 HQS + CNN denoiser", "deblur_hqs", 3e-3, "hqs_layers"),
)

FULL = Study(
    mode="full",
    test_size=256,
    patch=64,
    blur=1.6,
    kernel=9,
    noise=0.01,
    layers=8,
    batch=4,
    minutes=8.0,
    max_steps=20_000,
    val_size=16,
    val_every=100,
    tune_size=64,
    tune_converged_size=16,
    max_iterations=3000,
    tolerance=1e-6,
    latency_repeats=7,
    memory_size=256,
    memory_batch=4,
    deepinv=True,
    deepinv_patches=2048,
    networks=NETWORKS,
)

QUICK = Study(
    mode="quick",
    test_size=64,
    patch=32,
    blur=1.6,
    kernel=9,
    noise=0.01,
    layers=4,
    batch=4,
    minutes=0.1,
    max_steps=40,
    val_size=4,
    val_every=10,
    tune_size=4,
    tune_converged_size=4,
    max_iterations=300,
    tolerance=1e-4,
    latency_repeats=2,
    memory_size=64,
    memory_batch=2,
    deepinv=False,
    deepinv_patches=64,
    networks=NETWORKS,
)


# ---------------------------------------------------------------------- data and metrics


def psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(truth, np.clip(estimate, 0.0, 1.0), data_range=1.0))


def ssim(estimate: np.ndarray, truth: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(truth, np.clip(estimate, 0.0, 1.0), data_range=1.0))


def scores(estimates: Tensor | np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """PSNR and SSIM (data range 1, the estimate clipped to [0, 1]) per test image and their means."""
    estimates = np.asarray(torch.as_tensor(estimates).detach().cpu().double())
    per_psnr = [psnr(e, t) for e, t in zip(estimates, truth, strict=True)]
    per_ssim = [ssim(e, t) for e, t in zip(estimates, truth, strict=True)]
    return {
        "psnr": statistics.fmean(per_psnr),
        "ssim": statistics.fmean(per_ssim),
        "psnr_per_image": dict(zip(images.TEST_IMAGES, per_psnr, strict=True)),
        "ssim_per_image": dict(zip(images.TEST_IMAGES, per_ssim, strict=True)),
    }


def mean_psnr(estimates: Tensor, truth: Tensor) -> float:
    """Mean PSNR over a batch, in torch (the tuning criterion; clipped like the test scores)."""
    error = ((estimates.clamp(0, 1) - truth) ** 2).flatten(1).mean(1)
    return float((-10 * torch.log10(error)).mean())


# ---------------------------------------------------------------------- models


class Setup:
    """The spec compiled once, in-process; the data bound to each of its problems; the test data."""

    def __init__(self, study: Study, seed: int) -> None:
        self.study, self.seed = study, seed
        started = time.perf_counter()
        self.loaded = load_spec(SPEC)
        self.load_seconds = time.perf_counter() - started
        self.kernel = images.gaussian_kernel(study.kernel, study.blur)
        self.bindings: dict[str, Any] = {}
        # the degradation: the spec's own forward model in float64 (circular convolution) + noise
        self.forward = self.build("deblur_cp", {}, dtype=torch.float64)
        module = sys.modules[type(self.forward).__module__]
        self.solve_conv, self.conv_adjoint = module.solve_conv_circular, module.conv_circular_adjoint
        clean = np.stack([images.load_image(name, study.test_size) for name in images.TEST_IMAGES])
        self.test_clean = clean
        self.test_blurred = self.degrade(clean, np.random.default_rng([seed, TEST_STREAM]))
        patches = images.random_patches(
            images.TRAIN_IMAGES, study.tune_size, study.patch, np.random.default_rng([seed, TUNE_STREAM])
        )
        self.tune_clean = torch.as_tensor(patches)
        self.tune_blurred = torch.as_tensor(self.degrade(patches, np.random.default_rng([seed, TUNE_STREAM, 1])))

    def degrade(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        with torch.no_grad():
            blurred = self.forward.measure(x=torch.as_tensor(clean, dtype=torch.float64))["y"].numpy()
        return blurred + self.study.noise * rng.standard_normal(clean.shape)

    def binding(self, unfold: str) -> Any:
        problem = self.loaded.unfold(unfold).problem
        if problem.name not in self.bindings:
            study = self.study
            source = image_source(
                size=study.patch, noise=study.noise, blur=study.blur, kernel=study.kernel, seed=self.seed
            )
            self.bindings[problem.name] = bind(source, slots_from_problem(problem))
        return self.bindings[problem.name]

    def build(
        self,
        unfold: str,
        overrides: Mapping[str, Any],
        layers: int | None = None,
        dtype: torch.dtype = torch.float32,
        size: int | None = None,
    ) -> nn.Module:
        """The generated module with the kernel as its data and no image size fixed (the same model
        runs on training patches and on the test images; ``size`` fixes it, for a step size 1/L
        computed at build time); nets initialised from the seed."""
        torch.manual_seed(self.seed)
        cls = self.loaded.model_class(unfold)
        kernel = torch.as_tensor(self.kernel, dtype=dtype)
        sizes = {} if size is None else {"h": size, "w": size}
        return cls(k=kernel, dtype=dtype, layers=layers or self.study.layers, **sizes, **overrides)

    def test_input(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.as_tensor(self.test_blurred, dtype=dtype)

    def wiener(self, y: Tensor, mu: float) -> Tensor:
        """The one-step Tikhonov/Wiener-type solve x = (KᵀK + μI)⁻¹ Kᵀy, in the Fourier domain."""
        k = torch.as_tensor(self.kernel, dtype=y.dtype)
        return self.solve_conv(k, mu, self.conv_adjoint(k, y))


@torch.no_grad()
def converge(model: nn.Module, y: Tensor, max_iterations: int, tolerance: float) -> tuple[Tensor, int, bool]:
    """Run the classical layer (``model.layer(0, ...)``, a one-layer instance holding the
    classical τ, σ, λ) until the relative change of x of every image is below ``tolerance``, or
    ``max_iterations``."""
    inputs = model.prepare_inputs(y=y)
    state = model.initial_state(inputs)
    tiny = torch.finfo(y.dtype).tiny
    iterations, done = 0, False
    while iterations < max_iterations and not done:
        new = model.layer(0, state, inputs)
        iterations += 1
        change = (new["x"] - state["x"]).flatten(1).norm(dim=1) / new["x"].flatten(1).norm(dim=1).clamp_min(tiny)
        state = new
        done = float(change.max()) < tolerance
    return model.outputs(state), iterations, done


# ---------------------------------------------------------------------- tuning the classical solvers


def pattern_search(
    start: Mapping[str, float],
    score: Callable[[dict[str, float]], float],
    bounds: Mapping[str, tuple[float, float]],
    factors: Sequence[float] = (2.0, math.sqrt(2.0), 2**0.25),
) -> tuple[dict[str, float], float, int]:
    """Coordinate search on a log scale: multiply or divide one value at a time by the factor
    while the score (higher is better) improves, then refine the factor."""
    best = dict(start)
    best_score = score(best)
    evaluations = 1
    for factor in factors:
        improved = True
        while improved:
            improved = False
            for name in best:
                for direction in (factor, 1 / factor):
                    low, high = bounds[name]
                    value = min(max(best[name] * direction, low), high)
                    if value == best[name]:
                        continue
                    trial = best | {name: value}
                    result = score(trial)
                    evaluations += 1
                    if result > best_score:
                        best, best_score, improved = trial, result, True
                        break
    return best, best_score, evaluations


def cp_steps(tau: float) -> dict[str, float]:
    """Chambolle–Pock's primal step τ with the dual step σ = 0.99 / (8τ): τσ‖∇‖² ≤ 0.99 < 1."""
    return {"tau": tau, "sigma": 0.99 / (8 * tau)}


def tune_classical(setup: Setup, study: Study) -> dict[str, Any]:
    """The classical solvers' free values, each maximising the mean PSNR on ``tune_size`` training
    patches: CP-TV at K layers (λ and τ, with σ = 0.99/(8τ): at K = 8 the steps matter as much as
    λ), CP-TV run to convergence (λ; its fixed point does not depend on τ and σ, which stay at the
    K-layer values), μ of the Wiener-type solve and μ of the untrained HQS at K layers."""
    y32, x32 = setup.tune_blurred.float(), setup.tune_clean.float()
    y64, x64 = setup.tune_blurred, setup.tune_clean
    y_converged, x_converged = y64[: study.tune_converged_size], x64[: study.tune_converged_size]

    def timed(search: Callable[[], tuple[dict[str, float], float, int]]) -> dict[str, Any]:
        started = time.perf_counter()
        values, score, evaluations = search()
        seconds = time.perf_counter() - started
        return {"values": values, "tune_psnr": score, "evaluations": evaluations, "seconds": seconds}

    @torch.no_grad()
    def cp_layers(p: dict[str, float]) -> float:
        return mean_psnr(setup.build("deblur_cp", {"lam": p["lam"]} | cp_steps(p["tau"]))(y32), x32)

    @torch.no_grad()
    def ista_layers(p: dict[str, float]) -> float:
        return mean_psnr(setup.build("deblur_ista", p, size=study.patch)(y32), x32)

    @torch.no_grad()
    def hqs_layers(p: dict[str, float]) -> float:
        return mean_psnr(setup.build("deblur_hqs", p)(y32), x32)

    def wiener(p: dict[str, float]) -> float:
        return mean_psnr(setup.wiener(y64, p["mu"]), x64)

    bounds = {"lam": (1e-5, 1.0), "tau": (0.05, 100.0), "mu": (1e-6, 10.0)}
    tuned = {"patches": len(x32), "patches_converged": len(x_converged), "patch_size": study.patch}
    tuned["cp_layers"] = timed(lambda: pattern_search({"lam": 0.005, "tau": 1.0}, cp_layers, bounds))
    tuned["cp_layers"]["values"] |= cp_steps(tuned["cp_layers"]["values"]["tau"])
    steps = cp_steps(tuned["cp_layers"]["values"]["tau"])

    def cp_converged(p: dict[str, float]) -> float:
        model = setup.build("deblur_cp", p | steps, layers=1, dtype=torch.float64)
        return mean_psnr(converge(model, y_converged, study.max_iterations, study.tolerance)[0], x_converged)

    tuned["cp_converged"] = timed(
        lambda: pattern_search({"lam": 0.005}, cp_converged, bounds, factors=(2.0, math.sqrt(2.0)))
    )
    tuned["cp_converged"]["values"] |= steps
    tuned["ista_layers"] = timed(lambda: pattern_search({"lam": 0.005}, ista_layers, bounds))
    tuned["hqs_layers"] = timed(lambda: pattern_search({"mu": 0.01}, hqs_layers, bounds))
    tuned["wiener"] = timed(lambda: pattern_search({"mu": 0.01}, wiener, bounds))
    return tuned


# ---------------------------------------------------------------------- training


def overrides_for(network: Network, tuned: Mapping[str, Any]) -> dict[str, float]:
    """Paradigms 1–3 start from CP-TV tuned at K layers. HQS starts with μ at the Wiener-type
    solve's tuned value, not at the μ tuned for its zero net: that μ (≈ 1.5) keeps every x-step
    close to z, so 8 layers barely fit the data and the trained denoiser has little to work with
    (27.8 dB after 2.5 min of training, against 29.7 dB from μ = 0.05)."""
    if network.unfold == "deblur_hqs":
        return {"mu": tuned["wiener"]["values"]["mu"]}
    return dict(tuned["cp_layers"]["values"])


def step_seconds(model: nn.Module, setup: Setup, study: Study, repeats: int = 3) -> float:
    """Seconds of one Adam step (forward, MSE loss, backward, update) at the training batch and
    patch size, on a copy of the model, after one warm-up step."""
    model = copy.deepcopy(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    rng = np.random.default_rng([setup.seed, 99])
    clean = images.random_patches(images.TRAIN_IMAGES, study.batch, study.patch, rng)
    x = torch.as_tensor(clean, dtype=torch.float32)
    y = torch.as_tensor(setup.degrade(clean, rng), dtype=torch.float32)
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        loss = ((model(y) - x) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def train(setup: Setup, network: Network, tuned: Mapping[str, Any], study: Study, runs: Path) -> dict[str, Any]:
    """Build from the spec, buy ``study.minutes`` of Adam steps at the measured step time (90 %
    of the budget: validation and data take the rest) and train with ``fit``; on a divergence start
    again from the initial state at a third of the learning rate (``fit_restarting``)."""
    overrides = overrides_for(network, tuned)
    seconds = step_seconds(setup.build(network.unfold, overrides), setup, study)
    steps = max(1, min(study.max_steps, int(0.9 * study.minutes * 60 / seconds)))
    model = setup.build(network.unfold, overrides)
    binding = setup.binding(network.unfold)
    summary = train_supervised(
        model, binding, study, steps=steps, lr=network.lr, seed=setup.seed, out=runs / network.unfold
    )
    return {"model": model, **summary, "step_seconds_probe": seconds}


def learned_count(model: nn.Module) -> int:
    return int(sum(model.parameter_counts().values()))


def learned_scalars(model: nn.Module) -> dict[str, list[float]]:
    """The learned scalars per layer (τ, σ, λ; μ)."""
    out = {}
    for name in ("tau", "sigma", "lam", "mu"):
        value = getattr(model, name, None)
        if isinstance(value, nn.ParameterList):
            out[name] = [float(v.detach()) for v in value]
    return out


# ---------------------------------------------------------------------- measurements


@torch.no_grad()
def latencies(runners: Mapping[str, Callable[[Tensor], Any]], y: Tensor, repeats: int) -> dict[str, float]:
    """Milliseconds per image at batch 1: medians over rounds in which every runner is called once
    in turn on each test image (interleaved, so that load drifting on a shared machine falls on
    all of them alike), after a warm-up."""
    for run in runners.values():
        run(y[:1])
    times: dict[str, list[float]] = {key: [] for key in runners}
    for round_ in range(repeats):
        image = y[round_ % len(y)].unsqueeze(0)
        for key, run in runners.items():
            started = time.perf_counter()
            run(image)
            times[key].append(time.perf_counter() - started)
    return {key: statistics.median(values) * 1e3 for key, values in times.items()}


def memory_probe(unfold: str, size: int, batch: int, checkpoint_layers: int, layers: int) -> dict[str, Any]:
    """One training step (forward, MSE loss, backward) of ``unfold`` at size × size and ``batch``,
    in this (fresh) process. Peak memory: the kernel's high-water mark of the resident set
    (VmHWM), reset through /proc/self/clear_refs just before the step, minus the resident set
    right after the reset (model, inputs and libraries already loaded). Run it with ``PROBE_ENVIRONMENT``."""
    torch.set_num_threads(1)
    loaded = load_spec(SPEC)
    cls = loaded.model_class(unfold)
    kernel = torch.as_tensor(images.gaussian_kernel(9, 1.6), dtype=torch.float32)
    torch.manual_seed(0)
    model = cls(k=kernel, dtype=torch.float32, layers=layers, checkpoint_layers=checkpoint_layers)
    for parameter in model.parameters():  # a nonzero net, so every branch of the graph is live
        parameter.data.add_(1e-3 * torch.randn_like(parameter))
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, size, size, generator=generator)
    y = model.measure(x=x)["y"].detach() + 0.01 * torch.randn(batch, size, size, generator=generator)
    loss = ((model(y) - x) ** 2).mean()  # warm-up: allocator pools, lazy imports
    loss.backward()
    model.zero_grad(set_to_none=True)
    del loss
    reset = _reset_peak()
    before = _status_kib("VmRSS")  # after the reset: the high-water mark restarts at this resident set
    started = time.perf_counter()
    loss = ((model(y) - x) ** 2).mean()
    loss.backward()
    seconds = time.perf_counter() - started
    peak = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gradient = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return {
        "unfold": unfold,
        "size": size,
        "batch": batch,
        "layers": layers,
        "checkpoint_layers": checkpoint_layers,
        "rss_before_mib": before / 1024,
        "peak_rss_mib": peak / 1024,
        "peak_increase_mib": (peak - before) / 1024,
        "peak_from": "VmHWM after clear_refs" if reset else "ru_maxrss (peak of the whole process)",
        "step_seconds": seconds,
        "loss": float(loss.detach()),
        "gradient_norm": float(gradient.norm()),
        "gradient": gradient[:64].tolist(),
    }


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key} line; expected Linux")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# A fixed mmap threshold: glibc then returns every large block to the kernel when it is freed. With
# its default (a threshold that grows to the largest block freed so far) the warm-up step's blocks
# stay in the heap, the measured step reuses them, and the resident set barely grows: 28 MiB
# measured instead of 110 MiB for CP-TV at 256×256, batch 4.
PROBE_ENVIRONMENT = {"PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": "131072"}


def memory(study: Study) -> dict[str, Any]:
    """Peak memory of one training step per network, without and with ``checkpoint_layers=True``
    (√K layers per recomputed segment), each in a fresh subprocess; the two must give the same
    loss and gradients."""
    segment = max(1, round(study.layers**0.5))
    results: dict[str, Any] = {}
    for network in study.networks:
        entry = {}
        for label, setting in (("plain", 0), ("checkpointed", segment)):
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--memory-probe",
                network.unfold,
                "--memory-size",
                str(study.memory_size),
                "--memory-batch",
                str(study.memory_batch),
                "--memory-checkpoint",
                str(setting),
                "--memory-layers",
                str(study.layers),
            ]
            done = subprocess.run(command, capture_output=True, text=True, env=os.environ | PROBE_ENVIRONMENT)
            if done.returncode != 0:
                raise RuntimeError(f"memory probe of {network.unfold} failed: {done.stderr.strip().splitlines()[-1:]}")
            entry[label] = json.loads(done.stdout.strip().splitlines()[-1])
        plain, checkpointed = entry["plain"], entry["checkpointed"]
        difference = np.abs(np.array(plain["gradient"]) - np.array(checkpointed["gradient"]))
        entry["checkpoint_same_loss"] = math.isclose(plain["loss"], checkpointed["loss"], rel_tol=1e-5)
        entry["checkpoint_gradient_max_abs_diff"] = float(difference.max())
        for probe in (plain, checkpointed):
            del probe["gradient"]
        results[network.key] = entry
    return results


def compile_and_build(setup: Setup, study: Study, repeats: int = 5) -> dict[str, Any]:
    """Seconds to compile ``specs/deblur.unf`` (all six unfolds; the first call in this process
    and the median of ``repeats`` more) and to build ``deblur_ista`` for 256×256 images, its step
    1/L included (L = max |k̂|², exact for a circular convolution)."""
    text = SPEC.read_text()
    compile_times = []
    for _ in range(repeats):
        started = time.perf_counter()
        compile_text(text, str(SPEC), spec_label=SPEC.name)
        compile_times.append(time.perf_counter() - started)
    cls = setup.loaded.model_class("deblur_ista")
    kernel = torch.as_tensor(setup.kernel, dtype=torch.float32)
    build_times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model = cls(k=kernel, h=study.test_size, w=study.test_size, dtype=torch.float32)
        build_times.append(time.perf_counter() - started)
    spectrum = np.fft.fft2(np.pad(setup.kernel, [(0, study.test_size - study.kernel)] * 2))
    return {
        "load_spec_seconds": setup.load_seconds,
        "compile_seconds": statistics.median(compile_times),
        "compile_seconds_all": compile_times,
        "build_unfold": "deblur_ista",
        "build_size": study.test_size,
        "build_seconds": statistics.median(build_times),
        "build_seconds_all": build_times,
        "step": float(model.mu[0].detach()) if isinstance(model.mu, nn.ParameterList) else float(model.mu.detach()),
        "step_exact": float(1 / (np.abs(spectrum) ** 2).max()),
    }


# ---------------------------------------------------------------------- deepinv


def deepinv_column(setup: Setup, study: Study, folder: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """deepinv's unfolded PGD-Haar, CP-TV and HQS-DnCNN on the same kernel, noise, test images
    (the same blurred arrays) and training images, trained for the same minutes per network."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "deblur_data.npz"
    patches = images.random_patches(
        images.TRAIN_IMAGES, study.deepinv_patches, study.patch, np.random.default_rng([setup.seed, 1])
    )
    np.savez(
        data,
        kernel=setup.kernel,
        sigma=study.noise,
        train_clean=patches.astype(np.float32),
        test_clean=setup.test_clean,
        test_blurred=setup.test_blurred,
        seed=setup.seed,
    )
    out, reconstructions = folder / "deblur_deepinv.json", folder / "deblur_deepinv_images.npz"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "deepinv_side.py"),
        "--input",
        str(data),
        "--out",
        str(out),
        "--layers",
        str(study.layers),
        "--batch",
        str(study.batch),
        "--minutes",
        str(study.minutes),
        "--threads",
        "1",
        "--clip",
        "--images-out",
        str(reconstructions),
    ]
    env = os.environ.copy()
    env.setdefault("DEEPINV_VENV", str(ROOT / "build" / "deepinv-venv"))
    log("deepinv: " + " ".join(command[1:]))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode == DEEPINV_SKIP:
        reason = json.loads(out.read_text()).get("skipped") if out.exists() else done.stdout.strip()
        log(f"deepinv skipped: {reason}")
        return {"skipped": reason}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        log(f"deepinv failed (exit {done.returncode}): {tail}")
        return {"skipped": f"deepinv_side.py exited {done.returncode}: {' | '.join(tail)}"}
    result = json.loads(out.read_text())
    result["command"] = "python " + " ".join(command[1:])
    result["images_file"] = str(reconstructions)
    return result


# ---------------------------------------------------------------------- the study


@dataclass
class Row:
    key: str
    paradigm: int | None  # None: a classical solver
    label: str
    spec: str
    parameters: int
    test: dict[str, Any]
    per_layer: list[float] = field(default_factory=list)  # mean test PSNR after every layer
    latency_ms: float | None = None
    untrained: dict[str, Any] | None = None  # the network before training (= its classical algorithm)
    classical: str | None = None  # the row it is compared with at equal depth
    training_seconds: float | None = None
    steps: int | None = None
    seconds_per_step: float | None = None  # of fit, validation and data included
    seconds_per_step_probe: float | None = None  # forward + backward + Adam only
    lr: float | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    loss_first_quarter: float | None = None
    loss_last_quarter: float | None = None
    learned: dict[str, list[float]] = field(default_factory=dict)


@torch.no_grad()
def evaluate(model: nn.Module, setup: Setup) -> tuple[dict[str, Any], list[float], np.ndarray]:
    iterates = model(setup.test_input(), return_iterates=True)
    truth = torch.as_tensor(setup.test_clean, dtype=torch.float32)
    curve = [mean_psnr(x, truth) for x in iterates]
    return scores(iterates[-1], setup.test_clean), curve, iterates[-1].numpy()


def run_study(study: Study, seed: int, runs: Path, folder: Path, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    setup = Setup(study, seed)
    log(f"compiled specs/deblur.unf and made the data in {time.perf_counter() - started:.1f} s")
    timing = compile_and_build(setup, study)
    log(f"compile {timing['compile_seconds']:.2f} s, build deblur_ista {timing['build_seconds'] * 1e3:.1f} ms")

    tuned = tune_classical(setup, study)
    log(
        "tuned: "
        + "; ".join(
            f"{key} " + " ".join(f"{name}={value:.3g}" for name, value in tuned[key]["values"].items())
            for key in ("cp_layers", "cp_converged", "ista_layers", "hqs_layers", "wiener")
        )
    )
    K = study.layers
    reconstructions: dict[str, np.ndarray] = {"clean": setup.test_clean, "blurred": setup.test_blurred}
    rows: list[Row] = [Row("blurred", None, "blurred input", "—", 0, scores(setup.test_blurred, setup.test_clean))]

    wiener_mu = tuned["wiener"]["values"]["mu"]
    wiener = setup.wiener(setup.test_input(torch.float64), wiener_mu)
    reconstructions["wiener"] = wiener.numpy()
    rows.append(
        Row(
            "wiener",
            None,
            f"Wiener-type (KᵀK + μI)⁻¹Kᵀy, μ = {wiener_mu:.3g}",
            "—",
            0,
            scores(wiener, setup.test_clean),
        )
    )

    cp = setup.build("deblur_cp", tuned["cp_layers"]["values"])
    test, curve, out = evaluate(cp, setup)
    reconstructions["cp_layers"] = out
    rows.append(Row("cp_layers", None, f"CP-TV, K={K} (tuned λ, τ)", "deblur.unf: deblur_cp", 0, test, curve))

    cp_one = setup.build("deblur_cp", tuned["cp_converged"]["values"], layers=1, dtype=torch.float64)
    converged, iterations, done = converge(
        cp_one, setup.test_input(torch.float64), study.max_iterations, study.tolerance
    )
    reconstructions["cp_converged"] = converged.numpy()
    label = f"CP-TV to convergence ({iterations} it.{'' if done else ', cap'})"
    rows.append(Row("cp_converged", None, label, "deblur.unf: deblur_cp", 0, scores(converged, setup.test_clean)))
    converged_run = {"iterations": iterations, "converged": done, "tolerance": study.tolerance}

    ista = setup.build("deblur_ista", tuned["ista_layers"]["values"], size=study.test_size)
    test, curve, out = evaluate(ista, setup)
    reconstructions["ista_layers"] = out
    rows.append(Row("ista_layers", None, f"ISTA ℓ1-Haar, K={K} (tuned λ)", "deblur.unf: deblur_ista", 0, test, curve))

    hqs = setup.build("deblur_hqs", tuned["hqs_layers"]["values"])
    test, curve, out = evaluate(hqs, setup)
    reconstructions["hqs_layers"] = out
    rows.append(Row("hqs_layers", None, f"HQS, zero net, K={K} (tuned μ)", "deblur.unf: deblur_hqs", 0, test, curve))
    log(" ".join(f"{row.key} {row.test['psnr']:.2f}" for row in rows) + " dB")

    models: dict[str, nn.Module] = {}
    for network in study.networks:
        trained = train(setup, network, tuned, study, runs)
        model = models[network.key] = trained["model"]
        test, curve, out = evaluate(model, setup)
        reconstructions[network.key] = out
        untrained, _, _ = evaluate(setup.build(network.unfold, overrides_for(network, tuned)), setup)
        rows.append(
            Row(
                network.key,
                network.paradigm,
                network.label,
                f"deblur.unf: {network.unfold}",
                learned_count(model),
                test,
                curve,
                untrained=untrained,
                classical=network.classical,
                training_seconds=trained["seconds"],
                steps=trained["steps"],
                seconds_per_step=trained["seconds"] / trained["steps"],
                seconds_per_step_probe=trained["step_seconds_probe"],
                lr=trained["attempts"][-1]["lr"],
                attempts=trained["attempts"],
                loss_first_quarter=trained["loss_first_quarter"],
                loss_last_quarter=trained["loss_last_quarter"],
                learned=learned_scalars(model),
            )
        )
        log(
            f"{network.unfold}: {test['psnr']:.2f} dB (untrained {untrained['psnr']:.2f}) after "
            f"{trained['steps']} steps, {trained['seconds']:.0f} s, {learned_count(model)} learned"
        )

    runners: dict[str, Callable[[Tensor], Any]] = {
        "wiener": lambda y: setup.wiener(y, wiener_mu),
        "cp_layers": cp,
        "ista_layers": ista,
        "hqs_layers": hqs,
    } | dict(models)
    timings = latencies(runners, setup.test_input(), study.latency_repeats)
    started_converged = time.perf_counter()
    converge(cp_one, setup.test_input(torch.float64)[:1], study.max_iterations, study.tolerance)
    timings["cp_converged"] = (time.perf_counter() - started_converged) * 1e3
    for row in rows:
        row.latency_ms = timings.get(row.key)
    log("latency measured")
    peak = memory(study)
    log(
        "memory: "
        + ", ".join(
            f"{k} {v['plain']['peak_increase_mib']:.0f}/{v['checkpointed']['peak_increase_mib']:.0f} MiB"
            for k, v in peak.items()
        )
    )

    deepinv = (
        deepinv_column(setup, study, folder, log) if study.deepinv else {"skipped": "not run (--no-deepinv or --quick)"}
    )
    results = {
        "study": "image deblurring, four paradigms (issue 12, study 3)",
        "mode": study.mode,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "torch": torch.__version__,
        "machine": platform.machine(),
        "config": _config_json(study),
        "setting": {
            "test_images": list(images.TEST_IMAGES),
            "train_images": list(images.TRAIN_IMAGES),
            "boundary": "circular (the degradation and every solver)",
            "kernel": f"Gaussian {study.kernel}×{study.kernel}, σ = {study.blur}",
            "noise": study.noise,
            "scores": "PSNR and SSIM (skimage.metrics, data_range=1), estimates clipped to [0, 1]",
        },
        "compile_build": timing,
        "classical": tuned,
        "converged_test": converged_run,
        "rows": [asdict(r) for r in rows],
        "memory": peak,
        "deepinv": deepinv,
        "seconds_total": time.perf_counter() - started,
    }
    results["targets"] = targets(results)
    results["_reconstructions"] = reconstructions  # for the plots; not written to the JSON
    return results


def targets(results: Mapping[str, Any]) -> dict[str, Any]:
    """The acceptance targets of issue 12, checked on these numbers."""
    rows = {row["key"]: row for row in results["rows"]}
    trained = [row for row in results["rows"] if row["paradigm"] is not None]
    best = max(trained, key=lambda row: row["test"]["psnr"])
    margin = best["test"]["psnr"] - rows["cp_converged"]["test"]["psnr"]
    timing = results["compile_build"]
    return {
        "every_network_beats_its_classical": {
            row["key"]: row["test"]["psnr"] - rows[row["classical"]]["test"]["psnr"] for row in trained
        },
        "every_network_beats_its_classical_met": all(
            row["test"]["psnr"] > rows[row["classical"]]["test"]["psnr"] for row in trained
        ),
        "best_network": best["key"],
        "best_minus_converged_db": margin,
        "best_beats_converged_by_0_5_db": margin >= 0.5,
        "compile_under_1_s": timing["compile_seconds"] < 1.0,
        "build_under_1_s": timing["build_seconds"] < 1.0,
    }


def _config_json(study: Study) -> dict[str, Any]:
    config = asdict(study)
    config["networks"] = [asdict(n) for n in study.networks]
    return config


# ---------------------------------------------------------------------- report


def table(results: Mapping[str, Any]) -> str:
    """The markdown table of the study."""
    names = results["setting"]["test_images"]
    lines = [
        "| method | spec | learned | PSNR dB | SSIM | "
        + " / ".join(names)
        + " | latency / image | training | s/step | peak mem 256² B4 (ckpt) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    best = max((r["test"]["psnr"] for r in results["rows"]), default=0)
    for row in results["rows"]:
        value = f"{row['test']['psnr']:.2f}"
        value = f"**{value}**" if row["test"]["psnr"] == best else value
        per_image = " / ".join(f"{row['test']['psnr_per_image'][n]:.2f}" for n in names)
        latency = "—" if row["latency_ms"] is None else _ms(row["latency_ms"])
        training = steps = mem = "—"
        if row["training_seconds"] is not None:
            training = f"{row['training_seconds'] / 60:.1f} min ({row['steps']:,} steps)"
            steps = f"{row['seconds_per_step']:.3f}"
            probe = results["memory"][row["key"]]
            mem = f"{probe['plain']['peak_increase_mib']:.0f} MiB ({probe['checkpointed']['peak_increase_mib']:.0f})"
        lines.append(
            f"| {row['label']} | `{row['spec']}` | {row['parameters']:,} | {value} | {row['test']['ssim']:.4f} | "
            f"{per_image} | {latency} | {training} | {steps} | {mem} |"
        )
    return "\n".join(lines)


def deepinv_table(results: Mapping[str, Any]) -> str:
    """deepinv's networks next to ours (same data, same minutes per network)."""
    deepinv = results["deepinv"]
    if "skipped" in deepinv:
        return f"deepinv: skipped ({deepinv['skipped']})"
    ours = {row["key"]: row for row in results["rows"]}
    counterpart = {"pgd_haar": None, "cp_tv": "steps", "hqs_dncnn": "hqs"}
    lines = [
        "| deepinv network | learned | PSNR untrained → trained | SSIM | steps | s/step B4 | latency "
        "| unfoldgen counterpart: PSNR, s/step (probe), latency |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in deepinv["networks"].items():
        mine = ours.get(counterpart.get(name) or "")
        theirs = (
            f"{mine['test']['psnr']:.2f} dB, {mine['seconds_per_step_probe']:.3f} s, {_ms(mine['latency_ms'])}"
            if mine
            else "—"
        )
        lines.append(
            f"| `{name}` | {entry['parameters']:,} | {entry['untrained']['psnr']:.2f} → "
            f"{entry['trained']['psnr']:.2f} | {entry['trained']['ssim']:.4f} | {entry['training_steps']:,} | "
            f"{entry['seconds_per_step']['seconds']:.3f} | {_ms(entry['trained']['latency_ms_per_image'])} | {theirs} |"
        )
    return "\n".join(lines)


def _ms(ms: float) -> str:
    return f"{ms / 1e3:.2f} s" if ms >= 1e3 else f"{ms:.1f} ms"


COLORS = {
    "blurred": "silver",
    "wiener": "tab:brown",
    "cp_layers": "gray",
    "cp_converged": "black",
    "ista_layers": "tab:cyan",
    "hqs_layers": "tab:purple",
    "steps": "tab:blue",
    "kernels": "tab:orange",
    "correction": "tab:green",
    "hqs": "tab:red",
}


def plots(results: Mapping[str, Any], folder: Path, image: int = 0) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    rows = {r["key"]: r for r in results["rows"]}
    K = results["config"]["layers"]
    reconstructions = results["_reconstructions"]
    name = results["setting"]["test_images"][image]
    written = []

    # example crops: the centre half of one test image
    shown = ["blurred", "wiener", "cp_layers", "cp_converged", *[r["key"] for r in results["rows"] if r["paradigm"]]]
    size = next(iter(reconstructions.values())).shape[-1]
    crop = slice(size // 4, size // 4 + size // 2)
    panels = [("clean", None)] + [(key, rows[key]) for key in shown]
    columns = 4
    figure, axes_grid = plt.subplots(
        math.ceil(len(panels) / columns), columns, figsize=(3.2 * columns, 3.4 * math.ceil(len(panels) / columns))
    )
    for axes in axes_grid.flat:
        axes.axis("off")
    for axes, (key, row) in zip(axes_grid.flat, panels, strict=False):
        picture = reconstructions["clean"][image] if key == "clean" else reconstructions[key][image]
        axes.imshow(np.clip(picture[crop, crop], 0, 1), cmap="gray", vmin=0, vmax=1)
        title = (
            f"{name} (ground truth)" if row is None else f"{row['label']}\n{row['test']['psnr_per_image'][name]:.2f} dB"
        )
        axes.set_title(title, fontsize=8)
    figure.tight_layout()
    path = folder / "deblur_examples.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written.append(path)

    # PSNR per layer
    figure, axes = plt.subplots(figsize=(10, 4.4))
    layers = range(1, K + 1)
    for key in ("cp_layers", "ista_layers", "hqs_layers"):
        axes.plot(layers, rows[key]["per_layer"], "--o", ms=3, color=COLORS[key], label=rows[key]["label"])
    for row in results["rows"]:
        if row["paradigm"] is not None:
            axes.plot(layers, row["per_layer"], "-o", ms=3, color=COLORS[row["key"]], label=row["label"])
    for key, style in (("cp_converged", ":"), ("wiener", "-."), ("blurred", "--")):
        axes.axhline(rows[key]["test"]["psnr"], color=COLORS[key], linestyle=style, label=rows[key]["label"])
    deepinv = results["deepinv"]
    if "networks" in deepinv:
        for marker, (network, entry) in zip("s^D", deepinv["networks"].items(), strict=False):
            axes.scatter(
                [K + 0.25],
                [entry["trained"]["psnr"]],
                marker=marker,
                color="k",
                s=28,
                label=f"deepinv {network} (trained)",
            )
    axes.set_ylim(bottom=min(rows["blurred"]["test"]["psnr"], *rows["cp_layers"]["per_layer"][1:]) - 0.5)
    axes.set_xlabel("layer")
    axes.set_ylabel("mean test PSNR (dB)")
    axes.set_title("PSNR per layer on camera / astronaut / chelsea")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    path = folder / "deblur_per_layer.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    written.append(path)
    return written


# ---------------------------------------------------------------------- entry point


def update_memory(path: Path) -> dict[str, Any]:
    """Rerun the memory probes of a finished study (its mode and K) and store them in its JSON."""
    results = json.loads(path.read_text(encoding="utf-8"))
    study = replace(FULL if results["mode"] == "full" else QUICK, layers=results["config"]["layers"])
    results["memory"] = memory(study)
    path.write_text(json.dumps(results, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    print(table(results))
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (32×32 patches, K=4), about a minute")
    parser.add_argument("--minutes", type=float, help="training budget per network (default 8; --quick 0.1)")
    parser.add_argument("--no-deepinv", action="store_true", help="leave out the deepinv column")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, help="folder for the JSON (benchmarks/results; --quick: build/deblur_quick)"
    )
    parser.add_argument("--img", type=Path, help="folder for the PNG plots (docs/img; --quick: none unless given)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "deblur", help="training runs (checkpoints)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--update-memory", type=Path, metavar="JSON", help="rerun only the memory probes into this results file"
    )
    parser.add_argument("--memory-probe", metavar="UNFOLD", help=argparse.SUPPRESS)
    parser.add_argument("--memory-size", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--memory-batch", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--memory-checkpoint", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--memory-layers", type=int, default=8, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        result = memory_probe(
            args.memory_probe, args.memory_size, args.memory_batch, args.memory_checkpoint, args.memory_layers
        )
        print(json.dumps(result))
        return result
    if args.update_memory:
        return update_memory(args.update_memory)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the study's budget is one CPU thread per network
    study = QUICK if args.quick else FULL
    if args.minutes is not None:
        study = replace(study, minutes=args.minutes)
    if args.no_deepinv:
        study = replace(study, deepinv=False)
    runs = args.runs / study.mode
    out = args.out or (ROOT / "benchmarks" / "results" if study.mode == "full" else ROOT / "build" / "deblur_quick")

    def log(text: str) -> None:
        if not args.quiet:
            print(text, flush=True)

    try:
        results = run_study(study, args.seed, runs, ROOT / "build" if study.mode == "full" else out, log)
    finally:
        torch.set_num_threads(threads)
    reconstructions = results.pop("_reconstructions")
    out.mkdir(parents=True, exist_ok=True)
    name = "deblur.json" if study.mode == "full" else f"deblur_{study.mode}.json"
    (out / name).write_text(json.dumps(results, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    img = args.img or (ROOT / "docs" / "img" if study.mode == "full" else None)
    written = plots(results | {"_reconstructions": reconstructions}, img) if img is not None else []
    log("")
    log(table(results))
    log("")
    log(deepinv_table(results))
    log("")
    log(json.dumps(results["targets"], indent=2))
    log(f"\n{out / name}; plots: {', '.join(str(p) for p in written) or 'none (quick run)'}")
    log(f"total {results['seconds_total'] / 60:.1f} min")
    return results


if __name__ == "__main__":
    main()
