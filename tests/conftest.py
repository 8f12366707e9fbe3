"""The tests marked ``slow``, which ``make test-fast`` leaves out (``-m "not slow"``) so the edit loop
takes about 6 minutes on 2 cores (a third of the whole suite); ``make test`` and CI run every test.
Slow: trainings that must beat the classical solver, the studies, the exports (torch.compile, ONNX,
torch.export, drawings), DDP, the long generator runs, the tests that numba-compile a fresh spec's
kernels (no cache can serve them), and the tests that share a costly module fixture (named like a
test: every test using it is slow). Named here, in one place; ``tests/test_slow_marks.py`` checks
every name still exists."""

from __future__ import annotations

import pytest

EVERY_TEST = frozenset({"*"})
SLOW: dict[str, frozenset[str]] = {
    "test_exports.py": EVERY_TEST,
    "test_complex_kernels.py": frozenset(
        {
            "test_a_real_matrix_with_complex_iterates_batched",
            "test_per_sample_lipschitz_of_a_complex_variable",
            "test_complex64_kernels_never_promote",
            "test_fixed_point_of_complex_iterates",
            "test_a_real_matrix_solved_against_a_complex_vector",
        }
    ),
    "test_emitted_kernels.py": frozenset(
        {"test_per_sample_lipschitz_of_a_matrix_variable_runs", "test_fuzz_kernels_run_and_equal_torch"}
    ),
    "test_fuzz.py": frozenset({"test_generated_specs_compile_or_fail_cleanly"}),
    "test_generated.py": frozenset({"compiles", "standalone_run"}),  # fixtures: compiles in subprocesses
    "test_gradients.py": frozenset({"test_random_objectives", "test_random_objectives_with_huber"}),
    "test_layout.py": frozenset({"test_checkpointing_keeps_iterates_and_gradients"}),
    "test_reference.py": frozenset({"test_rpca_ista_monotone_and_stationary"}),
    "test_hostile.py": frozenset(
        {
            "test_every_generated_name_is_refused_or_harmless",
            "test_former_kernel_locals_are_user_names_in_both_backends",
            "test_accepted_generated_names_run_in_both_backends",
        }
    ),
    "test_library.py": frozenset({"test_function_numba", "test_prox", "test_projection"}),  # numba per entry
    "test_study_deblur.py": EVERY_TEST,
    "test_study_mri.py": EVERY_TEST,
    "test_kspace.py": frozenset({"test_the_trainer_fits_a_complex_network_on_the_source"}),
    "test_study_fixed_point.py": EVERY_TEST,
    "test_study_rpca.py": EVERY_TEST,
    "test_study_sparse.py": EVERY_TEST,
    "test_study_safe.py": EVERY_TEST,
    "test_bounds.py": frozenset({"test_per_layer_buffers_from_k_past_the_built_layers_in_numba"}),
    "test_train_safety.py": frozenset({"test_nproc_ranks_stop_with_the_launching_process"}),
    "test_train.py": frozenset(
        {
            "test_ddp_two_processes_equal_one_process",
            "test_each_paradigm_beats_classical_ista",
            "test_deep_supervision_improves_on_ista",
            "test_unsupervised_lowers_the_objective_below_ista",
            "test_layerwise_improves_on_ista",
            "test_per_layer_and_shared_for_every_learnable_kind",
            "test_conv2d_and_mlp_corrections_train_on_rpca_and_detection",
        }
    ),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = SLOW.get(item.path.name, frozenset())
        if names is EVERY_TEST or getattr(item, "originalname", item.name) in names or names & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
