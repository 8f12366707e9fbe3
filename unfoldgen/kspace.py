"""Simulated compressed-sensing MRI for the ``mri:`` data source: complex images made from
scikit-image's test images (``unfoldgen.images``, no download at run time), Cartesian undersampling
masks and noisy undersampled k-space.

The k-space convention is the orthonormal 2-D DFT over the last two axes with the DC at index
(0, 0), unshifted: ``fft2(x) = np.fft.fft2(x, norm="ortho")``, which is what
``torch.fft.fft2(x, norm="ortho")`` computes. Row r of k-space holds the vertical frequency
``r`` for ``r < h / 2`` and ``r - h`` above, so the low frequencies (the fully sampled centre of a
mask) sit in the first and the last rows, at the corners of the array, not in its middle.

A mask keeps whole phase-encode lines (rows of k-space): the ``center`` fraction of the rows
with the lowest frequencies, plus rows drawn at random without replacement among the others until
``round(h / acceleration)`` rows are kept. ``density=variable`` (the default) draws row r with a
probability ∝ (1 − |f_r| / (h/2 + 1))², f_r its signed frequency, a polynomial variable density
as in Lustig et al.'s sparse MRI: natural images keep most of their energy at low frequencies,
and on the held-out test images at 128×128, acceleration 4, noise σ 0.01, the ℓ1-Haar minimiser
(at its best λ) is 0.9 dB above zero-filling with it, and 0.75 dB below it with uniform lines.
``density=uniform`` draws the rows uniformly (fastMRI's random mask, with an exact count of
lines instead of Bernoulli draws).

The measurement is ``y = M ⊙ (fft2(x) + n)`` with complex Gaussian noise n of standard deviation
``noise`` (E|n|² = noise²: real and imaginary parts each of σ = noise / √2). The transform being
unitary, the noise has the same σ in the image domain, where the magnitudes are in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from unfoldgen.data import DataError

PHASES = ("smooth", "none")
DENSITIES = ("variable", "uniform")
DENSITY_POWER = 2  # the exponent of the variable density (see the module docstring)
# σ (radians) of the coefficients of the smooth phase's linear and quadratic terms, on coordinates
# in [-1, 1]: a phase that turns by about a radian across the image, as in a real scan (B0 and
# coil phase), without wrapping many times.
PHASE_SPREAD = math.pi / 4


def fft2(x: np.ndarray) -> np.ndarray:
    """The orthonormal 2-D DFT over the last two axes, DC at index (0, 0) (unshifted)."""
    return np.fft.fft2(x, norm="ortho")


def ifft2(k: np.ndarray) -> np.ndarray:
    """The inverse of ``fft2`` (also its adjoint: the transform is unitary)."""
    return np.fft.ifft2(k, norm="ortho")


def line_frequencies(lines: int) -> np.ndarray:
    """The signed frequency of every row of k-space (0, 1, …, -1), as integers."""
    return np.rint(np.fft.fftfreq(lines) * lines).astype(np.int64)


def center_lines(lines: int, center: float) -> np.ndarray:
    """The rows of the fully sampled centre: the ``max(1, round(center * lines))`` rows of lowest
    |frequency| (the DC row first, then +1, -1, +2, …)."""
    count = max(1, round(center * lines))
    order = np.argsort(np.abs(line_frequencies(lines)), kind="stable")  # ties: the positive frequency first
    return np.sort(order[:count])


def kept_lines(lines: int, acceleration: float) -> int:
    """The number of rows a mask keeps: ``round(lines / acceleration)``, at least 1."""
    return max(1, round(lines / acceleration))


def line_density(lines: int, density: str) -> np.ndarray:
    """The relative probability of drawing each row (see the module docstring)."""
    if density == "uniform":
        return np.ones(lines)
    return (1 - np.abs(line_frequencies(lines)) / (lines / 2 + 1)) ** DENSITY_POWER


def cartesian_mask(
    h: int, w: int, acceleration: float, center: float, rng: np.random.Generator, density: str = "variable"
) -> np.ndarray:
    """A 0/1 float64 (h, w) mask of whole rows: the centre lines plus random ones drawn among the
    others with ``line_density``, ``kept_lines(h, acceleration)`` rows in all (see the module
    docstring)."""
    centre = center_lines(h, center)
    others = np.setdiff1d(np.arange(h), centre)
    extra = max(0, kept_lines(h, acceleration) - len(centre))
    weights = line_density(h, density)[others]
    rows = np.concatenate([centre, rng.choice(others, size=extra, replace=False, p=weights / weights.sum())])
    mask = np.zeros((h, w))
    mask[rows] = 1.0
    return mask


def smooth_phase(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` smooth random phase maps (count, size, size) in radians: a uniform global phase
    plus a polynomial of degree 2 in coordinates u, v ∈ [-1, 1] whose five coefficients are
    N(0, PHASE_SPREAD²)."""
    axis = np.linspace(-1.0, 1.0, size)
    u, v = np.meshgrid(axis, axis, indexing="ij")
    terms = np.stack([u, v, u * u, u * v, v * v])  # (5, size, size)
    global_phase = rng.uniform(0.0, 2 * math.pi, size=count)
    coefficients = PHASE_SPREAD * rng.standard_normal((count, 5))
    return global_phase[:, None, None] + np.einsum("ct,tij->cij", coefficients, terms)


def random_crops(names: Sequence[str], count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` grayscale images (count, size, size) in [0, 1]: square crops of images drawn
    uniformly among ``names`` (those at least size × size), of a side drawn log-uniformly between
    ``size`` and the picture's smaller side, at a uniform position, resized to size × size with
    anti-aliasing and put under a random symmetry of the square. The held-out test images are whole
    pictures resized, so the crops cover every scale from that one to the native resolution."""
    from unfoldgen import images

    pictures = [images._catalogued(name) for name in names]
    fitting = [p for p in pictures if min(p.shape) >= size]
    if not fitting:
        largest = max((min(p.shape) for p in pictures), default=0)
        raise DataError(f"mri: size={size}: no image is that large; expected size ≤ {largest}")
    _, _, transform = images._skimage()
    crops = np.empty((count, size, size))
    for index in range(count):
        picture = fitting[rng.integers(len(fitting))]
        largest = min(picture.shape)
        side = min(largest, round(size * (largest / size) ** rng.random()))
        top = rng.integers(picture.shape[0] - side + 1)
        left = rng.integers(picture.shape[1] - side + 1)
        crop = picture[top : top + side, left : left + side]
        if side != size:
            crop = np.clip(transform.resize(crop, (size, size), order=1, anti_aliasing=True, mode="reflect"), 0, 1)
        symmetry = rng.integers(images.SYMMETRIES)
        crop = np.rot90(crop, symmetry % 4)
        crops[index] = crop[:, ::-1] if symmetry >= 4 else crop
    return crops


def complex_images(magnitudes: np.ndarray, phase: str, rng: np.random.Generator) -> np.ndarray:
    """complex128 images ``magnitudes · exp(i φ)`` with φ a smooth random phase (``phase=smooth``)
    or 0 (``phase=none``: real images held in complex arrays)."""
    if phase == "none":
        return magnitudes.astype(np.complex128)
    angles = smooth_phase(len(magnitudes), magnitudes.shape[-1], rng)
    return magnitudes * np.exp(1j * angles)


def measure(x: np.ndarray, mask: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Undersampled noisy k-space ``y = M ⊙ (fft2(x) + n)``, complex128 (see the module docstring)."""
    k = fft2(x)
    if noise > 0:
        k = k + (noise / math.sqrt(2)) * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
    return mask * k


def zero_filled(y: np.ndarray) -> np.ndarray:
    """The zero-filled reconstruction ``ifft2(y)`` (the adjoint of the measurement applied to y)."""
    return ifft2(y)
