"""What a method is: the interface every file under ``erase/methods/`` implements.

A method is a module (checked structurally against ``MethodModule``) with:

- ``KIND``: ``"unlearning"`` (concept-level: prompts in, the concept gone) or ``"untraining"``
  (data-level: a forget set of images in, judged against a model retrained without it);
- ``Config``: a frozen dataclass whose fields are the method's settings with the paper's defaults;
- ``TOY``: overrides for the toy world's UNet (about 1000x smaller than SD's), and why;
- ``SMOKE``: the cheapest settings that still run every code path, for the test matrix on tiny
  random pipelines (mechanics only, never efficacy);
- ``edit(pipe, inputs, cfg, *, seed, progress, checkpoint) -> dict``: edits ``pipe.unet`` in place and
  returns a log with at least ``params`` (the names of the tensors it may have changed) and
  ``trainable_parameters``;
- optionally ``summary(log) -> list[str]``: lines a person should read after the run (HAMU's
  hardness verdict), printed by the job and shown in the report.

Concept-level and data-level methods share this signature and differ only in which fields of
``EraseInputs`` (``erase.methods.base``) they read.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

Kind = Literal["unlearning", "untraining"]


@runtime_checkable
class MethodModule(Protocol):
    KIND: Kind
    Config: type
    TOY: dict
    SMOKE: dict

    def edit(self, pipe, inputs, cfg, *, seed: int, progress: bool = True, checkpoint=None) -> dict: ...


def summary(module, log: dict) -> list[str]:
    """The method's own lines about a finished run (none for most methods)."""
    fn = getattr(module, "summary", None)
    return list(fn(log)) if fn is not None else []
