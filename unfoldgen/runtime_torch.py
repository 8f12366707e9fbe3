"""Small torch helpers that generated modules carry with them (copied verbatim).

They validate what a user passes in and compute the exact Lipschitz constant of an affine
gradient; the generated file must not import unfoldgen.
"""

import torch
from torch import Tensor, nn


def complex_of(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype of a real one's precision: float32 → complex64, float64 → complex128."""
    return {torch.float64: torch.complex128, torch.float32: torch.complex64, torch.float16: torch.complex32}.get(
        dtype, dtype
    )


def as_data(
    name: str, value: object, axes: tuple, sizes: dict, dtype: torch.dtype | None, complex_values: bool = False
) -> Tensor:
    """A data tensor (no batch) in the internal layout; vectors become columns. Complex data
    (``complex_values``) takes real or complex values and is held complex."""
    tensor = torch.as_tensor(value)
    if tensor.is_complex() and not complex_values:
        raise ValueError(f"data {name}: expected real values, got {tensor.dtype} (declare it complex in the spec)")
    if not (tensor.is_floating_point() or tensor.is_complex() or dtype is not None):
        tensor = tensor.to(torch.get_default_dtype())
    if dtype is not None:
        tensor = tensor.to(complex_of(dtype) if complex_values else dtype)
    elif complex_values:
        tensor = tensor.to(complex_of(tensor.dtype))
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


def check_input(
    name: str, value: object, axes: tuple, sizes: dict, dtype: torch.dtype | None, complex_values: bool = False
) -> Tensor:
    """A batched input ``(B, *axes)`` checked against the bound sizes, as ``(B, r, c)``; ``dtype`` is
    the model's real dtype (a complex input has its complex counterpart)."""
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
    if value.is_complex() and not complex_values:
        raise ValueError(f"input {name}: expected real values, got {value.dtype} (declare it complex in the spec)")
    if not (value.is_floating_point() or value.is_complex()):
        raise ValueError(f"input {name}: expected a floating-point tensor, got {value.dtype}")
    expected_dtype = sizes.setdefault("_dtype", dtype or value.real.dtype)
    if value.real.dtype != expected_dtype:
        wanted = complex_of(expected_dtype) if complex_values else expected_dtype
        raise ValueError(f"input {name}: expected dtype {wanted}, got {value.dtype}")
    if complex_values:
        value = value.to(complex_of(expected_dtype))  # real values are complex ones with no imaginary part
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
    """The rows*cols unit matrices of shape (rows, cols), stacked as ``(N, 1, rows, cols)``; for a
    complex dtype the real view's basis, ``(2N, 1, rows, cols)``: the N real units, then i times each."""
    count = rows * cols
    if not dtype.is_complex:
        return torch.eye(count, dtype=dtype, device=device).reshape(count, 1, rows, cols)
    units = torch.eye(count, dtype=torch.empty((), dtype=dtype).real.dtype, device=device)
    zeros = torch.zeros_like(units)
    basis = torch.cat([torch.complex(units, zeros), torch.complex(zeros, units)])
    return basis.reshape(-1, 1, rows, cols)


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
    """max |λ| of a symmetric Hessian given its columns ``H e_j`` as ``(N, *batch, r, c)``; ``(*batch, 1, 1)``.

    Complex columns (a complex variable, ``unit_basis`` of a complex dtype) are read in the real
    view: each column's real parts then imaginary parts, so the 2N × 2N matrix is the Hessian of
    f(Re z, Im z); for a Hermitian H (f = ½‖Az − y‖²: H = AᴴA) its eigenvalues are H's, twice each.
    """
    if columns.is_complex():
        columns = torch.cat([columns.real, columns.imag], dim=-2)
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


def as_complex(value: Tensor) -> Tensor:
    """A real tensor as complex (no imaginary part), for ``@`` with a complex one: torch multiplies
    matrices of one dtype only."""
    return value if value.is_complex() else torch.complex(value, torch.zeros_like(value))


def mixed_matmul(left: Tensor, right: Tensor) -> Tensor:
    """``left @ right`` where one side is real and the other complex, as real products: the real
    side is never copied to complex, and the product costs two real multiplications, not the four
    of a complex one. A complex right side's real and imaginary parts enter as the columns of one
    real matrix (``view_as_real``, no copy), through ``shared_matmul`` (one GEMM for a batch)."""
    if right.is_complex():
        # (..., n, 2c): re, im of each column side by side (a lazy conjugate, e.g. of .mH, resolved first)
        parts = torch.view_as_real(right.resolve_conj()).flatten(-2)
        product = shared_matmul(left, parts)
        return torch.view_as_complex(product.unflatten(-1, (-1, 2)).contiguous())
    return torch.complex(left.real @ right, left.imag @ right)


def complex_net(net, layouts: tuple[str, ...], *args: Tensor) -> Tensor:
    """A real net on complex values. Each complex argument enters as its real and imaginary parts:
    a vector (B, n, 1) as (B, 2n, 1) (real parts, then imaginary parts), an image (B, h, w) as two
    channels (B, 2, h, w), a channel stack (B, c, h, w) as (B, 2c, h, w) (``layouts``: "vector",
    "image" or "channels" per argument); the net's output, shaped like the first argument's parts,
    is read back the same way as the real and imaginary parts of the result."""
    axis = {"vector": -2, "image": -3, "channels": -3}

    def parts(value: Tensor, layout: str) -> Tensor:
        if not value.is_complex():
            return value
        if layout == "image":
            return torch.stack([value.real, value.imag], dim=-3)
        return torch.cat([value.real, value.imag], dim=axis[layout])

    out = net(*(parts(value, layout) for value, layout in zip(args, layouts, strict=True)))
    if layouts[0] == "image":
        return torch.complex(out[..., 0, :, :], out[..., 1, :, :])
    real, imag = out.chunk(2, dim=axis[layouts[0]])
    return torch.complex(real, imag)


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
    if torch.as_tensor(value).is_complex() and not dtype.is_complex:
        raise ValueError(
            f"{name}: expected real values, got {torch.as_tensor(value).dtype} (declare it complex in the spec)"
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


# ---------------------------------------------------------------- bounded learned values
# One class per bound form (unfoldgen.bounds.BOUND_FORMS): value maps an unconstrained raw tensor
# into the bounds, start is its inverse (raw₀ with value(raw₀) = v₀, so an untrained network is
# classical). A strict side (an excluded bound) is a smooth map; a closed side clamps (the raw
# value is the value there).


def softplus_inverse(value: Tensor) -> Tensor:
    """raw with softplus(raw) = value > 0: value + log(−expm1(−value)), stable for tiny and large values
    (above 20, torch's softplus is the identity, so the inverse is too)."""
    return torch.where(value > 20, value, value + torch.log(-torch.expm1(-value.clamp(max=20))))


class OpenInterval:
    """(LO, HI): value = LO + (HI − LO)·(ε + (1 − 2ε)·sigmoid(4·raw/(HI − LO))), ε = 2⁻¹¹;
    raw₀ = (HI − LO)/4·logit(((v₀ − LO)/(HI − LO) − ε)/(1 − 2ε)).

    The slope is (1 − 2ε) ≈ 1 at the middle of the interval, so an optimiser's step on the raw value
    is a step of about the same size on the value (a plain sigmoid would scale every step by
    (HI − LO)/4: for a step bound 2/L, a learning rate ~10× smaller than the unbounded twin's). The
    margin ε(HI − LO) keeps the value strictly inside even where the sigmoid rounds to 0 or 1 (float32:
    |4·raw/(HI − LO)| ≳ 17); a start within it of a bound is refused.
    """

    MARGIN = 2.0**-11

    @staticmethod
    def value(raw: Tensor, low: Tensor, high: Tensor) -> Tensor:
        margin = OpenInterval.MARGIN
        return low + (high - low) * (margin + (1 - 2 * margin) * torch.sigmoid(4 * raw / (high - low)))

    @staticmethod
    def start(value: Tensor, low: Tensor, high: Tensor) -> Tensor:
        margin = OpenInterval.MARGIN
        fraction = ((value - low) / (high - low) - margin) / (1 - 2 * margin)
        return (high - low) / 4 * (torch.log(fraction) - torch.log1p(-fraction))


class ClosedInterval:
    """[LO, HI]: value = clamp(raw, LO, HI); raw₀ = v₀ (a start on either bound is kept exactly)."""

    @staticmethod
    def value(raw: Tensor, low: Tensor, high: Tensor) -> Tensor:
        return torch.minimum(torch.maximum(raw, low), high)

    @staticmethod
    def start(value: Tensor, low: Tensor, high: Tensor) -> Tensor:
        return value.clone()


class LowClosedInterval:
    """[LO, HI): value = max(LO, HI − softplus(raw)); raw₀ = softplus⁻¹(HI − v₀)."""

    @staticmethod
    def value(raw: Tensor, low: Tensor, high: Tensor) -> Tensor:
        return torch.maximum(high - torch.nn.functional.softplus(raw), low)

    @staticmethod
    def start(value: Tensor, low: Tensor, high: Tensor) -> Tensor:
        return softplus_inverse(high - value)


class HighClosedInterval:
    """(LO, HI]: value = min(HI, LO + softplus(raw)); raw₀ = softplus⁻¹(v₀ − LO)."""

    @staticmethod
    def value(raw: Tensor, low: Tensor, high: Tensor) -> Tensor:
        return torch.minimum(low + torch.nn.functional.softplus(raw), high)

    @staticmethod
    def start(value: Tensor, low: Tensor, high: Tensor) -> Tensor:
        return softplus_inverse(value - low)


class Above:
    """> LO: value = LO + softplus(raw); raw₀ = softplus⁻¹(v₀ − LO)."""

    @staticmethod
    def value(raw: Tensor, low: Tensor, high: None) -> Tensor:
        return low + torch.nn.functional.softplus(raw)

    @staticmethod
    def start(value: Tensor, low: Tensor, high: None) -> Tensor:
        return softplus_inverse(value - low)


class AtLeast:
    """>= LO: value = max(raw, LO); raw₀ = v₀ (a start on LO is kept exactly)."""

    @staticmethod
    def value(raw: Tensor, low: Tensor, high: None) -> Tensor:
        return torch.maximum(raw, low)

    @staticmethod
    def start(value: Tensor, low: Tensor, high: None) -> Tensor:
        return value.clone()


class Below:
    """< HI: value = HI − softplus(raw); raw₀ = softplus⁻¹(HI − v₀)."""

    @staticmethod
    def value(raw: Tensor, low: None, high: Tensor) -> Tensor:
        return high - torch.nn.functional.softplus(raw)

    @staticmethod
    def start(value: Tensor, low: None, high: Tensor) -> Tensor:
        return softplus_inverse(high - value)


class AtMost:
    """<= HI: value = min(raw, HI); raw₀ = v₀ (a start on HI is kept exactly)."""

    @staticmethod
    def value(raw: Tensor, low: None, high: Tensor) -> Tensor:
        return torch.minimum(raw, high)

    @staticmethod
    def start(value: Tensor, low: None, high: Tensor) -> Tensor:
        return value.clone()


def outside_bounds(
    value: Tensor, low: Tensor | None, high: Tensor | None, low_closed: bool, high_closed: bool
) -> Tensor:
    """Where ``value`` lies outside the bounds (elementwise)."""
    outside = torch.zeros_like(value, dtype=torch.bool)
    if low is not None:
        outside |= value < low if low_closed else value <= low
    if high is not None:
        outside |= value > high if high_closed else value >= high
    return outside | ~torch.isfinite(value)


class Bounded(nn.Module):
    """A learned value kept inside its bounds by the map ``form`` (one of the classes above).

    The state dict holds the unconstrained raw tensors (``NAME.raw.0`` … per layer, ``NAME.raw``
    shared) and the bounds (``NAME.low``, ``NAME.high``); ``self[k]`` (per layer) or ``value()``
    (shared) is the constrained value, and ``values()`` all of them (per layer stacked as (K, ...)).
    It starts at exactly ``start``; a start outside the bounds (or on an excluded bound) cannot be
    represented and is refused, whatever ``validate`` says.
    """

    def __init__(
        self,
        name: str,
        form: type,
        start: Tensor,
        low: Tensor | None,
        high: Tensor | None,
        closed: tuple[bool, bool],
        layers: int | None,
        text: str,
        starts_per_layer: bool = False,
    ) -> None:
        super().__init__()
        self.form = form
        self.closed = closed
        self.text = text
        outside = outside_bounds(start, low, high, *closed)
        if bool(outside.any()):
            first = float(start.detach()[outside].flatten()[0])
            sides = [
                f"{side} = {float(bound.min() if side == 'low' else bound.max()):g}"
                for side, bound in (("low", low), ("high", high))
                if bound is not None
            ]
            raise ValueError(
                f"{name} = {first:g} is not inside its bound {text} ({', '.join(sides)}): the reparametrised "
                f"value cannot start there; pass {name}=... inside the bound or change the bound"
            )
        # starts_per_layer: start holds one value per layer (K, ...), computed from the layer index
        shape = start.shape[1:] if starts_per_layer else start.shape
        self.register_buffer("low", None if low is None else low.expand(shape).clone())
        self.register_buffer("high", None if high is None else high.expand(shape).clone())
        raw = form.start(start.detach(), self.low, self.high)
        if not bool(torch.isfinite(raw).all()):
            first = float(start.detach()[~torch.isfinite(raw)].flatten()[0])
            raise ValueError(
                f"{name} = {first:g} is too close to a side of its bound {text} to be represented (the map keeps a "
                f"margin inside excluded bounds); pass {name}=... further inside or widen the bound"
            )
        if layers is None:
            self.raw = nn.Parameter(raw)
        else:
            starts = list(raw) if starts_per_layer else [raw] * layers
            self.raw = nn.ParameterList([nn.Parameter(value.clone()) for value in starts])

    def __getitem__(self, k: int) -> Tensor:
        return self.form.value(self.raw[k], self.low, self.high)

    def __len__(self) -> int:
        return len(self.raw)

    def value(self) -> Tensor:
        return self.form.value(self.raw, self.low, self.high)

    def values(self) -> Tensor:
        """The constrained values: per layer stacked as (K, ...), or the shared value."""
        if isinstance(self.raw, nn.ParameterList):
            return torch.stack([self[k] for k in range(len(self.raw))])
        return self.value()


# ---------------------------------------------------------------- certify
# One function per condition kind (unfoldgen.lower.Certificate): (satisfied, measured, required).


def value_range(value: Tensor) -> tuple[float, float, str]:
    """A checked value's smallest and largest entry, and how the certificate shows them."""
    low, high = float(value.detach().min()), float(value.detach().max())
    return low, high, f"{low:.4g}" if low == high else f"{low:.4g} … {high:.4g}"


def step_size_condition(value: Tensor, lipschitz: float | None) -> tuple[bool, str, str]:
    """0 < s < 2/L for a gradient step s on an L-smooth part: a proximal gradient step with it does
    not increase the objective, F(x⁺) ≤ F(x) − (1/s − L/2)‖x⁺ − x‖² (the descent lemma)."""
    low, high, measured = value_range(value)
    limit = 2 / lipschitz
    return 0 < low and high < limit, measured, f"in (0, 2/L = {limit:.4g})"


def positive_step_condition(value: Tensor, lipschitz: float | None) -> tuple[bool, str, str]:
    """s > 0 for a step whose upper bound is not known symbolically (ALISTA's γ_k, a step on a
    smooth part whose Lipschitz constant depends on the inputs)."""
    low, _, measured = value_range(value)
    return 0 < low, measured, "> 0"


def nonnegative_scale_condition(value: Tensor, lipschitz: float | None) -> tuple[bool, str, str]:
    """t ≥ 0 for a prox scale (a threshold): prox[t·g] of a convex g is a proximal map only for t ≥ 0."""
    low, _, measured = value_range(value)
    return 0 <= low, measured, ">= 0"


def coupled_weight_condition(value: Tensor, lipschitz: float | None) -> tuple[bool, str, str]:
    """M = WᵀA (ALISTA, Liu et al. 2019) or W A (LISTA-CP, Chen et al. 2018) normalised, diag(M) = 1
    (to 1e-3), with generalized mutual coherence μ̃ = max_{i≠j} |M_ij| < 1: the weight lies in the set
    the theorems need; supports of size s < (1 + 1/μ̃)/2 are within their scope."""
    matrix = value.detach().to(torch.complex128 if value.is_complex() else torch.float64)
    diagonal = torch.diagonal(matrix)
    off_diagonal = matrix - torch.diag_embed(diagonal)
    deviation = float((diagonal - 1).abs().max())
    coherence = float(off_diagonal.abs().max())
    measured = f"max|diag − 1| = {deviation:.2g}, μ̃ = {coherence:.4g}"
    if coherence < 1:
        measured += f" (supports < {(1 + 1 / coherence) / 2:.3g})" if coherence > 0 else ""
    return deviation <= 1e-3 and coherence < 1, measured, "diag = 1, μ̃ < 1"


CONDITIONS = {
    "step_size": step_size_condition,
    "positive_step": positive_step_condition,
    "nonnegative_scale": nonnegative_scale_condition,
    "coupled_weight": coupled_weight_condition,
}


def build_time_constants(constants: dict) -> dict:
    """``{var: L}`` for the Lipschitz constants computable without inputs; one that needs a dim only
    the inputs fix is left out (certify then checks that step for its sign only)."""
    known = {}
    for var, constant in constants.items():
        try:
            known[var] = float(constant({}).max())
        except ValueError:  # size_of: pass the dim to the constructor to have it checked
            continue
    return known


def certify_layers(
    checks: tuple,
    values: list,
    lipschitz: dict,
    unchecked: tuple,
    memoryless: bool,
    built: int,
    layers: int,
) -> dict:
    """The certificate of a model: ``checks`` (kind, what, variable) evaluated on ``values[k]`` (one
    list per built layer), and what the results imply, as a dict with a readable ``text``."""
    results = []
    for index, (kind, what, var) in enumerate(checks):
        if kind == "step_size" and var not in lipschitz:  # L unknown without inputs: the sign only
            kind = "positive_step"
        per_layer = []
        for k, layer_values in enumerate(values):
            satisfied, measured, required = CONDITIONS[kind](layer_values[index], lipschitz.get(var))
            per_layer.append({"layer": k, "satisfied": satisfied, "value": measured})
        results.append(
            {
                "condition": kind,
                "what": what,
                "required": required,
                "satisfied": all(entry["satisfied"] for entry in per_layer),
                "violated_layers": [entry["layer"] for entry in per_layer if not entry["satisfied"]],
                "per_layer": per_layer,
            }
        )
    implications = certify_implications(results, unchecked, memoryless, built, layers)
    certificate = {
        "trained_layers": built,
        "layers": layers,
        "lipschitz": dict(lipschitz),
        "checks": results,
        "unchecked": list(unchecked),
        "satisfied": all(result["satisfied"] for result in results) and not unchecked,
        "implications": implications,
    }
    certificate["text"] = certificate_text(certificate)
    return certificate


def certify_implications(results: list, unchecked: tuple, memoryless: bool, built: int, layers: int) -> list:
    """What the checked conditions imply, in plain words."""
    kinds = {result["condition"] for result in results}
    violated = [result for result in results if not result["satisfied"]]
    last_ok = all(result["per_layer"][-1]["satisfied"] for result in results)
    lines = []
    for result in violated:
        lines.append(
            f"{result['what']} {result['required']} fails in layers {result['violated_layers']}: "
            "no classical guarantee covers those layers."
        )
    if unchecked:
        lines.append(f"No classical condition is known for {', '.join(unchecked)}: nothing is implied where they act.")
    if not results:
        lines.append("No condition is checkable for this unfold.")
        return lines
    if "step_size" in kinds and "coupled_weight" not in kinds and not violated and not unchecked:
        if memoryless:
            lines.append(
                "Every layer is a proximal gradient step with step in (0, 2/L) and a nonnegative prox scale: "
                "no layer increases the objective (with that layer's coefficients)."
            )
        else:
            lines.append(
                "Every gradient step is in (0, 2/L) and every prox scale nonnegative; the unfold carries states "
                "besides its variables (momentum), so the monotone-descent guarantee of a plain proximal "
                "gradient step does not apply."
            )
    if "coupled_weight" in kinds and not violated and not unchecked:
        lines.append(
            "The checkable conditions of LISTA-CP/ALISTA hold in every layer (normalised weight with generalized "
            "coherence μ̃ < 1, positive steps, nonnegative thresholds); their linear convergence also needs "
            "the thresholds to follow the theorems' schedule, which depends on the unknown signal and is not "
            "checked."
        )
    beyond = f"layers = {layers}" if layers > built else f"layers > {built}"
    if "step_size" in kinds and "coupled_weight" not in kinds and memoryless and last_ok and not unchecked:
        lines.append(
            f"Past the trained depth ({beyond}) every layer repeats layer {built - 1}: classical proximal "
            "gradient (ISTA) with a fixed step in (0, 2/L) and a fixed nonnegative prox scale, which converges "
            f"to a minimiser of the problem with layer {built - 1}'s coefficients."
        )
    elif last_ok and not unchecked:
        lines.append(
            f"Past the trained depth ({beyond}) every layer repeats layer {built - 1}, whose checked conditions "
            "hold; they do not by themselves imply that the repeated iteration converges."
        )
    else:
        lines.append(
            f"Past the trained depth ({beyond}) every layer repeats layer {built - 1}, which is not certified: "
            "running longer may diverge."
        )
    return lines


def certificate_text(certificate: dict) -> str:
    """A certificate as a readable report: one line per condition and layer, then the implications."""
    lines = [
        f"certify: {certificate['trained_layers']} trained layers, running {certificate['layers']}"
        + "".join(f"; L({var}) = {value:.4g}" for var, value in certificate["lipschitz"].items())
    ]
    for result in certificate["checks"]:
        mark = "ok" if result["satisfied"] else "VIOLATED"
        lines.append(f"  {result['condition']}: {result['what']} {result['required']}: {mark}")
        for entry in result["per_layer"]:
            lines.append(
                f"    layer {entry['layer']:>3}: {entry['value']}{'' if entry['satisfied'] else '  (violated)'}"
            )
    if certificate["unchecked"]:
        lines.append(f"  unchecked: {', '.join(certificate['unchecked'])}")
    lines.append("implies:")
    lines += [f"  - {line}" for line in certificate["implications"]]
    return "\n".join(lines)
