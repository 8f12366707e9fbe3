"""Convergence-safe learning study, quick variant (``benchmarks/safe_learning.py --quick``: m=40, n=80,
K=8, 150 Adam steps per network): the results are written, every network is evaluated at K, 2K,
4K and 10K layers, the bounded learned-step ISTA is certified (every layer a proximal gradient step
with step < 2/L) and, as certify implies, stays finite and below the zero estimate past its depth.
About a minute and a half on a loaded 2-core machine."""

from __future__ import annotations

import json

import pytest
from helpers import load_benchmark


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    study = load_benchmark("safe_learning")
    out = tmp_path_factory.mktemp("study_safe") / "safe_learning_quick.json"
    results = study.run(study.arguments(["--quick", "--out", str(out)]), log=lambda *_: None)
    return study, results, out


def test_writes_results_for_every_network_and_depth(quick):
    study, results, out = quick
    stored = json.loads(out.read_text())
    assert set(stored["networks"]) == {net.key for net in study.NETWORKS}
    depths = [str(factor * 8) for factor in study.DEPTH_FACTORS]
    for entry in [stored["classical_ista"], *stored["networks"].values()]:
        assert list(entry["nmse_db"]) == depths  # None where the network diverged
        assert "text" in entry["certify"] and entry["certify"]["implications"]
    assert "| learned-step ISTA, bounded |" in study.markdown_table(results)


def test_the_bounded_ista_is_certified_and_holds_past_its_depth(quick):
    _, results, _ = quick
    bounded = results["networks"]["ista_bounded"]
    assert bounded["certify"]["satisfied"], bounded["certify"]["text"]
    assert any("classical proximal gradient (ISTA)" in line for line in bounded["certify"]["implications"])
    for value in bounded["nmse_db"].values():
        assert value is not None and value < 0  # None: diverged
    assert results["classical_ista"]["certify"]["satisfied"]
