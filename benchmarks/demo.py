"""`make demo`: classical ISTA and FISTA against a briefly trained LISTA-CP, all generated.

Compiles nothing itself (the Makefile ran `unfoldgen compile`); imports the generated
networks, trains LISTA-CP with Adam on synthetic sparse recovery, prints NMSE per layer and
writes demo_out/nmse_per_layer.png.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm import trange

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generated.fista import Fista  # noqa: E402
from generated.ista import Ista  # noqa: E402
from generated.lista_cp import ListaCp  # noqa: E402
from unfoldgen.data import nmse_db, sensing_matrix, sparse_recovery  # noqa: E402

M, N, P, SNR_DB, LAYERS, LAM = 50, 100, 0.1, 40.0, 16, 0.05
STEPS, BATCH, LR = 300, 64, 3e-3


def per_layer_nmse(model: torch.nn.Module, y: torch.Tensor, x: np.ndarray) -> list[float]:
    with torch.no_grad():
        iterates = model(y=y, return_iterates=True)
    return [nmse_db(estimate.numpy(), x) for estimate in iterates]


def main() -> None:
    torch.manual_seed(0)
    A = sensing_matrix(M, N, seed=0)
    test = sparse_recovery(A, 1000, P, SNR_DB, seed=1)
    A_t = torch.tensor(A, dtype=torch.float32)
    y_test = torch.tensor(test.y, dtype=torch.float32)

    ista = Ista(A=A_t, lam=LAM, layers=LAYERS)
    fista = Fista(A=A_t, lam=LAM, layers=LAYERS)
    lista = ListaCp(A=A_t, lam=LAM, layers=LAYERS)
    optimizer = torch.optim.Adam(lista.parameters(), lr=LR)
    start = time.perf_counter()
    progress = trange(STEPS, desc="training LISTA-CP", unit="step")
    for step in progress:
        batch = sparse_recovery(A, BATCH, P, SNR_DB, seed=100 + step)
        y = torch.tensor(batch.y, dtype=torch.float32)
        x = torch.tensor(batch.x, dtype=torch.float32)
        loss = torch.mean(torch.sum((lista(y=y) - x) ** 2, dim=1)) / torch.mean(torch.sum(x**2, dim=1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        progress.set_postfix(nmse_db=f"{10 * np.log10(loss.item()):.1f}")
    seconds = time.perf_counter() - start

    curves = {
        "ISTA": per_layer_nmse(ista, y_test, test.x),
        "FISTA": per_layer_nmse(fista, y_test, test.x),
        "LISTA-CP (trained)": per_layer_nmse(lista, y_test, test.x),
    }
    print(f"\nSparse recovery m={M}, n={N}, p={P}, SNR {SNR_DB:g} dB, lam={LAM}; test NMSE (dB) per layer")
    print(f"LISTA-CP: {STEPS} Adam steps of batch {BATCH} in {seconds:.1f} s")
    header = f"{'layer':>5} " + " ".join(f"{name:>20}" for name in curves)
    print(header)
    print("-" * len(header))
    for k in range(LAYERS):
        print(f"{k + 1:>5} " + " ".join(f"{values[k]:>20.2f}" for values in curves.values()))

    out = ROOT / "demo_out"
    out.mkdir(exist_ok=True)
    figure, axes = plt.subplots(figsize=(6, 4))
    for name, values in curves.items():
        axes.plot(range(1, LAYERS + 1), values, marker="o", label=name)
    axes.set_xlabel("layer / iteration")
    axes.set_ylabel("test NMSE (dB)")
    axes.set_title(f"Sparse recovery {M}×{N}, generated networks")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(out / "nmse_per_layer.png", dpi=120)
    print(f"\nplot: {out / 'nmse_per_layer.png'}")


if __name__ == "__main__":
    main()
