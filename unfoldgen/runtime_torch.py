"""Small torch helpers that generated modules carry with them (copied verbatim).

They validate what a user passes in and compute the exact Lipschitz constant of an affine
gradient; the generated file must not import unfoldgen.
"""

import torch
from torch import Tensor


def as_data(name: str, value: object, axes: tuple, sizes: dict, dtype: torch.dtype | None) -> Tensor:
    """A data tensor (no batch) in the internal layout; vectors become columns."""
    tensor = torch.as_tensor(value)
    if tensor.is_complex():
        raise ValueError(
            f"data {name}: expected real values, got {tensor.dtype} (complex numbers are not supported yet)"
        )
    if not (tensor.is_floating_point() or dtype is not None):
        tensor = tensor.to(torch.get_default_dtype())
    if dtype is not None:
        tensor = tensor.to(dtype)
    expected = "(" + ", ".join(str(axis) for axis in axes) + ")"
    if tensor.dim() != len(axes):
        raise ValueError(f"data {name}: expected shape {expected}, got {tuple(tensor.shape)}")
    for axis, size in zip(axes, tensor.shape, strict=False):
        bound = sizes.setdefault(axis, size) if isinstance(axis, str) else axis
        if size != bound:
            raise ValueError(f"data {name}: expected shape {expected} with {axis} = {bound}, got {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"data {name}: expected finite values, got {first_not_finite(tensor)}")
    return tensor.reshape(tensor.shape[0], -1) if tensor.dim() >= 1 else tensor


def first_not_finite(tensor: Tensor) -> float:
    """The first NaN or infinite entry, for an error message."""
    return float(tensor.detach()[~torch.isfinite(tensor.detach())].flatten()[0])


def check_input(name: str, value: object, axes: tuple, sizes: dict, dtype: torch.dtype | None) -> Tensor:
    """A batched input ``(B, *axes)`` checked against the bound sizes, as ``(B, r, c)``."""
    if not isinstance(value, Tensor):
        raise ValueError(f"input {name}: expected a torch.Tensor, got {type(value).__name__}")
    expected = "(B, " + ", ".join(str(axis) for axis in axes) + ")"
    if value.dim() != len(axes) + 1:
        raise ValueError(f"input {name}: expected shape {expected}, got {tuple(value.shape)}")
    # the batch size and dtype are kept under keys no dim can take (dims start with a letter)
    batch = sizes.setdefault("_batch", value.shape[0])
    if value.shape[0] != batch:
        raise ValueError(f"input {name}: expected batch size {batch} like the other inputs, got {value.shape[0]}")
    for axis, size in zip(axes, value.shape[1:], strict=False):
        bound = bound_size(axis, size, sizes) if isinstance(axis, str) else axis
        if size != bound:
            raise ValueError(f"input {name}: expected shape {expected} with {axis} = {bound}, got {tuple(value.shape)}")
    if not value.is_floating_point():
        raise ValueError(f"input {name}: expected a floating-point tensor, got {value.dtype}")
    expected_dtype = sizes.setdefault("_dtype", dtype or value.dtype)
    if value.dtype != expected_dtype:
        raise ValueError(f"input {name}: expected dtype {expected_dtype}, got {value.dtype}")
    return value.reshape(*value.shape, *(1,) * (2 - len(axes)))


def bound_size(axis: str, size: int, sizes: dict) -> int:
    """The size an axis must have: a dim bound before, or bound now by this axis. A derived axis
    (``h/4``, ``4*h``) binds and reads its base dim ``h``."""
    scaled, _, denominator_text = axis.partition("/")
    numerator_text, _, name = scaled.rpartition("*")
    numerator, denominator = int(numerator_text or 1), int(denominator_text or 1)
    if (size * denominator) % numerator:
        return -1  # no whole base size gives this axis: the caller reports the mismatch
    base = sizes.setdefault(name, size * denominator // numerator)
    return base * numerator // denominator if (base * numerator) % denominator == 0 else -1


def unit_basis(rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The rows*cols unit matrices of shape (rows, cols), stacked as ``(N, 1, rows, cols)``."""
    count = rows * cols
    return torch.eye(count, dtype=dtype, device=device).reshape(count, 1, rows, cols)


def unit_basis_blocks(shapes: tuple, dtype: torch.dtype, device: torch.device) -> list[Tensor]:
    """The unit basis of several variables stacked into one vector, as one ``(N, 1, rows, cols)``
    tensor per variable (N the total entry count): element j is 1 in exactly one variable."""
    counts = [rows * cols for rows, cols in shapes]
    basis = torch.eye(sum(counts), dtype=dtype, device=device)
    blocks = torch.split(basis, counts, dim=1)
    return [block.reshape(-1, 1, rows, cols) for block, (rows, cols) in zip(blocks, shapes, strict=True)]


def stacked_columns(blocks: tuple[Tensor, ...]) -> Tensor:
    """A joint Hessian's columns from its block rows ``(N, *batch, r_i, c_i)`` (broadcast to one
    batch), each column the stacked entries: ``(N, *batch, Σ r_i c_i, 1)``."""
    flat = [block.flatten(-2) for block in blocks]
    batch = torch.broadcast_shapes(*(f.shape[:-1] for f in flat))
    return torch.cat([f.expand(*batch, f.shape[-1]) for f in flat], dim=-1).unsqueeze(-1)


def largest_hessian_eigenvalue(columns: Tensor) -> Tensor:
    """max |λ| of a symmetric Hessian given its columns ``H e_j`` as ``(N, *batch, r, c)``; ``(*batch, 1, 1)``."""
    hessian = columns.flatten(-2).movedim(0, -1)
    hessian = (hessian + hessian.mT) / 2
    if hessian.dtype in (torch.float16, torch.bfloat16):  # eigvalsh has no half-precision kernels
        return largest_hessian_eigenvalue(columns.float()).to(columns.dtype)
    return torch.linalg.eigvalsh(hessian).abs().amax(dim=-1, keepdim=True).unsqueeze(-1)


def size_of(dim: str, sizes: dict) -> int:
    """A dim the model needs when it is built but no data tensor fixes: the caller passes it."""
    if dim not in sizes:
        raise ValueError(f"dim {dim} is not fixed by any data tensor; pass {dim}=... to the constructor")
    return sizes[dim]


def huber_elementwise(v: Tensor, delta: Tensor | float) -> Tensor:
    """h_δ(v) = v²/2 where |v| ≤ δ, δ(|v| − δ/2) elsewhere (elementwise)."""
    magnitude = v.abs()
    return torch.where(magnitude <= delta, 0.5 * v**2, delta * (magnitude - 0.5 * delta))


def norm21(v: Tensor, sample_axes: int) -> Tensor:
    """‖v‖₂,₁: the ℓ2 norm over a sample's first axis, summed over the rest (isotropic TV of a
    gradient stack (2, h, w); the group lasso with one group per column of a matrix); ``(..., 1, 1)``."""
    norms = torch.linalg.vector_norm(v, dim=-sample_axes)
    return norms.sum(dim=tuple(range(-sample_axes + 1, 0))).reshape(*norms.shape[: norms.dim() - sample_axes + 1], 1, 1)


def flat_stack(operator, v: Tensor, *params: Tensor | float) -> Tensor:
    """``operator`` (a prox or projection of matrices) on a stack ``(B, c, h, w)`` seen as
    ``(B, c, h·w)``: groups over the first axis (norm21, ball21) are the pixels."""
    return operator(v.flatten(-2), *params).view_as(v)


def shared_matmul(matrix: Tensor, batch: Tensor) -> Tensor:
    """``matrix @ batch`` for a matrix shared by the batch and a batch ``(..., n, c)``, as one GEMM
    over all columns: a broadcast ``@`` runs one small product per sample, and so does its gradient
    (measured 7-12x slower for LISTA-CP at batch 64)."""
    if matrix.dim() != 2:
        return matrix @ batch
    if batch.shape[-1] == 1:  # a batch of vectors: the samples are the rows of one product
        return torch.nn.functional.linear(batch.squeeze(-1), matrix).unsqueeze(-1)
    rows = batch.mT.reshape(-1, batch.shape[-2]) @ matrix.mT
    return rows.reshape(*batch.shape[:-2], batch.shape[-1], matrix.shape[-2]).mT


def checkpoint_segment(setting: bool | int, layers: int) -> int:
    """Layers per recomputed segment for ``checkpoint_layers``: 0 (off), ``True`` (√K, the segment
    length that minimises stored states plus one segment's activations), or a positive count."""
    if isinstance(setting, bool):
        return max(1, round(layers**0.5)) if setting else 0
    if not isinstance(setting, int) or setting < 0:
        raise ValueError(f"checkpoint_layers must be True, False or a number of layers >= 1, got {setting!r}")
    return min(setting, layers)


def as_value(
    name: str, value: object, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, validate: bool
) -> Tensor:
    """A param, hyperparameter or weight: a tensor of ``shape`` (any layout with as many entries), or
    one number for every entry; with ``validate``, finite."""
    if torch.as_tensor(value).is_complex():
        raise ValueError(
            f"{name}: expected real values, got {torch.as_tensor(value).dtype} (complex numbers are not supported yet)"
        )
    tensor = torch.as_tensor(value, dtype=dtype, device=device)  # a Python float straight to dtype: no float32 rounding
    if tensor.numel() == 1:
        tensor = tensor.reshape(()).expand(shape).clone()
    elif tensor.numel() != torch.Size(shape).numel():
        raise ValueError(f"{name}: expected shape {tuple(shape)} or one number, got {tuple(tensor.shape)}")
    if validate and not bool(torch.isfinite(tensor).all()):
        raise ValueError(
            f"{name} = {first_not_finite(tensor)}: expected a finite value (a step or weight computed from the data "
            f"is not finite when they leave the smooth part without curvature, e.g. a zero operator); "
            f"pass {name}=... or validate=False"
        )
    return tensor.reshape(shape)


def require_sign(what: str, value: Tensor, positive: bool) -> None:
    """Refuse a gradient step that is not positive, or a threshold (a non-smooth term's coefficient) below zero."""
    low = float(value.detach().min())
    if low < 0 or (positive and low == 0):
        expected = "> 0" if positive else ">= 0"
        raise ValueError(
            f"{what} = {low:g}: expected {expected} for the classical algorithm (validate=False accepts it)"
        )


def sample_change(new: list[Tensor], old: list[Tensor]) -> Tensor:
    """Per sample, over all the tensors together: ‖new − old‖ / max(‖old‖, tiny), shape (B,)."""
    difference = torch.cat([(fresh - last).flatten(1) for fresh, last in zip(new, old, strict=True)], dim=1)
    size = torch.cat([last.flatten(1) for last in old], dim=1)
    tiny = torch.finfo(size.dtype).tiny
    return torch.linalg.vector_norm(difference, dim=1) / torch.linalg.vector_norm(size, dim=1).clamp_min(tiny)


def fixed_point_iteration(step, start: list[Tensor], tolerance: float, iterations: int) -> tuple[list, int, Tensor]:
    """``values ← step(values)`` (lists of batched tensors) until every sample's relative change
    (sample_change) is at most ``tolerance``, or ``iterations`` times. A sample that has converged
    keeps its values while the others go on, so its result does not depend on the rest of the
    batch. Returns the values, the iterations run and each sample's last relative change."""
    values = start
    active = torch.ones(values[0].shape[0], dtype=torch.bool, device=values[0].device)
    change = torch.full(active.shape, float("inf"), dtype=values[0].dtype, device=values[0].device)
    count = 0
    while count < iterations and bool(active.any()):
        new = step(values)
        now = sample_change(new, values)
        if not bool(active.all()):  # converged samples keep their values (`new` is rebound, not kept)
            new = [
                torch.where(active.view(-1, *(1,) * (last.dim() - 1)), fresh, last)
                for fresh, last in zip(new, values, strict=True)
            ]
            now = torch.where(active, now, change)
        values, change = new, now
        active = active & ~(now <= tolerance)
        count += 1
    return values, count, change


class ImplicitGradient(torch.autograd.Function):
    """The identity on the outputs of one layer applied at the fixed point z*, whose backward
    passes on, instead of the gradient v they receive, the solution g of g = v + Jᵀ g (J: the
    layer's Jacobian in the carried values at z*): the gradient through infinitely many layers."""

    @staticmethod
    def forward(ctx, solve_adjoint, *values: Tensor):
        ctx.solve_adjoint = solve_adjoint
        return tuple(value.view_as(value) for value in values)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        return (None, *ctx.solve_adjoint(list(grads)))


def implicit_layer(
    step, fixed_point: dict[str, Tensor], tolerance: float, iterations: int, record
) -> dict[str, Tensor]:
    """``step`` applied once at ``fixed_point`` (detached) with gradients, its backward by implicit
    differentiation: g = v + Jᵀ g solved by fixed-point iteration of vector-Jacobian products on
    this one application (retained), to the same tolerance and cap; ``record(iterations, change)``
    hears how that went. Memory: one layer's graph, whatever the number of forward iterations."""
    names = list(fixed_point)
    points = [fixed_point[name].detach().requires_grad_() for name in names]
    applied = step(dict(zip(names, points, strict=True)))
    outputs = [applied[name] for name in names]
    linked = [index for index, output in enumerate(outputs) if output.requires_grad]

    def transposed_jacobian(grads: list[Tensor]) -> list[Tensor]:
        products = torch.autograd.grad(
            [outputs[index] for index in linked],
            points,
            [grads[index] for index in linked],
            retain_graph=True,
            allow_unused=True,
        )
        return [
            torch.zeros_like(point) if product is None else product
            for product, point in zip(products, points, strict=True)
        ]

    def solve_adjoint(grads: list[Tensor]) -> list[Tensor]:
        def adjoint_step(current: list[Tensor]) -> list[Tensor]:
            return [grad + product for grad, product in zip(grads, transposed_jacobian(current), strict=True)]

        solution, count, change = fixed_point_iteration(adjoint_step, grads, tolerance, iterations)
        record(count, change)
        return solution

    return dict(zip(names, ImplicitGradient.apply(solve_adjoint, *outputs), strict=True))
