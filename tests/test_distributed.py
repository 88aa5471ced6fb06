"""Several processes through accelerate (issue 7): the same results as one process.

The launched tests start two CPU processes over gloo with the real launcher. On a machine without
GPUs, ``accelerate launch --cpu --num_processes 2`` starts a single process (its CPU path needs
MPI); ``--multi_gpu`` goes through torchrun and, finding no GPU, erase starts accelerate on the CPU.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import erase
from erase import distributed
from erase.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], cwd: Path, processes: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """``accelerate launch -m erase ARGS`` with ``processes`` CPU processes of one thread each."""
    env = os.environ | {
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        # The children import erase from this checkout, whatever the install points at.
        "PYTHONPATH": os.pathsep.join(
            [str(Path(erase.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "erase",
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def in_one_thread(args: list[str]) -> int:
    """The single-process reference, in the thread count the launched processes use, so that any
    difference is the split's and not the CPU kernels'."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(args)
    finally:
        torch.set_num_threads(threads)


def two_and_one(args: list[str], tmp_path: Path, reports: str | None = None, timeout: int = 300) -> None:
    """``args`` launched on 2 processes into ``tmp_path/two`` and run in this process into
    ``tmp_path/one``; ``reports``, a line the command prints once, must come from the main
    process only (only it reports and writes)."""
    proc = launch([*args, "--out", str(tmp_path / "two")], tmp_path, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if reports is not None:
        assert proc.stdout.count(reports) == 1, proc.stdout[-3000:]
    assert in_one_thread([*args, "--device", "cpu", "--out", str(tmp_path / "one")]) == 0


# The helpers, without processes --------------------------------------------------------------------


def test_one_process_is_the_identity():
    assert distributed.world() == (0, 1) and distributed.is_main() and not distributed.splitting()
    items = list(range(7))
    assert distributed.share(items) == items and distributed.gather(items) == items


@pytest.mark.parametrize("n_items", [0, 1, 5, 8, 13])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_shares_are_contiguous_and_cover_everything_once(n_items, n, monkeypatch):
    items = list(range(n_items))
    shares = []
    for rank in range(n):
        monkeypatch.setattr(distributed, "world", lambda rank=rank: (rank, n))
        shares.append(distributed.share(items))
        with distributed.alone():  # a process on its own share does not split again
            assert distributed.share(items) == items
    assert [x for s in shares for x in s] == items  # gathered in process order: the original order
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_commands_that_cannot_share_work_refuse_to_run_as_several(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = main(["concept", "red", "--no-score", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "runs in one process" in err[0] and "score" in err[0]
    assert not (tmp_path / "out").exists()


# Launched: two CPU processes over gloo ---------------------------------------------------------------


@pytest.mark.efficacy  # the default suite launches two processes once, in the audit test below
def test_two_processes_generate_exactly_like_one(tmp_path):
    """2 prompts x 3 seeds in batches of 2, so the two processes make 2 and 1 of the 3 batches."""
    args = ["generate", "--prompt", "a red circle", "--prompt", "a blue square", "--seeds", "0-2"]
    args += ["--steps", "3", "--batch-size", "2"]
    two_and_one(args, tmp_path, reports="wrote 6 images")
    names = sorted(p.name for p in (tmp_path / "one" / "images").iterdir())
    assert len(names) == 6 and names == sorted(p.name for p in (tmp_path / "two" / "images").iterdir())
    for name in names:
        one = np.asarray(Image.open(tmp_path / "one" / "images" / name))
        two = np.asarray(Image.open(tmp_path / "two" / "images" / name))
        assert np.array_equal(one, two), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no stray folder


@pytest.mark.efficacy
def test_two_processes_score_exactly_like_one(tmp_path):
    """12 held-out prompts x 1 seed in batches of 3: each process makes 2 of the 4 batches."""
    args = ["score", "--concept", "red", "--seeds", "1000", "--steps", "3", "--batch-size", "3"]
    two_and_one(args, tmp_path, reports="record:")
    two = json.loads((tmp_path / "two" / "record.json").read_text())["results"]
    one = json.loads((tmp_path / "one" / "record.json").read_text())["results"]
    assert two["concepts"]["red"]["n"] == 12
    assert two == one  # accuracy, interval, predictions and CLIP score, to the last bit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no stray folder


@pytest.mark.efficacy
def test_two_processes_relearn_exactly_like_one(tmp_path):
    """A sweep of four relearning configs, two per process, from a UCE erasure of red."""
    run = tmp_path / "uce"
    assert (
        main(["concept", "red", "--method", "uce", "--no-score", "--device", "cpu", "--out", str(run)]) == 0
    )
    args = [
        "relearn",
        str(run),
        "--optimizers",
        "sgd,adam",
        "--seeds",
        "0,1",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--examples",
        "4",
        "--eval-seeds",
        "1000-1001",
        "--other-seeds",
        "1000",
        "--eval-steps",
        "3",
        "--oracle",
        "none",  # the oracle's runs share the same code path; they would double the time
    ]
    two_and_one(args, tmp_path, timeout=600)
    two = json.loads((tmp_path / "two" / "relearn.json").read_text())["results"]
    one = json.loads((tmp_path / "one" / "relearn.json").read_text())["results"]
    assert [r["config"] for r in two["runs"]] == [r["config"] for r in one["runs"]]  # config order
    assert (
        two["runs"] == one["runs"] and two["summary"] == one["summary"] and two["original"] == one["original"]
    )


def test_two_processes_audit_exactly_like_one(tmp_path):
    """An audit of a UCE erasure: 9 prompts x 1 seed x 2 columns, in batches of 3, so each process
    draws part of every column; the judge's cells and the grid must be those of one process. In the
    default suite (about 20 s) as the launched check that judged results do not depend on the split."""
    run = tmp_path / "uce"
    assert (
        main(["concept", "red", "--method", "uce", "--no-score", "--device", "cpu", "--out", str(run)]) == 0
    )
    args = ["audit", str(run), "--seeds", "1000", "--steps", "3", "--batch-size", "3", "--no-cache"]
    two_and_one(args, tmp_path, reports="grid and record:")
    two = json.loads((tmp_path / "two" / "audit.json").read_text())["results"]
    one = json.loads((tmp_path / "one" / "audit.json").read_text())["results"]
    assert len(two["cells"]) == 18 and two["cells"] == one["cells"] and two["presence"] == one["presence"]
    grid_one = np.asarray(Image.open(tmp_path / "one" / "audit.png"))
    assert np.array_equal(grid_one, np.asarray(Image.open(tmp_path / "two" / "audit.png")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two", "uce"]  # no stray folder
