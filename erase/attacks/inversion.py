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

import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

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


def starting_point(target, cfg: Config) -> dict:
    """The held-out prompts with the init word where the token goes: the attack before any step."""
    word = init_word(cfg, target)
    return {"init": word, "prompts": with_token(target.heldout, target.label, word)}


def token_for(concept_name: str) -> str:
    return f"<{re.sub(r'[^a-z0-9]+', '-', concept_name.lower()).strip('-')}-inv>"


def with_token(prompts, label: str, token: str) -> list[str]:
    """Each prompt with the concept's label replaced by ``token`` (case-insensitive, whole words);
    a prompt that does not contain the label gets the token in front."""
    word = re.compile(rf"(?<!\w){re.escape(label)}(?!\w)", re.IGNORECASE)
    return [word.sub(token, p) if word.search(p) else f"{token} {p}" for p in prompts]


def _encoders(pipe) -> list[tuple[str, object, object]]:
    """(key in the embedding file, tokenizer, text encoder) for each text encoder of the pipeline."""
    pairs = [("clip_l", pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs.append(("clip_g", pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def _token_names(token: str, vectors: int) -> list[str]:
    # diffusers' multi-vector convention: TOKEN, TOKEN_1, TOKEN_2, ...
    return [token] + [f"{token}_{i}" for i in range(1, vectors)]


class _Placeholder:
    """Trainable vectors standing in for a token's ids in one text encoder's token embedding."""

    def __init__(self, encoder, ids: list[int], init: torch.Tensor):
        emb = encoder.get_input_embeddings()
        self.vectors = torch.nn.Parameter(init.detach().clone().float())
        self.ids = torch.tensor(ids, device=emb.weight.device)
        self.handle = emb.register_forward_hook(self._swap)

    def _swap(self, module, args, out):
        hit = args[0].unsqueeze(-1) == self.ids  # (batch, length, vectors)
        if not hit.any():
            return out
        swapped = hit.to(self.vectors.dtype) @ self.vectors  # the token's vector where its id is
        return torch.where(hit.any(-1, keepdim=True), swapped.to(out.dtype), out)


def _add_token(pipe, token: str, cfg: Config, word: str) -> list[_Placeholder]:
    """The token in every tokenizer and embedding (diffusers' own loader), with trainable vectors
    initialised from ``word``'s embedding."""
    holders = []
    for _, tok, enc in _encoders(pipe):
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
        ids = tok.convert_tokens_to_ids(_token_names(token, cfg.vectors))
        holders.append(_Placeholder(enc, ids, init))
    return holders


def remove_token(pipe, token: str, vectors: int) -> None:
    """The tokenizers and embeddings as they were before the token was added."""
    for _, tok, enc in _encoders(pipe):
        if token in tok.get_vocab():
            pipe.unload_textual_inversion(
                tokens=_token_names(token, vectors), tokenizer=tok, text_encoder=enc
            )


def run(pipe, examples, target, cfg: Config, *, seed: int, out: Path, progress: bool = True) -> dict:
    """Learn ``<concept-inv>`` on ``examples`` (an ``ImageSet`` of the concept) with ``pipe``
    frozen; write its embedding to ``out/learned_embeds.safetensors``. The pipeline is left as it
    was. Returns what the attack found (token, prompts to draw, embedding file) and its budget."""
    from safetensors.torch import save_file

    from erase.data import encode_set
    from erase.diffusion import diffusion_loss, encode_prompts, sample_timesteps
    from erase.train import FitHooks, FitSettings, fit

    token = token_for(target.name)
    word = init_word(cfg, target)
    T = pipe.scheduler.config.num_train_timesteps
    if cfg.t_min >= T:
        raise EraseError(
            f"inversion t_min {cfg.t_min} leaves no timestep of this model's {T}; set it below {T}"
        )
    captions = with_token(examples.prompts, target.label, token)
    data = encode_set(pipe, examples, "inversion example")
    # The vocabulary's largest norm, per encoder, before the token joins it.
    norms = [enc.get_input_embeddings().weight.detach().norm(dim=-1).max() for _, _, enc in _encoders(pipe)]
    holders = _add_token(pipe, token, cfg, word)
    order = torch.Generator().manual_seed(seed)  # which examples each step sees
    noise = torch.Generator().manual_seed(10_000 + seed)  # the diffusion noise and timesteps
    # Only the vectors train: every weight of the pipeline is frozen for the loop (else backward
    # would fill the UNet's and a second encoder's .grad), and its flags put back afterwards.
    frozen = [p for m in (pipe.unet, *(enc for _, _, enc in _encoders(pipe))) for p in m.parameters()]
    flags = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    started = time.time()

    def loss(step: int) -> torch.Tensor:
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=order).tolist()
        cond = encode_prompts(pipe, [captions[i] for i in idx], grad=True)
        latents = data.latents[idx]
        return diffusion_loss(
            pipe.unet,
            pipe.scheduler,
            latents,
            cond.embeds,
            added_cond_kwargs=cond.added,
            generator=noise,
            timesteps=sample_timesteps(pipe.scheduler, len(idx), noise, latents.device, low=cfg.t_min),
            snr_gamma=cfg.snr_gamma,
        )

    def clamp(step: int) -> None:
        with torch.no_grad():
            for h, most in zip(holders, norms):
                h.vectors.mul_((most / h.vectors.norm(dim=-1, keepdim=True)).clamp(max=1.0))

    params = {f"{key}:{token}": h.vectors for (key, _, _), h in zip(_encoders(pipe), holders)}
    try:
        settings = FitSettings(cfg.steps, cfg.lr, cfg.optimizer, f"inversion {token}", progress)
        hooks = FitHooks(after_step=clamp) if cfg.clamp_norm else None
        losses = fit(pipe.text_encoder, params, loss, settings, hooks)
    finally:
        for h in holders:
            h.handle.remove()
        remove_token(pipe, token, cfg.vectors)
        for p, flag in zip(frozen, flags):
            p.requires_grad_(flag)
    vectors = [h.vectors.detach().cpu().contiguous() for h in holders]
    out.mkdir(parents=True, exist_ok=True)
    path = out / EMBEDDINGS
    if len(vectors) == 1:
        save_file({token: vectors[0]}, path)
    else:  # SDXL's convention: one entry per encoder
        save_file({key: v for (key, _, _), v in zip(_encoders(pipe), vectors)}, path)
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
        "loss": {
            "first": losses[0],
            "last": losses[-1],
            # one step's loss is noisy (one draw of noise and timesteps); the last quarter's mean is not
            "last_quarter_mean": sum(tail := losses[-max(1, len(losses) // 4) :]) / len(tail),
        },
    }


def load(pipe, found: dict) -> None:
    """Put the found token into ``pipe`` (as a user would, from the written file)."""
    from safetensors.torch import load_file

    state = load_file(found["embedding"])
    if set(state) == {found["token"]}:
        pipe.load_textual_inversion(found["embedding"], token=found["token"])
        return
    for key, tok, enc in _encoders(pipe):
        pipe.load_textual_inversion(state[key], token=found["token"], tokenizer=tok, text_encoder=enc)


def unload(pipe, found: dict) -> None:
    state_vectors = _vectors_in(found["embedding"])
    remove_token(pipe, found["token"], state_vectors)


def _vectors_in(path: str) -> int:
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        first = next(iter(f.keys()))
        shape = f.get_slice(first).get_shape()
    return shape[0] if len(shape) == 2 else 1
