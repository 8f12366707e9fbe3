"""``model.certify()`` and ``unfoldgen certify``: the classical convergence conditions per layer.

- untrained ISTA satisfies every condition and certify says what that implies, also past depth;
- a step set above 2/L is reported violated in exactly the layers that have it;
- ALISTA with the analytic weight and LISTA-CP with the normalised coupled weight meet the
  weight conditions (diag = 1, generalized coherence < 1); with the plain start weight they do not;
- the condition kinds are one table, and every generated model has certify();
- the command prints the text or JSON and exits 1 when a condition fails.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unfoldgen import runtime_torch
from unfoldgen.data import analytic_weight
from unfoldgen.lower import Certificate

ROOT = Path(__file__).resolve().parent.parent
ista = importlib.import_module("generated.ista.model")
fista = importlib.import_module("generated.fista.model")
alista = importlib.import_module("generated.alista.model")
lista_cp = importlib.import_module("generated.lista_cp.model")
ista_safe = importlib.import_module("generated.ista_safe.model")
learned_prox = importlib.import_module("generated.ista_learned_prox.model")


def sensing(m: int = 15, n: int = 30, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=generator, dtype=torch.float64)
    return A / A.norm(dim=0, keepdim=True)


def lipschitz(A: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(A, ord=2) ** 2)


def by_condition(certificate: dict) -> dict:
    return {(check["condition"], check["what"]): check for check in certificate["checks"]}


def test_condition_kinds_are_one_table():
    kinds = set(Certificate.__doc__.split("kind: ")[1].split("\n\n")[0].replace("\n", " ").split("``")[1::2])
    assert {kind for kind in kinds if "_" in kind} == set(runtime_torch.CONDITIONS)
    for condition in runtime_torch.CONDITIONS.values():
        assert condition.__doc__


def test_untrained_ista_satisfies_every_condition():
    A = sensing()
    model = ista.Ista(A, layers=5)
    certificate = model.certify()
    checks = by_condition(certificate)
    assert set(checks) == {("step_size", "step mu"), ("nonnegative_scale", "prox scale mu·lam")}
    assert certificate["satisfied"] and certificate["lipschitz"]["x"] == pytest.approx(lipschitz(A), rel=1e-12)
    assert [entry["layer"] for entry in checks["step_size", "step mu"]["per_layer"]] == [0, 1, 2, 3, 4]
    text = certificate["text"]
    assert "no layer increases the objective" in text
    assert "Past the trained depth (layers > 5) every layer repeats layer 4: classical proximal gradient" in text
    json.dumps(certificate)  # plain data


def test_a_step_above_two_over_l_is_reported_violated():
    A = sensing()
    L = lipschitz(A)
    model = ista.Ista(A, layers=4)
    with torch.no_grad():
        model.mu[1].fill_(2.2 / L)
        model.mu[2].fill_(-0.1)
    certificate = model.certify()
    step = by_condition(certificate)["step_size", "step mu"]
    assert not step["satisfied"] and step["violated_layers"] == [1, 2]
    assert not certificate["satisfied"]
    assert "fails in layers [1, 2]" in certificate["text"]
    # layer 3, the one repeated past the trained depth, is still a classical step
    assert "every layer repeats layer 3: classical proximal gradient" in certificate["text"]
    with torch.no_grad():
        model.mu[3].fill_(2.2 / L)
    model.layers = 40
    text = model.certify()["text"]
    assert "Past the trained depth (layers = 40) every layer repeats layer 3, which is not certified" in text


def test_a_fixed_step_above_two_over_l_is_violated_in_every_layer():
    A = sensing()
    certificate = fista.Fista(A, mu=2.5 / lipschitz(A), layers=3).certify()
    assert by_condition(certificate)["step_size", "step mu"]["violated_layers"] == [0, 1, 2]
    untrained = fista.Fista(A, layers=3).certify()
    assert untrained["satisfied"] and "carries states besides its variables" in untrained["text"]


def test_bounded_values_stay_certified_after_perturbation():
    A = sensing()
    model = ista_safe.IstaSafe(A, layers=6)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for bounded in (model.mu, model.lam):
            for raw in bounded.raw:
                raw.add_(8 * torch.randn((), generator=generator, dtype=raw.dtype))
    assert model.certify()["satisfied"]


def test_alista_and_lista_cp_weight_conditions():
    A = sensing()
    W = torch.as_tensor(analytic_weight(A.numpy()))
    analytic = alista.Alista(A, W=W, layers=3).certify()
    weight = by_condition(analytic)["coupled_weight", "weight product Wᵀ A"]
    assert weight["satisfied"], weight
    gram = (W.T @ A).abs()
    coherence = float((gram - torch.diag(torch.diagonal(gram))).max())
    assert f"μ̃ = {coherence:.4g}" in weight["per_layer"][0]["value"]
    assert set(by_condition(analytic)) >= {("positive_step", "step gamma"), ("nonnegative_scale", "prox scale theta")}
    assert "checkable conditions of LISTA-CP/ALISTA hold" in analytic["text"]
    # LISTA-CP: the normalised coupled weight W = D⁻¹Aᵀ (diag(W A) = 1) meets it; the ISTA start W = Aᵀ/L does not
    normalised = A.T / (A * A).sum(dim=0, keepdim=True).T
    assert lista_cp.ListaCp(A, W=normalised, layers=2).certify()["satisfied"]
    plain = lista_cp.ListaCp(A, layers=2).certify()
    assert by_condition(plain)["coupled_weight", "weight product W A"]["violated_layers"] == [0, 1]


def test_learned_nets_are_reported_unchecked():
    certificate = learned_prox.IstaLearnedProx(sensing(), layers=2).certify()
    assert certificate["unchecked"] == ["denoise"] and not certificate["satisfied"]
    assert "No classical condition is known for denoise" in certificate["text"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "unfoldgen", "certify", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_certify_command_prints_text_or_json_and_exit_code():
    data = "sparse:m=12,n=24,p=0.1"
    ok = run_cli("--spec", "specs/lasso.unf", "--unfold", "ista", "--data", data, "--layers", "40")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("certify: 16 trained layers, running 40; L(x) = ")
    violated = run_cli("--spec", "specs/lasso.unf", "--unfold", "ista", "--data", data, "--set", "mu=100", "--json")
    assert violated.returncode == 1, violated.stderr
    certificate = json.loads(violated.stdout)
    assert certificate["checks"][0]["violated_layers"] == list(range(16))
    usage = run_cli()
    assert usage.returncode == 2 and usage.stderr.startswith("unfoldgen: unfoldgen certify needs RUN")
    missing = run_cli(str(ROOT / "no-such-run"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_certify_command_reads_a_trained_run(tmp_path):
    from unfoldgen.training.certify import certify
    from unfoldgen.training.config import CertifySettings

    arguments = ["specs/safe.unf", "--unfold", "ista_safe", "--data", "sparse:m=12,n=24,p=0.1", "--layers", "3"]
    arguments += ["--steps", "5", "-o", str(tmp_path / "run"), "--no-progress", "--val-size", "64", "--batch", "16"]
    train = subprocess.run(
        [sys.executable, "-m", "unfoldgen", "train", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert train.returncode == 0, train.stderr
    for path in (tmp_path / "run", tmp_path / "run" / "model.pt", tmp_path / "run" / "checkpoint.pt"):
        certificate = certify(CertifySettings(run=str(path), layers=9))
        assert certificate["satisfied"] and certificate["trained_layers"] == 3 and certificate["layers"] == 9
        values = [float(entry["value"]) for entry in certificate["checks"][0]["per_layer"]]
        assert np.all(np.asarray(values) > 0)
