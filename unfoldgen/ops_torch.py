"""Torch proximal operators and projections copied verbatim into generated modules.

Convention: ``v`` has shape ``(..., r, c)``, a batch of r x c blocks (a vector is an
n x 1 column). Each operator acts on every trailing block independently; vector norms
run over all r*c entries of a block (Frobenius for matrices). Scalar parameters are
Python floats or tensors of shape ``()`` or ``(..., 1, 1)`` (one value per block), always real.

Complex blocks: the entries whose table row says ``complex_args`` take complex v (complex64 or
complex128) with |.| the modulus, as each docstring defines; their real results are unchanged.

The compiler copies each function's text (and, found by reading the code, every function
of this module it calls); the copied code needs ``torch`` and ``Tensor`` in scope.
"""

import torch
from torch import Tensor


def soft_threshold(v: Tensor, t: Tensor | float) -> Tensor:
    """Prox of t*||.||_1: ``prox(v)_i = sgn(v_i) max(|v_i| - t, 0)``, sgn(v) = v / |v| (0 at 0).

    Complex v: |v_i| is the modulus, so the modulus shrinks by t and the phase stays,
    ``v_i max(0, 1 - t / |v_i|)``, computed as v times a real factor that is 0 for |v_i| ≤ t, so
    gradients stay finite at v = 0 (and inductor can differentiate it: a complex sgn times a real
    tensor hits a stride error in torch.compile's backward). Real v: ``sign(v) relu(|v| - t)``.
    """
    if v.is_complex():
        modulus = v.abs()
        return v * (torch.relu(modulus - t) / torch.clamp_min(modulus, torch.finfo(modulus.dtype).tiny))
    return torch.sign(v) * torch.relu(v.abs() - t)


def soft_threshold_keep(v: Tensor, t: Tensor | float, fraction: Tensor | float) -> Tensor:
    """Soft threshold with support selection (LISTA-CPSS, Chen et al. 2018; ALISTA, Liu et al. 2019).

    Per block of N entries, the count = ⌊p·N + ½⌋ entries of largest magnitude (p = ``fraction``;
    ties at the count-th magnitude all count) pass unchanged when |v_i| > t; every other entry is
    soft-thresholded: ``sgn(v_i) max(|v_i| - t, 0)``. p = 0 is the plain soft threshold.
    Complex v: magnitudes are moduli (the kept entries pass whole, the others keep their phase).
    Gradients: 1 on the kept entries, the soft threshold's elsewhere; which entries are kept, and
    so p, get none (the selection is piecewise constant).
    """
    magnitude = v.abs()
    flat = magnitude.detach().flatten(-2)
    entries = flat.shape[-1]
    if torch.compiler.is_compiling():  # torch.compile / export: a count known only at run time, so sort
        count = torch.as_tensor(fraction, dtype=magnitude.dtype, device=v.device).mul(entries).add(0.5).floor()
        count = count.clamp(0, entries).long()
        ranked = flat.sort(dim=-1, descending=True).values
        index = (count - 1).clamp_min(0).reshape((1,) * ranked.dim()).expand(*ranked.shape[:-1], 1)
        kth = ranked.gather(-1, index)
        keep = (magnitude >= kth.unsqueeze(-1)) & (magnitude > t) & (count > 0)
        return torch.where(keep, v, soft_threshold(v, t))
    count = min(max(int(float(fraction) * entries + 0.5), 0), entries)
    if count == 0:
        return soft_threshold(v, t)
    kth = flat.topk(count, dim=-1).values[..., -1:]  # the count-th largest magnitude of each block (4x a sort)
    keep = (magnitude >= kth.unsqueeze(-1)) & (magnitude > t)
    return torch.where(keep, v, soft_threshold(v, t))


def soft_threshold_nonneg(v: Tensor, t: Tensor | float) -> Tensor:
    """Prox of t*||.||_1 + indicator(u >= 0): ``prox(v)_i = max(v_i - t, 0)``."""
    return torch.relu(v - t)


def block_soft_threshold(v: Tensor, t: Tensor | float) -> Tensor:
    """Prox of t*||.||_2 over the whole block: ``prox(v) = v max(0, 1 - t / ||v||)``; complex v:
    ||v||^2 = sum |v_i|^2 (the block's direction, phases included, is kept)."""
    norm = torch.linalg.vector_norm(v, dim=(-2, -1), keepdim=True)
    # (||v|| - t)_+ / ||v|| rather than 1 - t/||v||: stays finite (and so do its
    # gradients) at v = 0, where the clamped denominator meets a zero numerator.
    scale = torch.relu(norm - t) / torch.clamp_min(norm, torch.finfo(v.dtype).tiny)
    return v * scale


def block_soft_threshold_nonneg(v: Tensor, t: Tensor | float) -> Tensor:
    """Prox of t*||.||_2 + indicator(u >= 0): ``prox(v) = block_soft_threshold(max(v, 0), t)``.

    With u that value, 0 is in t d||u|| + N(u) + u - v (N: the normal cone of u >= 0, vectors
    <= 0 that vanish where u > 0): if ||v+|| > t, u - v + t u / ||u|| = -min(v, 0) and min(v, 0)
    is in N(u); if ||v+|| <= t, u = 0 and v = t (v+ / t) + min(v, 0) with ||v+ / t|| <= 1.
    """
    return block_soft_threshold(torch.relu(v), t)


def prox_norminf(v: Tensor, t: Tensor | float) -> Tensor:
    """Prox of t*||.||_inf by Moreau: ``prox(v) = v - proj_{||u||_1 <= t}(v)``."""
    return v - proj_ball1(v, t)


def svt(v: Tensor, t: Tensor | float) -> Tensor:
    """Prox of t*||.||_* (nuclear): ``prox(v) = U diag(max(s - t, 0)) V^H`` (v = U diag(s) V^H, the
    complex SVD for complex v; V^T for real v).

    Gradients follow torch's SVD backward, which is undefined (NaN) when singular
    values repeat, e.g. at v = 0; the forward value is always finite.
    """
    u, s, vh = torch.linalg.svd(v, full_matrices=False)
    # s[..., None] is (..., k, 1), so t of shape () or (..., 1, 1) broadcasts and the
    # thresholded values scale the rows of vh.
    return u @ (torch.relu(s.unsqueeze(-1) - t) * vh)


def hard_threshold(v: Tensor, t: Tensor | float) -> Tensor:
    """Prox of t*||.||_0: ``prox(v)_i = v_i if |v_i| > sqrt(2 t) else 0`` (complex v: |v_i| the modulus)."""
    return torch.where(v.abs() > (2 * t) ** 0.5, v, 0.0)


def proj_box(v: Tensor, lo: Tensor | float, hi: Tensor | float) -> Tensor:
    """Projection onto {lo <= u <= hi}: ``proj(v)_i = min(max(v_i, lo), hi)``.

    Complex v: the set {lo <= Re u <= hi, lo <= Im u <= hi} (a square in the plane, as QAM
    constellations fill), so real and imaginary parts are clipped separately.
    """
    if v.is_complex():
        return torch.complex(proj_box(v.real, lo, hi), proj_box(v.imag, lo, hi))
    lo = torch.as_tensor(lo, dtype=v.dtype, device=v.device)
    hi = torch.as_tensor(hi, dtype=v.dtype, device=v.device)
    return torch.minimum(torch.maximum(v, lo), hi)


def proj_nonneg(v: Tensor) -> Tensor:
    """Projection onto {u >= 0}: ``proj(v)_i = max(v_i, 0)``."""
    return torch.relu(v)


def proj_ball2(v: Tensor, r: Tensor | float) -> Tensor:
    """Projection onto {||u||_2 <= r}: ``proj(v) = v r / max(||v||, r)``; complex v: ||v||^2 = sum |v_i|^2."""
    norm = torch.linalg.vector_norm(v, dim=(-2, -1), keepdim=True)
    # The tiny clamp only matters for r = 0 at v = 0, where it gives 0 / tiny = 0.
    denom = torch.clamp_min(torch.clamp_min(norm, r), torch.finfo(v.dtype).tiny)
    return v * (r / denom)


def proj_ball1(v: Tensor, r: Tensor | float) -> Tensor:
    """Projection onto {||u||_1 <= r} (Duchi et al. 2008).

    ``proj(v)_i = sign(v_i) max(|v_i| - theta, 0)`` with theta = 0 if ||v||_1 <= r,
    else theta = (sum_{j<=rho} m_j - r) / rho, where m = |v| sorted descending and
    rho = max{j : m_j > (sum_{i<=j} m_i - r) / j}.
    """
    # Blocks become (..., n, 1) columns so r of shape () or (..., 1, 1) broadcasts.
    x = v.flatten(-2).unsqueeze(-1)
    a = x.abs()
    m = torch.sort(a, dim=-2, descending=True).values
    excess = torch.cumsum(m, dim=-2) - r
    j = torch.arange(1, x.shape[-2] + 1, device=v.device).unsqueeze(-1)
    # max(., 1): with r = 0 no j qualifies, and rho = 1 gives theta = max|v|, i.e. u = 0.
    rho = torch.clamp_min((j * (m * j > excess)).amax(dim=-2, keepdim=True), 1)
    # theta < 0 exactly when ||v||_1 < r, where v is already inside the ball.
    theta = torch.relu(excess.gather(-2, rho - 1) / rho)
    return (torch.sign(x) * torch.relu(a - theta)).reshape(v.shape)


def proj_simplex(v: Tensor, s: Tensor | float) -> Tensor:
    """Projection onto {u >= 0, sum(u) = s} (Duchi et al. 2008), s >= 0.

    ``proj(v)_i = max(v_i - theta, 0)`` with theta = (sum_{j<=rho} m_j - s) / rho,
    where m = v sorted descending and rho = max{j : m_j > (sum_{i<=j} m_i - s) / j}.
    """
    # Blocks become (..., n, 1) columns so s of shape () or (..., 1, 1) broadcasts.
    x = v.flatten(-2).unsqueeze(-1)
    m = torch.sort(x, dim=-2, descending=True).values
    excess = torch.cumsum(m, dim=-2) - s
    j = torch.arange(1, x.shape[-2] + 1, device=v.device).unsqueeze(-1)
    # max(., 1): with s = 0 no j qualifies, and rho = 1 gives theta = max(v), i.e. u = 0.
    rho = torch.clamp_min((j * (m * j > excess)).amax(dim=-2, keepdim=True), 1)
    theta = excess.gather(-2, rho - 1) / rho
    return torch.relu(x - theta).reshape(v.shape)


def column_norms(v: Tensor) -> Tensor:
    """The 2-norm of each column of each block, ``(..., 1, c)`` (sum |v_i|^2: complex v too), never
    below sqrt(tiny): its gradient is finite (zero) at a zero column, where a plain norm's backward
    divides by 0."""
    magnitude = v.abs()  # |v| |v| is v v to the bit for real v
    squares = torch.sum(magnitude * magnitude, dim=-2, keepdim=True)
    return torch.sqrt(torch.clamp_min(squares, torch.finfo(v.dtype).tiny))


def prox_norm21(v: Tensor, t: Tensor | float) -> Tensor:
    """Prox of t*||.||_{2,1} = t sum_j ||v[:, j]||_2 (l2 down each column, l1 across the columns;
    group lasso with the columns as groups, a vector being one group): the group soft threshold
    ``prox(v)[:, j] = v[:, j] max(0, 1 - t / ||v[:, j]||)``.

    Complex v: the same with ||.|| over moduli (each group keeps its direction, phases included).

    For isotropic TV the groups are the pixels of a (2, h, w) gradient field: pass it as
    ``p.flatten(-2)`` (2 rows, one column per pixel) and reshape the result back.
    """
    norm = column_norms(v)
    return v * (torch.relu(norm - t) / norm)


def proj_ball21(v: Tensor, r: Tensor | float) -> Tensor:
    """Projection onto {||u[:, j]||_2 <= r for every column j} (the dual ball of ||.||_{2,inf} for
    TV): ``proj(v)[:, j] = v[:, j] r / max(||v[:, j]||, r)``; the same flattening as ``prox_norm21``
    (complex v: ||.|| over moduli).
    """
    return v * (r / torch.clamp_min(column_norms(v), r))


def qam_bound(order: Tensor | float) -> Tensor | float:
    """The largest level (sqrt(M) - 1) a of square M-QAM with unit average symbol energy: the levels
    of each of the real and imaginary parts are (2 i - 1 - sqrt(M)) a, i = 1 .. sqrt(M), with
    a = sqrt(3 / (2 (M - 1))) (mean energy 2 a^2 (M - 1) / 3 = 1)."""
    return (order**0.5 - 1) * (3 / (2 * (order - 1))) ** 0.5


def proj_qam(v: Tensor, order: Tensor | float) -> Tensor:
    """Projection onto the convex hull of the square M-QAM constellation (M = ``order``: 4, 16, 64 ...)
    with unit average symbol energy: the box {|Re u| <= b, |Im u| <= b}, b = ``qam_bound(M)``, so
    real and imaginary parts are clipped to [-b, b] separately (M = 4: b = 1/sqrt(2), QPSK's hull).
    A real v is clipped to [-b, b], the hull of the sqrt(M)-PAM levels of each part.
    """
    bound = qam_bound(order)
    return proj_box(v, -bound, bound)
