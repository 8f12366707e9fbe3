"""Numerical references for proximal operators and projections: argmin by a generic solver.

Each prox is a numerical solution of ``argmin_u t f(u) + 0.5 ||u - v||^2`` and each projection
of ``argmin_{u in C} ||u - v||^2`` (scipy SLSQP on epigraph/constraint reformulations, a
factorised BFGS for the nuclear norm, exhaustive support search for the l0 "norm"). They take
and return numpy arrays: a flattened block (a matrix for ``ref_svt``).

Complex arguments: the problem is posed over R^2n, a complex u viewed as its real and imaginary
parts (|u_i| = ||(Re u_i, Im u_i)||), and solved by the same real solvers (``ref_complex_*``).
"""

import itertools

import numpy as np
from scipy.optimize import minimize


def slsqp(fun, z0, constraints):
    """Minimise the smooth ``fun`` (returns value and gradient) under SLSQP constraints."""
    res = minimize(
        fun,
        z0,
        jac=True,
        method="SLSQP",
        constraints=constraints,
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    assert res.success, res.message
    return res.x


def linear(a, b=0.0, kind="ineq"):
    """The constraint ``a @ z + b >= 0`` (or ``== 0``)."""
    return {"type": kind, "fun": lambda z: a @ z + b, "jac": lambda z: a}


def epigraph(v, t, s0, constraints, u0=None):
    """argmin over z = [u, s] of t * sum(s) + 0.5 ||u - v||^2 under ``constraints``.

    Starts at u = u0 (default v) with the epigraph variables s = s0 tight there; a loose
    start leaves SLSQP several orders of magnitude less accurate.
    """
    n = v.size

    def fun(z):
        d = z[:n] - v
        return t * z[n:].sum() + 0.5 * d @ d, np.concatenate([d, np.full(s0.size, t)])

    return slsqp(fun, np.concatenate([v if u0 is None else u0, s0]), constraints)[:n]


def abs_epigraph(n):
    """Constraints s_i >= |u_i| on z = [u, s]."""
    eye = np.eye(n)
    return [linear(np.hstack([eye, eye])), linear(np.hstack([-eye, eye]))]


def ref_soft_threshold(v, t):
    return epigraph(v, t, np.abs(v), abs_epigraph(v.size))


def ref_soft_threshold_nonneg(v, t):
    n = v.size
    nonneg = linear(np.hstack([np.eye(n), np.zeros((n, n))]))
    return epigraph(v, t, np.abs(v), [*abs_epigraph(n), nonneg])


def ref_block_soft_threshold(v, t):
    n = v.size
    # Second-order cone s >= ||u|| written smoothly as s^2 - ||u||^2 >= 0, s >= 0.
    cone = {
        "type": "ineq",
        "fun": lambda z: z[n] ** 2 - z[:n] @ z[:n],
        "jac": lambda z: np.concatenate([-2 * z[:n], [2 * z[n]]]),
    }
    return epigraph(v, t, np.linalg.norm(v, keepdims=True), [cone, linear(np.eye(n + 1)[n])])


def ref_block_soft_threshold_nonneg(v, t):
    n = v.size
    # The cone as s - ||u|| >= 0: its smooth square form s^2 - ||u||^2 has no gradient at
    # u = 0, s = 0, where SLSQP stalls once u >= 0 cuts off the way around it.
    cone = {
        "type": "ineq",
        "fun": lambda z: z[n] - np.linalg.norm(z[:n]),
        "jac": lambda z: np.concatenate([-z[:n] / max(np.linalg.norm(z[:n]), 1e-300), [1.0]]),
    }
    nonneg = linear(np.hstack([np.eye(n), np.zeros((n, 1))]))
    inside = np.abs(v)  # a feasible start, tight on the cone
    return epigraph(v, t, np.linalg.norm(inside, keepdims=True), [cone, nonneg], inside)


def ref_prox_norminf(v, t):
    n = v.size
    ones = np.ones((n, 1))
    bounds = [
        linear(np.hstack([np.eye(n), ones])),
        linear(np.hstack([-np.eye(n), ones])),
    ]
    return epigraph(v, t, np.abs(v).max(keepdims=True), bounds)


def ref_svt(v, t):
    """Nuclear prox via ||X||_* = min_{X = A B^T} (||A||^2 + ||B||^2) / 2, multi-start BFGS."""
    m, n = v.shape
    k = min(m, n)

    def fun(z):
        a, b = z[: m * k].reshape(m, k), z[m * k :].reshape(n, k)
        res = a @ b.T - v
        f = 0.5 * t * (np.sum(a * a) + np.sum(b * b)) + 0.5 * np.sum(res * res)
        return f, np.concatenate([(t * a + res @ b).ravel(), (t * b + res.T @ a).ravel()])

    rng = np.random.default_rng(0)
    runs = [
        minimize(
            fun,
            rng.normal(size=(m + n) * k),
            jac=True,
            method="BFGS",
            options={"gtol": 1e-12},
        )
        for _ in range(6)
    ]
    best = min(runs, key=lambda r: r.fun)
    a, b = best.x[: m * k].reshape(m, k), best.x[m * k :].reshape(n, k)
    return a @ b.T


def ref_hard_threshold(v, t):
    """Exhaustive search over supports S: the best u on S is v_S, costing t|S| + ||v_~S||^2 / 2
    (complex v too: ||.|| over moduli)."""
    best = min(
        itertools.product([False, True], repeat=v.size),
        key=lambda s: t * sum(s) + 0.5 * np.sum(np.abs(v[~np.array(s)]) ** 2),
    )
    return np.where(best, v, 0.0)


def project(v, constraints):
    """argmin_u 0.5 ||u - v||^2 subject to ``constraints`` on u, starting from v."""
    return slsqp(lambda u: (0.5 * (u - v) @ (u - v), u - v), v, constraints)


def ref_proj_ball1(v, r):
    n = v.size
    budget = linear(np.concatenate([np.zeros(n), -np.ones(n)]), r)
    return epigraph(v, 0.0, np.abs(v), [*abs_epigraph(n), budget])


def ref_proj_box(v, lo, hi):
    return project(v, [linear(np.eye(v.size), -lo), linear(-np.eye(v.size), hi)])


def ref_proj_nonneg(v):
    return project(v, [linear(np.eye(v.size))])


def ref_proj_ball2(v, r):
    # r - ||u|| >= 0 (rather than r^2 - ||u||^2) lets SLSQP converge cleanly; its
    # gradient is undefined only at u = 0, which the iterates never reach from v.
    return project(
        v, [{"type": "ineq", "fun": lambda u: r - np.linalg.norm(u), "jac": lambda u: -u / np.linalg.norm(u)}]
    )


def ref_proj_simplex(v, s):
    return project(v, [linear(np.eye(v.size)), linear(np.ones(v.size), -s, kind="eq")])


def ref_prox_norm21(v, t):
    """Prox of t * sum_j ||u[:, j]|| for a (g, n) block: one cone s_j >= ||u[:, j]|| per column."""
    g, n = v.shape
    size = g * n

    def cone(j):
        entries = np.arange(j, size, n)  # column j of the row-major flattened u

        def fun(z):
            return z[size + j] ** 2 - z[entries] @ z[entries]

        def jac(z):
            grad = np.zeros(size + n)
            grad[entries] = -2 * z[entries]
            grad[size + j] = 2 * z[size + j]
            return grad

        return {"type": "ineq", "fun": fun, "jac": jac}

    nonneg = linear(np.hstack([np.zeros((n, size)), np.eye(n)]))
    return epigraph(v.ravel(), t, np.linalg.norm(v, axis=0), [*[cone(j) for j in range(n)], nonneg]).reshape(g, n)


# ------------------------------------------------------------------ complex arguments over R^2n


def real_pairs(v):
    """A complex array as a real (2, ...) one: real parts, then imaginary parts."""
    return np.stack([v.real, v.imag])


def from_pairs(pairs):
    return pairs[0] + 1j * pairs[1]


def ref_complex_soft_threshold(v, t):
    """t sum_i |u_i| + ||u - v||^2 / 2 separates into one problem per entry over R^2, where |u_i| is
    the 2-norm of (Re u_i, Im u_i): the block prox of that pair."""
    pairs = [ref_block_soft_threshold(np.array([value.real, value.imag]), t) for value in v.ravel()]
    return np.array([re + 1j * im for re, im in pairs]).reshape(v.shape)


def ref_complex_block_soft_threshold(v, t):
    """||u|| over C^n is the 2-norm of (Re u, Im u) in R^2n."""
    return from_pairs(ref_block_soft_threshold(real_pairs(v.ravel()).ravel(), t).reshape(2, -1)).reshape(v.shape)


def ref_complex_prox_norm21(v, t):
    """The problem separates into one per column (group), whose norm over moduli is the 2-norm of its
    real parts and imaginary parts stacked in R^2g: the block prox of that stack."""
    g = v.shape[0]
    columns = [ref_block_soft_threshold(np.concatenate([column.real, column.imag]), t) for column in v.T]
    return np.stack([column[:g] + 1j * column[g:] for column in columns], axis=1)


def ref_complex_svt(v, t):
    """Nuclear prox via ||X||_* = min_{X = A B^H} (||A||^2 + ||B||^2) / 2 over complex A, B (their real
    and imaginary parts the unknowns), multi-start BFGS."""
    m, n = v.shape
    k = min(m, n)

    def split(z):
        a = z[: 2 * m * k].reshape(2, m, k)
        b = z[2 * m * k :].reshape(2, n, k)
        return from_pairs(a), from_pairs(b)

    def fun(z):
        a, b = split(z)
        res = a @ b.conj().T - v
        f = 0.5 * t * (np.sum(np.abs(a) ** 2) + np.sum(np.abs(b) ** 2)) + 0.5 * np.sum(np.abs(res) ** 2)
        grad_a, grad_b = t * a + res @ b, t * b + res.conj().T @ a  # ∂/∂Re + i ∂/∂Im
        return f, np.concatenate([real_pairs(grad_a).ravel(), real_pairs(grad_b).ravel()])

    rng = np.random.default_rng(0)
    runs = [
        minimize(fun, rng.normal(size=2 * (m + n) * k), jac=True, method="BFGS", options={"gtol": 1e-12})
        for _ in range(6)
    ]
    a, b = split(min(runs, key=lambda r: r.fun).x)
    return a @ b.conj().T


def ref_complex_proj_box(v, lo, hi):
    """Re u and Im u each in [lo, hi]: the real box in R^2n."""
    return from_pairs(ref_proj_box(real_pairs(v.ravel()).ravel(), lo, hi).reshape(2, -1)).reshape(v.shape)


def ref_complex_proj_ball2(v, r):
    return from_pairs(ref_proj_ball2(real_pairs(v.ravel()).ravel(), r).reshape(2, -1)).reshape(v.shape)


def qam_constellation(order):
    """The square M-QAM points (2i − 1 − √M) a + j (2k − 1 − √M) a, scaled to unit mean energy."""
    side = round(np.sqrt(order))
    levels = 2 * np.arange(1, side + 1) - 1 - side
    points = (levels[:, None] + 1j * levels[None, :]).ravel()
    return points / np.sqrt(np.mean(np.abs(points) ** 2))


def ref_proj_qam(v, order):
    """Each entry onto the convex hull of the constellation: for complex v, SLSQP under the hull's
    facet inequalities (scipy.spatial.ConvexHull of the points in R^2); for real v, the hull of the
    real parts of the points (an interval)."""
    from scipy.spatial import ConvexHull

    points = qam_constellation(order)
    if not np.iscomplexobj(v):
        return ref_proj_box(v, points.real.min(), points.real.max())
    facets = ConvexHull(np.column_stack([points.real, points.imag])).equations  # normal · u + offset <= 0
    flat = v.ravel()
    out = np.empty_like(flat)
    for i, value in enumerate(flat):
        pair = np.array([value.real, value.imag])
        inside = [linear(-facet[:2], -facet[2]) for facet in facets]
        u = project(pair, inside)
        out[i] = u[0] + 1j * u[1]
    return out.reshape(v.shape)


def ref_complex_proj_ball21(v, r):
    """Each column (group) of v onto the ball {||u|| <= r} over moduli: the 2-norm ball of its real
    parts and imaginary parts stacked in R^2g (the problem separates by column)."""
    g = v.shape[0]
    columns = [ref_proj_ball2(np.concatenate([column.real, column.imag]), r) for column in v.T]
    return np.stack([column[:g] + 1j * column[g:] for column in columns], axis=1)
