"""Study 4 — MIMO detection: symbol-error rate against SNR for classical detectors and unfolded
networks generated from ``specs/mimo.unf``.

Setting: y = H x + w with n transmit and m receive antennas (cases named ``m×n``: 16×16, 32×16 and
4×4), QPSK and 16-QAM at unit symbol energy, an i.i.d. Rayleigh channel H with CN(0, 1/m) entries
per sample (``--channel kronecker --rho 0.5`` for the correlated model), noise CN(0, σ²) with
SNR = E‖Hx‖² / E‖w‖² = n / (m σ²) (the ``detection:`` source of ``unfoldgen.data``).

Detectors (every one followed by the nearest-point slicer ``unfoldgen.data.slice_symbols``):
- zero-forcing x = (HᴴH)⁻¹ Hᴴ y and LMMSE x = (HᴴH + σ² I)⁻¹ Hᴴ y (σ² known);
- projected gradient x ← proj_hull(x − μ Hᴴ(Hx − y)) from x = 0 with μ = 1/‖H‖₂² per sample, where
  the convex hull of a square QAM constellation is a box on the real and imaginary parts: at equal
  depth K (the networks' layers) and converged (the box-constrained least-squares solution, reached
  by the same projected step with FISTA momentum and adaptive restart, until no entry moves by
  more than 1e-9);
- the exact ML detector for 4×4 (``ml``): every candidate of the first n − 1 symbols (QPSK 64,
  16-QAM 4096) with the best last symbol for each, which is the slicer's decision on the residual
  projected on the last column (exact: the metric is quadratic in the last symbol and the
  constellation a Cartesian grid), vectorised and batched;
- the unfolded networks of ``specs/mimo.unf`` (``NETWORKS``), trained end to end (Adam, NMSE of
  x, batch 64) on SNRs drawn per sample uniformly from the case's training range, evaluated by
  ``unfolded_detector`` on the same test sets. The spec's problem takes inputs H, y (and sigma2 if
  it declares one), the variable x, and a param ``a`` (``HULL_PARAM``) for the box half-width,
  which the study sets per modulation (1/√2 for QPSK, 3/√10 for 16-QAM).

Reported per case: the SER curve of every detector on a fixed test set per SNR point (the same
samples for every detector), the SNR where each curve crosses SER 10⁻² and 10⁻³ (interpolated
linearly in log SER between the grid points around the crossing; a point without errors counts as
half an error), the gain in dB over LMMSE at those SERs, and for 4×4 the fraction of the LMMSE → ML
gap each detector closes.

    .venv/bin/python benchmarks/mimo.py               # full run: six cases, two networks each
    .venv/bin/python benchmarks/mimo.py --quick       # 4×4 QPSK and 16-QAM, small sets: under a minute

Writes ``benchmarks/results/mimo.json`` (``mimo_quick.json`` with --quick) and the SER plot
``docs/img/mimo_ser.png`` (``build/mimo_quick/`` with --quick).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from unfoldgen.data import (  # noqa: E402
    Binding,
    bind,
    box_detection,
    constellation,
    detection_source,
    slice_symbols,
    slots_from_problem,
)
from unfoldgen.training import Config, build_model, fit, load_spec  # noqa: E402

SPEC = ROOT / "specs" / "mimo.unf"
HULL_PARAM = "a"  # the spec's param for the half-width of the box hull of the constellation
TEST_STREAM = 4  # the data module's streams are 0 to 3
TARGETS = (1e-2, 1e-3)
STARTS_AS_TOLERANCE = 1e-3  # an untrained float32 network this close to a classical detector computes it

# a detector maps a batch (H (B, m, n), y (B, m), σ² (B,)) to soft estimates x̂ (B, n)
Detector = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Case:
    m: int  # receive antennas
    n: int  # transmit antennas
    modulation: str
    snr_db: tuple[float, ...]  # the test grid
    train_snr: tuple[float, float]  # the networks' training SNRs, uniform per sample

    @property
    def key(self) -> str:
        return f"{self.m}x{self.n}_{self.modulation}"

    @property
    def with_ml(self) -> bool:
        return self.n <= 4

    def test_samples(self, setting: Setting) -> int:
        return setting.test_symbols // self.n


@dataclasses.dataclass(frozen=True)
class Setting:
    cases: tuple[Case, ...]
    test_symbols: int  # symbols per SNR point (test_symbols // n samples)
    layers: int  # K: the networks' depth and the classical projected gradient's at equal depth
    batch: int
    val_size: int
    val_every: int
    converged_tolerance: float
    converged_max_iterations: int


def grid(low: float, high: float, step: float) -> tuple[float, ...]:
    return tuple(float(v) for v in np.arange(low, high + step / 2, step))


FULL = Setting(
    cases=(
        Case(16, 16, "qpsk", grid(0, 44, 2), (5.0, 35.0)),
        Case(16, 16, "16qam", grid(10, 52, 2), (15.0, 45.0)),
        Case(32, 16, "qpsk", grid(-6, 12, 1), (-4.0, 12.0)),
        Case(32, 16, "16qam", grid(4, 22, 1), (6.0, 20.0)),
        Case(4, 4, "qpsk", grid(0, 36, 2), (5.0, 30.0)),
        Case(4, 4, "16qam", grid(10, 48, 2), (12.0, 42.0)),
    ),
    test_symbols=160_000,
    layers=10,
    batch=64,
    val_size=2000,
    val_every=200,
    converged_tolerance=1e-9,
    converged_max_iterations=20000,
)
QUICK = Setting(
    cases=(Case(4, 4, "qpsk", grid(0, 30, 5), (5.0, 30.0)), Case(4, 4, "16qam", grid(10, 40, 5), (12.0, 42.0))),
    test_symbols=4000,
    layers=6,
    batch=64,
    val_size=500,
    val_every=50,
    converged_tolerance=1e-9,
    converged_max_iterations=20000,
)


@dataclasses.dataclass(frozen=True)
class Network:
    key: str
    label: str
    unfold: str  # in specs/mimo.unf
    lr: float
    steps: int  # full run
    quick_steps: int


NETWORKS = (
    Network("pgd_learned", "projected gradient, learned steps", "mimo_pgd", 1e-2, 3000, 100),
    Network("pgd_corrected", "projected gradient + learned correction", "mimo_pgd_corrected", 1e-3, 6000, 100),
)


# ---------------------------------------------------------------------- classical detectors


def hull_edge(modulation: str) -> float:
    """The half-width of the constellation's box hull: max |Re s| (= max |Im s|)."""
    return float(np.max(np.abs(constellation(modulation).real)))


def project_hull(x: np.ndarray, edge: float) -> np.ndarray:
    return np.clip(x.real, -edge, edge) + 1j * np.clip(x.imag, -edge, edge)


def gram(H: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HᴴH (B, n, n) and Hᴴy (B, n)."""
    Hh = H.conj().transpose(0, 2, 1)
    return Hh @ H, (Hh @ y[..., None])[..., 0]


def zero_forcing(H: np.ndarray, y: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    G, c = gram(H, y)
    return np.linalg.solve(G, c[..., None])[..., 0]


def lmmse(H: np.ndarray, y: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """(HᴴH + σ² I)⁻¹ Hᴴ y: the LMMSE estimate for unit-energy symbols."""
    G, c = gram(H, y)
    return np.linalg.solve(G + sigma2[:, None, None] * np.eye(H.shape[2]), c[..., None])[..., 0]


def step_size(H: np.ndarray) -> np.ndarray:
    """μ = 1/‖H‖₂² per sample (B, 1)."""
    return 1.0 / np.linalg.svd(H, compute_uv=False)[:, :1] ** 2


def projected_gradient(
    H: np.ndarray, y: np.ndarray, edge: float, iterations: int, start: np.ndarray | None = None
) -> np.ndarray:
    """``iterations`` steps x ← proj_hull(x − μ Hᴴ(Hx − y)) from ``start`` (None: x = 0)."""
    G, c = gram(H, y)
    mu = step_size(H)
    x = np.zeros_like(c) if start is None else start
    for _ in range(iterations):
        x = project_hull(x - mu * ((G @ x[..., None])[..., 0] - c), edge)
    return x


def projected_gradient_converged(
    H: np.ndarray, y: np.ndarray, edge: float, tolerance: float, max_iterations: int, check_every: int = 25
) -> tuple[np.ndarray, dict[str, float]]:
    """The fixed point of the projected gradient step (the box-constrained least-squares solution),
    reached with FISTA momentum and gradient-based adaptive restart (O'Donoghue and Candès 2015);
    a sample stops once no entry moved by ``tolerance`` in its last step (checked every
    ``check_every`` steps). Returns the estimates and the run: the most steps a sample took, how
    many samples reached ``max_iterations``, and the largest fixed-point residual
    max |x − proj_hull(x − μ ∇)|."""
    G, c = gram(H, y)
    mu = step_size(H)

    def step(G: np.ndarray, c: np.ndarray, mu: np.ndarray, z: np.ndarray) -> np.ndarray:
        return project_hull(z - mu * ((G @ z[..., None])[..., 0] - c), edge)

    estimates = np.zeros_like(c)
    index = np.arange(len(c))  # the samples still iterating, and their state below
    work = (G, c, mu)
    x, z, t = np.zeros_like(c), np.zeros_like(c), np.ones((len(c), 1))
    iterations = 0
    while index.size and iterations < max_iterations:
        iterations += 1
        new = step(*work, z)
        restart = np.sum(((z - new).conj() * (new - x)).real, axis=1, keepdims=True) > 0
        t_next = np.where(restart, 1.0, (1 + np.sqrt(1 + 4 * t**2)) / 2)
        momentum = np.where(restart, 0.0, (t - 1) / t_next)
        change = np.max(np.abs(new - x), axis=1)
        z = new + momentum * (new - x)
        x, t = new, t_next
        if iterations % check_every == 0:
            done = change < tolerance
            estimates[index[done]] = x[done]
            keep = ~done
            index, x, z, t = index[keep], x[keep], z[keep], t[keep]
            work = tuple(array[keep] for array in work)
    estimates[index] = x
    residual = float(np.max(np.abs(estimates - step(G, c, mu, estimates))))
    return estimates, {"iterations": iterations, "unconverged": int(index.size), "residual": residual}


def maximum_likelihood(H: np.ndarray, y: np.ndarray, modulation: str, chunk: int = 16) -> np.ndarray:
    """argmin over the constellation's n-tuples of ‖y − Hx‖²: every tuple of the first n − 1
    symbols, with the last symbol minimising the metric for it in closed form (the slicer's decision
    on hᴴr/‖h‖², r the residual of the first n − 1 symbols and h the last column)."""
    points = constellation(modulation)
    m, n = H.shape[1:]
    heads = np.array(list(itertools.product(points, repeat=n - 1))).T  # (n − 1, K)
    estimates = np.empty((len(H), n), dtype=np.complex128)
    for start in range(0, len(H), chunk):
        part = slice(start, start + chunk)
        leading = H[part, :, : n - 1]
        # r = y − H₁ c for every head c: one matrix product over the chunk's rows (b·m, n − 1)
        residual = y[part, :, None] - (leading.reshape(-1, n - 1) @ heads).reshape(len(leading), m, -1)  # (b, m, K)
        last_column = H[part, :, n - 1]  # h (b, m)
        energy = np.sum(last_column.real**2 + last_column.imag**2, axis=1)[:, None]
        projected = (last_column.conj()[:, None, :] @ residual)[:, 0, :] / energy  # p = hᴴr/‖h‖² (b, K)
        last = points[slice_symbols(projected, modulation)]  # (b, K)
        # ‖r − h s‖² = ‖r‖² + ‖h‖² (|s − p|² − |p|²)
        metric = np.sum(residual.real**2 + residual.imag**2, axis=1) + energy * (
            np.abs(last - projected) ** 2 - np.abs(projected) ** 2
        )
        best = np.argmin(metric, axis=1)
        estimates[part, : n - 1] = heads[:, best].T
        estimates[part, n - 1] = last[np.arange(len(best)), best]
    return estimates


# ---------------------------------------------------------------------- unfolded detectors


def unfolded_detector(
    model: torch.nn.Module,
    binding: Binding,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    chunk: int = 2000,
) -> Detector:
    """A trained network of ``specs/mimo.unf`` as a detector: feeds the inputs its spec declares
    (H, y and σ² where declared, by the binding's names) in the model's ``dtype`` (complex arrays
    in its complex counterpart) on its ``device``, returns x̂."""
    complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=complex_dtype if np.iscomplexobj(array) else dtype, device=device)

    def detect(H: np.ndarray, y: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
        arrays = {"H": H, "y": y, "sigma2": sigma2}
        estimates = []
        with torch.no_grad():
            for start in range(0, len(H), chunk):
                inputs = {name: tensor(arrays[binding.names[name]][start : start + chunk]) for name in binding.inputs}
                estimates.append(model(**inputs).detach().cpu().numpy().astype(np.complex128))
        return np.concatenate(estimates)

    return detect


def untrained_differences(
    model: torch.nn.Module, binding: Binding, case: Case, setting: Setting, options: argparse.Namespace
) -> dict[str, float]:
    """max |x̂ − x̂_classical| of the untrained network against the projected gradient at equal depth
    from x = 0 (``pgd_k``) and from the LMMSE estimate (``pgd_k_lmmse``), on 200 samples of the
    training SNR range: the spec's initial value decides which one it starts as."""
    sample = box_detection(
        200,
        case.m,
        case.n,
        case.modulation,
        case.train_snr,
        [options.seed, TEST_STREAM, len(case.snr_db)],  # a stream no test point uses
        options.channel,
        options.rho,
    )
    untrained = unfolded_detector(model, binding, device=options.device)(sample.H, sample.y, sample.sigma2)
    edge = hull_edge(case.modulation)
    starts = {"pgd_k": None, "pgd_k_lmmse": lmmse(sample.H, sample.y, sample.sigma2)}
    return {
        key: float(np.max(np.abs(untrained - projected_gradient(sample.H, sample.y, edge, setting.layers, start))))
        for key, start in starts.items()
    }


def train_unfolded(
    loaded: Any, net: Network, case: Case, setting: Setting, options: argparse.Namespace, log
) -> tuple[torch.nn.Module, Binding, dict[str, Any]]:
    """Build ``net`` for ``case`` and train it; the record says which classical detector it started as."""
    source = detection_source(
        case.m, case.n, case.modulation, case.train_snr, seed=options.seed, channel=options.channel, rho=options.rho
    )
    binding = bind(source, slots_from_problem(loaded.unfold(net.unfold).problem))
    model = build_model(
        loaded,
        net.unfold,
        binding,
        dtype=torch.float32,
        layers=setting.layers,
        overrides={HULL_PARAM: hull_edge(case.modulation)},
        seed=options.seed,
        device=options.device,
    )
    untrained = untrained_differences(model, binding, case, setting, options)
    steps = options.steps if options.steps is not None else net.quick_steps if options.quick else net.steps
    started = time.perf_counter()
    result = fit(
        model,
        binding,
        Config(
            scheme="supervised",
            steps=steps,
            batch=setting.batch,
            lr=net.lr,
            milestones=[steps // 2, (3 * steps) // 4],
            val_size=setting.val_size,
            val_every=setting.val_every,
            checkpoint_every=10**9,
        ),
        out=None,
        progress=False,
    )
    record = {
        "label": net.label,
        "spec": f"{Path(options.spec).name}: {net.unfold}",
        "steps": steps,
        "lr": net.lr,
        "train_snr_db": list(case.train_snr),
        "train_minutes": (time.perf_counter() - started) / 60,
        "val_nmse_db": float(result.nmse_db[-1]),
        # the classical detector the untrained network computes (its start), if any
        "untrained_max_difference": untrained,
        "starts_as": min(untrained, key=untrained.get) if min(untrained.values()) < STARTS_AS_TOLERANCE else None,
    }
    log(
        f"  {case.key} {net.key}: {steps} steps in {record['train_minutes']:.1f} min, "
        f"validation NMSE {record['val_nmse_db']:.2f} dB"
    )
    return model, binding, record


# ---------------------------------------------------------------------- measures


def crossing_snr(snr_db: list[float], ser: list[float], target: float, symbols: int) -> float | None:
    """The SNR where the SER curve first falls through ``target``, interpolated linearly in
    log10 SER between the two grid points around it; a point without errors counts as half an
    error in ``symbols``. None: the grid does not bracket the crossing."""
    logs = np.log10(np.maximum(ser, 0.5 / symbols))
    goal = math.log10(target)
    for i in range(1, len(snr_db)):
        if logs[i - 1] > goal >= logs[i]:
            fraction = (logs[i - 1] - goal) / (logs[i - 1] - logs[i])
            return float(snr_db[i - 1] + fraction * (snr_db[i] - snr_db[i - 1]))
    return None


def compare(detectors: dict[str, dict[str, Any]], with_ml: bool) -> None:
    """Per detector and target SER: the gain over LMMSE (dB, positive: fewer dB needed) and, with
    ML, the fraction of the LMMSE → ML gap it closes (1: as good as ML)."""
    reference = detectors["lmmse"]["crossing_db"]
    floor = detectors["ml"]["crossing_db"] if with_ml else None
    for entry in detectors.values():
        gains, closed = {}, {}
        for target, at in entry["crossing_db"].items():
            lmmse_at = reference[target]
            gains[target] = None if at is None or lmmse_at is None else lmmse_at - at
            if floor is not None:
                ml_at = floor[target]
                usable = None not in (at, lmmse_at, ml_at) and lmmse_at - ml_at > 0
                closed[target] = (lmmse_at - at) / (lmmse_at - ml_at) if usable else None
        entry["gain_over_lmmse_db"] = gains
        if floor is not None:
            entry["ml_gap_closed"] = closed


def evaluate_case(
    case: Case,
    setting: Setting,
    options: argparse.Namespace,
    networks: dict[str, tuple[str, Detector]],
    log,
) -> dict[str, Any]:
    """SER of every detector on the case's test sets (one per SNR point, shared by the detectors)."""
    edge = hull_edge(case.modulation)
    K = setting.layers
    classical: dict[str, tuple[str, Detector]] = {
        "zf": ("zero-forcing", zero_forcing),
        "lmmse": ("LMMSE", lmmse),
        "pgd_k": (f"projected gradient, {K} iterations", lambda H, y, s2: projected_gradient(H, y, edge, K)),
        "pgd_k_lmmse": (
            f"projected gradient from LMMSE, {K} iterations",
            lambda H, y, s2: projected_gradient(H, y, edge, K, lmmse(H, y, s2)),
        ),
    }
    converged_runs: list[dict[str, float]] = []

    def converged(H: np.ndarray, y: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
        x, record = projected_gradient_converged(
            H, y, edge, setting.converged_tolerance, setting.converged_max_iterations
        )
        converged_runs.append(record)
        return x

    classical["pgd_converged"] = ("projected gradient, converged", converged)
    if case.with_ml:
        classical["ml"] = ("maximum likelihood", lambda H, y, s2: maximum_likelihood(H, y, case.modulation))
    everyone = classical | networks
    errors: dict[str, list[int]] = {key: [] for key in everyone}
    seconds: dict[str, float] = dict.fromkeys(everyone, 0.0)
    for index, snr in enumerate(case.snr_db):
        sample = box_detection(
            case.test_samples(setting),
            case.m,
            case.n,
            case.modulation,
            snr,
            [options.seed, TEST_STREAM, index],
            options.channel,
            options.rho,
        )
        for key, (_, detect) in everyone.items():
            started = time.perf_counter()
            decided = slice_symbols(detect(sample.H, sample.y, sample.sigma2), case.modulation)
            seconds[key] += time.perf_counter() - started
            errors[key].append(int(np.count_nonzero(decided != sample.symbols)))
    symbols = case.test_samples(setting) * case.n
    detectors = {}
    for key, (label, _) in everyone.items():
        ser = [count / symbols for count in errors[key]]
        detectors[key] = {
            "label": label,
            "kind": "unfolded" if key in networks else "classical",
            "ser": ser,
            "errors": errors[key],
            "crossing_db": {f"{t:g}": crossing_snr(list(case.snr_db), ser, t, symbols) for t in TARGETS},
            "seconds": seconds[key],
        }
    detectors["pgd_converged"]["runs"] = converged_runs
    compare(detectors, case.with_ml)
    crossings = ", ".join(
        f"{key} {entry['crossing_db']['0.01']:.1f}" if entry["crossing_db"]["0.01"] is not None else f"{key} -"
        for key, entry in detectors.items()
    )
    log(f"  {case.key}: SNR (dB) at SER 1e-2: {crossings}")
    return {
        "m": case.m,
        "n": case.n,
        "modulation": case.modulation,
        "snr_db": list(case.snr_db),
        "test_samples": case.test_samples(setting),
        "symbols_per_point": symbols,
        "detectors": detectors,
    }


# ---------------------------------------------------------------------- report


def markdown_table(results: dict[str, Any]) -> str:
    """Per case and detector: the SNR at SER 10⁻² and 10⁻³, the gain over LMMSE, the ML gap closed."""
    lines = [
        "| case | detector | SNR at SER 1e-2 | SNR at SER 1e-3 | gain over LMMSE | LMMSE→ML gap closed |",
        "|---|---|---|---|---|---|",
    ]

    def cell(value: float | None, unit: str = " dB", signed: bool = False) -> str:
        if value is None:
            return "–"
        return f"{value:+.1f}{unit}" if signed else f"{value:.1f}{unit}"

    for key, case in results["cases"].items():
        for entry in case["detectors"].values():
            gains = entry["gain_over_lmmse_db"]
            closed = entry.get("ml_gap_closed")
            gap = " / ".join("–" if v is None else f"{100 * v:.0f} %" for v in closed.values()) if closed else "n/a"
            lines.append(
                f"| {key.replace('x', '×').replace('_', ' ')} | {entry['label']} "
                f"| {cell(entry['crossing_db']['0.01'])} | {cell(entry['crossing_db']['0.001'])} "
                f"| {cell(gains['0.01'], signed=True)} / {cell(gains['0.001'], signed=True)} | {gap} |"
            )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = results["cases"]
    columns = min(3, len(cases))
    rows = math.ceil(len(cases) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.8 * columns, 3.8 * rows), squeeze=False)
    # one colour per detector in every panel (ML appears only in the 4×4 ones)
    keys = list(dict.fromkeys(key for case in cases.values() for key in case["detectors"]))
    colours = dict(zip(keys, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 2, strict=False))
    labels: dict[str, Any] = {}
    for axis, case in zip(axes.flat, cases.values(), strict=False):
        floor = 0.5 / case["symbols_per_point"]
        for key, entry in case["detectors"].items():
            style = "-" if entry["kind"] == "unfolded" else "--"
            (line,) = axis.semilogy(
                case["snr_db"], np.maximum(entry["ser"], floor), style, marker="o", markersize=3, color=colours[key]
            )
            labels.setdefault(entry["label"], line)
        axis.set_ylim(floor, 1)
        axis.set_title(f"{case['m']}×{case['n']} (receive × transmit), {case['modulation'].upper()}")
        axis.set_xlabel("SNR (dB)")
        axis.set_ylabel("symbol-error rate")
        axis.grid(alpha=0.3, which="both")
    for axis in list(axes.flat)[len(cases) :]:
        axis.axis("off")
    figure.legend(list(labels.values()), list(labels), loc="lower center", ncol=4, fontsize=8)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ---------------------------------------------------------------------- the study


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4×4 QPSK and 16-QAM, small test sets, short trainings")
    parser.add_argument("--cases", default=None, help="comma-separated subset of the cases, e.g. 16x16_qpsk,4x4_16qam")
    parser.add_argument(
        "--networks",
        default=",".join(n.key for n in NETWORKS),
        help="comma-separated unfolded networks to train (empty: classical detectors only): "
        + ", ".join(n.key for n in NETWORKS),
    )
    parser.add_argument("--layers", type=int, default=None, help="K: the networks' depth (default 10, 6 with --quick)")
    parser.add_argument("--spec", default=str(SPEC), help="the spec of the unfolded networks (default specs/mimo.unf)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per network (default: per network)")
    parser.add_argument("--test-symbols", type=int, default=None, help="test symbols per SNR point")
    parser.add_argument("--channel", default="rayleigh", choices=("rayleigh", "kronecker"))
    parser.add_argument("--rho", type=float, default=None, help="the Kronecker channel's correlation (default 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the networks train and run")
    parser.add_argument("--out", default=None, help="results JSON (default benchmarks/results/mimo[_quick].json)")
    parser.add_argument("--plot-dir", default=None, help="where the SER plot goes")
    options = parser.parse_args(argv)
    options.argv = list(sys.argv[1:] if argv is None else argv)
    return options


def run(options: argparse.Namespace, log=print) -> dict[str, Any]:
    torch.set_num_threads(options.threads)
    if options.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    started = time.perf_counter()
    setting = QUICK if options.quick else FULL
    if options.layers is not None:
        setting = dataclasses.replace(setting, layers=options.layers)
    if options.test_symbols is not None:
        setting = dataclasses.replace(setting, test_symbols=options.test_symbols)
    known = {case.key: case for case in setting.cases}
    chosen = options.cases.split(",") if options.cases else list(known)
    unknown = [key for key in chosen if key not in known]
    if unknown:
        raise SystemExit(f"--cases {','.join(unknown)}: expected some of {', '.join(known)}")
    wanted = [key for key in options.networks.split(",") if key]
    networks = [net for net in NETWORKS if net.key in wanted]
    if len(networks) != len(wanted):
        raise SystemExit(f"--networks {options.networks}: expected some of {', '.join(n.key for n in NETWORKS)}")
    loaded = load_spec(options.spec) if networks else None
    mode = "quick" if options.quick else "full"
    results: dict[str, Any] = {
        "study": "mimo",
        "mode": mode,
        "command": " ".join([".venv/bin/python benchmarks/mimo.py", *options.argv]),
        "setting": {
            **{f.name: getattr(setting, f.name) for f in dataclasses.fields(Setting) if f.name != "cases"},
            "antennas": "m × n = receive × transmit",
            "snr": "E‖Hx‖² / E‖w‖² = n / (m σ²), per receive antenna",
            "channel": options.channel,
            "rho": options.rho,
            "seed": options.seed,
            "dtype of the networks": "float32 (complex64)",
            "test_set": f"per SNR point, stream (seed, {TEST_STREAM}, point index), the same for every detector",
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "threads": options.threads,
            "device": torch.cuda.get_device_name(0) if options.device == "cuda" else "cpu",
            "torch": torch.__version__,
        },
        "cases": {},
    }
    for key in chosen:
        case = known[key]
        log(
            f"{key}: m={case.m} receive, n={case.n} transmit, {case.modulation}, "
            f"SNR grid {case.snr_db[0]:g}..{case.snr_db[-1]:g} dB"
        )
        trained: dict[str, tuple[str, Detector]] = {}
        records = {}
        for net in networks:
            model, binding, records[net.key] = train_unfolded(loaded, net, case, setting, options, log)
            trained[net.key] = (net.label, unfolded_detector(model, binding, device=options.device))
        results["cases"][key] = evaluate_case(case, setting, options, trained, log)
        for net_key, record in records.items():
            results["cases"][key]["detectors"][net_key]["training"] = record
    results["total_minutes"] = (time.perf_counter() - started) / 60
    out = (
        Path(options.out)
        if options.out
        else ROOT / "benchmarks" / "results" / f"mimo{'_quick' if options.quick else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    plot_dir = (
        Path(options.plot_dir) if options.plot_dir else ROOT / ("build/mimo_quick" if options.quick else "docs/img")
    )
    try:
        plot(results, plot_dir / "mimo_ser.png")
    except ImportError:
        log("matplotlib is not installed (pip install 'unfoldgen[plot]'): no plot")
    log(markdown_table(results))
    return results


def main(argv: list[str] | None = None) -> None:
    run(arguments(argv))


if __name__ == "__main__":
    main()
