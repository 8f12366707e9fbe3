"""Data for training unfolded networks: synthetic generators for the example families and
``.npz`` files, matched to a spec's data, inputs and variables.

Generators (seeded, float64 numpy):
- sparse recovery ``y = A x + noise``: Gaussian A with unit-norm columns, Bernoulli(p)-Gaussian x;
- robust PCA ``D = L + S + noise``: rank-r L, a fraction of outliers in S;
- MIMO detection ``y = H x + noise``: BPSK or 4-PAM symbols in [-1, 1] over a real Gaussian
  channel, or QPSK and 16-QAM (unit energy, complex128) over a complex Rayleigh or correlated
  Kronecker channel, a channel H per sample, the SNR fixed or drawn per sample, the symbol indices
  (``slice_symbols`` makes hard decisions for symbol-error rates) and the noise variance;
- images (``ImageSource``): patches of scikit-image's test images (``unfoldgen.images``), degraded
  by the spec's own forward model: the trainer computes the measured inputs with the model's
  ``measure`` and adds the source's noise (see ``Binding.with_measured``).

A *source* (``SparseSource``, ``RobustPCASource``, ``DetectionSource``, ``NpzSource``) holds the
arrays shared by every sample (``fixed``: the operator A) and draws per-sample arrays. Every batch
is a pure function of ``(seed, step)``, so a resumed run sees exactly the data the uninterrupted
run would have seen. ``bind(source, slots)`` matches the source's arrays to the spec's ``data``,
``input`` and ``var`` declarations (by name, else by role and rank in declaration order) and checks
every shape against the spec's dims; a missing or misshaped array is a ``DataError`` that says
which array, which declaration and which shape was expected.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

Axis = str | int


class DataError(ValueError):
    """A data source does not fit the spec (missing array, wrong shape, unknown source)."""


# The largest matrix a generator draws (m × n entries): 10^7 float64 entries are 76 MiB; one
# more order of magnitude per sample would not fit a batch in memory.
MAX_ENTRIES = 10_000_000


def _check_sizes(family: str, m: int, n: int) -> None:
    for name, value in (("m", m), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise DataError(f"{family}: {name}={value!r}; expected an integer ≥ 1")
    if m * n > MAX_ENTRIES:
        gib = m * n * 8 / 2**30
        raise DataError(
            f"{family}: m={m}, n={n} makes {m}×{n} matrices ({gib:.1f} GiB of float64 each); "
            f"expected m·n ≤ {MAX_ENTRIES:,}"
        )


def _check_snr(family: str, snr_db: float | None) -> None:
    if snr_db is not None and not (math.isfinite(snr_db) or snr_db == math.inf):
        raise DataError(f"{family}: snr={snr_db}; expected a number of dB (inf: noiseless)")


def _check_seed(family: str, seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"{family}: seed={seed!r}; expected an integer ≥ 0")


# ---------------------------------------------------------------------- generators


@dataclass(frozen=True)
class SparseRecovery:
    """y = A x + noise with Bernoulli(p)-Gaussian x and A with N(0, 1/m) entries, unit columns."""

    A: np.ndarray  # (m, n)
    y: np.ndarray  # (B, m)
    x: np.ndarray  # (B, n)


def sensing_matrix(m: int, n: int, seed: int | Sequence[int] = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, 1.0 / np.sqrt(m), size=(m, n))
    return matrix / np.linalg.norm(matrix, axis=0, keepdims=True)


def _add_noise(clean: np.ndarray, snr_db: float | None, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise at ``snr_db`` relative to each sample's signal power (None: noiseless)."""
    if snr_db is None:
        return clean
    axes = tuple(range(1, clean.ndim))
    power = np.mean(clean**2, axis=axes, keepdims=True)
    noise_std = np.sqrt(power / 10 ** (snr_db / 10))
    return clean + noise_std * rng.normal(size=clean.shape)


def sparse_recovery(
    A: np.ndarray, batch: int, p: float = 0.1, snr_db: float | None = None, seed: int | Sequence[int] = 0
) -> SparseRecovery:
    """Draw ``batch`` sparse codes for the operator A; noise at ``snr_db`` (None: noiseless)."""
    rng = np.random.default_rng(seed)
    n = A.shape[1]
    x = rng.normal(size=(batch, n)) * (rng.random((batch, n)) < p)
    y = _add_noise(x @ A.T, snr_db, rng)
    return SparseRecovery(A, y, x)


@dataclass(frozen=True)
class RobustPCA:
    """D = L + S + noise: L of rank ``rank`` (unit-variance entries), S sparse outliers."""

    D: np.ndarray  # (B, m, n)
    L: np.ndarray  # (B, m, n)
    S: np.ndarray  # (B, m, n)


def robust_pca(
    batch: int,
    m: int,
    n: int,
    rank: int = 2,
    outliers: float = 0.05,
    noise: float = 0.0,
    outlier_scale: float = 5.0,
    seed: int | Sequence[int] = 0,
) -> RobustPCA:
    """Low-rank plus sparse matrices; outliers uniform in ±[outlier_scale/2, outlier_scale]."""
    _check_sizes("robust PCA", m, n)
    if not 0 <= outliers <= 1:
        raise DataError(f"robust PCA: outliers={outliers}; expected a fraction of the entries in [0, 1]")
    if not (math.isfinite(noise) and noise >= 0):
        raise DataError(f"robust PCA: noise={noise}; expected a standard deviation ≥ 0")
    if not 1 <= rank <= min(m, n):
        raise DataError(f"robust PCA: rank must be between 1 and min(m, n) = {min(m, n)}, got {rank}")
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(batch, m, rank))
    V = rng.normal(size=(batch, n, rank))
    L = U @ V.transpose(0, 2, 1) / np.sqrt(rank)
    mask = rng.random((batch, m, n)) < outliers
    magnitude = rng.uniform(outlier_scale / 2, outlier_scale, size=(batch, m, n))
    S = mask * magnitude * rng.choice([-1.0, 1.0], size=(batch, m, n))
    D = L + S + noise * rng.normal(size=(batch, m, n))
    return RobustPCA(D, L, S)


def _square_qam(side: int) -> np.ndarray:
    """Square QAM with ``side``² points at unit average energy, Gray labelled on each axis: symbol
    ``s = side · a + b`` has the level with Gray label a in phase and the one with label b in
    quadrature, so neighbouring points differ in one bit of s."""
    ascending = (2 * np.arange(side) - (side - 1)) / np.sqrt(2 * (side**2 - 1) / 3)
    gray = np.arange(side) ^ (np.arange(side) >> 1)
    axis = np.empty(side)
    axis[gray] = ascending  # axis[label] is the level with that Gray label
    return (axis[:, None] + 1j * axis[None, :]).ravel()


# Symbol index s is the position in the array. bpsk and 4pam (natural labelling, ascending) are
# scaled into the box [-1, 1] (4pam's mean energy is 5/9); qpsk and 16qam have unit mean energy
# and a box hull: |re|, |im| ≤ 1/√2 (qpsk) and ≤ 3/√10 (16qam).
MODULATIONS = {
    "bpsk": np.array([-1.0, 1.0]),
    "4pam": np.array([-1.0, -1.0 / 3.0, 1.0 / 3.0, 1.0]),
    "qpsk": _square_qam(2),
    "16qam": _square_qam(4),
}
CHANNELS = ("rayleigh", "kronecker")
DEFAULT_RHO = 0.5


def constellation(modulation: str) -> np.ndarray:
    """The points of ``modulation``: ``points[s]`` is the symbol with index s (float64 or complex128)."""
    if modulation not in MODULATIONS:
        raise DataError(f"detection: unknown modulation {modulation!r}; expected one of {', '.join(MODULATIONS)}")
    return MODULATIONS[modulation]


def slice_symbols(values: np.ndarray, modulation: str) -> np.ndarray:
    """Hard decisions: the index of the constellation point nearest each entry of ``values``
    (int64, same shape). Square constellations decide each axis on its own, which is the
    nearest point in the plane."""
    points = constellation(modulation)
    values = np.asarray(values)
    if np.iscomplexobj(values) and not np.iscomplexobj(points):
        raise DataError(f"slice_symbols: complex values for the real modulation {modulation}; expected real values")
    if not np.iscomplexobj(points):
        order = np.argsort(points)
        return order[_nearest_level(values, points[order])]
    side = math.isqrt(len(points))
    axis = points[::side].real  # the in-phase level of each label (the quadrature levels are the same)
    order = np.argsort(axis)
    levels = axis[order]
    return side * order[_nearest_level(values.real, levels)] + order[_nearest_level(values.imag, levels)]


def _nearest_level(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The index of the nearest of the ascending ``levels`` to each value."""
    return np.searchsorted((levels[1:] + levels[:-1]) / 2, values)


def exponential_correlation(size: int, rho: float) -> np.ndarray:
    """The exponential correlation matrix [R]_ij = ρ^|i−j| (size × size)."""
    index = np.arange(size)
    return rho ** np.abs(index[:, None] - index[None, :]).astype(np.float64)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


@dataclass(frozen=True)
class Detection:
    """y = H x + noise: symbols x (indices ``symbols``), a channel H per sample, the noise variance."""

    H: np.ndarray  # (B, m, n), complex128 for complex modulations
    y: np.ndarray  # (B, m)
    x: np.ndarray  # (B, n)
    symbols: np.ndarray  # (B, n) int64: x = constellation(modulation)[symbols]
    sigma2: np.ndarray  # (B,) noise variance per entry of y (E|w_i|²; 0: noiseless)


SnrOption = float | tuple[float, float] | None


def _check_detection_options(modulation: str, snr_db: SnrOption, channel: str, rho: float | None) -> None:
    constellation(modulation)
    if isinstance(snr_db, tuple):
        low, high = snr_db
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise DataError(f"detection: snr={low:g}:{high:g}; expected LOW:HIGH with finite dB and LOW < HIGH")
    else:
        _check_snr("detection", snr_db)
    if channel not in CHANNELS:
        raise DataError(f"detection: channel={channel!r}; expected one of {', '.join(CHANNELS)}")
    if rho is not None:
        if channel != "kronecker":
            raise DataError(f"detection: rho={rho:g} applies to channel=kronecker; expected no rho with {channel}")
        if not 0 <= rho < 1:
            raise DataError(f"detection: rho={rho:g}; expected a correlation coefficient in [0, 1)")


def box_detection(
    batch: int,
    m: int,
    n: int,
    modulation: str = "bpsk",
    snr_db: SnrOption = 10.0,
    seed: int | Sequence[int] = 0,
    channel: str = "rayleigh",
    rho: float | None = None,
) -> Detection:
    """MIMO detection ``y = H x + w`` with n transmit and m receive antennas; symbols uniform over
    ``modulation`` (``MODULATIONS``; every constellation's convex hull is a box).

    Channel: ``rayleigh`` draws H with i.i.d. entries N(0, 1/m) (real modulations) or CN(0, 1/m)
    (qpsk, 16qam); ``kronecker`` draws H = R_r^{1/2} G R_t^{1/2} with G such a matrix and the
    exponential correlations [R_r]_ij = ρ^|i−j| (m × m, receive) and [R_t]_ij = ρ^|i−j| (n × n,
    transmit), ρ = ``rho`` (default 0.5). Either way E|H_ij|² = 1/m.

    ``snr_db``: a number, a range ``(low, high)`` drawn uniformly per sample, or None (noiseless).
    - qpsk, 16qam: SNR = E‖Hx‖² / E‖w‖² = n / (m σ²) (per receive antenna, as E‖Hx‖² = n for
      unit-energy symbols), so σ² = n / (m · 10^(SNR/10)) and w ~ CN(0, σ² I): E|w_i|² = σ².
    - bpsk, 4pam (unchanged): each sample's own ‖Hx‖² / m over the noise variance σ², w ~ N(0, σ² I).
    ``sigma2`` holds each sample's σ².
    """
    _check_detection_options(modulation, snr_db, channel, rho)
    _check_sizes("detection", m, n)
    points = constellation(modulation)
    rng = np.random.default_rng(seed)
    if np.iscomplexobj(points):
        symbols = rng.integers(0, len(points), size=(batch, n))
        x = points[symbols]
        H = (rng.normal(size=(batch, m, n)) + 1j * rng.normal(size=(batch, m, n))) / np.sqrt(2 * m)
        noise = (rng.normal(size=(batch, m)) + 1j * rng.normal(size=(batch, m))) / np.sqrt(2)
    else:  # the original real source's draws, in its order (no noise drawn when noiseless)
        x = rng.choice(points, size=(batch, n))
        symbols = slice_symbols(x, modulation)
        H = rng.normal(0.0, 1.0 / np.sqrt(m), size=(batch, m, n))
        noise = np.zeros((batch, m)) if snr_db is None else rng.normal(size=(batch, m))
    if channel == "kronecker":
        correlation = DEFAULT_RHO if rho is None else rho
        H = _symmetric_sqrt(exponential_correlation(m, correlation)) @ H
        H = H @ _symmetric_sqrt(exponential_correlation(n, correlation))
    clean = np.einsum("bmn,bn->bm", H, x)
    if isinstance(snr_db, tuple):
        snr = rng.uniform(*snr_db, size=batch)
    else:
        snr = np.full(batch, math.inf if snr_db is None else snr_db)
    gain = 10 ** (snr / 10)  # inf when noiseless: σ² = 0
    sigma2 = n / (m * gain) if np.iscomplexobj(points) else np.mean(clean**2, axis=1) / gain
    return Detection(H, clean + np.sqrt(sigma2)[:, None] * noise, x, symbols, sigma2)


def analytic_weight(A: np.ndarray) -> np.ndarray:
    """ALISTA-style analytic weight W (m, n): column i minimises ||Aᵀ w||² subject to a_iᵀ w = 1.

    Closed form ``w_i = G⁻¹ a_i / (a_iᵀ G⁻¹ a_i)`` with ``G = A Aᵀ`` (a pseudo-inverse when G is
    singular), so ``diag(Wᵀ A) = 1`` and the off-diagonal mass of ``Wᵀ A`` is as small as it can be
    in Frobenius norm (the Frobenius variant of Liu et al., 2019).
    """
    A = np.asarray(A, dtype=np.float64)
    solved = np.linalg.pinv(A @ A.T) @ A
    scale = np.einsum("mi,mi->i", A, solved)
    return solved / scale


def nmse_db(estimate: np.ndarray, truth: np.ndarray) -> float:
    """10 log10( E||x̂ − x||² / E||x||² ) over the batch."""
    error = np.sum((estimate - truth) ** 2)
    return float(10 * np.log10(error / np.sum(truth**2)))


# ---------------------------------------------------------------------- sources

TRAIN_STREAM, VALIDATION_STREAM, FIXED_STREAM, MEASUREMENT_STREAM = 1, 2, 0, 3


@dataclass
class Source:
    """Arrays for training: ``fixed`` ones shared by every sample, per-sample ones drawn per batch.

    ``roles`` names each per-sample array's role: ``input`` (fed to the network), ``target``
    (a ground-truth variable) or ``evaluation`` (kept for metrics, such as symbol indices; never
    bound to the spec). Subclasses implement ``draw(count, seed)``.
    """

    name: str
    seed: int
    fixed: dict[str, np.ndarray]
    roles: dict[str, str]
    description: str = ""

    def draw(self, count: int, seed: Sequence[int]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def train_batch(self, step: int, size: int) -> dict[str, np.ndarray]:
        """The batch of training step ``step`` (0-based): a pure function of (seed, step)."""
        return self.draw(size, (self.seed, TRAIN_STREAM, step))

    def validation(self, size: int) -> dict[str, np.ndarray]:
        """The validation set: disjoint from the training stream, the same on every call."""
        return self.draw(size, (self.seed, VALIDATION_STREAM))

    @property
    def measurement_noise(self) -> float | None:
        """The noise σ the trainer adds to the inputs the model measures (``model.measure``);
        None: the source draws every input itself."""
        return None

    def check_trainable(self) -> None:
        """Raise a DataError when the source must not be trained on (held-out test data)."""


@dataclass
class SparseSource(Source):
    """Sparse recovery: fixed A (m, n); per sample y (m) input and x (n) target."""

    m: int = 20
    n: int = 40
    p: float = 0.1
    snr_db: float | None = 40.0

    def draw(self, count: int, seed: Sequence[int]) -> dict[str, np.ndarray]:
        sample = sparse_recovery(self.fixed["A"], count, self.p, self.snr_db, seed=list(seed))
        return {"y": sample.y, "x": sample.x}


def sparse_source(m: int = 20, n: int = 40, p: float = 0.1, snr_db: float | None = 40.0, seed: int = 0) -> SparseSource:
    if not 0 < p <= 1:
        raise DataError(f"sparse: p={p}; expected a fraction of nonzeros in (0, 1]")
    _check_sizes("sparse", m, n)
    _check_snr("sparse", snr_db)
    _check_seed("sparse", seed)
    if snr_db == math.inf:
        snr_db = None
    A = sensing_matrix(m, n, seed=[seed, FIXED_STREAM])
    return SparseSource(
        "sparse",
        seed,
        {"A": A},
        {"y": "input", "x": "target"},
        f"sparse recovery m={m}, n={n}, p={p:g}, SNR {snr_db} dB, seed {seed}",
        m,
        n,
        p,
        snr_db,
    )


@dataclass
class RobustPCASource(Source):
    """Robust PCA: per sample D (m, n) input, L and S (m, n) targets."""

    m: int = 20
    n: int = 20
    rank: int = 2
    outliers: float = 0.05
    noise: float = 0.0

    def draw(self, count: int, seed: Sequence[int]) -> dict[str, np.ndarray]:
        sample = robust_pca(count, self.m, self.n, self.rank, self.outliers, self.noise, seed=list(seed))
        return {"D": sample.D, "L": sample.L, "S": sample.S}


def rpca_source(
    m: int = 20, n: int = 20, rank: int = 2, outliers: float = 0.05, noise: float = 0.0, seed: int = 0
) -> RobustPCASource:
    robust_pca(1, m, n, rank, outliers, noise)  # validates the arguments
    _check_seed("rpca", seed)
    return RobustPCASource(
        "rpca",
        seed,
        {},
        {"D": "input", "L": "target", "S": "target"},
        f"robust PCA m={m}, n={n}, rank {rank}, outliers {outliers:g}, noise {noise:g}, seed {seed}",
        m,
        n,
        rank,
        outliers,
        noise,
    )


@dataclass
class DetectionSource(Source):
    """MIMO detection: per sample H (m, n), y (m) and the noise variance sigma2 (a scalar) as inputs,
    x (n) as target, and the symbol indices ``symbols`` (n) for symbol-error rates (never bound to
    the spec). Complex modulations give complex128 H, y and x."""

    m: int = 16
    n: int = 8
    modulation: str = "bpsk"
    snr_db: SnrOption = 10.0
    channel: str = "rayleigh"
    rho: float | None = None

    def draw(self, count: int, seed: Sequence[int]) -> dict[str, np.ndarray]:
        sample = box_detection(count, self.m, self.n, self.modulation, self.snr_db, list(seed), self.channel, self.rho)
        return {"H": sample.H, "y": sample.y, "sigma2": sample.sigma2, "x": sample.x, "symbols": sample.symbols}


def detection_source(
    m: int = 16,
    n: int = 8,
    modulation: str = "bpsk",
    snr_db: SnrOption = 10.0,
    seed: int = 0,
    channel: str = "rayleigh",
    rho: float | None = None,
) -> DetectionSource:
    """``snr_db``: dB, a range (low, high) drawn per sample, or None / inf (noiseless); see
    ``box_detection`` for the channels and the definition of the SNR."""
    box_detection(1, m, n, modulation, snr_db, channel=channel, rho=rho)  # validates the arguments
    _check_seed("detection", seed)
    if snr_db == math.inf:
        snr_db = None
    snr_text = f"{snr_db[0]:g} to {snr_db[1]:g}" if isinstance(snr_db, tuple) else f"{snr_db}"
    channel_text = f", kronecker channel ρ {DEFAULT_RHO if rho is None else rho:g}" if channel == "kronecker" else ""
    return DetectionSource(
        "detection",
        seed,
        {},
        {"H": "input", "y": "input", "sigma2": "input", "x": "target", "symbols": "evaluation"},
        f"detection m={m}, n={n}, {modulation}{channel_text}, SNR {snr_text} dB, seed {seed}",
        m,
        n,
        modulation,
        snr_db,
        channel,
        rho,
    )


def snr_option(text: str) -> float | tuple[float, float]:
    """``snr=`` of a detection source: dB (``10``, ``inf``) or a range ``LOW:HIGH`` drawn per sample."""
    low, colon, high = text.partition(":")
    try:
        return (float(low), float(high)) if colon else float(text)
    except ValueError:
        raise DataError(
            f"data source detection: snr={text!r}; expected dB (10, inf) or a range LOW:HIGH such as 5:20"
        ) from None


@dataclass
class NpzSource(Source):
    """Arrays from an ``.npz`` file named after the spec's data, inputs and variables.

    Data arrays have no batch axis; inputs and variables have N samples on axis 0. A fraction
    ``validation_fraction`` of the samples (a seeded split) is held out for validation; training
    batches are drawn from the rest, each a pure function of (seed, step).
    """

    path: Path = Path()
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    validation_fraction: float = 0.1
    train_index: np.ndarray | None = None
    validation_index: np.ndarray | None = None

    def split(self, count: int) -> None:
        if count < 2:
            raise DataError(f"{self.path}: need at least 2 samples (training and validation), found {count}")
        order = np.random.default_rng([self.seed, VALIDATION_STREAM]).permutation(count)
        held = min(count - 1, max(1, round(self.validation_fraction * count)))
        self.validation_index, self.train_index = np.sort(order[:held]), order[held:]

    def _select(self, index: np.ndarray) -> dict[str, np.ndarray]:
        return {name: self.arrays[name][index] for name in self.roles}

    def draw(self, count: int, seed: Sequence[int]) -> dict[str, np.ndarray]:
        if self.train_index is None:
            raise DataError(f"{self.path}: bind the file to a spec before drawing batches")
        rng = np.random.default_rng(list(seed))
        pool = self.train_index
        picks = rng.choice(len(pool), size=count, replace=count > len(pool))
        return self._select(pool[picks])

    def validation(self, size: int) -> dict[str, np.ndarray]:
        if self.validation_index is None:
            raise DataError(f"{self.path}: bind the file to a spec before drawing batches")
        return self._select(self.validation_index[:size])


def npz_source(path: str | Path, validation_fraction: float = 0.1, seed: int = 0) -> NpzSource:
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            magic = stream.read(4)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None
    if magic[:2] != b"PK":  # every zip archive starts so; np.load would try other formats (and pickles)
        raise DataError(f"{path}: not an .npz file; expected a zip archive of arrays written by numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as loaded:
            arrays = {name: np.asarray(loaded[name]) for name in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a readable .npz file ({first}); expected arrays written by numpy.savez") from None
    if not 0 < validation_fraction < 1:
        raise DataError(f"validation fraction must be in (0, 1), got {validation_fraction}")
    return NpzSource("npz", seed, {}, {}, f"{path}", path=path, arrays=arrays, validation_fraction=validation_fraction)


@dataclass
class ImageSource(Source):
    """Grayscale images in [0, 1] for a spec with one image variable ``var x : real[h, w]``.

    Per sample: the clean image (the target; ``split=train``: a size × size patch of the training
    images at a random position under a random symmetry, ``unfoldgen.images.random_patches``;
    ``split=test``: the held-out test images, centred squares resized to size × size) and, for
    every input of the image's shape that the model does not measure, a Bernoulli(keep) 0/1 mask
    (an inpainting mask). The measured inputs are left to the trainer: y = model.measure(...)[y]
    + noise · N(0, 1) (``Binding.with_measured``, ``Binding.noise``). Square ``data`` matrices
    (a blur kernel) are given in ``fixed`` or, with ``blur``, are a Gaussian kernel of that σ.
    Validation patches come from the training images too (a fixed stream of their own); the
    test images never appear in a training or validation patch of ``split=train``.
    """

    size: int = 64
    noise: float = 0.01
    keep: float = 0.5
    split: str = "train"
    blur: float | None = None
    kernel: int = 9
    masks: tuple[str, ...] = ()  # the spec's image-shaped inputs (set by bind)
    given: frozenset[str] = frozenset()  # the data arrays the user gave (the others are blur kernels)

    @property
    def measurement_noise(self) -> float | None:
        return self.noise

    def check_trainable(self) -> None:
        if self.split == "test":
            raise DataError("image: split=test holds the held-out test images; expected split=train for training")

    def draw(self, count: int, seed: Sequence[int]) -> dict[str, np.ndarray]:
        from unfoldgen import images

        rng = np.random.default_rng(list(seed))
        if self.split == "test":
            pictures = [images.load_image(name, self.size) for name in images.TEST_IMAGES]
            clean = np.stack([pictures[i % len(pictures)] for i in range(count)])
        else:
            clean = images.random_patches(images.TRAIN_IMAGES, count, self.size, rng)
        masks = {name: (rng.random(clean.shape) < self.keep).astype(np.float64) for name in self.masks}
        return {"image": clean, **masks}

    def train_batch(self, step: int, size: int) -> dict[str, np.ndarray]:
        self.check_trainable()
        return super().train_batch(step, size)

    def validation(self, size: int) -> dict[str, np.ndarray]:
        """``split=test``: the held-out images (at most ``size`` of them), in catalogue order."""
        from unfoldgen.images import TEST_IMAGES

        count = min(size, len(TEST_IMAGES)) if self.split == "test" else size
        return self.draw(count, (self.seed, VALIDATION_STREAM))


IMAGE_SPLITS = ("train", "test")
MAX_IMAGE_SIZE = 512  # most catalogue images are 512 × 512; larger patches would come from two pictures only


def image_source(
    size: int | None = None,
    noise: float = 0.01,
    keep: float = 0.5,
    split: str = "train",
    blur: float | None = None,
    kernel: int = 9,
    seed: int = 0,
    fixed: Mapping[str, np.ndarray] | None = None,
) -> ImageSource:
    """Images from scikit-image's test images (``pip install unfoldgen[images]``).

    ``size``: the side of the square images (default 64 for ``train`` patches, 256 for ``test``);
    ``noise``: σ of the Gaussian noise added to the measured inputs (images are in [0, 1]);
    ``keep``: the fraction of ones in every mask input; ``split``: ``train`` (random patches of the
    training images) or ``test`` (the held-out images; evaluation only); ``blur``: σ (pixels) of a
    Gaussian kernel ``kernel`` × ``kernel`` for the spec's square ``data`` matrices; ``fixed``:
    the spec's ``data`` arrays by name (a kernel of your own).
    """
    if split not in IMAGE_SPLITS:
        raise DataError(f"image: split={split!r}; expected one of {', '.join(IMAGE_SPLITS)}")
    if size is None:
        size = 64 if split == "train" else 256
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 4 <= size <= MAX_IMAGE_SIZE:
        raise DataError(f"image: size={size!r}; expected an integer in [4, {MAX_IMAGE_SIZE}] (pixels per side)")
    if not (math.isfinite(noise) and noise >= 0):
        raise DataError(f"image: noise={noise}; expected a standard deviation ≥ 0 (images are in [0, 1])")
    if not 0 < keep <= 1:
        raise DataError(f"image: keep={keep}; expected the fraction of kept pixels in (0, 1]")
    if blur is not None and not (math.isfinite(blur) and blur > 0):
        raise DataError(f"image: blur={blur}; expected a standard deviation > 0 (pixels)")
    if isinstance(kernel, bool) or not isinstance(kernel, (int, np.integer)) or not 1 <= kernel <= size:
        raise DataError(f"image: kernel={kernel!r}; expected an integer in [1, size = {size}]")
    _check_seed("image", seed)
    from unfoldgen.images import _skimage

    _skimage()  # a missing scikit-image is a one-line error now, not at the first batch
    arrays = {name: np.asarray(value, dtype=np.float64) for name, value in (fixed or {}).items()}
    blurred = f", blur σ {blur:g} ({kernel}×{kernel})" if blur is not None else ""
    return ImageSource(
        "image",
        seed,
        arrays,
        {"image": "target"},
        f"images ({split}) {size}×{size}, noise σ {noise:g}, keep {keep:g}{blurred}, seed {seed}",
        size=size,
        noise=noise,
        keep=keep,
        split=split,
        blur=blur,
        kernel=kernel,
        given=frozenset(arrays),
    )


@dataclass
class MriSource(Source):
    """Compressed-sensing MRI (``unfoldgen.kspace``): fixed mask M (size, size); per sample the
    undersampled k-space y (size, size) complex input and the complex image x (size, size) target.

    x is a grayscale image in [0, 1] (``split=train``: a random crop of the training images, resized
    to size × size under a random symmetry, ``kspace.random_crops``; ``split=test``: the held-out
    test images, centred squares resized) times a smooth random phase (``phase=smooth``) or 1
    (``phase=none``). y = M ⊙ (fft2(x) + n), the orthonormal unshifted 2-D DFT (DC at (0, 0), the
    fully sampled centre in the first and last rows) and complex Gaussian noise of σ ``noise``.
    The mask keeps whole rows (phase-encode lines) and is drawn once from the seed, with a
    variable density (``density=variable``) or uniformly.
    """

    size: int = 128
    acceleration: float = 4.0
    center: float = 0.08
    noise: float = 0.0
    split: str = "train"
    phase: str = "smooth"
    density: str = "variable"

    def check_trainable(self) -> None:
        if self.split == "test":
            raise DataError("mri: split=test holds the held-out test images; expected split=train for training")

    def draw(self, count: int, seed: Sequence[int]) -> dict[str, np.ndarray]:
        from unfoldgen import images, kspace

        rng = np.random.default_rng(list(seed))
        if self.split == "test":
            pictures = [images.load_image(name, self.size) for name in images.TEST_IMAGES]
            magnitudes = np.stack([pictures[i % len(pictures)] for i in range(count)])
        else:
            magnitudes = kspace.random_crops(images.TRAIN_IMAGES, count, self.size, rng)
        x = kspace.complex_images(magnitudes, self.phase, rng)
        return {"y": kspace.measure(x, self.fixed["M"], self.noise, rng), "x": x}

    def train_batch(self, step: int, size: int) -> dict[str, np.ndarray]:
        self.check_trainable()
        return super().train_batch(step, size)

    def validation(self, size: int) -> dict[str, np.ndarray]:
        """``split=test``: the held-out images (at most ``size`` of them), in catalogue order."""
        from unfoldgen.images import TEST_IMAGES

        count = min(size, len(TEST_IMAGES)) if self.split == "test" else size
        return self.draw(count, (self.seed, VALIDATION_STREAM))


def mri_source(
    size: int = 128,
    acceleration: float = 4.0,
    center: float = 0.08,
    noise: float = 0.0,
    split: str = "train",
    phase: str = "smooth",
    density: str = "variable",
    seed: int = 0,
) -> MriSource:
    """Simulated Cartesian compressed-sensing MRI from scikit-image's test images
    (``pip install unfoldgen[images]``; see ``unfoldgen.kspace`` for the conventions).

    ``size``: the side of the square images; ``acceleration``: the mask keeps round(size /
    acceleration) of the size k-space rows (≥ 1; 1 samples everything); ``center``: the fraction of
    rows of lowest frequency always kept; ``noise``: σ of the complex k-space noise (images are in
    [0, 1]); ``split``: ``train`` or ``test`` (the held-out images; evaluation only); ``phase``:
    ``smooth`` (a random low-order phase) or ``none`` (real images); ``density``: how the lines
    outside the centre are drawn, ``variable`` (more of them at low frequencies) or ``uniform``.
    """
    if split not in IMAGE_SPLITS:
        raise DataError(f"mri: split={split!r}; expected one of {', '.join(IMAGE_SPLITS)}")
    from unfoldgen import kspace

    if phase not in kspace.PHASES:
        raise DataError(f"mri: phase={phase!r}; expected one of {', '.join(kspace.PHASES)}")
    if density not in kspace.DENSITIES:
        raise DataError(f"mri: density={density!r}; expected one of {', '.join(kspace.DENSITIES)}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 4 <= size <= MAX_IMAGE_SIZE:
        raise DataError(f"mri: size={size!r}; expected an integer in [4, {MAX_IMAGE_SIZE}] (pixels per side)")
    if not (math.isfinite(acceleration) and acceleration >= 1):
        raise DataError(f"mri: acceleration={acceleration}; expected a factor ≥ 1 (4: keep a quarter of the lines)")
    if not (math.isfinite(center) and 0 < center <= 1):
        raise DataError(f"mri: center={center}; expected the fraction of fully sampled centre lines in (0, 1]")
    if len(kspace.center_lines(size, center)) > kspace.kept_lines(size, acceleration):
        raise DataError(
            f"mri: center={center} keeps {len(kspace.center_lines(size, center))} of {size} lines, more than "
            f"acceleration={acceleration:g} allows ({kspace.kept_lines(size, acceleration)}); "
            f"expected center ≤ 1/acceleration"
        )
    if not (math.isfinite(noise) and noise >= 0):
        raise DataError(f"mri: noise={noise}; expected a standard deviation ≥ 0 (images are in [0, 1])")
    _check_seed("mri", seed)
    from unfoldgen.images import _skimage

    _skimage()  # a missing scikit-image is a one-line error now, not at the first batch
    rng = np.random.default_rng([seed, FIXED_STREAM])
    mask = kspace.cartesian_mask(size, size, acceleration, center, rng, density)
    return MriSource(
        "mri",
        seed,
        {"M": mask},
        {"y": "input", "x": "target"},
        f"mri ({split}) {size}×{size}, acceleration {acceleration:g} ({int(mask[:, 0].sum())} of {size} lines, "
        f"centre {center:g}, {density} density), noise σ {noise:g}, phase {phase}, seed {seed}",
        size=size,
        acceleration=acceleration,
        center=center,
        noise=noise,
        split=split,
        phase=phase,
        density=density,
    )


# ---------------------------------------------------------------------- sources by name

GENERATORS = {
    "sparse": (sparse_source, {"m": int, "n": int, "p": float, "snr": float, "seed": int}),
    "rpca": (
        rpca_source,
        {"m": int, "n": int, "rank": int, "outliers": float, "noise": float, "seed": int},
    ),
    "detection": (
        detection_source,
        {
            "m": int,
            "n": int,
            "modulation": str,
            "snr": snr_option,
            "channel": str,
            "rho": float,
            "seed": int,
        },
    ),
    "image": (
        image_source,
        {"size": int, "noise": float, "keep": float, "split": str, "blur": float, "kernel": int, "seed": int},
    ),
    "mri": (
        mri_source,
        {
            "size": int,
            "acceleration": float,
            "center": float,
            "noise": float,
            "split": str,
            "phase": str,
            "density": str,
            "seed": int,
        },
    ),
}


def source_from_string(text: str, seed: int | None = None) -> Source:
    """``sparse:m=20,n=40,p=0.1,snr=40``, ``rpca:m=20,n=20,rank=2,outliers=0.05,noise=0.01``,
    ``detection:m=16,n=16,modulation=qpsk,snr=5:20,channel=kronecker,rho=0.5``,
    ``image:size=64,noise=0.01,keep=0.5,split=train,blur=1.6,kernel=9`` or a path to an ``.npz`` file.

    ``snr=inf`` is noiseless. ``seed`` (if given) is the default when the text names none.
    """
    family, _, options = text.partition(":")
    if family not in GENERATORS:
        if text.endswith(".npz") or Path(text).is_file():
            return npz_source(text, seed=seed or 0)
        raise DataError(
            f"unknown data source {text!r}: expected an .npz file or one of "
            + ", ".join(f"{name}:key=value,..." for name in GENERATORS)
        )
    make, types = GENERATORS[family]
    kwargs: dict[str, object] = {}
    given: set[str] = set()
    if seed is not None:
        kwargs["seed"] = seed
    for item in filter(None, (part.strip() for part in options.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in types:
            raise DataError(
                f"data source {family}: expected key=value with key one of {', '.join(types)}, got {item!r}"
            )
        if key in given:
            raise DataError(f"data source {family}: {key} is given twice in {text!r}; expected each key once")
        given.add(key)
        try:
            parsed = types[key](value.strip())
        except DataError:
            raise
        except ValueError:
            raise DataError(f"data source {family}: {key}={value!r} is not a valid {types[key].__name__}") from None
        kwargs["snr_db" if key == "snr" else key] = parsed
    return make(**kwargs)


# ---------------------------------------------------------------------- binding to a spec


@dataclass(frozen=True)
class Slot:
    """One array the spec declares: ``role`` is data, input or var; ``axes`` the user-layout shape."""

    name: str
    role: str
    axes: tuple[Axis, ...] | None  # None: not known (a model given without its spec)
    complex: bool | None = None  # declared complex; None: not known

    def describe(self) -> str:
        if self.axes is None:
            return f"{self.role} {self.name}"
        shape = f"[{', '.join(str(a) for a in self.axes)}]" if self.axes else ""
        return f"{self.role} {self.name} : {'complex' if self.complex else 'real'}{shape}"

    def fits(self, rank: int) -> bool:
        return self.axes is None or len(self.axes) == rank


def slots_from_problem(problem: object) -> tuple[Slot, ...]:
    """The data, inputs and variables of a checked problem, in declaration order.

    A vector (an n×1 column in the IR) is ``(n,)`` in the user's layout, as in generated code.
    """
    slots = []
    for symbol in problem.symbols:  # type: ignore[attr-defined]
        if symbol.role not in ("data", "input", "var"):
            continue
        shape = tuple(symbol.shape)
        axes = () if not shape else (shape[0],) if shape[1] == 1 else shape
        slots.append(Slot(symbol.name, symbol.role, axes, symbol.complex))
    return tuple(slots)


@dataclass
class Binding:
    """A source matched to a spec: spec name → source array name, plus the dims' sizes."""

    source: Source
    slots: tuple[Slot, ...]
    names: dict[str, str]  # spec name -> source name
    tiled: frozenset[str]  # spec inputs fed from a fixed source array (repeated per sample)
    dims: dict[str, int]
    # the inputs the trainer computes with the model's forward model (``with_measured``); None:
    # not yet known (a source with ``measurement_noise`` bound before the model was built)
    measured: frozenset[str] | None = frozenset()

    @property
    def data(self) -> dict[str, np.ndarray]:
        """Constructor arrays (the spec's ``data``)."""
        return {s.name: self.source.fixed[self.names[s.name]] for s in self.slots if s.role == "data"}

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.slots if s.role == "input")

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.slots if s.role == "var")

    def _rename(self, drawn: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        count = len(next(iter(drawn.values()))) if drawn else 1
        inputs, targets = {}, {}
        for slot in self.slots:
            if slot.role == "data":
                continue
            source_name = self.names.get(slot.name)
            if source_name is None:  # a variable the source has no ground truth for
                continue
            if slot.name in self.tiled:
                fixed = self.source.fixed[source_name]
                value = np.broadcast_to(fixed, (count, *fixed.shape)).copy()
            else:
                value = drawn[source_name]
            (inputs if slot.role == "input" else targets)[slot.name] = value
        return inputs, targets

    def train_batch(self, step: int, size: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(inputs, targets) of training step ``step``, named after the spec (without the
        measured inputs: the trainer adds them)."""
        self._check_measured()
        return self._rename(self.source.train_batch(step, size))

    def validation(self, size: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        self._check_measured()
        return self._rename(self.source.validation(size))

    def _check_measured(self) -> None:
        if self.measured is None:
            raise DataError(
                f"the {self.source.name} source leaves the measured inputs to the model: "
                f"call binding.with_measured(type(model).MEASURED) before drawing batches (fit does)"
            )

    def with_measured(self, measured: Sequence[str]) -> Binding:
        """This binding with ``measured`` (the model's ``MEASURED``) computed by the trainer:
        ``y = model.measure(**variables, **other_inputs)[y] + noise(y)``; every other input must
        come from the source."""
        inputs = self.inputs
        unknown = [name for name in measured if name not in inputs]
        if unknown:
            raise DataError(
                f"the model measures {', '.join(map(repr, unknown))}, which the spec does not declare as inputs "
                f"({', '.join(inputs) or 'none'})"
            )
        if not measured:
            raise DataError(
                f"the {self.source.name} source degrades its data with the spec's forward model, but the model "
                f"measures no input (MEASURED is empty); expected an input such as `input y : real[h, w]` "
                f"fitted by the objective"
            )
        left = [s for s in self.slots if s.role == "input" and s.name not in measured and s.name not in self.names]
        if left:
            raise DataError(
                f"the {self.source.name} source has no array for `{left[0].describe()}`: it draws masks of the "
                f"image's shape, and the model measures only {', '.join(measured)}"
            )
        names = {spec: source for spec, source in self.names.items() if spec not in measured}
        return replace(self, names=names, measured=frozenset(measured))

    def noise(self, name: str, shape: tuple[int, ...], step: int | None) -> np.ndarray:
        """The noise the trainer adds to measured input ``name`` of training step ``step`` (None:
        the validation set): σ · N(0, 1) of ``shape``, a pure function of (seed, step, name)."""
        sigma = self.source.measurement_noise or 0.0
        index = self.inputs.index(name)
        key = (VALIDATION_STREAM,) if step is None else (TRAIN_STREAM, step)
        rng = np.random.default_rng([self.source.seed, MEASUREMENT_STREAM, *key, index])
        return sigma * rng.standard_normal(shape)


def _user_shape(axes: tuple[Axis, ...], batched: bool) -> str:
    parts = (["N"] if batched else []) + [str(a) for a in axes]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _check_shape(
    slot: Slot, what: str, shape: tuple[int, ...], batched: bool, dims: dict[str, int], origin: dict[str, str]
) -> None:
    if slot.axes is None:
        return
    expected = _user_shape(slot.axes, batched)
    actual = shape[1:] if batched else shape
    if len(actual) != len(slot.axes):
        raise DataError(f"{what} for `{slot.describe()}` has shape {tuple(shape)}; expected {expected}")
    for axis, size in zip(slot.axes, actual, strict=True):
        if isinstance(axis, int):
            if size != axis:
                raise DataError(f"{what} for `{slot.describe()}` has shape {tuple(shape)}; expected {expected}")
            continue
        if axis in dims and dims[axis] != size:
            raise DataError(
                f"{what} for `{slot.describe()}` has shape {tuple(shape)}; expected {expected} "
                f"with {axis} = {dims[axis]} (from {origin[axis]})"
            )
        dims.setdefault(axis, size)
        origin.setdefault(axis, what)


def bind(source: Source, slots: Sequence[Slot], require_targets: bool = True) -> Binding:
    """Match the source's arrays to the spec's slots and check their shapes.

    Spec ``data`` takes a fixed array, ``input`` a per-sample input (or a fixed array, repeated
    per sample), ``var`` a per-sample target. Names match first; the rest pair up in declaration
    order among arrays of the same role and rank. Without ``require_targets`` a variable with no
    ground truth is allowed (unsupervised training).
    """
    if isinstance(source, NpzSource):
        return _bind_npz(source, slots, require_targets)
    if isinstance(source, ImageSource):
        return _bind_image(source, slots)
    sample = source.draw(1, (source.seed, VALIDATION_STREAM))
    shapes = {name: value.shape[1:] for name, value in sample.items()} | {
        name: value.shape for name, value in source.fixed.items()
    }

    def candidates(slot: Slot) -> list[str]:
        if slot.role == "data":
            return list(source.fixed)
        if slot.role == "input":
            return [n for n, r in source.roles.items() if r == "input"] + list(source.fixed)
        return [n for n, r in source.roles.items() if r == "target"]

    names: dict[str, str] = {}
    used: set[str] = set()
    for slot in slots:  # exact names first
        if slot.name in candidates(slot) and slot.fits(len(shapes[slot.name])):
            names[slot.name] = slot.name
            used.add(slot.name)
    for slot in slots:  # then role and rank, in order
        if slot.name in names:
            continue
        for name in candidates(slot):
            if name not in used and slot.fits(len(shapes[name])):
                names[slot.name] = name
                used.add(name)
                break
        else:
            if slot.role == "var" and not require_targets:
                continue
            if slot.role == "data" and any(slot.fits(len(shapes[n])) for n in source.roles):
                raise DataError(
                    f"`{slot.describe()}` needs an array shared by all samples, but the {source.name} source "
                    f"draws one per sample; declare it as an input"
                )
            offered = ", ".join(f"{n} {tuple(shapes[n])}" for n in candidates(slot)) or "none"
            raise DataError(
                f"the {source.name} source has no array for `{slot.describe()}` (arrays of that role: {offered})"
            )
    dims: dict[str, int] = {}
    origin: dict[str, str] = {}
    tiled = set()
    for slot in slots:
        if slot.name not in names:
            continue
        source_name = names[slot.name]
        fixed = source_name in source.fixed
        if slot.role == "input" and fixed:
            tiled.add(slot.name)
        shape = shapes[source_name] if fixed else (0, *shapes[source_name])
        _check_shape(slot, f"{source.name} array {source_name!r}", tuple(shape), not fixed, dims, origin)
        value = source.fixed[source_name] if fixed else sample[source_name]
        if slot.complex is False and np.iscomplexobj(value):  # its imaginary part would be dropped
            raise DataError(
                f"{source.name} array {source_name!r} is complex, but `{slot.describe()}` is real; "
                f"expected `{replace(slot, complex=True).describe()}`"
            )
    return Binding(source, tuple(slots), names, frozenset(tiled), dims)


def _bind_npz(source: NpzSource, slots: Sequence[Slot], require_targets: bool) -> Binding:
    arrays = source.arrays
    missing = [slot for slot in slots if slot.name not in arrays and (slot.role != "var" or require_targets)]
    if missing:
        found = ", ".join(f"{n} {arrays[n].shape}" for n in sorted(arrays)) or "no arrays"
        wanted = "; ".join(f"{slot.name!r} for `{slot.describe()}`" for slot in missing)
        raise DataError(f"{source.path}: missing array {wanted}; the file holds {found}")
    dims: dict[str, int] = {}
    origin: dict[str, str] = {}
    count = None
    roles: dict[str, str] = {}
    for slot in slots:
        if slot.name not in arrays:
            continue
        value = arrays[slot.name]
        if not np.issubdtype(value.dtype, np.number):
            expected = "complex or real numbers" if slot.complex else "real numbers"
            raise DataError(f"{source.path}: array {slot.name!r} has dtype {value.dtype}; expected {expected}")
        if np.iscomplexobj(value) and not slot.complex:  # its imaginary part would be dropped
            raise DataError(
                f"{source.path}: array {slot.name!r} is complex ({value.dtype}), but `{slot.describe()}` is real; "
                f"expected `{replace(slot, complex=True).describe()}` or a real array"
            )
        finite = np.isfinite(value)
        if not finite.all():
            where = np.argwhere(~finite)[0]
            raise DataError(
                f"{source.path}: array {slot.name!r} holds {value.size - np.count_nonzero(finite)} NaN/Inf values "
                f"(the first at index {tuple(int(i) for i in where)}); expected finite numbers"
            )
        batched = slot.role != "data"
        what = f"{source.path}: array {slot.name!r}"
        if batched and slot.axes is not None and value.ndim == len(slot.axes):
            raise DataError(
                f"{what} for `{slot.describe()}` has shape {value.shape}; expected "
                f"{_user_shape(slot.axes, True)} with the samples on axis 0"
            )
        _check_shape(slot, what, value.shape, batched, dims, origin)
        if batched:
            if count is not None and value.shape[0] != count:
                raise DataError(f"{what} holds {value.shape[0]} samples, but the arrays before it hold {count}")
            count = value.shape[0]
            roles[slot.name] = "input" if slot.role == "input" else "target"
        else:
            source.fixed[slot.name] = value.astype(np.complex128 if slot.complex else np.float64)
    source.roles = roles
    if count is None:
        raise DataError(f"{source.path}: the spec declares no per-sample inputs")
    source.split(count)
    names = {slot.name: slot.name for slot in slots if slot.name in arrays}
    return Binding(source, tuple(slots), names, frozenset(), dims)


def _bind_image(source: ImageSource, slots: Sequence[Slot]) -> Binding:
    """The clean images fill the spec's one variable ``real[h, w]``; every input of that shape is a
    mask unless the model measures it (decided by ``Binding.with_measured``)."""
    variables = [slot for slot in slots if slot.role == "var"]
    if len(variables) != 1 or not variables[0].fits(2):
        declared = ", ".join(f"`{slot.describe()}`" for slot in variables) or "none"
        raise DataError(
            f"the image source fills one image variable such as `var x : real[h, w]`; the spec declares {declared}"
        )
    image, size = variables[0], source.size
    dims: dict[str, int] = {}
    origin: dict[str, str] = {}
    _check_shape(image, f"image source array 'image' (size={size})", (0, size, size), True, dims, origin)
    names = {image.name: "image"}

    def image_shaped(slot: Slot) -> bool:
        if slot.axes is None:
            return True
        return len(slot.axes) == 2 and all(
            axis == size if isinstance(axis, int) else dims.get(axis) == size for axis in slot.axes
        )

    masks = [slot.name for slot in slots if slot.role == "input" and image_shaped(slot)]
    names.update({name: name for name in masks})
    for slot in slots:
        if slot.role != "data":
            continue
        if slot.name not in source.given:  # a kernel of this slot's size, made at every bind
            if source.blur is None or not slot.fits(2):
                raise DataError(
                    f"the image source has no array for `{slot.describe()}`: give blur=SIGMA (a Gaussian kernel) "
                    f"or the array in image_source(fixed={{{slot.name!r}: ...}})"
                )
            sides = {axis for axis in slot.axes or () if isinstance(axis, int)}
            side = sides.pop() if len(sides) == 1 else source.kernel
            from unfoldgen.images import gaussian_kernel

            source.fixed[slot.name] = gaussian_kernel(side, source.blur)
        names[slot.name] = slot.name
        _check_shape(slot, f"image source array {slot.name!r}", source.fixed[slot.name].shape, False, dims, origin)
    source.masks = tuple(masks)
    source.roles = {"image": "target", **{name: "input" for name in masks}}
    return Binding(source, tuple(slots), names, frozenset(), dims, measured=None)
