"""Concept inversion (Pham et al. 2023, "Circumventing Concept Erasure Methods for Text-to-Image
Generative Models"): learn the input embedding of a new token on images of the concept, with the
attacked model frozen (textual inversion, Gal et al. 2022), then prompt with the token. Every
erasure method the paper tested was circumvented this way: the concept was hidden from its word,
not removed from the model.

What it changes: nothing in the model. The new token's vectors live outside it while they train (a
forward hook on each text encoder's token embedding puts them where the token's ids are), and the
token is taken out of the tokenizers and embeddings again before the attack returns. What it
writes: ``learned_embeds.safetensors`` in the format diffusers' ``load_textual_inversion`` reads
(``{token: vectors}``; SDXL: ``{"clip_l": ..., "clip_g": ...}``, loaded once per encoder), so that
anyone can load the found token into the base model, the erased model or any other.

Followed: the objective (the frozen model's plain diffusion loss; only the new vectors train) and
the defaults of diffusers' textual-inversion example (3000 steps, batch 4, AdamW at 5e-4 scaled by
the batch: 2e-3, one vector). Reconstructed here: the training captions are the concept's own erasure
prompts with the concept's label replaced by the token ("a red circle" -> "a <red-inv> circle")
instead of the paper's "a photo of {}" templates, the initialisation word, and the toy settings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from erase.attacks.placeholders import (
    Placeholder,
    check_t_min,
    encoders,
    freeze,
    kept_flags,
    loss_summary,
    remove_token,
    text_loss,
    token_for,
    token_names,
    with_token,
)
from erase.errors import EraseError

EMBEDDINGS = "learned_embeds.safetensors"


@dataclass(frozen=True)
class Config:
    steps: int = 3000  # gradient steps on the token's vectors
    lr: float = 2e-3  # diffusers' example: 5e-4 scaled by its batch of 4
    batch_size: int = 4
    vectors: int = 1  # vectors behind the token (diffusers names the extra ones TOKEN_1, TOKEN_2, ...)
    # The word whose embedding starts the vectors, never the concept's own; "sibling": the first
    # other label of the concept's group (attacking red starts from blue).
    init: str = "object"
    optimizer: str = "adamw"
    snr_gamma: float | None = None  # Min-SNR weighting; None = the plain loss, as the paper
    # Train on timesteps t >= t_min only (0: all of them, as the source). High noise is where a
    # prompt decides what is drawn (colour, layout); low noise only sharpens what is already there.
    t_min: int = 0
    # After each step, scale each vector down to the largest norm of the vocabulary's embeddings, so
    # that the token stays an input the text encoder has seen the like of (not in the source).
    clamp_norm: bool = False

    def __post_init__(self):
        for name in ("steps", "batch_size", "vectors"):
            if getattr(self, name) <= 0:
                raise EraseError(f"inversion {name} must be positive, got {getattr(self, name)}")
        if not self.lr > 0:
            raise EraseError(f"inversion lr must be positive, got {self.lr}")
        if not self.init.strip() or len(self.init.split()) != 1:
            raise EraseError(f"inversion init must be one word, got {self.init!r}")
        if self.t_min < 0:
            raise EraseError(f"inversion t_min must be 0 or more, got {self.t_min}")


# The toy's token embeddings have norm ~0.2 in 64 dimensions (SD's ~0.4 in 768), and it was trained
# with Min-SNR 5. Its colourless prompts lean red, so a neutral init word ("object") draws red on its
# own: the toy starts from a sibling label (red: green, which draws red in 0/48 tuning images).
# Without the norm clamp the vectors outgrow the vocabulary; on all timesteps the loss is dominated by
# low noise, where the colour is already decided. Rate and t_min chosen on tuning seeds, base model
# only, by a rule stated before the run (bench/attack_tuning.py; docs/results/inversion_tuning.json:
# lr 0.0003-0.1 x t_min 0-700, 48/48 here, inside both grids; at t_min 0 at most 44/48).
TOY = {
    "steps": 150,
    "lr": 3e-3,
    "batch_size": 8,
    "snr_gamma": 5.0,
    "init": "sibling",
    "t_min": 500,
    "clamp_norm": True,
}
SMOKE = {"steps": 2, "batch_size": 1}


def init_word(cfg: Config, target) -> str:
    """The word that starts the vectors for ``target``; refuses the concept's own word."""
    word = cfg.init
    if word == "sibling":
        others = [w for w in target.group.labels if w.lower() != target.label.lower()]
        if not others:
            raise EraseError(
                f"inversion init 'sibling': group {target.group.name!r} has no label but "
                f"{target.label!r}; set init to a word (--set init=object)"
            )
        word = others[0]
    if word.lower() == target.label.lower():
        raise EraseError(
            f"inversion init {word!r} is the concept's own word (the attack would start where it must "
            "arrive); set another (--set init=object)"
        )
    return word


def check(cfg: Config, target) -> None:
    """What can be refused before any model loads."""
    init_word(cfg, target)


def starting_point(pipe, target, cfg: Config) -> dict:
    """The held-out prompts with the init word where the token goes: the attack before any step."""
    word = init_word(cfg, target)
    return {"init": word, "prompts": with_token(target.heldout, target.label, word)}


def _add_token(pipe, token: str, cfg: Config, word: str, holders: list[Placeholder]) -> None:
    """The token in every tokenizer and embedding (diffusers' own loader), with trainable vectors
    initialised from ``word``'s embedding, appended to ``holders`` one encoder at a time (so that a
    failure half-way leaves nothing the caller cannot take out again)."""
    for _, tok, enc in encoders(pipe):
        init_ids = tok.encode(word, add_special_tokens=False)
        if len(init_ids) != 1:
            raise EraseError(
                f"inversion init {word!r} is {len(init_ids)} tokens for this tokenizer; pick a word "
                "that is one token (e.g. object)"
            )
        row = enc.get_input_embeddings().weight[init_ids[0]].detach()
        init = row.expand(cfg.vectors, -1).clone()
        pipe.load_textual_inversion(
            {token: init}, token=token, tokenizer=tok, text_encoder=enc
        )  # adds TOKEN (and TOKEN_1, ...) and resizes the embedding
        ids = tok.convert_tokens_to_ids(token_names(token, cfg.vectors))
        holders.append(Placeholder(enc, ids, torch.nn.Parameter(init.detach().clone().float())))


def run(pipe, examples, target, cfg: Config, *, seed: int, out: Path, progress: bool = True) -> dict:
    """Learn ``<concept-inv>`` on ``examples`` (an ``ImageSet`` of the concept) with ``pipe``
    frozen; write its embedding to ``out/learned_embeds.safetensors``. The pipeline is left as it
    was. Returns what the attack found (token, prompts to draw, embedding file) and its budget."""
    from safetensors.torch import save_file

    from erase.data import encode_set
    from erase.train import FitHooks, FitSettings, fit

    token = token_for(target.name, "inv")
    word = init_word(cfg, target)
    check_t_min(pipe, cfg.t_min, "inversion")
    captions = with_token(examples.prompts, target.label, token)
    data = encode_set(pipe, examples, "inversion example")
    # The vocabulary's largest norm, per encoder, before the token joins it.
    norms = [enc.get_input_embeddings().weight.detach().norm(dim=-1).max() for _, _, enc in encoders(pipe)]
    order = torch.Generator().manual_seed(seed)  # which examples each step sees
    noise = torch.Generator().manual_seed(10_000 + seed)  # the diffusion noise and timesteps
    holders: list[Placeholder] = []

    def loss(step: int) -> torch.Tensor:
        return text_loss(pipe, data, captions, cfg, order, noise, grad=True)

    def clamp(step: int) -> None:
        with torch.no_grad():
            for h, most in zip(holders, norms):
                h.vectors.mul_((most / h.vectors.norm(dim=-1, keepdim=True)).clamp(max=1.0))

    started = time.time()
    with kept_flags(pipe):
        try:
            _add_token(pipe, token, cfg, word, holders)
            freeze(pipe)
            params = {f"{key}:{token}": h.vectors for (key, _, _), h in zip(encoders(pipe), holders)}
            settings = FitSettings(cfg.steps, cfg.lr, cfg.optimizer, f"inversion {token}", progress)
            hooks = FitHooks(after_step=clamp) if cfg.clamp_norm else None
            losses = fit(pipe.text_encoder, params, loss, settings, hooks)
        finally:
            for h in holders:
                h.handle.remove()
            remove_token(pipe, token, cfg.vectors)
    vectors = [h.vectors.detach().cpu().contiguous() for h in holders]
    out.mkdir(parents=True, exist_ok=True)
    path = out / EMBEDDINGS
    if len(vectors) == 1:
        save_file({token: vectors[0]}, path)
    else:  # SDXL's convention: one entry per encoder
        save_file({key: v for (key, _, _), v in zip(encoders(pipe), vectors)}, path)
    return {
        "token": token,
        "init": word,
        "embedding": str(path),
        "prompts": with_token(target.heldout, target.label, token),
        "training_captions": sorted(set(captions)),
        "budget": {
            "steps": cfg.steps,
            "examples": len(data),
            "unet_forwards": cfg.steps,  # one batched forward (and backward) per step
            "trainable_parameters": sum(v.numel() for v in vectors),
            "seconds": round(time.time() - started, 1),
        },
        "loss": loss_summary(losses),
    }


def load(pipe, found: dict) -> None:
    """Put the found token into ``pipe`` (as a user would, from the written file); the weights'
    trainable flags stay as they were."""
    from safetensors.torch import load_file

    state = load_file(found["embedding"])
    with kept_flags(pipe):
        if set(state) == {found["token"]}:
            pipe.load_textual_inversion(found["embedding"], token=found["token"])
            return
        for key, tok, enc in encoders(pipe):
            pipe.load_textual_inversion(state[key], token=found["token"], tokenizer=tok, text_encoder=enc)


def unload(pipe, found: dict) -> None:
    """Take the found token out of ``pipe`` again."""
    with kept_flags(pipe):
        remove_token(pipe, found["token"], _vectors_in(found["embedding"]))


def _vectors_in(path: str) -> int:
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        first = next(iter(f.keys()))
        shape = f.get_slice(first).get_shape()
    return shape[0] if len(shape) == 2 else 1
