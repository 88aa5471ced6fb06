"""New tokens in a pipeline's tokenizers and text encoders, with vectors that live outside the
model: what the attacks that search the text-input space (concept inversion, the prompt attack) share.

A token is added with diffusers' own ``load_textual_inversion`` (so the tokenizer and the embedding
grow exactly as they do for a user loading a file) and a forward hook on the token embedding puts
the attack's vectors where the token's ids are: the vectors carry gradients, the model's weights
none. ``remove_token`` puts the tokenizers and embeddings back as they were.
"""

from __future__ import annotations

import contextlib
import re

import torch

from erase.errors import EraseError


def with_token(prompts, label: str, token: str) -> list[str]:
    """Each prompt with the concept's label replaced by ``token`` (case-insensitive, whole words);
    a prompt that does not contain the label gets the token in front."""
    word = re.compile(rf"(?<!\w){re.escape(label)}(?!\w)", re.IGNORECASE)
    return [word.sub(token, p) if word.search(p) else f"{token} {p}" for p in prompts]


def encoders(pipe) -> list[tuple[str, object, object]]:
    """(key in the embedding file, tokenizer, text encoder) for each text encoder of the pipeline."""
    pairs = [("clip_l", pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs.append(("clip_g", pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def token_names(token: str, vectors: int) -> list[str]:
    # diffusers' multi-vector convention: TOKEN, TOKEN_1, TOKEN_2, ...
    return [token] + [f"{token}_{i}" for i in range(1, vectors)]


class Placeholder:
    """Vectors standing in for a token's ids in one text encoder's token embedding: a trained
    parameter (inversion), or set before each forward pass (the prompt attack's relaxed words)."""

    def __init__(self, encoder, ids: list[int], vectors: torch.Tensor):
        emb = encoder.get_input_embeddings()
        self.vectors = vectors
        self.ids = torch.tensor(ids, device=emb.weight.device)
        self.handle = emb.register_forward_hook(self._swap)

    def _swap(self, module, args, out):
        hit = args[0].unsqueeze(-1) == self.ids  # (batch, length, vectors)
        if not hit.any():
            return out
        swapped = hit.to(self.vectors.dtype) @ self.vectors  # the token's vector where its id is
        return torch.where(hit.any(-1, keepdim=True), swapped.to(out.dtype), out)


def remove_token(pipe, token: str, vectors: int) -> None:
    """The tokenizers and embeddings as they were before the token was added."""
    for _, tok, enc in encoders(pipe):
        if token in tok.get_vocab():
            backend = getattr(tok, "_tokenizer", None)
            pipe.unload_textual_inversion(tokens=token_names(token, vectors), tokenizer=tok, text_encoder=enc)
            # diffusers rebuilds a fast tokenizer's backend from JSON, which drops the wrapper that
            # transformers' CLIPTokenizer puts on the backend's decode (it strips "</w>"): without
            # this, decode([id]) would read "red</w>" from then on.
            rewrap = getattr(tok, "_wrap_decode_method_backend_tokenizer", None)
            if backend is not None and tok._tokenizer is not backend and rewrap is not None:
                rewrap()


def vocabulary(tokenizer, label: str) -> torch.Tensor:
    """The ids a found word may take: tokens whose printable text reads back as that one token
    (whole words, not byte pieces or control characters), not special, not the concept's word."""
    special = set(tokenizer.all_special_ids)
    banned = set(tokenizer.encode(label, add_special_tokens=False))

    def a_word(i: int) -> bool:
        text = tokenizer.decode([i])
        return text.strip().isprintable() and tokenizer.encode(text, add_special_tokens=False) == [i]

    ids = [
        i
        for t, i in tokenizer.get_vocab().items()
        if t.endswith("</w>") and i not in special and i not in banned and a_word(i)
    ]
    if not ids:
        raise EraseError("the prompt attack found no whole-word tokens in this tokenizer's vocabulary")
    return torch.tensor(sorted(ids))


def token_for(concept_name: str, kind: str) -> str:
    """``<red-inv>``, ``<van-gogh-adv>``: the token an attack of ``kind`` adds for a concept."""
    return f"<{re.sub(r'[^a-z0-9]+', '-', concept_name.lower()).strip('-')}-{kind}>"


def check_t_min(pipe, t_min: int, who: str) -> None:
    T = pipe.scheduler.config.num_train_timesteps
    if t_min >= T:
        raise EraseError(f"{who} t_min {t_min} leaves no timestep of this model's {T}; set it below {T}")


def _modules(pipe) -> list:
    return [pipe.unet, *(enc for _, _, enc in encoders(pipe))]


def freeze(pipe) -> None:
    """Every weight of the UNet and text encoders frozen: only an attack's vectors get gradients
    (else backward would fill the UNet's and a second encoder's ``.grad``). Call it after adding
    tokens: resizing an embedding makes a new weight tensor, trainable by default."""
    for m in _modules(pipe):
        m.requires_grad_(False)


@contextlib.contextmanager
def kept_flags(pipe):
    """Each module's ``requires_grad`` flags as they were on entry, put back by name on exit: adding
    and removing a token replaces the embedding's weight, so flags kept per tensor would land on a
    discarded one."""
    flags = [{n: p.requires_grad for n, p in m.named_parameters()} for m in _modules(pipe)]
    try:
        yield
    finally:
        for m, kept in zip(_modules(pipe), flags):
            for n, p in m.named_parameters():
                p.requires_grad_(kept.get(n, False))


def text_loss(pipe, data, captions, cfg, order: torch.Generator, noise: torch.Generator, *, grad: bool):
    """The attacked model's diffusion loss on a batch of the examples, captioned with the attack's
    token in them: what both text-input attacks minimise. Timesteps from ``cfg.t_min``."""
    from erase.diffusion import diffusion_loss, encode_prompts, sample_timesteps

    idx = torch.randint(0, len(data), (cfg.batch_size,), generator=order).tolist()
    cond = encode_prompts(pipe, [captions[i] for i in idx], grad=grad)
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


def loss_summary(losses: list[float]) -> dict:
    # one step's loss is noisy (one draw of noise and timesteps); the last quarter's mean is not
    tail = losses[-max(1, len(losses) // 4) :]
    return {"first": losses[0], "last": losses[-1], "last_quarter_mean": sum(tail) / len(tail)}
