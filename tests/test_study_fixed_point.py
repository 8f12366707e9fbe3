"""The fixed-point study (benchmarks/fixed_point.py), quick variant: both networks train from their
classical start and do not end worse on the held-out test set, the fixed point converges within its
cap at inference, and the results JSON holds what docs/studies/fixed_point.md reports.

Runs ``benchmarks/fixed_point.py --quick --no-memory`` in-process (m=40, n=80, 40 steps each):
well under a minute; the memory children are left to the full run and to bench_memory.py.
"""

from __future__ import annotations

import json

import pytest
from helpers import load_benchmark


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    study = load_benchmark("fixed_point")
    out = tmp_path_factory.mktemp("study_fixed_point") / "fixed_point_quick.json"
    results = study.run(study.arguments(["--quick", "--no-memory", "--out", str(out)]), log=lambda *_: None)
    return results, out


def test_writes_results(quick):
    results, out = quick
    stored = json.loads(out.read_text())
    assert set(stored["networks"]) == {"fixed_point", "unrolled"}
    assert stored["setting"] == json.loads(json.dumps(results["setting"]))


def test_training_does_not_lose_to_the_classical_start(quick):
    results, _ = quick
    for key, entry in results["networks"].items():
        start, trained = entry["classical"]["test"], entry["test"]
        assert trained["nmse_db"] <= start["nmse_db"] + 2 * trained["se_db"], key


def test_the_fixed_point_converges_at_inference(quick):
    results, _ = quick
    inference = results["networks"]["fixed_point"]["inference"]
    assert 1 < inference["iterations"] < results["setting"]["iterations"]
    assert inference["residual"] <= results["setting"]["tolerance"]
