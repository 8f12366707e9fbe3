"""Study 3, the deepinv side: deepinv 0.5.0's own unfolded networks on the same deblurring problem and data.

Runs in a separate benchmark venv (never the project's): started with any Python, the script creates the venv
if needed (``--venv``, else ``$DEEPINV_VENV``, else ``build/deepinv-venv`` in this checkout) and re-executes
itself there (with neither given, a Python that already imports deepinv runs the study itself). Where the
venv cannot be made it prints one line ``deepinv_side: skipped: <reason>``, writes ``{"skipped": reason}`` to
``--out`` and exits with code 3.

The venv: CPython 3.11, ``pip install torch==2.13.0`` (the CPU wheel on this machine's disk; the script refuses
to go on if pip would fetch any other build), then ``pip install -c benchmarks/pins.txt deepinv==0.5.0
ptwt==1.0.1 scikit-image==0.26.0``; pins.txt holds torch==2.13.0 so nothing replaces that torch. deepinv's
torchvision wheel is a CUDA build whose C++ ops do not load on the CPU torch, and its import then fails on
``operator torchvision::nms does not exist``: the schemas of ``nms`` and ``qnms`` are declared before the import.

Input: an ``.npz`` with ``kernel`` (odd 2-D, centre at the middle, sums to 1), ``sigma`` (noise std),
``train_clean`` (N, h, w) patches in [0, 1], ``test_clean`` and ``test_blurred`` (T, H, W) (blurred with a
circular boundary, plus noise), ``seed``. The forward model is ``dinv.physics.BlurFFT`` (circular) with
``GaussianNoise(sigma)``; its convolution is checked against ``scipy.ndimage.convolve(mode="wrap")``
(reported as ``convention`` in the JSON).

Networks, each ``--layers`` K iterations of deepinv's unfolded API (``dinv.optim.PGD``/``PDCP``/``HQS`` with
``unfold=True``), data fidelity ``dinv.optim.L2`` (0.5 ||A x - y||²), started from A^T y; each untrained network
equals its classical algorithm with one scalar tuned on a batch of training patches (a geometric grid,
``--tune-points``); each run checks that equivalence against the algorithm written out in numpy (float64, 3
layers, 32×32: ≈ 1e-9, deepinv keeping step sizes and λ as float32 parameters) and reports it in the JSON:
- ``pgd_haar`` (paradigm 1): ISTA with an orthonormal Haar ℓ1 prior (``WaveletPrior(wv="haar")``, detail
  coefficients only), a learned step size and λ per layer (2K parameters); starts as ISTA-K with step 1/L
  (L = max |k̂|²) and tuned λ;
- ``cp_tv`` (paradigm 1): Chambolle-Pock for isotropic TV (K = ∇ with ``TVDenoiser.nabla``, dual step on
  ``L12Prior``, primal step BlurFFT's Fourier-domain prox of the data term, β = 1), learned τ, σ and λ per
  layer (3K parameters); starts at τ = σ = 1/√8 and tuned λ;
- ``hqs_dncnn`` (paradigm 4): HQS whose x-step is BlurFFT's Fourier-domain prox and whose prior step is one
  DnCNN shared by the layers (``dinv.models.DnCNN``, depth 5, 32 features, residual, ``pretrained=None``),
  a learned step size per layer; the DnCNN's last convolution starts at zero (``--dncnn-init zero``), so the
  untrained network is K proximal-point steps on the data term with a tuned step (``--dncnn-init kaiming``
  keeps deepinv's default initialisation).

Training: Adam (lr ``--lr``, 1e-3), MSE loss, a batch of training patches drawn each step with y = blur(x) +
sigma * noise drawn fresh (one torch.Generator seeded with the file's seed), until ``--steps`` or ``--minutes``.
Reported per network: PSNR (data range 1, mean over test images; outputs clipped to [0, 1] only with
``--clip``) and SSIM (skimage) of the untrained (classical) and trained network, seconds per training step at
batch 4 on the training patch size, latency per test image (batch 1, median), parameter count, training time
and steps.

    python benchmarks/deepinv_side.py --setup-only                         # create the venv, nothing else
    python benchmarks/deepinv_side.py --input data.npz --out results.json  # all three, K=8, 8 min each
    python benchmarks/deepinv_side.py --input data.npz --steps 20 --out tiny.json --networks pgd_haar
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
DEFAULT_VENV = BENCHMARKS.parent / "build" / "deepinv-venv"
PINS = BENCHMARKS / "pins.txt"
SKIP_EXIT_CODE = 3
BASE_PYTHON = "python3.11"  # the CPU torch 2.13.0 wheel on this machine's disk is for CPython 3.11
TORCH_REQUIREMENT = "torch==2.13.0"
DEEPINV_REQUIREMENTS = ["deepinv==0.5.0", "ptwt==1.0.1", "scikit-image==0.26.0"]
NETWORKS = ("pgd_haar", "cp_tv", "hqs_dncnn")
# WaveletPrior.prox(x, *args, ths=0.1, gamma) thresholds at ths * gamma and PGD passes gamma = lambda * stepsize
# (its g_param lands in *args), so deepinv's lambda is 10x the usual λ of 0.5||Ax - y||² + λ||Wx||₁.
WAVELET_PRIOR_THS = 0.1


def declare_missing_torchvision_ops() -> list[str]:
    """Declare torchvision's nms/qnms schemas where its C++ library does not load, so that it imports."""
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return []
    libraries = sorted(Path(next(iter(spec.submodule_search_locations))).glob("_C*.so"))
    try:
        if libraries:
            torch.ops.load_library(str(libraries[0]))
            return []
    except OSError:
        pass
    declared = ["nms", "qnms"]
    for op in declared:
        torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return declared


# --------------------------------------------------------------------------------------------------- the venv


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def venv_is_ready(venv: Path) -> bool:
    probe = (
        f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r}); import deepinv_side; "
        "deepinv_side.declare_missing_torchvision_ops(); import deepinv, ptwt, skimage, torch; "
        "assert torch.version.cuda is None"
    )
    python = venv_python(venv)
    return python.exists() and subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


def run_step(command: list[str]) -> str | None:
    """Run one setup command; on failure, a one-line reason."""
    print("deepinv_side: $", " ".join(command), file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if line.strip() and "is ignored" not in line]
    return f"{' '.join(command[:4])} ... exited {done.returncode}: {lines[-1] if lines else 'no message'}"


def torch_wheel_is_local_cpu(pip: list[str]) -> str | None:
    """pip's choice for torch==2.13.0 must be the CPU wheel on disk, never a CUDA download of several GB."""
    report_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"deepinv-torch-report-{os.getpid()}.json"
    reason = run_step(
        [*pip, "install", "-q", "--dry-run", "--no-deps", "--report", str(report_path), TORCH_REQUIREMENT]
    )
    if reason:
        return reason
    install = json.loads(report_path.read_text())["install"]
    report_path.unlink()
    chosen = [(item["metadata"]["version"], item["download_info"]["url"]) for item in install]
    if len(chosen) != 1 or not chosen[0][0].endswith("+cpu") or not chosen[0][1].startswith("file:"):
        return f"pip would install torch {chosen} for {TORCH_REQUIREMENT}, expected the local +cpu wheel"
    return None


def ensure_venv(venv: Path) -> str | None:
    """Create the benchmark venv where it is missing or incomplete; None when ready, else a one-line reason."""
    if venv_is_ready(venv):
        return None
    base = shutil.which(BASE_PYTHON)
    if base is None:
        return f"{BASE_PYTHON} not found on PATH (the CPU torch 2.13.0 wheel here is for CPython 3.11)"
    if not venv_python(venv).exists():
        reason = run_step([base, "-m", "venv", str(venv)])
        if reason:
            return reason
    pip = [str(venv_python(venv)), "-m", "pip"]
    has_torch = subprocess.run([venv_python(venv), "-c", "import torch"], capture_output=True).returncode == 0
    if not has_torch:
        reason = torch_wheel_is_local_cpu(pip) or run_step([*pip, "install", "-q", "-c", str(PINS), TORCH_REQUIREMENT])
        if reason:
            return reason
    reason = run_step([*pip, "install", "-q", "-c", str(PINS), *DEEPINV_REQUIREMENTS])
    if reason:
        return reason
    if not venv_is_ready(venv):
        return f"the venv {venv} was set up but `import deepinv, ptwt, skimage` (CPU torch) still fails there"
    return None


def skip(reason: str, out: Path | None) -> int:
    print(f"deepinv_side: skipped: {reason}", flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"skipped": reason}, indent=2) + "\n")
    return SKIP_EXIT_CODE


# --------------------------------------------------------------------------------------------------- the study


def check_convention(kernel, rng) -> dict:
    """BlurFFT against scipy.ndimage.convolve(mode="wrap") (kernel centre at the middle), as given and flipped."""
    import deepinv as dinv
    import numpy as np
    import scipy.ndimage as ndi
    import torch

    image = rng.random((48, 64))
    asymmetric = rng.random(kernel.shape)
    asymmetric /= asymmetric.sum()
    result = {}
    for name, probe_kernel in (("given_kernel", kernel), ("asymmetric_kernel", asymmetric)):
        reference = ndi.convolve(image, probe_kernel, mode="wrap")
        for flipped in (False, True):
            used = probe_kernel[::-1, ::-1] if flipped else probe_kernel
            physics = dinv.physics.BlurFFT(img_size=(1, *image.shape), filter=torch.tensor(used.copy())[None, None])
            blurred = physics.A(torch.tensor(image)[None, None])[0, 0].numpy()
            key = f"max_abs_diff_{name}{'_flipped' if flipped else ''}"
            result[key] = float(np.abs(blurred - reference).max())
    result["kernel_flipped"] = (
        result["max_abs_diff_asymmetric_kernel"] > result["max_abs_diff_asymmetric_kernel_flipped"]
    )
    return result


def check_classical_equivalence(kernel, args, rng, layers: int = 3, size: int = 32) -> dict:
    """Each untrained network (float64) against its classical algorithm written out in numpy: max |difference|."""
    import deepinv as dinv
    import numpy as np
    import pywt
    import torch

    padded = np.zeros((size, size))
    padded[: kernel.shape[0], : kernel.shape[1]] = kernel
    kernel_hat = np.fft.fft2(np.roll(padded, (-(kernel.shape[0] // 2), -(kernel.shape[1] // 2)), (0, 1)))

    def blur_adjoint(image):
        return np.real(np.fft.ifft2(np.conj(kernel_hat) * np.fft.fft2(image)))

    def data_prox(point, step):  # argmin_x step/2 ||k * x - y||² + 1/2 ||x - point||²
        spectrum = np.fft.fft2(point) + step * np.conj(kernel_hat) * np.fft.fft2(measured)
        return np.real(np.fft.ifft2(spectrum / (1 + step * np.abs(kernel_hat) ** 2)))

    def haar_soft(image, threshold):
        coefficients = pywt.wavedec2(image, "haar", level=args.haar_levels)
        details = [tuple(pywt.threshold(band, threshold, "soft") for band in level) for level in coefficients[1:]]
        return pywt.waverec2([coefficients[0], *details], "haar")

    def gradient(image):  # forward differences, zero in the last row / column (TVDenoiser.nabla)
        result = np.zeros((*image.shape, 2))
        result[:-1, :, 0] = image[1:] - image[:-1]
        result[:, :-1, 1] = image[:, 1:] - image[:, :-1]
        return result

    def gradient_adjoint(field):
        result = np.zeros(field.shape[:2])
        result[:-1] -= field[:-1, :, 0]
        result[1:] += field[:-1, :, 0]
        result[:, :-1] -= field[:, :-1, 1]
        result[:, 1:] += field[:, :-1, 1]
        return result

    clean = rng.random((size, size))
    measured = np.real(np.fft.ifft2(kernel_hat * np.fft.fft2(clean))) + 0.01 * rng.standard_normal((size, size))
    physics = dinv.physics.BlurFFT(img_size=(1, size, size), filter=torch.tensor(kernel)[None, None])
    start = blur_adjoint(measured)
    expected = {}
    value = 0.02
    x = start.copy()  # ISTA
    for _ in range(layers):
        x = haar_soft(
            x - args.pgd_step * blur_adjoint(np.real(np.fft.ifft2(kernel_hat * np.fft.fft2(x))) - measured),
            args.pgd_step * value,
        )
    expected["pgd_haar"] = x
    x, relaxed, dual = start.copy(), start.copy(), np.zeros((size, size, 2))  # Chambolle-Pock
    for _ in range(layers):
        dual = dual + args.cp_sigma * gradient(relaxed)
        dual /= np.maximum(1, np.linalg.norm(dual, axis=-1, keepdims=True) / value)
        previous, x = x, data_prox(x - args.cp_tau * gradient_adjoint(dual), args.cp_tau)
        relaxed = 2 * x - previous
    expected["cp_tv"] = x
    x = start.copy()  # HQS with the identity as prior step (the zero-initialised residual DnCNN)
    for _ in range(layers):
        x = data_prox(x, 3.0)
    expected["hqs_dncnn"] = x
    differences = {}
    for name in args.networks:
        if name == "hqs_dncnn" and args.dncnn_init != "zero":
            continue
        model = build_network(name, args, layers, 3.0 if name == "hqs_dncnn" else value, 0.01).double()
        estimate = reconstruct(model, torch.tensor(measured)[None, None], physics)[0, 0].numpy()
        differences[name] = float(np.abs(estimate - expected[name]).max())
    return differences


def psnr(estimate, clean) -> float:
    import numpy as np

    return float(10 * np.log10(1.0 / np.mean((estimate - clean) ** 2)))


def ssim(estimate, clean) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(clean, estimate, data_range=1.0))


# per network: what its one tuned scalar is, and the grid it is tuned on (geometric, ends included)
TUNED_SCALAR = {
    "pgd_haar": ("lambda (usual units)", 1e-4, 1e-1),
    "cp_tv": ("lambda", 1e-4, 1e-1),
    "hqs_dncnn": ("HQS stepsize", 1e-1, 1e2),
}


def build_network(name: str, args, layers: int, initial: float, sigma: float):
    import deepinv as dinv
    import torch

    if name == "pgd_haar":
        prior = dinv.optim.WaveletPrior(wv="haar", level=args.haar_levels, p=1)
        return dinv.optim.PGD(
            data_fidelity=dinv.optim.L2(),
            prior=prior,
            stepsize=[args.pgd_step] * layers,
            lambda_reg=[initial / WAVELET_PRIOR_THS] * layers,
            max_iter=layers,
            unfold=True,
            trainable_params=["stepsize", "lambda"],
        )
    if name == "cp_tv":
        nabla = dinv.models.TVDenoiser.nabla

        def start_at_adjoint(y, physics):
            x = physics.A_adjoint(y)
            return {"est": (x, x, torch.zeros_like(nabla(x)))}

        # g_first: the dual step on λ||∇x||_{2,1} (prox of its conjugate), then the primal step is BlurFFT's
        # Fourier-domain prox of the data term: Chambolle-Pock's Algorithm 1 for TV deblurring
        return dinv.optim.PDCP(
            K=nabla,
            K_adjoint=dinv.models.TVDenoiser.nabla_adjoint,
            data_fidelity=dinv.optim.L2(),
            prior=dinv.optim.L12Prior(l2_axis=-1),
            lambda_reg=[initial] * layers,
            stepsize=[args.cp_tau] * layers,
            stepsize_dual=[args.cp_sigma] * layers,
            beta=1.0,
            max_iter=layers,
            custom_init=start_at_adjoint,
            g_first=True,
            unfold=True,
            trainable_params=["lambda", "stepsize", "stepsize_dual"],
        )
    denoiser = dinv.models.DnCNN(
        in_channels=1, out_channels=1, depth=args.dncnn_depth, nf=args.dncnn_features, pretrained=None
    )
    if args.dncnn_init == "zero":
        with torch.no_grad():
            denoiser.out_conv.weight.zero_()
            denoiser.out_conv.bias.zero_()
    return dinv.optim.HQS(
        data_fidelity=dinv.optim.L2(),
        prior=dinv.optim.PnP(denoiser),
        stepsize=[initial] * layers,
        g_param=sigma,
        max_iter=layers,
        unfold=True,
        trainable_params=["stepsize"],
    )


def initial_grid(name: str, args) -> list[float]:
    import numpy as np

    _, low, high = TUNED_SCALAR[name]
    return [float(value) for value in np.geomspace(low, high, args.tune_points)]


def reconstruct(model, blurred, physics):
    import torch

    with torch.no_grad():
        return model(blurred, physics)


def run_network(name, args, data, physics_train, physics_test, generator, log) -> dict:
    import copy

    import numpy as np
    import torch

    layers = args.layers
    train = torch.from_numpy(data["train_clean"]).float()
    test_clean = data["test_clean"].astype(np.float32)
    test_blurred = torch.from_numpy(data["test_blurred"]).float()
    sigma = float(data["sigma"])

    tune_count = min(len(train), args.tune_batch)
    tune_clean = train[:tune_count, None]
    tune_measured = physics_train(tune_clean)
    tuning = []
    for value in initial_grid(name, args):
        model = build_network(name, args, layers, value, sigma)
        estimate = reconstruct(model, tune_measured, physics_train)
        tuning.append((psnr(estimate.numpy(), tune_clean.numpy()), value))
    tuned_psnr, initial = max(tuning)
    model = build_network(name, args, layers, initial, sigma)
    parameters = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    log(
        f"{name}: initial {TUNED_SCALAR[name][0]} {initial:.4g} "
        f"(tuning batch PSNR {tuned_psnr:.2f} dB), {parameters} trainable parameters"
    )

    def evaluate(current):
        outputs, latencies = [], []
        reconstruct(current, test_blurred[:1, None], physics_test)  # warm-up
        for index in range(len(test_blurred)):
            start = time.perf_counter()
            outputs.append(reconstruct(current, test_blurred[index : index + 1, None], physics_test)[0, 0].numpy())
            latencies.append(time.perf_counter() - start)
        if args.clip:
            outputs = [np.clip(output, 0.0, 1.0) for output in outputs]
        psnrs = [psnr(output, clean) for output, clean in zip(outputs, test_clean, strict=True)]
        ssims = [ssim(output, clean) for output, clean in zip(outputs, test_clean, strict=True)]
        return {
            "psnr": float(np.mean(psnrs)),
            "ssim": float(np.mean(ssims)),
            "psnr_per_image": psnrs,
            "ssim_per_image": ssims,
            "latency_ms_per_image": 1e3 * float(np.median(latencies)),
        }, outputs

    classical, classical_outputs = evaluate(model)
    log(f"{name}: untrained K={layers}: PSNR {classical['psnr']:.2f} dB, SSIM {classical['ssim']:.4f}")

    def train_step(current, optimizer, batch):
        index = torch.randint(len(train), (batch,), generator=generator)
        clean = train[index, None]
        estimate = current(physics_train(clean), physics_train)
        loss = torch.nn.functional.mse_loss(estimate, clean)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    # the step time at batch 4 is measured on a copy, so that training itself is untouched
    timed_model = copy.deepcopy(model)
    timed_optimizer = torch.optim.Adam(timed_model.parameters(), lr=args.lr)
    timing_state = generator.get_state()
    for _ in range(args.timing_warmup):
        train_step(timed_model, timed_optimizer, 4)
    start = time.perf_counter()
    for _ in range(args.timing_steps):
        train_step(timed_model, timed_optimizer, 4)
    seconds_per_step_b4 = (time.perf_counter() - start) / args.timing_steps
    generator.set_state(timing_state)
    del timed_model, timed_optimizer

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = time.perf_counter()
    steps, losses = 0, []
    while steps < args.steps and time.perf_counter() - start < 60 * args.minutes:
        losses.append(train_step(model, optimizer, args.batch))
        steps += 1
        if steps % args.log_every == 0 or steps == args.steps:
            recent = float(np.mean(losses[-args.log_every :]))
            log(f"{name}: step {steps}/{args.steps} loss {recent:.3e} ({time.perf_counter() - start:.0f} s)")
    training_seconds = time.perf_counter() - start
    trained, trained_outputs = evaluate(model)
    log(f"{name}: trained K={layers}: PSNR {trained['psnr']:.2f} dB, SSIM {trained['ssim']:.4f}")

    learned = {
        key: [value.item() for value in values]
        for key, values in model.params_algo.items()
        if isinstance(values, torch.nn.ParameterList)
    }
    if name == "pgd_haar" and "lambda" in learned:
        learned["lambda_usual_units"] = [WAVELET_PRIOR_THS * value for value in learned["lambda"]]
    return {
        "result": {
            "layers": layers,
            "parameters": parameters,
            "initial_value": initial,
            "initial_value_is": TUNED_SCALAR[name][0],
            "tuning": [{"value": value, "psnr": score} for score, value in tuning],
            "untrained": classical,
            "trained": trained,
            "training_steps": steps,
            "training_seconds": training_seconds,
            "final_loss": float(np.mean(losses[-args.log_every :])) if losses else None,
            "seconds_per_step": {"batch": 4, "size": list(train.shape[1:]), "seconds": seconds_per_step_b4},
            "seconds_per_step_training": training_seconds / steps if steps else None,
            "learned_params_algo": learned,
        },
        "images": {"untrained": np.stack(classical_outputs), "trained": np.stack(trained_outputs)},
    }


def run_study(args) -> dict:
    import numpy as np

    declared_ops = declare_missing_torchvision_ops()
    import deepinv as dinv
    import scipy
    import skimage
    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    data = dict(np.load(args.input))
    missing = {"kernel", "sigma", "train_clean", "test_clean", "test_blurred", "seed"} - set(data)
    if missing:
        raise SystemExit(f"deepinv_side: {args.input} lacks arrays {sorted(missing)}")
    kernel = data["kernel"].astype(np.float64)
    if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise SystemExit(f"deepinv_side: kernel has shape {kernel.shape}, expected an odd 2-D kernel")
    if data["test_clean"].shape != data["test_blurred"].shape or data["test_clean"].ndim != 3:
        raise SystemExit(
            f"deepinv_side: test_clean {data['test_clean'].shape} and test_blurred {data['test_blurred'].shape} "
            "must both be (T, H, W)"
        )
    if data["train_clean"].ndim != 3:
        raise SystemExit(f"deepinv_side: train_clean has shape {data['train_clean'].shape}, expected (N, h, w)")
    seed = int(data["seed"])
    sigma = float(data["sigma"])

    def log(message: str) -> None:
        print(f"[deepinv] {message}", flush=True)

    convention = check_convention(kernel, np.random.default_rng(seed))
    log(
        f"BlurFFT vs scipy.ndimage.convolve(wrap): max |diff| {convention['max_abs_diff_given_kernel']:.2e} "
        f"(asymmetric kernel {convention['max_abs_diff_asymmetric_kernel']:.2e}, flipped "
        f"{convention['max_abs_diff_asymmetric_kernel_flipped']:.2e}); kernel flipped: {convention['kernel_flipped']}"
    )
    used_kernel = kernel[::-1, ::-1].copy() if convention["kernel_flipped"] else kernel
    filter_tensor = torch.tensor(used_kernel, dtype=torch.float32)[None, None]

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    noise = dinv.physics.GaussianNoise(sigma=sigma, rng=generator)
    physics_train = dinv.physics.BlurFFT(
        img_size=(1, *data["train_clean"].shape[1:]), filter=filter_tensor, noise_model=noise
    )
    physics_test = dinv.physics.BlurFFT(img_size=(1, *data["test_clean"].shape[1:]), filter=filter_tensor)
    lipschitz = float((physics_train.mask[..., 0] ** 2).max())
    if args.pgd_step is None:
        args.pgd_step = 1.0 / lipschitz
    equivalence = check_classical_equivalence(used_kernel, args, np.random.default_rng(seed))
    log(f"untrained network vs its classical algorithm in numpy (float64, 3 layers): max |diff| {equivalence}")
    # test_blurred must come from the same circular model: its residual then has the noise's std
    residual = (
        physics_test.A(torch.from_numpy(data["test_clean"]).float()[:, None])
        - torch.from_numpy(data["test_blurred"]).float()[:, None]
    )

    blurred_psnr = float(np.mean([psnr(b, c) for b, c in zip(data["test_blurred"], data["test_clean"], strict=True)]))
    results = {
        "versions": {
            "deepinv": dinv.__version__,
            "torch": torch.__version__,
            "scipy": scipy.__version__,
            "scikit-image": skimage.__version__,
            "torchvision": torchvision.__version__,
            "torchvision_ops_declared": declared_ops,
            "python": sys.version.split()[0],
            "python_executable": sys.executable,
        },
        "settings": {
            "input": str(args.input),
            "layers": args.layers,
            "batch": args.batch,
            "steps_requested": args.steps,
            "minutes_budget_per_network": args.minutes,
            "threads": args.threads,
            "optimizer": f"Adam lr {args.lr}",
            "loss": "MSE",
            "seed": seed,
            "sigma": sigma,
            "train_patches": list(data["train_clean"].shape),
            "test_images": list(data["test_clean"].shape),
            "lipschitz": lipschitz,
            "pgd_step_initial": args.pgd_step,
            "haar_levels": args.haar_levels,
            "cp_steps_initial": {"tau": args.cp_tau, "sigma": args.cp_sigma, "beta": 1.0},
            "dncnn": {"depth": args.dncnn_depth, "features": args.dncnn_features, "init": args.dncnn_init},
            "psnr": "data range 1, mean over test images",
            "outputs_clipped": args.clip,
            "init_iterate": "A^T y (deepinv's default)",
        },
        "convention": convention,
        "classical_equivalence_max_abs_diff": equivalence,
        "test_blurred_residual_std": float(residual.std()),
        "blurred_psnr": blurred_psnr,
        "networks": {},
    }
    log(
        f"blurred PSNR {blurred_psnr:.2f} dB; residual std of test_blurred vs BlurFFT(test_clean) "
        f"{results['test_blurred_residual_std']:.4f} (noise sigma {sigma:g})"
    )
    images = {}
    for name in args.networks:
        outcome = run_network(name, args, data, physics_train, physics_test, generator, log)
        results["networks"][name] = outcome["result"]
        images.update({f"{name}_{stage}": array for stage, array in outcome["images"].items()})
    if args.images_out is not None:
        np.savez_compressed(args.images_out, **images)
    return results


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, help="the study's .npz (kernel, sigma, train/test arrays, seed)")
    parser.add_argument("--out", type=Path, help="results JSON (also written with {'skipped': reason} on a skip)")
    parser.add_argument("--venv", type=Path, help="benchmark venv (default $DEEPINV_VENV, else build/deepinv-venv)")
    parser.add_argument("--setup-only", action="store_true", help="create the venv and stop")
    parser.add_argument("--networks", default=",".join(NETWORKS), help=f"comma-separated subset of {NETWORKS}")
    parser.add_argument("--layers", type=int, default=8, help="K, unfolded iterations")
    parser.add_argument("--steps", type=int, default=100_000, help="training steps per network (cap)")
    parser.add_argument("--minutes", type=float, default=8.0, help="training time budget per network")
    parser.add_argument("--batch", type=int, default=4, help="training batch (patches per step)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--log-every", type=int, default=50, help="progress line every N steps")
    parser.add_argument("--tune-points", type=int, default=9, help="grid size for the classical network's scalar")
    parser.add_argument("--tune-batch", type=int, default=16, help="training patches used for that tuning")
    parser.add_argument("--timing-warmup", type=int, default=2, help="untimed steps before the batch-4 timing")
    parser.add_argument("--timing-steps", type=int, default=5, help="timed steps at batch 4")
    parser.add_argument("--pgd-step", type=float, help="initial ISTA step (default 1/L, L = max |k̂|²)")
    parser.add_argument("--cp-tau", type=float, default=8**-0.5, help="initial primal step (τσ·8 ≤ 1, ||∇||² ≤ 8)")
    parser.add_argument("--cp-sigma", type=float, default=8**-0.5, help="initial dual step")
    parser.add_argument("--haar-levels", type=int, default=3, help="levels of the Haar transform")
    parser.add_argument("--dncnn-depth", type=int, default=5)
    parser.add_argument("--dncnn-features", type=int, default=32)
    parser.add_argument("--dncnn-init", choices=("zero", "kaiming"), default="zero", help="last conv of the DnCNN")
    parser.add_argument("--clip", action="store_true", help="clip outputs to [0, 1] before PSNR/SSIM")
    parser.add_argument("--images-out", type=Path, help="optional .npz of the reconstructed test images")
    args = parser.parse_args(argv)
    args.networks = [name.strip() for name in args.networks.split(",") if name.strip()]
    unknown = sorted(set(args.networks) - set(NETWORKS))
    if unknown:
        parser.error(f"--networks {unknown} unknown, expected names from {NETWORKS}")
    if not args.setup_only and args.input is None:
        parser.error("--input is required (or --setup-only)")
    if not 1 <= args.batch:
        parser.error(f"--batch {args.batch} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    requested = args.venv or os.environ.get("DEEPINV_VENV")
    venv = Path(requested or DEFAULT_VENV).absolute()
    # run here when this is the venv asked for, or when none was asked for and this Python has deepinv
    runs_here = Path(sys.prefix).resolve() == venv.resolve() or (
        requested is None and importlib.util.find_spec("deepinv") is not None
    )
    if not runs_here:
        reason = ensure_venv(venv)
        if reason is not None:
            return skip(reason, args.out)
        if args.setup_only:
            print(f"deepinv_side: venv ready at {venv}")
            return 0
        python = str(venv_python(venv))
        os.execv(python, [python, str(Path(__file__).resolve()), *argv, "--venv", str(venv)])
    if args.setup_only:
        print(f"deepinv_side: deepinv ready in {sys.prefix}")
        return 0
    results = run_study(args)
    text = json.dumps(results, indent=2) + "\n"
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"[deepinv] wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
