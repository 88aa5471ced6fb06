"""The judge registry: the one place a judge is named. Adding a judge is one file and one line.

A judge spec picks an entry: an exact name (``toy-fit``) first, then the entry whose ``accepts``
claims the spec (CLIP zero-shot takes ``toy``, ``NAME:PRETRAINED``, ``open_clip:NAME:PRETRAINED``
and open_clip folders). Modules are imported when first used, so checking a spec loads no torch
unless the judge needs it to check (open_clip's model list).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

from erase.errors import EraseError
from erase.judges.api import Judge, Verdicts


@dataclass(frozen=True)
class Entry:
    name: str
    module_name: str  # a file under erase/judges/
    what: str  # one line for --help and error messages

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(f"erase.judges.{self.module_name}")


REGISTRY: dict[str, Entry] = {
    # Read the shape off a toy image by fitting the renderer's shapes; "none" when none fits.
    "toy-fit": Entry("toy-fit", "fit", "toy-fit (the toy world's shapes, by fit; 'none' when none fits)"),
    # NudeNet's detector (the nudity judge of the literature); nudenet:THRESHOLD sets its threshold.
    # Before CLIP, whose NAME:PRETRAINED would claim nudenet:0.6.
    "nudenet": Entry("nudenet", "nudenet", "nudenet or nudenet:THRESHOLD (nudity, NudeNet's classes)"),
    # Zero-shot classification with a CLIP model: the bundled toy CLIP, an open_clip model, a folder.
    "clip": Entry("clip", "clip", "toy, an open_clip NAME:PRETRAINED, or an open_clip folder"),
}
SPECS = "toy, toy-fit, nudenet[:THRESHOLD], an open_clip NAME:PRETRAINED, or an open_clip folder"


def entry(spec: str) -> Entry:
    """The registry entry that reads ``spec`` (checked there, nothing loaded), or a one-line refusal."""
    spec = spec.strip()
    if not spec:
        raise EraseError(f"the judge spec is empty; use {SPECS}")
    if spec in REGISTRY:
        return REGISTRY[spec]
    for e in REGISTRY.values():
        if e.module.accepts(spec):
            return e
    raise EraseError(f"judge {spec!r} is not {SPECS} (e.g. ViT-L-14:openai)")


def check_judge(spec: str, *, groups: Iterable = (), neutral: str | None = None) -> str:
    """Refuse, before anything is loaded, a judge that cannot work or cannot read one of ``groups``
    (concept groups it will be asked about), or that takes no ``neutral`` label. Returns the spec."""
    spec = spec.strip()
    module = entry(spec).module
    module.check(spec, neutral=neutral)
    for group in groups:
        why = module.cannot_read(spec, group)
        if why:
            raise EraseError(f"judge {spec}: {why}")
    return spec


def load_judge(spec: str = "toy", *, device: str | None = None, neutral: str | None = None) -> Judge:
    """The judge ``spec`` names, ready to read images (``erase.judges.api.Judge``)."""
    spec = check_judge(spec, neutral=neutral)
    return entry(spec).module.load(spec, device=device, neutral=neutral)


__all__ = ["REGISTRY", "SPECS", "Judge", "Verdicts", "check_judge", "entry", "load_judge"]
