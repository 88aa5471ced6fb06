"""Several processes through ``accelerate``: split a list of work items, gather the results.

``accelerate launch -m erase score ...`` starts one process per GPU (or, on a CPU-only machine with
``--multi_gpu``, per CPU process over gloo); ``erase.cli.main`` then starts an ``accelerate``
``PartialState``. Work that is a list of independent items (images to generate, relearning
configurations to run) is cut into one contiguous share per process, and the shares are gathered
back in order, so every process ends up holding the same full list as a single process would.

Without an active ``PartialState`` of more than one process every helper here is the identity, so a
single process behaves exactly as if this module did not exist.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

# Inside `alone()` each process works on its own share (a relearning configuration); a split or
# gather there would wait forever for processes busy elsewhere, so they act as one process.
_ALONE: ContextVar[bool] = ContextVar("erase_alone", default=False)


def launched() -> bool:
    """True when a launcher (accelerate, torchrun) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start():
    """Start the ``accelerate`` state of a launched process (gloo when there is no GPU)."""
    import torch
    from accelerate import PartialState

    cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    return PartialState(cpu=cpu)


def _state():
    """The active ``PartialState`` when it has more than one process, else None."""
    try:
        from accelerate import PartialState
    except ImportError:
        return None
    # Only look at a state someone started: creating one here would touch CUDA in every process.
    if not PartialState._shared_state:
        return None
    state = PartialState()
    return state if state.num_processes > 1 else None


def world() -> tuple[int, int]:
    """(this process's index, number of processes); (0, 1) without several processes."""
    state = _state()
    return (state.process_index, state.num_processes) if state else (0, 1)


def is_main() -> bool:
    """Whether this process writes files and prints results (the only one when alone)."""
    return world()[0] == 0


def splitting() -> bool:
    """Whether `share` and `gather` really split: several processes, and not inside `alone()`."""
    return world()[1] > 1 and not _ALONE.get()


def share(items: Sequence[T]) -> list[T]:
    """This process's contiguous share of ``items`` (the first ``len % n`` shares one longer)."""
    if not splitting():
        return list(items)
    rank, n = world()
    base, extra = divmod(len(items), n)
    start = rank * base + min(rank, extra)
    return list(items[start : start + base + (rank < extra)])


def gather(mine: Sequence[T]) -> list[T]:
    """Every process's share, concatenated in process order: the full list, on every process."""
    if not splitting():
        return list(mine)
    from accelerate.utils import gather_object

    return gather_object(list(mine))


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Run the block in this process only: `share` and `gather` inside it do not split."""
    token = _ALONE.set(True)
    try:
        yield
    finally:
        _ALONE.reset(token)


def device() -> str | None:
    """This process's device when several share a machine's GPUs (cuda:LOCAL_RANK), else None."""
    state = _state()
    if state is None or state.device.type != "cuda":
        return None
    return str(state.device)


class Bystander:
    """What a process other than the main one holds in place of a run folder
    (``erase.checkpoint.Run``): no status, no checkpoints, nothing written."""

    checkpoint = None

    def __enter__(self) -> Bystander:
        return self

    def __exit__(self, *exc) -> bool:
        return False
