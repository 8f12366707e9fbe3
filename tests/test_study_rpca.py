"""Study 2 (robust PCA, the four paradigms), quick variant: every network, trained briefly from its
spec, beats the classical ISTA-RPCA solver (tuned on validation data for the same K) on held-out
test data at layer K, and the study writes what it promises.

Runs ``benchmarks/rpca.py --quick`` in-process (12×12, rank 2, K=5, 40–150 Adam steps per network):
about 40 s on a loaded 2-core machine.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import load_benchmark


def load_study():
    return load_benchmark("rpca")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study_rpca")
    threads = torch.get_num_threads()
    try:
        results = load_study().main(
            ["--quick", "--quiet", "--out", str(folder), "--img", str(folder), "--runs", str(folder / "runs")]
        )
    finally:
        torch.set_num_threads(threads)
    return results, folder


def rows(results):
    return {row["key"]: row for row in results["rows"]}


def test_every_paradigm_beats_classical_at_layer_k(quick):
    results, _ = quick
    table = rows(results)
    K = results["config"]["layers"]
    classical = table[f"classical_{K}"]["test"]["joint"]
    trained = [row for row in results["rows"] if row["training_seconds"] is not None]
    assert sorted(row["paradigm"] for row in trained) == [1, 2, 3, 4]
    for row in trained:
        assert row["parameters"] > 0 and row["steps"] > 0
        assert len(row["per_layer"]) == K
        assert row["test"]["joint"] < classical, (
            f"{row['spec']}: {row['test']['joint']:.2f} dB at layer {K}, classical ISTA-RPCA {classical:.2f} dB"
        )


def test_classical_baselines_are_tuned(quick):
    results, _ = quick
    K = results["config"]["layers"]
    tuned = results["classical"]
    assert tuned["layers"]["evaluations"] > 1 and tuned["converged"]["evaluations"] > 1
    # running the tuned solver to convergence is better than stopping it after K iterations
    assert rows(results)["classical_converged"]["test"]["joint"] < rows(results)[f"classical_{K}"]["test"]["joint"]


def test_writes_json_and_plots(quick):
    results, folder = quick
    stored = json.loads((folder / "rpca_quick.json").read_text())
    assert [r["key"] for r in stored["rows"]] == [r["key"] for r in results["rows"]]
    for name in ("rpca_accuracy.png", "rpca_robustness.png", "rpca_thresholds.png"):
        assert (folder / name).stat().st_size > 1000
    for axis, entries in stored["robustness"]["axes"].items():
        assert len(entries) >= 2, axis
        for entry in entries:
            assert {"classical", "converged", "steps", "operators", "correction", "corona"} <= set(entry)
    assert len(stored["learned"]["steps"]["threshold_L"]) == results["config"]["layers"]
