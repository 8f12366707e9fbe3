"""`unfoldgen train` against bad input and hostile files: a corpus of bad flags, data strings and
data files (each a one-line error naming the value and what was expected; exit 2 for usage, never
a traceback), checkpoints that hold a pickle payload (refused without running it), symbolic links
planted in the output folder (refused), a missing matplotlib (a note, the run still succeeds), and
stopping: SIGTERM or SIGINT saves a checkpoint, and `--nproc` ranks stop with the process that started them.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from unfoldgen import cli
from unfoldgen.data import sparse_source
from unfoldgen.training import CHECKPOINT, MODEL_FILE, CheckpointError, load_checkpoint, load_trained

ROOT = Path(__file__).resolve().parent.parent
LASSO = ROOT / "specs" / "lasso.unf"
DATA = "sparse:m=20,n=40,p=0.1,snr=40"
QUICK = ["--unfold", "ista", "--layers", "3", "--steps", "4", "--val-size", "50", "--no-progress"]
SOURCE = sparse_source(m=20, n=40, seed=0)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------- the corpus

# (what is wrong, the flags, the exit code, a fragment of the one-line error). FILE:name stands for
# a data file the test writes (see `data_files`); with the case's flags left out the run is valid.
CORPUS = [
    ("no steps", ["--steps", "0"], 2, "--steps 0: expected an integer ≥ 1"),
    ("steps not a number", ["--steps", "many"], 2, "--steps many: expected an integer"),
    ("no processes", ["--nproc", "0"], 2, "--nproc 0: expected an integer ≥ 1"),
    ("negative processes", ["--nproc", "-1"], 2, "--nproc -1: expected an integer ≥ 1"),
    ("negative gamma", ["--gamma", "-1"], 2, "--gamma -1: expected a finite number > 0"),
    ("negative lr", ["--lr", "-1"], 2, "--lr -1: expected a finite number > 0"),
    ("zero lr", ["--lr", "0"], 2, "--lr 0: expected a finite number > 0"),
    ("nan lr", ["--lr", "nan"], 2, "--lr nan: expected a finite number > 0"),
    ("no layers", ["--layers", "0"], 2, "--layers 0: expected an integer ≥ 1"),
    ("empty batch", ["--batch", "0"], 2, "--batch 0: expected an integer ≥ 1"),
    ("never validate", ["--val-every", "0"], 2, "--val-every 0: expected an integer ≥ 1"),
    ("no threads", ["--threads", "0"], 2, "--threads 0: expected an integer ≥ 1"),
    ("negative clip", ["--clip", "-1"], 2, "--clip -1: expected a finite number ≥ 0"),
    ("unknown scheme", ["--scheme", "greedy"], 2, "--scheme greedy: expected one of supervised, unsupervised"),
    ("milestones backwards", ["--milestones", "5,3"], 2, "--milestones 5,3: expected increasing step numbers"),
    ("weights not numbers", ["--weights", "1,x"], 2, "--weights 1,x: expected comma-separated numbers or uniform"),
    ("negative stop", ["--stop-after", "-1"], 2, "--stop-after -1: expected an integer ≥ 0"),
    ("negative m", ["--data", "sparse:m=-1"], 2, "sparse: m=-1; expected an integer ≥ 1"),
    ("zero m", ["--data", "sparse:m=0"], 2, "sparse: m=0; expected an integer ≥ 1"),
    ("74.5 GiB", ["--data", "sparse:m=100000,n=100000"], 2, "100000×100000 matrices (74.5 GiB of float64 each)"),
    ("nan snr", ["--data", "sparse:snr=nan"], 2, "sparse: snr=nan; expected a number of dB (inf: noiseless)"),
    ("-inf snr", ["--data", "sparse:snr=-inf"], 2, "sparse: snr=-inf; expected a number of dB"),
    (
        "outliers above 1",
        ["--data", "rpca:outliers=2"],
        2,
        "outliers=2.0; expected a fraction of the entries",
    ),
    ("negative noise", ["--data", "rpca:noise=-1"], 2, "noise=-1.0; expected a standard deviation ≥ 0"),
    (
        "duplicate key",
        ["--data", "sparse:m=20,m=30"],
        2,
        "m is given twice in 'sparse:m=20,m=30'; expected each",
    ),
    ("negative seed", ["--seed", "-1"], 2, "--seed -1: expected an integer ≥ 0"),
    ("nan in training inputs", ["--data", "FILE:nan_train.npz"], 2, "array 'y' holds 1 NaN/Inf values"),
    ("inf in targets", ["--data", "FILE:inf_target.npz"], 2, "array 'x' holds 2 NaN/Inf values"),
    ("nan in the operator", ["--data", "FILE:nan_operator.npz"], 2, "array 'A' holds 1 NaN/Inf values"),
    ("truncated npz", ["--data", "FILE:truncated.npz"], 2, "not a readable .npz file"),
    ("text as npz", ["--data", "FILE:text.npz"], 2, "not an .npz file; expected a zip archive of arrays"),
    ("output is a file", ["-o", "FILE:text.npz"], 2, "exists and is not a folder; expected an output folder"),
    ("output under a file", ["-o", "FILE:text.npz/run"], 2, "run: cannot be made (Not a directory); expected a folder"),
]


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad_data")
    sample = SOURCE.validation(200)
    A, y, x = SOURCE.fixed["A"], sample["y"], sample["x"]
    y_nan = y.copy()
    y_nan[150, 3] = np.nan
    np.savez(folder / "nan_train.npz", A=A, y=y_nan, x=x)
    x_inf = x.copy()
    x_inf[[4, 9], 0] = np.inf
    np.savez(folder / "inf_target.npz", A=A, y=y, x=x_inf)
    A_nan = A.copy()
    A_nan[0, 0] = np.nan
    np.savez(folder / "nan_operator.npz", A=A_nan, y=y, x=x)
    np.savez(folder / "whole.npz", A=A, y=y, x=x)
    (folder / "truncated.npz").write_bytes((folder / "whole.npz").read_bytes()[:2000])
    (folder / "text.npz").write_text("y,x\n1,2\n")
    return folder


@pytest.mark.parametrize(("case", "args", "code", "message"), CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_is_one_line_naming_the_value(case, args, code, message, data_files, tmp_path, capsys):
    args = [str(data_files / a.removeprefix("FILE:")) if a.startswith("FILE:") else a for a in args]
    # the case's flag comes last: argparse keeps the last value given
    exit_code, _, err = run_cli(capsys, "train", LASSO, *QUICK, "--data", DATA, "-o", tmp_path / "run", *args)
    assert exit_code == code, err
    assert message in err, err
    assert err.startswith("unfoldgen: ") and err.count("\n") == 1 and "Traceback" not in err


def test_no_traceback_as_a_process(data_files, tmp_path):
    """The command as a user runs it: the truncated file is one line on stderr, exit 2."""
    command = [sys.executable, "-m", "unfoldgen", "train", str(LASSO), *QUICK, "-o", str(tmp_path / "run")]
    done = subprocess.run(
        [*command, "--data", str(data_files / "truncated.npz")], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "not a readable .npz file" in done.stderr, done.stderr


# ---------------------------------------------------------------------- checkpoints hold tensors and data only


class Payload:
    """Unpickling this creates a file: a stand-in for arbitrary code in a crafted checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("name", [CHECKPOINT, MODEL_FILE])
def test_a_pickle_payload_is_refused_without_running(name, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", LASSO, *QUICK, "--data", DATA, "-o", run)
    assert code == 0, err
    marker = tmp_path / "payload-ran"
    torch.save({"model": {}, "config": {}, "extra": Payload(marker)}, run / name)
    if name == CHECKPOINT:
        code, _, err = run_cli(capsys, "train", "--resume", run, "--no-progress")
        assert code == 2 and err.count("\n") == 1
        assert f"{run / CHECKPOINT}: refused, not loaded: it holds objects other than tensors and plain data" in err
    else:
        with pytest.raises(CheckpointError, match="refused, not loaded"):
            load_trained(run)
    assert not marker.exists()


def test_a_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", LASSO, *QUICK, "--data", DATA, "-o", run)
    assert code == 0, err
    (run / CHECKPOINT).write_bytes((run / CHECKPOINT).read_bytes()[:500])
    code, _, err = run_cli(capsys, "train", "--resume", run, "--no-progress")
    assert code == 2 and err.count("\n") == 1 and "not a readable checkpoint" in err, err
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "nowhere", "--no-progress")
    assert code == 2 and "no such file; expected a checkpoint written by unfoldgen train" in err, err


# ---------------------------------------------------------------------- the output folder


@pytest.mark.parametrize("planted", [CHECKPOINT, "metrics.json", "generated"])
def test_symlinks_in_the_output_folder_are_refused(planted, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir() if planted == "generated" else victim.write_text("keep me")
    (run / planted).symlink_to(victim)
    code, _, err = run_cli(capsys, "train", LASSO, *QUICK, "--data", DATA, "-o", run)
    assert code == 2 and err.count("\n") == 1
    assert f"{run / planted}: is a symbolic link" in err
    assert (victim.is_dir() and not any(victim.iterdir())) or victim.read_text() == "keep me"
    assert sorted(p.name for p in run.iterdir()) == [planted]  # nothing written before the refusal


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    """The second checkpoint cannot be written: one line naming it, exit 1, the first one intact."""
    run = tmp_path / "run"
    real_save = torch.save
    saves = []

    def fills_up(obj, stream, *args, **kwargs):
        saves.append(obj)
        if len(saves) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, stream, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fills_up)
    code, _, err = run_cli(capsys, "train", LASSO, *QUICK, "--checkpoint-every", "2", "--data", DATA, "-o", run)
    assert code == 1
    assert err == f"unfoldgen: {run / CHECKPOINT}: No space left on device; the previous file is kept\n"
    assert load_checkpoint(run)["step"] == saves[0]["step"]
    assert sorted(p.name for p in run.iterdir()) == [CHECKPOINT, "generated"]  # no temporary left


def test_without_matplotlib_a_run_notes_the_extra_and_succeeds(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    code, _, err = run_cli(capsys, "train", LASSO, *QUICK, "--data", DATA, "-o", tmp_path / "run")
    assert code == 0, err
    assert "no plots written: matplotlib is not installed (pip install 'unfoldgen[plot]')" in err
    assert (tmp_path / "run" / "metrics.json").is_file() and not list((tmp_path / "run").glob("*.png"))


# ---------------------------------------------------------------------- stopping


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "unfoldgen", "train", str(LASSO), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_saves_a_checkpoint_and_exits_without_a_traceback(number, tmp_path):
    """SIGTERM, and SIGINT (Ctrl-C): the run stops after the current step with a checkpoint."""
    run = tmp_path / "run"
    args = ["--unfold", "ista", "--data", DATA, "--layers", "3", "--steps", "1000000", "--val-size", "50"]
    process = start([*args, "--no-progress", "--checkpoint-every", "5", "-o", str(run)])
    wait_for(lambda: (run / CHECKPOINT).exists() and torch.load(run / CHECKPOINT, weights_only=True)["step"] >= 5)
    process.send_signal(number)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + number, err
    assert "Traceback" not in err and f"{number.name}: stopped after" in err and f"--resume {run}" in err
    checkpoint = torch.load(run / CHECKPOINT, weights_only=True)
    assert checkpoint["step"] >= 5 and checkpoint["step"] == len(checkpoint["losses"])
    assert json.loads((run / "metrics.json").read_text())["stopped"] == "interrupted"


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ranks die with their parent through prctl (Linux)")
@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch.distributed with gloo is not available")
@pytest.mark.parametrize("number", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_nproc_ranks_stop_with_the_launching_process(number, tmp_path):
    """SIGKILL: the launcher cannot clean up, the kernel tells its children. SIGTERM: passed on to
    the ranks, which stop with a checkpoint."""
    run = tmp_path / "run"
    args = ["--unfold", "ista", "--data", DATA, "--layers", "3", "--steps", "1000000", "--batch", "8"]
    process = start([*args, "--val-size", "20", "--no-progress", "--nproc", "2", "-o", str(run)])
    wait_for(lambda: (run / CHECKPOINT).exists() or process.poll() is not None)
    assert process.poll() is None, process.communicate()[1][-2000:]
    below = descendants(process.pid)
    assert len(below) >= 3  # torchrun and its two ranks
    process.send_signal(number)
    _, err = process.communicate(timeout=120)
    wait_for(lambda: not any(alive(pid) for pid in below), timeout=90)
    if number == signal.SIGTERM:
        assert process.returncode == 128 + number and "Traceback" not in err, err
        assert f"SIGTERM: the ranks stopped with a checkpoint; continue with --resume {run}" in err, err
        assert json.loads((run / "metrics.json").read_text())["stopped"] == "interrupted"
