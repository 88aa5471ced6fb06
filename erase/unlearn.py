"""Run a method on a pipeline: pick its config, edit the UNet, and package the result as a delta.

Shared by every method and by the CLI, so that a delta always carries the same provenance.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from erase.checkpoint import Checkpointer
from erase.concepts import Concept
from erase.delta import save_delta
from erase.errors import EraseError
from erase.methods import Method, get_method
from erase.methods.base import EraseInputs
from erase.models import model_fingerprint
from erase.record import peak_memory_mb, versions

TOY_MAX_PARAMS = 10_000_000  # UNets below this size get a method's toy-world settings


def is_toy_sized(pipe) -> bool:
    return sum(p.numel() for p in pipe.unet.parameters()) < TOY_MAX_PARAMS


@dataclass
class EditOutcome:
    method: Method
    config: object
    log: dict
    seconds: float
    peak_memory: dict
    toy: bool = False  # the toy world's settings were used

    @property
    def params(self) -> list[str]:
        return self.log["params"]

    @property
    def trainable(self) -> int | None:
        return self.log.get("trainable_parameters")

    @property
    def public_log(self) -> dict:
        """The method's log as the record keeps it (the tensor names are in the delta)."""
        return {k: v for k, v in self.log.items() if k != "params"}

    @property
    def summary(self) -> list[str]:
        """The method's own lines about this run (HAMU's verdict)."""
        from erase.methods.api import summary

        return summary(self.method.module, self.log)

    def headline(self, did: str, what: str) -> str:
        return (
            f"{self.method.name} ({self.method.kind}) {did} in {self.seconds:.1f} s, "
            f"peak memory {self.peak_memory}, {self.trainable} {what}"
        )


def concept_inputs(target: Concept, preserve: list[Concept], anchor: str | None = "default") -> EraseInputs:
    """Inputs for a concept-level method from concept definitions.

    ``anchor``: ``"default"`` uses the concept file's anchors (the prompt without the concept),
    ``None`` uses none (the empty prompt), any other text is used for every target prompt, its
    placeholders filled like the prompt's: ``"a blue {shape}"`` maps "a red circle" to
    "a blue circle" (a replacement rather than a removal).
    """
    if anchor == "default":
        anchors = target.anchors
    elif anchor is None or anchor.strip() == "":
        anchors = ()
    else:
        text = anchor.strip()
        if text in (target.name, target.label):
            raise EraseError(f"anchor {anchor!r} is the concept being erased; pick another concept")
        try:
            anchors = (
                tuple(text.format(**b) for b in target.bindings)
                if "{" in text
                else (text,) * len(target.prompts)
            )
        except (KeyError, IndexError, ValueError):
            raise EraseError(f"anchor {anchor!r} uses a placeholder its prompts do not have") from None
    prompts = tuple(p for c in preserve for p in c.prompts)
    return EraseInputs(targets=target.prompts, anchors=anchors, preserve=prompts)


def run_method(
    pipe,
    method_name: str,
    inputs: EraseInputs,
    *,
    overrides: dict | None = None,
    seed: int = 0,
    progress: bool = True,
    checkpoint: Checkpointer | None = None,
) -> EditOutcome:
    """Edit ``pipe.unet`` in place with a registered method; ``checkpoint`` makes it resumable
    (see ``erase.checkpoint``)."""
    if seed < 0:
        raise EraseError(f"seed must be non-negative, got {seed}")
    method = get_method(method_name)
    toy = is_toy_sized(pipe)
    cfg = method.config(overrides, toy=toy)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    log = method.module.edit(pipe, inputs, cfg, seed=seed, progress=progress, checkpoint=checkpoint)
    return EditOutcome(method, cfg, log, time.time() - t0, peak_memory_mb(), toy)


def write_delta(
    path: Path, pipe, outcome: EditOutcome, *, base_spec: str, seed: int, concepts: dict | None = None
) -> dict:
    meta = {
        "base_model": base_spec,
        "base_fingerprint": model_fingerprint(base_spec),
        "method": outcome.method.name,
        "kind": outcome.method.kind,
        "concepts": concepts or {},
        "config": asdict(outcome.config),
        "seed": seed,
        "versions": versions(),
        "wall_seconds": round(outcome.seconds, 2),
        "peak_memory": outcome.peak_memory,
        "trainable_parameters": outcome.log.get("trainable_parameters"),
        "tensors": len(outcome.params),
    }
    save_delta(path, pipe.unet, outcome.params, meta)
    return meta
