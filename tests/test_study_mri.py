"""Study 4 (compressed-sensing MRI), quick variant: the classical references solve the ℓ1-Haar
problem (ADMM and FISTA reach the same minimiser, ISTA beats zero-filling), λ is the best of its
grid on training images, the unfolded networks of ``specs/mri.unf`` start as classical ISTA and
train, and the study writes what it promises.

Runs ``benchmarks/mri.py --quick`` in-process (32×32 images, K = 8, a few Adam steps per network):
about 30 s on a loaded 2-core machine.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import load_benchmark

from unfoldgen.linops_torch import haar

CLASSICAL = ("zero_filled", "ista_layers", "fista_layers", "admm_layers", "fista_converged", "admm_converged")


@pytest.fixture(scope="module")
def study():
    return load_benchmark("mri")


@pytest.fixture(scope="module")
def quick(study, tmp_path_factory):
    folder = tmp_path_factory.mktemp("study_mri")
    threads = torch.get_num_threads()
    try:
        results = study.main(
            ["--quick", "--quiet", "--out", str(folder), "--img", str(folder), "--runs", str(folder / "runs")]
        )
    finally:
        torch.set_num_threads(threads)
    return results, folder


def rows(results):
    return {row["key"]: row for row in results["rows"]}


def test_the_reference_haar_is_the_specs_haar(study):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 32, 32)) + 1j * rng.standard_normal((2, 32, 32))
    reference = study.Haar(32)
    expected = haar(torch.as_tensor(x.real), 3) + 1j * haar(torch.as_tensor(x.imag), 3)
    assert np.abs(reference.forward(x) - expected.numpy()).max() < 1e-12
    assert np.abs(reference.inverse(reference.forward(x)) - x).max() < 1e-12
    shrunk = study.soft(np.array([3 + 4j, 0.3j, 0]), 1.0)
    assert np.allclose(shrunk, [2.4 + 3.2j, 0, 0])  # the modulus shrinks by 1, the phase stays


def test_classical_solvers_are_tuned_and_agree(quick):
    results, _ = quick
    table = rows(results)
    assert [row["key"] for row in results["rows"][: len(CLASSICAL)]] == list(CLASSICAL)
    for key in ("ista_layers", "fista_layers", "admm_layers", "converged"):
        tuned = results["classical"][key]
        assert tuned["tune_psnr"] == max(point["psnr"] for point in tuned["grid"]), key
        assert len(tuned["grid"]) > 1
    # ADMM and FISTA run to convergence reach the same minimiser
    assert table["admm_converged"]["test"]["psnr"] == pytest.approx(table["fista_converged"]["test"]["psnr"], abs=0.05)
    for key in ("ista_layers", "fista_converged"):
        assert table[key]["test"]["psnr"] > table["zero_filled"]["test"]["psnr"], key
    for row in results["rows"]:
        assert set(row["test"]["psnr_per_image"]) == {"camera", "astronaut", "chelsea"}
        assert 0 < row["test"]["ssim"] <= 1


def test_every_network_starts_as_classical_ista_and_trains(study, quick):
    results, _ = quick
    table = rows(results)
    K = results["config"]["layers"]
    unfolded = [row for row in results["rows"] if row["kind"] == "unfolded"]
    assert [row["key"] for row in unfolded] == [network.key for network in study.NETWORKS]
    for row in unfolded:
        assert row["parameters"] > 0 and row["steps"] > 0 and row["training_seconds"] > 0
        assert len(row["per_layer"]) == K and all(np.isfinite(row["per_layer"]))
        assert np.isfinite(row["test"]["psnr"])
        # untrained, every network is classical ISTA at K layers (complex64 against complex128)
        assert row["untrained"]["psnr"] == pytest.approx(table["ista_layers"]["test"]["psnr"], abs=1e-3), row["key"]
    learned = table["ista_learned"]["learned"]
    assert len(learned["mu"]) == len(learned["theta"]) == K
    assert any(mu != 1.0 for mu in learned["mu"])  # training moved the steps from 1/L


def test_writes_json_and_plots(quick):
    results, folder = quick
    stored = json.loads((folder / "mri_quick.json").read_text())
    assert [row["key"] for row in stored["rows"]] == [row["key"] for row in results["rows"]]
    assert "_reconstructions" not in stored
    assert stored["setting"]["lines"] == 8 and len(stored["setting"]["mask_rows"]) == 8
    for name in ("mri_examples.png", "mri_per_layer.png"):
        assert (folder / name).stat().st_size > 1000
    assert set(stored["conclusions"]["networks_minus_classical_at_equal_depth_db"]) == {"ista_learned", "istanet"}
