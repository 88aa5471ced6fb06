"""UCE: Unified Concept Editing in Diffusion Models (Gandikota et al., WACV 2024).

A closed-form edit, no gradient steps. For every cross-attention key and value projection ``W0``:

``W = (lam W0 + s_e sum_i (W0 g_i) c_i^T + s_p sum_j (W0 p_j) p_j^T)
      (lam I + s_e sum_i c_i c_i^T + s_p sum_j p_j p_j^T)^-1``

so that text vectors ``c_i`` of the erased concept now produce the keys and values of their guide
vectors ``g_i`` (the anchor prompt: "" for an object, "art" for a style), while preserved vectors
``p_j`` keep theirs, and ``lam`` ties everything else to ``W0``.

Which text vectors: as in the authors' code, the text-encoder outputs from the concept's last
token to the end of the sequence (end-of-text and padding included: with causal attention they
all carry the concept), aligned with the guide's from the end. Where a prompt names the concept in
the middle ("a red circle" with guide "a circle"), we also map the positions from the first token
that differs onto the guide's first differing position, so the concept's own token is edited too
(the authors' prompts end with the concept, where both rules coincide). Preserved vectors: every
position of each preserve prompt after the start token.

Parameters changed: ``to_k`` and ``to_v`` of every cross-attention module (``xattn-kv``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from erase.diffusion import encode_prompts
from erase.errors import EraseError
from erase.layers import kv_linears, select_parameters
from erase.methods.base import EraseInputs

KIND = "unlearning"


@dataclass(frozen=True)
class Config:
    """UCE settings (the paper's defaults)."""

    lam: float = 0.5  # pull towards the original weights; larger edits less
    erase_scale: float = 1.0  # s_e
    preserve_scale: float = 1.0  # s_p; raise it when neighbours suffer

    def __post_init__(self):
        for name in ("lam", "erase_scale", "preserve_scale"):
            if getattr(self, name) < 0:
                raise EraseError(f"uce: {name} must be >= 0, got {getattr(self, name)}")
        if self.lam == 0 and self.preserve_scale == 0:
            raise EraseError("uce: lam and preserve_scale cannot both be 0 (the system is singular)")


TOY: dict = {}
SMOKE: dict = {}  # closed form: the paper's settings already take a second


def _token_ids(pipe, prompts: list[str]) -> torch.Tensor:
    tok = pipe.tokenizer
    return tok(
        prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def _pairs(pipe, targets: list[str], guides: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned (concept vector, guide vector) rows for every target/guide prompt pair."""
    emb_t = encode_prompts(pipe, targets).embeds.float()
    emb_g = encode_prompts(pipe, guides).embeds.float()
    ids_t, ids_g = _token_ids(pipe, targets), _token_ids(pipe, guides)
    eos = pipe.tokenizer.eos_token_id
    rows_c, rows_g = [], []
    for k in range(len(targets)):
        end_t = int((ids_t[k] == eos).nonzero()[0])  # position of end-of-text
        end_g = int((ids_g[k] == eos).nonzero()[0])
        n = ids_t.shape[1]
        first_diff = 1
        while first_diff < min(end_t, end_g) and ids_t[k, first_diff] == ids_g[k, first_diff]:
            first_diff += 1
        shift = end_t - end_g
        for p in range(first_diff, n):
            q = max(first_diff, p - shift) if shift >= 0 else p - shift
            if q >= n:
                break
            rows_c.append(emb_t[k, p])
            rows_g.append(emb_g[k, q])
    if not rows_c:
        raise EraseError("uce: target and guide prompts encode identically; nothing to edit")
    return torch.stack(rows_c), torch.stack(rows_g)


@torch.no_grad()
def edit(pipe, inputs: EraseInputs, cfg: Config, *, seed: int, progress=True, checkpoint=None) -> dict:
    """See ``erase.methods.api.MethodModule``."""
    del checkpoint  # a closed form takes seconds: there is no loop to resume
    # 1. Check inputs.
    if not inputs.targets:
        raise EraseError("uce needs at least one target prompt")
    guides = list(inputs.anchors) if inputs.anchors else [""] * len(inputs.targets)

    # 2. Text vectors: erased (with their guides) and preserved.
    c, g = _pairs(pipe, list(inputs.targets), guides)
    if inputs.preserve:
        pre = encode_prompts(pipe, list(inputs.preserve)).embeds.float()[:, 1:].flatten(0, 1)
    else:
        pre = c.new_zeros((0, c.shape[1]))
    c, g, pre = c.double(), g.double(), pre.double()
    eye = torch.eye(c.shape[1], dtype=torch.float64, device=c.device)
    rhs_ctx = cfg.lam * eye + cfg.erase_scale * c.T @ c + cfg.preserve_scale * pre.T @ pre

    # 3. Closed form per key/value projection.
    for lin in kv_linears(pipe.unet).values():
        w0 = lin.weight.double()
        lhs = cfg.lam * w0 + cfg.erase_scale * (w0 @ g.T) @ c + cfg.preserve_scale * (w0 @ pre.T) @ pre
        # W = lhs @ rhs_ctx^-1, solved rather than inverted for accuracy.
        w = torch.linalg.solve(rhs_ctx, lhs.T).T
        lin.weight.copy_(w.to(lin.weight.dtype))
    params = {k: p for k, p in select_parameters(pipe.unet, "xattn-kv").items() if k.endswith("weight")}
    return {
        "params": sorted(params),
        "trainable_parameters": sum(p.numel() for p in params.values()),
        "erase_vectors": int(c.shape[0]),
        "preserve_vectors": int(pre.shape[0]),
    }
