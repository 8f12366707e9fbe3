"""The detection source's constellations, slicer, channels and SNR: QPSK and 16-QAM at unit
energy with Gray labels, hard decisions exact on noiseless symbols, the SNR and Kronecker
correlations measured on many samples against their definitions, and the real source unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from unfoldgen.compiler import compile_text
from unfoldgen.data import (
    MODULATIONS,
    DataError,
    bind,
    box_detection,
    constellation,
    detection_source,
    exponential_correlation,
    slice_symbols,
    slots_from_problem,
    source_from_string,
)
from unfoldgen.training import Config, build_model, fit, load_spec

BOX = Path(__file__).resolve().parent.parent / "specs" / "box_ls.unf"


def box_slots(text: str):
    return slots_from_problem(compile_text(text, "box.unf").checked.unfolds[0].problem)


# ---------------------------------------------------------------------- constellations and slicer


@pytest.mark.parametrize(("modulation", "size", "edge"), [("qpsk", 4, 1 / np.sqrt(2)), ("16qam", 16, 3 / np.sqrt(10))])
def test_complex_constellations_have_unit_energy_and_a_box_hull(modulation, size, edge):
    points = constellation(modulation)
    assert points.dtype == np.complex128 and len(np.unique(points)) == size
    assert np.mean(np.abs(points) ** 2) == pytest.approx(1.0, abs=1e-14)
    assert np.max(np.abs(points.real)) == pytest.approx(edge) and np.max(np.abs(points.imag)) == pytest.approx(edge)


def test_16qam_is_gray_labelled():
    points = constellation("16qam")
    spacing = 2 / np.sqrt(10)
    for s, point in enumerate(points):
        neighbours = np.flatnonzero(np.isclose(np.abs(points - point), spacing))
        assert len(neighbours) >= 2
        assert all(bin(s ^ int(t)).count("1") == 1 for t in neighbours)


def test_real_constellations_are_unchanged():
    np.testing.assert_array_equal(constellation("bpsk"), [-1.0, 1.0])
    np.testing.assert_array_equal(constellation("4pam"), [-1.0, -1 / 3, 1 / 3, 1.0])
    with pytest.raises(DataError, match="unknown modulation '8psk'; expected one of bpsk, 4pam, qpsk, 16qam"):
        constellation("8psk")


@pytest.mark.parametrize("modulation", list(MODULATIONS))
def test_slicer_is_exact_on_noiseless_symbols_and_picks_the_nearest_point(modulation):
    points = constellation(modulation)
    np.testing.assert_array_equal(slice_symbols(points, modulation), np.arange(len(points)))
    rng = np.random.default_rng(0)
    values = rng.normal(size=(500, 3)) * 1.5
    if np.iscomplexobj(points):
        values = values + 1j * rng.normal(size=(500, 3)) * 1.5
    decided = slice_symbols(values, modulation)
    nearest = np.argmin(np.abs(values[..., None] - points), axis=-1)
    np.testing.assert_array_equal(decided, nearest)
    assert decided.shape == values.shape


def test_slicer_refuses_complex_values_for_a_real_modulation():
    with pytest.raises(DataError, match="complex values for the real modulation bpsk; expected real values"):
        slice_symbols(np.array([1j]), "bpsk")


# ---------------------------------------------------------------------- complex channels and SNR


@pytest.mark.parametrize("modulation", ["qpsk", "16qam"])
def test_complex_detection_symbols_shapes_and_noiseless(modulation):
    sample = box_detection(50, 6, 4, modulation, snr_db=None, seed=1)
    assert sample.H.shape == (50, 6, 4) and sample.y.shape == (50, 6) and sample.x.shape == (50, 4)
    assert sample.H.dtype == sample.y.dtype == sample.x.dtype == np.complex128
    assert sample.symbols.dtype == np.int64 and sample.sigma2.shape == (50,)
    np.testing.assert_array_equal(sample.x, constellation(modulation)[sample.symbols])
    np.testing.assert_array_equal(slice_symbols(sample.x, modulation), sample.symbols)
    np.testing.assert_allclose(sample.y, np.einsum("bmn,bn->bm", sample.H, sample.x), atol=1e-14)
    np.testing.assert_array_equal(sample.sigma2, 0.0)


@pytest.mark.parametrize("channel", ["rayleigh", "kronecker"])
def test_complex_snr_matches_its_definition(channel):
    m, n, snr_db = 8, 4, 7.0
    sample = box_detection(20000, m, n, "16qam", snr_db=snr_db, seed=2, channel=channel)
    sigma2 = n / (m * 10 ** (snr_db / 10))
    np.testing.assert_allclose(sample.sigma2, sigma2)
    clean = np.einsum("bmn,bn->bm", sample.H, sample.x)
    noise = sample.y - clean
    # E‖Hx‖² = n, E‖w‖² = m σ², E|H_ij|² = 1/m, circular noise; 160000 entries each: ≈ 1 % sampling error
    assert np.mean(np.sum(np.abs(clean) ** 2, axis=1)) == pytest.approx(n, rel=0.03)
    assert np.mean(np.abs(noise) ** 2) == pytest.approx(sigma2, rel=0.02)
    assert np.mean(np.abs(sample.H) ** 2) == pytest.approx(1 / m, rel=0.02)
    assert abs(np.mean(noise**2)) < 0.02 * sigma2  # E w² = 0: real and imaginary parts alike, independent
    assert abs(np.mean(sample.H**2)) < 0.02 / m
    measured = 10 * np.log10(np.sum(np.abs(clean) ** 2) / np.sum(np.abs(noise) ** 2))
    assert measured == pytest.approx(snr_db, abs=0.15)


def test_snr_range_is_drawn_per_sample():
    m, n = 4, 4
    sample = box_detection(4000, m, n, "qpsk", snr_db=(5.0, 20.0), seed=3)
    snr = 10 * np.log10(n / (m * sample.sigma2))
    assert snr.min() >= 5.0 and snr.max() <= 20.0
    assert np.mean(snr) == pytest.approx(12.5, abs=0.3) and np.std(snr) == pytest.approx(15 / np.sqrt(12), abs=0.2)
    noise = sample.y - np.einsum("bmn,bn->bm", sample.H, sample.x)
    low, high = snr < 8, snr > 17
    ratio = np.mean(np.abs(noise[low]) ** 2) / np.mean(np.abs(noise[high]) ** 2)
    assert ratio == pytest.approx(np.mean(sample.sigma2[low]) / np.mean(sample.sigma2[high]), rel=0.1)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_kronecker_channel_has_exponential_correlations(rho):
    m, n = 5, 4
    H = box_detection(40000, m, n, "qpsk", snr_db=None, seed=4, channel="kronecker", rho=rho).H
    np.testing.assert_allclose(exponential_correlation(3, rho), [[1, rho, rho**2], [rho, 1, rho], [rho**2, rho, 1]])
    # E[H Hᴴ] = tr(R_t)/m · R_r and E[Hᴴ H] = tr(R_r)/m · R_t, with tr R = size
    receive = np.mean(H @ H.conj().transpose(0, 2, 1), axis=0)
    transmit = np.mean(H.conj().transpose(0, 2, 1) @ H, axis=0)
    np.testing.assert_allclose(receive, n / m * exponential_correlation(m, rho), atol=0.02)
    np.testing.assert_allclose(transmit, exponential_correlation(n, rho), atol=0.02)
    rayleigh = box_detection(40000, m, n, "qpsk", snr_db=None, seed=4).H
    np.testing.assert_allclose(
        np.mean(rayleigh @ rayleigh.conj().transpose(0, 2, 1), axis=0), n / m * np.eye(m), atol=0.02
    )


def test_detection_is_reproducible_from_its_seed():
    first = box_detection(20, 6, 3, "16qam", snr_db=(0.0, 10.0), seed=[5, 1, 7], channel="kronecker")
    again = box_detection(20, 6, 3, "16qam", snr_db=(0.0, 10.0), seed=[5, 1, 7], channel="kronecker")
    for name in ("H", "y", "x", "symbols", "sigma2"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    other = box_detection(20, 6, 3, "16qam", snr_db=(0.0, 10.0), seed=[5, 1, 8], channel="kronecker")
    assert not np.array_equal(first.H, other.H)
    source = detection_source(6, 3, "qpsk", (0.0, 10.0), seed=2)
    np.testing.assert_array_equal(
        source.train_batch(4, 8)["y"], detection_source(6, 3, "qpsk", (0.0, 10.0), seed=2).train_batch(4, 8)["y"]
    )
    assert not np.array_equal(source.train_batch(4, 8)["y"], source.train_batch(5, 8)["y"])


# ---------------------------------------------------------------------- the real source


def legacy_box_detection(batch, m, n, modulation, snr_db, seed):
    """The real detection source before complex channels (the reference for 'unchanged')."""
    rng = np.random.default_rng(seed)
    x = rng.choice(MODULATIONS[modulation], size=(batch, n))
    H = rng.normal(0.0, 1.0 / np.sqrt(m), size=(batch, m, n))
    clean = np.einsum("bmn,bn->bm", H, x)
    if snr_db is None:
        return H, clean, x
    power = np.mean(clean**2, axis=1, keepdims=True)
    return H, clean + np.sqrt(power / 10 ** (snr_db / 10)) * rng.normal(size=clean.shape), x


@pytest.mark.parametrize(("modulation", "snr_db"), [("bpsk", 10.0), ("4pam", 3.0), ("bpsk", None), ("4pam", np.inf)])
def test_real_detection_draws_what_it_drew_before(modulation, snr_db):
    sample = box_detection(30, 7, 5, modulation, snr_db, seed=[3, 1, 2])
    for new, old in zip(
        (sample.H, sample.y, sample.x), legacy_box_detection(30, 7, 5, modulation, snr_db, [3, 1, 2]), strict=True
    ):
        np.testing.assert_array_equal(new, old)
    assert sample.H.dtype == np.float64
    np.testing.assert_array_equal(MODULATIONS[modulation][sample.symbols], sample.x)
    if snr_db is None or snr_db == np.inf:
        np.testing.assert_array_equal(sample.sigma2, 0.0)
    else:  # σ² is each sample's signal power over the SNR, as the real source defines it
        clean = np.einsum("bmn,bn->bm", sample.H, sample.x)
        np.testing.assert_allclose(sample.sigma2, np.mean(clean**2, axis=1) / 10 ** (snr_db / 10))


def test_real_detection_takes_the_kronecker_channel():
    H = box_detection(40000, 4, 3, "bpsk", None, seed=0, channel="kronecker", rho=0.6).H
    assert H.dtype == np.float64
    np.testing.assert_allclose(
        np.mean(H @ H.transpose(0, 2, 1), axis=0), 3 / 4 * exponential_correlation(4, 0.6), atol=0.02
    )


# ---------------------------------------------------------------------- options and binding


def test_source_options_by_name():
    source = source_from_string("detection:m=8,n=4,modulation=16qam,snr=5:20,channel=kronecker,rho=0.3,seed=2")
    assert (source.modulation, source.snr_db, source.channel, source.rho, source.seed) == (
        "16qam",
        (5.0, 20.0),
        "kronecker",
        0.3,
        2,
    )
    assert "SNR 5 to 20 dB" in source.description and "kronecker channel ρ 0.3" in source.description
    batch = source.train_batch(0, 3)
    assert batch["H"].shape == (3, 8, 4) and batch["H"].dtype == np.complex128
    assert batch["sigma2"].shape == (3,) and batch["symbols"].shape == (3, 4)
    assert source_from_string("detection:modulation=qpsk,snr=inf").snr_db is None
    assert source_from_string("detection:modulation=qpsk,snr=-3").snr_db == -3.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("detection:snr=5:", r"snr='5:'; expected dB \(10, inf\) or a range LOW:HIGH such as 5:20"),
        ("detection:snr=loud", r"snr='loud'; expected dB"),
        ("detection:snr=20:5", r"snr=20:5; expected LOW:HIGH with finite dB and LOW < HIGH"),
        ("detection:snr=nan", r"snr=nan; expected a number of dB \(inf: noiseless\)"),
        ("detection:channel=rician", r"channel='rician'; expected one of rayleigh, kronecker"),
        ("detection:rho=0.5", r"rho=0.5 applies to channel=kronecker; expected no rho with rayleigh"),
        ("detection:channel=kronecker,rho=1", r"rho=1; expected a correlation coefficient in \[0, 1\)"),
        ("detection:channel=kronecker,rho=-0.2", r"rho=-0.2; expected a correlation coefficient in \[0, 1\)"),
        ("detection:modulation=qam16", r"unknown modulation 'qam16'; expected one of bpsk, 4pam, qpsk, 16qam"),
        ("detection:rho=high", r"rho='high' is not a valid float"),
    ],
)
def test_bad_options_are_named(text, message):
    with pytest.raises(DataError, match=message):
        source_from_string(text)


def test_extra_arrays_bind_by_name_or_stay_unbound():
    box = BOX.read_text()
    assert bind(detection_source(8, 4, "4pam"), box_slots(box)).names == {"H": "H", "y": "y", "x": "x"}
    text = box.replace("input y : real[m]", "input y : real[m]\n    input sigma2 : real").replace(
        "minimize sumsq(H @ x - y)", "minimize sumsq(H @ x - y) + sigma2 * sumsq(x)"
    )
    binding = bind(detection_source(8, 4, "bpsk", (0.0, 10.0)), box_slots(text))
    assert binding.names == {"H": "H", "y": "y", "sigma2": "sigma2", "x": "x"}
    inputs, targets = binding.train_batch(0, 5)
    assert set(inputs) == {"H", "y", "sigma2"} and inputs["sigma2"].shape == (5,) and set(targets) == {"x"}
    # the symbol indices are for evaluation: no variable takes them, even when x is named otherwise
    renamed = re.sub(r"\bx\b", "s", box)
    assert bind(detection_source(8, 4), box_slots(renamed)).names == {"H": "H", "y": "y", "s": "x"}


def test_the_trainer_feeds_the_per_sample_noise_variance():
    text = BOX.read_text().replace("input y : real[m]", "input y : real[m]\n    input sigma2 : real")
    text = text.replace("minimize sumsq(H @ x - y)", "minimize sumsq(H @ x - y) + sigma2 * sumsq(x)")
    spec = load_spec("box_sigma2.unf", text=text)
    binding = bind(detection_source(8, 4, "bpsk", (0.0, 10.0)), slots_from_problem(spec.unfold("pgd").problem))
    model = build_model(spec, "pgd", binding, dtype=torch.float64)
    inputs, _ = binding.train_batch(0, 5)
    tensors = {name: torch.as_tensor(value) for name, value in inputs.items()}
    assert model(**tensors).shape == (5, 4)
    # σ² enters the gradient: a larger one pulls the iterates towards 0
    louder = model(**(tensors | {"sigma2": tensors["sigma2"] + 1.0}))
    assert torch.all(louder.abs().sum(1) < model(**tensors).abs().sum(1))
    result = fit(model, binding, Config(steps=2, batch=8, val_size=16, val_every=1, checkpoint_every=10**9), out=None)
    assert len(result.nmse_db) == 10


COMPLEX_MIMO = """
problem mimo {
    dim m, n
    input H : complex[m, n]
    input y : complex[m]
    input sigma2 : real
    var x : complex[n] = 0
    minimize 0.5 * sumsq(H @ x - y) + 0.5 * sigma2 * sumsq(x)
}
unfold gd from mimo {
    layers 2
    hyper mu : real = 1 / lipschitz(x)
    iterate { x = x - mu * grad(x) }
}
"""


def test_complex_arrays_bind_to_complex_declarations_only():
    slots = box_slots(COMPLEX_MIMO)
    assert [slot.describe() for slot in slots] == [
        "input H : complex[m, n]",
        "input y : complex[m]",
        "input sigma2 : real",
        "var x : complex[n]",
    ]
    binding = bind(detection_source(8, 4, "16qam", (5.0, 20.0)), slots)
    assert binding.names == {"H": "H", "y": "y", "sigma2": "sigma2", "x": "x"}
    assert binding.dims == {"m": 8, "n": 4}
    # a real spec would drop the imaginary parts: refused, naming the declaration to write
    with pytest.raises(
        DataError,
        match=r"detection array 'H' is complex, but `input H : real\[m, n\]` is real; expected "
        r"`input H : complex\[m, n\]`",
    ):
        bind(detection_source(8, 4, "qpsk"), box_slots(BOX.read_text()))
    # real data may feed a complex declaration
    assert bind(detection_source(8, 4, "bpsk"), slots).names["H"] == "H"
