"""A method that exists only for tests/test_registry.py: it shrinks the value projections of
cross-attention a little. What it shows is that a method is one file plus one registry line."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from erase.layers import kv_linears

KIND = "unlearning"


@dataclass(frozen=True)
class Config:
    shrink: float = 0.01  # share of each value projection removed


TOY: dict = {}
SMOKE: dict = {}


@torch.no_grad()
def edit(pipe, inputs, cfg: Config, *, seed: int, progress: bool = True, checkpoint=None) -> dict:
    names = []
    for name, lin in kv_linears(pipe.unet).items():
        if name.endswith("to_v"):
            lin.weight.mul_(1 - cfg.shrink)
            names.append(f"{name}.weight")
    named = dict(pipe.unet.named_parameters())
    return {"params": sorted(names), "trainable_parameters": sum(named[n].numel() for n in names)}
