"""Data sources: the synthetic generators' statistics, seeding by step, sources by name, and the
matching of arrays to a spec's data, inputs and variables (with clear errors for .npz files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unfoldgen.compiler import compile_text
from unfoldgen.data import (
    MODULATIONS,
    DataError,
    analytic_weight,
    bind,
    box_detection,
    detection_source,
    npz_source,
    robust_pca,
    rpca_source,
    sensing_matrix,
    slots_from_problem,
    source_from_string,
    sparse_recovery,
    sparse_source,
)

ROOT = Path(__file__).resolve().parent.parent
LASSO = ROOT / "specs" / "lasso.unf"
RPCA = ROOT / "specs" / "rpca.unf"
BOX = ROOT / "specs" / "box_ls.unf"


RENAMED_LASSO = """
problem sparse {
    dim m, n
    data Phi : real[m, n]
    input b : real[m]
    var s : real[n] = 0
    minimize 0.5 * sumsq(Phi @ s - b) + 0.1 * norm1(s)
}
unfold step from sparse {
    layers 2
    hyper mu : real = 1 / lipschitz(s)
    iterate { s = prox[mu * 0.1 * norm1](s - mu * grad(s)) }
}
"""


def problem_slots(path: Path, text: str | None = None):
    compiled = compile_text(text if text is not None else path.read_text(), str(path))
    return slots_from_problem(compiled.checked.unfolds[0].problem)


# ---------------------------------------------------------------------- generators


def test_sensing_matrix_has_unit_columns_and_is_seeded():
    A = sensing_matrix(20, 40, seed=3)
    assert A.shape == (20, 40)
    np.testing.assert_allclose(np.linalg.norm(A, axis=0), 1.0, atol=1e-12)
    np.testing.assert_array_equal(A, sensing_matrix(20, 40, seed=3))
    assert not np.array_equal(A, sensing_matrix(20, 40, seed=4))


def test_sparse_recovery_sparsity_and_snr():
    A = sensing_matrix(30, 60, seed=0)
    sample = sparse_recovery(A, 4000, p=0.1, snr_db=20.0, seed=1)
    assert sample.y.shape == (4000, 30) and sample.x.shape == (4000, 60)
    assert abs(np.mean(sample.x != 0) - 0.1) < 0.01
    noise = sample.y - sample.x @ A.T
    snr = 10 * np.log10(np.sum((sample.x @ A.T) ** 2) / np.sum(noise**2))
    assert abs(snr - 20.0) < 0.3
    noiseless = sparse_recovery(A, 10, p=0.1, snr_db=None, seed=1)
    np.testing.assert_allclose(noiseless.y, noiseless.x @ A.T)


def test_robust_pca_rank_and_outliers():
    sample = robust_pca(200, 15, 12, rank=3, outliers=0.1, noise=0.0, seed=0)
    assert sample.D.shape == sample.L.shape == sample.S.shape == (200, 15, 12)
    assert all(np.linalg.matrix_rank(L) == 3 for L in sample.L[:10])
    assert abs(np.mean(sample.S != 0) - 0.1) < 0.01
    np.testing.assert_allclose(sample.D, sample.L + sample.S)
    magnitudes = np.abs(sample.S[sample.S != 0])
    assert magnitudes.min() >= 2.5 and magnitudes.max() <= 5.0
    with pytest.raises(DataError, match="rank"):
        robust_pca(1, 4, 4, rank=5)


@pytest.mark.parametrize("modulation", ["bpsk", "4pam"])
def test_box_detection_symbols_channel_and_snr(modulation):
    sample = box_detection(3000, 16, 8, modulation, snr_db=10.0, seed=0)
    assert sample.H.shape == (3000, 16, 8) and sample.y.shape == (3000, 16) and sample.x.shape == (3000, 8)
    assert set(np.unique(sample.x)) == set(MODULATIONS[modulation])
    assert np.all(np.abs(sample.x) <= 1)
    clean = np.einsum("bmn,bn->bm", sample.H, sample.x)
    snr = 10 * np.log10(np.sum(clean**2) / np.sum((sample.y - clean) ** 2))
    assert abs(snr - 10.0) < 0.3
    assert abs(np.var(sample.H) - 1 / 16) < 0.005
    with pytest.raises(DataError, match="modulation"):
        box_detection(1, 4, 2, "qam16")


def test_analytic_weight_has_unit_diagonal_and_lower_coherence():
    A = sensing_matrix(20, 40, seed=0)
    W = analytic_weight(A)
    gram = W.T @ A
    np.testing.assert_allclose(np.diag(gram), 1.0, atol=1e-10)
    off = gram - np.diag(np.diag(gram))
    off_a = A.T @ A - np.eye(40)
    assert np.linalg.norm(off) < np.linalg.norm(off_a)
    # each column is optimal: no feasible perturbation (keeping a_i^T w = 1) lowers ||A^T w||
    rng = np.random.default_rng(0)
    for i in range(3):
        direction = rng.normal(size=20)
        direction -= A[:, i] * (A[:, i] @ direction) / (A[:, i] @ A[:, i])
        for t in (1e-3, -1e-3):
            assert np.linalg.norm(A.T @ (W[:, i] + t * direction)) >= np.linalg.norm(A.T @ W[:, i])


# ---------------------------------------------------------------------- sources


def test_batches_are_functions_of_seed_and_step():
    source = sparse_source(10, 20, 0.2, 30.0, seed=5)
    first = source.train_batch(7, 16)
    np.testing.assert_array_equal(first["y"], sparse_source(10, 20, 0.2, 30.0, seed=5).train_batch(7, 16)["y"])
    assert not np.array_equal(first["y"], source.train_batch(8, 16)["y"])
    assert not np.array_equal(first["y"], sparse_source(10, 20, 0.2, 30.0, seed=6).train_batch(7, 16)["y"])
    validation = source.validation(50)
    np.testing.assert_array_equal(validation["x"], source.validation(50)["x"])
    # the validation stream is not any training batch
    assert not any(np.array_equal(validation["x"][:16], source.train_batch(s, 16)["x"]) for s in range(20))


def test_source_from_string():
    source = source_from_string("sparse:m=12,n=30,p=0.2,snr=25,seed=3")
    assert (source.m, source.n, source.p, source.snr_db, source.seed) == (12, 30, 0.2, 25.0, 3)
    assert source.fixed["A"].shape == (12, 30)
    assert source_from_string("sparse:snr=inf").snr_db is None
    assert source_from_string("rpca:m=6,n=5,rank=1").validation(2)["D"].shape == (2, 6, 5)
    assert source_from_string("detection:modulation=4pam").modulation == "4pam"
    assert source_from_string("sparse", seed=9).seed == 9
    with pytest.raises(DataError, match="unknown data source"):
        source_from_string("images:m=3")
    with pytest.raises(DataError, match="key one of"):
        source_from_string("sparse:q=3")
    with pytest.raises(DataError, match="not a valid int"):
        source_from_string("sparse:m=many")
    with pytest.raises(DataError, match="no such file"):
        source_from_string("missing.npz")


# ---------------------------------------------------------------------- binding to a spec


def test_bind_by_name_and_by_role():
    binding = bind(sparse_source(20, 40), problem_slots(LASSO))
    assert binding.names == {"A": "A", "y": "y", "x": "x"}
    assert binding.dims == {"m": 20, "n": 40}
    inputs, targets = binding.train_batch(0, 8)
    assert inputs["y"].shape == (8, 20) and targets["x"].shape == (8, 40)
    slots = problem_slots(LASSO, RENAMED_LASSO)
    binding = bind(sparse_source(20, 40), slots)
    assert binding.names == {"Phi": "A", "b": "y", "s": "x"}
    inputs, targets = binding.validation(4)
    assert set(inputs) == {"b"} and set(targets) == {"s"}
    assert bind(rpca_source(6, 5), problem_slots(RPCA)).names == {"D": "D", "L": "L", "S": "S"}
    assert bind(detection_source(8, 4), problem_slots(BOX)).names == {"H": "H", "y": "y", "x": "x"}


def test_bind_checks_fixed_sizes_and_roles():
    text = (
        RENAMED_LASSO.replace("real[m, n]", "real[m, 30]").replace("real[n]", "real[30]").replace("dim m, n", "dim m")
    )
    with pytest.raises(DataError, match=r"has shape \(20, 40\); expected \(m, 30\)"):
        bind(sparse_source(20, 40), problem_slots(LASSO, text))
    with pytest.raises(DataError, match=r"no array for `var L : real\[m, n\]` \(arrays of that role: x \(40,\)\)"):
        bind(sparse_source(20, 40), problem_slots(RPCA))
    # a per-sample channel cannot be the spec's shared data operand
    text = BOX.read_text().replace("input H", "data H")
    with pytest.raises(DataError, match="shared by all samples"):
        bind(detection_source(8, 4), problem_slots(BOX, text))
    # ... but a shared operand can feed a per-sample input
    text = RENAMED_LASSO.replace("data Phi", "input Phi")
    binding = bind(sparse_source(20, 40), problem_slots(LASSO, text))
    inputs, _ = binding.train_batch(0, 3)
    assert inputs["Phi"].shape == (3, 20, 40)
    np.testing.assert_array_equal(inputs["Phi"][2], binding.source.fixed["A"])


# ---------------------------------------------------------------------- npz files


def write_npz(folder: Path, **arrays: np.ndarray) -> Path:
    path = folder / "data.npz"
    np.savez(path, **arrays)
    return path


def test_npz_source_splits_and_batches(tmp_path):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 9))
    x = rng.normal(size=(50, 9))
    path = write_npz(tmp_path, A=A, y=x @ A.T, x=x)
    source = npz_source(path, validation_fraction=0.2, seed=1)
    binding = bind(source, problem_slots(LASSO))
    assert binding.dims == {"m": 6, "n": 9}
    np.testing.assert_array_equal(binding.data["A"], A)
    inputs, targets = binding.validation(1000)
    assert inputs["y"].shape == (10, 6) and targets["x"].shape == (10, 9)
    batch, truth = binding.train_batch(3, 8)
    again, _ = binding.train_batch(3, 8)
    np.testing.assert_array_equal(batch["y"], again["y"])
    np.testing.assert_allclose(batch["y"], truth["x"] @ A.T)
    held = {tuple(row) for row in targets["x"]}
    for step in range(10):
        assert not {tuple(row) for row in binding.train_batch(step, 8)[1]["x"]} & held


def test_npz_missing_array_is_named(tmp_path):
    path = write_npz(tmp_path, A=np.ones((6, 9)), x=np.ones((5, 9)))
    with pytest.raises(DataError, match=r"missing array 'y' for `input y : real\[m\]`; the file holds A \(6, 9\)"):
        bind(npz_source(path), problem_slots(LASSO))


def test_npz_ground_truth_is_optional_without_supervision(tmp_path):
    path = write_npz(tmp_path, A=np.ones((6, 9)), y=np.ones((5, 6)))
    with pytest.raises(DataError, match="missing array 'x'"):
        bind(npz_source(path), problem_slots(LASSO))
    binding = bind(npz_source(path), problem_slots(LASSO), require_targets=False)
    assert binding.train_batch(0, 2)[1] == {}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"A": np.ones((6, 9)), "y": np.ones((5, 7)), "x": np.ones((5, 9))}, r"'y'.*\(5, 7\).*\(N, m\) with m = 6"),
        ({"A": np.ones((6, 9)), "y": np.ones((5, 6)), "x": np.ones((5, 8))}, r"'x'.*\(N, n\) with n = 9"),
        ({"A": np.ones((6, 9, 1)), "y": np.ones((5, 6)), "x": np.ones((5, 9))}, r"'A'.*\(6, 9, 1\); expected \(m, n\)"),
        ({"A": np.ones((6, 9)), "y": np.ones(6), "x": np.ones((5, 9))}, r"'y'.*samples on axis 0"),
        ({"A": np.ones((6, 9)), "y": np.ones((4, 6)), "x": np.ones((5, 9))}, r"'x' holds 5 samples.*hold 4"),
        ({"A": np.ones((6, 9)), "y": np.array([["a"] * 6] * 5), "x": np.ones((5, 9))}, "expected real numbers"),
    ],
)
def test_npz_misshaped_arrays(tmp_path, arrays, message):
    path = write_npz(tmp_path, **arrays)
    with pytest.raises(DataError, match=message):
        bind(npz_source(path), problem_slots(LASSO))


def test_npz_complex_arrays_fill_complex_declarations_only(tmp_path):
    rng = np.random.default_rng(1)
    A = rng.normal(size=(6, 9)) + 1j * rng.normal(size=(6, 9))
    y = rng.normal(size=(5, 6)) + 1j * rng.normal(size=(5, 6))
    x = rng.normal(size=(5, 9))  # a real array for a complex variable: its imaginary part is 0
    source = npz_source(write_npz(tmp_path, A=A, y=y, x=x))
    bind(source, problem_slots(ROOT / "specs" / "complex_lasso.unf"))
    assert source.fixed["A"].dtype == np.complex128
    np.testing.assert_array_equal(source.fixed["A"], A)
    drawn = source.draw(3, [0])
    assert np.iscomplexobj(drawn["y"])
    with pytest.raises(DataError, match=r"'A' is complex \(complex128\), but `data A : real\[m, n\]` is real"):
        bind(npz_source(write_npz(tmp_path, A=A, y=y.real, x=x)), problem_slots(LASSO))


def test_npz_unreadable(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match=r"not an \.npz file; expected a zip archive"):
        npz_source(path)
    np.savez(path, A=np.ones((50, 50)))
    path.write_bytes(path.read_bytes()[:300])  # truncated mid-write
    with pytest.raises(DataError, match=r"not a readable \.npz file"):
        npz_source(path)
