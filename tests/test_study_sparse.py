"""Study 1 (sparse recovery), quick variant: every claimed network, trained briefly, beats classical
ISTA-K at its best λ on the held-out test set at layer K (LISTA-CP and ALISTA beat FISTA-K too), and
the iterations-to-match bookkeeping agrees with the curves it reports.

Runs ``benchmarks/sparse_recovery.py --quick`` in-process (m=40, n=80, K=8, 150-200 Adam steps per
network, no latency timing): about 40 s on a loaded 2-core machine.
"""

from __future__ import annotations

import json

import pytest
from helpers import load_benchmark


def load_study():
    return load_benchmark("sparse_recovery")


@pytest.fixture(scope="module")
def study():
    return load_study()


@pytest.fixture(scope="module")
def quick(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("study_sparse") / "sparse_recovery_quick.json"
    claimed = ",".join(n.key for n in study.NETWORKS if n.claim)
    options = study.arguments(
        ["--quick", "--networks", claimed, "--latency", "none", "--no-plots", "--no-save", "--out", str(out)]
    )
    results = study.run(options, log=lambda *_: None)
    return results, out


def test_writes_results(quick):
    results, out = quick
    stored = json.loads(out.read_text())
    assert stored["setting"]["layers"] == results["setting"]["layers"] == 8
    assert set(stored["networks"]) == set(results["networks"])
    assert stored["classical"]["ista"]["test"]["nmse_db"] == results["classical"]["ista"]["test"]["nmse_db"]


def test_classical_lambda_is_the_validation_best(quick):
    results, _ = quick
    for entry in results["classical"].values():
        scores = dict(zip(entry["lam_grid"], entry["val_nmse_db_at_K"], strict=True))
        assert entry["best_lam"] == min(scores, key=scores.get)
        assert len(entry["test"]["nmse_db"]) == len(entry["test"]["se_db"]) == 8


def test_every_claimed_network_beats_its_classical_solver_at_layer_K(study, quick):
    results, _ = quick
    ista = results["classical"]["ista"]["test"]
    fista = results["classical"]["fista"]["test"]
    claimed = [n for n in study.NETWORKS if n.claim]
    assert claimed and set(results["networks"]) == {n.key for n in claimed}
    failures = []
    for net in claimed:
        entry = results["networks"][net.key]
        value = entry["test_mean_nmse_db"][-1]
        error = entry["runs"][0]["test"]["se_db"][-1]
        # beaten by more than two standard errors of both test-set estimates
        if not value + 2 * (error + ista["se_db"][-1]) < ista["nmse_db"][-1]:
            failures.append(f"{net.key}: {value:.2f} ± {error:.2f} dB vs ISTA-8 {ista['nmse_db'][-1]:.2f} dB")
        if net.beats_fista and not value + 2 * (error + fista["se_db"][-1]) < fista["nmse_db"][-1]:
            failures.append(f"{net.key}: {value:.2f} ± {error:.2f} dB vs FISTA-8 {fista['nmse_db'][-1]:.2f} dB")
    assert not failures, "; ".join(failures)
    assert results["acceptance"]["every_claimed_network_beats_ista_at_K"]


def test_iterations_to_match_agree_with_the_curves(quick):
    results, _ = quick
    match = results["iterations_to_match"]
    for solver in ("ista", "fista"):
        for name, entry in match[solver]["per_network"].items():
            target = match["targets_db"][name]
            values = match[solver]["test_curves"][str(entry["lam"])]
            k = entry["iterations"]
            assert k is not None, f"{solver} never reached {name}'s {target:.2f} dB"
            assert values[k - 1] <= target and all(v > target for v in values[: k - 1])
            assert entry["savings"] == k / 8
            # a network that beats ISTA-8 must save ISTA iterations
            if solver == "ista":
                assert k > 8
