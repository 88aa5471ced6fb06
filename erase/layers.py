"""Which UNet parameters a method edits, found by module type and role, not by parameter names.

Cross-attention is every diffusers ``Attention`` module whose keys and values come from the text
(``is_cross_attention``): ``attn2`` in SD 1.x, 2.x and XL transformer blocks alike, whatever the
block layout. So the same parameter set means the same thing on every architecture.
"""

from __future__ import annotations

from typing import Literal

import torch
from diffusers.models.attention_processor import Attention

ParamSet = Literal["xattn", "xattn-kv", "non-xattn", "all"]
PARAM_SETS: tuple[str, ...] = ("xattn", "xattn-kv", "non-xattn", "all")


def cross_attention_modules(unet: torch.nn.Module) -> dict[str, Attention]:
    """Cross-attention modules by qualified name."""
    return {
        name: m
        for name, m in unet.named_modules()
        if isinstance(m, Attention) and getattr(m, "is_cross_attention", False)
    }


def select_parameters(unet: torch.nn.Module, which: str) -> dict[str, torch.nn.Parameter]:
    """Named parameters of a set:

    - ``xattn``: everything in cross-attention (ESD-x);
    - ``xattn-kv``: the key and value projections of cross-attention, the only weights that read
      the text (ESD-x-strict, UCE, Concept Ablation);
    - ``non-xattn``: everything outside cross-attention (ESD-u);
    - ``all``.
    """
    if which not in PARAM_SETS:
        raise ValueError(f"unknown parameter set {which!r}; choose one of {', '.join(PARAM_SETS)}")
    named = dict(unet.named_parameters())
    xattn = cross_attention_modules(unet)
    if not xattn and which != "all":
        raise ValueError("this UNet has no cross-attention modules: is it text-conditioned?")
    prefixes = tuple(f"{n}." for n in xattn)
    if which == "all":
        return named
    if which == "xattn":
        return {k: p for k, p in named.items() if k.startswith(prefixes)}
    if which == "non-xattn":
        return {k: p for k, p in named.items() if not k.startswith(prefixes)}
    kv = {}
    for name, m in xattn.items():
        for proj in ("to_k", "to_v"):
            for pname, p in getattr(m, proj).named_parameters():
                kv[f"{name}.{proj}.{pname}"] = p
    return kv


def kv_linears(unet: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """Every cross-attention key/value projection, by qualified name (UCE's closed form edits these)."""
    return {
        f"{name}.{proj}": getattr(m, proj)
        for name, m in cross_attention_modules(unet).items()
        for proj in ("to_k", "to_v")
    }


def set_trainable(unet: torch.nn.Module, params: dict[str, torch.nn.Parameter]) -> int:
    """Freeze everything, then unfreeze ``params``; returns the trainable count."""
    unet.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    return sum(p.numel() for p in params.values())
