"""No attack: the concept's own held-out prompts, nothing searched, nothing loaded. Its row in an
attack table is what the erasure gives on its own (and what the base model and the oracle draw from
the concept's words), the line every attack's success is read from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Config:
    pass


# The verdict's words for a row that attacks nothing: above the oracle is an erasure that did not
# remove the concept from its own words (not a concept hidden from them).
OUTCOMES = {
    "circumvented": "not erased",
    "held": "erased",
    "held, below the oracle": "erased, below the oracle",
}

TOY: dict = {}
SMOKE: dict = {}


def run(pipe, examples, target, cfg: Config, *, seed: int, out: Path, progress: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return {
        "prompts": list(target.heldout),
        "budget": {"steps": 0, "unet_forwards": 0, "trainable_parameters": 0, "seconds": 0.0},
    }
