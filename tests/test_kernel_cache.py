"""numba's cache of generated kernels does not depend on how the kernels module was loaded.

numba files each cache entry under the module of the kernel and imports that module by name when
it reads the entry back. A kernels.py loaded by path under an ad-hoc name (a common pattern, and
the trainer's) used to leave entries that broke every later ordinary import of the package
(``ModuleNotFoundError: No module named '<dynamic>'``) until ``__pycache__`` was deleted. Each
order runs in fresh processes sharing one cache, like separate user sessions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from unfoldgen.compiler import compile_text

SPEC = """
problem lasso {
    dim m, n
    data  A : real[m, n]
    input y : real[m]
    var   x : real[n] = 0
    param lam : real = 0.1
    minimize 0.5 * sumsq(A @ x - y) + lam * norm1(x)
}
unfold cached_ista from lasso {
    layers 3
    hyper mu : real = 1 / lipschitz(x)
    iterate { x = prox[mu * lam * norm1](x - mu * grad(x)) }
    learn mu per layer
}
"""

RUN = """
import numpy as np
rng = np.random.default_rng(0)
A = rng.normal(size=(4, 6))
params = kernels.params_from_state_dict({"mu": np.full(3, 0.05), "lam": np.float64(0.1), "A": A})
out = kernels.run(params, rng.normal(size=(2, 4)))
assert out.shape == (2, 6), out.shape
hits = sum(sum(fn.stats.cache_hits.values()) for fn in (kernels.network, kernels.layer))
print("hits", hits)
"""

LOADERS = {
    # by path, under an ad-hoc name, not registered in sys.modules
    "path": """
import importlib.util
spec = importlib.util.spec_from_file_location("any_name", "cached_ista/kernels.py")
kernels = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kernels)
""",
    # by path, under another name, registered
    "registered": """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("other_name", "cached_ista/kernels.py")
kernels = importlib.util.module_from_spec(spec)
sys.modules["other_name"] = kernels
spec.loader.exec_module(kernels)
""",
    # the ordinary import of the package
    "package": "from cached_ista import kernels\n",
}


@pytest.fixture(scope="module")
def package_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kernel_cache")
    for relative, text in compile_text(SPEC, "cache.unf").files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text, encoding="utf-8")
    return folder


def run_fresh(folder: Path, loader: str, cache: Path) -> int:
    """Load the kernels in a fresh process the given way, run them; the number of cache hits."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(folder)}
    done = subprocess.run(
        [sys.executable, "-c", LOADERS[loader] + RUN], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{loader}: {done.stderr[-2000:]}"
    return int(done.stdout.split()[-1])


@pytest.mark.parametrize("first", ["path", "registered"])
@pytest.mark.parametrize("then", ["package", "path"])
def test_any_load_order_shares_one_cache(package_folder, tmp_path, first, then):
    cache = tmp_path / "numba-cache"
    assert run_fresh(package_folder, first, cache) == 0  # compiles and writes the cache
    assert run_fresh(package_folder, then, cache) > 0  # reads what the other way of loading wrote
    assert run_fresh(package_folder, "package", cache) > 0
