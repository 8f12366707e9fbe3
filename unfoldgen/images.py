"""The test images that ship inside scikit-image's wheel, as grayscale float64 in [0, 1], and the
patches the ``image:`` data source trains on (no download at run time).

The catalogue holds only natural images (photographs, micrographs, textures, scanned text).
Left out: the synthetic or binary ones (``checkerboard``, ``colorwheel``, ``binary_blobs``,
``horse``, ``logo``, ``shepp_logan_phantom``), ``clock`` (motion blurred: a poor ground truth for
deblurring), the small ones (``microaneurysms`` 102×102, ``lfw_subset`` 25×25), the stereo pair
``stereo_motorcycle``, and those that need ``pooch`` to download (``brain``, ``eagle``, ``lily`` …).

``TEST_IMAGES`` (camera, astronaut, chelsea) are held out: they never appear in a training patch.
``cat`` is the same picture as ``chelsea``, so it is in neither list (``load_image`` refuses it).

scikit-image is imported on first use only: ``import unfoldgen`` never imports it, and without it
every loader raises a one-line ``DataError`` naming ``pip install unfoldgen[images]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

from unfoldgen.data import DataError

TEST_IMAGES = ("camera", "astronaut", "chelsea")
TRAIN_IMAGES = (
    "brick",
    "cell",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)
SAME_AS = {"cat": "chelsea"}  # another name for a held-out picture: refused, so it cannot leak into training

# Patches are augmented by one of the 8 symmetries of the square (4 rotations by 90°, each with or
# without a left-right flip), drawn uniformly: natural image statistics do not depend on them.
SYMMETRIES = 8


def _skimage() -> tuple[Any, Any, Any]:
    try:
        import skimage.color
        import skimage.data
        import skimage.transform
    except ImportError:
        raise DataError("the image data source needs scikit-image: pip install unfoldgen[images]") from None
    return skimage.data, skimage.color, skimage.transform


@cache
def _grayscale(name: str) -> np.ndarray:
    data, color, _ = _skimage()
    picture = np.asarray(getattr(data, name)())
    if picture.ndim == 3:
        picture = color.rgb2gray(picture[..., :3])  # float64 in [0, 1]
    elif np.issubdtype(picture.dtype, np.integer):
        picture = picture / np.iinfo(picture.dtype).max
    picture = np.clip(np.asarray(picture, dtype=np.float64), 0.0, 1.0)
    picture.flags.writeable = False  # cached: every caller shares it
    return picture


def _catalogued(name: str) -> np.ndarray:
    if name in SAME_AS:
        same = SAME_AS[name]
        raise DataError(f"image {name!r} is the picture {same!r}, a held-out test image; expected {same!r}")
    if name not in TEST_IMAGES + TRAIN_IMAGES:
        raise DataError(f"unknown image {name!r}; expected one of {', '.join(TEST_IMAGES + TRAIN_IMAGES)}")
    return _grayscale(name)


def load_image(name: str, size: int | None = None) -> np.ndarray:
    """Image ``name`` as float64 (h, w) in [0, 1]; with ``size``, its centred square (the smaller
    side) resized to size × size with anti-aliasing."""
    picture = _catalogued(name)
    if size is None:
        return picture.copy()
    _check_size(size)
    side = min(picture.shape)
    top, left = (picture.shape[0] - side) // 2, (picture.shape[1] - side) // 2
    square = picture[top : top + side, left : left + side]
    _, _, transform = _skimage()
    resized = transform.resize(square, (size, size), order=1, anti_aliasing=side > size, mode="reflect")
    return np.clip(resized, 0.0, 1.0)


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise DataError(f"image size={size!r}; expected an integer ≥ 1")


def random_patches(names: Sequence[str], count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` patches (count, size, size) cut at uniform random positions from images drawn
    uniformly among ``names`` (those at least size × size), each under a random symmetry of the
    square (see ``SYMMETRIES``). A pure function of the generator's state."""
    _check_size(size)
    pictures = [_catalogued(name) for name in names]
    fitting = [p for p in pictures if min(p.shape) >= size]
    if not fitting:
        largest = max((min(p.shape) for p in pictures), default=0)
        raise DataError(f"image size={size}: no image is that large; expected size ≤ {largest}")
    patches = np.empty((count, size, size))
    chosen = rng.integers(len(fitting), size=count)
    symmetry = rng.integers(SYMMETRIES, size=count)
    for index in range(count):
        picture = fitting[chosen[index]]
        top = rng.integers(picture.shape[0] - size + 1)
        left = rng.integers(picture.shape[1] - size + 1)
        patch = np.rot90(picture[top : top + size, left : left + size], symmetry[index] % 4)
        patches[index] = patch[:, ::-1] if symmetry[index] >= 4 else patch
    return patches


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """A (size, size) Gaussian blur kernel with standard deviation ``sigma`` pixels, centred on the
    middle of the array, summing to 1."""
    _check_size(size)
    if not (np.isfinite(sigma) and sigma > 0):
        raise DataError(f"blur sigma={sigma}; expected a standard deviation > 0 (pixels)")
    offsets = np.arange(size) - (size - 1) / 2
    profile = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel = np.outer(profile, profile)
    return kernel / kernel.sum()
