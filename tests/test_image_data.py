"""The ``image:`` data source: scikit-image's test images offline, the held-out split, patches
and masks seeded by step, binding to a spec's image slots, and the handoff to the trainer, which
computes the measured inputs with the model's own forward model (``measure`` / ``MEASURED``)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from unfoldgen import images
from unfoldgen.compiler import compile_text
from unfoldgen.data import (
    DataError,
    bind,
    image_source,
    npz_source,
    slots_from_problem,
    source_from_string,
)
from unfoldgen.training import Config, fit
from unfoldgen.training.loading import ModelInfo, info_from_unfold, load_spec
from unfoldgen.training.task import Task

ROOT = Path(__file__).resolve().parent.parent
SIZE = 16

INPAINT = """
problem inpaint {
    dim h, w
    input y : real[h, w]
    input M : real[h, w]
    var x : real[h, w] = 0
    minimize 0.5 * sumsq(M * x - y)
}
unfold gd from inpaint {
    layers 3
    hyper mu : real = 0.5
    iterate { x = x - mu * grad(x) }
    learn mu per layer
}
"""

DEBLUR_DATA = """
problem deblur {
    dim h, w
    data k : real[5, 5]
    input y : real[h, w]
    var x : real[h, w] = 0
    minimize 0.5 * sumsq(x - y)
}
unfold gd from deblur {
    layers 2
    hyper mu : real = 0.5
    iterate { x = x - mu * grad(x) }
}
"""


def slots(text: str):
    compiled = compile_text(text, "test.unf")
    return slots_from_problem(compiled.checked.unfolds[0].problem)


class Inpainting(nn.Module):
    """A hand-written unfolded inpainting network with the interface generated modules have:
    ``measure`` gives the noise-free measurement y = M ⊙ x."""

    INPUTS = ("y", "M")
    VARIABLES = ("x",)
    OUTPUTS = ("x",)
    PARADIGMS: ClassVar = {"mu": 1}
    MEASURED = ("y",)

    def __init__(self, layers: int = 3):
        super().__init__()
        self.layers = layers
        self.mu = nn.Parameter(torch.full((layers,), 0.5, dtype=torch.float64))

    def measure(self, x, M):
        return {"y": M * x}

    def objective(self, y, M, x):
        return 0.5 * (M * x - y).pow(2).flatten(1).sum(1)

    def forward(self, y, M, return_iterates=False):
        x = torch.zeros_like(y)
        iterates = []
        for k in range(self.layers):
            x = x - self.mu[k] * M * (M * x - y)
            iterates.append(x)
        return iterates if return_iterates else x

    def parameter_counts(self):
        return {1: self.layers}


def inpainting_binding(**options):
    return bind(image_source(size=SIZE, **options), slots(INPAINT))


def task_for(model, binding, **config):
    settings = Config(**{"batch": 4, "val_size": 6, **config})
    return Task(model, binding, settings, torch.device("cpu"), torch.float64)


# ---------------------------------------------------------------------- the catalogue


def test_the_catalogue_loads_offline_as_grayscale_in_the_unit_interval(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("an image was fetched from the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    images._grayscale.cache_clear()
    for name in images.TRAIN_IMAGES + images.TEST_IMAGES:
        picture = images.load_image(name)
        assert picture.dtype == np.float64 and picture.ndim == 2, name
        assert picture.min() >= 0 and picture.max() <= 1 and picture.max() > picture.min(), name
        assert min(picture.shape) >= 64, name


def test_the_split_is_disjoint_and_cat_is_chelsea():
    import skimage.data

    assert not set(images.TRAIN_IMAGES) & set(images.TEST_IMAGES)
    assert np.array_equal(skimage.data.cat(), skimage.data.chelsea())  # why cat is refused
    assert "chelsea" in images.TEST_IMAGES and "cat" not in images.TRAIN_IMAGES
    with pytest.raises(DataError, match="'cat' is the picture 'chelsea', a held-out test image"):
        images.load_image("cat")
    with pytest.raises(DataError, match="'cat' is the picture 'chelsea'"):
        images.random_patches(("brick", "cat"), 2, 8, np.random.default_rng(0))
    with pytest.raises(DataError, match="unknown image 'checkerboard'; expected one of camera"):
        images.load_image("checkerboard")


def test_sized_images_are_centred_squares_resized():
    camera = images.load_image("camera", 256)
    assert camera.shape == (256, 256) and 0 <= camera.min() and camera.max() <= 1
    full = images.load_image("camera")
    assert np.abs(camera - full.reshape(256, 2, 256, 2).mean(axis=(1, 3))).mean() < 0.01
    chelsea = images.load_image("chelsea", 64)  # 300 × 451: the middle 300 × 300, resized
    assert chelsea.shape == (64, 64)


def test_patches_are_seeded_windows_under_the_symmetries_of_the_square():
    patches = images.random_patches(images.TRAIN_IMAGES, 10, 32, np.random.default_rng(5))
    assert patches.shape == (10, 32, 32) and patches.dtype == np.float64
    assert patches.min() >= 0 and patches.max() <= 1
    again = images.random_patches(images.TRAIN_IMAGES, 10, 32, np.random.default_rng(5))
    assert np.array_equal(patches, again)
    assert not np.array_equal(patches, images.random_patches(images.TRAIN_IMAGES, 10, 32, np.random.default_rng(6)))
    moon = images.load_image("moon")  # 512 × 512: a 512 patch is the whole image under a symmetry
    views = [np.rot90(moon, r) for r in range(4)]
    views += [v[:, ::-1] for v in views]
    found = set()
    for patch in images.random_patches(("moon",), 24, 512, np.random.default_rng(0)):
        matches = [i for i, view in enumerate(views) if np.array_equal(patch, view)]
        assert len(matches) == 1
        found.add(matches[0])
    assert len(found) >= 5  # 24 draws of 8 symmetries: all but a few appear
    with pytest.raises(DataError, match="image size=200: no image is that large; expected size ≤ 172"):
        images.random_patches(("text",), 1, 200, np.random.default_rng(0))


def test_gaussian_kernel():
    kernel = images.gaussian_kernel(9, 1.6)
    assert kernel.shape == (9, 9) and abs(kernel.sum() - 1) < 1e-15
    assert np.array_equal(kernel, kernel.T) and np.array_equal(kernel, kernel[::-1, ::-1])
    assert kernel.argmax() == 40
    assert kernel[4, 5] / kernel[4, 4] == pytest.approx(np.exp(-1 / (2 * 1.6**2)), rel=1e-14)
    with pytest.raises(DataError, match="blur sigma=0; expected a standard deviation > 0"):
        images.gaussian_kernel(9, 0)


def test_importing_unfoldgen_does_not_import_scikit_image():
    code = (
        "import sys, unfoldgen, unfoldgen.data, unfoldgen.images, unfoldgen.training.run, unfoldgen.cli;"
        "assert 'skimage' not in sys.modules, 'skimage imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_without_scikit_image_the_source_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setattr(images, "_grayscale", images._grayscale.__wrapped__)
    with pytest.raises(DataError, match=r"needs scikit-image: pip install unfoldgen\[images\]$"):
        source_from_string("image:size=32")
    with pytest.raises(DataError, match=r"pip install unfoldgen\[images\]"):
        images.load_image("camera")


# ---------------------------------------------------------------------- the source


def test_batches_and_masks_are_functions_of_seed_and_step():
    source = source_from_string(f"image:size={SIZE},keep=0.3,seed=4")
    binding = bind(source, slots(INPAINT)).with_measured(("y",))
    inputs, targets = binding.train_batch(3, 64)
    assert set(inputs) == {"M"} and set(targets) == {"x"}
    assert targets["x"].shape == inputs["M"].shape == (64, SIZE, SIZE)
    assert 0 <= targets["x"].min() and targets["x"].max() <= 1
    assert set(np.unique(inputs["M"])) == {0.0, 1.0}
    assert inputs["M"].mean() == pytest.approx(0.3, abs=0.02)  # 16384 Bernoulli(0.3) draws
    again_inputs, again_targets = binding.train_batch(3, 64)
    assert np.array_equal(inputs["M"], again_inputs["M"]) and np.array_equal(targets["x"], again_targets["x"])
    assert not np.array_equal(targets["x"], binding.train_batch(4, 64)[1]["x"])
    other_seed = bind(source_from_string(f"image:size={SIZE},keep=0.3,seed=5"), slots(INPAINT)).with_measured(("y",))
    assert not np.array_equal(targets["x"], other_seed.train_batch(3, 64)[1]["x"])
    first, second = binding.validation(8), binding.validation(8)
    assert np.array_equal(first[1]["x"], second[1]["x"])
    assert binding.dims == {"h": SIZE, "w": SIZE}


def test_training_never_reads_a_held_out_image(monkeypatch):
    read = []
    catalogued = images._catalogued
    monkeypatch.setattr(images, "_catalogued", lambda name: read.append(name) or catalogued(name))
    binding = inpainting_binding().with_measured(("y",))
    for step in range(3):
        binding.train_batch(step, 8)
    binding.validation(8)
    assert read and set(read) <= set(images.TRAIN_IMAGES)


def test_the_test_split_is_the_held_out_images_for_evaluation_only():
    source = source_from_string("image:split=test,noise=0")
    assert source.size == 256
    binding = bind(source, slots(INPAINT)).with_measured(("y",))
    _, targets = binding.validation(10)
    expected = np.stack([images.load_image(name, 256) for name in images.TEST_IMAGES])
    assert np.array_equal(targets["x"], expected)
    with pytest.raises(DataError, match="split=test holds the held-out test images; expected split=train"):
        binding.train_batch(0, 4)
    with pytest.raises(DataError, match="split=test holds the held-out test images"):
        fit(Inpainting(), binding, Config(steps=1, batch=2, val_size=3), progress=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image:size=2", "image: size=2; expected an integer in [4, 512]"),
        ("image:size=1024", "image: size=1024; expected an integer in [4, 512]"),
        ("image:size=sixty", "image: size='sixty' is not a valid int"),
        ("image:noise=-0.1", "image: noise=-0.1; expected a standard deviation ≥ 0"),
        ("image:noise=nan", "image: noise=nan; expected a standard deviation ≥ 0"),
        ("image:keep=0", "image: keep=0.0; expected the fraction of kept pixels in (0, 1]"),
        ("image:keep=1.5", "image: keep=1.5; expected the fraction of kept pixels in (0, 1]"),
        ("image:split=val", "image: split='val'; expected one of train, test"),
        ("image:blur=0", "image: blur=0.0; expected a standard deviation > 0"),
        ("image:size=16,kernel=17", "image: kernel=17; expected an integer in [1, size = 16]"),
        ("image:seed=-1", "image: seed=-1; expected an integer ≥ 0"),
        ("image:colour=1", "data source image: expected key=value with key one of size, noise"),
    ],
)
def test_bad_options_are_one_line_errors(text, message):
    with pytest.raises(DataError) as caught:
        source_from_string(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)


# ---------------------------------------------------------------------- binding to a spec


def test_image_slots_bind_and_measured_inputs_are_left_to_the_model():
    binding = inpainting_binding()
    assert binding.names == {"x": "image", "y": "y", "M": "M"} and binding.measured is None
    with pytest.raises(DataError, match=r"call binding.with_measured\(type\(model\).MEASURED\)"):
        binding.train_batch(0, 2)
    measured = binding.with_measured(("y",))
    assert measured.names == {"x": "image", "M": "M"} and measured.measured == {"y"}
    inputs, targets = measured.validation(3)
    assert set(inputs) == {"M"} and targets["x"].shape == (3, SIZE, SIZE)


def test_binding_errors_name_the_slot():
    one_image = r"fills one image variable such as `var x : real\[h, w\]`; the spec declares `var x : real\[n\]`"
    with pytest.raises(DataError, match=one_image):
        bind(image_source(size=SIZE), slots((ROOT / "specs" / "lasso.unf").read_text()))
    with pytest.raises(DataError, match=r"has no array for `data k : real\[5, 5\]`: give blur=SIGMA"):
        bind(image_source(size=SIZE), slots(DEBLUR_DATA))
    binding = inpainting_binding()
    with pytest.raises(DataError, match="the model measures 'z', which the spec does not declare as inputs"):
        binding.with_measured(("z",))
    with pytest.raises(DataError, match=r"the model measures no input \(MEASURED is empty\)"):
        binding.with_measured(())
    weighted = INPAINT.replace("minimize 0.5 *", "input s : real\n    minimize s *")
    with pytest.raises(DataError, match=r"no array for `input s : real`: it draws masks of the image's shape"):
        bind(image_source(size=SIZE), slots(weighted)).with_measured(("y",))
    fixed = INPAINT.replace("[h, w]", "[32, 32]").replace("dim h, w\n", "")
    with pytest.raises(DataError, match=r"has shape \(0, 16, 16\); expected \(N, 32, 32\)"):
        bind(image_source(size=SIZE), slots(fixed))


def test_square_data_get_the_gaussian_kernel_or_the_given_array():
    source = source_from_string(f"image:size={SIZE},blur=1.2")
    assert np.array_equal(bind(source, slots(DEBLUR_DATA)).data["k"], images.gaussian_kernel(5, 1.2))
    wider = bind(source, slots(DEBLUR_DATA.replace("real[5, 5]", "real[7, 7]")))
    assert np.array_equal(wider.data["k"], images.gaussian_kernel(7, 1.2))
    free = DEBLUR_DATA.replace("dim h, w", "dim h, w, p").replace("real[5, 5]", "real[p, p]")
    assert bind(source, slots(free)).data["k"].shape == (9, 9)  # kernel=9, the default
    own = np.ones((5, 5)) / 25
    assert np.array_equal(bind(image_source(size=SIZE, fixed={"k": own}), slots(DEBLUR_DATA)).data["k"], own)
    with pytest.raises(DataError, match=r"image source array 'k' for `data k : real\[5, 5\]` has shape \(3, 3\)"):
        bind(image_source(size=SIZE, fixed={"k": np.ones((3, 3))}), slots(DEBLUR_DATA))


def test_an_npz_of_images_binds_to_image_slots(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((6, 8, 10))
    M = (rng.random((6, 8, 10)) < 0.5).astype(np.float64)
    np.savez(tmp_path / "images.npz", x=x, M=M, y=M * x)
    binding = bind(npz_source(tmp_path / "images.npz"), slots(INPAINT))
    assert binding.dims == {"h": 8, "w": 10} and binding.measured == frozenset()
    inputs, targets = binding.train_batch(0, 4)
    assert inputs["y"].shape == inputs["M"].shape == targets["x"].shape == (4, 8, 10)
    np.savez(tmp_path / "flat.npz", x=x[0], M=M, y=M * x)
    unbatched = r"array 'x' for `var x : real\[h, w\]` has shape \(8, 10\); expected \(N, h, w\)"
    with pytest.raises(DataError, match=unbatched):
        bind(npz_source(tmp_path / "flat.npz"), slots(INPAINT))


# ---------------------------------------------------------------------- the trainer's handoff


def test_the_trainer_measures_with_the_model_and_adds_seeded_noise():
    model = Inpainting()
    task = task_for(model, inpainting_binding(noise=0.05))
    assert task.binding.measured == {"y"} and task.validation_size == 6
    inputs, targets = task.batch(2, 0, 1)
    assert set(inputs) == {"y", "M"} and inputs["y"].dtype == torch.float64
    noise = inputs["y"] - inputs["M"] * targets["x"]
    assert torch.allclose(noise, torch.as_tensor(task.binding.noise("y", (4, SIZE, SIZE), 2)), rtol=0, atol=1e-15)
    assert float(noise.std()) == pytest.approx(0.05, rel=0.1)
    again, _ = task.batch(2, 0, 1)
    assert torch.equal(inputs["y"], again["y"])
    assert not torch.equal(inputs["y"], task.batch(3, 0, 1)[0]["y"])
    shards = [task.batch(2, rank, 2) for rank in range(2)]  # two ranks: the same global batch
    assert torch.equal(torch.cat([s[0]["y"] for s in shards]), inputs["y"])
    validation = task_for(Inpainting(), inpainting_binding(noise=0.05)).val_inputs
    assert torch.equal(validation["y"], task.val_inputs["y"])
    val_noise = task.val_inputs["y"] - task.val_inputs["M"] * task.val_targets["x"]
    assert not torch.equal(val_noise[:4], noise)  # its own stream


def test_a_model_without_measure_is_a_clear_error():
    class Unmeasured(Inpainting):
        measure = None

    with pytest.raises(DataError, match="Unmeasured has no measure\\(\\) method and MEASURED names; recompile"):
        task_for(Unmeasured(), inpainting_binding())

    class WrongOutput(Inpainting):
        def measure(self, x, M):
            return {"z": x}

    with pytest.raises(DataError, match=r"WrongOutput.measure\(\) returned z; expected 'y'"):
        task_for(WrongOutput(), inpainting_binding())


def test_fit_on_images_resumes_exactly(tmp_path):
    config = {"steps": 6, "batch": 4, "val_size": 4, "val_every": 3, "lr": 0.05, "seed": 1}
    whole = fit(Inpainting(), inpainting_binding(seed=1), Config(**config), out=tmp_path / "whole", progress=False)
    fit(Inpainting(), inpainting_binding(seed=1), Config(**config), out=tmp_path / "cut", stop_after=3, progress=False)
    resumed = fit(
        Inpainting(), inpainting_binding(seed=1), Config(**config), out=tmp_path / "cut", resume=True, progress=False
    )
    assert torch.equal(whole.model.mu, resumed.model.mu)
    assert not torch.equal(whole.model.mu, Inpainting().mu)
    validation = whole.metrics["validation"]
    assert validation["trained"]["nmse_db"][-1] < validation["classical"]["nmse_db"][-1]


def test_fit_binds_a_source_to_a_model_without_its_spec():
    source = image_source(size=SIZE, keep=0.8, seed=2)
    result = fit(Inpainting(), source, Config(steps=3, batch=4, val_size=4, lr=0.05), progress=False)
    assert result.steps == 3 and source.masks == ("y", "M")
    assert np.isfinite(result.nmse_db).all()


def test_a_generated_model_trains_on_images_with_a_measure_method():
    loaded = load_spec("inpaint.unf", text=INPAINT)
    generated = loaded.model_class("gd")

    class Measured(generated):
        MEASURED = ("y",)

        def measure(self, x, M):
            return {"y": M * x}

    model = Measured(h=SIZE, w=SIZE, dtype=torch.float64)
    model.unfoldgen_info = info_from_unfold(loaded.lowered("gd"))
    assert isinstance(model.unfoldgen_info, ModelInfo)
    binding = bind(image_source(size=SIZE, keep=0.7), slots_from_problem(loaded.unfold("gd").problem))
    result = fit(model, binding, Config(steps=4, batch=4, val_size=4, lr=0.05), progress=False)
    assert result.steps == 4 and np.isfinite(result.nmse_db).all()
