"""Resuming after a crash (issue 7): a run killed at a random step and resumed ends with the
weights, bit for bit, of a run never stopped; run folders record their status; checkpoints are
safetensors and JSON.

The kills are random but seeded (the trial number), so a failure can be replayed.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from erase.checkpoint import Checkpointer, Run, _proc_start, partial_dir, read_status
from erase.cli import main
from erase.errors import EraseError, Interrupted
from erase.methods.base import EraseInputs, ImageSet
from erase.relearn import encode_examples, relearn
from erase.train import FitHooks, FitSettings, fit
from erase.unlearn import run_method
from tests import tiny
from tests.test_relearn import RelearnConfig


class Kill(BaseException):
    """A crash at an arbitrary point that nothing in erase catches (SIGKILL, in-process)."""


def images(n: int, seed: int) -> ImageSet:
    rng = np.random.default_rng(seed)
    ims = tuple(Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(n))
    return ImageSet(ims, tuple(f"a {c} square" for c in ("red", "blue", "green", "yellow")[:n]))


INPUTS = EraseInputs(
    targets=("a red circle",), preserve=("a blue circle",), forget=images(2, 0), retain=images(4, 1)
)


def erasure(pipe, ckpt, **extra):
    overrides = {"steps": 10, "trajectories": 1, "ddim_steps": 2, "batch_size": 2, "lr": 1e-2, **extra}
    return run_method(pipe, "esd-x", INPUTS, overrides=overrides, seed=0, progress=False, checkpoint=ckpt).log


def erasure_low_memory(pipe, ckpt):
    """Steps taken inside the backward pass (StepInBackward) must checkpoint and resume the same."""
    return erasure(pipe, ckpt, low_memory=True)


def untraining(pipe, ckpt):
    overrides = {"steps": 8, "lr": 1e-3, "batch_size": 2, "max_forget_loss": 100.0}
    return run_method(
        pipe, "graddiff", INPUTS, overrides=overrides, seed=0, progress=False, checkpoint=ckpt
    ).log


def relearning(pipe, ckpt):
    """Two runs in a row (two checkpoint slots), the second from the first's weights, each with a
    curve that reads the weights."""
    data = encode_examples(pipe, images(4, 2))

    def evaluate(final=True):
        return {"w": float(pipe.unet.conv_in.weight.detach().double().sum())}

    logs = []
    for optimizer, lr in (("sgd", 0.05), ("adam", 1e-3)):
        cfg = RelearnConfig(optimizer=optimizer, lr=lr, steps=6, batch_size=2, eval_every=2, seed=1)
        logs.append(relearn(pipe, data, cfg, evaluate, progress=False, checkpoint=ckpt))
    return logs


SCENARIOS = {
    "esd-x": (erasure, 10),
    "esd-x-low-memory": (erasure_low_memory, 10),
    "graddiff": (untraining, 8),
    "relearning": (relearning, 12),
}
EVERY = 3


def play(name, folder=None, *, resume=False, kill_at=None, sigterm_at=None):
    """One attempt on a fresh tiny pipeline. ``kill_at`` / ``sigterm_at``: raise ``Kill`` / send
    this process SIGTERM at that training forward pass (the middle of a step)."""
    pipe = tiny.sd1()
    calls = 0

    def count(module, args):
        nonlocal calls
        # The training forward of each step, the one with gradients: ESD's fresh sampling also calls
        # the UNet inside a step, without them, a varying number of times.
        if module.training and torch.is_grad_enabled():
            calls += 1
            if calls == kill_at:
                raise Kill()
            if calls == sigterm_at:
                os.kill(os.getpid(), signal.SIGTERM)

    hook = pipe.unet.register_forward_pre_hook(count)
    ckpt = None if folder is None else Checkpointer(folder, every=EVERY, resume=resume)
    try:
        if sigterm_at is None:
            log = SCENARIOS[name][0](pipe, ckpt)
        else:
            with ckpt.catch_sigterm():
                log = SCENARIOS[name][0](pipe, ckpt)
    finally:
        hook.remove()
    return {k: v.clone() for k, v in pipe.unet.state_dict().items()}, log, calls, ckpt


_BASELINES: dict = {}


def baseline(name):
    """The uninterrupted run, without any checkpointing."""
    if name not in _BASELINES:
        _BASELINES[name] = play(name)[:3]
    return _BASELINES[name]


def assert_same(name, weights, log):
    base_weights, base_log, _ = baseline(name)
    initial = tiny.sd1().unet.state_dict()
    assert any(not torch.equal(base_weights[k], initial[k]) for k in initial)  # it did train
    different = [k for k in base_weights if not torch.equal(weights[k], base_weights[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[0]}"
    assert log == base_log


def kill_and_resume(name, folder, rng: random.Random, kills: int = 1) -> list[int]:
    """Kill ``kills`` attempts at random forward passes after the first checkpoint, resume each
    time, and return where the resumed attempts started from."""
    calls = baseline(name)[2]
    per_step = calls // SCENARIOS[name][1]
    for attempt in range(kills):
        # The first kill comes after a checkpoint; later ones anywhere in what is left to do.
        done = sum(json.loads(f.read_text())["step"] for f in folder.rglob("step-*.json"))
        kill_at = rng.randint(EVERY * per_step + 1 if attempt == 0 else 1, calls - done * per_step)
        with pytest.raises(Kill):
            play(name, folder, resume=attempt > 0, kill_at=kill_at)
        assert list(folder.rglob("step-*.json")), "the kill came before any checkpoint"
    weights, log, _, ckpt = play(name, folder, resume=True)
    resumed_from = [r["step"] for r in ckpt.resumed]
    assert resumed_from, "nothing was restored"
    assert_same(name, weights, log)
    return resumed_from


@pytest.mark.parametrize("name", SCENARIOS)
def test_killed_at_random_steps_then_resumed_ends_bit_for_bit_identical(name, tmp_path):
    for trial in range(2):
        kill_and_resume(name, tmp_path / str(trial), random.Random(f"{name}-{trial}"))


@pytest.mark.efficacy
@pytest.mark.parametrize("name", SCENARIOS)
def test_ten_random_kills_each_resumed_bit_for_bit(name, tmp_path):
    seen = set()
    for trial in range(10):
        rng = random.Random(f"slow-{name}-{trial}")
        seen.update(kill_and_resume(name, tmp_path / str(trial), rng, kills=rng.randint(1, 3)))
    assert len(seen) > 1  # the kills landed at different steps


def test_sigterm_finishes_the_step_checkpoints_and_resumes_identically(tmp_path):
    name, folder = "esd-x", tmp_path / "ck"
    with pytest.raises(Interrupted, match=r"SIGTERM after step 5 "):
        play(name, folder, sigterm_at=5)  # during step 4: the step ends, then the loop stops
    meta = json.loads(next(folder.rglob("step-*.json")).read_text())
    assert meta["step"] == 5 and not meta["finished"]
    weights, log, _, ckpt = play(name, folder, resume=True)
    assert ckpt.resumed == [{"fit": 0, "step": 5, "finished": False}]
    assert_same(name, weights, log)


def test_checkpoints_are_safetensors_and_json_and_never_unpickled(tmp_path, monkeypatch):
    folder = tmp_path / "ck"
    with pytest.raises(Kill):
        play("graddiff", folder, kill_at=2 * EVERY * 2 + 1)
    files = [f for f in folder.rglob("*") if f.is_file()]
    assert files and {f.suffix for f in files} == {".json", ".safetensors"}
    tensors = load_file(next(folder.rglob("*.tensors.safetensors")))
    assert any(k.startswith("optim/") and k.endswith("exp_avg_sq") for k in tensors)  # Adam's state

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load called while resuming")

    monkeypatch.setattr(torch, "load", refuse)
    weights, log, _, _ = play("graddiff", folder, resume=True)
    assert_same("graddiff", weights, log)


def _linear_fit(run):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x = torch.randn(8, 4)
    fit(
        model,
        {"w": model.weight},
        lambda s: (model(x) ** 2).mean(),
        FitSettings(6, 0.1, progress=False),
        FitHooks(checkpoint=run.checkpoint),
    )
    return model.weight.detach().clone()


def test_run_status_running_failed_done_and_bad_input_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    partial = partial_dir(out)

    # 1. A bad input found once the run started, before any checkpoint: nothing on disk.
    with pytest.raises(EraseError, match="bad model"), Run(out, "test", {"lr": 1}):
        assert read_status(partial)["status"] == "running"
        raise EraseError("bad model")
    assert not out.exists() and not partial.exists()

    # 2. A crash after a checkpoint: failed, with the reason; resumable.
    with pytest.raises(RuntimeError), Run(out, "test", {"lr": 1}, every=2) as run:
        status = read_status(partial)
        assert status["status"] == "running" and status["pid"] == os.getpid()
        expected = _linear_fit(run)
        raise RuntimeError("disk on fire")
    status = read_status(partial)
    assert status["status"] == "failed" and status["reason"] == "RuntimeError: disk on fire"
    assert status["resumable"] and not out.exists()

    # 3. Starting again needs --resume or --overwrite, and a resume needs the same settings.
    with pytest.raises(EraseError, match=r"--resume to continue it, or --overwrite"):
        Run(out, "test", {"lr": 1}).__enter__()
    with pytest.raises(EraseError, match=r"other settings \(lr=1, now lr=2\)"):
        Run(out, "test", {"lr": 2}, resume=True).__enter__()
    assert read_status(partial)["status"] == "failed"  # the refusals touched nothing

    # 4. The resume replays the finished loop and commits: status done, checkpoints gone.
    with Run(out, "test", {"lr": 1}, resume=True) as run:
        assert torch.equal(_linear_fit(run), expected)
        with run.commit() as tmp:
            (tmp / "result.txt").write_text("ok")
    status = read_status(out)
    assert status["status"] == "done" and status["attempts"] == 2
    assert status["resumed"] == [{"fit": 0, "step": 6, "finished": True}]
    assert not partial.exists() and (out / "result.txt").read_text() == "ok"


def test_a_live_run_is_not_disturbed(tmp_path):
    out = tmp_path / "run"
    other = subprocess.Popen(["sleep", "30"])
    try:
        partial_dir(out).mkdir()
        status = {"status": "running", "pid": other.pid, "host": socket.gethostname()}
        status["proc_start"] = _proc_start(other.pid)
        (partial_dir(out) / "status.json").write_text(json.dumps(status))
        with pytest.raises(EraseError, match=rf"another erase run \(pid {other.pid}\) is writing"):
            Run(out, "test", {}, overwrite=True).__enter__()
    finally:
        other.kill()
        other.wait()
    run = Run(out, "test", {})  # its process is gone: the folder is free again
    with run, run.commit():
        pass
    assert read_status(out)["status"] == "done"


# The real command line --------------------------------------------------------------------------
CONCEPT = [
    "concept",
    "circle",
    "--method",
    "esd-x",
    "--no-score",
    "--preserve",
    "",
    "--steps",
    "80",
    "--lr",
    "1e-3",
    "--set",
    "trajectories=1",
    "--set",
    "ddim_steps=2",
    "--set",
    "batch_size=1",
    # The killed process's path does not depend on the sampling; bank's one forward per step keeps
    # this test short (fresh sampling's resume is checked in-process above).
    "--set",
    "sampling=bank",
    "--device",
    "cpu",
]


def test_cli_killed_by_sigterm_resumes_to_the_same_delta(tmp_path, capsys):
    model = tmp_path / "tiny"
    tiny.sd1().save_pretrained(model)
    args = [*CONCEPT, "--model", str(model)]
    out, ref = tmp_path / "run", tmp_path / "ref"
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONWARNINGS="ignore")
    target = random.Random(7).randint(3, 30)  # the step at which to send SIGTERM

    # 1. Kill a real `erase concept` with SIGTERM once its checkpoints pass the target step.
    child = subprocess.Popen(
        [sys.executable, "-m", "erase", *args, "--out", str(out), "--checkpoint-every", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        status = read_status(partial_dir(out)) or {}
        if (status.get("checkpoint") or {}).get("step", 0) >= target:
            child.send_signal(signal.SIGTERM)
            break
        time.sleep(0.01)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143, err[-2000:]
    assert "Traceback" not in err and "--resume" in err.splitlines()[-1]
    status = read_status(partial_dir(out))
    stopped = status["checkpoint"]["step"]
    assert status["status"] == "failed" and "SIGTERM" in status["reason"] and status["resumable"]
    assert target <= stopped < 80 and not out.exists()

    # 2. Resume it; run the same command uninterrupted; the deltas agree bit for bit.
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert main([*args, "--out", str(ref)]) == 0
    capsys.readouterr()
    assert read_status(out)["resumed"] == [{"fit": 0, "step": stopped, "finished": False}]
    assert not partial_dir(out).exists()
    a, b = load_file(out / "delta.safetensors"), load_file(ref / "delta.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # 3. The finished folder is not run into again without --overwrite.
    assert main([*args, "--out", str(out), "--resume"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_cli_bad_input_leaves_nothing_and_resume_needs_out(tmp_path, capsys):
    model = tmp_path / "pickled"
    tiny.sd1().save_pretrained(model, safe_serialization=False)
    out = tmp_path / "run"
    assert main([*CONCEPT, "--model", str(model), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--allow-pickle" in err
    assert not out.exists() and not partial_dir(out).exists()
    assert main([*CONCEPT, "--model", str(model), "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    # The explicit flag loads it, and the run goes through to its delta.
    assert main([*CONCEPT, "--steps", "2", "--model", str(model), "--out", str(out), "--allow-pickle"]) == 0
    assert "unpickling" in capsys.readouterr().err
    assert read_status(out)["status"] == "done" and (out / "delta.safetensors").is_file()
