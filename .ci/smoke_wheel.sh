#!/usr/bin/env bash
# The package a user installs: build the wheel, install it with its runtime dependencies only
# (no dev extras, no [plot]) into a fresh venv, and drive it from a folder outside the checkout:
# --version, compile, import the generated model and run it, kernels.run, train, --resume.
# Each step is announced; a failure names the step. PYTHON (default python3) makes the venv;
# TORCH (default torch==2.13.0, as the Makefile) is installed first so nothing pulls a CUDA build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/unfoldgen-smoke.XXXXXX")
STEP="start"
trap 'echo "smoke_wheel: FAILED at step: $STEP" >&2' ERR
trap 'rm -rf "$WORK"' EXIT
step() {
    STEP="$*"
    echo "smoke_wheel: $STEP"
}

step "build the wheel from a copy of the checkout's files"
# a copy: an in-tree build leaves build/lib behind, whose stale modules a later wheel would ship
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard) >"$WORK/files"
"$PYTHON" - "$ROOT" "$WORK/files" "$WORK/src" <<'PY'
import shutil
import sys
from pathlib import Path

root, listing, copy = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
for name in filter(None, listing.read_bytes().decode().split("\0")):
    if (root / name).is_file():  # a tracked file deleted in the work tree is not part of it
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, copy / name)
PY
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/unfoldgen-*.whl)
echo "  $(basename "$WHEEL")"

step "the wheel holds every file of the package (modules, grammar, templates)"
"$PYTHON" - "$WHEEL" "$WORK/src" <<'PY'
import sys
import zipfile
from pathlib import Path

wheel, copy = sys.argv[1], Path(sys.argv[2])
shipped = set(zipfile.ZipFile(wheel).namelist())
expected = {path.relative_to(copy).as_posix() for path in (copy / "unfoldgen").rglob("*") if path.is_file()}
missing = sorted(expected - shipped)
if missing:
    sys.exit(f"the wheel lacks {len(missing)} file(s) of the checkout's unfoldgen/: {', '.join(missing)}")
print(f"  all {len(expected)} files of unfoldgen/ are in the wheel")
PY

step "a fresh venv: $TORCH first, then the wheel without extras"
"$PYTHON" -m venv "$WORK/venv"
VENV_PY="$WORK/venv/bin/python"
"$VENV_PY" -m pip install --quiet "$TORCH"
"$VENV_PY" -m pip install --quiet "$WHEEL"
UNFOLDGEN="$WORK/venv/bin/unfoldgen"

mkdir "$WORK/user"
cd "$WORK/user"  # outside the checkout: nothing may come from it but the spec
export NUMBA_CACHE_DIR="$WORK/numba-cache"

step "unfoldgen --version"
expected_version=$("$PYTHON" -c "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['project']['version'])" "$ROOT/pyproject.toml")
version=$("$UNFOLDGEN" --version)
echo "  $version"
[[ "$version" == "unfoldgen $expected_version" ]] || { echo "expected 'unfoldgen $expected_version'" >&2; false; }

step "unfoldgen compile specs/lasso.unf -o out"
"$UNFOLDGEN" compile "$ROOT/specs/lasso.unf" -o out

step "import the generated model, forward, kernels.run"
"$VENV_PY" - <<'PY'
import numpy as np
import torch

import unfoldgen
from out.ista import Ista, kernels

assert "site-packages" in unfoldgen.__file__, f"unfoldgen came from {unfoldgen.__file__}, not the wheel"
generator = torch.Generator().manual_seed(0)
A = torch.randn(20, 40, dtype=torch.float64, generator=generator)
y = torch.randn(5, 20, dtype=torch.float64, generator=generator)
model = Ista(A=A)
x_hat = model(y=y).detach()
assert x_hat.shape == (5, 40) and bool(torch.isfinite(x_hat).all()), x_hat.shape
model.export_npz("ista.npz")
x_kernels = kernels.run(kernels.load_params("ista.npz"), y=y.numpy())
difference = float(np.abs(x_kernels - x_hat.numpy()).max())
assert difference < 1e-10, f"kernels.run differs from the torch module by {difference}"
print(f"  forward (5, 20) -> {tuple(x_hat.shape)}; kernels.run matches to {difference:.1e}")
PY

step "unfoldgen compile specs/deblur.unf; an image network from the wheel (operators, FFT solve)"
"$UNFOLDGEN" compile "$ROOT/specs/deblur.unf" -o images
"$VENV_PY" - <<'PY'
import torch

from images.deblur_cp import DeblurCp

axis = torch.arange(9, dtype=torch.float64) - 4
kernel = torch.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * 1.6**2))
model = DeblurCp(k=kernel / kernel.sum())
y = torch.rand(2, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
x_hat = model(y=y).detach()
assert x_hat.shape == (2, 32, 32) and bool(torch.isfinite(x_hat).all()), x_hat.shape
print(f"  deblur_cp forward (2, 32, 32) -> {tuple(x_hat.shape)}")
PY

step "unfoldgen train (3 of 6 steps)"
"$UNFOLDGEN" train "$ROOT/specs/lasso.unf" --unfold ista --data sparse:m=20,n=40 --layers 4 --steps 6 --batch 8 \
    --val-size 16 --val-every 3 --checkpoint-every 3 --stop-after 3 -o run

step "unfoldgen train --resume (to step 6)"
"$UNFOLDGEN" train --resume run
"$VENV_PY" - <<'PY'
import json

metrics = json.load(open("run/metrics.json", encoding="utf-8"))
assert (metrics["stopped"], metrics["steps_done"]) == ("completed", 6), (metrics["stopped"], metrics["steps_done"])
print("  resumed run completed 6 steps")
PY

step "done"
echo "smoke_wheel: the installed package works"
