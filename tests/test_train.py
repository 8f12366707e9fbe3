"""The trainer: the four paradigms train and beat classical ISTA, every scheme runs and improves,
resume is exact, checkpoints are atomic, NaN stops training cleanly, DDP equals one process, and
`unfoldgen train` writes what it promises.

Small lasso throughout: m=20, n=40, p=0.1, SNR 40 dB, K=10 layers, at most 300 steps, fixed seeds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unfoldgen import cli
from unfoldgen.data import SparseSource, detection_source, rpca_source, sparse_source
from unfoldgen.training import (
    CHECKPOINT,
    MODEL_FILE,
    Config,
    ConfigError,
    TrainingDivergedError,
    atomic_save,
    describe,
    fit,
    fit_restarting,
    load_checkpoint,
    load_spec,
    load_trained,
    plan,
    prepare,
)

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
LASSO = SPECS / "lasso.unf"
K = 10
SOURCE = sparse_source(m=20, n=40, p=0.1, snr_db=40.0, seed=0)
DATA = "sparse:m=20,n=40,p=0.1,snr=40"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: intra-op threads only add contention (and 2-core CI machines are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(spec: str, unfold: str, source=SOURCE, **kwargs):
    return prepare(SPECS / spec, unfold, source, **kwargs)


def train(spec: str, unfold: str, config: Config, overrides=None):
    """Train ``unfold`` with ISTA-K as the baseline; the result's metrics hold both curves."""
    prepared = build(spec, unfold, layers=K, overrides=overrides)
    ista = build("lasso.unf", "ista", layers=K).model
    return fit(prepared.model, prepared.binding, config, baselines={"ISTA": ista}, progress=False)


def gain_db(result) -> float:
    """How far the trained network's validation NMSE at layer K is below classical ISTA-K's."""
    validation = result.metrics["validation"]
    return validation["ISTA"]["nmse_db"][-1] - validation["trained"]["nmse_db"][-1]


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------- the four paradigms

PARADIGMS = {
    # name: (spec, unfold, lr, steps, overrides, required gain in dB over ISTA-K)
    "1 learned hyperparameters (per layer)": ("lasso.unf", "ista", 5e-2, 150, None, 3.0),
    "1 learned hyperparameters (shared)": ("sparse_paradigms.unf", "ista_tied", 5e-2, 100, None, 1.0),
    "2 learned weights (LISTA-CP)": ("lasso.unf", "lista_cp", 2e-2, 200, None, 6.0),
    "2 analytic weights, learned steps (ALISTA)": ("alista.unf", "alista", 5e-2, 150, {"W": "analytic"}, 6.0),
    "3 learned correction (mlp per layer)": ("lasso.unf", "ista_corrected", 1e-2, 100, None, 1.0),
    "4 learned shrinkage (conv1d per layer)": ("sparse_paradigms.unf", "ista_learned_shrink", 1e-2, 80, None, 1.0),
}
FAST = {"val_size": 300, "val_every": 50}


@pytest.mark.parametrize("paradigm", list(PARADIGMS))
def test_each_paradigm_beats_classical_ista(paradigm):
    spec, unfold, lr, steps, overrides, required = PARADIGMS[paradigm]
    result = train(spec, unfold, Config(steps=steps, lr=lr, **FAST), overrides)
    gain = gain_db(result)
    print(f"{paradigm}: {gain:.2f} dB over ISTA-{K}")
    assert gain >= required, f"{paradigm}: {gain:.2f} dB over ISTA-{K}, expected at least {required}"
    if unfold != "ista_learned_shrink" and overrides is None:
        # untrained, the network was classical ISTA (a net replacing the prox aside)
        np.testing.assert_allclose(
            result.metrics["validation"]["classical"]["nmse_db"],
            result.metrics["validation"]["ISTA"]["nmse_db"],
            atol=1e-3,
        )
    assert (
        result.metrics["validation"]["trained"]["nmse_db"][-1] < result.metrics["validation"]["trained"]["nmse_db"][0]
    )


@pytest.mark.parametrize(
    ("spec", "unfold", "classical_spec", "classical", "source"),
    [
        ("lasso.unf", "ista_corrected", "lasso.unf", "ista", SOURCE),
        ("sparse_paradigms.unf", "ista_conv_corrected", "lasso.unf", "ista", SOURCE),
        ("rpca_paradigms.unf", "rpca_corrected", "rpca.unf", "rpca_ista", rpca_source(8, 6, rank=2)),
        ("detection_paradigms.unf", "pgd_corrected", "box_ls.unf", "pgd", detection_source(12, 6)),
    ],
)
def test_untrained_correction_is_the_classical_solver(spec, unfold, classical_spec, classical, source):
    """Paradigm 3: the correction net starts at zero output, so every layer equals the classical one."""
    corrected = build(spec, unfold, source, dtype=torch.float64).model
    reference = build(classical_spec, classical, source, dtype=torch.float64, layers=corrected.layers).model
    info = describe(corrected)
    assert any(paradigm == 3 for paradigm, _ in info.learned.values())
    assert corrected.parameter_counts()[3] > 0
    inputs, _ = build(spec, unfold, source).binding.validation(16)
    inputs = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in inputs.items()}
    with torch.no_grad():
        for ours, theirs in zip(
            corrected(**inputs, return_iterates=True), reference(**inputs, return_iterates=True), strict=True
        ):
            for a, b in zip(
                ours if isinstance(ours, tuple) else (ours,),
                theirs if isinstance(theirs, tuple) else (theirs,),
                strict=True,
            ):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("spec", "unfold", "source", "lr"),
    [
        ("rpca_paradigms.unf", "rpca_corrected", rpca_source(8, 8, rank=2, outliers=0.1, noise=0.01), 3e-3),
        ("detection_paradigms.unf", "pgd_corrected", detection_source(16, 8, "bpsk", 10.0), 3e-3),
    ],
)
def test_conv2d_and_mlp_corrections_train_on_rpca_and_detection(spec, unfold, source, lr):
    prepared = build(spec, unfold, source)
    result = fit(prepared.model, prepared.binding, Config(steps=40, batch=32, lr=lr, val_size=200), progress=False)
    validation = result.metrics["validation"]
    assert validation["trained"]["nmse_db"][-1] < validation["classical"]["nmse_db"][-1] - 0.5


# ---------------------------------------------------------------------- per layer and shared


def variant(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


LEARNABLE_KINDS = {
    # kind: (spec, unfold, the learn statement, the learned name)
    "hyper": ("lasso.unf", "ista", "learn mu, lam per layer", "mu"),
    "param": ("lasso.unf", "ista", "learn mu, lam per layer", "lam"),
    "weight": ("lasso.unf", "lista_cp", "learn W, theta per layer", "W"),
    "net (correction)": ("lasso.unf", "ista_corrected", "learn c per layer", "c"),
    "net (replacing a step)": ("sparse_paradigms.unf", "ista_learned_shrink", "learn shrink per layer", "shrink"),
    "conv2d net": ("rpca_paradigms.unf", "rpca_corrected", "learn c per layer", "c"),
    "data": ("sparse_paradigms.unf", "ista_learned_operator", "learn A shared", "A"),
}


@pytest.mark.parametrize("kind", list(LEARNABLE_KINDS))
def test_per_layer_and_shared_for_every_learnable_kind(kind):
    spec, unfold, statement, name = LEARNABLE_KINDS[kind]
    text = (SPECS / spec).read_text()
    source = rpca_source(6, 6) if spec.startswith("rpca") else SOURCE
    counts = {}
    for mode in ("per layer", "shared"):
        changed = variant(text, statement, statement.removesuffix(" per layer").removesuffix(" shared") + " " + mode)
        model = prepare(SPECS / spec, unfold, source, text=changed, layers=4).model
        paradigm, per_layer = describe(model).learned[name]
        assert per_layer == (mode == "per layer")
        value = getattr(model, name)
        size = sum(p.numel() for p in value.parameters()) if isinstance(value, torch.nn.Module) else value.numel()
        counts[mode] = size
        assert model.parameter_counts()[paradigm] >= size
    assert counts["per layer"] == 4 * counts["shared"]


def test_shared_values_stay_tied_and_per_layer_values_separate():
    tied = train("sparse_paradigms.unf", "ista_tied", Config(steps=30, lr=3e-2, val_size=200)).metrics["learned"]
    assert not tied["mu"]["per_layer"] and isinstance(tied["mu"]["value"], float)
    assert tied["mu"]["value"] != tied["mu"]["initial_value"]
    untied = train("lasso.unf", "ista", Config(steps=30, lr=3e-2, val_size=200)).metrics["learned"]
    assert untied["mu"]["per_layer"] and len(untied["mu"]["value"]) == K
    assert len(set(untied["mu"]["value"])) == K and len(set(untied["mu"]["initial_value"])) == 1


# ---------------------------------------------------------------------- schemes


def test_unsupervised_lowers_the_objective_below_ista():
    result = train("lasso.unf", "ista", Config(scheme="unsupervised", steps=150, lr=5e-2, **FAST))
    validation = result.metrics["validation"]
    trained, ista = validation["trained"]["objective"][-1], validation["ISTA"]["objective"][-1]
    print(f"unsupervised: objective at layer {K} {trained:.4f} against ISTA-{K} {ista:.4f}")
    assert trained < 0.9 * ista
    assert all("val_objective" in record for record in result.history)


def test_deep_supervision_improves_on_ista():
    config = Config(scheme="deep-supervision", steps=150, lr=2e-2, layer_weights="linear", **FAST)
    result = train("lasso.unf", "lista_cp", config)
    print(f"deep supervision: {gain_db(result):.2f} dB over ISTA-{K}")
    assert gain_db(result) >= 3.0
    validation = result.metrics["validation"]
    assert all(t < c for t, c in zip(validation["trained"]["nmse_db"], validation["ISTA"]["nmse_db"], strict=True))


def test_deep_supervision_weights_are_checked():
    prepared = build("lasso.unf", "ista", layers=3)
    with pytest.raises(ValueError, match="3 non-negative numbers"):
        fit(
            prepared.model,
            prepared.binding,
            Config(scheme="deep-supervision", steps=2, layer_weights=[1, 2]),
            progress=False,
        )


def test_layerwise_improves_on_ista():
    result = train("lasso.unf", "lista_cp", Config(scheme="layerwise", steps=300, lr=2e-2, **FAST))
    print(f"layerwise: {gain_db(result):.2f} dB over ISTA-{K}")
    assert gain_db(result) >= 3.0
    assert [p["name"] for p in result.metrics["phases"][:3]] == ["layer 1", "fine-tune 1..1", "layer 2"]
    assert result.metrics["phases"][1]["lr"] == pytest.approx(2e-2 * 0.2)


@pytest.mark.parametrize(("unfold", "name"), [("lista_cp", "W"), ("ista_corrected", "c")])
def test_layerwise_trains_one_layer_at_a_time(unfold, name, tmp_path):
    """After the first phase only layer 1 has moved; after the second (layers 1..2 fine-tuned
    with K = 2 active) layers 3.. are still untouched."""
    prepared = build("lasso.unf", unfold, layers=4)
    before = {k: v.clone() for k, v in prepared.model.state_dict().items()}
    steps = plan(type("C", (), {"scheme": "layerwise", "steps": 16, "lr": 1e-2, "finetune_factor": 0.2})(), 4)
    assert [p.steps for p in steps] == [2] * 8
    fit(
        prepared.model,
        prepared.binding,
        Config(scheme="layerwise", steps=16, lr=1e-2, val_size=100),
        stop_after=2,
        progress=False,
    )
    after = prepared.model.state_dict()

    def layer_changed(index: int) -> bool:
        if name == "W":
            return not torch.equal(before[f"W.{index}"], after[f"W.{index}"])  # one parameter per layer
        keys = [k for k in before if k.startswith(f"c.{index}.")]
        return any(not torch.equal(before[k], after[k]) for k in keys)

    assert layer_changed(0)
    assert not any(layer_changed(i) for i in (1, 2, 3))
    assert prepared.model.layers == 4  # restored after training


# ---------------------------------------------------------------------- resume, checkpoints, NaN


@pytest.mark.parametrize(
    ("unfold", "scheme", "steps", "stop"),
    [("ista_corrected", "supervised", 40, 23), ("lista_cp", "layerwise", 48, 9)],
)
def test_resume_continues_exactly(unfold, scheme, steps, stop, tmp_path):
    config = Config(scheme=scheme, steps=steps, lr=3e-3, val_size=100, val_every=10, checkpoint_every=10)
    whole = build("lasso.unf", unfold, layers=4)
    reference = fit(whole.model, whole.binding, config, progress=False)

    first = build("lasso.unf", unfold, layers=4)
    stopped = fit(first.model, first.binding, config, out=tmp_path, stop_after=stop, progress=False)
    assert stopped.stopped == "interrupted" and stopped.steps == stop
    assert load_checkpoint(tmp_path)["step"] == stop
    second = build("lasso.unf", unfold, layers=4, seed=123)  # a different start: everything comes from the checkpoint
    resumed = fit(second.model, second.binding, config, out=tmp_path, resume=True, progress=False)
    assert resumed.steps == reference.steps == steps
    assert state_equal(second.model.state_dict(), whole.model.state_dict())
    assert resumed.metrics["loss"] == reference.metrics["loss"]
    assert resumed.history == reference.history


def test_resume_with_more_steps_extends_a_finished_run(tmp_path):
    prepared = build("lasso.unf", "ista", layers=3)
    settings = {"progress": False, "out": tmp_path}
    fit(prepared.model, prepared.binding, Config(steps=10, lr=1e-2, val_size=50), **settings)
    extended = fit(prepared.model, prepared.binding, Config(steps=16, lr=1e-2, val_size=50), resume=True, **settings)
    assert extended.steps == 16 and len(extended.metrics["loss"]) == 16
    assert extended.metrics["config"]["milestones"] == [5, 7]  # the schedule of the first run is kept


def test_resume_refuses_different_settings(tmp_path):
    prepared = build("lasso.unf", "ista", layers=3)
    fit(prepared.model, prepared.binding, Config(steps=4, lr=1e-2, val_size=50), out=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"batch: 64 in the checkpoint, 32 now"):
        fit(
            prepared.model,
            prepared.binding,
            Config(steps=8, lr=2e-2, batch=32, val_size=50),
            out=tmp_path,
            resume=True,
            progress=False,
        )


def test_resume_takes_a_setting_newer_than_the_checkpoint_as_its_default(tmp_path):
    prepared = build("lasso.unf", "ista", layers=3)
    config = Config(steps=4, val_size=50)
    fit(prepared.model, prepared.binding, config, out=tmp_path, stop_after=2, progress=False)
    checkpoint = load_checkpoint(tmp_path)
    del checkpoint["config"]["loss"]  # as if written before Config had `loss`
    atomic_save(checkpoint, tmp_path / CHECKPOINT)
    assert fit(prepared.model, prepared.binding, config, out=tmp_path, resume=True, progress=False).steps == 4


def test_atomic_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / CHECKPOINT
    atomic_save({"step": 1, "weights": torch.arange(5.0)}, path)
    real_save = torch.save

    def crash_mid_write(obj, stream, *args, **kwargs):
        real_save({"step": 2, "weights": torch.zeros(100_000)}, stream)
        stream.seek(stream.tell() // 2)
        stream.truncate()
        raise OSError("simulated crash mid-write")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_save({"step": 2}, path)
    monkeypatch.undo()
    restored = torch.load(path, weights_only=True)
    assert restored["step"] == 1 and torch.equal(restored["weights"], torch.arange(5.0))
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT]


def test_crash_while_training_leaves_a_loadable_checkpoint(tmp_path, monkeypatch):
    config = Config(steps=20, lr=1e-2, val_size=50, val_every=5, checkpoint_every=5)
    prepared = build("lasso.unf", "ista", layers=3)
    fit(prepared.model, prepared.binding, config, out=tmp_path, stop_after=10, progress=False)
    good = load_checkpoint(tmp_path)

    def crash(obj, stream, *args, **kwargs):
        stream.write(b"\x80partial")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        fit(prepared.model, prepared.binding, config, out=tmp_path, resume=True, progress=False)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    loaded = load_checkpoint(tmp_path)
    assert loaded["step"] == good["step"] == 10
    assert state_equal(loaded["model"], good["model"])


class PoisonedSource(SparseSource):
    """Sparse recovery whose batch at one step carries a NaN."""

    poison_step: int = 5

    def train_batch(self, step: int, size: int) -> dict:
        batch = super().train_batch(step, size)
        if step == self.poison_step:
            batch["y"][0, 0] = np.nan
        return batch


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    poisoned = PoisonedSource(**{f: getattr(SOURCE, f) for f in SOURCE.__dataclass_fields__})
    config = Config(steps=20, lr=1e-2, val_size=50, checkpoint_every=5)
    prepared = build("lasso.unf", "ista", poisoned, layers=3)
    with pytest.raises(
        TrainingDivergedError,
        match=r"stopped at step 6: the loss is nan: the training batch holds NaN/Inf values in 'y'; fix the data; "
        r"the last good state \(after 5 steps\) is in .*checkpoint\.pt",
    ):
        fit(prepared.model, prepared.binding, config, out=tmp_path, progress=False)
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint["step"] == 5 and checkpoint["status"] == "running"
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    clean = build("lasso.unf", "ista", layers=3)
    fit(clean.model, clean.binding, config, stop_after=5, progress=False)
    assert state_equal(checkpoint["model"], clean.model.state_dict())


def test_warmup_raises_the_learning_rate_linearly(capsys):
    prepared = build("lasso.unf", "ista", layers=3)
    result = fit(prepared.model, prepared.binding, Config(steps=8, warmup=4, val_every=1, val_size=50), progress=False)
    assert [record["lr"] for record in result.history] == pytest.approx(
        [0.0025, 0.005, 0.0075, 0.01, 0.003, 0.003, 0.0009, 0.0009]  # then the milestones at 4 and 6
    )
    code, _, err = run_cli(capsys, "train", LASSO, "--unfold", "ista", "--data", DATA, "--warmup", "-1")
    assert code == 2 and "--warmup -1: expected an integer ≥ 0" in err


def test_early_stopping_keeps_the_best_parameters():
    prepared = build("lasso.unf", "ista", layers=3)
    result = fit(
        prepared.model,
        prepared.binding,
        Config(steps=100, lr=1e-12, val_every=5, patience=2, val_size=50),
        progress=False,
    )
    assert result.stopped == "early stopping" and result.steps == 15


# ---------------------------------------------------------------------- API details


def test_fit_accepts_a_model_built_by_hand():
    """A generated class used directly (no spec at hand): names and layers are read from the module."""
    loaded = load_spec(LASSO)
    model = loaded.model_class("lista_cp")(A=torch.tensor(SOURCE.fixed["A"], dtype=torch.float32), layers=4)
    info = describe(model)
    assert info.inputs == ("y",) and info.variables == ("x",) and info.learned == {"W": (2, True), "theta": (1, True)}
    result = fit(model, SOURCE, Config(steps=20, lr=1e-2, val_size=100), progress=False)
    assert result.nmse_db[-1] < result.metrics["validation"]["classical"]["nmse_db"][-1]


@pytest.mark.parametrize("unfold", ["admm", "lista_cp", "ista_corrected"])
def test_a_module_built_by_hand_describes_itself_as_the_spec_does(unfold):
    """INPUTS / VARIABLES / OUTPUTS of the generated class give the exact interface (admm outputs
    its split variable z, which estimates x) without the spec."""
    loaded = load_spec(LASSO)
    by_hand = loaded.model_class(unfold)(A=torch.tensor(SOURCE.fixed["A"], dtype=torch.float32), layers=3)
    from_spec = build("lasso.unf", unfold, layers=3).model
    assert describe(by_hand) == describe(from_spec)


def test_fit_rejects_bad_requests():
    prepared = build("lasso.unf", "fista", layers=3)
    with pytest.raises(ValueError, match="learns nothing"):
        fit(prepared.model, prepared.binding, Config(steps=2), progress=False)
    prepared = build("lasso.unf", "ista", layers=3)
    with pytest.raises(ValueError, match="scheme='greedy': expected one of supervised, unsupervised"):
        Config(scheme="greedy", steps=2)
    with pytest.raises(ValueError, match="needs at least 6 steps"):
        fit(prepared.model, prepared.binding, Config(scheme="layerwise", steps=4), progress=False)


# ---------------------------------------------------------------------- the command line


def test_every_setting_is_one_cli_option_with_the_config_default(capsys):
    """The options of `unfoldgen train` are made from Config's fields: each field (but the one
    kept off the command line) is an option whose help shows the field's default."""
    cli.main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for spec in dataclasses.fields(Config):
        if spec.name == "restore_best":
            continue
        flag = "--weights" if spec.name == "layer_weights" else "--" + spec.name.replace("_", "-")
        assert flag in shown, flag
        if spec.default is not None:
            assert f"(default: {spec.default})" in shown, spec.name


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_train_writes_checkpoint_metrics_plots_and_resumes(tmp_path, capsys):
    common = ["train", LASSO, "--unfold", "ista", "--data", DATA, "--layers", 5, "--steps", 30, "--val-every", 10]
    common += ["--val-size", 200, "--baseline", "fista", "--no-progress"]
    code, out, err = run_cli(capsys, *common, "-o", tmp_path / "whole")
    assert code == 0, err
    assert "ista" in out and "fista" in out and "classical" in out
    folder = tmp_path / "whole"
    for name in (CHECKPOINT, MODEL_FILE, "metrics.json", "nmse_per_layer.png", "hyperparameters.png"):
        assert (folder / name).is_file(), name
    assert (folder / "nmse_per_layer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "generated" / "ista" / "model.py").is_file()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert len(metrics["loss"]) == 30 and metrics["stopped"] == "completed"
    assert set(metrics["validation"]) == {"trained", "classical", "fista"}
    assert len(metrics["validation"]["trained"]["nmse_db"]) == 5
    assert metrics["learned"]["mu"]["per_layer"] and len(metrics["learned"]["mu"]["value"]) == 5
    assert metrics["parameter_counts"] == {"1": 5, "2": 5, "3": 0, "4": 0}

    code, _, err = run_cli(capsys, *common, "-o", tmp_path / "split", "--stop-after", 13)
    assert code == 0, err
    code, out, err = run_cli(capsys, "train", "--resume", tmp_path / "split", "--no-progress")
    assert code == 0, err
    whole = torch.load(folder / MODEL_FILE, weights_only=True)["model"]
    split = torch.load(tmp_path / "split" / MODEL_FILE, weights_only=True)["model"]
    assert state_equal(whole, split)
    assert state_equal(load_trained(folder).state_dict(), whole)


def test_cli_train_from_npz(tmp_path, capsys):
    sample = SOURCE.validation(300)
    np.savez(tmp_path / "lasso.npz", A=SOURCE.fixed["A"], y=sample["y"], x=sample["x"])
    code, out, err = run_cli(
        capsys, "train", LASSO, "--unfold", "lista_cp", "--data", tmp_path / "lasso.npz", "--layers", 4,
        "--steps", 20, "--batch", 32, "--no-progress", "-o", tmp_path / "run",
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["validation_size"] == 30 and metrics["steps_done"] == 20  # the file's held-out tenth
    assert "(30 samples," in out


def test_cli_train_from_a_complex_npz(tmp_path, capsys):
    """Complex arrays in an .npz fill complex declarations; the trained network beats ISTA's 4 steps."""
    rng = np.random.default_rng(0)
    m, n, count = 12, 24, 200

    def complex_normal(*shape: int) -> np.ndarray:
        return (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / np.sqrt(2)

    A = complex_normal(m, n) / np.sqrt(m)
    x = complex_normal(count, n) * (rng.random((count, n)) < 0.15)
    y = x @ A.T + 0.01 * complex_normal(count, m)
    np.savez(tmp_path / "complex.npz", A=A, y=y, x=x)
    code, _, err = run_cli(
        capsys, "train", SPECS / "complex_lasso.unf", "--unfold", "complex_ista", "--data", tmp_path / "complex.npz",
        "--layers", 4, "--steps", 30, "--batch", 32, "--no-progress", "-o", tmp_path / "run",
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["validation_size"] == 20 and metrics["steps_done"] == 30
    validation = metrics["validation"]
    assert validation["trained"]["nmse_db"][-1] < validation["classical"]["nmse_db"][-1] - 0.5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--unfold", "ista"], "needs SPEC and --data"),
        (["--unfold", "ista", "--data", "sparse:m=20,n=40,zeta=3"], "key one of"),
        (["--unfold", "nope", "--data", DATA], "has no unfold 'nope'"),
        (["--data", DATA], "holds 7 unfold blocks"),
        (["--unfold", "ista", "--data", DATA, "--set", "bogus=1"], "no constructor argument 'bogus'"),
        (["--unfold", "pgd", "--data", DATA], "has no unfold 'pgd'"),
        (["--unfold", "ista", "--data", "rpca:m=5,n=5"], "`data A : real[m, n]` needs an array shared by all"),
    ],
)
def test_cli_train_usage_errors(args, message, capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", LASSO, *args, "--steps", 2, "-o", tmp_path)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_a_diverged_run_resumes_from_its_last_finite_state_with_a_lower_lr(tmp_path, capsys):
    """LISTA-CP at lr 10 without clipping blows up at step 4; the checkpoint of step 2 stays (the
    diverged state is never written), and --resume takes a lower --lr and finishes the run."""
    run = tmp_path / "run"
    args = ["train", LASSO, "--unfold", "lista_cp", "--data", DATA, "--layers", 5, "--steps", 20, "--lr", 10]
    code, _, err = run_cli(
        capsys, *args, "--clip", 0, "--checkpoint-every", 2, "--val-size", 50, "--no-progress", "-o", run
    )
    assert code == 1
    assert "training stopped at step 4: the gradient norm is inf. Try a lower learning rate" in err
    assert f"the last good state (after 2 steps) is in {run / CHECKPOINT}" in err and "Traceback" not in err
    checkpoint = load_checkpoint(run)
    assert checkpoint["step"] == 2 and all(torch.isfinite(v).all() for v in checkpoint["model"].values())

    code, _, err = run_cli(capsys, "train", "--resume", run, "--batch", 32, "--unfold", "ista")
    assert code == 2
    assert f"--resume {run}: --batch, --unfold cannot change when resuming" in err and "--lr" in err

    code, _, err = run_cli(capsys, "train", "--resume", run, "--lr", 1e-3, "--no-progress")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps_done"] == 20 and metrics["config"]["lr"] == 1e-3 and metrics["config"]["clip"] == 0
    assert all(math.isfinite(v) for v in metrics["loss"]) and math.isfinite(
        metrics["validation"]["trained"]["nmse_db"][-1]
    )


def test_fit_restarting_starts_again_from_the_initial_state_at_a_lower_lr():
    """LISTA-CP at lr 10 without clipping diverges; the restart at lr 10 · 1e-3 is the run a fresh
    model makes at that rate and the next seed, bit for bit."""
    config = Config(steps=12, lr=10.0, clip=0, val_size=50, val_every=6)
    prepared = build("lasso.unf", "lista_cp", layers=5)
    result = fit_restarting(prepared.model, prepared.binding, config, lr_factor=1e-3, progress=False)
    assert [restart["lr"] for restart in result.restarts] == [10.0]
    assert result.restarts[0]["diverged_at_step"] < 12 and result.steps == 12
    fresh = build("lasso.unf", "lista_cp", layers=5)
    direct = fit(fresh.model, fresh.binding, dataclasses.replace(config, lr=1e-2, seed=1), progress=False)
    assert state_equal(prepared.model.state_dict(), fresh.model.state_dict())
    assert result.metrics["loss"] == direct.metrics["loss"]

    again = build("lasso.unf", "lista_cp", layers=5)
    with pytest.raises(TrainingDivergedError, match=r"every one of 2 runs diverged, down to lr 9.9\b"):
        fit_restarting(again.model, again.binding, config, attempts=2, lr_factor=0.99, progress=False)
    for wrong, message in (({"attempts": 0}, "attempts=0"), ({"lr_factor": 1.0}, r"lr_factor=1.0: expected")):
        with pytest.raises(ConfigError, match=message):
            fit_restarting(again.model, again.binding, config, progress=False, **wrong)


# ---------------------------------------------------------------------- data parallel


def gloo_available() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_gloo_available()


@pytest.mark.skipif(not gloo_available(), reason="torch.distributed with gloo is not available")
def test_ddp_two_processes_equal_one_process(tmp_path, capsys):
    args = ["train", LASSO, "--unfold", "lista_cp", "--data", DATA, "--layers", 4, "--steps", 6, "--batch", 32]
    args += ["--dtype", "float64", "--val-size", 100, "--no-progress"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    launched = subprocess.run(
        [sys.executable, "-m", "unfoldgen", *map(str, args), "--nproc", "2", "-o", str(tmp_path / "ddp")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    code, _, err = run_cli(capsys, *args, "-o", tmp_path / "single")
    assert code == 0, err
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["processes"] == 2
    assert metrics["rank_max_parameter_difference"] <= 1e-12  # both ranks end identical
    ddp = torch.load(tmp_path / "ddp" / MODEL_FILE, weights_only=True)["model"]
    single = torch.load(tmp_path / "single" / MODEL_FILE, weights_only=True)["model"]
    initial = prepare(LASSO, "lista_cp", SOURCE, layers=4, dtype=torch.float64).model.state_dict()
    assert not torch.equal(single["W.0"], initial["W.0"])  # it trained
    for key in single:
        assert torch.allclose(ddp[key], single[key], rtol=0, atol=1e-6), key
    assert max(float((ddp[k] - single[k]).abs().max()) for k in single) < 1e-6
    assert not math.isnan(metrics["validation"]["trained"]["nmse_db"][-1])
