"""Hand-written numpy references for the classical algorithms unfoldgen unfolds.

Everything here is plain numpy in float64 and deliberately obvious: each
function is a line-by-line transcription of the textbook iteration so that a
reader can check it at a glance.  The generated PyTorch modules are compared
against these functions, and ``tests/test_reference.py`` checks these functions
against independent peer solvers (scikit-learn, scipy) and optimality
conditions.

Conventions
-----------
* A batch of vectors is stored row-wise: ``Y`` has shape ``(B, m)`` and ``X``
  has shape ``(B, n)``.  For a single matrix ``A`` of shape ``(m, n)`` the
  per-sample product ``A @ x_b`` is therefore ``X @ A.T`` and the per-sample
  product ``A.T @ r_b`` is ``R @ A``.
* Hyperparameters named ``mu``, ``lam``, ``theta``, ``rho``, ``lam1``,
  ``lam2`` may be a scalar (used in every iteration) or a sequence of length
  ``K`` (value for iteration ``k`` is ``seq[k]``), so that learned per-layer
  values can be fed in.
* ``return_iterates=True`` returns a list with one entry per iteration
  (``K`` entries, the state *after* iterations 1..K); its last entry equals the
  normal output.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "admm",
    "box_objective",
    "box_problem",
    "fista",
    "ista",
    "lasso_objective",
    "lipschitz",
    "lipschitz_sumsq",
    "lista_cp",
    "per_iteration",
    "pgd_box",
    "rpca_ista",
    "rpca_objective",
    "rpca_problem",
    "soft_threshold",
    "sparse_problem",
    "svt",
]


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


def per_iteration(value, K, name="value"):
    """Return a list of ``K`` floats from a scalar or a length-``K`` sequence."""
    if np.ndim(value) == 0:
        return [float(value)] * K
    values = [float(v) for v in np.asarray(value, dtype=np.float64).ravel()]
    if len(values) != K:
        raise ValueError(f"{name} has {len(values)} entries, expected K={K}")
    return values


def lipschitz(A):
    """Lipschitz constant of x -> A^T (A x - y): the largest eigenvalue of A^T A."""
    A = np.asarray(A, dtype=np.float64)
    return float(np.linalg.eigvalsh(A.T @ A)[-1])


def lipschitz_sumsq(H):
    """Lipschitz constant of x -> 2 H^T (H x - y), the gradient of sumsq(H x - y).

    That is the largest eigenvalue of 2 H^T H.
    """
    H = np.asarray(H, dtype=np.float64)
    return float(np.linalg.eigvalsh(2.0 * H.T @ H)[-1])


def soft_threshold(v, t):
    """sign(v) * max(|v| - t, 0), elementwise."""
    v = np.asarray(v, dtype=np.float64)
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def svt(M, t):
    """Singular value thresholding of one matrix: U diag(max(s - t, 0)) V^T."""
    U, s, Vt = np.linalg.svd(np.asarray(M, dtype=np.float64), full_matrices=False)
    return U @ np.diag(np.maximum(s - t, 0.0)) @ Vt


def lasso_objective(A, y, x, lam):
    """0.5 ||A x - y||^2 + lam ||x||_1 for one sample."""
    r = A @ x - y
    return 0.5 * float(r @ r) + lam * float(np.sum(np.abs(x)))


def box_objective(H, y, x):
    """||H x - y||^2 for one sample (no 0.5 factor)."""
    r = H @ x - y
    return float(r @ r)


def rpca_objective(D, L, S, lam1, lam2):
    """0.5 ||D - L - S||_F^2 + lam1 ||L||_* + lam2 ||S||_1 for one sample."""
    R = D - L - S
    return (
        0.5 * float(np.sum(R * R))
        + lam1 * float(np.sum(np.linalg.svd(L, compute_uv=False)))
        + lam2 * float(np.sum(np.abs(S)))
    )


def _as_batch(Y):
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2:
        raise ValueError(f"expected a batch of shape (B, m), got {Y.shape}")
    return Y


# ---------------------------------------------------------------------------
# LASSO solvers: 0.5 ||A x - y||^2 + lam ||x||_1
# ---------------------------------------------------------------------------


def ista(A, Y, lam, K, mu=None, return_iterates=False):
    """ISTA.  x0 = 0;  x_{k+1} = soft(x_k - mu A^T (A x_k - y), mu lam).

    ``mu`` defaults to 1/L with L the largest eigenvalue of A^T A.
    """
    A = np.asarray(A, dtype=np.float64)
    Y = _as_batch(Y)
    if mu is None:
        mu = 1.0 / lipschitz(A)
    mus = per_iteration(mu, K, "mu")
    lams = per_iteration(lam, K, "lam")

    x = np.zeros((Y.shape[0], A.shape[1]))
    iterates = []
    for k in range(K):
        grad = (x @ A.T - Y) @ A  # row b: A^T (A x_b - y_b)
        x = soft_threshold(x - mus[k] * grad, mus[k] * lams[k])
        iterates.append(x.copy())
    return iterates if return_iterates else x


def fista(A, Y, lam, K, mu=None, return_iterates=False):
    """FISTA (Beck & Teboulle).  x0 = z0 = 0, t0 = 1; per iteration

        x_new = soft(z - mu A^T (A z - y), mu lam)
        t_new = (1 + sqrt(1 + 4 t^2)) / 2
        z     = x_new + ((t - 1) / t_new) (x_new - x)
        x, t  = x_new, t_new

    Output x.  ``mu`` defaults to 1/L.
    """
    A = np.asarray(A, dtype=np.float64)
    Y = _as_batch(Y)
    if mu is None:
        mu = 1.0 / lipschitz(A)
    mus = per_iteration(mu, K, "mu")
    lams = per_iteration(lam, K, "lam")

    x = np.zeros((Y.shape[0], A.shape[1]))
    z = x.copy()
    t = 1.0
    iterates = []
    for k in range(K):
        grad = (z @ A.T - Y) @ A  # row b: A^T (A z_b - y_b)
        x_new = soft_threshold(z - mus[k] * grad, mus[k] * lams[k])
        t_new = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        z = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x = x_new
        t = t_new
        iterates.append(x.copy())
    return iterates if return_iterates else x


def lista_cp(A, Y, lam, K, mu=None, W=None, theta=None, return_iterates=False):
    """LISTA-CP, by default at its classical initialisation.

    x0 = 0;  x_{k+1} = soft(x_k + W_k (y - A x_k), theta_k)

    with W_k = mu_k A^T and theta_k = mu_k lam_k unless given.  ``W`` may be
    one (n, m) matrix or a sequence of K of them; ``theta`` a scalar or a
    length-K sequence.  At initialisation this is exactly ISTA.
    """
    A = np.asarray(A, dtype=np.float64)
    Y = _as_batch(Y)
    if mu is None:
        mu = 1.0 / lipschitz(A)
    mus = per_iteration(mu, K, "mu")
    lams = per_iteration(lam, K, "lam")

    if W is None:
        Ws = [mus[k] * A.T for k in range(K)]
    elif np.ndim(W) == 2:
        Ws = [np.asarray(W, dtype=np.float64)] * K
    else:
        Ws = [np.asarray(Wk, dtype=np.float64) for Wk in W]
        if len(Ws) != K:
            raise ValueError(f"W has {len(Ws)} entries, expected K={K}")
    if theta is None:
        thetas = [mus[k] * lams[k] for k in range(K)]
    else:
        thetas = per_iteration(theta, K, "theta")

    x = np.zeros((Y.shape[0], A.shape[1]))
    iterates = []
    for k in range(K):
        residual = Y - x @ A.T  # row b: y_b - A x_b
        x = soft_threshold(x + residual @ Ws[k].T, thetas[k])  # row b: x_b + W r_b
        iterates.append(x.copy())
    return iterates if return_iterates else x


def admm(A, Y, lam, K, rho=1.0, return_iterates=False):
    """Scaled-form ADMM for the LASSO (Boyd et al. 2011, section 6.4).

    x0 = z0 = u0 = 0; per iteration

        x = solve(A^T A + rho I, A^T y + rho (z - u))
        z = soft(x + u, lam / rho)
        u = u + x - z

    Output z.
    """
    A = np.asarray(A, dtype=np.float64)
    Y = _as_batch(Y)
    lams = per_iteration(lam, K, "lam")
    rhos = per_iteration(rho, K, "rho")
    n = A.shape[1]

    x = np.zeros((Y.shape[0], n))
    z = np.zeros_like(x)
    u = np.zeros_like(x)
    AtY = Y @ A  # row b: A^T y_b
    iterates = []
    for k in range(K):
        M = A.T @ A + rhos[k] * np.eye(n)
        rhs = AtY + rhos[k] * (z - u)
        x = np.linalg.solve(M, rhs.T).T  # row b: M^{-1} rhs_b
        z = soft_threshold(x + u, lams[k] / rhos[k])
        u = u + x - z
        iterates.append(z.copy())
    return iterates if return_iterates else z


# ---------------------------------------------------------------------------
# box-constrained least squares: min ||H x - y||^2 s.t. lo <= x <= hi
# ---------------------------------------------------------------------------


def pgd_box(H, Y, K, lo=-1.0, hi=1.0, mu=None, return_iterates=False):
    """Projected gradient descent with a per-sample channel.

    H: (B, m, n), Y: (B, m).  Objective ||H_b x - y_b||^2 (no 0.5), gradient
    2 H_b^T (H_b x - y_b).  x0 = 0;  x = clip(x - mu_b grad, lo, hi).

    ``mu`` defaults to 1/L_b per sample, L_b = largest eigenvalue of
    2 H_b^T H_b.  If given it is a scalar or a length-K sequence shared by all
    samples.
    """
    H = np.asarray(H, dtype=np.float64)
    Y = _as_batch(Y)
    B, _, n = H.shape
    if mu is None:
        mu_b = np.array([1.0 / lipschitz_sumsq(H[b]) for b in range(B)])
        mu_k = [mu_b[:, None]] * K  # (B, 1): broadcasts over the n coordinates
    else:
        mu_k = per_iteration(mu, K, "mu")

    Ht = np.transpose(H, (0, 2, 1))
    x = np.zeros((B, n))
    iterates = []
    for k in range(K):
        residual = np.einsum("bmn,bn->bm", H, x) - Y  # H_b x_b - y_b
        grad = 2.0 * np.einsum("bnm,bm->bn", Ht, residual)  # 2 H_b^T r_b
        x = np.clip(x - mu_k[k] * grad, lo, hi)
        iterates.append(x.copy())
    return iterates if return_iterates else x


# ---------------------------------------------------------------------------
# robust PCA: 0.5 ||D - L - S||_F^2 + lam1 ||L||_* + lam2 ||S||_1
# ---------------------------------------------------------------------------


def rpca_ista(D, K, lam1=1.0, lam2=0.1, mu=0.5, return_iterates=False):
    """Proximal gradient on (L, S) jointly.  D: (B, m, n); L0 = S0 = 0.

    Per iteration, with both gradients evaluated at the start of the iteration:

        gL = -(D - L - S),  gS = -(D - L - S)
        L  = svt(L - mu gL, mu lam1)
        S  = soft(S - mu gS, mu lam2)

    Returns (L, S), each (B, m, n); with return_iterates a list of K such
    tuples.  The smooth part has Lipschitz constant 2, so mu = 0.5 = 1/L.
    """
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 3:
        raise ValueError(f"expected D of shape (B, m, n), got {D.shape}")
    lam1s = per_iteration(lam1, K, "lam1")
    lam2s = per_iteration(lam2, K, "lam2")
    mus = per_iteration(mu, K, "mu")

    L = np.zeros_like(D)
    S = np.zeros_like(D)
    iterates = []
    for k in range(K):
        gL = -(D - L - S)
        gS = -(D - L - S)
        L_new = np.stack([svt(L[b] - mus[k] * gL[b], mus[k] * lam1s[k]) for b in range(D.shape[0])])
        S_new = soft_threshold(S - mus[k] * gS, mus[k] * lam2s[k])
        L, S = L_new, S_new
        iterates.append((L.copy(), S.copy()))
    return iterates if return_iterates else (L, S)


# ---------------------------------------------------------------------------
# synthetic data
# ---------------------------------------------------------------------------


def sparse_problem(m, n, B, p=0.1, snr_db=None, seed=0):
    """Compressed-sensing data.  Returns (A, Y, X_true).

    A: (m, n), i.i.d. N(0, 1/m) entries then columns scaled to unit norm.
    X_true: (B, n), Bernoulli(p)-Gaussian (support ~ Bernoulli(p), values N(0,1)).
    Y: (B, m) = X_true A^T, plus white Gaussian noise at ``snr_db`` (measured
    over the whole batch: 10 log10(||A X||^2 / ||noise||^2)) if given.
    """
    rng = np.random.default_rng(seed)
    A = rng.normal(0.0, 1.0 / np.sqrt(m), size=(m, n))
    A = A / np.linalg.norm(A, axis=0, keepdims=True)
    support = rng.random((B, n)) < p
    X = support * rng.normal(0.0, 1.0, size=(B, n))
    Y = X @ A.T
    if snr_db is not None:
        signal_power = np.mean(Y**2)
        noise_std = np.sqrt(signal_power / 10.0 ** (snr_db / 10.0))
        Y = Y + rng.normal(0.0, noise_std, size=Y.shape)
    return A, Y, X


def box_problem(m, n, B, seed=0, noise_std=0.05):
    """MIMO-detection-like data.  Returns (H, Y, X_true).

    H: (B, m, n), i.i.d. N(0, 1/m);  X_true: (B, n) BPSK in {-1, +1};
    Y = H x + N(0, noise_std^2) noise, shape (B, m).
    """
    rng = np.random.default_rng(seed)
    H = rng.normal(0.0, 1.0 / np.sqrt(m), size=(B, m, n))
    X = rng.choice(np.array([-1.0, 1.0]), size=(B, n))
    Y = np.einsum("bmn,bn->bm", H, X) + rng.normal(0.0, noise_std, size=(B, m))
    return H, Y, X


def rpca_problem(m, n, B, rank=2, outlier_frac=0.05, seed=0, outlier_scale=5.0):
    """Low-rank plus sparse data.  Returns (D, L_true, S_true), each (B, m, n).

    L_true = U V^T with U (m, rank), V (n, rank) i.i.d. N(0, 1);
    S_true has a Bernoulli(outlier_frac) support with values uniform in
    [-outlier_scale, outlier_scale];  D = L_true + S_true.
    """
    rng = np.random.default_rng(seed)
    U = rng.normal(0.0, 1.0, size=(B, m, rank))
    V = rng.normal(0.0, 1.0, size=(B, n, rank))
    L = U @ np.transpose(V, (0, 2, 1))
    support = rng.random((B, m, n)) < outlier_frac
    S = support * rng.uniform(-outlier_scale, outlier_scale, size=(B, m, n))
    return L + S, L, S
