"""Study 3 (image deblurring, the four paradigms), quick variant: the study runs end to end from
``specs/deblur.unf``, every untrained network equals its classical algorithm on the test images,
training lowers every network's loss, ``checkpoint_layers`` gives the same loss and gradients, and
the study writes what it promises.

Runs ``benchmarks/deblur.py --quick`` in-process (32×32 patches, 64×64 test images, K=4, 40 Adam
steps per network, memory probes in subprocesses): about a minute on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import load_benchmark

CLASSICAL = ("blurred", "wiener", "cp_layers", "cp_converged", "ista_layers", "hqs_layers")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study_deblur")
    threads = torch.get_num_threads()
    try:
        results = load_benchmark("deblur").main(
            ["--quick", "--quiet", "--out", str(folder), "--img", str(folder), "--runs", str(folder / "runs")]
        )
    finally:
        torch.set_num_threads(threads)
    return results, folder


def rows(results):
    return {row["key"]: row for row in results["rows"]}


def trained_rows(results):
    return [row for row in results["rows"] if row["paradigm"] is not None]


def test_every_paradigm_trains_from_its_classical_algorithm(quick):
    results, _ = quick
    table = rows(results)
    K = results["config"]["layers"]
    assert [row["key"] for row in results["rows"][: len(CLASSICAL)]] == list(CLASSICAL)
    trained = trained_rows(results)
    assert sorted(row["paradigm"] for row in trained) == [1, 2, 3, 4]
    for row in trained:
        assert row["parameters"] > 0 and row["steps"] > 0 and row["training_seconds"] > 0
        assert len(row["per_layer"]) == K and all(math.isfinite(p) for p in row["per_layer"])
        if row["key"] != "hqs":  # HQS starts at the Wiener μ, not at the μ tuned for its zero net
            # untrained, the network is its classical algorithm at the same depth (same tuned values)
            classical = table[row["classical"]]["test"]
            assert row["untrained"]["psnr"] == pytest.approx(classical["psnr"], abs=1e-4), row["key"]
        assert row["loss_last_quarter"] < row["loss_first_quarter"], (
            f"{row['spec']}: mean training loss {row['loss_first_quarter']:.3g} in the first quarter of the "
            f"steps, {row['loss_last_quarter']:.3g} in the last"
        )


def test_classical_baselines_are_tuned_and_scored(quick):
    results, _ = quick
    tuned = results["classical"]
    for key in ("cp_layers", "cp_converged", "ista_layers", "hqs_layers", "wiener"):
        assert tuned[key]["evaluations"] > 1, key
    table = rows(results)
    # every solver improves on the blurred input it starts from
    for key in ("wiener", "cp_converged"):
        assert table[key]["test"]["psnr"] > table["blurred"]["test"]["psnr"], key
    for row in results["rows"]:
        assert set(row["test"]["psnr_per_image"]) == {"camera", "astronaut", "chelsea"}
        assert 0 < row["test"]["ssim"] <= 1


def test_checkpoint_layers_gives_the_same_step(quick):
    results, _ = quick
    for key, entry in results["memory"].items():
        assert entry["checkpoint_same_loss"], key
        assert entry["checkpoint_gradient_max_abs_diff"] < 1e-5, key
        assert entry["plain"]["peak_increase_mib"] >= 0 and entry["checkpointed"]["checkpoint_layers"] > 0


def test_writes_json_and_plots(quick):
    results, folder = quick
    stored = json.loads((folder / "deblur_quick.json").read_text())
    assert [r["key"] for r in stored["rows"]] == [r["key"] for r in results["rows"]]
    assert "_reconstructions" not in stored and "skipped" in stored["deepinv"]
    for name in ("deblur_examples.png", "deblur_per_layer.png"):
        assert (folder / name).stat().st_size > 1000
    timing = stored["compile_build"]
    assert timing["compile_seconds"] > 0 and timing["build_seconds"] > 0
    assert timing["step"] == pytest.approx(timing["step_exact"], rel=1e-5)
    assert set(stored["targets"]["every_network_beats_its_classical"]) == {"steps", "kernels", "correction", "hqs"}
