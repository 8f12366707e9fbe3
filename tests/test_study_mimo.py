"""Study 4, MIMO detection (``benchmarks/mimo.py``): the reference detectors against independent
computations (ML against full enumeration, the converged projected gradient against scipy's
bounded least squares), the crossing-SNR interpolation, and the quick run: its structure and the
orderings every detector must respect (ML ≤ LMMSE ≤ zero-forcing in SER where it matters)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from helpers import load_benchmark
from scipy.optimize import lsq_linear

from unfoldgen.data import box_detection, constellation

mimo = load_benchmark("mimo")


@pytest.mark.parametrize(("modulation", "snr_db"), [("qpsk", 3.0), ("16qam", 12.0)])
def test_ml_equals_full_enumeration(modulation, snr_db):
    sample = box_detection(6, 4, 4, modulation, snr_db, seed=1)
    points = constellation(modulation)
    candidates = np.array(list(itertools.product(points, repeat=4)))  # (M⁴, 4)
    metric = np.sum(np.abs(sample.y[:, None, :] - candidates @ sample.H.transpose(0, 2, 1)) ** 2, axis=2)
    np.testing.assert_array_equal(mimo.maximum_likelihood(sample.H, sample.y, modulation), candidates[metric.argmin(1)])


def test_ml_is_exact_on_noiseless_data():
    sample = box_detection(50, 4, 4, "16qam", None, seed=2)
    np.testing.assert_array_equal(mimo.maximum_likelihood(sample.H, sample.y, "16qam"), sample.x)


def test_linear_detectors():
    sample = box_detection(5, 6, 4, "qpsk", 10.0, seed=3)
    H, y, s2 = sample.H, sample.y, sample.sigma2
    zf = np.stack([np.linalg.pinv(H[b]) @ y[b] for b in range(5)])
    np.testing.assert_allclose(mimo.zero_forcing(H, y, s2), zf, atol=1e-12)
    lmmse = np.stack(
        [H[b].conj().T @ np.linalg.solve(H[b] @ H[b].conj().T + s2[b] * np.eye(6), y[b]) for b in range(5)]
    )
    np.testing.assert_allclose(mimo.lmmse(H, y, s2), lmmse, atol=1e-12)


def test_converged_projected_gradient_is_the_box_constrained_least_squares_solution():
    sample = box_detection(8, 4, 4, "16qam", 10.0, seed=4)
    edge = mimo.hull_edge("16qam")
    assert edge == pytest.approx(3 / np.sqrt(10))
    estimates, run = mimo.projected_gradient_converged(sample.H, sample.y, edge, 1e-12, 20000)
    assert run["unconverged"] == 0 and run["residual"] < 1e-10
    for H, y, x in zip(sample.H, sample.y, estimates, strict=True):
        # the real 2n-dimensional view: [Re H, −Im H; Im H, Re H] [Re x; Im x] = [Re y; Im y]
        real = np.block([[H.real, -H.imag], [H.imag, H.real]])
        solution = lsq_linear(real, np.concatenate([y.real, y.imag]), bounds=(-edge, edge), tol=1e-14).x
        np.testing.assert_allclose(np.concatenate([x.real, x.imag]), solution, atol=1e-7)
    # K plain steps approach it from x = 0
    far, near = (np.abs(mimo.projected_gradient(sample.H, sample.y, edge, k) - estimates).max() for k in (5, 500))
    assert near < far


def test_crossing_snr_interpolates_in_log_ser():
    snr = [0.0, 10.0, 20.0]
    assert mimo.crossing_snr(snr, [1e-1, 1e-3, 1e-5], 1e-2, 10**6) == pytest.approx(5.0)
    assert mimo.crossing_snr(snr, [1e-1, 1e-2, 1e-3], 1e-2, 10**6) == pytest.approx(10.0)
    assert mimo.crossing_snr(snr, [1e-1, 5e-2, 2e-2], 1e-2, 10**6) is None  # never reached
    assert mimo.crossing_snr(snr, [1e-3, 1e-4, 0.0], 1e-2, 10**6) is None  # below from the start
    # no errors counts as half an error: 0.5 / 1000 = 5e-4
    assert mimo.crossing_snr(snr, [1e-1, 0.0, 0.0], 1e-3, 1000) == pytest.approx(10 * 2 / np.log10(200))


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study_mimo")
    out = folder / "mimo_quick.json"
    options = mimo.arguments(["--quick", "--networks", "", "--out", str(out), "--plot-dir", str(folder)])
    results = mimo.run(options, log=lambda *_: None)
    return results, out, folder


def test_quick_run_writes_every_case_and_detector(quick):
    results, out, folder = quick
    stored = json.loads(out.read_text())
    assert list(stored["cases"]) == ["4x4_qpsk", "4x4_16qam"]
    for case in stored["cases"].values():
        assert set(case["detectors"]) == {"zf", "lmmse", "pgd_k", "pgd_k_lmmse", "pgd_converged", "ml"}
        for entry in case["detectors"].values():
            assert len(entry["ser"]) == len(entry["errors"]) == len(case["snr_db"])
            assert list(entry["crossing_db"]) == ["0.01", "0.001"]
            assert "ml_gap_closed" in entry and "gain_over_lmmse_db" in entry
        assert all(run["unconverged"] == 0 for run in case["detectors"]["pgd_converged"]["runs"])
    assert "| 4×4 16qam | maximum likelihood |" in mimo.markdown_table(results)
    assert (folder / "mimo_ser.png").is_file()


def test_quick_run_orders_the_detectors(quick):
    results, _, _ = quick
    for case in results["cases"].values():
        ser = {key: np.array(entry["ser"]) for key, entry in case["detectors"].items()}
        assert ser["ml"].sum() <= ser["pgd_converged"].sum() <= ser["lmmse"].sum() <= ser["zf"].sum()
        useful = ser["lmmse"] < 0.1  # at low SNR the vector-optimal ML may lose a little in SER
        assert np.all(ser["ml"][useful] <= ser["lmmse"][useful])
        assert ser["zf"][0] > ser["zf"][-1] and ser["lmmse"][0] > ser["lmmse"][-1]
        lmmse = case["detectors"]["lmmse"]
        ml = case["detectors"]["ml"]
        assert ml["crossing_db"]["0.01"] < lmmse["crossing_db"]["0.01"]
        assert ml["ml_gap_closed"]["0.01"] == pytest.approx(1.0) and lmmse["ml_gap_closed"]["0.01"] == 0.0


@pytest.fixture(scope="module")
def quick_networks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study_mimo_networks")
    options = mimo.arguments(
        ["--quick", "--cases", "4x4_qpsk", "--out", str(folder / "mimo.json"), "--plot-dir", str(folder)]
    )
    return mimo.run(options, log=lambda *_: None)


def test_quick_networks_start_as_a_classical_detector_and_train(quick_networks):
    detectors = quick_networks["cases"]["4x4_qpsk"]["detectors"]
    for net in mimo.NETWORKS:
        entry = detectors[net.key]
        assert entry["kind"] == "unfolded" and entry["training"]["steps"] == net.quick_steps
        # untrained, the network is the projected gradient it unfolds (from zero or from LMMSE)
        start = entry["training"]["starts_as"]
        assert start in ("pgd_k", "pgd_k_lmmse"), entry["training"]["untrained_max_difference"]
        assert len(entry["ser"]) == len(detectors["lmmse"]["ser"])
    learned, start = detectors["pgd_learned"], detectors["pgd_learned"]["training"]["starts_as"]
    assert sum(learned["ser"]) <= 1.05 * sum(detectors[start]["ser"])  # 100 steps do not make it worse
    assert "| 4×4 qpsk | projected gradient, learned steps |" in mimo.markdown_table(quick_networks)
