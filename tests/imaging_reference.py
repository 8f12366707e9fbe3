"""Hand-written numpy/scipy references for the imaging examples (specs/deblur.unf, specs/imaging.unf).

Independent of the compiler and of unfoldgen/linops_*: convolutions are scipy.ndimage's, wavelets
pywt's, the DCT scipy.fft's, the Fourier-domain solve numpy's FFT. One image at a time, float64;
hyperparameters are a number or one value per iteration.
"""

from __future__ import annotations

import numpy as np
import pywt
import scipy.fft
import scipy.ndimage


def per_iteration(value, K):
    return [float(v) for v in np.broadcast_to(np.asarray(value, dtype=np.float64), (K,))]


def conv(k, x):
    """Circular convolution, kernel centred at (kh//2, kw//2)."""
    return scipy.ndimage.convolve(x, k, mode="wrap")


def conv_adj(k, r):
    return scipy.ndimage.correlate(r, k, mode="wrap")


def kernel_spectrum(k, shape):
    """The FFT of the kernel placed on the image grid with its centre at index (0, 0)."""
    padded = np.zeros(shape)
    padded[: k.shape[0], : k.shape[1]] = k
    padded = np.roll(padded, (-(k.shape[0] // 2), -(k.shape[1] // 2)), axis=(0, 1))
    return np.fft.fft2(padded)


def solve_conv(k, mu, b):
    """(KᵀK + μI)⁻¹ b for the circular convolution K."""
    spectrum = kernel_spectrum(k, b.shape)
    return np.real(np.fft.ifft2(np.fft.fft2(b) / (np.abs(spectrum) ** 2 + mu)))


def haar(x, levels):
    coeffs = pywt.wavedec2(x, "haar", level=levels, mode="periodization")
    return pywt.coeffs_to_array(coeffs)[0]


def ihaar(c, levels, shape):
    template = pywt.wavedec2(np.zeros(shape), "haar", level=levels, mode="periodization")
    _, slices = pywt.coeffs_to_array(template)
    coeffs = pywt.array_to_coeffs(c, slices, output_format="wavedec2")
    return pywt.waverec2(coeffs, "haar", mode="periodization")


def dct(x):
    return scipy.fft.dctn(x, norm="ortho")


def idct(x):
    return scipy.fft.idctn(x, norm="ortho")


def grad2(x):
    """Forward differences with a zero last row/column (Neumann boundary)."""
    g = np.zeros((2, *x.shape))
    g[0, :-1, :] = np.diff(x, axis=0)
    g[1, :, :-1] = np.diff(x, axis=1)
    return g


def div2(p):
    """−grad2ᵀ, written out (Chambolle 2004)."""
    d = np.zeros(p.shape[1:])
    d[:-1, :] += p[0, :-1, :]
    d[1:, :] -= p[0, :-1, :]
    d[:, :-1] += p[1, :, :-1]
    d[:, 1:] -= p[1, :, :-1]
    return d


def soft(v, t):
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def proj_ball21(p, radius):
    norm = np.sqrt(p[0] ** 2 + p[1] ** 2)
    return p / np.maximum(1.0, norm / radius)


def lipschitz_dense(apply, shape):
    """λ_max of the symmetric map ``apply`` from its matrix (small images only)."""
    n = int(np.prod(shape))
    columns = [apply(np.eye(n)[j].reshape(shape)).ravel() for j in range(n)]
    return float(np.linalg.eigvalsh(np.array(columns)).max())


def deblur_ista(k, y, lam, K, mu, levels=3):
    x = np.zeros_like(y)
    for mu_k, lam_k in zip(per_iteration(mu, K), per_iteration(lam, K), strict=True):
        v = x - mu_k * conv_adj(k, conv(k, x) - y)
        x = ihaar(soft(haar(v, levels), mu_k * lam_k), levels, y.shape)
    return x


def deblur_fista(k, y, lam, K, mu, levels=3):
    x = np.zeros_like(y)
    z, t = x.copy(), 1.0
    for _ in range(K):
        x_new = ihaar(soft(haar(z - mu * conv_adj(k, conv(k, z) - y), levels), mu * lam), levels, y.shape)
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return x


def deblur_cp(k, y, lam, K, tau=0.35, sigma=0.35):
    """Chambolle–Pock for ½‖k⊛x − y‖² + λ‖∇x‖₂,₁."""
    x = np.zeros_like(y)
    xbar = x.copy()
    p = np.zeros((2, *y.shape))
    for tau_k, sigma_k, lam_k in zip(
        per_iteration(tau, K), per_iteration(sigma, K), per_iteration(lam, K), strict=True
    ):
        p = proj_ball21(p + sigma_k * grad2(xbar), lam_k)
        v = x + tau_k * div2(p)
        x_new = solve_conv(k, 1 / tau_k, conv_adj(k, y) + v / tau_k)
        xbar = 2 * x_new - x
        x = x_new
    return x


def tv_cp(y, lam, K, tau=0.35, sigma=0.35):
    """Chambolle–Pock for ½‖x − y‖² + λ‖∇x‖₂,₁."""
    x = np.zeros_like(y)
    xbar = x.copy()
    p = np.zeros((2, *y.shape))
    for _ in range(K):
        p = proj_ball21(p + sigma * grad2(xbar), lam)
        x_new = (x + tau * div2(p) + tau * y) / (1 + tau)
        xbar = 2 * x_new - x
        x = x_new
    return x


def inpaint_ista(mask, y, lam, K):
    mu = 1 / np.max(mask**2)
    x = np.zeros_like(y)
    for _ in range(K):
        v = x - mu * mask * (mask * x - y)
        x = idct(soft(dct(v), mu * lam))
    return x


def superres_ista(k, y, lam, K, mu, factor=4, levels=2):
    shape = (y.shape[0] * factor, y.shape[1] * factor)
    x = np.zeros(shape)
    for _ in range(K):
        residual = conv(k, x)[::factor, ::factor] - y
        upsampled = np.zeros(shape)
        upsampled[::factor, ::factor] = residual
        v = x - mu * conv_adj(k, upsampled)
        x = ihaar(soft(haar(v, levels), mu * lam), levels, shape)
    return x


def hqs_x_step(k, y, mu, z):
    return solve_conv(k, mu, conv_adj(k, y) + mu * z)
