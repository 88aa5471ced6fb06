"""Resuming after a crash, and the status of a run folder.

``fit`` (``erase.methods.base``) is the one loop every gradient method and the relearning attack
go through. A ``Checkpointer`` passed to it saves all the loop needs to go on exactly where it
stopped: the trained tensors, the optimizer's state, the torch / numpy / python RNG states and the
``torch.Generator``s the loss draws from, the step, the losses so far, and the caller's own lists
(relearning's curve). It writes every ``every`` steps, on SIGTERM (once the step in progress is
done) and when a loop ends. Tensors go to safetensors and the rest to JSON; nothing is pickled.
On CPU a resumed run ends with the weights, bit for bit, of one that was never stopped.

A resumed command repeats its work up to the loop (loading, ESD's trajectories from the same
seed), so whatever a method draws up front is drawn again identically. Each ``fit`` call of a run
takes the next numbered slot: a finished slot is replayed from its record without training (its
final tensors, losses and lists come back as they were), the unfinished one continues from its
last checkpoint.

Layout, for a command that writes OUT (``Run``): OUT appears only when the run is done, whole
(``erase.io.atomic_dir``), holding ``status.json`` with ``"status": "done"``. Until then its twin
``OUT.partial/`` holds::

    status.json                                   running (pid, host) or failed, with the reason
    checkpoints/fit-000/step-000040.json          step, losses, caller lists, small state
    checkpoints/fit-000/step-000040.tensors.safetensors   trained tensors, optimizer tensors
    checkpoints/fit-000/step-000040.rng.safetensors       RNG and generator states

A checkpoint's JSON is written last, so a checkpoint without one (a kill while writing) is
ignored. ``OUT.partial/`` is removed when OUT appears.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from erase.errors import EraseError, Interrupted
from erase.io import DISK_ERRORS, atomic_dir, write_json

PARTIAL = ".partial"
DEFAULT_EVERY = 50


def partial_dir(out: str | Path) -> Path:
    """Where a run writing ``out`` keeps its status and checkpoints until it is done."""
    out = Path(out)
    return out.with_name(out.name + PARTIAL)


@dataclass
class LoopState:
    """Everything ``fit`` needs to continue a loop where it stopped, in one place."""

    params: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Optimizer | None
    generators: tuple[torch.Generator, ...] = ()
    extra: dict[str, list] = field(default_factory=dict)  # the caller's lists, JSON-able
    losses: list[float] = field(default_factory=list)
    step: int = 0  # steps completed
    finished: bool = False  # restored from a slot whose loop had ended


class Checkpointer:
    """Saves and restores ``fit``'s loop state in ``folder``, one slot per ``fit`` call.

    ``every``: steps between checkpoints; each one holds the trained tensors and twice as many
    optimizer tensors (Adam), so raise it when writing them costs more than the steps do.
    ``resume``: restore each slot's last checkpoint instead of starting it afresh.
    ``on_save(slot, step)`` is told about every checkpoint (a run's status shows progress).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        every: int = DEFAULT_EVERY,
        resume: bool = False,
        on_save: Callable[[int, int], None] | None = None,
    ):
        if every <= 0:
            raise EraseError(f"--checkpoint-every must be positive, got {every}")
        self.folder, self.every, self.resume, self.on_save = Path(folder), every, resume, on_save
        self.resumed: list[dict] = []  # where each restored slot went on from
        self._next = 0
        self._slot: Path | None = None
        self._desc, self._tag, self._steps, self._names = "", "", 0, ()
        self._in_loop = False  # a SIGTERM now waits for the end of the step
        self._stop = False

    def has_checkpoints(self) -> bool:
        return self.folder.is_dir() and any(self.folder.glob("fit-*/step-*.json"))

    # The loop's side ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def loop(self, state: LoopState, *, desc: str, tag: str, steps: int) -> Iterator[None]:
        """Around one ``fit`` loop: take the next slot, restore it when resuming, and save the
        loop's end. A loop stopped by an error (a diverged relearning run) is not recorded as
        such: resumed, it goes on from its last checkpoint and meets the same error again."""
        n = self._next
        self._next += 1
        self._slot = self.folder / f"fit-{n:03d}"
        self._desc, self._tag, self._steps = desc, tag, steps
        self._names = tuple(sorted(state.params))
        if self.resume and (found := _latest(self._slot)) is not None:
            self._restore(state, found)
            self.resumed.append({"fit": n, "step": state.step, "finished": state.finished})
        self._in_loop, self._stop = not state.finished, False
        try:
            yield
            if not state.finished:
                state.finished = True
                self._save(state)
        finally:
            self._in_loop = False
        if self._stop:  # SIGTERM came during the last step: the loop is saved, the rest is not
            self._stop = False
            raise Interrupted(f"stopped by SIGTERM after {self._desc} ended; checkpoint in {self.folder}")

    def step_done(self, state: LoopState) -> None:
        """After each step: a checkpoint when due, and the stop a SIGTERM asked for."""
        due = state.step % self.every == 0 and state.step < self._steps
        if self._stop or due:
            self._save(state)
        if self._stop:
            self._stop = False
            raise Interrupted(
                f"stopped by SIGTERM after step {state.step} of {self._desc}; "
                f"checkpoint written to {self.folder}"
            )

    # SIGTERM ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def catch_sigterm(self) -> Iterator[None]:
        """Inside: SIGTERM during a loop finishes the step, checkpoints and raises ``Interrupted``;
        anywhere else it raises ``Interrupted`` at once (the last checkpoint stays)."""
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread may handle signals
            return
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _on_sigterm(self, signum, frame) -> None:
        if self._in_loop:
            self._stop = True
        else:
            raise Interrupted("stopped by SIGTERM")

    # Files --------------------------------------------------------------------------------------
    def _save(self, state: LoopState) -> None:
        slot = self._slot
        slot.mkdir(parents=True, exist_ok=True)
        stem = slot / f"step-{state.step:06d}"
        tensors = {f"param/{k}": _cpu(p) for k, p in state.params.items()}
        meta: dict = {
            "tag": self._tag,
            "params": list(self._names),
            "step": state.step,
            "finished": state.finished,
            "losses": state.losses,
            "extra": state.extra,
            "optimizer": {},
        }
        if state.optimizer is not None and not state.finished:
            # A finished loop is never stepped again: its optimizer state would only take space.
            for i, st in state.optimizer.state_dict()["state"].items():
                for k, v in st.items():
                    if torch.is_tensor(v):
                        tensors[f"optim/{i}/{k}"] = _cpu(v)
                    else:
                        meta["optimizer"][f"{i}/{k}"] = v
        rng, meta["rng"] = _rng_state(state.generators)
        _write_tensors(stem.with_suffix(".tensors.safetensors"), tensors)
        _write_tensors(stem.with_suffix(".rng.safetensors"), rng)
        write_json(stem.with_suffix(".json"), meta)  # last: it makes the checkpoint count
        self._prune(stem)
        if self.on_save is not None:
            self.on_save(int(slot.name.split("-")[1]), state.step)

    def _prune(self, keep: Path) -> None:
        """Only a slot's newest checkpoint is kept. A finished slot keeps its final tensors (not
        its optimizer's): replaying it must leave the model as the loop did, for whatever the
        caller does next (relearning's ``on_done`` saves the relearned weights)."""
        for f in self._slot.glob("step-*"):
            if not f.name.startswith(keep.name + "."):
                f.unlink(missing_ok=True)

    def _restore(self, state: LoopState, meta_path: Path) -> None:
        meta = json.loads(meta_path.read_text())
        if meta["tag"] != self._tag:
            raise EraseError(
                f"the checkpoint {meta_path} belongs to another loop ({meta['tag']!r}, not {self._tag!r}); "
                "resume with the same settings, or pass --overwrite to start over"
            )
        stem = meta_path.with_suffix("")
        tensors = load_file(stem.with_suffix(".tensors.safetensors"))
        with torch.no_grad():
            for k, p in state.params.items():
                p.copy_(tensors[f"param/{k}"].to(p.device))
        if state.optimizer is not None and not meta["finished"]:
            saved: dict[int, dict] = {}
            for key, t in tensors.items():
                if key.startswith("optim/"):
                    _, i, k = key.split("/", 2)
                    saved.setdefault(int(i), {})[k] = t
            for key, v in meta["optimizer"].items():
                i, k = key.split("/", 1)
                saved.setdefault(int(i), {})[k] = v
            groups = state.optimizer.state_dict()["param_groups"]  # from this run's own settings
            state.optimizer.load_state_dict({"state": saved, "param_groups": groups})
        _set_rng_state(load_file(stem.with_suffix(".rng.safetensors")), meta["rng"], state.generators)
        state.losses[:] = meta["losses"]
        for name, lst in state.extra.items():
            lst[:] = meta["extra"].get(name, [])
        state.step, state.finished = meta["step"], meta["finished"]


def loop_tag(desc: str, steps: int, lr: float, optimizer: str, names) -> str:
    """What must not change between a checkpoint and its resume."""
    digest = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:12]
    return f"{desc}: {steps} steps, {optimizer} lr {lr:g}, {len(names)} tensors {digest}"


def _latest(slot: Path) -> Path | None:
    """The newest complete checkpoint of a slot (its JSON and both tensor files)."""
    for meta in sorted(slot.glob("step-*.json"), reverse=True):
        stem = meta.with_suffix("")
        if not stem.with_suffix(".rng.safetensors").is_file():
            continue
        if stem.with_suffix(".tensors.safetensors").is_file():
            return meta
    return None


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous()


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the checkpoint must survive the machine, not only the process
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in DISK_ERRORS:
            raise EraseError(
                f"could not write a checkpoint to {path.parent} ({e.strerror}); free space, "
                "or raise --checkpoint-every"
            ) from None
        raise
    tmp.replace(path)


def _rng_state(generators) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda/{i}"] = s
    for i, g in enumerate(generators):
        tensors[f"generator/{i}"] = g.get_state()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss_next = random.getstate()
    small = {
        "numpy": [kind, int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
        "generators": len(generators),
    }
    return tensors, small


def _set_rng_state(tensors: dict[str, torch.Tensor], small: dict, generators) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda/")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if small["generators"] != len(generators):
        raise EraseError(
            f"the checkpoint holds {small['generators']} random generators, this loop has {len(generators)}; "
            "it was written by another version of erase: pass --overwrite to start over"
        )
    for i, g in enumerate(generators):
        g.set_state(tensors[f"generator/{i}"])
    kind, pos, has_gauss, cached = small["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = small["python"]
    random.setstate((version, tuple(internal), gauss_next))


# Run folders --------------------------------------------------------------------------------------
def read_status(folder: str | Path) -> dict | None:
    """A folder's ``status.json``, or None when it has none (or an unreadable one)."""
    path = Path(folder) / "status.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks (Linux): a reused pid has another one."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(status: dict) -> bool:
    """Whether the process a ``running`` status names is still running."""
    if status.get("host") != socket.gethostname():
        return False  # cannot tell; a resume from another machine is the user's call
    pid = status.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    started = _proc_start(pid)
    return started is None or started == status.get("proc_start")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _first_difference(old: dict, new: dict) -> str | None:
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key}={old.get(key)!r}, now {key}={new.get(key)!r}"
    return None


class Run:
    """A command's run folder: its status while it runs, its checkpoints, and its commit.

    Enter it once the inputs are checked, around the work::

        with Run(out, "concept", config, resume=args.resume, overwrite=args.overwrite) as run:
            ...run_method(..., checkpoint=run.checkpoint)...
            with run.commit() as tmp:  # OUT appears whole, with status.json "done"
                ...write the outputs into tmp...

    On an error the status says ``failed`` with the reason, and the checkpoints stay for
    ``--resume``; an ``EraseError`` before any checkpoint (a bad input found while loading) leaves
    nothing on disk. ``config`` (JSON-able) must be the same when resuming.
    """

    def __init__(
        self,
        out: str | Path,
        command: str,
        config: dict,
        *,
        resume: bool = False,
        overwrite: bool = False,
        every: int = DEFAULT_EVERY,
    ):
        self.out, self.partial = Path(out), partial_dir(out)
        self.command, self.resume, self.overwrite = command, resume, overwrite
        self.config = json.loads(json.dumps(config, default=str))
        self.checkpoint = Checkpointer(self.partial / "checkpoints", every=every, on_save=self._saved)
        self.status: dict = {}
        self._committed = False
        self._sigterm: contextlib.AbstractContextManager | None = None

    def __enter__(self) -> Run:
        # 1. Check what is there before touching it.
        previous = read_status(self.partial) or {}
        if previous.get("status") == "running" and _alive(previous):
            raise EraseError(
                f"another erase run (pid {previous['pid']}) is writing {self.out}; "
                "wait for it to finish or choose another --out"
            )
        resumable = self.checkpoint.has_checkpoints()
        if self.resume and resumable:
            if diff := _first_difference(previous.get("config", {}), self.config):
                raise EraseError(
                    f"the checkpoints in {self.partial} were made with other settings ({diff}); "
                    "resume with the same arguments, or pass --overwrite to start over"
                )
        elif self.resume:
            sys.stderr.write(f"erase: no checkpoint in {self.partial}; starting from the beginning\n")
        elif resumable and not self.overwrite:
            why = f" ({previous['reason']})" if previous.get("reason") else ""
            raise EraseError(
                f"{self.partial} holds checkpoints of an unfinished run{why}; "
                "pass --resume to continue it, or --overwrite to start over"
            )
        if not (self.resume and resumable):
            shutil.rmtree(self.partial, ignore_errors=True)
            previous = {}
        self.checkpoint.resume = self.resume and resumable

        # 2. Mark the run as running.
        fresh = not self.partial.exists()
        self.partial.mkdir(parents=True, exist_ok=True)
        self.status = {
            "status": "running",
            "command": self.command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "proc_start": _proc_start(os.getpid()),
            "started_at": previous.get("started_at", _now()),
            "attempts": previous.get("attempts", 0) + 1,
            "resumed": previous.get("resumed", []),
            "checkpoint": previous.get("checkpoint"),
            "config": self.config,
        }
        try:
            write_json(self.partial / "status.json", self.status)
        except BaseException:
            if fresh:
                shutil.rmtree(self.partial, ignore_errors=True)
            raise
        self._sigterm = self.checkpoint.catch_sigterm()
        self._sigterm.__enter__()
        return self

    def _saved(self, fit: int, step: int) -> None:
        self.status["checkpoint"] = {"fit": fit, "step": step, "at": _now()}
        write_json(self.partial / "status.json", self.status)

    @contextlib.contextmanager
    def commit(self) -> Iterator[Path]:
        """A temporary folder for the outputs; on success it becomes OUT, with status.json done,
        and the checkpoints go."""
        with atomic_dir(self.out) as tmp:
            yield tmp
            drop = ("pid", "host", "proc_start", "config", "checkpoint")
            done = {k: v for k, v in self.status.items() if k not in drop}
            done |= {"status": "done", "finished_at": _now()}
            done["resumed"] = done["resumed"] + self.checkpoint.resumed
            write_json(tmp / "status.json", done)
        self._committed = True
        shutil.rmtree(self.partial, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._sigterm is not None:
            self._sigterm.__exit__(None, None, None)
        if self._committed:
            return False
        has = self.checkpoint.has_checkpoints()
        if exc_type is not None and issubclass(exc_type, EraseError) and not has:
            shutil.rmtree(self.partial, ignore_errors=True)  # a bad input leaves nothing behind
            return False
        if exc_type is None:
            reason = "ended without writing its outputs"
        elif issubclass(exc_type, KeyboardInterrupt):
            reason = "interrupted (Ctrl-C)"
        else:
            text = str(exc).splitlines()[0] if str(exc) else ""
            reason = (
                text if issubclass(exc_type, (EraseError, Interrupted)) else f"{exc_type.__name__}: {text}"
            )
        self.status |= {
            "status": "failed",
            "reason": reason,
            "resumable": has,
            "failed_at": _now(),
            "resumed": self.status["resumed"] + self.checkpoint.resumed,
        }
        with contextlib.suppress(OSError, EraseError):  # a full disk must not hide the first error
            write_json(self.partial / "status.json", self.status)
        return False
