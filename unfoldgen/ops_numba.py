"""Numba versions of the operator table and helpers; copied into generated kernels.py.

The kernels lay a batch of vectors out as the columns of a 2-D array ``(n, B)`` (one sample
per column, so data matrices multiply the whole batch with one BLAS call); a single sample
of a per-sample matrix is a plain ``(m, n)`` array. Every operator here therefore acts on
each column of its argument, except ``svt``, which acts on one matrix. Scalars are Python
or numpy scalars, or ``(1, B)`` rows (one value per sample). Constants are cast to the
argument's dtype so float32 kernels stay float32. The compiler adds ``@numba.njit``.

Complex arguments (complex128, complex64) reach the entries whose table row says
``complex_args``: they take |v| the modulus (np.abs, a real array) and build constants from its
real dtype; np.sign has no complex form to rely on. Where the real and complex forms differ,
``isinstance(v.dtype.type(0), (complex, np.complex64))`` picks one: numba types it as a constant
and compiles only that branch (the test must sit in the function itself, not in a helper).
Parameters (t, bounds, radii) are real numbers.
"""

import numpy as np


def colsum(v):
    """Σ of each column, as a (1, B) row."""
    return np.sum(v, axis=0).reshape(1, -1)


def colmax(v):
    """max of each column, as a (1, B) row (numba's np.max takes no axis)."""
    out = np.empty((1, v.shape[1]), v.dtype)
    for j in range(v.shape[1]):
        out[0, j] = np.max(v[:, j])
    return out


def total(v):
    """Σ of all entries of one sample's matrix, as a scalar."""
    return np.sum(v)


def mixed_dot(a, b):
    """np.dot of a real and a complex array (either order) by parts: two real products, the real
    side never copied to complex (np.dot takes one dtype)."""
    if isinstance(a.dtype.type(0), (complex, np.complex64)):
        real = np.dot(np.ascontiguousarray(a.real), b)
        imag = np.dot(np.ascontiguousarray(a.imag), b)
        out = np.empty(real.shape, a.dtype)
    else:
        real = np.dot(a, np.ascontiguousarray(b.real))
        imag = np.dot(a, np.ascontiguousarray(b.imag))
        out = np.empty(real.shape, b.dtype)
    out.real[...] = real
    out.imag[...] = imag
    return out


def complex_parts(v):
    """A complex vector (n, B) as a net sees it: its real parts, then its imaginary parts (2n, B)."""
    return np.concatenate((np.ascontiguousarray(v.real), np.ascontiguousarray(v.imag)), axis=0)


def from_complex_parts(parts, dtype):
    """The complex vector (n, B) of ``dtype`` whose real and imaginary parts are the first and the
    second half of the rows of ``parts`` (2n, B), a net's output on complex values."""
    half = parts.shape[0] // 2
    out = np.empty((half, parts.shape[1]), dtype)
    out.real[...] = parts[:half]
    out.imag[...] = parts[half:]
    return out


def sigmoid(v):
    """σ(v) = 1 / (1 + e^-v), without overflow for large |v|."""
    one = v.dtype.type(1)
    e = np.exp(-np.abs(v))
    return np.where(v >= 0, one / (one + e), e / (one + e))


def softplus(v):
    """log(1 + e^v) = max(v, 0) + log(1 + e^-|v|)."""
    return np.maximum(v, v.dtype.type(0)) + np.log1p(np.exp(-np.abs(v)))


def softmax(v):
    """Softmax of each column."""
    shifted = np.exp(v - colmax(v))
    return shifted / colsum(shifted)


def logsumexp(v):
    """log Σ e^v of each column, as a (1, B) row."""
    top = colmax(v)
    return top + np.log(colsum(np.exp(v - top)))


def huber_elementwise(v, delta):
    """h_δ(v) = v²/2 where |v| ≤ δ, δ(|v| − δ/2) elsewhere."""
    half = v.dtype.type(0.5)
    magnitude = np.abs(v)
    return np.where(magnitude <= delta, half * v * v, delta * (magnitude - half * delta))


def soft_threshold(v, t):
    """prox of t‖·‖₁: sign(v) max(|v| − t, 0); complex v: v max(0, 1 − t/|v|), the modulus shrunk
    and the phase kept (0 at v = 0)."""
    magnitude = np.abs(v)
    shrunk = np.maximum(magnitude - t, magnitude.dtype.type(0))
    if isinstance(v.dtype.type(0), (complex, np.complex64)):
        return v * (shrunk / np.maximum(magnitude, magnitude.dtype.type(1e-30)))
    return np.sign(v) * shrunk


def soft_threshold_keep(v, t, fraction):
    """Soft threshold with support selection, per column: the ⌊p·n + ½⌋ entries of largest
    magnitude (ties included; moduli for complex v) pass unchanged where |v| > t, the rest are
    soft-thresholded."""
    rows = v.shape[0]
    count = min(max(int(np.floor(fraction * rows + 0.5)), 0), rows)
    shrunk = soft_threshold(v, t)
    if count == 0:
        return shrunk
    magnitude = np.abs(v)
    kth = np.empty((1, v.shape[1]), magnitude.dtype)
    for j in range(v.shape[1]):
        kth[0, j] = np.partition(magnitude[:, j], rows - count)[rows - count]
    keep = (magnitude >= kth) & (magnitude > t)
    return np.where(keep, v, shrunk)


def soft_threshold_nonneg(v, t):
    """prox of t‖·‖₁ + ι(v ≥ 0): max(v − t, 0)."""
    return np.maximum(v - t, v.dtype.type(0))


def block_soft_threshold(v, t):
    """prox of t‖·‖₂ per column: v max(0, 1 − t/‖v‖) (‖v‖² = Σ|v_i|², complex v too)."""
    magnitude = np.abs(v)
    norm = np.sqrt(colsum(magnitude * magnitude))
    real = norm.dtype.type
    return v * np.maximum(real(0), real(1) - t / np.maximum(norm, real(1e-30)))


def block_soft_threshold_nonneg(v, t):
    """prox of t‖·‖₂ + ι(v ≥ 0) per column: the block soft threshold of max(v, 0)."""
    return block_soft_threshold(np.maximum(v, v.dtype.type(0)), t)


def hard_threshold(v, t):
    """prox of t‖·‖₀: keep v where |v| > √(2t) (the modulus, for complex v)."""
    magnitude = np.abs(v)
    return np.where(magnitude > np.sqrt(magnitude.dtype.type(2) * t), v, v.dtype.type(0))


def svt(v, t):
    """prox of t‖·‖_* for one matrix: U diag(max(s − t, 0)) Vᴴ (the complex SVD for complex v)."""
    u, s, vh = np.linalg.svd(v, full_matrices=False)
    shrunk = np.maximum(s - t, s.dtype.type(0))
    return np.dot(u * shrunk.reshape(1, -1), vh)


def proj_box(v, lo, hi):
    """Projection onto {lo ≤ u ≤ hi}; complex v: onto {lo ≤ Re u ≤ hi, lo ≤ Im u ≤ hi}, each part
    clipped."""
    if isinstance(v.dtype.type(0), (complex, np.complex64)):
        out = np.empty_like(v)
        out.real[...] = np.minimum(np.maximum(v.real, lo), hi)
        out.imag[...] = np.minimum(np.maximum(v.imag, lo), hi)
        return out
    return np.minimum(np.maximum(v, lo), hi)


def proj_qam(v, order):
    """Projection onto the convex hull of square M-QAM (M = ``order``) with unit average energy:
    real and imaginary parts clipped to [−b, b], b = (√M − 1) √(3 / (2 (M − 1))); a real v to [−b, b]."""
    bound = (np.sqrt(order) - 1) * np.sqrt(3 / (2 * (order - 1)))
    return proj_box(v, -bound, bound)


def proj_nonneg(v):
    """Projection onto {u ≥ 0}."""
    return np.maximum(v, v.dtype.type(0))


def proj_ball2(v, r):
    """Projection of each column onto {‖u‖₂ ≤ r} (‖u‖² = Σ|u_i|², complex v too)."""
    magnitude = np.abs(v)
    norm = np.sqrt(colsum(magnitude * magnitude))
    return v * np.minimum(norm.dtype.type(1), r / np.maximum(norm, norm.dtype.type(1e-30)))


def project_column_simplex(column, s):
    """Sort-based projection of one vector onto {u ≥ 0, Σu = s} (Duchi et al., 2008)."""
    ordered = np.sort(column)[::-1]
    cumulative = np.cumsum(ordered) - s
    index = np.arange(1, column.shape[0] + 1).astype(column.dtype)
    active = ordered - cumulative / index > 0
    rho = np.nonzero(active)[0][-1]
    theta = cumulative[rho] / (rho + 1)
    return np.maximum(column - theta, column.dtype.type(0))


def proj_simplex(v, s):
    """Projection of each column onto {u ≥ 0, Σu = s}."""
    out = np.empty_like(v)
    scale = np.asarray(s, dtype=v.dtype).reshape(-1)
    for j in range(v.shape[1]):
        radius = scale[j] if scale.shape[0] > 1 else scale[0]
        out[:, j] = project_column_simplex(np.ascontiguousarray(v[:, j]), radius)
    return out


def proj_ball1(v, r):
    """Projection of each column onto {‖u‖₁ ≤ r}, through the simplex of radius r."""
    out = v.copy()
    radius = np.asarray(r, dtype=v.dtype).reshape(-1)
    for j in range(v.shape[1]):
        rj = radius[j] if radius.shape[0] > 1 else radius[0]
        column = np.ascontiguousarray(v[:, j])
        if np.sum(np.abs(column)) > rj:
            out[:, j] = np.sign(column) * project_column_simplex(np.abs(column), rj)
    return out


def prox_norminf(v, t):
    """prox of t‖·‖∞ by Moreau: v − proj onto the ℓ1 ball of radius t."""
    return v - proj_ball1(v, t)


def largest_abs_eigenvalue(hessian):
    """max |λ| of a symmetric matrix (symmetrised first)."""
    half = hessian.dtype.type(0.5)
    return np.max(np.abs(np.linalg.eigvalsh(half * (hessian + hessian.T))))


def as_column(v):
    """All entries of one sample's matrix as a single column (reductions act on columns)."""
    return np.ascontiguousarray(v).reshape(-1, 1)


def activate(h, activation):
    """relu, tanh, or gelu in its tanh approximation 0.5 h (1 + tanh(√(2/π) (h + 0.044715 h³)))."""
    if activation == "tanh":
        return np.tanh(h)
    if activation == "gelu":
        inner = h.dtype.type(0.7978845608028654) * (h + h.dtype.type(0.044715) * h * h * h)
        return h.dtype.type(0.5) * h * (h.dtype.type(1) + np.tanh(inner))
    return np.maximum(h, h.dtype.type(0))


def mlp_forward(weights, biases, layer, h, activation):
    """A dense net on columns: layer ``layer`` of weights stacked as (K, out, in), ``activation``
    between the dense layers."""
    last = len(weights) - 1
    for i in range(len(weights)):
        h = np.dot(weights[i][layer], h) + biases[i][layer].reshape(-1, 1)
        if i < last:
            h = activate(h, activation)
    return h


def group_norms(v):
    """The 2-norm over axis 0 of each group ``v[:, rest]`` (of moduli, complex v too), as a (1, groups) row."""
    magnitude = np.abs(np.ascontiguousarray(v).reshape(v.shape[0], -1))
    return np.sqrt(colsum(magnitude * magnitude))


def prox_norm21(v, t):
    """prox of t‖·‖₂,₁ (ℓ2 over axis 0, ℓ1 over the rest): each group v[:, rest] times max(0, 1 − t/‖·‖)."""
    groups = np.ascontiguousarray(v).reshape(v.shape[0], -1)
    norms = group_norms(v)
    real = norms.dtype.type
    scale = np.maximum(real(0), real(1) - t / np.maximum(norms, real(1e-30)))
    return (groups * scale).reshape(v.shape)


def proj_ball21(v, r):
    """Projection of each group v[:, rest] (ℓ2 over axis 0) onto {‖u‖₂ ≤ r}."""
    groups = np.ascontiguousarray(v).reshape(v.shape[0], -1)
    norms = group_norms(v)
    real = norms.dtype.type
    return (groups * np.minimum(real(1), r / np.maximum(norms, real(1e-30)))).reshape(v.shape)
