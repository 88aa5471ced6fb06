"""The reproducibility record every run writes: config, seeds, versions, prompt hashes, wall time,
peak memory, trainable parameters and results, in one JSON file."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import platform
import resource
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import torch

_PACKAGES = (
    "erase",
    "torch",
    "diffusers",
    "transformers",
    "open_clip_torch",
    "safetensors",
    "accelerate",
    "numpy",
    "pillow",
)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sha256_texts(texts: Iterable[str]) -> str:
    """Hash of a prompt list (order matters: it fixes which image gets which seed)."""
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


def peak_memory_mb() -> dict[str, float]:
    """Peak resident memory of this process, and peak CUDA allocation when a GPU was used."""
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    rss = rss_kb / 1024 if sys.platform != "darwin" else rss_kb / 2**20
    out = {"cpu_rss_mb": round(rss, 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def trainable_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class RunRecord:
    """Collects one run's facts; ``finish`` returns the JSON-ready dict.

    Start it before the work so that wall time covers everything the user waited for.
    """

    def __init__(
        self, command: str, config: dict, seeds: Iterable[int] = (), *, argv: list[str] | None = None
    ):
        """``argv``: the ``erase`` arguments that rerun this job alone (``erase.jobs.base.command_line``)."""
        self.started = time.time()
        self.data: dict = {
            "command": command,
            "argv": list(argv or []),
            "config": config,
            "seeds": list(seeds),
            "versions": versions(),
            "prompt_hashes": {},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "device": None,
        }

    def prompts(self, name: str, *, texts: Iterable[str] | None = None, file: str | Path | None = None):
        if file is not None:
            self.data["prompt_hashes"][name] = {"file": str(file), "sha256": sha256_file(file)}
        if texts is not None:
            texts = list(texts)
            self.data["prompt_hashes"].setdefault(name, {})
            self.data["prompt_hashes"][name] |= {"n": len(texts), "sha256": sha256_texts(texts)}

    def finish(self, results: dict, *, trainable: int | None = None, device: str | None = None) -> dict:
        self.data["device"] = device
        self.data["wall_seconds"] = round(time.time() - self.started, 2)
        self.data["peak_memory"] = peak_memory_mb()
        self.data["trainable_parameters"] = trainable
        self.data["results"] = results
        return self.data
