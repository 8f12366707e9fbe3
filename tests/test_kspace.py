"""The ``mri:`` data source and its simulation (``unfoldgen.kspace``): the unitary unshifted 2-D
DFT, Cartesian masks of whole lines with the low frequencies (at the corners) fully sampled,
noisy undersampled k-space, complex images from scikit-image's test images offline, the
held-out split, seeded batches and the binding to a spec's data, input and variable."""

from __future__ import annotations

import socket
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from unfoldgen import images, kspace
from unfoldgen.data import DataError, Slot, bind, mri_source, source_from_string
from unfoldgen.training import Config, fit

SIZE = 32
MRI_SLOTS = (  # data M : real[h, w], input y : complex[h, w], var x : complex[h, w]
    Slot("M", "data", ("h", "w"), complex=False),
    Slot("y", "input", ("h", "w"), complex=True),
    Slot("x", "var", ("h", "w"), complex=True),
)


def random_complex(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


# ---------------------------------------------------------------------- the transform


def test_the_transform_is_unitary_and_unshifted_like_torch_ortho():
    rng = np.random.default_rng(0)
    x, z = random_complex(rng, (3, 16, 24)), random_complex(rng, (3, 16, 24))
    k = kspace.fft2(x)
    assert np.linalg.norm(k) == pytest.approx(np.linalg.norm(x), rel=1e-13)
    assert np.vdot(kspace.fft2(z), k) == pytest.approx(np.vdot(z, x), rel=1e-12)  # ⟨Fz, Fx⟩ = ⟨z, x⟩
    assert np.abs(kspace.ifft2(k) - x).max() < 1e-13
    assert np.abs(kspace.fft2(kspace.ifft2(x)) - x).max() < 1e-13
    assert np.abs(k - torch.fft.fft2(torch.as_tensor(x), norm="ortho").numpy()).max() < 1e-12
    dense = kspace.fft2(np.eye(16 * 24).reshape(-1, 16, 24)).reshape(16 * 24, -1).T  # the matrix of F
    assert np.abs(dense.conj().T @ dense - np.eye(16 * 24)).max() < 1e-12
    constant = kspace.fft2(np.ones((16, 24)))
    assert constant[0, 0] == pytest.approx(np.sqrt(16 * 24)) and np.abs(constant.ravel()[1:]).max() < 1e-12


def test_line_frequencies_put_the_low_ones_at_both_ends():
    assert kspace.line_frequencies(8).tolist() == [0, 1, 2, 3, -4, -3, -2, -1]
    assert kspace.center_lines(8, 0.5).tolist() == [0, 1, 2, 7]  # DC, +1, -1, +2
    assert kspace.center_lines(128, 0.08).tolist() == [0, 1, 2, 3, 4, 5, 124, 125, 126, 127]
    assert kspace.center_lines(16, 0.01).tolist() == [0]  # at least the DC line


# ---------------------------------------------------------------------- masks


@pytest.mark.parametrize("acceleration", [4, 8])
def test_masks_keep_whole_lines_a_fraction_one_over_acceleration_and_the_centre(acceleration):
    source = mri_source(size=128, acceleration=acceleration, center=0.08, seed=3)
    mask = source.fixed["M"]
    assert mask.shape == (128, 128) and set(np.unique(mask)) == {0.0, 1.0}
    assert (mask == mask[:, :1]).all()  # whole rows: phase-encode lines
    assert mask.mean() == 1 / acceleration  # 32 or 16 of 128 lines, exactly
    centre = kspace.center_lines(128, 0.08)
    assert len(centre) == 10 and (mask[centre] == 1).all()
    # unshifted: the low frequencies are the first and last rows; fftshift moves them to the middle
    assert (np.fft.fftshift(mask)[64 - 4 : 64 + 6] == 1).all()  # frequencies -4 … +5
    # the DC component of an image is measured exactly (noise=0)
    x = source.draw(1, (0, 1))["x"][0]
    assert source.draw(1, (0, 1))["y"][0, 0, 0] == pytest.approx(x.sum() / 128)


def line_counts(density, seeds=400, lines=64):
    counts = np.zeros(lines)
    for seed in range(seeds):
        counts += kspace.cartesian_mask(lines, 1, 4, 0.08, np.random.default_rng(seed), density)[:, 0]
    return counts


def test_the_mask_is_fixed_by_the_seed():
    assert np.array_equal(mri_source(size=64, seed=1).fixed["M"], mri_source(size=64, seed=1).fixed["M"])
    assert not np.array_equal(mri_source(size=64, seed=1).fixed["M"], mri_source(size=64, seed=2).fixed["M"])
    uniform = mri_source(size=64, seed=1, density="uniform").fixed["M"]
    assert uniform.mean() == 0.25 and not np.array_equal(uniform, mri_source(size=64, seed=1).fixed["M"])


def test_uniform_lines_are_equally_likely_outside_the_centre():
    seeds, counts = 400, line_counts("uniform")
    centre = kspace.center_lines(64, 0.08)  # 5 lines; 11 more drawn among the other 59
    assert (counts[centre] == seeds).all()
    others = np.delete(counts, centre)
    expected, spread = seeds * 11 / 59, np.sqrt(seeds * (11 / 59) * (48 / 59))
    assert np.abs(others - expected).max() < 5 * spread


def test_variable_density_lines_favour_low_frequencies():
    seeds, counts = 400, line_counts("variable")
    frequency = np.abs(kspace.line_frequencies(64))
    assert (counts[frequency <= 2] == seeds).all() and counts.sum() == seeds * 16
    low, high = counts[(frequency > 2) & (frequency <= 12)].mean(), counts[frequency >= 20].mean()
    assert low > 1.5 * high > 0  # the density (1 − |f|/33)² is 0.62 to 0.87 below 13, under 0.37 from 20
    weights = kspace.line_density(64, "variable")
    assert weights[0] == 1 and weights[32] == pytest.approx((1 - 32 / 33) ** 2) and weights[1] == weights[-1]


# ---------------------------------------------------------------------- measurements


def test_with_acceleration_one_and_no_noise_the_zero_filled_recon_is_the_image():
    source = source_from_string(f"mri:size={SIZE},acceleration=1,noise=0")
    assert (source.fixed["M"] == 1).all()
    sample = source.train_batch(0, 4)
    assert sample["y"].dtype == sample["x"].dtype == np.complex128
    assert np.abs(kspace.zero_filled(sample["y"]) - sample["x"]).max() < 1e-13


def test_the_noise_is_complex_gaussian_of_the_given_sigma_on_the_kept_lines_only():
    noisy = mri_source(size=SIZE, acceleration=4, noise=0.1, seed=2).train_batch(0, 16)
    mask = mri_source(size=SIZE, acceleration=4, seed=2).fixed["M"]
    error = noisy["y"] - mask * kspace.fft2(noisy["x"])
    assert (error[:, mask == 0] == 0).all()
    kept = error[:, mask == 1]  # 16 · 8 · 32 = 4096 samples
    assert np.mean(np.abs(kept) ** 2) == pytest.approx(0.01, rel=0.08)
    assert np.var(kept.real) == pytest.approx(np.var(kept.imag), rel=0.15)
    assert abs(np.mean(kept)) < 0.01


def test_images_are_complex_with_a_smooth_phase_or_real():
    sample = mri_source(size=64, phase="smooth", seed=1).train_batch(0, 8)
    x = sample["x"]
    assert np.abs(x).max() <= 1 + 1e-12 and np.abs(x).max() > 0.2
    assert np.abs(x.imag).max() > 0.1  # truly complex
    turn = np.angle(x[:, 1:, :] * x[:, :-1, :].conj())  # the phase change between neighbouring rows
    visible = (np.abs(x[:, 1:, :]) > 0.05) & (np.abs(x[:, :-1, :]) > 0.05)
    assert np.abs(turn[visible]).max() < 0.5  # smooth: well under a radian per pixel
    real = mri_source(size=64, phase="none", seed=1).train_batch(0, 8)["x"]
    assert (real.imag == 0).all() and 0 <= real.real.min() and real.real.max() <= 1


# ---------------------------------------------------------------------- images and splits


def test_batches_are_functions_of_seed_and_step():
    source = mri_source(size=SIZE, noise=0.01, seed=4)
    first, again = source.train_batch(3, 6), source.train_batch(3, 6)
    assert all(np.array_equal(first[name], again[name]) for name in ("x", "y"))
    assert not np.array_equal(first["x"], source.train_batch(4, 6)["x"])
    assert not np.array_equal(first["x"], mri_source(size=SIZE, noise=0.01, seed=5).train_batch(3, 6)["x"])
    assert np.array_equal(source.validation(4)["x"], source.validation(4)["x"])
    assert not np.array_equal(source.validation(6)["x"], first["x"])


def test_training_reads_only_training_images_and_nothing_is_downloaded(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("an image was fetched from the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    read = []
    catalogued = images._catalogued
    monkeypatch.setattr(images, "_catalogued", lambda name: read.append(name) or catalogued(name))
    source = mri_source(size=SIZE)
    for step in range(3):
        source.train_batch(step, 8)
    source.validation(8)
    assert read and set(read) <= set(images.TRAIN_IMAGES)
    read.clear()
    mri_source(size=SIZE, split="test").validation(3)
    assert set(read) == set(images.TEST_IMAGES)


def test_training_crops_are_seeded_resized_windows_under_the_symmetries_of_the_square():
    crops = kspace.random_crops(images.TRAIN_IMAGES, 6, 48, np.random.default_rng(0))
    assert crops.shape == (6, 48, 48) and 0 <= crops.min() and crops.max() <= 1
    assert np.array_equal(crops, kspace.random_crops(images.TRAIN_IMAGES, 6, 48, np.random.default_rng(0)))
    moon = images.load_image("moon")  # 512 × 512: a 512 crop is the whole picture under a symmetry
    views = [np.rot90(moon, r) for r in range(4)]
    views += [view[:, ::-1] for view in views]
    for crop in kspace.random_crops(("moon",), 4, 512, np.random.default_rng(1)):
        assert any(np.array_equal(crop, view) for view in views)
    with pytest.raises(DataError, match=r"mri: size=200: no image is that large; expected size ≤ 172"):
        kspace.random_crops(("text",), 1, 200, np.random.default_rng(0))


def test_the_test_split_is_the_held_out_images_for_evaluation_only():
    source = source_from_string(f"mri:size={SIZE},split=test,phase=none,acceleration=1")
    sample = source.validation(10)
    expected = np.stack([images.load_image(name, SIZE) for name in images.TEST_IMAGES])
    assert np.array_equal(sample["x"].real, expected) and (sample["x"].imag == 0).all()
    smooth = mri_source(size=SIZE, split="test").validation(3)["x"]
    assert np.abs(np.abs(smooth) - expected).max() < 1e-12
    with pytest.raises(DataError, match="mri: split=test holds the held-out test images; expected split=train"):
        source.train_batch(0, 2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mri:size=2", "mri: size=2; expected an integer in [4, 512]"),
        ("mri:size=600", "mri: size=600; expected an integer in [4, 512]"),
        ("mri:acceleration=0.5", "mri: acceleration=0.5; expected a factor ≥ 1 (4: keep a quarter of the lines)"),
        ("mri:acceleration=inf", "mri: acceleration=inf; expected a factor ≥ 1"),
        ("mri:center=0", "mri: center=0.0; expected the fraction of fully sampled centre lines in (0, 1]"),
        ("mri:center=1.5", "mri: center=1.5; expected the fraction of fully sampled centre lines in (0, 1]"),
        (
            "mri:size=128,acceleration=8,center=0.2",
            "mri: center=0.2 keeps 26 of 128 lines, more than acceleration=8 allows (16); "
            "expected center ≤ 1/acceleration",
        ),
        ("mri:noise=-1", "mri: noise=-1.0; expected a standard deviation ≥ 0"),
        ("mri:noise=nan", "mri: noise=nan; expected a standard deviation ≥ 0"),
        ("mri:split=val", "mri: split='val'; expected one of train, test"),
        ("mri:phase=random", "mri: phase='random'; expected one of smooth, none"),
        ("mri:density=radial", "mri: density='radial'; expected one of variable, uniform"),
        ("mri:seed=-2", "mri: seed=-2; expected an integer ≥ 0"),
        ("mri:acceleration=four", "data source mri: acceleration='four' is not a valid float"),
        ("mri:lines=4", "data source mri: expected key=value with key one of size, acceleration, center"),
    ],
)
def test_bad_options_are_one_line_errors(text, message):
    with pytest.raises(DataError) as caught:
        source_from_string(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)


# ---------------------------------------------------------------------- binding to a spec


def test_the_mask_is_the_data_y_the_input_and_x_the_target():
    source = source_from_string(f"mri:size={SIZE},noise=0.01")
    binding = bind(source, MRI_SLOTS)
    assert binding.names == {"M": "M", "y": "y", "x": "x"} and binding.dims == {"h": SIZE, "w": SIZE}
    assert binding.measured == frozenset() and binding.data["M"] is source.fixed["M"]
    inputs, targets = binding.train_batch(0, 3)
    assert inputs["y"].shape == targets["x"].shape == (3, SIZE, SIZE)
    renamed = (Slot("mask", "data", ("h", "w")), Slot("k", "input", ("h", "w")), Slot("image", "var", ("h", "w")))
    assert bind(source, renamed).names == {"mask": "M", "k": "y", "image": "x"}
    real = (MRI_SLOTS[0], Slot("y", "input", ("h", "w"), complex=False), MRI_SLOTS[2])
    with pytest.raises(DataError, match=r"mri array 'y' is complex, but `input y : real\[h, w\]` is real"):
        bind(source, real)
    fixed = tuple(Slot(slot.name, slot.role, (64, 64), slot.complex) for slot in MRI_SLOTS)
    with pytest.raises(DataError, match=r"mri array 'M' for `data M : real\[64, 64\]` has shape \(32, 32\)"):
        bind(source, fixed)
    vector = r"the mri source has no array for `var x : real\[n\]` \(arrays of that role: x \(32, 32\)\)"
    with pytest.raises(DataError, match=vector):
        bind(source, (*MRI_SLOTS[:2], Slot("x", "var", ("n",))))


class DataConsistency(nn.Module):
    """A hand-written complex unfolded network with the interface generated modules have: K
    gradient steps x ← x − μ_k Fᴴ(M ⊙ F x − y) from x = 0 (μ = 1 gives the zero-filled image)."""

    INPUTS = ("y",)
    VARIABLES = ("x",)
    OUTPUTS = ("x",)
    PARADIGMS: ClassVar = {"mu": 1}
    MEASURED = ()

    def __init__(self, mask: np.ndarray, layers: int = 2):
        super().__init__()
        self.layers = layers
        self.register_buffer("M", torch.as_tensor(mask))
        self.mu = nn.Parameter(torch.full((layers,), 0.3, dtype=torch.float64))

    def residual(self, y, x):
        return self.M * torch.fft.fft2(x, norm="ortho") - y

    def objective(self, y, x):
        return 0.5 * self.residual(y, x).abs().square().flatten(1).sum(1)

    def forward(self, y, return_iterates=False):
        x = torch.zeros_like(y)
        iterates = []
        for k in range(self.layers):
            x = x - self.mu[k] * torch.fft.ifft2(self.residual(y, x), norm="ortho")
            iterates.append(x)
        return iterates if return_iterates else x

    def parameter_counts(self):
        return {1: self.layers}


def test_the_trainer_fits_a_complex_network_on_the_source(tmp_path):
    source = mri_source(size=16, noise=0.01, seed=1)
    model = DataConsistency(source.fixed["M"])
    config = Config(steps=30, batch=4, lr=0.05, val_size=4, val_every=10, checkpoint_every=30)
    result = fit(model, bind(source, MRI_SLOTS), config, out=tmp_path / "run", progress=False)
    losses = result.metrics["loss"]
    assert len(losses) == 30 and np.isfinite(losses).all() and np.mean(losses[-5:]) < np.mean(losses[:5])
    # the steps move towards 1, where two steps give the zero-filled image (the least-squares fit)
    assert (model.mu.detach() > 0.3).all()
