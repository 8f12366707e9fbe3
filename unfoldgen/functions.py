"""The table of the language's functions: one entry per function, nothing about them elsewhere.

Each entry says how many arguments it takes, what shape it returns, whether the smooth part
of an objective may use it (and so how it is differentiated), how it prints as torch, numba
and readable math (or that it has no numba form), how it folds when its arguments are numbers,
and how it desugars into other entries. Elementwise functions are defined once as sympy
expressions; their derivatives come from ``sympy.diff`` and are rebuilt as IR by looking the
functions up in this table, never in a hand-written second one. docs/contributing.md walks
through adding a function.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import sympy

from unfoldgen import ir
from unfoldgen.ir import Shape


class ShapeError(Exception):
    """An argument's shape does not fit; the checker adds the span."""


# ------------------------------------------------------------ sympy scalar functions


class Sigmoid(sympy.Function):
    """σ(t) = 1 / (1 + e^-t)."""

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return Sigmoid(self.args[0]) * (1 - Sigmoid(self.args[0]))


class Softplus(sympy.Function):
    """softplus(t) = log(1 + e^t), with derivative σ(t)."""

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return Sigmoid(self.args[0])


class Clip(sympy.Function):
    """clip(t, lo, hi) = min(max(t, lo), hi); differentiated only where it is smooth."""


class HuberElem(sympy.Function):
    """h_δ(t) = t²/2 for |t| ≤ δ, δ(|t| − δ/2) otherwise; h_δ'(t) = clip(t, −δ, δ)."""

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        if argindex != 1:
            raise sympy.ArgumentIndexError(self, argindex)
        t, delta = self.args
        return Clip(t, -delta, delta)


# ------------------------------------------------------------------- shape rules


def _same(shapes: list[Shape]) -> Shape:
    return shapes[0]


def _scalar(shapes: list[Shape]) -> Shape:
    return ir.SCALAR


def _broadcast_all(shapes: list[Shape]) -> Shape:
    result: Shape = ()
    for shape in shapes:
        if not ir.is_scalar(shape) and not ir.is_scalar(result) and shape != result:
            raise ShapeError(f"arguments have different shapes {_fmt(result)} and {_fmt(shape)}")
        result = ir.broadcast(result, shape)
    return result


def _scalar_params(shapes: list[Shape]) -> Shape:
    for shape in shapes[1:]:
        if not ir.is_scalar(shape):
            raise ShapeError(f"expected a scalar parameter, got shape {_fmt(shape)}")
    return shapes[0]


def _pair_same(shapes: list[Shape]) -> Shape:
    if shapes[0] != shapes[1]:
        raise ShapeError(f"arguments have different shapes {_fmt(shapes[0])} and {_fmt(shapes[1])}")
    return ir.SCALAR


def _quad(shapes: list[Shape]) -> Shape:
    x, q = shapes
    if ir.is_scalar(x) or x[1] != 1:
        raise ShapeError(f"quad(x, Q) needs a vector x, got shape {_fmt(x)}")
    if q != (x[0], x[0]):
        raise ShapeError(f"quad(x, Q) needs Q of shape {_fmt((x[0], x[0]))}, got {_fmt(q)}")
    return ir.SCALAR


def _square(shapes: list[Shape]) -> Shape:
    shape = shapes[0]
    if ir.is_scalar(shape) or shape[0] != shape[1]:
        raise ShapeError(f"expected a square matrix, got shape {_fmt(shape)}")
    return shape


def _matrix(shapes: list[Shape]) -> Shape:
    if ir.is_scalar(shapes[0]):
        raise ShapeError("expected a vector or matrix, got a scalar")
    return ir.SCALAR


def _solve(shapes: list[Shape]) -> Shape:
    m, b = shapes
    if ir.is_scalar(m) or m[0] != m[1]:
        raise ShapeError(f"solve(M, b) needs a square M, got shape {_fmt(m)}")
    if ir.is_scalar(b) or b[0] != m[1]:
        raise ShapeError(f"solve(M, b) needs b with {m[1]} rows, got shape {_fmt(b)}")
    return b


def _fmt(shape: Shape) -> str:
    if shape == ():
        return "scalar"
    return "[" + ", ".join(str(axis) for axis in ir.user_axes(shape)) + "]"


def _conv(shapes: list[Shape]) -> Shape:
    kernel, x = shapes
    if ir.is_scalar(x):
        raise ShapeError("the convolved argument must be a vector, an image or a stack of images, got a scalar")
    if ir.is_scalar(kernel) or ir.is_stack(kernel):
        raise ShapeError(f"the kernel must be a vector (1-D) or a matrix (2-D), got shape {_fmt(kernel)}")
    if ir.is_vector(x) and not ir.is_vector(kernel):
        raise ShapeError(f"a vector is convolved with a vector kernel, got kernel shape {_fmt(kernel)}")
    return x


def _vector_only(shapes: list[Shape]) -> Shape:
    if not ir.is_vector(shapes[0]):
        raise ShapeError(f"expected a vector, got shape {_fmt(shapes[0])}")
    return shapes[0]


def _image_to_gradient(shapes: list[Shape]) -> Shape:
    shape = shapes[0]
    if not ir.is_matrix(shape) or ir.is_stack(shape):
        raise ShapeError(f"expected an image real[h, w], got shape {_fmt(shape)}")
    return (2, shape[0], shape[1])


def _gradient_to_image(shapes: list[Shape]) -> Shape:
    shape = shapes[0]
    if not ir.is_stack(shape) or shape[0] != 2:
        raise ShapeError(f"expected an image gradient real[2, h, w], got shape {_fmt(shape)}")
    return (shape[1], shape[2])


def _signal(shapes: list[Shape]) -> Shape:
    if ir.is_scalar(shapes[0]):
        raise ShapeError("expected a vector, an image or a stack of images, got a scalar")
    for shape in shapes[1:]:
        if not ir.is_scalar(shape):
            raise ShapeError(f"expected a scalar parameter, got shape {_fmt(shape)}")
    return shapes[0]


def _solve_conv(shapes: list[Shape]) -> Shape:
    kernel, weight, b = shapes
    _conv([kernel, b])
    if not ir.is_scalar(weight):
        raise ShapeError(f"the weight mu of solve_conv(k, mu, b) must be a scalar, got shape {_fmt(weight)}")
    return b


def _resampled(factor: Callable[[int], tuple[int, int]]) -> Callable[[tuple[ir.Expr, ...]], Shape]:
    """The shape of down(x, s) / up(x, s): every image axis (a vector's only axis) scaled by s."""

    def shape(args: tuple[ir.Expr, ...]) -> Shape:
        x, step = args
        numerator, denominator = factor(int(step.value))
        axes = x.shape[:1] if ir.is_vector(x.shape) else x.shape[-2:]
        try:
            scaled = tuple(ir.scale_dim(axis, numerator, denominator) for axis in axes)
        except ValueError as err:
            raise ShapeError(str(err)) from None
        if ir.is_vector(x.shape):
            return (scaled[0], 1)
        return (*x.shape[:-2], *scaled)

    return shape


# ---------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Function:
    """One function of the language, with everything every stage needs to know about it.

    kind: ``elementwise`` (maps each entry), ``reduction`` (a tensor to a per-sample scalar:
    in kernels it acts on each column), ``nonsmooth`` (a reduction handled by its prox, never
    differentiated), or ``helper`` (build-time or in-iteration utility).

    torch: format string over the printed arguments; ``torch_helpers`` names the functions of
    ``runtime_torch`` it calls. numba: the numpy format string printed into kernels, or None:
    then a spec using it compiles without kernels (``compile`` prints a note); ``numba_helpers``
    names the functions of ``ops_numba`` it calls. Both are None for a function that ``desugar``
    rewrites into others before any backend sees it.

    Kernels hold a batch of vector samples as the columns of one array, and one per-sample
    matrix as itself. whole_sample: the numba form combines all entries of each column (every
    reduction, and softmax), so a matrix sample reaches it as one column. per_column: the numba
    form treats each column of a per-sample argument as its own sample; False (opnorm treats its
    argument as one matrix) keeps per-sample arguments out of the batched layout.

    sympy: the single symbolic definition of an elementwise function; its derivative comes from
    ``sympy.diff`` and is rebuilt as IR through this table (see ``from_sympy``). fold: its value
    at numbers (constant folding) where sympy cannot evaluate it; otherwise sympy does.

    curvature: sup |φ''| over the real line, exact, as sympy text (``"1/4"``), for a smooth function
    whose second derivative is bounded; None where it is not (exp, log, sqrt). A smooth part
    with a term ``c · Σ φ(a(x))``, a affine in x with linear part A, has ‖∇²‖ ≤ |c| · sup|φ''| · ‖A‖²,
    which is how ``lipschitz(x)`` bounds a smooth part that is not quadratic (unfoldgen.spectral).
    For a reduction (logsumexp) it bounds the norm of its Hessian instead.

    on_complex: what the entry does with complex arguments. ``follow``: the result is complex
    where an argument is (linear maps act on real and imaginary parts alike, ``exp`` and ``sum``
    are the complex ones); ``real``: the result is real (``re``, ``im``, ``abs`` the modulus, the
    norms of moduli); ``complex``: the result is complex whatever the arguments (``fft``);
    ``refuse``: the function has no meaning on complex numbers (orderings, ``sigmoid``), and the
    checker says so at the call.
    """

    name: str
    arity: tuple[int, int]
    kind: str
    shape: Callable[[list[Shape]], Shape] | None
    math: str
    torch: str | None
    numba: str | None
    sympy: Callable[..., sympy.Expr] | None = None
    fold: Callable[..., float] | None = None
    desugar: Callable[[tuple[ir.Expr, ...], Shape], ir.Expr] | None = None
    smooth: bool = True
    user: bool = True  # callable from specs (internal entries are produced by desugaring)
    whole_sample: bool = False
    per_column: bool = True
    torch_helpers: tuple[str, ...] = ()
    numba_helpers: tuple[str, ...] = ()
    torch_module: str = "runtime_torch"  # where torch_helpers are defined (linops_torch for operators)
    # linear operators (kind "linear"): the argument the map is linear in, its adjoint applied to a
    # seed (the other arguments unchanged), what AᵀA is (see unfoldgen.spectral), the arguments
    # that must be whole numbers (a resampling factor, a number of levels), a shape rule that
    # reads those numbers, and the numba form for a vector argument (``numba`` is the image form)
    linear_arg: int | None = None
    adjoint: Callable[[tuple[ir.Expr, ...], ir.Expr], ir.Expr] | None = None
    gram: str | None = None
    integer_args: tuple[int, ...] = ()
    shape_of_args: Callable[[tuple[ir.Expr, ...]], Shape] | None = None
    numba_column: str | None = None
    curvature: str | None = None
    on_complex: str = "refuse"
    one_dtype: bool = False  # its backends take arguments of one dtype: a real one beside a complex one is promoted

    @property
    def over_samples(self) -> bool:
        """Combines all entries of a sample: reductions always, elementwise-shaped ones if marked."""
        return self.whole_sample or self.kind in ("reduction", "nonsmooth")

    @property
    def foldable(self) -> bool:
        return self.fold is not None or self.sympy is not None

    def evaluate(self, *numbers: float) -> float:
        """The value at ``numbers``; ValueError where it is not a finite real number."""
        try:
            if self.fold is not None:
                value = complex(self.fold(*numbers))
            elif self.sympy is not None:
                value = complex(self.sympy(*(sympy.Float(number) for number in numbers)).evalf())
            else:
                raise ValueError(f"{self.name}() has no value at build time")
        except (TypeError, OverflowError, ZeroDivisionError):
            value = complex(math.nan)
        if value.imag != 0 or not math.isfinite(value.real):
            raise ValueError(f"{self.name}{tuple(numbers)} is not a finite real number")
        return value.real


def _sigmoid(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t)) if t >= 0 else math.exp(t) / (1.0 + math.exp(t))


def _huber(t: float, delta: float) -> float:
    return 0.5 * t * t if abs(t) <= delta else delta * (abs(t) - delta / 2)


def reduce_sum(value: ir.Expr) -> ir.Expr:
    """``sum(value)``; a scalar is its own sum (0-dim tensors have no dims to sum over)."""
    return value if ir.is_scalar(value.shape) else ir.Apply("sum", (value,), ir.SCALAR)


def _squared_modulus(value: ir.Expr) -> ir.Expr:
    """|v|² entrywise: v² for a real v, abs2(v) for a complex one."""
    if ir.is_complex(value):
        return ir.Apply("abs2", (value,), value.shape)
    return ir.power(value, ir.Const(2.0))


def _scalar_is_itself(name: str) -> Callable[[tuple[ir.Expr, ...], Shape], ir.Expr]:
    """A reduction of one number is the number itself."""

    def desugar(args: tuple[ir.Expr, ...], shape: Shape) -> ir.Expr:
        return args[0] if ir.is_scalar(args[0].shape) else ir.Apply(name, args, shape)

    return desugar


def _tensor_first(name: str) -> Callable[[tuple[ir.Expr, ...], Shape], ir.Expr]:
    """Symmetric in its arguments; the tensor goes first, as in ``torch.maximum(t, c)``."""

    def desugar(args: tuple[ir.Expr, ...], shape: Shape) -> ir.Expr:
        if isinstance(args[0], ir.Const) and not isinstance(args[1], ir.Const):
            args = (args[1], args[0])
        return ir.Apply(name, args, shape)

    return desugar


_SUM = "{0}.sum(dim=(-2, -1), keepdim=True)"


def _adjoint_by(name: str, sign: float = 1.0) -> Callable[[tuple[ir.Expr, ...], ir.Expr], ir.Expr]:
    """The adjoint is the entry ``name`` with the linear argument replaced by the seed."""

    def adjoint(args: tuple[ir.Expr, ...], seed: ir.Expr) -> ir.Expr:
        entry = FUNCTIONS[name]
        index = FUNCTIONS[name].linear_arg
        factor, seed = ir.split_factor(seed)  # Aᵀ(c·r) = c·Aᵀr: constants stay outside the operator
        new_args = (*args[:index], seed, *args[index + 1 :])
        shape = entry.shape_of_args(new_args) if entry.shape_of_args else entry.shape([a.shape for a in new_args])
        return ir.scale(sign * factor, ir.Apply(name, new_args, shape))

    return adjoint


def _operator(
    name: str,
    arity: int,
    shape: Callable[[list[Shape]], Shape] | None,
    math: str,
    torch: str,
    adjoint: str,
    gram: str,
    numba: str | None,
    numba_column: str | None = None,
    linear_arg: int = 0,
    adjoint_sign: float = 1.0,
    integer_args: tuple[int, ...] = (),
    shape_of_args: Callable[[tuple[ir.Expr, ...]], Shape] | None = None,
    on_complex: str = "refuse",
) -> Function:
    """A linear operator entry: torch from unfoldgen/linops_torch.py, numba from linops_numba.py.
    on_complex as for Function: ``follow`` for a real operator that both forms apply to complex
    arguments (real and imaginary parts alike), ``complex`` for one whose result is always complex."""
    helpers = tuple(dict.fromkeys(re.findall(r"(\w+)\(", torch)))
    numba_forms = [form for form in (numba, numba_column) if form]
    numba_helpers = tuple(dict.fromkeys(h for form in numba_forms for h in re.findall(r"(\w+)\(", form)))
    return Function(
        name,
        (arity, arity),
        "linear",
        shape,
        math,
        torch,
        numba,
        smooth=True,
        per_column=numba_column is not None,
        torch_helpers=helpers,
        numba_helpers=numba_helpers,
        torch_module="linops_torch",
        linear_arg=linear_arg,
        adjoint=_adjoint_by(adjoint, adjoint_sign),
        gram=gram,
        integer_args=integer_args,
        shape_of_args=shape_of_args,
        numba_column=numba_column,
        on_complex=on_complex,
    )


_OPERATORS = [
    # convolution with a centred kernel (index kh//2, kw//2), three boundary models
    _operator(
        "conv",
        2,
        _conv,
        "{0} ⊛ {1}",
        "conv_circular({0}, {1})",
        "conv_adj",
        "fourier",
        "conv_circular_2d({0}, {1})",
        "conv_circular_2d({0}, {1})",
        linear_arg=1,
        on_complex="follow",
    ),
    _operator(
        "conv_adj",
        2,
        _conv,
        "{0} ⊛ᵀ {1}",
        "conv_circular_adjoint({0}, {1})",
        "conv",
        "fourier",
        "conv_circular_adjoint_2d({0}, {1})",
        "conv_circular_adjoint_2d({0}, {1})",
        linear_arg=1,
        on_complex="follow",
    ),
    _operator(
        "conv_zero",
        2,
        _conv,
        "{0} ⊛₀ {1}",
        "conv_zero({0}, {1})",
        "conv_zero_adj",
        "general",
        "conv_zero_2d({0}, {1})",
        "conv_zero_2d({0}, {1})",
        linear_arg=1,
        on_complex="follow",
    ),
    _operator(
        "conv_zero_adj",
        2,
        _conv,
        "{0} ⊛₀ᵀ {1}",
        "conv_zero_adjoint({0}, {1})",
        "conv_zero",
        "general",
        "conv_zero_adjoint_2d({0}, {1})",
        "conv_zero_adjoint_2d({0}, {1})",
        linear_arg=1,
        on_complex="follow",
    ),
    _operator(
        "conv_reflect",
        2,
        _conv,
        "{0} ⊛ᵣ {1}",
        "conv_reflect({0}, {1})",
        "conv_reflect_adj",
        "general",
        "conv_reflect_2d({0}, {1})",
        "conv_reflect_2d({0}, {1})",
        linear_arg=1,
        on_complex="follow",
    ),
    _operator(
        "conv_reflect_adj",
        2,
        _conv,
        "{0} ⊛ᵣᵀ {1}",
        "conv_reflect_adjoint({0}, {1})",
        "conv_reflect",
        "general",
        "conv_reflect_adjoint_2d({0}, {1})",
        "conv_reflect_adjoint_2d({0}, {1})",
        linear_arg=1,
        on_complex="follow",
    ),
    # finite differences (Neumann boundary: the last difference is zero)
    _operator(
        "diff",
        1,
        _vector_only,
        "D {0}",
        "diff({0})",
        "diff_adj",
        "bound:4",
        None,
        "diff_1d({0})",
        on_complex="follow",
    ),
    _operator(
        "diff_adj",
        1,
        _vector_only,
        "Dᵀ {0}",
        "diff_adjoint({0})",
        "diff",
        "bound:4",
        None,
        "diff_adjoint_1d({0})",
        on_complex="follow",
    ),
    _operator(
        "grad2",
        1,
        _image_to_gradient,
        "∇ {0}",
        "grad2({0})",
        "div2",
        "bound:8",
        "grad2_2d({0})",
        adjoint_sign=-1.0,
        on_complex="follow",
    ),
    _operator(
        "div2",
        1,
        _gradient_to_image,
        "div {0}",
        "div2({0})",
        "grad2",
        "bound:8",
        "div2_2d({0})",
        adjoint_sign=-1.0,
        on_complex="follow",
    ),
    # resampling by a whole factor s: keep every s-th sample / put zeros between samples
    _operator(
        "down",
        2,
        None,
        "↓{1} {0}",
        "down({0}, {1})",
        "up",
        "coisometry",
        "down_2d({0}, {1})",
        "down_1d({0}, {1})",
        integer_args=(1,),
        shape_of_args=_resampled(lambda s: (1, s)),
        on_complex="follow",
    ),
    _operator(
        "up",
        2,
        None,
        "↑{1} {0}",
        "up({0}, {1})",
        "down",
        "isometry",
        "up_2d({0}, {1})",
        "up_1d({0}, {1})",
        integer_args=(1,),
        shape_of_args=_resampled(lambda s: (s, 1)),
        on_complex="follow",
    ),
    # orthonormal transforms
    _operator(
        "dct", 1, _signal, "DCT {0}", "dct({0})", "idct", "unitary", "dct_2d({0})", "dct_1d({0})", on_complex="follow"
    ),
    _operator(
        "idct",
        1,
        _signal,
        "DCT⁻¹ {0}",
        "idct({0})",
        "dct",
        "unitary",
        "idct_2d({0})",
        "idct_1d({0})",
        on_complex="follow",
    ),
    # the orthonormal DFT: complex whatever its argument, so a real x gives a complex result
    _operator(
        "fft", 1, _signal, "F {0}", "fft({0})", "ifft", "unitary", "fft_2d({0})", "fft_1d({0})", on_complex="complex"
    ),
    _operator(
        "ifft",
        1,
        _signal,
        "F⁻¹ {0}",
        "ifft({0})",
        "fft",
        "unitary",
        "ifft_2d({0})",
        "ifft_1d({0})",
        on_complex="complex",
    ),
    _operator(
        "haar",
        2,
        _signal,
        "W_{1} {0}",
        "haar({0}, {1})",
        "ihaar",
        "unitary",
        "haar_2d({0}, {1})",
        "haar_1d({0}, {1})",
        integer_args=(1,),
        on_complex="follow",
    ),
    _operator(
        "ihaar",
        2,
        _signal,
        "W_{1}⁻¹ {0}",
        "ihaar({0}, {1})",
        "haar",
        "unitary",
        "ihaar_2d({0}, {1})",
        "ihaar_1d({0}, {1})",
        integer_args=(1,),
        on_complex="follow",
    ),
    # (KᵀK + μI)⁻¹ b for a circular convolution K, in the Fourier domain: symmetric, so self-adjoint
    _operator(
        "solve_conv",
        3,
        _solve_conv,
        "({0}ᵀ{0} + {1} I)⁻¹ {2}",
        "solve_conv_circular({0}, {1}, {2})",
        "solve_conv",
        "general",
        "solve_conv_circular_2d({0}, {1}, {2})",
        None,
        linear_arg=2,
        on_complex="follow",
    ),
]

FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in [
        # elementwise, smooth
        # no curvature bound: exp'' = exp is unbounded above, log'' = −1/t² and sqrt'' = −t^(−3/2)/4
        # blow up at 0 (and neither is defined on all of ℝ)
        Function(
            "exp",
            (1, 1),
            "elementwise",
            _same,
            "exp({0})",
            "torch.exp({0})",
            "np.exp({0})",
            sympy.exp,
            on_complex="follow",
        ),
        Function("log", (1, 1), "elementwise", _same, "log({0})", "torch.log({0})", "np.log({0})", sympy.log),
        Function("sqrt", (1, 1), "elementwise", _same, "√({0})", "torch.sqrt({0})", "np.sqrt({0})", sympy.sqrt),
        # tanh'' = −2 tanh (1 − tanh²): extreme where tanh² = 1/3, |tanh''| = 4/(3√3) ≈ 0.770
        Function(
            "tanh",
            (1, 1),
            "elementwise",
            _same,
            "tanh({0})",
            "torch.tanh({0})",
            "np.tanh({0})",
            sympy.tanh,
            curvature="4/(3*sqrt(3))",
        ),
        Function(
            "sigmoid",
            (1, 1),
            "elementwise",
            _same,
            "σ({0})",
            torch="torch.sigmoid({0})",
            numba="sigmoid({0})",
            sympy=Sigmoid,
            fold=_sigmoid,
            numba_helpers=("sigmoid",),
            # σ'' = σ(1 − σ)(1 − 2σ): extreme where σ = 1/2 ± 1/(2√3), |σ''| = 1/(6√3) ≈ 0.0962
            curvature="1/(6*sqrt(3))",
        ),
        Function(
            "softplus",
            (1, 1),
            "elementwise",
            _same,
            "softplus({0})",
            torch="torch.nn.functional.softplus({0})",
            numba="softplus({0})",
            sympy=Softplus,
            fold=lambda t: max(t, 0.0) + math.log1p(math.exp(-abs(t))),
            numba_helpers=("softplus",),
            # softplus'' = σ(1 − σ) ≤ 1/4, at t = 0 (the logistic loss log(1 + e^t) is softplus)
            curvature="1/4",
        ),
        Function(
            "huber_elem",
            (2, 2),
            "elementwise",
            _scalar_params,
            "h_{1}({0})",
            torch="huber_elementwise({0}, {1})",
            numba="huber_elementwise({0}, {1})",
            sympy=HuberElem,
            fold=_huber,
            user=False,
            torch_helpers=("huber_elementwise",),
            numba_helpers=("huber_elementwise",),
            # h_δ'' = 1 on |t| < δ, 0 outside: 1 whatever δ (δ moves the kink, not the curvature)
            curvature="1",
        ),
        Function(
            "clip",
            (3, 3),
            "elementwise",
            _scalar_params,
            "clip({0}, {1}, {2})",
            torch="torch.clamp({0}, {1}, {2})",
            numba="np.minimum(np.maximum({0}, {1}), {2})",
            sympy=Clip,
            fold=lambda t, lo, hi: min(max(t, lo), hi),
            smooth=False,
        ),
        # elementwise, not differentiable: in iterations only
        Function(
            "abs",
            (1, 1),
            "elementwise",
            _same,
            "|{0}|",
            "torch.abs({0})",
            "np.abs({0})",
            fold=abs,
            smooth=False,
            on_complex="real",
        ),
        Function(
            "sign",
            (1, 1),
            "elementwise",
            _same,
            "sign({0})",
            torch="torch.sign({0})",
            numba="np.sign({0})",
            fold=lambda t: float((t > 0) - (t < 0)),
            smooth=False,
        ),
        Function(
            "max",
            (2, 2),
            "elementwise",
            _broadcast_all,
            "max({0}, {1})",
            torch="torch.maximum({0}, torch.as_tensor({1}, dtype={0}.dtype, device={0}.device))",
            numba="np.maximum({0}, {1})",
            fold=max,
            desugar=_tensor_first("max"),
            smooth=False,
        ),
        Function(
            "min",
            (2, 2),
            "elementwise",
            _broadcast_all,
            "min({0}, {1})",
            torch="torch.minimum({0}, torch.as_tensor({1}, dtype={0}.dtype, device={0}.device))",
            numba="np.minimum({0}, {1})",
            fold=min,
            desugar=_tensor_first("min"),
            smooth=False,
        ),
        # complex numbers: parts, conjugate, phase (each is its argument's own on real values)
        Function(
            "conj",
            (1, 1),
            "elementwise",
            _same,
            "conj({0})",
            torch="torch.conj_physical({0})",  # not a lazy view: outputs convert to numpy
            numba="np.conj({0})",
            desugar=lambda args, shape: ir.conj(args[0]),
            on_complex="follow",
        ),
        Function(
            "re",
            (1, 1),
            "elementwise",
            _same,
            "Re({0})",
            torch="{0}.real",
            numba="np.real({0})",
            desugar=lambda args, shape: ir.Apply("re", args, shape) if ir.is_complex(args[0]) else args[0],
            on_complex="real",
        ),
        Function(
            "im",
            (1, 1),
            "elementwise",
            _same,
            "Im({0})",
            torch="{0}.imag",
            numba="np.imag({0})",
            desugar=lambda args, shape: (
                ir.Apply("im", args, shape) if ir.is_complex(args[0]) else ir.mul(ir.Const(0.0), args[0])
            ),
            on_complex="real",
        ),
        Function(
            "angle",
            (1, 1),
            "elementwise",
            _same,
            "arg({0})",
            torch="torch.angle({0})",
            numba="np.angle({0})",
            smooth=False,
            on_complex="real",
        ),
        # |z|² = Re(z)² + Im(z)², smooth as a function of (Re z, Im z): what sumsq of a complex value sums
        Function(
            "abs2",
            (1, 1),
            "elementwise",
            _same,
            "|{0}|²",
            torch="{0}.abs().square()",
            numba="np.square(np.abs({0}))",
            user=False,
            on_complex="real",
        ),
        # reductions to a per-sample scalar
        Function(
            "sum",
            (1, 1),
            "reduction",
            _scalar,
            "Σ({0})",
            torch=_SUM,
            numba="colsum({0})",
            fold=lambda t: t,
            desugar=_scalar_is_itself("sum"),
            numba_helpers=("colsum",),
            on_complex="follow",
        ),
        Function(
            "logsumexp",
            (1, 1),
            "reduction",
            _scalar,
            "logsumexp({0})",
            torch="torch.logsumexp({0}.flatten(-2), dim=-1)[..., None, None]",
            numba="logsumexp({0})",
            fold=lambda t: t,
            desugar=_scalar_is_itself("logsumexp"),
            numba_helpers=("logsumexp",),
            # ∇² logsumexp = diag(p) − ppᵀ (p the softmax) ⪯ ½(I − 11ᵀ/n): ‖∇²‖ ≤ 1/2, reached at
            # p = (½, ½) (Böhning, Ann. Inst. Statist. Math. 44 (1992) 197–200)
            curvature="1/2",
        ),
        Function(
            "softmax",
            (1, 1),
            "elementwise",
            _same,
            "softmax({0})",
            torch="torch.softmax({0}.flatten(-2), dim=-1).view_as({0})",
            numba="softmax({0})",
            user=False,
            whole_sample=True,
            numba_helpers=("softmax",),
        ),
        # rewritten into the functions above when the checker meets them
        Function(
            "sumsq",
            (1, 1),
            "reduction",
            _scalar,
            "‖{0}‖²",
            torch=None,
            numba=None,
            fold=lambda t: t * t,
            desugar=lambda args, shape: reduce_sum(_squared_modulus(args[0])),
            on_complex="real",
        ),
        Function(
            "dot",
            (2, 2),
            "reduction",
            _pair_same,
            "⟨{0}, {1}⟩",
            torch=None,
            numba=None,
            fold=lambda u, v: u * v,
            # the Hermitian inner product uᴴv: conjugate-linear in u, as ‖u‖² = ⟨u, u⟩
            desugar=lambda args, shape: reduce_sum(ir.mul(ir.conj(args[0]), args[1])),
            on_complex="follow",
        ),
        Function(
            "quad",
            (2, 2),
            "reduction",
            _quad,
            "{0}ᵀ {1} {0}",
            torch=None,
            numba=None,
            desugar=lambda args, shape: ir.matmul(ir.matmul(ir.adjoint(args[0]), args[1]), args[0]),
            on_complex="follow",
        ),
        Function(
            "huber",
            (2, 2),
            "reduction",
            _scalar_params,
            "Σ h_{1}({0})",
            torch=None,
            numba=None,
            fold=_huber,
            desugar=lambda args, shape: reduce_sum(ir.Apply("huber_elem", args, args[0].shape)),
        ),
        # non-smooth reductions (their prox is in unfoldgen.prox)
        Function(
            "norm1",
            (1, 1),
            "nonsmooth",
            _matrix,
            "‖{0}‖₁",
            torch="{0}.abs().sum(dim=(-2, -1), keepdim=True)",
            numba="colsum(np.abs({0}))",
            smooth=False,
            numba_helpers=("colsum",),
            on_complex="real",
        ),
        Function(
            "norm2",
            (1, 1),
            "nonsmooth",
            _matrix,
            "‖{0}‖₂",
            torch="torch.linalg.vector_norm({0}, dim=(-2, -1), keepdim=True)",
            numba="np.sqrt(colsum(np.square(np.abs({0}))))",  # |v|² = v² bit for bit on reals
            smooth=False,
            numba_helpers=("colsum",),
            on_complex="real",
        ),
        Function(
            "norminf",
            (1, 1),
            "nonsmooth",
            _matrix,
            "‖{0}‖∞",
            torch="{0}.abs().amax(dim=(-2, -1), keepdim=True)",
            numba="colmax(np.abs({0}))",
            smooth=False,
            numba_helpers=("colmax",),
            on_complex="real",
        ),
        Function(
            "norm0",
            (1, 1),
            "nonsmooth",
            _matrix,
            "‖{0}‖₀",
            torch="({0} != 0).to({0}.dtype).sum(dim=(-2, -1), keepdim=True)",
            numba="colsum((np.abs({0}) > 0).astype(_dtype))",  # a real count for complex v too
            smooth=False,
            numba_helpers=("colsum",),
            on_complex="real",
        ),
        Function(
            "norm21",
            (1, 1),
            "nonsmooth",
            _matrix,
            "‖{0}‖₂,₁",
            torch="norm21({0}, {sample_axes})",
            numba=None,
            smooth=False,
            torch_helpers=("norm21",),
            on_complex="real",
        ),
        Function(
            "nuclear",
            (1, 1),
            "nonsmooth",
            _matrix,
            "‖{0}‖_*",
            torch="torch.linalg.matrix_norm({0}, ord='nuc', keepdim=True)",
            numba=None,
            smooth=False,
            on_complex="real",
        ),
        # helpers
        Function(
            "opnorm",
            (1, 1),
            "helper",
            _matrix,
            "‖{0}‖₂,op",
            torch="torch.linalg.matrix_norm({0}, ord=2, keepdim=True)",
            numba="np.linalg.norm({0}, 2)",
            smooth=False,
            per_column=False,
            on_complex="real",
        ),
        Function(
            "solve",
            (2, 2),
            "helper",
            _solve,
            "({0})⁻¹ {1}",
            torch="torch.linalg.solve({0}, {1})",
            numba="np.linalg.solve({0}, {1})",
            smooth=False,
            on_complex="follow",
            one_dtype=True,
        ),
        *_OPERATORS,
        # Lipschitz constants of operator problems (unfoldgen.spectral), never written in specs
        Function(
            "max_abs",
            (1, 1),
            "helper",
            _matrix,
            "max|{0}|",
            torch="{0}.abs().amax(dim=(-2, -1), keepdim=True)",
            numba=None,
            smooth=False,
            user=False,
            whole_sample=True,
            on_complex="real",
        ),
        Function(
            "conv_norm2",
            (2, 2),
            "helper",
            _scalar,
            "max|k̂|²({0})",
            torch="conv_circular_norm2({0}, {1}.shape)",
            numba=None,
            smooth=False,
            user=False,
            torch_helpers=("conv_circular_norm2",),
            torch_module="linops_torch",
        ),
    ]
}

# Functions whose value is a per-sample scalar of their argument's entries; their
# (sub)gradients are known, so the smooth part may contain the smooth ones.
NONSMOOTH = frozenset(name for name, f in FUNCTIONS.items() if f.kind == "nonsmooth")

# Names a spec may call that are not in FUNCTIONS: they are syntax, resolved by the checker.
SPECIAL_CALLS = frozenset({"grad", "prox", "proj", "adjoint", "lipschitz", "eye", "zeros", "ones"})


def user_function_names() -> frozenset[str]:
    return frozenset(name for name, f in FUNCTIONS.items() if f.user) | SPECIAL_CALLS


# ------------------------------------------------------- sympy derivative → IR


def curvature_bound(func: str) -> float | None:
    """sup |φ''| of the entry ``func`` as a number (None: unbounded, see ``Function.curvature``)."""
    text = FUNCTIONS[func].curvature
    return None if text is None else float(sympy.sympify(text))


def elementwise_derivative(func: str, args: tuple[ir.Expr, ...]) -> ir.Expr:
    """φ′(a) for an elementwise φ, derived by sympy and rebuilt as IR over the arguments.

    The simplified derivative is preferred; where sympy simplifies into a function this table
    does not have (tanh′ = 1 − tanh² becomes 1/cosh²), the derivative as differentiated is used.
    """
    entry = FUNCTIONS[func]
    if entry.sympy is None or not entry.smooth:
        raise ValueError(f"{func} is not differentiable")
    symbols = sympy.symbols(f"a0:{len(args)}", real=True)
    derivative = sympy.diff(entry.sympy(*symbols), symbols[0])
    bound = dict(zip(symbols, args, strict=True))
    try:
        return from_sympy(sympy.simplify(derivative), bound, args[0].shape)
    except ValueError:
        return from_sympy(derivative, bound, args[0].shape)


def _function_named(expr: sympy.Expr) -> str | None:
    """The entry whose symbolic definition ``expr`` applies (sqrt is a power, not a function)."""
    for name, entry in FUNCTIONS.items():
        if entry.sympy is not None and expr.func == entry.sympy:
            return name
    return None


def from_sympy(expr: sympy.Expr, symbols: dict[sympy.Symbol, ir.Expr], shape: Shape) -> ir.Expr:
    """Rebuild a sympy scalar expression over IR arguments (elementwise)."""
    if expr.is_Number:
        return ir.Const(float(expr))
    if expr.is_Symbol:
        return symbols[expr]
    if expr.is_Add:
        terms = [from_sympy(arg, symbols, shape) for arg in expr.as_ordered_terms()]
        result = terms[0]
        for term in terms[1:]:
            result = ir.add(result, term)
        return result
    if expr.is_Mul:
        numerator, denominator = expr.as_numer_denom()
        if denominator != 1:
            return ir.div(from_sympy(numerator, symbols, shape), from_sympy(denominator, symbols, shape))
        factors = [from_sympy(arg, symbols, shape) for arg in expr.as_ordered_factors()]
        result = factors[0]
        for factor in factors[1:]:
            result = ir.mul(result, factor)
        return result
    if expr.is_Pow:
        base, exponent = expr.args
        if exponent == sympy.Rational(1, 2):
            return ir.Apply("sqrt", (from_sympy(base, symbols, shape),), shape)
        if exponent.is_negative:
            return ir.div(ir.Const(1.0), from_sympy(base ** (-exponent), symbols, shape))
        return ir.power(from_sympy(base, symbols, shape), from_sympy(exponent, symbols, shape))
    name = _function_named(expr)
    if name is not None:
        args = tuple(from_sympy(arg, symbols, shape) for arg in expr.args)
        return ir.Apply(name, args, shape)
    raise ValueError(f"cannot rebuild the derivative {expr} as tensor code (no entry of FUNCTIONS defines {expr.func})")
