"""Numba versions of the linear imaging operators of ``linops_torch``; copied into generated kernels.py.

One sample at a time: an image is an ``(h, w)`` array, a channel stack ``(c, h, w)`` (each
channel alike); the ``_1d`` operators act along axis 0 of an ``(n, cols)`` array, on all columns
at once (one sample's column, or a batch laid out as columns). Kernels are 2-D, ``(kh, kw)`` for
images and ``(kn, 1)`` for the 1-D operators, centred at ``(kh // 2, kw // 2)``; the conventions
and formulas are those of ``linops_torch``. Convolutions loop directly over the kernel (they pay
for small kernels); ``solve_conv_circular_2d`` and ``fft``/``ifft`` use ``np.fft``: rocket-fft
registers it with numba when it is installed (an entry point: kernels import nothing for it).
Results keep the argument's dtype. The compiler adds ``@numba.njit``.

Complex arguments (complex64, complex128): the real operators act on real and imaginary parts
alike (real kernels and matrices); ``fft_*`` and ``ifft_*`` return complex for any argument.
Where the real and complex code differ, ``isinstance(x.dtype.type(0), (complex, np.complex64))``
picks one; numba types it as a constant and compiles only that branch.
"""

import numpy as np

# Boundary rules of the convolution loops.
_ZERO = 0
_WRAP = 1
_REFLECT = 2


def _source_indices(n, size, mode):
    """``index[i, a]``: the sample that convolution output i reads for kernel tap a (-1: zero)."""
    centre = size // 2
    index = np.empty((n, size), np.int64)
    for i in range(n):
        for a in range(size):
            p = i - a + centre
            if mode == _WRAP:
                p = p % n
            elif mode == _REFLECT:
                p = p % (2 * n)
                if p >= n:
                    p = 2 * n - 1 - p
            elif p < 0 or p >= n:
                p = -1
            index[i, a] = p
    return index


def _as_stack(x):
    """x as a C-contiguous (c, h, w) stack of its trailing images."""
    return np.ascontiguousarray(x).reshape((-1, x.shape[-2], x.shape[-1]))


def _convolve(kernel, x, mode):
    """``y[i, j] = sum_{a, b} k[a, b] x[R(i - a + ca), R(j - b + cb)]`` per image of x."""
    stack = _as_stack(x)
    kh, kw = kernel.shape
    c, h, w = stack.shape
    rows = _source_indices(h, kh, mode)
    cols = _source_indices(w, kw, mode)
    taps = kernel.astype(x.real.dtype)  # real taps: a complex x's parts are convolved alike
    out = np.zeros_like(stack)
    for ch in range(c):
        for i in range(h):
            for a in range(kh):
                p = rows[i, a]
                if p < 0:
                    continue
                for j in range(w):
                    total = out[ch, i, j]
                    for b in range(kw):
                        q = cols[j, b]
                        if q >= 0:
                            total += taps[a, b] * stack[ch, p, q]
                    out[ch, i, j] = total
    return out.reshape(x.shape)


def _convolve_adjoint(kernel, r, mode):
    """The adjoint of ``_convolve``: each output's taps scattered back onto the samples they read."""
    stack = _as_stack(r)
    kh, kw = kernel.shape
    c, h, w = stack.shape
    rows = _source_indices(h, kh, mode)
    cols = _source_indices(w, kw, mode)
    taps = kernel.astype(r.real.dtype)
    out = np.zeros_like(stack)
    for ch in range(c):
        for i in range(h):
            for a in range(kh):
                p = rows[i, a]
                if p < 0:
                    continue
                for j in range(w):
                    value = stack[ch, i, j]
                    for b in range(kw):
                        q = cols[j, b]
                        if q >= 0:
                            out[ch, p, q] += taps[a, b] * value
    return out.reshape(r.shape)


def _check_circular_kernel(kernel, x):
    """Refuses a circular kernel larger than the image (as linops_torch does)."""
    if kernel.shape[0] > x.shape[-2] or kernel.shape[1] > x.shape[-1]:
        raise ValueError("a circular convolution kernel is larger than the image")


def conv_zero_2d(kernel, x):
    """Convolution with zeros outside each image (scipy.ndimage mode "constant"); also the 1-D
    convolution down the columns of (n, cols) with a (kn, 1) kernel."""
    return _convolve(kernel, x, _ZERO)


def conv_zero_adjoint_2d(kernel, r):
    """Adjoint of ``conv_zero_2d``: correlation with zeros outside."""
    return _convolve_adjoint(kernel, r, _ZERO)


def conv_reflect_2d(kernel, x):
    """Convolution with the half-sample symmetric extension (scipy.ndimage mode "reflect"); also
    down the columns of (n, cols) with a (kn, 1) kernel."""
    return _convolve(kernel, x, _REFLECT)


def conv_reflect_adjoint_2d(kernel, r):
    """Adjoint of ``conv_reflect_2d``: scatters each tap back onto the reflected sample it read."""
    return _convolve_adjoint(kernel, r, _REFLECT)


def conv_circular_2d(kernel, x):
    """Circular convolution (scipy.ndimage mode "wrap"); the kernel must fit in the image. Also
    down the columns of (n, cols) with a (kn, 1) kernel."""
    _check_circular_kernel(kernel, x)
    return _convolve(kernel, x, _WRAP)


def conv_circular_adjoint_2d(kernel, r):
    """Adjoint of ``conv_circular_2d``: circular correlation."""
    _check_circular_kernel(kernel, r)
    return _convolve_adjoint(kernel, r, _WRAP)


def diff_1d(x):
    """Forward differences along axis 0 of (n, cols), the last row 0 (Neumann)."""
    out = np.zeros_like(x)
    out[:-1] = x[1:] - x[:-1]
    return out


def diff_adjoint_1d(r):
    """Adjoint of ``diff_1d``: ``x_i = r_{i-1} - r_i``, ``r_{-1} = 0``, ``r_{n-1}`` unused."""
    out = np.zeros_like(r)
    out[:-1] -= r[:-1]
    out[1:] += r[:-1]
    return out


def grad2_2d(x):
    """Discrete gradient of an (h, w) image: (2, h, w), forward differences along rows then
    columns, 0 on the last row / column (Neumann)."""
    h, w = x.shape
    out = np.zeros((2, h, w), x.dtype)
    out[0, :-1, :] = x[1:, :] - x[:-1, :]
    out[1, :, :-1] = x[:, 1:] - x[:, :-1]
    return out


def div2_2d(p):
    """Discrete divergence of a (2, h, w) field: exactly ``-grad2_2d^T``."""
    h, w = p.shape[1], p.shape[2]
    out = np.zeros((h, w), p.dtype)
    out[:-1, :] += p[0, :-1, :]
    out[1:, :] -= p[0, :-1, :]
    out[:, :-1] += p[1, :, :-1]
    out[:, 1:] -= p[1, :, :-1]
    return out


def down_2d(x, s):
    """Subsampling of each image by s: ``x[..., ::s, ::s]`` (h and w divisible by s)."""
    if x.shape[-2] % s != 0 or x.shape[-1] % s != 0:
        raise ValueError("the sampling factor must divide the image's height and width")
    stack = _as_stack(x)
    return np.ascontiguousarray(stack[:, ::s, ::s]).reshape((*x.shape[:-2], x.shape[-2] // s, x.shape[-1] // s))


def up_2d(x, s):
    """Zero insertion by s, the adjoint of ``down_2d``: (..., h, w) -> (..., h s, w s)."""
    stack = _as_stack(x)
    c, h, w = stack.shape
    out = np.zeros((c, h * s, w * s), x.dtype)
    out[:, ::s, ::s] = stack
    return out.reshape((*x.shape[:-2], h * s, w * s))


def down_1d(x, s):
    """Subsampling along axis 0 of (n, cols) by s (n divisible by s)."""
    if x.shape[0] % s != 0:
        raise ValueError("the sampling factor must divide the signal's length")
    return np.ascontiguousarray(x[::s])


def up_1d(x, s):
    """Zero insertion along axis 0 by s, the adjoint of ``down_1d``: (n, cols) -> (n s, cols)."""
    out = np.zeros((x.shape[0] * s, x.shape[1]), x.dtype)
    out[::s] = x
    return out


def _dct_matrix(n, dtype):
    """The orthonormal DCT-II matrix ``C[k, i] = sqrt((1 + (k > 0)) / n) cos(pi (2 i + 1) k / (2 n))``."""
    matrix = np.empty((n, n), np.float64)
    for k in range(n):
        scale = np.sqrt((1.0 if k == 0 else 2.0) / n)
        for i in range(n):
            matrix[k, i] = scale * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    return matrix.astype(dtype)


def _transform_2d(x, left, right):
    """``left @ image @ right`` for each image of x."""
    stack = _as_stack(x)
    out = np.empty((stack.shape[0], left.shape[0], right.shape[1]), x.dtype)
    for ch in range(stack.shape[0]):
        out[ch] = np.dot(np.dot(left, stack[ch]), right)
    return out.reshape(x.shape)


def dct_2d(x):
    """Orthonormal 2-D DCT-II of each image: ``C_h x C_w^T``."""
    rows = _dct_matrix(x.shape[-2], x.dtype)
    cols = _dct_matrix(x.shape[-1], x.dtype)
    return _transform_2d(x, rows, np.ascontiguousarray(cols.T))


def idct_2d(x):
    """Inverse (and adjoint) of ``dct_2d``: ``C_h^T x C_w``."""
    rows = _dct_matrix(x.shape[-2], x.dtype)
    cols = _dct_matrix(x.shape[-1], x.dtype)
    return _transform_2d(x, np.ascontiguousarray(rows.T), cols)


def dct_1d(x):
    """Orthonormal DCT-II along axis 0 of (n, cols)."""
    return np.dot(_dct_matrix(x.shape[0], x.dtype), np.ascontiguousarray(x))


def idct_1d(x):
    """Inverse (and adjoint) of ``dct_1d``."""
    return np.dot(np.ascontiguousarray(_dct_matrix(x.shape[0], x.dtype).T), np.ascontiguousarray(x))


def _haar_step(block):
    """One Haar step along axis 1 of a (c, n, m) block: approximations then details."""
    half = block.shape[1] // 2
    root = block.dtype.type(np.sqrt(0.5))
    out = np.empty_like(block)
    out[:, :half] = (block[:, 0::2] + block[:, 1::2]) * root
    out[:, half:] = (block[:, 0::2] - block[:, 1::2]) * root
    return out


def _ihaar_step(block):
    """Inverse of ``_haar_step``."""
    half = block.shape[1] // 2
    root = block.dtype.type(np.sqrt(0.5))
    out = np.empty_like(block)
    out[:, 0::2] = (block[:, :half] + block[:, half:]) * root
    out[:, 1::2] = (block[:, :half] - block[:, half:]) * root
    return out


def _check_levels(n, levels):
    if levels < 1 or n % (2**levels) != 0:
        raise ValueError("2**levels must divide the transformed sizes")


def haar_2d(x, levels):
    """Orthonormal 2-D Haar transform of each image, laid out as pywt.coeffs_to_array of
    pywt.wavedec2(x, "haar", level=levels, mode="periodization")."""
    _check_levels(x.shape[-2], levels)
    _check_levels(x.shape[-1], levels)
    out = _as_stack(x).copy()
    h, w = out.shape[1], out.shape[2]
    for level in range(levels):
        bh, bw = h >> level, w >> level
        block = _haar_step(np.ascontiguousarray(out[:, :bh, :bw]))
        out[:, :bh, :bw] = _haar_step(np.ascontiguousarray(block.transpose((0, 2, 1)))).transpose((0, 2, 1))
    return out.reshape(x.shape)


def ihaar_2d(y, levels):
    """Inverse (and adjoint) of ``haar_2d``."""
    _check_levels(y.shape[-2], levels)
    _check_levels(y.shape[-1], levels)
    out = _as_stack(y).copy()
    h, w = out.shape[1], out.shape[2]
    for level in range(levels - 1, -1, -1):
        bh, bw = h >> level, w >> level
        block = _ihaar_step(np.ascontiguousarray(out[:, :bh, :bw].transpose((0, 2, 1)))).transpose((0, 2, 1))
        out[:, :bh, :bw] = _ihaar_step(np.ascontiguousarray(block))
    return out.reshape(y.shape)


def haar_1d(x, levels):
    """Orthonormal 1-D Haar transform along axis 0 of (n, cols), laid out as
    np.concatenate(pywt.wavedec(x, "haar", level=levels, mode="periodization"))."""
    _check_levels(x.shape[0], levels)
    out = np.ascontiguousarray(x).copy().reshape((1, x.shape[0], x.shape[1]))
    for level in range(levels):
        n = x.shape[0] >> level
        out[:, :n] = _haar_step(np.ascontiguousarray(out[:, :n]))
    return out.reshape(x.shape)


def ihaar_1d(y, levels):
    """Inverse (and adjoint) of ``haar_1d``."""
    _check_levels(y.shape[0], levels)
    out = np.ascontiguousarray(y).copy().reshape((1, y.shape[0], y.shape[1]))
    for level in range(levels - 1, -1, -1):
        n = y.shape[0] >> level
        out[:, :n] = _ihaar_step(np.ascontiguousarray(out[:, :n]))
    return out.reshape(y.shape)


def fft_2d(x):
    """Orthonormal 2-D DFT of each image (``np.fft.fft2(x, norm="ortho")``), complex for any x."""
    return np.fft.fft2(x, None, (-2, -1), "ortho")


def ifft_2d(x):
    """Inverse (and adjoint) of ``fft_2d``."""
    return np.fft.ifft2(x, None, (-2, -1), "ortho")


def fft_1d(x):
    """Orthonormal DFT along axis 0 of (n, cols) (``np.fft.fft(x, axis=0, norm="ortho")``)."""
    return np.fft.fft(x, None, 0, "ortho")


def ifft_1d(x):
    """Inverse (and adjoint) of ``fft_1d``."""
    return np.fft.ifft(x, None, 0, "ortho")


def solve_conv_circular_2d(kernel, mu, b):
    """``(K^T K + mu I)^{-1} b`` for each image of b, K the circular convolution with kernel, by FFT;
    a complex b's real and imaginary parts alike."""
    if isinstance(b.dtype.type(0), (complex, np.complex64)):
        out = np.empty_like(b)
        out.real[...] = _solve_conv_circular_real_2d(kernel, mu, np.ascontiguousarray(b.real))
        out.imag[...] = _solve_conv_circular_real_2d(kernel, mu, np.ascontiguousarray(b.imag))
        return out
    return _solve_conv_circular_real_2d(kernel, mu, b)


def _solve_conv_circular_real_2d(kernel, mu, b):
    """``solve_conv_circular_2d`` of a real b."""
    _check_circular_kernel(kernel, b)
    stack = _as_stack(b)
    c, h, w = stack.shape
    kh, kw = kernel.shape
    # The kernel on the (h, w) periodic grid with its centre at (0, 0).
    grid = np.zeros((h, w), np.float64)
    for a in range(kh):
        for q in range(kw):
            grid[(a - kh // 2) % h, (q - kw // 2) % w] += kernel[a, q]
    denominator = np.abs(np.fft.rfft2(grid)) ** 2 + mu
    out = np.empty_like(stack)
    for ch in range(c):
        solved = np.fft.irfft2(np.fft.rfft2(stack[ch].astype(np.float64)) / denominator, (h, w))
        out[ch] = solved.astype(b.dtype)
    return out.reshape(b.shape)


def solve_conv_circular_1d(kernel, mu, b):
    """``(K^T K + mu I)^{-1} b`` along axis 0 of (n, cols), K the circular convolution with a (kn, 1)
    kernel; a complex b's real and imaginary parts alike."""
    if isinstance(b.dtype.type(0), (complex, np.complex64)):
        out = np.empty_like(b)
        out.real[...] = _solve_conv_circular_real_1d(kernel, mu, np.ascontiguousarray(b.real))
        out.imag[...] = _solve_conv_circular_real_1d(kernel, mu, np.ascontiguousarray(b.imag))
        return out
    return _solve_conv_circular_real_1d(kernel, mu, b)


def _solve_conv_circular_real_1d(kernel, mu, b):
    """``solve_conv_circular_1d`` of a real b."""
    _check_circular_kernel(kernel, b)
    n, kn = b.shape[0], kernel.shape[0]
    line = np.zeros(n, np.float64)
    for a in range(kn):
        line[(a - kn // 2) % n] += kernel[a, 0]
    denominator = (np.abs(np.fft.rfft(line)) ** 2 + mu).reshape(-1, 1)
    spectrum = np.fft.rfft(np.ascontiguousarray(b).astype(np.float64), n, 0)
    return np.fft.irfft(spectrum / denominator, n, 0).astype(b.dtype)
