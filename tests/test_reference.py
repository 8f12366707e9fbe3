"""Validate the numpy references in ``tests/reference.py``.

The references are checked against things they do not share code with:
hand-computed numbers, hand-unrolled iterations written per sample, peer
solvers (scikit-learn's coordinate-descent Lasso, scipy's ``lsq_linear``) and
first-order optimality (KKT / subgradient) conditions.
"""

import numpy as np
import pytest
from scipy.optimize import lsq_linear
from sklearn.linear_model import Lasso

try:
    from tests import reference as ref
except ModuleNotFoundError:  # bare `pytest`: tests/ is on sys.path, the repo root not
    import reference as ref

# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------

# small, overdetermined, well conditioned: cond(A^T A) ~ 40
M, N, B = 40, 20, 4
# ISTA/FISTA/ADMM/PGD reach their fixed point (to ~1e-12) within ~500 iterations here
LONG_K = 2000
# RPCA proximal gradient converges more slowly (not strongly convex)
RPCA_K = 5000


@pytest.fixture(scope="module")
def lasso_data():
    A, Y, _ = ref.sparse_problem(M, N, B, p=0.3, snr_db=20, seed=1)
    # a fraction of lam_max = max|A^T y|: the solution is sparse but nonzero
    lam = 0.1 * float(np.max(np.abs(Y @ A)))
    return A, Y, lam


@pytest.fixture(scope="module")
def sklearn_lasso(lasso_data):
    """Per-sample Lasso solution by coordinate descent.

    sklearn minimises (1/(2 m)) ||y - A x||^2 + alpha ||x||_1, i.e. our
    objective divided by m when alpha = lam / m.
    """
    A, Y, lam = lasso_data
    coefs = []
    for y in Y:
        model = Lasso(alpha=lam / M, fit_intercept=False, tol=1e-12, max_iter=100000)
        coefs.append(model.fit(A, y).coef_)
    return np.stack(coefs)


@pytest.fixture(scope="module")
def box_data():
    # noise large enough that the constrained optimum has both clipped and
    # interior coordinates
    return ref.box_problem(M, N, B, seed=2, noise_std=0.3)


@pytest.fixture(scope="module")
def rpca_data():
    D, _, _ = ref.rpca_problem(20, 15, 3, rank=2, outlier_frac=0.1, seed=3)
    return D


def rel_err(x, x_ref):
    """Largest per-sample relative error ||x_b - ref_b|| / ||ref_b||."""
    return float(np.max(np.linalg.norm(x - x_ref, axis=-1) / np.linalg.norm(x_ref, axis=-1)))


# ---------------------------------------------------------------------------
# primitives
# ---------------------------------------------------------------------------


def test_soft_threshold_hand_values():
    v = np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5])
    expected = np.array([-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5])
    np.testing.assert_array_equal(ref.soft_threshold(v, 1.0), expected)


def test_svt_hand_values():
    # M = U diag(5, 2, 0.5) V^T with explicit orthonormal U, V
    c, s = np.cos(0.3), np.sin(0.3)
    U = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    V = np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])
    Mat = U @ np.diag([5.0, 2.0, 0.5]) @ V.T
    expected = U @ np.diag([4.0, 1.0, 0.0]) @ V.T
    np.testing.assert_allclose(ref.svt(Mat, 1.0), expected, atol=1e-14)
    np.testing.assert_allclose(ref.svt(Mat, 10.0), np.zeros_like(Mat), atol=0)


def test_lipschitz_is_squared_spectral_norm():
    A, _, _ = ref.sparse_problem(30, 50, 1, seed=4)
    sigma_max = np.linalg.svd(A, compute_uv=False)[0]
    assert ref.lipschitz(A) == pytest.approx(sigma_max**2, rel=1e-13)
    assert ref.lipschitz_sumsq(A) == pytest.approx(2.0 * sigma_max**2, rel=1e-13)
    assert ref.lipschitz(np.diag([1.0, 3.0, 2.0])) == pytest.approx(9.0, rel=1e-15)


def test_per_iteration_broadcasting_and_length_check():
    assert ref.per_iteration(0.5, 3) == [0.5, 0.5, 0.5]
    assert ref.per_iteration([1, 2, 3], 3) == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="expected K=3"):
        ref.per_iteration([1.0, 2.0], 3, "mu")
    with pytest.raises(ValueError, match="expected K=3"):
        ref.ista(np.eye(2), np.ones((1, 2)), [0.1, 0.2], 3)


# ---------------------------------------------------------------------------
# a few iterations against hand-unrolled, per-sample code with per-layer values
# ---------------------------------------------------------------------------


def _soft(v, t):
    return np.array([np.sign(a) * max(abs(a) - t, 0.0) for a in v])


def test_ista_one_step_identity():
    # A = I, mu = 1: one ISTA step from 0 is soft(y, lam)
    Y = np.array([[3.0, -0.2, -2.0], [0.0, 1.5, 0.9]])
    X = ref.ista(np.eye(3), Y, 1.0, 1, mu=1.0)
    np.testing.assert_array_equal(X, [[2.0, 0.0, -1.0], [0.0, 0.5, 0.0]])


@pytest.fixture(scope="module")
def small_data():
    return ref.sparse_problem(6, 8, 3, p=0.4, snr_db=30, seed=5)


def test_ista_and_lista_hand_unrolled(small_data):
    A, Y, _ = small_data
    mus, lams = [0.3, 0.2, 0.25], [0.05, 0.1, 0.02]
    expected = []
    for y in Y:
        x = np.zeros(A.shape[1])
        for mu, lam in zip(mus, lams, strict=True):
            x = _soft(x - mu * A.T @ (A @ x - y), mu * lam)
        expected.append(x)
    np.testing.assert_allclose(ref.ista(A, Y, lams, 3, mu=mus), expected, rtol=0, atol=1e-14)
    np.testing.assert_allclose(ref.lista_cp(A, Y, lams, 3, mu=mus), expected, rtol=0, atol=1e-14)
    # explicit per-layer W and theta
    Ws = [mu * A.T for mu in mus]
    thetas = [mu * lam for mu, lam in zip(mus, lams, strict=True)]
    got = ref.lista_cp(A, Y, 0.0, 3, W=Ws, theta=thetas)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-14)


def test_fista_hand_unrolled(small_data):
    A, Y, _ = small_data
    mus, lams = [0.3, 0.2, 0.25, 0.3], [0.05, 0.1, 0.02, 0.04]
    t1 = (1.0 + np.sqrt(5.0)) / 2.0
    t2 = (1.0 + np.sqrt(1.0 + 4.0 * t1**2)) / 2.0
    t3 = (1.0 + np.sqrt(1.0 + 4.0 * t2**2)) / 2.0
    expected = []
    for y in Y:
        # iteration 1: z0 = x0 = 0, t0 = 1, so the momentum term vanishes
        x1 = _soft(mus[0] * A.T @ y, mus[0] * lams[0])
        z1 = x1
        x2 = _soft(z1 - mus[1] * A.T @ (A @ z1 - y), mus[1] * lams[1])
        z2 = x2 + ((t1 - 1.0) / t2) * (x2 - x1)
        x3 = _soft(z2 - mus[2] * A.T @ (A @ z2 - y), mus[2] * lams[2])
        z3 = x3 + ((t2 - 1.0) / t3) * (x3 - x2)
        x4 = _soft(z3 - mus[3] * A.T @ (A @ z3 - y), mus[3] * lams[3])
        expected.append(x4)
    np.testing.assert_allclose(ref.fista(A, Y, lams, 4, mu=mus), expected, rtol=0, atol=1e-14)


def test_admm_hand_unrolled(small_data):
    A, Y, _ = small_data
    rhos, lams = [1.0, 0.5, 2.0], [0.05, 0.1, 0.02]
    n = A.shape[1]
    expected = []
    for y in Y:
        x, z, u = np.zeros(n), np.zeros(n), np.zeros(n)
        for rho, lam in zip(rhos, lams, strict=True):
            x = np.linalg.inv(A.T @ A + rho * np.eye(n)) @ (A.T @ y + rho * (z - u))
            z = _soft(x + u, lam / rho)
            u = u + x - z
        expected.append(z)
    np.testing.assert_allclose(ref.admm(A, Y, lams, 3, rho=rhos), expected, rtol=0, atol=1e-12)


def test_pgd_box_hand_unrolled():
    H, Y, _ = ref.box_problem(5, 4, 3, seed=6, noise_std=0.5)
    expected_default, expected_mus = [], []
    mus = [0.1, 0.4, 0.2]
    for Hb, y in zip(H, Y, strict=True):
        mu_b = 1.0 / (2.0 * np.linalg.norm(Hb, 2) ** 2)
        x = np.zeros(4)
        for _ in range(3):
            x = np.minimum(np.maximum(x - mu_b * 2.0 * Hb.T @ (Hb @ x - y), -1.0), 1.0)
        expected_default.append(x)
        x = np.zeros(4)
        for mu in mus:
            x = np.minimum(np.maximum(x - mu * 2.0 * Hb.T @ (Hb @ x - y), -0.5), 0.7)
        expected_mus.append(x)
    np.testing.assert_allclose(ref.pgd_box(H, Y, 3), expected_default, rtol=0, atol=1e-14)
    got = ref.pgd_box(H, Y, 3, lo=-0.5, hi=0.7, mu=mus)
    np.testing.assert_allclose(got, expected_mus, rtol=0, atol=1e-14)


def test_rpca_ista_hand_unrolled():
    D, _, _ = ref.rpca_problem(5, 4, 2, rank=1, outlier_frac=0.2, seed=7)
    mus, lam1s, lam2s = [0.5, 0.3], [1.0, 0.5], [0.1, 0.3]
    for b in range(2):
        # iteration 1 from L = S = 0: both proximal steps act on mu D
        U, s, Vt = np.linalg.svd(mus[0] * D[b])
        L1 = sum(max(s[i] - mus[0] * lam1s[0], 0.0) * np.outer(U[:, i], Vt[i]) for i in range(len(s)))
        S1 = np.sign(mus[0] * D[b]) * np.maximum(np.abs(mus[0] * D[b]) - mus[0] * lam2s[0], 0.0)
        # iteration 2: gradient R = D - L1 - S1 shared by both blocks
        R = D[b] - L1 - S1
        U, s, Vt = np.linalg.svd(L1 + mus[1] * R)
        L2 = sum(max(s[i] - mus[1] * lam1s[1], 0.0) * np.outer(U[:, i], Vt[i]) for i in range(len(s)))
        S2 = np.sign(S1 + mus[1] * R) * np.maximum(np.abs(S1 + mus[1] * R) - mus[1] * lam2s[1], 0.0)
        L, S = ref.rpca_ista(D, 2, lam1=lam1s, lam2=lam2s, mu=mus)
        np.testing.assert_allclose(L[b], L2, rtol=0, atol=1e-13)
        np.testing.assert_allclose(S[b], S2, rtol=0, atol=1e-13)
        assert np.any(L2 != 0)
        assert np.any(S2 != 0)


# ---------------------------------------------------------------------------
# long runs against peer solvers and optimality conditions
# ---------------------------------------------------------------------------


def test_sklearn_lasso_satisfies_kkt(lasso_data, sklearn_lasso):
    """Sanity-check the peer's KKT conditions.

    A^T (y - A x) = lam sign(x) on the support and |A^T (y - A x)| <= lam off it.
    """
    A, Y, lam = lasso_data
    for y, x in zip(Y, sklearn_lasso, strict=True):
        corr = A.T @ (y - A @ x)
        on = x != 0
        assert 0 < on.sum() < N  # non-trivial: some zeros, some nonzeros
        np.testing.assert_allclose(corr[on], lam * np.sign(x[on]), rtol=0, atol=1e-8 * lam)
        assert np.all(np.abs(corr[~on]) <= lam * (1 + 1e-8))


@pytest.mark.parametrize("solver", [ref.ista, ref.fista, ref.admm, ref.lista_cp])
def test_lasso_solvers_match_sklearn(solver, lasso_data, sklearn_lasso):
    A, Y, lam = lasso_data
    X = solver(A, Y, lam, LONG_K)
    assert rel_err(X, sklearn_lasso) <= 1e-6
    # same support (zeros are exact after soft-thresholding)
    np.testing.assert_array_equal(X != 0, sklearn_lasso != 0)
    # and the reference's own objective is no worse than sklearn's
    for x, xs, y in zip(X, sklearn_lasso, Y, strict=True):
        assert ref.lasso_objective(A, y, x, lam) <= ref.lasso_objective(A, y, xs, lam) + 1e-10


def test_lasso_solvers_not_converged_after_few_iterations(lasso_data, sklearn_lasso):
    """The long-run comparison is meaningful: a handful of iterations is clearly off."""
    A, Y, lam = lasso_data
    for solver in (ref.ista, ref.fista, ref.admm):
        assert rel_err(solver(A, Y, lam, 3), sklearn_lasso) > 1e-3


def test_pgd_box_matches_lsq_linear(box_data):
    H, Y, _ = box_data
    X = ref.pgd_box(H, Y, LONG_K)
    peer = np.stack([lsq_linear(H[b], Y[b], bounds=(-1.0, 1.0), tol=1e-12).x for b in range(B)])
    # non-trivial: the optimum has both clipped and interior coordinates
    assert np.any(np.abs(peer) >= 1 - 1e-9)
    assert np.any(np.abs(peer) < 1 - 1e-3)
    assert rel_err(X, peer) <= 1e-6
    assert rel_err(ref.pgd_box(H, Y, 3), peer) > 1e-3


def _nuclear_kkt_violation(L, R, lam1):
    """How far R is from lam1 * (subdifferential of ||.||_* at L), independent of svt.

    With L = U_r diag(s) V_r^T (s > 0) the subdifferential is
    {U_r V_r^T + W : U_r^T W = 0, W V_r = 0, ||W||_2 <= 1}.
    """
    U, s, Vt = np.linalg.svd(L)
    r = int(np.sum(s > 1e-8 * max(s[0], 1.0)))
    Ur, Vr = U[:, :r], Vt[:r].T
    Pu = np.eye(L.shape[0]) - Ur @ Ur.T
    Pv = np.eye(L.shape[1]) - Vr @ Vr.T
    W = Pu @ R @ Pv
    return max(
        float(np.max(np.abs(Ur.T @ R @ Vr - lam1 * np.eye(r)), initial=0.0)),
        float(np.max(np.abs(Ur.T @ R @ Pv), initial=0.0)),
        float(np.max(np.abs(Pu @ R @ Vr), initial=0.0)),
        max(np.linalg.norm(W, 2) - lam1, 0.0),
    )


def test_rpca_ista_monotone_and_stationary(rpca_data):
    D = rpca_data
    lam1, lam2, mu = 1.0, 0.1, 0.5
    iterates = ref.rpca_ista(D, RPCA_K, lam1=lam1, lam2=lam2, mu=mu, return_iterates=True)
    objective = np.array(
        [[ref.rpca_objective(D[b], L[b], S[b], lam1, lam2) for b in range(D.shape[0])] for L, S in iterates]
    )
    start = np.array([ref.rpca_objective(Db, 0 * Db, 0 * Db, lam1, lam2) for Db in D])
    objective = np.vstack([start, objective])
    # monotone decrease (mu = 1/L for the joint smooth part), up to round-off
    assert np.all(np.diff(objective, axis=0) <= 1e-12 * np.abs(objective[:-1]))
    assert np.all(objective[-1] < 0.5 * objective[0])

    L, S = iterates[-1]
    for b in range(D.shape[0]):
        R = D[b] - L[b] - S[b]  # = -gL = -gS
        # proximal fixed point
        assert np.linalg.norm(L[b] - ref.svt(L[b] + mu * R, mu * lam1)) <= 1e-9
        assert np.linalg.norm(S[b] - ref.soft_threshold(S[b] + mu * R, mu * lam2)) <= 1e-9
        # subgradient optimality, checked without svt / soft_threshold:
        # R in lam1 d||L||_*  and  R in lam2 d||S||_1
        assert _nuclear_kkt_violation(L[b], R, lam1) <= 1e-8
        on = S[b] != 0
        np.testing.assert_allclose(R[on], lam2 * np.sign(S[b][on]), rtol=0, atol=1e-8)
        assert np.all(np.abs(R[~on]) <= lam2 + 1e-8)
        # non-trivial solution: both components active, L low rank
        assert 0 < np.linalg.matrix_rank(L[b], tol=1e-8) < min(L[b].shape)
        assert np.any(on)
        assert not np.all(on)


# ---------------------------------------------------------------------------
# LISTA-CP initialisation and iterate lists
# ---------------------------------------------------------------------------


def test_lista_cp_init_equals_ista(lasso_data):
    A, Y, lam = lasso_data
    for K in (1, 5, 16):
        np.testing.assert_allclose(ref.lista_cp(A, Y, lam, K), ref.ista(A, Y, lam, K), rtol=0, atol=1e-12)
    # and not trivially: the result moves with K
    assert rel_err(ref.lista_cp(A, Y, lam, 1), ref.lista_cp(A, Y, lam, 16)) > 1e-2


@pytest.mark.parametrize("solver", [ref.ista, ref.fista, ref.admm, ref.lista_cp])
def test_return_iterates_lasso(solver, lasso_data):
    A, Y, lam = lasso_data
    K = 7
    iterates = solver(A, Y, lam, K, return_iterates=True)
    assert isinstance(iterates, list)
    assert len(iterates) == K
    assert all(x.shape == (B, N) for x in iterates)
    np.testing.assert_array_equal(iterates[-1], solver(A, Y, lam, K))
    # entry k is the output of a (k+1)-iteration run
    np.testing.assert_array_equal(iterates[2], solver(A, Y, lam, 3))
    assert not np.array_equal(iterates[0], iterates[-1])


def test_return_iterates_pgd_box_and_rpca(box_data, rpca_data):
    H, Y, _ = box_data
    iterates = ref.pgd_box(H, Y, 6, return_iterates=True)
    assert len(iterates) == 6
    assert iterates[0].shape == (B, N)
    np.testing.assert_array_equal(iterates[-1], ref.pgd_box(H, Y, 6))

    iterates = ref.rpca_ista(rpca_data, 4, return_iterates=True)
    assert len(iterates) == 4
    L, S = ref.rpca_ista(rpca_data, 4)
    np.testing.assert_array_equal(iterates[-1][0], L)
    np.testing.assert_array_equal(iterates[-1][1], S)


def test_constant_per_layer_lists_equal_scalars(lasso_data, box_data):
    A, Y, lam = lasso_data
    K, mu = 5, 0.5 / ref.lipschitz(A)
    np.testing.assert_array_equal(ref.ista(A, Y, [lam] * K, K, mu=[mu] * K), ref.ista(A, Y, lam, K, mu=mu))
    np.testing.assert_array_equal(ref.fista(A, Y, [lam] * K, K, mu=[mu] * K), ref.fista(A, Y, lam, K, mu=mu))
    np.testing.assert_array_equal(ref.admm(A, Y, [lam] * K, K, rho=[2.0] * K), ref.admm(A, Y, lam, K, rho=2.0))
    H, Yb, _ = box_data
    np.testing.assert_array_equal(ref.pgd_box(H, Yb, K, mu=[0.1] * K), ref.pgd_box(H, Yb, K, mu=0.1))


# ---------------------------------------------------------------------------
# synthetic data helpers
# ---------------------------------------------------------------------------


def test_sparse_problem():
    A, Y, X = ref.sparse_problem(50, 200, 400, p=0.1, snr_db=10.0, seed=8)
    assert A.shape == (50, 200)
    assert Y.shape == (400, 50)
    assert X.shape == (400, 200)
    np.testing.assert_allclose(np.linalg.norm(A, axis=0), 1.0, rtol=1e-14)
    assert abs(np.mean(X != 0) - 0.1) < 0.01
    clean = X @ A.T
    snr = 10 * np.log10(np.sum(clean**2) / np.sum((Y - clean) ** 2))
    assert abs(snr - 10.0) < 0.2
    # noiseless by default, and deterministic in the seed
    A0, Y0, X0 = ref.sparse_problem(10, 20, 3, seed=9)
    np.testing.assert_array_equal(Y0, X0 @ A0.T)
    np.testing.assert_array_equal(ref.sparse_problem(10, 20, 3, seed=9)[1], Y0)
    assert not np.array_equal(ref.sparse_problem(10, 20, 3, seed=10)[1], Y0)


def test_box_problem():
    H, Y, X = ref.box_problem(30, 10, 200, seed=11, noise_std=0.1)
    assert H.shape == (200, 30, 10)
    assert Y.shape == (200, 30)
    assert X.shape == (200, 10)
    assert set(np.unique(X)) == {-1.0, 1.0}
    assert abs(np.var(H) * 30 - 1.0) < 0.05
    noise = Y - np.einsum("bmn,bn->bm", H, X)
    assert abs(np.std(noise) - 0.1) < 0.005


def test_rpca_problem():
    D, L, S = ref.rpca_problem(30, 20, 50, rank=3, outlier_frac=0.1, seed=12)
    assert D.shape == L.shape == S.shape == (50, 30, 20)
    np.testing.assert_array_equal(D, L + S)
    assert all(np.linalg.matrix_rank(Lb) == 3 for Lb in L)
    assert abs(np.mean(S != 0) - 0.1) < 0.01
