"""Numerical references for proximal operators and projections: argmin by a generic solver.

Each prox is a numerical solution of ``argmin_u t f(u) + 0.5 ||u - v||^2`` and each projection
of ``argmin_{u in C} ||u - v||^2`` (scipy SLSQP on epigraph/constraint reformulations, a
factorised BFGS for the nuclear norm, exhaustive support search for the l0 "norm"). They take
and return numpy arrays: a flattened block (a matrix for ``ref_svt``).
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
    """Exhaustive search over supports S: the best u on S is v_S, costing t|S| + ||v_~S||^2 / 2."""
    best = min(
        itertools.product([False, True], repeat=v.size),
        key=lambda s: t * sum(s) + 0.5 * np.sum(v[~np.array(s)] ** 2),
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
