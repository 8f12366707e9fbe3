"""Classical equivalence: the compiled example networks equal hand-written numpy solvers.

Every generated module in ``generated/`` is run in float64 and compared with the line-by-line
references in ``tests/reference.py`` to a maximum absolute difference of 1e-10: at its classical
initialisation, layer by layer (``return_iterates``), and with its learned per-layer parameters
set to random positive values (the reference is then fed the same per-layer values). The
remaining tests cover the paradigm-3/4 examples, float32 against float64, and the input checks.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
import torch
from helpers import set_layers, stacked
from torch import nn

from generated.admm import Admm
from generated.fista import Fista
from generated.ista import Ista
from generated.ista_corrected import IstaCorrected
from generated.ista_learned_prox import IstaLearnedProx
from generated.lista_cp import ListaCp
from generated.pgd import Pgd
from generated.rpca_ista import RpcaIsta

TOL = 1e-10
SEEDS = [0, 1, 2]
# (m, n, batch): underdetermined, overdetermined, and a tiny one with a single sample
LASSO_SIZES = [(20, 40, 5), (30, 15, 4), (3, 2, 1)]
BOX_SIZES = [(12, 8, 5), (6, 6, 3), (4, 7, 1)]  # the last one is underdetermined
RPCA_SIZES = [(8, 6, 4), (10, 14, 3), (5, 5, 1)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add overhead, a lot of it on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def t64(array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array, dtype=np.float64))


def npy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def assert_close(actual, expected, tol: float = TOL, what: str = "output") -> None:
    actual = npy(actual) if isinstance(actual, torch.Tensor) else np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != reference {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
    err = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
    assert err <= tol, f"{what}: max abs difference {err:.3e} > {tol:.0e}"


def lasso_data(seed, size, lam_scale=0.1):
    m, n, batch = size
    p = 0.2 if n >= 10 else 1.0  # the tiny problem: a dense signal, so the solution is not zero
    A, Y, _ = ref.sparse_problem(m, n, batch, p=p, snr_db=30, seed=seed)
    lam = lam_scale * float(np.max(np.abs(Y @ A)))  # a fraction of lam_max: a non-trivial support
    return A, Y, lam


def box_data(seed, size):
    m, n, batch = size
    H, Y, _ = ref.box_problem(m, n, batch, seed=seed, noise_std=0.3)
    return H, Y


def rpca_data(seed, size):
    m, n, batch = size
    D, _, _ = ref.rpca_problem(m, n, batch, rank=2, outlier_frac=0.1, seed=seed)
    return D


def lasso_model(cls, A, lam, **kwargs):
    return cls(A=t64(A), lam=lam, **kwargs)


def run(model, **inputs):
    with torch.no_grad():
        return model(**{k: t64(v) for k, v in inputs.items()})


def run_iterates(model, **inputs):
    with torch.no_grad():
        return model(**{k: t64(v) for k, v in inputs.items()}, return_iterates=True)


def pgd_reference_per_sample(H, Y, factors):
    """PGD where layer k of sample b uses the step factors[k] / L_b (the generated model's rule)."""
    K = len(factors)
    out = []
    for b in range(H.shape[0]):
        step = [f / ref.lipschitz_sumsq(H[b]) for f in factors]
        out.append(ref.pgd_box(H[b : b + 1], Y[b : b + 1], K, mu=step, return_iterates=True))
    return [np.concatenate([out[b][k] for b in range(H.shape[0])]) for k in range(K)]


# ------------------------------------------------------------------ at the classical initialisation

LASSO_SOLVERS = [
    pytest.param(Ista, ref.ista, 16, id="ista"),
    pytest.param(Fista, ref.fista, 16, id="fista"),
    pytest.param(ListaCp, ref.lista_cp, 16, id="lista_cp"),
    pytest.param(Admm, ref.admm, 20, id="admm"),
]


@pytest.mark.parametrize("size", LASSO_SIZES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("cls", "reference", "default_layers"), LASSO_SOLVERS)
def test_lasso_solvers_equal_reference(cls, reference, default_layers, seed, size):
    A, Y, lam = lasso_data(seed, size)
    model = lasso_model(cls, A, lam)
    assert model.layers == default_layers
    X = run(model, y=Y)
    expected = reference(A, Y, lam, default_layers)
    assert_close(X, expected)
    # the comparison is not vacuous: a non-zero solution, and sparse on the larger problems
    assert np.any(expected != 0)
    assert np.any(expected == 0) or size[1] < 10


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("cls", "reference", "default_layers"), LASSO_SOLVERS)
def test_lasso_solvers_default_lam_and_other_depth(cls, reference, default_layers, seed):
    A, Y, _ = lasso_data(seed, LASSO_SIZES[0])
    model = cls(A=t64(A), layers=7)  # lam from the spec: 0.1
    assert_close(run(model, y=Y), reference(A, Y, 0.1, 7))


@pytest.mark.parametrize("size", LASSO_SIZES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_ista_explicit_mu(seed, size):
    A, Y, lam = lasso_data(seed, size)
    mu = 0.7 / ref.lipschitz(A)
    assert_close(run(Ista(A=t64(A), lam=lam, mu=mu), y=Y), ref.ista(A, Y, lam, 16, mu=mu))


@pytest.mark.parametrize("size", BOX_SIZES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_pgd_equals_reference(seed, size):
    H, Y = box_data(seed, size)
    model = Pgd(dtype=torch.float64)
    X = run(model, H=H, y=Y)
    expected = ref.pgd_box(H, Y, 10)
    assert_close(X, expected)
    assert np.any(np.abs(expected) == 1.0) or size[2] == 1, "the box constraint should be active somewhere"


@pytest.mark.parametrize("size", RPCA_SIZES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_rpca_ista_equals_reference(seed, size):
    D = rpca_data(seed, size)
    L, S = run(RpcaIsta(dtype=torch.float64), D=D)
    L_ref, S_ref = ref.rpca_ista(D, 10)
    assert_close(L, L_ref, what="L")
    assert_close(S, S_ref, what="S")


@pytest.mark.parametrize("seed", SEEDS)
def test_rpca_ista_other_lams_and_depth(seed):
    D = rpca_data(seed, RPCA_SIZES[0])
    L, S = run(RpcaIsta(lam1=2.5, lam2=0.4, layers=25, dtype=torch.float64), D=D)
    L_ref, S_ref = ref.rpca_ista(D, 25, lam1=2.5, lam2=0.4)
    assert_close(L, L_ref, what="L")
    assert_close(S, S_ref, what="S")
    # both thresholds act: L is rank-deficient, S is sparse
    assert np.linalg.matrix_rank(L_ref[0]) < min(D.shape[1:])
    assert np.any(S_ref == 0) and np.any(S_ref != 0)


# ------------------------------------------------------------------ return_iterates


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("cls", "reference", "default_layers"), LASSO_SOLVERS)
def test_lasso_iterates(cls, reference, default_layers, seed):
    A, Y, lam = lasso_data(seed, LASSO_SIZES[seed % 2])
    model = lasso_model(cls, A, lam)
    iterates = run_iterates(model, y=Y)
    expected = reference(A, Y, lam, default_layers, return_iterates=True)
    assert isinstance(iterates, list) and len(iterates) == default_layers
    for k, (got, want) in enumerate(zip(iterates, expected, strict=True)):
        assert_close(got, want, what=f"layer {k}")
    assert_close(iterates[-1], npy(run(model, y=Y)), tol=0.0, what="last iterate vs forward")


@pytest.mark.parametrize("seed", SEEDS)
def test_pgd_iterates(seed):
    H, Y = box_data(seed, BOX_SIZES[0])
    iterates = run_iterates(Pgd(dtype=torch.float64), H=H, y=Y)
    expected = ref.pgd_box(H, Y, 10, return_iterates=True)
    assert len(iterates) == 10
    for k, (got, want) in enumerate(zip(iterates, expected, strict=True)):
        assert_close(got, want, what=f"layer {k}")


@pytest.mark.parametrize("seed", SEEDS)
def test_rpca_iterates(seed):
    D = rpca_data(seed, RPCA_SIZES[1])
    iterates = run_iterates(RpcaIsta(dtype=torch.float64), D=D)
    expected = ref.rpca_ista(D, 10, return_iterates=True)
    assert len(iterates) == 10
    for k, ((L, S), (L_ref, S_ref)) in enumerate(zip(iterates, expected, strict=True)):
        assert_close(L, L_ref, what=f"L at layer {k}")
        assert_close(S, S_ref, what=f"S at layer {k}")


@pytest.mark.parametrize("seed", SEEDS)
def test_layer_by_layer_equals_forward(seed):
    """``layer(k, state, inputs)`` is one ISTA iteration: stepping it by hand reproduces forward."""
    A, Y, lam = lasso_data(seed, LASSO_SIZES[0])
    model = Ista(A=t64(A), lam=lam)
    expected = ref.ista(A, Y, lam, 16, return_iterates=True)
    with torch.no_grad():
        inputs = model.prepare_inputs(y=t64(Y))
        state = model.initial_state(inputs)
        for k in range(model.layers):
            state = model.layer(k, state, inputs)
            assert_close(model.outputs(state), expected[k], what=f"layer {k}")


# ------------------------------------------------------------------ learned parameters


def test_learned_parameters_are_per_layer():
    A, _, _ = lasso_data(0, LASSO_SIZES[0])
    m, n = A.shape
    expected = {
        Ista(A=t64(A)): {"mu": (16,), "lam": (16,)},
        ListaCp(A=t64(A)): {"W": (16, n, m), "theta": (16,)},
        Admm(A=t64(A)): {"rho": (20,)},
        Pgd(dtype=torch.float64): {"mu": (10,)},
        RpcaIsta(dtype=torch.float64): {"mu": (10,), "lam1": (10,), "lam2": (10,)},
        Fista(A=t64(A)): {},
    }
    for model, shapes in expected.items():
        names = {name.split(".")[0] for name, _ in model.named_parameters()}
        assert names == set(shapes), type(model).__name__
        for name, shape in shapes.items():
            value = getattr(model, name)
            if isinstance(value, nn.ParameterList):  # per-layer matrices: one parameter per layer
                value = torch.stack(list(value))
            else:
                assert isinstance(value, nn.Parameter), f"{type(model).__name__}.{name}"
            assert tuple(value.shape) == shape, f"{type(model).__name__}.{name}"
            assert value.dtype == torch.float64
    assert torch.equal(stacked(Pgd(dtype=torch.float64).mu).data, torch.ones(10, dtype=torch.float64))
    mu = npy(stacked(Ista(A=t64(A), layers=5).mu))
    assert_close(mu, np.full(5, 1 / ref.lipschitz(A)), tol=1e-12 / ref.lipschitz(A), what="mu = 1/L")


@pytest.mark.parametrize("size", LASSO_SIZES[:2], ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_ista_learned_values(seed, size):
    A, Y, lam = lasso_data(seed, size)
    rng = np.random.default_rng(1000 + seed)
    L = ref.lipschitz(A)
    mus = rng.uniform(0.2, 1.8, 16) / L
    lams = rng.uniform(0.2, 2.0, 16) * lam
    model = Ista(A=t64(A), lam=lam)
    set_layers(model.mu, t64(mus))
    set_layers(model.lam, t64(lams))
    assert_close(run(model, y=Y), ref.ista(A, Y, lams, 16, mu=mus))
    iterates = run_iterates(model, y=Y)
    for k, (got, want) in enumerate(zip(iterates, ref.ista(A, Y, lams, 16, mu=mus, return_iterates=True), strict=True)):
        assert_close(got, want, what=f"layer {k}")


@pytest.mark.parametrize("size", LASSO_SIZES[:2], ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_lista_cp_learned_values(seed, size):
    A, Y, lam = lasso_data(seed, size)
    m, n = A.shape
    rng = np.random.default_rng(2000 + seed)
    mu = 1 / ref.lipschitz(A)
    Ws = np.stack([mu * A.T + 0.05 * rng.normal(size=(n, m)) for _ in range(16)])
    thetas = rng.uniform(0.2, 2.0, 16) * mu * lam
    model = ListaCp(A=t64(A), lam=lam)
    set_layers(model.W, t64(Ws))
    set_layers(model.theta, t64(thetas))
    assert_close(run(model, y=Y), ref.lista_cp(A, Y, lam, 16, W=list(Ws), theta=thetas))


@pytest.mark.parametrize("size", LASSO_SIZES[:2], ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_lista_cp_constructor_overrides(seed, size):
    A, Y, lam = lasso_data(seed, size)
    rng = np.random.default_rng(3000 + seed)
    W = 0.5 * A.T + 0.02 * rng.normal(size=A.T.shape)
    model = ListaCp(A=t64(A), lam=lam, W=t64(W), theta=0.01)
    assert_close(run(model, y=Y), ref.lista_cp(A, Y, lam, 16, W=W, theta=0.01))


@pytest.mark.parametrize("size", LASSO_SIZES[:2], ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_admm_learned_values(seed, size):
    A, Y, lam = lasso_data(seed, size)
    rhos = np.random.default_rng(4000 + seed).uniform(0.1, 5.0, 20)
    model = Admm(A=t64(A), lam=lam)
    set_layers(model.rho, t64(rhos))
    assert_close(run(model, y=Y), ref.admm(A, Y, lam, 20, rho=rhos))


@pytest.mark.parametrize("size", BOX_SIZES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_pgd_learned_values(seed, size):
    H, Y = box_data(seed, size)
    factors = np.random.default_rng(5000 + seed).uniform(0.2, 1.9, 10)
    model = Pgd(dtype=torch.float64)
    set_layers(model.mu, t64(factors))
    expected = pgd_reference_per_sample(H, Y, factors)
    iterates = run_iterates(model, H=H, y=Y)
    for k, (got, want) in enumerate(zip(iterates, expected, strict=True)):
        assert_close(got, want, what=f"layer {k}")
    assert_close(run(model, H=H, y=Y), expected[-1])


@pytest.mark.parametrize("size", RPCA_SIZES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_rpca_learned_values(seed, size):
    D = rpca_data(seed, size)
    rng = np.random.default_rng(6000 + seed)
    mus = rng.uniform(0.1, 0.9, 10)
    lam1s = rng.uniform(0.2, 3.0, 10)
    lam2s = rng.uniform(0.02, 1.0, 10)
    model = RpcaIsta(dtype=torch.float64)
    set_layers(model.mu, t64(mus))
    set_layers(model.lam1, t64(lam1s))
    set_layers(model.lam2, t64(lam2s))
    L, S = run(model, D=D)
    L_ref, S_ref = ref.rpca_ista(D, 10, lam1=lam1s, lam2=lam2s, mu=mus)
    assert_close(L, L_ref, what="L")
    assert_close(S, S_ref, what="S")


# ------------------------------------------------------------------ objectives


@pytest.mark.parametrize("seed", SEEDS)
def test_objectives_equal_reference(seed):
    A, Y, lam = lasso_data(seed, LASSO_SIZES[0])
    X = np.random.default_rng(seed).normal(size=(Y.shape[0], A.shape[1]))
    for cls in (Ista, Fista, ListaCp, Admm):
        model = cls(A=t64(A), lam=lam)
        if hasattr(model, "lam") and isinstance(model.lam, nn.ParameterList):
            set_layers(model.lam, t64(np.full(16, 123.0)))  # the objective uses the problem's lam
        with torch.no_grad():
            value = model.objective(y=t64(Y), x=t64(X))
        assert_close(value, [ref.lasso_objective(A, Y[b], X[b], lam) for b in range(len(Y))], tol=1e-9)

    H, Yb = box_data(seed, BOX_SIZES[0])
    Xb = np.random.default_rng(seed).uniform(-1, 1, size=(H.shape[0], H.shape[2]))
    with torch.no_grad():
        value = Pgd(dtype=torch.float64).objective(H=t64(H), y=t64(Yb), x=t64(Xb))
    assert_close(value, [ref.box_objective(H[b], Yb[b], Xb[b]) for b in range(len(H))], tol=1e-9)

    D = rpca_data(seed, RPCA_SIZES[0])
    rng = np.random.default_rng(seed)
    Lm, Sm = rng.normal(size=D.shape), rng.normal(size=D.shape)
    with torch.no_grad():
        value = RpcaIsta(lam1=1.5, lam2=0.3, dtype=torch.float64).objective(D=t64(D), L=t64(Lm), S=t64(Sm))
    assert_close(value, [ref.rpca_objective(D[b], Lm[b], Sm[b], 1.5, 0.3) for b in range(len(D))], tol=1e-9)


# ------------------------------------------------------------------ paradigms 3 and 4


@pytest.mark.parametrize("size", LASSO_SIZES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_ista_corrected_is_ista_at_init(seed, size):
    A, Y, lam = lasso_data(seed, size)
    model = IstaCorrected(A=t64(A), lam=lam)
    assert model.layers == 10
    assert_close(run(model, y=Y), ref.ista(A, Y, lam, 10))
    for k, (got, want) in enumerate(
        zip(run_iterates(model, y=Y), ref.ista(A, Y, lam, 10, return_iterates=True), strict=True)
    ):
        assert_close(got, want, what=f"layer {k}")


def test_ista_corrected_uses_its_correction():
    """The equality above is not vacuous: a non-zero correction changes the output."""
    A, Y, lam = lasso_data(0, LASSO_SIZES[0])
    model = IstaCorrected(A=t64(A), lam=lam)
    assert any(p.requires_grad for p in model.c.parameters())
    before = npy(run(model, y=Y))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.c.parameters():
            p.add_(0.01 * torch.randn_like(p))
    after = npy(run(model, y=Y))
    assert np.max(np.abs(after - before)) > 1e-6


@pytest.mark.parametrize("size", LASSO_SIZES, ids=str)
def test_ista_learned_prox_runs(size):
    A, Y, lam = lasso_data(0, size)
    torch.manual_seed(0)
    model = IstaLearnedProx(A=t64(A), lam=lam)
    X = run(model, y=Y)
    assert X.shape == (Y.shape[0], A.shape[1])
    assert X.dtype == torch.float64
    assert torch.isfinite(X).all()
    iterates = run_iterates(model, y=Y)
    assert len(iterates) == 10 and all(it.shape == X.shape for it in iterates)
    assert_close(iterates[-1], npy(X), tol=0.0)
    # the net is trainable and gradients reach it and the step sizes
    model(y=t64(Y)).square().sum().backward()
    assert all(mu.grad is not None and torch.isfinite(mu.grad).all() for mu in model.mu)
    assert all(p.grad is not None for p in model.denoise.parameters())


# ------------------------------------------------------------------ float32


def rel_err(x32, x64) -> float:
    x32, x64 = npy(x32).astype(np.float64), npy(x64)
    return float(np.linalg.norm(x32 - x64) / np.linalg.norm(x64))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cls", [Ista, Fista, ListaCp, Admm, IstaCorrected])
def test_float32_lasso(cls, seed):
    A, Y, lam = lasso_data(seed, LASSO_SIZES[seed % 2])
    m64 = cls(A=t64(A), lam=lam)
    m32 = cls(A=t64(A).float(), lam=lam)
    assert all(p.dtype == torch.float32 for p in m32.parameters())
    with torch.no_grad():
        x32 = m32(y=t64(Y).float())
        x64 = m64(y=t64(Y))
    assert x32.dtype == torch.float32
    assert rel_err(x32, x64) <= 1e-4


@pytest.mark.parametrize("seed", SEEDS)
def test_float32_pgd_and_rpca(seed):
    H, Y = box_data(seed, BOX_SIZES[0])
    with torch.no_grad():
        x32 = Pgd(dtype=torch.float32)(H=t64(H).float(), y=t64(Y).float())
        x64 = Pgd(dtype=torch.float64)(H=t64(H), y=t64(Y))
    assert x32.dtype == torch.float32
    assert rel_err(x32, x64) <= 1e-4

    D = rpca_data(seed, RPCA_SIZES[0])
    with torch.no_grad():
        L32, S32 = RpcaIsta(dtype=torch.float32)(D=t64(D).float())
        L64, S64 = RpcaIsta(dtype=torch.float64)(D=t64(D))
    assert L32.dtype == S32.dtype == torch.float32
    assert rel_err(L32, L64) <= 1e-4
    assert rel_err(S32, S64) <= 1e-4


# ------------------------------------------------------------------ bad inputs


def lasso_bad_inputs(m):
    good = torch.zeros(3, m, dtype=torch.float64)
    return [
        pytest.param(torch.zeros(3, m + 1, dtype=torch.float64), id="wrong-length"),
        pytest.param(torch.zeros(m, dtype=torch.float64), id="no-batch-dim"),
        pytest.param(torch.zeros(3, m, 1, dtype=torch.float64), id="extra-dim"),
        pytest.param(good.float(), id="float32"),
        pytest.param(torch.zeros(3, m, dtype=torch.int64), id="integer"),
        pytest.param(good.numpy(), id="numpy-array"),
    ]


@pytest.mark.parametrize("bad", lasso_bad_inputs(20))
@pytest.mark.parametrize("cls", [Ista, Fista, ListaCp, Admm, IstaCorrected, IstaLearnedProx])
def test_lasso_bad_input_raises(cls, bad):
    A, _, _ = lasso_data(0, LASSO_SIZES[0])
    model = cls(A=t64(A))
    with pytest.raises(ValueError, match=r"input y\b"):
        model(y=bad)


def test_lasso_bad_objective_argument_raises():
    A, Y, _ = lasso_data(0, LASSO_SIZES[0])
    model = Ista(A=t64(A))
    with pytest.raises(ValueError, match=r"input x\b"):
        model.objective(y=t64(Y), x=torch.zeros(Y.shape[0], A.shape[1] + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"input x\b"):
        model.objective(y=t64(Y), x=torch.zeros(Y.shape[0] + 1, A.shape[1], dtype=torch.float64))


def test_bad_data_raises():
    with pytest.raises(ValueError, match=r"data A\b"):
        Ista(A=torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"data A\b"):
        Ista(A=torch.zeros(5, 4, dtype=torch.float64), n=3)


def test_pgd_bad_inputs_raise():
    model = Pgd(dtype=torch.float64)
    H = torch.zeros(3, 6, 4, dtype=torch.float64)
    y = torch.zeros(3, 6, dtype=torch.float64)
    model(H=H, y=y)  # the good case runs
    cases = [
        ("H", dict(H=torch.zeros(6, 4, dtype=torch.float64), y=y)),
        ("H", dict(H=H.float(), y=y)),
        ("y", dict(H=H, y=torch.zeros(3, 5, dtype=torch.float64))),  # m disagrees with H
        ("y", dict(H=H, y=torch.zeros(2, 6, dtype=torch.float64))),  # batch disagrees with H
        ("y", dict(H=H, y=y.float())),
    ]
    for name, inputs in cases:
        with pytest.raises(ValueError, match=rf"input {name}\b"):
            model(**inputs)


def test_rpca_bad_inputs_raise():
    model = RpcaIsta(dtype=torch.float64)
    for bad in (
        torch.zeros(4, 5, dtype=torch.float64),
        torch.zeros(2, 4, 5, dtype=torch.float32),
        torch.zeros(2, 4, 5, 1, dtype=torch.float64),
    ):
        with pytest.raises(ValueError, match=r"input D\b"):
            model(D=bad)
