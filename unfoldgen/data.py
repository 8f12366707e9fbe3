"""Synthetic data for the classic problem families (seeded, float64 numpy; convert as needed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SparseRecovery:
    """y = A x + noise with Bernoulli(p)-Gaussian x and A with N(0, 1/m) entries, unit columns."""

    A: np.ndarray  # (m, n)
    y: np.ndarray  # (B, m)
    x: np.ndarray  # (B, n)


def sensing_matrix(m: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, 1.0 / np.sqrt(m), size=(m, n))
    return matrix / np.linalg.norm(matrix, axis=0, keepdims=True)


def sparse_recovery(
    A: np.ndarray, batch: int, p: float = 0.1, snr_db: float | None = None, seed: int = 0
) -> SparseRecovery:
    """Draw ``batch`` sparse codes for the operator A; noise at ``snr_db`` (None: noiseless)."""
    rng = np.random.default_rng(seed)
    n = A.shape[1]
    x = rng.normal(size=(batch, n)) * (rng.random((batch, n)) < p)
    clean = x @ A.T
    y = clean
    if snr_db is not None:
        power = np.mean(clean**2, axis=1, keepdims=True)
        noise_std = np.sqrt(power / 10 ** (snr_db / 10))
        y = clean + noise_std * rng.normal(size=clean.shape)
    return SparseRecovery(A, y, x)


def nmse_db(estimate: np.ndarray, truth: np.ndarray) -> float:
    """10 log10( E||x̂ − x||² / E||x||² ) over the batch."""
    error = np.sum((estimate - truth) ** 2)
    return float(10 * np.log10(error / np.sum(truth**2)))
