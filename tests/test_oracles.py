"""Peers as oracles: run long, the compiled classical solvers reach the optimum others compute.

ISTA, FISTA and ADMM built with thousands of layers solve a small, well-conditioned,
overdetermined LASSO to the solution scikit-learn's coordinate descent finds; PGD solves the
box-constrained least squares that ``scipy.optimize.lsq_linear`` (bounded-variable least squares,
an active-set method) solves; robust PCA by ISTA reaches a point that is a fixed point of its own
proximal map (checked with numpy's SVD) and satisfies the subgradient optimality conditions.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
import torch
from scipy.optimize import lsq_linear
from sklearn.linear_model import Lasso

from generated.admm import Admm
from generated.fista import Fista
from generated.ista import Ista
from generated.pgd import Pgd
from generated.rpca_ista import RpcaIsta

SEEDS = [0, 1, 2]
M, N, BATCH = 40, 20, 4  # overdetermined: the LASSO and the box problem are strongly convex
LAYERS = 1500  # the slowest of these reaches the optimum to round-off in ~500 layers here
RTOL = 1e-6


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Thousands of tiny layers: thread start-up costs more than it saves, especially on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rel_err(x, x_star) -> float:
    return float(np.linalg.norm(x - x_star) / np.linalg.norm(x_star))


def lasso_data(seed):
    A, Y, _ = ref.sparse_problem(M, N, BATCH, p=0.3, snr_db=20, seed=seed)
    lam = 0.1 * float(np.max(np.abs(Y @ A)))
    return A, Y, lam


def sklearn_lasso(A, Y, lam):
    """sklearn minimises (1/2m)||y - A x||^2 + alpha ||x||_1: the same minimiser for alpha = lam/m."""
    m = A.shape[0]
    solver = Lasso(alpha=lam / m, fit_intercept=False, tol=1e-12, max_iter=100_000)
    return np.stack([solver.fit(A, y).coef_.copy() for y in Y])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cls", [Ista, Fista, Admm], ids=lambda c: c.__name__)
def test_lasso_solvers_reach_sklearn_optimum(cls, seed):
    A, Y, lam = lasso_data(seed)
    assert np.linalg.cond(A) < 10, "the test problem should be well conditioned"
    x_star = sklearn_lasso(A, Y, lam)
    assert np.any(x_star == 0) and np.any(x_star != 0), "the optimum should be sparse but not zero"

    model = cls(A=torch.from_numpy(A), lam=lam, layers=LAYERS)
    with torch.no_grad():
        X = model(y=torch.from_numpy(Y)).numpy()
    for b in range(BATCH):
        assert rel_err(X[b], x_star[b]) <= RTOL, f"sample {b}: {rel_err(X[b], x_star[b]):.2e}"
    # the same support and the optimality conditions, independently of sklearn:
    # A^T (y - A x) = lam sign(x) on the support and |A^T (y - A x)| <= lam off it
    corr = (Y - X @ A.T) @ A
    on = np.abs(x_star) > 1e-8
    assert np.array_equal(np.abs(X) > 1e-8, on)
    np.testing.assert_allclose(corr[on], lam * np.sign(X[on]), rtol=0, atol=1e-8 * lam)
    assert np.all(np.abs(corr[~on]) <= lam * (1 + 1e-8))
    # the model's own objective agrees with the reference objective at the optimum
    with torch.no_grad():
        value = model.objective(y=torch.from_numpy(Y), x=torch.from_numpy(X)).numpy()
    expected = [ref.lasso_objective(A, Y[b], x_star[b], lam) for b in range(BATCH)]
    np.testing.assert_allclose(value, expected, rtol=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
def test_pgd_reaches_lsq_linear_optimum(seed):
    H, Y, _ = ref.box_problem(M, N, BATCH, seed=seed, noise_std=0.3)
    x_star = np.stack([lsq_linear(H[b], Y[b], bounds=(-1.0, 1.0), method="bvls", tol=1e-14).x for b in range(BATCH)])
    active = np.abs(x_star) >= 1 - 1e-12
    assert np.any(active) and np.any(~active), "some but not all bounds should be active"

    model = Pgd(layers=LAYERS, dtype=torch.float64)
    with torch.no_grad():
        X = model(H=torch.from_numpy(H), y=torch.from_numpy(Y)).numpy()
    for b in range(BATCH):
        assert rel_err(X[b], x_star[b]) <= RTOL, f"sample {b}: {rel_err(X[b], x_star[b]):.2e}"
    assert np.all(np.abs(X) <= 1.0)


def rpca_optimality(D, L, S, lam1, lam2, mu):
    """Residuals of the prox fixed point and of the subgradient conditions, for one sample.

    At a minimiser of 0.5||D - L - S||^2 + lam1 ||L||_* + lam2 ||S||_1 with R = D - L - S:
    L = svt(L + mu R, mu lam1), S = soft(S + mu R, mu lam2), R ∈ lam1 ∂||L||_* and R ∈ lam2 ∂||S||_1.
    """
    R = D - L - S
    fixed_L = np.max(np.abs(ref.svt(L + mu * R, mu * lam1) - L))
    fixed_S = np.max(np.abs(ref.soft_threshold(S + mu * R, mu * lam2) - S))
    # lam2 ∂||S||_1: R = lam2 sign(S) on the support, |R| <= lam2 off it
    on = S != 0
    sub_S = max(np.max(np.abs(R[on] - lam2 * np.sign(S[on])), initial=0.0), np.max(np.abs(R)) - lam2)
    # lam1 ∂||L||_*: R = lam1 (U V^T + W) with U^T W = 0, W V = 0, ||W||_2 <= 1
    U, s, Vt = np.linalg.svd(L, full_matrices=False)
    r = int(np.sum(s > 1e-8 * max(s[0], 1.0)))
    U, Vt = U[:, :r], Vt[:r]
    W = R / lam1 - U @ Vt
    sub_L = max(
        np.max(np.abs(U.T @ W), initial=0.0),
        np.max(np.abs(W @ Vt.T), initial=0.0),
        np.linalg.norm(W, 2) - 1.0,
    )
    return fixed_L, fixed_S, sub_S, sub_L, r


@pytest.mark.parametrize("seed", SEEDS)
def test_rpca_ista_reaches_a_fixed_point(seed):
    lam1, lam2 = 1.0, 0.3
    D, _, _ = ref.rpca_problem(10, 8, 3, rank=1, outlier_frac=0.1, seed=seed)
    model = RpcaIsta(lam1=lam1, lam2=lam2, layers=LAYERS, dtype=torch.float64)
    with torch.no_grad():
        L, S = (t.numpy() for t in model(D=torch.from_numpy(D)))
    for b in range(D.shape[0]):
        fixed_L, fixed_S, sub_S, sub_L, rank = rpca_optimality(D[b], L[b], S[b], lam1, lam2, mu=0.5)
        assert fixed_L <= 1e-10 and fixed_S <= 1e-10, f"sample {b}: prox residuals {fixed_L:.1e}, {fixed_S:.1e}"
        assert sub_S <= 1e-9 and sub_L <= 1e-9, f"sample {b}: subgradient residuals {sub_S:.1e}, {sub_L:.1e}"
        # a non-trivial split: both parts non-zero, L of low rank
        assert 0 < rank < min(D.shape[1:]) and np.any(S[b] != 0)
