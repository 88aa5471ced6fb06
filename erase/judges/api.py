"""What every judge is: for a group of concepts (the colours, the shapes) and some images, the label
each image shows, how sure it is, and how strongly each image shows each of the group's labels.

A judge file under ``erase/judges/`` holds:

- ``accepts(spec) -> bool``: whether the spec names this judge (for judges not named exactly);
- ``check(spec, neutral)``: refuse a spec that cannot work, before anything is loaded;
- ``cannot_read(spec, group) -> str | None``: why this judge cannot read a group, or None;
- ``load(spec, device, neutral) -> Judge``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry is imported by the CLI's option help: no numpy, PIL or torch there
    import numpy as np
    from PIL import Image


@dataclass(frozen=True)
class Verdicts:
    """One judge's reading of some images against one group."""

    predicted: list[str]  # per image: one of the group's labels, or the judge's "none"
    confidence: list[float]  # per image: how sure of its verdict (CLIP: probability; toy-fit: the fit)
    strength: np.ndarray  # (images, group labels): how strongly each image shows each label
    clip_score: float | None = None  # against the prompts given, for a judge that has one
    # (images, dim) L2-normalised image embeddings, for a judge with an image encoder (CLIP): what
    # CMMD compares (erase.distribution); None for a judge without one (toy-fit).
    embeddings: object = None


class Judge:
    """A loaded judge. ``none`` is the verdict for an image that shows none of the group (a CLIP
    judge's ``neutral`` label, the fit's "none"), None for a judge that must pick a label."""

    spec: str
    device: object = "cpu"
    none: str | None = None

    def verdicts(
        self, group, images: Sequence[Image.Image], prompts: Sequence[str] | None = None
    ) -> Verdicts:
        raise NotImplementedError

    def check_group(self, group) -> None:
        """Refuse a group this judge cannot read (before any image is drawn)."""

    def check_prompts(self, prompts: Sequence[str]) -> None:
        """Refuse prompts this judge would read wrongly (a CLIP judge's tokenizer drops a word)."""
